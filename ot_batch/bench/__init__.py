"""Benchmarks: ``python -m ot_batch.bench SUITE [--quick] [--engines ...] [--out DIR]``.

Suites (subcommands): ``cpu`` (ot_batch vs POT ``ot.batch`` vs a loop of POT ``ot.solve`` on
NumPy float64); ``batch`` (ANCHORS.md's float32 batches at a fixed iteration count: ot_batch
from costs and from points vs POT ``ot.batch`` on torch, OTT-JAX vmap and GeomLoss, on CUDA
when present, else on CPU); ``gromov`` (batched Gromov-Wasserstein); ``large`` (one large
point-cloud problem: FlashSinkhorn's protocol, the end-to-end debiased divergence and peak
memory at 10^6 points, vs FlashSinkhorn, GeomLoss and OTT-JAX); ``exact`` (exact OT,
``reg=None``, of batches of point-cloud problems: ot_batch on NumPy and CUDA vs a loop of
``ot.emd2``, lapx's batch assignment solver, SciPy and mdot-tnt). Each (workload, engine)
pair is warmed up, timed (median of repeats within a time budget) and its ``value_linear``
compared with the suite's reference (ot_batch's; POT's in ``batch``); the table goes to stdout
and a CSV, the same table (``.md``) and a bar plot of the time ratios to ``--out``
(``bench_results/``).

Modules, one job each: ``workloads`` (seeded data; the ``cpu`` suite's), ``engines`` (how each
engine runs; the ``cpu`` suite's), ``batch_workloads`` and ``device_engines`` (the ``batch``
suite's), ``timing`` (warm-up, repeats, median), ``runner`` (pairs, loop subsets,
verification), ``report`` (table, CSV, plot) and ``batch_report`` (the ``batch`` suite's
columns), ``large_workloads``, ``large_engines`` and ``large_report`` (the ``large``
suite's), ``exact_workloads``, ``exact_engines`` and ``exact_report`` (the ``exact`` suite's),
``suites`` (what each subcommand runs), ``cli`` (arguments).
"""
from .cli import main

__all__ = ["main"]
