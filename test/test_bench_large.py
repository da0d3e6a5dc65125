"""The ``large`` benchmark suite (`python -m ot_batch.bench large --quick`) on the CPU.

Timings are never asserted: only that the suite runs, reports every case (engines whose
library is absent, or that fail, as skipped), compares values within one algorithm and
decides its targets.
"""
from __future__ import annotations

import contextlib
import csv
import io
import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("geomloss")

from ot_batch.bench import main, report, runner  # noqa: E402
from ot_batch.bench.cli import build_parser  # noqa: E402
from ot_batch.bench.large_engines import (ALTERNATING_F, ALTERNATING_G, ANNEALED,  # noqa: E402
                                          FIXED, LARGE_ENGINES, SYMMETRIC, LargeOutput)
from ot_batch.bench.large_report import (CSV_COLUMNS, FLAG_REL_DIFF,  # noqa: E402
                                         verify_against)
from ot_batch.bench.large_workloads import (DEFAULT, WORKLOADS, MemoryGoal,  # noqa: E402
                                            SpeedGoal, point_clouds)
from ot_batch.bench.suites import SUITES  # noqa: E402
from ot_batch.bench.timing import Timing  # noqa: E402

QUICK_WLS = ["fixed_10000_3", "e2e_10000_64_grad"]
QUICK_ENGS = ["ot_batch_online", "geomloss_tensorized", "flash_sinkhorn", "geomloss_online"]


def _read(path):
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        return reader.fieldnames, list(reader)


def _main(args):
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        rc = main(args)
    return rc, buf.getvalue()


def test_large_suite_is_registered():
    suite = SUITES["large"]
    assert suite.workloads == DEFAULT and set(DEFAULT) <= set(WORKLOADS)
    args = build_parser().parse_args(["large", "--quick"])
    assert args.engines == list(LARGE_ENGINES) and args.workloads == list(DEFAULT)
    assert {"fixed_50000_64", "e2e_50000_64", "e2e_50000_64_grad", "mem_1000000_64",
            "fixed_100000_1024", "e2e_10000_3"} <= set(WORKLOADS)
    with pytest.raises(SystemExit):  # names are the suite's own
        main(["large", "--workloads", "small", "--no-progress"])
    with pytest.raises(SystemExit):
        main(["large", "--engines", "pot_batch_torch", "--no-progress"])


def test_large_workloads_sizes_and_skips():
    wl = WORKLOADS["fixed_50000_1024"]
    assert (wl.n, wl.m, wl.d, wl.reg, wl.max_iter, wl.protocol) == (
        50000, 50000, 1024, 0.1, 10, "fixed")
    q = wl.quick_version()
    assert (q.name, q.n, q.m, q.d) == ("fixed_50000_1024", 500, 500, 8)
    assert WORKLOADS["e2e_10000_3"].quick_version().d == 3
    g = WORKLOADS["e2e_50000_64_grad"]
    assert g.backward and g.protocol == "e2e" and g.blur == 0.05 and g.scaling == 0.5
    mem = WORKLOADS["mem_1000000_64"]
    assert (mem.n, mem.d, mem.blur, mem.scaling) == (10 ** 6, 64, 0.5, 0.5)
    tens, ott = LARGE_ENGINES["geomloss_tensorized"], LARGE_ENGINES["ott_dense"]
    assert tens.not_here(WORKLOADS["fixed_10000_64"]) is None
    assert tens.not_here(WORKLOADS["fixed_50000_64"]).startswith("does not fit")  # 40 GB
    assert ott.not_here(WORKLOADS["fixed_50000_64"]) is None
    assert ott.not_here(WORKLOADS["fixed_100000_64"]).startswith("does not fit")
    assert ott.not_here(WORKLOADS["e2e_10000_3"]).startswith("N/A")
    assert LARGE_ENGINES["flash_sinkhorn_alt"].not_here(g).startswith("N/A")
    assert LARGE_ENGINES["ot_batch_online_f32"].not_here(g).startswith("N/A")
    assert "KeOps" in LARGE_ENGINES["geomloss_online"].not_here(mem)
    assert LARGE_ENGINES["ot_batch_online"].not_here(mem) is None


