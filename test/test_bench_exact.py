"""The ``exact`` benchmark suite (`python -m ot_batch.bench exact --quick`): it runs on the CPU,
its engines agree with POT's ot.emd2, and an engine whose package is missing is skipped.

Timings are never asserted.
"""
from __future__ import annotations

import contextlib
import csv
import io
import math
import sys

import numpy as np
import pytest

pytest.importorskip("ot")

from ot_batch.bench import exact_report, main, runner  # noqa: E402
from ot_batch.bench.engines import Output  # noqa: E402
from ot_batch.bench.exact_engines import EXACT_ENGINES, cpu_threads  # noqa: E402
from ot_batch.bench.exact_workloads import DEFAULT, WORKLOADS, uniform_clouds  # noqa: E402
from ot_batch.bench.timing import Timing  # noqa: E402

CPU_ENGINES = ["ot_batch", "emd2_loop", "lsa_loop", "lapx_batch"]
GPU_ENGINES = ["ot_batch_cuda", "ot_batch_cuda32", "mdot_tnt"]


def _exact_landed() -> bool:
    return EXACT_ENGINES["ot_batch"].available() is None


def _read(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench_exact")
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        rc = main(["exact", "--quick", "--repeats", "1", "--no-progress", "--no-plot",
                   "--engines", ",".join(CPU_ENGINES + GPU_ENGINES), "--out", str(out)])
    return rc, buf.getvalue(), out


def test_quick_run_table(quick_run):
    rc, text, _ = quick_run
    assert rc == 0
    assert f"CPU threads used: {cpu_threads()}" in text
    header = next(line for line in text.splitlines() if line.startswith("| workload"))
    for col in ("median ms (batch)", "x best CPU ref", "x ot_batch_cuda",
                "max rel err vs emd2", "max |gap|"):
        assert col in header
    rows = [line.split("|") for line in text.splitlines()
            if line.startswith("| ") and not line.startswith("| workload")]
    assert len(rows) == len(DEFAULT) * len(CPU_ENGINES + GPU_ENGINES)
    assert "Targets" not in text  # the suite has none: no empty block
    assert "FLAG" not in text


def test_quick_run_csv_and_agreement(quick_run):
    _, _, out = quick_run
    rows = _read(out / "exact.csv")
    assert [(r["workload"], r["engine"]) for r in rows] == [
        (w, e) for w in DEFAULT for e in CPU_ENGINES + GPU_ENGINES]
    for r in rows:
        wl = WORKLOADS[r["workload"]].quick_version()
        assert int(r["B"]) == wl.B and int(r["n"]) == wl.n
        if r["engine"] == "ot_batch" and not _exact_landed():
            assert "no exact solver" in r["skipped"]
            continue
        if r["engine"] in GPU_ENGINES and r["skipped"]:
            continue  # no CUDA or no mdot_tnt here (checked below)
        assert r["skipped"] == "", r
        assert float(r["median_s"]) > 0
        assert int(r["cpu_threads"]) == cpu_threads()
        if r["engine"] == "emd2_loop":
            assert float(r["max_rel_diff_value_linear"]) == 0.0
            continue
        assert r["verified_against"] == "emd2_loop"
        # exact solvers: round-off only (mdot_tnt is entropic: only reported)
        if not r["engine"].startswith("mdot"):
            tol = 1e-5 if r["engine"].endswith("32") else 1e-12
            assert float(r["max_rel_diff_value_linear"]) < tol, r
        assert r["best_cpu_engine"] in ("emd2_loop", "lapx_batch")
        assert float(r["x_best_cpu"]) > 0


def test_gpu_engines_skip_cleanly_without_cuda(quick_run):
    torch = pytest.importorskip("torch")
    if torch.cuda.is_available():
        pytest.skip("CUDA present: the GPU engines run")
    _, text, out = quick_run
    skipped = {r["engine"]: r["skipped"] for r in _read(out / "exact.csv")}
    assert "needs CUDA" in skipped["ot_batch_cuda"] or "no exact solver" in skipped["ot_batch_cuda"]
    assert "needs CUDA" in skipped["ot_batch_cuda32"] or "no exact" in skipped["ot_batch_cuda32"]
    assert "mdot_tnt" in skipped["mdot_tnt"] or "needs CUDA" in skipped["mdot_tnt"]
    assert "mdot_tnt skipped:" in text


def test_missing_package_is_skipped(tmp_path, capsys, monkeypatch):
    # sys.modules[name] = None: find_spec answers None and `import lap` fails, as when absent.
    monkeypatch.setitem(sys.modules, "lap", None)
    rc = main(["exact", "--quick", "--workloads", "b64_n32", "--engines", "emd2_loop,lapx_batch",
               "--repeats", "1", "--no-progress", "--no-plot", "--out", str(tmp_path)])
    assert rc == 0
    assert "lapx_batch skipped: lap is not installed" in capsys.readouterr().out
    assert [r["skipped"] for r in _read(tmp_path / "exact.csv")] == ["", "lap is not installed"]


def test_assignment_engines_skip_nonuniform():
    wl = WORKLOADS["nonuniform"].quick_version()
    engines = ["emd2_loop", "lsa_loop", "lapx_batch"] + (["ot_batch"] if _exact_landed() else [])
    cases = runner.run_suite([wl], engines, runner.Options(repeats=1, verify_against="emd2_loop"),
                             progress=False, registry=EXACT_ENGINES)
    by = {c.engine: c for c in cases}
    assert "needs uniform weights and n == m" in by["lsa_loop"].skipped
    assert "needs uniform weights and n == m" in by["lapx_batch"].skipped
    assert by["emd2_loop"].output.value_linear.shape == (wl.B,)
    if "ot_batch" in by:
        assert by["ot_batch"].rel_diff < 1e-12


def test_threads_option(tmp_path, capsys):
    main(["exact", "--quick", "--workloads", "b64_n32", "--engines", "lapx_batch", "--threads",
          "1", "--repeats", "1", "--no-progress", "--no-plot", "--out", str(tmp_path)])
    text = capsys.readouterr().out
    assert "CPU threads used: 1 of" in text and "cpu, 1 threads, lap.lapjvr_batch" in text
    main(["exact", "--quick", "--workloads", "b64_n32", "--engines", "lapx_batch", "--repeats",
          "1", "--no-progress", "--no-plot", "--out", str(tmp_path)])
    assert cpu_threads() > 0 and f"CPU threads used: {cpu_threads()} of" in capsys.readouterr().out


def test_workload_data():
    X, Y, M = uniform_clouds(3, 5, 4, 2, seed=1)
    assert X.shape == (3, 5, 2) and Y.shape == (3, 4, 2) and M.dtype == np.float64
    np.testing.assert_allclose(M, ((X[:, :, None] - Y[:, None]) ** 2).sum(-1))
    pb = WORKLOADS["nonuniform"].quick_version().generate(0)
    np.testing.assert_allclose(pb.a.sum(1), 1.0)
    np.testing.assert_allclose(pb.b.sum(1), 1.0)
    assert pb.a.shape == (4, 12) and pb.b.shape == (4, 9)


def _fake(wl, engine, seconds, values):
    return runner.Case(wl, engine, wl.B, Timing([seconds]), Output(np.asarray(values, float)),
                       device="cpu")


def test_report_ratios_and_flags():
    wl = WORKLOADS["b64_n32"].quick_version()
    v = np.linspace(1.0, 2.0, wl.B)
    group = [_fake(wl, "ot_batch", 0.2, v), _fake(wl, "ot_batch_cuda", 0.05, v),
             _fake(wl, "emd2_loop", 4.0, v), _fake(wl, "lapx_batch", 0.4, v),
             _fake(wl, "mdot_tnt", 0.1, v * (1 + 3e-4))]
    for c in group:
        c.group = group
    runner._compare(group, against=exact_report.VERIFY_AGAINST)
    table = exact_report.table(group)
    line = {r.split("|")[2].strip(): [s.strip() for s in r.split("|")]
            for r in table.splitlines()[2:]}
    assert line["ot_batch"][8:11] == ["0.5x", "4x", "0.0e+00"]  # vs lapx_batch, vs cuda
    assert line["emd2_loop"][8:11] == ["10x", "80x", "(reference)"]
    assert line["mdot_tnt"][10] == "3.0e-04 FLAG"
    notes = exact_report.notes(group)
    assert "best CPU reference lapx_batch" in notes
    assert "FLAG mdot_tnt is 3.0e-04 from emd2_loop" in notes
    row = exact_report.row("exact", group[0])
    assert row["best_cpu_engine"] == "lapx_batch" and math.isclose(row["x_best_cpu"], 0.5)
    assert math.isclose(row["x_ot_batch_cuda"], 4.0)


def test_failing_solver_is_reported_not_fatal(tmp_path, capsys, monkeypatch):
    import ot_batch

    def broken(M, reg=None, a=None, b=None, max_iter=None, method="auto", n_threads=None):
        raise RuntimeError("boom")

    monkeypatch.setattr(ot_batch, "solve_batch", broken)
    rc = main(["exact", "--quick", "--workloads", "b64_n32", "--engines", "ot_batch,emd2_loop",
               "--repeats", "1", "--no-progress", "--no-plot", "--out", str(tmp_path)])
    assert rc == 0
    assert "ot_batch skipped: failed: RuntimeError: boom" in capsys.readouterr().out


def test_exact_sweep_needs_cuda():
    """The schedule sweep parses its options and refuses to run without a GPU."""
    torch = pytest.importorskip("torch")
    if torch.cuda.is_available():
        pytest.skip("runs for real on a GPU (python -m ot_batch.bench.exact_sweep)")
    from ot_batch.bench import exact_sweep

    with pytest.raises(SystemExit, match="CUDA"):
        exact_sweep.main(["--thetas", "8", "--divs", "128"])
