"""Implicit differentiation of entropic OT potentials, written once against the array namespace.

The potentials ``(f, g)`` of a batch of problems are those of the plan
``P = r_a r_b^T * exp((f + g^T - C) / eps)`` with the reference ``r = (a, b)`` (``ref="kl"``,
OTT-JAX's and GeomLoss's convention) or ``r = (1, 1)`` (``ref="entropy"``, the unbalanced
problems of ``reg_type="entropy"``). They solve the first-order conditions

.. math::
    G_f = P 1 - a \\odot \\varphi_a(f) = 0, \\qquad G_g = P^\\top 1 - b \\odot \\varphi_b(g) = 0,

with :math:`\\varphi(f) = e^{-f/\\rho}` for a KL-relaxed marginal of strength :math:`\\rho`
and 1 for an exact one. The Jacobian of ``G`` in ``(f, g)`` is symmetric,
``[[diag(P1)/eps + diag(a phi_a)/rho_a, P/eps], [P^T/eps, diag(P^T 1)/eps + ...]]``; on a
balanced problem it is singular along ``(1, -1)`` (the potentials are defined up to that
shift), which the solves remove: a balanced tangent satisfies ``sum df = sum dg``.

:func:`tangent` (forward mode) and :func:`cotangent` (reverse mode) are plain array code, so
the libraries' autodiff differentiates them again: the glue in ``backends/torch.py`` and
``backends/jax.py`` wraps them as an autograd Function and a ``custom_vjp`` that are twice
differentiable. The linear systems are solved densely (``(n + m)^2`` memory per problem) or
by conjugate gradient with a Jacobi preconditioner (products with ``P`` only).

Zero weights: the potential of an empty point is the one its update would give it (finite);
first derivatives are exact there, second derivatives hold that potential fixed.
"""
from __future__ import annotations

import math
from typing import Any, NamedTuple

import array_api_compat


class Spec(NamedTuple):
    """Hashable description of the problems (a static argument under ``jax.jit``)."""

    eps: float
    rho: tuple  # (rho_a, rho_b), None for an exact marginal
    ref: str = "kl"  # reference measure of the entropy: "kl" (a b^T) or "entropy" (1)
    solver: str = "auto"  # "dense", "cg", or "auto" (dense while n + m <= DENSE_MAX)
    cg_tol: float = 1e-9
    cg_iter: int = 1000

    @property
    def balanced(self) -> bool:
        return self.rho[0] is None and self.rho[1] is None


def relaxation(unbalanced: Any) -> tuple:
    """``Spec.rho`` from POT's ``unbalanced`` pair (None: balanced; inf: an exact side)."""
    if unbalanced is None:
        return (None, None)
    return tuple(None if math.isinf(t) else float(t) for t in unbalanced)


# Largest n + m solved densely under solver="auto": a (B, n + m, n + m) matrix per solve.
DENSE_MAX = 1024


def _phi(xp: Any, f: Any, rho: float | None):
    return xp.ones_like(f) if rho is None else xp.exp(-f / rho)


def kernel(xp: Any, spec: Spec, C: Any, a: Any, b: Any, f: Any, g: Any):
    """``(E, P)``: ``exp((f + g - C) / eps)`` and the plan ``r_a r_b^T E``."""
    E = xp.exp((f[:, :, None] + g[:, None, :] - C) / spec.eps)
    if spec.ref == "kl":
        return E, a[:, :, None] * b[:, None, :] * E
    return E, E


def conditions(xp: Any, spec: Spec, C: Any, a: Any, b: Any, f: Any, g: Any):
    """``(G_f, G_g)``, zero at the solution (the marginal violations)."""
    _, P = kernel(xp, spec, C, a, b, f, g)
    return (xp.sum(P, axis=2) - a * _phi(xp, f, spec.rho[0]),
            xp.sum(P, axis=1) - b * _phi(xp, g, spec.rho[1]))


