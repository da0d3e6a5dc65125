"""Balanced log-domain Sinkhorn solves in one launch, each problem's rows split over ``G``
programs that meet at a barrier twice per iteration.

:mod:`.sinkhorn_inner` runs a problem in one program; that is latency-bound when the batch is
small (64 problems of 256 points leave half the GPU idle and each SM waits on its own loads
and reductions). Here a problem's rows are split over ``G`` programs, all resident at once
(``G`` is chosen from the compiled kernel's occupancy). A program owns ``BN`` rows and keeps
their ``u`` and row log-sum-exps in registers. Per iteration it:

1. adds its rows' marginal error to the problem's; **barrier**; every program reads the same
   total, so the over-relaxation weight and the stopping test agree;
2. updates its ``u`` and writes each column's partial log-sum-exp over its rows (max, sum);
   **barrier**;
3. merges the ``G`` partials of each column into the new ``v`` (every program computes the
   same, bit for bit, into a private copy) and folds ``v`` into its rows' log-sum-exps.

A barrier is a counter per problem (atomic add, then a bounded spin): programs of one problem
never wait on programs of another. The exchanged partials are double-buffered by iteration
parity, so a fast program never overwrites what a slow one still reads. Should a barrier ever
time out (programs not resident), the problem's ``u`` comes back NaN: the outer loop then
reports it broken, never a silent result. Where only one program per problem fits (large
batches, the CPU interpreter, which runs programs one after another), :func:`solve` hands
the batch to :mod:`.sinkhorn_inner`, whose single pass per iteration is then the faster.
Reference: ``sinkhorn_log.solve(..., omega=...)``, to which the tests compare it.
"""
from __future__ import annotations

import functools

import torch
import triton
import triton.language as tl

from . import sinkhorn_inner
from .sinkhorn_inner import row_lse
from ._lse import lse_end as _lse_end, lse_step as _lse_step

MAX_POLL = tl.constexpr(1 << 20)  # spins before a barrier gives up (about a second: a real
# wait is one iteration of another program, microseconds)


@triton.jit
def _barrier(counter, target, G):
    """Arrive at the problem's barrier and wait until ``target`` arrivals; False on timeout.
    A problem in one program (``G == 1``) only needs its threads in step."""
    tl.debug_barrier()  # every thread's stores are issued before the arrival
    ok = target == target
    if G > 1:
        seen = tl.atomic_add(counter, 1, sem="acq_rel") + 1
        polls = 0
        while (seen < target) & (polls < MAX_POLL):
            seen = tl.atomic_add(counter, 0, sem="acquire")
            polls += 1
        ok = seen >= target
        tl.debug_barrier()
    return ok


