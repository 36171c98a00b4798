"""Peak resident memory of `fasterai-fc decompose IN OUT` on a Llama-shaped checkpoint: streamed a layer at a time
(svd) or a block at a time (whiten), against the checkpoint's size and the imports alone.

The benchmark writes a checkpoint of random bfloat16 weights (TinyLlama's shape: hidden 2048, 22 layers,
intermediate 5632, 32 heads, 4 key-value heads, vocabulary 32000: 1.1B parameters, 2.05 GiB), sharded in 1 GB files,
one tensor at a time. Each run is a child process that runs the command's `main` (what the console script runs) and
then reads its own peak resident set (`VmHWM` in `/proc/self/status`); the last column is the peak the kernel reports
once the child has exited (`ru_maxrss` of `wait4`), which adds the interpreter's teardown: about 125 MiB after
`import torch` alone, from torch's libraries, whatever ran before. The baselines are children that only import what
the command imports (`import torch`, then the command's modules and the Llama class, building the model on the meta
device from `config.json`). On the 1.1B checkpoint whiten calibrates the first two blocks' layers (`--layers`): the
walk still loads and runs every block, a block at a time, and each calibrated block costs the same, so the peak is the
same as with every layer, in a tenth of the time. Sequential calibration holds two streams of activations and a block's recorded outputs where whiten holds one stream.
The in-memory row loads the whole model, as `fasterai-fc` did before it streamed. This
process imports nothing heavy (a child writes the checkpoint): a child's peak counts what it had when it was forked.

    python benchmarks/memory_llm.py --dir DIR               # svd and whiten on the 1.1B checkpoint (about an hour on 2 shared cores)
    python benchmarks/memory_llm.py --dir DIR --in-memory   # and the whole-model path (5 GiB of memory)
    python benchmarks/memory_llm.py --quick                 # a 2-layer Llama of 14M parameters: what CI runs
"""
import argparse, json, os, shutil, subprocess, sys, tempfile, time
from pathlib import Path

FULL = dict(hidden_size=2048, num_hidden_layers=22, intermediate_size=5632, num_attention_heads=32, num_key_value_heads=4, vocab_size=32000)
QUICK = dict(hidden_size=512, num_hidden_layers=2, intermediate_size=1408, num_attention_heads=8, num_key_value_heads=2, vocab_size=8000)

def write_checkpoint(path:Path, shape:dict, shard:int, batches:int):
    "A Llama of `shape` with random bfloat16 weights at `path` (config.json and shards of `shard` bytes), written a tensor at a time, and `batches` of calibration tokens beside it"
    import torch, transformers
    from fasterai.misc.huggingface import params_on_meta
    from fasterai.misc.streaming import ShardWriter
    cfg = transformers.LlamaConfig(**shape, max_position_embeddings=2048, tie_word_embeddings=False, dtype='bfloat16',
                                   architectures=['LlamaForCausalLM'])
    with params_on_meta(): model = transformers.LlamaForCausalLM(cfg)
    tmp = Path(tempfile.mkdtemp(dir=path.parent))
    w,g = ShardWriter(tmp, 256*len(model.state_dict()), shard),torch.Generator().manual_seed(0)
    for k,p in model.state_dict().items():
        t = torch.ones(p.shape) if k.endswith('norm.weight') else torch.empty(p.shape).normal_(0, 0.02, generator=g)
        w.tensor(k, t.bfloat16())
    w.close(); cfg.save_pretrained(tmp)
    os.replace(tmp, path)
    torch.save([dict(input_ids=torch.randint(0, shape['vocab_size'], (4, 128), generator=g)) for _ in range(batches)], path.parent/'calib.pt')

HWM = "\nprint('VmHWM', next(int(l.split()[1]) for l in open('/proc/self/status') if l.startswith('VmHWM')))"
IMPORT = "import torch" + HWM
IMPORTS = "import sys, fasterai.misc.cli, fasterai.misc.streaming; fasterai.misc.streaming.skeleton(sys.argv[1])" + HWM
COMMAND = "import sys; from fasterai.misc.cli import main\nassert main(sys.argv[1:]) == 0" + HWM
IN_MEMORY = """import sys; from pathlib import Path
from fasterai.misc.cli import read_model, write_model
from fasterai.misc.fc_decomposer import FC_Decomposer
src,dst = Path(sys.argv[1]),Path(sys.argv[2])
write_model(FC_Decomposer(inplace=True).decompose(read_model(src)), dst, src)   # the command's settings, on the whole model
print('written to', dst)""" + HWM

