"""Argument and input checks of the public API, on every backend.

Bad input must raise a ValueError/TypeError that names the argument (and, for per-problem
value checks, the problem indices). Also: POT's spellings, empty batches, no in-place changes,
dtype/device kept, and ``jax.jit`` / ``jax.vmap`` of ``solve_batch``.
"""
from __future__ import annotations

import re

import numpy as np
import pytest

import ot_batch
from conftest import cloud_costs, random_weights

# one shape for most tests: eager JAX compiles each operation once per shape
B, N, M_ = 3, 5, 6
METHODS_REG = [("log_sinkhorn", 0.5), ("sinkhorn", 0.5), ("proximal", None)]


@pytest.fixture
def problem(bk, rng):
    """A small valid batch (numpy copies and the same arrays on the backend under test)."""
    M = cloud_costs(rng, B, N, M_)
    a = random_weights(rng, B, N)
    b = random_weights(rng, B, M_)
    return M, a, b, bk.asarray(M), bk.asarray(a), bk.asarray(b)


def _foreign(bk, x: np.ndarray):
    """``x`` as an array of a library other than ``bk``'s."""
    if bk.name == "numpy":
        torch = pytest.importorskip("torch")
        return torch.as_tensor(x.copy())
    return x.copy()


def _iters(bk, n: int = 1000) -> int:
    """``max_iter`` for tests of option plumbing (spellings, aliases, kinds of ``reg``).

    0 on JAX: there every eager solve traces and compiles its ``while_loop`` anew (about half a
    second each), and with ``max_iter=0`` the options still decide the plan and the value. The
    JAX checks that need iterations are the jit/vmap tests below and test_properties.py.
    """
    return 0 if bk.name == "jax" else n


def _arg(name: str) -> str:
    """Regex: ``name`` as a whole word (``a`` must not match inside ``array``)."""
    return rf"(?<![\w\[]){re.escape(name)}(?![\w])"


# --------------------------------------------------------------------------------------------
# M
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("shape", [(N, M_), (B, N, M_, 1), (N,)])
def test_M_not_3d(bk, shape):
    M = bk.asarray(np.ones(shape))
    with pytest.raises(ValueError, match=_arg("M")) as exc:
        ot_batch.solve_batch(M, reg=0.1)
    assert str(tuple(shape)) in str(exc.value)


def test_M_none_is_type_error(bk):
    with pytest.raises(TypeError, match=_arg("M")):
        ot_batch.solve_batch(None, reg=0.1, a=bk.asarray(np.ones((1, 2)) / 2))


def test_M_not_an_array(bk):
    with pytest.raises(TypeError, match=_arg("M")):
        ot_batch.solve_batch(np.ones((1, 2, 2)).tolist(), reg=0.1)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_M_nonfinite_names_problems(bk, rng, bad):
    M = cloud_costs(rng, B, N, M_)
    M[0, 2, 3] = bad
    M[2, 0, 0] = bad
    with pytest.raises(ValueError, match=_arg("M")) as exc:
        ot_batch.solve_batch(bk.asarray(M), reg=0.1)
    msg = str(exc.value)
    assert "NaN" in msg or "inf" in msg
    assert "[0, 2]" in msg, msg


@pytest.mark.parametrize("dtype", [np.int64, np.int32, bool])
def test_M_integer_is_type_error(bk, dtype):
    M = bk.asarray(np.ones((2, 3, 3), dtype=dtype))
    with pytest.raises(TypeError, match=_arg("M")):
        ot_batch.solve_batch(M, reg=0.1)


# --------------------------------------------------------------------------------------------
# a, b
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("arg", ["a", "b"])
@pytest.mark.parametrize("kind", ["length", "batch", "ndim1", "ndim3"])
def test_weights_wrong_shape(bk, problem, arg, kind):
    M, a, b, Mx, ax, bx = problem
    w = a if arg == "a" else b
    bad = {"length": w[:, :-1], "batch": w[:-1], "ndim1": w[0], "ndim3": w[:, :, None]}[kind]
    kw = {"a": ax, "b": bx, arg: bk.asarray(bad)}
    with pytest.raises(ValueError, match=_arg(arg)) as exc:
        ot_batch.solve_batch(Mx, reg=0.1, **kw)
    assert str(tuple(w.shape)) in str(exc.value)  # the expected shape is stated


