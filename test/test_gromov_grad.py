"""Envelope gradients of the Gromov-Wasserstein value in Ca, Cb, a, b (and M for fused GW),
against central finite differences of the re-solved value and against POT's ``ot.gromov``.

Why the finite differences can be tight. The structure matrices are Euclidean distances, which
are conditionally negative definite: on the directions that keep the marginals, the GW
objective is strictly concave, so its local minima are vertices of the transport polytope,
and with generic (non-uniform) weights non-degenerate ones (``n + m - 1`` entries, strictly
positive reduced costs off the support). Within the basin of such a vertex the optimal plan is
the plan of that support with marginals ``(a, b)``: affine in ``(a, b)`` and independent of
``Ca``, ``Cb`` and ``M``. The value is then a quadratic polynomial along each perturbation, so
central differences have no truncation error at all; what is left is the solver's error on the
value (a relative change of the objective below ``tol = 1e-12`` when it stops, i.e. ~1e-12 of
the value) divided by the step ``H = 1e-4``: ~1e-8 of the value, against gradients of order
the value. The analytic side (the potentials of the last proximal step) is off by the
stationarity residual of the last step, ~1e-9 at these tolerances. Measured agreement on
these problems is 3e-10 to 9e-8 (relative); ``RTOL = 1e-5`` keeps a margin while a missing
term (100% error), a missing ``reg`` factor (70%) or the potentials of another start would
fail by orders of magnitude. Against POT the gradients agree to ~1e-9 of their largest entry
(``1e-7`` is asserted).

Every solve starts from the same ``T_init`` (the product plan of the unperturbed weights) and
the tests assert that all converged. The data are fixed (seed 5): on other seeds most problems
agree as well (below 1e-6, one at 1.6e-5), but a few perturbed re-solves end at another local
minimum (with ``reg`` small against the costs the first proximal steps are long, close to
Frank-Wolfe steps, and a near-tie can flip), which no tolerance on the gradient can absorb.
"""
from __future__ import annotations

import numpy as np
import ot
import pytest
import torch

import ot_batch
from ot_batch.solvers import gromov_cost

SOLVE = dict(reg=0.3, tol=1e-12, max_iter=1000, max_iter_inner=100, tol_inner=1e-12)
H = 1e-4
RTOL = 1e-5
ALPHA = 0.5
KINDS = ("ab", "Ca", "Cb", "M")


