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
from ot_batch.bench import report, workloads  # noqa: E402
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


# --- batch suite: ANCHORS.md's float32 batches, engines on CUDA when present, else CPU ---

import importlib.util  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

from ot_batch.bench import batch_report, batch_workloads, runner  # noqa: E402
from ot_batch.bench.cli import build_parser  # noqa: E402
from ot_batch.bench.device_engines import BATCH_ENGINES  # noqa: E402
from ot_batch.bench.engines import Output  # noqa: E402
from ot_batch.bench.timing import Timing  # noqa: E402

BATCH_WLS = ["pot_doc", "small", "medium", "large"]
BATCH_ENGS = ["ot_batch", "ot_batch_generic", "ot_batch_points", "ot_batch_points_tf32",
              "pot_batch_torch", "ott_vmap",
              "flash_sinkhorn_loop", "geomloss", "geomloss_keops"]
ALWAYS = {"ot_batch", "ot_batch_generic", "ot_batch_points", "ot_batch_points_tf32",
          "pot_batch_torch"}
needs_torch = pytest.mark.skipif(importlib.util.find_spec("torch") is None,
                                 reason="the batch suite's engines run on torch")


def _peers_module():
    """shared/bench/peers_batch.py (beside the checkout, or inside it), or skip."""
    root = Path(__file__).resolve().parents[1]
    for base in (root / "shared", root.parent / "shared", Path("/work/shared")):
        path = base / "bench" / "peers_batch.py"
        if path.is_file():
            spec = importlib.util.spec_from_file_location("peers_batch_under_test", path)
            mod = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(mod)
            return mod
    pytest.skip("shared/bench/peers_batch.py not found")


def test_batch_workloads_are_the_peers():
    peers = _peers_module()
    ours = {w.name: (w.B, w.n, w.m, w.d, w.reg, w.max_iter)
            for w in batch_workloads.WORKLOADS.values()}
    assert ours == peers.WORKLOADS
    assert all(w.tol == 0 for w in batch_workloads.WORKLOADS.values())
    # Same bits for seed 0: the direct differences (small sizes) and, past 4e8 elements, the
    # expanded |x|^2 + |y|^2 - 2 x.y the peers switch to.
    for B, n, m, d in [(3, 5, 7, 4), (1, 2500, 2500, 64)]:
        peers.WORKLOADS["under_test"] = (B, n, m, d, 0.05, 10)
        X, Y, M, _, _ = peers.make("under_test")
        X2, Y2, M2 = batch_workloads.anchors_data(B, n, m, d, seed=0)
        assert M2.dtype == np.float32 and M2.shape == (B, n, m)
        for ref, got in ((X, X2), (Y, Y2), (M, M2)):
            assert np.array_equal(ref, got)


def test_batch_problem_points_give_the_costs():
    wl = batch_workloads.WORKLOADS["small"].quick_version()
    pb = wl.generate(seed=3)
    assert pb.M.dtype == pb.X.dtype == np.float32
    assert pb.X.shape == (wl.B, wl.n, wl.d) and pb.Y.shape == (wl.B, wl.m, wl.d)
    X, Y = pb.X.astype(np.float64), pb.Y.astype(np.float64)
    D = ((X[:, :, None] - Y[:, None]) ** 2).sum(-1)
    np.testing.assert_allclose(D, pb.M, rtol=1e-5, atol=1e-7)
    assert not np.array_equal(pb.M, wl.generate(seed=4).M)
    head = pb.head(2)
    assert head.X.shape[0] == head.Y.shape[0] == head.M.shape[0] == 2


def test_batch_suite_parses():
    args = build_parser().parse_args(["batch", "--quick"])
    assert args.engines == BATCH_ENGS and args.workloads == BATCH_WLS and args.verify
    # Workload and engine names are the suite's own.
    with pytest.raises(SystemExit):
        main(["batch", "--workloads", "small_fixed", "--no-progress"])
    with pytest.raises(SystemExit):
        main(["batch", "--engines", "pot_loop", "--no-progress"])
    assert workloads.get("pot_doc").B == 128 and workloads.get("pot_doc").tol == 1e-3


@pytest.fixture(scope="module")
def batch_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench_batch")
    import contextlib
    import io

    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        rc = main(["batch", "--quick", "--repeats", "1", "--no-progress", "--out", str(out)])
    return rc, buf.getvalue(), out