@pytest.mark.parametrize("arg", ["a", "b"])
def test_weights_negative(bk, problem, arg):
    M, a, b, Mx, ax, bx = problem
    w = (a if arg == "a" else b).copy()
    w[2, 0], w[2, 1] = -w[2, 0], w[2, 1] + 2 * w[2, 0]  # same mass, one negative entry
    kw = {"a": ax, "b": bx, arg: bk.asarray(w)}
    with pytest.raises(ValueError, match=_arg(arg)) as exc:
        ot_batch.solve_batch(Mx, reg=0.1, **kw)
    assert "negative" in str(exc.value)
    assert "[2]" in str(exc.value)


@pytest.mark.parametrize("arg", ["a", "b"])
@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_weights_nonfinite(bk, problem, arg, bad):
    M, a, b, Mx, ax, bx = problem
    w = (a if arg == "a" else b).copy()
    w[1, 0] = bad
    kw = {"a": ax, "b": bx, arg: bk.asarray(w)}
    with pytest.raises(ValueError, match=_arg(arg)) as exc:
        ot_batch.solve_batch(Mx, reg=0.1, **kw)
    assert "[1]" in str(exc.value)


@pytest.mark.parametrize("arg", ["a", "b"])
def test_weights_integer_is_type_error(bk, problem, arg):
    M, a, b, Mx, ax, bx = problem
    w = np.ones((a if arg == "a" else b).shape, dtype=np.int64)
    kw = {"a": ax, "b": bx, arg: bk.asarray(w)}
    with pytest.raises(TypeError, match=_arg(arg)):
        ot_batch.solve_batch(Mx, reg=0.1, **kw)


@pytest.mark.parametrize("method, reg", METHODS_REG)
def test_unequal_mass_names_problem(bk, problem, method, reg):
    M, a, b, Mx, ax, bx = problem
    b2 = b.copy()
    b2[2] *= 1.5
    with pytest.raises(ValueError, match="mass") as exc:
        ot_batch.solve_batch(Mx, reg=reg, a=ax, b=bk.asarray(b2), method=method)
    msg = str(exc.value)
    assert "[2]" in msg, msg
    assert re.search(_arg("a"), msg) and re.search(_arg("b"), msg), msg


def test_unequal_mass_accepted_when_unbalanced(bk, problem):
    M, a, b, Mx, ax, bx = problem
    res = ot_batch.solve_batch(Mx, reg=0.5, a=ax, b=bk.asarray(2 * b), unbalanced=1.0,
                               max_iter=_iters(bk))
    assert tuple(res.plan.shape) == (B, N, M_)
    assert np.all(np.isfinite(bk.to_numpy(res.plan)))


def test_equal_mass_within_rounding_accepted(bk, problem):
    """Mass differing by round-off only (1e-12 relative) is not an error."""
    M, a, b, Mx, ax, bx = problem
    res = ot_batch.solve_batch(Mx, reg=0.5, a=ax, b=bk.asarray(b * (1 + 1e-12)),
                               max_iter=_iters(bk))
    assert tuple(res.plan.shape) == (B, N, M_)


# --------------------------------------------------------------------------------------------
# reg, method, reg_type, grad, solver
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("reg", [-0.1, -1e-12, float("nan"), float("inf")])
def test_reg_invalid(bk, problem, reg):
    M, a, b, Mx, ax, bx = problem
    with pytest.raises(ValueError, match=_arg("reg")):
        ot_batch.solve_batch(Mx, reg=reg, a=ax, b=bx)


@pytest.mark.parametrize("reg", ["0.1", True, [0.1]])
def test_reg_wrong_kind(bk, problem, reg):
    M, a, b, Mx, ax, bx = problem
    with pytest.raises((ValueError, TypeError), match=_arg("reg")):
        ot_batch.solve_batch(Mx, reg=reg, a=ax, b=bx)


def test_reg_as_0d_array(bk, problem):
    M, a, b, Mx, ax, bx = problem
    ref = ot_batch.solve_batch(Mx, reg=0.5, a=ax, b=bx, max_iter=_iters(bk))
    res = ot_batch.solve_batch(Mx, reg=bk.asarray(np.float64(0.5)), a=ax, b=bx,
                               max_iter=_iters(bk))
    np.testing.assert_allclose(bk.to_numpy(res.value), bk.to_numpy(ref.value), rtol=1e-12)
    with pytest.raises(ValueError, match=_arg("reg")):
        ot_batch.solve_batch(Mx, reg=bk.asarray(np.float64(-0.5)), a=ax, b=bx)


