"""The benchmark CLI (`python -m ot_batch.bench cpu --quick`): table, CSV, plot, scaling.

Timings are never asserted; only that the benchmark runs, reports every case and that the
engines it compares agree.
"""
from __future__ import annotations

import csv
import math

import pytest

pytest.importorskip("ot")

from ot_batch.bench import main  # noqa: E402
from ot_batch.bench import workloads  # noqa: E402
from ot_batch.bench.report import CSV_COLUMNS  # noqa: E402
from ot_batch.bench.timing import measure  # noqa: E402

WORKLOADS = ["pot_doc", "small_fixed", "converge_256"]
ENGINES = ["ot_batch", "pot_batch", "pot_loop"]


def _read(path):
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        return reader.fieldnames, list(reader)


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    import contextlib
    import io

    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        rc = main(["cpu", "--quick", "--repeats", "1", "--no-progress", "--out", str(out)])
    return rc, buf.getvalue(), out


def test_quick_run_prints_table_and_targets(quick_run):
    rc, text, _ = quick_run
    assert rc == 0
    header = next(line for line in text.splitlines() if line.startswith("| workload"))
    for col in ("engine", "median s (batch)", "ms / problem", "x ot_batch", "target",
                "max rel diff value_linear", "converged"):
        assert col in header
    rows = [line for line in text.splitlines()
            if line.startswith("| ") and not line.startswith("| workload")]
    assert len(rows) == len(WORKLOADS) * len(ENGINES)
    for wl in WORKLOADS:
        for eng in ENGINES:
            assert any(r.split("|")[1].strip() == wl and r.split("|")[2].strip() == eng
                       for r in rows), (wl, eng)
    # Every target is printed with its verdict.
    assert "pot_doc        pot_loop / ot_batch =" in text
    assert text.count("target >= ") == 5
    assert "met" in text


def test_quick_run_csv(quick_run):
    _, _, out = quick_run
    cols, rows = _read(out / "cpu.csv")
    assert cols == CSV_COLUMNS
    assert [(r["workload"], r["engine"]) for r in rows] == [
        (w, e) for w in WORKLOADS for e in ENGINES]
    for r in rows:
        wl = workloads.get(r["workload"], quick=True)
        assert int(r["B"]) == wl.B and int(r["n"]) == wl.n
        assert r["skipped"] == ""
        assert int(r["repeats"]) == 1 and int(r["timed_problems"]) == wl.B
        assert float(r["median_s"]) > 0
        assert math.isclose(float(r["per_problem_ms"]), 1e3 * float(r["median_s"]) / wl.B)
        if r["engine"] == "ot_batch":
            assert float(r["ratio_vs_ot_batch"]) == 1.0
            assert float(r["max_rel_diff_value_linear"]) == 0.0
            share = float(r["converged_share"])
            assert share == (0.0 if wl.tol == 0 else 1.0)
            continue
        # Engines agree: loose only where the tolerance is loose (pot_doc, tol=1e-3).
        diff = float(r["max_rel_diff_value_linear"])
        assert diff < (1e-2 if wl.tol >= 1e-3 else 1e-4), (r["workload"], r["engine"], diff)
        ratio, target = float(r["ratio_vs_ot_batch"]), float(r["target_ratio"])
        assert ratio > 0
        if math.isnan(target):
            assert r["target_met"] == ""
        else:
            assert r["target_met"] == str(ratio >= target)
    # Iteration counts: fixed-iteration workload runs exactly max_iter; POT reports 1-based.
    small = {r["engine"]: r for r in rows if r["workload"] == "small_fixed"}
    n_fixed = workloads.get("small_fixed", quick=True).max_iter
    for eng in ("ot_batch", "pot_batch"):
        assert float(small[eng]["iters_min"]) == float(small[eng]["iters_max"]) == n_fixed
    conv = {r["engine"]: r for r in rows if r["workload"] == "converge_256"}
    assert not math.isnan(float(conv["pot_loop"]["iters_max"]))  # from the extra pass
    assert float(conv["pot_batch"]["iters_min"]) >= float(conv["ot_batch"]["iters_max"]) - 10


def test_quick_run_writes_table_and_plot(quick_run):
    _, text, out = quick_run
    assert (out / "cpu.md").read_text().startswith("# ot_batch bench cpu --quick")
    pytest.importorskip("matplotlib")
    assert (out / "cpu.png").stat().st_size > 1000


def test_loop_is_timed_on_a_subset_and_scaled(tmp_path, capsys):
    rc = main(["cpu", "--quick", "--workloads", "small_fixed", "--engines", "ot_batch,pot_loop",
               "--repeats", "1", "--loop-budget", "0", "--no-progress", "--no-plot",
               "--out", str(tmp_path)])
    assert rc == 0
    text = capsys.readouterr().out
    _, rows = _read(tmp_path / "cpu.csv")
    loop = next(r for r in rows if r["engine"] == "pot_loop")
    B = workloads.get("small_fixed", quick=True).B
    assert loop["scaled"] == "True" and int(loop["timed_problems"]) == 8 < B
    assert f"timed the first 8 of {B} problems and scaled x{B / 8:g}" in text
    assert float(loop["max_rel_diff_value_linear"]) < 1e-4  # compared on the subset


def test_bad_arguments():
    with pytest.raises(SystemExit):
        main(["cpu", "--engines", "nope", "--no-progress"])
    with pytest.raises(SystemExit):
        main(["cpu", "--workloads", "nope", "--no-progress"])
    assert main([]) == 2


def test_measure_respects_budget():
    calls = []
    timing, out = measure(lambda: calls.append(1) or len(calls), repeats=5,
                          warmup=lambda: None)
    assert timing.repeats == 5 and out == 5
    timing, _ = measure(lambda: sum(range(10000)), repeats=5, budget_s=0.0)
    assert timing.repeats == 1
