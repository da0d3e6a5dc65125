"""Batched Gromov-Wasserstein against POT (ot.batch and ot.gromov), on every backend."""
from __future__ import annotations

import warnings

import numpy as np
import ot
import pytest
import torch
from conftest import random_weights

import ot_batch

REG = 1.0
SOLVE = dict(reg=REG, max_iter=100, max_iter_inner=50, tol=1e-3)


def _clouds(rng, batch, n, m=None, d=2):
    m = n if m is None else m
    X = rng.normal(size=(batch, n, d))
    Y = np.concatenate([X, rng.normal(size=(batch, max(m - n, 0), d))], axis=1)[:, :m]
    Y = Y + 0.1 * rng.normal(size=Y.shape)
    return ot.batch.dist_batch(X, X), ot.batch.dist_batch(Y, Y)


def _gw(Ca, Cb, T):
    """Reference objective: POT's single-problem gwloss with the plan's own marginals."""
    out = []
    for i in range(Ca.shape[0]):
        constC, hC1, hC2 = ot.gromov.init_matrix(Ca[i], Cb[i], T[i].sum(1), T[i].sum(0),
                                                 "square_loss")
        out.append(ot.gromov.gwloss(constC, hC1, hC2, T[i]))
    return np.array(out)


def _pot_batch(Ca, Cb, **kw):
    res = ot.batch.solve_gromov_batch(torch.tensor(Ca), torch.tensor(Cb), **{**SOLVE, **kw})
    return res.plan.numpy()


# ------------------------------------------------------------------ tensors and losses


@pytest.mark.parametrize("features", [False, True])
def test_tensor_batch_matches_pot(rng, features):
    Ca, Cb = _clouds(rng, 3, 5, 4)
    if features:
        Ca = np.stack([Ca, Ca ** 0.5], axis=-1)
        Cb = np.stack([Cb, Cb ** 0.5], axis=-1)
    a, b = random_weights(rng, 3, 5), random_weights(rng, 3, 4)
    ours = ot_batch.tensor_batch(a, b, Ca, Cb)
    ref = ot.batch.tensor_batch(a, b, Ca, Cb)
    for key in ("constC", "hCa", "hCb", "fCa", "fCb"):
        np.testing.assert_allclose(ours[key], ref[key], rtol=1e-12, atol=1e-12, err_msg=key)


@pytest.mark.parametrize("logits", [False, True])
def test_kl_edge_features_match_pot(rng, logits):
    Ca = rng.random((2, 4, 4, 3)) + 0.1
    Cb = rng.random((2, 5, 5, 3)) + 0.1
    Ca, Cb = Ca / Ca.sum(-1, keepdims=True), Cb / Cb.sum(-1, keepdims=True)
    if logits:
        Ca = np.log(Ca)
    T = rng.random((2, 4, 5))
    T /= T.sum((1, 2), keepdims=True)
    a, b = np.full((2, 4), 1 / 4), np.full((2, 5), 1 / 5)
    ours = ot_batch.loss_quadratic_batch(None, None, Ca, Cb, T, loss="kl", logits=logits,
                                         recompute_const=True)
    ref = ot.batch.loss_quadratic_batch(a, b, Ca, Cb, T, loss="kl", logits=logits,
                                        recompute_const=True)
    np.testing.assert_allclose(ours, ref, rtol=1e-10)


def test_kl_plain_matrices_is_pots_kl_loss(rng):
    Ca, Cb = _clouds(rng, 3, 5, 6)
    Ca, Cb = Ca + 0.1, Cb + 0.1
    T = rng.random((3, 5, 6))
    T /= T.sum((1, 2), keepdims=True)
    ours = ot_batch.loss_quadratic_batch(None, None, Ca, Cb, T, loss="kl_loss",
                                         recompute_const=True)
    ref = []
    for i in range(3):
        constC, h1, h2 = ot.gromov.init_matrix(Ca[i], Cb[i], T[i].sum(1), T[i].sum(0),
                                               "kl_loss")
        ref.append(ot.gromov.gwloss(constC, h1, h2, T[i]))
    np.testing.assert_allclose(ours, ref, rtol=1e-9)


