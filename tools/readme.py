"""Build README.md from `nbs/index.ipynb` offline, as `nbdev_readme` would without Quarto (not installable here):
nbdev's own notebook processing, then plain GitHub Markdown. `python tools/readme.py --check` only compares."""
import json, sys, yaml
from nbdev.config import get_config
from nbdev.serve import proc_nbs

def _title(src):
    meta = yaml.safe_load(src.strip().strip('-'))
    return f"# {meta['title']}\n\n> {meta['description']}"

def _fence(text, lang=''): return f"```{lang}\n{text.rstrip()}\n```"

def _outputs(cell):
    for o in cell.get('outputs', []):
        text = o.get('text') or o.get('data', {}).get('text/plain')
        if text: yield _fence(''.join(text))

def _md(cell):
    src = ''.join(cell['source'])
    if cell['cell_type']=='raw': return _title(src)
    if cell['cell_type']=='markdown': return None if src.startswith('<!-- WARNING') else src
    return '\n\n'.join([_fence(src, 'python'), *_outputs(cell)])

def readme()->str:
    "The README's text, from the processed `readme_nb`"
    cfg = get_config()
    nb = json.loads((proc_nbs(cfg.nbs_path)/cfg.readme_nb).read_text())
    return '\n\n'.join(filter(None, map(_md, nb['cells']))) + '\n'

if __name__ == '__main__':
    path = get_config().config_path/'README.md'
    if '--check' not in sys.argv: path.write_text(readme())
    elif path.read_text() != readme(): sys.exit('README.md is out of date: run `python tools/readme.py`')
