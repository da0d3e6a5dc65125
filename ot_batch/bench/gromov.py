"""``python -m ot_batch.bench gromov``: batched (fused) Gromov-Wasserstein, time and objective.

Workloads (issues 3 and 18): X ~ N(0, I) in 2-D, Y = X + 0.1 N(0, I), squared-Euclidean Ca
and Cb; B=64 n=32, B=16 n=256, B=256 n=64, B=4 n=1024, and fused GW (``fgw_*``: alpha=0.5,
M the squared distance between 3-D node features F_X ~ N(0, I) and F_Y = F_X + 0.1 N(0, I)).
reg=1, tol=1e-3, max_iter=100, max_iter_inner=50.

Engines: ot_batch and POT's ``ot.batch.solve_gromov_batch`` on the same torch device (CUDA
when present, float32), and a loop of POT's ``ot.solve_gromov`` (conditional gradient, exact
inner OT) on NumPy float64 CPU. GW is not convex, so the objective each engine reaches is
reported beside its time: the mean, the median, and per problem against ot_batch's.

``--curve`` adds the objective-versus-time curve of ot_batch and POT's batch stopped after k
outer iterations (``max_iter=k``), so the two can be compared at either one's objective.
``--profile`` adds where ot_batch's time goes (GPU kernels by kind, idle time, host syncs).
"""
from __future__ import annotations

import argparse
import contextlib
import time
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from . import report
from .timing import measure

# name -> (B, n, fused)
WORKLOADS = {"gw_64x32": (64, 32, False), "gw_16x256": (16, 256, False),
             "gw_256x64": (256, 64, False), "gw_4x1024": (4, 1024, False),
             "fgw_64x32": (64, 32, True), "fgw_16x256": (16, 256, True)}
DEFAULT = "gw_64x32,gw_16x256,gw_256x64,gw_4x1024,fgw_64x32,fgw_16x256"
SOLVE = dict(reg=1.0, max_iter=100, max_iter_inner=50, tol=1e-3)
ALPHA = 0.5
CURVE_K = (1, 2, 3, 5, 10, 20, 50, 100)
ENGINES = ("ot_batch", "pot_batch", "pot_loop")


def _sq(Z: np.ndarray) -> np.ndarray:
    d = Z[:, :, None, :] - Z[:, None, :, :]
    return np.sum(d * d, axis=-1)


def structures(B: int, n: int, seed: int = 0, fused: bool = False):
    """Ca, Cb and M (None unless ``fused``), float64 NumPy."""
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((B, n, 2))
    Y = X + 0.1 * rng.standard_normal((B, n, 2))
    M = None
    if fused:
        F = rng.standard_normal((B, n, 3))
        G = F + 0.1 * rng.standard_normal((B, n, 3))
        M = np.sum((F[:, :, None, :] - G[:, None, :, :]) ** 2, axis=-1)
    return _sq(X), _sq(Y), M


def gw_value(Ca: np.ndarray, Cb: np.ndarray, T: np.ndarray, M: np.ndarray | None = None,
             alpha: float = ALPHA) -> np.ndarray:
    """Squared-loss (fused) GW objective of plans T (float64, the plans' own marginals)."""
    r, c = T.sum(2), T.sum(1)
    const = (Ca ** 2 @ r[..., None]) + np.swapaxes(Cb ** 2 @ c[..., None], 1, 2)
    quad = np.sum((const - 2 * Ca @ T @ np.swapaxes(Cb, 1, 2)) * T, axis=(1, 2))
    if M is None:
        return quad
    return alpha * quad + (1 - alpha) * np.sum(M * T, axis=(1, 2))