@pytest.mark.parametrize("method", ["sinkhorn", "log_sinkhorn", "Sinkhorn"])
@pytest.mark.parametrize("reg", [None, 0, 0.0])
def test_sinkhorn_needs_reg(bk, problem, method, reg):
    M, a, b, Mx, ax, bx = problem
    with pytest.raises(ValueError, match="reg") as exc:
        ot_batch.solve_batch(Mx, reg=reg, a=ax, b=bx, method=method)
    assert method.lower() in str(exc.value)


@pytest.mark.parametrize("arg, valid", [
    ("method", ("auto", "proximal", "log_sinkhorn", "sinkhorn")),
    ("reg_type", ("entropy", "kl")),
    ("grad", ("detach", "autodiff", "last_step", "envelope")),
])
@pytest.mark.parametrize("value", ["nope", "", 3])
def test_unknown_option_lists_valid(bk, problem, arg, valid, value):
    M, a, b, Mx, ax, bx = problem
    with pytest.raises(ValueError, match=_arg(arg)) as exc:
        ot_batch.solve_batch(Mx, reg=0.1, a=ax, b=bx, **{arg: value})
    for v in valid:
        assert repr(v) in str(exc.value), str(exc.value)


def test_unknown_solver_alias_lists_valid(bk, problem):
    M, a, b, Mx, ax, bx = problem
    with pytest.warns(DeprecationWarning), pytest.raises(ValueError, match="sinkhorn"):
        ot_batch.solve_batch(Mx, reg=0.1, solver="nope")


def test_reg_type_kl_any_case(bk, problem):
    M, a, b, Mx, ax, bx = problem
    it = _iters(bk)
    ref = ot_batch.solve_batch(Mx, reg=0.5, a=ax, b=bx, reg_type="kl", max_iter=it)
    for spelling in ("KL", "kL"):
        res = ot_batch.solve_batch(Mx, reg=0.5, a=ax, b=bx, reg_type=spelling, max_iter=it)
        np.testing.assert_allclose(bk.to_numpy(res.value), bk.to_numpy(ref.value), rtol=1e-12)
        np.testing.assert_allclose(bk.to_numpy(res.plan), bk.to_numpy(ref.plan), rtol=1e-12,
                                   atol=1e-15)
    ent = ot_batch.solve_batch(Mx, reg=0.5, a=ax, b=bx, reg_type="ENTROPY", max_iter=it)
    # 'kl' and 'entropy' give different values for non-uniform weights: the option is used
    assert not np.allclose(bk.to_numpy(ent.value), bk.to_numpy(ref.value))


@pytest.mark.parametrize("method, reg", METHODS_REG)
def test_solver_alias_deprecated_same_result(bk, problem, method, reg):
    M, a, b, Mx, ax, bx = problem
    it = _iters(bk, 50)
    ref = ot_batch.solve_batch(Mx, reg=reg, a=ax, b=bx, method=method, max_iter=it)
    with pytest.warns(DeprecationWarning, match="solver"):
        res = ot_batch.solve_batch(Mx, reg=reg, a=ax, b=bx, solver=method, max_iter=it)
    for x, y in ((res.plan, ref.plan), (res.value, ref.value), (res.potentials[0],
                                                                ref.potentials[0])):
        np.testing.assert_array_equal(bk.to_numpy(x), bk.to_numpy(y))
    np.testing.assert_array_equal(bk.to_numpy(res.log["n_iter"]),
                                  bk.to_numpy(ref.log["n_iter"]))


def test_solver_alias_in_solve_sample_batch(bk, rng):
    X, Y = bk.asarray(rng.normal(size=(B, N, 2))), bk.asarray(rng.normal(size=(B, M_, 2)))
    it = _iters(bk)
    ref = ot_batch.solve_sample_batch(X, Y, reg=0.5, method="sinkhorn", max_iter=it)
    with pytest.warns(DeprecationWarning, match="solver"):
        res = ot_batch.solve_sample_batch(X, Y, reg=0.5, solver="sinkhorn", max_iter=it)
    np.testing.assert_array_equal(bk.to_numpy(res.plan), bk.to_numpy(ref.plan))


