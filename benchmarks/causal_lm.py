"""A causal language model compressed like the papers' tables: held-out perplexity at 20% to 80% fewer parameters.

No LLM weights can be downloaded here, so the benchmark trains its own: a Llama-style decoder (4 layers, hidden 256,
4.3M parameters) on the Python standard library's own source files, with a byte-level BPE tokenizer trained on the
same files. One file in ten (by sorted path) is held out: perplexity is measured on those modules, calibration data
comes from the others. The trained model and tokenizer are cached (`~/.cache/fasterai/causal_lm`, or
`$FASTERAI_CACHE`), so training is paid once.

Every method (`refine`: 4 epochs of block refinement; `weighed`: `weigh_outputs=True`) decomposes the 28 Linears of the decoder layers (the embeddings and the LM head are left alone), at the
same parameter count: uniform ranks cut each layer's parameters by the fraction, the budget spends the same total
where the sensitivity says.

    python benchmarks/causal_lm.py            # train (5-8 minutes on 2 cores, once), then every method (a few minutes)
    python benchmarks/causal_lm.py --quick    # a tiny model trained in seconds: what CI runs
    python benchmarks/causal_lm.py --save benchmarks/results/causal_lm.json   # what the benchmarks page plots
"""
import argparse, hashlib, json, math, os, pathlib, sys, sysconfig, time
import torch

SKIP = ('test', 'tests', 'idlelib', 'lib2to3', 'site-packages', '__pycache__')
FULL = dict(hidden=256, layers=4, heads=4, inter=704, vocab=2048, seq=128, steps=1000, bs=16, lr=2e-3, n_calib=64, n_eval=128)
QUICK = dict(hidden=64, layers=2, heads=2, inter=176, vocab=512, seq=64, steps=150, bs=16, lr=3e-3, n_calib=16, n_eval=32)

def corpus(quick=False):
    "`(train, held_out)`: the text of the standard library's source files, one file in ten held out (by sorted path)"
    root = pathlib.Path(sysconfig.get_paths()['stdlib'])
    fs = [f for f in sorted(root.rglob('*.py')) if not any(p in SKIP for p in f.relative_to(root).parts)]
    if quick: fs = fs[::8]
    txt = [f.read_text(encoding='utf-8', errors='replace') for f in fs]
    return [t for i,t in enumerate(txt) if i % 10],[t for i,t in enumerate(txt) if i % 10 == 0]

def cache_dir(cfg):
    "Where the model trained with `cfg` on this Python's standard library is kept"
    key = hashlib.sha1(json.dumps([cfg, sys.version_info[:2], torch.__version__.split('+')[0]], sort_keys=True).encode()).hexdigest()[:12]
    return pathlib.Path(os.environ.get('FASTERAI_CACHE', pathlib.Path.home()/'.cache'/'fasterai'))/'causal_lm'/key

def tokenizer(texts, vocab):
    "A byte-level BPE tokenizer with `vocab` tokens (the last one, `<eos>`, ends each file) trained on `texts`"
    from tokenizers import Tokenizer, models, pre_tokenizers, decoders, trainers
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer,tok.decoder = pre_tokenizers.ByteLevel(add_prefix_space=False),decoders.ByteLevel()
    tok.train_from_iterator(texts, trainers.BpeTrainer(vocab_size=vocab-1, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False))
    tok.add_special_tokens(['<eos>'])
    return tok

def stream(tok, texts):
    "All of `texts` as one tensor of token ids, each file followed by `<eos>`"
    eos = tok.token_to_id('<eos>')
    return torch.tensor([i for e in tok.encode_batch(texts) for i in e.ids + [eos]])

def windows(ids, seq, n, seed=0):
    "`n` windows of `seq` tokens of `ids`: evenly spaced when `seed` is None, else at random"
    starts = (torch.linspace(0, len(ids)-seq-1, n).long() if seed is None
              else torch.randint(0, len(ids)-seq-1, (n,), generator=torch.Generator().manual_seed(seed)))
    return torch.stack([ids[s:s+seq] for s in starts.tolist()])

