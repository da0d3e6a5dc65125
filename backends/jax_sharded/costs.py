"""The two point-cloud costs as ``C_ij = alpha_i + beta_j + scale <x'_i, y'_j>``.

``x'`` and ``y'`` are the clouds centred on their own means. The row and column terms
``alpha`` and ``beta`` are absorbed into the potentials (they do not change the plan), so the
solver only ever multiplies centred coordinates: small numbers, hence small rounding in TF32
or bf16 products. The same split gives the mean and the standard deviation of all n x m costs
in closed form (a d x d Gram matrix per cloud, no pass over n x m).
"""
from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

COSTS = ("sqeuclidean", "negdot")


class Affine(NamedTuple):
    """``C_ij = alpha_i + beta_j + scale * <xc_i, yc_j>``."""

    xc: Any
    yc: Any
    alpha: Any
    beta: Any
    scale: float


def decompose(x: Any, y: Any, cost: str) -> Affine:
    """Split ``cost`` between clouds ``x`` (n, d) and ``y`` (m, d) (see the module doc)."""
    xm, ym = jnp.mean(x, axis=0), jnp.mean(y, axis=0)
    xc, yc = x - xm, y - ym
    if cost == "sqeuclidean":
        # |x - y|^2 = |x' - y' + delta|^2 with delta = mean x - mean y.
        delta = xm - ym
        alpha = jnp.sum(xc * xc, axis=1) + 2 * (xc @ delta) + jnp.sum(delta * delta)
        beta = jnp.sum(yc * yc, axis=1) - 2 * (yc @ delta)
        return Affine(xc, yc, alpha, beta, -2.0)
    if cost == "negdot":
        # -<x, y> = -<x', y'> - <x', mean y> - <mean x, y> ... with the constant in alpha.
        alpha = -(xc @ ym) - jnp.dot(xm, ym)
        beta = -(yc @ xm)
        return Affine(xc, yc, alpha, beta, -1.0)
    raise ValueError(f"cost must be one of {COSTS}, got {cost!r}")


def summary(aff: Affine, kind: str) -> Any:
    """Mean (``kind="mean"``) or standard deviation (``"std"``) of all ``C_ij``, uniform
    weights (as OTT-JAX's ``relative_epsilon``), in closed form.

    With ``i`` and ``j`` independent and uniform, the three terms of :class:`Affine` are
    uncorrelated (the centred clouds have zero means), so
    ``var C = var alpha + var beta + scale^2 <X'^T X', Y'^T Y'> / (n m)``.
    """
    if kind == "mean":
        return jnp.mean(aff.alpha) + jnp.mean(aff.beta)
    if kind != "std":
        raise ValueError(f"relative_reg must be None, 'mean' or 'std', got {kind!r}")
    # float32-accurate: three bf16 passes on tensor cores for float32, else full precision
    preset = getattr(jax.lax, "DotAlgorithmPreset", None)
    hi = (preset.BF16_BF16_F32_X3 if preset is not None and aff.xc.dtype == jnp.float32
          else jax.lax.Precision.HIGHEST)
    gx = jnp.matmul(aff.xc.T, aff.xc, precision=hi)
    gy = jnp.matmul(aff.yc.T, aff.yc, precision=hi)
    n, m = aff.xc.shape[0], aff.yc.shape[0]
    var = (jnp.var(aff.alpha) + jnp.var(aff.beta)
           + aff.scale ** 2 * jnp.sum(gx * gy) / n / m)
    return jnp.sqrt(var)
