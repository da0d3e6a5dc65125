"""Entry points of the fused Sinkhorn: a checked problem in, potentials and plan out.

:func:`from_cost` serves ``solve_batch`` (a cost tensor M): problems that fit on chip run
whole in :mod:`.sinkhorn_resident`, larger ones through the passes of
:mod:`.sinkhorn_stream`. :func:`from_points` serves ``solve_sample_batch`` and never forms the
cost: small clouds run on chip too, larger ones (one pair of 10^5-point clouds, or a batch)
through the softmin tiles of the GeomLoss path (:mod:`.online_points`). Both compute in
float32 whatever the input (float16 / bfloat16 inputs are read as they are and accumulated in
float32; point clouds are converted to float32, being small) and return float32 results for
half-precision inputs.

Gradients are not taken through the kernels: ``ot_batch.linear`` forms the values from the
plan's statistics and the autograd Functions of :mod:`.envelope`, with the envelope
theorem, as the generic solvers do with ``grad="envelope"``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch

from ...solvers._sinkhorn_parts import safe_log
from . import driver, online_points, sinkhorn_resident
from .sinkhorn_stream import FROM_MATRIX, NEG_DOT, SQEUCLIDEAN

HALF = (torch.float16, torch.bfloat16)
# tl.dot precision of the recomputed cost, by solve_sample_batch's ``precision``: three TF32
# products recover float32 accuracy (plain TF32 moves value_linear by ~1e-4 relative at
# reg=0.05), at a third of the tensor-core rate.
DOT_PRECISION = {"float32": "tf32x3", "tf32": "tf32"}


def _log(w: torch.Tensor) -> torch.Tensor:
    return safe_log(torch, w)


def result_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float32 if dtype in HALF else dtype


@dataclass
class Fused:
    """What a fused solve returns: log-potentials ``lu``, ``lv`` (float32), the potentials in
    the method's convention, per-problem ``n_iter``/``err``/``converged``, the plan (or None)
    and the statistics ``(lin, plogp, rowsum, colsum)`` of :func:`.driver.finish`."""

    lu: torch.Tensor
    lv: torch.Tensor
    potentials: tuple[torch.Tensor, torch.Tensor]
    n_iter: torch.Tensor
    err: torch.Tensor
    converged: torch.Tensor
    plan: torch.Tensor | None
    stats: tuple[torch.Tensor, ...]
    inputs: dict | None = None  # what the kernels read (point clouds: for the backward pass)


def _setup(pb: Any, log: bool, device: torch.device):
    """Weights, unbalanced exponents, KL shifts and starting potentials, all float32."""
    a = pb.a.detach().to(torch.float32).contiguous()
    b = pb.b.detach().to(torch.float32).contiguous()
    reg = pb.reg
    balanced = pb.unbalanced is None
    phi = (1.0, 1.0) if balanced else tuple(
        1.0 if math.isinf(t) else t / (t + reg) for t in pb.unbalanced)
    ra = rb = None
    if not balanced and pb.reg_type == "kl":  # the reference a b^T enters the kernel
        ra, rb = _log(a), _log(b)
    B, n, m = a.shape[0], a.shape[1], b.shape[1]
    if pb.potentials_init is not None:
        u, v = (p.detach().to(torch.float32).contiguous().clone() for p in pb.potentials_init)
    else:  # filled by the on-chip kernel itself, or by _start
        u = torch.empty((B, n), dtype=torch.float32, device=device)
        v = torch.empty((B, m), dtype=torch.float32, device=device)
    loop = dict(inv_reg=1.0 / reg, phi=phi, max_iter=pb.max_iter, tol=pb.tol,
                check_every=pb.check_every, balanced=balanced)
    return a, b, ra, rb, u, v, loop, pb.potentials_init is not None


def _start(u, v, has_init: bool, log: bool) -> None:
    """The generic solver's starting potentials, for the streaming passes."""
    if not has_init:
        u.fill_(0.0 if log else 1.0)
        v.fill_(0.0 if log else 1.0)


def _pack(u, v, log, n_iter, err, conv, plan, stats, dtype) -> Fused:
    lu, lv = (u, v) if log else (_log(u), _log(v))
    return Fused(lu, lv, (u.to(dtype), v.to(dtype)), n_iter.to(torch.int64), err.to(dtype),
                 conv, plan, stats)


def _iterate(half, loop: dict, B: int, device: torch.device):
    return driver.run(half, B=B, device=device, max_iter=loop["max_iter"], tol=loop["tol"],
                      check_every=loop["check_every"], balanced=loop["balanced"])


