"""Where the loss of a low-rank SmolLM2-135M comes from (issue 31): a lab, not a benchmark. Independent whitening
re-implemented on the input statistics of one pass (a few lines, so that variants are cheap), applied to subsets of the
decoder's Linears: each layer type, each third of the depth, attention or MLP alone. `benchmarks/llm.py` gives the
model, the data and the perplexity.

Then a few allocations by layer type under the same total (`by_type`), and what a budget's check would see if it
compared walked models on the calibration data they were fitted to (`walked_check`).

    python benchmarks/llm_lab.py            # writes llm_where.json (an hour on the shared 2 cores)
    python benchmarks/llm_lab.py --check    # walked_check only (ten minutes)
    python benchmarks/llm_lab.py --fewer-passes first 4 64   # fewer_passes('first', k=4, n_calib=64) at 20% (eight minutes)
"""
import math, time, pathlib, json, sys
import torch
sys.path.insert(0, str(pathlib.Path(__file__).parent))
import llm
from fasterai.misc.surgery import low_rank_linear, swap_module
from fasterai.misc.ranks import factored_params

def eigh(a):
    "Eigenvalues (ascending) and eigenvectors of the symmetric `a` (float64): scipy's divide and conquer (torch's is ~10x slower on this CPU)"
    import scipy.linalg
    lam,q = scipy.linalg.eigh(((a + a.T)/2).double().numpy(), driver='evd', check_finite=False)
    return torch.from_numpy(lam),torch.from_numpy(q)

TYPES = ['q_proj', 'k_proj', 'v_proj', 'o_proj', 'gate_proj', 'up_proj', 'down_proj']
def lname(i, t): return f"model.layers.{i}.{'mlp' if t in ('gate_proj', 'up_proj', 'down_proj') else 'self_attn'}.{t}"

def uniform_rank(m, n, cut): return max(1, round(((1-cut)*m*n - m)/(m+n)))   # the nearest rank to a cut of `m·n` (`param_ratio` takes the rank below)

class Lab:
    "SmolLM2 with its calibration and held-out windows (`llm.data`), its decoder Linears' weights, and perplexity with some of them replaced"
    def __init__(self, n_calib=16, n_eval=16, seq=256, bs=8):
        torch.manual_seed(0)
        self.model,self.tok = llm.load()
        self.calib,self.test = llm.data(self.tok, seq, n_calib, n_eval, bs)
        self.L = len(self.model.model.layers)
        self.orig = {lname(i, t):self.model.get_submodule(lname(i, t)) for i in range(self.L) for t in TYPES}
        self.W = {n:l.weight.detach().double() for n,l in self.orig.items()}

    # ---- evaluation ------------------------------------------------------------------------------------------------
    def restore(self):
        "Every decoder Linear back to the original"
        for n,l in self.orig.items():
            cur = self.model.get_submodule(n)
            if cur is not l: swap_module(self.model, cur, l)

    def apply(self, fits:dict):
        "Put the pairs of `fits` ({name: (a, b, bias)}) in the model, the other layers original"
        self.restore()
        for n,f in fits.items():
            old = self.orig[n]
            swap_module(self.model, old, module(old, f))

    def nll(self, fits=None):
        "`llm.nll` of the held-out windows with the pairs of `fits` in the model"
        if fits is not None: self.apply(fits)
        r = llm.nll(self.model, self.test)
        self.restore()
        return r

    def ppl(self, fits=None): return math.exp(float(self.nll(fits).mean()))

    # ---- statistics ------------------------------------------------------------------------------------------------
    @torch.no_grad()
    def grams(self, batches=None):
        "`{name: (C, mu, N)}` of each Linear's inputs on the original model (centred covariance, mean, rows), float64"
        batches = batches or self.calib
        acc,hs = {},[]
        def hook(name):
            def f(m, args, out):
                x = args[0].detach().reshape(-1, args[0].shape[-1]).double()
                s = acc.setdefault(name, [0, 0, 0])
                s[0] = s[0] + x.T @ x; s[1] = s[1] + x.sum(0); s[2] += len(x)
            return f
        for n,l in self.orig.items(): hs.append(l.register_forward_hook(hook(n)))
        try:
            for b in batches: self.model(**b)
        finally:
            for h in hs: h.remove()
        res = {}
        for n,(g,s,N) in acc.items():
            mu = s/N; res[n] = (g/N - torch.outer(mu, mu),mu,N)
        return res

