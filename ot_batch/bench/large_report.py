"""The ``large`` suite's table, notes and CSV: time, memory and value of one large problem.

Per (workload, engine): the median time of a call, its time per iteration (fixed protocol:
the call / 10), the peak GPU memory of the last timed call, the value, its relative difference
from the reference of the same algorithm, and the speed-ups over FlashSinkhorn (symmetric) and
GeomLoss KeOps (peer's time / this engine's time: above 1 is faster than the peer).

Values are compared within one algorithm only (:func:`verify_against`): after 10 iterations at
``eps = 0.1`` the potentials are far from converged, so GeomLoss's loop with its last
extrapolation (ot_batch), without it (FlashSinkhorn's protocol, GeomLoss as bench_forward.py
runs it) and the two alternating orders (FlashSinkhorn's f first, OTT-JAX's g first) differ by
some 1e-3 relative; the notes give those spreads. End to end every engine computes GeomLoss's
divergence and all are compared. A difference above :data:`FLAG_REL_DIFF` (or
:data:`FLAG_GRAD_REL_DIFF` for gradient norms) is flagged.
"""
from __future__ import annotations

import math
from typing import Sequence

from . import report
from .batch_report import _version
from .batch_report import environment as _batch_environment
from .large_engines import FIXED, LARGE_ENGINES
from .large_workloads import FIT_BYTES
from .report import _fmt, markdown
from .runner import Case

__all__ = ["FLAG_REL_DIFF", "FLAG_GRAD_REL_DIFF", "PEERS", "REFERENCE_ORDER", "verify_against",
           "speedup", "environment", "table", "notes", "row", "CSV_COLUMNS", "LAYOUT"]

# Largest relative difference of values not flagged, per protocol (within one algorithm, TF32
# products against float32 ones): looser on the fixed protocol's unconverged potentials.
FLAG_REL_DIFF = {"fixed": 1e-3, "e2e": 1e-4, "mem": 1e-4}
# gradient norms: ot_batch's TF32 gradients are within 1e-3 of float32 ones (its docstring)
FLAG_GRAD_REL_DIFF = 1e-3

PEERS = ("flash_sinkhorn", "geomloss_online")  # the speed-up columns
# The reference of an algorithm: the first of these that ran it (the most accurate first).
REFERENCE_ORDER = ("geomloss_online", "geomloss_tensorized", "ot_batch_online_f32",
                   "ott_dense", "flash_sinkhorn", "flash_sinkhorn_alt", "ot_batch_online")

CSV_COLUMNS = [
    "suite", "workload", "protocol", "mode", "n", "m", "d", "engine", "device", "algorithm",
    "skipped", "repeats", "times_s", "median_ms", "ms_per_iter", "peak_mb", "value",
    "grad_norm", "verified_against", "max_rel_diff_value", "rel_diff_grad_norm", "flagged",
    "speedup_vs_flash_sinkhorn", "speedup_vs_geomloss_online", "note",
]


def _algorithm(c: Case) -> str:
    return getattr(c.output, "algorithm", "")


def verify_against(case: Case, cases: list) -> str | None:
    """The engine whose value ``case``'s is compared with: the first of
    :data:`REFERENCE_ORDER` that ran the same algorithm on the workload (``case``'s own engine
    when no other did: it is then its own reference)."""
    algo = _algorithm(case)
    same = {c.engine for c in cases if c.output is not None and _algorithm(c) == algo}
    return next((e for e in REFERENCE_ORDER if e in same), None)


def _peer(c: Case, engine: str) -> Case | None:
    return next((g for g in c.group if g.engine == engine and g.output is not None), None)


def speedup(c: Case, peer: str) -> float:
    """``peer``'s median time over ``c``'s on the same workload (NaN when either is missing)."""
    p = _peer(c, peer)
    if c.output is None or p is None:
        return math.nan
    return p.seconds / c.seconds


def _ms_per_iter(c: Case) -> float:
    wl = c.workload
    if c.output is None or wl.protocol != "fixed":
        return math.nan
    return 1e3 * c.seconds / wl.max_iter


def _flag(c: Case) -> float:
    return FLAG_REL_DIFF[c.workload.protocol]


