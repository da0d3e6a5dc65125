"""Streaming kernels for large point clouds: softmin passes that never form the cost matrix.

For the cost ``C(x, y) = c |x - y|^2`` the softmin of a query point over the keys factors as

.. math::
    -\\varepsilon \\log \\sum_j e^{h_j - C(x_i, y_j)/\\varepsilon}
    = c|x_i|^2 - \\varepsilon \\operatorname{LSE}_j \\Big(\\tfrac{2c}{\\varepsilon} x_i \\cdot y_j
    + h_j - \\tfrac{c}{\\varepsilon}|y_j|^2\\Big),

an attention score ``q . k`` plus a per-key bias. So a program owns a block of query points,
keeps them on chip, streams the keys in tiles, forms the scores with one ``tl.dot`` per tile
(TF32, or three TF32 products ``tf32x3`` for float32 accuracy) and folds them into an online
log-sum-exp in base 2: FlashAttention's forward without the value product. ``d`` larger than
one tile is looped over in chunks.

Layout: the two clouds of each problem are concatenated, ``P`` (B, N + M, D), with
``sqn = c |p|^2``, log-weights ``logw`` and the potentials ``pot`` (B, K, N + M): kind 0 the
cross potentials (``f`` on the x rows, ``g`` on the y rows), kind 1 the self potentials of
the debiased terms. One launch of :func:`_step_kernel` updates every kind and both sides of
every problem from the previous potentials: GeomLoss's symmetric update, the transport
``a <-> b`` and the debiasing ``a <-> a``, ``b <-> b`` in the same grid.

:func:`_apply_kernel` multiplies the (normalised or not) plan of one side with a matrix: the
barycentres of the envelope gradient, and the plan-vector products of the lazy plan and of
the implicit Hessian.

Reference: :mod:`ot_batch.solvers.annealed` (same updates on dense costs).
"""
from __future__ import annotations

import triton
import triton.language as tl

from ._parts import change, marginal_update, safe_log

LOG2E = 1.4426950408889634
LN2 = 0.6931471805599453


@triton.jit
def _dot(q, k, acc, PREC: tl.constexpr):
    """``acc + q k^T`` in float32 from TF32 products (one, or three for ``tf32x3``)."""
    return tl.dot(q, tl.trans(k), acc, input_precision=PREC)


@triton.jit
def _scores(P, b, q_rows, qm, k_rows, km, L, ld, koff, d, q_tile, scale,
            SINGLE_D: tl.constexpr, PREC: tl.constexpr, BM: tl.constexpr,
            BN: tl.constexpr, BD: tl.constexpr):
    """``scale * q . k`` for a (BM, BN) tile; ``q_tile`` is the query block when it fits in
    one chunk of ``d`` (``SINGLE_D``). Rows of ``P`` are ``ld`` apart; a query reads its
    columns ``[0, d)``, a key its columns ``[koff, koff + d)`` (``ld = d``, ``koff = 0``:
    plain points; see :func:`split_coordinates` for the other layout)."""
    base = P + b.to(tl.int64) * L * ld
    acc = tl.zeros([BM, BN], tl.float32)
    if SINGLE_D:
        ks = tl.arange(0, BD)
        kt = tl.load(base + k_rows[:, None] * ld + koff + ks[None, :],
                     mask=km[:, None] & (ks < d)[None, :], other=0.0)
        acc = _dot(q_tile, kt, acc, PREC)
    else:
        for k0 in range(0, d, BD):
            ks = k0 + tl.arange(0, BD)
            dm = ks < d
            qt = tl.load(base + q_rows[:, None] * ld + ks[None, :],
                         mask=qm[:, None] & dm[None, :], other=0.0)
            kt = tl.load(base + k_rows[:, None] * ld + koff + ks[None, :],
                         mask=km[:, None] & dm[None, :], other=0.0)
            acc = _dot(qt, kt, acc, PREC)
    return acc * scale


@triton.jit
def _query_tile(P, b, q_rows, qm, L, ld, d, SINGLE_D: tl.constexpr, BM: tl.constexpr,
                BD: tl.constexpr):
    ks = tl.arange(0, BD)
    if SINGLE_D:
        base = P + b.to(tl.int64) * L * ld
        q = tl.load(base + q_rows[:, None] * ld + ks[None, :],
                    mask=qm[:, None] & (ks < d)[None, :], other=0.0)
    else:
        q = tl.zeros([BM, BD], tl.float32)
    return q


