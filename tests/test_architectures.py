"Real architectures: forward passes run after decomposition and match the original at rank_ratio=1.0."
import pytest, torch
from torch import nn
from torchvision.models import resnet18, vgg16_bn
from fasterai.misc.all import *

def n_params(m): return sum(p.numel() for p in m.parameters())

def check_full_rank(model, *args, atol=1e-4, **kwargs):
    "Decompose `model` at rank_ratio=1.0 and check that the result computes the same outputs; returns the decomposer"
    fc = FC_Decomposer(rank_ratio=1.0, progress=False)
    new = fc.decompose(model)
    with torch.no_grad(): a,b = model(*args, **kwargs),new(*args, **kwargs)
    a,b = (getattr(o, 'logits', getattr(o, 'last_hidden_state', o)) for o in (a, b))
    torch.testing.assert_close(b, a, atol=atol, rtol=1e-4)
    return fc,new

@pytest.mark.slow
def test_vgg16_bn_full_rank():
    torch.manual_seed(0)
    fc,_ = check_full_rank(vgg16_bn(num_classes=2).eval(), torch.randn(2, 3, 32, 32))
    assert fc.ranks == {'classifier.0': 4096, 'classifier.3': 4096, 'classifier.6': 2}

@pytest.mark.slow
def test_vgg16_bn_skip_unprofitable():
    "The 4096x4096 layer at rank 2048 saves nothing: skip_unprofitable leaves it, and computes no SVD for it"
    fc = FC_Decomposer(skip_unprofitable=True, layers=["classifier.3", "classifier.6"], progress=False)
    model = vgg16_bn(num_classes=2)
    new = fc.decompose(model)
    assert type(new.classifier[3]) is nn.Linear and type(new.classifier[6]) is LowRankLinear
    assert fc.ranks == {'classifier.6': 1}
    r = fc.report.set_index('name')
    assert r.reason['classifier.3'].startswith('unprofitable: rank 2048 gives 16,781,312 parameters')
    assert r.reason['classifier.0'] == 'not in `layers`'
    assert n_params(model) - n_params(new) == 8194 - 4100

def test_resnet18_only_fc():
    torch.manual_seed(0)
    model = resnet18().eval()
    fc,new = check_full_rank(model, torch.randn(2, 3, 32, 32))
    assert list(fc.report.name) == ['fc'] and fc.ranks == {'fc': 512}
    new = FC_Decomposer(progress=False).decompose(model)
    assert n_params(model) - n_params(new) == 512*1000 - 256*(512+1000)

@pytest.mark.parametrize('batch_first', [True, False])
@pytest.mark.parametrize('training', [False, True])
def test_transformer_encoder(batch_first, training):
    "Feed-forward layers and out_proj are decomposed; eval mode uses torch's fused path unless told not to"
    torch.manual_seed(0)
    layer = nn.TransformerEncoderLayer(32, 4, 64, dropout=0.0, batch_first=batch_first)
    model = nn.TransformerEncoder(layer, 2).train(training)
    x = torch.randn(3, 5, 32) if batch_first else torch.randn(5, 3, 32)
    pad = torch.zeros(3, 5, dtype=torch.bool)
    pad[0, -2:] = True   # a padding mask triggers the nested-tensor path of nn.TransformerEncoder in eval mode
    fc,new = check_full_rank(model, x)
    with torch.no_grad(): a,b = model(x, src_key_padding_mask=pad),new(x, src_key_padding_mask=pad)
    keep = ~pad if batch_first else ~pad.T   # torch's fused path zeroes padded positions, its Python path does not
    torch.testing.assert_close(b[keep], a[keep], atol=1e-4, rtol=1e-4)
    assert sorted(fc.ranks) == sorted(f'layers.{i}.{l}' for i in (0, 1) for l in ('linear1', 'linear2', 'self_attn.out_proj'))
    assert fc.report.reason.isna().all()
    small = FC_Decomposer(0.25).decompose(model)
    with torch.no_grad(): assert small(x, src_key_padding_mask=pad).shape == x.shape

def test_bert_masked_lm():
    "A BERT-style model built from a config (random weights, no download); its LM head is tied to the embeddings"
    transformers = pytest.importorskip('transformers')
    torch.manual_seed(0)
    cfg = transformers.BertConfig(vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                  intermediate_size=64, max_position_embeddings=16)
    model = transformers.BertForMaskedLM(cfg).eval()
    ids = torch.randint(0, 100, (2, 10))
    fc,new = check_full_rank(model, input_ids=ids, attention_mask=torch.ones_like(ids))
    r = fc.report.set_index('name')
    assert r.reason['cls.predictions.decoder'] == "weight shared with 'bert.embeddings.word_embeddings'"
    assert len(fc.ranks) == 13
    new = FC_Decomposer(0.5, layers=['*.intermediate.dense', '*.output.dense'], exclude=['*.attention.*']).decompose(model)
    assert [type(l.intermediate.dense) for l in new.bert.encoder.layer] == [LowRankLinear]*2
    assert [type(l.attention.output.dense) for l in new.bert.encoder.layer] == [nn.Linear]*2
    assert new.cls.predictions.decoder.weight is new.bert.embeddings.word_embeddings.weight
    with torch.no_grad(): assert new(input_ids=ids).logits.shape == (2, 10, 100)

def runs_without(pkg, code):
    "Run `code` in a fresh Python where `pkg` can't be imported; it must print 'ok' last"
    import subprocess, sys
    r = subprocess.run([sys.executable, '-c', f"import sys; sys.modules[{pkg!r}] = None\nimport torch; from torch import nn\n{code}\nprint('ok')"],
                       capture_output=True, text=True)
    assert r.returncode == 0 and r.stdout.strip().endswith('ok'), r.stderr[-2000:]

def test_works_without_transformers():
    "transformers is optional: with it unimportable, the library imports and decomposes"
    runs_without('transformers', "from fasterai.misc.all import *\n"
                 "new = FC_Decomposer(0.5).decompose(nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 2)))\n"
                 "assert type(new[0]).__name__ == 'LowRankLinear' and 'transformers' not in [m for m in sys.modules if sys.modules[m] is not None]")

def test_core_works_without_fastai():
    "The decomposer and its maths need no fastai: with fastai unimportable, whitening, the walk and a budget run on plain PyTorch"
    runs_without('fastai', "from fasterai.misc.fc_decomposer import FC_Decomposer\n"
                 "torch.manual_seed(0); net = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 8)).eval()\n"
                 "xs = [torch.randn(32, 16) for _ in range(3)]\n"
                 "for opts in (dict(method='whiten', sequential=True, weigh_outputs=True), dict(budget=0.5, method='whiten')):\n"
                 "    new = FC_Decomposer(**opts).decompose(net, xs); assert type(new[0]).__name__ == 'LowRankLinear'\n"
                 "assert not any(m.startswith('fastai') for m in sys.modules if sys.modules[m] is not None)")
