"""Tile-level pieces every Sinkhorn kernel shares: the cost tile (read, or recomputed from
points), the log-kernel, the potential update and the change of a potential."""
from __future__ import annotations

import triton
import triton.language as tl


@triton.jit
def cost_tile(M, X, Y, xn, yn, pid, rows, cols, n, m, d, COST: tl.constexpr,
              PREC: tl.constexpr, BN: tl.constexpr, BM: tl.constexpr, BD: tl.constexpr):
    """The (BN, BM) tile of problem ``pid``'s cost, float32, 0 outside the problem."""
    rm = rows < n
    cm = cols < m
    mask = rm[:, None] & cm[None, :]
    if COST == 0:
        off = pid.to(tl.int64) * n * m
        c = tl.load(M + off + rows[:, None].to(tl.int64) * m + cols[None, :], mask=mask,
                    other=0.0).to(tl.float32)
    else:
        dot = tl.zeros([BN, BM], tl.float32)
        xb = X + pid.to(tl.int64) * n * d
        yb = Y + pid.to(tl.int64) * m * d
        for k0 in range(0, d, BD):
            ks = k0 + tl.arange(0, BD)
            km = ks < d
            xt = tl.load(xb + rows[:, None] * d + ks[None, :], mask=rm[:, None] & km[None, :],
                         other=0.0)
            yt = tl.load(yb + cols[:, None] * d + ks[None, :], mask=cm[:, None] & km[None, :],
                         other=0.0)
            dot = tl.dot(xt, tl.trans(yt), dot, input_precision=PREC)
        if COST == 1:  # round-off can dip below zero; a distance never does
            c = tl.maximum(tl.load(xn + pid * n + rows, mask=rm, other=0.0)[:, None]
                           + tl.load(yn + pid * m + cols, mask=cm, other=0.0)[None, :]
                           - 2.0 * dot, 0.0)
        else:
            c = -dot
        c = tl.where(mask, c, 0.0)
    return c


@triton.jit
def cost_tile_direct(X, Y, pid, rows, cols, n, m, d, COST: tl.constexpr, BN: tl.constexpr,
                     BM: tl.constexpr):
    """:func:`cost_tile` from points, one coordinate at a time on the CUDA cores: exact
    float32 (no cancellation in ``|x|^2 + |y|^2 - 2 x.y``), any tile shape, and the tile
    stays in the plain layout the reductions of an on-chip solve want."""
    rm = rows < n
    cm = cols < m
    xb = X + pid.to(tl.int64) * n * d
    yb = Y + pid.to(tl.int64) * m * d
    c = tl.zeros([BN, BM], tl.float32)
    for k in range(0, d):
        xk = tl.load(xb + rows * d + k, mask=rm, other=0.0).to(tl.float32)
        yk = tl.load(yb + cols * d + k, mask=cm, other=0.0).to(tl.float32)
        if COST == 1:
            diff = xk[:, None] - yk[None, :]
            c += diff * diff
        else:
            c -= xk[:, None] * yk[None, :]
    return tl.where(rm[:, None] & cm[None, :], c, 0.0)


@triton.jit
def log_kernel_tile(c, ra, rb, pid, rows, cols, n, m, inv_reg, SHIFT: tl.constexpr):
    """``-c / reg`` (+ the row and column shifts of the KL reference), ``-inf`` outside."""
    rm = rows < n
    cm = cols < m
    t = -c * inv_reg
    if SHIFT:
        t += tl.load(ra + pid * n + rows, mask=rm, other=0.0)[:, None]
        t += tl.load(rb + pid * m + cols, mask=cm, other=0.0)[None, :]
    return tl.where(rm[:, None] & cm[None, :], t, float("-inf"))


@triton.jit
def safe_log(w):
    """``log w``, ``-inf`` for zero weights."""
    pos = w > 0
    return tl.where(pos, tl.log(tl.where(pos, w, 1.0)), float("-inf"))


@triton.jit
def marginal_update(lse_or_sum, w, logw, phi, LOG: tl.constexpr):
    """New potential from the reduction of one side (log-sum-exp, or the sum ``K v``);
    ``logw`` is ``safe_log(w)`` (read in the log domain only)."""
    pos = w > 0
    if LOG:
        new = tl.where(pos, phi * (logw - lse_or_sum), float("-inf"))
    else:
        ratio = w / lse_or_sum
        if phi != 1.0:
            ratio = tl.exp(phi * tl.log(ratio))
        new = tl.where(pos, ratio, 0.0)
    return new


@triton.jit
def change(new, old, mask, LOG: tl.constexpr):
    """Largest change of a log-potential; entries infinite in either count as unchanged."""
    if LOG:
        ln, lo = new, old
    else:
        ln = tl.log(new)
        lo = tl.log(old)
    fin = (tl.abs(ln) < float("inf")) & (tl.abs(lo) < float("inf")) & mask
    d = tl.abs(tl.where(fin, ln, 0.0) - tl.where(fin, lo, 0.0))  # no inf - inf
    # NaN anywhere must surface as a non-finite error (a broken problem)
    bad = tl.sum(tl.where(mask & (ln != ln), 1, 0), axis=0)
    return tl.where(bad > 0, float("nan"), tl.max(d, axis=0))
