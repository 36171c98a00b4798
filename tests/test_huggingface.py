"""Hugging Face end to end, on small configs (random weights, no download): decomposed checkpoints save, load with
`load_pretrained` (theirs and those of earlier versions), and load with `transformers` alone through its Auto classes
and `trust_remote_code=True`, in a process where fasterai can't be imported, offline; without `trust_remote_code`
they are refused. Also a GGUF model's, and `fasterai-fc decompose`'s."""
import ast, json, os, shutil, subprocess, sys
from pathlib import Path
import pytest, torch
from fasterai.misc.all import *
from fasterai.misc.huggingface import portable
from fasterai.misc import modeling_fasterai
from fasterai.misc.cli import main

transformers = pytest.importorskip('transformers')

def tiny(name):
    "A small `transformers` model of the family `name`, in eval mode, and keyword inputs for it"
    torch.manual_seed(0)
    ids = torch.randint(1, 100, (2, 9))
    mask = torch.ones_like(ids); mask[1, 6:] = 0
    common = dict(vocab_size=100, num_attention_heads=4)
    if name == 'bert':
        m = transformers.BertForMaskedLM(transformers.BertConfig(hidden_size=32, num_hidden_layers=2, intermediate_size=64, **common))
    elif name == 'gpt2':
        m = transformers.GPT2LMHeadModel(transformers.GPT2Config(n_embd=32, n_layer=2, n_positions=16, n_head=4, vocab_size=100))
    elif name == 'llama':
        m = transformers.LlamaForCausalLM(transformers.LlamaConfig(hidden_size=32, num_hidden_layers=2, intermediate_size=64,
                                                                   num_key_value_heads=2, **common))
    elif name == 't5':
        m = transformers.T5ForConditionalGeneration(transformers.T5Config(d_model=32, d_ff=64, d_kv=8, num_layers=2, num_heads=4,
                                                                          vocab_size=100))
        return m.eval(),dict(input_ids=ids, attention_mask=mask, decoder_input_ids=ids[:, :5])
    elif name == 'encoder-decoder':   # a composite model: two transformers models in one
        c = dict(hidden_size=32, num_hidden_layers=1, intermediate_size=64, **common)
        m = transformers.EncoderDecoderModel(encoder=transformers.BertModel(transformers.BertConfig(**c)),
            decoder=transformers.BertLMHeadModel(transformers.BertConfig(is_decoder=True, add_cross_attention=True, **c)))
        m.config.decoder_start_token_id,m.config.pad_token_id = 1,0
        return m.eval(),dict(input_ids=ids, attention_mask=mask, decoder_input_ids=ids[:, :5])
    return m.eval(),dict(input_ids=ids, attention_mask=mask)

def quiet(f, *args, **kwargs):
    "`f(*args, **kwargs)` with `transformers`' warnings (load reports of new heads) silenced"
    v = transformers.logging.get_verbosity()
    transformers.logging.set_verbosity_error()
    try: return f(*args, **kwargs)
    finally: transformers.logging.set_verbosity(v)

@pytest.mark.parametrize('name', ['bert', 'gpt2', 'llama', 't5'])
@pytest.mark.parametrize('method', ['svd', 'whiten'])
def test_save_and_load_pretrained(tmp_path, name, method):
    model,kw = tiny(name)
    fc = FC_Decomposer(0.5, method=method)
    new = fc.decompose(model, [kw] if method != 'svd' else None)
    assert len(fc.ranks) > 0 and new.config.fasterai['ranks'] == fc.ranks
    new.save_pretrained(tmp_path)
    saved = json.loads((tmp_path/'config.json').read_text())
    assert saved['fasterai']['ranks'] == fc.ranks and saved['fasterai']['version']
    assert saved['model_type'] == 'fasterai_' + model.config.model_type and (tmp_path/'modeling_fasterai.py').is_file()
    assert saved['auto_map']['AutoConfig'] == f'modeling_fasterai.LowRank{type(model.config).__name__}'
    back = load_pretrained(tmp_path)
    assert type(back) is type(model) and not back.training
    with torch.no_grad(): a,b = new(**kw).logits,back(**kw).logits
    torch.testing.assert_close(b, a, atol=1e-6, rtol=1e-6)
    assert {k:v.shape for k,v in back.state_dict().items()} == {k:v.shape for k,v in new.state_dict().items()}
    assert not any(p.is_meta for p in back.parameters()) and not any(b.is_meta for b in back.buffers())

