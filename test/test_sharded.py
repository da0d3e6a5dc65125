"""The sharded JAX solver (``ot_batch.sharded``) on eight host devices (see conftest).

References: OTT-JAX's dense ``PointCloud`` Sinkhorn at the same epsilon, and ot_batch's own
generic solver through ``solve_sample_batch`` on unsharded arrays.
"""
import json

import numpy as np
import pytest

import jax
import jax.numpy as jnp
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

import ot_batch
from ot_batch import sharded
from ot_batch.backends.jax_sharded import layout, sinkhorn

ott_costs = pytest.importorskip("ott.geometry.costs")
from ott.geometry import pointcloud  # noqa: E402
from ott.solvers import linear  # noqa: E402

OTT_COST = {"sqeuclidean": ott_costs.SqEuclidean, "negdot": ott_costs.NegDotProduct}


def clouds(n=64, m=48, d=5, seed=0):
    rng = np.random.default_rng(seed)
    return jnp.asarray(rng.normal(size=(n, d))), jnp.asarray(rng.normal(size=(m, d)) + 0.5)


def ott_solve(x, y, cost, reg, relative):
    geom = pointcloud.PointCloud(x, y, cost_fn=OTT_COST[cost](), epsilon=reg,
                                 relative_epsilon=relative)
    return geom, linear.solve(geom, threshold=1e-11, max_iterations=20000)


def centred(f, g):
    shift = jnp.mean(f)
    return np.asarray(f - shift), np.asarray(g + shift)


def test_eight_devices():
    assert len(jax.devices()) == 8


