"""torch.distributed across 2 processes spawned by the tests: gloo on the CPU; on GPUs also gloo with CUDA tensors (two
processes on one GPU) and NCCL (two GPUs), skipped where there are not as many.

Calibration: `FC_Decomposer(distributed=True)` in each process, each on its own share of the calibration batches (uneven:
one batch and two; then all and none; then batches that reach a layer in one process only), gives in both processes the
model, report, ranks, sensitivities and budget's check that one process gives on all the batches: to 1e-9 in float64,
where the sums are the same numbers; in float32 to 1e-4 of each tensor's largest value, the rounding of the float32
products of the sequential statistics, taken around each process's own first batch and in its own chunks of rows
(measured: 8e-6). The processes' models are identical to the bit (rank 0's factors are broadcast).

Fine-tuning: a decomposed model fine-tunes under DDP through fastai's `distrib_ctx`. fastai's `DistributedDL` broadcasts
each epoch's shuffled indices as a CUDA tensor (it assumes nccl); on these CPU-only machines the test replaces that one
method with a CPU broadcast. Everything else is fastai's and Accelerate's own.

The workers import only what they use (fastai's import alone takes seconds): this module's top level stays light."""
import os, socket
import pytest, torch, torch.multiprocessing as mp
from torch import nn

CASES = dict( # name: (FC_Decomposer options, model, dtype, which batches each process reads)
    budget=(dict(method='whiten', budget=0.5), 'llama', torch.float64, 'shard'), # independent statistics, jacobian sensitivities, the check
    measured=(dict(method='whiten', budget=0.5, sensitivity='measured'), 'llama', torch.float64, 'shard'),
    causal_lm=(dict(recipe='causal_lm', budget=0.5), 'llama', torch.float64, 'shard'), # the walk's paired statistics, G, the check
    asvd_walk=(dict(method='asvd', sequential=True), 'llama', torch.float64, 'shard'), # the walk's statistics of the new stream alone
    empty=(dict(recipe='causal_lm', budget=0.5), 'llama', torch.float64, 'rank 0'), # process 1 reads nothing
    float32=(dict(recipe='causal_lm', budget=0.5), 'llama', torch.float32, 'shard'),
    routed=(dict(method='whiten', budget=0.5), 'routed', torch.float64, 'shard'), # `b` runs in process 1 alone (the walk needs every layer on every batch)
)

class Block(nn.Module):
    "`a` and `b` read the block's input; `b` runs only on batches of more than 3 rows (an expert some processes' batches never reach)"
    def __init__(self): super().__init__(); self.a,self.b,self.c = nn.Linear(8, 8),nn.Linear(8, 8),nn.Linear(8, 8)
    def forward(self, x):
        h = self.a(x).relu()
        if len(x) > 3: h = h + self.b(x).relu()
        return x + self.c(h)

class Routed(nn.Module):
    def __init__(self): super().__init__(); self.blocks = nn.ModuleList([Block(), Block()])
    def forward(self, x):
        for b in self.blocks: x = b(x)
        return x

def model_and_batches(kind, dtype):
    "A small Llama and 3 padded batches of different shapes, or a `Routed` and 4 batches, 2 of 2 rows and 2 of 5"
    torch.manual_seed(0)
    if kind == 'routed': return Routed().to(dtype),[torch.randn(r, 8, dtype=dtype) for r in (2, 2, 5, 5)]
    import transformers
    cfg = transformers.LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4,
                                   num_key_value_heads=2, attn_implementation='eager')
    model,batches = transformers.LlamaForCausalLM(cfg).to(dtype).eval(),[]
    for i,(b,l) in enumerate([(3, 9), (2, 12), (4, 7)]):
        ids = torch.randint(0, 64, (b, l))
        mask = torch.ones_like(ids); mask[0, l-2-i:] = 0
        batches.append(dict(input_ids=ids, attention_mask=mask))
    return model,batches

def outcome(fc, model)->dict:
    "What a decomposition gave"
    return dict(sd={k:v.detach().cpu().clone() for k,v in model.state_dict().items()}, ranks=fc.ranks, check=fc.check, sens=fc.sensitivities,
                report=fc.report.astype(object).where(fc.report.notna(), None).to_dict('list'))   # None for NaN: equal to itself