# --------------------------------------------------------------------------------------------
# mixed libraries, unbalanced, potentials_init
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("arg", ["a", "b"])
def test_mixed_libraries_type_error(bk, problem, arg):
    M, a, b, Mx, ax, bx = problem
    kw = {"a": ax, "b": bx, arg: _foreign(bk, a if arg == "a" else b)}
    with pytest.raises(TypeError, match=_arg(arg)) as exc:
        ot_batch.solve_batch(Mx, reg=0.1, **kw)
    assert re.search(_arg("M"), str(exc.value))


def test_mixed_libraries_potentials_init(bk, problem):
    M, a, b, Mx, ax, bx = problem
    init = (_foreign(bk, np.zeros((B, N))), bk.asarray(np.zeros((B, M_))))
    with pytest.raises(TypeError, match="potentials_init"):
        ot_batch.solve_batch(Mx, reg=0.1, a=ax, b=bx, potentials_init=init)


@pytest.mark.parametrize("unbalanced", [-1.0, 0.0, float("nan"), (1.0, -1.0), (1.0,),
                                        (1.0, 2.0, 3.0), "1", (1.0, "x")])
def test_unbalanced_invalid(bk, problem, unbalanced):
    M, a, b, Mx, ax, bx = problem
    with pytest.raises(ValueError, match="unbalanced"):
        ot_batch.solve_batch(Mx, reg=0.1, a=ax, b=bx, unbalanced=unbalanced)


def test_unbalanced_needs_reg(bk, problem):
    M, a, b, Mx, ax, bx = problem
    with pytest.raises(ValueError, match="unbalanced"):
        ot_batch.solve_batch(Mx, reg=None, a=ax, b=bx, unbalanced=1.0)


@pytest.mark.parametrize("which", [0, 1])
@pytest.mark.parametrize("kind", ["length", "batch", "ndim"])
def test_potentials_init_wrong_shape(bk, problem, which, kind):
    M, a, b, Mx, ax, bx = problem
    good = [np.zeros((B, N)), np.zeros((B, M_))]
    p = good[which]
    good[which] = {"length": p[:, 1:], "batch": p[1:], "ndim": p[0]}[kind]
    init = tuple(bk.asarray(x) for x in good)
    with pytest.raises(ValueError, match=re.escape(f"potentials_init[{which}]")) as exc:
        ot_batch.solve_batch(Mx, reg=0.1, a=ax, b=bx, potentials_init=init)
    assert str(p.shape) in str(exc.value)


@pytest.mark.parametrize("init", ["one", "three"])
def test_potentials_init_not_a_pair(bk, problem, init):
    M, a, b, Mx, ax, bx = problem
    f = bk.asarray(np.zeros((B, N)))
    init = (f,) if init == "one" else (f, f, f)
    with pytest.raises(ValueError, match="potentials_init"):
        ot_batch.solve_batch(Mx, reg=0.1, a=ax, b=bx, potentials_init=init)


def test_potentials_init_nonfinite(bk, problem):
    M, a, b, Mx, ax, bx = problem
    g = np.zeros((B, M_))
    g[2, 1] = np.nan
    init = (bk.asarray(np.zeros((B, N))), bk.asarray(g))
    with pytest.raises(ValueError, match=re.escape("potentials_init[1]")) as exc:
        ot_batch.solve_batch(Mx, reg=0.1, a=ax, b=bx, potentials_init=init)
    assert "[2]" in str(exc.value)


@pytest.mark.parametrize("arg, value", [("max_iter", -1), ("max_iter", 1.5), ("tol", -1e-3),
                                        ("tol", float("nan")), ("inner_iter", 0),
                                        ("inner_reg", 0.0), ("check_every", 0)])
def test_loop_options_invalid(bk, problem, arg, value):
    M, a, b, Mx, ax, bx = problem
    with pytest.raises(ValueError, match=_arg(arg)):
        ot_batch.solve_batch(Mx, reg=0.1, a=ax, b=bx, **{arg: value})