def test_point_clouds_follow_flash_sinkhorns_recipe():
    x, y, a, b = point_clouds(50, 60, 4, seed=3)
    torch.manual_seed(3)  # bench_forward.py's draws, in its order (on the CPU here)
    ref = [torch.randn(50, 4), torch.randn(60, 4), torch.rand(50) + 0.1, torch.rand(60) + 0.1]
    ref[2], ref[3] = ref[2] / ref[2].sum(), ref[3] / ref[3].sum()
    if not torch.cuda.is_available():
        for got, want in zip((x, y, a, b), ref):
            np.testing.assert_array_equal(got, want.numpy())
    assert x.dtype == np.float32 and x.shape == (50, 4) and y.shape == (60, 4)
    assert math.isclose(a.sum(), 1, rel_tol=1e-6) and math.isclose(b.sum(), 1, rel_tol=1e-6)
    x, y, _, _ = point_clouds(50, 60, 4, seed=3, unit_box=True)
    assert x.min() >= 0 and x.max() <= 1 and y.min() >= 0.05 and y.max() <= 0.95
    pb = WORKLOADS["e2e_10000_3"].quick_version().generate(seed=1)
    assert pb.X.shape == (1, 500, 3) and pb.a.shape == (1, 500) and pb.batch == 1
    assert pb.M.size == 0 and pb.workload.name == "e2e_10000_3"


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench_large")
    with pytest.MonkeyPatch.context() as mp:
        # the online kernels in Triton's interpreter take minutes: the ot_batch engine falls
        # back to backend='tensorized' when the variable is unset (and no CUDA)
        mp.delenv("TRITON_INTERPRET", raising=False)
        rc, text = _main(["large", "--quick", "--engines", ",".join(QUICK_ENGS),
                          "--workloads", ",".join(QUICK_WLS), "--repeats", "1",
                          "--no-progress", "--no-plot", "--out", str(out)])
    return rc, text, out


def test_large_quick_run_table(quick_run):
    rc, text, out = quick_run
    assert rc == 0
    header = next(line for line in text.splitlines() if line.startswith("| workload"))
    for col in ("engine", "ms (median)", "ms / iter", "peak MB", "value", "rel diff",
                "speed-up vs flash_sinkhorn", "speed-up vs geomloss_online", "note"):
        assert col in header
    rows = [line.split("|") for line in text.splitlines()
            if line.startswith("| ") and not line.startswith("| workload")]
    assert [(r[1].strip(), r[5].strip()) for r in rows] == [
        (w, e) for w in QUICK_WLS for e in QUICK_ENGS]
    assert (out / "large.md").read_text().startswith("# ot_batch bench large --quick")
    for e in ("flash_sinkhorn", "geomloss_online"):
        why = LARGE_ENGINES[e].available()
        if why is not None:  # absent here: reported, not a crash
            assert f"{e} skipped: {why}" in text


def test_large_quick_run_csv(quick_run):
    _, _, out = quick_run
    cols, rows = _read(out / "large.csv")
    assert cols == CSV_COLUMNS
    by = {(r["workload"], r["engine"]): r for r in rows}
    cuda = torch.cuda.is_available()
    for w in QUICK_WLS:
        for e in ("ot_batch_online", "geomloss_tensorized"):
            r = by[(w, e)]
            assert r["skipped"] == "" and int(r["repeats"]) == 1 and float(r["median_ms"]) > 0
            assert int(r["n"]) == 500 and r["device"] == ("cuda" if cuda else "cpu")
            assert (r["peak_mb"] != "") == cuda
    fixed = by[("fixed_10000_3", "ot_batch_online")]
    assert math.isclose(float(fixed["ms_per_iter"]), float(fixed["median_ms"]) / 10)
    assert fixed["algorithm"] == FIXED and by[("fixed_10000_3", "geomloss_tensorized")][
        "algorithm"] == SYMMETRIC
    if not cuda:
        assert "tensorized" in fixed["note"] and "TRITON_INTERPRET" in fixed["note"]
    # alone in its algorithm on the fixed protocol: its own reference
    assert fixed["verified_against"] == "ot_batch_online"
    grad = by[("e2e_10000_64_grad", "ot_batch_online")]
    ref = by[("e2e_10000_64_grad", "geomloss_tensorized")]
    assert grad["verified_against"] == "geomloss_tensorized" and grad["flagged"] == "False"
    assert float(grad["max_rel_diff_value"]) < FLAG_REL_DIFF["e2e"]
    assert float(grad["grad_norm"]) > 0 and float(grad["rel_diff_grad_norm"]) < 1e-3
    assert math.isclose(float(grad["value"]), float(ref["value"]), rel_tol=1e-4)
    assert math.isnan(float(grad["ms_per_iter"]))  # end to end: no time per iteration


