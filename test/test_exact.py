"""Exact OT (``solve_batch(M)``, ``reg=None``) against POT's ``ot.emd`` / ``ot.emd2``.

Every backend, float64 and float32, uniform and general weights, padded batches, ties and
single points; the plan is a vertex meeting its marginals, the duals are feasible and
complementary, the certificate closes; envelope gradients against POT's and finite
differences; bad input gets errors naming the argument.
"""
from __future__ import annotations

import numpy as np
import ot
import pytest

import ot_batch
from conftest import cloud_costs, random_weights


def _emd2(M, a, b):
    return np.array([ot.emd2(a[i], b[i], M[i]) for i in range(M.shape[0])])


def _problem(rng, batch, n, m, uniform):
    M = cloud_costs(rng, batch, n, m)
    if uniform:
        return M, np.full((batch, n), 1.0 / n), np.full((batch, m), 1.0 / m)
    return M, random_weights(rng, batch, n), random_weights(rng, batch, m)


def _check_certificate(M, a, b, res, bk, rtol=1e-9, marg_tol=1e-12):
    """Vertex plan meeting its marginals, feasible complementary duals, closed gap."""
    T = bk.to_numpy(res.plan).astype(np.float64)
    f, g = (bk.to_numpy(x).astype(np.float64) for x in res.potentials)
    scale = np.abs(M).max()
    np.testing.assert_allclose(T.sum(2), a, atol=marg_tol)
    np.testing.assert_allclose(T.sum(1), b, atol=marg_tol)
    assert (T >= 0).all()
    n, m = M.shape[1:]
    assert ((T > 0).sum((1, 2)) <= n + m - 1).all()  # a basic (vertex) solution
    reduced = M - f[:, :, None] - g[:, None, :]
    assert reduced.min() >= -rtol * scale
    assert np.abs(np.where(T > 0, reduced, 0)).max() <= rtol * scale  # complementary slackness
    gap = bk.to_numpy(res.log["gap"])
    assert np.all(np.abs(gap) <= rtol * scale)
    assert np.all(bk.to_numpy(res.log["dual_infeasibility"]) <= rtol * scale)
    assert bk.to_numpy(res.log["converged"]).all()


@pytest.mark.parametrize("uniform", [True, False])
@pytest.mark.parametrize("n, m", [(12, 12), (9, 14), (15, 6)])
def test_value_plan_duals_match_emd(bk, rng, uniform, n, m):
    M, a, b = _problem(rng, 4, n, m, uniform)
    res = ot_batch.solve_batch(bk.asarray(M), a=bk.asarray(a), b=bk.asarray(b))
    ref = _emd2(M, a, b)
    np.testing.assert_allclose(bk.to_numpy(res.value), ref, rtol=1e-9)
    np.testing.assert_allclose(bk.to_numpy(res.value_linear), ref, rtol=1e-9)
    _check_certificate(M, a, b, res, bk)
    # generic costs: the optimal plan is unique, so it is ot.emd's
    for i in range(M.shape[0]):
        np.testing.assert_allclose(bk.to_numpy(res.plan)[i], ot.emd(a[i], b[i], M[i]),
                                   atol=1e-12)


def test_uniform_square_plan_is_permutation(bk, rng):
    M, a, b = _problem(rng, 3, 10, 10, True)
    T = bk.to_numpy(ot_batch.solve_batch(bk.asarray(M)).plan)
    assert np.array_equal(np.sort(T * 10, axis=2)[:, :, -1], np.ones((3, 10)))
    assert ((T > 0).sum((1, 2)) == 10).all()


def test_methods_agree(rng):
    M, a, b = _problem(rng, 5, 16, 16, True)
    ref = _emd2(M, a, b)
    for method in ("network_simplex", "assignment"):
        res = ot_batch.solve_batch(M, method=method)
        assert res.log["method"] == method
        np.testing.assert_allclose(res.value, ref, rtol=1e-12)
        _check_certificate(M, a, b, res, _NumpyBk)
    assert ot_batch.solve_batch(M).log["method"] == "network_simplex"


def test_gpu_method_in_interpreter(rng):
    """The Triton auction (``method='gpu'``) under TRITON_INTERPRET=1 on CPU tensors."""
    torch = pytest.importorskip("torch")
    pytest.importorskip("triton")
    for n, m in ((8, 8), (4, 6)):
        M, a, b = _problem(rng, 3, n, m, True)
        res = ot_batch.solve_batch(torch.as_tensor(M), method="gpu")
        assert res.log["method"] == "gpu"
        np.testing.assert_allclose(res.value.numpy(), _emd2(M, a, b), rtol=1e-9)
        _check_certificate(M, a, b, res, _TorchBk)


class _NumpyBk:
    @staticmethod
    def to_numpy(x):
        return np.asarray(x)


