"""The docs site, rendered offline by `tools/docs.py`, checked in headless Chromium (Debian's, driven by Playwright)
with every request outside the site refused: every page loads without console errors or failed requests, shows the
top bar and search box, and has its maths typeset by KaTeX (no raw TeX left); every link between pages resolves,
anchors included; the search box finds `FC_Decomposer` and `whiten` and its results open the right page; the API
page shows `FC_Decomposer`'s signature and parameter table, the tutorial its parameter-count table; every image on
every page loads and fits in the page's column, and the pages that explain a figure show it (the API page its
spectrum and sensitivity plots, the sentence-encoder tutorial its quality-against-parameters plot). Each page is
photographed into `_site_check/` (a CI artifact), with the search results. `.ci/run` installs Chromium, KaTeX and
lunr (`chromium libjs-katex libjs-lunr`); elsewhere the test is skipped when Chromium is missing."""
import functools, http.server, os, re, shutil, subprocess, sys, threading
from pathlib import Path
from urllib.parse import urljoin, urlparse, unquote
import pytest, yaml

root = Path(__file__).parents[1]
chromium = shutil.which('chromium') or '/usr/bin/chromium'
pytestmark = [pytest.mark.slow,   # over a minute on two CPU cores: `pytest -m 'not slow'` leaves it out
              pytest.mark.skipif(not Path(chromium).exists() and not os.environ.get('CI'), reason='Debian chromium not installed (.ci/run installs it)')]
FLAGS = ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
         '--disable-component-update', '--disable-sync']
shots = root/'_site_check'
# Raw TeX as it would show without KaTeX: a `$...$` span holding a command, or a `$$`
RAW_TEX = re.compile(r'\$\$|\$[^$\n]*\\[A-Za-z]+[^$\n]*\$')

def sidebar():
    "`(section, page html)` in nbs/sidebar.yml's order"
    def walk(items, sec=None):
        for it in items:
            if isinstance(it, dict): yield from walk(it['contents'], it.get('section'))
            else: yield sec, it.replace('.ipynb', '.html')
    return list(walk(yaml.safe_load((root/'nbs'/'sidebar.yml').read_text())['website']['sidebar']['contents']))

def source_has_maths(page:str)->bool:
    "Whether the page's notebook writes TeX in its markdown (read from nbs/, not from the site)"
    import nbformat
    nb = nbformat.read(root/'nbs'/page.replace('.html', '.ipynb'), as_version=4)
    return any(RAW_TEX.search(c.source) for c in nb.cells if c.cell_type == 'markdown')

@pytest.fixture(scope='module')
def site(tmp_path_factory):
    "The rendered site, served on localhost: `(base url, pages)`"
    out = tmp_path_factory.mktemp('site')
    r = subprocess.run([sys.executable, root/'tools'/'docs.py', out], capture_output=True, text=True, cwd=root)
    assert r.returncode == 0, r.stderr[-3000:]
    pages = r.stdout.split()
    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *a): pass
    handler = functools.partial(Quiet, directory=str(out))
    srv = http.server.ThreadingHTTPServer(('127.0.0.1', 0), handler)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield f'http://127.0.0.1:{srv.server_port}/',[str(Path(p).relative_to(out)) for p in pages]
    srv.shutdown()

@pytest.fixture(scope='module')
def browser(site):
    "A Chromium context in which every request outside the site is refused (and recorded), with its problems recorded"
    from playwright.sync_api import sync_playwright
    base,_ = site
    problems = dict(errors=[], refused=[], failed=[])
    def route(r):
        if r.request.url.startswith(base): r.continue_()
        else: problems['refused'].append(r.request.url); r.abort()
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=chromium, args=FLAGS)
        ctx = b.new_context(viewport=dict(width=1280, height=900))
        ctx.route('**/*', route)
        def watch(page):
            page.on('console', lambda m: problems['errors'].append(f'{page.url}: {m.text}') if m.type == 'error' else None)
            page.on('pageerror', lambda e: problems['errors'].append(f'{page.url}: {e}'))
            page.on('response', lambda r: problems['failed'].append(f'{r.status} {r.url}') if r.status >= 400 else None)
        ctx.on('page', watch)
        yield ctx,problems
        b.close()

