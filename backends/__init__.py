"""Array-namespace lookup and the registry that picks a fast path.

Generic solvers in :mod:`ot_batch.solvers` are written once against the array-API namespace
``xp`` (from array-api-compat) plus the few extras the standard lacks, which every library
module here provides under the same names:

``name``
    the library's short name (``"numpy"``, ``"torch"``, ``"jax"``, ``"cupy"``).
``logsumexp(x, axis)``
    numerically stable log-sum-exp along one axis.
``stop_gradient(x)``
    the value of ``x`` with no gradient flowing back (identity where there is no autodiff).
``iterate(step, error, data, state, *, max_iter, check_every, tol, differentiable, verbose)``
    the fixed-point loop with per-problem convergence (see :func:`backends._eager.iterate`).
``compile(fn)``
    ``fn(*arrays, static=options)`` compiled once per set of options (``jax.jit``), or ``fn``
    itself for eager libraries.
``to_numpy(x)``, ``is_tracer(x)``, ``device_of(x)``
    host copies for checks, "is this a traced value" (JAX under ``jit``), the array's device.
``from_numpy(x, like)``, ``host_call(fn, arrays, like, out_specs)``
    a NumPy array brought beside ``like``; a NumPy computation (a compiled host solver) run
    on host copies of ``arrays``, its outputs brought back (``jax.pure_callback`` under
    ``jax.jit``).

A fast implementation is registered with :func:`register` for one operation and a predicate on
its inputs; :func:`pick` returns the first whose predicate accepts, else the generic one.
"""
from __future__ import annotations

import importlib
from typing import Any, Callable, NamedTuple

import array_api_compat

__all__ = ["namespace", "register", "pick", "registered"]

# array-api-compat predicate -> our extras module, in the order they are tried.
_LIBRARIES = (
    ("numpy", array_api_compat.is_numpy_array),
    ("torch", array_api_compat.is_torch_array),
    ("jax", array_api_compat.is_jax_array),
    ("cupy", array_api_compat.is_cupy_array),
)


def _library_of(x: Any) -> str | None:
    for name, is_lib in _LIBRARIES:
        if is_lib(x):
            return name
    return None


def extras(name: str):
    """Return the extras module of library ``name`` (imported on first use)."""
    return importlib.import_module(f"{__name__}.{name}")


def namespace(**arrays: Any):
    """Return ``(xp, ext)`` for the given named arrays (``None`` values are ignored).

    Raises
    ------
    TypeError
        If an argument is not an array of a supported library, if the arrays come from
        different libraries, or if they live on different devices. The message names the
        arguments.
    """
    libs: dict[str, str] = {}
    for arg, x in arrays.items():
        if x is None:
            continue
        lib = _library_of(x)
        if lib is None:
            raise TypeError(
                f"{arg} must be a NumPy, PyTorch, JAX or CuPy array, got {type(x).__name__}"
            )
        libs[arg] = lib
    if not libs:
        raise TypeError(f"at least one of {', '.join(arrays)} must be an array")
    if len(set(libs.values())) > 1:
        desc = ", ".join(f"{k} is {v}" for k, v in libs.items())
        raise TypeError(f"all arrays must come from the same library ({desc})")
    lib = next(iter(libs.values()))
    ext = extras(lib)
    devices = {}
    for arg in libs:
        x = arrays[arg]
        if not ext.is_tracer(x):
            devices[arg] = ext.device_of(x)
    if len(set(map(str, devices.values()))) > 1:
        desc = ", ".join(f"{k} on {v}" for k, v in devices.items())
        raise TypeError(f"all arrays must be on the same device ({desc})")
    xp = array_api_compat.array_namespace(*[arrays[k] for k in libs])
    return xp, ext


class _Impl(NamedTuple):
    name: str
    accepts: Callable[..., bool]
    fn: Callable[..., Any]
    auto: Callable[..., bool] | None


_REGISTRY: dict[str, list[_Impl]] = {}


def register(op: str, name: str, accepts: Callable[..., bool],
             auto: Callable[..., bool] | None = None):
    """Decorator: register ``fn`` as implementation ``name`` of operation ``op``.

    ``accepts(**problem)`` says whether the implementation can take this problem (library,
    device, sizes, options); it must be cheap and must not sync with the device. ``auto``,
    when given, must also hold for ``backend="auto"`` to choose it (e.g. a kernel that runs
    in Triton's interpreter on request, but is only worth choosing on a GPU).
    """

    def deco(fn):
        impls = _REGISTRY.setdefault(op, [])
        impls[:] = [i for i in impls if i.name != name]
        impls.append(_Impl(name, accepts, fn, auto))
        return fn

    return deco


def registered(op: str) -> list[str]:
    """Names of the implementations registered for ``op``, in priority order."""
    return [i.name for i in _REGISTRY.get(op, [])]


def pick(op: str, backend: str, generic: Callable[..., Any], **problem: Any):
    """Choose the implementation of ``op`` for this problem.

    ``backend="auto"`` takes the first registered implementation that accepts the problem and
    falls back quietly to ``generic``; ``backend="generic"`` forces it; any other name must be
    registered and accept the problem, else ``ValueError``.
    """
    if backend == "generic":
        return generic
    impls = _REGISTRY.get(op, [])
    if backend == "auto":
        for impl in impls:
            if impl.accepts(**problem) and (impl.auto is None or impl.auto(**problem)):
                return impl.fn
        return generic
    for impl in impls:
        if impl.name == backend:
            if not impl.accepts(**problem):
                raise ValueError(f"backend={backend!r} cannot solve this problem for {op}")
            return impl.fn
    valid = ["auto", "generic", *[i.name for i in impls]]
    raise ValueError(f"unknown backend {backend!r} for {op}; valid: {valid}")
