"""Results out: the table on stdout, a CSV and a bar plot of the ratios in the --out folder.

The functions here write the ``cpu`` suite's table and notes (:data:`CPU`); the targets, the
CSV writer and the plot serve every suite. A suite with other columns has its own
:class:`Layout` (the ``batch`` suite's is in :mod:`ot_batch.bench.batch_report`).
"""
from __future__ import annotations

import csv
import math
import os
import platform
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

from .runner import REFERENCE, Case

__all__ = ["environment", "table", "markdown", "targets", "notes", "row", "write_csv", "plot",
           "CSV_COLUMNS", "Layout", "CPU"]

CSV_COLUMNS = [
    "suite", "workload", "engine", "B", "n", "m", "d", "reg", "tol", "max_iter",
    "timed_problems", "scaled", "repeats", "times_s", "median_s", "per_problem_ms",
    "ratio_vs_ot_batch", "target_ratio", "target_met", "max_rel_diff_value_linear",
    "converged_share", "iters_min", "iters_median", "iters_max", "skipped",
]


def environment() -> str:
    """One line on the software and machine the numbers come from (and how busy it is)."""
    import numpy as np

    import ot_batch

    parts = [f"python {platform.python_version()}", f"numpy {np.__version__}",
             f"ot_batch {ot_batch.__version__}"]
    try:
        import ot
        parts.append(f"POT {ot.__version__}")
    except ImportError:
        pass
    parts.append(f"{platform.machine()} {platform.system()}, {os.cpu_count()} CPUs")
    if hasattr(os, "getloadavg"):
        parts.append("load average %.1f/%.1f/%.1f" % os.getloadavg())
    threads = [f"{k}={os.environ[k]}" for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS",
                                                "OPENBLAS_NUM_THREADS") if k in os.environ]
    return ", ".join(parts + threads)


def _fmt(x: float, spec: str) -> str:
    """``format(x, spec)``, or "" for NaN."""
    return "" if math.isnan(x) else format(x, spec)


def _iters(c: Case) -> str:
    lo, med, hi = c.iters()
    if math.isnan(lo):
        return ""
    if lo == hi:
        return f"{lo:.0f}"
    return f"{lo:.0f}/{med:.0f}/{hi:.0f}"


def _met(c: Case) -> str:
    return {None: "", True: "met", False: "NOT met"}[c.target_met]


def table(cases: Sequence[Case]) -> str:
    """A Markdown table, one row per (workload, engine)."""
    head = ["workload", "engine", "problems timed", "repeats", "median s (batch)",
            "ms / problem", f"x {REFERENCE}", "target", "met", "max rel diff value_linear",
            "converged", "iters (min/med/max)"]
    rows = []
    for c in cases:
        if c.skipped:
            rows.append([c.workload.name, c.engine, "", "", "skipped: " + c.skipped]
                        + [""] * (len(head) - 5))
            continue
        timed = f"{c.timed_problems}" + (f" (x{c.scale:g})" if c.scaled else "")
        rows.append([
            c.workload.name, c.engine, timed, str(c.timing.repeats), _fmt(c.seconds, ".4g"),
            _fmt(c.per_problem_ms, ".4g"), _fmt(c.ratio, ".2f") and f"{c.ratio:.2f}x",
            _fmt(c.target, "g") and f">= {c.target:g}x", _met(c),
            "" if c.engine == REFERENCE else _fmt(c.rel_diff, ".1e"),
            _fmt(c.converged_share, ".0%"), _iters(c),
        ])
    return markdown(head, rows)


