"""Sinkhorn divergences (``SamplesLoss``, ``samples_loss_batch``) against GeomLoss's
tensorized ``SamplesLoss`` and POT, on every backend."""
from __future__ import annotations

import numpy as np
import pytest

import ot_batch

torch = pytest.importorskip("torch")


def _clouds(B=3, N=30, M=40, D=2, seed=0):
    g = np.random.default_rng(seed)
    x, y = g.random((B, N, D)), g.random((B, M, D)) * 0.8 + 0.3
    a, b = g.random((B, N)) + 0.1, g.random((B, M)) + 0.1
    return x, y, a / a.sum(1, keepdims=True), b / b.sum(1, keepdims=True)


def _rel(u, v):
    u, v = np.asarray(u, dtype=float), np.asarray(v, dtype=float)
    return float(np.abs(u - v).max() / np.abs(v).max())


OPTIONS = [dict(), dict(debias=False), dict(p=1), dict(blur=0.01, scaling=0.9),
           dict(reach=0.3), dict(reach=0.3, debias=False)]


@pytest.mark.parametrize("kw", OPTIONS, ids=lambda k: "-".join(f"{a}={b}" for a, b in k.items())
                         or "default")
def test_values_and_gradients_match_geomloss(kw):
    geomloss = pytest.importorskip("geomloss")
    x, y, a, b = (torch.tensor(t) for t in _clouds())
    xs, as_ = x.clone().requires_grad_(), a.clone().requires_grad_()
    xg, ag = x.clone().requires_grad_(), a.clone().requires_grad_()
    ours = ot_batch.SamplesLoss(**kw)(as_, xs, b, y)
    ref = geomloss.SamplesLoss("sinkhorn", backend="tensorized", **kw)(ag, xg, b, y)
    assert _rel(ours.detach(), ref.detach()) < 1e-10
    gx, ga = torch.autograd.grad(ours.sum(), (xs, as_))
    rx, ra = torch.autograd.grad(ref.sum(), (xg, ag))
    assert _rel(ga, ra) < 1e-8
    assert _rel(gx, rx) < 1e-8


def test_converged_gradient_is_the_dual_formulas():
    """With reach=, grad="converged" weights the exponentiated potentials by rho + eps in the
    backward pass (Sejourne et al. 2019, Prop. 12), as GeomLoss means to but never does: on a
    converged loop (slow annealing) it sits closer to finite differences of the loss than
    GeomLoss's (and our default) rho + eps / 2."""
    geomloss = pytest.importorskip("geomloss")
    x, y, _, _ = (torch.tensor(t[:1]) for t in _clouds(N=20, M=25))
    kw = dict(reach=0.3, scaling=0.998, blur=0.1)
    xs, xg = x.clone().requires_grad_(), x.clone().requires_grad_()
    gx, = torch.autograd.grad(ot_batch.SamplesLoss(grad="converged", **kw)(xs, y).sum(), xs)
    rx, = torch.autograd.grad(
        geomloss.SamplesLoss("sinkhorn", backend="tensorized", **kw)(xg, y).sum(), xg)
    h, i, k = 1e-6, 3, 1
    xp, xm = x.clone(), x.clone()
    xp[0, i, k] += h
    xm[0, i, k] -= h
    loss = ot_batch.SamplesLoss(**kw)
    fd = float(loss(xp, y) - loss(xm, y)) / (2 * h)
    assert abs(float(gx[0, i, k]) - fd) < 0.02 * abs(fd)
    assert abs(float(gx[0, i, k]) - fd) < abs(float(rx[0, i, k]) - fd)


def test_issue_case_gradients_match_geomloss():
    """The reported case: 60 x 45 points in 3-D, weights not uniform, float64, blur=0.3,
    reach=0.5, scaling=0.7: directional derivatives equal GeomLoss's (they were 15% off, the
    ratio (rho + eps) / (rho + eps / 2) of the two weights)."""
    geomloss = pytest.importorskip("geomloss")
    x, y, a, b = (torch.tensor(t[0]) for t in _clouds(B=1, N=60, M=45, D=3, seed=4))
    direction = torch.tensor(np.random.default_rng(5).normal(size=(60, 3)))
    for debias in (False, True):
        kw = dict(p=2, blur=0.3, reach=0.5, scaling=0.7, debias=debias)
        xs, xg = x.clone().requires_grad_(), x.clone().requires_grad_()
        gx, = torch.autograd.grad(ot_batch.SamplesLoss(**kw)(a, xs, b, y), xs)
        rx, = torch.autograd.grad(
            geomloss.SamplesLoss("sinkhorn", backend="tensorized", **kw)(a, xg, b, y), xg)
        ours, ref = float((gx * direction).sum()), float((rx * direction).sum())
        assert abs(ours - ref) < 1e-6 * abs(ref)