def _grad_diff(c: Case) -> float:
    """Relative difference of ``c``'s gradient norm from its value reference's."""
    ref = _peer(c, c.diff_ref) if c.diff_ref else None
    g = getattr(c.output, "grad_norm", None)
    g_ref = getattr(getattr(ref, "output", None), "grad_norm", None)
    if g is None or g_ref is None:
        return math.nan
    return abs(g - g_ref) / max(abs(g_ref), 1e-300)


def _flagged(c: Case) -> bool | None:
    if math.isnan(c.rel_diff):
        return None
    grad = _grad_diff(c)
    return c.rel_diff > _flag(c) or (not math.isnan(grad) and grad > FLAG_GRAD_REL_DIFF)


def environment() -> str:
    """The ``batch`` suite's line plus FlashSinkhorn's and KeOps' versions."""
    parts = [_batch_environment()]
    for dist in ("flash-sinkhorn", "pykeops"):
        v = _version(dist)
        if v is not None:
            parts.append(f"{dist} {v}")
    return ", ".join(parts)


def _diff_cell(c: Case) -> str:
    if not c.diff_ref:
        return ""
    if c.engine == c.diff_ref:
        return "(reference)"
    cell = f"{c.rel_diff:.1e} vs {c.diff_ref}"
    return cell + " FLAG" if _flagged(c) else cell


def _value_cell(c: Case) -> str:
    v = f"{c.output.value_linear[0]:.7g}"
    g = getattr(c.output, "grad_norm", None)
    return v if g is None else f"{v} (|grad| {g:.5g})"


def _x(value: float) -> str:
    return _fmt(value, ".2f") and f"{value:.2f}x"


def table(cases: Sequence[Case]) -> str:
    """A Markdown table, one row per (workload, engine)."""
    head = ["workload", "n", "d", "mode", "engine", "device", "repeats", "ms (median)",
            "ms / iter", "peak MB", "value", "rel diff", *(f"speed-up vs {p}" for p in PEERS),
            "note"]
    rows = []
    for c in cases:
        wl = c.workload
        lead = [wl.name, str(wl.n), str(wl.d), wl.mode, c.engine]
        if c.skipped:
            rows.append(lead + [""] * (len(head) - len(lead) - 1) + ["skipped: " + c.skipped])
            continue
        peak = c.output.peak_mb
        rows.append(lead + [
            c.device, str(c.timing.repeats), _fmt(1e3 * c.seconds, ".4g"),
            _fmt(_ms_per_iter(c), ".4g"), "" if peak is None else f"{peak:.4g}",
            _value_cell(c), _diff_cell(c), *(_x(speedup(c, p)) for p in PEERS),
            c.output.note,
        ])
    return markdown(head, rows)


def _verification(cases: Sequence[Case]) -> list[str]:
    """Per workload and algorithm: the worst difference from its reference, and the flags."""
    lines = []
    for name in dict.fromkeys(c.workload.name for c in cases):
        group = [c for c in cases if c.workload.name == name and c.output is not None]
        for algo in dict.fromkeys(_algorithm(c) for c in group):
            others = [c for c in group if _algorithm(c) == algo and c.diff_ref
                      and c.engine != c.diff_ref]
            if not others:
                continue
            worst = max(others, key=lambda c: c.rel_diff)
            lines.append(f"{name} ({algo}): values agree with {worst.diff_ref} to "
                         f"{worst.rel_diff:.1e} relative (worst: {worst.engine}; flag above "
                         f"{_flag(worst):g})")
            for c in others:
                grad = _grad_diff(c)
                if not math.isnan(grad):
                    lines.append(f"{name}: {c.engine} gradient norm differs from "
                                 f"{c.diff_ref}'s by {grad:.1e} relative")
                if _flagged(c):
                    lines.append(f"{name}: FLAG {c.engine} differs from {c.diff_ref} beyond "
                                 f"the tolerance")
        refs = {}  # the fixed protocol: how far apart the algorithms' values end up
        for c in group:
            if c.workload.protocol == "fixed":
                refs.setdefault(_algorithm(c), c)
        verified = any(c.diff_ref for c in group)  # not with --no-verify
        if verified and len(refs) > 1 and FIXED in refs:
            base = refs[FIXED]
            v0 = base.output.value_linear[0]
            spread = ", ".join(
                f"{c.engine} ({a}) {abs(c.output.value_linear[0] - v0) / abs(v0):.1e}"
                for a, c in refs.items() if a != FIXED)
            lines.append(f"{name}: other algorithms vs {base.engine} (not flagged: the "
                         f"iterations differ): {spread}")
    return lines


