"""Decomposition time and accuracy: fasterai's `LowRankSVD` against the textbook `torch.linalg.svd` + truncation,
measured in the same run on the same machine. Errors are in float64 against the Eckart-Young optimum.

    python benchmarks/decompose_speed.py            # VGG16's FC layers and decaying spectra (several minutes)
    python benchmarks/decompose_speed.py --quick    # small matrices, seconds: what CI runs
"""
import argparse, platform, statistics, time, datetime
import torch
from fasterai.misc.all import *

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
    return worst

if __name__ == '__main__':
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--quick', action='store_true', help='small matrices only (seconds)')
    ap.add_argument('--repeats', type=int, default=3, help='runs per measurement; the median is reported')
    a = ap.parse_args()
    main(a.quick, a.repeats)