def build(cfg):
    import transformers
    return transformers.LlamaForCausalLM(transformers.LlamaConfig(
        vocab_size=cfg['vocab'], hidden_size=cfg['hidden'], intermediate_size=cfg['inter'], num_hidden_layers=cfg['layers'],
        num_attention_heads=cfg['heads'], num_key_value_heads=cfg['heads'], max_position_embeddings=cfg['seq'], eos_token_id=cfg['vocab']-1,
        bos_token_id=None, pad_token_id=None, tie_word_embeddings=False))

def trained(cfg, train_ids, log=print):
    "The model of `cfg` trained on `train_ids` (AdamW, warm-up then cosine), from the cache when it is there"
    import transformers
    d = cache_dir(cfg)
    if (d/'model.safetensors').exists(): return transformers.LlamaForCausalLM.from_pretrained(d).eval()
    torch.manual_seed(0)
    model,t = build(cfg),time.perf_counter()
    opt = torch.optim.AdamW(model.parameters(), cfg['lr'], betas=(0.9, 0.95), weight_decay=0.1)
    warm = cfg['steps']//20
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda i: min((i+1)/warm, 0.5*(1+math.cos(math.pi*i/cfg['steps']))))
    model.train()
    for i in range(cfg['steps']):
        x = windows(train_ids, cfg['seq'], cfg['bs'], seed=1000+i)
        loss = model(input_ids=x, labels=x).loss
        loss.backward(); torch.nn.utils.clip_grad_norm_(model.parameters(), 1.); opt.step(); opt.zero_grad(); sched.step()
        if i % 100 == 0 or i == cfg['steps']-1: log(f"  step {i}: loss {loss.item():.3f} ({time.perf_counter()-t:.0f} s)")
    model.eval().save_pretrained(d)
    return model

@torch.no_grad()
def perplexity(model, x, bs=16):
    "Perplexity of `model` on the windows `x` (every next-token prediction counted once)"
    nll = sum(float(model(input_ids=x[i:i+bs], labels=x[i:i+bs]).loss)*len(x[i:i+bs]) for i in range(0, len(x), bs))
    return math.exp(nll/len(x))

def ranks(model, cut):
    "`{name: k}` for each decoder Linear: the rank that cuts its parameters by the fraction `cut` (its pair's bias counted)"
    return {n: max(1, round(((1-cut)*l.in_features*l.out_features - l.out_features)/(l.in_features+l.out_features)))
            for n,l in model.named_modules() if isinstance(l, torch.nn.Linear) and n.startswith('model.layers.')}

def methods(model, cut):
    "The decomposers compared at `cut`: uniform ranks per method, and the sensitivity budget at the uniform ranks' parameter count"
    from fasterai.misc.all import FC_Decomposer, factored_params
    r,kw = ranks(model, cut),dict(layers=['model.layers.*'], progress=False)
    keep = sum(factored_params(l.out_features, l.in_features, k) for n,k in r.items() for l in [model.get_submodule(n)])/decoder_params(model)
    return {'svd': FC_Decomposer(rank=r, **kw),
            'asvd': FC_Decomposer(rank=r, method='asvd', **kw),
            'whiten': FC_Decomposer(rank=r, method='whiten', **kw),
            'whiten sequential': FC_Decomposer(rank=r, method='whiten', sequential=True, **kw),
            'whiten, weighed outputs': FC_Decomposer(rank=r, method='whiten', weigh_outputs=True, **kw),
            'sequential, weighed outputs': FC_Decomposer(rank=r, method='whiten', sequential=True, weigh_outputs=True, **kw),
            'budget (jacobian)': FC_Decomposer(budget=keep, method='whiten', **kw),
            'budget, weighed': FC_Decomposer(budget=keep, method='whiten', weigh_outputs=True, **kw),
            'budget sequential': FC_Decomposer(budget=keep, method='whiten', sequential=True, **kw),
            'budget sequential, weighed': FC_Decomposer(budget=keep, method='whiten', sequential=True, weigh_outputs=True, **kw),
            'sequential + refine': FC_Decomposer(rank=r, method='whiten', sequential=True, refine=4, **kw),
            'budget sequential + refine': FC_Decomposer(budget=keep, method='whiten', sequential=True, refine=4, **kw)}

