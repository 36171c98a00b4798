"""Low-rank `transformers` models: a `transformers` architecture with some linear layers factorised into pairs.

fasterai replaced linear layers of this checkpoint's model by pairs of thinner ones, `Sequential(Linear(n, k,
bias=False), Linear(k, m))`, and recorded their ranks in `config.json` (`"fasterai": {"ranks": {layer name: k}}`).
This file rebuilds that structure with `torch` and `transformers` alone, so that `transformers` loads the factors:

    AutoModelForCausalLM.from_pretrained(path, trust_remote_code=True)

Its classes are made from their names: `LowRank<X>` is the `transformers` class `X` (a configuration or a model)
whose layers named in the ranks are pairs of the rank recorded; `auto_map` in `config.json` names those the checkpoint
loads as. `config.json` gives `model_type` as `fasterai_<X's model_type>`, which `transformers` does not know, so that
without this code it refuses the checkpoint rather than build full-size layers and leave them at random.
"""
from __future__ import annotations
from torch import nn   # and `transformers`, imported where used: fasterai imports this file without loading it

PREFIX,MODEL_TYPE = 'LowRank','fasterai_'   # prefixes of the classes' names, and of `model_type` in `config.json`

class LowRankLinear(nn.Sequential):
    "`Sequential(Linear(n, k, bias=False), Linear(k, m))` computing `B A x + b`, that still answers what code reads off the layer it replaced"
    def __init__(self, first:nn.Linear, second:nn.Linear, fan_in_fan_out:bool=False):
        super().__init__(first, second)
        self.fan_in_fan_out = fan_in_fan_out   # whether `weight` reads `n` x `m`, as the `Conv1D` it replaced stored it

    def _get_name(self): return 'Sequential'
    @property
    def in_features(self): return self[0].in_features
    @property
    def out_features(self): return self[1].out_features
    @property
    def rank(self): return self[0].out_features
    @property
    def bias(self): return self[1].bias
    @property
    def weight(self):
        "The product of the factors, `m` x `n` (`n` x `m` for a `Conv1D`)"
        w = self[1].weight @ self[0].weight
        return w.T if self.fan_in_fan_out else w

def low_rank_pair(layer:nn.Module, k:int)->LowRankLinear:
    "An uninitialised pair of rank `k` to replace `layer`, an `nn.Linear` or a `Conv1D`, on its device and in its dtype"
    from transformers.pytorch_utils import Conv1D
    conv = isinstance(layer, Conv1D)
    if not (conv or isinstance(layer, nn.Linear)): raise ValueError(f"it is a {type(layer).__name__}, not a linear layer")
    w = layer.weight
    n,m = w.shape if conv else w.shape[::-1]
    kw = dict(device=w.device, dtype=w.dtype)
    return LowRankLinear(nn.Linear(n, k, bias=False, **kw), nn.Linear(k, m, **kw), conv)

def module_name(model:nn.Module, name:str)->str|None:
    "The name in `model` of the layer `name` of the model saved, which may be `model`'s base model or hold it; `None` if `model` lacks it (another task's head)"
    p = getattr(model, 'base_model_prefix', '')
    names = [name] + ([name[len(p)+1:]] if name.startswith(p + '.') else [f'{p}.{name}']) if p else [name]
    for n in names:
        try: model.get_submodule(n)
        except AttributeError: continue
        return n

def factorise(model:nn.Module, ranks:dict)->nn.Module:
    "Replace in place the layers of `model` that `ranks` (`{layer name: rank}`) names by uninitialised pairs of their rank"
    for name,k in ranks.items():
        n = module_name(model, name)
        if n is None: continue
        layer = model.get_submodule(n)
        if isinstance(layer, LowRankLinear) and layer.rank == k: continue   # a base model within did it: see `low_rank_class`
        try: pair = low_rank_pair(layer, k)
        except ValueError as e: raise ValueError(f"config.json records a rank for '{name}', but {e}") from None
        parent,_,child = n.rpartition('.')
        setattr(model.get_submodule(parent), child, pair)
    return model

def _config_class(base:type)->type:
    "`base`, a configuration class, saved with `model_type` `fasterai_<its own>`, read back as its own"
    def to_dict(self):
        d = base.to_dict(self)
        return {**d, 'model_type': MODEL_TYPE + d['model_type']}
    def get_config_dict(cls, *args, **kwargs):
        d,kwargs = base.get_config_dict.__func__(cls, *args, **kwargs)
        if d.get('model_type') == MODEL_TYPE + base.model_type: d = {**d, 'model_type': base.model_type}
        return d,kwargs
    return dict(to_dict=to_dict, get_config_dict=classmethod(get_config_dict), _auto_class='AutoConfig')

def _model_class(base:type)->type:
    "`base`, a model class, built with the layers its configuration's ranks name factorised"
    def __init__(self, config, *args, **kwargs):
        base.__init__(self, config, *args, **kwargs)
        factorise(self, config.fasterai['ranks'])
    return dict(__init__=__init__, config_class=low_rank_class(base.config_class))

def low_rank_class(base:type)->type:
    "`LowRank<base>`, the low-rank class of `base`, a `transformers` configuration or model class: made once"
    import transformers
    name,config = PREFIX + base.__name__,issubclass(base, transformers.PretrainedConfig)
    if name not in globals():
        ns = (_config_class if config else _model_class)(base)
        globals()[name] = cls = type(name, (base,), dict(ns, __module__=__name__, __qualname__=name,
                                                         __doc__=f"`{base.__name__}` with factorised linear layers"))
        models = transformers.AutoModel._model_mapping   # task heads build their base model with `AutoModel.from_config(config)`
        if config and base in models:
            m = models[base]
            transformers.AutoModel.register(cls, low_rank_class(m[0] if isinstance(m, (tuple, list)) else m), exist_ok=True)
    return globals()[name]

def __getattr__(name:str)->type:
    "`LowRank<X>`, the low-rank class of `transformers.X`, as `auto_map` names it"
    if name.startswith(PREFIX):   # and not a name Python asks modules for, such as `__path__`
        import transformers
        base = getattr(transformers, name[len(PREFIX):], None)
        if isinstance(base, type) and issubclass(base, (transformers.PretrainedConfig, transformers.PreTrainedModel)): return low_rank_class(base)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
