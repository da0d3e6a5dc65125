"""``python -m ot_batch.bench gromov``: a quick run on the CPU, its objective, its outputs."""
from __future__ import annotations

import csv

import numpy as np
import pytest

pytest.importorskip("ot")
torch = pytest.importorskip("torch")

from ot_batch.bench import gromov  # noqa: E402


def test_objective_is_pots_loss():
    import ot
    Ca, Cb, M = gromov.structures(3, 6, seed=1, fused=True)
    T = np.random.default_rng(0).random((3, 6, 6))
    T /= T.sum((1, 2), keepdims=True)
    for i in range(3):
        quad = ot.gromov.gwloss(*ot.gromov.init_matrix(Ca[i], Cb[i], T[i].sum(1), T[i].sum(0),
                                                       "square_loss"), T[i])
        np.testing.assert_allclose(gromov.gw_value(Ca, Cb, T)[i], quad, rtol=1e-12)
        np.testing.assert_allclose(gromov.gw_value(Ca, Cb, T, M)[i],
                                   0.5 * quad + 0.5 * np.sum(M[i] * T[i]), rtol=1e-12)


def test_quick_run_with_curve(tmp_path, capsys, monkeypatch):
    # the kernels' interpreter would run every solve of the curve: the generic solver here
    # (TRITON_INTERPRET stays set: a kernel module first imported without it would compile
    # for a GPU)
    import ot_batch.backends.triton as triton_backend
    monkeypatch.setattr(triton_backend, "available", lambda tensor=None: False)
    code = gromov.main(["--quick", "--repeats", "1", "--workloads", "gw_64x32,fgw_64x32",
                        "--curve", "--profile", "--cg-steps", "2", "--out", str(tmp_path)])
    assert code == 0
    text = (tmp_path / "gromov.md").read_text()
    assert "## Objective versus time" in text and "cg_steps=2" in text
    rows = list(csv.DictReader(open(tmp_path / "gromov.csv")))
    assert {r["engine"] for r in rows} == {"ot_batch", "pot_batch", "pot_loop"}
    ours = [r for r in rows if r["engine"] == "ot_batch"]
    assert all(float(r["marg_err"]) < 1e-6 for r in ours)
    if not torch.cuda.is_available():
        assert "no CUDA device" in text


def test_bad_workload():
    with pytest.raises(SystemExit):
        gromov.main(["--workloads", "nope"])


@pytest.mark.parametrize("bad", ["0", "two", "-3"])
def test_bad_split(bad):
    with pytest.raises(SystemExit):
        gromov.main(["--split", bad])


def test_split_sets_the_kernels_default_for_the_run_only(monkeypatch, tmp_path):
    from ot_batch.backends.triton import sinkhorn_split
    seen = []
    monkeypatch.setattr(gromov, "run", lambda *a, **k: (seen.append(
        sinkhorn_split.DEFAULT_SPLIT), ([], ""))[1])
    monkeypatch.setattr(gromov, "curve", lambda *a, **k: (seen.append(
        sinkhorn_split.DEFAULT_SPLIT), ([], ""))[1])
    before = sinkhorn_split.DEFAULT_SPLIT
    for arg, want in (("auto", None), ("3", 3)):
        assert gromov.main(["--split", arg, "--workloads", "gw_64x32", "--curve",
                            "--out", str(tmp_path)]) == 0
        assert seen[-2:] == [want, want] and sinkhorn_split.DEFAULT_SPLIT == before
        assert f"split={arg};" in (tmp_path / "gromov.md").read_text()
