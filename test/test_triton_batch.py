"""The fused Triton Sinkhorn (``backends/triton``) against the generic solver and POT.

Without a GPU the kernels run in Triton's interpreter on CPU tensors (small shapes,
``backend="triton"`` requested explicitly: auto-selection takes them on CUDA only). With
``make test-gpu`` the ``gpu`` tests run the same comparisons at full size on CUDA.
"""
from __future__ import annotations

import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("triton")

import ot_batch  # noqa: E402
from ot_batch.backends import pick  # noqa: E402

GPU = torch.cuda.is_available()
DEV = "cuda" if GPU else "cpu"


def _points(B, n, m, d, seed=0, device="cpu", dtype=torch.float32):
    g = np.random.default_rng(seed)
    X = torch.tensor(g.random((B, n, d)), dtype=dtype, device=device)
    Y = torch.tensor(g.random((B, m, d)) * 0.9 + 0.05, dtype=dtype, device=device)
    return X, Y


def _costs(B, n, m, d=3, seed=0, device="cpu"):
    X, Y = _points(B, n, m, d, seed, device)
    return ot_batch.dist_batch(X, Y) / d


def _rel(x, ref):
    x, ref = x.detach().double().cpu(), ref.detach().double().cpu()
    return float((x - ref).abs().max() / ref.abs().max().clamp_min(1e-30))


def _close(fused, ref, rtol=1e-5):
    """Values, plans and potentials of a float32 fused solve against a float64 reference."""
    assert _rel(fused.value, ref.value) < rtol
    assert _rel(fused.value_linear, ref.value_linear) < rtol
    assert _rel(fused.plan, ref.plan) < 20 * rtol
    assert fused.value.dtype == torch.float32 and fused.plan.dtype == torch.float32


SOLVES = [
    dict(method="log_sinkhorn"),
    dict(method="sinkhorn"),
    dict(method="log_sinkhorn", reg_type="kl", unbalanced=0.5),
    dict(method="sinkhorn", unbalanced=(0.5, math.inf)),
    dict(method="log_sinkhorn", unbalanced=(math.inf, 2.0)),
]


@pytest.mark.parametrize("kw", SOLVES, ids=lambda k: "-".join(map(str, k.values())))
def test_on_chip_matches_generic(kw):
    """Problems that fit one program: whole solves in one launch, same iteration counts."""
    M = _costs(4, 6, 9)
    M[1] *= 3.0  # problems converge at different iterations
    opts = dict(reg=0.1, max_iter=300, tol=1e-4, **kw)
    fused = ot_batch.solve_batch(M, backend="triton", **opts)
    ref = ot_batch.solve_batch(M.double(), backend="generic", **opts)
    _close(fused, ref)
    assert fused.log["n_iter"].tolist() == ref.log["n_iter"].tolist()
    if "unbalanced" not in kw:  # unbalanced ones contract at a rate set by tau / (tau + reg)
        assert len(set(ref.log["n_iter"].tolist())) > 1
    assert fused.log["converged"].tolist() == ref.log["converged"].tolist()
    for p, q in zip(fused.potentials, ref.potentials):
        assert _rel(p, q) < 1e-4


@pytest.mark.parametrize("points", [False, True], ids=["matrix", "points"])
def test_on_chip_sharp_kernels(points):
    """reg so small that exp(-M / reg) underflows (and, for the negative dot product,
    overflows): the absorbed iterations fall back to true log-sum-exps."""
    X, Y = _points(3, 10, 12, 2)
    X = X * 3.0
    metric = "negdot" if points else "sqeuclidean"
    opts = dict(reg=1e-3, max_iter=30, tol=0.0)
    ref = ot_batch.solve_sample_batch(X.double(), Y.double(), metric=metric,
                                      backend="generic", **opts)
    if points:
        fused = ot_batch.solve_sample_batch(X, Y, metric=metric, backend="triton", **opts)
    else:
        fused = ot_batch.solve_batch(ot_batch.dist_batch(X, Y), backend="triton", **opts)
    assert bool(torch.isfinite(fused.value).all())
    assert _rel(fused.value_linear, ref.value_linear) < 1e-4


