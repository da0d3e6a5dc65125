"""The host side of the streaming Sinkhorn: launches, tile shapes and the exit test.

Iterations run in blocks of ``check_every`` (two passes each, then the check); on CUDA the
first block runs as it is and the next ones replay a CUDA graph of it, so the host's cost per
block is one replay, whatever the number of kernels. The host never waits for the GPU inside
the loop. Every ``check_every`` iterations a small
launch retires the problems that converged (:func:`.sinkhorn_stream._check_kernel`); then the
number of problems still active is copied to pinned host memory without blocking, and the
loop reads an earlier copy once its event has completed. So the loop stops at most one check
block after the last problem converged, and the extra launches find nothing active and read
nothing.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
import triton

from . import sinkhorn_stream as ks


# Experiments may set "matrix" or "points" to a :class:`Tiles` to override :func:`tiles`.
TUNING: dict = {}


@dataclass(frozen=True)
class Tiles:
    """Tile shapes and warps of the row pass, the column pass and the final pass."""

    row: tuple[int, int]
    col: tuple[int, int]
    depth: int  # BD, the chunk of coordinates per tl.dot
    warps: int
    stages: int = 3  # software-pipelining depth of the tile loops


def tiles(n: int, m: int, d: int, points: bool) -> Tiles:
    """Tile shapes for an n x m problem (``d`` coordinates when the cost is recomputed).

    A row pass reads whole rows of a block; wide tiles along the contiguous axis give long
    coalesced reads. ``tl.dot`` needs every side >= 16.
    """
    key = "points" if points else "matrix"
    if key in TUNING:
        return TUNING[key]
    lo = 16 if points else 1

    def p2(x, cap):
        return max(lo, min(cap, triton.next_power_of_2(max(x, 1))))
    if points:
        bd = max(16, min(64, triton.next_power_of_2(max(d, 1))))
        return Tiles((p2(n, 64), p2(m, 64)), (p2(n, 64), p2(m, 64)), bd, 4)
    # more, thinner programs: H100, per iteration, 8 x 4096 x 4096 12% faster with (8, 512)
    # rows and (128, 32) columns; 256 x 512 x 512 3% faster with (16, 128) rows than (32, 128)
    row = (8, p2(m, 512)) if m >= 2048 else (p2(n, 16), p2(m, 128))
    col = (p2(n, 128), 32) if n >= 2048 else (p2(n, 64), p2(m, 64))
    return Tiles(row, col, 16, 4)


def cost_args(M, X, Y, xn, yn, ra, rb, fill):
    """The cost and shift pointers a kernel takes, ``fill`` (any tensor of the device) for
    those its variant does not read."""
    return tuple(fill if x is None else x for x in (M, X, Y, xn, yn, ra, rb))


class _ExitFlag:
    """Non-blocking "is any problem still active" reads (CUDA); plain reads elsewhere."""

    def __init__(self, active: torch.Tensor):
        self.active = active
        self.cuda = active.is_cuda
        self.pending: list[tuple[torch.cuda.Event, torch.Tensor]] = []

    def post(self) -> None:
        if not self.cuda:
            return
        host = torch.empty((), dtype=torch.int32, pin_memory=True)
        host.copy_(self.active.amax(), non_blocking=True)
        ev = torch.cuda.Event()
        ev.record()
        self.pending.append((ev, host))

    def all_done(self) -> bool:
        if not self.cuda:
            return not bool(self.active.any())
        while self.pending and self.pending[0][0].query():
            _, host = self.pending.pop(0)
            if int(host) == 0:
                return True
        return False


def passes(*, cost: int, M, X, Y, xn, yn, ra, rb, a, b, u, v, inv_reg: float,
           phi: tuple[float, float], log: bool, balanced: bool, prec: str) -> Callable:
    """The half-iterations of :func:`.sinkhorn_stream._pass_kernel`: ``half(cols, last,
    active, errsq, chg_bits)`` updates ``u`` (rows) or ``v`` (``cols``) in place.

    ``cost`` is one of :data:`.sinkhorn_stream.FROM_MATRIX` (``M`` given), ``SQEUCLIDEAN`` or
    ``NEG_DOT`` (``X``, ``Y``; ``xn``, ``yn`` their squared norms).
    """
    B, n = u.shape
    m = v.shape[1]
    d = 0 if X is None else X.shape[2]
    t = tiles(n, m, d, cost != ks.FROM_MATRIX)
    shift = ra is not None
    M_, X_, Y_, xn_, yn_, ra, rb = cost_args(M, X, Y, xn, yn, ra, rb, u)
    common = dict(COST=cost, LOG=log, SHIFT=shift, BALANCED=balanced, PREC=prec, BD=t.depth,
                  num_warps=t.warps, num_stages=t.stages)
    grid_r = (B, triton.cdiv(n, t.row[0]))
    grid_c = (B, triton.cdiv(m, t.col[1]))

    def half(cols: bool, last: int, active, errsq, chg_bits) -> None:
        if cols:
            ks._pass_kernel[grid_c](M_, X_, Y_, xn_, yn_, ra, rb, b, v, u, active, errsq,
                                    chg_bits, n, m, d, inv_reg, phi[1], last, COLS=True,
                                    BN=t.col[0], BM=t.col[1], **common)
        else:
            ks._pass_kernel[grid_r](M_, X_, Y_, xn_, yn_, ra, rb, a, u, v, active, errsq,
                                    chg_bits, n, m, d, inv_reg, phi[0], last, COLS=False,
                                    BN=t.row[0], BM=t.row[1], **common)
    return half


def run(half: Callable, *, B: int, device: torch.device, max_iter: int, tol: float,
        check_every: int, balanced: bool):
    """Iterate the half-iterations ``half`` (see :func:`passes`), rows then columns, with
    the exit test every ``check_every`` iterations. Returns ``(n_iter, err, converged)`` of
    shape (B,)."""
    dev = device
    active = torch.ones(B, dtype=torch.int32, device=dev)
    errsq = torch.zeros(B, dtype=torch.float32, device=dev)
    chg = torch.zeros(B, dtype=torch.float32, device=dev)
    n_iter = torch.zeros(B, dtype=torch.int32, device=dev)
    err = torch.full((B,), float("inf"), dtype=torch.float32, device=dev)
    conv = torch.zeros(B, dtype=torch.int8, device=dev)
    if B == 0 or max_iter == 0:
        return n_iter, err, conv.bool()
    chg_bits = chg.view(torch.int32)
    it_dev = torch.zeros(1, dtype=torch.int32, device=dev)

    def block(k: int) -> None:
        """k iterations, the error taken on the last, then the check."""
        for j in range(k):
            last = int(j == k - 1)
            half(False, last, active, errsq, chg_bits)
            half(True, last, active, errsq, chg_bits)
        it_dev.add_(k)
        ks._check_kernel[(B,)](active, errsq, chg, n_iter, err, conv, it_dev, tol,
                               BALANCED=balanced)

    # checks at multiples of check_every and at max_iter, as the generic loop
    sizes = [check_every] * (max_iter // check_every)
    if max_iter % check_every:
        sizes.append(max_iter % check_every)
    flag = _ExitFlag(active)
    graph = None
    done = 0
    for i, k in enumerate(sizes):
        if graph is not None and k == check_every:
            graph.replay()
        else:
            block(k)
            if i == 0 and active.is_cuda and sizes[1:].count(check_every) >= 2:
                graph = _capture(lambda: block(check_every))
        done += k
        if tol > 0 and done < max_iter:
            if flag.all_done():
                break
            flag.post()
    return n_iter, err, conv.bool()


def _capture(launch):
    """A CUDA graph of ``launch()`` (captured, not run), or None where capture fails: the
    launches of a block then cost one replay instead of a Python call per kernel."""
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    graph = torch.cuda.CUDAGraph()
    try:
        with torch.cuda.stream(side):
            graph.capture_begin()
            try:
                launch()
            finally:
                graph.capture_end()
    except RuntimeError:
        return None
    torch.cuda.current_stream().wait_stream(side)
    return graph


def finish(*, cost: int, M, X, Y, xn, yn, ra, rb, u, v, inv_reg: float, plan, prec: str):
    """Form the plan from log-potentials ``u``, ``v`` (stored in ``plan`` unless it is None)
    and the statistics of the values: returns ``(lin, plogp, rowsum, colsum, nonfinite)``
    with ``lin = <T, C>``, ``plogp = <T, log T>`` and ``nonfinite`` (the number of NaN or
    inf costs) of shape (B,)."""
    B, n = u.shape
    m = v.shape[1]
    d = 0 if X is None else X.shape[2]
    dev = u.device
    acc = torch.zeros(B * (3 + m), dtype=torch.float32, device=dev)  # atomics: one fill
    stats, colsum = acc[:3 * B].view(B, 3), acc[3 * B:].view(B, m)
    rowsum = torch.empty((B, n), dtype=torch.float32, device=dev)  # every row is written
    if B:
        t = tiles(n, m, d, cost != ks.FROM_MATRIX)
        shift = ra is not None
        M_, X_, Y_, xn_, yn_, ra_, rb_ = cost_args(M, X, Y, xn, yn, ra, rb, u)
        ks._finish_kernel[(B, triton.cdiv(n, t.row[0]))](
            M_, X_, Y_, xn_, yn_, ra_, rb_, u, v, plan if plan is not None else u, stats,
            rowsum, colsum, n, m, d, inv_reg, STORE=plan is not None, COST=cost, SHIFT=shift,
            PREC=prec, BN=t.row[0], BM=t.row[1], BD=t.depth, num_warps=t.warps)
    return stats[:, 0], stats[:, 1], rowsum, colsum, stats[:, 2]
