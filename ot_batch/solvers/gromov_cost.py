"""The Gromov-Wasserstein cost tensor, kept implicit.

For losses of the form ``l(x, y) = f1(x) + f2(y) - <h1(x), h2(y)>`` (Peyre, Cuturi and Solomon
2016, Prop. 1) the product of the 4-D tensor ``L[i, j, k, l] = l(Ca[i, j], Cb[k, l])`` with a
plan ``T`` is::

    (L x T)[i, k] = (f1(Ca) r)[i] + (f2(Cb) c)[k] - sum_d (h1(Ca)_d T h2(Cb)_d^T)[i, k]

with ``r = T 1`` and ``c = T^T 1``: two batched matmuls per feature, never a (B, n, n, m, m)
tensor. Plain (B, n, n) matrices are one feature; POT's edge-feature form (B, n, n, d) has d.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

LOSSES = {"sqeuclidean": "sqeuclidean", "l2": "sqeuclidean", "square_loss": "sqeuclidean",
          "kl": "kl", "kl_loss": "kl"}
_TINY_KL = 1e-15  # POT's guard inside the logarithms of the KL losses


@dataclass
class QuadraticCost:
    """``f1(Ca)`` (B, n, n), ``f2(Cb)`` (B, m, m), ``h1(Ca)`` and ``h2(Cb)``: (B, n, n) and
    (B, m, m), or (B, d, n, n) and (B, d, m, m) for edge features. ``f`` parts are
    symmetrised when the problem is not symmetric (the gradient averages both orientations)."""

    fCa: Any
    fCb: Any
    hCa: Any
    hCb: Any
    symmetric: bool

    def map(self, fn: Any) -> "QuadraticCost":
        """The same cost with ``fn`` applied to each of its four matrices (a stop-gradient,
        say)."""
        return QuadraticCost(*(fn(x) for x in (self.fCa, self.fCb, self.hCa, self.hCb)),
                             self.symmetric)


def decompose(xp: Any, Ca: Any, Cb: Any, loss: str, logits: bool, symmetric: bool):
    """The four matrices of ``loss`` for ``Ca`` and ``Cb``; see the module docstring.

    - sqeuclidean: ``f1 = |x|^2``, ``f2 = |y|^2``, ``h1 = 2x``, ``h2 = y``.
    - kl on plain matrices, POT's ``kl_loss`` ``x log(x / y) - x + y``:
      ``f1 = x log x - x``, ``f2 = y``, ``h1 = x``, ``h2 = log y``.
    - kl on edge features, as POT's ``ot.batch`` (KL of the target feature vector to the
      source one): ``f1 = 0``, ``f2 = sum_d y_d log y_d``, ``h1 = log x`` (``x`` itself when
      ``logits``), ``h2 = y``.
    """
    features = Ca.ndim == 4
    if loss == "sqeuclidean":
        if features:
            fCa, fCb = xp.sum(Ca ** 2, axis=-1), xp.sum(Cb ** 2, axis=-1)
        else:
            fCa, fCb = Ca ** 2, Cb ** 2
        hCa, hCb = 2 * Ca, Cb
    elif features:
        fCa = xp.zeros(Ca.shape[:3], dtype=Ca.dtype, device=getattr(Ca, "device", None))
        fCb = xp.sum(Cb * xp.log(Cb + _TINY_KL), axis=-1)
        hCa, hCb = (Ca if logits else xp.log(Ca + _TINY_KL)), Cb
    else:
        fCa, fCb = Ca * xp.log(Ca + _TINY_KL) - Ca, Cb
        hCa, hCb = Ca, xp.log(Cb + _TINY_KL)
    if features:  # features first, so that the matmuls broadcast over them
        hCa, hCb = xp.permute_dims(hCa, (0, 3, 1, 2)), xp.permute_dims(hCb, (0, 3, 1, 2))
    if not symmetric:
        fCa, fCb = (fCa + _t(xp, fCa)) / 2, (fCb + _t(xp, fCb)) / 2
    return QuadraticCost(fCa, fCb, hCa, hCb, symmetric)


def _t(xp: Any, x: Any):
    return xp.matrix_transpose(x)


def _cross(xp: Any, hCa: Any, hCb: Any, T: Any):
    """``sum_d h1_d T h2_d^T``."""
    if hCa.ndim == 3:
        return hCa @ T @ _t(xp, hCb)
    return xp.sum(hCa @ T[:, None] @ _t(xp, hCb), axis=1)


def const(xp: Any, cost: QuadraticCost, r: Any, c: Any):
    """``(f1(Ca) r)[i] + (f2(Cb) c)[k]`` as a (B, n, m) array."""
    return (cost.fCa @ r[:, :, None]) + _t(xp, cost.fCb @ c[:, :, None])


def product(xp: Any, cost: QuadraticCost, T: Any, r: Any = None, c: Any = None):
    """``L x T`` (half the gradient of ``<L x T, T>``), symmetrised when not symmetric.

    ``r`` and ``c`` are the marginals the constant term uses: pass the target weights inside
    the solver (the plan meets them), or leave None to use the plan's own.
    """
    r = xp.sum(T, axis=2) if r is None else r
    c = xp.sum(T, axis=1) if c is None else c
    cross = _cross(xp, cost.hCa, cost.hCb, T)
    if not cost.symmetric:
        cross = (cross + _cross(xp, _t(xp, cost.hCa), _t(xp, cost.hCb), T)) / 2
    return const(xp, cost, r, c) - cross


def value(xp: Any, cost: QuadraticCost, T: Any):
    """``<L x T, T>`` per problem, with the plan's own marginals (exact for any plan)."""
    return xp.sum(product(xp, cost, T) * T, axis=(1, 2))


def linearize(xp: Any, cost: QuadraticCost, T: Any, alpha: Any, M: Any = None, r: Any = None,
              c: Any = None):
    """Gradient ``G`` of the (fused) GW objective at ``T`` and the objective ``f`` there:
    ``G = 2 alpha L x T + (1 - alpha) M`` and ``f = alpha <L x T, T> + (1 - alpha) <M, T>``.

    ``r`` and ``c``: the marginals of the constant term (see :func:`product`).
    """
    LT = product(xp, cost, T, r, c)
    al3 = alpha[:, None, None]
    G = 2 * al3 * LT
    f = alpha * xp.sum(LT * T, axis=(1, 2))
    if M is not None:
        G = G + (1 - al3) * M
        f = f + (1 - alpha) * xp.sum(M * T, axis=(1, 2))
    return G, f
