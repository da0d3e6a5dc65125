"""The ``batch`` suite's table, notes and CSV: times per iteration against the GPU bounds.

Every workload runs a fixed number of iterations, so an engine's time per iteration is its
median batch time / ``max_iter`` and its ratio to ot_batch is the ratio of those. Beside them:
the workload's bounds per iteration on the peers' GPU (reading the fp32 cost twice at
3.0e12 B/s; two exponentials per entry at 3.9e12/s) and each engine's time over the memory
bound. value_linear is verified against POT's (``pot_batch_torch``) and a relative difference
above :data:`FLAG_REL_DIFF` is flagged. GeomLoss (not ``comparable``) gets neither: it runs its
own epsilon-scaling schedule and returns the dual objective.
"""
from __future__ import annotations

import math
from importlib import metadata
from typing import Sequence

from . import report
from .batch_workloads import DATA, EXP_PER_S, HBM_BYTES_PER_S
from .report import _fmt, _iters, markdown
from .runner import REFERENCE, Case

__all__ = ["FLAG_REL_DIFF", "VERIFY_AGAINST", "environment", "table", "notes", "row",
           "CSV_COLUMNS", "LAYOUT"]

FLAG_REL_DIFF = 1e-5  # value_linear further than this from POT's is flagged (float32 solves)
VERIFY_AGAINST = "pot_batch_torch"

CSV_COLUMNS = report.CSV_COLUMNS + [
    "device", "comparable", "iters", "ms_per_iter", "verified_against", "flagged",
    "hbm_bound_ms_per_iter", "exp_bound_ms_per_iter", "x_hbm_bound",
]


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def environment() -> str:
    """The ``cpu`` suite's line plus the torch device and the peers' package versions."""
    parts = [report.environment()]
    try:
        import torch
        dev = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no CUDA"
        parts.append(f"torch {torch.__version__} ({dev})")
    except ImportError:
        pass
    for dist in ("jax", "ott-jax", "geomloss", "pykeops", "flash-sinkhorn", "triton"):
        v = _version(dist)
        if v is not None:
            parts.append(f"{dist} {v}")
    return ", ".join(parts)


def _flagged(c: Case) -> bool | None:
    if math.isnan(c.rel_diff):
        return None
    return c.rel_diff > FLAG_REL_DIFF


def _x_hbm(c: Case) -> float:
    return c.per_iter_ms / c.workload.hbm_bound_ms


def _diff_cell(c: Case) -> str:
    if not c.comparable:
        return "n/a"
    if c.engine == c.diff_ref:
        return "(reference)"
    cell = _fmt(c.rel_diff, ".1e")
    return cell + " FLAG" if _flagged(c) else cell


def table(cases: Sequence[Case]) -> str:
    """A Markdown table, one row per (workload, engine)."""
    head = ["workload", "engine", "device", "repeats", "median ms (batch)", "ms / iter",
            f"x {REFERENCE}", "max rel diff value_linear", "iters", "HBM bound ms/iter",
            "exp bound ms/iter", "x HBM bound"]
    rows = []
    for c in cases:
        wl = c.workload
        bounds = [f"{wl.hbm_bound_ms:.3g}", f"{wl.exp_bound_ms:.3g}"]
        if c.skipped:
            rows.append([wl.name, c.engine, "", "", "skipped: " + c.skipped, "", "", "", ""]
                        + bounds + [""])
            continue
        ratio = _fmt(c.ratio, ".2f") and f"{c.ratio:.2f}x"
        rows.append([
            wl.name, c.engine, c.device, str(c.timing.repeats), _fmt(1e3 * c.seconds, ".4g"),
            _fmt(c.per_iter_ms, ".4g") if c.comparable else "n/a (total only)",
            ratio if c.comparable or not ratio else ratio + " (total)",
            _diff_cell(c), _iters(c), *bounds, _fmt(_x_hbm(c), ".3g"),
        ])
    return markdown(head, rows)


def notes(cases: Sequence[Case]) -> str:
    """Skipped engines, verification per workload, what the columns mean, the workloads."""
    lines = []
    skipped = dict.fromkeys((c.engine, c.skipped) for c in cases if c.skipped)
    lines += [f"{e} skipped: {why}" for e, why in skipped]
    lines += [n for c in cases for n in c.notes]
    names = list(dict.fromkeys(c.workload.name for c in cases))
    for name in names:
        group = [c for c in cases if c.workload.name == name and not math.isnan(c.rel_diff)
                 and c.engine != c.diff_ref]
        if not group:
            continue
        worst = max(group, key=lambda c: c.rel_diff)
        ref = worst.diff_ref
        fallback = "" if ref == VERIFY_AGAINST else f" ({VERIFY_AGAINST} did not run)"
        lines.append(f"{name}: value_linear agrees with {ref}{fallback} to {worst.rel_diff:.1e} "
                     f"relative (worst: {worst.engine})")
        lines += [f"{name}: FLAG {c.engine} differs from {ref} by {c.rel_diff:.1e} relative "
                  f"(> {FLAG_REL_DIFF:g})" for c in group if _flagged(c)]
    if any(not c.comparable and c.output is not None for c in cases):
        lines.append("geomloss, geomloss_keops: run their own epsilon-scaling schedule "
                     "(scaling=0.9) and return their dual objective, not value_linear: their "
                     "time is the total (no ms/iter; 'x ot_batch' compares total times) and "
                     "their value is not verified.")
    lines.append("")
    lines.append(f"ms / iter: median batch time / iterations (every solve runs exactly max_iter, "
                 f"tol=0). HBM bound: 8 B n m bytes (two fp32 reads of M) / "
                 f"{HBM_BYTES_PER_S:.1e} B/s; exp bound: 2 B n m / {EXP_PER_S:.1e} "
                 f"exponentials/s (the peers' H100); x HBM bound: ms/iter over the HBM bound "
                 f"(meaningful on that GPU only). iters: iterations run (POT: its 0-based count "
                 f"+ 1; OTT-JAX: whole blocks of 10).")
    seen = {}
    for c in cases:
        seen.setdefault(c.workload.name, c.workload)
    lines += [f"{w.name}: {w.sizes}. {w.doc}" for w in seen.values()]
    lines.append(DATA)
    return "\n".join(lines)


def row(suite: str, c: Case) -> dict:
    """The CSV row of one case (keys: :data:`CSV_COLUMNS`)."""
    wl = c.workload
    flagged = _flagged(c)
    return {
        **report.row(suite, c), "device": c.device, "comparable": c.comparable,
        "iters": wl.max_iter, "ms_per_iter": c.per_iter_ms, "verified_against": c.diff_ref,
        "flagged": "" if flagged is None else flagged,
        "hbm_bound_ms_per_iter": wl.hbm_bound_ms, "exp_bound_ms_per_iter": wl.exp_bound_ms,
        "x_hbm_bound": _x_hbm(c),
    }


LAYOUT = report.Layout(environment, table, notes, CSV_COLUMNS, row)
