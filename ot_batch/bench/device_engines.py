"""The ``batch`` suite's engines: float32 on the GPU when there is one, else on the CPU.

Each engine solves a :class:`~ot_batch.bench.workloads.Problem` from
:mod:`ot_batch.bench.batch_workloads` (float32 costs and the point clouds they come from):

``ot_batch``
    ``ot_batch.solve_batch(M, method="log_sinkhorn", backend="auto", grad="detach")``.
``ot_batch_generic``
    The same with ``backend="generic"`` (array operations, no fast path).
``ot_batch_points``
    ``ot_batch.solve_sample_batch(X, Y, metric="sqeuclidean", ...)`` from the point clouds
    scaled by ``1/sqrt(d)``, so that its costs are ``M``.
``pot_batch_torch``
    POT's ``ot.batch.solve_batch(M, method="log_sinkhorn", grad="detach")``.
``ott_vmap``
    OTT-JAX, ``jax.jit(jax.vmap(one))`` over the problems, as ``peers_batch.py`` calls it.
``geomloss``
    GeomLoss ``SamplesLoss("sinkhorn", p=2, blur=sqrt(reg), scaling=0.9, debias=False,
    backend="tensorized")``. It runs its own epsilon-scaling schedule and returns the dual
    objective, so it is not ``comparable``: its total time is reported, not a time per
    iteration, and its value is not verified.

Every solve runs ``tol=0`` for exactly ``max_iter`` iterations. The torch engines run on CUDA
when ``torch.cuda.is_available()``, else on the CPU; OTT-JAX runs on JAX's default device.
Copies to the device happen in the untimed ``prepare``; ``sync`` (torch) or
``block_until_ready`` (JAX) makes the timed run include the queued device work.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from .engines import Engine, Output, _needs
from .workloads import Problem

__all__ = ["Prepared", "TorchEngine", "BATCH_ENGINES"]


@dataclass
class Prepared:
    """A problem and its arrays on the engine's device (``args``: what ``run`` passes on)."""

    pb: Problem
    args: tuple
    fn: Callable[..., Any] | None = None  # a compiled solver (OTT-JAX), kept for the timed runs
    n_iter: int | None = None  # iterations the solver will run, when known beforehand


def _numpy(x: Any) -> np.ndarray:
    """float64 NumPy copy of a torch tensor or array."""
    if hasattr(x, "detach"):
        x = x.detach().cpu()
    return np.asarray(x, dtype=np.float64)


class TorchEngine(Engine):
    """Base of the engines that take torch float32 tensors on ``cuda`` (else ``cpu``)."""

    # Triton kernels and cuBLAS pick configurations per shape: warm up on the full batch.
    warmup_full = True
    points = False  # True: ``run`` gets the point clouds, else the cost tensor
    requires: tuple[str, ...] = ("torch",)

    def available(self) -> str | None:
        for module in self.requires:
            reason = _needs(module)
            if reason is not None:
                return reason
        return None

    def device(self) -> str:
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"

    def sync(self) -> None:
        import torch

        if torch.cuda.is_available():
            torch.cuda.synchronize()

    def prepare(self, pb: Problem) -> Prepared:
        import torch

        if self.points and (pb.X is None or pb.Y is None):
            raise ValueError(f"{self.name} needs a workload with point clouds")
        arrays = (pb.X, pb.Y) if self.points else (pb.M,)
        args = tuple(torch.as_tensor(a, dtype=torch.float32, device=self.device())
                     for a in arrays)
        self.sync()
        return Prepared(pb, args)

    def summarize(self, res: Any, data: Prepared) -> Output:
        return Output(_numpy(res.value_linear), _numpy(res.log["n_iter"]).astype(np.int64),
                      _numpy(res.log["converged"]).astype(bool))


class OtBatchTorch(TorchEngine):
    name = "ot_batch"
    description = "ot_batch.solve_batch from the cost tensor, backend='auto'"
    backend = "auto"

    def run(self, data: Prepared) -> Any:
        import ot_batch

        pb = data.pb
        return ot_batch.solve_batch(data.args[0], reg=pb.reg, max_iter=pb.max_iter, tol=pb.tol,
                                    method="log_sinkhorn", grad="detach", backend=self.backend)


class OtBatchTorchGeneric(OtBatchTorch):
    name = "ot_batch_generic"
    description = "ot_batch.solve_batch from the cost tensor, backend='generic'"
    backend = "generic"


