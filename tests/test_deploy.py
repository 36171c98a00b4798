"Deployment formats for a decomposed model: ONNX (run in onnxruntime), torch.export and torch.compile."
import copy
import numpy as np, pytest, torch
from fasterai.misc.all import *
from fasterai.misc.modeling_fasterai import FactoredWeight
from fasterai.misc.surgery import is_pair

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

# A decomposed transformer where users run it: a small Llama built from its config (random weights, nothing downloaded)

@pytest.fixture(scope='module')
def llama():
    "`(original, decomposed at full rank, decomposed at rank_ratio 0.5)`: a 2-layer Llama with its decoder Linears factorised"
    transformers = pytest.importorskip('transformers')
    torch.manual_seed(0)
    cfg = transformers.LlamaConfig(vocab_size=128, hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
                                   num_key_value_heads=2, max_position_embeddings=64, tie_word_embeddings=True)
    m = transformers.LlamaForCausalLM(cfg).eval()
    full,half = (FC_Decomposer(r, layers=['model.layers.*'], progress=False).decompose(m).eval() for r in (1.0, 0.5))
    return m,full,half

@pytest.fixture(scope='module')
def ids(): return torch.randint(0, 128, (2, 7), generator=torch.Generator().manual_seed(1))

def test_generate_kv_cache(llama, ids):
    m,full,half = llama
    gen = dict(max_new_tokens=12, min_new_tokens=12, do_sample=False, pad_token_id=0)
    with torch.no_grad():
        assert torch.equal(full.generate(ids, **gen), m.generate(ids, **gen))   # full rank: the same tokens
        cached,plain = half.generate(ids, **gen),half.generate(ids, use_cache=False, **gen)
    assert torch.equal(cached, plain)   # the KV cache changes nothing

@pytest.mark.parametrize('dtype', [torch.bfloat16, torch.float16])
def test_half_precision(llama, ids, dtype):
    m,_,half = llama
    low = copy.deepcopy(half).to(dtype)
    assert all(p.dtype == dtype for p in low.parameters()) and low.model.layers[0].mlp.up_proj[1].weight.T.is_contiguous()
    with torch.no_grad():
        ref,out = half(ids).logits,low(ids).logits
        low.generate(ids, max_new_tokens=4, do_sample=False, pad_token_id=0)
    assert out.dtype == dtype and (out.float() - ref).abs().max() < 0.05*ref.abs().max()

def test_llama_compile(llama, ids):
    half = llama[2]
    compiled = torch.compile(half)
    with torch.no_grad(): torch.testing.assert_close(compiled(ids).logits, half(ids).logits, rtol=1e-4, atol=1e-4)

class Logits(torch.nn.Module):
    "A causal LM as a function of its token ids alone, without a cache: what export and ONNX take (an explicit mask: transformers' own mask inference uses `aten::diff`, which TorchScript's ONNX exporter lacks)"
    def __init__(self, lm): super().__init__(); self.lm = lm
    def forward(self, ids): return self.lm(input_ids=ids, attention_mask=torch.ones_like(ids), use_cache=False).logits

def test_llama_export(llama, ids):
    half = llama[2]
    ep = torch.export.export(Logits(half), (ids,))
    with torch.no_grad(): torch.testing.assert_close(ep.module()(ids), half(ids).logits, rtol=1e-4, atol=1e-4)
    assert any('up_proj.1.weight' in n for n in ep.state_dict)

def test_llama_onnx(llama, ids, tmp_path):
    ort = pytest.importorskip('onnxruntime')
    half,path = llama[2],tmp_path/'llama.onnx'
    torch.onnx.export(Logits(half), (ids,), str(path), input_names=['ids'], output_names=['logits'], dynamo=False)
    (y,) = ort.InferenceSession(str(path), providers=['CPUExecutionProvider']).run(None, {'ids': ids.numpy()})
    with torch.no_grad(): np.testing.assert_allclose(y, half(ids).logits.numpy(), rtol=1e-4, atol=1e-4)

# Models that read a factorised layer's weight in their forward: no m x n product formed

@pytest.fixture
def products(monkeypatch):
    "The shapes of the products `FactoredWeight` forms, while the test runs"
    formed,dense = [],FactoredWeight.dense
    monkeypatch.setattr(FactoredWeight, 'dense', lambda w: formed.append(tuple(w.shape)) or dense(w))
    return formed

def test_multihead_attention_no_product(products):
    torch.manual_seed(0)
    enc = torch.nn.TransformerEncoder(torch.nn.TransformerEncoderLayer(32, 4, 64, batch_first=True), 2).eval()
    new,x = FC_Decomposer(1.0, progress=False).decompose(enc),torch.randn(3, 5, 32)
    assert all(is_pair(l.self_attn.out_proj) for l in new.layers)
    with torch.no_grad(): torch.testing.assert_close(new(x), enc(x), rtol=1e-4, atol=1e-4)
    assert products == []

def test_t5_no_product(products):
    transformers = pytest.importorskip('transformers')
    torch.manual_seed(0)
    cfg = transformers.T5Config(vocab_size=64, d_model=32, d_ff=64, num_layers=2, num_decoder_layers=2, num_heads=2, d_kv=16)
    t5 = transformers.T5ForConditionalGeneration(cfg).eval()
    new,ids = FC_Decomposer(1.0, progress=False).decompose(t5),torch.randint(0, 64, (2, 6))
    with torch.no_grad(): torch.testing.assert_close(new(input_ids=ids, decoder_input_ids=ids).logits, t5(input_ids=ids, decoder_input_ids=ids).logits, rtol=1e-4, atol=1e-4)
    assert products == []   # T5 reads wo.weight.dtype at each call: metadata, no product

def test_swin_no_product(products):
    torchvision = pytest.importorskip('torchvision')
    torch.manual_seed(0)
    sw = torchvision.models.swin_t(num_classes=3).eval()
    new,x = FC_Decomposer(1.0, layers=['features.1.*'], progress=False).decompose(sw),torch.randn(1, 3, 64, 64)
    with torch.no_grad(): torch.testing.assert_close(new(x), sw(x), rtol=1e-4, atol=1e-4)
    assert products == []   # Swin hands qkv.weight and proj.weight to F.linear
