"""Exact OT (``solve_batch(M)`` with ``reg=None``): pick a solver, certify, form values.

Solvers (``method=``):

``"network_simplex"``
    POT's network simplex on the host, one problem per thread
    (:func:`ot_batch.solvers.exact_host.network_simplex`). Any weights, zero weights too.
``"assignment"``
    lapx's batched Jonker-Volgenant on the host, uniform weights and ``n == m``, duals
    recovered from the matching (:func:`ot_batch.solvers.exact_host.assignment`).
``"gpu"``
    A batched epsilon-scaling auction in Triton on CUDA (:mod:`ot_batch.backends.triton.exact`)
    for uniform weights (``n == m`` or not); torch tensors directly, JAX and CuPy arrays
    through DLPack (no copy). Problems whose certificate fails are solved again on the host.
``"auto"``
    ``"gpu"`` for uniform weights on a CUDA device with Triton, else ``"network_simplex"``
    (general weights on a GPU go through the host: the arrays come back on their device).

Every result is certified per problem: ``log["gap"]`` is ``<T, M> - <a, f> - <b, g>`` and
``log["dual_infeasibility"]`` is ``max(0, max f_i + g_j - M_ij)``, both in float64 where the
library has it. The value is computed in float64 and returned in the caller's dtype.

Gradients are the envelope's, as ``ot.emd2`` gives them: ``d value / d M = plan`` and
``d value / d a = f - mean(f)``, ``d value / d b = g - mean(g)`` (POT's centred duals). They
are gradients wherever the optimal plan and duals are unique; where they are not, they are one
element of the subdifferential (the value is not differentiable there).
"""
from __future__ import annotations

from typing import Any

import array_api_compat.numpy as npx
import numpy as np

from . import _validate
from .result import OTResult, status_of
from .solvers import exact_duals, exact_host

__all__ = ["solve", "choose_method"]


def _uniform(pb: _validate.LinearProblem) -> bool:
    """Every problem's weights are constant: known when a and b were not given, else one
    host read (False for tracers, which have no values yet)."""
    if pb.uniform:
        return True
    xp, ext, a, b = pb.xp, pb.ext, pb.a, pb.b
    if ext.is_tracer(a):
        return False
    return a.shape[1] * b.shape[1] == 0 or bool(xp.all(a == a[:, :1]) & xp.all(b == b[:, :1]))


def _on_gpu(pb: _validate.LinearProblem, requested: bool = False) -> bool:
    """CUDA arrays (torch, JAX or CuPy, not traced) where Triton runs; on request also CPU
    torch tensors under ``TRITON_INTERPRET=1`` (the kernel's tests)."""
    from .backends import triton as _triton

    M, name = pb.M, pb.ext.name
    if pb.ext.is_tracer(M) or not _triton.available():
        return False
    if name == "torch":
        return _triton.available(M) if requested else M.is_cuda
    if name == "jax":
        return all(d.platform == "gpu" for d in M.devices())
    return name == "cupy"


def _differentiable(pb: _validate.LinearProblem) -> bool:
    """Whether the value can carry gradients: always under JAX (a transformation that follows
    is not visible here), for torch inputs that require them; never for NumPy and CuPy."""
    if pb.ext.name == "jax":
        return True
    if pb.ext.name != "torch":
        return False
    import torch

    wrapped = torch._C._functorch.is_functorch_wrapped_tensor  # torch.func transforms
    return any(x.requires_grad or wrapped(x) for x in (pb.M, pb.a, pb.b))


