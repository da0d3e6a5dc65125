"""One large OT problem between point clouds spread over many devices (JAX sharding).

:func:`solve_sample` runs OTT-JAX's log-domain Sinkhorn with ``x`` and ``y`` split along their
points over a ``jax.sharding.Mesh``, in one of two modes: the cost kept on the devices (each
holds its rows of it) or recomputed in chunks at each pass while blocks of the other cloud go
round the devices. :func:`ot_batch.solve_sample_batch` takes this path for JAX inputs sharded
over several devices.

Several hosts: start every process with ``jax.distributed.initialize()``, build the global
arrays with ``jax.make_array_from_process_local_data`` (each host passing its own rows of x
and y) on a mesh over ``jax.devices()``, and call :func:`solve_sample` in every process; the
collectives run over all hosts' devices and the outputs are global arrays.
"""
from __future__ import annotations

import os
from typing import Any

from ._validate import choice, nonneg_float, positive_int
from .backends import register
from .backends.jax_sharded.output import ShardedOutput

__all__ = ["ShardedOutput", "shard_points", "solve_sample"]

COSTS = ("sqeuclidean", "negdot")
MODES = ("auto", "kept", "chunked")
# The n_l x chunk tile of the chunked mode (bytes) and the share of a device's free memory
# the kept cost may take (the rest for inputs, potentials and XLA's buffers).
TILE_BYTES = 512 * 2 ** 20
KEPT_SHARE = 0.8
DEFAULT_REG = 0.05  # OTT-JAX's default: 0.05 x the standard deviation of the cost


def shard_points(x: Any, mesh: Any = None) -> Any:
    """Place ``x`` (points first) on ``mesh``, split along its points.

    Parameters
    ----------
    x : jax.Array, shape (n, ...)
    mesh : jax.sharding.Mesh, optional
        All of its axes split the points. Default: a 1-D mesh over every device.

    Examples
    --------
    >>> import jax.numpy as jnp
    >>> from ot_batch import sharded
    >>> sharded.shard_points(jnp.ones((8, 3))).shape
    (8, 3)
    """
    from .backends.jax_sharded import layout

    lay = layout.layout_of(x, mesh)
    layout.check(lay, x=x)
    return lay.place(x)


def _free_bytes(device: Any) -> float:
    stats = None
    try:
        stats = device.memory_stats()
    except Exception:  # noqa: BLE001 - some platforms do not implement it
        pass
    if stats and "bytes_limit" in stats:
        return float(stats["bytes_limit"] - stats.get("bytes_in_use", 0))
    try:  # host devices share the machine's memory
        import jax

        share = max(1, len(jax.local_devices(backend=device.platform)))
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES") / share
    except (ValueError, OSError, AttributeError):
        return 2.0 ** 30


