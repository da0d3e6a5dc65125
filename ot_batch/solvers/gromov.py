"""Batched (fused) Gromov-Wasserstein by proximal steps, with per-problem convergence.

Each outer step is a mirror-descent (KL-proximal) step on the objective
``F(T) = (1 - alpha) <M, T> + alpha <L x T, T>`` (Xu, Luo and Carin 2019)::

    G_k     = (1 - alpha) M + 2 alpha L x T_k                  (gradient of F at T_k)
    T_{k+1} = argmin_{T in Pi(a, b)} <G_k, T> + reg KL(T | T_k)

an entropic OT problem with log-kernel ``-G_k / reg + log T_k``, solved by the log-domain
Sinkhorn of :mod:`.sinkhorn_log`. What differs from POT's ``ot.batch.solve_gromov_batch``, and
why the objectives end lower:

- the inner solve is warm-started with the previous step's scalings and over-relaxed: the
  kernels are sharp (``reg`` is small against the spread of ``G``), where plain Sinkhorn
  crawls and a capped inner loop leaves the marginals off, which the next step inherits;
- each problem stops on its own, when the relative change of its objective or the total
  variation of its plan change falls below ``tol`` (POT compares the batch's largest mean
  absolute entry change with ``tol``; entries are about 1 / (n m), so at n = 256 it stops
  after one step);
- the last plan is rounded onto the marginals (:mod:`.rounding`), so ``T 1 = a`` and
  ``T^T 1 = b`` hold to round-off.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from . import gromov_cost, sinkhorn_log
from ._sinkhorn_parts import safe_log
from .rounding import round_to_marginals


@dataclass
class GromovOutput:
    plan: Any
    potentials: tuple[Any, Any]
    n_iter: Any
    converged: Any
    err: Any
    n_iter_inner: Any
    finished: bool = False  # the finishing steps (gromov_cg.finish) are done already


def inner_generic(xp: Any, ext: Any, cost: Any, a: Any, b: Any, reg: float, init: Any, *,
                  grad: str, max_iter: int, tol: float, check_every: int, omega: float):
    """One proximal step's entropic OT problem (cost ``cost``), by :mod:`.sinkhorn_log`.

    Returns ``(plan, u, v, n_iter)``; the reference of the fused inner solves."""
    out = sinkhorn_log.solve(xp, ext, cost, a, b, reg, init=init, grad=grad, max_iter=max_iter,
                             tol=tol, check_every=check_every, omega=omega)
    return out.plan, out.potentials[0], out.potentials[1], out.n_iter


def step_error(xp: Any, f: Any, f_prev: Any, T_new: Any, T: Any, mass: Any):
    """The stopping error of a proximal step: the relative change of the objective ``f``, or
    the total variation of the plan's change relative to ``mass``, whichever is smaller."""
    tiny = xp.full_like(f, float(xp.finfo(f.dtype).smallest_normal))
    rel = xp.abs(f - f_prev) / xp.maximum(xp.abs(f), tiny)
    tv = xp.sum(xp.abs(T_new - T), axis=(1, 2)) / mass
    return xp.where(xp.isnan(rel), tv, xp.minimum(rel, tv))


def iterate_frozen(xp: Any, ext: Any, step: Any, err_index: int, data: tuple, state: tuple, *,
                   max_iter: int, tol: float, check_every: int, differentiable: bool,
                   verbose: bool):
    """``ext.iterate`` where each problem stops at its own step whatever ``check_every``.

    ``state[err_index]`` is the error ``step`` leaves. Once a problem's error is below ``tol``
    (or not finite) its state is frozen (masked) until the next check removes it, so
    ``check_every`` steps may run between checks (host synchronisations on a GPU) without
    changing the result. Returns ``(state, n_iter, converged)``: its own step count per
    problem.
    """
    def frozen(d, s):
        *old, live, count = s
        new = step(d, tuple(old))
        kept = tuple(xp.where(xp.reshape(live, (-1,) + (1,) * (x.ndim - 1)), x, o)
                     for x, o in zip(new, old))
        err = kept[err_index]
        stop = (err < tol) | ~xp.isfinite(err)
        return kept + (live & ~stop, count + xp.astype(live, count.dtype))

    def error(d, s):
        # stopped problems read as converged (-1) or broken (inf) until the check removes them
        err, live = s[err_index], s[-2]
        done = xp.where(err < tol, xp.full_like(err, -1.0), xp.full_like(err, float("inf")))
        return xp.where(live, err, done)

    batch, dev = state[0].shape[0], getattr(state[0], "device", None)
    state = tuple(state) + (xp.ones((batch,), dtype=xp.bool, device=dev),
                            xp.zeros((batch,), dtype=xp.int32, device=dev))
    out, _, converged, _ = ext.iterate(frozen, error, data, state, max_iter=max_iter,
                                       check_every=check_every, tol=tol,
                                       differentiable=differentiable, verbose=verbose)
    count = out[-1]
    n_iter = count if ext.name == "jax" else xp.astype(count, xp.int64)
    return out[:-2], n_iter, converged


