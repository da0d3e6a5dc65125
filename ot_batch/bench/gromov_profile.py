"""Where the time of ``solve_gromov_batch`` goes on a GPU: ``bench gromov --profile``.

One warm solve per workload under ``torch.profiler``: GPU time by kind of kernel (the fused
Gromov-Wasserstein solve, the inner Sinkhorn solves, matrix products, everything else), the
time the GPU sat idle (launch overhead and host synchronisation), the number of kernel launches
and host synchronisations, and the outer and inner iteration counts per problem.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

KINDS = (("fused GW solve", ("_gw_",)), ("inner Sinkhorn", ("_sinkhorn_kernel",)),
         ("matmul", ("gemm", "cutlass", "xmma", "sm90", "sm80")))


def _kind(name: str) -> str:
    for kind, keys in KINDS:
        if any(k in name for k in keys):
            return kind
    return "other"


def profile(workloads: Sequence[str], n_init: int, seed: int = 0, quick: bool = False) -> str:
    """A markdown table of the breakdown; see the module docstring."""
    import torch
    from torch.profiler import ProfilerActivity, profile as tprofile

    import ot_batch
    from .gromov import ALPHA, SOLVE, WORKLOADS, structures
    from .timing import time_once

    if not torch.cuda.is_available():
        return "(no CUDA device: profile skipped)"
    lines = ["| workload | wall | GPU busy | fused GW | inner Sinkhorn | matmul | other | "
             "idle | launches | host syncs | outer it. mean / max | inner it. per problem "
             "mean / max |", "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for wl in workloads:
        B, n, fused = WORKLOADS[wl]
        if quick:
            B, n = min(B, 4), min(n, 16)
        Ca, Cb, M = structures(B, n, seed, fused)
        dev = "cuda"
        args = [torch.tensor(x, dtype=torch.float32, device=dev) for x in (Ca, Cb)]
        kw = dict(SOLVE, n_init=n_init)
        if fused:
            kw.update(M=torch.tensor(M, dtype=torch.float32, device=dev), alpha=ALPHA)

        def solve():
            return ot_batch.solve_gromov_batch(*args, **kw)
        time_once(solve, torch.cuda.synchronize)
        with tprofile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
            wall, res = time_once(solve, torch.cuda.synchronize)
        gpu = {"fused GW solve": 0.0, "inner Sinkhorn": 0.0, "matmul": 0.0, "other": 0.0}
        launches = syncs = 0
        for ev in prof.events():
            name = ev.name
            if ev.device_type == torch.autograd.DeviceType.CUDA:
                gpu[_kind(name)] += ev.device_time_total * 1e-6 if hasattr(
                    ev, "device_time_total") else ev.cuda_time_total * 1e-6
            elif "LaunchKernel" in name or name == "cuLaunchKernelEx":
                launches += 1
            elif name in ("cudaStreamSynchronize", "cudaDeviceSynchronize",
                          "cudaMemcpyAsync"):
                syncs += 1
        busy = sum(gpu.values())
        log = res.log
        outer = np.asarray(log["n_iter"].cpu())
        inner = np.asarray(log["n_iter_inner"].cpu())

        def ms(x):
            return f"{x * 1e3:.2f} ms"
        lines.append(
            f"| {wl} (B={B}, n={n}) | {ms(wall)} | {ms(busy)} | {ms(gpu['fused GW solve'])} | "
            f"{ms(gpu['inner Sinkhorn'])} | {ms(gpu['matmul'])} | {ms(gpu['other'])} | "
            f"{ms(max(wall - busy, 0.0))} | {launches} | {syncs} | {outer.mean():.1f} / "
            f"{outer.max()} | {inner.mean():.0f} / {inner.max()} |")
    return "\n".join(lines)