@triton.jit
def _sinkhorn_kernel(logK, a, b, u, v, vp, pmax, psum, perr, counter, n_iter_out, err_out,
                     n, m, G, max_iter, tol, omega, check_every, BN: tl.constexpr,
                     BM: tl.constexpr, GP: tl.constexpr, GQ: tl.constexpr):
    pid = tl.program_id(0)
    prob = (pid // G).to(tl.int64)
    part = pid % G
    base = logK + prob * n * m
    rows = part * BN + tl.arange(0, BN)
    rm = rows < n
    aa = tl.load(a + prob * n + rows, mask=rm, other=0.0).to(tl.float32)
    apos = aa > 0
    loga = tl.where(apos, tl.log(tl.where(apos, aa, 1.0)), float("-inf"))
    uu = tl.load(u + prob * n + rows, mask=rm, other=float("-inf")).to(tl.float32)
    mine = vp + pid.to(tl.int64) * m  # this program's copy of v
    parts = tl.arange(0, GP)
    pm_ = parts < G
    for c0 in range(0, m, BM):
        cols = c0 + tl.arange(0, BM)
        cm = cols < m
        tl.store(mine + cols, tl.load(v + prob * m + cols, mask=cm).to(tl.float32), mask=cm)
    lr = row_lse(base, rows, rm, v + prob * m, m, BN, BM)
    cnt = counter + prob
    arrived = pid * 0
    ok = pid * 0 + 1
    prev = float("inf")
    err = float("inf")
    it = 0
    done = 0
    while (it < max_iter) & (done == 0):
        buf = prob * 2 + it % 2
        # 1. the error of the current plan from the row sums, summed over the programs
        row = tl.where(apos, tl.exp(tl.minimum(uu + lr, 30.0)), 0.0)
        tl.store(perr + buf * G + part, tl.sum((row - aa) * (row - aa), axis=0))
        arrived += G
        ok = ok & _barrier(cnt, arrived, G).to(tl.int32)
        es = tl.load(perr + buf * G + parts, mask=pm_, other=0.0, cache_modifier=".cg")
        err = tl.sqrt(tl.sum(es, axis=0))
        w = tl.where((err <= prev) & (omega != 1.0), omega, 1.0)
        uu = tl.where(apos, (1.0 - w) * uu + w * (loga - lr), float("-inf"))
        # 2. each column's log-sum-exp over this program's rows
        pb = (buf * G + part) * m
        for c0 in range(0, m, BM):
            cols = c0 + tl.arange(0, BM)
            cm = cols < m
            x = tl.load(base + rows[:, None] * m + cols[None, :],
                        mask=rm[:, None] & cm[None, :], other=float("-inf")).to(tl.float32)
            t = x + uu[:, None]
            cmax = tl.max(t, axis=0)
            safe = tl.where(cmax == float("-inf"), 0.0, cmax)
            tl.store(pmax + pb + cols, cmax, mask=cm)
            tl.store(psum + pb + cols, tl.sum(tl.exp(t - safe[None, :]), axis=0), mask=cm)
        arrived += G
        ok = ok & _barrier(cnt, arrived, G).to(tl.int32)
        # 3. the new v from the merged partials, folded into the next row log-sum-exps
        gb = buf * G * m
        mr = tl.full([BN], float("-inf"), tl.float32)
        sr = tl.zeros([BN], tl.float32)
        for c0 in range(0, m, BM):
            cols = c0 + tl.arange(0, BM)
            cm = cols < m
            # the G partials (max, sum) of these columns, GQ programs' at a time (a tile of
            # all G would cost registers, and with them resident programs)
            top = tl.full([BM], float("-inf"), tl.float32)
            tot = tl.zeros([BM], tl.float32)
            for q0 in range(0, G, GQ):
                qi = q0 + tl.arange(0, GQ)
                pk = (qi < G)[:, None] & cm[None, :]
                at = gb + qi[:, None] * m + cols[None, :]
                qm = tl.load(pmax + at, mask=pk, other=float("-inf"), cache_modifier=".cg")
                qs = tl.load(psum + at, mask=pk, other=0.0, cache_modifier=".cg")
                new = tl.maximum(top, tl.max(qm, axis=0))
                safe = tl.where(new == float("-inf"), 0.0, new)
                tot = tot * tl.exp(top - safe) + tl.sum(qs * tl.exp(qm - safe[None, :]), axis=0)
                top = new
            lc = _lse_end(top, tot)
            vv = tl.load(mine + cols, mask=cm, other=0.0)
            bb = tl.load(b + prob * m + cols, mask=cm, other=0.0).to(tl.float32)
            bpos = bb > 0
            target = tl.log(tl.where(bpos, bb, 1.0)) - lc
            vn = tl.where(bpos, (1.0 - w) * vv + w * target, float("-inf"))
            tl.store(mine + cols, vn, mask=cm)
            x = tl.load(base + rows[:, None] * m + cols[None, :],
                        mask=rm[:, None] & cm[None, :], other=float("-inf")).to(tl.float32)
            mr, sr = _lse_step(mr, sr, x + vn[None, :], 1)
        lr = _lse_end(mr, sr)
        prev = err
        it += 1
        if it % check_every == 0:
            if err < tol:
                done = 1
        done = tl.where(ok != 0, done, 1)
    uu = tl.where(ok != 0, uu, float("nan"))
    tl.store(u + prob * n + rows, uu, mask=rm)
    tl.debug_barrier()  # the last v chunks were stored by other threads of this program
    if part == 0:
        for c0 in range(0, m, BM):
            cols = c0 + tl.arange(0, BM)
            cm = cols < m
            tl.store(v + prob * m + cols, tl.load(mine + cols, mask=cm), mask=cm)
        tl.store(n_iter_out + prob, it)
        tl.store(err_out + prob, err)


# Programs per problem when the caller does not say. 1 (the one-program kernel) until the
# split has been timed and checked on a GPU: written and tested on the CPU interpreter (one
# program per problem) only; ``split=None`` asks for as many as stay resident.
DEFAULT_SPLIT = 1
# Floats per tile: 4 per thread over 4 warps. Registers grow faster than the tile (sm_90
# build, cuobjdump: 16 x 32 rows x columns take 72 a thread, 16 x 64 take 128, 32 x 128
# spill), and every program of a launch must be resident, so small tiles allow larger G.
TILE = 512
WARPS = 4
MIN_ROWS = 16  # rows per program when a problem is split


def _shape(n: int, m: int, G: int, tile: int) -> tuple[int, int, int]:
    """``(G, BN, BM)``: ``G`` programs of ``BN`` rows each (no empty program), chunks of
    ``BM`` columns."""
    BN = triton.next_power_of_2(max(-(-n // G), 1))
    BM = max(2, min(triton.next_power_of_2(max(m, 2)), tile // BN))
    return -(-n // BN), BN, BM


def _resident(compiled: object, device: torch.device) -> int:
    """Programs of ``compiled`` that the whole GPU holds at once (registers, warps, shared
    memory and the block limit of each multiprocessor)."""
    getattr(compiled, "_init_handles", lambda: None)()  # loads it: fills n_regs
    props = torch.cuda.get_device_properties(device)
    warps = compiled.metadata.num_warps
    regs = -(-max(compiled.n_regs, 1) // 8) * 8 * 32 * warps
    per_sm = min(props.max_threads_per_multi_processor // (32 * warps), 32,
                 getattr(props, "regs_per_multiprocessor", 65536) // regs)
    shared = compiled.metadata.shared
    if shared:
        per_sm = min(per_sm, getattr(props, "shared_memory_per_multiprocessor", 232448)
                     // shared)
    return props.multi_processor_count * per_sm


@functools.lru_cache(maxsize=256)
def _split(B: int, n: int, m: int, device: torch.device, tile: int, warps: int,
           max_split: int) -> tuple[int, int, int]:
    """``(G, BN, BM)`` for a batch of ``B`` problems: as many programs per problem as keep
    every program of the launch resident (a barrier waits on the others), rows >= 16 each."""
    want = max(1, min(max_split, -(-n // MIN_ROWS)))
    while want > 1:
        G, BN, BM = _shape(n, m, want, tile)
        GP = triton.next_power_of_2(G)
        compiled = _compile(n, m, BN, BM, GP, warps, device)
        room = _resident(compiled, device) // B
        if G <= room:
            return G, BN, BM
        want = min(want - 1, room) if room >= 1 else 1
    return _shape(n, m, 1, tile)


def _compile(n: int, m: int, BN: int, BM: int, GP: int, warps: int, device: torch.device):
    """The compiled kernel for these sizes (to read its registers and shared memory). The
    integers are the launch's own or, like it, not 1: Triton specializes on both."""
    f32 = torch.empty(1, dtype=torch.float32, device=device)
    i32 = torch.zeros(1, dtype=torch.int32, device=device)
    return _sinkhorn_kernel.warmup(f32, f32, f32, f32, f32, f32, f32, f32, f32, i32, i32, f32,
                                   n, m, 2, 2, 0.1, 1.5, 2, BN=BN, BM=BM, GP=GP,
                                   GQ=min(GP, 8), num_warps=warps, grid=(1,))


def solve(logK: torch.Tensor, a: torch.Tensor, b: torch.Tensor, u0: torch.Tensor,
          v0: torch.Tensor, *, max_iter: int, tol: float, check_every: int, omega: float,
          split: int | None | str = "default", tile: int = TILE, num_warps: int = WARPS):
    """Balanced log-domain Sinkhorn on every problem of ``logK`` (B, n, m) in one launch.

    Same iterations as :func:`ot_batch.solvers.sinkhorn_log.solve` with ``init=(u0, v0)``:
    the error is the L2 violation of the first marginal before each update, tested every
    ``check_every`` iterations, and over-relaxation applies while it falls. Computes in
    float32. ``split`` caps the programs per problem (None: as many as stay resident on a
    GPU; 'default': :data:`DEFAULT_SPLIT`, read at the call); ``tile`` and ``num_warps``
    size the programs. With one program per problem the batch goes to
    :func:`.sinkhorn_inner.solve`. Returns ``(u, v, n_iter, err)``.
    """
    B, n, m = logK.shape
    split = DEFAULT_SPLIT if split == "default" else split
    cap = 1 if not logK.is_cuda else (64 if split is None else split)
    G, BN, BM = (_split(B, n, m, logK.device, tile, num_warps, cap) if cap > 1 and B
                 else (1, 0, 0))
    if G == 1:
        return sinkhorn_inner.solve(logK, a, b, u0, v0, max_iter=max_iter, tol=tol,
                                    check_every=check_every, omega=omega)
    return launch(logK, a, b, u0, v0, G, BN, BM, max_iter=max_iter, tol=tol,
                  check_every=check_every, omega=omega, num_warps=num_warps)


def launch(logK: torch.Tensor, a: torch.Tensor, b: torch.Tensor, u0: torch.Tensor,
           v0: torch.Tensor, G: int, BN: int, BM: int, *, max_iter: int, tol: float,
           check_every: int, omega: float, num_warps: int = WARPS):
    """The split kernel with ``G`` programs of ``BN`` rows per problem (every program of the
    launch must be resident: :func:`_split` sizes it; ``G = 1`` runs anywhere)."""
    B, n, m = logK.shape
    dev = logK.device
    logK32, a32, b32, u, v, n_iter, err = sinkhorn_inner.buffers(logK, a, b, u0, v0)
    GP = triton.next_power_of_2(G)
    vp = torch.empty((B * G, m), dtype=torch.float32, device=dev)
    pmax = torch.empty((B, 2, G, m), dtype=torch.float32, device=dev)
    psum = torch.empty_like(pmax)
    perr = torch.empty((B, 2, G), dtype=torch.float32, device=dev)
    counter = torch.zeros(B, dtype=torch.int32, device=dev)
    if B:
        _sinkhorn_kernel[(B * G,)](logK32, a32, b32, u, v, vp, pmax, psum, perr, counter,
                                   n_iter, err, n, m, G, max_iter, float(tol), float(omega),
                                   check_every, BN=BN, BM=BM, GP=GP, GQ=min(GP, 8),
                                   num_warps=num_warps)
    return u.to(logK.dtype), v.to(logK.dtype), n_iter, err.to(logK.dtype)
