"""The ``exact`` suite's engines: exact OT (``reg=None``) of a batch of cost matrices.

CPU, from NumPy float64 costs:

``ot_batch``
    ``ot_batch.solve_batch(M, reg=None, method="auto", n_threads=T)`` (``ot_batch_simplex``
    and ``ot_batch_assignment`` force ``method="network_simplex"`` / ``"assignment"``).
``emd2_loop``
    A Python loop of POT's ``ot.emd2`` (network simplex, one thread): the reference values.
``lsa_loop``
    A loop of SciPy's ``linear_sum_assignment`` (uniform n == m only).
``lapx_batch``
    lapx's ``lap.lapjvr_batch(M, n_threads=T)`` (uniform n == m only), the fastest of lapx's
    batch solvers here (``lapx_jvx``, ``lapx_jvs``, ``lapx_jvh`` run the others).

CUDA (skipped without a GPU): ``ot_batch_cuda`` / ``ot_batch_cuda32`` (``solve_batch`` on a
torch CUDA tensor, float64 / float32, ``method="auto"``) and ``mdot_tnt`` / ``mdot_tnt_g14``
(``mdot_tnt.solve_OT_batched`` at ``gamma_f = 2**10`` / ``2**14`` in float64; an entropic
solver whose rounded plan's cost is its value). The GPU engines get M already on the device
(copied in the untimed ``prepare``, as a torch user's data would be); ``sync`` waits for the
device. mdot_tnt is a benchmark peer only (non-commercial licence: imported here, never from the
library; install its wheel by hand, ``pip install .whl/mdot_tnt-*.whl``).

T is :func:`cpu_threads` (all cores unless ``--threads`` says otherwise).
"""
from __future__ import annotations

import argparse
import os
from typing import Any

import numpy as np

from .device_engines import Prepared, _numpy
from .engines import Engine, Output, _needs
from .runner import Skip
from .workloads import Problem

__all__ = ["ExactOutput", "cpu_threads", "add_arguments", "configure", "EXACT_ENGINES",
           "DEFAULT"]

_THREADS: int | None = None  # --threads; None: every core


def cpu_threads() -> int:
    """CPU threads the threaded engines (ot_batch on NumPy, lapx) are given."""
    return _THREADS or os.cpu_count() or 1


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The suite's own option: ``--threads``."""
    parser.add_argument("--threads", type=int, default=None, metavar="N",
                        help="CPU threads for ot_batch (n_threads) and lapx (default: all "
                             f"cores, {os.cpu_count()} here); the loops run on one")


def configure(args: argparse.Namespace) -> None:
    """Apply ``--threads`` (every run sets it, so an earlier run's value does not linger)."""
    global _THREADS
    if args.threads is not None and args.threads < 1:
        raise ValueError("--threads must be >= 1")
    _THREADS = args.threads


class ExactOutput(Output):
    """:class:`~ot_batch.bench.engines.Output` plus the duality gap (primal - dual), when the
    engine gives one."""

    def __init__(self, value, n_iter=None, converged=None, gap=None):
        super().__init__(np.asarray(value, dtype=np.float64), n_iter, converged)
        self.gap = None if gap is None else _numpy(gap)


def _uniform_square(pb: Problem, name: str) -> None:
    """Assignment solvers need uniform weights and n == m."""
    n, m = pb.M.shape[1:]
    if pb.a is not None or pb.b is not None or n != m:
        raise Skip(f"{name} solves assignment problems: needs uniform weights and n == m")


def _guarded(call: Any, *args: Any, **kwargs: Any) -> Any:
    """``call(*args, **kwargs)``; an exception becomes :class:`Skip` (the case is reported as
    failed, with its error, and the other cases still run)."""
    try:
        return call(*args, **kwargs)
    except Exception as exc:  # noqa: BLE001 - any failure of a solver under test
        raise Skip(f"failed: {type(exc).__name__}: {exc}") from exc


def _from_result(res: Any) -> ExactOutput:
    log = res.log or {}
    conv = log.get("converged")
    return ExactOutput(_numpy(res.value), None,
                       None if conv is None else _numpy(conv).astype(bool), log.get("gap"))


