"""Pieces the two Sinkhorn solvers (log and scaling domain) share."""
from __future__ import annotations

import math
from typing import Any

from ._common import loop_inputs


def exponents(reg: float, unbalanced: tuple[float, float] | None) -> tuple[float, float]:
    """Exponents tau / (tau + reg) of the unbalanced updates (1 on a balanced side)."""
    if unbalanced is None:
        return 1.0, 1.0
    return tuple(1.0 if math.isinf(t) else t / (t + reg) for t in unbalanced)


def log_kernel(xp: Any, M: Any, a: Any, b: Any, reg: float, reg_type: str, balanced: bool):
    """``-M / reg``, plus ``log a_i + log b_j`` for the KL reference of an unbalanced problem.

    For balanced problems the reference only shifts the potentials, so the plan is the same
    and the kernel is kept as POT's ``ot.batch`` builds it.
    """
    logK = -M / reg
    if not balanced and reg_type == "kl":
        # 0 rather than -inf for zero weights: their potentials are -inf already, and a row
        # of -inf would make the update -inf - (-inf)
        logK = logK + _log_or_zero(xp, a)[:, :, None] + _log_or_zero(xp, b)[:, None, :]
    return logK


def _log_or_zero(xp: Any, w: Any):
    pos = w > 0
    return xp.where(pos, xp.log(xp.where(pos, w, xp.ones_like(w))), xp.zeros_like(w))


def marginal_error(xp: Any, row: Any, a: Any):
    """Per-problem L2 violation of the first marginal (POT's stopping criterion)."""
    return xp.sqrt(xp.sum((row - a) ** 2, axis=1))


def change(xp: Any, new: Any, old: Any):
    """Per-problem largest change of a log-potential (stopping criterion when unbalanced).

    Entries that are -inf in both (zero weights) count as unchanged.
    """
    fin = xp.isfinite(new) & xp.isfinite(old)
    zero = xp.zeros_like(new)
    d = xp.abs(xp.where(fin, new, zero) - xp.where(fin, old, zero))
    return xp.max(d, axis=1) if d.shape[1] else xp.zeros(d.shape[:1], dtype=d.dtype)


def safe_log(xp: Any, w: Any):
    """``log(w)`` with ``-inf`` for zero entries (zero weights), without a warning."""
    pos = w > 0
    return xp.where(pos, xp.log(xp.where(pos, w, xp.ones_like(w))),
                    xp.full_like(w, -float("inf")))


def run(xp: Any, ext: Any, step: Any, data_of: Any, M: Any, a: Any, b: Any, *, fill: float,
        init: Any, grad: str, max_iter: int, tol: float, check_every: int, verbose: bool):
    """Drive a Sinkhorn ``step`` over state ``(u, v, err)``, the loop and ``last_step`` included.

    ``data_of(M, a, b)`` builds the step's data; ``fill`` is the starting potential (0 for
    log-scalings, 1 for scalings) when ``init`` is None. Returns
    ``(data, u, v, n_iter, converged, err)`` with ``data`` the arrays the plan is formed from
    (attached to the inputs for ``grad="last_step"``).
    """
    Ml, al, bl = loop_inputs(ext, grad, M, a, b)
    data = data_of(Ml, al, bl)
    batch, n, m = M.shape
    dev = getattr(M, "device", None)
    if init is None:
        u0 = xp.full((batch, n), fill, dtype=M.dtype, device=dev)
        v0 = xp.full((batch, m), fill, dtype=M.dtype, device=dev)
    else:
        u0, v0 = loop_inputs(ext, grad, *init)  # autodiff follows warm starts too
    err0 = xp.full((batch,), float("inf"), dtype=M.dtype, device=dev)
    (u, v, _), n_iter, converged, err = ext.iterate(
        step, lambda d, s: s[2], data, (u0, v0, err0), max_iter=max_iter,
        check_every=check_every, tol=tol, differentiable=grad == "autodiff", verbose=verbose)
    if grad == "last_step":  # one more update with gradients attached
        data = data_of(M, a, b)
        u, v, _ = step(data, (ext.stop_gradient(u), ext.stop_gradient(v), err0))
    return data, u, v, n_iter, converged, err
