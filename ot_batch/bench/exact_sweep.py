"""The GPU exact solver's epsilon schedule and time breakdown (CUDA only).

``python -m ot_batch.bench.exact_sweep`` times, on the exact benchmark's workloads (float64
squared distances between uniform 2-D clouds, uniform weights), the auction kernel alone for
a grid of epsilon schedules (``theta`` x ``eps0 = spread / div``), then the three layers of a
call: the kernel with the kept schedule, the GPU driver
(:func:`ot_batch.backends.triton.exact.solve_torch`) and the public ``solve_batch(M)``.
Medians of CUDA-event timings after a warm-up. The numbers behind docs/benchmarks.md's sweep
and breakdown tables.
"""
from __future__ import annotations

import argparse

__all__ = ["main"]

WORKLOADS = ((64, 128), (1024, 64), (16, 512), (64, 32))


def _clouds(torch, B: int, n: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    X = torch.rand(B, n, 2, generator=g, dtype=torch.float64).cuda()
    Y = torch.rand(B, n, 2, generator=g, dtype=torch.float64).cuda()
    return ((X[:, :, None] - Y[:, None]) ** 2).sum(-1)


def _median_ms(torch, fn, repeats: int = 7) -> float:
    fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(repeats):
        start, end = (torch.cuda.Event(enable_timing=True) for _ in range(2))
        start.record()
        fn()
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end))
    return sorted(times)[len(times) // 2]


def main(argv=None) -> None:
    """Print the sweep and the breakdown, one line per case."""
    parser = argparse.ArgumentParser(prog="python -m ot_batch.bench.exact_sweep",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--thetas", type=float, nargs="+", default=[4.0, 5.0, 8.0, 12.0])
    parser.add_argument("--divs", type=float, nargs="+", default=[2.0, 16.0, 128.0])
    args = parser.parse_args(argv)
    import torch

    import ot_batch
    from ot_batch.backends.triton import exact
    from ot_batch.backends.triton.auction import auction

    if not torch.cuda.is_available():
        raise SystemExit("exact_sweep needs a CUDA device")
    print(torch.cuda.get_device_name())
    for B, n in WORKLOADS:
        C = _clouds(torch, B, n)
        low, high = torch.aminmax(C.reshape(B, -1), dim=1)
        spread, eps_final = high - low, exact.EPS_FINAL * torch.maximum(low.abs(), high.abs())
        for theta in args.thetas:
            for div in args.divs:
                def kernel():
                    return auction(C, spread / div, eps_final, theta=theta,
                                   check_values=False)
                out = kernel()
                print(f"{B}x{n} theta {theta:g} eps0 spread/{div:g}: "
                      f"{_median_ms(torch, kernel):.3f} ms, rounds max {int(out.rounds.max())} "
                      f"mean {float(out.rounds.float().mean()):.0f}", flush=True)
        driver = _median_ms(torch, lambda: exact.solve_torch(C))
        call = _median_ms(torch, lambda: ot_batch.solve_batch(C))
        print(f"{B}x{n} breakdown: solve_torch {driver:.3f} ms, solve_batch {call:.3f} ms "
              f"(schedule theta {exact.THETA:g}, eps0 spread/{exact.EPS0_DIV:g})", flush=True)


if __name__ == "__main__":
    main()
