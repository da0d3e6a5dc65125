"""Conditional-gradient finishing steps for (fused) Gromov-Wasserstein plans.

Proximal steps approach a vertex of the transport polytope slowly: the mass off the final
support shrinks by a constant factor per step. One Frank-Wolfe step towards the "sharpened"
plan (each row's mass on its largest entry, rounded onto the marginals), with the exact line
search of POT's conditional gradient, gets there at once when the plan is close, and never
makes a plan worse: the objective is quadratic along the segment and the step is its
minimiser on [0, 1] (0 when the direction does not descend).

Semi-relaxed plans (``b=None``: only ``T 1 = a`` holds) use the same steps: the sharpened plan
(each row's mass ``a_i`` on its largest entry) is feasible as it is, and the curvature keeps
the quadratic term of the columns' own marginals, which the direction changes.
"""
from __future__ import annotations

from typing import Any

from . import gromov_cost
from .rounding import round_to_marginals


def _sharpened(xp: Any, T: Any, a: Any, b: Any):
    """Each row's mass ``a_i`` on its largest entry, rounded onto the marginals (``b`` None:
    not rounded, the semi-relaxed case)."""
    m = T.shape[2]
    top = xp.argmax(T, axis=2)
    cols = xp.arange(m, device=getattr(T, "device", None))
    onehot = xp.astype(top[:, :, None] == cols[None, None, :], T.dtype)
    D = onehot * a[:, :, None]
    return D if b is None else round_to_marginals(xp, D, a, b)


def finish(xp: Any, cost: gromov_cost.QuadraticCost, M: Any, alpha: Any, a: Any, b: Any,
           T: Any, steps: int):
    """Up to ``steps`` line-searched steps towards the sharpened plan; returns the plan.

    ``b=None``: semi-relaxed plans (columns free)."""
    for _ in range(steps):
        G = gromov_cost.linearize(xp, cost, T, alpha, M, a, b)[0]
        T = _towards(xp, cost, alpha, a, b, T, _sharpened(xp, T, a, b), G)[0]
    return T


def _towards(xp: Any, cost: gromov_cost.QuadraticCost, alpha: Any, a: Any, b: Any, T: Any,
             D: Any, G: Any):
    """The exact line search from ``T`` towards ``D`` (``G``: the gradient at ``T``):
    ``(new plan, step)``, the step minimising the quadratic objective on [0, 1] (0 when the
    direction does not descend)."""
    X = D - T
    slope = xp.sum(G * X, axis=(1, 2))
    # X has zero row sums (and column sums when balanced), so that part of the constant term
    # of L x X vanishes; semi-relaxed, the columns' own term stays (c=None)
    curv = alpha * xp.sum(gromov_cost.product(
        xp, cost, X, xp.zeros_like(a), None if b is None else xp.zeros_like(b)) * X,
        axis=(1, 2))
    zero, one = xp.zeros_like(slope), xp.ones_like(slope)
    safe = xp.where(curv > 0, curv, one)
    gamma = xp.where(curv > 0, xp.clip(-slope / (2 * safe), 0.0, 1.0),
                     xp.where(slope + curv < 0, one, zero))
    return T + gamma[:, None, None] * X, gamma


def polish(xp: Any, cost: gromov_cost.QuadraticCost, M: Any, alpha: Any, a: Any, b: Any,
           T: Any, steps: int, lp: Any, on_host: Any = None):
    """Up to ``steps`` Frank-Wolfe steps with exact directions: POT's conditional gradient
    (``ot.solve_gromov``) started from ``T``.

    Each step solves the linear program ``D = argmin_{P in Pi(a, b)} <G, P>`` for the
    gradient ``G`` at ``T`` (``lp(G, a, b) -> (plan, f, g)``, an exact OT solver) and moves
    along ``D - T`` with the exact line search of :func:`finish`; no step increases the
    objective. The loop ends early once no problem moves (``on_host`` reads a (B,) array;
    None: never). Returns the plan and the duals ``(f, g)`` of the last linear program: at a
    stationary plan (no move) they are the multipliers of the marginal constraints, the
    envelope gradients of the value in ``a`` and ``b``.
    """
    duals = None
    for _ in range(steps):
        G = gromov_cost.linearize(xp, cost, T, alpha, M, a, b)[0]
        D, f, g = lp(G, a, b)
        duals = (f, g)
        T, gamma = _towards(xp, cost, alpha, a, b, T, D, G)
        if on_host is not None and not bool(on_host(xp.any(gamma > 0))):
            break
    return T, duals
