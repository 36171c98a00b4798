"The benchmark scripts run (small configurations), so they cannot rot."
import subprocess, sys
from pathlib import Path

def test_decompose_speed_quick():
    out = subprocess.run([sys.executable, Path(__file__).parents[1]/'benchmarks'/'decompose_speed.py', '--quick', '--repeats', '1'],
                         capture_output=True, text=True, check=True).stdout
    rows = [l for l in out.splitlines() if l.startswith('| ') and not l.startswith('| matrix')]
    assert len(rows) == 7, out
    worst = float(out.rsplit('optimum: ', 1)[1])
    assert worst < 1e-4, out
