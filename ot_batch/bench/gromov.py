"""``python -m ot_batch.bench gromov``: batched Gromov-Wasserstein, time and objective.

Workloads (issue 3): X ~ N(0, I) in 2-D, Y = X + 0.1 N(0, I), squared-Euclidean Ca and Cb,
B=64 with n=32 and B=16 with n=256, reg=1, tol=1e-3, max_iter=100, max_iter_inner=50.
Engines: ot_batch and POT's ``ot.batch.solve_gromov_batch`` on the same torch device (CUDA
when present), and a loop of POT's ``ot.solve_gromov`` (conditional gradient, exact inner OT)
on NumPy float64 CPU. GW is not convex, so the objective each engine reaches is reported
beside its time: the mean, the median, and per problem against ot_batch's.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from . import report
from .timing import measure

WORKLOADS = {"gw_64x32": (64, 32), "gw_16x256": (16, 256)}
SOLVE = dict(reg=1.0, max_iter=100, max_iter_inner=50, tol=1e-3)


def structures(B: int, n: int, seed: int = 0):
    """Ca, Cb (float64 NumPy) of the workload."""
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((B, n, 2))
    Y = X + 0.1 * rng.standard_normal((B, n, 2))

    def sq(Z):
        d = Z[:, :, None, :] - Z[:, None, :, :]
        return np.sum(d * d, axis=-1)
    return sq(X), sq(Y)


def gw_value(Ca: np.ndarray, Cb: np.ndarray, T: np.ndarray) -> np.ndarray:
    """Squared-loss GW objective of plans T (float64, the plans' own marginals)."""
    r, c = T.sum(2), T.sum(1)
    const = (Ca ** 2 @ r[..., None]) + np.swapaxes(Cb ** 2 @ c[..., None], 1, 2)
    return np.sum((const - 2 * Ca @ T @ np.swapaxes(Cb, 1, 2)) * T, axis=(1, 2))


def _engines(device: str, n_init: int) -> dict[str, tuple[Callable, Callable, Callable]]:
    """name -> (prepare(Ca, Cb), run(data), plans(result) as float64 NumPy)."""
    import torch

    def to_torch(Ca, Cb):
        return (torch.tensor(Ca, dtype=torch.float32, device=device),
                torch.tensor(Cb, dtype=torch.float32, device=device))

    def plans(res):
        return res.plan.detach().cpu().double().numpy()

    def ours(data):
        import ot_batch
        return ot_batch.solve_gromov_batch(*data, n_init=n_init, **SOLVE)

    def pot_batch(data):
        import ot
        return ot.batch.solve_gromov_batch(*data, **SOLVE)

    def pot_loop(data):
        import ot
        Ca, Cb = data
        return np.stack([ot.solve_gromov(Ca[i], Cb[i], max_iter=1000, tol=SOLVE["tol"]).plan
                         for i in range(Ca.shape[0])])

    return {"ot_batch": (to_torch, ours, plans),
            "pot_batch": (to_torch, pot_batch, plans),
            "pot_loop": (lambda Ca, Cb: (Ca, Cb), pot_loop, np.asarray)}


def run(workloads: Sequence[str], engines: Sequence[str], repeats: int, n_init: int,
        seed: int, quick: bool) -> tuple[list[dict], str]:
    import torch

    device = "cuda" if torch.cuda.is_available() else "cpu"
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    table = _engines(device, n_init)
    rows = []
    for wl in workloads:
        B, n = WORKLOADS[wl]
        if quick:
            B, n = min(B, 4), min(n, 16)
        Ca, Cb = structures(B, n, seed)
        ref = None
        for name in engines:
            prepare, fn, plans = table[name]
            data = prepare(Ca, Cb)
            timing, res = measure(lambda: fn(data), repeats=repeats, budget_s=60.0,
                                  warmup=lambda: fn(data), sync=sync)
            T = plans(res)
            vals = gw_value(Ca, Cb, T)
            marg = float(np.max(np.abs(T.sum(2) - 1.0 / n)))
            row = dict(workload=wl, B=B, n=n, engine=name, seconds=timing.median,
                       mean=float(vals.mean()), median=float(np.median(vals)), marg_err=marg,
                       device=device if name != "pot_loop" else "cpu")
            if ref is None and name == "ot_batch":
                ref = (vals, timing.median)
            if ref is not None:
                row["time_vs_ot_batch"] = timing.median / ref[1]
                row["worse_than_ot_batch"] = int(np.sum(vals > ref[0] * (1 + 1e-3)))
                row["better_than_ot_batch"] = int(np.sum(vals < ref[0] * (1 - 1e-3)))
            rows.append(row)
    lines = ["| workload | engine | device | time | x ot_batch time | mean obj | median obj "
             "| problems worse / better than ot_batch | max marginal err |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(
            f"| {r['workload']} (B={r['B']}, n={r['n']}) | {r['engine']} | {r['device']} | "
            f"{r['seconds'] * 1e3:.1f} ms | {r.get('time_vs_ot_batch', float('nan')):.2f} | "
            f"{r['mean']:.3f} | {r['median']:.3f} | {r.get('worse_than_ot_batch', '-')} / "
            f"{r.get('better_than_ot_batch', '-')} | {r['marg_err']:.1e} |")
    return rows, "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m ot_batch.bench gromov",
                                description=__doc__.splitlines()[0])
    p.add_argument("--workloads", default=",".join(WORKLOADS))
    p.add_argument("--engines", default="ot_batch,pot_batch,pot_loop")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--n-init", type=int, default=4,
                   help="ot_batch's starting plans per problem (default 4)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quick", action="store_true", help="tiny sizes: a smoke test")
    p.add_argument("--out", type=Path, default=Path("bench_results"))
    args = p.parse_args(argv)
    wls = [w for w in args.workloads.split(",") if w]
    engs = [e for e in args.engines.split(",") if e]
    for w in wls:
        if w not in WORKLOADS:
            p.error(f"unknown workload {w!r}; known: {', '.join(WORKLOADS)}")
    for e in engs:
        if e not in ("ot_batch", "pot_batch", "pot_loop"):
            p.error(f"unknown engine {e!r}")
    t0 = time.perf_counter()
    rows, table = run(wls, engs, args.repeats, args.n_init, args.seed, args.quick)
    text = (f"# ot_batch bench gromov{' --quick' if args.quick else ''}\n"
            f"{report.environment()}\n\nSolver arguments: {SOLVE}, ot_batch n_init="
            f"{args.n_init}; POT loop: ot.solve_gromov(max_iter=1000, tol=1e-3) on CPU "
            f"float64; GPU engines float32.\n\n{table}\n\nTotal wall time "
            f"{time.perf_counter() - t0:.1f} s")
    print(text)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "gromov.md").write_text(text + "\n")
    import csv
    with open(args.out / "gromov.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=sorted({k for r in rows for k in r}))
        w.writeheader()
        w.writerows(rows)
    return 0