def _push_inputs(xp, spec, C, a, b, f, g, dC, da, db):
    """``dG = (dG/dC) dC + (dG/da) da + (dG/db) db`` (``None`` tangents are zero)."""
    E, P = kernel(xp, spec, C, a, b, f, g)
    dP = xp.zeros_like(P) if dC is None else -P * dC / spec.eps
    if spec.ref == "kl":
        if da is not None:
            dP = dP + da[:, :, None] * b[:, None, :] * E
        if db is not None:
            dP = dP + a[:, :, None] * db[:, None, :] * E
    dGf, dGg = xp.sum(dP, axis=2), xp.sum(dP, axis=1)
    if da is not None:
        dGf = dGf - da * _phi(xp, f, spec.rho[0])
    if db is not None:
        dGg = dGg - db * _phi(xp, g, spec.rho[1])
    return dGf, dGg


def _pull_inputs(xp, spec, C, a, b, f, g, wf, wg):
    """``w^T dG/d(C, a, b)``: the cotangents of the inputs for a cotangent ``w`` of ``G``."""
    E, P = kernel(xp, spec, C, a, b, f, g)
    W = wf[:, :, None] + wg[:, None, :]
    gC = -W * P / spec.eps
    ga = -wf * _phi(xp, f, spec.rho[0])
    gb = -wg * _phi(xp, g, spec.rho[1])
    if spec.ref == "kl":
        WE = W * E
        ga = ga + xp.sum(WE * b[:, None, :], axis=2)
        gb = gb + xp.sum(WE * a[:, :, None], axis=1)
    return gC, ga, gb


class _System(NamedTuple):
    """``eps`` times the Jacobian of ``G`` in ``(f, g)``: its diagonal blocks and the plan,
    with 1 on the diagonal of empty points (their potentials held fixed) and the null
    direction ``(1, -1)`` of a balanced problem."""

    P: Any
    df: Any
    dg: Any
    nf: Any  # the null direction (n_f, n_g) and the weight s of the rank-one term s n n^T
    ng: Any  # that removes it (s = 0 when there is none)
    s: Any


def _system(xp, spec, C, a, b, f, g) -> _System:
    _, P = kernel(xp, spec, C, a, b, f, g)
    df, dg = xp.sum(P, axis=2), xp.sum(P, axis=1)
    for rho, w, pot, side in ((spec.rho[0], a, f, 0), (spec.rho[1], b, g, 1)):
        if rho is not None:
            extra = (spec.eps / rho) * w * _phi(xp, pot, rho)
            if side == 0:
                df = df + extra
            else:
                dg = dg + extra
    live_a, live_b = a > 0, b > 0
    df = xp.where(live_a, df, xp.ones_like(df))
    dg = xp.where(live_b, dg, xp.ones_like(dg))
    nf = xp.astype(live_a, f.dtype)
    ng = -xp.astype(live_b, g.dtype)
    scale = (xp.sum(df, axis=1) + xp.sum(dg, axis=1)) / (f.shape[1] + g.shape[1])
    count = xp.sum(nf, axis=1) - xp.sum(ng, axis=1)
    s = scale / count if spec.balanced else xp.zeros_like(scale)
    return _System(P, df, dg, nf, ng, s)


def _dot(xp, u, v):
    return xp.sum(u[0] * v[0], axis=1) + xp.sum(u[1] * v[1], axis=1)


def _project(xp, sysm: _System, rf, rg):
    """The right-hand side without its component along the null direction."""
    nf, ng = sysm.nf, sysm.ng
    c = _dot(xp, (rf, rg), (nf, ng)) / _dot(xp, (nf, ng), (nf, ng))
    c = xp.where(sysm.s > 0, c, xp.zeros_like(c))
    return rf - c[:, None] * nf, rg - c[:, None] * ng


def _apply(xp, sysm: _System, xf, xg):
    """``(J + s n n^T) x`` with the plan as the off-diagonal block."""
    yf = sysm.df * xf + xp.matmul(sysm.P, xg[:, :, None])[:, :, 0]
    yg = sysm.dg * xg + xp.matmul(xf[:, None, :], sysm.P)[:, 0, :]
    c = sysm.s * _dot(xp, (xf, xg), (sysm.nf, sysm.ng))
    return yf + c[:, None] * sysm.nf, yg + c[:, None] * sysm.ng


