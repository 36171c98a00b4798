"benchmarks/llm.py --quick: SmolLM2-135M (from its PyPI wheel, cached), four decoder layers cut by 20%, and what its table must show"
import json, subprocess, sys
from pathlib import Path
import pytest

bench = Path(__file__).parents[1]/'benchmarks'

@pytest.mark.slow
def test_llm_quick(tmp_path):
    pytest.importorskip('gguf')
    r = subprocess.run([sys.executable, bench/'llm.py', '--quick', '--save', tmp_path/'llm.json'], capture_output=True, text=True)
    assert r.returncode == 0, f"{r.stdout[-3000:]}\n{r.stderr[-3000:]}"
    res = json.loads((tmp_path/'llm.json').read_text())
    ppl = {o['method']:o['perplexity'] for o in res['runs']}
    assert set(ppl) == {'svd', 'whiten', 'whiten sequential', 'causal_lm'}, ppl
    assert 5 < res['original'] < 50, res['original']   # a working LM on Python's own source and docstrings
    assert res['original'] < ppl['whiten'] < ppl['svd'], ppl   # data helps, and nothing is free
    assert 5*ppl['whiten'] < ppl['svd'], ppl   # whitening keeps far more of an LM than the weights' own SVD (27 against 869 measured)
    assert ppl['whiten sequential'] < ppl['svd'] and ppl['causal_lm'] < ppl['svd'], ppl   # (on 512 calibration tokens the plain walk is further from the original than whitening: its check keeps the layers on their own)
    for m in ('causal_lm', 'whiten sequential'):   # every walk, with a budget or without, measured against the layers decomposed on their own
        walk = next(o for o in res['runs'] if o['method'] == m)['walk_check']
        assert walk.keys() == {'walked', 'independent'} and all(0 < v < 10 for v in walk.values()), walk   # KL divergences per token
    seq = next(o for o in res['runs'] if o['method'] == 'whiten sequential')
    if seq['walk_check']['independent'] < seq['walk_check']['walked']:   # the layers on their own kept: independent whitening's model
        assert abs(ppl['whiten sequential'] - ppl['whiten']) < 1e-3*ppl['whiten'], ppl
    assert r.stdout.count('(kept: walked)') + r.stdout.count('(kept: independent)') == 1, r.stdout   # the plain walk's row says which it kept
    for o in res['runs']:   # every method at the same size: within the cut, and within a layer's rank step of it
        assert 0.8*o['params_before'] - 4*7*(576+1536) <= o['params'] <= 0.8*o['params_before'], o
    assert r.stdout.count('\n| ') == 6, r.stdout   # the header, the original and a row per method

@pytest.mark.slow
def test_llm_lab_fewer_passes():
    "benchmarks/llm_lab.py's fewer passes (a table of the benchmarks page) still run the recipe, on less of its data"
    pytest.importorskip('gguf')
    sys.path.insert(0, str(bench))
    import llm, llm_lab
    full = llm.one('causal_lm', 0.2, dict(llm.QUICK, n_calib=16))   # 2 batches of 8 x 128 tokens
    for what in ('curvature', 'first'):
        r = llm_lab.fewer_passes(what, 1, 16, quick=True)
        assert 5 < r['perplexity'] < 100 and r['perplexity'] != full['perplexity'], (what, r['perplexity'], full['perplexity'])   # another model, from one batch
        assert r['walk_check'].keys() == {'walked', 'independent'} and r['params'] <= 0.8*r['params_before'], r   # the recipe, within its budget, checked
