"""``python -m ot_batch.bench sharded``: one problem in d = 3,072, cost kept or recomputed.

Workloads (issue 6, ANCHORS.md):

* ``fixed_N_3072``: x ~ N(0, I/d), y = x + 0.3 N(0, I/d), negative dot product cost, epsilon
  0.1 x the cost's std, 10 fixed iterations; ms per iteration of a whole call (cost build and
  final statistics included) and, for ot_batch, the steady per-iteration time (20 minus 10
  iterations). FlashSinkhorn (squared Euclidean, eps 0.05, its fixed protocol) and OTT-JAX
  dense / online beside it.
* ``grid_N``: OTT-JAX's tutorial (blurred images, :mod:`.blur_images`), epsilon in
  10 ** linspace(-1.5, 0, 6) relative to the std, tol 1e-3: time per epsilon, iterations,
  the diagonal's sum and KL to 1/n, normalized entropy; ot_batch warm-started down the grid
  and OTT-JAX dense from scratch at each epsilon (as the tutorial; on centred clouds, the
  same plan), diagonal sums compared.
"""
from __future__ import annotations

import argparse
import gc
import json
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from . import report
from .timing import measure

FIXED = {"fixed_50000_3072": 50_000, "fixed_100000_3072": 100_000}
GRID = {"grid_20000": 20_000, "grid_50000": 50_000, "grid_100000": 100_000}
ENGINES = ("flash", "ot_batch", "ot_batch_chunked", "ott_dense", "ott_online")
EPSILONS = 10 ** np.linspace(-1.5, 0, 6)
ITERS = 10


def _ms(seconds: float) -> str:
    return f"{seconds * 1e3:.1f}"


def _timed(fn, repeats: int) -> tuple[float, Any]:
    """Median seconds of ``repeats`` calls after one untimed (compile / autotune) call."""
    timing, out = measure(fn, repeats=repeats, warmup=fn)
    return timing.median, out


def _brief(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}".splitlines()[0]
    return text[:160]


def _fixed_data(n: int, d: int, seed: int):
    rng = np.random.default_rng(seed)
    scale = np.float32(1 / np.sqrt(d))
    x = scale * rng.standard_normal((n, d), dtype=np.float32)
    return x, x + np.float32(0.3) * scale * rng.standard_normal((n, d), dtype=np.float32)


def _jax_block(out: Any) -> Any:
    import jax

    return jax.block_until_ready(out)


def _ours(x, y, mode: str, iters: int, **kw):
    from ot_batch import sharded

    out = sharded.solve_sample(x, y, reg=0.1, relative_reg="std", cost="negdot",
                               max_iter=iters, tol=1e-30, mode=mode, **kw)
    return _jax_block(out)


def _ott(x, y, iters: int, batch_size: int | None):
    import jax
    from ott.geometry import costs, pointcloud
    from ott.problems.linear import linear_problem
    from ott.solvers.linear import sinkhorn

    @jax.jit
    def solve(x, y):
        geom = pointcloud.PointCloud(x, y, cost_fn=costs.NegDotProduct(), epsilon=0.1,
                                     relative_epsilon="std", batch_size=batch_size)
        solver = sinkhorn.Sinkhorn(threshold=-1.0, max_iterations=iters, min_iterations=iters)
        return solver(linear_problem.LinearProblem(geom))
    return lambda: _jax_block(solve(x, y))


def _flash(x, y, iters: int):
    import torch
    from flash_sinkhorn import SamplesLoss

    xt, yt = (torch.as_tensor(v, device="cuda") for v in (x, y))
    n = xt.shape[0]
    a = torch.full((n,), 1.0 / n, device="cuda")
    loss = SamplesLoss("sinkhorn", backend="symmetric", use_epsilon_scaling=False, eps=0.05,
                       n_iters=iters, debias=False, potentials=False, normalize=False,
                       autotune=True, last_extrapolation=False, allow_tf32=True)

    def call():
        v = loss(a, xt, a, yt)
        torch.cuda.synchronize()
        return v
    return call


def run_fixed(name: str, n: int, d: int, engines: Sequence[str], repeats: int, seed: int):
    import jax
    import jax.numpy as jnp

    x, y = _fixed_data(n, d, seed)
    rows = []
    for eng in engines:
        print(f"# {time.strftime('%H:%M:%S')} {name} {eng}", flush=True)
        row = dict(workload=name, n=n, d=d, engine=eng)
        try:
            if eng == "flash":
                import torch
                if not torch.cuda.is_available():
                    raise RuntimeError("FlashSinkhorn needs CUDA")
                torch.cuda.reset_peak_memory_stats()
                t, _ = _timed(_flash(x, y, ITERS), repeats)
                row["peak_gb"] = torch.cuda.max_memory_allocated() / 2 ** 30
                torch.cuda.empty_cache()
            elif eng.startswith("ot_batch"):
                mode = "chunked" if eng.endswith("chunked") else "auto"
                xj, yj = jnp.asarray(x), jnp.asarray(y)
                t, out = _timed(lambda: _ours(xj, yj, mode, ITERS), repeats)
                t20, _ = _timed(lambda: _ours(xj, yj, mode, 2 * ITERS), repeats)
                row.update(mode=out.mode, steady_ms_per_iter=(t20 - t) / ITERS * 1e3,
                           devices=len(jax.devices()))
                del out
            else:
                batch = None if eng == "ott_dense" else 4096
                xj, yj = jnp.asarray(x), jnp.asarray(y)
                t, _ = _timed(_ott(xj, yj, ITERS, batch), repeats)
            row["ms_per_iter"] = t / ITERS * 1e3
        except Exception as exc:  # noqa: BLE001 - a peer that cannot run this size is data
            row["error"] = _brief(exc)
        _emit(rows, row)
        gc.collect()
    return rows