def test_loss_quadratic_batch_options_match_pot(rng):
    Ca, Cb = _clouds(rng, 4, 5, 6)
    a, b = random_weights(rng, 4, 5), random_weights(rng, 4, 6)
    T = rng.random((4, 5, 6)) / 30
    M = rng.random((4, 5, 6))
    for kw in (dict(), dict(recompute_const=True), dict(M=M, alpha=0.3),
               dict(M=M, alpha=np.array([0.1, 0.2, 0.7, 1.0])),
               dict(unbalanced=2.0, unbalanced_type="kl"),
               dict(unbalanced=0.5, unbalanced_type="l2", M=M, alpha=0.5)):
        ours, log = ot_batch.loss_quadratic_batch(a, b, Ca, Cb, T, log=True, **kw)
        ref, rlog = ot.batch.loss_quadratic_batch(a, b, Ca, Cb, T, log=True, **kw)
        np.testing.assert_allclose(ours, ref, rtol=1e-10, err_msg=str(kw.keys()))
        for key in ("value_quadratic", "value_linear", "value_unbalanced"):
            if rlog[key] is not None:
                np.testing.assert_allclose(log[key], rlog[key], rtol=1e-10)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        np.testing.assert_allclose(ot_batch.loss_quadratic_samples_batch(a, b, Ca, Cb, T),
                                   ot.batch.loss_quadratic_batch(a, b, Ca, Cb, T), rtol=1e-10)


# ------------------------------------------------------------------ the solver


def test_gromov_every_backend_against_pot_batch(bk, rng):
    Ca, Cb = _clouds(rng, 12, 10)
    res = ot_batch.solve_gromov_batch(bk.asarray(Ca), bk.asarray(Cb), **SOLVE)
    plan = bk.to_numpy(res.plan)
    np.testing.assert_allclose(plan.sum(2), 0.1, atol=1e-6)
    np.testing.assert_allclose(plan.sum(1), 0.1, atol=1e-6)
    ours = bk.to_numpy(res.value_quad)
    np.testing.assert_allclose(ours, _gw(Ca, Cb, plan), rtol=1e-9)
    pot = _gw(Ca, Cb, _pot_batch(Ca, Cb))
    assert np.all(ours <= pot * (1 + 1e-2)), np.max(ours / pot)
    np.testing.assert_allclose(bk.to_numpy(res.value), ours, rtol=1e-12)
    for key in ("n_iter", "converged", "n_iter_inner", "err", "init"):
        assert bk.to_numpy(res.log[key]).shape == (12,)
    assert bk.to_numpy(res.log["converged"]).all()
    assert res.potentials[0].shape == (12, 10) and res.potentials[1].shape == (12, 10)


def test_loop_vs_batch(bk, rng):
    Ca, Cb = _clouds(rng, 6, 7, 9)
    a, b = random_weights(rng, 6, 7), random_weights(rng, 6, 9)
    kw = dict(reg=REG, tol=1e-6, max_iter=200, max_iter_inner=200, tol_inner=1e-9)
    res = ot_batch.solve_gromov_batch(*(bk.asarray(x) for x in (Ca, Cb)), a=bk.asarray(a),
                                      b=bk.asarray(b), **kw)
    for i in range(6):
        one = ot_batch.solve_gromov_batch(Ca[i:i + 1], Cb[i:i + 1], a=a[i:i + 1],
                                          b=b[i:i + 1], **kw)
        np.testing.assert_allclose(bk.to_numpy(res.plan)[i], one.plan[0], atol=1e-6)
        np.testing.assert_allclose(bk.to_numpy(res.value)[i], one.value[0], rtol=1e-6)
        assert bk.to_numpy(res.log["n_iter"])[i] == one.log["n_iter"][0]


def test_fused_gw_against_pot_batch(bk, rng):
    Ca, Cb = _clouds(rng, 8, 9)
    M = rng.random((8, 9, 9))
    res = ot_batch.solve_gromov_batch(bk.asarray(Ca), bk.asarray(Cb), M=bk.asarray(M),
                                      alpha=0.5, **SOLVE)
    plan = bk.to_numpy(res.plan)
    ref = ot.batch.solve_gromov_batch(torch.tensor(Ca), torch.tensor(Cb), M=torch.tensor(M),
                                      alpha=0.5, **SOLVE)
    ours = bk.to_numpy(res.value)
    u = np.full((8, 9), 1 / 9)
    pot = ot.batch.loss_quadratic_batch(u, u, Ca, Cb, ref.plan.numpy(), M=M, alpha=0.5,
                                        recompute_const=True)
    assert np.all(ours <= pot * (1 + 1e-2))
    np.testing.assert_allclose(bk.to_numpy(res.value_linear), 0.5 * (M * plan).sum((1, 2)),
                               rtol=1e-9)
    np.testing.assert_allclose(bk.to_numpy(res.value_quad), 0.5 * _gw(Ca, Cb, plan), rtol=1e-9)
    np.testing.assert_allclose(plan.sum(2), 1 / 9, atol=1e-6)