class OtBatchExact(Engine):
    name = "ot_batch"
    description = "ot_batch.solve_batch(M, reg=None), NumPy float64"
    method = "auto"

    def available(self) -> str | None:
        import inspect

        import ot_batch
        if "n_threads" not in inspect.signature(ot_batch.solve_batch).parameters:
            return "this ot_batch has no exact solver yet (solve_batch lacks n_threads=)"
        return None

    def device(self) -> str:
        return f"cpu, {cpu_threads()} threads"

    def run(self, pb: Problem) -> Any:
        import ot_batch

        return _guarded(ot_batch.solve_batch, pb.M, reg=None, a=pb.a, b=pb.b,
                        method=self.method, n_threads=cpu_threads())

    def summarize(self, res: Any, pb: Problem) -> Output:
        return _from_result(res)


class OtBatchSimplex(OtBatchExact):
    name = "ot_batch_simplex"
    description = "ot_batch.solve_batch(M, reg=None, method='network_simplex'), NumPy"
    method = "network_simplex"


class OtBatchAssignment(OtBatchExact):
    name = "ot_batch_assignment"
    description = "ot_batch.solve_batch(M, reg=None, method='assignment'), NumPy"
    method = "assignment"


class Emd2Loop(Engine):
    name = "emd2_loop"
    kind = "loop"
    description = "Python loop of POT ot.emd2 (network simplex, 1 thread)"

    def available(self) -> str | None:
        return _needs("ot")

    def device(self) -> str:
        return "cpu, 1 thread"

    def run(self, pb: Problem) -> Any:
        import ot

        # numItermax well above the default (1e5): the reference must reach the optimum.
        return [ot.emd2([] if pb.a is None else pb.a[i], [] if pb.b is None else pb.b[i],
                        pb.M[i], numItermax=10_000_000) for i in range(pb.batch)]

    def summarize(self, res: Any, pb: Problem) -> Output:
        return ExactOutput(np.array([float(v) for v in res]))


class LsaLoop(Engine):
    name = "lsa_loop"
    kind = "loop"
    description = "Python loop of SciPy linear_sum_assignment (value = total / n)"

    def available(self) -> str | None:
        return _needs("scipy")

    def device(self) -> str:
        return "cpu, 1 thread"

    def prepare(self, pb: Problem) -> Problem:
        _uniform_square(pb, self.name)
        return pb

    def run(self, pb: Problem) -> Any:
        from scipy.optimize import linear_sum_assignment

        out = np.empty(pb.batch)
        for i in range(pb.batch):
            rows, cols = linear_sum_assignment(pb.M[i])
            out[i] = pb.M[i][rows, cols].sum()
        return out

    def summarize(self, res: Any, pb: Problem) -> Output:
        return ExactOutput(res / pb.M.shape[1])


class LapxBatch(Engine):
    name = "lapx_batch"
    description = "lapx lap.lapjvr_batch(M, n_threads=T) (value = total / n)"
    solver = "lapjvr_batch"  # the fastest here: 1.6-6x faster than lapjvx_batch / lapjvs_batch
    options: dict = {}

    def available(self) -> str | None:
        return _needs("lap")

    def device(self) -> str:
        return f"cpu, {cpu_threads()} threads, lap.{self.solver}"

    def prepare(self, pb: Problem) -> Problem:
        _uniform_square(pb, self.name)
        return pb

    def run(self, pb: Problem) -> Any:
        import lap

        return getattr(lap, self.solver)(pb.M, n_threads=cpu_threads(), **self.options)[0]

    def summarize(self, res: Any, pb: Problem) -> Output:
        return ExactOutput(np.asarray(res, dtype=np.float64) / pb.M.shape[1])


def _lapx(name: str, solver: str, **options) -> LapxBatch:
    eng = LapxBatch()
    eng.name, eng.solver, eng.options = name, solver, options
    eng.description = f"lapx lap.{solver}(M, n_threads=T) (value = total / n)"
    return eng


