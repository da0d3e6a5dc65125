"""`make demo`: 1,000 OT problems at once against a loop of POT's ``ot.solve``.

Run with ``python -m ot_batch.demo``. Prints both times, the speed-up and the largest
difference between the two answers.
"""
from __future__ import annotations

import time

import numpy as np


def main(batch: int = 1000, n: int = 16, m: int = 20, d: int = 2, reg: float = 0.1,
         tol: float = 1e-7) -> dict:
    import ot

    import ot_batch

    rng = np.random.default_rng(0)
    X = rng.normal(size=(batch, n, d))
    Y = rng.normal(size=(batch, m, d)) + rng.normal(size=(batch, 1, d))
    M = ot_batch.dist_batch(X, Y)
    M /= M.mean(axis=(1, 2), keepdims=True)
    print(f"{batch} problems of size {n} x {m}, entropic OT with reg={reg}, tol={tol}")

    t0 = time.perf_counter()
    res = ot_batch.solve_batch(M, reg=reg, tol=tol, max_iter=10000)
    t_batch = time.perf_counter() - t0

    t0 = time.perf_counter()
    loop = np.array([ot.solve(M[i], reg=reg, method="sinkhorn_log", reg_type="entropy",
                              tol=tol, max_iter=10000).value_linear for i in range(batch)])
    t_loop = time.perf_counter() - t0

    diff = float(np.max(np.abs(res.value_linear - loop) / np.abs(loop)))
    n_iter = res.log["n_iter"]
    print(f"ot_batch.solve_batch (one call): {t_batch:8.3f} s   "
          f"iterations per problem min/median/max = {n_iter.min()}/{int(np.median(n_iter))}/"
          f"{n_iter.max()}, converged {int(res.log['converged'].sum())}/{batch}")
    print(f"loop of POT's ot.solve:          {t_loop:8.3f} s")
    print(f"speed-up: {t_loop / t_batch:.1f}x   largest relative difference of values: "
          f"{diff:.2e} (transport cost <T, M>)")
    return {"t_batch": t_batch, "t_loop": t_loop, "max_rel_diff": diff}


if __name__ == "__main__":
    main()
