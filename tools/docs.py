"""Render the docs site offline: the notebooks nbdev processes for Quarto (`nbdev_docs`' input, show_doc cells
executed), turned into static HTML with nbconvert, with the sidebar of `nbs/sidebar.yml`. It warns about every
exported symbol without a docstring and every parameter without a docments comment. Quarto can't be installed
here; on a machine with it, `nbdev_docs` builds the full site from the same notebooks and configuration.

    python tools/docs.py [OUT]     # OUT defaults to _site; prints the pages written
"""
import html, re, sys
from pathlib import Path
import nbformat, yaml
from nbconvert import HTMLExporter
from traitlets.config import Config
from nbdev.config import get_config
from nbdev.serve import proc_nbs

STYLE = """body{margin:0;font-family:system-ui,sans-serif;line-height:1.5;color:#222}
nav{position:fixed;top:0;bottom:0;left:0;width:15rem;overflow:auto;padding:1rem;background:#f4f6f8;font-size:.9rem}
nav ul{list-style:none;padding-left:.8rem} nav a{text-decoration:none} nav a.here{font-weight:bold}
main{margin-left:17rem;max-width:60rem;padding:1rem 2rem}
pre{background:#f6f8fa;padding:.6rem;overflow:auto} table{border-collapse:collapse} td,th{border:1px solid #ccc;padding:.2rem .5rem}
.jp-InputPrompt,.jp-OutputPrompt{display:none}"""

def undocumented()->list:
    "What the docs would show without words: exported symbols without a docstring, parameters without a docments comment"
    import importlib, inspect, pkgutil, fasterai.misc
    from fastcore.docments import docments
    def check(name, f):
        if not inspect.getdoc(f): yield f'{name}: no docstring'
        if inspect.isclass(f) and '__init__' not in vars(f): return   # e.g. an exception: its parameters are its base's
        for k,v in docments(f, full=True).items():   # `**kwargs` is skipped: docments can't read its comment, @delegates shows its parameters
            if k not in ('self', 'return') and v.kind != inspect.Parameter.VAR_KEYWORD and not v.docment:
                yield f'{name}: parameter `{k}` has no docments comment'
    res = []
    for m in pkgutil.iter_modules(fasterai.misc.__path__):
        mod = importlib.import_module(f'fasterai.misc.{m.name}')
        for n in getattr(mod, '__all__', []):
            o = getattr(mod, n)
            if not callable(o) or mod.__name__ == 'fasterai.misc.all': continue
            res += check(f'{m.name}.{n}', o)
            if inspect.isclass(o):
                for k,f in vars(o).items():
                    if inspect.isfunction(f) and not k.startswith('_'): res += check(f'{m.name}.{n}.{k}', f)
    return res

def pages(nbs:Path)->list:
    "`(section, notebook path)` of each page, in the sidebar's order"
    def walk(items, section=None):
        for it in items:
            if isinstance(it, dict): yield from walk(it['contents'], it.get('section'))
            else: yield section,it
    return list(walk(yaml.safe_load((nbs/'sidebar.yml').read_text())['website']['sidebar']['contents']))

def title(nb)->str:
    "The page title, from the notebook's front matter (nbdev puts it in a raw cell)"
    for c in nb.cells:
        m = re.search(r'^title:\s*(.+)$', c.source, re.M) if c.cell_type == 'raw' else None
        if m: return m.group(1).strip().strip('"\'')
    return 'fasterai'

def front_matter_to_markdown(nb):
    "Replace the raw front matter cell by a visible title and description"
    for i,c in enumerate(nb.cells):
        if c.cell_type == 'raw' and c.source.startswith('---'):
            meta = yaml.safe_load(c.source.strip().strip('-')) or {}
            text = f"# {meta.get('title', '')}" + (f"\n\n> {meta['description']}" if meta.get('description') else '')
            nb.cells[i] = nbformat.v4.new_markdown_cell(text)
    return nb

def plain(nb):
    "What Quarto would do with nbdev's cell options: hide `echo: false` inputs, drop `#|` lines and `{target=...}` attributes"
    for c in nb.cells:
        if c.cell_type != 'code': continue
        if re.search(r'^#\|\s*echo:\s*false', c.source, re.M): c.metadata.setdefault('tags', []).append('remove_input')
        c.source = '\n'.join(l for l in c.source.splitlines() if not l.startswith('#|'))
        for o in c.get('outputs', []):
            md = o.get('data', {}).get('text/markdown')
            if md: o['data']['text/markdown'] = re.sub(r'\{target="_blank"[^}]*\}', '', md)
    return nb

def page_html(body:str, here:str, toc:list, titles:dict)->str:
    "A whole page: the sidebar of `toc` (links relative to the page `here`), then the rendered notebook `body`"
    up = '../'*here.count('/')
    items,section = [],None
    for sec,p in toc:
        if sec != section:
            if section: items.append('</ul></li>')
            if sec: items.append(f'<li>{html.escape(sec)}<ul>')
            section = sec
        href = up + p.replace('.ipynb', '.html')
        items.append(f'<li><a href="{href}"{" class=here" if p == here else ""}>{html.escape(titles[p])}</a></li>')
    if section: items.append('</ul></li>')
    return (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><link rel="icon" href="data:,"><title>{html.escape(titles[here])}</title>'
            f'<style>{STYLE}</style></head><body><nav><ul>{"".join(items)}</ul></nav><main>{body}</main></body></html>')

def build(out:Path)->list:
    "Render every sidebar page to `out`; returns the paths written"
    cfg = get_config()
    proc,toc = proc_nbs(cfg.nbs_path),pages(cfg.nbs_path)
    c = Config(TagRemovePreprocessor=dict(enabled=True, remove_input_tags={'remove_input'}))
    exp = HTMLExporter(config=c, template_name='basic', exclude_input_prompt=True, exclude_output_prompt=True)
    nbs = {p:nbformat.read(proc/p, as_version=4) for _,p in toc}
    titles = {p:title(nb) for p,nb in nbs.items()}
    written = []
    for p,nb in nbs.items():
        body,_ = exp.from_notebook_node(plain(front_matter_to_markdown(nb)))
        dst = out/p.replace('.ipynb', '.html')
        dst.parent.mkdir(parents=True, exist_ok=True)
        dst.write_text(page_html(body, p, toc, titles))
        written.append(dst)
    return written

if __name__ == '__main__':
    for w in undocumented(): print(f'warning: {w}', file=sys.stderr)
    for p in build(Path(sys.argv[1] if len(sys.argv) > 1 else '_site')): print(p)