class CudaEngine(Engine):
    """Base of the engines that take a torch CUDA tensor of costs (skipped without CUDA)."""

    warmup_full = True  # kernels compile / autotune per shape
    dtype = "float64"
    requires: tuple[str, ...] = ("torch",)

    def available(self) -> str | None:
        for module in self.requires:
            reason = _needs(module)
            if reason is not None:
                return reason
        import torch
        if not torch.cuda.is_available():
            return f"needs CUDA (torch {torch.__version__} sees no GPU here)"
        return None

    def device(self) -> str:
        return f"cuda, {self.dtype}"

    def sync(self) -> None:
        import torch

        torch.cuda.synchronize()

    def prepare(self, pb: Problem) -> Prepared:
        import torch

        dt = getattr(torch, self.dtype)
        args = tuple(None if x is None else torch.as_tensor(x, dtype=dt, device="cuda")
                     for x in (pb.M, pb.a, pb.b))
        self.sync()
        return Prepared(pb, args)


class OtBatchCuda(CudaEngine):
    name = "ot_batch_cuda"
    description = "ot_batch.solve_batch(M, reg=None) on a torch CUDA float64 tensor"

    def available(self) -> str | None:
        return super().available() or OtBatchExact.available(self)

    def run(self, data: Prepared) -> Any:
        import ot_batch

        M, a, b = data.args
        return _guarded(ot_batch.solve_batch, M, reg=None, a=a, b=b, method="auto")

    def summarize(self, res: Any, data: Prepared) -> Output:
        return _from_result(res)


class OtBatchCuda32(OtBatchCuda):
    name = "ot_batch_cuda32"
    description = "ot_batch.solve_batch(M, reg=None) on a torch CUDA float32 tensor"
    dtype = "float32"


class MdotTnt(CudaEngine):
    name = "mdot_tnt"
    gamma_f = 2.0 ** 10
    description = "mdot_tnt.solve_OT_batched(r, c, M / max M, gamma_f=2**10), float64"
    requires = ("torch", "mdot_tnt")

    def prepare(self, pb: Problem) -> Prepared:
        import torch

        data = super().prepare(pb)
        B, n, m = pb.M.shape
        M, a, b = data.args
        # mdot_tnt wants marginals even when uniform.
        a = torch.full((B, n), 1.0 / n, dtype=M.dtype, device="cuda") if a is None else a
        b = torch.full((B, m), 1.0 / m, dtype=M.dtype, device="cuda") if b is None else b
        data.args = (M, a, b)
        self.sync()
        return data

    def run(self, data: Prepared) -> Any:
        from mdot_tnt import solve_OT_batched

        M, a, b = data.args
        # Its docs recommend costs in [0, 1] (gamma_f is relative to that scale): divide each
        # problem by its largest cost and scale the value back. Timed: part of the call.
        scale = M.amax(dim=(1, 2))
        value = _guarded(solve_OT_batched, a, b, M / scale[:, None, None],
                         gamma_f=self.gamma_f)
        return value * scale

    def summarize(self, res: Any, data: Prepared) -> Output:
        return ExactOutput(_numpy(res))


def _mdot(name: str, log2_gamma: int) -> MdotTnt:
    eng = MdotTnt()
    eng.name, eng.gamma_f = name, 2.0 ** log2_gamma
    eng.description = (f"mdot_tnt.solve_OT_batched(r, c, M / max M, gamma_f=2**{log2_gamma}), "
                       "float64")
    return eng


EXACT_ENGINES: dict[str, Engine] = {e.name: e for e in (
    OtBatchExact(), OtBatchSimplex(), OtBatchAssignment(), Emd2Loop(), LsaLoop(), LapxBatch(),
    _lapx("lapx_jvx", "lapjvx_batch"), _lapx("lapx_jvs", "lapjvs_batch", prefer_float32=False),
    _lapx("lapx_jvh", "lapjvh_batch"), OtBatchCuda(), OtBatchCuda32(), _mdot("mdot_tnt", 10),
    _mdot("mdot_tnt_g14", 14), _mdot("mdot_tnt_g18", 18))}

# lapx_jvx is lapx's lapjvx_batch, the batch solver the issue measured ("lapx batch").
DEFAULT = ("ot_batch", "ot_batch_cuda", "ot_batch_cuda32", "emd2_loop", "lsa_loop",
           "lapx_batch", "lapx_jvx", "mdot_tnt", "mdot_tnt_g14")
