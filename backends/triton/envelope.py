"""Envelope gradients of the linear cost ``<T, C>``, the plan held fixed (``grad="envelope"``).

From a cost tensor M the gradient is the plan itself (:class:`MatrixLinear`). From point
clouds it is ``T Y`` and ``T^T X`` contracted with the cost's derivative, the plan never
formed:

- squared Euclidean: ``d/dx_i = 2 (r_i x_i - (T Y)_i)``, ``d/dy_j = 2 (c_j y_j - (T^T X)_j)``
  with ``r``, ``c`` the plan's row and column sums;
- negative dot product: ``d/dx_i = -(T Y)_i``, ``d/dy_j = -(T^T X)_j``.

:func:`plan_matmul` forms ``T Y`` (or ``T^T X``) tile by tile, recomputing ``T`` from the
potentials as the forward passes do, like the backward pass of an attention kernel.
:class:`PointsLinear` is the autograd Function; its reference in the tests is autograd
through ``dist_batch`` with the generic solver's plan held fixed.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from . import driver
from .online_grad import EnvelopeGrad
from ._parts import cost_tile, log_kernel_tile
from .sinkhorn_stream import SQEUCLIDEAN


@triton.jit
def _plan_matmul_kernel(X, Y, xn, yn, ra, rb, u, v, Z, out, n, m, d, dz, inv_reg,
                        COLS: tl.constexpr, COST: tl.constexpr, SHIFT: tl.constexpr,
                        PREC: tl.constexpr, BN: tl.constexpr, BM: tl.constexpr,
                        BD: tl.constexpr, BZ: tl.constexpr):
    """out[b, lines, z0:z0+BZ] = (T Z) for a block of rows (``COLS=False``, Z (B, m, dz)) or
    (T^T Z) for a block of columns (``COLS=True``, Z (B, n, dz))."""
    pid = tl.program_id(0)
    z0 = tl.program_id(2) * BZ
    zs = z0 + tl.arange(0, BZ)
    zm = zs < dz
    if COLS:
        lines = tl.program_id(1) * BM + tl.arange(0, BM)
        lm = lines < m
        acc = tl.zeros([BM, BZ], tl.float32)
        pv = tl.load(v + pid * m + lines, mask=lm, other=float("-inf"))
        for r0 in range(0, n, BN):
            rows = r0 + tl.arange(0, BN)
            rm = rows < n
            c = cost_tile(X, X, Y, xn, yn, pid, rows, lines, n, m, d, COST, PREC, BN, BM, BD)
            t = log_kernel_tile(c, ra, rb, pid, rows, lines, n, m, inv_reg, SHIFT)
            pu = tl.load(u + pid * n + rows, mask=rm, other=float("-inf"))
            T = tl.exp(t + pu[:, None] + pv[None, :])
            z = tl.load(Z + (pid * n + rows)[:, None].to(tl.int64) * dz + zs[None, :],
                        mask=rm[:, None] & zm[None, :], other=0.0).to(tl.float32)
            acc = tl.dot(tl.trans(T), z, acc, input_precision=PREC)
        tl.store(out + (pid * m + lines)[:, None].to(tl.int64) * dz + zs[None, :], acc,
                 mask=lm[:, None] & zm[None, :])
    else:
        lines = tl.program_id(1) * BN + tl.arange(0, BN)
        lm = lines < n
        acc = tl.zeros([BN, BZ], tl.float32)
        pu = tl.load(u + pid * n + lines, mask=lm, other=float("-inf"))
        for c0 in range(0, m, BM):
            cols = c0 + tl.arange(0, BM)
            cm = cols < m
            c = cost_tile(X, X, Y, xn, yn, pid, lines, cols, n, m, d, COST, PREC, BN, BM, BD)
            t = log_kernel_tile(c, ra, rb, pid, lines, cols, n, m, inv_reg, SHIFT)
            pv = tl.load(v + pid * m + cols, mask=cm, other=float("-inf"))
            T = tl.exp(t + pu[:, None] + pv[None, :])
            z = tl.load(Z + (pid * m + cols)[:, None].to(tl.int64) * dz + zs[None, :],
                        mask=cm[:, None] & zm[None, :], other=0.0).to(tl.float32)
            acc = tl.dot(T, z, acc, input_precision=PREC)
        tl.store(out + (pid * n + lines)[:, None].to(tl.int64) * dz + zs[None, :], acc,
                 mask=lm[:, None] & zm[None, :])


def plan_matmul(ctx: dict, Z: torch.Tensor, transpose: bool) -> torch.Tensor:
    """``T Z`` (``transpose=False``, Z (B, m, dz)) or ``T^T Z`` (Z (B, n, dz)), float32."""
    X, Y, u, v = ctx["X"], ctx["Y"], ctx["u"], ctx["v"]
    B, n, d = X.shape
    m = Y.shape[1]
    dz = Z.shape[2]
    t = driver.tiles(n, m, d, True)
    BZ = max(16, min(64, triton.next_power_of_2(max(dz, 1))))
    out = torch.empty((B, m if transpose else n, dz), dtype=torch.float32, device=X.device)
    lines = triton.cdiv(m, t.row[1]) if transpose else triton.cdiv(n, t.row[0])
    shift = ctx["ra"] is not None
    _, _, _, xn, yn, ra, rb = driver.cost_args(None, None, None, ctx["xn"], ctx["yn"],
                                               ctx["ra"], ctx["rb"], u)
    if B and n and m and dz:
        _plan_matmul_kernel[(B, lines, triton.cdiv(dz, BZ))](
            X, Y, xn, yn, ra, rb, u, v, Z.contiguous(), out, n, m, d, dz, ctx["inv_reg"],
            COLS=transpose, COST=ctx["cost"], SHIFT=shift, PREC=ctx["prec"], BN=t.row[0],
            BM=t.row[1], BD=t.depth, BZ=BZ, num_warps=t.warps)
    else:
        out.zero_()
    return out


class PointsLinear(torch.autograd.Function):
    """``<T, C(X, Y)>`` per problem with ``T`` held fixed: the value comes in (from the final
    pass), the backward pass gives the gradients of ``X`` and ``Y``.

    With ``ctx_data["hvp"]`` (``grad="implicit"``, see :mod:`.points_implicit`) and a graph
    asked for (``create_graph=True``), the gradient in ``X`` is itself differentiable in
    ``X``: its backward is the implicit Hessian-vector product."""

    @staticmethod
    def forward(X, Y, lin, ctx_data):
        return lin.clone()

    @staticmethod
    def setup_context(ctx, inputs, output):
        ctx.data = inputs[3]
        if inputs[3].get("hvp") is not None:
            ctx.save_for_backward(inputs[0])

    @staticmethod
    def backward(ctx, g):
        data = ctx.data
        X, Y = data["X"], data["Y"]
        gX = gY = None
        g3 = g.to(torch.float32)[:, None, None]
        if ctx.needs_input_grad[0]:
            TY = plan_matmul(data, Y, transpose=False)
            if data["cost"] == SQEUCLIDEAN:
                gX = 2 * (data["rowsum"][:, :, None] * X.to(torch.float32) - TY)
            else:
                gX = -TY
            if data.get("hvp") is not None and torch.is_grad_enabled():
                (X_in,) = ctx.saved_tensors
                per_point = g.to(torch.float32)[:, None].expand(X.shape[0], X.shape[1])
                gX = EnvelopeGrad.apply(per_point, X_in, gX, data["hvp"]).to(data["dtype"])
            else:
                gX = (g3 * gX).to(data["dtype"])
        if ctx.needs_input_grad[1]:
            TtX = plan_matmul(data, X, transpose=True)
            if data["cost"] == SQEUCLIDEAN:
                gY = 2 * (data["colsum"][:, :, None] * Y.to(torch.float32) - TtX)
            else:
                gY = -TtX
            gY = (g3 * gY).to(data["dtype"])
        return gX, gY, None, None


class MatrixLinear(torch.autograd.Function):
    """``<T, M>`` per problem with ``T`` held fixed: the value comes in (from the final pass),
    the backward pass gives ``g T`` for ``M``."""

    @staticmethod
    def forward(M, lin, plan):
        return lin.clone()

    @staticmethod
    def setup_context(ctx, inputs, output):
        ctx.save_for_backward(inputs[2])
        ctx.dtype = inputs[0].dtype

    @staticmethod
    def backward(ctx, g):
        (plan,) = ctx.saved_tensors
        return (g.to(plan.dtype)[:, None, None] * plan).to(ctx.dtype), None, None
