"""Sinkhorn in the scaling domain (POT's ``method="sinkhorn"``), with per-problem convergence.

Iterates on the scalings of ``K = exp(-M / reg)``: ``u = (a / K v)^phi_a``,
``v = (b / K^T u)^phi_b``. Each half-step is one batched matrix-vector product, so it is the
fastest form, but ``K`` underflows for small ``reg``: use :mod:`.sinkhorn_log` there. A problem
whose scalings stop being finite is reported as not converged.
"""
from __future__ import annotations

from typing import Any

from ._common import SolverOutput
from ._sinkhorn_parts import change, exponents, log_kernel, marginal_error, safe_log, run


def _matvec(xp: Any, K: Any, x: Any):
    return xp.matmul(K, x[..., None])[..., 0]


def solve(xp: Any, ext: Any, M: Any, a: Any, b: Any, reg: float, *, reg_type: str = "entropy",
          unbalanced: tuple[float, float] | None = None, init: tuple[Any, Any] | None = None,
          grad: str = "envelope", max_iter: int = 1000, tol: float = 1e-5,
          check_every: int = 10, verbose: bool = False, kernel: bool = False) -> SolverOutput:
    """Solve every problem of the batch; ``init`` are starting scalings (not logs).

    With ``kernel=True``, ``M`` is the kernel ``K`` itself (POT's ``bregman_projection_batch``).
    """
    balanced = unbalanced is None
    phi_a, phi_b = exponents(reg, unbalanced)

    def data_of(M_, a_, b_):
        K = M_ if kernel else xp.exp(log_kernel(xp, M_, a_, b_, reg, reg_type, balanced))
        return K, xp.matrix_transpose(K), a_, b_

    def step(data, state):
        K, Kt, a_, b_ = data
        u, v, _ = state
        Kv = _matvec(xp, K, v)
        u_new = (a_ / Kv) ** phi_a if phi_a != 1.0 else a_ / Kv
        KtU = _matvec(xp, Kt, u_new)
        v_new = (b_ / KtU) ** phi_b if phi_b != 1.0 else b_ / KtU
        if balanced:
            err = marginal_error(xp, u * Kv, a_)
        else:
            err = xp.maximum(change(xp, safe_log(xp, u_new), safe_log(xp, u)),
                             change(xp, safe_log(xp, v_new), safe_log(xp, v)))
        return u_new, v_new, err

    data, u, v, n_iter, converged, err = run(
        xp, ext, step, data_of, M, a, b, fill=1.0, init=init, grad=grad, max_iter=max_iter,
        tol=tol, check_every=check_every, verbose=verbose)
    plan = u[:, :, None] * data[0] * v[:, None, :]
    dual = (reg * safe_log(xp, u), reg * safe_log(xp, v))
    return SolverOutput(plan, (u, v), dual, n_iter, converged, err)