def _available():
    return {e for e in BATCH_ENGS if BATCH_ENGINES[e].available() is None}


@needs_torch
def test_batch_quick_run_table_and_targets(batch_run):
    rc, text, out = batch_run
    assert rc == 0
    header = next(line for line in text.splitlines() if line.startswith("| workload"))
    for col in ("device", "median ms (batch)", "ms / iter", "x ot_batch",
                "max rel diff value_linear", "HBM bound ms/iter", "exp bound ms/iter",
                "x HBM bound"):
        assert col in header
    rows = [line.split("|") for line in text.splitlines()
            if line.startswith("| ") and not line.startswith("| workload")]
    assert [(r[1].strip(), r[2].strip()) for r in rows] == [
        (w, e) for w in BATCH_WLS for e in BATCH_ENGS]
    for e in set(BATCH_ENGS) - _available():
        assert f"{e} skipped: " in text
    # Every target is listed (the engines were all asked for), each with its own pair.
    n_targets = sum(len(batch_workloads.WORKLOADS[w].targets) for w in BATCH_WLS)
    assert text.count("target >= ") == n_targets == 14
    _, csv_rows = _read(out / "batch.csv")
    t = {(r["workload"], r["engine"]): float(r["median_s"]) for r in csv_rows}
    ratio = t[("medium", "pot_batch_torch")] / t[("medium", "ot_batch_points")]
    assert f"medium         pot_batch_torch / ot_batch_points = {ratio:6.2f}x" in text
    assert "target >= 20x" in text
    if "ott_vmap" in _available():
        ratio = t[("small", "ott_vmap")] / t[("small", "ot_batch")]
        assert f"small          ott_vmap / ot_batch = {ratio:6.2f}x   target >= 5x" in text
    assert (out / "batch.md").read_text().startswith("# ot_batch bench batch --quick")
    pytest.importorskip("matplotlib")
    assert (out / "batch.png").stat().st_size > 1000


@needs_torch
def test_batch_quick_run_csv(batch_run):
    _, text, out = batch_run
    cols, rows = _read(out / "batch.csv")
    assert cols == batch_report.CSV_COLUMNS
    by = {(r["workload"], r["engine"]): r for r in rows}
    available = _available()
    assert ALWAYS <= available
    for w in BATCH_WLS:
        wl = batch_workloads.WORKLOADS[w].quick_version()
        assert wl.B <= 8 and wl.n <= 16 and wl.max_iter <= 50
        ref_ms = float(by[(w, "ot_batch")]["ms_per_iter"])
        for e in BATCH_ENGS:
            r = by[(w, e)]
            hbm = float(r["hbm_bound_ms_per_iter"])
            assert math.isclose(hbm, 1e3 * 8 * wl.B * wl.n * wl.m / 3.0e12)
            assert math.isclose(float(r["exp_bound_ms_per_iter"]),
                                1e3 * 2 * wl.B * wl.n * wl.m / 3.9e12)
            if e not in available:  # a missing package, or no CUDA for FlashSinkhorn
                assert r["skipped"] == BATCH_ENGINES[e].available()
                continue
            assert r["skipped"] == "" and int(r["repeats"]) == 1
            assert int(r["B"]) == wl.B and int(r["n"]) == wl.n
            assert r["device"] in ("cpu", "cuda", "gpu")
            median = float(r["median_s"])
            assert median > 0
            if not BATCH_ENGINES[e].comparable:  # GeomLoss: total time only, not verified
                assert r["comparable"] == "False"
                assert math.isnan(float(r["ms_per_iter"]))
                assert math.isnan(float(r["max_rel_diff_value_linear"]))
                assert r["verified_against"] == ""
                continue
            ms = float(r["ms_per_iter"])
            assert math.isclose(ms, 1e3 * median / wl.max_iter)
            assert math.isclose(float(r["ratio_vs_ot_batch"]), ms / ref_ms)
            assert math.isclose(float(r["x_hbm_bound"]), ms / hbm)
            assert r["verified_against"] == "pot_batch_torch"
            diff = float(r["max_rel_diff_value_linear"])
            assert diff <= batch_report.FLAG_REL_DIFF, (w, e, diff)
            assert r["flagged"] == "False"
            assert float(r["iters_min"]) == float(r["iters_max"]) == wl.max_iter, (w, e)
        assert float(by[(w, "pot_batch_torch")]["max_rel_diff_value_linear"]) == 0.0
    assert "value_linear agrees with pot_batch_torch" in text and "FLAG" not in text


