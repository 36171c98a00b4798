"A decomposed model is an ordinary model: fastai trains it."
import pytest, torch
from torch import nn
from fastai.data.core import DataLoaders
from fastai.learner import Learner
from fastai.callback.schedule import fit_one_cycle  # patches Learner.fit_one_cycle
from fastai.losses import CrossEntropyLossFlat
from fastai.metrics import accuracy
from fastai.torch_core import set_seed
from fasterai.misc.all import *

def synth(n, w):
    x = torch.randn(n, w.shape[1])
    return list(zip(x, (x@w.T).argmax(1)))

@pytest.mark.slow
def test_decomposed_model_trains():
    set_seed(0, reproducible=True)
    teacher = torch.randn(4, 32)
    dls = DataLoaders.from_dsets(synth(2048, teacher), synth(512, teacher), bs=64)
    model = nn.Sequential(nn.Linear(32, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 4))
    new = FC_Decomposer(0.5).decompose(model)
    learn = Learner(dls, new, loss_func=CrossEntropyLossFlat(), metrics=accuracy)
    start = {k:v.clone() for k,v in new.state_dict().items()}
    loss0,acc0 = learn.validate()
    with learn.no_logging(): learn.fit_one_cycle(8, 1e-2)
    loss1,acc1 = learn.validate()
    assert loss1 < 0.5*loss0 and acc1 > max(0.8, acc0), (loss0, loss1, acc0, acc1)
    assert all(not torch.equal(v, new.state_dict()[k]) for k,v in start.items())
