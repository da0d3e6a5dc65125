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
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from ._lse import lse

# Largest padded n x m kept on chip (elements per program); beyond it the streaming passes
# of :mod:`.sinkhorn_stream` take over. 64 x 64 fp32 is 32 registers a thread at 4 warps.
MAX_ELEMENTS = 64 * 64


def fits(n: int, m: int) -> bool:
    """Whether one program can hold a problem of this size."""
    return triton.next_power_of_2(max(n, 1)) * triton.next_power_of_2(max(m, 1)) <= MAX_ELEMENTS


@triton.jit
def _marginal_update(lse_or_sum, pot, w, phi, LOG: tl.constexpr):
    """New potential from the reduction of one side (log-sum-exp, or the sum ``K v``)."""
    pos = w > 0
    if LOG:
        new = tl.where(pos, phi * (tl.log(tl.where(pos, w, 1.0)) - lse_or_sum), float("-inf"))
    else:
        ratio = w / lse_or_sum
        if phi != 1.0:
            ratio = tl.exp(phi * tl.log(ratio))
        new = tl.where(pos, ratio, 0.0)
    return new


@triton.jit
def _change(new, old, mask, LOG: tl.constexpr):
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


@triton.jit
def _resident_kernel(M, ra, rb, a, b, u, v, n_iter_out, err_out, conv_out, n, m, inv_reg,
                     phi_a, phi_b, max_iter, tol, check_every, LOG: tl.constexpr,
                     BALANCED: tl.constexpr, SHIFT: tl.constexpr, BN: tl.constexpr,
                     BM: tl.constexpr):
    pid = tl.program_id(0)
    rows = tl.arange(0, BN)
    cols = tl.arange(0, BM)
    rm = rows < n
    cm = cols < m
    mask = rm[:, None] & cm[None, :]
    off = pid.to(tl.int64) * n * m
    x = tl.load(M + off + rows[:, None] * m + cols[None, :], mask=mask, other=0.0)
    logK = -x.to(tl.float32) * inv_reg
    if SHIFT:
        logK += tl.load(ra + pid * n + rows, mask=rm, other=0.0)[:, None]
        logK += tl.load(rb + pid * m + cols, mask=cm, other=0.0)[None, :]
    if LOG:
        K = tl.where(mask, logK, float("-inf"))
    else:
        K = tl.where(mask, tl.exp(logK), 0.0)
    aa = tl.load(a + pid * n + rows, mask=rm, other=0.0).to(tl.float32)
    bb = tl.load(b + pid * m + cols, mask=cm, other=0.0).to(tl.float32)
    fill = float("-inf") if LOG else 0.0
    uu = tl.load(u + pid * n + rows, mask=rm, other=fill).to(tl.float32)
    vv = tl.load(v + pid * m + cols, mask=cm, other=fill).to(tl.float32)
    err = float("inf")
    it = 0
    done = 0
    while (it < max_iter) & (done == 0):
        if LOG:
            red = lse(K + vv[None, :], 1)
        else:
            red = tl.sum(K * vv[None, :], axis=1)
        if BALANCED:  # the error of the current plan, read off this update as the solver does
            if LOG:
                row = tl.exp(tl.minimum(uu + red, 30.0))
            else:
                row = uu * red
            err = tl.sqrt(tl.sum(tl.where(rm, (row - aa) * (row - aa), 0.0), axis=0))
        u_new = _marginal_update(red, uu, aa, phi_a, LOG)
        if LOG:
            red = lse(K + u_new[:, None], 0)
        else:
            red = tl.sum(K * u_new[:, None], axis=0)
        v_new = _marginal_update(red, vv, bb, phi_b, LOG)
        if not BALANCED:
            err = tl.maximum(_change(u_new, uu, rm, LOG), _change(v_new, vv, cm, LOG))
        uu, vv = u_new, v_new
        it += 1
        if (it % check_every == 0) | (it == max_iter):
            # a problem leaves when it converged or broke (a non-finite error)
            if (err < tol) | (err != err) | (err == float("inf")):
                done = 1
    tl.store(u + pid * n + rows, uu, mask=rm)
    tl.store(v + pid * m + cols, vv, mask=cm)
    tl.store(n_iter_out + pid, it)
    tl.store(err_out + pid, err)
    tl.store(conv_out + pid, (err < tol).to(tl.int8))


def solve(M, ra, rb, a, b, u, v, *, inv_reg, phi, max_iter, tol, check_every, log, balanced):
    """Run the whole solve in one launch; ``u`` and ``v`` (float32) are updated in place.

    ``ra`` and ``rb`` (or None) are added to the rows and columns of ``-M * inv_reg``.
    Returns ``(n_iter, err, converged)``, each of shape (B,).
    """
    B, n, m = M.shape
    dev = M.device
    n_iter = torch.zeros(B, dtype=torch.int32, device=dev)
    err = torch.full((B,), float("inf"), dtype=torch.float32, device=dev)
    conv = torch.zeros(B, dtype=torch.int8, device=dev)
    BN = triton.next_power_of_2(max(n, 1))
    BM = triton.next_power_of_2(max(m, 1))
    shift = ra is not None
    if not shift:
        ra, rb = a, b  # not read
    warps = 1 if BN * BM <= 256 else (2 if BN * BM <= 1024 else 4)
    if B:
        _resident_kernel[(B,)](M, ra, rb, a, b, u, v, n_iter, err, conv, n, m, float(inv_reg),
                               float(phi[0]), float(phi[1]), max_iter, float(tol), check_every,
                               LOG=log, BALANCED=balanced, SHIFT=shift, BN=BN, BM=BM,
                               num_warps=warps)
    return n_iter, err, conv.bool()
