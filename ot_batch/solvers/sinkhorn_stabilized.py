"""Log-stabilised Sinkhorn (Schmitzer, 2019): log-domain results at scaling-domain speed.

The total log-potentials are split as ``f = alpha + log u`` and ``g = beta + log v``. The
kernel with the absorbed part, ``Kt = exp(-M / reg + alpha + beta)``, is formed once; the
iterations are the scaling updates ``u = a / (Kt v)``, ``v = b / (Kt^T u)``: one batched
matrix-vector product per half-step and no exponential. When a scaling leaves
``[1/bound, bound]`` (or stops being finite) the batch absorbs it into ``(alpha, beta)``
with one exact log-domain update and forms ``Kt`` again, so nothing overflows whatever ``reg``.

It solves the same problem as :mod:`.sinkhorn_log` with the same potentials convention and
stopping rule; the choice of update per iteration is data-dependent, so it is meant for eager
CPU arrays, where reading a scalar back costs nothing.
"""
from __future__ import annotations

import math
from typing import Any

from ._common import SolverOutput, loop_inputs
from ._sinkhorn_parts import change, exponents, log_kernel, marginal_error, safe_log

BOUND = 1e30


def _matvec(xp: Any, K: Any, x: Any):
    return xp.matmul(K, x[..., None])[..., 0]


def solve(xp: Any, ext: Any, M: Any, a: Any, b: Any, reg: float, *, reg_type: str = "entropy",
          unbalanced: tuple[float, float] | None = None, init: tuple[Any, Any] | None = None,
          grad: str = "envelope", max_iter: int = 1000, tol: float = 1e-5,
          check_every: int = 10, verbose: bool = False) -> SolverOutput:
    """Solve every problem of the batch; same contract as :func:`.sinkhorn_log.solve`.

    ``grad`` may be 'envelope' or 'detach' (the iterations are never differentiated).
    """
    if grad not in ("envelope", "detach"):
        raise ValueError(f"the stabilised solver does not differentiate the loop (grad={grad!r})")
    balanced = unbalanced is None
    phi_a, phi_b = exponents(reg, unbalanced)
    Ml, al, bl = loop_inputs(ext, grad, M, a, b)
    logK = log_kernel(xp, Ml, al, bl, reg, reg_type, balanced)
    log_a, log_b = safe_log(xp, al), safe_log(xp, bl)
    lower = 1.0 / BOUND

    def absorb(logK_, loga, logb, f, g):
        """One exact log-domain update from potentials (f, g); returns the new split state."""
        f = phi_a * (loga - ext.logsumexp(logK_ + g[:, None, :], axis=2))
        g = phi_b * (logb - ext.logsumexp(logK_ + f[:, :, None], axis=1))
        Kt = xp.exp(logK_ + f[:, :, None] + g[:, None, :])
        # Unbalanced updates in the split form: u = (a / Kt v)^phi * exp((phi - 1) alpha).
        return f, g, Kt, _factor(f, phi_a), _factor(g, phi_b)

    def _factor(f, phi):
        if phi == 1.0:
            return xp.ones_like(f)
        fin = xp.isfinite(f)  # rows of zero weight (f = -inf) keep u = 0 whatever the factor
        return xp.exp(xp.where(fin, (phi - 1.0) * f, xp.zeros_like(f)))

    def update(w, Kx, e, phi):
        pos = w > 0  # zero weights give zero rows of Kt: no 0/0
        ratio = xp.where(pos, w / xp.where(pos, Kx, xp.ones_like(Kx)), xp.zeros_like(w))
        return ratio if phi == 1.0 else ratio**phi * e

    def step(data, state):
        logK_, loga, logb, a_, b_ = data
        alpha, beta, Kt, u, v, ea, eb, _ = state
        Kv = _matvec(xp, Kt, v)
        u_new = update(a_, Kv, ea, phi_a)
        v_new = update(b_, _matvec(xp, xp.matrix_transpose(Kt), u_new), eb, phi_b)
        if balanced:
            err = marginal_error(xp, u * Kv, a_)
        else:
            err = xp.maximum(change(xp, safe_log(xp, u_new), safe_log(xp, u)),
                             change(xp, safe_log(xp, v_new), safe_log(xp, v)))
        in_range = (xp.all(((u_new <= BOUND) & (u_new >= lower)) | (a_ == 0))
                    & xp.all(((v_new <= BOUND) & (v_new >= lower)) | (b_ == 0)))
        if bool(in_range):
            return alpha, beta, Kt, u_new, v_new, ea, eb, err
        # Absorb from the last in-range potentials: exact log-domain update, fresh kernel.
        f, g = alpha + safe_log(xp, u), beta + safe_log(xp, v)
        alpha, beta, Kt, ea, eb = absorb(logK_, loga, logb, f, g)
        return alpha, beta, Kt, xp.ones_like(u), xp.ones_like(v), ea, eb, err

    batch, n, m = M.shape
    dev = getattr(M, "device", None)
    if init is None:
        f0 = xp.zeros((batch, n), dtype=M.dtype, device=dev)
        g0 = xp.zeros((batch, m), dtype=M.dtype, device=dev)
    else:
        f0, g0 = (ext.stop_gradient(p) for p in init)
    # The first iteration is an exact log-domain update (it also forms Kt); it counts.
    if max_iter > 0:
        alpha, beta, Kt, ea, eb = absorb(logK, log_a, log_b, f0, g0)
    else:
        alpha, beta, Kt = f0, g0, xp.exp(logK + f0[:, :, None] + g0[:, None, :])
        ea, eb = xp.ones_like(f0), xp.ones_like(g0)
    err0 = xp.full((batch,), math.inf, dtype=M.dtype, device=dev)
    state = (alpha, beta, Kt, xp.ones_like(alpha), xp.ones_like(beta), ea, eb, err0)
    (alpha, beta, Kt, u, v, _, _, _), n_iter, converged, err = ext.iterate(
        step, lambda d, s: s[7], (logK, log_a, log_b, al, bl), state, max_iter=max_iter,
        check_every=check_every, tol=tol, verbose=verbose, start=min(max_iter, 1))
    plan = Kt * u[:, :, None] * v[:, None, :]
    fu, gv = alpha + safe_log(xp, u), beta + safe_log(xp, v)
    return SolverOutput(plan, (fu, gv), (reg * fu, reg * gv), n_iter, converged, err)
