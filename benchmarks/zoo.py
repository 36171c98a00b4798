"""A zoo of small models (random weights, no download) to check `FC_Decomposer` on every architecture it claims.

`ZOO = {name: Spec}`: each spec builds a small, seeded model of one architecture (every torchvision classification
family, and 17 Hugging Face `transformers` architectures built from tiny configs), its example inputs, the tensors
its outputs are compared on, and a scalar loss for a training step.

    python benchmarks/zoo.py [rank_ratio]   # a Markdown table of what the decomposer does with each model
"""
from __future__ import annotations
import collections, sys, time, traceback
from dataclasses import dataclass
from typing import Callable
import torch
from torch import nn, Tensor

__all__ = ['Spec', 'ZOO', 'linear_like', 'output_tensors', 'survey', 'markdown']

# ---------------------------------------------------------------------------------------------------------------
# Specs

def output_tensors(out, keys=None)->tuple[Tensor, ...]:
    "The tensors of a model's output: `keys` of a `transformers` output (or a dict), else every tensor of a tuple"
    if keys is not None: return tuple(out[k] for k in keys)
    if isinstance(out, Tensor): return (out,)
    if isinstance(out, (tuple, list)): return tuple(t for o in out for t in output_tensors(o))
    if out is None: return ()
    raise TypeError(f"don't know the tensors of a {type(out).__name__}")

@dataclass
class Spec:
    "How to build one model of the zoo and run it"
    build: Callable[[], nn.Module] # Builds the model (called under `torch.manual_seed`)
    inputs: Callable[[torch.Generator], tuple[tuple, dict]] # `(args, kwargs)` of a forward pass, drawn from the generator
    keys: tuple|None = None # Output fields compared and used in the loss (`transformers` outputs); `None`: every tensor
    source: str = 'torchvision' # 'torchvision' or 'transformers' (the tests skip the latter when it is not installed)
    note: str = '' # Anything worth knowing about the config

    def model(self, seed:int=0)->nn.Module:
        "The model, seeded, in eval mode, its batch-norm statistics set on the example batch so that its signal neither vanishes nor explodes"
        torch.manual_seed(seed)
        return warm_batchnorm(self.build(), *self.example()).eval()

    def example(self, seed:int=1)->tuple[tuple, dict]:
        "Example inputs (also the batch of the training step), seeded"
        return self.inputs(torch.Generator().manual_seed(seed))

    def outputs(self, model:nn.Module, args, kwargs)->tuple[Tensor, ...]:
        "The output tensors of `model` on the inputs"
        return output_tensors(model(*args, **kwargs), self.keys)

    def loss(self, model:nn.Module, args, kwargs)->Tensor:
        "A scalar loss that every output tensor reaches: the mean square of each, summed"
        return sum(t.float().square().mean() for t in self.outputs(model, args, kwargs))

def warm_batchnorm(model:nn.Module, args, kwargs)->nn.Module:
    """Set the running statistics of each batch norm of `model` to those of its input on one batch, in eval mode.
    With PyTorch's default initialisation (torchvision initialises GoogLeNet, Inception and ShuffleNet no better when
    not asked to) and the default statistics (mean 0, variance 1), activations shrink layer after layer, and the
    logits are the last bias plus ~1e-6: comparing outputs would check nothing. Statistics gathered in train mode
    instead make the eval pass blow up (to 1e13 in EfficientNet: stochastic depth, and channels of 2 values at 1x1)."""
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not bns: return model
    def set_stats(m, inp):
        x = inp[0].transpose(0, 1).flatten(1)
        m.running_mean.copy_(x.mean(1)); m.running_var.copy_(x.var(1, unbiased=False))
    hooks = [m.register_forward_pre_hook(set_stats) for m in bns]
    try:
        with torch.no_grad(): model.eval()(*args, **kwargs)
    finally:
        for h in hooks: h.remove()
    return model

def image(size, n=2):
    return lambda g: ((torch.randn(n, 3, size, size, generator=g),), {})

def tokens(vocab=100, n=2, length=8, **extra):
    "input_ids and an attention mask whose first sequence is padded at the end"
    def f(g):
        ids = torch.randint(3, vocab, (n, length), generator=g)
        mask = torch.ones(n, length, dtype=torch.long)
        mask[0, -2:] = 0
        return (),dict(input_ids=ids, attention_mask=mask, **{k:v(g) for k,v in extra.items()})
    return f

ZOO: dict[str, Spec] = {}
def spec(name, **kw): ZOO[name] = Spec(**kw)

# ---------------------------------------------------------------------------------------------------------------
# torchvision: every classification family

def _tv(): import torchvision; return torchvision.models

def _vgg():
    # VGG's classifier is fixed at 25088 -> 4096 -> 4096 -> classes (its avgpool is adaptive to 7x7): a tiny conv stack
    f = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(8, 512, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2))
    return _tv().VGG(f, num_classes=10)