class _TorchBk:
    @staticmethod
    def to_numpy(x):
        return x.detach().cpu().numpy()


def test_float32_plan_optimal_for_float32_costs(bk, rng):
    M, a, b = _problem(rng, 4, 11, 13, False)
    M32 = M.astype(np.float32)
    res = ot_batch.solve_batch(bk.asarray(M32), a=bk.asarray(a, np.float32),
                               b=bk.asarray(b, np.float32))
    assert str(res.value.dtype).endswith("float32")
    ref = _emd2(M32.astype(np.float64), a.astype(np.float32).astype(np.float64),
                b.astype(np.float32).astype(np.float64))
    np.testing.assert_allclose(bk.to_numpy(res.value), ref, rtol=1e-6)


def test_padded_batch_zero_weights(bk, rng):
    sizes = [(5, 7), (9, 4), (3, 3)]
    Ms, As, Bs = [], [], []
    for n, m in sizes:
        M, a, b = _problem(rng, 1, n, m, False)
        Ms.append(M[0]), As.append(a[0]), Bs.append(b[0])
    N, K = max(n for n, _ in sizes), max(m for _, m in sizes)
    M = np.zeros((3, N, K))
    a, b = np.zeros((3, N)), np.zeros((3, K))
    for i, (n, m) in enumerate(sizes):
        M[i, :n, :m], a[i, :n], b[i, :m] = Ms[i], As[i], Bs[i]
    res = ot_batch.solve_batch(bk.asarray(M), a=bk.asarray(a), b=bk.asarray(b))
    ref = np.array([ot.emd2(As[i], Bs[i], Ms[i]) for i in range(3)])
    np.testing.assert_allclose(bk.to_numpy(res.value), ref, rtol=1e-9)
    _check_certificate(M, a, b, res, bk)
    T = bk.to_numpy(res.plan)
    for i, (n, m) in enumerate(sizes):
        assert np.abs(T[i, n:]).sum() == 0 and np.abs(T[i, :, m:]).sum() == 0


@pytest.mark.parametrize("n, m", [(1, 1), (1, 5), (6, 1)])
def test_single_points(bk, rng, n, m):
    M, a, b = _problem(rng, 2, n, m, False)
    res = ot_batch.solve_batch(bk.asarray(M), a=bk.asarray(a), b=bk.asarray(b))
    np.testing.assert_allclose(bk.to_numpy(res.value), _emd2(M, a, b), rtol=1e-12)
    _check_certificate(M, a, b, res, bk)


def test_ties_and_repeated_points(bk, rng):
    X = rng.integers(0, 3, size=(4, 10, 2)).astype(np.float64)  # many repeated points
    Y = rng.integers(0, 3, size=(4, 10, 2)).astype(np.float64)
    M = ((X[:, :, None] - Y[:, None]) ** 2).sum(-1)  # integer costs: many optimal plans
    a = b = np.full((4, 10), 0.1)
    res = ot_batch.solve_batch(bk.asarray(M))
    np.testing.assert_allclose(bk.to_numpy(res.value), _emd2(M, a, b), rtol=1e-12, atol=1e-14)
    _check_certificate(M, a, b, res, bk)


def test_loop_vs_batch(bk, rng):
    M, a, b = _problem(rng, 5, 8, 10, False)
    batch = ot_batch.solve_batch(bk.asarray(M), a=bk.asarray(a), b=bk.asarray(b))
    for i in range(5):
        one = ot_batch.solve_batch(bk.asarray(M[i:i + 1]), a=bk.asarray(a[i:i + 1]),
                                   b=bk.asarray(b[i:i + 1]))
        np.testing.assert_allclose(bk.to_numpy(one.plan)[0], bk.to_numpy(batch.plan)[i])
        np.testing.assert_allclose(bk.to_numpy(one.value)[0], bk.to_numpy(batch.value)[i])


def test_duals_match_pot(rng):
    M, a, b = _problem(rng, 3, 7, 9, False)
    res = ot_batch.solve_batch(M, a=a, b=b)
    for i in range(3):
        _, log = ot.emd(a[i], b[i], M[i], log=True)
        np.testing.assert_allclose(res.potentials[0][i], log["u"], atol=1e-10)
        np.testing.assert_allclose(res.potentials[1][i], log["v"], atol=1e-10)


def test_non_convergence_reported(rng):
    M, a, b = _problem(rng, 3, 30, 30, False)
    res = ot_batch.solve_batch(M, a=a, b=b, max_iter=2)
    assert not res.log["converged"].any()
    assert res.status != "converged"


def test_warm_start_and_threads(rng):
    M, a, b = _problem(rng, 6, 9, 9, False)
    res = ot_batch.solve_batch(M, a=a, b=b)
    warm = ot_batch.solve_batch(M, a=a, b=b, potentials_init=res.potentials, n_threads=1)
    np.testing.assert_allclose(warm.value, res.value, rtol=1e-12)
    np.testing.assert_allclose(warm.plan, res.plan, atol=1e-14)


