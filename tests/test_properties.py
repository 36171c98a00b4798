"Property-based checks over random shapes, ranks and dtypes."
import torch
from hypothesis import given, settings, strategies as st
from torch import nn
import pandas as pd
from fasterai.misc.all import *

@settings(max_examples=60, deadline=None)
@given(m=st.integers(1, 40), n=st.integers(1, 40), ratio=st.floats(0.01, 1.0), bias=st.booleans(),
       dtype=st.sampled_from([torch.float32, torch.float64]), seed=st.integers(0, 2**16))
def test_pair_shapes_params_and_optimal_error(m, n, ratio, bias, dtype, seed):
    torch.manual_seed(seed)
    lin = nn.Linear(n, m, bias=bias).to(dtype)
    fc = FC_Decomposer(rank_ratio=ratio)
    pair = fc.decompose(lin)
    k = max(1, int(round(ratio*min(m, n), 6)))
    assert [tuple(o.weight.shape) for o in pair] == [(k, n), (m, k)]
    assert sum(p.numel() for p in pair.parameters()) == k*(m+n) + m
    assert pair(torch.randn(3, 2, n, dtype=dtype)).shape == (3, 2, m)
    w = lin.weight.detach().double()
    s = torch.linalg.svdvals(w)
    err = torch.linalg.matrix_norm(w - pair[1].weight.detach().double() @ pair[0].weight.detach().double())
    opt = s[k:].square().sum().sqrt()
    tol = 1e-4 if dtype is torch.float32 else 1e-10
    assert abs(float(err - opt)) <= tol*float(s.square().sum().sqrt()) + 1e-12
    assert abs(fc.report.rel_error[0] - float(err/w.norm())) <= tol

@settings(max_examples=30, deadline=None)
@given(shapes=st.lists(st.tuples(st.integers(2, 30), st.integers(2, 30)), min_size=1, max_size=4),
       budget=st.floats(0.05, 0.95), seed=st.integers(0, 2**16))
def test_budget_never_exceeded_unless_at_least(shapes, budget, seed):
    "The budget holds, unless even the least each layer can take (rank 1, or whole where no pair is smaller) is over it; and what is left buys no move"
    torch.manual_seed(seed)
    model = nn.Sequential(*[nn.Linear(n, m) for m,n in shapes])
    fc = FC_Decomposer(budget=budget)
    fc.decompose(model)
    r = fc.report
    layers = [(m, n, p, None if pd.isna(k) else int(k)) for m,n,p,k in zip(r.out_features, r.in_features, r.params_before, r['rank'])]
    least = sum(min(factored_params(m, n, 1), p) for m,n,p,_ in layers)
    target,after = int(budget*r.params_before.sum()),r.params_after.sum()
    if least > target: return
    assert after <= target
    moves = [c for m,n,p,k in layers if k is not None for c in ([m+n] if factored_params(m, n, k+1) < p else []) + [p - factored_params(m, n, k)]]
    assert not moves or target - after < min(moves)
    assert all(k is None or factored_params(m, n, k) < p for m,n,p,k in layers)   # no pair as large as its layer
