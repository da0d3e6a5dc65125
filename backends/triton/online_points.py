"""POT's log-domain Sinkhorn on point clouds (``solve_sample_batch``) with the streaming softmin
tiles of :mod:`.online`: the half-iterations of :func:`.online._half_kernel`, driven by
:func:`.driver.run` (the on-device exit test and the CUDA-graph replay of the matrix path).

The clouds are laid out as the GeomLoss path lays them out (:class:`.online_solve.Clouds`):
``P`` (B, n + m, d) with the log-scalings ``u`` then ``v`` in one (B, n + m) buffer, so
a single program shape serves both sides and a problem of one pair of large clouds and a
batch of small ones take the same kernel.
Reference: :mod:`ot_batch.solvers.sinkhorn_log` on the formed cost.
"""
from __future__ import annotations

from typing import Callable, Optional

import torch
import triton

from . import online
from . import online_solve
from .online_solve import _tiles, split_coordinates
from .sinkhorn_stream import SQEUCLIDEAN


class Layout:
    """Concatenated points, norms, shifts, weights and log-scalings of ``B`` problems.

    With ``prec='tf32x3'`` and at most :data:`.online_solve.SPLIT_MAX_D` coordinates the
    points are stored split (:func:`.online_solve.split_coordinates`) and the kernels take
    one TF32 product of depth ``3 d``: float32 accuracy without splitting tiles on chip.
    """

    def __init__(self, cost: int, X: torch.Tensor, Y: torch.Tensor, a: torch.Tensor,
                 b: torch.Tensor, ra: Optional[torch.Tensor], rb: Optional[torch.Tensor],
                 u: torch.Tensor, v: torch.Tensor, prec: str = "tf32x3"):
        self.n, self.m = X.shape[1], Y.shape[1]
        self.d = X.shape[2]
        self.P = torch.cat([X, Y], dim=1).contiguous()
        if cost == SQEUCLIDEAN:  # -|x - y|^2 / reg = (2 x.y - |x|^2 - |y|^2) / reg
            self.sqn, self.score = (self.P * self.P).sum(-1).contiguous(), 2.0
        else:  # negative dot product: -M / reg = x.y / reg
            self.sqn, self.score = torch.zeros_like(self.P[..., 0]), 1.0
        self.shift = (torch.zeros_like(self.sqn) if ra is None
                      else torch.cat([ra, rb], dim=1).contiguous())
        self.w = torch.cat([a, b], dim=1).contiguous()
        self.pot = torch.cat([u, v], dim=1).contiguous()
        self.split = prec == "tf32x3" and 0 < self.d <= online_solve.SPLIT_MAX_D
        self.prec = "tf32" if self.split else prec
        # what the kernels read: rows ld apart, keys from column koff, products of width
        self.kP, self.ld, self.koff, self.width = self.P, self.d, 0, self.d
        if self.split:
            self.kP = split_coordinates(self.P)
            self.ld, self.koff, self.width = 4 * self.d, self.d, 3 * self.d

    def scalings(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The log-scalings ``(u, v)``, contiguous."""
        return (self.pot[:, :self.n].contiguous(), self.pot[:, self.n:].contiguous())


def passes(lay: Layout, *, inv_reg: float, phi: tuple[float, float],
           balanced: bool) -> Callable:
    """``half(cols, last, active, errsq, chg_bits)`` as :func:`.driver.passes` gives it:
    one launch per half-iteration, a program per block of query points."""
    B = lay.P.shape[0]
    t = _tiles(lay.d, lay.prec, lay.split)
    grids = [(triton.cdiv(lay.n, t["BM"]), B), (triton.cdiv(lay.m, t["BM"]), B)]

    def half(cols: bool, last: int, active, errsq, chg_bits) -> None:
        side = int(cols)
        online._half_kernel[grids[side]](
            lay.kP, lay.sqn, lay.shift, lay.w, lay.pot, active, errsq, chg_bits, lay.n, lay.m,
            lay.width, lay.ld, lay.koff, side, float(inv_reg), lay.score * float(inv_reg),
            float(phi[side]), last, BALANCED=balanced, SINGLE_D=t["SINGLE_D"], PREC=lay.prec,
            BM=t["BM"], BN=t["BN"], BD=t["BD"], num_warps=t["warps"], num_stages=t["stages"])
    return half
