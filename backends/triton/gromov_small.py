"""Whole Gromov-Wasserstein solves in one launch for small problems (n, m <= 64).

:func:`ot_batch.solvers.gromov.solve` runs, per proximal step, a product ``L x T``, a
warm-started Sinkhorn solve and a convergence test: some 30 torch operations and a host
synchronisation per step, with a few microseconds of work each at n = 32. Here one program
owns one problem for the whole solve and keeps its plan, its potentials and its kernel in
registers: the structure matrices ``h(Ca)``, ``h(Cb)`` and the constant and linear terms are
re-read each step (from L1/L2), the cross term ``h(Ca) T h(Cb)^T`` is two ``tl.dot``, and every
Sinkhorn iteration, over-relaxation and stopping test of the generic solver happens on chip.
The host sees the batch once, at the end.

Reference: :func:`ot_batch.solvers.gromov.solve` (same steps, same stopping rules, same
outputs before the final rounding), to which the tests compare it.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from ._lse import lse as _lse

MAX_SIZE = 64  # plans of up to 64 x 64 stay in registers (4096 floats over 4-8 warps)


@triton.jit
def _round(T, aa, bb):
    """:func:`ot_batch.solvers.rounding.round_to_marginals` on one plan held in registers."""
    r = tl.sum(T, axis=1)
    X = T * tl.where(r > aa, aa / tl.where(r > 0, r, 1.0), 1.0)[:, None]
    c = tl.sum(X, axis=0)
    X = X * tl.where(c > bb, bb / tl.where(c > 0, c, 1.0), 1.0)[None, :]
    err_r = tl.maximum(aa - tl.sum(X, axis=1), 0.0)
    err_c = tl.maximum(bb - tl.sum(X, axis=0), 0.0)
    total = tl.sum(err_r, axis=0)
    total = tl.where(total > 0, total, 1.0)
    return X + err_r[:, None] * err_c[None, :] / total


@triton.jit
def _cross(hAt, hBt, T, PREC: tl.constexpr):
    """``h(Ca) T h(Cb)^T`` (``hBt`` holds ``h(Cb)^T``)."""
    return tl.dot(tl.dot(hAt, T, input_precision=PREC), hBt, input_precision=PREC)


@triton.jit
def _gw_small_kernel(hA, hB, P1, P2, alpha, a, b, T0, T_out, u_out, v_out, it_out, inner_out,
                     err_out, conv_out, n, m, reg, max_iter, tol, max_inner, tol_inner, omega,
                     check_every, finish_steps, BN: tl.constexpr, BM: tl.constexpr,
                     PREC: tl.constexpr):
    pid = tl.program_id(0).to(tl.int64)
    rows = tl.arange(0, BN)
    cols = tl.arange(0, BM)
    rm, cm = rows < n, cols < m
    nm = rm[:, None] & cm[None, :]
    off = pid * n * m + rows[:, None] * m + cols[None, :]
    aa = tl.load(a + pid * n + rows, mask=rm, other=0.0)
    bb = tl.load(b + pid * m + cols, mask=cm, other=0.0)
    apos, bpos = aa > 0, bb > 0
    loga = tl.where(apos, tl.log(tl.where(apos, aa, 1.0)), float("-inf"))
    logb = tl.where(bpos, tl.log(tl.where(bpos, bb, 1.0)), float("-inf"))
    real = apos[:, None] & bpos[None, :]
    mass = tl.sum(aa, axis=0)
    al = tl.load(alpha + pid)
    T = tl.load(T0 + off, mask=nm, other=0.0)
    # the block's rows and columns past n and m must not count in any log-sum-exp
    u = tl.where(rm, 0.0, float("-inf"))
    v = tl.where(cm, 0.0, float("-inf"))
    f_prev = float("inf")
    err = float("inf")
    it = 0
    n_inner = 0
    state = 0  # 0 running, 1 converged, 2 non-finite error
    while (it < max_iter) & (state == 0):
        # G = 2 alpha (const - hA T hB^T) + (1 - alpha) M and the objective at T
        hAt = tl.load(hA + pid * n * n + rows[:, None] * n + rows[None, :],
                      mask=rm[:, None] & rm[None, :], other=0.0)
        hBt = tl.load(hB + pid * m * m + cols[:, None] + cols[None, :] * m,
                      mask=cm[:, None] & cm[None, :], other=0.0)  # hB^T
        cross = al * _cross(hAt, hBt, T, PREC)
        p1 = tl.load(P1 + off, mask=nm, other=0.0)  # alpha const + (1 - alpha) M
        p2 = tl.load(P2 + off, mask=nm, other=0.0)  # 2 alpha const + (1 - alpha) M
        f = tl.sum(tl.sum((p1 - cross) * T, axis=1), axis=0)
        G = p2 - 2.0 * cross
        logT = tl.where(real, tl.log(tl.where(real, T, 1.0)), 0.0)
        logT = tl.where(real & (T <= 0), float("-inf"), logT)
        logK = logT - G / reg
        # warm-started, over-relaxed log-domain Sinkhorn (ot_batch.solvers.sinkhorn_log)
        prev = float("inf")
        k = 0
        done = 0
        while (k < max_inner) & (done == 0):
            lr = _lse(logK + v[None, :], 1)
            row = tl.where(apos, tl.exp(tl.minimum(u + lr, 30.0)), 0.0)
            ierr = tl.sqrt(tl.sum((row - aa) * (row - aa), axis=0))
            w = tl.where((ierr <= prev) & (omega != 1.0), omega, 1.0)
            u = tl.where(apos, (1.0 - w) * u + w * (loga - lr), float("-inf"))
            lc = _lse(logK + u[:, None], 0)
            v = tl.where(bpos, (1.0 - w) * v + w * (logb - lc), float("-inf"))
            prev = ierr
            k += 1
            if k % check_every == 0:
                if ierr < tol_inner:
                    done = 1
        n_inner += k
        T_new = tl.where(real, tl.exp(logK + u[:, None] + v[None, :]), 0.0)
        # stopping rule of gromov.solve: relative change of the objective or total variation
        scale = tl.maximum(tl.abs(f), 1.1754943508222875e-38)
        rel = tl.abs(f - f_prev) / scale
        tv = tl.sum(tl.sum(tl.abs(T_new - T), axis=1), axis=0) / mass
        err = tl.where(rel != rel, tv, tl.minimum(rel, tv))
        T = T_new
        f_prev = f
        it += 1
        if err < tol:
            state = 1
        elif not ((err == err) & (err < float("inf"))):
            state = 2
    # onto the marginals, then the conditional-gradient finish of gromov_cg.finish: steps
    # towards the plan with each row's mass on its largest entry, exact line search
    T = _round(T, aa, bb)
    hAt = tl.load(hA + pid * n * n + rows[:, None] * n + rows[None, :],
                  mask=rm[:, None] & rm[None, :], other=0.0)
    hBt = tl.load(hB + pid * m * m + cols[:, None] + cols[None, :] * m,
                  mask=cm[:, None] & cm[None, :], other=0.0)
    p2 = tl.load(P2 + off, mask=nm, other=0.0)
    for _ in range(finish_steps):
        top = tl.argmax(tl.where(nm, T, -1.0), axis=1)
        D = _round(tl.where(cols[None, :] == top[:, None], aa[:, None], 0.0), aa, bb)
        D = tl.where(nm, D, 0.0)
        X = D - T
        slope = tl.sum(tl.sum((p2 - 2.0 * al * _cross(hAt, hBt, T, PREC)) * X, axis=1), axis=0)
        curv = -al * tl.sum(tl.sum(_cross(hAt, hBt, X, PREC) * X, axis=1), axis=0)
        safe = tl.where(curv > 0, curv, 1.0)
        gamma = tl.where(curv > 0, tl.minimum(tl.maximum(-slope / (2.0 * safe), 0.0), 1.0),
                         tl.where(slope + curv < 0, 1.0, 0.0))
        T = T + gamma * X
    tl.store(T_out + off, T, mask=nm)
    tl.store(u_out + pid * n + rows, u, mask=rm)
    tl.store(v_out + pid * m + cols, v, mask=cm)
    tl.store(it_out + pid, it)
    tl.store(inner_out + pid, n_inner)
    tl.store(err_out + pid, err)
    tl.store(conv_out + pid, (state == 1).to(tl.int8))


def fits(n: int, m: int) -> bool:
    """Sizes whose whole solve stays on chip."""
    return max(n, m) <= MAX_SIZE


def solve(hCa: torch.Tensor, hCb: torch.Tensor, P1: torch.Tensor, P2: torch.Tensor,
          alpha: torch.Tensor, a: torch.Tensor, b: torch.Tensor, T_init: torch.Tensor, *,
          reg: float, max_iter: int, tol: float, max_iter_inner: int, tol_inner: float,
          omega: float, check_every: int, finish_steps: int = 0, tf32: bool = False):
    """Every proximal step of every problem, one program per problem, in float32.

    ``P1 = alpha const + (1 - alpha) M`` and ``P2 = 2 alpha const + (1 - alpha) M`` (B, n, m)
    fold the constant part of ``L x T`` for the target marginals and the linear cost, so the
    gradient is ``P2 - 2 alpha h(Ca) T h(Cb)^T`` and the objective ``<P1 - alpha h(Ca) T
    h(Cb)^T, T>``. ``tf32`` runs the two products on tensor cores in TF32.

    Returns ``(T, u, v, n_iter, n_iter_inner, err, converged)``: the plan of
    :func:`ot_batch.solvers.gromov.solve` (its last Sinkhorn plan rounded onto the marginals),
    after ``finish_steps`` steps of :func:`ot_batch.solvers.gromov_cg.finish`; the
    log-scalings of the last Sinkhorn solve and the per-problem counts.
    """
    B, n, m = T_init.shape
    if not fits(n, m):
        raise ValueError(f"gromov_small handles n, m <= {MAX_SIZE}, got {n} x {m}")
    dev = T_init.device
    f32 = [x.to(torch.float32).contiguous() for x in (hCa, hCb, P1, P2, alpha, a, b, T_init)]
    T = torch.empty((B, n, m), dtype=torch.float32, device=dev)
    u = torch.empty((B, n), dtype=torch.float32, device=dev)
    v = torch.empty((B, m), dtype=torch.float32, device=dev)
    it = torch.empty(B, dtype=torch.int32, device=dev)
    inner = torch.empty(B, dtype=torch.int32, device=dev)
    err = torch.empty(B, dtype=torch.float32, device=dev)
    conv = torch.empty(B, dtype=torch.int8, device=dev)
    BN = max(16, triton.next_power_of_2(n))
    BM = max(16, triton.next_power_of_2(m))
    warps = 8 if BN * BM >= 64 * 64 else 4
    if B:
        _gw_small_kernel[(B,)](*f32, T, u, v, it, inner, err, conv, n, m, float(reg),
                               int(max_iter), float(tol), int(max_iter_inner),
                               float(tol_inner), float(omega), int(check_every),
                               int(finish_steps), BN=BN, BM=BM,
                               PREC="tf32" if tf32 else "ieee", num_warps=warps)
    return T, u, v, it, inner, err, conv.bool()
