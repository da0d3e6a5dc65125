"""Extras shared by the libraries with NumPy's API (NumPy itself and CuPy)."""
from __future__ import annotations

import contextlib
from functools import partial
from typing import Any

from . import _eager


def logsumexp(mod: Any, x: Any, axis: int):
    """Log-sum-exp along ``axis`` with one temporary (``out=`` keeps allocations down)."""
    m = mod.max(x, axis=axis, keepdims=True)
    # Rows that are all -inf (zero weights) would give inf - inf; shift them by 0 instead.
    m[~mod.isfinite(m)] = 0
    tmp = mod.subtract(x, m)
    mod.exp(tmp, out=tmp)
    s = mod.sum(tmp, axis=axis)
    # NumPy warns on log(0) for empty rows; CuPy has no errstate and does not warn.
    quiet = mod.errstate(divide="ignore") if hasattr(mod, "errstate") else contextlib.nullcontext()
    with quiet:
        out = mod.log(s)
    out += mod.squeeze(m, axis=axis)
    return out


def take(x: Any, idx: Any):
    return x[idx]


def put(x: Any, idx: Any, rows: Any):
    out = x.copy()
    out[idx] = rows
    return out


def make_iterate(xp: Any, to_numpy: Any):
    return partial(_eager.iterate, xp=xp, take=take, put=put, to_numpy=to_numpy)


def implicit_attach(spec: Any, C: Any, a: Any, b: Any, f: Any, g: Any):
    """No autodiff in NumPy or CuPy: the potentials as they are."""
    return f, g


def linear_solve(matvec: Any, rhs: Any, solve: Any):
    """``solve(matvec, rhs)`` (see :func:`backends.jax.linear_solve`)."""
    return solve(matvec, rhs)
