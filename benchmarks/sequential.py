"""Sequential calibration against independent whitening: time and peak memory as depth grows.

Llama-shaped models built from a config (random weights: time and memory do not depend on them), decomposed at
rank_ratio 0.5 with `method='whiten'`, independent and `sequential=True` (block by block, error-correcting), on the
same calibration tokens. Each configuration runs in a fresh process, so that its peak resident memory is its own.

    python benchmarks/sequential.py            # hidden 512, 4, 8 and 16 layers, 16 x 128 tokens (a few minutes)
    python benchmarks/sequential.py --quick    # hidden 128, 2 and 4 layers: what CI runs
"""
import argparse, json, resource, subprocess, sys, time

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

def main(quick=False):
    hidden,depths,n_seq,seq_len = (128, (2, 4), 16, 64) if quick else (512, (4, 8, 16), 16, 128)
    print(f"# Sequential calibration: Llama-shaped, hidden {hidden}, {n_seq} x {seq_len} calibration tokens, rank_ratio 0.5\n")
    print("| layers | linear layers | independent (s) | sequential (s) | ratio | new layers (MiB) | independent peak (MiB) | sequential peak (MiB) | sequential peak less new layers (MiB) |\n"
          "|---|---|---|---|---|---|---|---|---|")
    for d in depths:
        r = [json.loads(subprocess.run([sys.executable, __file__, '--one', json.dumps([hidden, d, n_seq, seq_len, s])],
                                       capture_output=True, text=True, check=True).stdout.splitlines()[-1]) for s in (False, True)]
        print(f"| {d} | {7*d} | {r[0][0]:.1f} | {r[1][0]:.1f} | {r[1][0]/r[0][0]:.2f}x | {r[1][2]:.0f} | {r[0][1]:.0f} | {r[1][1]:.0f} | {r[1][1]-r[1][2]:.0f} |", flush=True)

if __name__ == '__main__':
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--quick', action='store_true', help='small configuration (a minute)')
    ap.add_argument('--one', help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.one: print(json.dumps(one(*json.loads(a.one))))
    else: main(a.quick)
