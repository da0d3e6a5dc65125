"""Whole balanced log-domain Sinkhorn solves in one kernel launch, one program per problem.

The inner solves of Gromov-Wasserstein (:mod:`ot_batch.solvers.gromov`) are many short
Sinkhorn runs on sharp kernels: 20-50 iterations each, dozens of times. As separate torch
operations every iteration costs some 25 kernel launches; here a program owns one problem
and runs every iteration, the over-relaxation and the stopping test of
:mod:`ot_batch.solvers.sinkhorn_log` itself. Its tiles span every row and a chunk of columns,
so ``u`` and the row log-sum-exps stay in registers, and one read of the log-kernel per
iteration serves both half-iterations: each chunk gets its ``v`` update from the column
log-sum-exps and at once folds into the row log-sum-exps of the next ``u`` update. On a GPU
the chunk width and the warps are tuned once per shape.
Reference: ``sinkhorn_log.solve(..., omega=...)``, to which the tests compare it.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from ._lse import lse as _lse, lse_end as _lse_end, lse_step as _lse_step


@triton.jit
def row_lse(base, rows, rm, vrow, m, BN: tl.constexpr, BM: tl.constexpr):
    """Log-sum-exp over every column of each row of ``logK + v`` (the problem's log-kernel
    at ``base``, ``v`` at ``vrow``), for the rows ``rows`` (mask ``rm``)."""
    mr = tl.full([BN], float("-inf"), tl.float32)
    sr = tl.zeros([BN], tl.float32)
    for c0 in range(0, m, BM):
        cols = c0 + tl.arange(0, BM)
        cm = cols < m
        x = tl.load(base + rows[:, None] * m + cols[None, :], mask=rm[:, None] & cm[None, :],
                    other=float("-inf")).to(tl.float32)
        vv = tl.load(vrow + cols, mask=cm, other=float("-inf")).to(tl.float32)
        mr, sr = _lse_step(mr, sr, x + vv[None, :], 1)
    return _lse_end(mr, sr)


@triton.jit
def _sinkhorn_kernel(logK, a, b, u, v, n_iter_out, err_out, n, m, max_iter, tol, omega,
                     check_every, BN: tl.constexpr, BM: tl.constexpr):
    pid = tl.program_id(0).to(tl.int64)
    base = logK + pid * n * m
    rows = tl.arange(0, BN)
    rm = rows < n
    aa = tl.load(a + pid * n + rows, mask=rm, other=0.0).to(tl.float32)
    apos = aa > 0
    loga = tl.where(apos, tl.log(tl.where(apos, aa, 1.0)), float("-inf"))
    # u and the row log-sum-exps stay in registers (a tile spans every row); v is written
    # chunk by chunk and read back by the next pass
    uu = tl.load(u + pid * n + rows, mask=rm, other=float("-inf")).to(tl.float32)
    lr = row_lse(base, rows, rm, v + pid * m, m, BN, BM)
    prev = float("inf")
    err = float("inf")
    it = 0
    done = 0
    while (it < max_iter) & (done == 0):
        # the error of the current plan, read off the row sums, then the u update
        row = tl.where(apos, tl.exp(tl.minimum(uu + lr, 30.0)), 0.0)
        err = tl.sqrt(tl.sum((row - aa) * (row - aa), axis=0))
        w = tl.where((err <= prev) & (omega != 1.0), omega, 1.0)
        uu = tl.where(apos, (1.0 - w) * uu + w * (loga - lr), float("-inf"))
        tl.debug_barrier()
        # one pass over the kernel: each chunk of columns gets its v update, and folds into
        # the row log-sum-exps of the next u update (one read of logK per iteration)
        mr = tl.full([BN], float("-inf"), tl.float32)
        sr = tl.zeros([BN], tl.float32)
        for c0 in range(0, m, BM):
            cols = c0 + tl.arange(0, BM)
            cm = cols < m
            x = tl.load(base + rows[:, None] * m + cols[None, :],
                        mask=rm[:, None] & cm[None, :], other=float("-inf")).to(tl.float32)
            lc = _lse(x + uu[:, None], 0)
            vv = tl.load(v + pid * m + cols, mask=cm, other=0.0).to(tl.float32)
            bb = tl.load(b + pid * m + cols, mask=cm, other=0.0).to(tl.float32)
            bpos = bb > 0
            target = tl.log(tl.where(bpos, bb, 1.0)) - lc
            vn = tl.where(bpos, (1.0 - w) * vv + w * target, float("-inf"))
            tl.store(v + pid * m + cols, vn, mask=cm)
            mr, sr = _lse_step(mr, sr, x + vn[None, :], 1)
        lr = _lse_end(mr, sr)
        tl.debug_barrier()
        prev = err
        it += 1
        if it % check_every == 0:
            if err < tol:
                done = 1
    tl.store(u + pid * n + rows, uu, mask=rm)
    tl.store(n_iter_out + pid, it)
    tl.store(err_out + pid, err)


MAX_ROWS = 4096  # a chunk spans every row: up to 4096 x 2 floats per tile
TILE = 8192  # floats per tile without tuning (32 per thread over 8 warps)


def fits(n: int) -> bool:
    """Row counts whose chunks of columns fit in registers."""
    return n <= MAX_ROWS


def _prune(configs, named_args, **kwargs):
    """Chunks no wider than the problem and tiles of at most 16k floats."""
    BN, m = kwargs.get("BN", named_args.get("BN")), named_args["m"]
    widest = triton.next_power_of_2(max(m, 2))
    out = [c for c in configs if c.kwargs["BM"] * BN <= 16384 and c.kwargs["BM"] <= widest
           and c.kwargs["BM"] >= 2]
    return out or [triton.Config({"BM": 2}, num_warps=4)]


# On a GPU the chunk width and the warps are tuned once per shape (the first call times each
# candidate, with u and v restored after each run); the interpreter runs the default.
_tuned = triton.autotune(
    configs=[triton.Config({"BM": bm}, num_warps=w) for bm in (4, 8, 16, 32, 64, 128)
             for w in (4, 8, 16)],
    key=["n", "m"], prune_configs_by={"early_config_prune": _prune},
    restore_value=["u", "v"])(_sinkhorn_kernel)


def buffers(logK: torch.Tensor, a: torch.Tensor, b: torch.Tensor, u0: torch.Tensor,
            v0: torch.Tensor):
    """The kernels' float32 contiguous inputs, fresh ``u`` and ``v`` (the callers' stay
    untouched) and the (B,) ``n_iter`` and ``err`` outputs."""
    B, dev = logK.shape[0], logK.device
    f32 = [x.to(torch.float32).contiguous() for x in (logK, a, b)]
    u, v = (x.to(torch.float32).contiguous().clone() for x in (u0, v0))
    return (*f32, u, v, torch.zeros(B, dtype=torch.int32, device=dev),
            torch.empty(B, dtype=torch.float32, device=dev))


def solve(logK: torch.Tensor, a: torch.Tensor, b: torch.Tensor, u0: torch.Tensor,
          v0: torch.Tensor, *, max_iter: int, tol: float, check_every: int, omega: float):
    """Balanced log-domain Sinkhorn on every problem of ``logK`` (B, n, m), one program each.

    Same iterations as :func:`ot_batch.solvers.sinkhorn_log.solve` with ``init=(u0, v0)``:
    the error is the L2 violation of the first marginal before each update, tested every
    ``check_every`` iterations, and over-relaxation applies while it falls. Computes in
    float32. Returns ``(u, v, n_iter, err)``.
    """
    B, n, m = logK.shape
    logK32, a32, b32, u, v, n_iter, err = buffers(logK, a, b, u0, v0)
    BN = triton.next_power_of_2(max(n, 16))
    args = (logK32, a32, b32, u, v, n_iter, err, n, m, max_iter, float(tol), float(omega),
            check_every)
    if not B:
        pass
    elif logK.is_cuda:
        _tuned[(B,)](*args, BN=BN)
    else:
        BM = max(2, min(triton.next_power_of_2(max(m, 2)), TILE // BN))
        _sinkhorn_kernel[(B,)](*args, BN=BN, BM=BM, num_warps=8)
    return u.to(logK.dtype), v.to(logK.dtype), n_iter, err.to(logK.dtype)
