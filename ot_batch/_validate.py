"""Argument and input checks, in one place, before any work.

Every public function calls these first. Errors are ``ValueError`` (bad values, shapes or
options) or ``TypeError`` (wrong kinds of objects, mixed libraries or devices), and name the
argument. Value checks (NaN, signs, mass) are skipped for traced JAX values under ``jax.jit``;
shape checks always run. Inputs are never modified.
"""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from numbers import Real
from typing import Any

import numpy as np

from .backends import namespace

EXACT_METHODS = ("network_simplex", "assignment", "gpu")
METHODS = ("auto", "proximal", "log_sinkhorn", "sinkhorn", *EXACT_METHODS)
ITERATIVE_MAX_ITER = 1000  # POT ot.batch's default for the Sinkhorn and proximal loops
EXACT_MAX_ITER = 1_000_000  # ot.solve's default for the network simplex
REG_TYPES = ("entropy", "kl")
GRADS = ("detach", "autodiff", "last_step", "envelope", "implicit")
METRICS = ("sqeuclidean", "euclidean", "minkowski", "kl", "negdot")


def choice(arg: str, value: Any, valid: tuple[str, ...]) -> str:
    """``value`` lower-cased if it is one of ``valid``, else a ValueError listing them."""
    if not isinstance(value, str) or value.lower() not in valid:
        raise ValueError(f"unknown {arg} {value!r}; valid values are {list(valid)}")
    return value.lower()


