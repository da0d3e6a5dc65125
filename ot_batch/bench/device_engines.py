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
``ot_batch_points_tf32``
    The same with ``precision="tf32"`` (one TF32 tensor-core product per ``x . y``).
``pot_batch_torch``
    POT's ``ot.batch.solve_batch(M, method="log_sinkhorn", grad="detach")``.
``ott_vmap``
    OTT-JAX, ``jax.jit(jax.vmap(one))`` over the problems, as ``peers_batch.py`` calls it.
``flash_sinkhorn_loop``
    FlashSinkhorn in a Python loop, one call per problem:
    ``flash_sinkhorn.SamplesLoss("sinkhorn", p=2, backend="alternating",
    use_epsilon_scaling=False, eps=reg, n_iters=max_iter, potentials=True, debias=False,
    normalize=False, half_cost=False, allow_tf32=False)(a, x, b, y)`` on the ``1/sqrt(d)``
    points (its cost ``|x - y|^2`` is then ``M``). Its alternating iteration is POT's (f from
    g = 0, then g), so ``value_linear``, the cost of the plan of the returned potentials
    (formed outside the timed call), is comparable. CUDA only.
``geomloss``
    GeomLoss ``SamplesLoss("sinkhorn", p=2, blur=sqrt(reg), scaling=0.9, debias=False,
    backend="tensorized")``. It runs its own epsilon-scaling schedule and returns the dual
    objective, so it is not ``comparable``: its total time is reported, not a time per
    iteration, and its value is not verified.
``geomloss_keops``
    The same with ``backend="online"`` (KeOps; needs ``pykeops``, which compiles each formula
    at first use, in the untimed warm-up).

Every solve runs ``tol=0`` for exactly ``max_iter`` iterations. The torch engines run on CUDA
when ``torch.cuda.is_available()``, else on the CPU (``flash_sinkhorn_loop`` is then skipped);
OTT-JAX runs on JAX's default device. A peer whose library fails (a KeOps or Triton build, an
out-of-memory error) is reported as skipped, with the error, and the suite goes on.
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
from .large_engines import _brief, _preload_cuda_libs
from .runner import Skip
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
    cuda_only = False  # True: the library takes CUDA tensors only

    def available(self) -> str | None:
        for module in self.requires:
            reason = _needs(module)
            if reason is not None:
                return reason
        if self.cuda_only:
            import torch

            if not torch.cuda.is_available():
                return "needs a CUDA device"
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
    precision = "float32"

    def run(self, data: Prepared) -> Any:
        import ot_batch

        pb = data.pb
        X, Y = data.args
        return ot_batch.solve_sample_batch(X, Y, reg=pb.reg, metric="sqeuclidean",
                                           max_iter=pb.max_iter, tol=pb.tol,
                                           method="log_sinkhorn", grad="detach", backend="auto",
                                           precision=self.precision)


class OtBatchPointsTF32(OtBatchPoints):
    name = "ot_batch_points_tf32"
    description = "ot_batch_points with precision='tf32' (one TF32 product per x . y)"
    precision = "tf32"


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


def _guarded(fn: Callable[..., Any], *args: Any) -> Any:
    """``fn(*args)``; a failure of a peer's library becomes :class:`~ot_batch.bench.runner.Skip`.

    A KeOps or Triton build that fails, or an out-of-memory error, then skips the case with
    the error instead of ending the suite.
    """
    try:
        return fn(*args)
    except Exception as exc:
        raise Skip(f"failed: {_brief(exc)}") from None


def _plan_value(f: np.ndarray, g: np.ndarray, M: np.ndarray, reg: float) -> float:
    """``<P, M>`` of the plan of potentials in GeomLoss's convention, uniform weights, float64.

    Parameters
    ----------
    f, g : ndarray, shapes (n,) and (m,)
        Potentials with the weights kept apart (FlashSinkhorn's and GeomLoss's default):
        ``P_ij = a_i b_j exp((f_i + g_j - M_ij) / reg)``, ``a = 1/n``, ``b = 1/m``.
    M : ndarray, shape (n, m)
        The cost the potentials were computed for.
    reg : float
        The regularization (epsilon).

    Returns
    -------
    float
        ``sum_ij P_ij M_ij``, the ``value_linear`` of POT and ot_batch.
    """
    f, g, M = (np.asarray(t, dtype=np.float64) for t in (f, g, M))
    n, m = M.shape
    P = np.exp((f[:, None] + g[None, :] - M) / reg) / (n * m)
    return float(np.sum(P * M))