def test_thread_count():
    from ot_batch.solvers import exact_host

    assert exact_host.threads(1, 10) == 1
    assert exact_host.threads(3, 2) == 2  # never more than the batch
    assert exact_host.threads(None, 10**6) == exact_host.threads("max", 10**6) >= 1


def test_inputs_not_modified(rng):
    M, a, b = _problem(rng, 2, 6, 6, False)
    copies = [x.copy() for x in (M, a, b)]
    ot_batch.solve_batch(M, a=a, b=b)
    for x, c in zip((M, a, b), copies):
        assert np.array_equal(x, c)


# Gradients ------------------------------------------------------------------------------

def test_torch_gradients_match_emd2(rng):
    torch = pytest.importorskip("torch")
    M, a, b = _problem(rng, 3, 6, 8, False)
    Mt, at, bt = (torch.tensor(x, requires_grad=True) for x in (M, a, b))
    res = ot_batch.solve_batch(Mt, a=at, b=bt)
    res.value.sum().backward()
    for i in range(3):
        Mi, ai, bi = (torch.tensor(x[i], requires_grad=True) for x in (M, a, b))
        ot.emd2(ai, bi, Mi).backward()
        torch.testing.assert_close(Mt.grad[i], Mi.grad)
        torch.testing.assert_close(at.grad[i], ai.grad)
        torch.testing.assert_close(bt.grad[i], bi.grad)


def test_jax_gradients_and_jit(rng):
    import jax
    import jax.numpy as jnp

    M, a, b = _problem(rng, 3, 6, 8, False)

    def total(M_, a_, b_):
        return ot_batch.solve_batch(M_, a=a_, b=b_).value.sum()

    gM, ga, gb = jax.grad(total, argnums=(0, 1, 2))(jnp.asarray(M), jnp.asarray(a),
                                                      jnp.asarray(b))
    res = ot_batch.solve_batch(M, a=a, b=b)
    np.testing.assert_allclose(np.asarray(gM), res.plan, atol=1e-12)
    f, g = res.potentials
    np.testing.assert_allclose(np.asarray(ga), f - f.mean(1, keepdims=True), atol=1e-10)
    np.testing.assert_allclose(np.asarray(gb), g - g.mean(1, keepdims=True), atol=1e-10)
    jitted = jax.jit(total)(jnp.asarray(M), jnp.asarray(a), jnp.asarray(b))
    np.testing.assert_allclose(float(jitted), res.value.sum(), rtol=1e-12)


def test_finite_differences_in_points(bk, rng):
    """solve_sample_batch(reg=None): d value / d X through M, against central differences
    (generic clouds: the optimal plan is unique and locally constant)."""
    if not bk.differentiable:
        pytest.skip("values only")
    X, Y = rng.normal(size=(2, 7, 2)), rng.normal(size=(2, 9, 2))
    a, b = random_weights(rng, 2, 7), random_weights(rng, 2, 9)
    direction = rng.normal(size=X.shape)

    def value(Xn):
        return ot_batch.solve_sample_batch(bk.asarray(Xn), bk.asarray(Y), a=bk.asarray(a),
                                           b=bk.asarray(b)).value

    h = 1e-6
    fd = (bk.to_numpy(value(X + h * direction)) - bk.to_numpy(value(X - h * direction))) / (2 * h)
    if bk.name == "torch":
        import torch

        Xt = torch.tensor(X, requires_grad=True)
        ot_batch.solve_sample_batch(Xt, torch.tensor(Y), a=torch.tensor(a),
                                    b=torch.tensor(b)).value.sum().backward()
        grad = Xt.grad.numpy()
    else:
        import jax

        def total(Xj):
            return ot_batch.solve_sample_batch(Xj, bk.asarray(Y), a=bk.asarray(a),
                                               b=bk.asarray(b)).value.sum()

        grad = np.asarray(jax.grad(total)(bk.asarray(X)))
    np.testing.assert_allclose((grad * direction).sum((1, 2)), fd, rtol=1e-5, atol=1e-8)


# Bad input ------------------------------------------------------------------------------

