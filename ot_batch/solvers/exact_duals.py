"""Duals and optimality certificates of exact OT, written once against the array namespace.

A plan ``T`` and potentials ``(f, g)`` certify each other: ``T`` meets the marginals, ``(f, g)``
are feasible (``f_i + g_j <= M_ij``), and the gap ``<T, M> - <a, f> - <b, g>`` is zero exactly
when both are optimal (weak duality). :func:`certificate` measures both halves per problem.

:func:`from_matching` finds exact duals for a permutation (an assignment solver returns none):
with ``g_sigma(k) = M_k,sigma(k) - f_k`` (complementary slackness on the matched cells),
feasibility reads ``f_i - f_k <= M_i,sigma(k) - M_k,sigma(k)``, a system of difference
constraints whose greatest solution below a start ``f0`` is a shortest-path problem.
Bellman-Ford rounds, as c-transforms ``f_i <- min(f_i, min_j M_ij - g_j)``, reach it in as many
rounds as its longest path has edges; a round that still changes after ``n`` rounds means a
negative cycle, i.e. the permutation was not optimal. From a near-optimal start (an auction's
prices) it takes a few rounds.
"""
from __future__ import annotations

from typing import Any

__all__ = ["from_matching", "certificate", "center"]


def _gather(xp: Any, x: Any, idx: Any):
    """``out[b, k] = x[b, idx[b, k]]`` for (B, L) ``x`` and (B, n) ``idx``, by flat indexing
    (the array API has no batched gather)."""
    B, n = idx.shape
    offset = xp.reshape(xp.arange(B, dtype=idx.dtype, device=getattr(x, "device", None))
                        * x.shape[1], (B, 1))
    flat = xp.reshape(idx + offset, (-1,))
    return xp.reshape(xp.take(xp.reshape(x, (-1,)), flat), (B, n))


def from_matching(xp: Any, ext: Any, M: Any, sigma: Any, f0: Any = None,
                  max_rounds: int | None = None):
    """Exact duals of the assignments ``sigma`` (row i -> column sigma[b, i]) of (B, n, n)
    costs ``M``.

    Returns ``(f, g, ok)``: ``ok[b]`` is False where ``sigma[b]`` is not optimal (a negative
    cycle) or ``max_rounds`` (default ``n + 1``) did not suffice.
    """
    B, n, _ = M.shape
    inv = xp.argsort(sigma, axis=1)  # column j is matched with row inv[b, j]
    diag = _gather(xp, xp.reshape(M, (B, n * n)), xp.arange(n, device=getattr(M, "device", None))
                   [None, :] * n + sigma)  # M[b, k, sigma(k)]
    f = xp.zeros((B, n), dtype=M.dtype, device=getattr(M, "device", None)) if f0 is None else f0
    rounds = n + 1 if max_rounds is None else max_rounds
    changed = xp.ones((B,), dtype=xp.bool, device=getattr(M, "device", None))
    for _ in range(rounds):
        g = _gather(xp, diag - f, inv)
        new = xp.minimum(f, xp.min(M - g[:, None, :], axis=2))
        changed = xp.any(new < f, axis=1)
        f = new
        if not bool(xp.any(changed)):
            break
    g = _gather(xp, diag - f, inv)
    return f, g, ~changed


def certificate(xp: Any, M: Any, a: Any, b: Any, plan: Any, f: Any, g: Any):
    """Per problem ``(primal, dual, gap, infeasibility)``: ``<T, M>``, ``<a, f> + <b, g>``,
    their difference, and ``max(0, max_ij f_i + g_j - M_ij)``."""
    primal = xp.sum(plan * M, axis=(1, 2))
    dual = xp.sum(a * f, axis=1) + xp.sum(b * g, axis=1)
    excess = f[:, :, None] + g[:, None, :] - M
    cells = M.shape[1] * M.shape[2]
    infeas = xp.max(xp.reshape(excess, (M.shape[0], cells)), axis=1) if cells else \
        xp.zeros_like(primal)
    return primal, dual, primal - dual, xp.maximum(infeas, xp.zeros_like(infeas))


def center(xp: Any, a: Any, b: Any, f: Any, g: Any):
    """POT's ``center_ot_dual``: shift ``(f + c, g - c)`` so that ``<a, f> = <b, g>``."""
    c = (xp.sum(b * g, axis=1) - xp.sum(a * f, axis=1)) / (xp.sum(a, axis=1)
                                                           + xp.sum(b, axis=1))
    return f + c[:, None], g - c[:, None]
