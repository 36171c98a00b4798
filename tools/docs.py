"""Render the docs site offline: the notebooks nbdev processes for Quarto (`nbdev_docs`' input, show_doc cells
executed), turned into static HTML with nbconvert, with the sidebar of `nbs/sidebar.yml`, a top bar with the main pages and a
search box, and the maths typeset by KaTeX. It works offline, from a web server or from the files: KaTeX and lunr (the search
index) are copied into `OUT/_static/` from where Debian's `libjs-katex` and `libjs-lunr` install them (or from
`node_modules/`, after `npm install katex lunr`), never fetched from a CDN. It warns about every exported symbol
without a docstring and every parameter without a docments comment. Quarto can't be installed here; on a machine
with it, `nbdev_docs` builds the full site from the same notebooks and configuration.

    python tools/docs.py [OUT]     # OUT defaults to _site; prints the pages written
"""
import html, json, os, re, shutil, sys
from html.parser import HTMLParser
from pathlib import Path
import nbformat, yaml
from nbconvert import HTMLExporter
from traitlets.config import Config
from nbdev.config import get_config
from nbdev.serve import proc_nbs

HERE = Path(__file__).parent
ROOT = HERE.parent
# Where the third-party scripts are found, first match wins: $FASTERAI_JS (a folder holding `katex/` and `lunr/`),
# Debian's packages (what .ci/run installs), then `npm install --no-save katex lunr` in the repository (not committed).
def _js_dirs(): return [Path(os.environ['FASTERAI_JS'])] if os.environ.get('FASTERAI_JS') else [Path('/usr/share/javascript')]
KATEX = lambda: [d/'katex' for d in _js_dirs()] + [ROOT/'node_modules'/'katex'/'dist']
LUNR = lambda: [d/'lunr' for d in _js_dirs()] + [ROOT/'node_modules'/'lunr']
INSTALL = "apt-get install libjs-katex libjs-lunr (or, in the repository, npm install --no-save katex lunr)"

def undocumented()->list:
    "What the docs would show without words: exported symbols without a docstring, parameters without a docments comment"
    import importlib, inspect, pkgutil, fasterai.misc
    from fastcore.docments import docments
    def check(name, f):
        f = inspect.unwrap(f)   # through `functools.lru_cache` and the like
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

# Maths. nbconvert's markdown renderer would see the TeX first (`_`, `*` and `\` mean things to markdown), so each formula
# is swapped for a plain token before rendering and put back afterwards, verbatim, in a <span class="math ...">
# that KaTeX typesets in the browser. Formulas are found as pandoc (Quarto) finds them: `$$...$$` for display;
# `$...$` inline, with no space inside either dollar and no digit right after the closing one; `\$` is a dollar;
# nothing in code spans or fenced code blocks.
TOKEN = 'xqmath{}qx'
TOKEN_RE = re.compile(r'xqmath(\d+)qx')

def protect_math(md:str, found:list)->str:
    "`md` with each formula replaced by `TOKEN`, numbered from `len(found)`; `(tex, display)` appended to `found`"
    out,i,n = [],0,len(md)
    fence = re.compile(r'^[ \t]{0,3}(`{3,}|~{3,})', re.M)
    while i < n:
        c = md[i]
        at_line = i == 0 or md[i-1] == '\n'
        m = fence.match(md, i) if at_line else None
        if m:   # a fenced block runs to a closing fence of the same kind, at least as long
            close = re.compile(r'^[ \t]{0,3}' + re.escape(m.group(1)[0]) + '{' + str(len(m.group(1))) + r',}[ \t]*$', re.M)
            e = close.search(md, md.find('\n', i) + 1 if '\n' in md[i:] else n)
            j = e.end() if e else n
            out.append(md[i:j]); i = j; continue
        if c == '\\' and i+1 < n:
            out.append(md[i:i+2]); i += 2; continue
        if c == '`':
            run = re.match(r'`+', md[i:]).group()
            j = md.find(run, i+len(run))
            while j != -1 and (md[j+len(run):j+len(run)+1] == '`'): j = md.find(run, j+len(run)+1)
            if j == -1: out.append(run); i += len(run); continue
            out.append(md[i:j+len(run)]); i = j+len(run); continue
        if c == '$':
            if md.startswith('$$', i):
                j = md.find('$$', i+2)
                if j != -1 and md[i+2:j].strip():
                    found.append((md[i+2:j].strip(), True)); out.append(TOKEN.format(len(found)-1)); i = j+2; continue
            elif i+1 < n and not md[i+1].isspace():
                j = i+1
                while True:
                    j = md.find('$', j)
                    if j == -1 or '\n\n' in md[i:j]: j = -1; break
                    if md[j-1] == '\\': j += 1; continue
                    if not md[j-1].isspace() and not (j+1 < n and md[j+1].isdigit()): break
                    j += 1
                if j != -1:
                    found.append((md[i+1:j], False)); out.append(TOKEN.format(len(found)-1)); i = j+1; continue
        out.append(c); i += 1
    return ''.join(out)