@pytest.mark.parametrize("mode", ["kept", "chunked"])
@pytest.mark.parametrize("relative", [None, "std", "mean"])
@pytest.mark.parametrize("cost", ["sqeuclidean", "negdot"])
def test_matches_ott_dense(cost, relative, mode):
    x, y = clouds()
    reg = 1.0 if relative == "mean" and cost == "negdot" else 0.3
    geom, ref = ott_solve(x, y, cost, reg, relative)
    out = sharded.solve_sample(x, y, reg=reg, cost=cost, relative_reg=relative, mode=mode,
                               chunk=5, tol=1e-11, max_iter=20000)
    assert out.mode == mode and bool(out.converged)
    np.testing.assert_allclose(float(out.epsilon), float(geom.epsilon), rtol=1e-10)
    for mine, theirs in zip(centred(out.f, out.g), centred(ref.f, ref.g)):
        np.testing.assert_allclose(mine, theirs, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(float(out.reg_ot_cost), float(ref.reg_ot_cost), rtol=1e-5)
    np.testing.assert_allclose(float(out.entropy), float(ref.entropy), rtol=1e-5)
    np.testing.assert_allclose(float(out.primal_cost), float(ref.primal_cost), rtol=1e-5)
    assert out.f.sharding.spec == P("points") and out.g.sharding.spec == P("points")


@pytest.mark.parametrize("mode", ["kept", "chunked"])
def test_diag_and_normalized_entropy_as_ott(mode):
    x, _ = clouds(n=64)
    y = 0.8 * x + 0.05 * jnp.asarray(np.random.default_rng(1).normal(size=x.shape))
    geom, ref = ott_solve(x, y, "negdot", 0.2, "std")
    out = sharded.solve_sample(x, y, reg=0.2, cost="negdot", relative_reg="std", mode=mode,
                               chunk=16, tol=1e-11, max_iter=20000)
    assert bool(out.converged) and bool(ref.converged)
    np.testing.assert_allclose(np.asarray(out.diag), np.asarray(ref.diag), rtol=1e-5, atol=1e-12)
    np.testing.assert_allclose(float(out.normalized_entropy), float(ref.normalized_entropy),
                               rtol=1e-5)
    assert float(jnp.sum(out.diag)) > 0.5  # the near-identity coupling is found


@pytest.mark.parametrize("metric", ["sqeuclidean", "negdot"])
def test_solve_sample_batch_routes_sharded_inputs(metric):
    rng = np.random.default_rng(2)
    X, Y = rng.normal(size=(2, 64, 3)), rng.normal(size=(2, 40, 3))
    mesh = Mesh(np.array(jax.devices()), ("points",))
    spread = NamedSharding(mesh, P(None, "points", None))
    Xs, Ys = (jax.device_put(jnp.asarray(v), spread) for v in (X, Y))
    res = ot_batch.solve_sample_batch(Xs, Ys, reg=1.0, metric=metric, tol=1e-10,
                                      max_iter=10000)
    ref = ot_batch.solve_sample_batch(X, Y, reg=1.0, metric=metric, tol=1e-10, max_iter=10000)
    assert res.plan is None  # never formed; the lazy plan forms it on request
    np.testing.assert_allclose(np.asarray(res.value), ref.value, rtol=1e-7)
    np.testing.assert_allclose(np.asarray(res.value_linear), ref.value_linear, rtol=1e-7)
    np.testing.assert_allclose(np.asarray(res.lazy_plan[...]), ref.plan, rtol=1e-6, atol=1e-12)
    assert np.all(np.asarray(res.log["converged"]))


def test_two_axis_mesh_and_warm_start():
    x, y = clouds(n=64, m=64)
    mesh = Mesh(np.array(jax.devices()).reshape(2, 4), ("hosts", "gpus"))
    out = sharded.solve_sample(x, y, reg=0.2, relative_reg="std", mesh=mesh, tol=1e-9,
                               max_iter=5000)
    assert out.f.sharding.spec == P(("hosts", "gpus"))
    assert len(out.f.sharding.device_set) == 8
    again = sharded.solve_sample(x, y, reg=0.2, relative_reg="std", mesh=mesh, tol=1e-9,
                                 init=(out.f, out.g))
    assert int(again.n_iter) == 0 and bool(again.converged)
    colder = sharded.solve_sample(x, y, reg=0.1, relative_reg="std", mesh=mesh, tol=1e-9,
                                  max_iter=5000)
    warm = sharded.solve_sample(x, y, reg=0.1, relative_reg="std", mesh=mesh, tol=1e-9,
                                max_iter=5000, init=(out.f, out.g))
    assert int(warm.n_iter) < int(colder.n_iter)
    np.testing.assert_allclose(float(warm.reg_ot_cost), float(colder.reg_ot_cost), rtol=1e-7)


def test_non_convergence_is_reported():
    x, y = clouds()
    out = sharded.solve_sample(x, y, reg=0.01, relative_reg="std", max_iter=3, tol=1e-9)
    assert not bool(out.converged) and int(out.n_iter) == 3
    errors = np.asarray(out.errors)
    assert np.all(errors[:4] > 1e-9) and np.all(errors[4:] == -1)


@pytest.mark.parametrize("cost", ["sqeuclidean", "negdot"])
def test_closed_form_mean_and_std(cost):
    from ot_batch.backends.jax_sharded import costs

    x, y = clouds(n=40, m=24, d=7)
    C = (np.sum((np.asarray(x)[:, None] - np.asarray(y)[None]) ** 2, axis=2)
         if cost == "sqeuclidean" else -np.asarray(x) @ np.asarray(y).T)
    aff = costs.decompose(x, y, cost)
    dense = (np.asarray(aff.alpha)[:, None] + np.asarray(aff.beta)[None]
             + aff.scale * np.asarray(aff.xc) @ np.asarray(aff.yc).T)
    np.testing.assert_allclose(dense, C, rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(float(costs.summary(aff, "std")), C.std(), rtol=1e-10)
    np.testing.assert_allclose(float(costs.summary(aff, "mean")), C.mean(), rtol=1e-10)


@pytest.mark.parametrize("mode", ["kept", "chunked"])
def test_memory_per_device(mode):
    """Compiled memory per device: the kept mode holds its n/8 x m rows of the cost and no
    more than a chunk beside them; the chunked mode holds neither n x m nor all of x and y."""
    n = m = 2048
    d = 64
    x = jnp.zeros((n, d))
    lay = layout.layout_of(x)
    cfg = sinkhorn.Config(lay, mode, 32, 50, 1e-3, None, 0.0)
    xs, w = lay.place(x), lay.place(jnp.full((n,), 1.0 / n))
    compiled = sinkhorn._solve.lower(xs, xs, w, w, None, None, 0.5, cfg=cfg, cost="negdot",
                                     relative="std").compile()
    temp = compiled.memory_analysis().temp_size_in_bytes
    block = n * m * 8 // 8
    if mode == "kept":
        assert block <= temp < 1.5 * block
    else:
        assert temp < 0.75 * (n + m) * d * 8 and temp < block / 2


def test_auto_mode_follows_free_memory(monkeypatch):
    x, y = clouds()
    assert sharded.solve_sample(x, y, reg=1.0).mode == "kept"
    monkeypatch.setattr(sharded, "_free_bytes", lambda device: 1000.0)
    out = sharded.solve_sample(x, y, reg=1.0)
    assert out.mode == "chunked" and bool(out.converged)


def test_float32_close_to_float64():
    x, y = clouds(n=128, m=128, d=16)
    ref = sharded.solve_sample(x, y, reg=0.1, relative_reg="std", tol=1e-6)
    out = sharded.solve_sample(x.astype(jnp.float32), y.astype(jnp.float32), reg=0.1,
                               relative_reg="std", tol=1e-4, mode="chunked", chunk=32)
    assert out.f.dtype == jnp.float32
    np.testing.assert_allclose(float(out.reg_ot_cost), float(ref.reg_ot_cost), rtol=1e-4)


def test_bad_inputs_are_named():
    x, y = clouds()
    with pytest.raises(ValueError, match="x has 63 points"):
        sharded.solve_sample(x[:63], y)
    mesh = Mesh(np.array(jax.devices()), ("points",))
    by_feature = jax.device_put(jnp.zeros((8, 16)), NamedSharding(mesh, P(None, "points")))
    with pytest.raises(ValueError, match="feature axis"):
        sharded.solve_sample(by_feature, by_feature)
    with pytest.raises(TypeError, match="x must be a jax.Array"):
        sharded.solve_sample(np.asarray(x), y)
    with pytest.raises(ValueError, match="cost"):
        sharded.solve_sample(x, y, cost="cosine")
    with pytest.raises(ValueError, match="mode"):
        sharded.solve_sample(x, y, mode="dense")
    with pytest.raises(ValueError, match="relative_reg"):
        sharded.solve_sample(x, y, reg=0.1, relative_reg="median")
    with pytest.raises(ValueError, match="reg"):
        sharded.solve_sample(x, y, reg=-1.0)
    with pytest.raises(ValueError, match="same total mass"):
        sharded.solve_sample(x, y, a=jnp.full((64,), 1.0 / 32))
    with pytest.raises(ValueError, match="mesh must be"):
        sharded.solve_sample(x, y, mesh="points")
    with pytest.raises(ValueError, match="x and y must agree"):
        sharded.solve_sample(x, y[:, :3])


@pytest.mark.gpu
def test_gpu_kept_and_chunked_agree_with_ott():
    """Full size on one GPU: 8,192 points in d = 512, float32, both modes against OTT."""
    if not jax.devices("gpu"):
        pytest.skip("no GPU")
    rng = np.random.default_rng(3)
    x = jnp.asarray(rng.uniform(-1, 1, size=(8192, 512)), jnp.float32)
    y = 0.9 * x + jnp.asarray(0.1 * rng.normal(size=x.shape), jnp.float32)
    with jax.default_matmul_precision("highest"):  # OTT's f + g - C_ii needs float32 costs
        geom, ref = ott_solve(x, y, "negdot", 0.05, "std")
    for mode in ("kept", "chunked"):
        out = sharded.solve_sample(x, y, reg=0.05, relative_reg="std", cost="negdot",
                                   mode=mode, tol=1e-3, precision="highest")
        assert bool(out.converged)
        np.testing.assert_allclose(float(jnp.sum(out.diag)), float(jnp.sum(ref.diag)),
                                   atol=1e-3)


def test_bench_sharded_quick(tmp_path):
    from ot_batch.bench import sharded as bench

    code = bench.main(["--quick", "--workloads", "fixed_50000_3072,grid_20000", "--engines",
                       "ot_batch,ot_batch_chunked,ott_dense", "--repeats", "1",
                       "--out", str(tmp_path)])
    assert code == 0
    rows = json.loads((tmp_path / "sharded.json").read_text())
    fixed = {r["engine"]: r for r in rows if r["workload"] == "fixed_50000_3072"}
    assert fixed["ot_batch"]["mode"] == "kept" and fixed["ot_batch_chunked"]["mode"] == "chunked"
    assert all(r["ms_per_iter"] > 0 for r in fixed.values())
    grid = [r for r in rows if r["workload"] == "grid_20000"]
    assert len(grid) == 12 and all(r["converged"] for r in grid)
    ours = {r["epsilon"]: r["diag_sum"] for r in grid if r["engine"] == "ot_batch"}
    ott = {r["epsilon"]: r["diag_sum"] for r in grid if r["engine"] == "ott_dense"}
    assert max(abs(ours[e] - ott[e]) for e in ours) < 5e-3
    assert "Largest |sum diag" in (tmp_path / "sharded.md").read_text()
