"""Properties of the solvers and of ``dist_batch``.

Hypothesis explores small random problems on NumPy; each property also has one deterministic
check on every backend (``bk``). Sizes stay small so that the file runs in seconds.
"""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import ot_batch
from conftest import Backend, cloud_costs, random_weights

FAST = settings(max_examples=25, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
NP = Backend("numpy")
EPS = np.finfo(np.float64).eps

# methods whose convergence the hypothesis tests rely on (reg >= 0.1, costs <= 1)
ENTROPIC = st.sampled_from(["log_sinkhorn", "sinkhorn"])


@st.composite
def problems(draw, max_b=4, max_n=5):
    """(M, a, b): costs in [0, 1] with a different scale per problem, random weights."""
    batch = draw(st.integers(1, max_b))
    n, m = draw(st.integers(1, max_n)), draw(st.integers(1, max_n))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    scales = draw(st.lists(st.sampled_from([0.05, 0.3, 1.0]), min_size=batch,
                           max_size=batch))
    M = rng.random((batch, n, m)) * np.asarray(scales)[:, None, None]
    return M, random_weights(rng, batch, n), random_weights(rng, batch, m)


REGS = st.floats(0.1, 1.0)


def _solve(bk, M, a, b, **kw):
    return ot_batch.solve_batch(bk.asarray(M), a=bk.asarray(a), b=bk.asarray(b), **kw)


def _np(bk, res):
    """Plan, value, potentials and log of a result as NumPy arrays."""
    return dict(plan=bk.to_numpy(res.plan), value=bk.to_numpy(res.value),
                value_linear=bk.to_numpy(res.value_linear),
                f=bk.to_numpy(res.potentials[0]), g=bk.to_numpy(res.potentials[1]),
                n_iter=bk.to_numpy(res.log["n_iter"]),
                converged=bk.to_numpy(res.log["converged"]).astype(bool))


def _check_marginals(out, a, b, atol=1e-6):
    assert out["converged"].all(), out["n_iter"]
    np.testing.assert_allclose(out["plan"].sum(2), a, atol=atol, rtol=0)
    np.testing.assert_allclose(out["plan"].sum(1), b, atol=atol, rtol=0)
    assert (out["plan"] >= 0).all()


# --------------------------------------------------------------------------------------------
# Marginals at convergence
# --------------------------------------------------------------------------------------------
@FAST
@given(problems(), REGS, ENTROPIC, st.sampled_from(["entropy", "kl"]))
def test_marginals_met_hypothesis(pb, reg, method, reg_type):
    M, a, b = pb
    out = _np(NP, _solve(NP, M, a, b, reg=reg, method=method, reg_type=reg_type, tol=1e-9,
                         max_iter=10_000))
    _check_marginals(out, a, b)


@pytest.mark.parametrize("method", ["log_sinkhorn", "sinkhorn"])
def test_marginals_met(bk, rng, method):
    M = cloud_costs(rng, 3, 5, 6, scale=0.3)
    a, b = random_weights(rng, 3, 5), random_weights(rng, 3, 6)
    out = _np(bk, _solve(bk, M, a, b, reg=0.2, method=method, tol=1e-9, max_iter=5000))
    _check_marginals(out, a, b)


@pytest.mark.parametrize("reg", [None, 0.1])
def test_proximal_converges_and_meets_marginals(bk, rng, reg):
    """The proximal point method (Xie et al.) with a moderate step converges on a tiny problem:
    to the exact OT value for reg=None, to the entropic plan for reg > 0."""
    M = rng.random((3, 5, 6))
    a, b = np.full((3, 5), 1 / 5), np.full((3, 6), 1 / 6)
    res = _solve(bk, M, a, b, reg=reg, method="proximal", inner_reg=0.1, tol=1e-7,
                 max_iter=3000)
    out = _np(bk, res)
    _check_marginals(out, a, b)
    if reg is None:
        import ot

        exact = [ot.emd2(a[i], b[i], M[i]) for i in range(3)]
        np.testing.assert_allclose(out["value"], exact, rtol=1e-4)
    else:
        ref = _np(bk, _solve(bk, M, a, b, reg=reg, method="log_sinkhorn", tol=1e-10))
        np.testing.assert_allclose(out["plan"], ref["plan"], atol=1e-5)


# --------------------------------------------------------------------------------------------
# Invariance to a constant added to a row or a column of M
# --------------------------------------------------------------------------------------------
def _check_shift_invariance(bk, M, a, b, reg, method, r, c):
    kw = dict(reg=reg, method=method, tol=1e-10, max_iter=10_000)
    base = _np(bk, _solve(bk, M, a, b, **kw))
    rows = _np(bk, _solve(bk, M + r[:, :, None], a, b, **kw))
    cols = _np(bk, _solve(bk, M + c[:, None, :], a, b, **kw))
    for out in (base, rows, cols):
        assert out["converged"].all()
    np.testing.assert_allclose(rows["plan"], base["plan"], atol=1e-8, rtol=0)
    np.testing.assert_allclose(cols["plan"], base["plan"], atol=1e-8, rtol=0)
    # the cost moves by <a, r> (resp. <b, c>): the plan's marginals are a and b
    np.testing.assert_allclose(rows["value_linear"], base["value_linear"] + (a * r).sum(1),
                               atol=1e-7)
    np.testing.assert_allclose(cols["value"], base["value"] + (b * c).sum(1), atol=1e-7)


@FAST
@given(problems(), REGS, ENTROPIC, st.integers(0, 2**32 - 1))
def test_shift_invariance_hypothesis(pb, reg, method, seed):
    M, a, b = pb
    rng = np.random.default_rng(seed)
    r = rng.uniform(-1, 1, size=a.shape)
    c = rng.uniform(-1, 1, size=b.shape)
    _check_shift_invariance(NP, M, a, b, reg, method, r, c)


def test_shift_invariance(bk, rng):
    M = cloud_costs(rng, 3, 5, 6, scale=0.2)
    a, b = random_weights(rng, 3, 5), random_weights(rng, 3, 6)
    _check_shift_invariance(bk, M, a, b, 0.3, "log_sinkhorn", rng.uniform(-2, 2, (3, 5)),
                            rng.uniform(-2, 2, (3, 6)))


# --------------------------------------------------------------------------------------------
# Batch structure: permutation equivariance, loop vs batch, per-problem convergence
# --------------------------------------------------------------------------------------------
def _solve_kw(method, reg):
    if method == "proximal":  # slow to converge: a short run still compares exactly
        return dict(method=method, reg=reg, max_iter=100)
    return dict(method=method, reg=reg, tol=1e-8, max_iter=5000)


def _assert_same(x, y, atol=1e-12):
    for k in ("plan", "value", "f", "g"):
        np.testing.assert_allclose(x[k], y[k], atol=atol, rtol=1e-10, err_msg=k)
    np.testing.assert_array_equal(x["n_iter"], y["n_iter"])
    np.testing.assert_array_equal(x["converged"], y["converged"])


def _check_permutation(bk, M, a, b, perm, kw, base=None):
    base = _np(bk, _solve(bk, M, a, b, **kw)) if base is None else base
    permuted = _np(bk, _solve(bk, M[perm], a[perm], b[perm], **kw))
    _assert_same(permuted, {k: v[perm] for k, v in base.items()})


def _check_loop_vs_batch(bk, M, a, b, kw, batch=None, copies=1):
    """Problem i of the batch equals problem i solved alone (in a batch of ``copies`` copies
    of itself: with copies = B the shapes stay those of the batch)."""
    batch = _np(bk, _solve(bk, M, a, b, **kw)) if batch is None else batch
    for i in range(M.shape[0]):
        rep = [i] * copies
        alone = _np(bk, _solve(bk, M[rep], a[rep], b[rep], **kw))
        _assert_same(alone, {k: v[rep] for k, v in batch.items()})


@FAST
@given(problems(), REGS, st.sampled_from(["log_sinkhorn", "sinkhorn", "proximal"]), st.data())
def test_permutation_equivariance_hypothesis(pb, reg, method, data):
    M, a, b = pb
    perm = np.asarray(data.draw(st.permutations(range(M.shape[0]))), dtype=int)
    _check_permutation(NP, M, a, b, perm, _solve_kw(method, reg))


@FAST
@given(problems(max_b=3), REGS, st.sampled_from(["log_sinkhorn", "sinkhorn", "proximal"]),
       st.sampled_from([1, 10]))
def test_loop_vs_batch_hypothesis(pb, reg, method, check_every):
    M, a, b = pb
    _check_loop_vs_batch(NP, M, a, b, dict(_solve_kw(method, reg), check_every=check_every))


def _mixed_batch(rng):
    """Problems 0 and 2 easy (tiny costs), problem 1 hard (reg small against its costs)."""
    easy = cloud_costs(rng, 2, 5, 6, scale=0.01)
    hard = cloud_costs(rng, 1, 5, 6)
    M = np.concatenate([easy[:1], hard, easy[1:]])
    return M, random_weights(rng, 3, 5), random_weights(rng, 3, 6)


def test_permutation_and_loop_vs_batch(bk, rng):
    """Deterministic, every backend: the easy problems stop early (frozen), the hard one runs
    on, and each equals its solve alone and moves with a permutation of the batch."""
    M, a, b = _mixed_batch(rng)
    kw = dict(reg=0.5, tol=1e-8)
    base = _np(bk, _solve(bk, M, a, b, **kw))
    assert base["n_iter"][0] < base["n_iter"][1] and base["converged"].all()
    _check_permutation(bk, M, a, b, np.array([2, 0, 1]), kw, base)
    # (eager JAX compiles every operation once per shape, several seconds on a small CPU: a
    # problem alone is there a batch of copies of it, of the batch's shape)
    _check_loop_vs_batch(bk, M, a, b, kw, base, copies=3 if bk.name == "jax" else 1)


@pytest.mark.parametrize("method, check_every", [("log_sinkhorn", 1), ("sinkhorn", 10)])
def test_per_problem_convergence(bk, rng, method, check_every):
    M, a, b = _mixed_batch(rng)
    kw = dict(reg=0.5, method=method, check_every=check_every, tol=1e-7, max_iter=5000)
    out = _np(bk, _solve(bk, M, a, b, **kw))
    assert out["converged"].all()
    n_iter = out["n_iter"]
    assert n_iter[0] < n_iter[1] and n_iter[2] < n_iter[1], n_iter
    assert n_iter[1] < kw["max_iter"]
    assert (n_iter % check_every == 0).all()
    # (that each count equals the problem's count alone: test_permutation_and_loop_vs_batch)
    # a max_iter between the two leaves the hard one unconverged and the easy ones done,
    # with the same counts and plans as in the full run (frozen once converged)
    stop = int(max(n_iter[0], n_iter[2])) + check_every
    assert stop < n_iter[1]  # (the problem is hard enough for this check)
    short = _np(bk, _solve(bk, M, a, b, **dict(kw, max_iter=stop)))
    np.testing.assert_array_equal(short["converged"], [True, False, True])
    np.testing.assert_array_equal(short["n_iter"], [n_iter[0], stop, n_iter[2]])
    np.testing.assert_allclose(short["plan"][[0, 2]], out["plan"][[0, 2]], atol=1e-14, rtol=0)
    assert not np.allclose(short["plan"][1], out["plan"][1], atol=1e-9)


@pytest.mark.parametrize("method", ["log_sinkhorn", "sinkhorn"])
def test_same_result_on_every_backend_and_path(bk, rng, method):
    """Same inputs, same numbers: every backend, and whatever implementation 'auto' picks,
    agrees with the generic solver on NumPy, iteration counts included."""
    M, a, b = _mixed_batch(rng)
    kw = dict(reg=0.5, method=method)
    ref = _np(NP, _solve(NP, M, a, b, backend="generic", **kw))
    for backend in ("auto", "generic"):
        out = _np(bk, _solve(bk, M, a, b, backend=backend, **kw))
        np.testing.assert_array_equal(out["n_iter"], ref["n_iter"], err_msg=backend)
        np.testing.assert_allclose(out["plan"], ref["plan"], atol=1e-10, rtol=1e-8,
                                   err_msg=backend)
        np.testing.assert_allclose(out["value"], ref["value"], atol=1e-10, rtol=1e-8,
                                   err_msg=backend)


# --------------------------------------------------------------------------------------------
# dist_batch
# --------------------------------------------------------------------------------------------
def _brute_sq(X, Y):
    return ((X[:, :, None, :] - Y[:, None, :, :]) ** 2).sum(-1)


def _roundoff_bound(X, Y):
    """What the expansion |x|^2 + |y|^2 - 2 x.y may lose, after centring on the joint mean."""
    c = np.concatenate([X, Y], axis=1).mean(axis=1, keepdims=True)
    sq = ((X - c) ** 2).sum(-1).max() + ((Y - c) ** 2).sum(-1).max()
    return 16 * (X.shape[2] + 2) * EPS * sq


@st.composite
def clouds(draw, far=True):
    batch, n, m, d = (draw(st.integers(1, 3)), draw(st.integers(1, 5)), draw(st.integers(1, 5)),
                      draw(st.integers(1, 4)))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    spread = draw(st.sampled_from([1e-6, 1e-3, 1.0, 1e3] + ([1e8] if far else [])))
    offset = draw(st.sampled_from([0.0, 1e3, -1e8, 1e8])) if far else 0.0
    X = offset + spread * rng.normal(size=(batch, n, d))
    Y = offset + spread * rng.normal(size=(batch, m, d))
    shared = draw(st.integers(0, min(n, m)))  # points in both clouds: distances exactly 0
    Y[:, :shared] = X[:, :shared]
    if not far:  # centred data
        c = np.concatenate([X, Y], axis=1).mean(axis=1, keepdims=True)
        X, Y = X - c, Y - c
    return X, Y


@FAST
@given(clouds(far=False))
def test_sqeuclidean_matches_brute_force_centred(XY):
    X, Y = XY
    D = ot_batch.dist_batch(X, Y)
    ref = _brute_sq(X, Y)
    np.testing.assert_allclose(D, ref, rtol=1e-10, atol=_roundoff_bound(X, Y))


@FAST
@given(clouds())
def test_dist_never_negative_nor_nan(XY):
    X, Y = XY
    for metric in ("sqeuclidean", "euclidean"):
        D = ot_batch.dist_batch(X, Y, metric=metric)
        assert D.shape == (X.shape[0], X.shape[1], Y.shape[1])
        assert np.isfinite(D).all(), metric
        assert (D >= 0).all(), metric
    D = ot_batch.dist_batch(X, Y)
    np.testing.assert_allclose(D, _brute_sq(X, Y), rtol=1e-10, atol=_roundoff_bound(X, Y))


@FAST
@given(clouds())
def test_dist_symmetric_without_X2(XY):
    X, _ = XY
    bound = _roundoff_bound(X, X)
    for metric in ("sqeuclidean", "euclidean"):
        D = ot_batch.dist_batch(X, metric=metric)
        assert (D >= 0).all() and np.isfinite(D).all()
        np.testing.assert_array_equal(D, ot_batch.dist_batch(X, X, metric=metric))
        np.testing.assert_allclose(D, np.swapaxes(D, 1, 2), rtol=1e-12,
                                   atol=bound if metric == "sqeuclidean" else np.sqrt(bound))
        diag = np.diagonal(D, axis1=1, axis2=2)
        assert (diag <= (bound if metric == "sqeuclidean" else np.sqrt(bound))).all()


def test_dist_far_from_origin(bk, rng):
    """Coordinates ~1e8 with unit spread: no NaN, no negative entries, accurate distances."""
    X = 1e8 + rng.normal(size=(3, 5, 2))
    Y = 1e8 + rng.normal(size=(3, 6, 2))
    ref = _brute_sq(X, Y)
    D = bk.to_numpy(ot_batch.dist_batch(bk.asarray(X), bk.asarray(Y)))
    E = bk.to_numpy(ot_batch.dist_batch(bk.asarray(X), bk.asarray(Y), metric="euclidean"))
    assert (D >= 0).all() and np.isfinite(E).all()
    np.testing.assert_allclose(D, ref, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(E, np.sqrt(ref), rtol=1e-10, atol=1e-12)
    S = bk.to_numpy(ot_batch.dist_batch(bk.asarray(X), metric="euclidean"))
    assert np.isfinite(S).all() and (S >= 0).all()
    np.testing.assert_allclose(S, np.swapaxes(S, 1, 2), atol=1e-6)
    np.testing.assert_allclose(np.diagonal(S, axis1=1, axis2=2), 0, atol=1e-6)


def test_dist_metrics_every_backend(bk, rng):
    X, Y = rng.normal(size=(3, 5, 2)), rng.normal(size=(3, 6, 2))
    Xb, Yb = bk.asarray(X), bk.asarray(Y)
    ref = _brute_sq(X, Y)
    np.testing.assert_allclose(bk.to_numpy(ot_batch.dist_batch(Xb, Yb)), ref, rtol=1e-10,
                               atol=1e-13)
    np.testing.assert_allclose(bk.to_numpy(ot_batch.dist_batch(Xb, Yb, metric="euclidean")),
                               np.sqrt(ref), rtol=1e-10, atol=1e-13)
    L1 = np.abs(X[:, :, None] - Y[:, None]).sum(-1)
    np.testing.assert_allclose(
        bk.to_numpy(ot_batch.dist_batch(Xb, Yb, metric="minkowski", p=1)), L1, rtol=1e-12)
    np.testing.assert_allclose(
        bk.to_numpy(ot_batch.dist_batch(Xb, Yb, metric="minkowski", p=2)), np.sqrt(ref),
        rtol=1e-10)
    P, Q = np.abs(X) + 0.1, np.abs(Y) + 0.1
    KL = (Q[:, None, :, :] * np.log(Q[:, None, :, :] / P[:, :, None, :])).sum(-1)
    np.testing.assert_allclose(
        bk.to_numpy(ot_batch.dist_batch(bk.asarray(P), bk.asarray(Q), metric="kl")), KL,
        rtol=1e-8, atol=1e-8)
