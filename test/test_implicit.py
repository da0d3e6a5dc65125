"""grad='implicit' (implicit function theorem) in solve_batch, solve_sample_batch and
sinkhorn_divergence_batch: against unrolled autodiff, finite differences, OTT-JAX's Hessians
and divergences, and GeomLoss's divergence; the linear solvers of ot_batch.solvers.implicit."""
from __future__ import annotations

import array_api_compat.numpy as anp
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from conftest import Backend, cloud_costs, random_weights

import ot_batch
from ot_batch.backends import numpy as np_ext
from ot_batch.solvers import implicit

REG = 0.3
KW = dict(tol=1e-12, max_iter=5000)
CASES = [(None, "entropy"), (None, "kl"), (0.7, "kl"), (0.7, "entropy"), ((np.inf, 0.5), "kl")]


@pytest.fixture(params=["torch", "jax"])
def dbk(request):
    return Backend(request.param)


def _grad(bk, fn, *arrays):
    """Gradients of ``fn(*arrays).sum()`` in every array, as NumPy."""
    if bk.name == "torch":
        ts = [bk.asarray(x).requires_grad_(True) for x in arrays]
        out = torch.autograd.grad(fn(*ts).sum(), ts, allow_unused=True)
        return [np.zeros_like(x) if g is None else g.numpy() for g, x in zip(out, arrays)]
    g = jax.grad(lambda *z: fn(*z).sum(), argnums=tuple(range(len(arrays))))(
        *[bk.asarray(x) for x in arrays])
    return [np.asarray(x) for x in g]


def _centre(g):
    return g - g.mean(axis=-1, keepdims=True)


@pytest.mark.parametrize("unbalanced,reg_type", CASES)
def test_solve_batch_implicit_equals_unrolled(dbk, rng, unbalanced, reg_type):
    M = cloud_costs(rng, 3, 6, 5)
    a, b = random_weights(rng, 3, 6), random_weights(rng, 3, 5)
    kw = dict(reg_type=reg_type, unbalanced=unbalanced, tol=1e-12, max_iter=1500)

    def value(grad):
        return lambda M_, a_, b_: ot_batch.solve_batch(M_, REG, a_, b_, grad=grad,
                                                       **kw).value

    imp = _grad(dbk, value("implicit"), M, a, b)
    unr = _grad(dbk, value("autodiff"), M, a, b)
    scale = max(np.abs(g).max() for g in unr)
    np.testing.assert_allclose(imp[0], unr[0], atol=1e-9 * scale)
    # balanced: the weights are only defined up to the all-ones direction of each side
    fix = _centre if unbalanced is None else (lambda g: g)
    for k in (1, 2):
        np.testing.assert_allclose(fix(imp[k]), fix(unr[k]), atol=1e-9 * scale)
    # same value as the other modes and as POT's objective
    ref = ot_batch.solve_batch(M, REG, a, b, **kw).value
    got = dbk.to_numpy(ot_batch.solve_batch(dbk.asarray(M), REG, dbk.asarray(a),
                                            dbk.asarray(b), grad="implicit", **kw).value)
    np.testing.assert_allclose(got, ref, rtol=1e-10)


def test_solve_batch_values_match_pot_loop(rng):
    ot = pytest.importorskip("ot")
    M = cloud_costs(rng, 3, 6, 5)
    a, b = random_weights(rng, 3, 6), random_weights(rng, 3, 5)
    M_t = torch.tensor(M, requires_grad=True)
    res = ot_batch.solve_batch(M_t, REG, torch.tensor(a), torch.tensor(b), grad="implicit",
                               **KW)
    for i in range(3):
        ref = ot.solve(M[i], a[i], b[i], reg=REG, reg_type="entropy", max_iter=5000,
                       tol=1e-12)
        np.testing.assert_allclose(res.value[i].item(), ref.value, rtol=1e-9)
        np.testing.assert_allclose(res.plan[i].detach().numpy(), ref.plan, atol=1e-10)
    res.value.sum().backward()
    np.testing.assert_allclose(M_t.grad.numpy(), res.plan.detach().numpy(), atol=1e-10)


def _fd(fn, x, d, h=1e-5):
    return (fn(x + h * d) - fn(x - h * d)) / (2 * h)