def _problem(seed, B=3, n=7, m=6):
    """Euclidean distance matrices of nearby clouds, generic weights, a feature cost."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(B, n, 2))
    Y = rng.normal(size=(B, m, 2))
    k = min(n, m)
    Y[:, :k] = X[:, :k] + 0.2 * rng.normal(size=(B, k, 2))
    Ca = ot.batch.dist_batch(X, X, metric="euclidean")
    Cb = ot.batch.dist_batch(Y, Y, metric="euclidean")

    def weights(k):
        w = rng.random((B, k)) + 0.5
        return w / w.sum(1, keepdims=True)

    a, b = weights(n), weights(m)
    M = rng.random((B, n, m))
    T0 = a[:, :, None] * b[:, None, :]
    # directions: equal-mass for the weights, symmetric for the structures
    da = rng.normal(size=a.shape)
    db = rng.normal(size=b.shape)
    dCa = rng.normal(size=Ca.shape)
    dCb = rng.normal(size=Cb.shape)
    dirs = {"a": da - da.mean(1, keepdims=True), "b": db - db.mean(1, keepdims=True),
            "Ca": dCa + dCa.transpose(0, 2, 1), "Cb": dCb + dCb.transpose(0, 2, 1),
            "M": rng.normal(size=M.shape)}
    return dict(Ca=Ca, Cb=Cb, a=a, b=b, M=M, T0=T0), dirs


def _fd(p, dirs, fused):
    """Central differences of the re-solved value along each direction: every perturbed
    problem in one batch (kinds x signs x B), all from the same start."""
    B = p["a"].shape[0]
    kinds = KINDS if fused else KINDS[:3]
    stacks = {k: [] for k in ("Ca", "Cb", "a", "b", "M", "T0")}
    for kind in kinds:
        for sign in (1.0, -1.0):
            for key in ("Ca", "Cb", "a", "b", "M"):
                move = key == kind or (kind == "ab" and key in ("a", "b"))
                stacks[key].append(p[key] + sign * H * dirs[key] if move else p[key])
            stacks["T0"].append(p["T0"])
    s = {k: np.concatenate(v) for k, v in stacks.items()}
    extra = dict(M=s["M"], alpha=ALPHA) if fused else {}
    res = ot_batch.solve_gromov_batch(s["Ca"], s["Cb"], a=s["a"], b=s["b"], T_init=s["T0"],
                                      **extra, **SOLVE)
    assert res.log["converged"].all()
    v = res.value.reshape(len(kinds), 2, B)
    return dict(zip(kinds, (v[:, 0] - v[:, 1]) / (2 * H)))


def _directional(grads, dirs, fused):
    """``<grad, direction>`` per problem for each kind of :func:`_fd`."""
    g = {k: np.asarray(x) for k, x in grads.items()}
    out = {"ab": (g["a"] * dirs["a"]).sum(1) + (g["b"] * dirs["b"]).sum(1),
           "Ca": (g["Ca"] * dirs["Ca"]).sum((1, 2)), "Cb": (g["Cb"] * dirs["Cb"]).sum((1, 2))}
    if fused:
        out["M"] = (g["M"] * dirs["M"]).sum((1, 2))
    return out


def _check(grads, case):
    got = _directional(grads, case["dirs"], case["fused"])
    for kind, fd in case["fd"].items():
        np.testing.assert_allclose(got[kind], fd, rtol=RTOL, err_msg=kind)


def _torch_solve(p, fused, **kw):
    t = {k: torch.tensor(p[k], requires_grad=True) for k in ("Ca", "Cb", "a", "b", "M")}
    extra = dict(M=t["M"], alpha=ALPHA) if fused else {}
    res = ot_batch.solve_gromov_batch(t["Ca"], t["Cb"], a=t["a"], b=t["b"],
                                      T_init=torch.tensor(p["T0"]), **extra, **{**SOLVE, **kw})
    return res, t


@pytest.fixture(scope="module", params=[False, True], ids=["gw", "fused"])
def case(request):
    fused = request.param
    p, dirs = _problem(5)
    res, t = _torch_solve(p, fused)
    assert res.log["converged"].all()
    res.value.sum().backward()
    grads = {k: x.grad.numpy() for k, x in t.items() if x.grad is not None}
    return dict(p=p, dirs=dirs, fused=fused, fd=_fd(p, dirs, fused), torch=grads,
                plan=res.plan.numpy(), value=res.value.detach().numpy())


# ------------------------------------------------------------------ against finite differences


def test_torch_autograd_matches_finite_differences(case):
    assert set(case["torch"]) == ({"Ca", "Cb", "a", "b", "M"} if case["fused"]
                                  else {"Ca", "Cb", "a", "b"})
    _check(case["torch"], case)


def test_torch_func_grad_matches_finite_differences(case):
    p, fused = case["p"], case["fused"]
    names = ("Ca", "Cb", "a", "b") + (("M",) if fused else ())

    def total(Ca, Cb, a, b, M=None):
        extra = dict(M=M, alpha=ALPHA) if fused else {}
        return ot_batch.solve_gromov_batch(Ca, Cb, a=a, b=b, T_init=torch.tensor(p["T0"]),
                                           **extra, **SOLVE).value.sum()

    g = torch.func.grad(total, argnums=tuple(range(len(names))))(
        *(torch.tensor(p[k]) for k in names))
    grads = {k: x.numpy() for k, x in zip(names, g)}
    for k in names:  # the same computation as autograd's
        np.testing.assert_allclose(grads[k], case["torch"][k], rtol=1e-12, atol=1e-14)
    _check(grads, case)


@pytest.mark.parametrize("jit", [False, True], ids=["eager", "jit"])
def test_jax_grad_matches_finite_differences(case, jit):
    import jax
    import jax.numpy as jnp

    p, fused = case["p"], case["fused"]
    names = ("Ca", "Cb", "a", "b") + (("M",) if fused else ())

    def total(Ca, Cb, a, b, M=None):
        extra = dict(M=M, alpha=ALPHA) if fused else {}
        return ot_batch.solve_gromov_batch(Ca, Cb, a=a, b=b, T_init=jnp.asarray(p["T0"]),
                                           symmetric=True, **extra, **SOLVE).value.sum()

    fn = jax.grad(total, argnums=tuple(range(len(names))))
    g = (jax.jit(fn) if jit else fn)(*(jnp.asarray(p[k]) for k in names))
    grads = {k: np.asarray(x) for k, x in zip(names, g)}
    assert all(np.isfinite(x).all() for x in grads.values())
    _check(grads, case)


# ------------------------------------------------------------------ against POT


def test_matches_pot_gromov_wasserstein2_gradients(case):
    """POT's ``gromov_wasserstein2`` / ``fused_gromov_wasserstein2`` (conditional gradient,
    exact) started at our plan stay at the same local minimum; their gradients: the centred
    duals of the last linearised problem for p, q, closed forms for C1, C2, (1 - alpha) T for
    M."""
    p, fused, ours = case["p"], case["fused"], case["torch"]
    for i in range(p["a"].shape[0]):
        t = {k: torch.tensor(p[k][i], requires_grad=True) for k in ("Ca", "Cb", "a", "b", "M")}
        G0 = torch.tensor(case["plan"][i])
        if fused:
            val = ot.gromov.fused_gromov_wasserstein2(
                t["M"], t["Ca"], t["Cb"], t["a"], t["b"], "square_loss", alpha=ALPHA, G0=G0,
                max_iter=1000, tol_rel=1e-14, tol_abs=0.0)
        else:
            val = ot.gromov.gromov_wasserstein2(t["Ca"], t["Cb"], t["a"], t["b"], "square_loss",
                                                G0=G0, max_iter=1000, tol_rel=1e-14,
                                                tol_abs=0.0)
        np.testing.assert_allclose(val.item(), case["value"][i], rtol=1e-9)
        val.backward()
        for k in ("a", "b", "Ca", "Cb") + (("M",) if fused else ()):
            ref = t[k].grad.numpy()
            np.testing.assert_allclose(ours[k][i], ref, rtol=0,
                                       atol=1e-7 * np.abs(ref).max(), err_msg=k)


# ------------------------------------------------------------------ padding, starts, modes


def test_padded_nodes_get_zero_finite_gradients():
    p, _ = _problem(5, B=2)
    sizes = [(5, 6), (7, 4)]
    kw = dict(SOLVE, tol=1e-10)
    singles = []
    for i, (n, m) in enumerate(sizes):
        t = [torch.tensor(x, requires_grad=True) for x in
             (p["Ca"][i:i + 1, :n, :n], p["Cb"][i:i + 1, :m, :m])]
        w = [torch.tensor(x / x.sum(1, keepdims=True), requires_grad=True) for x in
             (p["a"][i:i + 1, :n], p["b"][i:i + 1, :m])]
        ot_batch.solve_gromov_batch(*t, a=w[0], b=w[1], **kw).value.sum().backward()
        singles.append([x.grad.numpy()[0] for x in t + w])
    Ca, a = ot_batch.pad_batch([torch.tensor(p["Ca"][i, :n, :n]) for i, (n, _) in
                                enumerate(sizes)],
                               [torch.tensor(p["a"][i, :n] / p["a"][i, :n].sum())
                                for i, (n, _) in enumerate(sizes)])
    Cb, b = ot_batch.pad_batch([torch.tensor(p["Cb"][i, :m, :m]) for i, (_, m) in
                                enumerate(sizes)],
                               [torch.tensor(p["b"][i, :m] / p["b"][i, :m].sum())
                                for i, (_, m) in enumerate(sizes)])
    padded = [x.clone().requires_grad_(True) for x in (Ca, Cb, a, b)]
    res = ot_batch.solve_gromov_batch(padded[0], padded[1], a=padded[2], b=padded[3], **kw)
    res.value.sum().backward()
    grads = [x.grad.numpy() for x in padded]
    assert all(np.isfinite(g).all() for g in grads)
    for i, (n, m) in enumerate(sizes):
        real = [np.s_[i, :n, :n], np.s_[i, :m, :m], np.s_[i, :n], np.s_[i, :m]]
        for g, one, sl in zip(grads, singles[i], real):
            np.testing.assert_allclose(g[sl], one, rtol=1e-6, atol=1e-8 * np.abs(one).max())
        assert np.all(grads[2][i, n:] == 0) and np.all(grads[3][i, m:] == 0)


def test_n_init_uses_the_kept_start():
    """With several starts the weights' gradients are the duals of the kept plan: the exact
    (network simplex) duals of the linearised problem at the returned plan."""
    p, _ = _problem(1, B=4)
    res, t = _torch_solve(p, False, n_init=3, tol=1e-10)
    assert (res.log["init"].numpy() > 0).any()  # some problem keeps another start than T_init
    res.value.sum().backward()
    cost = gromov_cost.decompose(np, p["Ca"], p["Cb"], "sqeuclidean", False, True)
    T = res.plan.numpy()
    G = 2 * gromov_cost.product(np, cost, T)
    for i in range(T.shape[0]):
        _, log = ot.emd(p["a"][i], p["b"][i], G[i], log=True)
        for k, ref in (("a", log["u"]), ("b", log["v"])):
            ref = ref - ref.mean()
            np.testing.assert_allclose(t[k].grad.numpy()[i], ref, rtol=0,
                                       atol=1e-6 * np.abs(ref).max(), err_msg=f"{k}[{i}]")


def test_terms_are_zero_and_only_where_gradients_flow():
    p, _ = _problem(2, B=2)
    kw = dict(reg=1.0, tol=1e-6)
    plain = ot_batch.solve_gromov_batch(*(torch.tensor(p[k]) for k in ("Ca", "Cb")),
                                        a=torch.tensor(p["a"]), b=torch.tensor(p["b"]), **kw)
    a = torch.tensor(p["a"], requires_grad=True)
    env = ot_batch.solve_gromov_batch(*(torch.tensor(p[k]) for k in ("Ca", "Cb")), a=a,
                                      b=torch.tensor(p["b"]), **kw)
    assert torch.equal(env.value.detach(), plain.value)  # the added terms are exact zeros
    assert env.value.requires_grad and not plain.value.requires_grad
    env.value.sum().backward()
    assert torch.isfinite(a.grad).all() and a.grad.abs().max() > 0
    det = ot_batch.solve_gromov_batch(*(torch.tensor(p[k]) for k in ("Ca", "Cb")),
                                      a=torch.tensor(p["a"], requires_grad=True),
                                      b=torch.tensor(p["b"]), grad="detach", **kw)
    assert not det.value.requires_grad


def test_autodiff_reaches_the_weights():
    """grad='autodiff' differentiates the iterations themselves (weights included); an
    unrolled derivative, not the envelope's, so only its presence is checked here."""
    p, _ = _problem(2, B=2)
    res, t = _torch_solve(p, False, grad="autodiff", max_iter=5, max_iter_inner=20)
    res.value.sum().backward()
    for k in ("a", "b", "Ca", "Cb"):
        assert t[k].grad is not None and torch.isfinite(t[k].grad).all(), k