def markdown(head: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A Markdown table with padded columns."""
    widths = [max([len(h)] + [len(r[i]) for r in rows]) for i, h in enumerate(head)]

    def line(cells):
        return "| " + " | ".join(s.ljust(w) for s, w in zip(cells, widths)) + " |"

    out = [line(head), "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
    out += [line(r) for r in rows]
    return "\n".join(out)


def targets(cases: Sequence[Case]) -> str:
    """``peer / subject = 3.1x   target >= 2x: met`` for each target, met or not.

    A workload's target is listed when both its engines were asked for; the ratio is the
    peer's time over the subject's (the subject is ot_batch unless the target names another).
    A workload with other kinds of targets lists them itself: ``target_lines(group)`` (``group``
    maps engine names to their cases) gives its lines.
    """
    lines = []
    for name in dict.fromkeys(c.workload.name for c in cases):
        group = {c.engine: c for c in cases if c.workload.name == name}
        wl = next(iter(group.values())).workload
        for peer, subject, least in wl.target_pairs():
            if peer not in group or subject not in group:
                continue
            head = f"{wl.name:14s} {peer} / {subject}"
            p, s = group[peer], group[subject]
            if p.output is None or s.output is None:
                lines.append(f"{head}: not measured (target >= {least:g}x)")
                continue
            ratio = p.seconds / s.seconds
            met = "met" if ratio >= least else "NOT met"
            lines.append(f"{head} = {ratio:6.2f}x   target >= {least:g}x: {met}")
        own = getattr(wl, "target_lines", None)
        if own is not None:
            lines += own(group)
    return "\n".join(lines)


def notes(cases: Sequence[Case]) -> str:
    """Scaling notes, per-workload agreement and the workload definitions."""
    lines = [n for c in cases for n in c.notes]
    seen = []
    for c in cases:
        if c.workload.name in [w.name for w in seen]:
            continue
        seen.append(c.workload)
        group = [g for g in cases if g.workload.name == c.workload.name
                 and g.engine != REFERENCE and not math.isnan(g.rel_diff)]
        if group:
            worst = max(group, key=lambda g: g.rel_diff)
            lines.append(f"{c.workload.name}: engines agree with {REFERENCE} on value_linear "
                         f"to {worst.rel_diff:.1e} relative (worst: {worst.engine})")
    lines.append("")
    lines += [f"{w.name}: {w.sizes}. {w.doc}" for w in seen]
    lines.append("iters: iterations run per problem (POT: its 0-based count + 1; pot_batch "
                 "stops the whole batch at once; pot_loop from an untimed extra pass). ot_batch "
                 "checks every 10 iterations.")
    return "\n".join(lines)


def row(suite: str, c: Case) -> dict:
    """The CSV row of one case (keys: :data:`CSV_COLUMNS`)."""
    w = c.workload
    lo, med, hi = c.iters()
    met = c.target_met
    return {
        "suite": suite, "workload": w.name, "engine": c.engine, "B": w.B, "n": w.n, "m": w.m,
        "d": w.d, "reg": w.reg, "tol": w.tol, "max_iter": w.max_iter,
        "timed_problems": c.timed_problems, "scaled": c.scaled,
        "repeats": c.timing.repeats if c.timing else 0,
        "times_s": ";".join(f"{t:.6g}" for t in c.timing.times) if c.timing else "",
        "median_s": c.seconds, "per_problem_ms": c.per_problem_ms,
        "ratio_vs_ot_batch": c.ratio, "target_ratio": c.target,
        "target_met": "" if met is None else met,
        "max_rel_diff_value_linear": c.rel_diff, "converged_share": c.converged_share,
        "iters_min": lo, "iters_median": med, "iters_max": hi, "skipped": c.skipped or "",
    }


def write_csv(cases: Sequence[Case], path: Path, suite: str,
              columns: Sequence[str] = CSV_COLUMNS,
              make_row: Callable[[str, Case], dict] = row) -> Path:
    """One row per case, ``make_row(suite, case)`` with keys ``columns``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(columns))
        w.writeheader()
        for c in cases:
            w.writerow(make_row(suite, c))
    return path


def plot(cases: Sequence[Case], path: Path, title: str) -> Path | None:
    """Bars of each engine's time / ot_batch's per workload (log scale), targets as ticks."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed: no plot", file=sys.stderr)
        return None
    shown = [c for c in cases if c.engine != REFERENCE and not math.isnan(c.ratio)]
    if not shown:
        return None
    wls = list(dict.fromkeys(c.workload.name for c in shown))
    engs = list(dict.fromkeys(c.engine for c in shown))
    width = 0.8 / len(engs)
    fig, ax = plt.subplots(figsize=(1.8 + 1.6 * len(wls), 4))
    target_label = "target"
    for j, e in enumerate(engs):
        for i, wl in enumerate(wls):
            c = next((c for c in shown if c.engine == e and c.workload.name == wl), None)
            if c is None:
                continue
            x = i - 0.4 + width * (j + 0.5)
            ax.bar(x, c.ratio, width, color=f"C{j}", label=e if i == 0 else None)
            ax.annotate(f"{c.ratio:.2g}x", (x, c.ratio), ha="center", va="bottom", fontsize=8)
            if not math.isnan(c.target):
                ax.hlines(c.target, x - width / 2, x + width / 2, colors="k",
                          linestyles="--", label=target_label)
                target_label = None
    ax.axhline(1.0, color="grey", lw=0.8)
    ax.set_yscale("log")
    ax.set_xticks(range(len(wls)), wls)
    ax.set_ylabel(f"engine time / {REFERENCE} time")
    ax.set_title(title)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


@dataclass(frozen=True)
class Layout:
    """What a suite writes: the environment line, the table, the notes and the CSV."""

    environment: Callable[[], str]
    table: Callable[[Sequence[Case]], str]
    notes: Callable[[Sequence[Case]], str]
    csv_columns: Sequence[str]
    csv_row: Callable[[str, Case], dict]


CPU = Layout(environment, table, notes, CSV_COLUMNS, row)