def test_failing_and_absent_engines_are_skipped(tmp_path, monkeypatch):
    import ot_batch

    monkeypatch.delenv("TRITON_INTERPRET", raising=False)

    def boom(*args, **kwargs):
        raise RuntimeError("boom\nsecond line")
    monkeypatch.setattr(ot_batch, "samples_loss_batch", boom)
    monkeypatch.setattr(LARGE_ENGINES["ott_dense"], "available", lambda: "ott is not installed")
    rc, text = _main(["large", "--quick", "--workloads", "fixed_10000_3", "--engines",
                      "ot_batch_online,ott_dense,geomloss_tensorized", "--repeats", "1",
                      "--no-progress", "--no-plot", "--out", str(tmp_path)])
    assert rc == 0
    assert "ot_batch_online skipped: failed: RuntimeError: boom (fixed_10000_3)" in text
    assert "ott_dense skipped: ott is not installed" in text
    _, rows = _read(tmp_path / "large.csv")
    assert [r["skipped"] for r in rows] == [
        "failed: RuntimeError: boom", "ott is not installed", ""]


@pytest.mark.skipif(not all(LARGE_ENGINES[e].available() is None for e in ("ott_dense",)),
                    reason="needs jax and ott-jax")
def test_ott_value_is_in_geomlosss_convention():
    """OTT-JAX's g-first alternating iterations, its potentials shifted by eps log a, eps log b."""
    from scipy.special import logsumexp

    wl = WORKLOADS["fixed_10000_3"].quick_version()
    cases = runner.run_suite([wl], ["ott_dense"], runner.Options(repeats=1), progress=False,
                             registry=LARGE_ENGINES)
    out = cases[0].output
    assert out.algorithm == ALTERNATING_G and out.peak_mb is None
    pb = wl.generate()
    X, Y, a, b = (np.asarray(t[0], dtype=np.float64) for t in (pb.X, pb.Y, pb.a, pb.b))
    C = ((X[:, None] - Y[None]) ** 2).sum(-1)
    f, g, eps = np.zeros(len(a)), np.zeros(len(b)), wl.reg
    for _ in range(wl.max_iter):
        g = -eps * logsumexp(np.log(a)[:, None] + (f[:, None] - C) / eps, axis=0)
        f = -eps * logsumexp(np.log(b)[None] + (g[None] - C) / eps, axis=1)
    assert math.isclose(out.value_linear[0], a @ f + b @ g, rel_tol=1e-3)


def _case(wl, engine, seconds, value, algorithm, peak=None, grad=None):
    out = LargeOutput(np.array([value]), peak_mb=peak, grad_norm=grad, algorithm=algorithm)
    return runner.Case(wl, engine, 1, Timing([seconds]), out, device="cuda")


def _skipped(wl, engine, why="flash_sinkhorn is not installed"):
    return runner.Case(wl, engine, 0, skipped=why)


def _group(cases):
    return {c.engine: c for c in cases}


def test_speed_goal_takes_the_faster_flash_mode():
    wl = WORKLOADS["fixed_50000_64"]
    goal = SpeedGoal(("flash_sinkhorn", "flash_sinkhorn_alt"), 1.25)
    ours = _case(wl, "ot_batch_online", 0.040, 1.0, FIXED)
    res = goal.evaluate(_group([ours, _case(wl, "flash_sinkhorn", 0.060, 1.0, SYMMETRIC),
                                _case(wl, "flash_sinkhorn_alt", 0.047, 1.0, ALTERNATING_F)]))
    assert res.met is False and "(flash_sinkhorn_alt) / ot_batch_online =   1.18x" in res.text
    assert "target >= 1.25x: NOT met" in res.text
    res = goal.evaluate(_group([ours, _case(wl, "flash_sinkhorn", 0.052, 1.0, SYMMETRIC),
                                _skipped(wl, "flash_sinkhorn_alt")]))
    assert res.met is True and "1.30x" in res.text and res.text.endswith(": met")
    res = goal.evaluate(_group([ours, _skipped(wl, "flash_sinkhorn")]))
    assert res.met is None and "not measured" in res.text
    assert goal.evaluate(_group([ours])) is None  # no peer asked for: no line
    e2e = SpeedGoal(("flash_sinkhorn",), 2.0)
    wl = WORKLOADS["e2e_50000_64_grad"]
    res = e2e.evaluate(_group([_case(wl, "ot_batch_online", 0.1, 1.0, ANNEALED),
                               _case(wl, "flash_sinkhorn", 0.2, 1.0, ANNEALED)]))
    assert res.met is True and "flash_sinkhorn / ot_batch_online =   2.00x" in res.text