def _convnext():
    from torchvision.models.convnext import ConvNeXt, CNBlockConfig
    return ConvNeXt([CNBlockConfig(16, 32, 1), CNBlockConfig(32, None, 1)], stochastic_depth_prob=0.0, num_classes=10)

def _swin(v2=False):
    from torchvision.models import swin_transformer as st
    kw = dict(block=st.SwinTransformerBlockV2, downsample_layer=st.PatchMergingV2) if v2 else {}
    return st.SwinTransformer(patch_size=[4, 4], embed_dim=16, depths=[1, 1], num_heads=[2, 2], window_size=[4, 4],
                              stochastic_depth_prob=0.0, num_classes=10, **kw)

def _vit():
    from torchvision.models.vision_transformer import VisionTransformer
    m = VisionTransformer(image_size=32, patch_size=8, num_layers=2, num_heads=2, hidden_dim=32, mlp_dim=64, num_classes=10)
    nn.init.normal_(m.heads.head.weight, std=32**-0.5)   # torchvision zeroes the head: all outputs would be 0
    return m

def _maxvit():
    from torchvision.models.maxvit import MaxVit
    return MaxVit(input_size=(32, 32), stem_channels=8, partition_size=2, block_channels=[16, 32], block_layers=[1, 1],
                  head_dim=8, stochastic_depth_prob=0.0, num_classes=10)

def _densenet():
    from torchvision.models.densenet import DenseNet
    return DenseNet(growth_rate=8, block_config=(2, 2), num_init_features=16, bn_size=2, num_classes=10)

spec('vgg', build=_vgg, inputs=image(32), note='torchvision.models.VGG, 2-conv feature stack to 512 channels; classifier 25088-4096-4096-10 as in VGG')
spec('resnet18', build=lambda: _tv().resnet18(num_classes=10), inputs=image(32))
spec('alexnet', build=lambda: _tv().alexnet(num_classes=10), inputs=image(64), note='classifier 9216-4096-4096-10 (fixed by the class)')
spec('densenet', build=_densenet, inputs=image(32), note='DenseNet(growth_rate=8, block_config=(2, 2))')
spec('mobilenet_v2', build=lambda: _tv().mobilenet_v2(num_classes=10, width_mult=0.25), inputs=image(32))
spec('mobilenet_v3_small', build=lambda: _tv().mobilenet_v3_small(num_classes=10), inputs=image(32))
spec('efficientnet_b0', build=lambda: _tv().efficientnet_b0(num_classes=10), inputs=image(32))
spec('efficientnet_v2_s', build=lambda: _tv().efficientnet_v2_s(num_classes=10), inputs=image(32))
spec('regnet_y_400mf', build=lambda: _tv().regnet_y_400mf(num_classes=10), inputs=image(32))
spec('convnext', build=_convnext, inputs=image(32), note='ConvNeXt, 2 stages of 1 block, 16/32 channels')
spec('swin_t', build=_swin, inputs=image(32), note='SwinTransformer (v1 blocks), embed 16, depths [1, 1], window 4')
spec('swin_v2_t', build=lambda: _swin(v2=True), inputs=image(32), note='SwinTransformer with SwinTransformerBlockV2 and PatchMergingV2')
spec('vit', build=_vit, inputs=image(32), note='VisionTransformer(32, patch 8, 2 layers, 2 heads, hidden 32, mlp 64)')
spec('maxvit', build=_maxvit, inputs=image(32), note='MaxVit(32x32, stem 8, partition 2, channels [16, 32], layers [1, 1], head_dim 8)')
spec('shufflenet_v2', build=lambda: _tv().shufflenet_v2_x0_5(num_classes=10), inputs=image(32))
spec('mnasnet', build=lambda: _tv().mnasnet0_5(num_classes=10), inputs=image(32))
spec('squeezenet', build=lambda: _tv().squeezenet1_1(num_classes=10), inputs=image(32), note='its classifier is a 1x1 conv: no linear layer')
spec('googlenet', build=lambda: _tv().googlenet(num_classes=10, aux_logits=True, init_weights=False), inputs=image(32),
     note='aux_logits=True: the two auxiliary heads only run in train mode, where the loss sums all three outputs')
spec('inception_v3', build=lambda: _tv().inception_v3(num_classes=10, aux_logits=False, init_weights=False), inputs=image(75),
     note='aux_logits=False: the auxiliary head needs a 299x299 input in train mode')

# ---------------------------------------------------------------------------------------------------------------
# Hugging Face transformers, from tiny configs

def _hf(cls_name, cfg_name, **cfg):
    def build():
        import transformers
        c = getattr(transformers, cfg_name)(**cfg)
        c._attn_implementation = 'eager'   # the same (Python) attention for both models compared
        return getattr(transformers, cls_name)(c)
    return build

