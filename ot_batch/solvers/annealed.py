"""Sinkhorn divergence with epsilon-scaling, GeomLoss's symmetric loop, on dense costs.

For each problem the loop anneals the temperature from ``diameter**p`` down to ``blur**p``
(one symmetric update per value, averaged with the previous potentials) for the transport
``a <-> b`` and, when debiased, the symmetric problems ``a <-> a`` and ``b <-> b``; one last
update with the costs attached gives the gradients (GeomLoss's "last extrapolation"), and
no graph is kept through the loop. Written once against the array namespace: the reference
for the streaming kernels of large problems.
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np


def epsilon_schedule(p: float, diameter: float, blur: float, scaling: float) -> list[float]:
    """GeomLoss's temperatures: ``diameter**p``, then geometric steps of ``scaling**p``
    down to ``blur**p``."""
    steps = np.arange(p * math.log(diameter), p * math.log(blur), p * math.log(scaling))
    return [diameter ** p] + [float(np.exp(e)) for e in steps] + [blur ** p]


def damping(eps: float, rho: float | None) -> float:
    """Exponent of an update with a KL-relaxed marginal of strength ``rho``."""
    return 1.0 if rho is None else 1.0 / (1.0 + eps / rho)


def _log_weights(xp: Any, w: Any):
    pos = w > 0
    return xp.where(pos, xp.log(xp.where(pos, w, xp.ones_like(w))), xp.full_like(w, -1e5))


def _softmin(ext: Any, eps: float, C: Any, h: Any):
    return -eps * ext.logsumexp(h[:, None, :] - C / eps, axis=2)


def potentials(xp: Any, ext: Any, a: Any, b: Any, C_xy: Any, C_yx: Any, C_xx: Any,
               C_yy: Any, eps_list: list[float], rho: tuple[float | None, float | None], *,
               tol: float | None = None, max_iter: int = 1000, check_every: int = 10,
               grad: str = "envelope", alternate: bool = False):
    """``(f_aa, g_bb, g_ab, f_ba, log)`` of the annealed loop (the first two None without
    ``C_xx``). ``rho`` is the (a side, b side) marginal strength, None for exact marginals.

    With ``tol``, the loop then goes on at the final temperature, each problem until its
    error (:func:`_finish`) is below ``tol``; ``log`` holds ``n_iter``, ``converged`` and
    ``err`` of those extra iterations (None without ``tol``). The costs carry the gradients
    the caller wants; only the last update is differentiable.
    """
    def softmin(eps, C, h):
        return _softmin(ext, eps, C, h)

    debias = C_xx is not None
    a_log, b_log = _log_weights(xp, a), _log_weights(xp, b)
    unrolled = grad == "autodiff"
    sg = (lambda z: z) if unrolled else ext.stop_gradient
    Cxy, Cyx = sg(C_xy), sg(C_yx)
    Cxx, Cyy = (sg(C_xx), sg(C_yy)) if debias else (None, None)
    al, bl = sg(a_log), sg(b_log)
    eps = eps_list[0]
    # f lives on the a side (its marginal relaxed by rho[0]), g on the b side
    da, db = damping(eps, rho[0]), damping(eps, rho[1])
    g_ab, f_ba = db * softmin(eps, Cyx, al), da * softmin(eps, Cxy, bl)
    f_aa = g_bb = None
    if debias:
        f_aa, g_bb = da * softmin(eps, Cxx, al), db * softmin(eps, Cyy, bl)
    for eps in eps_list:
        da, db = damping(eps, rho[0]), damping(eps, rho[1])
        ft_ba = da * softmin(eps, Cxy, bl + g_ab / eps)
        gt_ab = db * softmin(eps, Cyx, al + f_ba / eps)
        f_ba, g_ab = 0.5 * (f_ba + ft_ba), 0.5 * (g_ab + gt_ab)
        if debias:
            ft_aa = da * softmin(eps, Cxx, al + f_aa / eps)
            gt_bb = db * softmin(eps, Cyy, bl + g_bb / eps)
            f_aa, g_bb = 0.5 * (f_aa + ft_aa), 0.5 * (g_bb + gt_bb)
    log = None
    if tol is not None:
        f_ba, g_ab, f_aa, g_bb, log = _finish(
            xp, ext, (Cxy, Cyx, Cxx, Cyy, al, bl, sg(a), sg(b)), (f_ba, g_ab, f_aa, g_bb),
            eps, (da, db), rho, tol=tol, max_iter=max_iter, check_every=check_every,
            differentiable=unrolled, alternate=alternate)
    # the last update, with the costs attached (both sides from the same old potentials)
    f_new = da * softmin(eps, C_xy, sg(b_log + g_ab / eps))
    g_new = db * softmin(eps, C_yx, sg(a_log + f_ba / eps))
    if debias:
        f_aa = da * softmin(eps, C_xx, sg(a_log + f_aa / eps))
        g_bb = db * softmin(eps, C_yy, sg(b_log + g_bb / eps))
    return f_aa, g_bb, g_new, f_new, log


def _finish(xp, ext, data, pots, eps, damp, rho, *, tol, max_iter, check_every,
            differentiable=False, alternate=False):
    """GeomLoss's symmetric updates at the final temperature until each problem converges.

    The error of a problem is the L1 violation of the first marginal by the plan of its
    current potentials, ``sum_i a_i |exp((f_i - ft_i) / eps) - 1|`` read off the next update
    (balanced), or the largest change of a potential (unbalanced); debiased problems take the
    largest error of their three transports.
    """
    Cxy, Cyx, Cxx, Cyy, al, bl, a, b = data
    da, db = damp
    debias = Cxx is not None
    balanced = rho[0] is None and rho[1] is None

    def err_of(f, ft, w):
        if balanced:
            return xp.sum(w * xp.abs(xp.exp((f - ft) / eps) - 1), axis=1)
        return xp.max(xp.abs(ft - f), axis=1)

    def step(d, st):
        Cxy, Cyx, Cxx, Cyy, al, bl, a, b = d
        f, g = st[0], st[1]
        ft = da * _softmin(ext, eps, Cxy, bl + g / eps)
        err = err_of(f, ft, a)
        if alternate:
            out = [ft, db * _softmin(ext, eps, Cyx, al + ft / eps)]
        else:
            gt = db * _softmin(ext, eps, Cyx, al + f / eps)
            out = [0.5 * (f + ft), 0.5 * (g + gt)]
        if debias:
            faa, gbb = st[2], st[3]
            ft_aa = da * _softmin(ext, eps, Cxx, al + faa / eps)
            gt_bb = db * _softmin(ext, eps, Cyy, bl + gbb / eps)
            err = xp.maximum(err, xp.maximum(err_of(faa, ft_aa, a), err_of(gbb, gt_bb, b)))
            out += [0.5 * (faa + ft_aa), 0.5 * (gbb + gt_bb)]
        return (*out, err)

    f_ba, g_ab, f_aa, g_bb = pots
    state = [f_ba, g_ab] + ([f_aa, g_bb] if debias else [])
    state.append(xp.full((f_ba.shape[0],), float("inf"), dtype=f_ba.dtype,
                         device=getattr(f_ba, "device", None)))
    dat = (Cxy, Cyx) + ((Cxx, Cyy) if debias else (Cxy, Cyx)) + (al, bl, a, b)
    out, n_iter, converged, err = ext.iterate(
        step, lambda d, s: s[-1], dat, tuple(state), max_iter=max_iter,
        check_every=check_every, tol=tol, differentiable=differentiable)
    f_aa, g_bb = (out[2], out[3]) if debias else (None, None)
    return out[0], out[1], f_aa, g_bb, {"n_iter": n_iter, "converged": converged, "err": err}


def _unbalanced_weight(ext: Any, x: Any, eps: float, rho: float, dual: bool):
    """``(rho + eps/2) x``, GeomLoss's weight of the exponentiated potentials (its
    ``UnbalancedWeight`` module: the ``(rho + eps)`` backward it defines is never called, so
    autograd differentiates ``(rho + eps/2) x``). With ``dual``, the gradient is
    ``(rho + eps) dx``, that of the dual formula of the converged cost (Sejourne et al. 2019,
    Proposition 12), closer to finite differences of a converged loss."""
    fwd = rho + eps / 2
    if not dual:
        return fwd * x
    return fwd * x + eps / 2 * (x - ext.stop_gradient(x))


def cost(xp: Any, ext: Any, a: Any, b: Any, f_aa: Any, g_bb: Any, g_ab: Any, f_ba: Any,
         eps: float, rho: tuple[float | None, float | None], dual: bool = False):
    """The Sinkhorn divergence (debiased when ``f_aa`` is given) of each problem, (B,).
    ``dual``: the unbalanced terms' gradients of the converged cost (see
    :func:`_unbalanced_weight`) instead of GeomLoss's."""
    def side(w, pot, pot_self, r):
        if r is None:
            val = pot if pot_self is None else pot - pot_self
        else:
            first = xp.ones_like(pot) if pot_self is None else xp.exp(-pot_self / r)
            val = _unbalanced_weight(ext, first - xp.exp(-pot / r), eps, r, dual)
        return xp.sum(w * val, axis=1)

    return side(a, f_ba, f_aa, rho[0]) + side(b, g_ab, g_bb, rho[1])
