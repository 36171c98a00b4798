"""On a CUDA model the decomposition runs on the GPU: Gram matrices, eigendecompositions, calibration statistics and
the new layers stay there, and SciPy's CPU LAPACK path is never taken. Skipped on machines without CUDA."""
from unittest import mock
import pytest, torch
from torch import nn
from fasterai.misc.all import *

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason='no CUDA device')

@pytest.mark.parametrize('method', ['svd', 'asvd', 'whiten'])
def test_decompose_on_gpu(method):
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(512, 256), nn.ReLU(), nn.Linear(256, 1024), nn.ReLU(), nn.Linear(1024, 10))
    xs = [torch.randn(64, 512) for _ in range(4)]
    ref = FC_Decomposer(0.5, method=method).decompose(net, xs)
    gpu = net.cuda()
    with mock.patch('scipy.linalg.eigh', side_effect=AssertionError('CPU eigensolver used')), \
         mock.patch('scipy.linalg.blas.dsyrk', side_effect=AssertionError('CPU syrk used')):
        new = FC_Decomposer(0.5, method=method).decompose(gpu, [x.cuda() for x in xs])
    assert {p.device.type for p in new.parameters()} == {'cuda'}
    x = torch.randn(8, 512)
    with torch.no_grad(): torch.testing.assert_close(new(x.cuda()).cpu(), ref(x), rtol=1e-3, atol=1e-4)
