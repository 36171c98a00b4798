"""Every model of the zoo (`benchmarks/zoo.py`: each torchvision classification family, 17 `transformers` architectures,
small and random): at rank_ratio=1.0 the decomposed model computes what the original does; at 0.5 it runs and trains
(a finite loss, and a finite gradient on every factor); every linear-like layer is factorised or reported with a
reason, in the numbers written down below; and the model given is left untouched.

VGG and AlexNet are marked `slow` (deselect them with `-m "not slow"`): their classifiers are fixed by the classes
(25088 -> 4096 -> 4096 and 9216 -> 4096 -> 4096), and factorising them takes a minute or more on two CPU cores."""
import functools, math, sys, warnings
from pathlib import Path
import pytest, torch
from torch import nn

sys.path.insert(0, str(Path(__file__).parents[1]/'benchmarks'))
from zoo import ZOO, linear_like
from fasterai.misc.fc_decomposer import FC_Decomposer

def tied(emb): return f"weight shared with '{emb}'"

# Linear-like layers of each model, reasoned from its architecture and config (see benchmarks/zoo.py):
# `factorised`, and `skipped` {layer: the start of its reason}. Every other linear-like layer must be factorised.
EXPECTED = {
    # torchvision
    'vgg': dict(factorised=3),                 # classifier 0, 3, 6
    'resnet18': dict(factorised=1),            # fc
    'alexnet': dict(factorised=3),             # classifier 1, 4, 6
    'densenet': dict(factorised=1),            # classifier
    'mobilenet_v2': dict(factorised=1),        # classifier.1
    'mobilenet_v3_small': dict(factorised=2),  # classifier 0, 3 (squeeze-excitation uses 1x1 convs)
    'efficientnet_b0': dict(factorised=1),     # classifier.1
    'efficientnet_v2_s': dict(factorised=1),
    'regnet_y_400mf': dict(factorised=1),      # fc
    'convnext': dict(factorised=5),            # 2 blocks x 2 pointwise Linears + classifier.2
    'swin_t': dict(factorised=10),             # 2 blocks x (qkv, proj, mlp.0, mlp.3) + 1 PatchMerging.reduction + head
    'swin_v2_t': dict(factorised=14),          # as v1, + 2 blocks x cpb_mlp (0, 2)
    'vit': dict(factorised=7),                 # 2 layers x (self_attention.out_proj, mlp.0, mlp.3) + heads.head
    'maxvit': dict(factorised=18),             # 2 blocks x 2 partition layers x (to_qkv, merge, mlp.1, mlp.3) + classifier 3, 5
    'shufflenet_v2': dict(factorised=1),
    'mnasnet': dict(factorised=1),
    'squeezenet': dict(factorised=0),          # its classifier is a 1x1 conv
    'googlenet': dict(factorised=5),           # fc + aux1.fc1, aux1.fc2, aux2.fc1, aux2.fc2
    'inception_v3': dict(factorised=1),        # fc (no aux head)
    # transformers: 2 layers each; a tied LM head is left as is
    'bert': dict(factorised=13, skipped={'cls.predictions.decoder': tied('bert.embeddings.word_embeddings')}),  # 2 x 6 + transform.dense
    'roberta': dict(factorised=13, skipped={'lm_head.decoder': tied('roberta.embeddings.word_embeddings')}),    # 2 x 6 + lm_head.dense
    'distilbert': dict(factorised=13, skipped={'vocab_projector': tied('distilbert.embeddings.word_embeddings')}),  # 2 x 6 + vocab_transform
    'gpt2': dict(factorised=8, skipped={'lm_head': tied('transformer.wte')}),                 # 2 x Conv1D (c_attn, c_proj, c_fc, c_proj)
    'llama': dict(factorised=15),              # 2 x (q, k, v, o, gate, up, down) + lm_head (untied by default)
    'mistral': dict(factorised=15),
    'qwen2': dict(factorised=15),
    'opt': dict(factorised=12, skipped={'lm_head': tied('model.decoder.embed_tokens')}),      # 2 x (q, k, v, out, fc1, fc2)
    't5': dict(factorised=32, skipped={'lm_head': tied('shared')}),  # encoder 2 x (q, k, v, o, wi, wo) + decoder 2 x (2 x (q, k, v, o) + wi, wo)
    'vit_hf': dict(factorised=13),             # 2 x (query, key, value, output, intermediate, output) + classifier
    'phi3': dict(factorised=9),                # 2 x (qkv_proj, o_proj, gate_up_proj, down_proj) + lm_head (untied)
    'gemma': dict(factorised=14, skipped={'lm_head': tied('model.embed_tokens')}),            # 2 x 7
    'falcon': dict(factorised=8, skipped={'lm_head': tied('transformer.word_embeddings')}),   # 2 x FalconLinear (qkv, dense, h_to_4h, 4h_to_h)
    'gpt_neox': dict(factorised=9),            # 2 x (query_key_value, dense, h_to_4h, 4h_to_h) + embed_out (untied)
    'bloom': dict(factorised=8, skipped={'lm_head': tied('transformer.word_embeddings')}),
    'whisper': dict(factorised=32, skipped={'proj_out': tied('model.decoder.embed_tokens')}),  # enc 2 x 6 + dec 2 x 10
    'clip': dict(factorised=26),               # text 2 x 6 + vision 2 x 6 + text_projection, visual_projection
}
SLOW = {'vgg', 'alexnet'}