def _emit(rows: list, row: dict) -> None:
    """Keep ``row`` and print it at once: a run cut short still shows what it measured."""
    print(json.dumps(row), flush=True)
    rows.append(row)


def _diag_stats(diag: Any, n: int) -> dict:
    q = np.maximum(np.asarray(diag, np.float64), np.finfo(np.float32).tiny)
    p = 1.0 / n
    return dict(diag_sum=float(q.sum()), kl=float(np.sum(p * np.log(p / q) - p + q)))


def run_grid(name: str, n: int, engines: Sequence[str], cifar: str | None, seed: int):
    import jax.numpy as jnp

    from . import blur_images
    from ot_batch import sharded

    x, y = blur_images.clouds(n, cifar, seed)
    x, y = sharded.shard_points(jnp.asarray(x)), sharded.shard_points(jnp.asarray(y))
    rows = []
    if "ot_batch" in engines:
        def solve(eps, init):
            return _jax_block(sharded.solve_sample(x, y, reg=float(eps), cost="negdot",
                                                   relative_reg="std", tol=1e-3, init=init))
        warm = solve(EPSILONS[-1], None)
        solve(EPSILONS[-1], (warm.f, warm.g))  # both programs compiled before timing
        init = None
        for eps in EPSILONS[::-1]:
            t0 = time.perf_counter()
            out = solve(eps, init)
            init = (out.f, out.g)
            _emit(rows, dict(workload=name, n=n, engine="ot_batch", mode=out.mode,
                             epsilon=float(eps), seconds=time.perf_counter() - t0,
                             n_iter=int(out.n_iter), converged=bool(out.converged),
                             normalized_entropy=float(out.normalized_entropy),
                             **_diag_stats(out.diag, n)))
        del out, init, warm
    if "ott_dense" in engines:
        import jax
        from ott.geometry import costs, pointcloud
        from ott.solvers import linear

        from ot_batch.backends.jax_sharded import costs as split

        # OTT forms P_ii from f + g - C_ii: with TF32 costs of magnitude |x| |y| its diagonal
        # sums over 1 at small epsilon. The plan does not change when both clouds are centred
        # (the cost changes by row and column terms), so OTT runs on centred clouds with the
        # absolute epsilon of the raw problem: the same plan, computed in its best conditions.
        aff = split.decompose(x, y, "negdot")
        std = split.summary(aff, "std")

        @jax.jit
        def ott(x, y, eps):
            geom = pointcloud.PointCloud(x, y, cost_fn=costs.NegDotProduct(), epsilon=eps)
            return linear.solve(geom)
        try:
            _jax_block(ott(aff.xc, aff.yc, (EPSILONS[-1] * std).astype(x.dtype)))
            for eps in EPSILONS[::-1]:
                t0 = time.perf_counter()
                out = _jax_block(ott(aff.xc, aff.yc, (eps * std).astype(x.dtype)))
                # (OTT's normalized_entropy forms the n x m x d differences for this cost)
                _emit(rows, dict(workload=name, n=n, engine="ott_dense", epsilon=float(eps),
                                 seconds=time.perf_counter() - t0, n_iter=int(out.n_iters),
                                 converged=bool(out.converged), normalized_entropy=None,
                                 **_diag_stats(out.diag, n)))
            del out
        except Exception as exc:  # noqa: BLE001
            _emit(rows, dict(workload=name, n=n, engine="ott_dense", error=_brief(exc)))
    gc.collect()
    return rows


