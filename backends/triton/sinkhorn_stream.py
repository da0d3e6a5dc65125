"""Sinkhorn half-iterations as fused passes over the cost, for problems too big for one program.

Each half-iteration is one launch: a program owns a block of rows (or columns) of one problem,
streams the matching tiles of the cost once, folds them into an online log-sum-exp (or the
sum ``K v`` in the scaling domain) and writes the new potentials. The cost comes either from
memory, ``M`` (B, n, m) in any float dtype, read once per half-iteration (the HBM bound), or
is recomputed from point clouds ``X`` (B, n, d) and ``Y`` (B, m, d) with ``tl.dot`` and never
stored (squared Euclidean or negative dot product).

Convergence stays on the device: on check iterations the passes add each problem's error
into a (B,) buffer with atomics, a (B,)-program launch tests it, records ``n_iter`` and
clears the problem's ``active`` flag, and the passes skip inactive problems from then on. The
host only reads one flag per check, without waiting (see :mod:`.driver`).

Reference: :mod:`ot_batch.solvers.sinkhorn_log` and :mod:`ot_batch.solvers.sinkhorn`, whose
errors, check schedule and iteration counts these passes reproduce.
"""
from __future__ import annotations

import triton
import triton.language as tl

from ._lse import lse_end, lse_step
from ._parts import change, cost_tile, log_kernel_tile, marginal_update, safe_log

# cost kinds (the COST constexpr)
FROM_MATRIX, SQEUCLIDEAN, NEG_DOT = 0, 1, 2


@triton.jit
def _pass_kernel(M, X, Y, xn, yn, ra, rb, w, pot, other, active, errsq, chg_bits, n, m, d,
                 inv_reg, phi, do_err, COLS: tl.constexpr, COST: tl.constexpr,
                 LOG: tl.constexpr, SHIFT: tl.constexpr, BALANCED: tl.constexpr,
                 PREC: tl.constexpr, BN: tl.constexpr, BM: tl.constexpr, BD: tl.constexpr):
    """One half-iteration for a block of lines: rows (``COLS=False``: new ``u`` from ``v``)
    or columns (new ``v`` from ``u``). ``pot`` is updated, ``other`` is the fixed side."""
    pid = tl.program_id(0)
    act = tl.load(active + pid)
    if COLS:
        L = m
        Lo = n
        lines = tl.program_id(1) * BM + tl.arange(0, BM)
        mx = tl.full([BM], float("-inf"), tl.float32)
        acc = tl.zeros([BM], tl.float32)
    else:
        L = n
        Lo = m
        lines = tl.program_id(1) * BN + tl.arange(0, BN)
        mx = tl.full([BN], float("-inf"), tl.float32)
        acc = tl.zeros([BN], tl.float32)
    hi = tl.where(act != 0, Lo, 0)  # finished problems read nothing
    fill = float("-inf") if LOG else 0.0
    if COLS:
        for r0 in range(0, hi, BN):
            rows = r0 + tl.arange(0, BN)
            c = cost_tile(M, X, Y, xn, yn, pid, rows, lines, n, m, d, COST, PREC, BN, BM, BD)
            po = tl.load(other + pid * n + rows, mask=rows < n, other=fill).to(tl.float32)
            if LOG:
                t = log_kernel_tile(c, ra, rb, pid, rows, lines, n, m, inv_reg, SHIFT)
                mx, acc = lse_step(mx, acc, t + po[:, None], 0)
            else:
                acc += tl.sum(c * po[:, None], axis=0)
    else:
        for c0 in range(0, hi, BM):
            cols = c0 + tl.arange(0, BM)
            c = cost_tile(M, X, Y, xn, yn, pid, lines, cols, n, m, d, COST, PREC, BN, BM, BD)
            po = tl.load(other + pid * m + cols, mask=cols < m, other=fill).to(tl.float32)
            if LOG:
                t = log_kernel_tile(c, ra, rb, pid, lines, cols, n, m, inv_reg, SHIFT)
                mx, acc = lse_step(mx, acc, t + po[None, :], 1)
            else:
                acc += tl.sum(c * po[None, :], axis=1)
    red = lse_end(mx, acc) if LOG else acc
    lm = lines < tl.where(act != 0, L, 0)
    ww = tl.load(w + pid * L + lines, mask=lm, other=0.0).to(tl.float32)
    old = tl.load(pot + pid * L + lines, mask=lm, other=fill)
    new = marginal_update(red, ww, safe_log(ww), phi, LOG)
    if do_err != 0:
        if BALANCED:  # marginal error of the current plan, as the generic solver reads it
            if LOG:
                line = tl.exp(tl.minimum(old + red, 30.0))
            else:
                line = old * red
            sq = tl.sum(tl.where(lm, (line - ww) * (line - ww), 0.0), axis=0)
            tl.atomic_add(errsq + pid, sq)  # 0 for a finished problem (lm all false)
        else:  # changes are >= 0 (or NaN): their bits order as int32 do
            ch = change(new, old, lm, LOG)
            tl.atomic_max(chg_bits + pid, ch.to(tl.int32, bitcast=True))
    tl.store(pot + pid * L + lines, new, mask=lm)