def _engines(device: str, n_init: int,
             cg_steps: int = 0) -> dict[str, tuple[Callable, Callable, Callable]]:
    """name -> (prepare(Ca, Cb, M), run(data, **overrides), plans(result) as float64)."""
    import torch

    def to_torch(Ca, Cb, M):
        t = [torch.tensor(x, dtype=torch.float32, device=device) for x in (Ca, Cb)]
        if M is not None:
            return t + [torch.tensor(M, dtype=torch.float32, device=device)]
        return t

    def plans(res):
        return res.plan.detach().cpu().double().numpy()

    def fused(data):
        return {} if len(data) == 2 else {"M": data[2], "alpha": ALPHA}

    def ours(data, **kw):
        import ot_batch
        return ot_batch.solve_gromov_batch(data[0], data[1], n_init=n_init, cg_steps=cg_steps,
                                           **{**SOLVE, **kw}, **fused(data))

    def pot_batch(data, **kw):
        import ot
        return ot.batch.solve_gromov_batch(data[0], data[1], **{**SOLVE, **kw}, **fused(data))

    def pot_loop(data, **kw):
        import ot
        Ca, Cb, M = data
        return np.stack([ot.solve_gromov(Ca[i], Cb[i], max_iter=1000, tol=SOLVE["tol"],
                                         **({} if M is None else
                                            {"M": M[i], "alpha": ALPHA})).plan
                         for i in range(Ca.shape[0])])

    return {"ot_batch": (to_torch, ours, plans),
            "pot_batch": (to_torch, pot_batch, plans),
            "pot_loop": (lambda Ca, Cb, M: (Ca, Cb, M), pot_loop, np.asarray)}


def _sync(device: str) -> Callable[[], None]:
    import torch
    return torch.cuda.synchronize if device == "cuda" else (lambda: None)


def _cases(workloads: Sequence[str], seed: int, quick: bool):
    """``(name, B, n, Ca, Cb, M)`` of each workload (tiny sizes with ``quick``)."""
    for wl in workloads:
        B, n, fused = WORKLOADS[wl]
        if quick:
            B, n = min(B, 4), min(n, 16)
        yield (wl, B, n) + structures(B, n, seed, fused)


def run(workloads: Sequence[str], engines: Sequence[str], repeats: int, n_init: int,
        seed: int, quick: bool, cg_steps: int = 0) -> tuple[list[dict], str]:
    import torch

    device = "cuda" if torch.cuda.is_available() else "cpu"
    sync = _sync(device)
    table = _engines(device, n_init, cg_steps)
    rows = []
    for wl, B, n, Ca, Cb, M in _cases(workloads, seed, quick):
        ref = None
        for name in engines:
            prepare, fn, plans = table[name]
            data = prepare(Ca, Cb, M)
            budget = 20.0 if name == "pot_loop" else 60.0
            timing, res = measure(lambda: fn(data), repeats=repeats, budget_s=budget,
                                  warmup=None if name == "pot_loop" else (lambda: fn(data)),
                                  sync=sync)
            T = plans(res)
            vals = gw_value(Ca, Cb, T, M)
            marg = float(np.max(np.abs(T.sum(2) - 1.0 / n)))
            row = dict(workload=wl, B=B, n=n, engine=name, seconds=timing.median,
                       mean=float(vals.mean()), median=float(np.median(vals)), marg_err=marg,
                       device=device if name != "pot_loop" else "cpu", n_init=n_init)
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
            f"{r['mean']:.4g} | {r['median']:.4g} | {r.get('worse_than_ot_batch', '-')} / "
            f"{r.get('better_than_ot_batch', '-')} | {r['marg_err']:.1e} |")
    return rows, "\n".join(lines)


def curve(workloads: Sequence[str], seed: int, quick: bool,
          ks: Sequence[int] = CURVE_K) -> tuple[list[dict], str]:
    """Objective versus time of ot_batch (n_init=1) and POT's batch stopped after k steps."""
    import torch

    device = "cuda" if torch.cuda.is_available() else "cpu"
    sync = _sync(device)
    table = _engines(device, 1)
    rows = []
    for wl, B, n, Ca, Cb, M in _cases(workloads, seed, quick):
        for name in ("ot_batch", "pot_batch"):
            prepare, fn, plans = table[name]
            data = prepare(Ca, Cb, M)
            for k in ks:
                timing, res = measure(lambda: fn(data, max_iter=k), repeats=3, budget_s=10.0,
                                      warmup=lambda: fn(data, max_iter=k), sync=sync)
                vals = gw_value(Ca, Cb, plans(res), M)
                rows.append(dict(workload=wl, engine=name, k=k, seconds=timing.median,
                                 mean=float(vals.mean()), median=float(np.median(vals))))
    lines = ["| workload | engine | max_iter k | time | mean obj | median obj |",
             "|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['workload']} | {r['engine']} | {r['k']} | "
                     f"{r['seconds'] * 1e3:.2f} ms | {r['mean']:.4g} | {r['median']:.4g} |")
    return rows, "\n".join(lines)


