"""Batched cost matrices: ``dist_batch`` and its metrics."""
from __future__ import annotations

from typing import Any

from . import _validate

__all__ = ["dist_batch"]


def _sqeuclidean(xp: Any, X: Any, Y: Any):
    # Centre each problem on its points first: |x|^2 + |y|^2 - 2 x.y cancels catastrophically
    # for coordinates far from the origin, and the cost does not depend on a shared shift.
    n, m = X.shape[1], Y.shape[1]
    if n + m:
        c = (xp.sum(X, axis=1, keepdims=True) + xp.sum(Y, axis=1, keepdims=True)) / (n + m)
        X, Y = X - c, Y - c
    XX = xp.sum(X * X, axis=2)[:, :, None]
    YY = xp.sum(Y * Y, axis=2)[:, None, :]
    M = XX + YY - 2 * xp.matmul(X, xp.matrix_transpose(Y))
    return xp.clip(M, min=0)  # round-off can dip below zero; a distance never does


def _minkowski(xp: Any, X: Any, Y: Any, p: float):
    D = xp.abs(X[:, :, None, :] - Y[:, None, :, :])
    return xp.sum(D**p, axis=3) ** (1.0 / p)


def _kl(xp: Any, X: Any, Y: Any, eps: float = 1e-10):
    # M_ij = sum_d y_jd log(y_jd / x_id), as one matmul instead of a (B, n, m, d) tensor.
    entr_y = xp.sum(Y * xp.log(Y + eps), axis=2)
    return entr_y[:, None, :] - xp.matmul(xp.log(X + eps), xp.matrix_transpose(Y))


def dist_batch(X1: Any, X2: Any = None, metric: str = "sqeuclidean", p: float = 2,
               nx: Any = None) -> Any:
    r"""Cost matrices of many pairs of point clouds at once (POT's ``ot.batch.dist_batch``).

    Parameters
    ----------
    X1 : array, shape (B, n, d)
        Source samples of each problem.
    X2 : array, shape (B, m, d), optional
        Target samples; ``X1`` when omitted.
    metric : {'sqeuclidean', 'euclidean', 'minkowski', 'kl', 'negdot'}
        ``|x - y|^2``, ``|x - y|``, ``(sum |x - y|^p)^(1/p)``,
        :math:`\sum_d y_d \log(y_d / x_d)` or the negative dot product ``-<x, y>`` (OTT-JAX's
        ``Dotp`` cost; not in POT).
    p : float, default 2
        Order of the Minkowski metric.
    nx : ignored
        Accepted for POT compatibility; the library is found from the inputs.

    Returns
    -------
    M : array, shape (B, n, m)
        In the inputs' library, dtype and device. Euclidean distances are never negative nor
        NaN from round-off, also for coordinates far from the origin.

    Examples
    --------
    >>> import numpy as np, ot_batch
    >>> X = np.random.default_rng(0).normal(size=(5, 10, 3))
    >>> Y = np.random.default_rng(1).normal(size=(5, 15, 3))
    >>> ot_batch.dist_batch(X, Y, metric="euclidean").shape
    (5, 10, 15)
    """
    xp, _, X1, X2, metric, p = _validate.points(X1, X2, metric, p)
    if metric == "sqeuclidean":
        return _sqeuclidean(xp, X1, X2)
    if metric == "euclidean":
        return xp.sqrt(_sqeuclidean(xp, X1, X2))
    if metric == "minkowski":
        return _minkowski(xp, X1, X2, p)
    if metric == "negdot":
        return -xp.matmul(X1, xp.matrix_transpose(X2))
    return _kl(xp, X1, X2)
