"Deployment formats for a decomposed model: ONNX (run in onnxruntime), torch.export and torch.compile."
import numpy as np, pytest, torch
from fasterai.misc.all import *

@pytest.fixture(scope='module')
def model():
    "A VGG-style digits network, decomposed with whitening on random calibration inputs, in eval mode"
    torch.manual_seed(0)
    net = digits_net(256).eval()
    return FC_Decomposer(0.25, method='whiten').decompose(net, [torch.rand(32, 1, 8, 8) for _ in range(4)]).eval()

@pytest.fixture(scope='module')
def x(): return torch.rand(5, 1, 8, 8)

def test_onnx_runs_in_onnxruntime(model, x, tmp_path):
    ort = pytest.importorskip('onnxruntime')
    path = tmp_path/'model.onnx'
    torch.onnx.export(model, (x,), str(path), input_names=['x'], output_names=['y'], dynamic_axes={'x': {0: 'batch'}}, dynamo=False)
    sess = ort.InferenceSession(str(path), providers=['CPUExecutionProvider'])
    for bs in (1, 5):
        xb = torch.rand(bs, 1, 8, 8)
        (y,) = sess.run(None, {'x': xb.numpy()})
        with torch.no_grad(): np.testing.assert_allclose(y, model(xb).numpy(), rtol=1e-4, atol=1e-5)

def test_torch_export(model, x):
    ep = torch.export.export(model, (x,))
    with torch.no_grad(): torch.testing.assert_close(ep.module()(x), model(x))
    assert any('classifier.0.0' in n for n in ep.state_dict), list(ep.state_dict)

def test_torch_compile(model, x):
    compiled = torch.compile(model)
    with torch.no_grad(): torch.testing.assert_close(compiled(x), model(x), rtol=1e-4, atol=1e-5)
