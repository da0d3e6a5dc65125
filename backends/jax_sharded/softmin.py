"""The per-device soft-minimum passes of the sharded Sinkhorn, in two modes.

Each device holds a block of ``x'`` rows (``n_l`` points) and a block of ``y'`` rows (``m_l``
points) and the matching blocks of the potentials. The loop (:mod:`.sinkhorn`) needs, with
``K_ij = scale <x'_i, y'_j>``,

* ``col_lse(f)_j = LSE_i (f_i - K_ij) / eps`` for the g-update,
* ``row_lse(g)_i = LSE_j (g_j - K_ij) / eps`` for the f-update,
* ``row_stats(f, g)``: the row sums of ``P = exp((f_i + g_j - K_ij) / eps)`` and ``<P, K>``.

:class:`Kept` stores this device's rows of K (``n_l x m``, built once from an all-gather of
``y'``) and reduces columns across devices with ``pmax``/``psum`` of length-m vectors; g is
then held whole on every device. :class:`Ring` never stores K: blocks of the other cloud travel
around the devices (``ppermute``, as in ring attention) and each visit recomputes the cost in
chunks of ``chunk`` points with one matmul followed by a log-sum-exp that XLA fuses into one
read; no device ever holds more than its own blocks, one visiting block and an
``n_l x chunk`` tile.
"""
from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp


class Config(NamedTuple):
    """Static options of a sharded solve (hashable: part of the jit cache key)."""

    layout: Any
    mode: str
    chunk: int
    max_iter: int
    tol: float
    precision: Any
    scale: float


def _lse_parts(z: Any, axis: int):
    """``(max, sum exp(z - max))`` along ``axis``; the max may be -inf (nothing there)."""
    mx = jnp.max(z, axis=axis)
    safe = jnp.where(jnp.isfinite(mx), mx, 0.0)
    return mx, jnp.sum(jnp.exp(z - jnp.expand_dims(safe, axis)), axis=axis)


def _merge(acc: Any, part: Any):
    """Combine two ``(max, sum)`` pairs of one log-sum-exp."""
    (m1, s1), (m2, s2) = acc, part
    mx = jnp.maximum(m1, m2)
    safe = jnp.where(jnp.isfinite(mx), mx, 0.0)
    return mx, s1 * jnp.exp(m1 - safe) + s2 * jnp.exp(m2 - safe)


def _finish(acc: Any):
    mx, s = acc
    return jnp.where(s > 0, jnp.where(jnp.isfinite(mx), mx, 0.0) + jnp.log(s), -jnp.inf)