@pytest.mark.parametrize("kw", SOLVES[:4], ids=lambda k: "-".join(map(str, k.values())))
def test_streaming_matches_generic(kw):
    """Problems too big for one program: fused row and column passes, device-side checks."""
    M = _costs(2, 70, 90)
    M[0] *= 2.0
    a = torch.rand(2, 70) + 0.1
    a[1, :5] = 0.0  # zero weights stay exactly zero in the plan
    a = a / a.sum(1, keepdim=True)
    opts = dict(reg=0.1, a=a, max_iter=60, tol=1e-4, **kw)
    fused = ot_batch.solve_batch(M, backend="triton", **opts)
    ref = ot_batch.solve_batch(M.double(), backend="generic", **{**opts, "a": a.double()})
    _close(fused, ref)
    assert fused.log["n_iter"].tolist() == ref.log["n_iter"].tolist()
    assert float(fused.plan[1, :5].abs().max()) == 0.0


def test_fixed_iterations_match_pot():
    """tol=0 runs max_iter iterations for every problem, as POT's ot.batch does."""
    ot = pytest.importorskip("ot")
    M = _costs(3, 8, 8, d=2)
    fused = ot_batch.solve_batch(M, reg=0.05, max_iter=50, tol=0.0, backend="triton")
    pot = ot.batch.solve_batch(M.double(), reg=0.05, max_iter=50, tol=0.0,
                               method="log_sinkhorn")
    assert _rel(fused.value_linear, pot.value_linear) < 1e-5
    assert fused.log["n_iter"].tolist() == [50] * 3
    assert not bool(fused.log["converged"].any())


def test_half_inputs_accumulate_in_float32():
    M = _costs(2, 70, 90)
    ref = ot_batch.solve_batch(M.to(torch.bfloat16).double(), reg=0.1, max_iter=40,
                               tol=0.0, backend="generic")
    for Mh in (M.to(torch.bfloat16), M.to(torch.bfloat16)[:, :8, :8]):
        fused = ot_batch.solve_batch(Mh, reg=0.1, max_iter=40, tol=0.0, backend="triton")
        assert fused.value.dtype == torch.float32
    fused = ot_batch.solve_batch(M.to(torch.bfloat16), reg=0.1, max_iter=40, tol=0.0,
                                 backend="triton")
    assert _rel(fused.value_linear, ref.value_linear) < 1e-5


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "fp16"])
@pytest.mark.parametrize("size", [(8, 9), (40, 130)], ids=["on-chip", "streaming"])
def test_half_points(dtype, size):
    X, Y = _points(2, *size, 3)
    Xh, Yh = X.to(dtype), Y.to(dtype)
    opts = dict(reg=0.5, max_iter=30, tol=0.0)
    fused = ot_batch.solve_sample_batch(Xh, Yh, backend="triton", **opts)
    ref = ot_batch.solve_sample_batch(Xh.double(), Yh.double(), backend="generic", **opts)
    assert fused.value.dtype == torch.float32
    assert _rel(fused.value_linear, ref.value_linear) < 1e-5


@pytest.mark.parametrize("size", [(6, 9), (70, 90)], ids=["on-chip", "streaming"])
def test_envelope_gradients_match_generic(size):
    M = _costs(2, *size).requires_grad_()
    a = torch.full((2, size[0]), 1 / size[0], requires_grad=True)
    fused = ot_batch.solve_batch(M, reg=0.1, a=a, tol=1e-6, backend="triton")
    gM, ga = torch.autograd.grad(fused.value.sum(), (M, a))
    M64, a64 = M.detach().double().requires_grad_(), a.detach().double().requires_grad_()
    ref = ot_batch.solve_batch(M64, reg=0.1, a=a64, tol=1e-9, backend="generic")
    rM, ra = torch.autograd.grad(ref.value.sum(), (M64, a64))
    assert _rel(gM, rM) < 1e-4 and _rel(ga, ra) < 1e-4