def _mode(mode: str, lay: Any, n: int, m: int, itemsize: int) -> str:
    if mode != "auto":
        return mode
    need = itemsize * (n // lay.size) * m
    free = min(_free_bytes(d) for d in lay.mesh.devices.flat)
    return "kept" if need <= KEPT_SHARE * free else "chunked"


def _chunk(chunk: Any, lay: Any, n: int, m: int, itemsize: int) -> int:
    if chunk is not None:
        return positive_int("chunk", chunk)
    rows = max(n, m) // lay.size
    c = max(128, TILE_BYTES // (itemsize * rows))
    return min(c - c % 128, max(1, min(n, m) // lay.size))


def _precision(precision: Any, mode: str, dtype: Any) -> Any:
    import jax
    import numpy as np

    if precision is None:
        if mode != "kept":
            return None
        # Built once, so float32-accurate products: three bf16 passes on tensor cores (JAX's
        # Precision.HIGH is TF32 on GPUs); other dtypes in full precision.
        preset = getattr(jax.lax, "DotAlgorithmPreset", None)
        if preset is not None and np.dtype(dtype) == np.float32:
            return preset.BF16_BF16_F32_X3
        return jax.lax.Precision.HIGHEST
    if isinstance(precision, jax.lax.Precision):
        return precision
    names = ("default", "high", "highest")
    return jax.lax.Precision[choice("precision", precision, names).upper()]


def _vector(arg: str, v: Any, n: int, dtype: Any, lay: Any) -> Any:
    import jax.numpy as jnp

    if v is None:
        return lay.place(jnp.full((n,), 1.0 / n, dtype))
    if getattr(v, "shape", None) != (n,):
        raise ValueError(f"{arg} must have shape ({n},), got {getattr(v, 'shape', type(v))}")
    return lay.place(jnp.asarray(v, dtype))


def _check_clouds(x: Any, y: Any) -> None:
    import jax
    import jax.numpy as jnp

    for arg, v in (("x", x), ("y", y)):
        if not isinstance(v, jax.Array):
            raise TypeError(f"{arg} must be a jax.Array of shape (n, d), got {type(v).__name__}")
        if v.ndim != 2:
            raise ValueError(f"{arg} must have shape (n, d), got shape {v.shape}")
        if not jnp.issubdtype(v.dtype, jnp.floating):
            raise TypeError(f"{arg} must be a floating-point array, got {v.dtype}")
    if x.shape[1] != y.shape[1] or x.dtype != y.dtype:
        raise ValueError(f"x and y must agree in d and dtype, got {x.shape} {x.dtype} and "
                         f"{y.shape} {y.dtype}")


def solve_sample(x: Any, y: Any, reg: float | None = None, a: Any = None, b: Any = None, *,
                 cost: str = "sqeuclidean", relative_reg: str | None = None, mesh: Any = None,
                 mode: str = "auto", chunk: int | None = None, max_iter: int = 2000,
                 tol: float = 1e-3, init: tuple[Any, Any] | None = None,
                 precision: Any = None) -> ShardedOutput:
    """Entropic OT between two large point clouds split over the devices of a mesh.

    Solves ``min <P, C> + epsilon KL(P | a b^T)`` with OTT-JAX's log-domain Sinkhorn (same
    fixed point, potentials and outputs as ``ott.solvers.linear.solve`` on a ``PointCloud``).
    No device ever holds the n x m cost, nor, in the chunked mode, all of x or y.

    Parameters
    ----------
    x, y : jax.Array, shapes (n, d) and (m, d)
        The clouds; already sharded along their points, or placed on ``mesh`` here.
    reg : float, optional
        Epsilon; relative to the cost's std or mean with ``relative_reg``. Default: 0.05
        times the cost's standard deviation (OTT-JAX's default).
    a, b : jax.Array, optional
        Weights (n,) and (m,), equal total mass; uniform by default.
    cost : {'sqeuclidean', 'negdot'}, default 'sqeuclidean'
        ``|x - y|^2`` or ``-<x, y>``.
    relative_reg : {None, 'std', 'mean'}, default None
        Multiply ``reg`` by the standard deviation or the mean of all n x m costs, computed in
        closed form from the points (d x d Gram matrices), uniform weights, as OTT-JAX's
        ``relative_epsilon``.
    mesh : jax.sharding.Mesh, optional
        All of its axes split the points. Default: the mesh x is sharded on, else a 1-D mesh
        over every device. The number of shards must divide n and m.
    mode : {'auto', 'kept', 'chunked'}, default 'auto'
        'kept': each device computes its n/P x m rows of the cost once and keeps them (two
        reads of memory per iteration). 'chunked': recompute the cost in chunks at every pass
        (a matmul per chunk; O((n + m) d / P) memory per device). 'auto' keeps the cost when
        its rows take under 80% of every device's free memory.
    chunk : int, optional
        Points of the other cloud per tile in the chunked mode (default: a 512 MB tile).
    max_iter : int, default 2000
    tol : float, default 1e-3
        Stop when the L1 distance of P's column sums to b is under ``tol`` (checked at every
        iteration, at no extra cost).
    init : (f, g), optional
        Warm start, e.g. the potentials of the previous epsilon in a decreasing grid.
    precision : {None, 'default', 'high', 'highest'}, optional
        Matmul precision of the cost. None: float32-accurate products (three bf16 passes for
        float32 clouds) in the kept mode, where the cost is built once, and JAX's default
        (TF32 on recent NVIDIA GPUs) in the chunked mode, where it is recomputed at every
        pass. At small epsilon TF32's
        rounding of the costs (about 1e-3 of ``|x| |y|``) shows in the plan.
        Coordinates are centred first, so the products are small and rounding errors too.

    Returns
    -------
    ShardedOutput

    Raises
    ------
    ValueError
        A mesh whose shards do not divide n or m, x split along its features, or bad options.

    Examples
    --------
    >>> import jax, jax.numpy as jnp
    >>> from ot_batch import sharded
    >>> x = jax.random.normal(jax.random.key(0), (64, 3))
    >>> out = sharded.solve_sample(x, x + 1.0, reg=0.1, relative_reg="std", cost="negdot")
    >>> bool(out.converged), out.diag.shape
    (True, (64,))
    """
    from .backends.jax_sharded import layout, sinkhorn

    _check_clouds(x, y)
    cost = choice("cost", cost, COSTS)
    mode = choice("mode", mode, MODES)
    if relative_reg is not None:
        relative_reg = choice("relative_reg", relative_reg, ("std", "mean"))
    if reg is None:
        reg, relative_reg = DEFAULT_REG, relative_reg or "std"
    reg = nonneg_float("reg", reg, strict=True)
    max_iter = positive_int("max_iter", max_iter)
    tol = nonneg_float("tol", tol, strict=True)
    lay = layout.layout_of(x, mesh)
    layout.check(lay, x=x, y=y)
    n, m = x.shape[0], y.shape[0]
    x, y = lay.place(x), lay.place(y)
    a, b = _vector("a", a, n, x.dtype, lay), _vector("b", b, m, x.dtype, lay)
    f0 = g0 = None
    if init is not None:
        if not isinstance(init, (tuple, list)) or len(init) != 2:
            raise ValueError("init must be a pair (f, g) of potentials")
        f0 = _vector("init[0]", init[0], n, x.dtype, lay)
        g0 = _vector("init[1]", init[1], m, x.dtype, lay)
    _check_weights(a, b)
    item = x.dtype.itemsize
    mode = _mode(mode, lay, n, m, item)
    cfg = sinkhorn.Config(lay, mode, _chunk(chunk, lay, n, m, item), max_iter, tol,
                          _precision(precision, mode, x.dtype), 0.0)
    sol = sinkhorn._solve(x, y, a, b, f0, g0, reg, cfg=cfg, cost=cost, relative=relative_reg)
    return ShardedOutput(*sol, mode=cfg.mode)


def _check_weights(a: Any, b: Any) -> None:
    import jax.numpy as jnp

    for arg, w in (("a", a), ("b", b)):
        if bool(jnp.any(w < 0)) or not bool(jnp.all(jnp.isfinite(w))):
            raise ValueError(f"{arg} must hold finite non-negative weights")
    sa, sb = float(jnp.sum(a)), float(jnp.sum(b))
    if abs(sa - sb) > 1e-5 * max(abs(sa), abs(sb)):
        raise ValueError(f"a and b must have the same total mass, got {sa} and {sb}")


def _takes(problem: Any) -> bool:
    """``solve_sample_batch`` on JAX clouds sharded over several devices, a Sinkhorn method
    and a cost this path computes (and no gradient through the iterations)."""
    pb = problem.linear
    if pb.ext.name != "jax" or pb.ext.is_tracer(problem.X):
        return False
    sharding = getattr(problem.X, "sharding", None)
    return (sharding is not None and len(sharding.device_set) > 1
            and problem.metric in COSTS and pb.method in ("sinkhorn", "log_sinkhorn")
            and pb.unbalanced is None and pb.grad in ("envelope", "detach"))


@register("solve_sample_batch", "jax_sharded", accepts=_takes)
def _solve_sample_batch(sp: Any) -> Any:
    """POT's ``solve_sample_batch`` through :func:`solve_sample`, one problem at a time (each
    spread over the whole mesh). Values as the generic solver forms them; no dense plan
    (``res.plan`` is None; ``res.lazy_plan`` forms the plans of the problems it is indexed
    with). ``tol`` bounds the L1 error of the column sums."""
    import jax.numpy as jnp

    from .linear import _kl_shift, _values_from_stats
    from .result import LazyPlan, OTResult, status_of

    pb = sp.linear
    outs = []
    for i in range(sp.X.shape[0]):
        init = None
        if pb.potentials_init is not None:
            init = tuple(pb.reg * u[i] for u in pb.potentials_init)
        outs.append(solve_sample(sp.X[i], sp.Y[i], pb.reg, pb.a[i], pb.b[i], cost=sp.metric,
                                 max_iter=pb.max_iter, tol=pb.tol, init=init))

    def stack(name):
        return jnp.stack([getattr(o, name) for o in outs])

    f, g, lin = stack("f"), stack("g"), stack("primal_cost")
    rows, cols = stack("rowsum"), stack("colsum")
    value, lin = _values_from_stats(pb, lin, -stack("entropy"), rows, cols, (f, g))
    converged = stack("converged")
    log = {"n_iter": stack("n_iter"), "converged": converged,
           "err": jnp.stack([o.errors[o.n_iter] for o in outs])}
    lazy = LazyPlan(sp.X, sp.Y, sp.metric, sp.p, f / pb.reg, g / pb.reg, pb.reg, _kl_shift(pb))
    return OTResult(potentials=(f / pb.reg, g / pb.reg), value=value, value_linear=lin,
                    plan=None, log=log, backend=pb.xp, lazy_plan=lazy,
                    status=status_of(converged, pb.ext.to_numpy))