@triton.jit
def _key_bias(logw, pot, sqn, b, kind, K, L, k_rows, km, inv_eps):
    """``(log w_j + g_j / eps - c |y_j|^2 / eps) * log2(e)``, ``-inf`` off the problem."""
    lw = tl.load(logw + b * L + k_rows, mask=km, other=0.0)
    g = tl.load(pot + (b * K + kind) * L + k_rows, mask=km, other=0.0)
    s = tl.load(sqn + b * L + k_rows, mask=km, other=0.0)
    return tl.where(km, (lw + (g - s) * inv_eps) * 1.4426950408889634, float("-inf"))


@triton.jit
def _task(pid0, N, M, nbx, nby):
    """Decode a program of the step grid: (kind, side, block, query offset, query count,
    key offset, key count)."""
    nb = nbx + nby
    kind = pid0 // nb
    r = pid0 - kind * nb
    side = (r >= nbx).to(tl.int32)
    blk = r - side * nbx
    qo = side * N
    nq = N + side * (M - N)
    ko = tl.where(kind == 0, N - qo, qo)
    nk = tl.where(kind == 0, N + M - nq, nq)
    return kind, side, blk, qo, nq, ko, nk


@triton.jit
def _softmin_lse2(P, sqn, logw, pot, b, kind, K, L, d, q_rows, qm, ko, j_lo, j_hi, two_c,
                  inv_eps, SINGLE_D: tl.constexpr, PREC: tl.constexpr, BM: tl.constexpr,
                  BN: tl.constexpr, BD: tl.constexpr):
    """Running base-2 log-sum-exp ``(max, sum)`` of the scores of the query rows ``q_rows``
    against the keys ``ko + [j_lo, j_hi)`` (potentials ``pot`` of ``kind``)."""
    q = _query_tile(P, b, q_rows, qm, L, d, d, SINGLE_D, BM, BD)
    scale = two_c * inv_eps * 1.4426950408889634
    mx = tl.full([BM], -1.0e30, tl.float32)
    acc = tl.zeros([BM], tl.float32)
    for j0 in range(j_lo, j_hi, BN):
        kl = j0 + tl.arange(0, BN)
        km = kl < j_hi
        k_rows = ko + kl
        s = _scores(P, b, q_rows, qm, k_rows, km, L, d, 0, d, q, scale, SINGLE_D, PREC, BM, BN,
                    BD)
        s += _key_bias(logw, pot, sqn, b, kind, K, L, k_rows, km, inv_eps)[None, :]
        new_mx = tl.maximum(mx, tl.max(s, axis=1))
        acc = acc * tl.exp2(mx - new_mx) + tl.sum(tl.exp2(s - new_mx[:, None]), axis=1)
        mx = new_mx
    return mx, acc


@triton.jit
def _step_finish(mx, acc, old, sqn, logw, pot_new, lse_out, err, err_bits, b, kind, side, L,
                 q_rows, qm, row_off, eps, inv_eps, damp_x, damp_y, keep,
                 DO_ERR: tl.constexpr, BALANCED: tl.constexpr, STORE_LSE: tl.constexpr):
    """The damped, averaged update of :func:`_step_kernel` from the log-sum-exp, its error
    and its stores."""
    lse = (mx + tl.log2(acc)) * 0.6931471805599453
    sq = tl.load(sqn + b * L + q_rows, mask=qm, other=0.0)
    damp = tl.where(side == 0, damp_x, damp_y)
    upd = damp * (sq - eps * lse)
    if STORE_LSE:
        tl.store(lse_out + row_off, lse, mask=qm)
    if DO_ERR:
        if BALANCED:
            w = tl.exp(tl.load(logw + b * L + q_rows, mask=qm, other=-1.0e5))
            e = tl.sum(tl.where(qm, w * tl.abs(tl.exp((old - upd) * inv_eps) - 1.0), 0.0),
                       axis=0)
            tl.atomic_add(err + b * 4 + 2 * kind + side, e)
        else:  # changes are >= 0: their bits order as int32 do
            e = tl.max(tl.where(qm, tl.abs(upd - old), 0.0), axis=0)
            tl.atomic_max(err_bits + b * 4 + 2 * kind + side, e.to(tl.int32, bitcast=True))
    tl.store(pot_new + row_off, keep * old + (1.0 - keep) * upd, mask=qm)


