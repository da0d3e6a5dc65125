"""Second derivatives of ``solve_sample_batch``'s value on the point-cloud kernels
(``grad="implicit"``): Hessian-vector products in ``X`` by implicit differentiation, the plan
never formed.

At the solution the value's gradient in ``X`` is the envelope's,
``G_i = 2 (r_i x_i - (T Y)_i)`` (:class:`.envelope.PointsLinear`). Its derivative along
``V`` moves the potentials too: :func:`.online_hvp.hvp_cross` solves the implicit-function
system by conjugate gradient on streaming plan products (:class:`.online_plan.StreamPlan`,
one pass of :func:`.online._apply_kernel` per product) and assembles ``dG``. The generic
solver's ``grad="implicit"`` (:mod:`ot_batch.solvers.implicit`, dense) is the reference.

POT's log-scalings ``u``, ``v`` (``T = exp(u_i + v_j - C_ij / reg)``) become the potentials of
GeomLoss's convention (weights apart) that the streaming plan takes:
``f = reg (u - log a)``, ``g = reg (v - log b)``.
"""
from __future__ import annotations

from typing import Callable

import torch

from .online_hvp import hvp_cross
from .online_plan import StreamPlan
from .online_solve import Clouds


def transport_hvp(X: torch.Tensor, Y: torch.Tensor, a: torch.Tensor, b: torch.Tensor,
                  lu: torch.Tensor, lv: torch.Tensor, reg: float, precision: str) -> Callable:
    """``hvp(V, grad)`` for :class:`.online_grad.EnvelopeGrad`: ``g * d/dt G(X + t V)`` per
    problem, ``grad`` (B, n) the value's cotangent ``g`` repeated over the points.

    The streaming plan is set up at the first call (first derivatives never pay for it);
    ``precision`` is the kernels' ``tl.dot`` precision ('tf32x3' or 'tf32').
    """
    state: dict = {}

    def plan() -> StreamPlan:
        if "plan" not in state:
            n, m = X.shape[1], Y.shape[1]
            cl = Clouds.of(X, Y, a, b, 1.0, precision)
            f = reg * (lu.to(torch.float32) - cl.logw[:, :n])
            g = reg * (lv.to(torch.float32) - cl.logw[:, n:])
            state["plan"] = StreamPlan(cl, reg, slice(0, n), slice(n, n + m), f, g)
        return state["plan"]

    def hvp(V: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
        if torch.is_grad_enabled():  # the products below carry no graph in X
            raise RuntimeError(
                "solve_sample_batch(grad='implicit') on the point-cloud kernels gives first "
                "and second derivatives in X_a; for third derivatives use backend='generic'")
        out, _ = hvp_cross(plan(), V.detach().to(torch.float32), 1.0, reg)
        g = grad.detach().to(torch.float32)[:, :1, None]
        return (g * out).to(V.dtype)

    return hvp
