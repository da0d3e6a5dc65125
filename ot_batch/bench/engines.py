"""How each engine solves a :class:`~ot_batch.bench.workloads.Problem`.

An engine has an untimed ``prepare`` (conversions, device transfers), a timed ``run`` and an
untimed ``summarize`` that turns its raw result into an :class:`Output`. ``kind="loop"``
engines solve one problem at a time, so the runner may time them on the first problems only
and scale.

Each suite owns a registry of engines (the ``batch`` suite's ``ot_batch`` runs on torch, the
``cpu`` suite's on NumPy). This module holds the ``cpu`` suite's, :data:`ENGINES`; the
``batch`` suite's are in :mod:`ot_batch.bench.device_engines`.

Adding an engine: subclass :class:`Engine`, implement ``run`` and ``summarize`` (and
``available`` when it needs an optional package), and add an instance to its suite's registry.
"""
from __future__ import annotations

import importlib.util
import warnings
from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np

from .workloads import Problem

__all__ = ["Output", "Engine", "ENGINES", "get"]


@dataclass
class Output:
    """What the runner compares across engines, as NumPy arrays over the problems solved.

    ``n_iter``: iterations each problem ran (one value repeated when the engine stops the
    whole batch at once); None when the engine cannot tell. ``converged``: None when unknown.
    """

    value_linear: np.ndarray
    n_iter: np.ndarray | None = None
    converged: np.ndarray | None = None


class Engine:
    """Base class; see the module docstring."""

    name = ""
    kind = "batch"  # or "loop"
    description = ""
    # Warm up on the full problem (GPU engines: kernels compile / autotune per shape) rather
    # than on its first few problems.
    warmup_full = False
    # False when ``value_linear`` is some other value (verification skips it) and the engine
    # runs its own iteration schedule (no time per iteration).
    comparable = True

    def available(self) -> str | None:
        """None when the engine can run here, else the reason it cannot."""
        return None

    def device(self) -> str:
        """Where the engine runs ("cpu", "cuda", "gpu")."""
        return "cpu"

    def prepare(self, pb: Problem) -> Any:
        return pb

    def run(self, data: Any) -> Any:
        raise NotImplementedError

    def sync(self) -> None:
        """Wait for queued device work (GPU engines)."""

    def summarize(self, raw: Any, data: Any) -> Output:
        raise NotImplementedError

    def iterations(self, pb: Problem) -> np.ndarray | None:
        """Iteration counts from an untimed extra pass, when ``summarize`` cannot give them."""
        return None


def _needs(module: str) -> str | None:
    if importlib.util.find_spec(module) is None:
        return f"{module} is not installed"
    return None


class OtBatch(Engine):
    name = "ot_batch"
    description = "ot_batch.solve_batch, NumPy float64, method='log_sinkhorn'"
    backend = "auto"  # whatever fast path the registry picks

    def run(self, pb: Problem) -> Any:
        import ot_batch

        return ot_batch.solve_batch(pb.M, reg=pb.reg, a=pb.a, b=pb.b, max_iter=pb.max_iter,
                                    tol=pb.tol, method="log_sinkhorn", reg_type="entropy",
                                    backend=self.backend)

    def summarize(self, res: Any, pb: Problem) -> Output:
        return Output(np.asarray(res.value_linear), np.asarray(res.log["n_iter"]),
                      np.asarray(res.log["converged"]))


class OtBatchGeneric(OtBatch):
    name = "ot_batch_generic"
    description = "ot_batch.solve_batch with backend='generic' (no fast path)"
    backend = "generic"


class PotBatch(Engine):
    name = "pot_batch"
    description = "POT ot.batch.solve_batch, NumPy float64, method='log_sinkhorn'"

    def available(self) -> str | None:
        return _needs("ot")

    def run(self, pb: Problem) -> Any:
        import ot

        return ot.batch.solve_batch(M=pb.M, reg=pb.reg, a=pb.a, b=pb.b, max_iter=pb.max_iter,
                                    tol=pb.tol, method="log_sinkhorn", reg_type="entropy")

    def summarize(self, res: Any, pb: Problem) -> Output:
        # POT logs the 0-based index of its last iteration, the same for the whole batch.
        n_iter = np.full(pb.batch, int(res.log["n_iter"]) + 1)
        return Output(np.asarray(res.value_linear), n_iter, None)


class PotLoop(Engine):
    name = "pot_loop"
    kind = "loop"
    description = "Python loop of POT ot.solve(..., method='sinkhorn_log')"

    def available(self) -> str | None:
        return _needs("ot")

    def run(self, pb: Problem) -> Any:
        import ot

        out = []
        with warnings.catch_warnings():  # tol=0 runs: "Sinkhorn did not converge"
            warnings.simplefilter("ignore")
            for i in range(pb.batch):
                out.append(ot.solve(pb.M[i], None if pb.a is None else pb.a[i],
                                    None if pb.b is None else pb.b[i], reg=pb.reg,
                                    reg_type="entropy", method="sinkhorn_log",
                                    max_iter=pb.max_iter, tol=pb.tol))
        return out

    def summarize(self, res: Any, pb: Problem) -> Output:
        return Output(np.array([float(r.value_linear) for r in res]))

    def iterations(self, pb: Problem) -> np.ndarray:
        """``ot.solve`` drops the log; rerun the function it calls, which keeps it."""
        import ot

        n_iter = np.empty(pb.batch, dtype=np.int64)
        n, m = pb.M.shape[1:]
        for i in range(pb.batch):
            a = np.full(n, 1.0 / n) if pb.a is None else pb.a[i]
            b = np.full(m, 1.0 / m) if pb.b is None else pb.b[i]
            _, log = ot.bregman.sinkhorn_log(a, b, pb.M[i], pb.reg, numItermax=pb.max_iter,
                                             stopThr=pb.tol, log=True, warn=False)
            n_iter[i] = log["niter"] + 1  # 0-based index of the last iteration
        return n_iter


ENGINES: dict[str, Engine] = {
    e.name: e for e in (OtBatch(), OtBatchGeneric(), PotBatch(), PotLoop())}


def get(name: str, registry: Mapping[str, Engine] | None = None) -> Engine:
    """The engine called ``name`` in ``registry`` (the ``cpu`` suite's when None)."""
    registry = ENGINES if registry is None else registry
    try:
        return registry[name]
    except KeyError:
        raise ValueError(f"unknown engine {name!r}; known: {', '.join(registry)}") from None
