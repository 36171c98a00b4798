"The generated library and the notebooks are committed as nbdev makes them."
import filecmp, shutil, subprocess, sys
from pathlib import Path

root = Path(__file__).parents[1]
bin_dir = Path(sys.executable).parent

def files():
    out = subprocess.run(['git', 'ls-files', '--cached', '--others', '--exclude-standard'], cwd=root,
                         capture_output=True, text=True, check=True).stdout.split()
    return [f for f in out if (root/f).exists()]

def test_export_and_clean_change_nothing(tmp_path):
    fs = files()
    for f in fs:
        (tmp_path/f).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(root/f, tmp_path/f)
    for cmd in ('nbdev_export', 'nbdev_clean'): subprocess.run([bin_dir/cmd], cwd=tmp_path, check=True)
    changed = [f for f in fs if f.startswith(('fasterai/', 'nbs/')) and not filecmp.cmp(root/f, tmp_path/f, shallow=False)]
    new = [str(p.relative_to(tmp_path)) for p in (tmp_path/'fasterai').rglob('*.py') if str(p.relative_to(tmp_path)) not in fs]
    assert not changed and not new, f"run nbdev_export and nbdev_clean, then commit: changed {changed}, new {new}"

def test_readme_is_current():
    subprocess.run([sys.executable, root/'tools'/'readme.py', '--check'], cwd=root, check=True)

def test_every_exported_symbol_is_documented():
    sys.path.insert(0, str(root/'tools'))
    import docs
    assert docs.undocumented() == []
