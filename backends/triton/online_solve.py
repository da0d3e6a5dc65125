"""Launch wrappers of the streaming kernels (:mod:`.online`): GeomLoss's annealed Sinkhorn loop
on point clouds with no host sync per step, the envelope gradients and plan products.

The temperatures are known in advance, so the loop is a fixed sequence of launches (each
reads the previous potentials from one buffer and writes the other); the host only waits
when ``tol`` asks for a convergence check, once every ``check_every`` iterations.
Reference: :func:`ot_batch.solvers.annealed.potentials` (same updates, same check).
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Callable, Optional, Sequence

import numpy as np
import torch
import triton

from ot_batch.solvers.annealed import _log_weights

from . import online

PRECISIONS = ("tf32x3", "tf32")

# tile shapes by dimension class (H100 sweeps: 50,000-point clouds for the online loop,
# 2026-11-24; the batch suite's large for split-TF32, 2026-12-08; "split" not timed yet)
TUNING: dict[str, dict[str, int]] = {
    "small_d": dict(BM=64, BN=128, warps=4, stages=3),    # d <= 16
    "mid_d": dict(BM=128, BN=128, warps=4, stages=2),     # d <= 128
    "mid_d_x3": dict(BM=128, BN=64, warps=4, stages=2),   # d <= 128, tf32x3 in the kernel
    "large_d": dict(BM=64, BN=128, BD=64, warps=4, stages=3),
    "split": dict(BM=64, BN=128, warps=4, stages=3),      # split_coordinates, 3d <= 64
    "interpret": dict(BM=32, BN=32, warps=4, stages=1),
}
# The split layout (three TF32 products as one, see split_coordinates) for d up to this.
# Off (0) until timed on a GPU: the sm_90 build of its 64 x 128 tile with a 64-wide product
# takes 255 registers a thread against 124 for a 16-wide one, so it halves the resident
# programs; 21 is the most whose 3 d fits one 64-wide chunk.
SPLIT_MAX_D = 0


def _tiles(d: int, prec: str = "tf32", split: bool = False) -> dict[str, int]:
    """Tiles for ``d`` coordinates per product (``3 d`` read with ``split``)."""
    if os.environ.get("TRITON_INTERPRET") == "1":
        t = dict(TUNING["interpret"])
    elif split:
        t = dict(TUNING["split"])
    elif d <= 16:
        t = dict(TUNING["small_d"])
    elif d <= 128:
        t = dict(TUNING["mid_d_x3" if prec == "tf32x3" else "mid_d"])
    else:
        t = dict(TUNING["large_d"])
    width = 3 * d if split else d
    if width <= 128:
        t["BD"] = max(16, triton.next_power_of_2(width))
    else:
        t.setdefault("BD", 64)
    t["SINGLE_D"] = width <= t["BD"]
    return t


# Key chunks of every step: 1 (no split, the default until timed on a GPU), an int, or
# None for :func:`key_chunks`'s choice.
KEY_CHUNKS: Optional[int] = 1
# Split the keys until the launch has this many programs per multiprocessor, each chunk
# keeping at least MIN_CHUNK_TILES key tiles.
PROGRAMS_PER_SM = 4
MIN_CHUNK_TILES = 8


def key_chunks(programs: int, n_keys: int, BN: int, device: torch.device) -> int:
    """Chunks to split the keys of each query block in: 1 when the launch already has
    ``PROGRAMS_PER_SM`` programs per multiprocessor (batches, large clouds), more for one
    problem of a few thousand points, whose query blocks alone leave SMs idle or leave a
    short last wave."""
    if KEY_CHUNKS is not None:
        return max(1, int(KEY_CHUNKS))
    if device.type != "cuda" or programs == 0:
        return 1
    sms = torch.cuda.get_device_properties(device).multi_processor_count
    want = -(-PROGRAMS_PER_SM * sms // programs)
    return max(1, min(want, n_keys // (MIN_CHUNK_TILES * BN)))


def round_tf32(x: torch.Tensor) -> torch.Tensor:
    """Round float32 to the nearest TF32 value (10 mantissa bits), so that tensor-core
    products of the rounded coordinates are exact and the norms can be taken of the same
    numbers (then the scores are those of slightly moved points, not a mix)."""
    bits = x.contiguous().view(torch.int32)
    return ((bits + 0x1000) & ~0x1FFF).view(torch.float32)


def split_coordinates(P: torch.Tensor) -> torch.Tensor:
    """``[hi, hi, lo, hi]`` along the last axis (B, L, 4 D), ``hi`` = ``P`` rounded to TF32
    and ``lo = P - hi``: a query read from columns ``[0, 3D)`` and a key from ``[D, 4D)``
    give ``hi.hi + hi.lo + lo.hi`` in one TF32 product of depth ``3D``, float32 accuracy
    (as ``tl.dot``'s 'tf32x3', whose three products split the tiles inside the kernel,
    at 1.7x the time of one TF32 product on the batch suite's medium workload)."""
    P = P.to(torch.float32)
    hi = round_tf32(P)
    return torch.cat([hi, hi, P - hi, hi], dim=-1).contiguous()


def round_tf32_(x: torch.Tensor) -> torch.Tensor:
    """:func:`round_tf32` in place (``x`` contiguous float32)."""
    bits = x.view(torch.int32)
    bits.add_(0x1000).bitwise_and_(~0x1FFF)
    return x


@dataclass
class Clouds:
    """Both clouds of every problem, centred and concatenated: ``P`` (B, N + M, D) float32,
    ``sqn = c |p|^2`` and the log-weights (B, N + M)."""
    P: torch.Tensor
    sqn: torch.Tensor
    logw: torch.Tensor
    N: int
    M: int
    c: float
    precision: str

    @classmethod
    def of(cls, X, Y, a, b, c: float, precision: str = "tf32x3") -> "Clouds":
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
        # one (B, N + M, D) float32 copy and no other temporary of that size (at n = 10^6,
        # d = 64 each is 512 MB): rounding in place, norms by a reduction
        P = torch.cat([X.detach().to(torch.float32), Y.detach().to(torch.float32)], dim=1)
        # |x - y|^2 is translation invariant; centring keeps |x|^2 + |y|^2 - 2 x.y small
        P -= P.mean(dim=1, keepdim=True)
        if precision == "tf32":
            round_tf32_(P)
        sqn = torch.linalg.vector_norm(P, dim=-1).square_().mul_(c)
        w = torch.cat([a.detach(), b.detach()], dim=1).to(torch.float32)
        logw = _log_weights(torch, w)  # -1e5 for zero weights, as the dense path
        return cls(P.contiguous(), sqn.contiguous(), logw.contiguous(), X.shape[1],
                   Y.shape[1], float(c), precision)

    @property
    def prec(self) -> str:
        return self.precision


@dataclass
class Potentials:
    """Result of :func:`annealed`: ``pot`` (B, K, N + M) final potentials (kind 0 cross,
    kind 1 self), ``old`` the ones they were computed from, ``lse`` of that last update,
    ``damp`` (x side, y side) of the final temperature, and the ``tol`` log."""
    pot: torch.Tensor
    old: torch.Tensor
    lse: torch.Tensor
    eps: float
    damp: tuple[float, float]
    log: Optional[dict]


def annealed(cl: Clouds, eps_list: Sequence[float],
             damping: Callable[[float], tuple[float, float]], *, debias: bool,
             balanced: bool, tol: Optional[float] = None, max_iter: int = 1000,
             check_every: int = 10) -> Potentials:
    """GeomLoss's symmetric loop over ``eps_list`` (then, with ``tol``, at the last
    temperature until each problem's error is below ``tol``) and the final extrapolation."""
    P = cl.P
    B, L, D = P.shape
    K = 2 if debias else 1
    t = _tiles(D, cl.prec)
    nbx, nby = triton.cdiv(cl.N, t["BM"]), triton.cdiv(cl.M, t["BM"])
    dev = P.device
    buf = torch.zeros((2, B, K, L), device=dev, dtype=torch.float32)
    lse = torch.empty((B, K, L), device=dev, dtype=torch.float32)
    active = torch.ones(B, device=dev, dtype=torch.int32)
    err = torch.zeros((B, 4), device=dev, dtype=torch.float32)
    grid = (K * (nbx + nby), B)
    C = key_chunks(grid[0] * B, min(cl.N, cl.M), t["BN"], dev)
    part = (torch.empty((2, C, B, K, L), device=dev, dtype=torch.float32) if C > 1
            else buf)  # the chunks' partial log-sum-exps (max, sum)
    cur = 0

    def step(eps, keep, do_err=False, store_lse=False):
        nonlocal cur
        dx, dy = damping(eps)
        args = (P, cl.sqn, cl.logw, buf[cur], buf[1 - cur], lse, active, err,
                err.view(torch.int32), part[0], part[1], cl.N, cl.M, D, K, nbx, nby, B, C,
                float(eps), 1.0 / float(eps), 2.0 * cl.c, float(dx), float(dy), float(keep))
        meta = dict(DO_ERR=do_err, BALANCED=balanced, STORE_LSE=store_lse,
                    SINGLE_D=t["SINGLE_D"], PREC=cl.prec, BM=t["BM"], BN=t["BN"], BD=t["BD"],
                    num_warps=t["warps"], num_stages=t["stages"])
        if C > 1:  # the keys split in C chunks, then the merge
            online._step_kernel[grid + (C,)](*args, PHASE=1, **meta)
            online._step_kernel[grid](*args, PHASE=2, **meta)
        else:
            online._step_kernel[grid](*args, **meta)
        cur = 1 - cur

    step(eps_list[0], 0.0)  # from zero potentials
    for eps in eps_list:
        step(eps, 0.5)
    eps = eps_list[-1]
    log = None
    if tol is not None:
        log = _finish(lambda do_err: step(eps, 0.5, do_err=do_err), err, active, debias, tol,
                      max_iter, check_every)
        active.fill_(1)
    old = buf[cur]
    step(eps, 0.0, store_lse=True)
    return Potentials(buf[cur], old, lse, float(eps), damping(eps), log)


def _finish(step, err, active, debias, tol, max_iter, check_every):
    """Iterations at the last temperature, checked every ``check_every``: the
    :func:`ot_batch.backends._eager.iterate` schedule, one host read per check."""
    B = err.shape[0]
    n_iter = np.zeros(B, dtype=np.int64)
    converged = np.zeros(B, dtype=bool)
    err_out = np.full(B, np.inf)
    live = np.ones(B, dtype=bool)
    cols = [0, 2, 3] if debias else [0]
    it = 0
    while it < max_iter and live.any():
        k = min(check_every - it % check_every, max_iter - it)
        err.zero_()
        for i in range(k):
            step(i == k - 1)
        it += k
        e = err[:, cols].amax(dim=1).double().cpu().numpy()
        n_iter[live] = it
        err_out[live] = e[live]
        done = e < tol
        converged[live & done] = True
        leave = live & (done | ~np.isfinite(e))
        if it >= max_iter:
            leave = live.copy()
        live &= ~leave
        if leave.any():
            active.copy_(torch.as_tensor(live.astype(np.int32), device=active.device))
    dev = err.device
    return {"n_iter": torch.as_tensor(n_iter, device=dev),
            "converged": torch.as_tensor(converged, device=dev),
            "err": torch.as_tensor(err_out, device=dev)}


def apply(cl: Clouds, eps: float, kpot: torch.Tensor, row: torch.Tensor, U: torch.Tensor, *,
          qo: int, nq: int, ko: int, nk: int, V: Optional[torch.Tensor] = None,
          W: Optional[torch.Tensor] = None) -> torch.Tensor:
    """``out_i = sum_j exp(s_ij + row_i) U_j`` (see :func:`.online._apply_kernel`) for the
    query rows ``qo:qo+nq`` and key rows ``ko:ko+nk`` of the clouds; ``kpot`` (B, nk) the
    key potentials, ``row`` (B, nq), ``U`` (B, nk, k); with ``V`` (B, nq, D) each weight
    times ``v_i . w_j``, ``W`` (B, nk, D) (the keys by default). Returns (B, nq, k)
    float32."""
    B, L, D = cl.P.shape
    t = _tiles(D, cl.prec)
    U = U.to(torch.float32)
    if U.stride(2) != 1 or U.stride(1) != U.shape[2]:  # rows of P may come as they are
        U = U.contiguous()
    kpot = kpot.to(torch.float32).contiguous()
    row = row.to(torch.float32).contiguous()
    k = U.shape[-1]
    BK = max(16, min(64, triton.next_power_of_2(k)))
    out = torch.empty((B, nq, k), device=cl.P.device, dtype=torch.float32)
    if V is not None:
        V = V.to(torch.float32).contiguous()
        W = cl.P[:, ko:ko + nk] if W is None else W.to(torch.float32).contiguous()
    grid = (triton.cdiv(nq, t["BM"]), triton.cdiv(k, BK), B)
    online._apply_kernel[grid](
        cl.P, cl.sqn, cl.logw, kpot, row, U, out if V is None else V, out if W is None else W,
        out, L, D, k, qo, nq, ko, nk, kpot.stride(0), row.stride(0), U.stride(0),
        0 if V is None else V.stride(0), 0 if W is None else W.stride(0), out.stride(0),
        1.0 / float(eps), 2.0 * cl.c, MOMENT=V is not None,
        SINGLE_D=t["SINGLE_D"], PREC=cl.prec, BM=t["BM"], BN=t["BN"],
        BD=t["BD"], BK=BK, num_warps=t["warps"], num_stages=t["stages"])
    return out


def _ranges(cl: Clouds, kind: int, side: int) -> dict[str, int]:
    """Query and key rows of one (kind, side) transport in the concatenated layout."""
    N, M = cl.N, cl.M
    qo, nq = (0, N) if side == 0 else (N, M)
    ko, nk = (qo, nq) if kind == 1 else ((N, M) if side == 0 else (0, N))
    return dict(qo=qo, nq=nq, ko=ko, nk=nk)


def envelope(cl: Clouds, pots: Potentials,
             sides: Sequence[int] = (0, 1)) -> list[list[Optional[torch.Tensor]]]:
    """``J[kind][side]`` (B, n_side, D): the gradient of each final potential with respect
    to its own point, the keys held fixed (GeomLoss's last extrapolation):
    ``damp * 2c (x_i - sum_j softmax_ij y_j)``, from one plan-times-points product."""
    K = pots.pot.shape[1]
    out = []
    for kind in range(K):
        row = []
        for side in range(2):
            if side not in sides:  # only the points that want a gradient
                row.append(None)
                continue
            r = _ranges(cl, kind, side)
            bary = apply(cl, pots.eps, pots.old[:, kind, r["ko"]:r["ko"] + r["nk"]],
                         -pots.lse[:, kind, r["qo"]:r["qo"] + r["nq"]],
                         cl.P[:, r["ko"]:r["ko"] + r["nk"]], **r)
            q = cl.P[:, r["qo"]:r["qo"] + r["nq"]]
            row.append((pots.damp[side] * 2.0 * cl.c) * (q - bary))
        out.append(row)
    return out