def test_selection_and_refusals():
    M = _costs(2, 5, 5)
    # auto-selection takes the kernels on CUDA only (the interpreter is for tests)
    from ot_batch import _validate
    pb = _validate.linear_problem(M, 0.1, None, None, 10, 1e-5, "auto", 1, 1e-3, "entropy",
                                  "envelope", None, None, None, 10, False, 0.1)
    chosen = pick("solve_batch", "auto", None, problem=pb)
    assert (chosen is not None and chosen.__name__ == "_solve_fused") == M.is_cuda
    with pytest.raises(ValueError, match="backend='triton'"):
        ot_batch.solve_batch(M, reg=0.1, grad="autodiff", backend="triton")
    with pytest.raises(ValueError, match="backend='triton'"):
        ot_batch.solve_batch(M.double(), reg=0.1, backend="triton")
    with pytest.raises(ValueError, match="backend='triton'"):
        ot_batch.solve_batch(M, reg=None, backend="triton")


@pytest.mark.parametrize("size", [(5, 7), (70, 90)], ids=["on-chip", "streaming"])
def test_nonfinite_costs_raise(size):
    """M is checked in the final pass of the kernels (no separate pass over it)."""
    M = _costs(3, *size)
    for bad in (math.nan, math.inf):
        Mb = M.clone()
        Mb[2, 1, 3] = bad
        with pytest.raises(ValueError, match=r"M contains NaN or inf \(problems \[2\]\)"):
            ot_batch.solve_batch(Mb, reg=0.1, max_iter=5, backend="triton")


def test_edge_cases_and_no_mutation():
    M = _costs(2, 5, 7)
    before = M.clone()
    res = ot_batch.solve_batch(M, reg=0.1, max_iter=0, backend="triton")
    assert res.log["n_iter"].tolist() == [0, 0]
    assert torch.equal(M, before)
    empty = ot_batch.solve_batch(M[:0], reg=0.1, backend="triton")
    assert empty.plan.shape == (0, 5, 7)
    init = ot_batch.solve_batch(M, reg=0.1, backend="generic", tol=1e-7).potentials
    warm = ot_batch.solve_batch(M, reg=0.1, potentials_init=init, tol=1e-4, check_every=1,
                                backend="triton")
    assert warm.log["n_iter"].tolist() == [1, 1]


@pytest.mark.parametrize("metric", ["sqeuclidean", "negdot"])
@pytest.mark.parametrize("kw", [dict(), dict(method="sinkhorn", reg_type="kl",
                                unbalanced=(0.5, math.inf))],
                         ids=["log-balanced", "exp-unbalanced-kl"])
@pytest.mark.parametrize("size", [(20, 30), (40, 130)], ids=["on-chip", "streaming"])
def test_points_match_generic_with_gradients(metric, kw, size):
    """The cost recomputed in tiles from the points: values, plans and the envelope gradients
    of the point clouds against the generic solver on dist_batch (autograd)."""
    X, Y = _points(2, *size, 3)
    X, Y = X + 2.0, Y + 2.0  # off-centre: the kernel must not lose digits to |x|^2 + |y|^2
    opts = dict(reg=0.5, metric=metric, max_iter=100, tol=1e-5, **kw)
    Xf, Yf = X.clone().requires_grad_(), Y.clone().requires_grad_()
    fused = ot_batch.solve_sample_batch(Xf, Yf, backend="triton", **opts)
    fused.value.sum().backward()
    Xd, Yd = X.double().requires_grad_(), Y.double().requires_grad_()
    ref = ot_batch.solve_sample_batch(Xd, Yd, backend="generic", **opts)
    ref.value.sum().backward()
    _close(fused, ref)
    assert fused.log["n_iter"].tolist() == ref.log["n_iter"].tolist()
    assert _rel(Xf.grad, Xd.grad) < 1e-4 and _rel(Yf.grad, Yd.grad) < 1e-4