def calib_worker(rank, world, store, out, backend, device):
    import torch.distributed as dist
    from fasterai.misc.fc_decomposer import FC_Decomposer
    from fasterai.misc.distributed import shard
    torch.set_num_threads(1)
    dev = torch.device('cuda', rank % torch.cuda.device_count()) if device == 'cuda' else torch.device('cpu')
    if dev.type == 'cuda': torch.cuda.set_device(dev)
    dist.init_process_group(backend, init_method=f'file://{store}', rank=rank, world_size=world)
    res = {}
    for name,(opts,kind,dtype,how) in CASES.items():
        model,batches = model_and_batches(kind, dtype)
        fc = FC_Decomposer(**opts, distributed=True)
        res[name] = outcome(fc, fc.decompose(model.to(dev), shard(batches) if how == 'shard' else batches if rank == 0 else []))
    dist.destroy_process_group()
    for i,(name,(opts,kind,dtype,_)) in enumerate(CASES.items()):   # one process on all the batches: the cases shared out
        if i % world != rank: continue
        model,batches = model_and_batches(kind, dtype)
        fc = FC_Decomposer(**opts)
        res['one process: ' + name] = outcome(fc, fc.decompose(model.to(dev), batches))
    torch.save(res, out/f'rank{rank}.pt')

@pytest.mark.parametrize('backend,device,gpus', [('gloo', 'cpu', 0), ('gloo', 'cuda', 1), ('nccl', 'cuda', 2)])
def test_calibration_two_processes(tmp_path, backend, device, gpus):
    if gpus and torch.cuda.device_count() < gpus: pytest.skip(f'{backend} on {device} needs {gpus} GPU(s)')
    mp.start_processes(calib_worker, args=(2, tmp_path/'store', tmp_path, backend, device), nprocs=2, start_method='spawn')
    r0,r1 = [torch.load(tmp_path/f'rank{i}.pt', weights_only=False) for i in range(2)]
    for name,(_,_,dtype,_) in CASES.items():
        a,b,one = r0[name],r1[name],{**r0, **r1}['one process: ' + name]
        tol = 1e-9 if dtype == torch.float64 else 1e-4
        for k,v in a['sd'].items():
            assert torch.equal(v, b['sd'][k]), (name, k)   # every process holds the same model
            w = one['sd'][k]
            assert float((v - w).abs().max()) <= tol*float(w.abs().max()), (name, k, float((v - w).abs().max()/w.abs().max()))
        assert a['ranks'] == one['ranks'] and a['report'].keys() == one['report'].keys(), name
        assert a['report'] == b['report'], name
        for c,col in a['report'].items():
            if c in ('rel_error', 'energy_kept', 'sensitivity'): torch.testing.assert_close(col, one['report'][c], rtol=tol, atol=0)
            else: assert col == one['report'][c], (name, c)
        assert a['check'].keys() == one['check'].keys() == ({'allocation', 'even'} if 'budget' in CASES[name][0] else set()), name
        for d in ('check', 'sens'):
            for k,v in a[d].items(): torch.testing.assert_close(v, one[d][k], rtol=tol, atol=0)
    assert 'blocks.0.b' in r0['routed']['ranks']   # calibrated from process 1's batches alone, in both

def ddp_worker(rank, world, port, out):
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world), MASTER_ADDR='127.0.0.1', MASTER_PORT=str(port))
    from fastai.learner import Learner
    from fastai.losses import CrossEntropyLossFlat
    from fasterai.misc.all import digits_dls, digits_net
    import fastai.distributed   # adds Learner.distrib_ctx
    def _broadcast(self, t, rank):   # fastai's moves the indices to CUDA for nccl; gloo on CPU takes CPU tensors
        t = torch.tensor(t, dtype=torch.long)
        torch.distributed.broadcast(t, rank)
        return t.tolist()
    fastai.distributed.DistributedDL._broadcast = _broadcast
    torch.manual_seed(0)
    learn = Learner(digits_dls(), digits_net(256), loss_func=CrossEntropyLossFlat())
    learn.decompose_fc(rank_ratio=0.25)
    before = {k:v.clone() for k,v in learn.model.state_dict().items()}
    torch.manual_seed(rank)   # each rank shuffles differently: only DDP's gradient averaging keeps them equal
    with learn.no_bar(), learn.no_logging(), learn.distrib_ctx(sync_bn=False, cpu=True):
        assert torch.distributed.get_world_size() == world
        learn.fit(1, 1e-3)
    params = {n:p.detach().clone() for n,p in learn.model.named_parameters()}
    moved = max(float((params[n] - before[n]).abs().max()) for n in params)
    torch.save(dict(params=params, moved=moved, n_batches=len(learn.dls.train)), out/f'rank{rank}.pt')

def test_ddp_two_processes(tmp_path):
    with socket.socket() as s: s.bind(('127.0.0.1', 0)); port = s.getsockname()[1]
    mp.start_processes(ddp_worker, args=(2, port, tmp_path), nprocs=2, start_method='spawn')
    r0,r1 = [torch.load(tmp_path/f'rank{i}.pt') for i in range(2)]
    assert r0['moved'] > 0 and r1['moved'] > 0   # they trained
    assert r0['params'].keys() == r1['params'].keys() and any('classifier.0.0' in n for n in r0['params'])
    for n in r0['params']: torch.testing.assert_close(r0['params'][n], r1['params'][n], rtol=0, atol=0)
