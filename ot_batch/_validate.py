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

METHODS = ("auto", "proximal", "log_sinkhorn", "sinkhorn")
REG_TYPES = ("entropy", "kl")
GRADS = ("detach", "autodiff", "last_step", "envelope")
METRICS = ("sqeuclidean", "euclidean", "minkowski", "kl")


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


def _bad_problems(xp, ext, mask) -> list[int]:
    """Indices of the problems flagged by the (B,) boolean ``mask``."""
    return np.nonzero(ext.to_numpy(mask))[0][:10].tolist()


def _check_float(arg: str, x: Any, xp) -> None:
    if not xp.isdtype(x.dtype, "real floating"):
        raise TypeError(f"{arg} must be a real floating-point array, got dtype {x.dtype}")


def _check_finite(arg: str, x: Any, xp, ext) -> None:
    if _traced(ext, x):
        return
    axes = tuple(range(1, x.ndim))
    bad = ~xp.all(xp.isfinite(x), axis=axes) if axes else ~xp.isfinite(x)
    if bool(xp.any(bad)):
        raise ValueError(f"{arg} contains NaN or inf (problems {_bad_problems(xp, ext, bad)})")


def weights(arg: str, w: Any, shape: tuple[int, int], like: Any, xp, ext):
    """Checked weights of shape ``shape`` in ``like``'s dtype; uniform when ``w`` is None."""
    batch, n = shape
    if w is None:
        return xp.ones(shape, dtype=like.dtype, device=getattr(like, "device", None)) / n
    if tuple(w.shape) != tuple(shape):
        raise ValueError(f"{arg} must have shape {tuple(shape)}, got {tuple(w.shape)}")
    _check_float(arg, w, xp)
    w = xp.astype(w, like.dtype) if w.dtype != like.dtype else w
    _check_finite(arg, w, xp, ext)
    if not _traced(ext, w):
        neg = xp.any(w < 0, axis=1)
        if bool(xp.any(neg)):
            raise ValueError(f"{arg} has negative weights (problems {_bad_problems(xp, ext, neg)})")
    return w


def equal_mass(a: Any, b: Any, xp, ext) -> None:
    """Balanced problems need sum(a_i) == sum(b_i) for every problem i."""
    if _traced(ext, a, b):
        return
    sa, sb = xp.sum(a, axis=1), xp.sum(b, axis=1)
    eps = float(np.finfo(ext.to_numpy(sa[:1]).dtype).eps) if sa.shape[0] else 1e-16
    rtol = max(1e-6, 10 * eps * max(a.shape[1], b.shape[1]))
    bad = xp.abs(sa - sb) > rtol * xp.maximum(xp.abs(sa), xp.abs(sb))
    if bool(xp.any(bad)):
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

    @property
    def shape(self):
        return tuple(self.M.shape)


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
                   verbose=False, min_step=0.1) -> LinearProblem:
    """Check every argument of ``solve_batch`` and return the normalised problem."""
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
    batch, n, m = M.shape
    method = choice("method", method, METHODS)
    reg_type = choice("reg_type", reg_type, REG_TYPES)
    grad = "detach" if grad is None else choice("grad", grad, GRADS)
    if reg is not None:
        if hasattr(reg, "shape") and getattr(reg, "ndim", 1) == 0 and not _traced(ext, reg):
            reg = float(reg)
        reg = nonneg_float("reg", reg)
        reg = None if reg == 0 else reg
    if method == "auto":
        method = "proximal" if reg is None else "log_sinkhorn"
    if method in ("sinkhorn", "log_sinkhorn") and reg is None:
        raise ValueError(f"method={method!r} needs reg > 0; use reg=None with method='proximal'"
                         " for exact OT")
    unb = unbalanced_pair(unbalanced)
    if unb is not None and method == "proximal":
        raise ValueError("unbalanced= needs entropic regularisation (reg > 0)")
    max_iter = positive_int("max_iter", max_iter, minimum=0)
    tol = nonneg_float("tol", tol)
    inner_iter = positive_int("inner_iter", inner_iter)
    inner_reg = nonneg_float("inner_reg", inner_reg, strict=True)
    check_every = positive_int("check_every", check_every)
    min_step = nonneg_float("min_step", min_step)
    _check_finite("M", M, xp, ext)
    a = weights("a", a, (batch, n), M, xp, ext)
    b = weights("b", b, (batch, m), M, xp, ext)
    if unb is None and batch:
        equal_mass(a, b, xp, ext)
    if potentials_init is not None:
        if not isinstance(potentials_init, (tuple, list)) or len(potentials_init) != 2:
            raise ValueError("potentials_init must be a pair (potential_a, potential_b)")
        namespace(M=M, potentials_init_a=potentials_init[0], potentials_init_b=potentials_init[1])
        for arg, p, shp in (("potentials_init[0]", potentials_init[0], (batch, n)),
                            ("potentials_init[1]", potentials_init[1], (batch, m))):
            if tuple(p.shape) != shp:
                raise ValueError(f"{arg} must have shape {shp}, got {tuple(p.shape)}")
            _check_finite(arg, p, xp, ext)
        potentials_init = tuple(xp.astype(p, M.dtype) for p in potentials_init)
    return LinearProblem(xp, ext, M, a, b, reg, method, reg_type, grad, unb, potentials_init,
                         max_iter, tol, inner_iter, inner_reg, check_every, bool(verbose),
                         min_step)


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
    _check_finite("X1", X1, xp, ext)
    _check_finite("X2", X2, xp, ext)
    if metric == "kl" and not _traced(ext, X1, X2):
        if bool(xp.any(X1 < 0)) or bool(xp.any(X2 < 0)):
            raise ValueError("metric='kl' needs non-negative X1 and X2 (histograms)")
    return xp, ext, X1, X2, metric, p
