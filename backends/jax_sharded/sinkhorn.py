"""The sharded Sinkhorn loop (OTT-JAX's log-domain updates) and the solve around it.

``P_ij = exp((f_i + g_j - C_ij) / eps)``; each iteration updates g then f, so the rows of P sum
to ``a`` and the error is the L1 distance of its column sums to ``b`` (OTT's ``norm_error=1``).
That error costs nothing here: the g-update's log-sum-exp gives the column sums of the
previous iterate, ``b_j exp((g_j - g_new_j) / eps)``, so convergence is checked at every
iteration without a pass of its own, and the loop returns the iterate it measured.
"""
from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
from jax.sharding import PartitionSpec

from . import costs, layout as _layout
from .softmin import MODES, Config


def _device_loop(xl, yl, la, lb, f0, g0, eps, *, cfg: Config):
    """One device's share of the whole solve (runs inside ``shard_map``)."""
    ops = MODES[cfg.mode](xl, yl, eps, cfg)
    lb_c, g = ops.cols_in(lb), ops.cols_in(g0)
    b_c = jnp.exp(lb_c)

    def g_update(f, g_old):
        return eps * lb_c - eps * ops.col_lse(f, shift=g_old)

    def col_sums(g_old, g_new):  # column sums of P at (f, g_old), f the g-update's input
        return jnp.where(b_c > 0, b_c * jnp.exp((g_old - g_new) / eps), 0.0)

    def body(state):
        f, g, it, errors, _, _ = state
        g_new = g_update(f, g)
        cols = col_sums(g, g_new)
        err = ops.col_total(jnp.abs(cols - b_c))
        # The error of a starting point may overflow (a cold start in float32): diverging
        # is judged from the first iteration on.
        stop = (err < cfg.tol) | (~jnp.isfinite(err) & (it > 0))
        f, g = jax.lax.cond(stop, lambda: (f, g),
                            lambda: (eps * la - eps * ops.row_lse(g_new, shift=f), g_new))
        return f, g, it + jnp.where(stop, 0, 1), errors.at[it].set(err), stop, cols

    def cond(state):
        return (~state[4]) & (state[2] < cfg.max_iter)

    errors = jnp.full((cfg.max_iter + 1,), -1.0, xl.dtype)
    start = (f0, g, jnp.zeros((), jnp.int32), errors, jnp.zeros((), bool), jnp.zeros_like(b_c))
    f, g, it, errors, stopped, cols = jax.lax.while_loop(cond, body, start)
    # A loop that stopped on its test measured the iterate it returns; one that ran out of
    # iterations measures it now (one more pass).
    cols = jax.lax.cond(stopped, lambda: cols, lambda: col_sums(g, g_update(f, g)))
    err = ops.col_total(jnp.abs(cols - b_c))
    errors = errors.at[it].set(err)
    rows, lin = ops.row_stats(f, g)
    return f, ops.cols_out(g), ops.cols_out(cols), rows, lin, it, errors


@functools.partial(jax.jit, static_argnames=("cfg", "cost", "relative"))
def _solve(x, y, a, b, f0, g0, reg, *, cfg: Config, cost: str, relative: Any) -> tuple:
    aff = costs.decompose(x, y, cost)
    eps = reg if relative is None else reg * costs.summary(aff, relative)
    eps = jnp.asarray(eps, x.dtype)
    la, lb = jnp.log(a), jnp.log(b)
    f0 = jnp.zeros_like(a) if f0 is None else f0 - aff.alpha
    g0 = jnp.zeros_like(b) if g0 is None else g0 - aff.beta
    lay = cfg.layout
    pts, vec, one = lay.spec(2), lay.spec(1), PartitionSpec()
    run = _layout.shard_map(
        functools.partial(_device_loop, cfg=cfg._replace(scale=aff.scale)), lay,
        in_specs=(pts, pts, vec, vec, vec, vec, one),
        out_specs=(vec, vec, vec, vec, one, one, one))
    f, g, cols, rows, lin, it, errors = run(aff.xc, aff.yc, la, lb, f0, g0, eps)

    def dot(w, v):
        return jnp.sum(jnp.where(w > 0, w * v, 0.0))

    total = jnp.sum(rows)
    reg_ot = (dot(a, f - eps * la) + dot(b, g - eps * lb) + jnp.sum(a * aff.alpha)
              + jnp.sum(b * aff.beta) + eps * (jnp.sum(a) * jnp.sum(b) - total))
    primal = lin + jnp.sum(rows * aff.alpha) + jnp.sum(cols * aff.beta)
    entropy = (lin - jnp.sum(rows * f) - jnp.sum(cols * g)) / eps
    diag = None
    if x.shape[0] == y.shape[0]:
        k_ii = aff.scale * jnp.sum(aff.xc * aff.yc, axis=1)
        diag = jnp.exp((f + g - k_ii) / eps)
    err = errors[it]
    # the fields of ShardedOutput, potentials in the original cost's convention
    return (f + aff.alpha, g + aff.beta, err < cfg.tol, it, errors, eps, reg_ot, primal,
            entropy, rows, cols, diag)
