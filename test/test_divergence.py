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
    if "reach" not in kw:
        assert _rel(gx, rx) < 1e-8


def test_unbalanced_gradient_is_the_dual_formulas():
    """With reach=, GeomLoss means the exponentiated potentials to be weighted by rho + eps in
    the backward pass (Sejourne et al. 2019, Prop. 12) but its nn.Module ``backward`` is never
    called; ours is, and sits closer to finite differences of the loss."""
    geomloss = pytest.importorskip("geomloss")
    x, y, _, _ = (torch.tensor(t[:1]) for t in _clouds(N=20, M=25))
    kw = dict(reach=0.3, scaling=0.998, blur=0.1)
    xs, xg = x.clone().requires_grad_(), x.clone().requires_grad_()
    gx, = torch.autograd.grad(ot_batch.SamplesLoss(**kw)(xs, y).sum(), xs)
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
        ot_batch.SamplesLoss("energy")
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
