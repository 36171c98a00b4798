"dtype and device: the SVD runs in float32 or better, the new layers keep the original's dtype and device."
import pytest, torch
from torch import nn
from fasterai.misc.all import *

devices = ['cpu'] + (['cuda'] if torch.cuda.is_available() else [])

@pytest.mark.parametrize('device', devices)
@pytest.mark.parametrize('dtype', [torch.float16, torch.bfloat16, torch.float32, torch.float64])
def test_dtype_and_device_kept(dtype, device):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(48, 32), nn.ReLU(), nn.Linear(32, 8, bias=False)).to(device, dtype)
    new = FC_Decomposer(0.5).decompose(model)
    assert {(p.dtype, p.device.type) for p in new.parameters()} == {(dtype, device)}
    w = model[0].weight.double()
    s = torch.linalg.svdvals(w)
    err = torch.linalg.matrix_norm(w - new[0][1].weight.double() @ new[0][0].weight.double())
    # half-precision weights are decomposed in float32 then rounded: the error is the optimal one up to that rounding
    tol = {torch.float16: 1e-2, torch.bfloat16: 3e-2, torch.float32: 1e-5, torch.float64: 1e-10}[dtype]
    torch.testing.assert_close(err, s[16:].square().sum().sqrt(), rtol=tol, atol=0)

def test_float64_outputs_exact_at_full_rank():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(20, 30), nn.Tanh(), nn.Linear(30, 5)).double()
    x = torch.randn(16, 20, dtype=torch.float64)
    torch.testing.assert_close(FC_Decomposer(1.0).decompose(model)(x), model(x), rtol=1e-12, atol=1e-12)
