"The benchmark scripts run (small configurations), so they cannot rot, and their quick tables say what they should."
import re, subprocess, sys
import pytest
from pathlib import Path

pytestmark = pytest.mark.slow   # over a minute on two CPU cores: `pytest -m 'not slow'` leaves it out

bench = Path(__file__).parents[1]/'benchmarks'
def run(script, *args):
    "What `script --quick` prints; its error output in the failure when it fails"
    r = subprocess.run([sys.executable, bench/script, '--quick', *args], capture_output=True, text=True)
    assert r.returncode == 0, f"{script} failed:\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}"
    return r.stdout
def rows(out, title):
    "The rows of the table under the heading that contains `title`, split into cells"
    part = next(p for p in out[out.index(title):].split('\n\n')[1:] if p.startswith('|'))   # the first table after it
    return [[c.strip() for c in l.strip('|').split('|')] for l in part.splitlines()[2:] if l.startswith('|')]

def test_suite_quick():
    out = run('run.py', '--repeats', '1')
    assert len(rows(out, '# Decomposition speed')) == 7, out
    assert float(out.rsplit('optimum: ', 1)[1].split()[0]) < 1e-4, out
    assert len(rows(out, 'Whole model')) == 1, out
    assert [r[0] for r in rows(out, 'Scaling')] == ['256', '1024'], out
    mem = {r[0]:float(r[3].rstrip('x')) for r in rows(out, 'Peak memory')}
    assert set(mem) == {'copy', 'in place'} and 1 < mem['in place'] < mem['copy'], out   # in place, weights lend their memory
    lat = rows(out, 'Inference latency')
    assert len(lat) == 8 and {r[1] for r in lat} == {'1', '64'}, out

def test_data_aware_quick():
    out = run('data_aware.py')
    cos = {(r[1].split(' (kept: ')[0], r[2]):float(r[4]) for r in rows(out, 'all-MiniLM-L6-v2')}
    assert re.search(r"^\| 0\.5 \| budget \(kept: (allocation|even)\) \|", out, re.M), out   # a budget with data checks its allocation
    kind = 'random order, padded'
    assert cos['whiten', kind] > cos['asvd', kind] > cos['svd', '-'] > 0.5, out
    assert abs(cos["whiten", "random order, padded"] - cos["whiten", "same length, unpadded"]) < 0.005, out   # padding kept out
    assert cos["budget", "random order, padded"] >= cos["whiten", "random order, padded"] - 0.01, out   # same parameters, spent by sensitivity
    assert cos['whiten_weigh', kind] > cos['svd', '-'], out   # independent whitening, weighed
    acc = {r[1]:float(r[3]) for r in rows(out, '## Digits')}
    assert acc['original'] > 0.9 and max(acc['asvd'], acc['whiten'], acc['whiten_seq']) >= acc['svd'], out
    assert acc['budget'] >= acc['whiten'] - 0.01, out   # the digits' parameters spent by sensitivity

def test_sequential_quick():
    out = run('sequential.py')
    r = rows(out, '# Sequential calibration')
    assert [x[0] for x in r] == ['2', '4'] and [x[1] for x in r] == ['14', '28'], out
    pair = lambda m, n: (min(m, n)//2)*(m + n)   # rank_ratio 0.5, no bias: Llama's Linears have none
    block = 4*pair(128, 128) + 3*pair(352, 128)   # q, k, v, o; gate, up, down
    rest = lambda d: 2*1024*128 + (2*d + 1)*128   # the copy's embeddings, LM head and norms
    assert [x[5] for x in r] == [f"{4*(d*block + rest(d))/2**20:.0f}" for d in (2, 4)], out   # the copy adds its factor pairs and what it keeps, nothing else
    m = rows(out, 'on all-MiniLM-L6-v2')
    assert [x[:2] for x in m] == [['random order, padded', '0.5'], ['sorted by length', '0.5']], out
    for x in m:
        ind,seq,fwd,dec,start,prod,fact,floor = (float(x[i]) for i in (2, 3, 5, 6, 7, 8, 9, 10))
        assert min(ind, seq, fwd, dec, prod, fact) > 0 and 0 <= start < fwd and fact < seq, out   # the common start is a part of the forward pass
        assert abs(floor - (fwd + dec - start + prod + fact)) < 0.3, out   # the floor is made of its parts (printed to 0.1 s)

def test_causal_lm_quick(tmp_path, monkeypatch):
    monkeypatch.setenv('FASTERAI_CACHE', str(tmp_path))   # trains its tiny model here, as on a fresh machine
    out = run('causal_lm.py')
    ppl = {r[0]:[float(x) for x in r[1:-1]] for r in rows(out, '# Causal LM')}
    assert list(ppl) == ['original', 'svd', 'asvd', 'whiten', 'whiten sequential', 'whiten, weighed outputs', 'sequential, weighed outputs',
                         'budget (jacobian)', 'budget, weighed', 'budget sequential', 'budget sequential, weighed', 'sequential + refine', 'budget sequential + refine'], out
    base = ppl.pop('original')[0]
    assert 1 < base < 512, out   # trained: far below the vocabulary's uniform guess
    assert all(base < p < 1e4 for ps in ppl.values() for p in ps), out   # every decomposition costs some perplexity, none breaks the model
    assert ppl['svd'] == sorted(ppl['svd']), out   # fewer parameters, higher perplexity
    assert all(w <= s for w,s in zip(ppl['whiten'], ppl['svd'])), out   # the data helps at every size
    assert all(b <= 1.01*u for b,u in zip(ppl['budget sequential'], ppl['whiten sequential'])), out   # its check keeps the better of its allocation and uniform ranks, on the calibration data
    assert re.search(r"^budget sequential: the check kept the (allocation|even)( / (allocation|even)){3} ranks$", out, re.M), out
    assert re.search(r"^budget sequential: the walk's check kept the (walked|independent)( / (walked|independent)){3} model$", out, re.M), out
    assert (tmp_path/'causal_lm').exists()

def test_recipes_quick():
    out = run('recipes.py')
    got = {(r[0], r[2]):(int(r[3].replace(',', '')), float(r[4])) for r in rows(out, '# Recipes')}
    for model,recipe,size in (('digits VGG-style head', 'vision_head', 'param_ratio=0.5'), ('all-MiniLM-L6-v2', 'sentence_encoder', 'param_ratio=0.5')):
        (pf,qf),(pr,qr),(po,_) = got[model, f'fast ({size})'],got[model, recipe],got[model, 'original']
        assert pf == pr < po, out   # the recipe and plain SVD at the same size: the same ranks
        assert qr >= qf - 0.01, out   # calibrated on data, the recipe keeps at least as much
    (pf,qf),(ps,qs) = got['all-MiniLM-L6-v2', 'fast (param_ratio=0.6)'],got['all-MiniLM-L6-v2', 'speed']
    assert pf <= ps and qs > qf, out   # 'speed' may leave layers dense, and whitens

def test_products_quick():
    out = run('products.py', '--rounds', '1')
    assert [r[0].split(' (')[0] for r in rows(out, '## Models that read')] == ['TransformerEncoder', 'T5'], out

def test_shared_factor_quick():
    r = rows(run('shared_factor.py'), '## Shared first factor')
    assert [(x[0], x[1]) for x in r] == [('q, k, v', '1'), ('q, k, v', '512'), ('gate, up', '1'), ('gate, up', '512')], r
    for x in r:
        sep,sh = (int(p.replace(',', '')) for p in x[4].split(' / '))
        assert sh <= sep < sh + 576 + 3072, x   # sharing is compared at the same parameters, to one rank's worth
