"benchmarks/inference.py runs (small models, --quick) and its table says what the benchmarks page claims of it"
import json, subprocess, sys
from pathlib import Path
import pytest

bench = Path(__file__).parents[1]/'benchmarks'

@pytest.mark.slow
def test_inference_quick(tmp_path):
    r = subprocess.run([sys.executable, bench/'inference.py', '--quick', '--rounds', '1', '--save', tmp_path/'inference.json'], capture_output=True, text=True)
    assert r.returncode == 0, f"{r.stdout[-3000:]}\n{r.stderr[-3000:]}"
    rows = json.loads((tmp_path/'inference.json').read_text())['rows']
    got = {(o['model'], o['setting'], o['dtype']) for o in rows}
    assert len(got) == 12 and {d for *_,d in got} == {'float32', 'bfloat16'}, got
    assert r.stdout.count('\n| ') == 13, r.stdout   # the header and a row each
    for o in rows:
        assert list(o['speedup']) == list(o['ideal']) == ['20%', '40%', '60%'] and set(o['rate']) == {'original', *o['ideal']}, o
        i = list(o['ideal'].values())
        assert 1 < i[0] < i[1] < i[2], o   # more cut, more to gain
        if o['setting'].startswith('prefill') or o['model'] != 'Llama (small, random)':   # multiply-adds: 1/(1 - cut), biases aside
            assert all(abs(v*(1-c) - 1) < 0.05 for v,c in zip(i, (0.2, 0.4, 0.6))), o
    dec,pre = (next(o['ideal']['40%'] for o in rows if o['setting'].startswith(s)) for s in ('decode', 'prefill'))
    assert dec < pre, (dec, pre)   # a decode step also reads the LM head, which is not factorised