def protect_nb_math(nb)->list:
    "Swap the formulas of `nb`'s markdown cells and markdown outputs (docstrings) for tokens; returns the formulas"
    found = []
    for c in nb.cells:
        if c.cell_type == 'markdown': c.source = protect_math(c.source, found)
        for o in c.get('outputs', []):
            md = o.get('data', {}).get('text/markdown')
            if md: o['data']['text/markdown'] = protect_math(''.join(md), found)
    return found

def restore_math(body:str, found:list)->str:
    "Put the formulas back: as KaTeX's input in text, as plain letters inside tags (a heading's id, its anchor link)"
    def in_tag(m): return TOKEN_RE.sub(lambda t: re.sub(r'\W+', '', found[int(t.group(1))][0]), m.group())
    body = re.sub(r'<[^<>]*>', in_tag, body)
    def span(m):
        tex,display = found[int(m.group(1))]
        return f'<span class="math {"display" if display else "inline"}">{html.escape(tex, quote=False)}</span>'
    return TOKEN_RE.sub(span, body)

# Links. Quarto's heading ids are lower case, and nbdev's links to documented symbols use them
# (`https://<site-url>/misc/fc_decomposer.html#fc_decomposer`); offline they open the page here instead.
def slug(text:str)->str:
    "Pandoc's (so Quarto's) identifier for a heading: letters, digits, `_-.` kept, spaces to `-`, lower case, from the first letter"
    s = ''.join(c for c in '-'.join(text.split()) if c.isalnum() or c in '_-.').lower()
    return re.sub(r'^[^a-z]+', '', s) or 'section'

def quarto_ids(body:str)->str:
    "Headings' ids (and the links to them on the page) as Quarto writes them, kept unique"
    seen,renamed = set(),{}
    def heading(m):
        old,inner = m.group(2),m.group(3)
        text = re.sub(r'<a class="anchor-link".*?</a>', '', inner, flags=re.S)
        new = base = slug(html.unescape(re.sub(r'<[^>]*>', '', text)))
        k = 0
        while new in seen: k += 1; new = f'{base}-{k}'
        seen.add(new); renamed.setdefault(old, new)
        return f'<h{m.group(1)} id="{new}"' + inner.replace(f'href="#{old}"', f'href="#{new}"')
    body = re.sub(r'<h([1-6]) id="([^"]*)"(.*?</h\1>)', heading, body, flags=re.S)
    return re.sub(r'href="#([^"]*)"', lambda m: f'href="#{renamed.get(m.group(1), m.group(1).lower())}"', body)

def local_links(body:str, here:str, site_url:str, written:set)->str:
    "Links to a page of this site by its public address (`site_url`...) made relative, when the page is here"
    up = '../'*here.count('/')
    def fix(m):
        path,frag = m.group(1),m.group(2) or ''
        return f'href="{up}{path}{frag.lower()}"' if path in written else m.group()
    return re.sub(r'href="' + re.escape(site_url.rstrip('/')) + r'/([^"#]*)(#[^"]*)?"', fix, body)

