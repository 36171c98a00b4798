"The fastai path for causal LMs on small models built from configs: saving, export, GPT-2's Conv1D and LayerNorms, a GPU, the benchmark."
import json, math, re, subprocess, sys, warnings
from pathlib import Path
import pytest, torch
from fastcore import test as fct   # (as `test_eq`, pytest would collect it)
import transformers
import fastai.callback.schedule, fastai.callback.fp16
from fastai.learner import load_learner
from fastai.torch_core import set_seed
from fasterai.misc.all import *

def dls(vocab=96, n=8000, seq=32, bs=8, **kwargs):
    "Windows of a stream with some structure to learn (each token mostly follows from the one before)"
    g = torch.Generator().manual_seed(0)
    ids = [0]
    for r in torch.rand(n, generator=g).tolist(): ids.append((ids[-1]*7 + 3) % vocab if r < 0.8 else int(r*1e6) % vocab)
    ids = torch.tensor(ids)
    return causal_lm_dls(ids[:int(0.9*n)], ids[int(0.9*n):], seq_len=seq, bs=bs, **kwargs)

def llama(vocab=96):
    return transformers.LlamaForCausalLM(transformers.LlamaConfig(vocab_size=vocab, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64, bos_token_id=None, eos_token_id=None, pad_token_id=None))

def gpt2(vocab=96):
    return transformers.GPT2LMHeadModel(transformers.GPT2Config(vocab_size=vocab, n_embd=32, n_layer=2, n_head=4, n_positions=64,
                                                                bos_token_id=None, eos_token_id=None))

def tuned(model, tmp_path, layers='model.layers.*'):
    "A Learner over `model` trained whole, its `layers` decomposed by `decompose_fc`, then fine-tuned: its factors only"
    set_seed(0, reproducible=True)
    learn = causal_lm_learner(dls(), model, path=tmp_path)
    with learn.no_bar(), learn.no_logging():
        learn.fit_one_cycle(2, 1e-2)
        learn.decompose_fc(rank_ratio=0.25, method='whiten', layers=[layers], n_batches=4)
        learn.fit_one_cycle(1, 1e-3)
    return learn

def same(a, b, x):
    a.eval(); b.eval()
    with torch.no_grad(): torch.testing.assert_close(a(x).logits, b(x).logits, rtol=0, atol=0)

def test_save_pretrained_load_pretrained(tmp_path):
    learn = tuned(llama(), tmp_path)
    learn.model.save_pretrained(tmp_path/'lm')
    back = load_pretrained(tmp_path/'lm')
    same(back, learn.model, learn.dls.valid.one_batch()[0])
    assert type(back.model.layers[0].mlp.up_proj) is LowRankLinear

@pytest.mark.slow
def test_export_load_learner(tmp_path):
    learn = tuned(llama(), tmp_path)
    learn.export('lm.pkl')
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')   # fastai warns that pickles can run code
        back = load_learner(tmp_path/'lm.pkl')
    test_x = learn.dls.valid.one_batch()[0]
    same(back.model, learn.model, test_x)
    assert len(back.dls.train.dataset) == 0   # the windows were not pickled
    learn.export('again.pkl')   # export leaves the Learner as it was: it trains on
    with learn.no_bar(), learn.no_logging(): learn.fit(1, 1e-4)

@pytest.mark.slow
def test_gpt2_conv1d_and_layernorms(tmp_path):
    "GPT-2: Conv1D layers factorised into pairs; its LayerNorms, which fastai's `train_bn` would train while frozen, train only with `norms=True`"
    learn = tuned(gpt2(), tmp_path, 'transformer.h.*')
    train = {n for n,p in learn.model.named_parameters() if p.requires_grad}
    assert train and all(re.search(r'\.(c_attn|c_proj|c_fc)\.[01]\.', n) for n in train), train
    assert not any('ln_' in n for n in train)
    norms = causal_lm_learner(learn.dls, learn.model, norms=True)
    train = {n for n,p in norms.model.named_parameters() if p.requires_grad}
    assert {n for n in train if 'ln_' in n} == {n for n,_ in learn.model.named_parameters() if 'ln_' in n}

