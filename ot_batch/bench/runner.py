"""Runs (workload, engine) pairs: warm-up, timing, loop subsets, cross-engine verification."""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Iterable, Mapping, Union

import numpy as np

from . import engines as engines_mod
from .engines import Engine, Output
from .timing import Timing, measure, time_once
from .workloads import REFERENCE, Problem, Workload

__all__ = ["Options", "Case", "Skip", "run_case", "run_suite", "REFERENCE"]

# Ratios are taken against REFERENCE; value_linear differences against Options.verify_against
# (REFERENCE unless a suite names another engine, or a function that names each case's).


class Skip(Exception):
    """Raised by an engine's ``prepare`` or ``run``: the case is reported as skipped, with the
    message as the reason (a case the engine cannot or should not run, or a call that failed,
    without ending the whole suite)."""


# The engine whose value_linear a case is compared with: one name for every case, or
# ``against(case, cases)`` naming each case's (None: not compared).
VerifyAgainst = Union[str, Callable[["Case", list], Union[str, None]]]


@dataclass
class Options:
    repeats: int = 3
    budget_s: float = 20.0  # per case: no repeat that would end past this
    loop_budget_s: float = 30.0  # a loop whose full batch would take longer is timed on a subset
    loop_probe: int = 8  # problems of the first (warm-up) loop run that estimates the time
    warmup_problems: int = 8  # batch engines warm up on this many problems (unless warmup_full)
    verify: bool = True
    seed: int = 0
    # value_linear is compared with this engine's (with REFERENCE's when it did not run)
    verify_against: VerifyAgainst = REFERENCE


@dataclass
class Case:
    """One measured (workload, engine) pair."""

    workload: Workload
    engine: str
    timed_problems: int
    timing: Timing | None = None
    output: Output | None = None
    skipped: str | None = None  # why the engine did not run
    ratio: float = math.nan  # this engine's time / the reference engine's
    rel_diff: float = math.nan  # max relative difference of value_linear vs ``diff_ref``
    notes: list[str] = field(default_factory=list)
    diff_ref: str = ""  # the engine ``rel_diff`` was taken against
    # False when the engine's value is not value_linear and its iterations are its own (it
    # is then left out of verification and of per-iteration times)
    comparable: bool = True
    device: str = ""  # where the engine ran, when it says
    # every case of this workload in the run (this one too), filled by run_suite: lets a report
    # relate a case to its peers
    group: list = field(default_factory=list, repr=False, compare=False)

    @property
    def scale(self) -> float:
        return self.workload.B / self.timed_problems if self.timed_problems else math.nan

    @property
    def scaled(self) -> bool:
        return self.timed_problems < self.workload.B

    @property
    def seconds(self) -> float:
        """Median seconds for the whole batch (scaled up when timed on a subset)."""
        return self.timing.median * self.scale if self.timing else math.nan

    @property
    def per_problem_ms(self) -> float:
        return 1e3 * self.seconds / self.workload.B

    @property
    def per_iter_ms(self) -> float:
        """Milliseconds per iteration of the whole batch (NaN when not comparable)."""
        if not self.comparable:
            return math.nan
        return 1e3 * self.seconds / self.workload.max_iter

    @property
    def target(self) -> float:
        return self.workload.targets.get(self.engine, math.nan)

    @property
    def target_met(self) -> bool | None:
        if math.isnan(self.target) or math.isnan(self.ratio):
            return None
        return self.ratio >= self.target

    @property
    def converged_share(self) -> float:
        c = self.output.converged if self.output is not None else None
        return float(np.mean(c)) if c is not None and c.size else math.nan

    def iters(self) -> tuple[float, float, float]:
        it = self.output.n_iter if self.output is not None else None
        if it is None or not it.size:
            return (math.nan,) * 3
        return float(np.min(it)), float(np.median(it)), float(np.max(it))


def _loop_subset(engine: Engine, pb: Problem, opts: Options) -> tuple[int, float]:
    """Problems to time a loop engine on, from a first run on ``loop_probe`` problems.

    That first run is also the warm-up. The whole batch when it should take at most
    ``loop_budget_s``; else the largest power of two that fits (never fewer than the probe).
    """
    k0 = max(1, min(pb.batch, opts.loop_probe))
    head = engine.prepare(pb.head(k0))
    t0, _ = time_once(lambda: engine.run(head), engine.sync)
    per_problem = t0 / k0
    if per_problem * pb.batch <= opts.loop_budget_s:
        return pb.batch, per_problem
    fit = opts.loop_budget_s / per_problem if per_problem > 0 else pb.batch
    k = 2 ** int(math.floor(math.log2(max(fit, 1.0))))
    return max(k0, min(k, pb.batch)), per_problem