@needs_torch
def test_batch_engines_values():
    """From costs, from points and POT's float64 NumPy solve give one value_linear."""
    import ot

    wl = batch_workloads.WORKLOADS["medium"].quick_version()
    pb = wl.generate(seed=1)
    engs = ["ot_batch", "ot_batch_points", "pot_batch_torch"]
    cases = runner.run_suite([wl], engs, runner.Options(repeats=1, seed=1), progress=False,
                             registry=BATCH_ENGINES)
    ref = ot.batch.solve_batch(pb.M.astype(np.float64), reg=wl.reg, max_iter=wl.max_iter,
                               tol=0.0, method="log_sinkhorn").value_linear
    for c in cases:
        assert c.output.value_linear.shape == (wl.B,)
        np.testing.assert_allclose(c.output.value_linear, ref, rtol=2e-5, err_msg=c.engine)
    pts = cases[1].output.value_linear
    np.testing.assert_allclose(pts, cases[0].output.value_linear, rtol=1e-5)


def _fake(wl, engine, seconds, values, comparable=True):
    out = Output(np.asarray(values, dtype=np.float64))
    return runner.Case(wl, engine, wl.B, Timing([seconds]), out, comparable=comparable,
                       device="cpu")


def test_batch_verification_flags_and_falls_back():
    wl = batch_workloads.WORKLOADS["pot_doc"].quick_version()
    v = np.linspace(1.0, 2.0, wl.B)
    group = [_fake(wl, "ot_batch", 0.5, v * (1 + 3e-5)),
             _fake(wl, "ot_batch_points", 0.25, v * (1 + 1e-6)),
             _fake(wl, "pot_batch_torch", 5.0, v),
             _fake(wl, "geomloss", 1.0, v * 3, comparable=False)]
    runner._compare(group, against="pot_batch_torch")
    ours, pts, pot, geo = group
    assert math.isclose(ours.rel_diff, 3e-5, rel_tol=1e-6) and ours.diff_ref == "pot_batch_torch"
    assert math.isclose(pts.rel_diff, 1e-6, rel_tol=1e-6) and pot.rel_diff == 0.0
    assert math.isnan(geo.rel_diff) and geo.diff_ref == ""
    assert pot.ratio == 10.0 and math.isclose(pts.per_iter_ms, 1e3 * 0.25 / wl.max_iter)
    table = batch_report.table(group)
    assert "3.0e-05 FLAG" in table and "1.0e-06 FLAG" not in table
    assert "2.00x (total)" in table and "n/a (total only)" in table
    notes = batch_report.notes(group)
    assert "pot_doc: FLAG ot_batch differs from pot_batch_torch by 3.0e-05" in notes
    assert "ot_batch_points differs" not in notes
    targets = report.targets(group)
    assert "pot_doc        pot_batch_torch / ot_batch =  10.00x   target >= 10x: met" in targets
    assert "pot_batch_torch / ot_batch_points =  20.00x   target >= 20x: met" in targets
    assert "ott_vmap" not in targets  # not asked for: no line
    # Without POT, values are compared with ot_batch's, and the notes say so.
    group = [_fake(wl, "ot_batch", 0.5, v), _fake(wl, "ot_batch_points", 0.5, v * (1 - 2e-5))]
    runner._compare(group, against="pot_batch_torch")
    assert group[1].diff_ref == "ot_batch" and math.isclose(group[1].rel_diff, 2e-5)
    assert "(pot_batch_torch did not run)" in batch_report.notes(group)


