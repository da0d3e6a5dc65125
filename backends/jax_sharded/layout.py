"""Where the points live: the device mesh, the mesh axes that split the points, and checks.

Point clouds are split along their first axis (the points) over one or more mesh axes; the
feature axis is never split. A cloud given on one device is spread over every device of its
platform.
"""
from __future__ import annotations

import math
from typing import Any, NamedTuple

import numpy as np


class Layout(NamedTuple):
    """A mesh and the names of the axes that split the points (hashable: a jit static)."""

    mesh: Any
    axes: tuple[str, ...]

    @property
    def size(self) -> int:
        """How many shards the points are split into."""
        return math.prod(self.mesh.shape[a] for a in self.axes)

    def spec(self, ndim: int):
        """PartitionSpec of an array whose first axis holds points."""
        from jax.sharding import PartitionSpec as P

        return P(self.axes, *([None] * (ndim - 1)))

    def place(self, x: Any) -> Any:
        """``x`` on the mesh, split along its first axis."""
        import jax
        from jax.sharding import NamedSharding

        return jax.device_put(x, NamedSharding(self.mesh, self.spec(x.ndim)))


def _axes_of(entry: Any) -> tuple[str, ...]:
    if entry is None:
        return ()
    return tuple(entry) if isinstance(entry, (tuple, list)) else (entry,)


def layout_of(x: Any, mesh: Any = None) -> Layout:
    """The layout to solve on: ``mesh`` (all of its axes split the points), else the one
    ``x`` is already sharded with, else a 1-D mesh ``("points",)`` over every device of
    ``x``'s platform.

    Raises
    ------
    ValueError
        If ``x`` is split along its feature axis, or ``mesh`` is not a ``jax.sharding.Mesh``.
    """
    import jax
    from jax.sharding import Mesh, NamedSharding

    if mesh is not None:
        if not isinstance(mesh, Mesh):
            raise ValueError(f"mesh must be a jax.sharding.Mesh, got {type(mesh).__name__}")
        return Layout(mesh, tuple(mesh.axis_names))
    sharding = getattr(x, "sharding", None)
    if isinstance(sharding, NamedSharding) and len(sharding.device_set) > 1:
        spec = tuple(sharding.spec) + (None,) * (x.ndim - len(sharding.spec))
        if any(e is not None for e in spec[1:]):
            raise ValueError(
                f"x is sharded along its feature axis ({sharding.spec}); shard the points "
                "(PartitionSpec(axis, None)) instead")
        axes = _axes_of(spec[0]) or tuple(sharding.mesh.axis_names)
        return Layout(sharding.mesh, axes)
    platform = next(iter(x.devices())).platform if hasattr(x, "devices") else None
    devices = jax.devices(platform) if platform else jax.devices()
    return Layout(Mesh(np.array(devices), ("points",)), ("points",))


def check(layout: Layout, **clouds: Any) -> None:
    """Each cloud splits evenly over the layout's shards.

    Raises
    ------
    ValueError
        Naming the cloud, its number of points and the mesh axes that do not divide it.
    """
    for name, x in clouds.items():
        if x.shape[0] % layout.size:
            raise ValueError(
                f"{name} has {x.shape[0]} points, which the {layout.size} shards of mesh "
                f"axes {layout.axes} {dict(layout.mesh.shape)} do not divide evenly; pad "
                "with zero-weight points or pick a mesh that divides it")


def shard_map(fn: Any, layout: Layout, in_specs: Any, out_specs: Any) -> Any:
    """``jax.shard_map`` (``jax.experimental.shard_map`` before JAX 0.6), unchecked
    replication: the loop's collectives make values equal across shards by construction."""
    import jax

    sm = getattr(jax, "shard_map", None)
    if sm is None:
        from jax.experimental.shard_map import shard_map as sm
    try:
        return sm(fn, mesh=layout.mesh, in_specs=in_specs, out_specs=out_specs,
                  check_vma=False)
    except TypeError:
        return sm(fn, mesh=layout.mesh, in_specs=in_specs, out_specs=out_specs,
                  check_rep=False)