GRID = [dict(p=p, reach=reach, debias=debias, weights=weights)
        for p in (1, 2) for reach in (None, 0.5) for debias in (True, False)
        for weights in (True, False)]


@pytest.mark.parametrize("case", GRID, ids=lambda c: "-".join(f"{k}={v}" for k, v in c.items()))
def test_grid_values_and_gradients_vs_geomloss(case):
    """Batched (B, N, D) inputs, every combination of p, reach, debias and weights: values
    and gradients in x, y and the weights equal GeomLoss's tensorized backend."""
    geomloss = pytest.importorskip("geomloss")
    case = dict(case)
    weights = case.pop("weights")
    x, y, a, b = (torch.tensor(t) for t in _clouds(B=2, N=12, M=9, D=3, seed=7))
    kw = dict(case, blur=0.2, scaling=0.6, diameter=2.0)

    def run(loss):
        xs, ys = x.clone().requires_grad_(), y.clone().requires_grad_()
        if weights:
            as_ = a.clone().requires_grad_()
            val = loss(as_, xs, b, ys)
            grads = torch.autograd.grad(val.sum(), (xs, ys, as_))
        else:
            val = loss(xs, ys)
            grads = torch.autograd.grad(val.sum(), (xs, ys))
        return val.detach(), grads

    v, g = run(ot_batch.SamplesLoss(**kw))
    rv, rg = run(geomloss.SamplesLoss("sinkhorn", backend="tensorized", **kw))
    assert _rel(v, rv) < 1e-10
    for ours, ref in zip(g, rg):
        assert _rel(ours, ref) < 1e-8
    F, G = ot_batch.SamplesLoss(potentials=True, **kw)(x, y)
    RF, RG = geomloss.SamplesLoss("sinkhorn", backend="tensorized", potentials=True, **kw)(x, y)
    assert _rel(F, RF.reshape(F.shape)) < 1e-10 and _rel(G, RG.reshape(G.shape)) < 1e-10


def test_single_cloud_inputs_and_potentials():
    geomloss = pytest.importorskip("geomloss")
    x, y, _, _ = (torch.tensor(t[0]) for t in _clouds())
    ours = ot_batch.SamplesLoss()(x, y)
    assert ours.shape == ()
    ref = geomloss.SamplesLoss("sinkhorn", backend="tensorized")(x, y)
    assert _rel(ours, ref) < 1e-10
    F, G = ot_batch.SamplesLoss(potentials=True)(x, y)
    RF, RG = geomloss.SamplesLoss("sinkhorn", backend="tensorized", potentials=True)(x, y)
    assert F.shape == (30,) and G.shape == (40,)
    assert _rel(F, RF.reshape(-1)) < 1e-10 and _rel(G, RG.reshape(-1)) < 1e-10


def test_entropic_ot_matches_pot():
    """debias=False with slow annealing converges to entropic OT with the KL(T | a b^T)
    regulariser, as POT solves it (cost |x - y|^2 / 2, eps = blur^2)."""
    ot = pytest.importorskip("ot")
    x, y, a, b = _clouds(B=2, N=20, M=25)
    eps = 0.05
    ours = ot_batch.samples_loss_batch(x, y, a, b, blur=eps ** 0.5, scaling=0.998,
                                              debias=False)
    ref = [ot.solve(ot.dist(x[i], y[i]) / 2, a[i], b[i], reg=eps, reg_type="KL",
                    max_iter=100000, tol=1e-13).value for i in range(2)]
    assert _rel(ours, ref) < 1e-5