# --------------------------------------------------------------------------------------------
# dist_batch
# --------------------------------------------------------------------------------------------
def test_dist_X1_2d(bk):
    with pytest.raises(ValueError, match=_arg("X1")):
        ot_batch.dist_batch(bk.asarray(np.ones((5, 2))))
    with pytest.raises(ValueError, match=_arg("X2")):
        ot_batch.dist_batch(bk.asarray(np.ones((1, 5, 2))), bk.asarray(np.ones((5, 2))))


@pytest.mark.parametrize("shape2", [(3, 4, 2), (2, 4, 3)])
def test_dist_mismatched_B_or_d(bk, shape2):
    X1, X2 = bk.asarray(np.ones((2, 5, 2))), bk.asarray(np.ones(shape2))
    with pytest.raises(ValueError, match=_arg("X1")) as exc:
        ot_batch.dist_batch(X1, X2)
    assert re.search(_arg("X2"), str(exc.value)) and str(shape2) in str(exc.value)


def test_dist_integer_and_mixed(bk):
    with pytest.raises(TypeError, match=_arg("X1")):
        ot_batch.dist_batch(bk.asarray(np.ones((1, 3, 2), dtype=np.int64)))
    with pytest.raises(TypeError, match=_arg("X2")):
        ot_batch.dist_batch(bk.asarray(np.ones((1, 3, 2))), _foreign(bk, np.ones((1, 3, 2))))


@pytest.mark.parametrize("which", ["X1", "X2"])
def test_dist_kl_negative(bk, rng, which):
    X = rng.random((2, 4, 3)) + 0.1
    Y = rng.random((2, 5, 3)) + 0.1
    (X if which == "X1" else Y)[1, 2, 0] = -0.05
    with pytest.raises(ValueError, match="kl"):
        ot_batch.dist_batch(bk.asarray(X), bk.asarray(Y), metric="kl")


@pytest.mark.parametrize("p", [0, -1, -0.5, float("nan")])
def test_dist_minkowski_bad_p(bk, p):
    X = bk.asarray(np.ones((1, 3, 2)))
    with pytest.raises(ValueError, match=_arg("p")):
        ot_batch.dist_batch(X, metric="minkowski", p=p)


@pytest.mark.parametrize("metric", ["cityblock", "nope", ""])
def test_dist_unknown_metric_lists_valid(bk, metric):
    X = bk.asarray(np.ones((1, 3, 2)))
    with pytest.raises(ValueError, match=_arg("metric")) as exc:
        ot_batch.dist_batch(X, metric=metric)
    for v in ("sqeuclidean", "euclidean", "minkowski", "kl"):
        assert repr(v) in str(exc.value)


def test_dist_nonfinite(bk):
    X = np.zeros((3, 2, 2))
    X[2, 0, 1] = np.nan
    with pytest.raises(ValueError, match=_arg("X1")) as exc:
        ot_batch.dist_batch(bk.asarray(X))
    assert "[2]" in str(exc.value)


def test_dist_metric_any_case(bk, rng):
    X = bk.asarray(rng.normal(size=(B, N, 2)))
    np.testing.assert_array_equal(bk.to_numpy(ot_batch.dist_batch(X, metric="SqEuclidean")),
                                  bk.to_numpy(ot_batch.dist_batch(X)))


# --------------------------------------------------------------------------------------------
# empty batches, no in-place changes, dtype and device
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("method, reg, weights", [("log_sinkhorn", 0.5, False),
                                                  ("sinkhorn", 0.5, True),
                                                  ("proximal", None, True)])
def test_empty_batch(bk, method, reg, weights):
    kw = {}
    if weights:
        kw = dict(a=bk.asarray(np.ones((0, N))), b=bk.asarray(np.ones((0, M_))))
    res = ot_batch.solve_batch(bk.asarray(np.zeros((0, N, M_))), reg=reg, method=method, **kw)
    assert tuple(res.plan.shape) == (0, N, M_)
    assert tuple(res.value.shape) == (0,)
    assert tuple(res.value_linear.shape) == (0,)
    assert tuple(res.potentials[0].shape) == (0, N)
    assert tuple(res.potentials[1].shape) == (0, M_)
    assert tuple(res.marginal_a.shape) == (0, N)
    assert tuple(res.log["n_iter"].shape) == (0,)
    assert tuple(res.log["converged"].shape) == (0,)


