"""Hessian-vector products of the balanced Sinkhorn divergence with respect to ``x``, by
implicit differentiation, on streaming plan products (:class:`.online_plan.StreamPlan`).

Transport ``a <-> b`` with plan ``pi`` (row sums ``a``, column sums ``b``) and cost
``c|x - y|^2``: the gradient is ``G_i = 2c (a_i x_i - (pi y)_i)``. Moving ``x`` along ``v``
moves the potentials by ``(df, dg)`` and the plan by
``dpi_ij = pi_ij (df_i + dg_j - dC_ij) / eps`` with ``dC_ij = 2c (x_i - y_j) . v_i``; the
marginals stay fixed, which gives the (positive semi-definite, singular along ``(1, -1)``,
consistent) system

    a df + pi dg = r,   r_i = 2c (a_i x_i . v_i - v_i . (pi y)_i)
    pi^T df + b dg = s, s_j = 2c ((pi^T (x . v))_j - y_j . (pi^T v)_j)

solved by conjugate gradient with the Jacobi preconditioner, and then

    dG_i = 2c (a_i v_i - [df_i (pi y)_i + (pi (dg y))_i
                          - 2c ((x_i . v_i) (pi y)_i - sum_j pi_ij (v_i . y_j) y_j)] / eps).

The symmetric term ``OT(a, a) / 2`` (``x`` on both sides, one potential ``f``, gradient
``2c (a_i x_i - (pi x)_i)``) has ``dC_ik = 2c (x_i - x_k) . (v_i - v_k)``, the positive
definite system ``(diag(a) + pi) df = r`` with
``r_i = 2c (a_i x_i.v_i - x_i.(pi v)_i - v_i.(pi x)_i + (pi (x.v))_i)`` and

    dG_i = 2c (a_i v_i - (pi v)_i - [df_i (pi x)_i + (pi (df x))_i - 2c ((x_i.v_i)(pi x)_i
           - sum_k pi_ik (x_i.v_k) x_k - sum_k pi_ik (v_i.x_k) x_k + (pi ((x.v) x))_i)] / eps).

The plan's own row and column sums stand for ``a`` and ``b`` (the potentials are converged
to ``tol``, and the system is then exactly consistent).
"""
from __future__ import annotations

from typing import Callable

import torch

from .online_plan import StreamPlan

CG_TOL = 1e-6
CG_MAX_ITER = 500
CHECK_EVERY = 10  # CG iterations between host reads of the stopping test


def cg(matvec: Callable, rhs: torch.Tensor, precond: torch.Tensor, *, tol: float = CG_TOL,
       max_iter: int = CG_MAX_ITER):
    """Preconditioned conjugate gradient, each problem of the batch (first axis) on its own:
    a problem stops updating when its residual is below ``tol`` times its right-hand side.
    Returns the solution and the iterations each problem took."""
    B = rhs.shape[0]
    dims = tuple(range(1, rhs.ndim))
    x = torch.zeros_like(rhs)
    r = rhs.clone()
    z = r * precond
    p = z.clone()
    rz = (r * z).sum(dims)
    stop = tol * rhs.flatten(1).norm(dim=1)
    n_iter = torch.zeros(B, dtype=torch.int64, device=rhs.device)
    shape = (B,) + (1,) * (rhs.ndim - 1)
    for it in range(max_iter):
        live = r.flatten(1).norm(dim=1) > stop
        # finished problems no longer move (alpha = beta = 0); the host asks only now and then
        if it % CHECK_EVERY == 0 and not bool(live.any()):
            break
        n_iter += live
        Ap = matvec(p)
        pAp = (p * Ap).sum(dims)
        alpha = torch.where(live & (pAp > 0), rz / torch.where(pAp > 0, pAp, 1.0), 0.0)
        x = x + alpha.view(shape) * p
        r = r - alpha.view(shape) * Ap
        z = r * precond
        rz_new = (r * z).sum(dims)
        beta = torch.where(live, rz_new / torch.where(rz > 0, rz, 1.0), 0.0)
        p = z + beta.view(shape) * p
        rz = rz_new
    return x, n_iter


