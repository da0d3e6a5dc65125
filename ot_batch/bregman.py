"""POT's batched Bregman utilities, on the generic solvers.

They return dictionaries as POT's do (``T``, ``potentials``, ``n_iters``, and ``log_T`` for the
log-domain ones), plus per-problem ``n_iter`` and ``converged`` arrays of shape (B,).
"""
from __future__ import annotations

from typing import Any

from . import _validate
from .solvers import proximal, sinkhorn, sinkhorn_log
from .solvers._sinkhorn_parts import safe_log

__all__ = ["bregman_projection_batch", "bregman_log_projection_batch",
           "proximal_bregman_log_plan_batch"]

_UTIL_GRADS = ("detach", "autodiff", "last_step")


def _problem(K, reg, a, b, max_iter, tol, method, grad, inner_iter=1, inner_reg=1e-3):
    grad = "detach" if grad is None else _validate.choice("grad", grad, _UTIL_GRADS)
    return _validate.linear_problem(K, reg, a, b, max_iter, tol, method, inner_iter, inner_reg,
                                    "entropy", grad)


def _pack(pb, out, log_T=None):
    n_iter = out.n_iter
    d = {"T": out.plan, "potentials": out.potentials,
         # POT reports the index of the last iteration of the whole batch
         "n_iters": max(int(pb.ext.to_numpy(n_iter).max(initial=1)) - 1, 0),
         "n_iter": n_iter, "converged": out.converged}
    if log_T is not None:
        d["log_T"] = log_T
    return d


def bregman_projection_batch(K: Any, a: Any = None, b: Any = None, nx: Any = None,
                             max_iter: int = 10000, tol: float = 1e-5,
                             grad: str = "detach") -> dict:
    r"""Project each affinity matrix :math:`K_b` on the plans with marginals ``a_b``, ``b_b``.

    Solves :math:`\min_T KL(T \| K_b)` s.t. :math:`T 1 = a_b, T^\top 1 = b_b` by Sinkhorn
    scaling, each problem stopping on its own.

    Parameters
    ----------
    K : array, shape (B, n, m)
        Non-negative affinities.
    a, b : arrays, shapes (B, n) and (B, m), optional
        Marginals; uniform when omitted.
    nx : ignored
        Accepted for POT compatibility.
    max_iter : int, default 10000
    tol : float, default 1e-5
        Threshold on each problem's L2 error on the first marginal.
    grad : {'detach', 'autodiff', 'last_step'}, default 'detach'

    Returns
    -------
    dict
        ``T`` (B, n, m), ``potentials`` (scalings f, g), ``n_iters`` (int, as POT),
        ``n_iter`` and ``converged`` (B,).

    Examples
    --------
    >>> import numpy as np, ot_batch
    >>> K = np.random.default_rng(0).random((5, 10, 15))
    >>> ot_batch.bregman_projection_batch(K)["T"].shape
    (5, 10, 15)
    """
    pb = _problem(K, 1.0, a, b, max_iter, tol, "sinkhorn", grad)
    if not pb.ext.is_tracer(K) and bool(pb.xp.any(K < 0)):
        raise ValueError("K must be non-negative (an affinity matrix)")
    out = sinkhorn.solve(pb.xp, pb.ext, pb.M, pb.a, pb.b, 1.0, grad=pb.grad,
                         max_iter=pb.max_iter, tol=pb.tol, kernel=True)
    return _pack(pb, out)


def bregman_log_projection_batch(K: Any, a: Any = None, b: Any = None, nx: Any = None,
                                 max_iter: int = 10000, tol: float = 1e-5,
                                 grad: str = "detach") -> dict:
    r"""Project each :math:`\exp(K_b)` on the plans with marginals ``a_b``, ``b_b`` (log domain).

    Parameters
    ----------
    K : array, shape (B, n, m)
        Log-affinities (for entropic OT, ``-M / reg``).
    a, b : arrays, shapes (B, n) and (B, m), optional
    nx : ignored
    max_iter : int, default 10000
    tol : float, default 1e-5
    grad : {'detach', 'autodiff', 'last_step'}, default 'detach'

    Returns
    -------
    dict
        ``T``, ``log_T`` (B, n, m), ``potentials`` (log-scalings u, v), ``n_iters``,
        ``n_iter`` and ``converged`` (B,).

    Examples
    --------
    >>> import numpy as np, ot_batch
    >>> K = np.random.default_rng(0).normal(size=(5, 10, 15))
    >>> ot_batch.bregman_log_projection_batch(K)["log_T"].shape
    (5, 10, 15)
    """
    pb = _problem(K, 1.0, a, b, max_iter, tol, "log_sinkhorn", grad)
    out = sinkhorn_log.solve(pb.xp, pb.ext, -pb.M, pb.a, pb.b, 1.0, grad=pb.grad,
                             max_iter=pb.max_iter, tol=pb.tol)
    u, v = out.potentials
    return _pack(pb, out, log_T=-(-pb.M) + u[:, :, None] + v[:, None, :])


def proximal_bregman_log_plan_batch(C: Any, a: Any = None, b: Any = None, nx: Any = None,
                                    reg: float | None = None, inner_reg: float = 1e-3,
                                    max_iter: int = 10000, tol: float = 1e-5,
                                    inner_iter: int = 1, grad: str = "detach") -> dict:
    r"""Plans of exact (``reg=None``) or entropic OT by the Bregman proximal point method.

    See :mod:`ot_batch.solvers.proximal`; unlike POT 0.9.7 (its issue #842) the proximal term
    has the right sign, so ``reg=None`` converges to the exact OT plan.

    Parameters
    ----------
    C : array, shape (B, n, m)
        Costs.
    a, b : arrays, shapes (B, n) and (B, m), optional
    nx : ignored
    reg : float or None, default None
    inner_reg : float, default 1e-3
    max_iter : int, default 10000
    tol : float, default 1e-5
    inner_iter : int, default 1
    grad : {'detach', 'autodiff', 'last_step'}, default 'detach'

    Returns
    -------
    dict
        ``T``, ``log_T`` (B, n, m), ``potentials`` (u, v), ``n_iters``, ``n_iter`` and
        ``converged`` (B,).

    Examples
    --------
    >>> import numpy as np, ot_batch
    >>> C = np.random.default_rng(0).random((5, 10, 15))
    >>> ot_batch.proximal_bregman_log_plan_batch(C)["T"].shape
    (5, 10, 15)
    """
    pb = _problem(C, reg, a, b, max_iter, tol, "proximal", grad, inner_iter, inner_reg)
    out = proximal.solve(pb.xp, pb.ext, pb.M, pb.a, pb.b, pb.reg, inner_reg=pb.inner_reg,
                         inner_iter=pb.inner_iter, grad=pb.grad, max_iter=pb.max_iter,
                         tol=pb.tol)
    # entries the proximal steps emptied are -inf, without a divide-by-zero warning
    return _pack(pb, out, log_T=safe_log(pb.xp, out.plan))
