"""Decomposition time and accuracy: fasterai against the textbook `torch.linalg.svd` + truncation, measured in the
same run on the same machine: per matrix (with errors in float64 against the Eckart-Young optimum), for a whole
`vgg16_bn(num_classes=2)`, and as the number of columns grows.

    python benchmarks/decompose_speed.py            # VGG16, decaying spectra, scaling (about 15 minutes on 2 cores)
    python benchmarks/decompose_speed.py --quick    # small matrices and an MLP, seconds: what CI runs
"""
import argparse, copy, platform, statistics, time, datetime
import torch
from torch import nn
from fasterai.misc.all import *
from fasterai.misc.fast_svd import LowRankSVD, truncate
from fasterai.misc.surgery import low_rank_linear, swap_module

def median_time(f, repeats):
    "Median wall time of `f()` over `repeats` runs, and its last result"
    ts = []
    for _ in range(repeats):
        t = time.perf_counter(); res = f(); ts.append(time.perf_counter() - t)
    return statistics.median(ts),res

def textbook(w, k): return truncate(*torch.linalg.svd(w, full_matrices=False), k)
def fast(w, k): return LowRankSVD(w).factors(k)

def gap(w, ab, s_opt):
    "Relative excess of the error of `b@a` over the optimum, in float64"
    a,b = ab
    k = a.shape[0]
    err = torch.linalg.matrix_norm(w.double() - b.double() @ a.double())
    opt = s_opt[k:].square().sum().sqrt()
    return float(err/opt - 1) if opt > 0 else float(err)

def with_spectrum(m, n, s, seed=0):
    g = torch.Generator().manual_seed(seed)
    u,_ = torch.linalg.qr(torch.randn(m, len(s), generator=g))
    v,_ = torch.linalg.qr(torch.randn(n, len(s), generator=g))
    return (u*s.float()) @ v.T

def cases(quick):
    "(name, weight, rank) of each benchmarked matrix"
    torch.manual_seed(0)
    if quick: shapes = dict(wide=(256, 1024), square=(256, 256))
    else:
        vgg = torch.nn.Sequential(torch.nn.Linear(25088, 4096), torch.nn.Linear(4096, 4096), torch.nn.Linear(4096, 2))
        for i,l in enumerate(vgg): yield f"vgg16 classifier.{3*i} {tuple(l.weight.shape)}", l.weight.detach(), max(1, min(l.weight.shape)//2)
        shapes = dict(wide=(1024, 4096))
    m,n = shapes['wide']
    p = torch.arange(1, m+1, dtype=torch.float64)
    for name,s in dict(power_law=p**-1.0, geometric=0.99**p, low_rank_noise=torch.cat([0.9**p[:32], 1e-3*torch.ones(m-32)])).items():
        w = with_spectrum(m, n, s)
        for k in (m//8, m//2): yield f"{name} ({m}, {n})", w, k
    if quick: yield f"random ({shapes['square'][0]}, {shapes['square'][1]})", torch.randn(*shapes['square']), shapes['square'][0]//2

def textbook_decompose(model, rank_ratio=0.5):
    "The reference: a copy of `model` with each `nn.Linear` replaced by its truncated `torch.linalg.svd`"
    res = copy.deepcopy(model)
    for lin in list(named_linears(res)):
        m,n = lin.weight.shape
        ab = textbook(lin.weight.detach(), rank_from_ratio(m, n, rank_ratio))
        res = swap_module(res, lin, low_rank_linear(*ab, lin))
    return res

def end_to_end(quick, repeats):
    "Time `FC_Decomposer().decompose` of a whole model against `textbook_decompose`"
    if quick: model = nn.Sequential(nn.Linear(2048, 1024), nn.ReLU(), nn.Linear(1024, 1024), nn.ReLU(), nn.Linear(1024, 10))
    else:
        from torchvision.models import vgg16_bn
        model = vgg16_bn(num_classes=2)
    name = 'MLP 2048-1024-1024-10' if quick else 'vgg16_bn(num_classes=2)'
    t_ref,ref = median_time(lambda: textbook_decompose(model), repeats)
    t_fast,new = median_time(lambda: FC_Decomposer(progress=False).decompose(model), repeats)
    n = lambda m: sum(p.numel() for p in m.parameters())
    assert n(ref) == n(new), (n(ref), n(new))
    print(f"\n## Whole model: `FC_Decomposer().decompose` ({name}, {n(model):,} -> {n(new):,} parameters)\n")
    print(f"| textbook (s) | fasterai (s) | speed-up |\n|---|---|---|\n| {t_ref:.2f} | {t_fast:.2f} | {t_ref/t_fast:.1f}x |", flush=True)
    return t_ref/t_fast

def scaling(quick, repeats):
    "Decomposition time of an `m` x `n` random matrix at rank m/2, as the number of columns `n` grows"
    m,ns = (256, (256, 1024)) if quick else (1024, (1024, 2048, 4096, 8192, 16384, 25088))
    print(f"\n## Scaling: {m} rows, rank {m//2}\n")
    print("| columns | textbook (s) | fasterai (s) | speed-up |\n|---|---|---|---|")
    for n in ns:
        w = torch.randn(m, n)
        t_ref,_ = median_time(lambda: textbook(w, m//2), repeats)
        t_fast,_ = median_time(lambda: fast(w, m//2), repeats)
        print(f"| {n} | {t_ref:.3f} | {t_fast:.3f} | {t_ref/t_fast:.1f}x |", flush=True)

def main(quick=False, repeats=3):
    print(f"# Decomposition speed ({datetime.date.today()}, {platform.machine()}, {torch.get_num_threads()} threads, "
          f"torch {torch.__version__}, repeats={repeats}, {'quick' if quick else 'full'})\n")
    print("| matrix | rank | textbook (s) | fasterai (s) | speed-up | textbook gap | fasterai gap |")
    print("|---|---|---|---|---|---|---|")
    tot_ref = tot_fast = 0.; worst = 0.
    for name,w,k in cases(quick):
        s_opt = torch.linalg.svdvals(w.double())
        t_ref,ab_ref = median_time(lambda: textbook(w, k), repeats)
        t_fast,ab_fast = median_time(lambda: fast(w, k), repeats)
        g_ref,g_fast = gap(w, ab_ref, s_opt),gap(w, ab_fast, s_opt)
        if name.startswith('vgg16'): tot_ref,tot_fast = tot_ref+t_ref,tot_fast+t_fast
        worst = max(worst, g_fast)
        print(f"| {name} | {k} | {t_ref:.2f} | {t_fast:.2f} | {t_ref/t_fast:.1f}x | {g_ref:.2e} | {g_fast:.2e} |", flush=True)
    if tot_fast: print(f"\nVGG16 FC layers in total: textbook {tot_ref:.1f} s, fasterai {tot_fast:.1f} s: {tot_ref/tot_fast:.1f}x faster")
    print(f"Largest fasterai error gap over the optimum: {worst:.2e}")
    end_to_end(quick, repeats)
    scaling(quick, repeats)
    return worst

if __name__ == '__main__':
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--quick', action='store_true', help='small matrices only (seconds)')
    ap.add_argument('--repeats', type=int, default=3, help='runs per measurement; the median is reported')
    a = ap.parse_args()
    main(a.quick, a.repeats)
