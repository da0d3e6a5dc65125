"""Envelope gradients of the (fused) Gromov-Wasserstein value in the node weights ``a``, ``b``.

The value is ``V(a, b) = min_{T in Pi(a, b)} F(T)`` with ``F(T) = (1 - alpha) <M, T> +
alpha <L x T, T>`` (a local minimum: GW is not convex). Its Lagrangian is

    F(T) - <f, T 1 - a> - <g, T^T 1 - b> - <h, T>,    h >= 0,  h * T = 0,

and at a local minimum ``T*`` stationarity reads ``G = f 1^T + 1 g^T + h`` with
``G = grad F(T*) = (1 - alpha) M + 2 alpha L x T*``: ``(f, g)`` are optimal duals of the
*linearised* problem ``min_{T in Pi(a, b)} <G, T>``, which ``T*`` solves (first-order
optimality over the polytope). The envelope theorem (Danskin) gives

    dV/da = f,    dV/db = g,

on the directions that keep ``sum a = sum b``: a change of the weights moves the plan within
its support (which, for generic weights, is a spanning tree of the bipartite graph, so any
equal-mass change is reachable), and to first order the value changes by ``<G, dT> =
<f, da> + <g, db>``. Only differences of ``f`` (and of ``g``) are defined; as POT's
``ot.gromov.gromov_wasserstein2`` (which sets ``log["u"] - mean(log["u"])`` from the last
linearised OT problem of its conditional gradient) the returned gradients are centred. Where
the duals are not unique (degenerate supports, e.g. uniform weights and a permutation plan)
the value is not differentiable in ``a``, ``b`` and the result is one subgradient-like choice,
as in POT.

Which potentials. Each proximal step solves ``min <G_k - reg log T_k, T> + reg H(T)`` with
plan ``T_{k+1} = T_k exp(u + v - G_k / reg)`` (:mod:`.gromov`), so that on the support

    reg (u_i + v_j) = G_k[i, j] + reg log(T_{k+1} / T_k)[i, j],

and at the proximal fixed point ``reg (u, v)`` are exactly duals of ``G`` on the support of
``T*``. They are free (the solver returns them), on the arrays' device, and traceable. Against
finite differences of the re-solved value they agree to ~1e-10 (relative) when the solve is
tight; at looser tolerances both they and the exact network-simplex duals of ``G(T*)`` are
limited by how far the returned plan is from the local minimum (the exact duals are at best
a few times closer), so the cheap ones are used.

Zero-weight (padded) nodes have ``u = -inf``; their terms are masked to zero and the centring
uses the real nodes only, so the gradients of the real nodes are those of the unpadded problem.
"""
from __future__ import annotations

from typing import Any

__all__ = ["differentiable", "weight_terms"]


def differentiable(ext: Any, *arrays: Any) -> bool:
    """Whether a value can carry gradients to ``arrays``: always under JAX (a transformation
    that follows is not visible here), for torch tensors that require them (or are wrapped by
    ``torch.func``); never for NumPy and CuPy."""
    if ext.name == "jax":
        return True
    if ext.name != "torch":
        return False
    import torch

    wrapped = torch._C._functorch.is_functorch_wrapped_tensor
    return any(x is not None and (x.requires_grad or wrapped(x)) for x in arrays)


def _centred(xp: Any, pot: Any, real: Any):
    """``pot`` minus its mean over the real nodes, 0 on the others."""
    zero = xp.zeros_like(pot)
    pot = xp.where(real, pot, zero)
    count = xp.sum(xp.astype(real, pot.dtype), axis=1, keepdims=True)
    mean = xp.sum(pot, axis=1, keepdims=True) / xp.where(count > 0, count, xp.ones_like(count))
    return xp.where(real, pot - mean, zero)


def weight_terms(xp: Any, ext: Any, a: Any, b: Any, u: Any, v: Any, reg: float):
    """Per problem ``sum_i f_i (a_i - stop(a_i)) + sum_j g_j (b_j - stop(b_j))``: zero in
    value, with gradient ``f`` in ``a`` and ``g`` in ``b``.

    ``u``, ``v`` (B, n) and (B, m) are the log-scalings of the last proximal step; ``f`` and
    ``g`` are ``reg * u`` and ``reg * v``, centred over the real nodes (see the module
    docstring)."""
    a0, b0 = ext.stop_gradient(a), ext.stop_gradient(b)
    f = _centred(xp, reg * ext.stop_gradient(u), a0 > 0)
    g = _centred(xp, reg * ext.stop_gradient(v), b0 > 0)
    return xp.sum(f * (a - a0), axis=1) + xp.sum(g * (b - b0), axis=1)