TINY = dict(vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64, max_position_embeddings=64)
DEC = dict(TINY, num_key_value_heads=2, pad_token_id=0, bos_token_id=1, eos_token_id=2)
L = dict(keys=('logits',), source='transformers')

spec('bert', build=_hf('BertForMaskedLM', 'BertConfig', **TINY), inputs=tokens(), **L)
spec('roberta', build=_hf('RobertaForMaskedLM', 'RobertaConfig', **TINY, pad_token_id=1), inputs=tokens(), **L)
spec('distilbert', build=_hf('DistilBertForMaskedLM', 'DistilBertConfig', vocab_size=100, dim=32, n_layers=2, n_heads=4,
                             hidden_dim=64, max_position_embeddings=64), inputs=tokens(), **L)
spec('gpt2', build=_hf('GPT2LMHeadModel', 'GPT2Config', vocab_size=100, n_embd=32, n_layer=2, n_head=4, n_inner=64, n_positions=64,
                         bos_token_id=1, eos_token_id=2),
     inputs=tokens(), **L)
spec('llama', build=_hf('LlamaForCausalLM', 'LlamaConfig', **DEC), inputs=tokens(), **L)
spec('mistral', build=_hf('MistralForCausalLM', 'MistralConfig', **DEC, sliding_window=None), inputs=tokens(), **L)
spec('qwen2', build=_hf('Qwen2ForCausalLM', 'Qwen2Config', **DEC), inputs=tokens(), **L)
spec('opt', build=_hf('OPTForCausalLM', 'OPTConfig', vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                      ffn_dim=64, word_embed_proj_dim=32, max_position_embeddings=64, pad_token_id=0, bos_token_id=1, eos_token_id=2),
     inputs=tokens(), **L)
spec('t5', build=_hf('T5ForConditionalGeneration', 'T5Config', vocab_size=100, d_model=32, d_kv=8, d_ff=64, num_layers=2,
                     num_decoder_layers=2, num_heads=4, relative_attention_num_buckets=8, decoder_start_token_id=0),
     inputs=tokens(decoder_input_ids=lambda g: torch.randint(3, 100, (2, 5), generator=g)), **L)
spec('vit_hf', build=_hf('ViTForImageClassification', 'ViTConfig', image_size=32, patch_size=8, num_channels=3, hidden_size=32,
                         num_hidden_layers=2, num_attention_heads=4, intermediate_size=64, num_labels=10),
     inputs=lambda g: ((), dict(pixel_values=torch.randn(2, 3, 32, 32, generator=g))), **L)
spec('phi3', build=_hf('Phi3ForCausalLM', 'Phi3Config', **DEC), inputs=tokens(), **L)
spec('gemma', build=_hf('GemmaForCausalLM', 'GemmaConfig', **DEC, head_dim=8), inputs=tokens(), **L)
spec('falcon', build=_hf('FalconForCausalLM', 'FalconConfig', vocab_size=100, hidden_size=32, num_hidden_layers=2,
                         num_attention_heads=4, pad_token_id=0, bos_token_id=1, eos_token_id=2), inputs=tokens(), **L,
     note='FalconConfig defaults: multi-query attention, parallel attention, alibi off (rotary), FalconLinear layers')
spec('gpt_neox', build=_hf('GPTNeoXForCausalLM', 'GPTNeoXConfig', **TINY, pad_token_id=0, bos_token_id=1, eos_token_id=2),
     inputs=tokens(), **L)
spec('bloom', build=_hf('BloomForCausalLM', 'BloomConfig', vocab_size=100, hidden_size=32, n_layer=2, n_head=4,
                        pad_token_id=0, bos_token_id=1, eos_token_id=2), inputs=tokens(), **L)
spec('whisper', build=_hf('WhisperForConditionalGeneration', 'WhisperConfig', vocab_size=100, num_mel_bins=8, d_model=32,
                          encoder_layers=2, decoder_layers=2, encoder_attention_heads=4, decoder_attention_heads=4,
                          encoder_ffn_dim=64, decoder_ffn_dim=64, max_source_positions=16, max_target_positions=16,
                          pad_token_id=0, bos_token_id=1, eos_token_id=2, decoder_start_token_id=1, suppress_tokens=[], begin_suppress_tokens=[]),
     inputs=lambda g: ((), dict(input_features=torch.randn(2, 8, 32, generator=g),
                                decoder_input_ids=torch.randint(3, 100, (2, 5), generator=g))), **L)