@pytest.mark.parametrize("unbalanced", [None, 0.7])
def test_gradients_match_finite_differences(dbk, rng, unbalanced):
    """Float64 gradients of grad='implicit' in M (solve_batch), X (solve_sample_batch) and
    X, a (sinkhorn_divergence_batch) against central differences."""
    B, n, m = 2, 6, 5
    M = cloud_costs(rng, B, n, m)
    X, Y = rng.normal(size=(B, n, 2)), rng.normal(size=(B, m, 2))
    a, b = random_weights(rng, B, n), random_weights(rng, B, m)
    kw = dict(unbalanced=unbalanced, **KW)
    A = dbk.asarray
    fns = {
        "solve_batch M": (lambda M_: ot_batch.solve_batch(
            M_, REG, A(a), A(b), grad="implicit", **kw).value, M),
        "solve_sample_batch X": (lambda X_: ot_batch.solve_sample_batch(
            X_, A(Y), REG, A(a), A(b), grad="implicit", **kw).value, X),
        "divergence X": (lambda X_: ot_batch.sinkhorn_divergence_batch(
            X_, A(Y), REG, A(a), A(b), grad="implicit", **kw).value, X),
        "divergence a": (lambda a_: ot_batch.sinkhorn_divergence_batch(
            A(X), A(Y), REG, a_, A(b), grad="implicit", **kw).value, a),
    }
    for name, (fn, x0) in fns.items():
        d = rng.normal(size=x0.shape)
        if name == "divergence a" and unbalanced is None:
            d -= d.mean(-1, keepdims=True)  # balanced: the mass stays that of b
        g = _grad(dbk, fn, x0)[0]
        fd = _fd(lambda z: dbk.to_numpy(fn(A(z))).sum(), x0, d)
        np.testing.assert_allclose(np.sum(g * d), fd, rtol=1e-6, err_msg=name)


def _div(x, a, y, b, grad, lib, **kw):
    out = ot_batch.sinkhorn_divergence_batch(x[None], y[None], EPS, a[None], b[None],
                                             grad=grad, **kw)
    return out.value[0]


EPS = 0.05


@pytest.fixture(scope="module")
def hessian_data():
    """OTT-JAX's Hessians tutorial: 17 and 15 points in 3-D, random weights."""
    k = jax.random.split(jax.random.key(0), 7)
    x = jax.random.uniform(k[0], (17, 3))
    y = jax.random.uniform(k[1], (15, 3))
    a = jax.random.uniform(k[2], (17,)) + 0.1
    b = jax.random.uniform(k[3], (15,)) + 0.1
    return x, a / a.sum(), y, b / b.sum()


def _project(H):
    """Hessian in a on the sum-zero directions (balanced: a is defined up to the ones)."""
    Q = np.eye(H.shape[0]) - 1.0 / H.shape[0]
    return Q @ H @ Q


def _rel(A, B):
    return np.abs(A - B).max() / np.abs(B).max()


@pytest.fixture(scope="module")
def ott_hessians(hessian_data):
    from ott.geometry import pointcloud
    from ott.solvers.linear import implicit_differentiation as imp_diff
    from ott.tools import sinkhorn_divergence as sd

    x, a, y, b = hessian_data

    def loss(a_, x_):
        div, _ = sd.sinkhorn_divergence(
            pointcloud.PointCloud, x_, y, a=a_, b=b, epsilon=EPS,
            solve_kwargs={"implicit_diff": imp_diff.ImplicitDiff(), "use_danskin": False,
                          "threshold": 1e-10, "max_iterations": 5000})
        return div

    return (float(loss(a, x)), _project(np.asarray(jax.jit(jax.hessian(loss, 0))(a, x))),
            np.asarray(jax.jit(jax.hessian(loss, 1))(a, x)))


def test_jax_hessians_match_ott_and_unrolled(hessian_data, ott_hessians):
    x, a, y, b = hessian_data
    val, Ha_ott, Hx_ott = ott_hessians
    kw = dict(tol=1e-11, max_iter=3000)
    for grad in ("implicit", "autodiff"):
        def loss(a_, x_):
            return _div(x_, a_, y, b, grad, jnp, **kw)
        np.testing.assert_allclose(float(loss(a, x)), val, rtol=1e-9)
        Ha = _project(np.asarray(jax.jit(jax.hessian(loss, 0))(a, x)))
        Hx = np.asarray(jax.jit(jax.hessian(loss, 1))(a, x))
        assert _rel(Ha, Ha_ott) < 1e-6, grad
        assert _rel(Hx, Hx_ott) < 1e-6, grad
        assert np.linalg.eigvalsh(Ha).min() > -1e-8 * np.abs(Ha).max()  # convex in a