@pytest.fixture(autouse=True)
def one_thread(request):
    "The models are tiny: one thread is faster, and keeps OpenMP from spinning when the machine is shared (not for VGG's and AlexNet's big SVDs)"
    n = torch.get_num_threads()
    cs = getattr(request.node, 'callspec', None)
    if cs is None or cs.params.get('name') not in SLOW: torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)

def test_expected_covers_zoo(): assert set(EXPECTED) == set(ZOO)

def _names():
    for n in ZOO:
        marks = [pytest.mark.slow] if n in SLOW else []
        yield pytest.param(n, marks=marks, id=n)
names = lambda: list(_names())

@functools.cache
def original(name):
    "The model, its example inputs, and a copy of its state taken before any decomposition"
    s = ZOO[name]
    if s.source == 'transformers': pytest.importorskip('transformers')
    model = s.model()
    return model,s.example(),{k:v.detach().clone() for k,v in model.state_dict().items()}

@functools.cache
def decomposed(name, ratio):
    "`(decomposer, decomposed model)` at `ratio`, computed once for all the tests"
    model,_,_ = original(name)
    with warnings.catch_warnings():
        warnings.filterwarnings('ignore', message='.*has no linear layer.*')
        fc = FC_Decomposer(rank_ratio=ratio, progress=False)
        return fc,fc.decompose(model)

def check_untouched(name):
    model,_,before = original(name)
    after = model.state_dict()
    assert list(after) == list(before)
    for k,v in before.items(): assert torch.equal(after[k], v), f"{name}: {k} changed"

@pytest.mark.parametrize('name', names())
def test_full_rank_same_outputs(name):
    "At rank_ratio=1.0 the factorisation is exact: the outputs match the original's (eval mode, same inputs)"
    s,(model,(args, kwargs),_) = ZOO[name],original(name)
    fc,new = decomposed(name, 1.0)
    new.eval()
    with torch.no_grad(): a,b = s.outputs(model, args, kwargs),s.outputs(new, args, kwargs)
    assert len(a) == len(b) > 0
    for x,y in zip(a, b):
        scale = float(x.abs().max())
        assert scale > 0 and math.isfinite(scale)
        assert float((x[0] - x[1]).abs().max()) > 1e-2*scale, "the outputs hardly depend on the inputs: the comparison would check nothing"
        torch.testing.assert_close(y, x, atol=1e-4*scale, rtol=1e-4)
    check_untouched(name)

@pytest.mark.parametrize('name', names())
def test_layers_accounted_for(name):
    """Every linear-like layer (found independently of fasterai) has a row in the report; the counts of factorised and
    skipped layers are those reasoned out above; skipped ones say why; factorised ones are pairs of the rank reported"""
    exp = EXPECTED[name]
    model,_,_ = original(name)
    lins = linear_like(model)
    skipped_exp = exp.get('skipped', {})
    assert len(lins) == exp['factorised'] + len(skipped_exp), f"zoo model {name} has {len(lins)} linear-like layers: {sorted(lins)}"
    for ratio in (1.0, 0.5):
        fc,new = decomposed(name, ratio)
        rep = fc.report
        assert sorted(rep.name) == sorted(lins), f"report rows differ from the linear-like layers (ratio {ratio})"
        done = rep['rank'].notna()
        factorised = set(rep.name[done])
        skipped = {n:r for n,r in zip(rep.name[~done], rep.reason[~done])}
        assert len(factorised) == exp['factorised'], f"ratio {ratio}: skipped {skipped}"
        assert set(skipped) == set(skipped_exp), f"ratio {ratio}: skipped {skipped}"
        for n,r in skipped.items():
            assert isinstance(r, str) and r.startswith(skipped_exp[n]), f"{n}: {r!r}"
            if r.startswith('weight shared with'):   # the tie is real, and kept
                emb = skipped_exp[n].split("'")[1]
                assert model.get_submodule(n).weight is model.get_submodule(emb).weight
                assert new.get_submodule(n).weight is new.get_submodule(emb).weight
        assert set(fc.ranks) == factorised
        for n in factorised:
            m,k = new.get_submodule(n),fc.ranks[n]
            assert type(m).__name__ == 'LowRankLinear' and isinstance(m, nn.Sequential) and len(m) == 2, f"{n}: {type(m)}"
            assert k == max(1, math.floor(ratio*min(lins_shape(model, n)) + 1e-9))   # a fraction of min(m, n), rounded down
            assert (m[0].in_features, m[0].out_features, m[1].in_features, m[1].bias is not None) == (lins_shape(model, n)[1], k, k, True)
            assert m[1].out_features == lins_shape(model, n)[0]
            # it still answers what code reads off the layer it replaced (Swin's qkv.weight, T5's wo.weight.dtype...)
            old = model.get_submodule(n)
            assert (m.in_features, m.out_features) == lins_shape(model, n)[::-1]
            assert m.weight.shape == old.weight.shape and m.weight.dtype == old.weight.dtype   # n x m for a Conv1D
            if ratio == 1.0: torch.testing.assert_close(m.weight.detach(), old.weight.detach(), atol=1e-5*float(old.weight.abs().max()), rtol=1e-4)
            if old.bias is not None: torch.testing.assert_close(m.bias, old.bias)
    check_untouched(name)

