"""Models whose code reads a factorised layer's `weight`: `nn.MultiheadAttention` passes its `out_proj.weight` to the
attention function, T5's feed-forward reads `wo.weight`. Each is timed original, decomposed whole, and decomposed with
those layers left dense, in the same process (`inference.py`'s rounds): decomposed whole must be at least as fast as
with them left dense, since no forward forms a pair's full product.

    python benchmarks/products.py           # a 4-layer encoder of width 512 and a T5-small-shaped model, rank_ratio 0.25
    python benchmarks/products.py --quick   # small shapes: what CI runs
"""
import argparse, statistics
import torch
from inference import rounds, speedups

def cases(quick):
    "`(name, model, layers read by the model's code, run(model))` for each model, random weights"
    import transformers
    torch.manual_seed(0)
    d,ff,n,(bs,seq) = (64, 128, 2, (2, 32)) if quick else (512, 2048, 4, (8, 128))
    enc = torch.nn.TransformerEncoder(torch.nn.TransformerEncoderLayer(d, 8, ff, batch_first=True), n, enable_nested_tensor=False).eval()
    x = torch.randn(bs, seq, d)
    yield f'TransformerEncoder ({n} x {d})', enc, ['*.self_attn.out_proj'], lambda m: lambda: m(x)
    cfg = transformers.T5Config(vocab_size=1024, d_model=d, d_ff=ff, num_layers=n, num_decoder_layers=n, num_heads=8, d_kv=d//8)
    t5,ids = transformers.T5ForConditionalGeneration(cfg).eval(),torch.randint(0, 1024, (bs, seq))
    yield f'T5 ({n}+{n} x {d})', t5, ['*.wo'], lambda m: lambda: m(input_ids=ids, decoder_input_ids=ids)

def main(quick=False, n_rounds=None, threads=2):
    from fasterai.misc.all import FC_Decomposer
    torch.set_num_threads(threads)
    n_rounds = n_rounds or (3 if quick else 7)
    print(f"## Models that read a factorised weight (CPU, {threads} threads, torch {torch.__version__.split('+')[0]}, rank_ratio 0.25)\n")
    print("| model | layers read | original (ms) | decomposed whole | those left dense | speed-up whole | speed-up, those dense |\n|---|---|---|---|---|---|---|")
    res = []
    for name,model,read,run in cases(quick):
        models = {'original': model, 'whole': FC_Decomposer(0.25, progress=False).decompose(model).eval(),
                  'dense': FC_Decomposer(0.25, exclude=read, progress=False).decompose(model).eval()}
        with torch.inference_mode(): t = rounds({k: run(m) for k,m in models.items()}, n_rounds)
        sp,ms = speedups(t),{k: 1e3*statistics.median(v) for k,v in t.items()}
        res.append(dict(model=name, ms=ms, speedup=sp))
        print(f"| {name} | `{', '.join(read)}` | {ms['original']:.1f} | {ms['whole']:.1f} | {ms['dense']:.1f} | {sp['whole']:.2f}x | {sp['dense']:.2f}x |", flush=True)
    return res

if __name__ == '__main__':
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--quick', action='store_true', help='small shapes (what CI runs)')
    ap.add_argument('--rounds', type=int, help='timed rounds (default 7, 3 with --quick)')
    ap.add_argument('--threads', type=int, default=2, help='CPU threads')
    a = ap.parse_args()
    main(a.quick, a.rounds, a.threads)