def test_autodiff_is_the_derivative_of_the_unrolled_solve():
    """grad='autodiff' differentiates the iterations themselves, warm starts between proximal
    steps included: against central differences of the same fixed number of iterations
    (tol=0; plain Sinkhorn updates, whose over-relaxation switch would make the unrolled map
    only piecewise smooth)."""
    torch = pytest.importorskip("torch")
    from ot_batch.bench.gromov import structures
    Ca, Cb, _ = structures(2, 6, 3)
    rng = np.random.default_rng(0)
    a = torch.tensor(rng.random((2, 6)) + 0.5)
    a = a / a.sum(1, keepdim=True)
    b = torch.full((2, 6), 1 / 6, dtype=torch.float64)
    Cb = torch.tensor(Cb)
    kw = dict(reg=0.5, max_iter=4, tol=0.0, max_iter_inner=7, tol_inner=0.0, grad="autodiff",
              check_every=1, overrelaxation=1.0)

    def val(C, w):
        return ot_batch.solve_gromov_batch(C, Cb, a=w, b=b, **kw).value.sum()
    C = torch.tensor(Ca, requires_grad=True)
    A = a.clone().requires_grad_(True)
    gC, gA = torch.autograd.grad(val(C, A), (C, A))
    D = torch.tensor(rng.normal(size=Ca.shape))
    D = D + D.transpose(1, 2)
    d = torch.tensor(rng.normal(size=(2, 6)))
    d = d - d.mean(1, keepdim=True)
    h, C0 = 1e-6, torch.tensor(Ca)
    fd_C = (val(C0 + h * D, a) - val(C0 - h * D, a)) / (2 * h)
    fd_a = (val(C0, a + h * d) - val(C0, a - h * d)) / (2 * h)
    np.testing.assert_allclose(float((gC * D).sum()), float(fd_C), rtol=1e-5)
    np.testing.assert_allclose(float((gA * d).sum()), float(fd_a), rtol=1e-5)