def run_case(wl: Workload, pb: Problem, engine: Engine, opts: Options) -> Case:
    """Time ``engine`` on ``pb`` (warm-up first) and keep its last output."""
    reason = engine.available()
    if reason is not None:
        return Case(wl, engine.name, 0, skipped=reason, comparable=engine.comparable)
    try:
        return _run_case(wl, pb, engine, opts)
    except Skip as exc:
        return Case(wl, engine.name, 0, skipped=str(exc), comparable=engine.comparable)


def _run_case(wl: Workload, pb: Problem, engine: Engine, opts: Options) -> Case:
    notes = []
    if engine.kind == "loop":
        k, per_problem = _loop_subset(engine, pb, opts)
        if k < pb.batch:
            notes.append(f"{engine.name} on {wl.name}: timed the first {k} of {pb.batch} "
                         f"problems and scaled x{pb.batch / k:g} (the whole loop would take "
                         f"~{per_problem * pb.batch:.0f} s)")
        warmup = None  # the probe run was the warm-up
    else:
        k = pb.batch
        # A full warm-up runs on the data the timed runs get: one device copy, and the same
        # jitted function (JAX compiles per function object and shape).
        wdata = None if engine.warmup_full else engine.prepare(pb.head(opts.warmup_problems))

        def warmup():
            return engine.run(data if wdata is None else wdata)
    sub = pb.head(k)
    data = engine.prepare(sub)
    timing, raw = measure(lambda: engine.run(data), repeats=opts.repeats, budget_s=opts.budget_s,
                          warmup=warmup, sync=engine.sync)
    out = engine.summarize(raw, data)
    if wl.report_iters and out.n_iter is None and opts.verify:
        out.n_iter = engine.iterations(sub)
    return Case(wl, engine.name, k, timing, out, notes=notes, comparable=engine.comparable,
                device=engine.device())


def _measured(cases: list[Case], engine: str) -> Case | None:
    return next((c for c in cases if c.engine == engine and c.output is not None), None)


def _compare(cases: list[Case], diffs: bool = True, against: VerifyAgainst = REFERENCE) -> None:
    """Fill ``ratio`` against REFERENCE (and ``rel_diff`` when ``diffs``), in place.

    ``rel_diff`` is ``max |v - v_ref| / |v_ref|`` of ``value_linear`` against the engine
    ``against`` (REFERENCE when that one did not run; or the engine ``against(case, cases)``
    names, when ``against`` is a function) over the problems both engines solved (the timed
    subset of a scaled loop); engines that are not ``comparable`` get none.
    """
    ref = _measured(cases, REFERENCE)
    if ref is not None:
        for c in cases:
            if c.output is not None:
                c.ratio = c.seconds / ref.seconds
    if not diffs:
        return
    fixed = None if callable(against) else _measured(cases, against) or ref
    for c in cases:
        if c.output is None or not c.comparable:
            continue
        vref = fixed
        if callable(against):
            name = against(c, cases)
            vref = None if name is None else _measured(cases, name)
        if vref is None or not vref.comparable:
            continue
        k = min(c.timed_problems, vref.timed_problems)
        v_ref, v = vref.output.value_linear[:k], c.output.value_linear[:k]
        c.rel_diff = float(np.max(np.abs(v - v_ref) / np.maximum(np.abs(v_ref), 1e-300)))
        c.diff_ref = vref.engine


def run_suite(workloads: Iterable[Workload], engine_names: Iterable[str], opts: Options,
              progress: bool = True, registry: Mapping[str, Engine] | None = None) -> list[Case]:
    """Every (workload, engine) pair, in order, with a tqdm bar over the pairs.

    Engines are looked up in ``registry`` (the ``cpu`` suite's :data:`~.engines.ENGINES` when
    None).
    """
    workloads, engine_names = list(workloads), list(engine_names)
    engs = [engines_mod.get(e, registry) for e in engine_names]
    try:
        from tqdm.auto import tqdm
    except ImportError:  # progress bar only
        tqdm = None
    bar = None
    if tqdm is not None:
        bar = tqdm(total=len(workloads) * len(engs), disable=not progress, unit="case",
                   desc="bench")
    cases: list[Case] = []
    try:
        for wl in workloads:
            pb = wl.generate(opts.seed)
            group = []
            for eng in engs:
                if bar is not None:
                    bar.set_postfix_str(f"{wl.name}/{eng.name}")
                group.append(run_case(wl, pb, eng, opts))
                if bar is not None:
                    bar.update()
            _compare(group, diffs=opts.verify, against=opts.verify_against)
            for c in group:
                c.group = group
            cases.extend(group)
    finally:
        if bar is not None:
            bar.close()
    return cases
