"The behaviour users already know from the VGG16/Pets tutorial, exactly: counts, structure, optimal truncation."
import pytest, torch
from torchvision.models import vgg16_bn
from fasterai.misc.all import *

pytestmark = pytest.mark.slow   # over a minute on two CPU cores: `pytest -m 'not slow'` leaves it out

def n_params(m): return sum(p.numel() for p in m.parameters())

@pytest.fixture(scope='module')
def vgg():
    torch.manual_seed(0)
    model = vgg16_bn(num_classes=2)
    before = {k:v.clone() for k,v in model.state_dict().items()}
    return model, before, FC_Decomposer(progress=False).decompose(model)

def test_counts(vgg):
    model,_,new = vgg
    assert (n_params(model), n_params(new)) == (134_277_186, 91_281_476)

def test_classifier_structure(vgg):
    new = vgg[2]
    lin = lambda n,m,b: f"Linear(in_features={n}, out_features={m}, bias={b})"
    pair = lambda n,k,m: f"Sequential(\n  (0): {lin(n,k,False)}\n  (1): {lin(k,m,True)}\n)"
    c = new.classifier
    assert [repr(o) for o in c] == [pair(25088, 2048, 4096), 'ReLU(inplace=True)', 'Dropout(p=0.5, inplace=False)',
                                    pair(4096, 2048, 4096), 'ReLU(inplace=True)', 'Dropout(p=0.5, inplace=False)',
                                    pair(4096, 1, 2)]

def test_features_untouched(vgg):
    model,_,new = vgg
    assert repr(new.features) == repr(model.features) and repr(new.avgpool) == repr(model.avgpool)
    sd = new.features.state_dict()
    assert all(torch.equal(v, sd[k]) for k,v in model.features.state_dict().items())

def test_input_model_untouched(vgg):
    model,before,_ = vgg
    assert [type(o).__name__ for o in model.classifier] == ['Linear', 'ReLU', 'Dropout']*2 + ['Linear']
    sd = model.state_dict()
    assert sd.keys() == before.keys() and all(torch.equal(sd[k], v) for k,v in before.items())

@pytest.mark.parametrize('i', [0, 3, 6])
def test_optimal_truncation(vgg, i):
    "Each layer's error is the norm of its discarded singular values (Eckart–Young), computed in float64"
    model,_,new = vgg
    w,(first,second) = model.classifier[i].weight.double(),new.classifier[i]
    s = torch.linalg.svdvals(w)
    k = first.out_features
    err = torch.linalg.matrix_norm(w - second.weight.double() @ first.weight.double())
    torch.testing.assert_close(err, s[k:].square().sum().sqrt(), rtol=1e-5, atol=0)
    torch.testing.assert_close(second.bias, model.classifier[i].bias)