def _dense(xp, sysm: _System, rf, rg):
    n, dev = rf.shape[1], array_api_compat.device(rf)
    Df = sysm.df[:, :, None] * xp.eye(n, dtype=rf.dtype, device=dev)[None]
    Dg = sysm.dg[:, :, None] * xp.eye(rg.shape[1], dtype=rf.dtype, device=dev)[None]
    A = xp.concat([xp.concat([Df, sysm.P], axis=2),
                   xp.concat([xp.permute_dims(sysm.P, (0, 2, 1)), Dg], axis=2)], axis=1)
    nvec = xp.concat([sysm.nf, sysm.ng], axis=1)
    A = A + sysm.s[:, None, None] * nvec[:, :, None] * nvec[:, None, :]
    x = xp.linalg.solve(A, xp.concat([rf, rg], axis=1)[:, :, None])[:, :, 0]
    return x[:, :n], x[:, n:]


def _cg(xp, ext, spec: Spec, sysm: _System, rf, rg):
    """``ext.linear_solve`` of :func:`_cg_loop`: under JAX a ``custom_linear_solve``, whose
    derivatives are solves again (so the loop itself is never differentiated and stops
    early); elsewhere the loop as it is (autograd follows it)."""
    return ext.linear_solve(lambda x: _apply(xp, sysm, *x), (rf, rg),
                            lambda _, rhs: _cg_loop(xp, ext, spec, sysm, *rhs))


def _cg_loop(xp, ext, spec: Spec, sysm: _System, rf, rg):
    """Jacobi-preconditioned conjugate gradient, each problem stopping on its own when its
    residual falls below ``cg_tol`` times that of the right-hand side."""
    s = sysm.s[:, None]  # the preconditioner: the diagonal of J + s n n^T
    mf, mg = 1 / (sysm.df + s * sysm.nf ** 2), 1 / (sysm.dg + s * sysm.ng ** 2)
    norm0 = xp.sqrt(_dot(xp, (rf, rg), (rf, rg)))
    tiny = xp.finfo(rf.dtype).tiny
    scale = xp.where(norm0 > 0, norm0, xp.full_like(norm0, 1.0))
    zf, zg = mf * rf, mg * rg
    rz = _dot(xp, (rf, rg), (zf, zg))
    state = (xp.zeros_like(rf), xp.zeros_like(rg), rf, rg, zf, zg, rz, norm0 / scale)
    # everything per problem travels as loop data: the eager loop drops finished problems
    data = (*sysm, mf, mg, scale)

    def step(data, st):
        *parts, mf, mg, scale = data
        sysm = _System(*parts)
        xf, xg, r_f, r_g, pf, pg, rz_, _ = st
        qf, qg = _apply(xp, sysm, pf, pg)
        alpha = rz_ / xp.maximum(_dot(xp, (pf, pg), (qf, qg)), tiny)
        xf, xg = xf + alpha[:, None] * pf, xg + alpha[:, None] * pg
        r_f, r_g = r_f - alpha[:, None] * qf, r_g - alpha[:, None] * qg
        z_f, z_g = mf * r_f, mg * r_g
        rz_new = _dot(xp, (r_f, r_g), (z_f, z_g))
        beta = rz_new / xp.maximum(rz_, tiny)
        pf, pg = z_f + beta[:, None] * pf, z_g + beta[:, None] * pg
        res = xp.sqrt(_dot(xp, (r_f, r_g), (r_f, r_g))) / scale
        return xf, xg, r_f, r_g, pf, pg, rz_new, res

    out, *_ = ext.iterate(step, lambda d, st: st[-1], data, state, max_iter=spec.cg_iter,
                          check_every=10, tol=spec.cg_tol)
    return out[0], out[1]