def test_every_backend_loop_vs_batch(bk):
    x, y, a, b = _clouds()
    batch = bk.to_numpy(ot_batch.samples_loss_batch(
        bk.asarray(x), bk.asarray(y), bk.asarray(a), bk.asarray(b), reach=0.5,
        diameter=np.sqrt(2)))
    for i in range(3):
        alone = bk.to_numpy(ot_batch.samples_loss_batch(
            bk.asarray(x[i:i + 1]), bk.asarray(y[i:i + 1]), bk.asarray(a[i:i + 1]),
            bk.asarray(b[i:i + 1]), reach=0.5, diameter=np.sqrt(2)))
        assert _rel(alone, batch[i:i + 1]) < 1e-10
    same = bk.to_numpy(ot_batch.samples_loss_batch(bk.asarray(x), bk.asarray(x)))
    assert np.abs(same).max() < 1e-10  # debiased: S(a, a) = 0


def test_bad_arguments():
    x = np.random.default_rng(0).random((2, 5, 2))
    with pytest.raises(ValueError, match="p must be 1 or 2"):
        ot_batch.samples_loss_batch(x, x, p=3)
    with pytest.raises(ValueError, match="scaling"):
        ot_batch.samples_loss_batch(x, x, scaling=1.5)
    with pytest.raises(ValueError, match="reach_x"):
        ot_batch.samples_loss_batch(x, x, reach=-1.0)
    with pytest.raises(ValueError, match="agree"):
        ot_batch.samples_loss_batch(x, x[:1])
    with pytest.raises(ValueError, match="loss"):
        ot_batch.SamplesLoss("hausdorff")  # "energy" and the kernels are offered
    with pytest.raises(ValueError, match="backend"):
        ot_batch.SamplesLoss(backend="keops")
    with pytest.raises(TypeError, match=r"\(x, y\)"):
        ot_batch.SamplesLoss()(torch.tensor(x))


@pytest.mark.parametrize("reach", [None, 0.5])
def test_tol_converges_each_problem(bk, reach):
    """tol= continues at the final temperature until each problem converges: debias=False
    then gives entropic OT as POT solves it, without a slow schedule."""
    ot = pytest.importorskip("ot")
    x, y, a, b = _clouds(B=2, N=20, M=25)
    x[1] *= 3.0  # a harder problem, which needs more iterations
    eps = 0.05
    val, log = ot_batch.samples_loss_batch(
        bk.asarray(x), bk.asarray(y), bk.asarray(a), bk.asarray(b), blur=eps ** 0.5,
        debias=False, reach=reach, cost="sqeuclidean", tol=1e-9, max_iter=5000, log=True)
    assert bk.to_numpy(log["converged"]).all()
    n_iter = bk.to_numpy(log["n_iter"])
    assert n_iter[1] > n_iter[0]
    if reach is None:
        ref = [ot.solve(ot.dist(x[i], y[i]), a[i], b[i], reg=eps, reg_type="KL",
                        max_iter=100000, tol=1e-13).value for i in range(2)]
        assert _rel(bk.to_numpy(val), ref) < 1e-7


def test_grad_option_checked_and_converged_differs_only_when_unbalanced():
    x, y, a, b = (torch.tensor(t) for t in _clouds(B=1, N=8, M=7))
    with pytest.raises(ValueError, match="grad must be"):
        ot_batch.samples_loss_batch(x, y, grad="implicit")
    grads = {}
    for reach in (None, 0.4):
        for grad in ("envelope", "converged"):
            xs = x.clone().requires_grad_()
            v = ot_batch.samples_loss_batch(xs, y, a, b, reach=reach, grad=grad, blur=0.3)
            grads[reach, grad] = torch.autograd.grad(v.sum(), xs)[0]
    assert torch.allclose(grads[None, "envelope"], grads[None, "converged"])
    assert not torch.allclose(grads[0.4, "envelope"], grads[0.4, "converged"])


@pytest.mark.parametrize("kw", [dict(), dict(reach=0.5, debias=False)], ids=["bal", "unbal"])
def test_callable_cost_vs_geomloss(kw):
    """cost= a callable (GeomLoss's tensorized form): values and gradients equal GeomLoss's."""
    geomloss = pytest.importorskip("geomloss")

    def cost(X, Y):  # |x - y|^2 / 2 scaled and shifted: any differentiable cost
        return 0.7 * ((X[:, :, None, :] - Y[:, None, :, :]) ** 2).sum(-1) + 0.1

    x, y, a, b = (torch.tensor(t) for t in _clouds(B=2, N=10, M=8, D=2, seed=9))
    opts = dict(kw, blur=0.2, scaling=0.6, diameter=2.0, cost=cost)
    xs, xg = x.clone().requires_grad_(), x.clone().requires_grad_()
    ours = ot_batch.SamplesLoss(**opts)(a, xs, b, y)
    ref = geomloss.SamplesLoss("sinkhorn", backend="tensorized", **opts)(a, xg, b, y)
    assert _rel(ours.detach(), ref.detach()) < 1e-10
    gx, = torch.autograd.grad(ours.sum(), xs)
    rx, = torch.autograd.grad(ref.sum(), xg)
    assert _rel(gx, rx) < 1e-8
    with pytest.raises(ValueError, match="cost must be"):
        ot_batch.samples_loss_batch(x, y, cost="Exp(-SqDist(X,Y))")