@triton.jit
def _step_kernel(P, sqn, logw, pot_old, pot_new, lse_out, active, err, err_bits, part_mx,
                 part_acc, N, M, d, K, nbx, nby, B, C, eps, inv_eps, two_c, damp_x, damp_y,
                 keep,
                 DO_ERR: tl.constexpr, BALANCED: tl.constexpr, STORE_LSE: tl.constexpr,
                 SINGLE_D: tl.constexpr, PREC: tl.constexpr, BM: tl.constexpr,
                 BN: tl.constexpr, BD: tl.constexpr, PHASE: tl.constexpr = 0):
    """One symmetric update of every potential of a block of query points:
    ``new = keep * old + (1 - keep) * damp * softmin(old potentials of the keys)``.

    With ``DO_ERR`` the problem's error is added into ``err`` (B, 4) (``err_bits`` is the
    same memory as int32), column ``2 kind + side``: the L1 marginal error
    ``sum_i w_i |exp((old_i - upd_i) / eps) - 1|`` (balanced) or the largest change
    ``|upd_i - old_i|`` (unbalanced, an ``atomic_max`` on the bits).
    Inactive problems copy their potentials over.

    ``PHASE`` 0 does the whole update. When the grid has too few programs to fill the GPU
    (one large problem) the keys are split over a third grid axis of ``C`` chunks:
    ``PHASE`` 1 stores each chunk's running log-sum-exp ``(max, sum)`` (base 2) in
    ``part_mx`` / ``part_acc`` (C, B, K, N + M), and ``PHASE`` 2 (the grid of phase 0)
    merges the ``C`` partials and finishes the update as phase 0 does.
    """
    pid0 = tl.program_id(0)
    b = tl.program_id(1)
    L = N + M
    kind, side, blk, qo, nq, ko, nk = _task(pid0, N, M, nbx, nby)
    loc = blk * BM + tl.arange(0, BM)
    qm = loc < nq
    q_rows = qo + loc
    row_off = (b * K + kind) * L + q_rows
    live = tl.load(active + b) != 0
    if PHASE == 1:
        if live:
            c = tl.program_id(2)
            chunk = tl.cdiv(tl.cdiv(nk, C), BN) * BN
            mx, acc = _softmin_lse2(P, sqn, logw, pot_old, b, kind, K, L, d, q_rows, qm, ko,
                                    c * chunk, tl.minimum(nk, c * chunk + chunk), two_c,
                                    inv_eps, SINGLE_D, PREC, BM, BN, BD)
            part = (c * B * K) * L + row_off
            tl.store(part_mx + part, mx, mask=qm)
            tl.store(part_acc + part, acc, mask=qm)
    else:
        old = tl.load(pot_old + row_off, mask=qm, other=0.0)
        if not live:
            tl.store(pot_new + row_off, old, mask=qm)
        else:
            if PHASE == 0:
                mx, acc = _softmin_lse2(P, sqn, logw, pot_old, b, kind, K, L, d, q_rows, qm,
                                        ko, 0, nk, two_c, inv_eps, SINGLE_D, PREC, BM, BN, BD)
            else:  # merge the chunks' partial sums
                mx = tl.full([BM], -1.0e30, tl.float32)
                acc = tl.zeros([BM], tl.float32)
                for c in range(0, C):
                    pmx = tl.load(part_mx + (c * B * K) * L + row_off, mask=qm, other=-1.0e30)
                    pac = tl.load(part_acc + (c * B * K) * L + row_off, mask=qm, other=0.0)
                    new_mx = tl.maximum(mx, pmx)
                    acc = acc * tl.exp2(mx - new_mx) + pac * tl.exp2(pmx - new_mx)
                    mx = new_mx
            _step_finish(mx, acc, old, sqn, logw, pot_new, lse_out, err, err_bits, b, kind,
                         side, L, q_rows, qm, row_off, eps, inv_eps, damp_x, damp_y, keep,
                         DO_ERR, BALANCED, STORE_LSE)


