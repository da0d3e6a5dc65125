"""The ``batch`` suite's workloads: ANCHORS.md's batches of float32 problems, from points.

Four workloads, ``(B, n, m, d, reg, iters)``, exactly as the peers were timed
(``shared/bench/ANCHORS.md``, ``shared/bench/peers_batch.py``):

========  =====  ====  ====  ==  ====  =====
workload  B      n     m     d   reg   iters
========  =====  ====  ====  ==  ====  =====
pot_doc   128    8     8     2   10    1000
small     1024   64    64    8   0.05  200
medium    256    512   512   16  0.05  200
large     8      4096  4096  64  0.05  100
========  =====  ====  ====  ==  ====  =====

Data (:func:`anchors_data`, the peers' ``make``): ``np.random.default_rng(seed)`` draws
``X ~ U[0,1]^d`` of shape (B, n, d), then ``Y ~ U[0.05,0.95]^d`` of shape (B, m, d), both cast
to float32; ``M = |x - y|^2 / d`` in float32 (computed the way the peers' script does, so the
same seed gives the same bits). Uniform weights, a fixed iteration count (``tol=0``,
``max_iter=iters``). The :class:`~ot_batch.bench.workloads.Problem` also carries the point
clouds scaled by ``1/sqrt(d)``, whose squared Euclidean distances are ``M``, for engines that
solve from points.

Targets (from the issue) are speed-ups of ot_batch (from the cost tensor) and of
ot_batch_points (from the point clouds) over POT's ``ot.batch`` on torch and OTT-JAX's vmap.
Each workload also knows its memory and exponential bounds per iteration on the GPU the peers
were timed on (:attr:`BatchWorkload.hbm_bound_ms`, :attr:`BatchWorkload.exp_bound_ms`).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .workloads import Problem, Workload

__all__ = ["anchors_data", "BatchWorkload", "WORKLOADS", "DATA", "HBM_BYTES_PER_S",
           "EXP_PER_S"]

# The peers' GPU (one H100): memory bandwidth and fp32 exponentials per second, as in
# peers_batch.py's ideal_ms_per_iter_bw / ideal_ms_per_iter_exp.
HBM_BYTES_PER_S = 3.0e12
EXP_PER_S = 3.9e12

# peers_batch.py takes differences only below this many (B, n, m, d) elements, else the
# expanded |x|^2 + |y|^2 - 2 x.y; the same switch keeps our M bit-identical to theirs.
_DIRECT_LIMIT = 4e8


def anchors_data(B: int, n: int, m: int, d: int,
                 seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(X, Y, M)`` in float32, exactly as ``peers_batch.make`` draws and computes them.

    Parameters
    ----------
    B, n, m, d : int
        Problems, points per problem in X and in Y, dimension.
    seed : int
        Seed of ``np.random.default_rng``.

    Returns
    -------
    X : ndarray, shape (B, n, d)
        ``U[0, 1]^d`` points.
    Y : ndarray, shape (B, m, d)
        ``U[0.05, 0.95]^d`` points.
    M : ndarray, shape (B, n, m)
        ``|x - y|^2 / d``.
    """
    rng = np.random.default_rng(seed)
    X = rng.random((B, n, d)).astype(np.float32)
    Y = (rng.random((B, m, d)) * 0.9 + 0.05).astype(np.float32)
    if B * n * m * d < _DIRECT_LIMIT:
        M = ((X[:, :, None, :] - Y[:, None, :, :]) ** 2).sum(-1)
    else:
        M = ((X ** 2).sum(-1)[:, :, None] + (Y ** 2).sum(-1)[:, None, :]
             - 2 * np.einsum("bid,bjd->bij", X, Y))
    return X, Y, (M / d).astype(np.float32)


def _costs(B: int, n: int, m: int, d: int, seed: int) -> np.ndarray:
    return anchors_data(B, n, m, d, seed)[2]


@dataclass(frozen=True)
class BatchWorkload(Workload):
    """An ANCHORS.md workload: float32 costs and the (scaled) point clouds they come from."""

    def generate(self, seed: int = 0) -> Problem:
        X, Y, M = anchors_data(self.B, self.n, self.m, self.d, seed)
        # |x/sqrt(d) - y/sqrt(d)|^2 = |x - y|^2 / d = M
        s = 1.0 / np.sqrt(self.d)
        return Problem(M=M, reg=self.reg, max_iter=self.max_iter, tol=self.tol,
                       X=(X * s).astype(np.float32), Y=(Y * s).astype(np.float32))

    @property
    def hbm_bound_ms(self) -> float:
        """Milliseconds per iteration to read the fp32 cost twice (a row and a column pass)."""
        return 1e3 * 8.0 * self.B * self.n * self.m / HBM_BYTES_PER_S

    @property
    def exp_bound_ms(self) -> float:
        """Milliseconds per iteration for two exponentials per cost entry."""
        return 1e3 * 2.0 * self.B * self.n * self.m / EXP_PER_S


DATA = ("Data: X ~ U[0,1]^d, Y ~ U[0.05,0.95]^d, M = |x - y|^2 / d (float32), uniform "
        "weights, a fixed iteration count (tol=0), as ANCHORS.md / peers_batch.py.")

# Speed-up targets of the issue: ot_batch over the peers from the cost tensor, and
# ot_batch_points over them from points (the peers read the cost tensor).
_SMALL_TARGETS = {"ott_vmap": 5.0, "pot_batch_torch": 10.0,
                  ("pot_batch_torch", "ot_batch_points"): 20.0}
_LARGE_TARGETS = {"ott_vmap": 1.8, "pot_batch_torch": 7.0,
                  ("ott_vmap", "ot_batch_points"): 5.0,
                  ("pot_batch_torch", "ot_batch_points"): 20.0}


def _workload(name: str, B: int, n: int, d: int, reg: float, iters: int, quick: dict,
              targets: dict, what: str) -> BatchWorkload:
    return BatchWorkload(name=name, doc=what, B=B, n=n, m=n, d=d, reg=reg,
                         max_iter=iters, tol=0.0, costs=_costs, targets=targets, quick=quick,
                         report_iters=True)


WORKLOADS: dict[str, BatchWorkload] = {w.name: w for w in (
    _workload("pot_doc", 128, 8, 2, 10.0, 1000, {"B": 8, "max_iter": 50}, _SMALL_TARGETS,
              "POT example's sizes (launch-bound)."),
    _workload("small", 1024, 64, 8, 0.05, 200, {"B": 8, "n": 16, "m": 16, "max_iter": 20},
              _SMALL_TARGETS, "Many small problems (the costs fit in L2)."),
    _workload("medium", 256, 512, 16, 0.05, 200, {"B": 4, "n": 16, "m": 16, "max_iter": 20},
              _LARGE_TARGETS, "Medium problems (memory-bound from the cost tensor)."),
    _workload("large", 8, 4096, 64, 0.05, 100, {"B": 2, "n": 16, "m": 16, "max_iter": 10},
              _LARGE_TARGETS, "A few large problems (memory-bound from the cost tensor)."),
)}