def test_fused_gw_alpha_per_problem_and_default(rng):
    Ca, Cb = _clouds(rng, 3, 6)
    M = rng.random((3, 6, 6))
    alphas = np.array([0.0, 0.5, 1.0])
    res = ot_batch.solve_gromov_batch(Ca, Cb, M=M, alpha=alphas, **SOLVE)
    for i, al in enumerate(alphas):
        one = ot_batch.solve_gromov_batch(Ca[i:i + 1], Cb[i:i + 1], M=M[i:i + 1],
                                          alpha=float(al), **SOLVE)
        np.testing.assert_allclose(res.value[i], one.value[0], rtol=1e-8)
    # alpha=0 is linear OT: the plan is an optimal linear plan (value = exact OT cost)
    exact = ot.emd2(np.full(6, 1 / 6), np.full(6, 1 / 6), M[0])
    assert res.value[0] <= exact * (1 + 1e-3)
    default = ot_batch.solve_gromov_batch(Ca, Cb, M=M, **SOLVE)
    half = ot_batch.solve_gromov_batch(Ca, Cb, M=M, alpha=0.5, **SOLVE)
    np.testing.assert_allclose(default.value, half.value)


def test_kl_loss_solve(bk, rng):
    Ca, Cb = _clouds(rng, 5, 6)
    Ca, Cb = Ca + 0.5, Cb + 0.5
    res = ot_batch.solve_gromov_batch(bk.asarray(Ca), bk.asarray(Cb), loss="kl_loss", **SOLVE)
    plan = bk.to_numpy(res.plan)
    np.testing.assert_allclose(plan.sum(2), 1 / 6, atol=1e-6)
    start = ot_batch.loss_quadratic_batch(None, None, Ca, Cb, np.full((5, 6, 6), 1 / 36),
                                          loss="kl")
    ref = ot_batch.loss_quadratic_batch(None, None, Ca, Cb, plan, loss="kl",
                                        recompute_const=True)
    np.testing.assert_allclose(bk.to_numpy(res.value), ref, rtol=1e-8)
    assert np.all(ref < start)
    loop = np.array([ot.solve_gromov(Ca[i], Cb[i], loss="kl").value for i in range(5)])
    assert np.median(ref) <= np.median(loop) * (1 + 1e-2)


def test_kl_edge_features_solve_against_pot_batch(rng):
    Ca = rng.random((4, 5, 5, 3)) + 0.1
    Ca = Ca + Ca.transpose(0, 2, 1, 3)
    Ca /= Ca.sum(-1, keepdims=True)
    Cb = Ca + 0.01 * rng.random(Ca.shape)
    Cb = Cb + Cb.transpose(0, 2, 1, 3)
    Cb /= Cb.sum(-1, keepdims=True)
    res = ot_batch.solve_gromov_batch(Ca, Cb, loss="kl", logits=False, **SOLVE)
    ref = ot.batch.solve_gromov_batch(torch.tensor(Ca), torch.tensor(Cb), loss="kl",
                                      logits=False, **SOLVE)
    u = np.full((4, 5), 1 / 5)
    pot = ot.batch.loss_quadratic_batch(u, u, Ca, Cb, ref.plan.numpy(), loss="kl",
                                        logits=False, recompute_const=True)
    assert np.all(res.value <= pot + 1e-2 * np.abs(pot))


def test_asymmetric_against_pot_batch(rng):
    Ca, Cb = _clouds(rng, 6, 7)
    Ca = Ca + np.triu(rng.random((6, 7, 7)))
    Cb = Cb + np.triu(rng.random((6, 7, 7)))
    res = ot_batch.solve_gromov_batch(Ca, Cb, **SOLVE)  # detected as asymmetric
    pot = _gw(Ca, Cb, _pot_batch(Ca, Cb, symmetric=False))
    assert np.all(res.value <= pot * (1 + 1e-2))
    forced = ot_batch.solve_gromov_batch(Ca, Cb, symmetric=False, **SOLVE)
    np.testing.assert_allclose(forced.value, res.value)


