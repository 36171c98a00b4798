"""Whether layers that read the same input should share one first factor: SmolLM2-135M's queries, keys and values
(576 -> 576, 192, 192) and its gate and up projections (576 -> 1536, 1536), random weights, cut by 40% of their
parameters. Separate pairs (what `FC_Decomposer` builds: one `x A_i` and one `(x A_i) B_i` per layer) against one
shared first factor `x A` of the same total parameters, then a `B_i` per layer; timed in turn, round after round, at
1 row (a decode step) and 512 rows (a prefill), float32. The ratio is separate's time over shared's: above 1, sharing
is faster.

    python benchmarks/shared_factor.py           # about a minute
    python benchmarks/shared_factor.py --quick   # fewer rounds: what CI runs
"""
import argparse, statistics
import torch
from torch import nn
from inference import rounds, speedups

GROUPS = {'q, k, v': (576, [576, 192, 192]), 'gate, up': (576, [1536, 1536])}

def separate(n, ms, cut):
    "One pair a layer, each at the rank that removes `cut` of its weights"
    ks = [max(1, int((1-cut)*m*n/(m+n))) for m in ms]
    return [(nn.Linear(n, k, bias=False), nn.Linear(k, m, bias=False)) for k,m in zip(ks, ms)],sum(k*(n+m) for k,m in zip(ks, ms))

def shared(n, ms, params):
    "One first factor read once, then a second factor a layer: the rank that spends `params`"
    k = params//(n + sum(ms))
    return nn.Linear(n, k, bias=False),[nn.Linear(k, m, bias=False) for m in ms],k*(n + sum(ms))

def main(quick=False, threads=2, cut=0.4):
    torch.set_num_threads(threads)
    n_rounds = 3 if quick else 25
    print(f"## Shared first factor against separate pairs (CPU, {threads} threads, torch {torch.__version__.split('+')[0]}, {cut:.0%} fewer parameters, float32)\n")
    print("| layers | rows | separate (µs) | shared (µs) | parameters, separate / shared | speed-up of sharing |\n|---|---|---|---|---|---|")
    res = []
    for name,(n,ms) in GROUPS.items():
        torch.manual_seed(0)
        copies = 32   # more weights than the caches hold, as in a model whose layers all differ
        sep = [separate(n, ms, cut) for _ in range(copies)]
        sh = [shared(n, ms, sep[0][1]) for _ in range(copies)]
        for rows_ in (1, 512):
            x = torch.randn(rows_, n)
            def run_sep():
                for pairs,_ in sep:
                    for a,b in pairs: b(a(x))
            def run_sh():
                for a,bs,_ in sh:
                    h = a(x)
                    for b in bs: b(h)
            with torch.inference_mode(): t = rounds({'original': run_sep, 'shared': run_sh}, n_rounds)
            sp = speedups(t)['shared']
            us = {k: 1e6*statistics.median(v)/copies for k,v in t.items()}
            res.append(dict(layers=name, rows=rows_, speedup=sp))
            print(f"| {name} | {rows_} | {us['original']:.1f} | {us['shared']:.1f} | {sep[0][1]:,} / {sh[0][2]:,} | {sp:.2f}x |", flush=True)
    return res

if __name__ == '__main__':
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--quick', action='store_true', help='fewer rounds (what CI runs)')
    ap.add_argument('--threads', type=int, default=2, help='CPU threads')
    a = ap.parse_args()
    main(a.quick, a.threads)