def test_empty_batch_samples_and_dist(bk):
    X, Y = bk.asarray(np.zeros((0, N, 2))), bk.asarray(np.zeros((0, M_, 2)))
    for metric in ("sqeuclidean", "minkowski", "kl"):
        assert tuple(ot_batch.dist_batch(X, Y, metric=metric).shape) == (0, N, M_)
    res = ot_batch.solve_sample_batch(X, Y, reg=0.1)
    assert tuple(res.plan.shape) == (0, N, M_) and tuple(res.value.shape) == (0,)


@pytest.mark.parametrize("method, reg, unbalanced, grad", [
    ("log_sinkhorn", 0.5, None, "envelope"), ("sinkhorn", 0.5, None, "detach"),
    ("proximal", None, None, "envelope"), ("log_sinkhorn", 0.5, (1.0, 2.0), "detach"),
    ("sinkhorn", 0.5, 1.0, "envelope"),
])
def test_inputs_not_modified(bk, problem, method, reg, unbalanced, grad):
    if bk.name == "jax":
        pytest.skip("JAX arrays are immutable")
    M, a, b, Mx, ax, bx = problem
    # starting potentials in the method's convention: scalings (> 0) for 'sinkhorn', logs else
    f0, g0 = np.full((B, N), 1.1), np.full((B, M_), 0.8)
    if method == "log_sinkhorn":
        f0, g0 = np.log(f0), np.log(g0)
    init = (bk.asarray(f0), bk.asarray(g0)) if method != "proximal" else None
    ot_batch.solve_batch(Mx, reg=reg, a=ax, b=bx, method=method, unbalanced=unbalanced,
                         potentials_init=init, max_iter=30, grad=grad)
    for x, ref in ((Mx, M), (ax, a), (bx, b)):
        np.testing.assert_array_equal(bk.to_numpy(x), ref)
    if init is not None:
        np.testing.assert_array_equal(bk.to_numpy(init[0]), f0)
        np.testing.assert_array_equal(bk.to_numpy(init[1]), g0)
        # max_iter=0 returns the starting point: it must not be the caller's potentials_init
        res = ot_batch.solve_batch(Mx, reg=reg, a=ax, b=bx, method=method, potentials_init=init,
                                   max_iter=0)
        assert res.potentials[0] is not init[0] and res.potentials[1] is not init[1]


def test_dist_inputs_not_modified(bk, rng):
    if bk.name == "jax":
        pytest.skip("JAX arrays are immutable")
    X, Y = rng.normal(size=(2, 4, 3)) + 5, rng.normal(size=(2, 5, 3))
    Xx, Yx = bk.asarray(X), bk.asarray(Y)
    for metric in ("sqeuclidean", "euclidean", "minkowski"):
        ot_batch.dist_batch(Xx, Yx, metric=metric)
        ot_batch.dist_batch(Xx, metric=metric)
    ot_batch.dist_batch(bk.asarray(np.abs(X)), bk.asarray(np.abs(Y)), metric="kl")
    np.testing.assert_array_equal(bk.to_numpy(Xx), X)
    np.testing.assert_array_equal(bk.to_numpy(Yx), Y)


def _same_place(bk, x, like):
    if bk.name == "torch":
        assert x.device == like.device
    elif bk.name == "jax":
        assert x.devices() == like.devices()


@pytest.mark.parametrize("method, reg, float64_weights", [
    ("log_sinkhorn", 0.5, False), ("sinkhorn", 0.5, True), ("proximal", None, False),
    ("log_sinkhorn", 1e-3, True),
])
def test_float32_kept(bk, problem, method, reg, float64_weights):
    M, a, b, Mx, ax, bx = problem
    M32 = bk.asarray(M, dtype=np.float32)
    kw = dict(a=ax, b=bx) if float64_weights else {}
    res = ot_batch.solve_batch(M32, reg=reg, method=method, max_iter=100, **kw)
    for name in ("plan", "value", "value_linear"):
        x = getattr(res, name)
        assert x.dtype == M32.dtype, (name, x.dtype)
        _same_place(bk, x, M32)
    for p in res.potentials:
        assert p.dtype == M32.dtype
    assert np.all(np.isfinite(bk.to_numpy(res.plan)))
    assert np.all(np.isfinite(bk.to_numpy(res.value)))