KERNEL_CASES = [dict(loss=loss, weights=w, potentials=pot)
                for loss in ("energy", "gaussian", "laplacian") for w in (True, False)
                for pot in (False, True)]


@pytest.mark.parametrize("case", KERNEL_CASES,
                         ids=lambda c: "-".join(f"{k}={v}" for k, v in c.items()))
def test_kernel_losses_vs_geomloss(case):
    """GeomLoss's kernel norms on batched inputs: values (or potentials) and gradients in x,
    y and a equal GeomLoss's tensorized backend."""
    geomloss = pytest.importorskip("geomloss")
    x, y, a, b = (torch.tensor(t) for t in _clouds(B=2, N=11, M=8, D=3, seed=3))
    kw = dict(loss=case["loss"], blur=0.4, potentials=case["potentials"])

    def run(loss):
        xs, ys, as_ = (t.clone().requires_grad_() for t in (x, y, a))
        out = loss(as_, xs, b, ys) if case["weights"] else loss(xs, ys)
        total = sum(o.sum() for o in out) if case["potentials"] else out.sum()
        wrt = (xs, ys, as_) if case["weights"] else (xs, ys)
        grads = torch.autograd.grad(total, wrt, allow_unused=True)
        vals = tuple(o.detach() for o in out) if case["potentials"] else (out.detach(),)
        return vals, grads

    got, g = run(ot_batch.SamplesLoss(**kw))
    ref, rg = run(geomloss.SamplesLoss(backend="tensorized", **kw))
    for ours, theirs in zip(got, ref):
        assert _rel(ours, theirs.reshape(ours.shape)) < 1e-10
    for ours, theirs in zip(g, rg):
        assert _rel(ours, theirs) < 1e-8


def test_kernel_losses_every_backend(bk):
    x, y, a, b = _clouds(B=2, N=6, M=5)
    ref = ot_batch.samples_loss_batch(torch.tensor(x), torch.tensor(y), torch.tensor(a),
                                      torch.tensor(b), loss="gaussian", blur=0.5)
    got = ot_batch.samples_loss_batch(bk.asarray(x), bk.asarray(y), bk.asarray(a),
                                      bk.asarray(b), loss="gaussian", blur=0.5)
    np.testing.assert_allclose(bk.to_numpy(got), ref.numpy(), rtol=1e-12)
    with pytest.raises(ValueError, match="loss must be"):
        ot_batch.samples_loss_batch(bk.asarray(x), bk.asarray(y), loss="hausdorff")


@pytest.mark.parametrize("p, formula", [(1, "Norm2(X-Y)"), (2, "(SqDist(X,Y) / IntCst(2))"),
                                        (2, "SqDist(X,Y)")])
def test_keops_formula_strings(p, formula):
    """GeomLoss's cost strings (KeOps formulas) name the costs computed densely: the same
    values and gradients as the equivalent callable cost, which GeomLoss's tensorized backend
    checks above."""
    x, y, a, b = (torch.tensor(t) for t in _clouds(B=2, N=9, M=7, D=2, seed=11))

    def callable_cost(X, Y):
        sq = ((X[:, :, None, :] - Y[:, None, :, :]) ** 2).sum(-1)
        if formula == "Norm2(X-Y)":
            return sq.clamp_min(1e-8).sqrt()
        return sq / 2 if "IntCst" in formula else sq

    out = []
    for cost in (formula, callable_cost):
        xs = x.clone().requires_grad_()
        v = ot_batch.samples_loss_batch(xs, y, a, b, p=p, cost=cost, blur=0.2, reach=0.6)
        out.append((v.detach(), torch.autograd.grad(v.sum(), xs)[0]))
    assert _rel(out[0][0], out[1][0]) < 1e-10 and _rel(out[0][1], out[1][1]) < 1e-8