def test_torch_hessians_match_ott(hessian_data, ott_hessians):
    x, a, y, b = (torch.from_numpy(np.asarray(z)) for z in hessian_data)
    _, Ha_ott, Hx_ott = ott_hessians

    def loss(a_, x_):
        return _div(x_, a_, y, b, "implicit", torch, tol=1e-11, max_iter=3000)

    Hx = torch.func.hessian(lambda x_: loss(a, x_))(x).numpy()
    assert _rel(Hx, Hx_ott) < 1e-6
    Ha = torch.autograd.functional.hessian(lambda a_: loss(a_, x), a).numpy()
    assert _rel(_project(Ha), Ha_ott) < 1e-6
    # reverse-over-reverse through the autograd Function (double backward)
    xg = x.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(loss(a, xg), xg, create_graph=True)
    d = torch.randn_like(x)
    (hv,) = torch.autograd.grad((g * d).sum(), xg)
    np.testing.assert_allclose(hv.numpy(), np.tensordot(Hx, d.numpy(), 2), atol=1e-8)


def test_fused_points_hvp_matches_ott(hessian_data):
    """grad='implicit' on the point-cloud kernels (streaming plan products, CG; run by the
    Triton interpreter here): the Hessian-vector product in x of the entropic OT value
    equals OTT-JAX's implicit Hessian of ``reg_ot_cost`` (the values differ by a constant
    in x: KL against a b^T, weights fixed)."""
    pytest.importorskip("triton")
    from ott.geometry import pointcloud
    from ott.solvers import linear
    from ott.solvers.linear import implicit_differentiation as imp_diff

    x, a, y, b = hessian_data

    def cost(x_):
        geom = pointcloud.PointCloud(x_, y, epsilon=EPS)
        # use_danskin=False: Danskin's stop-gradient gives the right gradient, not Hessian
        return linear.solve(geom, a, b, threshold=1e-10, max_iterations=5000,
                            implicit_diff=imp_diff.ImplicitDiff(),
                            use_danskin=False).reg_ot_cost
    Hx = np.asarray(jax.jit(jax.hessian(cost))(x))
    V = np.random.default_rng(3).normal(size=np.shape(x))
    X, Y, A, Bw = (torch.tensor(np.asarray(z), dtype=torch.float32)[None]
                   for z in (x, y, a, b))
    Xg = X.clone().requires_grad_(True)
    res = ot_batch.solve_sample_batch(Xg, Y, EPS, A, Bw, grad="implicit", tol=1e-6,
                                      max_iter=5000, backend="triton")
    (g,) = torch.autograd.grad(res.value.sum(), Xg, create_graph=True)
    (hv,) = torch.autograd.grad((g * torch.tensor(V, dtype=torch.float32)).sum(), Xg)
    ref = np.tensordot(Hx, V, 2)
    assert _rel(hv[0].double().numpy(), ref) < 1e-3


def test_divergence_matches_ott(rng):
    from ott.geometry import pointcloud
    from ott.tools import sinkhorn_divergence as sd

    B, n, m = 3, 12, 9
    X, Y = rng.random((B, n, 2)), rng.random((B, m, 2))
    a, b = random_weights(rng, B, n), random_weights(rng, B, m)
    res = ot_batch.sinkhorn_divergence_batch(jnp.asarray(X), jnp.asarray(Y), 0.1,
                                             jnp.asarray(a), jnp.asarray(b), tol=1e-12,
                                             max_iter=5000)
    assert bool(res.log["converged"].all())
    for i in range(B):
        ref, _ = sd.sinkhorn_divergence(
            pointcloud.PointCloud, X[i], Y[i], a=a[i], b=b[i], epsilon=0.1,
            solve_kwargs={"threshold": 1e-12, "max_iterations": 10000})
        np.testing.assert_allclose(float(res.value[i]), float(ref), rtol=1e-8)