class FlashSinkhornLoop(TorchEngine):
    """FlashSinkhorn's alternating solver, one call per problem, at the suite's settings.

    Each call is ``SamplesLoss(backend="alternating", use_epsilon_scaling=False, eps=reg,
    n_iters=max_iter, potentials=True, ...)(a, x, b, y)``: exactly ``max_iter`` iterations at
    ``reg`` (no threshold, so no early stop), each an f-update from g, then a g-update from the
    new f, from f = g = 0 (``sinkhorn_flashstyle_alternating``, its fused kernels). These are
    POT's ``ot.batch`` iterates (u from v = 0, then v): with uniform ``b``, g = 0 and POT's
    v = 0 differ by a constant, which the first f-update absorbs. It returns the potentials
    (``potentials=False`` would return the dual objective, not ``value_linear``), so the value
    is the cost of their plan, :func:`_plan_value` of the suite's ``M``, outside the timed
    call: the engine is ``comparable``. ``half_cost=False``: its cost is ``|x - y|^2``, which
    is ``M`` for the suite's ``1/sqrt(d)`` points. ``allow_tf32=False``: float32 products, as
    the suite's other engines (TF32 would also round the coordinates to 10-bit mantissas, far
    beyond the 1e-5 the values are verified to). It centres each pair of clouds first (the
    cost does not change). CUDA only: without CUDA the engine is unavailable.
    """

    name = "flash_sinkhorn_loop"
    kind = "loop"
    description = ("Python loop of flash_sinkhorn.SamplesLoss(backend='alternating', "
                   "use_epsilon_scaling=False, eps=reg, n_iters=max_iter, potentials=True, "
                   "allow_tf32=False), value_linear from the potentials' plan")
    points = True
    requires = ("torch", "flash_sinkhorn")
    cuda_only = True  # flash_sinkhorn.SamplesLoss requires CUDA tensors

    @staticmethod
    def loss(reg: float, max_iter: int) -> Any:
        """The ``flash_sinkhorn.SamplesLoss`` each problem is solved with."""
        from flash_sinkhorn import SamplesLoss

        return SamplesLoss("sinkhorn", p=2, backend="alternating", use_epsilon_scaling=False,
                           eps=reg, n_iters=max_iter, potentials=True, debias=False,
                           normalize=False, half_cost=False, allow_tf32=False, autotune=True)

    def prepare(self, pb: Problem) -> Prepared:
        import torch

        data = super().prepare(pb)
        X, Y = data.args
        # The suite's weights are uniform (Problem.a and .b are None), as for the other engines.
        a = torch.full((X.shape[1],), 1.0 / X.shape[1], dtype=X.dtype, device=X.device)
        b = torch.full((Y.shape[1],), 1.0 / Y.shape[1], dtype=Y.dtype, device=Y.device)
        data.args = (X, Y, a, b)
        data.fn = self.loss(pb.reg, pb.max_iter)
        data.n_iter = pb.max_iter
        self.sync()
        return data

    def run(self, data: Prepared) -> Any:
        return _guarded(self._loop, data)

    @staticmethod
    def _loop(data: Prepared) -> list:
        X, Y, a, b = data.args
        return [data.fn(a, x, b, y) for x, y in zip(X, Y)]  # (f, g) per problem

    def summarize(self, res: Any, data: Prepared) -> Output:
        pb = data.pb
        value = np.array([_plan_value(_numpy(f), _numpy(g), M, pb.reg)
                          for (f, g), M in zip(res, pb.M)])
        return Output(value, np.full(len(res), data.n_iter), None)


class GeomLoss(TorchEngine):
    name = "geomloss"
    description = "GeomLoss SamplesLoss('sinkhorn', backend='tensorized'), eps-scaling"
    points = True
    comparable = False
    requires = ("torch", "geomloss")
    backend = "tensorized"

    def prepare(self, pb: Problem) -> Prepared:
        from geomloss import SamplesLoss

        data = super().prepare(pb)
        # GeomLoss's p=2 cost is |x - y|^2 / 2: scaling the (already 1/sqrt(d)) points by
        # sqrt(2) makes it M, as peers_batch.py's sqrt(2/d) does from the raw points.
        data.args = tuple(math.sqrt(2.0) * a for a in data.args)
        data.fn = SamplesLoss("sinkhorn", p=2, blur=pb.reg ** 0.5, scaling=0.9, debias=False,
                              backend=self.backend)
        self.sync()
        return data

    def run(self, data: Prepared) -> Any:
        return data.fn(*data.args)

    def summarize(self, res: Any, data: Prepared) -> Output:
        return Output(_numpy(res))  # GeomLoss's OT_eps value, not value_linear


class GeomLossKeOps(GeomLoss):
    name = "geomloss_keops"
    description = "GeomLoss SamplesLoss('sinkhorn', backend='online') (KeOps), eps-scaling"
    requires = ("torch", "geomloss", "pykeops")
    backend = "online"

    def prepare(self, pb: Problem) -> Prepared:
        import torch

        if torch.cuda.is_available():
            _preload_cuda_libs()  # KeOps compiles with nvrtc: load it where KeOps finds it
        return super().prepare(pb)

    def run(self, data: Prepared) -> Any:
        # KeOps compiles at the first call (the warm-up): a failed build skips the case.
        return _guarded(super().run, data)


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
    OtBatchTorch(), OtBatchTorchGeneric(), OtBatchPoints(), OtBatchPointsTF32(), PotBatchTorch(),
    OttVmap(),
    FlashSinkhornLoop(), GeomLoss(), GeomLossKeOps())}
