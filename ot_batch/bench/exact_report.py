"""The ``exact`` suite's table, notes and CSV: time, ratios and the error of each exact solver.

Per (workload, engine): the median time of the whole batch, its ratio to the faster of the
CPU references (``emd2_loop``, ``lapx_batch``) and to ``ot_batch_cuda`` when it ran, and the
relative error ``max_i |value_i - emd2_i| / emd2_i`` against POT's ``ot.emd2`` (against
``ot_batch``'s values when emd2_loop did not run). An exact solver's error is round-off
(float64: ~1e-15; float32: ~1e-7); an error above :data:`FLAG_REL_ERR` is flagged. The duality
gap (primal - dual) is shown for engines that return one (ot_batch).
"""
from __future__ import annotations

import math
import os
from typing import Sequence

import numpy as np

from . import report
from .batch_report import _version
from .batch_report import environment as _batch_environment
from .exact_engines import EXACT_ENGINES, cpu_threads
from .exact_workloads import DATA
from .report import _fmt, markdown
from .runner import Case

__all__ = ["FLAG_REL_ERR", "VERIFY_AGAINST", "CPU_REFS", "GPU_REF", "environment", "table",
           "notes", "row", "CSV_COLUMNS", "LAYOUT"]

VERIFY_AGAINST = "emd2_loop"
CPU_REFS = ("emd2_loop", "lapx_batch")  # the "x best CPU" column: the faster of these
GPU_REF = "ot_batch_cuda"
# Above this relative error an engine is not exact (float32 round-off is ~1e-7 on these costs).
FLAG_REL_ERR = 1e-5

CSV_COLUMNS = report.CSV_COLUMNS + [
    "device", "verified_against", "best_cpu_engine", "x_best_cpu", "x_ot_batch_cuda",
    "max_gap", "cpu_threads",
]


def environment() -> str:
    """The ``batch`` suite's line plus lapx / SciPy / mdot-tnt versions and the CPU threads."""
    parts = [_batch_environment()]
    for dist in ("lapx", "scipy", "mdot-tnt"):
        v = _version(dist)
        if v is not None:
            parts.append(f"{dist} {v}")
    parts.append(f"CPU threads used: {cpu_threads()} of {os.cpu_count()} (ot_batch n_threads, "
                 "lapx n_threads; the loops run on 1)")
    return ", ".join(parts)


def _peer(c: Case, names: Sequence[str]) -> Case | None:
    """The fastest measured case of ``names`` among ``c``'s workload."""
    got = [g for g in c.group if g.engine in names and g.output is not None]
    return min(got, key=lambda g: g.seconds) if got else None


def _ratio(c: Case, ref: Case | None) -> float:
    return c.seconds / ref.seconds if ref is not None and c.output is not None else math.nan


def _max_gap(c: Case) -> float:
    gap = getattr(c.output, "gap", None)
    return float(np.max(np.abs(gap))) if gap is not None and gap.size else math.nan


def _x(v: float) -> str:
    return _fmt(v, ".3g") and f"{v:.3g}x"


def _err_cell(c: Case) -> str:
    if c.engine == c.diff_ref:
        return "(reference)"
    cell = _fmt(c.rel_diff, ".1e")
    return cell + " FLAG" if cell and c.rel_diff > FLAG_REL_ERR else cell


def table(cases: Sequence[Case]) -> str:
    """A Markdown table, one row per (workload, engine)."""
    head = ["workload", "engine", "device", "problems timed", "repeats", "median ms (batch)",
            "ms / problem", "x best CPU ref", f"x {GPU_REF}", "max rel err vs emd2",
            "max |gap|", "converged"]
    rows = []
    for c in cases:
        if c.skipped:
            rows.append([c.workload.name, c.engine, "", "", "", "skipped: " + c.skipped]
                        + [""] * (len(head) - 6))
            continue
        timed = f"{c.timed_problems}" + (f" (x{c.scale:g})" if c.scaled else "")
        rows.append([
            c.workload.name, c.engine, c.device, timed, str(c.timing.repeats),
            _fmt(1e3 * c.seconds, ".4g"), _fmt(c.per_problem_ms, ".3g"),
            _x(_ratio(c, _peer(c, CPU_REFS))), _x(_ratio(c, _peer(c, (GPU_REF,)))),
            _err_cell(c), _fmt(_max_gap(c), ".1e"), _fmt(c.converged_share, ".0%"),
        ])
    return markdown(head, rows)


def notes(cases: Sequence[Case]) -> str:
    """Skipped engines, the references per workload, what the columns mean, the workloads."""
    lines = [f"{e} skipped: {why}"
             for e, why in dict.fromkeys((c.engine, c.skipped) for c in cases if c.skipped)]
    lines += [n for c in cases for n in c.notes]
    seen = {}
    for c in cases:
        seen.setdefault(c.workload.name, c)
    for name, c in seen.items():
        best = _peer(c, CPU_REFS)
        if best is not None:
            lines.append(f"{name}: best CPU reference {best.engine} ({best.device}) "
                         f"{1e3 * best.seconds:.4g} ms")
        errs = [g for g in c.group if not math.isnan(g.rel_diff) and g.engine != g.diff_ref]
        if errs:
            worst = max(errs, key=lambda g: g.rel_diff)
            ref = worst.diff_ref
            fallback = "" if ref == VERIFY_AGAINST else f" ({VERIFY_AGAINST} did not run)"
            lines.append(f"{name}: values agree with {ref}{fallback} to {worst.rel_diff:.1e} "
                         f"relative (worst: {worst.engine})")
            lines += [f"{name}: FLAG {g.engine} is {g.rel_diff:.1e} from {ref} (> "
                      f"{FLAG_REL_ERR:g}: not exact)" for g in errs if g.rel_diff > FLAG_REL_ERR]
    lines.append("")
    lines.append(f"x best CPU ref: time / the faster of {', '.join(CPU_REFS)} on the workload; "
                 f"x {GPU_REF}: time / {GPU_REF}'s. max rel err: max over problems of "
                 f"|value - value_emd2| / value_emd2. max |gap|: primal - dual of the returned "
                 f"plan and potentials (engines that return them). GPU engines (cuda) get M "
                 f"already on the device (the copy is not timed, as for a torch user's data) and "
                 f"their timings wait for the device (torch.cuda.synchronize); CPU engines read "
                 f"NumPy arrays. Loops: one problem at a time on one thread.")
    used = list(dict.fromkeys(c.engine for c in cases))
    lines += [f"{e}: {EXACT_ENGINES[e].description}" for e in used if e in EXACT_ENGINES]
    lines += [f"{name}: {c.workload.sizes}. {c.workload.doc}" for name, c in seen.items()]
    lines.append(DATA)
    return "\n".join(lines)


def row(suite: str, c: Case) -> dict:
    """The CSV row of one case (keys: :data:`CSV_COLUMNS`)."""
    best = _peer(c, CPU_REFS)
    return {
        **report.row(suite, c), "device": c.device, "verified_against": c.diff_ref,
        "best_cpu_engine": best.engine if best is not None else "",
        "x_best_cpu": _ratio(c, best), "x_ot_batch_cuda": _ratio(c, _peer(c, (GPU_REF,))),
        "max_gap": _max_gap(c), "cpu_threads": cpu_threads(),
    }


LAYOUT = report.Layout(environment, table, notes, CSV_COLUMNS, row)