@triton.jit
def _apply_kernel(P, sqn, logw, kpot, row, U, V, W, out, L, d, k_cols, qo, nq, ko, nk,
                  s_kpot_b, s_row_b, s_u_b, s_v_b, s_w_b, s_out_b, inv_eps, w_scale,
                  MOMENT: tl.constexpr, SINGLE_D: tl.constexpr, PREC: tl.constexpr,
                  BM: tl.constexpr, BN: tl.constexpr, BD: tl.constexpr, BK: tl.constexpr):
    """``out_i = sum_j exp(s_ij + row_i) U_j`` for the query rows ``qo + i`` and key rows
    ``ko + j`` of ``P``, with the scores ``s_ij = 2c x_i.y_j / eps + log w_j + g_j / eps -
    c|y_j|^2 / eps`` (``g = kpot``) and ``row_i`` given: ``-LSE_i`` gives the softmax of the
    softmin (the barycentres), ``log a_i + (f_i - c|x_i|^2) / eps`` the transport plan.
    With ``MOMENT`` each weight is also multiplied by ``v_i . w_j`` (``V`` (B, nq, d) on the
    query rows, ``W`` (B, nk, d) on the key rows): the second moments
    ``sum_j pi_ij (v_i . w_j) u_j`` of the implicit Hessian. ``U`` (B, nk, k_cols); a
    program fills a (BM, BK) block of ``out``."""
    pid = tl.program_id(0)
    cb = tl.program_id(1)
    b = tl.program_id(2)
    loc = pid * BM + tl.arange(0, BM)
    qm = loc < nq
    q_rows = qo + loc
    cols = cb * BK + tl.arange(0, BK)
    cm = cols < k_cols
    q = _query_tile(P, b, q_rows, qm, L, d, d, SINGLE_D, BM, BD)
    r = tl.load(row + b * s_row_b + loc, mask=qm, other=float("-inf")) * 1.4426950408889634
    scale = w_scale * inv_eps * 1.4426950408889634
    acc = tl.zeros([BM, BK], tl.float32)
    for j0 in range(0, nk, BN):
        kl = j0 + tl.arange(0, BN)
        km = kl < nk
        k_rows = ko + kl
        s = _scores(P, b, q_rows, qm, k_rows, km, L, d, 0, d, q, scale, SINGLE_D, PREC, BM, BN,
                    BD)
        lw = tl.load(logw + b * L + k_rows, mask=km, other=0.0)
        g = tl.load(kpot + b * s_kpot_b + kl, mask=km, other=0.0)
        sq = tl.load(sqn + b * L + k_rows, mask=km, other=0.0)
        bias = tl.where(km, (lw + (g - sq) * inv_eps) * 1.4426950408889634, float("-inf"))
        p = tl.exp2(s + bias[None, :] + r[:, None])
        p = tl.where(qm[:, None], p, 0.0)
        if MOMENT:
            p = p * _vk(V, W, b, loc, qm, kl, km, d, s_v_b, s_w_b, PREC, BM, BN, BD)
        u = tl.load(U + b * s_u_b + kl[:, None] * k_cols + cols[None, :],
                    mask=km[:, None] & cm[None, :], other=0.0)
        acc = tl.dot(p, u, acc, input_precision=PREC)
    tl.store(out + b * s_out_b + loc[:, None] * k_cols + cols[None, :], acc,
             mask=qm[:, None] & cm[None, :])


@triton.jit
def _vk(V, W, b, loc, qm, kl, km, d, s_v_b, s_w_b, PREC: tl.constexpr, BM: tl.constexpr,
        BN: tl.constexpr, BD: tl.constexpr):
    """``v_i . w_j`` for a (BM, BN) tile (local query rows ``loc``, key rows ``kl``)."""
    acc = tl.zeros([BM, BN], tl.float32)
    for k0 in range(0, d, BD):
        ks = k0 + tl.arange(0, BD)
        dm = ks < d
        vt = tl.load(V + b * s_v_b + loc[:, None] * d + ks[None, :],
                     mask=qm[:, None] & dm[None, :], other=0.0)
        wt = tl.load(W + b.to(tl.int64) * s_w_b + kl[:, None] * d + ks[None, :],
                     mask=km[:, None] & dm[None, :], other=0.0)
        acc = tl.dot(vt, tl.trans(wt), acc, input_precision=PREC)
    return acc