def test_single_large_problem_takes_the_softmin_kernel(monkeypatch):
    """One pair of clouds too big for one program (B = 1, d = 150: the d loop) goes through
    the large-cloud softmin kernel and gives POT's ``ot.solve_sample`` numbers."""
    ot = pytest.importorskip("ot")
    from ot_batch.backends.triton import online_points
    calls = []
    passes = online_points.passes
    monkeypatch.setattr(online_points, "passes", lambda *a, **k: calls.append(1) or passes(
        *a, **k))
    X, Y = _points(1, 150, 120, 150, seed=3)
    fused = ot_batch.solve_sample_batch(X, Y, reg=2.0, max_iter=200, tol=1e-7,
                                        backend="triton")
    assert calls == [1]
    Xn, Yn = X[0].double().numpy(), Y[0].double().numpy()
    ref = ot.solve_sample(Xn, Yn, reg=2.0, max_iter=200, tol=1e-7, reg_type="entropy")
    assert abs(float(fused.value[0]) - float(ref.value)) < 1e-5 * abs(float(ref.value))
    assert _rel(fused.plan[0], torch.as_tensor(ref.plan)) < 2e-4


def test_points_lazy_plan():
    X, Y = _points(3, 20, 30, 3)
    lazy = ot_batch.solve_sample_batch(X, Y, reg=0.2, lazy=True, backend="triton")
    dense = ot_batch.solve_sample_batch(X, Y, reg=0.2, backend="generic")
    assert lazy.plan is None
    assert _rel(lazy.lazy_plan[1], dense.plan[1]) < 1e-4
    assert _rel(lazy.lazy_plan[...], dense.plan) < 1e-4
    assert _rel(lazy.value_linear, dense.value_linear) < 1e-5
    # other metrics go through the cost matrix, lazily too
    eu = ot_batch.solve_sample_batch(X, Y, reg=0.2, metric="euclidean", lazy=True)
    assert eu.plan is None and eu.lazy_plan[0].shape == (20, 30)


def test_points_precision_option():
    """``precision`` reaches the point-cloud kernels (both tile paths) and is checked."""
    for size in ((20, 30), (70, 90)):
        X, Y = _points(3, *size, 3)
        ref = ot_batch.solve_sample_batch(X.double(), Y.double(), reg=0.2, backend="generic")
        res = ot_batch.solve_sample_batch(X, Y, reg=0.2, backend="triton", precision="tf32")
        assert _rel(res.value_linear, ref.value_linear) < 1e-3
    with pytest.raises(ValueError, match="precision"):
        ot_batch.solve_sample_batch(X, Y, reg=0.2, precision="bf16")


@pytest.mark.parametrize("size", [(40, 130), (70, 90)])
def test_points_split_layout_matches_generic(monkeypatch, size):
    """The split layout (one TF32 product of depth 3d for float32 accuracy) on the streaming
    tiles: values, plans and gradients as the generic float64 solver."""
    from ot_batch.backends.triton import online_points, online_solve
    monkeypatch.setattr(online_solve, "SPLIT_MAX_D", 21)
    X, Y = _points(2, *size, 5, seed=4)
    lay = online_points.Layout(1, X, Y, torch.ones(2, size[0]), torch.ones(2, size[1]), None,
                               None, torch.zeros(2, size[0]), torch.zeros(2, size[1]))
    assert lay.split and lay.kP.shape[-1] == 20 and (lay.ld, lay.koff, lay.width) == (20, 5, 15)
    Xg = X.clone().requires_grad_()
    res = ot_batch.solve_sample_batch(Xg, Y, reg=0.3, max_iter=40, tol=0.0, backend="triton")
    Xr = X.double().requires_grad_()
    ref = ot_batch.solve_sample_batch(Xr, Y.double(), reg=0.3, max_iter=40, tol=0.0,
                                      backend="generic")
    assert _rel(res.value_linear, ref.value_linear) < 1e-5
    assert _rel(res.plan, ref.plan) < 1e-4
    gx = torch.autograd.grad(res.value.sum(), Xg)[0]
    gr = torch.autograd.grad(ref.value.sum(), Xr)[0]
    assert _rel(gx, gr) < 1e-4