def test_padding_invariance(bk, rng):
    sizes = [(5, 7), (8, 6), (4, 4)]
    Cas, Cbs, singles = [], [], []
    for n, m in sizes:
        Ca, Cb = _clouds(rng, 1, n, m)
        Cas.append(Ca[0]), Cbs.append(Cb[0])
        singles.append(ot_batch.solve_gromov_batch(Ca, Cb, **SOLVE))
    Ca, wa = ot_batch.pad_batch([bk.asarray(C) for C in Cas])
    Cb, wb = ot_batch.pad_batch([bk.asarray(C) for C in Cbs])
    assert tuple(Ca.shape) == (3, 8, 8)
    res = ot_batch.solve_gromov_batch(Ca, Cb, a=wa, b=wb, **SOLVE)
    plan = bk.to_numpy(res.plan)
    for i, (n, m) in enumerate(sizes):
        np.testing.assert_allclose(plan[i, :n, :m], singles[i].plan[0], atol=1e-7)
        assert np.all(plan[i, n:] == 0) and np.all(plan[i, :, m:] == 0)
        np.testing.assert_allclose(bk.to_numpy(res.value)[i], singles[i].value[0], rtol=1e-6)


def test_multi_start_and_finish_never_worse(rng):
    Ca, Cb = _clouds(rng, 16, 12)
    one = ot_batch.solve_gromov_batch(Ca, Cb, **SOLVE)
    many = ot_batch.solve_gromov_batch(Ca, Cb, n_init=4, **SOLVE)
    assert np.all(many.value <= one.value * (1 + 1e-9))
    assert set(np.unique(many.log["init"])) <= {0, 1, 2, 3}
    np.testing.assert_allclose(many.value, _gw(Ca, Cb, many.plan), rtol=1e-9)
    raw = ot_batch.solve_gromov_batch(Ca, Cb, finish_steps=0, **SOLVE)
    assert np.all(one.value <= raw.value * (1 + 1e-12))
    again = ot_batch.solve_gromov_batch(Ca, Cb, n_init=4, **SOLVE)  # seeded: reproducible
    np.testing.assert_array_equal(again.value, many.value)


def test_t_init_warm_start(rng):
    Ca, Cb = _clouds(rng, 4, 6)
    res = ot_batch.solve_gromov_batch(Ca, Cb, **SOLVE)
    warm = ot_batch.solve_gromov_batch(Ca, Cb, T_init=res.plan, **SOLVE)
    assert np.all(warm.log["n_iter"] <= 3)
    assert np.all(warm.value <= res.value * (1 + 1e-6))
    ident = np.repeat(np.eye(6)[None] / 6, 4, axis=0)  # X and Y nearly equal: near optimal
    start = ot_batch.solve_gromov_batch(Ca, Cb, T_init=ident, max_iter=0, finish_steps=0,
                                        reg=REG)
    np.testing.assert_allclose(start.plan, ident, atol=1e-15)


def test_max_iter_reports_non_convergence(rng):
    Ca, Cb = _clouds(rng, 4, 8)
    res = ot_batch.solve_gromov_batch(Ca, Cb, reg=REG, max_iter=1, tol=0.0)
    assert not res.log["converged"].any() and np.all(res.log["n_iter"] == 1)
    assert res.status != "converged"


# ------------------------------------------------------------------ gradients


def test_envelope_gradient_torch(rng):
    Ca, Cb = _clouds(rng, 3, 6)
    Cat = torch.tensor(Ca, requires_grad=True)
    res = ot_batch.solve_gromov_batch(Cat, torch.tensor(Cb), **SOLVE)
    res.value.sum().backward()
    T = res.plan.detach()
    Cr = torch.tensor(Ca, requires_grad=True)
    ot_batch.loss_quadratic_batch(None, None, Cr, torch.tensor(Cb), T,
                                  recompute_const=True).sum().backward()
    np.testing.assert_allclose(Cat.grad.numpy(), Cr.grad.numpy(), rtol=1e-10)
    assert not res.plan.requires_grad
    auto = ot_batch.solve_gromov_batch(torch.tensor(Ca, requires_grad=True), torch.tensor(Cb),
                                       grad="autodiff", reg=REG, max_iter=5, max_iter_inner=20)
    assert auto.plan.requires_grad
    det = ot_batch.solve_gromov_batch(torch.tensor(Ca, requires_grad=True), torch.tensor(Cb),
                                      grad="detach", **SOLVE)
    assert not det.value.requires_grad


def test_jax_jit_and_grad(rng):
    import jax
    Ca, Cb = _clouds(rng, 3, 5)

    def f(Ca_):
        return ot_batch.solve_gromov_batch(Ca_, jax.numpy.asarray(Cb), symmetric=True,
                                           **SOLVE).value.sum()

    v = jax.jit(f)(jax.numpy.asarray(Ca))
    g = jax.grad(f)(jax.numpy.asarray(Ca))
    np.testing.assert_allclose(float(v), ot_batch.solve_gromov_batch(Ca, Cb, **SOLVE).value.sum(),
                               rtol=1e-6)
    assert np.all(np.isfinite(np.asarray(g)))