def lins_shape(model, name):
    "`(out, in)` of a linear-like layer of the original model: from `in/out_features`, or from a Conv1D's `n x m` weight"
    l = model.get_submodule(name)
    if isinstance(l, nn.Linear): return l.out_features,l.in_features
    return l.weight.shape[1],l.weight.shape[0]   # transformers' Conv1D: y = x @ W + b, W is in x out

@pytest.mark.parametrize('name', names())
def test_half_rank_trains(name):
    "At rank_ratio=0.5 the model runs, and a training step gives a finite loss and a finite gradient on every factor"
    s,(model,(args, kwargs),_) = ZOO[name],original(name)
    fc,new = decomposed(name, 0.5)
    new.eval()
    with torch.no_grad(): out = s.outputs(new, args, kwargs)
    with torch.no_grad(): ref = s.outputs(model, args, kwargs)
    assert [o.shape for o in out] == [o.shape for o in ref]
    assert all(torch.isfinite(o).all() for o in out)
    new.train()
    new.zero_grad(set_to_none=True)
    torch.manual_seed(0)
    loss = s.loss(new, args, kwargs)
    assert loss.ndim == 0 and torch.isfinite(loss)
    loss.backward()
    for n in fc.ranks:
        for pn,p in new.get_submodule(n).named_parameters():
            assert p.grad is not None, f"{n}.{pn} has no gradient"
            assert torch.isfinite(p.grad).all(), f"{n}.{pn} has a non-finite gradient"
    new.eval()
    check_untouched(name)

@pytest.mark.parametrize('name', [n for n,s in ZOO.items() if s.source == 'transformers'])
def test_sequential_replay_changes_nothing(name, monkeypatch):
    """Sequential calibration serves, within a block, what earlier passes computed (`Replay`): the result is what
    running every pass in full gives, on every `transformers` architecture of the zoo, and something was served"""
    from fasterai.misc.sequential import Replay, find_blocks
    s,(model,_,_) = ZOO[name],original(name)
    data = [s.example(seed)[1] for seed in (1, 2)]   # two batches of keyword arguments: each is served its own outputs
    fc = lambda: FC_Decomposer(0.5, method='whiten', sequential=True, progress=False)
    assert find_blocks(model, [r.name for r in fc().plan(model) if r.selected]), "no blocks: nothing would be served"
    kept,close = [],Replay.close
    def count(self): kept.append(len(self.kept)); close(self)
    monkeypatch.setattr(Replay, 'close', count)
    served = fc().decompose(model, data)
    assert sum(kept) > 0, "nothing was served: the test would check nothing"
    monkeypatch.setattr(Replay, 'watch', lambda self, *a, **kw: None)   # every pass in full
    full = fc().decompose(model, data)
    args,kwargs = s.example(3)
    with torch.no_grad(): a,b = s.outputs(full.eval(), args, kwargs),s.outputs(served.eval(), args, kwargs)
    for x,y in zip(a, b): torch.testing.assert_close(y, x, atol=1e-5*float(x.abs().max()), rtol=1e-5)
    check_untouched(name)

@pytest.mark.parametrize('name', names())
def test_speed_rule_leaves_every_layer_at_full_rank(name):
    "At rank_ratio 1.0 no pair is smaller, so none is faster: the speed rule (`faster_at`) leaves every layer, and no model gets slower"
    model = ZOO[name].build()
    plans = FC_Decomposer(rank_ratio=1.0, faster_at=1).plan(model)
    assert all(p.rank is None for p in plans), [(p.name, p.rank) for p in plans if p.rank]
