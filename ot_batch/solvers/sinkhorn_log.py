"""Log-domain Sinkhorn, balanced or unbalanced, with per-problem convergence.

Iterates on the log-scalings ``(u, v)`` of the kernel ``K = -M / reg``::

    u = phi_a * (log a - LSE_j(K_ij + v_j))
    v = phi_b * (log b - LSE_i(K_ij + u_i))

with ``phi = tau / (tau + reg)`` for a KL-relaxed marginal (1 when balanced). The plan is
``exp(K + u + v)``. Never overflows, whatever ``reg``.

``omega > 1`` over-relaxes each update of a balanced problem,
``u <- (1 - omega) u + omega u_sinkhorn`` (Thibault et al. 2017), while its marginal error
falls: on sharp kernels (small ``reg`` against the spread of the cost, as in the proximal
steps of Gromov-Wasserstein) it needs several times fewer iterations.
"""
from __future__ import annotations

from typing import Any

from ._common import SolverOutput
from ._sinkhorn_parts import change, exponents, log_kernel, marginal_error, safe_log, run


def solve(xp: Any, ext: Any, M: Any, a: Any, b: Any, reg: float, *, reg_type: str = "entropy",
          unbalanced: tuple[float, float] | None = None, init: tuple[Any, Any] | None = None,
          grad: str = "envelope", max_iter: int = 1000, tol: float = 1e-5,
          check_every: int = 10, verbose: bool = False, omega: float = 1.0) -> SolverOutput:
    """Solve every problem of the batch; see the module docstring.

    ``init`` are starting log-scalings (shapes (B, n) and (B, m)). The error of a balanced
    problem is the L2 violation of its first marginal, read off the next ``u`` update at no
    extra cost; of an unbalanced one, the largest change of ``u`` or ``v`` in one iteration.
    ``unbalanced`` may also be a pair of (B,) arrays of finite weights, one per problem (the
    proximal steps of unbalanced Gromov-Wasserstein).
    """
    balanced = unbalanced is None
    per_problem = not balanced and getattr(unbalanced[0], "ndim", 0) == 1
    if per_problem:  # exponents as data, so that they are gathered with the active problems
        phis = tuple((t / (t + reg))[:, None] for t in unbalanced)
    else:
        phis = ()
        phi_a, phi_b = exponents(reg, unbalanced)

    def data_of(M_, a_, b_):
        logK = log_kernel(xp, M_, a_, b_, reg, reg_type, balanced)
        return (logK, safe_log(xp, a_), safe_log(xp, b_), a_, b_) + phis

    def relax(old, new, ok, pos):
        if omega == 1.0 or not balanced:
            return new
        # zero weights keep their -inf potential (their old one is read as 0: inf - inf
        # would be NaN)
        old = xp.where(pos, old, xp.zeros_like(old))
        return xp.where(ok[:, None], (1 - omega) * old + omega * new, new)

    def step(data, state):
        logK, loga, logb, a_, b_ = data[:5]
        pa, pb = data[5:] if per_problem else (phi_a, phi_b)
        u, v, prev = state
        lse = ext.logsumexp(logK + v[:, None, :], axis=2)
        if balanced:  # row sums of the plan (u, v), read off this update
            err = marginal_error(xp, xp.exp(xp.minimum(u + lse, xp.full_like(lse, 30.0))), a_)
        # over-relax only while the error falls: the first update of a problem and any update
        # after a rise are plain Sinkhorn steps, so over-relaxation cannot run away
        ok = (err <= prev) if balanced else None
        u_new = relax(u, pa * (loga - lse), ok, a_ > 0)
        v_new = relax(v, pb * (logb - ext.logsumexp(logK + u_new[:, :, None], axis=1)), ok,
                      b_ > 0)
        if not balanced:
            err = xp.maximum(change(xp, u_new, u), change(xp, v_new, v))
        return u_new, v_new, err

    data, u, v, n_iter, converged, err = run(
        xp, ext, step, data_of, M, a, b, fill=0.0, init=init, grad=grad, max_iter=max_iter,
        tol=tol, check_every=check_every, verbose=verbose)
    plan = xp.exp(data[0] + u[:, :, None] + v[:, None, :])
    return SolverOutput(plan, (u, v), (reg * u, reg * v), n_iter, converged, err)