def test_frozen_parameters_stay(tmp_path):
    "After training whole, decomposing and fine-tuning, only the pairs moved: no weight decay on the frozen rest"
    learn = tuned(llama(), tmp_path)
    before = {n:p.detach().clone() for n,p in learn.model.named_parameters()}
    with learn.no_bar(), learn.no_logging(): learn.fit_one_cycle(1, 1e-3, wd=0.1)
    moved = {n for n,p in learn.model.named_parameters() if not torch.equal(p, before[n])}
    assert moved and all(re.search(r'_proj\.[01]\.', n) for n in moved), moved

@pytest.mark.skipif(not torch.cuda.is_available(), reason='mixed precision needs a GPU')
@pytest.mark.parametrize('precision', ['to_bf16', 'to_fp16'])
def test_mixed_precision_on_gpu(tmp_path, precision):
    learn = causal_lm_learner(dls(device='cuda'), llama().cuda(), path=tmp_path)
    with learn.no_bar(), learn.no_logging(): learn.fit(1, 1e-2)
    learn.decompose_fc(rank_ratio=0.5, method='whiten', layers=['model.layers.*'], n_batches=4)
    before = learn.validate()[1]
    getattr(learn, precision)()
    with learn.no_bar(), learn.no_logging(): learn.fit_one_cycle(2, 3e-3)
    after = learn.validate()[1]
    assert after < before, (before, after)
    assert next(learn.model.parameters()).dtype == torch.float32   # mixed precision: the weights stay float32

@pytest.mark.slow
def test_benchmark_quick(tmp_path, monkeypatch):
    "benchmarks/llm_finetune.py --quick runs every configuration; training all parameters lowers the held-out perplexity, the factors alone (or with the norms) do not raise it"
    monkeypatch.setenv('FASTERAI_CACHE', str(tmp_path))
    bench = Path(__file__).parents[1]/'benchmarks'
    r = subprocess.run([sys.executable, bench/'llm_finetune.py', '--quick', '--runs', '0:all', '0.2:factors', '0.4:factors', '0.4:norms', '0.4:all'],
                       capture_output=True, text=True, cwd=bench)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    rows = [[c.strip() for c in l.strip('|').split('|')] for l in r.stdout.splitlines() if re.match(r'\| \d+% \|', l)]
    assert [(x[0], x[1]) for x in rows] == [('0%', 'all'), ('20%', 'factors'), ('40%', 'factors'), ('40%', 'norms'), ('40%', 'all')], r.stdout
    for x in rows:
        ppl = [float(v) for v in x[3].split(' / ')]   # before, at each quarter, after
        assert len(ppl) == 5 and (ppl[-1] < ppl[0] if x[1] == 'all' else ppl[-1] < 1.01*ppl[0]), x   # the budget keeps most of this small model whole: few factors train
    n = {(x[0], x[1]):int(x[2].replace(',', '')) for x in rows}
    assert max(n['20%', 'factors'], n['40%', 'factors']) < n['40%', 'all'] < n['0%', 'all'], n
    assert n['40%', 'norms'] - n['40%', 'factors'] == (2*2 + 1)*64, n   # the quick Llama (causal_lm.py's QUICK): two RMSNorms of 64 a layer, two layers, and the final one