def module(old, f):
    "The pair a fit `(a, b, bias)` stands for, in place of `old`"
    a,b,bias = f
    new = low_rank_linear(a.float(), b.float(), old)
    with torch.no_grad(): new[1].bias.copy_(bias.float())
    return new

# ---- closed forms on statistics ----------------------------------------------------------------------------------
def out_pca(w, c):
    "Eigenvalues (descending) and eigenvectors (`m` x min(m, n)) of the output covariance `W C Wᵀ`, from its smaller side"
    m,n = w.shape
    if m <= n:
        lam,u = eigh(w @ c @ w.T)
        return lam.flip(0).clamp_min(0),u.flip(1)
    mu,q = eigh(c)
    z = w @ (q*mu.clamp_min(0).sqrt())   # W C^½ (times an orthogonal matrix)
    lam,v = eigh(z.T @ z)
    lam,v = lam.flip(0).clamp_min(0),v.flip(1)
    u = (z @ v)/lam.sqrt().clamp_min(1e-300)
    return lam,u

def whiten_fit(w, c, mu, k):
    "Independent whitening (= PCA of the outputs): `W' = U_k U_kᵀ W`, bias keeping the mean output"
    _,u = out_pca(w, c)
    b = u[:, :k]; a = b.T @ w
    return a,b,(w @ mu - b @ (a @ mu))

def where(lab, cuts=(0.4, 0.2), log=print)->dict:
    """Where the loss comes from: independent whitening (uniform ranks at each cut) on every layer, then at the first cut
    on one layer type, one third of the depth, attention or MLP alone (the rest left dense): `{subset @ cut: perplexity}`"""
    t0 = time.time()
    res = {'original': lab.ppl()}
    G = lab.grams()
    for i,cut in enumerate(cuts):
        fits = {n:whiten_fit(w, *G[n][:2], uniform_rank(*w.shape, cut)) for n,w in lab.W.items()}
        subsets = {'all': list(fits)}
        if i == 0:
            subsets.update({t:[n for n in fits if n.endswith(t)] for t in TYPES})
            subsets.update({f'blocks {a}-{a+9}':[n for n in fits if a <= int(n.split('.')[2]) < a+10] for a in (0, 10, 20)})
            subsets.update(attention=[n for n in fits if '.self_attn.' in n], mlp=[n for n in fits if '.mlp.' in n])
        for s,names in subsets.items():
            res[f'{s} @ {cut}'] = p = lab.ppl({n:fits[n] for n in names})
            log(f"{s} @ {cut}: {p:.2f} ({p/res['original']:.2f}x), {time.time()-t0:.0f} s")
    return res

def by_type(lab, G, cut, attn:dict)->tuple[float, float]:
    """Uniform cuts per layer type under the total of `cut`: attention types at the cuts of `attn` (`None`: kept whole), the MLP
    at the largest uniform cut that fits; `(MLP's cut, perplexity)` with independent whitening"""
    shape = {t:tuple(lab.W[lname(0, t)].shape) for t in TYPES}
    total = sum(m*n for m,n in shape.values())
    ks = {t:(None if c is None else uniform_rank(*shape[t], c)) for t,c in attn.items()}
    spent = sum(shape[t][0]*shape[t][1] if k is None else factored_params(*shape[t], k) for t,k in ks.items())
    mlp = ('gate_proj', 'up_proj', 'down_proj')
    mc = next(c/1000 for c in range(1000) if spent + sum(factored_params(*shape[t], uniform_rank(*shape[t], c/1000)) for t in mlp) <= (1-cut)*total)
    ks.update({t:uniform_rank(*shape[t], mc) for t in mlp})
    fits = {n:whiten_fit(w, *G[n][:2], ks[n.rsplit('.', 1)[1]]) for n,w in lab.W.items() if ks[n.rsplit('.', 1)[1]] is not None}
    return mc,lab.ppl(fits)