def peak(code:str, *args)->tuple[float, float, float, str]:
    "Peak resident set (MiB) of a child running `code` with `args`, as it reads it at its end and as the kernel reports it after its exit; its wall time (s) and output"
    t = time.perf_counter()
    p = subprocess.Popen([sys.executable, '-c', code, *map(str, args)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    out = p.stdout.read()
    _,status,ru = os.wait4(p.pid, 0)
    if os.waitstatus_to_exitcode(status): raise RuntimeError(f"{args} failed:\n{out[-3000:]}")
    hwm = int(out.rsplit('VmHWM ', 1)[1].split()[0])/1024
    return hwm,ru.ru_maxrss/1024,time.perf_counter() - t,out

def main(d:Path, quick=False, in_memory=False):
    shape,shard = (QUICK,10**7) if quick else (FULL,10**9)
    ckpt = d/('llama-quick' if quick else 'llama-1.1b')
    d.mkdir(parents=True, exist_ok=True)
    if not ckpt.exists():
        print(f"writing {ckpt}...", file=sys.stderr, flush=True)
        subprocess.run([sys.executable, __file__, '--dir', d, '--write'] + ['--quick']*quick, check=True)
    size = sum(f.stat().st_size for f in ckpt.glob('*.safetensors'))/2**20
    n,calib = sum(1 for f in ckpt.glob('*.safetensors')),d/'calib.pt'
    L = shape['num_hidden_layers']
    few = [] if quick else ['--layers', 'model.layers.0.*', 'model.layers.1.*']
    runs = [('import torch', IMPORT, [], 0),
            ("the command's imports, model on the meta device", IMPORTS, [ckpt], 0),
            ('svd, streamed a layer at a time', COMMAND, ['decompose', ckpt, d/'out'], 7*L + 1),
            ('whiten, streamed a block at a time' + ('' if quick else ' (layers of blocks 0-1)'), COMMAND,
             ['decompose', ckpt, d/'out', '--method', 'whiten', '--calib', calib, *few], 7*L + 1 if quick else 14),
            ('whiten sequential, streamed a block at a time' + ('' if quick else ' (layers of blocks 0-1)'), COMMAND,
             ['decompose', ckpt, d/'out', '--method', 'whiten', '--sequential', '--calib', calib, *few], 7*L + 1 if quick else 14)]
    if in_memory: runs.append(('svd, whole model in memory', IN_MEMORY, [ckpt, d/'out'], 7*L + 1))
    print(f"## Peak memory of `fasterai-fc decompose` ({'Llama 2 x 512, 14M' if quick else 'Llama 22 x 2048, TinyLlama shape, 1.1B'} "
          f"parameters, bfloat16: {size:.0f} MiB in {n} shards)\n")
    print("| run | peak resident (MiB) | / checkpoint | time (s) | with the exit's teardown (MiB) |")
    print("|---|---|---|---|---|")
    res = {}
    for name,code,args,n in runs:
        shutil.rmtree(d/'out', ignore_errors=True)
        mb,after,t,log = peak(code, *args)
        if n:
            assert 'written to' in log, log
            ranks = json.loads((d/'out'/'config.json').read_text())['fasterai']['ranks']
            assert len(ranks) == n, ranks
            shutil.rmtree(d/'out')
        res[name] = dict(peak=mb, exit=after, time=t)
        print(f"| {name} | {mb:.0f} | {mb/size:.2f}x | {t:.1f} | {after:.0f} |", flush=True)
    return res

if __name__ == '__main__':
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--quick', action='store_true', help='a 4-layer Llama instead of the 1.1B one (seconds)')
    ap.add_argument('--in-memory', action='store_true', help='also decompose the whole model in memory, as before streaming')
    ap.add_argument('--dir', type=Path, default=Path(tempfile.gettempdir())/'fasterai-memory-llm', help='where the checkpoint is written, and kept')
    ap.add_argument('--write', action='store_true', help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.write: write_checkpoint(a.dir/('llama-quick' if a.quick else 'llama-1.1b'), QUICK if a.quick else FULL, 10**7 if a.quick else 10**9, 2 if a.quick else 4)
    else: main(a.dir, a.quick, a.in_memory)