# ------------------------------------------------------------------ bad inputs


@pytest.mark.parametrize("kw, err, match", [
    (dict(reg=0.0), ValueError, "reg"),
    (dict(reg=None), ValueError, "reg"),
    (dict(reg=-1.0), ValueError, "reg"),
    (dict(loss="square"), ValueError, "loss"),
    (dict(alpha=0.5), ValueError, "alpha"),
    (dict(M=np.ones((2, 4, 4)), alpha=1.5), ValueError, "alpha"),
    (dict(M=np.ones((2, 4, 3))), ValueError, "M must have shape"),
    (dict(T_init=-np.ones((2, 4, 4))), ValueError, "T_init"),
    (dict(T_init=np.ones((2, 3, 4))), ValueError, "T_init"),
    (dict(grad="last_step"), ValueError, "grad"),
    (dict(a=np.ones((2, 4))), ValueError, "mass"),
    (dict(overrelaxation=2.5), ValueError, "overrelaxation"),
    (dict(n_init=0), ValueError, "n_init"),
    (dict(logits=True), ValueError, "logits"),
    (dict(M=torch.ones(2, 4, 4)), TypeError, "same library"),
])
def test_bad_inputs(rng, kw, err, match):
    Ca, Cb = _clouds(rng, 2, 4)
    with pytest.raises(err, match=match):
        ot_batch.solve_gromov_batch(Ca, Cb, **{**dict(reg=1.0), **kw})


def test_bad_structures(rng):
    Ca, Cb = _clouds(rng, 2, 4)
    with pytest.raises(ValueError, match="Ca must have shape"):
        ot_batch.solve_gromov_batch(Ca[:, :, :3], Cb, reg=1.0)
    with pytest.raises(ValueError, match="not symmetric"):
        ot_batch.solve_gromov_batch(Ca + np.triu(np.ones((4, 4))), Cb, reg=1.0, symmetric=True)
    with pytest.raises(ValueError, match="NaN"):
        ot_batch.solve_gromov_batch(np.where(Ca > 1, np.nan, Ca), Cb, reg=1.0)
    with pytest.raises(ValueError, match="non-negative"):
        ot_batch.solve_gromov_batch(Ca - 1, Cb, reg=1.0, loss="kl")
    with pytest.raises(ValueError, match="must both be"):
        ot_batch.solve_gromov_batch(Ca[..., None], Cb, reg=1.0)


def test_pot_loss_names_and_inputs_untouched(bk, rng):
    Ca, Cb = _clouds(rng, 3, 5)
    Ca_b, Cb_b = bk.asarray(Ca), bk.asarray(Cb)
    r1 = ot_batch.solve_gromov_batch(Ca_b, Cb_b, loss="square_loss", **SOLVE)
    r2 = ot_batch.solve_gromov_batch(Ca_b, Cb_b, loss="sqeuclidean", **SOLVE)
    np.testing.assert_allclose(bk.to_numpy(r1.value), bk.to_numpy(r2.value))
    np.testing.assert_array_equal(bk.to_numpy(Ca_b), Ca)
    np.testing.assert_array_equal(bk.to_numpy(Cb_b), Cb)


def test_pad_batch_validation():
    with pytest.raises(ValueError, match="matrices"):
        ot_batch.pad_batch([])
    with pytest.raises(ValueError, match="size"):
        ot_batch.pad_batch([np.ones((3, 3))], size=2)
    with pytest.raises(ValueError, match=r"matrices\[1\]"):
        ot_batch.pad_batch([np.ones((3, 3)), np.ones((2, 3))])


# ------------------------------------------------------------------ fused inner solves


