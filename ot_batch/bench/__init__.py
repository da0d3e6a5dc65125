"""Benchmarks: ``python -m ot_batch.bench SUITE [--quick] [--engines ...] [--out DIR]``.

Suites (subcommands): ``cpu`` (ot_batch vs POT ``ot.batch`` vs a loop of POT ``ot.solve`` on
NumPy). Each (workload, engine) pair is warmed up, timed (median of repeats within a time
budget) and its ``value_linear`` compared with ot_batch's; the table goes to stdout and a CSV,
the same table (``.md``) and a bar plot of the time ratios to ``--out`` (``bench_results/``).

Modules, one job each: ``workloads`` (seeded data), ``engines`` (how each engine runs),
``timing`` (warm-up, repeats, median), ``runner`` (pairs, loop subsets, verification),
``report`` (table, CSV, plot), ``suites`` (what each subcommand runs), ``cli`` (arguments).
"""
from .cli import main

__all__ = ["main"]