def notes(cases: Sequence[Case]) -> str:
    """Skipped engines, verification, what each engine and column is, the workloads."""
    skipped: dict[tuple[str, str], list[str]] = {}  # (engine, why) -> workloads
    for c in cases:
        if c.skipped and not c.skipped.startswith("N/A"):  # N/A: in the table only
            skipped.setdefault((c.engine, c.skipped), []).append(c.workload.name)
    lines = [f"{e} skipped: {why} ({', '.join(w)})" for (e, why), w in skipped.items()]
    lines += [n for c in cases for n in c.notes]
    lines += _verification(cases)
    lines.append("")
    engines = dict.fromkeys(c.engine for c in cases)
    lines += [f"{e}: {LARGE_ENGINES[e].description}." for e in engines if e in LARGE_ENGINES]
    lines.append("")
    lines.append(
        "ms: median wall time of one call between CUDA synchronisations, after an untimed "
        "warm-up on the same problem (autotuning, KeOps/JAX compilation); repeats stop at "
        "--budget. ms / iter: fixed protocol, the call / 10 (ot_batch's call also runs the "
        "final update, GeomLoss's last extrapolation). peak MB: torch.cuda.max_memory_allocated "
        "after reset_peak_memory_stats around the last timed call, inputs included, in 10^6 "
        "bytes (not tracked on the CPU or for JAX). value: <a, f> + <b, g> in GeomLoss's "
        "convention (the debiased divergence end to end); |grad|: norm of the gradient with "
        "respect to x. rel diff: against the first of " + ", ".join(REFERENCE_ORDER)
        + " that ran the same algorithm (flag above " + ", ".join(
            f"{p} {t:g}" for p, t in FLAG_REL_DIFF.items())
        + f"; gradient norms {FLAG_GRAD_REL_DIFF:g}). speed-up vs X: X's time / this "
        f"engine's (above 1: faster than X). Dense engines run where their n x m arrays take "
        f"< {FIT_BYTES / 1e9:.0f} GB; JAX keeps the GPU memory it grew to (it does not "
        "preallocate).")
    seen = {}
    for c in cases:
        seen.setdefault(c.workload.name, c.workload)
    lines += [f"{w.name}: {w.sizes}. {w.doc}" for w in seen.values()]
    return "\n".join(lines)


def row(suite: str, c: Case) -> dict:
    """The CSV row of one case (keys: :data:`CSV_COLUMNS`)."""
    wl, out = c.workload, c.output
    flagged = _flagged(c)
    return {
        "suite": suite, "workload": wl.name, "protocol": wl.protocol, "mode": wl.mode,
        "n": wl.n, "m": wl.m, "d": wl.d, "engine": c.engine, "device": c.device,
        "algorithm": _algorithm(c), "skipped": c.skipped or "",
        "repeats": c.timing.repeats if c.timing else 0,
        "times_s": ";".join(f"{t:.6g}" for t in c.timing.times) if c.timing else "",
        "median_ms": 1e3 * c.seconds, "ms_per_iter": _ms_per_iter(c),
        "peak_mb": "" if out is None or out.peak_mb is None else out.peak_mb,
        "value": "" if out is None else float(out.value_linear[0]),
        "grad_norm": "" if out is None or out.grad_norm is None else out.grad_norm,
        "verified_against": c.diff_ref, "max_rel_diff_value": c.rel_diff,
        "rel_diff_grad_norm": _grad_diff(c), "flagged": "" if flagged is None else flagged,
        **{f"speedup_vs_{p}": speedup(c, p) for p in PEERS},
        "note": "" if out is None else out.note,
    }


LAYOUT = report.Layout(environment, table, notes, CSV_COLUMNS, row)

assert set(REFERENCE_ORDER) == set(LARGE_ENGINES)  # every engine can be a reference