def _fused_vs_generic(device, B, n, **kw):
    rng = np.random.default_rng(3)
    Ca, Cb = _clouds(rng, B, n)
    Ca, Cb = (torch.tensor(C, dtype=torch.float32, device=device) for C in (Ca, Cb))
    opts = {**SOLVE, **kw}
    gen = ot_batch.solve_gromov_batch(Ca, Cb, backend="generic", **opts)
    fus = ot_batch.solve_gromov_batch(Ca, Cb, backend="triton", **opts)
    # GW is not convex: float32 round-off (another summation order) may send a rare problem
    # to another local minimum, so most problems, not all, must agree
    close = np.isclose(fus.value.cpu().numpy(), gen.value.cpu().numpy(), rtol=2e-3)
    assert np.sum(~close) <= max(1, B // 10), (fus.value, gen.value)
    np.testing.assert_allclose(fus.plan.sum(2).cpu(), 1 / n, atol=1e-6)
    # same iterations where they agree: counts differ only by float32 round-off at a threshold
    idx = torch.as_tensor(np.nonzero(close)[0], device=fus.plan.device)
    diff = (fus.log["n_iter_inner"][idx] - gen.log["n_iter_inner"][idx]).abs().float()
    assert diff.mean() <= 0.1 * gen.log["n_iter_inner"][idx].float().mean(), diff
    return gen, fus


def test_whole_solve_matches_generic_interpreter():
    # Triton's interpreter on CPU tensors (conftest sets TRITON_INTERPRET=1): tiny sizes
    gen, fus = _fused_vs_generic("cpu", 2, 6, max_iter=4, max_iter_inner=20)
    assert ot_batch.backends.registered("gromov_solve") == ["triton"]
    # the kernel's counts before the rounding are the generic solver's
    np.testing.assert_array_equal(fus.log["n_iter"].numpy(), gen.log["n_iter"].numpy())
    assert fus.log["n_iter"].dtype == gen.log["n_iter"].dtype


def test_whole_solve_fused_padded_interpreter():
    rng = np.random.default_rng(4)
    Ca, Cb = _clouds(rng, 3, 7)
    M = rng.random((3, 7, 7))
    t = lambda x: torch.tensor(x, dtype=torch.float32)  # noqa: E731
    C, w = ot_batch.pad_batch([t(Ca[0][:5, :5]), t(Ca[1]), t(Ca[2][:6, :6])], size=7)
    opts = dict(reg=1.0, max_iter=5, max_iter_inner=100, tol=1e-6, M=t(M), alpha=0.3, a=w,
                finish_steps=0)
    b = torch.full((3, 7), 1 / 7)
    gen = ot_batch.solve_gromov_batch(C, t(Cb), b=b, backend="generic", **opts)
    fus = ot_batch.solve_gromov_batch(C, t(Cb), b=b, backend="triton", **opts)
    np.testing.assert_allclose(fus.plan.numpy(), gen.plan.numpy(), atol=2e-5)
    np.testing.assert_allclose(fus.value.numpy(), gen.value.numpy(), rtol=1e-4)
    assert float(fus.plan[0, 5:].abs().max()) == 0.0  # padded nodes get no mass
    assert torch.isfinite(fus.potentials[1]).all()
    np.testing.assert_array_equal(fus.log["n_iter"].numpy(), gen.log["n_iter"].numpy())


def test_fused_inner_matches_generic_interpreter():
    # above 64 nodes the outer loop is generic and each step's Sinkhorn one launch
    gen, fus = _fused_vs_generic("cpu", 1, 66, max_iter=2, max_iter_inner=10)
    assert ot_batch.backends.registered("gromov_inner") == ["triton"]


@pytest.mark.gpu
def test_fused_inner_matches_generic_gpu():
    _fused_vs_generic("cuda", 64, 32)
    _fused_vs_generic("cuda", 256, 64)
    _fused_vs_generic("cuda", 16, 20, M=torch.rand(16, 20, 20, device="cuda"), alpha=0.5)
    _fused_vs_generic("cuda", 4, 130, max_iter_inner=80)  # several tiles per problem


def test_fused_inner_refused_where_it_cannot_run(rng):
    Ca, Cb = _clouds(rng, 2, 4)
    with pytest.raises(ValueError, match="triton"):  # float64
        ot_batch.solve_gromov_batch(torch.tensor(Ca), torch.tensor(Cb), backend="triton",
                                    reg=1.0)
    with pytest.raises(ValueError, match="backend"):
        ot_batch.solve_gromov_batch(Ca, Cb, backend="bogus", reg=1.0)


@pytest.mark.parametrize("kernel", ["one_program", "split"])
@pytest.mark.parametrize("n, m, zeros", [(5, 9, False), (20, 7, True), (40, 300, True)])
def test_inner_kernel_matches_sinkhorn_log(n, m, zeros, kernel):
    """One Sinkhorn solve of the inner kernels against the generic log-domain solver: row
    counts under and over the tile's, several column chunks, zero weights, warm starts. The
    split kernel runs one program per problem here (the interpreter runs programs one after
    another, so they cannot meet at a barrier); a GPU test splits."""
    _inner_vs_sinkhorn_log("cpu", n, m, zeros, kernel=kernel)


def test_inner_kernel_split_shapes_and_residency(monkeypatch):
    """A problem's rows split into G programs, none empty, every row covered; the GPU's
    resident programs counted from registers, warps and shared memory."""
    from types import SimpleNamespace
    from ot_batch.backends.triton import sinkhorn_split as S
    for n in (1, 5, 16, 17, 100, 256, 1000, 4096):
        for want in (1, 2, 3, 7, 8, 64):
            G, BN, BM = S._shape(n, 300, want, 4096)
            assert G <= max(want, 1) and G * BN >= n and (G - 1) * BN < n
            assert BN * BM <= 4096 or BM == 2
    props = SimpleNamespace(multi_processor_count=132, max_threads_per_multi_processor=2048,
                            regs_per_multiprocessor=65536, shared_memory_per_multiprocessor=233472)
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda device: props)
    kernel = SimpleNamespace(n_regs=125, metadata=SimpleNamespace(num_warps=4, shared=1024))
    assert S._resident(kernel, None) == 132 * 4  # registers: 65536 // (128 * 128)
    kernel.n_regs, kernel.metadata.shared = 32, 100_000
    assert S._resident(kernel, None) == 132 * 2  # shared memory
    kernel.metadata.shared = 0
    assert S._resident(kernel, None) == 132 * 16  # warps: 64 per multiprocessor