@pytest.mark.slow
def test_benchmark_same_minutes(tmp_path, monkeypatch):
    "`--same-minutes` gives a decomposed run the reference's minutes (both timed on this machine): as many steps as fit at its own time a step; it needs the reference's run first"
    monkeypatch.setenv('FASTERAI_CACHE', str(tmp_path))
    bench,out = Path(__file__).parents[1]/'benchmarks',tmp_path/'res.json'
    bad = subprocess.run([sys.executable, bench/'llm_finetune.py', '--quick', '--same-minutes', '--save', tmp_path/'none.json', '--runs', '0.4:factors'],
                         capture_output=True, text=True, cwd=bench)
    assert bad.returncode != 0 and "'0:all'" in bad.stderr, bad.stderr[-3000:]
    r = subprocess.run([sys.executable, bench/'llm_finetune.py', '--quick', '--same-minutes', '--save', out, '--runs', '0:all', '0.4:factors'],
                       capture_output=True, text=True, cwd=bench)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    res = json.loads(out.read_text())
    ref,dec = res['runs']['0:all'],res['runs']['0.4:factors']
    assert ref['probe_s_per_step'] is None and dec['reference_probe_s_per_step'] > 0 and dec['probe_s_per_step'] > 0, dec
    assert dec['steps'][-1] == int(res['steps']*dec['reference_probe_s_per_step']/60*60/dec['probe_s_per_step']) > 0, dec   # the reference's minutes, at its time a step here
    assert len(dec['ppl']) == 5 and all(math.isfinite(p) for p in dec['ppl']), dec
    r = subprocess.run([sys.executable, bench/'llm_finetune.py', '--quick', '--same-minutes', '--read-on', '--save', out, '--runs', '0.2:factors'],
                       capture_output=True, text=True, cwd=bench)   # the reference's run read from --save
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    dec = json.loads(out.read_text())['runs']['0.2:factors']
    assert dec['read_on'] == (dec['steps'][-1] > res['steps']) and all(math.isfinite(p) for p in dec['ppl']), dec
    bad = subprocess.run([sys.executable, bench/'llm_finetune.py', '--quick', '--read-on', '--runs', '0.2:factors'], capture_output=True, text=True, cwd=bench)
    assert bad.returncode != 0 and '--same-minutes' in bad.stderr, bad.stderr[-3000:]

def test_step_times(tmp_path, monkeypatch):
    "`--step-times N` times the reference's training steps and each decomposed model's, twice, and prints their ratios, running nothing else"
    monkeypatch.setenv('FASTERAI_CACHE', str(tmp_path))
    bench = Path(__file__).parents[1]/'benchmarks'
    r = subprocess.run([sys.executable, bench/'llm_finetune.py', '--quick', '--step-times', '2', '--runs', '0.4:factors'], capture_output=True, text=True, cwd=bench)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    rows = [[c.strip() for c in l.strip('|').split('|')] for l in r.stdout.splitlines() if re.match(r'\| \d+% \|', l)]
    assert [x[:3] for x in rows] == [['40%', 'factors', '1'], ['40%', 'factors', '2']], r.stdout
    for x in rows: assert float(x[3]) > 0 and float(x[4]) > 0 and abs(float(x[5]) - float(x[3])/float(x[4])) <= 0.006 + 1e-3*float(x[5]), x   # the ratio of the two times (to its 2 decimals)
    assert 'perplexity' not in r.stdout, r.stdout   # nothing trained to the end, nothing evaluated
    for extra in (['--runs', '0.4:factors', '--save', str(tmp_path/'x.json')], []):   # nothing saved, and something to time: said, not ignored
        bad = subprocess.run([sys.executable, bench/'llm_finetune.py', '--quick', '--step-times', '2', *extra], capture_output=True, text=True, cwd=bench)
        assert bad.returncode != 0 and '--step-times' in bad.stderr and not (tmp_path/'x.json').exists(), bad.stderr[-3000:]

def test_train_windows():
    "A run's windows: the reference's, gone round again, or (read on) the reference's then new ones, never the calibration's"
    sys.path.insert(0, str(Path(__file__).parents[1]/'benchmarks'))
    from llm_finetune import train_windows
    w = torch.arange(100)[:, None].expand(100, 3)   # window i holds i
    fct.test_eq(train_windows(w, 4, 10, 15, 20), w[:40])   # going round: the reference's 40 windows only
    fct.test_eq(train_windows(w, 4, 10, 8, 20, read_on=True), w[:40])   # fewer steps than the reference's: nothing to read on to
    on = train_windows(w, 4, 10, 20, 20, read_on=True)
    fct.test_eq(on[:40], w[:40]); fct.test_eq(on[40:, 0], torch.arange(40, 80))   # the reference's windows first, then the next 40, all new
    with pytest.raises(ValueError, match='21 steps of 4'): train_windows(w, 4, 10, 21, 20, read_on=True)   # into the calibration's last 20

def test_transformers_alone_after_fine_tune(tmp_path):
    "A fine-tuned decomposed model saved with `save_pretrained` loads with `transformers` alone (`trust_remote_code=True`) and computes the same"
    learn = tuned(llama(), tmp_path)
    learn.model.save_pretrained(tmp_path/'lm')
    back = transformers.AutoModelForCausalLM.from_pretrained(tmp_path/'lm', trust_remote_code=True)
    same(back, learn.model, learn.dls.valid.one_batch()[0])