@pytest.mark.parametrize("metric", ["sqeuclidean", "euclidean", "minkowski", "kl"])
def test_dist_float32_kept(bk, rng, metric):
    X = bk.asarray(rng.random((2, 3, 2)) + 0.1, dtype=np.float32)
    D = ot_batch.dist_batch(X, metric=metric, p=3)
    assert D.dtype == X.dtype
    _same_place(bk, D, X)


def test_dtype_mismatch_X1_X2(bk):
    X1 = bk.asarray(np.ones((1, 2, 2)), dtype=np.float32)
    X2 = bk.asarray(np.ones((1, 2, 2)), dtype=np.float64)
    with pytest.raises(TypeError, match=_arg("X1")):
        ot_batch.dist_batch(X1, X2)


# --------------------------------------------------------------------------------------------
# JAX transformations
# --------------------------------------------------------------------------------------------
@pytest.fixture
def jnp():
    jax = pytest.importorskip("jax")
    return jax.numpy


def test_jax_jit_matches_eager(jnp, rng):
    import jax

    M = jnp.asarray(cloud_costs(rng, B, N, M_))
    eager = ot_batch.solve_batch(M, reg=0.1)
    g = jax.jit(lambda M: ot_batch.solve_batch(M, reg=0.1).value)
    np.testing.assert_allclose(np.asarray(g(M)), np.asarray(eager.value), rtol=1e-10)
    # other options, weights as traced arguments, and the log out of jit
    b = jnp.asarray(random_weights(rng, B, M_))
    eager = ot_batch.solve_batch(M, reg=0.2, b=b, method="sinkhorn")
    f = jax.jit(lambda M, b: (lambda r: (r.plan, r.log["n_iter"], r.log["converged"]))(
        ot_batch.solve_batch(M, reg=0.2, b=b, method="sinkhorn")))
    plan, n_iter, conv = f(M, b)
    np.testing.assert_allclose(np.asarray(plan), np.asarray(eager.plan), atol=1e-12)
    np.testing.assert_array_equal(np.asarray(n_iter), np.asarray(eager.log["n_iter"]))
    assert bool(np.all(np.asarray(conv))) and bool(np.all(np.asarray(eager.log["converged"])))


def test_jax_jit_shape_checks_still_raise(jnp, rng):
    import jax

    M = jnp.asarray(cloud_costs(rng, B, N, M_))
    with pytest.raises(ValueError, match=_arg("M")):
        jax.jit(lambda M: ot_batch.solve_batch(M[0], reg=0.1).value)(M)
    a_bad = jnp.ones((B, N + 1)) / (N + 1)
    with pytest.raises(ValueError, match=_arg("a")):
        jax.jit(lambda M, a: ot_batch.solve_batch(M, reg=0.1, a=a).value)(M, a_bad)
    with pytest.raises(ValueError, match=_arg("method")):
        jax.jit(lambda M: ot_batch.solve_batch(M, reg=0.1, method="nope").value)(M)
    with pytest.raises(ValueError, match=_arg("X1")):
        jax.jit(lambda X: ot_batch.dist_batch(X[0]))(jnp.ones((2, 3, 2)))


def test_jax_jit_value_checks_skipped(jnp, rng):
    """Under jit the value checks (NaN, mass) cannot run and must not raise."""
    import jax

    M = jnp.asarray(cloud_costs(rng, B, N, M_))
    b = jnp.asarray(2 * random_weights(rng, B, M_))
    out = jax.jit(lambda M, b: ot_batch.solve_batch(M, reg=0.5, b=b, max_iter=20).value)(M, b)
    assert out.shape == (B,)


def test_jax_vmap(jnp, rng):
    import jax

    Ms = jnp.asarray(np.stack([cloud_costs(rng, B, N, M_, scale=s) for s in (0.3, 3.0)]))
    f = jax.vmap(lambda M: (lambda r: (r.value, r.log["n_iter"]))(
        ot_batch.solve_batch(M, reg=0.3)))
    value, n_iter = f(Ms)
    assert value.shape == (2, B) and n_iter.shape == (2, B)
    for k in range(2):
        ref = ot_batch.solve_batch(Ms[k], reg=0.3)
        np.testing.assert_allclose(np.asarray(value[k]), np.asarray(ref.value), rtol=1e-10,
                                   atol=1e-12)
        np.testing.assert_array_equal(np.asarray(n_iter[k]), np.asarray(ref.log["n_iter"]))
