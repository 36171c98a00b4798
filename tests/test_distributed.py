"""A decomposed model fine-tunes under torch.distributed: 2 CPU processes, gloo, through fastai's `distrib_ctx` (DDP).

fastai's `DistributedDL` broadcasts each epoch's shuffled indices as a CUDA tensor (it assumes nccl); on these CPU-only
machines the test replaces that one method with a CPU broadcast. Everything else is fastai's and Accelerate's own."""
import os, socket
import torch, torch.multiprocessing as mp
from torch import nn
from fastai.learner import Learner
from fastai.losses import CrossEntropyLossFlat
from fasterai.misc.all import *

def worker(rank, world, port, out):
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world), MASTER_ADDR='127.0.0.1', MASTER_PORT=str(port))
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
    mp.start_processes(worker, args=(2, port, tmp_path), nprocs=2, start_method='spawn')
    r0,r1 = [torch.load(tmp_path/f'rank{i}.pt') for i in range(2)]
    assert r0['moved'] > 0 and r1['moved'] > 0   # they trained
    assert r0['params'].keys() == r1['params'].keys() and any('classifier.0.0' in n for n in r0['params'])
    for n in r0['params']: torch.testing.assert_close(r0['params'][n], r1['params'][n], rtol=0, atol=0)