# ------------------------------------------------------------------ conditional-gradient steps

def test_cg_steps_never_worse_and_stationary(rng):
    """cg_steps: POT's conditional gradient from the proximal solution. The objective never
    rises, the plan meets the marginals, and the end is stationary: the exact OT plan of the
    gradient there does not descend (<G, D - T> >= 0)."""
    from ot_batch.solvers import gromov_cost
    from ot_batch.backends import namespace
    X = rng.normal(size=(6, 12, 2))
    Y = X[:, rng.permutation(12)] + 0.3 * rng.normal(size=(6, 12, 2))
    Ca, Cb = ot_batch.dist_batch(X, X), ot_batch.dist_batch(Y, Y)
    kw = dict(reg=1.0, max_iter=5, tol=1e-3)  # a short proximal run leaves room
    base = ot_batch.solve_gromov_batch(Ca, Cb, **kw)
    cg = ot_batch.solve_gromov_batch(Ca, Cb, cg_steps=50, **kw)
    assert np.all(cg.value <= base.value * (1 + 1e-12))
    assert np.any(cg.value < base.value * (1 - 1e-3))  # it does move some problems
    np.testing.assert_allclose(cg.plan.sum(2), 1 / 12, atol=1e-12)
    np.testing.assert_allclose(cg.plan.sum(1), 1 / 12, atol=1e-12)
    xp, _ = namespace(Ca=Ca)
    cost = gromov_cost.decompose(xp, Ca, Cb, "sqeuclidean", False, True)
    G = gromov_cost.linearize(xp, cost, cg.plan, np.ones(6))[0]
    D = ot_batch.solve_batch(G, reg=None).plan
    assert np.all(np.sum(G * (D - cg.plan), axis=(1, 2)) >= -1e-10 * np.abs(G).max())
    # the loop of POT's solver from the same plans gets no lower
    for i in range(6):
        T = ot.gromov.gromov_wasserstein(Ca[i], Cb[i], G0=cg.plan[i], tol_rel=1e-12,
                                         tol_abs=0, max_iter=1000)
        assert ot.gromov.gwloss(*ot.gromov.init_matrix(Ca[i], Cb[i], T.sum(1), T.sum(0)),
                                T) >= cg.value[i] * (1 - 1e-9)