def choose_method(pb: _validate.LinearProblem) -> str:
    """The solver of ``method=pb.method`` for this problem; ValueError when an explicit one
    cannot take it (the message names ``method``)."""
    from .backends.triton import exact as gpu_exact

    method = pb.method
    batch, n, m = pb.shape
    uniform = None
    if method in ("exact", "gpu"):
        uniform = _uniform(pb)
    if method == "exact":
        if _on_gpu(pb) and uniform and gpu_exact.fits(n, m):
            return "gpu"
        return "network_simplex"
    if method == "gpu":
        if not _on_gpu(pb, requested=True):
            raise ValueError("method='gpu' needs CUDA arrays (torch, JAX or CuPy) and Triton")
        if not uniform:
            raise ValueError("method='gpu' takes uniform weights a and b only; use "
                             "method='network_simplex' (or 'auto') for general weights")
        if not gpu_exact.fits(n, m):
            raise ValueError(f"method='gpu' takes problems whose expanded assignment "
                             f"n * m / gcd(n, m) is at most {gpu_exact.MAX_SIZE}, got n={n}, "
                             f"m={m}")
    if method == "assignment":
        if n != m:
            raise ValueError(f"method='assignment' needs square problems (n == m), got n={n}, "
                             f"m={m}")
        if not _uniform(pb):
            raise ValueError("method='assignment' needs uniform weights a and b")
    if pb.potentials_init is not None and method != "network_simplex":
        raise ValueError(f"potentials_init= warm-starts the network simplex only, not "
                         f"method={method!r}")
    return method


def _host_fn(method: str, max_iter: int, n_threads: Any, dtype: Any):
    """The host computation: solve, centre the duals, certify; outputs in ``dtype`` (the
    plan and duals) and float64 (values and certificates)."""

    def fn(M, a, b, *init):
        M64, a64, b64 = (np.asarray(x, dtype=np.float64) for x in (M, a, b))
        if method == "assignment":
            res = exact_host.assignment(M64, n_threads)
        else:
            res = exact_host.network_simplex(M64, a64, b64, max_iter, n_threads, *init)
        return _certified(npx, M64, a64, b64, res.plan, res.f, res.g, res.converged, dtype)

    return fn


def _certified(xp: Any, M: Any, a: Any, b: Any, plan: Any, f: Any, g: Any, converged: Any,
               dtype: Any):
    f, g = exact_duals.center(xp, a, b, f, g)
    primal, _, gap, infeas = exact_duals.certificate(xp, M, a, b, plan, f, g)
    return (xp.astype(plan, dtype), xp.astype(f, dtype), xp.astype(g, dtype), primal, gap,
            infeas, converged)


def _specs(shape: tuple[int, int, int], dtype: Any):
    B, n, m = shape
    d = np.dtype(dtype).name
    return [((B, n, m), d), ((B, n), d), ((B, m), d), ((B,), "float64"), ((B,), "float64"),
            ((B,), "float64"), ((B,), "bool")]


def solve(pb: _validate.LinearProblem) -> OTResult:
    """Solve the exact problems of ``pb`` and return the certified :class:`OTResult`."""
    from .linear import _envelope_weights

    xp, ext = pb.xp, pb.ext
    method = choose_method(pb)
    M, a, b = (ext.stop_gradient(x) for x in (pb.M, pb.a, pb.b))
    if method == "gpu":
        from .backends.triton import exact as gpu_exact

        out = gpu_exact.solve_any(xp, ext, M, a, b, n_threads=pb.n_threads,
                                  max_rounds=pb.max_iter)
    else:
        init = () if pb.potentials_init is None else (
            ext.stop_gradient(pb.potentials_init[0]), ext.stop_gradient(pb.potentials_init[1]))
        # the caller's dtype as NumPy names it (bfloat16 comes back as float32)
        dtype = M.dtype if ext.is_tracer(M) else ext.to_numpy(M[:0]).dtype
        fn = _host_fn(method, pb.max_iter, pb.n_threads, dtype)
        out = ext.host_call(fn, (M, a, b, *init), M, _specs(pb.shape, dtype))
    plan, f, g, primal, gap, infeas, converged = out
    value = value_linear = xp.astype(primal, plan.dtype)
    if pb.grad == "envelope" and _differentiable(pb):  # zeros in value with Danskin's
        # gradients: the plan for M, ...
        value_linear = value + xp.sum(plan * (pb.M - M), axis=(1, 2))
        centred = (f - xp.mean(f, axis=1, keepdims=True), g - xp.mean(g, axis=1, keepdims=True))
        value = _envelope_weights(pb, value_linear, centred)  # ... the centred duals for a, b
    log = {"gap": gap, "dual_infeasibility": infeas, "converged": converged, "method": method}
    return OTResult(potentials=(f, g), value=value, value_linear=value_linear, plan=plan, log=log,
                    backend=xp, status=status_of(converged, ext.to_numpy))