def test_decomposing_a_loaded_model_again_records_every_rank(tmp_path):
    "Ranks recorded before are kept when a decomposed model is decomposed again, and the result saves and loads too"
    model,kw = tiny('llama')
    once = FC_Decomposer(0.5, layers=['*.mlp.*']).decompose(model)
    once.save_pretrained(tmp_path/'once')
    fc = FC_Decomposer(0.25, layers=['*.self_attn.*', '*.mlp.down_proj'])
    twice = fc.decompose(load_pretrained(tmp_path/'once'))
    ranks = twice.config.fasterai['ranks']
    assert sum(n.endswith('mlp.up_proj') for n in ranks) == 2 and ranks['model.layers.0.mlp.down_proj'] == 8
    twice.save_pretrained(tmp_path/'twice')
    with torch.no_grad(): torch.testing.assert_close(load_pretrained(tmp_path/'twice')(**kw).logits, twice(**kw).logits)

def test_load_pretrained_errors(tmp_path):
    model,_ = tiny('bert')
    new = FC_Decomposer(0.5).decompose(model)
    new.save_pretrained(tmp_path)
    cfg = json.loads((tmp_path/'config.json').read_text())
    (tmp_path/'config.json').write_text(json.dumps({**cfg, 'architectures': ['NoSuchModel']}))
    with pytest.raises(ValueError, match='names no transformers class'): load_pretrained(tmp_path)
    assert type(load_pretrained(tmp_path, transformers.BertForMaskedLM)) is transformers.BertForMaskedLM
    (tmp_path/'config.json').write_text(json.dumps({**cfg, 'model_type': 'fasterai_no_such_type'}))
    with pytest.raises(ValueError, match="a decomposed 'no_such_type', an architecture transformers"): load_pretrained(tmp_path)
    (tmp_path/'config.json').write_text(json.dumps(cfg))
    (tmp_path/'model.safetensors').unlink()
    with pytest.raises(ValueError, match='no model.safetensors'): load_pretrained(tmp_path, transformers.BertForMaskedLM)

def test_a_head_that_builds_its_model_with_auto_model(tmp_path):
    "`LlamaForSequenceClassification` builds its base model with `AutoModel.from_config`: rebuilt from a low-rank config all the same"
    torch.manual_seed(0)
    cfg = transformers.LlamaConfig(vocab_size=100, hidden_size=32, num_hidden_layers=2, intermediate_size=64, num_attention_heads=4,
                                   num_key_value_heads=2, pad_token_id=0, num_labels=3)
    new = FC_Decomposer(0.5).decompose(transformers.LlamaForSequenceClassification(cfg).eval())
    new.save_pretrained(tmp_path)
    back = load_pretrained(tmp_path)
    assert type(back) is transformers.LlamaForSequenceClassification and type(back.config).__name__ == 'LowRankLlamaConfig'
    ids = torch.randint(1, 100, (2, 7))
    with torch.no_grad(): torch.testing.assert_close(back(ids).logits, new(ids).logits, atol=1e-6, rtol=1e-6)