def test_cg_steps_weight_gradients_are_exact_duals():
    """After cg_steps the gradients in a and b are the duals of the last exact linear
    program, and match finite differences of the re-solved value."""
    p, dirs = _problem(5)
    kw = dict(SOLVE, cg_steps=30)
    t = {k: torch.tensor(p[k], requires_grad=True) for k in ("a", "b")}
    res = ot_batch.solve_gromov_batch(torch.tensor(p["Ca"]), torch.tensor(p["Cb"]), a=t["a"],
                                      b=t["b"], T_init=torch.tensor(p["T0"]), **kw)
    res.value.sum().backward()
    got = (t["a"].grad.numpy() * dirs["a"]).sum(1) + (t["b"].grad.numpy() * dirs["b"]).sum(1)
    vals = []
    for sign in (1.0, -1.0):
        r = ot_batch.solve_gromov_batch(p["Ca"], p["Cb"], a=p["a"] + sign * H * dirs["a"],
                                        b=p["b"] + sign * H * dirs["b"], T_init=p["T0"], **kw)
        vals.append(r.value)
    np.testing.assert_allclose(got, (vals[0] - vals[1]) / (2 * H), rtol=RTOL)


@pytest.mark.parametrize("kw", [dict(grad="autodiff"), dict(unbalanced=1.0),
                                dict(unbalanced_type="semirelaxed"), dict(cg_steps=-1)])
def test_cg_steps_refused(kw):
    p, _ = _problem(1)
    with pytest.raises(ValueError, match="cg_steps"):
        ot_batch.solve_gromov_batch(p["Ca"], p["Cb"], reg=1.0, **{"cg_steps": 3, **kw})
