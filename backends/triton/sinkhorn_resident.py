"""Whole Sinkhorn solves with the problem held on chip: one program per problem.

When a problem's ``n x m`` cost fits in the registers of one program, reading it once and
running every iteration, the stopping test included, inside the kernel leaves nothing for
the memory system to do: the time is the exponentials and the reductions. This is the path
for batches of small problems (POT's gallery example, 8 x 8; 64 x 64 point clouds), where
POT's ``ot.batch`` spends its time launching one small kernel per operation.

Iterations are those of :mod:`ot_batch.solvers.sinkhorn_log` (``LOG=True``) or
:mod:`ot_batch.solvers.sinkhorn` (``LOG=False``, scalings), balanced or unbalanced, with the
same error, the same check schedule and the same iteration counts. The generic solvers are
the reference the tests compare this kernel to.

The log-domain iterations are computed in absorbed form (Schmitzer's stabilised scaling):
the program keeps ``Kt = exp(logK + u0 + v0)`` for potentials ``u0``, ``v0`` absorbed
earlier, and each half-iteration is a sum ``Kt exp(v - v0)`` and a log per line instead of an
exponential per entry. Whenever the potentials drift more than ``ABSORB`` from the absorbed
ones the program absorbs them, and when a line sum under- or overflows it redoes the
iterations as true log-sum-exps: the iterates are the log-domain ones, never overflow, and
cost an exponential per entry only when the potentials move a lot. Balanced problems iterate
on the scalings ``exp(u - u0)`` themselves, a division per line, and test them only on
check iterations (redoing the iterations since the last check when one of them under- or
overflowed).
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from ._lse import lse
from .driver import cost_args
from ._parts import (change, cost_tile, cost_tile_direct, log_kernel_tile, marginal_update,
                     safe_log)

# Largest padded n x m kept on chip (elements per program); beyond it the streaming passes
# of :mod:`.sinkhorn_stream` take over. Two 64 x 64 fp32 tiles are 64 registers a thread at
# 4 warps.
MAX_ELEMENTS = 64 * 64
# Re-absorb when a potential moved this far (in log units) from its absorbed value: the
# scalings exp(u - u0) stay within float32 with a wide margin.
ABSORB = tl.constexpr(20.0)
ABSORB_RATIO = tl.constexpr(4.85e8)  # exp(ABSORB), for the scalings of balanced problems
# Tunables for experiments (``warps``: warps per program).
TUNING: dict = {}


def _p2(x: int) -> int:
    return triton.next_power_of_2(max(x, 1))


def fits(n: int, m: int) -> bool:
    """Whether one program can hold a problem of this size."""
    return _p2(n) * _p2(m) <= MAX_ELEMENTS


@triton.jit
def _finite(x):
    return tl.where(tl.abs(x) < float("inf"), x, 0.0)


@triton.jit
def _log_sums(Kt, pot, pot0, AXIS: tl.constexpr):
    """log of the sums of ``Kt * exp(pot - pot0)`` along ``AXIS`` (``-inf`` for 0, ``inf``
    on overflow): the log-sum-exp of the log-kernel plus ``pot``, plus the absorbed
    potential of the other side."""
    scale = tl.exp(pot - pot0)
    if AXIS == 1:
        r = tl.sum(Kt * scale[None, :], axis=1)
    else:
        r = tl.sum(Kt * scale[:, None], axis=0)
    return tl.where(r > 0.0, tl.log(r), float("-inf"))


@triton.jit
def _drift(new, old0, w):
    """Largest move of a potential from its absorbed value, over the lines with weight;
    ``inf`` when one is not finite (a line sum under- or overflowed)."""
    dd = tl.abs(new - old0)
    dd = tl.where(dd < float("inf"), dd, float("inf"))  # NaN too
    return tl.max(tl.where(w > 0, dd, 0.0), axis=0)


@triton.jit
def _ratio(x, w):
    """Largest of ``x`` and ``1 / x`` over the lines with weight (``inf`` when a scaling is
    0, infinite or NaN): how far scalings moved from the absorbed potentials."""
    t = tl.maximum(x, 1.0 / x)
    t = tl.where(t < float("inf"), t, float("inf"))  # NaN too
    return tl.max(tl.where(w > 0, t, 0.0), axis=0)


@triton.jit
def _log_kernel(M, X, Y, xn, yn, ra, rb, pid, rows, cols, n, m, d, inv_reg,
                COST: tl.constexpr, PREC: tl.constexpr, SHIFT: tl.constexpr, BN: tl.constexpr,
                BM: tl.constexpr, BD: tl.constexpr):
    """The log-kernel tile (``-inf`` outside), the cost read or recomputed again: from L2 at
    these sizes, and no registers held for it between absorptions."""
    if COST == 0:
        c = cost_tile(M, X, Y, xn, yn, pid, rows, cols, n, m, d, COST, PREC, BN, BM, BD)
    else:
        c = cost_tile_direct(X, Y, pid, rows, cols, n, m, d, COST, BN, BM)
    return log_kernel_tile(c, ra, rb, pid, rows, cols, n, m, inv_reg, SHIFT)


@triton.jit
def _resident_kernel(M, X, Y, xn, yn, ra, rb, a, b, u, v, n_iter_out, err_out, conv_out, n, m,
                     d, inv_reg, phi_a, phi_b, max_iter, tol, check_every, COST: tl.constexpr,
                     PREC: tl.constexpr, LOG: tl.constexpr, BALANCED: tl.constexpr,
                     SHIFT: tl.constexpr, HAS_INIT: tl.constexpr, BN: tl.constexpr,
                     BM: tl.constexpr, BD: tl.constexpr):
    pid = tl.program_id(0)
    rows = tl.arange(0, BN)
    cols = tl.arange(0, BM)
    rm = rows < n
    cm = cols < m
    aa = tl.load(a + pid * n + rows, mask=rm, other=0.0).to(tl.float32)
    bb = tl.load(b + pid * m + cols, mask=cm, other=0.0).to(tl.float32)
    la = safe_log(aa)
    lb = safe_log(bb)
    fill = float("-inf") if LOG else 0.0
    if HAS_INIT:
        uu = tl.load(u + pid * n + rows, mask=rm, other=fill).to(tl.float32)
        vv = tl.load(v + pid * m + cols, mask=cm, other=fill).to(tl.float32)
    else:  # the generic solver's start: 0 (log-scalings) or 1 (scalings) everywhere
        start = 0.0 if LOG else 1.0
        uu = tl.where(rm, start, fill)
        vv = tl.where(cm, start, fill)
    u0 = _finite(uu)
    v0 = _finite(vv)
    if LOG:  # absorbed kernel; the scaling domain keeps K itself (u0 = v0 = 0)
        u0 = u0 * 1.0
    else:
        u0 = u0 * 0.0
        v0 = v0 * 0.0
    Kt = tl.exp(_log_kernel(M, X, Y, xn, yn, ra, rb, pid, rows, cols, n, m, d, inv_reg, COST,
                            PREC, SHIFT, BN, BM, BD) + u0[:, None] + v0[None, :])
    if LOG and BALANCED:  # iterate on the scalings exp(u - u0), exp(v - v0)
        uu = tl.exp(uu - u0)
        vv = tl.exp(vv - v0)
    # the state at the last check, which an iteration that over- or underflowed restarts from
    cu = uu
    cv = vv
    cit = 0
    err = float("inf")
    it = 0
    done = 0
    while (it < max_iter) & (done == 0):
        check = ((it + 1) % check_every == 0) | (it + 1 == max_iter)
        if LOG and BALANCED:
            # a division per line; the scalings are only tested (and absorbed) on checks
            r = tl.sum(Kt * vv[None, :], axis=1)
            row = tl.minimum(uu * r, 1.0e13)  # row sums of the current plan (e^30 cap)
            u_new = tl.where(aa > 0, aa / r, 0.0)
            v_new = tl.where(bb > 0, bb / tl.sum(Kt * u_new[:, None], axis=0), 0.0)
            if check:
                drift = tl.maximum(_ratio(u_new, aa), _ratio(v_new, bb))
                if drift > ABSORB_RATIO:
                    lu = u0 + tl.log(u_new)
                    lv = v0 + tl.log(v_new)
                    if drift == float("inf"):
                        # a line sum under- or overflowed since the last check: redo those
                        # iterations as true log-sum-exps from the state of that check
                        logK = _log_kernel(M, X, Y, xn, yn, ra, rb, pid, rows, cols, n, m, d,
                                           inv_reg, COST, PREC, SHIFT, BN, BM, BD)
                        lu = u0 + tl.log(cu)
                        lv = v0 + tl.log(cv)
                        j = cit
                        while j <= it:
                            red = lse(logK + lv[None, :], 1)
                            row = tl.exp(tl.minimum(lu + red, 30.0))
                            lu = marginal_update(red, aa, la, 1.0, LOG)
                            lv = marginal_update(lse(logK + lu[:, None], 0), bb, lb, 1.0, LOG)
                            j += 1
                    u0 = _finite(lu)
                    v0 = _finite(lv)
                    Kt = tl.exp(_log_kernel(M, X, Y, xn, yn, ra, rb, pid, rows, cols, n, m, d,
                                            inv_reg, COST, PREC, SHIFT, BN, BM, BD)
                                + u0[:, None] + v0[None, :])
                    u_new = tl.exp(lu - u0)
                    v_new = tl.exp(lv - v0)
                cu = u_new
                cv = v_new
                cit = it + 1
        elif LOG:
            red = _log_sums(Kt, vv, v0, 1) - u0
            u_new = marginal_update(red, aa, la, phi_a, LOG)
            v_new = marginal_update(_log_sums(Kt, u_new, u0, 0) - v0, bb, lb, phi_b, LOG)
            drift = tl.maximum(_drift(u_new, u0, aa), _drift(v_new, v0, bb))
            if drift > ABSORB:
                if drift == float("inf"):
                    # a line sum under- or overflowed: redo this iteration as true
                    # log-sum-exps
                    logK = _log_kernel(M, X, Y, xn, yn, ra, rb, pid, rows, cols, n, m, d,
                                       inv_reg, COST, PREC, SHIFT, BN, BM, BD)
                    red = lse(logK + vv[None, :], 1)
                    u_new = marginal_update(red, aa, la, phi_a, LOG)
                    v_new = marginal_update(lse(logK + u_new[:, None], 0), bb, lb, phi_b, LOG)
                u0 = _finite(u_new)
                v0 = _finite(v_new)
                Kt = tl.exp(_log_kernel(M, X, Y, xn, yn, ra, rb, pid, rows, cols, n, m, d,
                                        inv_reg, COST, PREC, SHIFT, BN, BM, BD)
                            + u0[:, None] + v0[None, :])
        else:
            red = tl.sum(Kt * vv[None, :], axis=1)
            row = uu * red
            u_new = marginal_update(red, aa, la, phi_a, LOG)
            v_new = marginal_update(tl.sum(Kt * u_new[:, None], axis=0), bb, lb, phi_b, LOG)
        if check:  # the error of the plan before this iteration, as the generic solver reads it
            if BALANCED:
                err = tl.sqrt(tl.sum(tl.where(rm, (row - aa) * (row - aa), 0.0), axis=0))
            else:
                err = tl.maximum(change(u_new, uu, rm, LOG), change(v_new, vv, cm, LOG))
            if (err < tol) | (err != err) | (err == float("inf")):
                done = 1  # converged, or broke (a non-finite error)
        uu, vv = u_new, v_new
        it += 1
    if LOG and BALANCED:
        uu = u0 + safe_log(uu)
        vv = v0 + safe_log(vv)
    tl.store(u + pid * n + rows, uu, mask=rm)
    tl.store(v + pid * m + cols, vv, mask=cm)
    tl.store(n_iter_out + pid, it)
    tl.store(err_out + pid, err)
    tl.store(conv_out + pid, err < tol)


def solve(*, cost, M, X, Y, xn, yn, ra, rb, a, b, u, v, inv_reg, phi, max_iter, tol,
          check_every, log, balanced, prec="ieee", has_init=True):
    """Run the whole solve in one launch; ``u`` and ``v`` (float32) are updated in place
    (read first only when ``has_init``; else the kernel starts from 0, or 1 for scalings).

    The cost is ``M`` (``cost=FROM_MATRIX``) or recomputed from ``X``, ``Y`` (see
    :mod:`.sinkhorn_stream`); ``ra`` and ``rb`` (or None) are added to the rows and columns
    of ``-cost * inv_reg``. Returns ``(n_iter, err, converged)``, each of shape (B,).
    """
    B, n = u.shape
    m = v.shape[1]
    d = 0 if X is None else X.shape[2]
    dev = u.device
    # every program writes its own entries: no fill launches
    n_iter = torch.empty(B, dtype=torch.int64, device=dev)
    err = torch.empty(B, dtype=torch.float32, device=dev)
    conv = torch.empty(B, dtype=torch.bool, device=dev)
    BN, BM = _p2(n), _p2(m)
    BD = max(16, min(64, triton.next_power_of_2(max(d, 1))))
    shift = ra is not None
    M_, X_, Y_, xn_, yn_, ra, rb = cost_args(M, X, Y, xn, yn, ra, rb, u)
    warps = TUNING.get("warps") or (1 if BN * BM <= 256 else (2 if BN * BM <= 1024 else 4))
    if B:
        _resident_kernel[(B,)](M_, X_, Y_, xn_, yn_, ra, rb, a, b, u, v, n_iter, err, conv, n,
                               m, d, float(inv_reg), float(phi[0]), float(phi[1]), max_iter,
                               float(tol), check_every, COST=cost, PREC=prec, LOG=log,
                               BALANCED=balanced, SHIFT=shift, HAS_INIT=has_init, BN=BN,
                               BM=BM, BD=BD,
                               num_warps=warps)
    return n_iter, err, conv