def test_memory_goal_and_report_targets():
    wl = WORKLOADS["mem_1000000_64"]
    goal = MemoryGoal(2000.0)
    assert goal.evaluate(_group([_case(wl, "ot_batch_online", 30, 1.0, ANNEALED, peak=1900)]
                                )).met is True
    res = goal.evaluate(_group([_case(wl, "ot_batch_online", 30, 1.0, ANNEALED, peak=2000)]))
    assert res.met is False and "= 2000 MB   target < 2000 MB: NOT met" in res.text
    res = goal.evaluate(_group([_case(wl, "ot_batch_online", 30, 1.0, ANNEALED)]))
    assert res.met is None and "not measured" in res.text  # CPU: no peak
    assert goal.evaluate(_group([_case(wl, "flash_sinkhorn", 30, 1.0, ANNEALED)])) is None
    # report.targets prints each workload's own goals
    fixed = WORKLOADS["fixed_50000_64"]
    cases = [_case(wl, "ot_batch_online", 30, 1.0, ANNEALED, peak=1500),
             _case(fixed, "ot_batch_online", 0.04, 1.0, FIXED),
             _case(fixed, "flash_sinkhorn", 0.06, 1.0, SYMMETRIC)]
    text = report.targets(cases)
    assert "mem_1000000_64     ot_batch_online peak GPU memory = 1500 MB" in text
    assert "fixed_50000_64     fastest of flash_sinkhorn, flash_sinkhorn_alt (flash_sinkhorn) " \
           "/ ot_batch_online =   1.50x   target >= 1.25x: met" in text


def test_values_are_compared_within_one_algorithm():
    wl = WORKLOADS["fixed_50000_64"]
    group = [_case(wl, "ot_batch_online", 0.04, 100.0 * (1 + 2e-5), FIXED),
             _case(wl, "ot_batch_online_f32", 0.08, 100.0, FIXED),
             _case(wl, "flash_sinkhorn", 0.05, 99.9 * (1 + 2e-3), SYMMETRIC),
             _case(wl, "geomloss_online", 0.9, 99.9, SYMMETRIC),
             _case(wl, "flash_sinkhorn_alt", 0.05, 99.0, ALTERNATING_F)]
    runner._compare(group, against=verify_against)
    for c in group:
        c.group = group
    ours, f32, flash, keops, alt = group
    assert ours.diff_ref == "ot_batch_online_f32"
    assert math.isclose(ours.rel_diff, 2e-5, rel_tol=1e-6)
    assert flash.diff_ref == "geomloss_online"
    assert math.isclose(flash.rel_diff, 2e-3, rel_tol=1e-6)
    assert alt.diff_ref == "flash_sinkhorn_alt" and alt.rel_diff == 0  # its own reference
    from ot_batch.bench import large_report

    assert large_report.speedup(ours, "flash_sinkhorn") == 0.05 / 0.04
    assert math.isclose(large_report.speedup(ours, "geomloss_online"), 0.9 / 0.04)
    table = large_report.table(group)
    assert "2.0e-03 vs geomloss_online FLAG" in table and "2.0e-05 vs" in table
    assert "2.0e-05 vs ot_batch_online_f32 FLAG" not in table
    notes = large_report.notes(group)
    assert "fixed_50000_64: FLAG flash_sinkhorn differs from geomloss_online" in notes
    assert "other algorithms vs ot_batch_online (not flagged" in notes
    assert large_report.row("large", ours)["speedup_vs_flash_sinkhorn"] == 0.05 / 0.04
    # without --verify nothing is compared
    fresh = [_case(wl, "ot_batch_online", 0.04, 1.0, FIXED),
             _case(wl, "geomloss_online", 0.9, 2.0, SYMMETRIC)]
    runner._compare(fresh, diffs=False, against=verify_against)
    assert all(c.diff_ref == "" and math.isnan(c.rel_diff) for c in fresh)
