"""Benchmark suites: one per subcommand of ``python -m ot_batch.bench``.

A suite names its workloads, its default engines and its defaults. Adding a subcommand
(``batch``, ``large``, ``gromov``, ``grad``): add its workloads and engines to their
registries and one :class:`Suite` to :data:`SUITES`; the CLI picks it up.
"""
from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Suite", "SUITES"]


@dataclass(frozen=True)
class Suite:
    name: str
    help: str
    workloads: tuple[str, ...]
    engines: tuple[str, ...]
    verify: bool = True  # --verify default


SUITES: dict[str, Suite] = {s.name: s for s in (
    Suite("cpu", "ot_batch vs POT ot.batch vs a loop of POT ot.solve, NumPy float64 on CPU",
          workloads=("pot_doc", "small_fixed", "converge_256"),
          engines=("ot_batch", "pot_batch", "pot_loop")),
)}