def test_unbalanced_divergence_is_three_solves(rng):
    """Unbalanced: the three terms are solve_batch's KL-regularised unbalanced objectives
    (checked against POT in test_linear.py), plus the mass term. (OTT-JAX 0.6's
    ``reg_ot_cost`` of unbalanced problems is not the minimum of that objective: its plan
    has a higher objective than ours, so it is not the reference here.)"""
    B, n, m, reg, tau = 2, 12, 9, 0.1, 2.0
    X, Y = rng.random((B, n, 2)), rng.random((B, m, 2))
    a, b = random_weights(rng, B, n), 1.3 * random_weights(rng, B, m)
    res = ot_batch.sinkhorn_divergence_batch(X, Y, reg, a, b, unbalanced=tau, tol=1e-13,
                                             max_iter=20000)
    assert res.log["converged"].all()

    def ot(P, Q, wp, wq):
        return ot_batch.solve_sample_batch(P, Q, reg, wp, wq, unbalanced=tau, reg_type="kl",
                                           tol=1e-14, max_iter=20000).value

    ref = (ot(X, Y, a, b) - 0.5 * ot(X, X, a, a) - 0.5 * ot(Y, Y, b, b)
           + 0.5 * reg * (a.sum(1) - b.sum(1)) ** 2)
    np.testing.assert_allclose(res.value, ref, rtol=1e-9)


def test_divergence_matches_geomloss(rng):
    """GeomLoss's symmetric Sinkhorn loop (its tensorized softmin) on our costs, run at the
    fixed temperature ``reg`` for many iterations, gives the same divergence, balanced and
    unbalanced (GeomLoss's ``rho`` is our ``unbalanced``)."""
    pytest.importorskip("geomloss")
    from geomloss._legacy.sinkhorn_divergence import log_weights, sinkhorn_cost, sinkhorn_loop
    from geomloss._legacy.sinkhorn_samples import softmin_tensorized

    B, n, m, reg = 2, 40, 30, 0.05
    X, Y = torch.rand(B, n, 2, dtype=torch.float64), torch.rand(B, m, 2, dtype=torch.float64)
    a = torch.from_numpy(random_weights(rng, B, n))
    b = torch.from_numpy(random_weights(rng, B, m))
    res = ot_batch.sinkhorn_divergence_batch(X, Y, reg, a, b, tol=1e-12, max_iter=5000)
    C = {k: torch.cdist(P, Q) ** 2 for k, (P, Q) in
         {"xx": (X, X), "yy": (Y, Y), "xy": (X, Y), "yx": (Y, X)}.items()}
    pots = sinkhorn_loop(softmin_tensorized, log_weights(a), log_weights(b), C["xx"], C["yy"],
                         C["xy"], C["yx"], [reg] * 3000, rho=None, debias=True)
    ref = sinkhorn_cost(reg, None, a, b, *pots, batch=True, debias=True)
    np.testing.assert_allclose(res.value.numpy(), ref.numpy(), rtol=1e-9)
    # and its gradient in X (envelope, the default) against the implicit one
    Xg = X.clone().requires_grad_(True)
    (g_env,) = torch.autograd.grad(ot_batch.sinkhorn_divergence_batch(
        Xg, Y, reg, a, b, tol=1e-12).value.sum(), Xg)
    (g_imp,) = torch.autograd.grad(ot_batch.sinkhorn_divergence_batch(
        Xg, Y, reg, a, b, tol=1e-12, grad="implicit").value.sum(), Xg)
    np.testing.assert_allclose(g_env.numpy(), g_imp.numpy(), atol=1e-9)


def test_divergence_loop_vs_batch_and_properties(rng, bk):
    B, n, m = 3, 10, 8
    X, Y = rng.random((B, n, 2)), rng.random((B, m, 2))
    res = ot_batch.sinkhorn_divergence_batch(bk.asarray(X), bk.asarray(Y), 0.1, tol=1e-10)
    vals = bk.to_numpy(res.value)
    assert vals.shape == (B,) and (vals > 0).all()
    for i in range(B):
        one = ot_batch.sinkhorn_divergence_batch(X[i:i + 1], Y[i:i + 1], 0.1, tol=1e-10)
        np.testing.assert_allclose(vals[i], one.value[0], rtol=1e-8)
    same = ot_batch.sinkhorn_divergence_batch(bk.asarray(X), bk.asarray(X), 0.1, tol=1e-10)
    np.testing.assert_allclose(bk.to_numpy(same.value), 0, atol=1e-10)
    (f_ab, g_ab), (f_aa, _), (g_bb, _) = res.log["potentials"]
    assert tuple(f_aa.shape) == (B, n) and tuple(g_bb.shape) == (B, m)
    # the plan of the a -> b term has the marginals a and b
    np.testing.assert_allclose(bk.to_numpy(res.plan).sum(2), 1 / n, atol=1e-9)