def from_cost(pb: Any) -> Fused:
    """Solve ``solve_batch``'s problem ``pb`` (:class:`ot_batch._validate.LinearProblem`)."""
    M = pb.M.detach().contiguous()
    B, n, m = M.shape
    log = pb.method == "log_sinkhorn"
    a, b, ra, rb, u, v, loop, has_init = _setup(pb, log, M.device)
    if sinkhorn_resident.fits(n, m):
        n_iter, err, conv = sinkhorn_resident.solve(cost=FROM_MATRIX, M=M, X=None, Y=None,
                                                    xn=None, yn=None, ra=ra, rb=rb, a=a, b=b,
                                                    u=u, v=v, log=log, has_init=has_init,
                                                    **loop)
    else:
        _start(u, v, has_init, log)
        src, sra, srb = M, ra, rb
        if not log:  # the scaling domain streams the kernel K itself, formed once
            logK = -M.to(torch.float32) * loop["inv_reg"]
            if ra is not None:
                logK = logK + ra[:, :, None] + rb[:, None, :]
            src, sra, srb = torch.exp(logK), None, None
        half = driver.passes(cost=FROM_MATRIX, M=src, X=None, Y=None, xn=None, yn=None,
                             ra=sra, rb=srb, a=a, b=b, u=u, v=v, log=log, prec="ieee",
                             inv_reg=loop["inv_reg"], phi=loop["phi"],
                             balanced=loop["balanced"])
        n_iter, err, conv = _iterate(half, loop, B, M.device)
    dtype = result_dtype(M.dtype)
    out = _pack(u, v, log, n_iter, err, conv, None, (), dtype)
    out.plan = torch.empty((B, n, m), dtype=dtype, device=M.device)
    out.stats = driver.finish(cost=FROM_MATRIX, M=M, X=None, Y=None, xn=None, yn=None, ra=ra,
                              rb=rb, u=out.lu, v=out.lv, inv_reg=loop["inv_reg"], plan=out.plan,
                              prec="ieee")
    return out


def point_inputs(X: torch.Tensor, Y: torch.Tensor, metric: str):
    """``(cost kind, X, Y, |x|^2, |y|^2)`` as the kernels read them.

    Squared-Euclidean clouds are centred on their common mean first, as
    :func:`ot_batch.dist_batch` does: ``|x|^2 + |y|^2 - 2 x.y`` cancels badly far from the
    origin, and the cost does not change.
    """
    # float32 points whatever the input: they are small next to the n x m work, and centring
    # or norms in a half type would lose the digits the cost needs
    X, Y = X.detach().to(torch.float32), Y.detach().to(torch.float32)
    if metric == "negdot":
        return NEG_DOT, X.contiguous(), Y.contiguous(), None, None
    n, m = X.shape[1], Y.shape[1]
    c = (X.sum(1, keepdim=True) + Y.sum(1, keepdim=True)) / max(n + m, 1)
    X, Y = (X - c).contiguous(), (Y - c).contiguous()
    return SQEUCLIDEAN, X, Y, (X * X).sum(2).contiguous(), (Y * Y).sum(2).contiguous()


def from_points(sp: Any) -> Fused:
    """Solve ``solve_sample_batch``'s problem ``sp`` (:class:`ot_batch._validate.SampleProblem`)
    without forming the cost; the plan is formed at the end unless ``sp.lazy``."""
    pb = sp.linear
    log = pb.method == "log_sinkhorn"
    cost, X, Y, xn, yn = point_inputs(sp.X, sp.Y, sp.metric)
    a, b, ra, rb, u, v, loop, has_init = _setup(pb, True, X.device)
    if not log and has_init:  # scalings in, log-domain iterations
        u, v = _log(u), _log(v)
    prec = DOT_PRECISION[sp.precision]
    pts = dict(cost=cost, M=None, X=X, Y=Y, xn=xn, yn=yn, ra=ra, rb=rb, prec=prec)
    B, n, m = a.shape[0], a.shape[1], b.shape[1]
    if sinkhorn_resident.fits(n, m):
        n_iter, err, conv = sinkhorn_resident.solve(a=a, b=b, u=u, v=v, log=True,
                                                    has_init=has_init, **pts, **loop)
    else:  # the softmin tiles of the large-cloud kernels
        _start(u, v, has_init, True)
        lay = online_points.Layout(cost, X, Y, a, b, ra, rb, u, v, prec)
        half = online_points.passes(lay, inv_reg=loop["inv_reg"], phi=loop["phi"],
                                    balanced=loop["balanced"])
        n_iter, err, conv = _iterate(half, loop, B, X.device)
        u, v = lay.scalings()
    dtype = result_dtype(sp.X.dtype)
    plan = None if sp.lazy else torch.empty((B, n, m), dtype=dtype, device=X.device)
    stats = driver.finish(u=u, v=v, inv_reg=loop["inv_reg"], plan=plan, **pts)
    pot = (u, v) if log else (torch.exp(u), torch.exp(v))
    return Fused(u, v, (pot[0].to(dtype), pot[1].to(dtype)), n_iter.to(torch.int64),
                 err.to(dtype), conv, plan, stats, dict(pts, inv_reg=loop["inv_reg"]))