def test_checkpoints_of_earlier_versions_load_and_save_portable(tmp_path):
    "A checkpoint whose config.json kept the original model_type (no auto_map, no code), as versions before `portable` wrote it"
    model,kw = tiny('gpt2')
    new = FC_Decomposer(0.5).decompose(model)
    new.save_pretrained(tmp_path/'new')
    cfg = json.loads((tmp_path/'new'/'config.json').read_text())
    (tmp_path/'old').mkdir()
    (tmp_path/'old'/'config.json').write_text(json.dumps({**{k:v for k,v in cfg.items() if k != 'auto_map'}, 'model_type': 'gpt2'}))
    shutil.copy(tmp_path/'new'/'model.safetensors', tmp_path/'old')
    back = load_pretrained(tmp_path/'old')
    assert type(back) is transformers.GPT2LMHeadModel and type(back.config).__name__ == 'LowRankGPT2Config'
    with torch.no_grad(): torch.testing.assert_close(back(**kw).logits, new(**kw).logits, atol=1e-6, rtol=1e-6)
    back.save_pretrained(tmp_path/'again')
    assert json.loads((tmp_path/'again'/'config.json').read_text())['model_type'] == 'fasterai_gpt2'

def test_portable_keeps_the_model_in_memory_as_it_was():
    "Only the config's class changes: same values, same `model_type` in memory; the original untouched; other models left alone"
    model,kw = tiny('llama')
    new = FC_Decomposer(0.5).decompose(model)
    values,before = new.config.to_dict(),new(**kw).logits
    assert portable(new) is new and type(new) is transformers.LlamaForCausalLM
    assert isinstance(new.config, transformers.LlamaConfig) and new.config.model_type == 'llama' and new.model.config is new.config
    assert new.config.to_dict() == {**values, 'model_type': 'fasterai_llama', 'auto_map': new.config.auto_map}
    assert new.config.auto_map['AutoModelForCausalLM'] == 'modeling_fasterai.LowRankLlamaForCausalLM'
    torch.testing.assert_close(new(**kw).logits, before, atol=0, rtol=0)
    assert type(model.config) is transformers.LlamaConfig and type(portable(model).config) is transformers.LlamaConfig   # no ranks
    mlp = torch.nn.Sequential(torch.nn.Linear(4, 4))
    assert portable(FC_Decomposer(0.5).decompose(mlp)) is not None

def test_a_portable_config_pickles():
    "A portable config's class is found by its name, as pickles (`torch.save`, fastai exports) need"
    new = portable(FC_Decomposer(0.5).decompose(tiny('bert')[0]))
    import pickle
    back = pickle.loads(pickle.dumps(new.config))
    assert type(back) is type(new.config) and back.fasterai == new.config.fasterai

def test_plain_save_after_decompose_loads_anywhere(tmp_path):
    "`new.save_pretrained` straight after `decompose` never writes a checkpoint the Auto classes fill with random factors"
    model,_ = tiny('llama')
    FC_Decomposer(0.5).decompose(model).save_pretrained(tmp_path)
    assert json.loads((tmp_path/'config.json').read_text())['model_type'] == 'fasterai_llama'

