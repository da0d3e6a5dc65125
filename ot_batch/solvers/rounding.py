"""Rounding a nearly feasible plan onto the transport polytope."""
from __future__ import annotations

from typing import Any


def round_to_marginals(xp: Any, T: Any, a: Any, b: Any):
    """The plan nearest ``T`` (in L1, up to a factor 2) with marginals exactly ``a`` and ``b``.

    Altschuler, Weed and Rigollet (2017), Algorithm 2: scale down the rows that carry too much
    mass, then the columns, and give the missing mass back as a rank-one term. The change is at
    most ``2 (|T 1 - a|_1 + |T^T 1 - b|_1)``, so a plan that Sinkhorn left within ``tol`` of
    its marginals moves by as little; zero-weight rows and columns stay empty. Needs
    ``sum(a) == sum(b)`` per problem.
    """
    zero = xp.zeros_like(a)
    r = xp.sum(T, axis=2)
    scale_r = xp.where(r > a, a / xp.where(r > 0, r, xp.ones_like(r)), xp.ones_like(r))
    X = T * scale_r[:, :, None]
    c = xp.sum(X, axis=1)
    scale_c = xp.where(c > b, b / xp.where(c > 0, c, xp.ones_like(c)), xp.ones_like(c))
    X = X * scale_c[:, None, :]
    err_r = xp.maximum(a - xp.sum(X, axis=2), zero)
    err_c = xp.maximum(b - xp.sum(X, axis=1), xp.zeros_like(b))
    total = xp.sum(err_r, axis=1)
    total = xp.where(total > 0, total, xp.ones_like(total))
    return X + err_r[:, :, None] * err_c[:, None, :] / total[:, None, None]