def _chunked(pts: Any, pot: Any, chunk: int):
    """``pts`` (n, d) and ``pot`` (n,) cut into ``(count, chunk, ...)``; zero points with
    potential -inf pad the last chunk, so they weigh nothing in any sum."""
    c = min(chunk, pts.shape[0])
    count = -(-pts.shape[0] // c)
    pad = count * c - pts.shape[0]
    if pad:
        pts = jnp.concatenate([pts, jnp.zeros((pad, pts.shape[1]), pts.dtype)])
        pot = jnp.concatenate([pot, jnp.full((pad,), -jnp.inf, pot.dtype)])
    return pts.reshape(count, c, -1), pot.reshape(count, c)


class Kept:
    """This device's rows of the cost, kept for the whole solve as ``(count, n_l, chunk)``
    column chunks, so that every pass streams it chunk by chunk with temporaries no larger
    than one chunk. Columns are padded to a whole number of chunks (potential -inf)."""

    def __init__(self, xl: Any, yl: Any, eps: Any, cfg: Config):
        self.axes, self.eps, self.m_l = cfg.layout.axes, eps, yl.shape[0]
        y = jax.lax.all_gather(yl, self.axes, tiled=True)
        self.m = y.shape[0]
        y = _chunked(y, jnp.zeros(self.m, y.dtype), cfg.chunk)[0]
        self.count = y.shape[0]
        self.K = jax.lax.map(lambda yc: jnp.matmul(cfg.scale * xl, yc.T, precision=cfg.precision),
                             y)

    def cols_in(self, v: Any) -> Any:
        v = jax.lax.all_gather(v, self.axes, tiled=True)
        pad = self.count * self.K.shape[2] - self.m
        return jnp.concatenate([v, jnp.full((pad,), -jnp.inf, v.dtype)])

    def cols_out(self, v: Any) -> Any:
        start = jax.lax.axis_index(self.axes) * self.m_l
        return jax.lax.dynamic_slice_in_dim(v, start, self.m_l)

    def col_total(self, v: Any) -> Any:
        return jnp.sum(v)

    def _by_chunk(self, v: Any) -> Any:
        return v.reshape(self.count, -1)

    def col_lse(self, f: Any, shift: Any = None) -> Any:
        eps = self.eps
        if shift is not None:  # P at (f, g_old), f from g_old: rows sum to a, no overflow
            s = jax.lax.map(lambda kc: jnp.sum(jnp.exp((f[:, None] + kc[1][None, :] - kc[0])
                                                       / eps), axis=0),
                            (self.K, self._by_chunk(shift)))
            s = jax.lax.psum(s.reshape(-1), self.axes)
            return _rescue(s, shift / eps, lambda: self.col_lse(f))
        parts = jax.lax.map(lambda kc: _lse_parts((f[:, None] - kc) / eps, 0), self.K)
        mx = jax.lax.pmax(parts[0].reshape(-1), self.axes)
        return _finish(_global(parts, mx, self.axes))

    def row_lse(self, g: Any, shift: Any = None) -> Any:
        eps, gc = self.eps, self._by_chunk(g)
        if shift is not None:  # P at (f_old, g), g from f_old: columns sum to b
            def add(acc, kc):
                return acc + jnp.sum(jnp.exp((shift[:, None] + kc[1][None, :] - kc[0]) / eps),
                                     axis=1), None

            s = jax.lax.scan(add, jnp.zeros_like(shift), (self.K, gc))[0]
            return _rescue(s, shift / eps, lambda: self.row_lse(g))

        def step(acc, kc):
            return _merge(acc, _lse_parts((kc[1][None, :] - kc[0]) / eps, 1)), None

        n_l = self.K.shape[1]
        start = (jnp.full((n_l,), -jnp.inf, g.dtype), jnp.zeros((n_l,), g.dtype))
        return _finish(jax.lax.scan(step, start, (self.K, gc))[0])

    def row_stats(self, f: Any, g: Any):
        def step(acc, kc):
            p = jnp.exp((f[:, None] + kc[1][None, :] - kc[0]) / self.eps)
            return (acc[0] + jnp.sum(p, axis=1), acc[1] + jnp.sum(p * kc[0])), None

        start = (jnp.zeros_like(f), jnp.zeros((), f.dtype))
        rows, lin = jax.lax.scan(step, start, (self.K, self._by_chunk(g)))[0]
        return rows, jax.lax.psum(lin, self.axes)


def _global(parts: Any, mx: Any, axes: Any):
    """Per-device ``(max, sum)`` chunks rescaled to the global max ``mx`` and summed."""
    lmx, ls = parts[0].reshape(-1), parts[1].reshape(-1)
    safe = jnp.where(jnp.isfinite(mx), mx, 0.0)
    return mx, jax.lax.psum(ls * jnp.exp(lmx - safe), axes)


def _rescue(s: Any, shift: Any, two_pass: Any) -> Any:
    """``log s - shift``, or the two-pass log-sum-exp when a sum over- or underflowed (a
    first iteration from a cold start, or an iterate far from the marginals)."""
    fin = jnp.finfo(s.dtype)
    bad = jnp.any((s < fin.tiny / fin.eps) & jnp.isfinite(shift)) | jnp.any(~jnp.isfinite(s))
    # Where the shift is -inf (zero weight, padding) any finite value does: the update adds
    # the -inf log-weight.
    return jax.lax.cond(bad, two_pass,
                        lambda: jnp.where(jnp.isfinite(shift), jnp.log(s) - shift, 0.0))


class Ring:
    """The cost recomputed in chunks while blocks of the other cloud go round the devices."""

    def __init__(self, xl: Any, yl: Any, eps: Any, cfg: Config):
        self.xl, self.yl, self.eps, self.cfg = xl, yl, eps, cfg
        self.axes, self.P = cfg.layout.axes, cfg.layout.size

    cols_in = cols_out = staticmethod(lambda v: v)

    def col_total(self, v: Any) -> Any:
        return jax.lax.psum(jnp.sum(v), self.axes)

    def _sweep(self, loc: Any, rem: Any, pot: Any, acc: Any, step: Any):
        """Fold ``step(acc, K_chunk, pot_chunk)`` over every block of the other cloud, the
        blocks passed device to device (P - 1 ``ppermute`` of one block each)."""
        cfg = self.cfg
        pts, pot = _chunked(rem, pot, cfg.chunk)
        perm = [(i, (i + 1) % self.P) for i in range(self.P)]

        def visit(acc, chunk):
            K = jax.numpy.matmul(cfg.scale * loc, chunk[0].T, precision=cfg.precision)
            return step(acc, K, chunk[1]), None

        def hop(_, carry):
            acc, pts, pot = carry
            acc = jax.lax.scan(visit, acc, (pts, pot))[0]
            return (acc, *jax.lax.ppermute((pts, pot), self.axes, perm))

        acc, pts, pot = jax.lax.fori_loop(0, self.P - 1, hop, (acc, pts, pot))
        return jax.lax.scan(visit, acc, (pts, pot))[0]

    def _lse(self, loc: Any, rem: Any, pot: Any) -> Any:
        eps = self.eps
        start = (jnp.full(loc.shape[:1], -jnp.inf, loc.dtype), jnp.zeros(loc.shape[:1], loc.dtype))
        acc = self._sweep(loc, rem, pot, start,
                          lambda acc, K, p: _merge(acc, _lse_parts((p[None, :] - K) / eps, 1)))
        return _finish(acc)

    def col_lse(self, f: Any, shift: Any = None) -> Any:
        return self._lse(self.yl, self.xl, f)

    def row_lse(self, g: Any, shift: Any = None) -> Any:
        return self._lse(self.xl, self.yl, g)

    def row_stats(self, f: Any, g: Any):
        eps = self.eps

        def step(acc, K, p):
            P = jnp.exp((f[:, None] + p[None, :] - K) / eps)
            return acc[0] + jnp.sum(P, axis=1), acc[1] + jnp.sum(P * K)

        start = (jnp.zeros_like(f), jnp.zeros((), f.dtype))
        rows, lin = self._sweep(self.xl, self.yl, g, start, step)
        return rows, jax.lax.psum(lin, self.axes)


MODES = {"kept": Kept, "chunked": Ring}