def test_non_convergence_is_reported_per_problem(rng):
    X, Y = rng.random((2, 10, 2)), rng.random((2, 8, 2))
    X[1] *= 30  # a much sharper problem at the same reg
    res = ot_batch.sinkhorn_divergence_batch(X, Y, 0.01, max_iter=20, tol=1e-12)
    assert res.log["converged"].tolist() == [False, False]
    res = ot_batch.sinkhorn_divergence_batch(X, Y, 0.5, max_iter=2000, tol=1e-9)
    assert res.log["converged"].all()
    assert res.log["n_iter"][1] >= res.log["n_iter"][0]


def test_cg_equals_dense(rng):
    """The conjugate-gradient solve gives the dense solve's tangents, balanced (singular
    system, projected) and unbalanced."""
    B, n, m = 2, 9, 7
    M = cloud_costs(rng, B, n, m)
    a, b = random_weights(rng, B, n), random_weights(rng, B, m)
    for unb in (None, 0.5):
        res = ot_batch.solve_batch(M, REG, a, b, unbalanced=unb, reg_type="kl", **KW)
        f, g = res.potentials[0] * REG, res.potentials[1] * REG
        spec = implicit.Spec(REG, (None, None) if unb is None else (unb, unb))
        if unb is None:
            f, g = f - REG * np.log(a), g - REG * np.log(b)
        dC = rng.normal(size=M.shape)
        outs = [implicit.tangent(anp, np_ext, spec._replace(solver=s), M, a, b, f, g, dC,
                                 None, None) for s in ("dense", "cg")]
        np.testing.assert_allclose(outs[1][0], outs[0][0], atol=1e-8)
        np.testing.assert_allclose(outs[1][1], outs[0][1], atol=1e-8)
        # the tangent solves the linearised conditions: G(f + h df, g + h dg; C + h dC) = O(h^2)
        h = 1e-6
        Gf, Gg = implicit.conditions(anp, spec, M + h * dC, a, b, f + h * outs[0][0],
                                     g + h * outs[0][1])
        assert np.abs(Gf).max() < 1e-9 and np.abs(Gg).max() < 1e-9


def test_cg_gradient_through_divergence(rng):
    X, Y = torch.rand(1, 30, 2, dtype=torch.float64), torch.rand(1, 25, 2, dtype=torch.float64)
    out = []
    for solver in ("dense", "cg"):
        Xg = X.clone().requires_grad_(True)
        v = ot_batch.sinkhorn_divergence_batch(Xg, Y, 0.05, grad="implicit", tol=1e-12,
                                               implicit_solver=solver).value.sum()
        (g,) = torch.autograd.grad(v, Xg, create_graph=True)
        (hv,) = torch.autograd.grad(g.sum(), Xg)
        out.append(hv.numpy())
    np.testing.assert_allclose(out[1], out[0], atol=1e-7 * np.abs(out[0]).max())


def test_numpy_implicit_is_values_only(rng):
    M = cloud_costs(rng, 2, 5, 4)
    env = ot_batch.solve_batch(M, REG, **KW)
    imp = ot_batch.solve_batch(M, REG, grad="implicit", **KW)
    np.testing.assert_allclose(imp.value, env.value, rtol=1e-12)
    np.testing.assert_allclose(imp.plan, env.plan, atol=1e-14)


