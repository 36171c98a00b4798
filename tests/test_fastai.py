"fastai's learn.save / learn.load round-trip on a decomposed model, through a structure rebuilt with from_ranks."
import torch
from torch import nn
from fastai.data.core import DataLoaders
from fastai.learner import Learner
from fastai.losses import CrossEntropyLossFlat
from fasterai.misc.all import *

def arch(): return nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 32), nn.ReLU(), nn.Linear(32, 3))

def test_learner_save_load_round_trip(tmp_path):
    torch.manual_seed(0)
    x = torch.randn(64, 16)
    ds = list(zip(x, torch.randint(0, 3, (64,))))
    dls = DataLoaders.from_dsets(ds, ds, bs=16)
    fc = FC_Decomposer(energy_threshold=0.8)
    learn = Learner(dls, fc.decompose(arch()), loss_func=CrossEntropyLossFlat(), path=tmp_path)
    with learn.no_logging(): learn.fit(1, 1e-2)
    learn.save('decomposed')
    rebuilt = Learner(dls, FC_Decomposer.from_ranks(arch(), fc.ranks), loss_func=CrossEntropyLossFlat(), path=tmp_path)
    rebuilt.load('decomposed')
    learn.model.eval(); rebuilt.model.eval()
    with torch.no_grad(): torch.testing.assert_close(rebuilt.model(x), learn.model(x), rtol=0, atol=0)