def test_split_coordinates_layout():
    """[hi, hi, lo, hi]: hi is TF32 (low 13 bits zero), hi + lo is the point exactly, and a
    query window times a key window is hi.hi + hi.lo + lo.hi."""
    from ot_batch.backends.triton.online_solve import split_coordinates
    P = torch.rand(2, 5, 3, generator=torch.Generator().manual_seed(0)) * 3 - 1
    W = split_coordinates(P)
    d = P.shape[2]
    hi, lo = W[..., :d], W[..., 2 * d:3 * d]
    assert W.shape == (2, 5, 4 * d)
    assert int((hi.view(torch.int32) & 0x1FFF).abs().sum()) == 0
    assert torch.equal(hi + lo, P) and torch.equal(W[..., d:2 * d], hi)
    assert torch.equal(W[..., 3 * d:], hi)
    q, k = W[..., :3 * d].double(), W[..., d:].double()
    three = q @ k.transpose(1, 2)
    h, l_ = hi.double(), lo.double()
    ref = h @ h.transpose(1, 2) + h @ l_.transpose(1, 2) + l_ @ h.transpose(1, 2)
    assert torch.allclose(three, ref, rtol=0, atol=1e-12)
    exact = P.double() @ P.double().transpose(1, 2)
    assert float((three - exact).abs().max()) < 1e-6  # the lo.lo term only


def _value_hvp(X, Y, V, backend, dtype, **opts):
    """``(result, gradient, Hessian-vector product)`` of ``value.sum()`` in X."""
    Xg = X.to(dtype).requires_grad_()
    res = ot_batch.solve_sample_batch(Xg, Y.to(dtype), backend=backend, **opts)
    (g,) = torch.autograd.grad(res.value.sum(), Xg, create_graph=True)
    (h,) = torch.autograd.grad((g * V.to(dtype)).sum(), Xg)
    return res, g, h


@pytest.mark.parametrize("size", [(6, 9), (70, 90)], ids=["on-chip", "streaming"])
def test_points_implicit_hvp_matches_generic(size):
    """grad='implicit' on the point-cloud kernels: gradient and Hessian-vector products in X
    equal the generic solver's dense implicit differentiation (float64)."""
    X, Y = _points(2, *size, 2, seed=3)
    V = torch.randn(X.shape, generator=torch.Generator().manual_seed(1))
    opts = dict(reg=0.5, tol=1e-6, max_iter=3000, grad="implicit")
    pick_ = pick("solve_sample_batch", "triton", None, problem=ot_batch._validate.sample_problem(
        X.requires_grad_(), Y, 0.5, None, None, "sqeuclidean", 2, None, 1e-6, "auto", 1, 1e-3,
        "entropy", "implicit", None, None, None, 10, False, 0.1, False))
    assert pick_.__name__ == "_solve_points_fused"
    X = X.detach()
    fused, gf, hf = _value_hvp(X, Y, V, "triton", torch.float32, **opts)
    ref, gg, hg = _value_hvp(X, Y, V, "generic", torch.float64, **opts)
    assert _rel(fused.value, ref.value) < 1e-5
    assert _rel(gf, gg) < 1e-4
    assert _rel(hf, hg) < 1e-3
    assert not fused.value_linear.requires_grad  # only the value's derivatives are implicit
    # a third derivative is refused, not silently zero
    Xg = X.clone().requires_grad_()
    res = ot_batch.solve_sample_batch(Xg, Y, backend="triton", **opts)
    (g,) = torch.autograd.grad(res.value.sum(), Xg, create_graph=True)
    with pytest.raises(RuntimeError, match="third derivatives"):
        torch.autograd.grad((g * V).sum(), Xg, create_graph=True)


def test_points_implicit_selection():
    """Derivatives the kernels do not give (in X_b, in the weights, unbalanced) go to the
    generic solver under 'auto' and are refused for backend='triton'."""
    X, Y = _points(2, 6, 9, 2)
    a = torch.full((2, 6), 1 / 6, requires_grad=True)
    opts = dict(reg=0.5, grad="implicit")
    for kw in (dict(a=a), dict(X_b=Y.clone().requires_grad_()), dict(unbalanced=1.0)):
        args = dict(X_a=X.clone().requires_grad_(), X_b=Y)
        args.update(kw)
        ref = ot_batch.solve_sample_batch(backend="generic", **args, **opts)
        res = ot_batch.solve_sample_batch(**args, **opts)  # auto: the generic solver
        assert _rel(res.value, ref.value) < 1e-9
        with pytest.raises(ValueError):
            ot_batch.solve_sample_batch(backend="triton", **args, **opts)