class OtBatchPoints(TorchEngine):
    name = "ot_batch_points"
    description = "ot_batch.solve_sample_batch from the point clouds, metric='sqeuclidean'"
    points = True

    def run(self, data: Prepared) -> Any:
        import ot_batch

        pb = data.pb
        X, Y = data.args
        return ot_batch.solve_sample_batch(X, Y, reg=pb.reg, metric="sqeuclidean",
                                           max_iter=pb.max_iter, tol=pb.tol,
                                           method="log_sinkhorn", grad="detach", backend="auto")


class PotBatchTorch(TorchEngine):
    name = "pot_batch_torch"
    description = "POT ot.batch.solve_batch from the cost tensor, torch"
    requires = ("torch", "ot")

    def run(self, data: Prepared) -> Any:
        import ot

        pb = data.pb
        return ot.batch.solve_batch(data.args[0], reg=pb.reg, max_iter=pb.max_iter, tol=0.0,
                                    method="log_sinkhorn", grad="detach")

    def summarize(self, res: Any, data: Prepared) -> Output:
        # POT logs the 0-based index of its last iteration, the same for the whole batch.
        n_iter = np.full(data.pb.batch, int(res.log["n_iter"]) + 1)
        return Output(_numpy(res.value_linear), n_iter, None)


class GeomLoss(TorchEngine):
    name = "geomloss"
    description = "GeomLoss SamplesLoss('sinkhorn', backend='tensorized'), eps-scaling"
    points = True
    comparable = False
    requires = ("torch", "geomloss")

    def prepare(self, pb: Problem) -> Prepared:
        from geomloss import SamplesLoss

        data = super().prepare(pb)
        # GeomLoss's p=2 cost is |x - y|^2 / 2: scaling the (already 1/sqrt(d)) points by
        # sqrt(2) makes it M, as peers_batch.py's sqrt(2/d) does from the raw points.
        data.args = tuple(math.sqrt(2.0) * a for a in data.args)
        data.fn = SamplesLoss("sinkhorn", p=2, blur=pb.reg ** 0.5, scaling=0.9, debias=False,
                              backend="tensorized")
        self.sync()
        return data

    def run(self, data: Prepared) -> Any:
        return data.fn(*data.args)

    def summarize(self, res: Any, data: Prepared) -> Output:
        return Output(_numpy(res))  # GeomLoss's OT_eps value, not value_linear


def _jax() -> Any:
    """``jax``, set not to take 75% of the GPU up front (the torch engines share the GPU).

    The setting counts only before JAX starts its GPU client (its first device query), so every
    JAX use in this module goes through here; a preallocation already set is left alone.
    """
    os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
    import jax

    return jax


class OttVmap(Engine):
    name = "ott_vmap"
    description = "OTT-JAX Sinkhorn, jax.jit(jax.vmap(...)) over the problems"
    warmup_full = True  # jit compiles per shape

    def available(self) -> str | None:
        return _needs("jax") or _needs("ott")

    def device(self) -> str:
        return _jax().devices()[0].platform

    def prepare(self, pb: Problem) -> Prepared:
        jax = _jax()
        import jax.numpy as jnp
        from ott.geometry import geometry
        from ott.problems.linear import linear_problem
        from ott.solvers.linear import sinkhorn

        reg, iters = pb.reg, pb.max_iter
        solver = sinkhorn.Sinkhorn(min_iterations=iters, max_iterations=iters, threshold=-1.0)

        def one(Mi):
            geom = geometry.Geometry(cost_matrix=Mi, epsilon=reg)
            out = solver(linear_problem.LinearProblem(geom))
            return jnp.sum(out.matrix * Mi)

        M = jax.device_put(jnp.asarray(pb.M, dtype=jnp.float32))
        M.block_until_ready()
        # OTT iterates in blocks of inner_iterations (10) and stops at the last whole block.
        n_iter = iters - iters % solver.inner_iterations
        return Prepared(pb, (M,), jax.jit(jax.vmap(one)), n_iter)

    def run(self, data: Prepared) -> Any:
        return data.fn(*data.args).block_until_ready()

    def summarize(self, res: Any, data: Prepared) -> Output:
        return Output(_numpy(res), np.full(data.pb.batch, data.n_iter), None)


BATCH_ENGINES: dict[str, Engine] = {e.name: e for e in (
    OtBatchTorch(), OtBatchTorchGeneric(), OtBatchPoints(), PotBatchTorch(), OttVmap(),
    GeomLoss())}