def solve(xp: Any, ext: Any, spec: Spec, C: Any, a: Any, b: Any, f: Any, g: Any, rf: Any,
          rg: Any):
    """``J^{-1} r`` for the Jacobian ``J`` of :func:`conditions` in ``(f, g)`` (the
    pseudo-inverse along the null direction of a balanced problem)."""
    sysm = _system(xp, spec, C, a, b, f, g)
    rf, rg = _project(xp, sysm, rf * spec.eps, rg * spec.eps)
    rf = xp.where(a > 0, rf, xp.zeros_like(rf))
    rg = xp.where(b > 0, rg, xp.zeros_like(rg))
    method = spec.solver
    if method == "auto":
        method = "dense" if rf.shape[1] + rg.shape[1] <= DENSE_MAX else "cg"
    if method == "dense":
        return _dense(xp, sysm, rf, rg)
    return _cg(xp, ext, spec, sysm, rf, rg)


def tangent(xp: Any, ext: Any, spec: Spec, C: Any, a: Any, b: Any, f: Any, g: Any,
            dC: Any, da: Any, db: Any):
    """Forward mode: ``(df, dg) = -J^{-1} (dG/dtheta) dtheta`` for tangents of C, a, b."""
    rf, rg = _push_inputs(xp, spec, C, a, b, f, g, dC, da, db)
    df, dg = solve(xp, ext, spec, C, a, b, f, g, rf, rg)
    return -df, -dg


def cotangent(xp: Any, ext: Any, spec: Spec, C: Any, a: Any, b: Any, f: Any, g: Any,
              vf: Any, vg: Any):
    """Reverse mode: the cotangents of ``(C, a, b)`` for cotangents ``(vf, vg)`` of the
    potentials, ``-(dG/dtheta)^T J^{-1} v`` (``J`` is symmetric)."""
    wf, wg = solve(xp, ext, spec, C, a, b, f, g, vf, vg)
    return _pull_inputs(xp, spec, C, a, b, f, g, -wf, -wg)


def dual_value(xp: Any, spec: Spec, C: Any, a: Any, b: Any, f: Any, g: Any, total: Any):
    """``<a, psi_a(f)> + <b, psi_b(g)> - eps (<P, 1> - total)``: the dual objective, whose
    gradient in ``(f, g)`` is ``-(G_f, G_g)``, zero at the solution, so that its first
    derivatives in ``(C, a, b)`` do not need those of the potentials (Danskin).
    ``psi(f) = f`` on an exact marginal, ``rho (1 - exp(-f / rho))`` on a relaxed one."""
    _, P = kernel(xp, spec, C, a, b, f, g)

    def side(w, pot, rho):
        val = pot if rho is None else rho * (1 - xp.exp(-pot / rho))
        return xp.sum(xp.where(w > 0, w * val, xp.zeros_like(val)), axis=1)

    return (side(a, f, spec.rho[0]) + side(b, g, spec.rho[1])
            - spec.eps * (xp.sum(P, axis=(1, 2)) - total))


def fill_empty(xp: Any, ext: Any, spec: Spec, C: Any, a: Any, b: Any, f: Any, g: Any):
    """Potentials of empty points (zero weight, ``-inf`` or anything) replaced by the value
    their update gives them, so that ``E`` and its derivatives are finite (``ref='kl'``)."""
    eps = spec.eps

    def softmin(Cm, w, pot, rho):
        pos = w > 0
        h = xp.where(pos, xp.log(xp.where(pos, w, xp.ones_like(w))) + pot / eps,
                     xp.full_like(w, -float("inf")))
        val = -eps * ext.logsumexp(h[:, None, :] - Cm / eps, axis=2)
        return val if rho is None else val / (1 + eps / rho)

    g_safe = xp.where(b > 0, g, xp.zeros_like(g))
    f = xp.where(a > 0, f, softmin(C, b, g_safe, spec.rho[0]))
    g = xp.where(b > 0, g, softmin(xp.permute_dims(C, (0, 2, 1)), a, f, spec.rho[1]))
    return f, g
