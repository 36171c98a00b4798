"Hugging Face end to end: decomposed checkpoints that save and load, on small configs (random weights, no download)."
import json, pytest, torch
from fasterai.misc.all import *

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
    return m.eval(),dict(input_ids=ids, attention_mask=mask)

@pytest.mark.parametrize('name', ['bert', 'gpt2', 'llama', 't5'])
@pytest.mark.parametrize('method', ['svd', 'whiten'])
def test_save_and_load_pretrained(tmp_path, name, method):
    model,kw = tiny(name)
    fc = FC_Decomposer(0.5, method=method)
    new = fc.decompose(model, [kw] if method != 'svd' else None)
    assert len(fc.ranks) > 0 and new.config.fasterai['ranks'] == fc.ranks
    new.save_pretrained(tmp_path)
    saved = json.loads((tmp_path/'config.json').read_text())['fasterai']
    assert saved['ranks'] == fc.ranks and saved['version']
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
    cfg['architectures'] = ['NoSuchModel']
    (tmp_path/'config.json').write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match='names no transformers class'): load_pretrained(tmp_path)
    assert type(load_pretrained(tmp_path, transformers.BertForMaskedLM)) is transformers.BertForMaskedLM
    (tmp_path/'model.safetensors').unlink()
    with pytest.raises(ValueError, match='no model.safetensors'): load_pretrained(tmp_path, transformers.BertForMaskedLM)