def plot_grid(rows: list[dict], path: Path) -> Path | None:
    """The tutorial's three panels (diagonal KL and sum; time and iterations; normalized
    entropy against epsilon) for each grid workload's ot_batch rows."""
    grid = [r for r in rows if r["workload"] in GRID and r["engine"] == "ot_batch"
            and "diag_sum" in r]
    if not grid:
        return None
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(3, 1, figsize=(8, 9), sharex=True)
    for wl in sorted({r["workload"] for r in grid}):
        rs = sorted((r for r in grid if r["workload"] == wl), key=lambda r: r["epsilon"])
        eps = [r["epsilon"] for r in rs]
        for ax, key, twin in ((axes[0], "kl", "diag_sum"), (axes[1], "seconds", "n_iter"),
                              (axes[2], "normalized_entropy", None)):
            ax.plot(eps, [r[key] for r in rs], marker="o", label=f"{key}, {wl}")
            if twin:
                ax.twinx().plot(eps, [r[twin] for r in rs], marker="x", linestyle="--",
                                color="tab:gray", label=f"{twin}, {wl}")
    for ax, title, log in ((axes[0], "KL(1/n, diag) (o) / sum of diagonal (x, right)", True),
                           (axes[1], "time in s (o) / iterations (x, right)", True),
                           (axes[2], "normalized entropy", False)):
        ax.set_xscale("log")
        ax.set_yscale("log" if log else "linear")
        ax.set_title(title)
        ax.grid(True)
        ax.legend(fontsize=7, loc="upper left")
    axes[2].set_xlabel("epsilon (relative to the std of the costs)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _tables(rows: list[dict]) -> str:
    fixed = [r for r in rows if r["workload"] in FIXED]
    grid = [r for r in rows if r["workload"] in GRID]
    out = []
    if fixed:
        out += ["| workload | engine | ms / iteration (10 iterations, whole call) | steady ms / "
                "iteration | notes |", "|---|---|---|---|---|"]
        for r in fixed:
            ms = f"{r['ms_per_iter']:.1f}" if "ms_per_iter" in r else "-"
            steady = f"{r['steady_ms_per_iter']:.1f}" if "steady_ms_per_iter" in r else "-"
            note = r.get("error") or (f"mode {r['mode']}, {r['devices']} device(s)" if "mode" in r
                                      else f"peak {r['peak_gb']:.1f} GB" if "peak_gb" in r
                                      else "")
            out.append(f"| {r['workload']} | {r['engine']} | {ms} | {steady} | {note} |")
        out.append("")
    if grid:
        out += ["| workload | engine | epsilon | time (s) | iterations | converged | sum diag "
                "| KL(1/n, diag) | normalized entropy |", "|---|---|---|---|---|---|---|---|---|"]
        for r in sorted(grid, key=lambda r: (r["workload"], r["engine"], r.get("epsilon", 0))):
            if "error" in r:
                out.append(f"| {r['workload']} | {r['engine']} | - | - | - | - | - | - | "
                           f"{r['error']} |")
                continue
            out.append(f"| {r['workload']} | {r['engine']} | {r['epsilon']:.4f} | "
                       f"{r['seconds']:.3f} | {r['n_iter']} | {r['converged']} | "
                       f"{r['diag_sum']:.4f} | {r['kl']:.3g} | "
                       + (f"{r['normalized_entropy']:.4f} |" if r["normalized_entropy"] is not None
                          else "- |"))
        pairs = {}
        for r in grid:
            if "diag_sum" in r:
                pairs.setdefault((r["workload"], r["epsilon"]), {})[r["engine"]] = r["diag_sum"]
        diffs = [abs(v["ot_batch"] - v["ott_dense"]) for v in pairs.values()
                 if len(v) == 2]
        if diffs:
            out.append(f"\nLargest |sum diag (ot_batch) - sum diag (OTT-JAX)| over the grid: "
                       f"{max(diffs):.2e}")
    return "\n".join(out)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m ot_batch.bench sharded",
                                description=__doc__.splitlines()[0])
    p.add_argument("--workloads", default="fixed_50000_3072,fixed_100000_3072,grid_20000")
    p.add_argument("--engines", default=",".join(ENGINES))
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--cifar", help="folder with CIFAR-10's python pickle batches (grid)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quick", action="store_true", help="tiny sizes: a smoke test")
    p.add_argument("--out", type=Path, default=Path("bench_results"))
    p.add_argument("--replot", type=Path, metavar="JSON",
                   help="only draw the grid figure from a sharded.json of an earlier run")
    args = p.parse_args(argv)
    if args.replot:
        print(plot_grid(json.loads(args.replot.read_text()), args.out / "sharded_grid.png"))
        return 0
    wls = [w for w in args.workloads.split(",") if w]
    engs = [e for e in args.engines.split(",") if e]
    for w in wls:
        if w not in FIXED and w not in GRID:
            p.error(f"unknown workload {w!r}; known: {', '.join([*FIXED, *GRID])}")
    for e in engs:
        if e not in ENGINES:
            p.error(f"unknown engine {e!r}; known: {', '.join(ENGINES)}")
    t0 = time.perf_counter()
    rows = []
    for w in wls:
        if w in FIXED:
            n, d = (FIXED[w], 3072) if not args.quick else (256, 32)
            rows += run_fixed(w, n, d, engs, args.repeats, args.seed)
        else:
            n = GRID[w] if not args.quick else 256
            rows += run_grid(w, n, engs, args.cifar, args.seed)
    text = (f"# ot_batch bench sharded{' --quick' if args.quick else ''}\n"
            f"{report.environment()}\n\n{_tables(rows)}\n\nTotal wall time "
            f"{time.perf_counter() - t0:.1f} s")
    print(text)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "sharded.md").write_text(text + "\n")
    (args.out / "sharded.json").write_text(json.dumps(rows, indent=1))
    plot_grid(rows, args.out / "sharded_grid.png")
    return 0
