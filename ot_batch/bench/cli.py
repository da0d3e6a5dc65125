"""Command line: ``python -m ot_batch.bench SUITE [options]``, one subcommand per suite."""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Sequence

from . import report
from .runner import Options, run_suite
from .suites import SUITES

__all__ = ["build_parser", "main"]


def _names(text: str) -> list[str]:
    return [s.strip() for s in text.split(",") if s.strip()]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m ot_batch.bench",
        description="Side-by-side timings of ot_batch against its peers. Timings are "
                    "reported, never asserted.")
    sub = parser.add_subparsers(dest="suite", metavar="SUITE")
    sub.add_parser("gromov", add_help=False,
                   help="batched Gromov-Wasserstein vs POT's batch (same device) and a loop of "
                        "ot.solve_gromov (CPU); see python -m ot_batch.bench gromov --help")
    sub.add_parser("sharded", add_help=False,
                   help="one problem in d = 3,072 (ANCHORS.md and OTT-JAX's blurred-images "
                        "tutorial): the sharded JAX solver vs OTT-JAX and FlashSinkhorn; see "
                        "python -m ot_batch.bench sharded --help")
    sub.add_parser("grad", add_help=False,
                   help="the price of derivatives: OTT-JAX's Sinkhorn divergence Hessians "
                        "tutorial (implicit vs unrolled, OTT-JAX vs ot_batch on JAX and torch) "
                        "and gradient / forward time ratios at 10,000 points; see "
                        "python -m ot_batch.bench grad --help")
    for suite in SUITES.values():
        p = sub.add_parser(suite.name, help=suite.help, description=suite.help)
        p.add_argument("--engines", type=_names, default=list(suite.engines),
                       help=f"comma-separated engines (default: {','.join(suite.engines)}; "
                            f"known: {','.join(suite.engine_registry)})")
        p.add_argument("--workloads", type=_names, default=list(suite.workloads),
                       help=f"comma-separated workloads (default: {','.join(suite.workloads)}; "
                            f"known: {','.join(suite.workload_registry)})")
        p.add_argument("--quick", action="store_true",
                       help="tiny sizes: a smoke test of the benchmark, not a measurement")
        p.add_argument("--repeats", type=int, default=3,
                       help="timed repeats per case after a warm-up (default 3; fewer when a "
                            "case would pass --budget); the median is reported")
        p.add_argument("--budget", type=float, default=20.0, metavar="SECONDS",
                       help="per case: start no repeat that would end past this (default 20)")
        p.add_argument("--loop-budget", type=float, default=30.0, metavar="SECONDS",
                       help="time a loop engine on its first problems and scale when the whole "
                            "loop would take longer than this (default 30)")
        p.add_argument("--verify", action=argparse.BooleanOptionalAction, default=suite.verify,
                       help="compare value_linear across engines (default: %(default)s)")
        p.add_argument("--seed", type=int, default=0, help="data seed (default 0)")
        p.add_argument("--out", type=Path, default=Path("bench_results"),
                       help="folder for the CSV, table and plot (default bench_results/)")
        p.add_argument("--no-plot", dest="plot", action="store_false", help="skip the plot")
        p.add_argument("--no-progress", dest="progress", action="store_false",
                       help="no progress bar")
        if suite.add_arguments is not None:
            suite.add_arguments(p)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["gromov"]:  # its own engines and outputs (objectives, not value_linear)
        from . import gromov
        return gromov.main(argv[1:])
    if argv[:1] == ["sharded"]:  # per-iteration times and the epsilon grid's diagonals
        from . import sharded
        return sharded.main(argv[1:])
    if argv[:1] == ["grad"]:  # Hessians and gradient / forward ratios, rows printed as JSON
        from . import grad
        return grad.main(argv[1:])
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.suite is None:
        parser.print_help()
        return 2
    suite = SUITES[args.suite]
    try:
        wls = [suite.workload(w, quick=args.quick) for w in args.workloads]
        for e in args.engines:
            if e not in suite.engine_registry:
                raise ValueError(f"unknown engine {e!r}; known: "
                                 f"{', '.join(suite.engine_registry)}")
        if suite.configure is not None:
            suite.configure(args)
    except ValueError as exc:
        parser.error(str(exc))
    if args.repeats < 1:
        parser.error("--repeats must be >= 1")
    opts = Options(repeats=args.repeats, budget_s=args.budget, loop_budget_s=args.loop_budget,
                   verify=args.verify, seed=args.seed, verify_against=suite.verify_against)
    layout = suite.layout

    env = layout.environment()  # before the run: the load average says who else is busy
    t0 = time.perf_counter()
    cases = run_suite(wls, args.engines, opts, progress=args.progress,
                      registry=suite.engine_registry)
    wall = time.perf_counter() - t0

    title = f"ot_batch bench {suite.name}" + (" --quick" if args.quick else "")
    targets = report.targets(cases)
    text = "\n\n".join([
        f"# {title}\n{env}",
        layout.table(cases),
        *(["Targets (speed-ups: first engine's time / second's; reported, not asserted):\n"
           + targets] if targets else []),  # suites without targets (exact) skip the block
        layout.notes(cases),
        f"Total wall time {wall:.1f} s"
        + (", load average at the end %.1f/%.1f/%.1f." % os.getloadavg()
           if hasattr(os, "getloadavg") else "."),
    ])
    print(text)
    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    written = [report.write_csv(cases, out / f"{suite.name}.csv", suite.name,
                                layout.csv_columns, layout.csv_row)]
    (out / f"{suite.name}.md").write_text(text + "\n")
    written.append(out / f"{suite.name}.md")
    if args.plot:
        png = report.plot(cases, out / f"{suite.name}.png", title)
        if png is not None:
            written.append(png)
    print("\nWrote " + ", ".join(str(p) for p in written))
    sys.stdout.flush()
    return 0
