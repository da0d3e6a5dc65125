"""Online log-sum-exp over tiles, shared by every Sinkhorn kernel.

A reduction along one axis of a tile keeps a running maximum ``mx`` and a running sum
``acc`` of ``exp(x - mx)``; :func:`lse_step` folds in one more tile, :func:`lse_end` reads the
result. Rows or columns that are ``-inf`` throughout (zero weights, padding) stay ``-inf``
and never produce NaN.
"""
from __future__ import annotations

import triton
import triton.language as tl


@triton.jit
def lse_step(mx, acc, x, AXIS: tl.constexpr):
    """Fold tile ``x`` into the running ``(mx, acc)`` of a log-sum-exp along ``AXIS``."""
    new = tl.maximum(mx, tl.max(x, axis=AXIS))
    safe = tl.where(new == float("-inf"), 0.0, new)
    acc = acc * tl.exp(mx - safe) + tl.sum(tl.exp(x - tl.expand_dims(safe, AXIS)), axis=AXIS)
    return new, acc


@triton.jit
def lse_end(mx, acc):
    """``log(sum exp)`` from the running pair; ``-inf`` for an empty or all ``-inf`` line."""
    safe = tl.where(mx == float("-inf"), 0.0, mx)
    return tl.where(acc > 0, safe + tl.log(acc), float("-inf"))


@triton.jit
def lse(x, AXIS: tl.constexpr):
    """Log-sum-exp of a whole tile along ``AXIS`` (the tile holds the full line)."""
    mx = tl.max(x, axis=AXIS)
    safe = tl.where(mx == float("-inf"), 0.0, mx)
    s = tl.sum(tl.exp(x - tl.expand_dims(safe, AXIS)), axis=AXIS)
    return tl.where(s > 0, safe + tl.log(s), float("-inf"))