@pytest.mark.gpu
@pytest.mark.parametrize("n, m, split", [(256, 256, None), (256, 256, 1), (256, 256, 3),
                                         (1000, 1030, None), (3000, 64, None), (100, 40, 7)])
def test_inner_kernel_matches_sinkhorn_log_gpu(n, m, split):
    """On a GPU each problem's rows are split over several programs that meet at barriers
    (``split`` caps them; None: as many as stay resident): same iterations, same plans. (The
    solver's default, ``DEFAULT_SPLIT``, stays 1 until this has run on a GPU.)"""
    from ot_batch.backends.triton import sinkhorn_split as S
    B = 64 if n <= 256 else 3
    _inner_vs_sinkhorn_log("cuda", n, m, True, split=split, B=B, kernel="solve")
    G = S._split(B, n, m, torch.device("cuda", torch.cuda.current_device()), S.TILE, S.WARPS,
                 split or 64)[0]
    assert G > 1 if split != 1 else G == 1


def _inner_vs_sinkhorn_log(device, n, m, zeros, split=None, B=3, kernel="one_program"):
    from ot_batch.backends import namespace
    from ot_batch.backends.triton import sinkhorn_inner, sinkhorn_split
    from ot_batch.solvers import sinkhorn_log
    rng = np.random.default_rng(n + m)
    M = torch.tensor(rng.random((B, n, m)) * 20, dtype=torch.float32, device=device)
    a = torch.tensor(rng.random((B, n)) + 0.1, dtype=torch.float32, device=device)
    b = torch.tensor(rng.random((B, m)) + 0.1, dtype=torch.float32, device=device)
    if zeros:
        a[0, :2] = 0
        b[1, -3:] = 0
    a, b = a / a.sum(1, keepdim=True), b / b.sum(1, keepdim=True)
    u0 = torch.tensor(rng.normal(size=(B, n)), dtype=torch.float32, device=device)
    v0 = torch.tensor(rng.normal(size=(B, m)), dtype=torch.float32, device=device)
    xp, ext = namespace(M=M)
    u0c, v0c = u0.clone(), v0.clone()
    ref = sinkhorn_log.solve(xp, ext, M, a, b, 1.0, init=(u0, v0), grad="detach",
                             max_iter=60, tol=1e-6, check_every=5, omega=1.5)
    kw = dict(max_iter=60, tol=1e-6, check_every=5, omega=1.5)
    if kernel == "one_program":
        u, v, it, err = sinkhorn_inner.solve(-M, a, b, u0, v0, **kw)
    elif kernel == "split":  # the split kernel itself, one program per problem
        _, BN, BM = sinkhorn_split._shape(n, m, 1, sinkhorn_split.TILE)
        u, v, it, err = sinkhorn_split.launch(-M, a, b, u0, v0, 1, BN, BM, **kw)
    else:
        u, v, it, err = sinkhorn_split.solve(-M, a, b, u0, v0, split=split, **kw)
    np.testing.assert_array_equal(it.cpu().numpy(), ref.n_iter.cpu().numpy())
    plan = torch.exp(-M + u[:, :, None] + v[:, None, :])
    np.testing.assert_allclose(plan.cpu().numpy(), ref.plan.cpu().numpy(), atol=1e-6)
    assert torch.equal(u0, u0c) and torch.equal(v0, v0c)  # inputs untouched