spec('clip', build=_hf('CLIPModel', 'CLIPConfig',
                       text_config=dict(vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                        intermediate_size=64, max_position_embeddings=16, projection_dim=16, bos_token_id=1, eos_token_id=2),
                       vision_config=dict(image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=2,
                                          num_attention_heads=4, intermediate_size=64, projection_dim=16),
                       projection_dim=16),
     inputs=tokens(length=8, pixel_values=lambda g: torch.randn(2, 3, 32, 32, generator=g)),
     keys=('logits_per_image', 'text_embeds', 'image_embeds'), source='transformers')

# ---------------------------------------------------------------------------------------------------------------
# Survey

def linear_like(model:nn.Module)->dict[str, str]:
    """`{name: class name}` of the linear-like layers of `model`, found independently of `fasterai`: `nn.Linear` and its
    subclasses, `transformers`' `Conv1D`, and already-factorised pairs `Sequential(Linear(n, k, bias=False), Linear(k, m))`
    (counted once, their two Linears not again). A module used at several places counts once."""
    conv1d = getattr(sys.modules.get('transformers.pytorch_utils'), 'Conv1D', None)
    res,seen,inside = {},set(),set()
    for name,m in model.named_modules():
        if id(m) in seen or id(m) in inside: continue
        is_pair = (isinstance(m, nn.Sequential) and len(m) == 2 and all(isinstance(l, nn.Linear) for l in m)
                   and m[0].bias is None and m[0].out_features == m[1].in_features)
        if is_pair: inside.update(id(l) for l in m)
        if isinstance(m, nn.Linear) or (conv1d is not None and isinstance(m, conv1d)) or is_pair:
            seen.add(id(m)); res[name] = type(m).__name__ if not is_pair else 'pair'
    return res

def _max_err(a, b)->float:
    "Largest absolute difference over the output tensors, relative to the largest absolute output"
    scale = max(float(t.abs().max()) for t in a) or 1.0
    return max(float((x.float() - y.float()).abs().max()) for x,y in zip(a, b))/scale

def survey(rank_ratio:float=0.5, names=None, verbose:bool=False)->list[dict]:
    "Decompose each model of the zoo at `rank_ratio`; one row per model: its layers, what was factorised or skipped and why, and whether the result runs"
    from fasterai.misc.fc_decomposer import FC_Decomposer
    rows = []
    for name in names or ZOO:
        s,row = ZOO[name],dict(architecture=name)
        try: model = s.model()
        except ImportError as e: rows.append(dict(row, error=f"not built: {e}")); continue
        lins = linear_like(model)
        row.update(linear=len(lins), classes=dict(collections.Counter(lins.values())))
        args,kwargs = s.example()
        t = time.perf_counter()
        try:
            fc = FC_Decomposer(rank_ratio=rank_ratio, progress=False)
            new = fc.decompose(model)
        except Exception as e:
            rows.append(dict(row, error=f"decompose: {type(e).__name__}: {e}"))
            if verbose: traceback.print_exc()
            continue
        row['seconds'] = round(time.perf_counter() - t, 2)
        rep = fc.report
        done = rep['rank'].notna()
        row.update(reported=len(rep), factorised=int(done.sum()), skipped=int((~done).sum()),
                   unreported=sorted(set(lins) - set(rep.name)),
                   reasons={n:r for n,r,d in zip(rep.name, rep.reason, done) if not d or isinstance(r, str)})
        try:
            with torch.no_grad(): a,b = s.outputs(model, args, kwargs),s.outputs(new.eval(), args, kwargs)
            row['max_rel_err'] = _max_err(a, b)
            new.train()
            loss = s.loss(new, args, kwargs)
            loss.backward()
            row['train_loss'] = float(loss.detach())
        except Exception as e:
            row['error'] = f"run: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
            if verbose: traceback.print_exc()
        rows.append(row)
    return rows

def markdown(rows:list[dict], rank_ratio:float)->str:
    "The rows of `survey` as a Markdown table"
    out = [f"rank_ratio={rank_ratio}", '',
           '| architecture | linear-like | classes | factorised | skipped | unreported | reasons | rel. error | decompose (s) | error |',
           '|---|---|---|---|---|---|---|---|---|---|']
    for r in rows:
        cls = ', '.join(f"{k} x{v}" for k,v in r.get('classes', {}).items())
        reasons = '; '.join(f"`{n}`: {v}" for n,v in r.get('reasons', {}).items())
        err = r.get('max_rel_err')
        out.append(f"| {r['architecture']} | {r.get('linear', '')} | {cls} | {r.get('factorised', '')} | {r.get('skipped', '')} | "
                   f"{', '.join(r.get('unreported', [])) or ''} | {reasons} | {'' if err is None else f'{err:.1e}'} | {r.get('seconds', '')} | "
                   f"{r.get('error', '').replace('|', '/')} |")
    return '\n'.join(out)

if __name__ == '__main__':
    ratio = float(sys.argv[1]) if len(sys.argv) > 1 else 0.5
    names = sys.argv[2:] or None
    print(markdown(survey(ratio, names), ratio))