@triton.jit
def _check_kernel(active, errsq, chg, n_iter, err_out, conv, it_ptr, tol,
                  BALANCED: tl.constexpr):
    """Per problem: read this iteration's error, record it, and retire finished problems.
    The iteration count is read from the device (``it_ptr``), so a captured CUDA graph of a
    block of iterations can be replayed."""
    pid = tl.program_id(0)
    it = tl.load(it_ptr)
    act = tl.load(active + pid)
    if BALANCED:
        e = tl.sqrt(tl.load(errsq + pid))
    else:
        e = tl.load(chg + pid)
    tl.store(errsq + pid, 0.0)
    tl.store(chg + pid, 0.0)
    live = act != 0
    ok = e < tol
    tl.store(err_out + pid, e, mask=live)
    tl.store(n_iter + pid, it, mask=live)
    tl.store(conv + pid, ok.to(tl.int8), mask=live)
    leave = ok | (e != e) | (e == float("inf"))
    tl.store(active + pid, tl.where(leave, 0, act), mask=live)


@triton.jit
def _finish_kernel(M, X, Y, xn, yn, ra, rb, u, v, plan, stats, rowsum, colsum, n, m, d, inv_reg,
                   STORE: tl.constexpr, COST: tl.constexpr, SHIFT: tl.constexpr,
                   PREC: tl.constexpr, BN: tl.constexpr, BM: tl.constexpr, BD: tl.constexpr):
    """The plan ``exp(logK + u + v)`` of a block of rows (stored when ``STORE``), and what the
    values need: ``<T, C>`` and ``<T, log T>`` per problem, row and column sums of ``T``; and
    the number of non-finite cost entries of each problem."""
    pid = tl.program_id(0)
    rows = tl.program_id(1) * BN + tl.arange(0, BN)
    rm = rows < n
    uu = tl.load(u + pid * n + rows, mask=rm, other=float("-inf"))
    lin = tl.zeros([BN], tl.float32)
    plogp = tl.zeros([BN], tl.float32)
    rs = tl.zeros([BN], tl.float32)
    bad = tl.zeros([BN], tl.float32)
    for c0 in range(0, m, BM):
        cols = c0 + tl.arange(0, BM)
        cm = cols < m
        c = cost_tile(M, X, Y, xn, yn, pid, rows, cols, n, m, d, COST, PREC, BN, BM, BD)
        t = log_kernel_tile(c, ra, rb, pid, rows, cols, n, m, inv_reg, SHIFT)
        vv = tl.load(v + pid * m + cols, mask=cm, other=float("-inf"))
        logT = t + uu[:, None] + vv[None, :]
        T = tl.exp(logT)
        pos = T > 0
        lin += tl.sum(T * c, axis=1)
        # the input check comes free with this read: entries of M that are NaN or inf
        bad += tl.sum(tl.where(rm[:, None] & cm[None, :] & ~(tl.abs(c) < float("inf")), 1.0,
                               0.0), axis=1)
        plogp += tl.sum(tl.where(pos, T * logT, 0.0), axis=1)
        rs += tl.sum(T, axis=1)
        tl.atomic_add(colsum + pid * m + cols, tl.sum(T, axis=0), mask=cm)
        if STORE:
            off = pid.to(tl.int64) * n * m
            tl.store(plan + off + rows[:, None].to(tl.int64) * m + cols[None, :],
                     T.to(plan.dtype.element_ty), mask=rm[:, None] & cm[None, :])
    tl.store(rowsum + pid * n + rows, rs, mask=rm)
    tl.atomic_add(stats + 3 * pid, tl.sum(lin, axis=0))
    tl.atomic_add(stats + 3 * pid + 1, tl.sum(plogp, axis=0))
    tl.atomic_add(stats + 3 * pid + 2, tl.sum(bad, axis=0))
