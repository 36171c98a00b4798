"fastai's learn.save / learn.load round-trip on a decomposed model, through a structure rebuilt with from_ranks."
import pytest, torch
from torch import nn
from fastai.data.core import DataLoaders
from fastai.learner import Learner
from fastai.losses import CrossEntropyLossFlat
from fastai.torch_core import set_seed
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

def decomposed_learner(tmp_path, method='whiten'):
    "A digits Learner trained briefly, decomposed in place by `decompose_fc`"
    set_seed(0, reproducible=True)
    learn = Learner(digits_dls(), digits_net(256), loss_func=CrossEntropyLossFlat(), path=tmp_path)
    with learn.no_bar(), learn.no_logging():
        learn.fit(1, 1e-3)
        learn.decompose_fc(rank_ratio=0.25, method=method)
        learn.fit(1, 1e-3)
    return learn

def same(a, b, x):
    a.eval(); b.eval()
    with torch.no_grad(): torch.testing.assert_close(a(x), b(x), rtol=0, atol=0)

def test_export_load_learner(tmp_path):
    from fastai.learner import load_learner
    learn = decomposed_learner(tmp_path)
    learn.export('model.pkl')
    back = load_learner(tmp_path/'model.pkl')
    x = learn.dls.valid.one_batch()[0]
    same(back.model, learn.model, x)
    assert type(back.model.classifier[0]) is LowRankLinear

@pytest.mark.slow
def test_torch_save_load_and_state_dict(tmp_path):
    learn = decomposed_learner(tmp_path)
    x = learn.dls.valid.one_batch()[0]
    torch.save(learn.model, tmp_path/'model.pt')
    same(torch.load(tmp_path/'model.pt', weights_only=False), learn.model, x)
    ranks = {n:m[0].out_features for n,m in learn.model.named_modules() if isinstance(m, nn.Sequential) and n.startswith('classifier.')}
    rebuilt = FC_Decomposer.from_ranks(digits_net(256), ranks)
    rebuilt.load_state_dict(learn.model.state_dict())
    same(rebuilt, learn.model, x)