@pytest.mark.parametrize("k", [3, 7])
def test_outer_checks_every_k_steps_same_result(rng, k):
    """Checking convergence every k steps (fewer host syncs on a GPU) freezes each problem at
    its own step: plans, counts and flags equal those of a check at every step."""
    from ot_batch.backends import namespace
    from ot_batch.solvers import gromov, gromov_cost
    Ca, Cb = _clouds(rng, 5, 8)
    xp, ext = namespace(Ca=Ca)
    a = np.full((5, 8), 1 / 8)
    cost = gromov_cost.decompose(xp, Ca, Cb, "sqeuclidean", False, True)
    kw = dict(max_iter=23, tol=1e-4, max_iter_inner=50, tol_inner=1e-7, grad="detach",
              omega=1.5, check_every_inner=5, verbose=False)
    args = (xp, ext, cost, None, np.ones(5), a, a, 1.0, a[:, :, None] * a[:, None, :])
    one = gromov.solve(*args, **kw)
    many = gromov.solve(*args, check_every=k, **kw)
    assert len(set(one.n_iter.tolist())) > 1  # problems stop at different steps
    np.testing.assert_array_equal(many.n_iter, one.n_iter)
    np.testing.assert_array_equal(many.converged, one.converged)
    np.testing.assert_array_equal(many.n_iter_inner, one.n_iter_inner)
    np.testing.assert_allclose(many.plan, one.plan, rtol=0, atol=0)
    np.testing.assert_allclose(many.err, one.err)


@pytest.mark.gpu
@pytest.mark.parametrize("n", [32, 100])
def test_kernels_on_cupy_arrays(n):
    """CuPy arrays run the same kernels as torch tensors (through DLPack): same results."""
    cupy = pytest.importorskip("cupy")
    rng = np.random.default_rng(5)
    Ca, Cb = _clouds(rng, 8, n)
    opts = dict(reg=1.0, max_iter=30, tol=1e-4)
    res_t = ot_batch.solve_gromov_batch(*(torch.tensor(C, dtype=torch.float32, device="cuda")
                                          for C in (Ca, Cb)), backend="triton", **opts)
    res_c = ot_batch.solve_gromov_batch(*(cupy.asarray(C, dtype=cupy.float32)
                                          for C in (Ca, Cb)), backend="triton", **opts)
    assert isinstance(res_c.plan, cupy.ndarray)
    np.testing.assert_allclose(cupy.asnumpy(res_c.value), res_t.value.cpu().numpy(), rtol=1e-5)
    np.testing.assert_array_equal(cupy.asnumpy(res_c.log["n_iter"]),
                                  res_t.log["n_iter"].cpu().numpy())


@pytest.mark.parametrize("loss", ["square_loss", "kl_loss"])
def test_whole_solve_rectangular_and_kl_interpreter(loss, monkeypatch):
    """n != m, both losses, several starts: the kernel's results are the generic solver's."""
    from ot_batch.backends.triton import gromov_small
    calls = []
    real = gromov_small.solve
    monkeypatch.setattr(gromov_small, "solve", lambda *a, **k: calls.append(1) or real(*a, **k))
    rng = np.random.default_rng(8)
    X, Y = rng.random((3, 5, 2)), rng.random((3, 9, 2))
    Ca, Cb = ot_batch.dist_batch(X, X) + 0.1, ot_batch.dist_batch(Y, Y) + 0.1  # kl: > 0
    t = lambda x: torch.tensor(x, dtype=torch.float32)  # noqa: E731
    opts = dict(reg=0.5, max_iter=6, max_iter_inner=100, tol=1e-6, loss=loss, n_init=2)
    gen = ot_batch.solve_gromov_batch(t(Ca), t(Cb), backend="generic", **opts)
    fus = ot_batch.solve_gromov_batch(t(Ca), t(Cb), backend="triton", **opts)
    np.testing.assert_allclose(fus.value.numpy(), gen.value.numpy(), rtol=1e-4)
    np.testing.assert_allclose(fus.plan.numpy(), gen.plan.numpy(), atol=1e-5)
    np.testing.assert_allclose(fus.plan.sum(1).numpy(), 1 / 9, atol=1e-6)
    np.testing.assert_array_equal(fus.log["init"].numpy(), gen.log["init"].numpy())
    assert calls == [1]  # one launch solved every start of every problem
