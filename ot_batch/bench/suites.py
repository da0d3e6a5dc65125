"""Benchmark suites: one per subcommand of ``python -m ot_batch.bench``.

A suite owns its registries of workloads and engines (names are per suite: the ``batch``
suite's ``pot_doc`` and ``ot_batch`` are not the ``cpu`` suite's), its defaults, the engine
that values are verified against and the :class:`~ot_batch.bench.report.Layout` of its
results. Adding a subcommand: write its workloads and engines (or reuse a registry) and add
one :class:`Suite` to :data:`SUITES`; the CLI picks it up.
"""
from __future__ import annotations

from dataclasses import dataclass, field
import argparse
from typing import Callable, Mapping

from . import batch_report, batch_workloads, engines, exact_engines, exact_report
from . import exact_workloads, large_report, large_workloads, report, workloads
from .device_engines import BATCH_ENGINES
from .engines import Engine
from .large_engines import LARGE_ENGINES
from .runner import VerifyAgainst
from .workloads import REFERENCE, Workload

__all__ = ["Suite", "SUITES"]


@dataclass(frozen=True)
class Suite:
    name: str
    help: str
    workloads: tuple[str, ...]  # default --workloads
    engines: tuple[str, ...]  # default --engines
    verify: bool = True  # --verify default
    workload_registry: Mapping[str, Workload] = field(
        default_factory=lambda: workloads.WORKLOADS)
    engine_registry: Mapping[str, Engine] = field(default_factory=lambda: engines.ENGINES)
    # value_linear is compared with this engine's (or with the one a function names per case)
    verify_against: VerifyAgainst = REFERENCE
    layout: report.Layout = report.CPU
    # the suite's own command-line options, and what applies them before the run
    add_arguments: Callable[[argparse.ArgumentParser], None] | None = None
    configure: Callable[[argparse.Namespace], None] | None = None

    def workload(self, name: str, quick: bool = False) -> Workload:
        """This suite's workload ``name`` (raises ValueError when unknown)."""
        return workloads.lookup(self.workload_registry, name, quick)


SUITES: dict[str, Suite] = {s.name: s for s in (
    Suite("cpu", "ot_batch vs POT ot.batch vs a loop of POT ot.solve, NumPy float64 on CPU",
          workloads=("pot_doc", "small_fixed", "converge_256"),
          engines=("ot_batch", "pot_batch", "pot_loop")),
    Suite("batch", "ANCHORS.md's batches (float32, fixed iterations): ot_batch from costs and "
                   "from points vs POT ot.batch (torch), OTT-JAX vmap, FlashSinkhorn in a loop and "
                   "GeomLoss (tensorized and KeOps), on CUDA "
                   "when present, else on CPU",
          workloads=tuple(batch_workloads.WORKLOADS),
          engines=tuple(BATCH_ENGINES),
          workload_registry=batch_workloads.WORKLOADS,
          engine_registry=BATCH_ENGINES,
          verify_against=batch_report.VERIFY_AGAINST,
          layout=batch_report.LAYOUT),
    Suite("large", "one large problem from points (B = 1, float32): FlashSinkhorn's fixed "
                   "protocol (eps=0.1, 10 iterations, TF32) and GeomLoss's defaults end to end "
                   "(forward, forward + backward) up to n = 10^5, peak memory at n = 10^6; "
                   "ot_batch online vs FlashSinkhorn, GeomLoss (KeOps, tensorized) and OTT-JAX "
                   "dense, on CUDA when present, else on CPU (--quick)",
          workloads=large_workloads.DEFAULT,
          engines=tuple(LARGE_ENGINES),
          workload_registry=large_workloads.WORKLOADS,
          engine_registry=LARGE_ENGINES,
          verify_against=large_report.verify_against,
          layout=large_report.LAYOUT),
    Suite("exact", "exact OT (reg=None) of batches of uniform 2-D point-cloud problems "
                   "(float64): ot_batch on NumPy and CUDA vs a loop of POT ot.emd2, lapx's "
                   "batch assignment solver, a loop of SciPy linear_sum_assignment and "
                   "mdot-tnt (CUDA); GPU engines are skipped without CUDA",
          workloads=exact_workloads.DEFAULT,
          engines=exact_engines.DEFAULT,
          workload_registry=exact_workloads.WORKLOADS,
          engine_registry=exact_engines.EXACT_ENGINES,
          verify_against=exact_report.VERIFY_AGAINST,
          layout=exact_report.LAYOUT,
          add_arguments=exact_engines.add_arguments,
          configure=exact_engines.configure),
)}
