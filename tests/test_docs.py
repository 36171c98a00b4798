"""The docs site, rendered offline by `tools/docs.py`, checked in headless Chromium (Debian's, driven by Playwright):
every page loads without console errors, the API page shows `FC_Decomposer`'s signature and parameter table, the
tutorial its parameter-count table, every link between pages resolves, and each page is photographed into
`_site_check/` (a CI artifact). `.ci/run` installs Chromium; elsewhere the test is skipped when it is missing."""
import functools, http.server, os, shutil, subprocess, sys, threading
from pathlib import Path
from urllib.parse import urljoin, urlparse
import pytest

root = Path(__file__).parents[1]
chromium = shutil.which('chromium') or '/usr/bin/chromium'
pytestmark = pytest.mark.skipif(not Path(chromium).exists() and not os.environ.get('CI'), reason='Debian chromium not installed (.ci/run installs it)')
FLAGS = ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
         '--disable-component-update', '--disable-sync']

@pytest.fixture(scope='module')
def site(tmp_path_factory):
    "The rendered site, served on localhost: `(base url, pages)`"
    out = tmp_path_factory.mktemp('site')
    pages = subprocess.run([sys.executable, root/'tools'/'docs.py', out], capture_output=True, text=True, check=True, cwd=root).stdout.split()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(out))
    handler.log_message = lambda *a: None
    srv = http.server.ThreadingHTTPServer(('127.0.0.1', 0), handler)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield f'http://127.0.0.1:{srv.server_port}/',[str(Path(p).relative_to(out)) for p in pages]
    srv.shutdown()

def test_site_in_chromium(site):
    from playwright.sync_api import sync_playwright
    base,pages = site
    shots = root/'_site_check'
    shutil.rmtree(shots, ignore_errors=True); shots.mkdir()
    text,links,errors = {},set(),[]
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=FLAGS)
        page = browser.new_page()
        page.on('console', lambda m: errors.append(f'{page.url}: {m.text}') if m.type == 'error' else None)
        page.on('pageerror', lambda e: errors.append(f'{page.url}: {e}'))
        for name in pages:
            assert page.goto(base + name).ok, name
            text[name] = page.inner_text('main')
            links |= {urljoin(base + name, h).split('#')[0] for h in page.eval_on_selector_all('a[href]', 'as => as.map(a => a.getAttribute("href"))')}
            page.screenshot(path=str(shots/(name.replace('/', '_') + '.png')), full_page=True)
        local = sorted(l for l in links if urlparse(l).netloc == urlparse(base).netloc)
        broken = [l for l in local if not page.request.get(l).ok]
        browser.close()
    assert not errors, errors
    assert not broken, broken
    assert len(local) >= len(pages), local
    api = text['misc/fc_decomposer.html']
    assert 'def FC_Decomposer(' in api and 'rank_ratio' in api, api[:2000]
    assert 'Parameter' in api and 'Default' in api and 'Details' in api   # docments' parameter table
    assert '134,277,186' in text['tutorials/misc/fc_decomposer.html'] and '91,281,476' in text['tutorials/misc/fc_decomposer.html']
    assert len(list(shots.glob('*.png'))) == len(pages)