def test_bad_arguments(rng):
    M = cloud_costs(rng, 2, 5, 4)
    X = rng.random((2, 5, 2))
    with pytest.raises(ValueError, match="grad='implicit' needs a Sinkhorn method"):
        ot_batch.solve_batch(M, None, grad="implicit")
    with pytest.raises(ValueError, match="grad"):
        ot_batch.sinkhorn_divergence_batch(X, X, 0.1, grad="unrolled")
    with pytest.raises(ValueError, match="reg"):
        ot_batch.sinkhorn_divergence_batch(X, X, 0.0)
    with pytest.raises(ValueError, match="X_b"):
        ot_batch.sinkhorn_divergence_batch(X, X[0], 0.1)
    with pytest.raises(ValueError, match="implicit_solver"):
        ot_batch.sinkhorn_divergence_batch(X, X, 0.1, implicit_solver="lu")
    with pytest.raises(ValueError, match="same total mass"):
        ot_batch.sinkhorn_divergence_batch(X, X, 0.1, a=np.ones((2, 5)), b=None)
    before = X.copy()
    ot_batch.sinkhorn_divergence_batch(X, X + 1, 0.1)
    np.testing.assert_array_equal(X, before)


@pytest.mark.gpu
@pytest.mark.parametrize("lib", ["torch", "jax"])
def test_gpu_implicit_full_size(lib):
    """n = m = 2,000 on the GPU in float64: conjugate-gradient implicit gradients equal the
    envelope gradients (first order), and a Hessian-vector product (double backward / jvp
    of grad) equals central differences of the gradient."""
    n, reg = 2000, 0.05
    g = np.random.default_rng(1)
    X, Y = g.random((1, n, 2)), g.random((1, n, 2)) + 0.2
    d = g.normal(size=X.shape)
    kw = dict(tol=1e-10, max_iter=5000)
    if lib == "torch":
        if not torch.cuda.is_available():
            pytest.skip("no CUDA device for torch")
        Xt, Yt, dt = (torch.tensor(z, device="cuda") for z in (X, Y, d))

        def grad(Xv, mode, create_graph=False):
            Xv = Xv.clone().requires_grad_(True) if not Xv.requires_grad else Xv
            v = ot_batch.sinkhorn_divergence_batch(Xv, Yt, reg, grad=mode, **kw).value.sum()
            return torch.autograd.grad(v, Xv, create_graph=create_graph)[0], Xv

        g_env = grad(Xt, "envelope")[0]
        g_imp, Xg = grad(Xt.clone().requires_grad_(True), "implicit", create_graph=True)
        hv = torch.autograd.grad((g_imp * dt).sum(), Xg)[0].cpu().numpy()
        g_env, g_imp = g_env.cpu().numpy(), g_imp.detach().cpu().numpy()
        h = 1e-4
        fd = (grad(Xt + h * dt, "envelope")[0] - grad(Xt - h * dt, "envelope")[0]) / (2 * h)
        fd = fd.cpu().numpy()
    else:
        if not [dv for dv in jax.devices() if dv.platform == "gpu"]:
            pytest.skip("no GPU device for JAX")

        def loss(Xv, mode):
            return ot_batch.sinkhorn_divergence_batch(Xv, jnp.asarray(Y), reg, grad=mode,
                                                      **kw).value.sum()

        Xj, dj = jnp.asarray(X), jnp.asarray(d)
        g_env = np.asarray(jax.grad(loss)(Xj, "envelope"))
        g_imp = np.asarray(jax.grad(loss)(Xj, "implicit"))
        hv = np.asarray(jax.jvp(jax.grad(lambda z: loss(z, "implicit")), (Xj,), (dj,))[1])
        h = 1e-4
        fd = (np.asarray(jax.grad(loss)(Xj + h * dj, "envelope"))
              - np.asarray(jax.grad(loss)(Xj - h * dj, "envelope"))) / (2 * h)
    np.testing.assert_allclose(g_imp, g_env, atol=1e-7 * np.abs(g_env).max())
    np.testing.assert_allclose(hv, fd, atol=1e-4 * np.abs(fd).max())


def test_jit_with_captured_arrays(rng):
    """Arrays captured by a jitted function are constants whose checks are staged: they are
    skipped there, not turned into a TracerBoolConversionError."""
    X, Y = jnp.asarray(rng.random((2, 5, 2))), jnp.asarray(rng.random((2, 4, 2)))
    b = jnp.full((2, 4), 0.25)

    def loss(X_):
        return ot_batch.sinkhorn_divergence_batch(X_, Y, 0.1, b=b, grad="implicit").value

    np.testing.assert_allclose(jax.jit(loss)(X), loss(X), rtol=1e-6)
