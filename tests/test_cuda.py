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

@pytest.mark.parametrize('sequential', [True, False])
def test_weighed_on_gpu(sequential):
    "Weighed outputs (the Fisher of a causal LM's logits), a budget and whitening, sequential or independent: on the GPU as on the CPU"
    import transformers
    torch.manual_seed(0)
    cfg = transformers.LlamaConfig(vocab_size=128, hidden_size=64, intermediate_size=160, num_hidden_layers=2, num_attention_heads=4,
                                   num_key_value_heads=4, max_position_embeddings=32, pad_token_id=None, bos_token_id=None, eos_token_id=None)
    lm = transformers.LlamaForCausalLM(cfg).eval()
    data = [dict(input_ids=torch.randint(0, 128, (4, 32))) for _ in range(4)]
    opts = dict(budget=0.5, method='whiten', sequential=sequential, weigh_outputs=True, layers=['model.layers.*'])
    cpu_fc,gpu_fc = FC_Decomposer(**opts),FC_Decomposer(**opts)
    ref = cpu_fc.decompose(lm, data)
    with mock.patch('scipy.linalg.eigh', side_effect=AssertionError('CPU eigensolver used')):
        new = gpu_fc.decompose(lm.cuda(), [{k:v.cuda() for k,v in d.items()} for d in data])
    assert {p.device.type for p in new.parameters()} == {'cuda'}
    assert all(g.device.type == 'cuda' for g in gpu_fc.curvature.values())
    for n,g in cpu_fc.curvature.items(): torch.testing.assert_close(gpu_fc.curvature[n].cpu(), g, rtol=1e-3, atol=1e-6)
    assert gpu_fc.ranks == cpu_fc.ranks
    x = data[0]['input_ids']
    with torch.no_grad(): torch.testing.assert_close(new(input_ids=x.cuda()).logits.cpu(), ref(input_ids=x).logits, rtol=1e-3, atol=1e-3)

def _small_llama():
    import transformers
    torch.manual_seed(0)
    cfg = transformers.LlamaConfig(vocab_size=128, hidden_size=64, intermediate_size=160, num_hidden_layers=3, num_attention_heads=4,
                                   num_key_value_heads=2, max_position_embeddings=32)
    return transformers.LlamaForCausalLM(cfg).eval(),[dict(input_ids=torch.randint(0, 128, (4, 32))) for _ in range(3)]

@pytest.mark.parametrize('opts', [dict(), dict(method='whiten'), dict(method='asvd', rank_ratio=0.25), dict(method='whiten', sequential=True)], ids=['svd', 'whiten', 'asvd', 'sequential'])
def test_onloading(opts, tmp_path):
    "GPU onloading (device='cuda'): the model stays in CPU memory, each layer or block is moved to the GPU for its turn and back; as on the CPU"
    lm,data = _small_llama()
    data = data if opts else None
    before = {k:v.clone() for k,v in lm.state_dict().items()}
    ran = []
    h = lm.model.layers[1].register_forward_pre_hook(lambda m, args: ran.append(m.mlp.up_proj.weight.device.type))   # the copy keeps it
    ref_fc,fc = FC_Decomposer(**opts),FC_Decomposer(**opts, device='cuda')
    ref = ref_fc.decompose(lm, data)
    ran.clear()
    with mock.patch('scipy.linalg.eigh', side_effect=AssertionError('CPU eigensolver used')): new = fc.decompose(lm, data)
    h.remove()
    if data: assert ran and set(ran) == {'cuda'}   # the block was calibrated on the GPU
    assert {t.device.type for t in [*new.parameters(), *new.buffers()]} == {'cpu'} and fc.ranks == ref_fc.ranks
    assert all(torch.equal(before[k], v) for k,v in lm.state_dict().items())   # the model given is untouched, and stays on the CPU
    x = torch.randint(0, 128, (2, 16))
    with torch.no_grad(): torch.testing.assert_close(new(input_ids=x).logits, ref(input_ids=x).logits, rtol=1e-3, atol=1e-3)
    same = FC_Decomposer(**opts, device='cuda', inplace=True)
    assert same.decompose(lm, data) is lm and {p.device.type for p in lm.parameters()} == {'cpu'}
    with torch.no_grad(): torch.testing.assert_close(lm(input_ids=x).logits, ref(input_ids=x).logits, rtol=1e-3, atol=1e-3)

@pytest.mark.parametrize('sequential', [False, True])
def test_checkpoint_onloaded(tmp_path, sequential):
    "A checkpoint streamed onto the GPU a block at a time (its activations on disk), and a model accelerate keeps in CPU memory for the GPU: as on the CPU"
    import accelerate
    from fasterai.misc.streaming import offloaded
    lm,data = _small_llama()
    lm.save_pretrained(tmp_path/'src', max_shard_size='100KB')
    opts = dict(method='whiten', rank_ratio=0.25, sequential=sequential)
    FC_Decomposer(**opts).decompose_checkpoint(tmp_path/'src', tmp_path/'cpu', data)
    FC_Decomposer(**opts, device='cuda').decompose_checkpoint(tmp_path/'src', tmp_path/'gpu', data, disk_cache=True)
    a,b = load_pretrained(tmp_path/'cpu'),load_pretrained(tmp_path/'gpu')
    x = torch.randint(0, 128, (2, 16))
    with torch.no_grad(): torch.testing.assert_close(b(input_ids=x).logits, a(input_ids=x).logits, rtol=1e-3, atol=1e-3)
    om = accelerate.cpu_offload(lm, execution_device='cuda')
    new = FC_Decomposer(**opts).decompose(om, data)
    assert offloaded(new)
    with torch.no_grad(): torch.testing.assert_close(new(input_ids=x.cuda()).logits.cpu(), a(input_ids=x).logits, rtol=1e-3, atol=1e-3)