# The text a reader sees outside the maths and the code: backslash commands there are TeX KaTeX didn't take
VISIBLE_TEX = """() => { const res = [], w = document.createTreeWalker(document.querySelector('main'), NodeFilter.SHOW_TEXT);
  for (let n; (n = w.nextNode());) {
    if (n.parentElement.closest('.katex, pre, code')) continue;
    const m = n.textContent.match(/\\\\[A-Za-z]{2,}/); if (m) res.push(n.textContent.trim().slice(0, 120)); }
  return res; }"""

@pytest.fixture(scope='module')
def crawl(site, browser):
    "Every page visited once: its text, links, ids, maths and top bar, and a screenshot in `_site_check/`"
    base,pages = site
    ctx,_ = browser
    shutil.rmtree(shots, ignore_errors=True); shots.mkdir()
    res = {}
    page = ctx.new_page()
    for name in pages:
        assert page.goto(base + name).ok, name
        page.evaluate('document.fonts.ready.then(() => 0)')
        res[name] = dict(
            text=page.inner_text('main'),
            links={urljoin(base + name, h) for h in page.eval_on_selector_all('a[href]', 'as => as.map(a => a.getAttribute("href"))')},
            ids=set(page.eval_on_selector_all('[id]', 'es => es.map(e => e.id)')),
            maths=page.locator('main span.math').count(), katex=page.locator('main span.math:has(.katex)').count(),
            katex_errors=page.locator('.katex-error').count(), visible_tex=page.evaluate(VISIBLE_TEX),
            katex_fonts=page.evaluate("[...document.fonts].filter(f => f.family.includes('KaTeX') && f.status === 'loaded').length"),
            topbar=page.eval_on_selector_all('header.topbar a', 'as => as.map(a => a.href)'),
            search=page.locator('header.topbar input#search-box').count(),
            images=page.eval_on_selector_all('main img', 'is => is.map(i => [i.complete && i.naturalWidth > 0 && i.getBoundingClientRect().right <= document.querySelector("main").getBoundingClientRect().right + 1, i.naturalWidth, i.src.slice(0, 60)])'))
        page.screenshot(path=str(shots/(name.replace('/', '_') + '.png')), full_page=True)
    page.close()
    return res

def test_pages_load_offline(site, browser, crawl):
    _,problems = browser
    assert not problems['errors'], problems['errors']
    assert not problems['failed'], problems['failed']
    assert not problems['refused'], problems['refused']   # nothing reaches for a CDN
    assert len(list(shots.glob('*.png'))) >= len(site[1])

def test_content(crawl):
    api = crawl['misc/fc_decomposer.html']['text']
    assert 'def FC_Decomposer(' in api and 'rank_ratio' in api, api[:2000]
    assert 'Parameter' in api and 'Default' in api and 'Details' in api   # docments' parameter table
    tut = crawl['tutorials/misc/fc_decomposer.html']['text']
    assert '134,277,186' in tut and '91,281,476' in tut

def test_images_load(crawl):
    broken = [(name, src) for name,r in crawl.items() for ok,_,src in r['images'] if not ok]
    assert not broken, broken   # each image loaded, and fits in the page's column
    # the figures the pages explain, rendered from the notebooks' stored outputs
    assert len(crawl['misc/fc_decomposer.html']['images']) >= 2   # plot_spectrum, plot_sensitivity
    assert len(crawl['tutorials/misc/sentence_encoder.html']['images']) >= 2   # plot_sensitivity, quality against parameters
    assert len(crawl['benchmarks.html']['images']) >= 2   # quality against parameters: the causal LM's, MiniLM's

def test_sentence_encoder_tutorial(crawl):
    tut = crawl['tutorials/misc/sentence_encoder.html']['text']
    for s in ('Quality against parameters', 'whiten_seq', 'load_pretrained', 'st[0].auto_model'): assert s in tut, s

def test_maths_typeset(crawl):
    with_maths = [p for p in crawl if source_has_maths(p)]
    for p in ('misc/fc_decomposer.html', 'tutorials/misc/fc_decomposer.html', 'tutorials/misc/sentence_encoder.html'): assert p in with_maths, with_maths
    for name,r in crawl.items():
        assert not RAW_TEX.findall(r['text']), (name, RAW_TEX.findall(r['text'])[:5])
        assert not r['visible_tex'], (name, r['visible_tex'][:5])
        assert r['katex_errors'] == 0, name
        assert r['katex'] == r['maths'], (name, r['katex'], r['maths'])   # every formula typeset
        if name in with_maths: assert r['katex'] > 0 and r['katex_fonts'] > 0, (name, r)
    # the issue counted 17 raw TeX spans on the API page and 10 on the tutorial
    assert crawl['misc/fc_decomposer.html']['katex'] >= 17
    assert crawl['tutorials/misc/fc_decomposer.html']['katex'] >= 10
    display = crawl['misc/fc_decomposer.html']['text']
    assert '∥' in display or '‖' in display, 'the Frobenius norm is drawn, not spelled \\lVert'

