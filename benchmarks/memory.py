"""Peak resident memory of `FC_Decomposer().decompose(vgg16_bn(num_classes=2))`, in place and with the default copy.

Each mode runs in a fresh process, which builds the model, then decomposes it; the peak resident set (Linux VmHWM)
is read back. The ratio is (peak - resident size before the model was built) / the model's own size in bytes: the
model plus everything the decomposition needed, counted in model sizes, without the Python/torch runtime; the last
columns are the peak above the resident size once the model is built, what the decomposition itself added, and the
time the decomposition took (one run: the speed tables give medians).

    python benchmarks/memory.py            # vgg16_bn, both modes (about a minute)
    python benchmarks/memory.py --quick    # a small MLP: what CI runs
"""
import argparse, json, subprocess, sys, time

def rss_mb(key='VmRSS'):
    "This process's resident set (`VmRSS`) or its peak so far (`VmHWM`), in MiB"
    return next(int(l.split()[1]) for l in open('/proc/self/status') if l.startswith(key))/1024

def child(mode, quick):
    "Build the model, decompose it in `mode`, print the measurements as JSON (runs in its own process)"
    import torch
    from torchvision.models import vgg16_bn
    from fasterai.misc.all import FC_Decomposer
    torch.ones(8, 8) @ torch.ones(8, 8)   # torch's lazy start-up (thread pools, BLAS buffers) belongs to the runtime
    before = rss_mb()
    if quick: model = torch.nn.Sequential(torch.nn.Linear(4096, 2048), torch.nn.ReLU(), torch.nn.Linear(2048, 10))
    else: model = vgg16_bn(num_classes=2)
    size = sum(p.numel()*p.element_size() for p in model.parameters())/2**20
    built = rss_mb()
    open('/proc/self/clear_refs', 'w').write('5')   # restart the peak count from here
    t = time.perf_counter()
    FC_Decomposer(inplace=mode=='in place', progress=False).decompose(model)
    t = time.perf_counter() - t
    print(json.dumps(dict(mode=mode, size=size, built=built-before, peak=rss_mb('VmHWM')-before, time=t)))

def main(quick=False):
    print(f"## Peak memory ({'MLP 4096-2048-10' if quick else 'vgg16_bn(num_classes=2)'})\n")
    print("| mode | model (MiB) | peak above runtime (MiB) | peak / model size | decomposition's own (MiB) | time (s) |")
    print("|---|---|---|---|---|---|")
    res = {}
    for mode in ('copy', 'in place'):
        out = subprocess.run([sys.executable, __file__, '--child', mode] + ['--quick']*quick, capture_output=True, text=True, check=True).stdout
        r = res[mode] = json.loads(out.splitlines()[-1])
        print(f"| {mode} | {r['size']:.0f} | {r['peak']:.0f} | {r['peak']/r['size']:.2f}x | {r['peak'] - r['built']:.0f} | {r['time']:.1f} |", flush=True)
    return res

if __name__ == '__main__':
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--quick', action='store_true', help='a small MLP instead of VGG16 (seconds)')
    ap.add_argument('--child', help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child: child(a.child, a.quick)
    else: main(a.quick)