def walked_check(cut=0.2, log=print)->dict:
    """The `causal_lm` recipe walked at even ranks (`param_ratio`) and with a budget's allocation (kept by its check):
    each model's KL divergence from the original per token, on the calibration data the walk fitted and on held-out text"""
    from fasterai.misc.all import FC_Decomposer, output_distortion
    torch.manual_seed(0)
    model,tok = llm.load()
    calib,test = llm.data(tok, 256, 16, 32)
    res = {}
    for name,opts in (('even', dict(param_ratio=1-cut)), ('allocation', dict(budget=1-cut))):
        fc = FC_Decomposer(recipe='causal_lm', layers=['model.layers.*'], progress=False, **opts)
        new = fc.decompose(model, calib)
        res[name] = dict(calibration=output_distortion(new, model, calib), held_out=output_distortion(new, model, [dict(input_ids=x) for x in test.split(8)]),
                         perplexity=llm.perplexity(new, test), check=fc.check)
        log(f"{name} at {cut:.0%}: {res[name]}")
    return res

def fewer_passes(what='first', k=1, n_calib=16, cut=0.2, quick=False)->dict:
    """The `causal_lm` recipe with fewer passes over the data: its curvature (`what='curvature'`: the statistics still
    from every batch) or its whole first pass (`'first'`: the curvature, the spectra, the allocation and its check) on
    the first `k` calibration batches, the walk on all of them: `llm.one`'s result (perplexity, seconds); `quick`: on `llm.QUICK`'s
    layers and windows (what the tests run)"""
    import fasterai.misc.fc_decomposer as fd
    cal,chk,js = fd.FC_Decomposer._calibrate,fd.FC_Decomposer._checked,fd.jacobian_sensitivity
    def first_k(f):   # `f` with `n_batches` set to `k` while it runs
        def g(self, *a, **kw):
            nb,self.n_batches = self.n_batches,k
            try: return f(self, *a, **kw)
            finally: self.n_batches = nb
        return g
    def checked(self, orig, res, rows, data, build, walk=None, **kw):   # the check on `k` batches, the walk (which comes before it) on all
        nb = self.n_batches
        def walk_all(res, rows):
            self.n_batches = nb
            try: return walk(res, rows)
            finally: self.n_batches = k
        return first_k(chk)(self, orig, res, rows, data, build, walk_all if walk else None, **kw)
    def curvature(model, layers, data, n_batches=None, **kw):   # the gradients of `k` batches (`llm.data`'s, dicts); the rest only run, for the statistics
        res = js(model, layers, data[:k], **kw)
        with torch.no_grad():
            for b in data[k:]: model.eval()(**b)
        return res
    try:
        if what == 'first': fd.FC_Decomposer._calibrate,fd.FC_Decomposer._checked = first_k(cal),checked
        else: fd.jacobian_sensitivity = curvature
        return llm.one('causal_lm', cut, dict(llm.QUICK if quick else llm.FULL, n_calib=n_calib))
    finally: fd.FC_Decomposer._calibrate,fd.FC_Decomposer._checked,fd.jacobian_sensitivity = cal,chk,js

if __name__ == '__main__':
    if '--check' in sys.argv: walked_check(); sys.exit()
    if '--fewer-passes' in sys.argv:
        what,k,n = sys.argv[sys.argv.index('--fewer-passes')+1:][:3]
        r = fewer_passes(what, int(k), int(n))
        print(f"{what} on {k} batch(es) of {n} x 256 tokens' calibration: perplexity {r['perplexity']:.2f}, {r['seconds']:.0f} s"); sys.exit()
    torch.set_num_threads(1)
    lab = Lab(n_calib=16, n_eval=16)
    res = where(lab)
    G = lab.grams()
    for cut,attn in ((0.4, dict(q_proj=0.6, k_proj=0.6, v_proj=None, o_proj=0.6)), (0.4, dict(q_proj=0.7, k_proj=0.7, v_proj=0.1, o_proj=0.6)),
                     (0.2, dict(q_proj=0.4, k_proj=0.4, v_proj=None, o_proj=0.4))):
        mc,p = by_type(lab, G, cut, attn)
        res[f"{cut}: {attn}, MLP {mc}"] = p
        print(f"{cut}: {attn}, MLP cut {mc:.3f}: {p:.2f} ({p/res['original']:.2f}x)")
    pathlib.Path('llm_where.json').write_text(json.dumps(res, indent=1))