@needs_torch
def test_batch_missing_package_is_skipped(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(BATCH_ENGINES["ott_vmap"], "available", lambda: "ott is not installed")
    rc = main(["batch", "--quick", "--workloads", "pot_doc", "--engines", "ot_batch,ott_vmap",
               "--repeats", "1", "--no-progress", "--no-plot", "--out", str(tmp_path)])
    assert rc == 0
    text = capsys.readouterr().out
    assert "ott_vmap skipped: ott is not installed" in text
    assert "pot_doc        ott_vmap / ot_batch: not measured (target >= 5x)" in text
    _, rows = _read(tmp_path / "batch.csv")
    assert [r["skipped"] for r in rows] == ["", "ott is not installed"]


def _has(module):
    return importlib.util.find_spec(module) is not None


def test_batch_peers_flash_sinkhorn_and_keops_are_registered():
    """FlashSinkhorn (loop, comparable) and GeomLoss on KeOps (a GeomLoss, not comparable) are
    engines of the suite, run by default, and say why they cannot run here (if they cannot)."""
    from ot_batch.bench.device_engines import GeomLoss
    from ot_batch.bench.suites import SUITES

    flash, keops = BATCH_ENGINES["flash_sinkhorn_loop"], BATCH_ENGINES["geomloss_keops"]
    assert {"flash_sinkhorn_loop", "geomloss_keops"} <= set(SUITES["batch"].engines)
    assert flash.kind == "loop" and flash.comparable and flash.points
    assert isinstance(keops, GeomLoss) and not keops.comparable and keops.points
    assert (keops.backend, BATCH_ENGINES["geomloss"].backend) == ("online", "tensorized")
    missing = [m for m in ("torch", "flash_sinkhorn") if not _has(m)]
    if missing:
        assert flash.available() == f"{missing[0]} is not installed"
    else:
        import torch

        assert flash.available() == (None if torch.cuda.is_available()
                                     else "needs a CUDA device")
    missing = [m for m in ("torch", "geomloss", "pykeops") if not _has(m)]
    assert keops.available() == (f"{missing[0]} is not installed" if missing else None)


@needs_torch
def test_batch_flash_sinkhorn_needs_cuda(monkeypatch):
    import torch

    if not _has("flash_sinkhorn"):
        pytest.skip("flash_sinkhorn is not installed")
    flash = BATCH_ENGINES["flash_sinkhorn_loop"]
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert flash.available() == "needs a CUDA device"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert flash.available() is None


@needs_torch
def test_batch_new_peers_skipped_in_the_run(tmp_path, capsys, monkeypatch):
    """Without pykeops (or without CUDA for FlashSinkhorn) the run goes on and says why."""
    monkeypatch.setattr(BATCH_ENGINES["geomloss_keops"], "available",
                        lambda: "pykeops is not installed")
    monkeypatch.setattr(BATCH_ENGINES["flash_sinkhorn_loop"], "available",
                        lambda: "needs a CUDA device")
    rc = main(["batch", "--quick", "--workloads", "pot_doc", "--engines",
               "ot_batch,flash_sinkhorn_loop,geomloss_keops", "--repeats", "1",
               "--no-progress", "--no-plot", "--out", str(tmp_path)])
    assert rc == 0
    text = capsys.readouterr().out
    assert "flash_sinkhorn_loop skipped: needs a CUDA device" in text
    assert "geomloss_keops skipped: pykeops is not installed" in text
    _, rows = _read(tmp_path / "batch.csv")
    assert [r["skipped"] for r in rows] == ["", "needs a CUDA device", "pykeops is not installed"]


def _flash_alternating(C, eps, iters, f_first=True):
    """NumPy transcription of FlashSinkhorn's ``sinkhorn_flashstyle_alternating`` (balanced,
    GeomLoss's convention, uniform weights): f = g = 0, then ``iters`` times an f-update from
    g and a g-update from the new f (``f_first=False``: g first, OTT-JAX's order)."""
    from scipy.special import logsumexp

    n, m = C.shape
    f, g = np.zeros(n), np.zeros(m)

    def f_update(g):
        return -eps * logsumexp((g[None, :] - C) / eps - np.log(m), axis=1)

    def g_update(f):
        return -eps * logsumexp((f[:, None] - C) / eps - np.log(n), axis=0)
    for _ in range(iters):
        if f_first:
            f = f_update(g)
            g = g_update(f)
        else:
            g = g_update(f)
            f = f_update(g)
    return f, g


def test_batch_flash_sinkhorn_value_is_pots():
    """FlashSinkhorn's iterates are POT's ot.batch ones: the plan of its potentials after
    max_iter iterations (summarize, from _plan_value) has POT's value_linear; three iterations,
    where the other order (g first) is 4e-4 away."""
    import dataclasses

    import ot

    from ot_batch.bench.device_engines import Prepared, _plan_value

    wl = batch_workloads.WORKLOADS["small"].quick_version()
    pb = dataclasses.replace(wl.generate(seed=2), max_iter=3)
    M = pb.M.astype(np.float64)
    ref = np.asarray(ot.batch.solve_batch(M, reg=pb.reg, max_iter=pb.max_iter, tol=0.0,
                                          method="log_sinkhorn").value_linear)
    raw = [_flash_alternating(C, pb.reg, pb.max_iter) for C in M]
    out = BATCH_ENGINES["flash_sinkhorn_loop"].summarize(raw, Prepared(pb, (), n_iter=3))
    np.testing.assert_allclose(out.value_linear, ref, rtol=1e-12)
    assert out.n_iter.tolist() == [3] * wl.B and out.converged is None
    other = np.array([_plan_value(*_flash_alternating(C, pb.reg, pb.max_iter, f_first=False),
                                  C, pb.reg) for C in M])
    assert np.max(np.abs(other - ref) / ref) > 1e-4


@needs_torch
def test_batch_flash_sinkhorn_loss_is_the_suite_problem():
    """The SamplesLoss each problem gets: alternating, exactly max_iter iterations at eps = reg
    (no epsilon scaling, no early stop), potentials, float32 products; its cost |x - y|^2 of
    the suite's (1/sqrt(d)) points is M."""
    if not _has("flash_sinkhorn"):
        pytest.skip("flash_sinkhorn is not installed")
    import torch

    from ot_batch.bench.device_engines import FlashSinkhornLoop

    wl = batch_workloads.WORKLOADS["medium"].quick_version()
    pb = wl.generate(seed=5)
    loss = FlashSinkhornLoop.loss(wl.reg, wl.max_iter)
    assert loss.backend == "alternating" and loss.potentials and not loss.debias
    assert not loss.use_epsilon_scaling and loss.threshold is None
    assert not loss.allow_tf32 and not loss.truncate_tf32 and not loss.normalize
    x, y = torch.as_tensor(pb.X[0]), torch.as_tensor(pb.Y[0])
    assert loss._eps_list_for_inputs(x, y) == [wl.reg] * wl.max_iter
    X, Y = pb.X.astype(np.float64), pb.Y.astype(np.float64)
    cost = loss.cost_scale * ((X[:, :, None] - Y[:, None]) ** 2).sum(-1)
    np.testing.assert_allclose(cost, pb.M, rtol=1e-5, atol=1e-7)
    if not torch.cuda.is_available():
        # On the CPU the call fails (CUDA tensors only): the case is skipped, with the error.
        flash = BATCH_ENGINES["flash_sinkhorn_loop"]
        with pytest.raises(runner.Skip, match="failed: ValueError: .*requires CUDA tensors"):
            flash.run(flash.prepare(pb))


@needs_torch
def test_grad_quick_rows(tmp_path, capsys):
    """``python -m ot_batch.bench grad --quick`` (the ot_batch engines, solve_sample_batch at
    n = 200, to stay short): every row printed as JSON and written, no errors, positive times."""
    pytest.importorskip("jax")
    import json

    rc = main(["grad", "--quick", "--engines", "ot_batch_jax_implicit,ot_batch_torch_implicit",
               "--funcs", "solve_sample", "--n", "200", "--out", str(tmp_path)])
    assert rc == 0
    rows = json.loads((tmp_path / "grad.json").read_text())
    printed = [json.loads(line) for line in capsys.readouterr().out.splitlines()
               if line.startswith("{")]
    assert printed == rows
    hess = [r for r in rows if r["workload"] == "hessian"]
    gvf = [r for r in rows if r["workload"] == "grad_vs_forward"]
    assert [(r["engine"], r["wrt"]) for r in hess] == [("ot_batch_jax_implicit", "a"),
                                                       ("ot_batch_torch_implicit", "a")]
    assert [(r["lib"], r["func"], r["mode"]) for r in gvf] == [
        (lib, "solve_sample", mode) for lib in ("torch", "jax")
        for mode in ("forward", "envelope", "implicit", "hvp")]
    for r in rows:
        assert "error" not in r and "skipped" not in r, r
        assert r["median_s"] > 0 and r["compile_s"] > 0 and r["repeats"] == 1, r
    assert hess[1]["diff_ref"] == "ot_batch_jax_implicit" and hess[1]["max_rel_diff"] < 1e-2
    assert all(r["ratio_vs_forward"] > 0 for r in gvf if r["mode"] != "forward")
    assert "| ot_batch_torch_implicit | a |" in (tmp_path / "grad.md").read_text()
