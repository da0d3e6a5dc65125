"""Autograd for the streaming Sinkhorn divergence: gradients without backpropagating through
the iterations.

Each final potential depends on its own point only (GeomLoss's last extrapolation, keys held
fixed), so its gradient is the per-point vector ``J`` of :func:`.online_solve.envelope`.
:class:`Attach` gives a potential that gradient; the loss is then formed from the attached
potentials by the same formula as the dense path (:func:`ot_batch.solvers.annealed.cost`),
whose autograd supplies the gradients for the weights. Second derivatives go through
:class:`EnvelopeGrad`, whose backward is the implicit Hessian-vector product.
"""
from __future__ import annotations

from typing import Callable, Optional

import torch


class Attach(torch.autograd.Function):
    """``pot`` (B, n), whose gradient with respect to ``pts`` (B, n, D) is
    ``grad_pot[..., None] * J``; with ``hvp`` (the implicit Hessian of the whole loss), a
    second derivative is taken through :class:`EnvelopeGrad`."""

    @staticmethod
    def forward(ctx, pot, pts, J, hvp: Optional[Callable] = None):
        ctx.save_for_backward(pts, J)
        ctx.hvp = hvp
        return pot.clone()

    @staticmethod
    def backward(ctx, grad):
        pts, J = ctx.saved_tensors
        if torch.is_grad_enabled():  # create_graph: the caller wants second derivatives
            if ctx.hvp is None:
                raise RuntimeError(
                    "second derivatives of the online Sinkhorn divergence need the balanced "
                    "loss (reach=None, potentials=False); use backend='tensorized' otherwise")
            return None, EnvelopeGrad.apply(grad, pts, J, ctx.hvp), None, None
        return None, grad[..., None] * J.to(grad.dtype), None, None


class EnvelopeGrad(torch.autograd.Function):
    """``grad[..., None] * J`` as a function of the points, whose backward applies the
    implicit Hessian: ``hvp(V, grad)`` returns ``d/dX <V, grad * J>`` for the loss's
    weights ``grad``."""

    @staticmethod
    def forward(ctx, grad, pts, J, hvp):
        ctx.save_for_backward(grad, J)
        ctx.hvp = hvp
        return grad[..., None] * J.to(grad.dtype)

    @staticmethod
    def backward(ctx, V):
        grad, J = ctx.saved_tensors
        g_grad = (V * J.to(V.dtype)).sum(-1)
        return g_grad, ctx.hvp(V, grad), None, None