@contextlib.contextmanager
def _split(split: str | None):
    """ot_batch's inner Sinkhorn kernel with ``split`` programs per problem ('auto': as many
    as stay resident; None: the library's default), restored afterwards."""
    if split is None:
        yield
        return
    from ..backends.triton import sinkhorn_split
    old = sinkhorn_split.DEFAULT_SPLIT
    sinkhorn_split.DEFAULT_SPLIT = None if split == "auto" else int(split)
    try:
        yield
    finally:
        sinkhorn_split.DEFAULT_SPLIT = old


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m ot_batch.bench gromov",
                                description=__doc__.splitlines()[0])
    p.add_argument("--workloads", default=DEFAULT)
    p.add_argument("--engines", default=",".join(ENGINES))
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--n-init", type=int, default=4,
                   help="ot_batch's starting plans per problem (default 4)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--cg-steps", type=int, default=0,
                   help="ot_batch's conditional-gradient steps after the proximal ones")
    p.add_argument("--split", default=None,
                   help="programs per problem of ot_batch's inner Sinkhorn kernel (n > 64, "
                        "CUDA): 'auto' (as many as stay resident) or a number; default: the "
                        "library's")
    p.add_argument("--curve", action="store_true",
                   help="objective-vs-time curves of ot_batch (n_init=1) and POT's batch")
    p.add_argument("--profile", action="store_true",
                   help="where ot_batch's time goes (needs CUDA)")
    p.add_argument("--quick", action="store_true", help="tiny sizes: a smoke test")
    p.add_argument("--out", type=Path, default=Path("bench_results"))
    args = p.parse_args(argv)
    wls = [w for w in args.workloads.split(",") if w]
    engs = [e for e in args.engines.split(",") if e]
    for w in wls:
        if w not in WORKLOADS:
            p.error(f"unknown workload {w!r}; known: {', '.join(WORKLOADS)}")
    for e in engs:
        if e not in ENGINES:
            p.error(f"unknown engine {e!r}")
    if args.split is not None and args.split != "auto" and not (
            args.split.isdigit() and int(args.split) >= 1):
        p.error(f"--split must be 'auto' or a positive integer, got {args.split!r}")
    t0 = time.perf_counter()
    with _split(args.split):  # the table, the curve and the profile alike
        rows, table = run(wls, engs, args.repeats, args.n_init, args.seed, args.quick,
                          args.cg_steps)
        text = (f"# ot_batch bench gromov{' --quick' if args.quick else ''}\n"
                f"{report.environment()}\n\nSolver arguments: {SOLVE}, fused workloads "
                f"alpha={ALPHA}, ot_batch n_init={args.n_init} cg_steps={args.cg_steps}"
                f"{'' if args.split is None else ' split=' + args.split}; POT loop: "
                f"ot.solve_gromov(max_iter=1000, tol=1e-3) on CPU float64; GPU engines "
                f"float32.\n\n{table}\n")
        if args.curve:
            text += (f"\n## Objective versus time (n_init=1, max_iter=k)\n\n"
                     f"{curve(wls, args.seed, args.quick)[1]}\n")
        if args.profile:
            from .gromov_profile import profile
            text += f"\n## Where ot_batch's time goes (n_init={args.n_init})\n\n"
            text += profile(wls, args.n_init, args.seed, args.quick) + "\n"
    text += f"\nTotal wall time {time.perf_counter() - t0:.1f} s"
    print(text)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "gromov.md").write_text(text + "\n")
    import csv
    with open(args.out / "gromov.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=sorted({k for r in rows for k in r}))
        w.writeheader()
        w.writerows(rows)
    return 0