def test_modeling_file_imports_only_torch_and_transformers():
    "What the checkpoint carries runs where fasterai is not installed"
    tree = ast.parse(Path(modeling_fasterai.__file__).read_text())
    mods = {a.name.split('.')[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    mods |= {n.module.split('.')[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    assert mods - {'__future__'} - set(sys.stdlib_module_names) == {'torch', 'transformers'}, mods

def write_gguf(path:Path, hidden=32, inter=64, layers=2, heads=4, kv=2, vocab=100):
    "A tiny Llama GGUF file, float32 tensors at random, as llama.cpp names them"
    import numpy as np
    gguf = pytest.importorskip('gguf')
    rng = np.random.default_rng(0)
    w = gguf.GGUFWriter(str(path), 'llama')
    w.add_context_length(64); w.add_embedding_length(hidden); w.add_block_count(layers); w.add_feed_forward_length(inter)
    w.add_head_count(heads); w.add_head_count_kv(kv); w.add_layer_norm_rms_eps(1e-6); w.add_rope_dimension_count(hidden//heads)
    w.add_vocab_size(vocab)
    rand = lambda name, *shape: w.add_tensor(name, (0.1*rng.standard_normal(shape)).astype(np.float32))
    ones = lambda name: w.add_tensor(name, np.ones(hidden, np.float32))
    rand('token_embd.weight', vocab, hidden); rand('output.weight', vocab, hidden); ones('output_norm.weight')
    for i in range(layers):
        for n,shape in dict(attn_q=(hidden, hidden), attn_k=(kv*hidden//heads, hidden), attn_v=(kv*hidden//heads, hidden),
                            attn_output=(hidden, hidden), ffn_gate=(inter, hidden), ffn_up=(inter, hidden), ffn_down=(hidden, inter)).items():
            rand(f'blk.{i}.{n}.weight', *shape)
        ones(f'blk.{i}.attn_norm.weight'); ones(f'blk.{i}.ffn_norm.weight')
    w.write_header_to_file(); w.write_kv_data_to_file(); w.write_tensors_to_file(); w.close()

# What the process without fasterai does: load each case's checkpoint with its Auto class and `trust_remote_code=True`
CHILD = r'''
import sys; sys.modules['fasterai'] = None   # fasterai can't be imported, whatever is installed
import json, torch, transformers
from pathlib import Path
transformers.logging.set_verbosity_error()
res = {}
for c in json.loads(sys.argv[1]):
    dtype = getattr(torch, c.get('dtype', 'float32'))
    m,info = getattr(transformers, c['auto']).from_pretrained(c['path'], trust_remote_code=True, output_loading_info=True, dtype=dtype)
    kw = torch.load(c['inputs'])
    with torch.no_grad():   # the output of the model, or of its base model (under a new head)
        out = (m.eval().base_model if c['compare'] == 'base' else m)(**kw)
        got = out.logits if c['compare'] == 'logits' else out.last_hidden_state
    res[c['id']] = dict(cls=type(m).__name__, base=type(m).__mro__[1].__name__, missing=sorted(info['missing_keys']),
                        pairs=sum(type(l).__name__ == 'LowRankLinear' for l in m.modules()), dtypes=sorted({str(p.dtype) for p in m.parameters()}),
                        err=float((got.float() - torch.load(c['ref'])).abs().max()))
refused = {}
for auto in ('AutoConfig', 'AutoModel', 'AutoModelForCausalLM'):
    try: getattr(transformers, auto).from_pretrained(c['path']); refused[auto] = None
    except ValueError as e: refused[auto] = str(e)
res['refused'] = refused
res['fasterai'] = sorted(k for k,v in sys.modules.items() if k.split('.')[0] == 'fasterai' and v is not None)
Path(sys.argv[2]).write_text(json.dumps(res))   # stdout has the prompts of the refusals
'''

@pytest.fixture(scope='module')
def anywhere(tmp_path_factory):
    "Decomposed checkpoints of several architectures, each loaded by a process without fasterai: `{case id: what it found}`"
    tmp = tmp_path_factory.mktemp('anywhere')
    cases,expect = [],{}
    def add(id, path, auto, kw, ref, compare, **extra):
        torch.save(kw, tmp/f'{id}.inputs.pt'); torch.save(ref.detach().float(), tmp/f'{id}.ref.pt')
        cases.append(dict(id=id, path=str(path), auto=auto, inputs=str(tmp/f'{id}.inputs.pt'), ref=str(tmp/f'{id}.ref.pt'), compare=compare, **extra))
    def saved(name, method='svd', **opts):
        model,kw = tiny(name)
        new = portable(FC_Decomposer(0.5, method=method, **opts).decompose(model, [kw] if method != 'svd' else None))
        new.save_pretrained(tmp/name)
        expect[name] = new.config.fasterai['ranks']
        return new,kw
    with torch.no_grad():
        new,kw = saved('llama', 'whiten')
        # a head first: it builds its base model with `AutoModel.from_config`, before any load registers a class for it
        add('llama-classifier', tmp/'llama', 'AutoModelForSequenceClassification', kw, new.model(**kw).last_hidden_state, 'base')
        add('llama', tmp/'llama', 'AutoModelForCausalLM', kw, new(**kw).logits, 'logits')
        add('llama-base', tmp/'llama', 'AutoModel', kw, new.model(**kw).last_hidden_state, 'hidden')
        add('llama-bf16', tmp/'llama', 'AutoModelForCausalLM', kw, new(**kw).logits, 'logits', dtype='bfloat16')
        new,kw = saved('gpt2')
        add('gpt2', tmp/'gpt2', 'AutoModelForCausalLM', kw, new(**kw).logits, 'logits')
        add('gpt2-base', tmp/'gpt2', 'AutoModel', kw, new.transformer(**kw).last_hidden_state, 'hidden')
        new,kw = saved('bert', 'whiten')
        add('bert-classifier', tmp/'bert', 'AutoModelForSequenceClassification', kw, new.bert(**kw).last_hidden_state, 'base')
        add('bert', tmp/'bert', 'AutoModelForMaskedLM', kw, new(**kw).logits, 'logits')
        add('bert-base', tmp/'bert', 'AutoModel', kw, new.bert(**kw).last_hidden_state, 'hidden')
        new,kw = saved('t5')
        add('t5', tmp/'t5', 'AutoModelForSeq2SeqLM', kw, new(**kw).logits, 'logits')
        enc = new.encoder(input_ids=kw['input_ids'], attention_mask=kw['attention_mask']).last_hidden_state
        dec = new.decoder(input_ids=kw['decoder_input_ids'], encoder_hidden_states=enc, encoder_attention_mask=kw['attention_mask'])
        add('t5-base', tmp/'t5', 'AutoModel', kw, dec.last_hidden_state, 'hidden')
        new,kw = saved('encoder-decoder')
        add('encoder-decoder', tmp/'encoder-decoder', 'AutoModelForSeq2SeqLM', kw, new(**kw).logits, 'logits')
        # a decomposed model decomposed again
        once = load_pretrained(tmp/'llama')
        twice = portable(FC_Decomposer(rank=4, layers=['*.self_attn.q_proj', '*.mlp.up_proj']).decompose(once))
        twice.save_pretrained(tmp/'twice')
        expect['twice'] = twice.config.fasterai['ranks']
        add('twice', tmp/'twice', 'AutoModelForCausalLM', kw_llama := tiny('llama')[1], twice(**kw_llama).logits, 'logits')
        # a GGUF file's model, decomposed and saved
        write_gguf(tmp/'tiny.gguf')
        gg = quiet(transformers.AutoModelForCausalLM.from_pretrained, tmp, gguf_file='tiny.gguf')
        small = portable(FC_Decomposer(0.5).decompose(gg))
        assert gg.is_quantized and 'quantization_config' in gg.config.to_dict()   # the original keeps its marks
        small.save_pretrained(tmp/'gguf')
        expect['gguf'] = small.config.fasterai['ranks']
        add('gguf', tmp/'gguf', 'AutoModelForCausalLM', kw_llama, small(**kw_llama).logits, 'logits')
        # `fasterai-fc decompose` on a model directory
        tiny('llama')[0].save_pretrained(tmp/'plain')
        assert main(['decompose', str(tmp/'plain'), str(tmp/'cli'), '--rank-ratio', '0.25']) == 0
        expect['cli'] = json.loads((tmp/'cli'/'config.json').read_text())['fasterai']['ranks']
        add('cli', tmp/'cli', 'AutoModelForCausalLM', kw_llama, load_pretrained(tmp/'cli')(**kw_llama).logits, 'logits')
        # a sharded checkpoint streamed a block at a time into shards
        tiny('llama')[0].save_pretrained(tmp/'plain-shards', max_shard_size='20KB')
        FC_Decomposer(0.5, method='whiten').decompose_checkpoint(tmp/'plain-shards', tmp/'streamed', [kw_llama], max_shard_size=20_000)
        assert (tmp/'streamed'/'model.safetensors.index.json').exists()
        expect['streamed'] = json.loads((tmp/'streamed'/'config.json').read_text())['fasterai']['ranks']
        add('streamed', tmp/'streamed', 'AutoModelForCausalLM', kw_llama, load_pretrained(tmp/'streamed')(**kw_llama).logits, 'logits')
    (tmp/'elsewhere').mkdir()
    env = {k:v for k,v in os.environ.items() if k != 'PYTHONPATH'}
    env.update(HF_HUB_OFFLINE='1', TRANSFORMERS_OFFLINE='1', HF_MODULES_CACHE=str(tmp/'modules'))
    r = subprocess.run([sys.executable, '-c', CHILD, json.dumps(cases), str(tmp/'found.json')], cwd=tmp/'elsewhere', env=env, stdin=subprocess.DEVNULL,
                       capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stderr[r.stderr.rfind('Traceback'):][:3000]
    return json.loads((tmp/'found.json').read_text()),{c['id']:c for c in cases},expect,tmp

CASES = ['llama', 'llama-base', 'llama-classifier', 'llama-bf16', 'gpt2', 'gpt2-base', 'bert', 'bert-base', 'bert-classifier',
         't5', 't5-base', 'encoder-decoder', 'twice', 'gguf', 'cli', 'streamed']
# Layers the class has and the model saved had not (a new task's head, BertModel's pooler): at random, as from any checkpoint
HEADS = {'llama-classifier': ('score.',), 'bert-base': ('pooler.',), 'bert-classifier': ('bert.pooler.', 'classifier.')}

@pytest.mark.parametrize('id', CASES)
def test_loads_with_transformers_alone(anywhere, id):
    "The checkpoint loads as its Auto class says, with the factorised layers, and computes what the decomposed model did"
    res,cases,expect,_ = anywhere
    r,c = res[id],cases[id]
    ranks = expect[Path(c['path']).name]
    assert r['cls'] == 'LowRank' + r['base'] and r['base'] in dir(transformers)
    assert all(k.startswith(HEADS[id]) for k in r['missing']) if id in HEADS else r['missing'] == [], r['missing']
    head = sum(n == 'lm_head' or n.startswith('cls.') for n in ranks)   # layers of the heads a base model doesn't have
    assert r['pairs'] == (len(ranks) - head if c['compare'] != 'logits' else len(ranks)) > 0, (r['pairs'], ranks)
    if c.get('dtype') == 'bfloat16': assert r['dtypes'] == ['torch.bfloat16'] and r['err'] < 0.1, r
    else: assert r['dtypes'] == ['torch.float32'] and r['err'] < 1e-5, r['err']

def test_refused_without_trust_remote_code_and_fasterai_never_imported(anywhere):
    res,*_ = anywhere
    assert res['fasterai'] == []
    for auto,msg in res['refused'].items(): assert msg and 'trust_remote_code=True' in msg, (auto, msg)

def test_gguf_model_decomposed_saves_without_its_quantization(anywhere):
    *_,tmp = anywhere
    cfg = json.loads((tmp/'gguf'/'config.json').read_text())
    assert 'quantization_config' not in cfg and cfg['model_type'] == 'fasterai_llama'
    assert load_pretrained(tmp/'gguf').config.fasterai['ranks'] == cfg['fasterai']['ranks']

def test_cli_writes_a_checkpoint_that_loads_anywhere(anywhere):
    *_,tmp = anywhere
    assert (tmp/'cli'/'modeling_fasterai.py').read_text() == Path(modeling_fasterai.__file__).read_text()
    assert json.loads((tmp/'cli'/'config.json').read_text())['auto_map']['AutoModelForCausalLM'] == 'modeling_fasterai.LowRankLlamaForCausalLM'