def page_html(body:str, here:str, toc:list, titles:dict, site:str)->str:
    "A whole page: the top bar, the sidebar of `toc` (links relative to the page `here`), then the notebook's `body`"
    up = '../'*here.count('/')
    href = lambda p: up + p.replace('.ipynb', '.html')
    esc = html.escape
    items,section = [],None
    for sec,p in toc:
        if sec != section:
            if section: items.append('</ul></li>')
            if sec: items.append(f'<li>{esc(sec)}<ul>')
            section = sec
        items.append(f'<li><a href="{href(p)}"{" class=here" if p == here else ""}>{esc(titles[p])}</a></li>')
    if section: items.append('</ul></li>')
    menus,done = [],set()   # the top bar: each top-level page, and each section with its pages in a menu
    for sec,p in toc:
        if sec in done: continue
        if sec is None:
            if p == 'index.ipynb': continue   # the site's title links to it
            menus.append(f'<div class="menu"><a href="{href(p)}"{" class=here" if p == here else ""}>{esc(titles[p])}</a></div>')
            continue
        done.add(sec)
        ps = [q for s,q in toc if s == sec]
        drop = ''.join(f'<a href="{href(q)}">{esc(titles[q])}</a>' for q in ps)
        menus.append(f'<div class="menu"><a href="{href(ps[0])}"{" class=here" if here in ps else ""}>{esc(sec)}</a>'
                     f'<div class="drop">{drop}</div></div>')
    top = (f'<header class="topbar"><a class="brand{" here" if here == "index.ipynb" else ""}" href="{up}index.html">{esc(site)}</a>{"".join(menus)}'
           f'<div class="search"><input id="search-box" type="search" placeholder="Search (press /)" aria-label="Search the docs" autocomplete="off">'
           f'<ul id="search-results" class="search-results"></ul></div></header>')
    return (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><link rel="icon" href="data:,">'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">'
            f'<title>{esc(titles[here])} – {esc(site)}</title>'
            f'<link rel="stylesheet" href="{up}_static/katex/katex.min.css"><link rel="stylesheet" href="{up}_static/site.css">'
            f'<link rel="stylesheet" href="{up}_static/pygments.css"></head>'
            f'<body data-root="{up}">{top}<nav class="sidebar"><ul>{"".join(items)}</ul></nav><main>{body}</main>'
            f'<script src="{up}_static/katex/katex.min.js"></script><script src="{up}_static/site.js"></script></body></html>')

class Sections(HTMLParser):
    "A page's text split at its headings: `[(id, heading, text)]`, leaving out scripts, styles, maths and anchor marks"
    SKIP = {'script', 'style'}
    def __init__(self):
        super().__init__(); self.res,self.skip,self.head = [['', '', []]],[],None
    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if self.skip or tag in self.SKIP or 'math' in (a.get('class') or '').split() or 'anchor-link' in (a.get('class') or '').split():
            if tag not in ('br', 'img', 'hr', 'input', 'meta', 'link'): self.skip.append(tag)
            return
        if re.fullmatch(r'h[1-6]', tag) and a.get('id'): self.res.append([a['id'], '', []]); self.head = tag
        elif tag in ('p', 'li', 'tr', 'td', 'th', 'div', 'pre', 'br'): self.res[-1][2].append(' ')
    def handle_endtag(self, tag):
        if self.skip:
            if tag == self.skip[-1]: self.skip.pop()
            return
        if tag == self.head: self.head = None
    def handle_data(self, data):
        if self.skip: return
        if self.head: self.res[-1][1] += data
        else: self.res[-1][2].append(data)
    def sections(self):
        return [(i, ' '.join(h.split()), ' '.join(''.join(t).split())) for i,h,t in self.res]

def search_docs(body:str, url:str, page_title:str)->list:
    "The search documents of one page: one per section, `u` (link from the site's root), `p` (page), `t` (heading), `b` (text)"
    parser = Sections(); parser.feed(body); parser.close()
    docs = []
    for i,(sid,head,text) in enumerate(parser.sections()):
        if not (head or text): continue
        docs.append(dict(u=url + (f'#{sid}' if sid and i > 1 else ''), p=page_title, t=head or page_title, b=text))
    return docs