def solve(xp: Any, ext: Any, cost: gromov_cost.QuadraticCost, M: Any, alpha: Any, a: Any,
          b: Any, reg: float, T_init: Any, *, max_iter: int, tol: float, max_iter_inner: int,
          tol_inner: float, grad: str, omega: float, check_every_inner: int,
          verbose: bool, inner: Any = inner_generic, check_every: int = 1) -> GromovOutput:
    """Run the proximal steps; see the module docstring.

    ``cost`` holds the decomposed loss; ``M`` (B, n, m) or None and ``alpha`` (B,) weight the
    linear part. ``grad="autodiff"`` keeps the graph through every step; otherwise the loop
    runs on detached inputs. ``inner`` solves each step's entropic problem
    (:func:`inner_generic` or a fused kernel with its signature).

    ``check_every`` steps run between the loop's convergence checks (host synchronisations on
    a GPU). Each problem still stops at its own step: once its error is below ``tol`` its state
    is frozen (masked) until the check removes it, so the result does not depend on
    ``check_every``.
    """
    fused = M is not None
    parts = (cost.fCa, cost.fCb, cost.hCa, cost.hCb)
    data = parts + (alpha, a, b) + ((M,) if fused else ())
    if grad != "autodiff":
        data = tuple(ext.stop_gradient(x) for x in data)
        T_init = ext.stop_gradient(T_init)
    inner_grad = "autodiff" if grad == "autodiff" else "detach"
    dtype, dev = a.dtype, getattr(a, "device", None)
    batch, n, m = T_init.shape

    def step(d, state):
        fCa, fCb, hCa, hCb, al, a_, b_ = d[:7]
        T, du, dv, f_prev, _, n_inner = state
        c = gromov_cost.QuadraticCost(fCa, fCb, hCa, hCb, cost.symmetric)
        G, f = gromov_cost.linearize(xp, c, T, al, d[7] if fused else None, a_, b_)
        # padded (zero-weight) rows and columns get a finite kernel: their potential is
        # then -inf (no mass) instead of -inf - (-inf)
        real = (a_ > 0)[:, :, None] & (b_ > 0)[:, None, :]
        logT = xp.where(real, safe_log(xp, T), xp.zeros_like(T))
        T_new, u, v, n_it = inner(
            xp, ext, G - reg * logT, a_, b_, reg, (du, dv), grad=inner_grad,
            max_iter=max_iter_inner, tol=tol_inner, check_every=check_every_inner,
            omega=omega)
        err = step_error(xp, f, f_prev, T_new, T, xp.sum(a_, axis=1))
        return T_new, u, v, f, err, n_inner + xp.astype(n_it, n_inner.dtype)

    inf = xp.full((batch,), float("inf"), dtype=dtype, device=dev)
    state = (T_init, xp.zeros((batch, n), dtype=dtype, device=dev),
             xp.zeros((batch, m), dtype=dtype, device=dev), inf, inf,
             xp.zeros((batch,), dtype=xp.int32, device=dev))
    (T, u, v, _, err, n_inner), n_iter, converged = iterate_frozen(
        xp, ext, step, 4, data, state, max_iter=max_iter, tol=tol, check_every=check_every,
        differentiable=grad == "autodiff", verbose=verbose)
    plan = round_to_marginals(xp, T, data[5], data[6])
    return GromovOutput(plan, (u, v), n_iter, converged, err, n_inner)