def test_errors(rng):
    M, a, b = _problem(rng, 2, 5, 6, False)
    bad = M.copy()
    bad[1, 2, 3] = np.nan
    with pytest.raises(ValueError, match="M contains NaN"):
        ot_batch.solve_batch(bad)
    with pytest.raises(ValueError, match="same total mass"):
        ot_batch.solve_batch(M, a=a * 1.1, b=b)
    neg = a.copy()
    neg[0, 0], neg[0, 1] = -0.1, neg[0, 1] + 0.1
    with pytest.raises(ValueError, match="a has negative weights"):
        ot_batch.solve_batch(M, a=neg, b=b)
    with pytest.raises(ValueError, match="method='assignment' needs square"):
        ot_batch.solve_batch(M, method="assignment")
    with pytest.raises(ValueError, match="method='assignment' needs uniform"):
        ot_batch.solve_batch(M[:, :5, :5], a=a, b=a, method="assignment")
    with pytest.raises(ValueError, match="method='gpu' needs CUDA"):
        ot_batch.solve_batch(M, method="gpu")
    with pytest.raises(ValueError, match="unknown method"):
        ot_batch.solve_batch(M, method="hungarian")
    with pytest.raises(ValueError, match="pass reg=None"):
        ot_batch.solve_batch(M, reg=0.1, method="network_simplex")
    with pytest.raises(ValueError, match="grad="):
        ot_batch.solve_batch(M, grad="autodiff")
    with pytest.raises(ValueError, match="unbalanced"):
        ot_batch.solve_batch(M, unbalanced=1.0)
    with pytest.raises(ValueError, match="n_threads"):
        ot_batch.solve_batch(M, n_threads=0)
    with pytest.raises(ValueError, match="lazy=True"):
        ot_batch.solve_sample_batch(rng.normal(size=(2, 4, 2)), rng.normal(size=(2, 5, 2)),
                                    lazy=True)
    with pytest.raises(ValueError, match="potentials_init"):
        ot_batch.solve_batch(M[:, :5, :5], method="assignment",
                             potentials_init=(np.zeros((2, 5)), np.zeros((2, 5))))


def test_proximal_kept_under_its_name(rng):
    M, a, b = _problem(rng, 2, 6, 6, True)
    res = ot_batch.solve_batch(M, method="proximal", max_iter=3000, tol=1e-9)
    np.testing.assert_allclose(res.value, _emd2(M, a, b), rtol=1e-2)
    assert "n_iter" in res.log


def test_pad_batch(bk, rng):
    """Square problems of different sizes through ``pad_batch``: zero-weight padding."""
    sizes = (4, 7, 5)
    Ms = [cloud_costs(rng, 1, n, n)[0] for n in sizes]
    ws = [random_weights(rng, 1, n)[0] for n in sizes]
    C, w = ot_batch.pad_batch([bk.asarray(M) for M in Ms], [bk.asarray(x) for x in ws])
    res = ot_batch.solve_batch(C, a=w, b=w)
    ref = [ot.emd2(x, x, M) for M, x in zip(Ms, ws)]
    np.testing.assert_allclose(bk.to_numpy(res.value), ref, rtol=1e-9)
    _check_certificate(bk.to_numpy(C), bk.to_numpy(w), bk.to_numpy(w), res, bk)


@pytest.mark.gpu
@pytest.mark.parametrize("B, n, m", [(64, 128, 128), (16, 512, 512), (1024, 64, 64),
                                     (8, 100, 150), (4, 48, 32)])
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_gpu_auction_full_sizes(rng, B, n, m, dtype):
    """The GPU auction at the benchmark's sizes against the host network simplex."""
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("needs CUDA")
    X, Y = rng.random((B, n, 2)), rng.random((B, m, 2))
    M = ((X[:, :, None] - Y[:, None]) ** 2).sum(-1).astype(dtype)
    res = ot_batch.solve_batch(torch.as_tensor(M, device="cuda"))
    assert res.log["method"] == "gpu" and res.plan.is_cuda
    host = ot_batch.solve_batch(M.astype(np.float64), method="network_simplex")
    rtol = 1e-9 if dtype == "float64" else 1e-6
    np.testing.assert_allclose(res.value.cpu().numpy(), host.value, rtol=rtol)
    a, b = np.full((B, n), 1.0 / n), np.full((B, m), 1.0 / m)
    f32 = dtype == "float32"
    _check_certificate(M.astype(np.float64), a, b, res, _TorchBk, rtol=1e-6 if f32 else 1e-9,
                       marg_tol=1e-7 if f32 else 1e-12)


def test_torch_func_grad(rng):
    """torch.func.grad sees the envelope gradient too (its tensors do not require grad)."""
    torch = pytest.importorskip("torch")
    M, a, b = _problem(rng, 2, 5, 6, False)
    grad = torch.func.grad(lambda M_: ot_batch.solve_batch(M_, a=torch.tensor(a),
                                                           b=torch.tensor(b)).value.sum())
    res = ot_batch.solve_batch(M, a=a, b=b)
    np.testing.assert_allclose(grad(torch.tensor(M)).numpy(), res.plan, atol=1e-12)


def test_empty_batch(bk):
    res = ot_batch.solve_batch(bk.asarray(np.zeros((0, 3, 4))))
    assert tuple(res.value.shape) == (0,) and tuple(res.plan.shape) == (0, 3, 4)
    assert tuple(res.log["gap"].shape) == (0,)