@triton.jit
def _half_kernel(P, sqn, shift, w, pot, active, errsq, chg_bits, N, M, d, ld, koff, side,
                 inv_reg, score, phi, do_err, BALANCED: tl.constexpr, SINGLE_D: tl.constexpr,
                 PREC: tl.constexpr, BM: tl.constexpr, BN: tl.constexpr, BD: tl.constexpr):
    """POT's log-domain half-iteration on one side (``side`` 0: new ``u`` from ``v``; 1: new
    ``v`` from ``u``) with the softmin tiles of :func:`_step_kernel`.

    ``pot`` (B, N + M) holds the log-scalings ``u`` then ``v``; the kernel is
    ``-M_ij / reg = score * p_i . p_j - (sqn_i + sqn_j) / reg`` (``sqn = |p|^2`` for the
    squared Euclidean cost, 0 for the negative dot product), plus ``shift`` (log-weights when
    the entropy is taken relative to ``a b^T``, else 0). ``P`` is laid out as
    :func:`_scores` reads it (``ld``, ``koff``; ``d`` the columns of a product). The update
    and the error are those of :func:`.sinkhorn_stream._pass_kernel`, which
    :mod:`ot_batch.solvers.sinkhorn_log` defines. Retired problems (``active`` 0) read and
    write nothing.
    """
    blk = tl.program_id(0)
    b = tl.program_id(1)
    L = N + M
    act = tl.load(active + b) != 0
    qo = side * N
    nq = tl.where(act, N + side * (M - N), 0)
    ko = N - qo
    nk = tl.where(act, L - N - side * (M - N), 0)
    loc = blk * BM + tl.arange(0, BM)
    qm = loc < nq
    q_rows = qo + loc
    q = _query_tile(P, b, q_rows, qm, L, ld, d, SINGLE_D, BM, BD)
    scale = score * 1.4426950408889634
    mx = tl.full([BM], -1.0e30, tl.float32)
    acc = tl.zeros([BM], tl.float32)
    for j0 in range(0, nk, BN):
        kl = j0 + tl.arange(0, BN)
        km = kl < nk
        k_rows = ko + kl
        s = _scores(P, b, q_rows, qm, k_rows, km, L, ld, koff, d, q, scale, SINGLE_D, PREC, BM,
                    BN, BD)
        g = tl.load(pot + b * L + k_rows, mask=km, other=0.0)
        h = tl.load(shift + b * L + k_rows, mask=km, other=0.0)
        sk = tl.load(sqn + b * L + k_rows, mask=km, other=0.0)
        s += tl.where(km, (g + h - sk * inv_reg) * 1.4426950408889634, float("-inf"))[None, :]
        new_mx = tl.maximum(mx, tl.max(s, axis=1))
        acc = acc * tl.exp2(mx - new_mx) + tl.sum(tl.exp2(s - new_mx[:, None]), axis=1)
        mx = new_mx
    row = b * L + q_rows
    sq = tl.load(sqn + row, mask=qm, other=0.0)
    red = (mx + tl.log2(acc)) * 0.6931471805599453 - sq * inv_reg + tl.load(
        shift + row, mask=qm, other=0.0)
    ww = tl.load(w + row, mask=qm, other=0.0)
    old = tl.load(pot + row, mask=qm, other=float("-inf"))
    new = marginal_update(red, ww, safe_log(ww), phi, True)
    if do_err != 0:
        if BALANCED:  # marginal error of the current plan, as the generic solver reads it
            line = tl.exp(tl.minimum(old + red, 30.0))
            tl.atomic_add(errsq + b, tl.sum(tl.where(qm, (line - ww) * (line - ww), 0.0),
                                            axis=0))
        else:  # changes are >= 0 (or NaN): their bits order as int32 do
            ch = change(new, old, qm, True)
            tl.atomic_max(chg_bits + b, ch.to(tl.int32, bitcast=True))
    tl.store(pot + row, new, mask=qm)
