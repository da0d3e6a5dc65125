"""JAX extras (see :mod:`backends`).

The loop is a ``lax.while_loop`` over blocks of ``check_every`` steps so that ``jax.jit`` and
``jax.vmap`` of a solver work; a problem that has converged is masked (its state no longer
changes). Reverse-mode autodiff cannot go through a ``while_loop``: with ``differentiable=True``
the loop is a ``fori_loop`` of static length (lowered to ``scan``), still masked per problem.
"""
from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

name = "jax"


def logsumexp(x: Any, axis: int):
    return jax.nn.logsumexp(x, axis=axis)


def stop_gradient(x: Any):
    return lax.stop_gradient(x)


def take(x: Any, idx: Any):
    return x[idx]


def put(x: Any, idx: Any, rows: Any):
    return x.at[idx].set(rows)


def to_numpy(x: Any) -> np.ndarray:
    return np.asarray(x)


def from_numpy(x: np.ndarray, like: Any):
    return jax.device_put(jnp.asarray(x), next(iter(like.devices())))


def host_call(fn, arrays, like, out_specs):
    """Run ``fn`` on NumPy copies of ``arrays``; under ``jax.jit`` through
    ``jax.pure_callback``, its outputs declared by ``out_specs`` ((shape, dtype) pairs; float64
    becomes float32 where x64 is off)."""
    if not any(is_tracer(x) for x in arrays):
        return tuple(from_numpy(o, like) for o in fn(*[np.asarray(x) for x in arrays]))
    specs = tuple(jax.ShapeDtypeStruct(s, jax.dtypes.canonicalize_dtype(d))
                  for s, d in out_specs)

    def call(*xs):
        return tuple(np.asarray(o, dtype=s.dtype) for o, s in zip(fn(*xs), specs))

    return jax.pure_callback(call, specs, *arrays)


@functools.lru_cache(maxsize=None)
def compile(fn):
    """``fn(*arrays, static=...)`` as one cached ``jax.jit``: a solver's loop is traced and
    compiled once per shape and set of options, not at every eager call."""
    return jax.jit(fn, static_argnames=("static",))


def is_tracer(x: Any) -> bool:
    return isinstance(x, jax.core.Tracer)


def device_of(x: Any) -> str:
    return ",".join(sorted(str(d) for d in x.devices()))


def _mask(active: Any, new: Any, old: Any):
    shape = active.shape + (1,) * (new.ndim - 1)
    return jnp.where(active.reshape(shape), new, old)


def iterate(step, error, data, state, *, max_iter, check_every, tol, differentiable=False,
            verbose=False, start=0):
    """Same contract as :func:`backends._eager.iterate`; returns JAX arrays."""
    data, state = tuple(data), tuple(state)
    batch = state[0].shape[0]
    dtype = state[0].dtype

    def block(carry, length):
        cur, n_iter, conv, err, it = carry
        new = lax.fori_loop(0, length, lambda _, s: step(data, s), cur)
        e = error(data, new).astype(err.dtype)
        active = ~conv
        cur = tuple(_mask(active, n, o) for n, o in zip(new, cur))
        n_iter = jnp.where(active, it + length, n_iter)
        err = jnp.where(active, e, err)
        conv = conv | (active & (e < tol))
        if verbose:
            jax.debug.print("it {it} | active {a} | max err {e}", it=it + length,
                            a=jnp.sum(active), e=jnp.max(jnp.where(active, e, 0)))
        return (cur, n_iter, conv, err, it + length)

    carry = (state, jnp.zeros(batch, jnp.int32), jnp.zeros(batch, bool),
             jnp.full(batch, jnp.inf, dtype=jnp.result_type(dtype, jnp.float32)),
             jnp.asarray(start, jnp.int32))
    if max_iter <= start:
        cur, n_iter, conv, err, _ = carry
        return cur, n_iter, conv, err
    if differentiable:
        n_full, rem = divmod(max_iter, check_every)
        if n_full:
            carry = lax.fori_loop(0, n_full, lambda _, c: block(c, check_every), carry)
        if rem:
            carry = block(carry, rem)
    else:
        def cond(c):
            return (c[4] < max_iter) & ~jnp.all(c[2])

        def body(c):
            return block(c, jnp.minimum(check_every, max_iter - c[4]))

        carry = lax.while_loop(cond, body, carry)
    cur, n_iter, conv, err, _ = carry
    return cur, n_iter, conv, err


def _ext():
    import sys
    return sys.modules[__name__]


@functools.partial(jax.custom_jvp, nondiff_argnums=(5,))
def _implicit_fwd_mode(C, a, b, f, g, spec):
    return f, g


@_implicit_fwd_mode.defjvp
def _implicit_jvp(spec, primals, tangents):
    from ot_batch.solvers import implicit

    C, a, b, f, g = primals
    dC, da, db, _, _ = tangents
    return (f, g), implicit.tangent(jnp, _ext(), spec, C, a, b, f, g, dC, da, db)


@functools.partial(jax.custom_vjp, nondiff_argnums=(5,))
def _implicit(C, a, b, f, g, spec):
    return _implicit_fwd_mode(C, a, b, f, g, spec)


def _implicit_vjp_fwd(C, a, b, f, g, spec):
    # the custom_jvp inside gives the outputs their implicit tangents when an outer
    # forward-mode pass (jax.hessian = jacfwd(jacrev)) runs through this forward
    out = _implicit_fwd_mode(C, a, b, f, g, spec)
    return out, (C, a, b) + out


def _implicit_vjp_bwd(spec, res, ct):
    from ot_batch.solvers import implicit

    C, a, b, f, g = res
    gC, ga, gb = implicit.cotangent(jnp, _ext(), spec, C, a, b, f, g, *ct)
    return gC, ga, gb, jnp.zeros_like(f), jnp.zeros_like(g)


_implicit.defvjp(_implicit_vjp_fwd, _implicit_vjp_bwd)


def implicit_attach(spec: Any, C: Any, a: Any, b: Any, f: Any, g: Any):
    """``(f, g)``, solutions of the problems ``(C, a, b)`` (a hashable ``spec``), carrying the
    derivatives of the implicit function theorem in C, a and b: a ``custom_vjp`` for reverse
    mode whose forward pass carries a ``custom_jvp``, so ``jax.grad``, ``jax.hessian`` and
    ``jax.jacrev(jax.jacrev(...))`` all work."""
    return _implicit(C, a, b, lax.stop_gradient(f), lax.stop_gradient(g), spec)


def linear_solve(matvec, rhs, solve):
    """``solve(matvec, rhs)`` for a symmetric ``matvec``, differentiated as a linear solve
    (``lax.custom_linear_solve``): the solver's own loop is never differentiated."""
    return lax.custom_linear_solve(matvec, rhs, solve, symmetric=True)