def test_links_resolve(site, browser, crawl):
    base,pages = site
    ctx,_ = browser
    local = {l for r in crawl.values() for l in r['links'] if urlparse(l).netloc == urlparse(base).netloc}
    assert len({l.split('#')[0] for l in local}) >= len(pages)
    broken = [l for l in sorted({l.split('#')[0] for l in local}) if not ctx.request.get(l).ok]
    assert not broken, broken
    missing = []   # anchors: the id must be on the page
    for l in local:
        u = urlparse(l)
        target = u.path.lstrip('/')
        if u.fragment and target in crawl and not {u.fragment, unquote(u.fragment)} & crawl[target]['ids']: missing.append(l)
    assert not missing, sorted(missing)
    import configparser
    cfg = configparser.ConfigParser(); cfg.read(root/'settings.ini')
    public = cfg['DEFAULT']['doc_host'].rstrip('/') + '/' + cfg['DEFAULT']['doc_baseurl'].strip('/') + '/'
    online = sorted(l for r in crawl.values() for l in r['links'] if l.startswith(public) and l[len(public):].split('#')[0] in crawl)
    assert not online, online   # links to the published pages open the local ones

def test_topbar(site, crawl):
    base,_ = site
    toc = sidebar()
    wanted = {base + 'index.html'} | {base + p for sec,p in toc if sec is None}
    wanted |= {base + next(p for s,p in toc if s == sec) for sec in {s for s,_ in toc if s}}   # each section's first page
    for name,r in crawl.items():
        assert r['search'] == 1, name
        assert wanted <= set(r['topbar']), (name, wanted - set(r['topbar']))

def search(page, query):
    "Type `query` into the search box and wait for the results: `(text, href)` of each"
    box = page.locator('#search-box')
    box.fill('')
    box.click(); box.type(query, delay=20)
    page.wait_for_selector('#search-results.open li')
    return page.eval_on_selector_all('#search-results li', 'ls => ls.map(l => [l.innerText, l.querySelector("a") ? l.querySelector("a").href : null])')

def test_search(site, browser, crawl):
    base,_ = site
    ctx,problems = browser
    page = ctx.new_page()
    page.goto(base + 'tutorials/misc/fc_decomposer.html')   # links in the results are relative to a nested page
    hits = search(page, 'FC_Decomposer')
    assert hits and all(h for _,h in hits), hits
    assert urlparse(hits[0][1]).path == '/misc/fc_decomposer.html', hits[:3]
    page.screenshot(path=str(shots/'search_FC_Decomposer.png'))
    page.click('#search-results li a >> nth=0')
    page.wait_for_load_state()
    u = urlparse(page.url)
    assert u.path == '/misc/fc_decomposer.html', page.url
    if u.fragment: assert page.locator(f'[id="{unquote(u.fragment)}"]').count() == 1, page.url
    assert 'FC_Decomposer' in page.inner_text('main')

    hits = search(page, 'whiten')   # from the page just opened, and with the keyboard this time
    assert len(hits) >= 2 and all(h for _,h in hits), hits
    for _,h in hits:   # every result is about whitening: its page says so (`whitened`, `whitening` count, lunr stems them)
        assert 'whiten' in crawl[urlparse(h).path.lstrip('/')]['text'].lower(), h
    page.screenshot(path=str(shots/'search_whiten.png'))
    first = hits[0][1]
    page.keyboard.press('Enter')
    page.wait_for_url(first)
    assert 'whiten' in page.inner_text('main').lower(), page.url

    assert search(page, 'zzqxnothing')[0][1] is None   # "No results", not an error
    for c in 'abcdefghijklmnopqrstuvwxyz0123456789':   # the first key typed, whatever it is, finds pages without an error
        assert search(page, c), c
    page.close()
    assert not problems['errors'], problems['errors']
    assert not problems['refused'], problems['refused']