def _dot(u, v):
    return (u * v).sum(-1)


def hvp_cross(plan: StreamPlan, V: torch.Tensor, c: float, eps: float):
    """``d/dt G(x + t v)`` for the transport ``x <-> y`` (module docstring)."""
    X, Y = plan.X, plan.Y
    B, n, m = plan.shape
    ones_m = torch.ones((B, m), device=V.device, dtype=torch.float32)
    ra = plan.apply(ones_m)
    rb = plan.apply_t(torch.ones((B, n), device=V.device, dtype=torch.float32))
    PY = plan.apply(Y)
    xv = _dot(X, V)
    r = 2 * c * (ra * xv - _dot(V, PY))
    s = 2 * c * (plan.apply_t(xv) - _dot(Y, plan.apply_t(V)))

    def matvec(z):
        df, dg = z[:, :n], z[:, n:]
        return torch.cat([ra * df + plan.apply(dg), plan.apply_t(df) + rb * dg], dim=1)

    sol, it = cg(matvec, torch.cat([r, s], dim=1), 1.0 / torch.cat([ra, rb], dim=1))
    df, dg = sol[:, :n], sol[:, n:]
    T = (df[..., None] * PY + plan.apply(dg[..., None] * Y)
         - 2 * c * (xv[..., None] * PY - plan.moment(V))) / eps
    return 2 * c * (ra[..., None] * V - T), it


def hvp_self(plan: StreamPlan, V: torch.Tensor, c: float, eps: float):
    """``d/dt G(x + t v)`` for the symmetric term ``OT(x, x) / 2`` (module docstring)."""
    X = plan.X
    B, n, _ = plan.shape
    ra = plan.apply(torch.ones((B, n), device=V.device, dtype=torch.float32))
    PX, PV = plan.apply(X), plan.apply(V)
    xv = _dot(X, V)
    Pxv = plan.apply(xv)
    r = 2 * c * (ra * xv - _dot(X, PV) - _dot(V, PX) + Pxv)
    df, it = cg(lambda z: ra * z + plan.apply(z), r, 1.0 / (2 * ra))
    inner = (xv[..., None] * PX - plan.moment(X, W=V, U=X) - plan.moment(V, W=X, U=X)
             + plan.apply(xv[..., None] * X))
    T = (df[..., None] * PX + plan.apply(df[..., None] * X) - 2 * c * inner) / eps
    return 2 * c * (ra[..., None] * V - PV - T), it


def closures(cl, pots, X, Y, a, b, debias):
    """``hvp[kind][side](V, grad)`` for :class:`.online_grad.Attach`: the derivative of
    ``<V, grad J>`` for the x-side potentials (``grad = go * a`` for the transport term,
    ``-go * a`` for the symmetric one); the y side raises."""
    N, M = cl.N, cl.M
    eps, c = pots.eps, cl.c
    pot = pots.pot
    xy = StreamPlan(cl, eps, slice(0, N), slice(N, N + M), pot[:, 0, :N], pot[:, 0, N:])
    aw = a.detach().to(torch.float32)

    def scale(grad):  # go per problem, from grad = go * a (or -go * a)
        return (grad.detach().to(torch.float32) * aw).sum(1) / (aw * aw).sum(1)

    def h_xy(V, grad):
        out, _ = hvp_cross(xy, V.to(torch.float32), c, eps)
        return (scale(grad)[:, None, None] * out).to(V.dtype)

    def h_y(V, grad):
        raise RuntimeError("second derivatives of the online Sinkhorn divergence are "
                           "implemented with respect to x only")

    row0 = [h_xy, h_y]
    if not debias:
        return [row0]
    xx = StreamPlan(cl, eps, slice(0, N), slice(0, N), pot[:, 1, :N], pot[:, 1, :N])

    def h_xx(V, grad):
        out, _ = hvp_self(xx, V.to(torch.float32), c, eps)
        return (scale(grad)[:, None, None] * out).to(V.dtype)

    return [row0, [h_xx, h_y]]