def find_js(name:str, dirs:list, files:list)->Path:
    "The first of `dirs` holding all of `files`"
    for d in dirs:
        if all((d/f).exists() for f in files): return d
    sys.exit(f"tools/docs.py: {name} not found in {', '.join(map(str, dirs))}: {INSTALL}")

def vendor(out:Path, docs:list):
    "Copy KaTeX, lunr and the site's own CSS/JS into `out/_static`, with the search documents"
    static = out/'_static'
    if static.exists(): shutil.rmtree(static)
    static.mkdir(parents=True)
    katex = find_js('KaTeX', KATEX(), ['katex.min.js', 'katex.min.css', 'fonts'])
    (static/'katex').mkdir()
    for f in ('katex.min.js', 'katex.min.css'): shutil.copy(katex/f, static/'katex'/f)
    shutil.copytree((katex/'fonts').resolve(), static/'katex'/'fonts')
    shutil.copy(find_js('lunr', LUNR(), ['lunr.min.js'])/'lunr.min.js', static/'lunr.min.js')
    for f in ('site.css', 'site.js'): shutil.copy(HERE/'site'/f, static/f)
    from pygments.formatters import HtmlFormatter
    (static/'pygments.css').write_text(HtmlFormatter(style='default').get_style_defs('.highlight'))
    (static/'search-index.js').write_text('window.SEARCH_DOCS = ' + json.dumps(docs, ensure_ascii=False, separators=(',', ':')) + ';\n')

def extra_pages(nbs:Path, toc:list)->list:
    "Notebooks that Quarto would render but the sidebar doesn't list (not `_`-prefixed, not in hidden folders)"
    listed = {p for _,p in toc}
    res = []
    for f in sorted(nbs.rglob('*.ipynb')):
        rel = f.relative_to(nbs)
        if any(part.startswith(('_', '.')) for part in rel.parts): continue
        if rel.as_posix() not in listed: res.append(rel.as_posix())
    return res

def site_title(cfg)->str:
    "The site's title, from `nbs/nbdev.yml` as Quarto reads it"
    f = cfg.nbs_path/'nbdev.yml'
    meta = yaml.safe_load(f.read_text()) if f.exists() else {}
    return ((meta or {}).get('website') or {}).get('title') or cfg.lib_name

def build(out:Path)->list:
    "Render every sidebar page (and every other notebook Quarto would render) to `out`; returns the paths written"
    cfg = get_config()
    # Fail before the long part when the scripts the pages need are missing
    find_js('KaTeX', KATEX(), ['katex.min.js', 'katex.min.css', 'fonts']); find_js('lunr', LUNR(), ['lunr.min.js'])
    proc,toc = proc_nbs(cfg.nbs_path),pages(cfg.nbs_path)
    c = Config(TagRemovePreprocessor=dict(enabled=True, remove_input_tags={'remove_input'}))
    exp = HTMLExporter(config=c, template_name='basic', exclude_input_prompt=True, exclude_output_prompt=True)
    rendered = [p for _,p in toc] + extra_pages(cfg.nbs_path, toc)
    nbs = {p:nbformat.read(proc/p, as_version=4) for p in rendered}
    titles = {p:title(nb) for p,nb in nbs.items()}
    site,site_url = site_title(cfg),cfg.doc_host.rstrip('/') + '/' + cfg.doc_baseurl.strip('/')
    html_of = lambda p: p.replace('.ipynb', '.html')
    all_html = {html_of(p) for p in rendered}
    written,docs = [],[]
    for p,nb in nbs.items():
        nb = plain(front_matter_to_markdown(nb))
        maths = protect_nb_math(nb)
        body,_ = exp.from_notebook_node(nb)
        body = local_links(quarto_ids(restore_math(body, maths)), p, site_url, all_html)
        dst = out/html_of(p)
        dst.parent.mkdir(parents=True, exist_ok=True)
        dst.write_text(page_html(body, p, toc, titles, site))
        docs += search_docs(body, html_of(p), titles[p])
        written.append(dst)
    vendor(out, docs)
    return written

if __name__ == '__main__':
    for w in undocumented(): print(f'warning: {w}', file=sys.stderr)
    for p in build(Path(sys.argv[1] if len(sys.argv) > 1 else '_site')): print(p)