# Full sizes on a GPU -------------------------------------------------------------------------


@pytest.mark.gpu
@pytest.mark.skipif(not GPU, reason="needs CUDA")
@pytest.mark.parametrize("shape", [(128, 8, 8, 2, 10.0, 1000), (1024, 64, 64, 8, 0.05, 200),
                                   (64, 512, 512, 16, 0.05, 100), (2, 4096, 4096, 64, 0.05, 30)])
def test_gpu_fixed_iterations_match_generic_and_pot(shape):
    """The benchmark workloads' shapes (fewer problems): auto picks the kernels, float32
    within 1e-5 of the float64 generic solver and of POT."""
    ot = pytest.importorskip("ot")
    B, n, m, d, reg, iters = shape
    X, Y = _points(B, n, m, d, device="cuda")
    M = ot_batch.dist_batch(X, Y) / d
    fused = ot_batch.solve_batch(M, reg=reg, max_iter=iters, tol=0.0)
    ref = ot_batch.solve_batch(M.double(), reg=reg, max_iter=iters, tol=0.0, backend="generic")
    assert _rel(fused.value_linear, ref.value_linear) < 1e-5
    pot = ot.batch.solve_batch(M, reg=reg, max_iter=iters, tol=0.0, method="log_sinkhorn")
    assert _rel(fused.value_linear, pot.value_linear) < 1e-5
    s = d ** -0.5
    pts = ot_batch.solve_sample_batch(X * s, Y * s, reg=reg, max_iter=iters, tol=0.0,
                                      lazy=True)
    assert _rel(pts.value_linear, ref.value_linear) < 1e-5


@pytest.mark.gpu
@pytest.mark.skipif(not GPU, reason="needs CUDA")
@pytest.mark.parametrize("kw", SOLVES, ids=lambda k: "-".join(map(str, k.values())))
def test_gpu_convergence_matches_generic(kw):
    M = _costs(32, 300, 200, device="cuda")
    M[::2] *= 2.0
    opts = dict(reg=0.05, max_iter=2000, tol=1e-4, **kw)
    fused = ot_batch.solve_batch(M, **opts)
    ref = ot_batch.solve_batch(M.double(), backend="generic", **opts)
    # both stop once their error is below tol: the plans differ by O(tol), not by round-off
    # (the fixed-iteration tests above hold them to 1e-5)
    _close(fused, ref, rtol=1e-3)
    agree = (fused.log["n_iter"] == ref.log["n_iter"]).float().mean()
    assert float(agree) > 0.9  # float32 errors near tol can move a check by one block


@pytest.mark.gpu
@pytest.mark.skipif(not GPU, reason="needs CUDA")
@pytest.mark.parametrize("shape", [(64, 512, 512, 16), (2, 4096, 4096, 64)],
                         ids=["medium", "large"])
def test_gpu_points_precision_switch(shape):
    """``precision='tf32'`` (one TF32 product per x . y) against float32 and the float64
    generic solver: float32 stays within 1e-5, TF32 within 1e-3 and measurably coarser."""
    B, n, m, d = shape
    X, Y = _points(B, n, m, d, device="cuda")
    s = d ** -0.5
    X, Y = X * s, Y * s
    opts = dict(reg=0.05, max_iter=50, tol=0.0, lazy=True)
    ref = ot_batch.solve_sample_batch(X.double(), Y.double(), backend="generic", **opts)
    f32 = ot_batch.solve_sample_batch(X, Y, **opts)
    tf32 = ot_batch.solve_sample_batch(X, Y, precision="tf32", **opts)
    e32, etf = _rel(f32.value_linear, ref.value_linear), _rel(tf32.value_linear, ref.value_linear)
    assert e32 < 1e-5
    assert etf < 1e-3
    assert etf > e32