def positive_int(arg: str, value: Any, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{arg} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def nonneg_float(arg: str, value: Any, strict: bool = False) -> float:
    ok = isinstance(value, Real) and not isinstance(value, bool) and math.isfinite(value)
    if not ok or value < 0 or (strict and value == 0):
        need = "> 0" if strict else ">= 0"
        raise ValueError(f"{arg} must be a finite number {need}, got {value!r}")
    return float(value)


def _traced(ext, *xs) -> bool:
    return any(x is not None and ext.is_tracer(x) for x in xs)


def _flagged(xp, ext, mask) -> bool:
    """Whether any problem is flagged; False for a staged (traced) mask, which has no value
    yet (inputs traced by jax.jit, or constants it captured: every op on them is staged)."""
    return not _traced(ext, mask) and bool(xp.any(mask))


def _bad_problems(xp, ext, mask) -> list[int]:
    """Indices of the problems flagged by the (B,) boolean ``mask``."""
    return np.nonzero(ext.to_numpy(mask))[0][:10].tolist()


def _check_float(arg: str, x: Any, xp) -> None:
    if not xp.isdtype(x.dtype, "real floating"):
        raise TypeError(f"{arg} must be a real floating-point array, got dtype {x.dtype}")


def check_finite(arg: str, x: Any, xp, ext) -> None:
    if _traced(ext, x):
        return
    axes = tuple(range(1, x.ndim))
    bad = ~xp.all(xp.isfinite(x), axis=axes) if axes else ~xp.isfinite(x)
    if _flagged(xp, ext, bad):
        raise ValueError(f"{arg} contains NaN or inf (problems {_bad_problems(xp, ext, bad)})")


def weights(arg: str, w: Any, shape: tuple[int, int], like: Any, xp, ext):
    """Checked weights of shape ``shape`` in ``like``'s dtype (float32 for half-precision
    costs: 1/n is not a float16 number); uniform when ``w`` is None."""
    batch, n = shape
    dtype = like.dtype if like.dtype.itemsize > 2 else xp.float32
    if w is None:
        return xp.ones(shape, dtype=dtype, device=getattr(like, "device", None)) / n
    if tuple(w.shape) != tuple(shape):
        raise ValueError(f"{arg} must have shape {tuple(shape)}, got {tuple(w.shape)}")
    _check_float(arg, w, xp)
    w = xp.astype(w, dtype) if w.dtype != dtype else w
    check_finite(arg, w, xp, ext)
    if not _traced(ext, w):
        neg = xp.any(w < 0, axis=1)
        if _flagged(xp, ext, neg):
            raise ValueError(f"{arg} has negative weights (problems {_bad_problems(xp, ext, neg)})")
    return w


def equal_mass(a: Any, b: Any, xp, ext) -> None:
    """Balanced problems need sum(a_i) == sum(b_i) for every problem i."""
    if _traced(ext, a, b):
        return
    sa, sb = xp.sum(a, axis=1), xp.sum(b, axis=1)
    eps = float(xp.finfo(sa.dtype).eps)  # from the dtype: no device sync
    rtol = max(1e-6, 10 * eps * max(a.shape[1], b.shape[1]))
    bad = xp.abs(sa - sb) > rtol * xp.maximum(xp.abs(sa), xp.abs(sb))
    if _flagged(xp, ext, bad):
        raise ValueError(
            "a and b must have the same total mass in every problem of a balanced solve "
            f"(problems {_bad_problems(xp, ext, bad)} differ); pass unbalanced= to relax it"
        )


@dataclass
class LinearProblem:
    """A checked ``solve_batch`` call: arrays in one namespace and normalised options."""

    xp: Any
    ext: Any
    M: Any
    a: Any
    b: Any
    reg: float | None
    method: str
    reg_type: str
    grad: str
    unbalanced: tuple[float, float] | None
    potentials_init: tuple[Any, Any] | None
    max_iter: int
    tol: float
    inner_iter: int
    inner_reg: float
    check_every: int
    verbose: bool
    min_step: float = 0.1
    n_threads: Any = None
    uniform: bool = False  # a and b were not given: uniform by construction

    @property
    def shape(self):
        return tuple(self.M.shape)

    @property
    def exact(self) -> bool:
        """An exact LP solve (``reg=None`` and not the proximal method)."""
        return self.method == "exact" or self.method in EXACT_METHODS


def unbalanced_pair(unbalanced: Any) -> tuple[float, float] | None:
    """``None`` (balanced), a float or an (a-side, b-side) pair of KL weights > 0 (inf allowed)."""
    if unbalanced is None:
        return None
    pair = unbalanced if isinstance(unbalanced, (tuple, list)) else (unbalanced, unbalanced)
    if len(pair) != 2:
        raise ValueError(f"unbalanced must be a number or a pair of numbers, got {unbalanced!r}")
    out = []
    for side in pair:
        if not isinstance(side, Real) or isinstance(side, bool) or not side > 0:
            raise ValueError("unbalanced weights must be numbers > 0 (inf allowed), "
                             f"got {unbalanced!r}")
        out.append(float(side))
    if math.isinf(out[0]) and math.isinf(out[1]):
        return None
    return out[0], out[1]


def linear_problem(M, reg, a, b, max_iter, tol, method, inner_iter, inner_reg, reg_type, grad,
                   unbalanced=None, potentials_init=None, solver=None, check_every=10,
                   verbose=False, min_step=0.1, check_M=True, n_threads=None) -> LinearProblem:
    """Check every argument of ``solve_batch`` and return the normalised problem.

    ``check_M=False`` leaves the NaN / inf test of ``M`` (a full pass over it) to the caller.
    """
    if solver is not None:
        warnings.warn("solver= is deprecated (POT 0.9.6); use method=", DeprecationWarning,
                      stacklevel=3)
        method = solver
    xp, ext = namespace(M=M, a=a, b=b)
    if M is None:
        raise TypeError("M must be an array of shape (B, n, m), got None")
    if M.ndim != 3:
        raise ValueError(f"M must have shape (B, n, m), got shape {tuple(M.shape)}")
    _check_float("M", M, xp)
    if check_M:
        check_finite("M", M, xp, ext)
    return _linear_options(xp, ext, M, tuple(M.shape), reg, a, b, max_iter, tol, method,
                           inner_iter, inner_reg, reg_type, grad, unbalanced, potentials_init,
                           check_every, verbose, min_step, n_threads=n_threads)


def _linear_options(xp, ext, M, shape, reg, a, b, max_iter, tol, method, inner_iter, inner_reg,
                    reg_type, grad, unbalanced, potentials_init, check_every, verbose, min_step,
                    like=None, n_threads=None):
    """Everything of :func:`linear_problem` but the cost; ``like`` gives dtype and device
    (``M`` when given)."""
    like = M if like is None else like
    batch, n, m = shape
    method = choice("method", method, METHODS)
    reg_type = choice("reg_type", reg_type, REG_TYPES)
    grad = "detach" if grad is None else choice("grad", grad, GRADS)
    if reg is not None:
        if hasattr(reg, "shape") and getattr(reg, "ndim", 1) == 0 and not _traced(ext, reg):
            reg = float(reg)
        reg = nonneg_float("reg", reg)
        reg = None if reg == 0 else reg
    if method == "auto":
        method = "exact" if reg is None else "log_sinkhorn"
    if method in EXACT_METHODS and reg is not None:
        raise ValueError(f"method={method!r} solves exact OT: pass reg=None (got reg={reg})")
    exact = method == "exact" or method in EXACT_METHODS
    if exact and grad not in ("envelope", "detach", "implicit"):  # implicit: its own message
        raise ValueError(f"exact OT (reg=None) has grad='envelope' (d value / d M = plan, "
                         f"d value / d a, b = centred duals) or 'detach', got grad={grad!r}")
    n_threads = threads_option(n_threads)
    if method in ("sinkhorn", "log_sinkhorn") and reg is None:
        raise ValueError(f"method={method!r} needs reg > 0; reg=None solves exact OT (method="
                         "'auto', 'network_simplex', 'assignment', 'gpu' or 'proximal')")
    if grad == "implicit" and method not in ("sinkhorn", "log_sinkhorn"):
        raise ValueError(f"grad='implicit' needs a Sinkhorn method (reg > 0), got "
                         f"method={method!r}")
    if grad == "implicit" and _traced(ext, reg):
        raise ValueError("grad='implicit' needs reg as a Python number, not a traced array")
    unb = unbalanced_pair(unbalanced)
    if unb is not None and (method == "proximal" or exact):
        raise ValueError("unbalanced= needs entropic regularisation (reg > 0); exact OT is "
                         "balanced")
    if max_iter is None:
        max_iter = EXACT_MAX_ITER if exact else ITERATIVE_MAX_ITER
    max_iter = positive_int("max_iter", max_iter, minimum=0)
    tol = nonneg_float("tol", tol)
    inner_iter = positive_int("inner_iter", inner_iter)
    inner_reg = nonneg_float("inner_reg", inner_reg, strict=True)
    check_every = positive_int("check_every", check_every)
    min_step = nonneg_float("min_step", min_step)
    a_given, b_given = a is not None, b is not None
    a = weights("a", a, (batch, n), like, xp, ext)
    b = weights("b", b, (batch, m), like, xp, ext)
    if unb is None and batch and (a_given or b_given):  # uniform weights have equal mass
        equal_mass(a, b, xp, ext)
    if potentials_init is not None:
        if not isinstance(potentials_init, (tuple, list)) or len(potentials_init) != 2:
            raise ValueError("potentials_init must be a pair (potential_a, potential_b)")
        namespace(M=like, potentials_init_a=potentials_init[0],
                  potentials_init_b=potentials_init[1])
        for arg, p, shp in (("potentials_init[0]", potentials_init[0], (batch, n)),
                            ("potentials_init[1]", potentials_init[1], (batch, m))):
            if tuple(p.shape) != shp:
                raise ValueError(f"{arg} must have shape {shp}, got {tuple(p.shape)}")
            check_finite(arg, p, xp, ext)
        potentials_init = tuple(xp.astype(p, like.dtype) for p in potentials_init)
    return LinearProblem(xp, ext, M, a, b, reg, method, reg_type, grad, unb, potentials_init,
                         max_iter, tol, inner_iter, inner_reg, check_every, bool(verbose),
                         min_step, n_threads, not (a_given or b_given))


def threads_option(n_threads: Any):
    """``None`` or ``"max"`` (every core) or an integer >= 1."""
    if n_threads is None or (isinstance(n_threads, str) and n_threads == "max"):
        return None
    return positive_int("n_threads", n_threads)


def points(X1: Any, X2: Any, metric: str, p: Any):
    """Check ``dist_batch`` inputs; returns ``(xp, ext, X1, X2, metric, p)``."""
    xp, ext = namespace(X1=X1, X2=X2)
    if X1 is None:
        raise TypeError("X1 must be an array of shape (B, n, d), got None")
    X2 = X1 if X2 is None else X2
    for arg, X in (("X1", X1), ("X2", X2)):
        if X.ndim != 3:
            raise ValueError(f"{arg} must have shape (B, n, d), got shape {tuple(X.shape)}")
        _check_float(arg, X, xp)
    if X1.shape[0] != X2.shape[0] or X1.shape[2] != X2.shape[2]:
        raise ValueError("X1 (B, n, d) and X2 (B, m, d) must agree in B and d, got "
                         f"{tuple(X1.shape)} and {tuple(X2.shape)}")
    if X1.dtype != X2.dtype:
        raise TypeError(f"X1 and X2 must have the same dtype, got {X1.dtype} and {X2.dtype}")
    metric = choice("metric", metric, METRICS)
    if metric == "minkowski":
        p = nonneg_float("p", p, strict=True)
    check_finite("X1", X1, xp, ext)
    check_finite("X2", X2, xp, ext)
    if metric == "kl" and not _traced(ext, X1, X2):
        if bool(xp.any(X1 < 0)) or bool(xp.any(X2 < 0)):
            raise ValueError("metric='kl' needs non-negative X1 and X2 (histograms)")
    return xp, ext, X1, X2, metric, p


@dataclass
class SampleProblem:
    """A checked ``solve_sample_batch`` call: the point clouds and the linear problem's options
    (its ``M`` is None: the cost is formed, or not, by the implementation)."""

    linear: LinearProblem
    X: Any
    Y: Any
    metric: str
    p: float
    lazy: bool
    precision: str = "float32"


# products of the point-cloud kernels: float32 accuracy (three TF32 products per product, or
# the CUDA cores), or one TF32 product (allow_tf32: faster, scores off by ~1e-3 relative)
PRECISIONS = ("float32", "tf32")


def sample_problem(X_a, X_b, reg, a, b, metric, p, max_iter, tol, method, inner_iter, inner_reg,
                   reg_type, grad, unbalanced, potentials_init, solver, check_every, verbose,
                   min_step, lazy, n_threads=None, precision="float32") -> SampleProblem:
    """Check every argument of ``solve_sample_batch``."""
    if solver is not None:
        warnings.warn("solver= is deprecated (POT 0.9.6); use method=", DeprecationWarning,
                      stacklevel=3)
        method = solver
    xp, ext, X, Y, metric, p = points(X_a, X_b, metric, p)
    namespace(X_a=X, a=a, b=b)
    shape = (X.shape[0], X.shape[1], Y.shape[1])
    linear = _linear_options(xp, ext, None, shape, reg, a, b, max_iter, tol, method, inner_iter,
                             inner_reg, reg_type, grad, unbalanced, potentials_init, check_every,
                             verbose, min_step, like=X, n_threads=n_threads)
    precision = choice("precision", precision, PRECISIONS)
    return SampleProblem(linear, X, Y, metric, p, bool(lazy), precision)


GW_GRADS = ("envelope", "autodiff", "detach")


@dataclass
class QuadraticProblem:
    """A checked ``solve_gromov_batch`` call (or the inputs of a quadratic loss)."""

    xp: Any
    ext: Any
    Ca: Any
    Cb: Any
    a: Any
    b: Any
    loss: str
    symmetric: bool
    logits: bool
    M: Any = None
    alpha: Any = None


def _square(arg: str, C: Any, xp, ext) -> None:
    if C is None:
        raise TypeError(f"{arg} must be an array of shape (B, n, n) or (B, n, n, d), got None")
    if C.ndim not in (3, 4) or C.shape[1] != C.shape[2]:
        raise ValueError(f"{arg} must have shape (B, n, n) or (B, n, n, d) (square in its "
                         f"middle axes), got shape {tuple(C.shape)}")
    _check_float(arg, C, xp)
    check_finite(arg, C, xp, ext)


def _is_symmetric(C: Any, xp, ext):
    """(B,) booleans: ``C`` equals its transpose to 1e-10 (POT's test)."""
    Ct = xp.permute_dims(C, (0, 2, 1) if C.ndim == 3 else (0, 2, 1, 3))
    close = xp.abs(C - Ct) <= 1e-10 + 1e-5 * xp.abs(Ct)
    return xp.all(xp.reshape(close, (C.shape[0], -1)), axis=1)


def quadratic_inputs(Ca, Cb, a, b, loss, symmetric, logits, M=None, alpha=None, T=None,
                     require_alpha_with_m=False) -> QuadraticProblem:
    """Check the arrays and options shared by the quadratic solver and losses."""
    from .solvers.gromov_cost import LOSSES
    xp, ext = namespace(Ca=Ca, Cb=Cb, a=a, b=b, M=M, T=T)
    _square("Ca", Ca, xp, ext)
    _square("Cb", Cb, xp, ext)
    if Ca.ndim != Cb.ndim or Ca.shape[0] != Cb.shape[0]:
        raise ValueError("Ca and Cb must both be (B, n, n) / (B, m, m) or both "
                         f"(B, n, n, d) / (B, m, m, d), got {tuple(Ca.shape)} and "
                         f"{tuple(Cb.shape)}")
    if Ca.ndim == 4 and Ca.shape[3] != Cb.shape[3]:
        raise ValueError(f"Ca and Cb must have the same number of edge features, got "
                         f"{Ca.shape[3]} and {Cb.shape[3]}")
    if Ca.dtype != Cb.dtype:
        raise TypeError(f"Ca and Cb must have the same dtype, got {Ca.dtype} and {Cb.dtype}")
    if not isinstance(loss, str) or loss.lower() not in LOSSES:
        raise ValueError(f"unknown loss {loss!r}; valid values are {sorted(LOSSES)}")
    loss = LOSSES[loss.lower()]
    if logits not in (None, True, False):
        raise ValueError(f"logits must be None, True or False, got {logits!r}")
    if logits and (loss != "kl" or Ca.ndim != 4):
        raise ValueError("logits=True applies to loss='kl' on edge features (B, n, n, d) only")
    if loss == "kl" and not _traced(ext, Ca, Cb):
        for arg, C, need in (("Ca", Ca, not logits), ("Cb", Cb, True)):
            if need and bool(xp.any(C < 0)):
                raise ValueError(f"loss='kl' needs non-negative {arg}")
    batch, n, m = Ca.shape[0], Ca.shape[1], Cb.shape[1]
    a = weights("a", a, (batch, n), Ca, xp, ext)
    b = weights("b", b, (batch, m), Ca, xp, ext)
    if symmetric is None:
        if _traced(ext, Ca, Cb):
            symmetric = False  # cannot look at traced values; the general form is exact too
        else:
            symmetric = bool(xp.all(_is_symmetric(Ca, xp, ext))
                             and xp.all(_is_symmetric(Cb, xp, ext)))
    elif symmetric is True or symmetric is False:
        if symmetric and not _traced(ext, Ca, Cb):
            for arg, C in (("Ca", Ca), ("Cb", Cb)):
                bad = ~_is_symmetric(C, xp, ext)
                if bool(xp.any(bad)):
                    raise ValueError(f"symmetric=True but {arg} is not symmetric (problems "
                                     f"{_bad_problems(xp, ext, bad)}); pass symmetric=False "
                                     "or None")
    else:
        raise ValueError(f"symmetric must be None, True or False, got {symmetric!r}")
    if M is not None:
        if tuple(M.shape) != (batch, n, m):
            raise ValueError(f"M must have shape {(batch, n, m)}, got {tuple(M.shape)}")
        _check_float("M", M, xp)
        check_finite("M", M, xp, ext)
        M = xp.astype(M, Ca.dtype) if M.dtype != Ca.dtype else M
    alpha = _alpha(alpha, M, batch, Ca, xp, ext, require_alpha_with_m)
    return QuadraticProblem(xp, ext, Ca, Cb, a, b, loss, bool(symmetric), bool(logits), M,
                            alpha)


def _alpha(alpha, M, batch, like, xp, ext, strict):
    """``alpha`` as a (B,) array: 1 for plain GW, 0.5 by default for fused GW (POT)."""
    dev = getattr(like, "device", None)
    if M is None:
        if alpha is not None:
            raise ValueError("alpha weights the linear term of fused GW: it needs M")
        return xp.ones((batch,), dtype=like.dtype, device=dev)
    if alpha is None:
        alpha = 0.5
    if isinstance(alpha, (list, tuple)):
        alpha = xp.asarray(alpha, dtype=like.dtype, device=dev)
    if isinstance(alpha, Real) and not isinstance(alpha, bool):
        if not 0 <= alpha <= 1:
            raise ValueError(f"alpha must be in [0, 1], got {alpha!r}")
        return xp.full((batch,), float(alpha), dtype=like.dtype, device=dev)
    if not hasattr(alpha, "shape"):
        raise TypeError(f"alpha must be a number or an array of shape ({batch},), "
                        f"got {type(alpha).__name__}")
    namespace(Ca=like, alpha=alpha)
    if alpha.ndim == 0:
        alpha = xp.reshape(alpha, (1,)) * xp.ones((batch,), dtype=like.dtype, device=dev)
    if tuple(alpha.shape) != (batch,):
        raise ValueError(f"alpha must be a number or have shape ({batch},), "
                         f"got {tuple(alpha.shape)}")
    alpha = xp.astype(alpha, like.dtype)
    if not _traced(ext, alpha) and bool(xp.any((alpha < 0) | (alpha > 1))):
        raise ValueError("alpha must be in [0, 1]")
    return alpha


@dataclass
class GromovProblem:
    """A checked ``solve_gromov_batch`` call."""

    quad: QuadraticProblem
    reg: float
    T_init: Any
    max_iter: int
    tol: float
    max_iter_inner: int
    tol_inner: float
    grad: str
    overrelaxation: float
    check_every: int
    verbose: bool
    n_init: int = 1
    seed: int = 0
    finish_steps: int = 2
    unbalanced: Any = None  # (B,) marginal-penalty weights ("kl" and "l2"), else None
    unbalanced_type: str | None = None  # None (balanced), "semirelaxed", "kl" or "l2"


GW_UNBALANCED_TYPES = ("kl", "l2", "semirelaxed", "partial")


def gromov_relaxation(unbalanced, unbalanced_type, batch, like, xp, ext):
    """``(weights (B,) or None, kind)`` of ``solve_gromov_batch``'s marginal relaxation.

    ``kind`` is None (balanced: ``unbalanced=None`` with 'kl' or 'l2'), 'semirelaxed' (no
    ``unbalanced``) or 'kl' / 'l2' (weights > 0, finite: a number or one per problem).
    """
    kind = choice("unbalanced_type", unbalanced_type, GW_UNBALANCED_TYPES)
    if kind == "partial":
        raise NotImplementedError("unbalanced_type='partial' (partial GW) is not implemented "
                                  "by solve_gromov_batch; use 'kl', 'l2' or 'semirelaxed'")
    if kind == "semirelaxed":
        if unbalanced is not None:
            raise ValueError("unbalanced_type='semirelaxed' takes no unbalanced weight (only "
                             f"T 1 = a is enforced); pass unbalanced=None, got {unbalanced!r}")
        return None, kind
    if unbalanced is None:
        return None, None
    return unbalanced_weights(unbalanced, batch, like, xp, ext, strict=True), kind


def unbalanced_weights(unbalanced, batch, like, xp, ext, strict: bool):
    """The (B,) marginal-penalty weights of a GW problem or loss: a number or one per
    problem, finite, > 0 (``strict``) or >= 0, in ``like``'s library, dtype and device."""
    dev = getattr(like, "device", None)
    if isinstance(unbalanced, (list, tuple)):
        unbalanced = xp.asarray(unbalanced, dtype=like.dtype, device=dev)
    if hasattr(unbalanced, "shape") and unbalanced.ndim == 0 and not _traced(ext, unbalanced):
        unbalanced = float(unbalanced)
    if isinstance(unbalanced, Real) and not isinstance(unbalanced, bool):
        return xp.full((batch,), nonneg_float("unbalanced", unbalanced, strict=strict),
                       dtype=like.dtype, device=dev)
    if not hasattr(unbalanced, "shape"):
        raise TypeError(f"unbalanced must be a number or an array of shape ({batch},), "
                        f"got {type(unbalanced).__name__}")
    namespace(Ca=like, unbalanced=unbalanced)
    if unbalanced.ndim == 0:  # a traced scalar
        unbalanced = xp.reshape(unbalanced, (1,)) * xp.ones((batch,), dtype=like.dtype,
                                                            device=dev)
    if tuple(unbalanced.shape) != (batch,):
        raise ValueError(f"unbalanced must be a number or have shape ({batch},), "
                         f"got {tuple(unbalanced.shape)}")
    _check_float("unbalanced", unbalanced, xp)
    unbalanced = xp.astype(unbalanced, like.dtype)
    check_finite("unbalanced", unbalanced, xp, ext)
    if not _traced(ext, unbalanced) and bool(xp.any(unbalanced <= 0 if strict
                                                     else unbalanced < 0)):
        raise ValueError(f"unbalanced must be {'> 0' if strict else '>= 0'} in every problem"
                         + (" (0 would leave the marginals free)" if strict else ""))
    return unbalanced


def gromov_problem(Ca, Cb, reg, a, b, loss, symmetric, M, alpha, T_init, max_iter, tol,
                   max_iter_inner, tol_inner, grad, logits, overrelaxation, check_every,
                   verbose, n_init=1, seed=0, finish_steps=2, unbalanced=None,
                   unbalanced_type="kl") -> GromovProblem:
    """Check every argument of ``solve_gromov_batch``.

    Semi-relaxed problems ignore the values of ``b``: it becomes uniform on its support (its
    zero entries mark padded target nodes), the column marginal of the default start.
    """
    if reg is None or (isinstance(reg, Real) and not isinstance(reg, bool) and reg == 0):
        raise ValueError(f"reg must be a finite number > 0 (the proximal step), got {reg!r}")
    if hasattr(reg, "shape") and getattr(reg, "ndim", 1) == 0:
        reg = float(reg)
    reg = nonneg_float("reg", reg, strict=True)
    quad = quadratic_inputs(Ca, Cb, a, b, loss, symmetric, logits, M=M, alpha=alpha, T=T_init)
    xp, ext = quad.xp, quad.ext
    batch, n, m = quad.Ca.shape[0], quad.Ca.shape[1], quad.Cb.shape[1]
    lam, kind = gromov_relaxation(unbalanced, unbalanced_type, batch, quad.Ca, xp, ext)
    if kind == "semirelaxed":  # POT's semi-relaxed GW has no b: keep only its support
        on = xp.astype(quad.b > 0, quad.b.dtype)
        count = xp.sum(on, axis=1, keepdims=True)
        quad.b = on / xp.where(count > 0, count, xp.ones_like(count))
    if batch and kind is None:
        equal_mass(quad.a, quad.b, xp, ext)
    if T_init is not None:
        if tuple(T_init.shape) != (batch, n, m):
            raise ValueError(f"T_init must have shape {(batch, n, m)}, "
                             f"got {tuple(T_init.shape)}")
        _check_float("T_init", T_init, xp)
        check_finite("T_init", T_init, xp, ext)
        T_init = xp.astype(T_init, Ca.dtype) if T_init.dtype != Ca.dtype else T_init
        if not _traced(ext, T_init) and bool(xp.any(T_init < 0)):
            raise ValueError("T_init must be non-negative")
    grad = "detach" if grad is None else choice("grad", grad, GW_GRADS)
    omega = nonneg_float("overrelaxation", overrelaxation, strict=True)
    if not 1 <= omega < 2:
        raise ValueError(f"overrelaxation must be in [1, 2), got {overrelaxation!r}")
    return GromovProblem(quad, reg, T_init, positive_int("max_iter", max_iter, minimum=0),
                         nonneg_float("tol", tol), positive_int("max_iter_inner", max_iter_inner),
                         nonneg_float("tol_inner", tol_inner), grad, omega,
                         positive_int("check_every", check_every), bool(verbose),
                         positive_int("n_init", n_init), positive_int("seed", seed, minimum=0),
                         positive_int("finish_steps", finish_steps, minimum=0), lam, kind)
