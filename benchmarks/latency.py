"""CPU inference latency of VGG16's classifier, original against decomposed (`rank_ratio=0.5`), at batch 1 and 64.

The ideal speed-up of a layer is its ratio of multiply-adds, m*n against k*(m+n) (the parameter ratio, biases
aside); the table shows how much of it the measured speed-up reaches. Medians of `torch.utils.benchmark` runs.

    python benchmarks/latency.py            # VGG16's classifier head, layer by layer and whole
    python benchmarks/latency.py --quick    # a small head: what CI runs
"""
import argparse
import torch
from torch import nn
from torch.utils import benchmark
from fasterai.misc.all import FC_Decomposer

def latency(f, x, min_run_time):
    "Median seconds of `f(x)` under `no_grad`"
    with torch.no_grad(): return benchmark.Timer('f(x)', globals=dict(f=f, x=x)).blocked_autorange(min_run_time=min_run_time).median

def n_mults(m:nn.Module)->int:
    "Multiply-adds per input row of the `nn.Linear` layers of `m`"
    return sum(l.in_features*l.out_features for l in m.modules() if isinstance(l, nn.Linear))

def head(quick):
    "VGG16's classifier for 2 classes (or a smaller one of the same shape when `quick`)"
    n,h = (2048, 512) if quick else (512*7*7, 4096)
    return nn.Sequential(nn.Linear(n, h), nn.ReLU(True), nn.Dropout(), nn.Linear(h, h), nn.ReLU(True), nn.Dropout(), nn.Linear(h, 2)).eval()

def main(quick=False, min_run_time=1.0):
    torch.manual_seed(0)
    orig = head(quick)
    fc = FC_Decomposer(0.5, progress=False)
    new = fc.decompose(orig)
    parts = [(f"classifier.{i} ({orig[i].in_features}->{orig[i].out_features}, k={fc.ranks[str(i)]})", orig[i], new[i]) for i in (0, 3, 6)]
    parts.append(("whole head", orig, new))
    print(f"## Inference latency ({torch.get_num_threads()} threads, rank_ratio=0.5)\n")
    print("| part | batch | original (ms) | decomposed (ms) | speed-up | ideal | of ideal |")
    print("|---|---|---|---|---|---|---|")
    res = {}
    for name,a,b in parts:
        ideal = n_mults(a)/n_mults(b)
        for bs in (1, 64):
            x = torch.randn(bs, next(l for l in a.modules() if isinstance(l, nn.Linear)).in_features)
            ta,tb = latency(a, x, min_run_time),latency(b, x, min_run_time)
            res[name, bs] = (ta/tb, ideal)
            print(f"| {name} | {bs} | {ta*1e3:.3f} | {tb*1e3:.3f} | {ta/tb:.2f}x | {ideal:.2f}x | {ta/tb/ideal:.0%} |", flush=True)
    return res

if __name__ == '__main__':
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--quick', action='store_true', help='a small head, short runs (seconds)')
    a = ap.parse_args()
    main(a.quick, 0.2 if a.quick else 2.0)