def decoder_params(model):
    "Parameters of the decoder layers' Linears, biases included (a factorised pair's bias, as the library counts it)"
    return sum(p.numel() for n,l in model.named_modules() if isinstance(l, torch.nn.Linear) and n.startswith('model.layers.') for p in l.parameters())

def main(quick=False, save=None, cuts=(0.2, 0.4, 0.6, 0.8)):
    cfg = QUICK if quick else FULL
    torch.manual_seed(0)
    train_txt,test_txt = corpus(quick)
    d = cache_dir(cfg)
    if (d/'tokenizer.json').exists():
        from tokenizers import Tokenizer
        tok = Tokenizer.from_file(str(d/'tokenizer.json'))
    else:
        tok = tokenizer(train_txt, cfg['vocab']); d.mkdir(parents=True, exist_ok=True); tok.save(str(d/'tokenizer.json'))
    train_ids,test_ids = stream(tok, train_txt),stream(tok, test_txt)
    print(f"# Causal LM: Llama-style, {cfg['layers']} layers, hidden {cfg['hidden']}, vocab {cfg['vocab']}, trained on the standard library's source\n")
    print(f"Tokens: {len(train_ids):,} training (from {len(train_txt)} files), {len(test_ids):,} held out (from {len(test_txt)} files).", flush=True)
    t = time.perf_counter()
    model = trained(cfg, train_ids)
    print(f"Model: {sum(p.numel() for p in model.parameters()):,} parameters, {decoder_params(model):,} in the decoder layers' Linears "
          f"(ready in {time.perf_counter()-t:.0f} s). Calibration: {cfg['n_calib']} x {cfg['seq']} training tokens; "
          f"perplexity on {cfg['n_eval']} x {cfg['seq']} held-out tokens. {torch.get_num_threads()} thread(s).\n", flush=True)
    calib = [dict(input_ids=x) for x in windows(train_ids, cfg['seq'], cfg['n_calib'], seed=1).split(8)]
    test = windows(test_ids, cfg['seq'], cfg['n_eval'], seed=None)
    base = perplexity(model, test)
    print(f"| method | {' | '.join(f'{int(c*100)}% fewer' for c in cuts)} | decomposition time (s, at each) |\n|---|{'---|'*len(cuts)}---|")
    print(f"| original | {' | '.join(f'{base:.2f}' for _ in cuts)} | |", flush=True)
    from fasterai.misc.sensitivity import closest
    names,res = list(methods(model, cuts[0])),dict(original=base, cuts=list(cuts), perplexity={}, seconds={}, kept={}, walked={})
    for m in names:
        ppl,secs = [],[]
        for c in cuts:
            dec = methods(model, c)[m]
            t = time.perf_counter(); new = dec.decompose(model, calib); secs.append(time.perf_counter()-t)
            if dec.check: res['kept'].setdefault(m, []).append(closest(dec.check))   # a budget with data: the ranks its check kept
            if dec.walk_check: res['walked'].setdefault(m, []).append(closest(dec.walk_check))   # and, walked, the model the walk's check kept
            assert abs(decoder_params(new) - (1-c)*decoder_params(model)) <= 0.01*decoder_params(model), (m, c, decoder_params(new))   # same size, within 1%
            ppl.append(perplexity(new, test))
        print(f"| {m} | {' | '.join(f'{p:.2f}' for p in ppl)} | {' / '.join(f'{s:.1f}' for s in secs)} |", flush=True)
        res['perplexity'][m],res['seconds'][m] = ppl,secs
    for m,k in res['kept'].items(): print(f"\n{m}: the check kept the {' / '.join(k)} ranks", end='')
    for m,k in res['walked'].items(): print(f"\n{m}: the walk's check kept the {' / '.join(k)} model", end='')
    print()
    if save: pathlib.Path(save).write_text(json.dumps(res, indent=1))

if __name__ == '__main__':
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--quick', action='store_true', help='a tiny model trained in seconds (what CI runs)')
    ap.add_argument('--save', help='also write the results to this JSON file (the benchmarks page plots benchmarks/results/causal_lm.json)')
    a = ap.parse_args()
    main(a.quick, a.save)
