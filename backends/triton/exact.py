"""Exact OT on the GPU for uniform weights: the Triton auction, then duals, a certificate and a
repair.

1. :func:`ot_batch.backends.triton.auction.auction` finds, per problem, an assignment of the
   expanded problem (``n * m / gcd(n, m)`` copies each side) and prices satisfying
   epsilon-complementary slackness, down to ``eps_final = EPS_FINAL * max|M|``: its plan's cost
   is within ``eps_final`` of the optimum.
2. Duals from the prices by c-transforms, ``f_i = min_j M_ij + price_j`` and
   ``g_j = min_i M_ij - f_i``: feasible by construction (``f_i + g_j <= M_ij`` holds to the
   last bit), and within ``eps_final`` of complementary slackness on the plan's cells, so
   the gap ``<T, M> - <a, f> - <b, g>`` is at most ``eps_final``: a certificate that the plan
   is optimal to ``EPS_FINAL`` relative to the largest cost.
3. A problem whose auction did not finish or whose gap is above ``GAP_TOL * max|M|`` is solved
   again by the host network simplex; only that problem's arrays make the round trip.

No step synchronises with the host but the repair test (one read of a (B,) mask). JAX and
CuPy arrays are viewed as torch tensors through DLPack (no copy) and the results go back the
same way, on the caller's device.
"""
from __future__ import annotations

import math
from typing import Any

from ._dlpack import from_torch, to_torch

__all__ = ["MAX_SIZE", "fits", "solve_torch", "solve_any"]

MAX_SIZE = 4096  # persons (= objects) of the expanded assignment the kernel keeps on chip
EPS_FINAL = 1e-12  # final epsilon, relative to max|M|
GAP_TOL = 1e-10  # a certificate above this (relative to max|M|) sends the problem to the host
# The epsilon schedule: eps0 = (max M - min M) / EPS0_DIV, divided by THETA per phase (the
# fastest over the benchmark's sizes of theta in {4, 5, 8, 12} x divisor in {2, 16, 128} on an
# H100, docs/benchmarks.md).
EPS0_DIV = 128.0
THETA = 8.0


def fits(n: int, m: int) -> bool:
    """The expanded assignment of an n x m uniform problem fits the kernel."""
    return n >= 1 and m >= 1 and n * m // math.gcd(n, m) <= MAX_SIZE


def solve_torch(C: Any, max_rounds: int = 1_000_000, n_threads: Any = None):
    """Solve uniform-weight problems ``C`` (B, n, m), a CUDA tensor (or a CPU one under
    ``TRITON_INTERPRET=1``) whose values the caller checked (finite).

    Returns ``(plan, f, g, primal, gap, infeasibility, converged)``: plan and duals in
    ``C.dtype``, the rest float64 (B,), duals centred as POT's.
    """
    import array_api_compat.torch as xp
    import torch

    from ot_batch.solvers import exact_duals, exact_host

    from .auction import auction, plan_from_owner

    B, n, m = C.shape
    C64 = C.detach().to(torch.float64)
    a = torch.full((B, n), 1.0 / n, dtype=torch.float64, device=C.device)
    b = torch.full((B, m), 1.0 / m, dtype=torch.float64, device=C.device)
    low, high = torch.aminmax(C64.reshape(B, n * m), dim=1)  # one pass for both
    scale = torch.maximum(low.abs(), high.abs()).clamp_min(torch.finfo(torch.float64).tiny)
    spread = high - low
    eps_final = EPS_FINAL * scale
    eps0 = torch.maximum(spread / EPS0_DIV, eps_final)
    out = auction(C64, eps0, eps_final, theta=THETA, max_rounds=max_rounds, check_values=False)
    plan = plan_from_owner(out.owner, n, m)
    copies = out.price.shape[1] // m
    pmin = out.price.reshape(B, m, copies).amin(dim=2)
    f = (C64 + pmin[:, None, :]).amin(dim=2)
    g = (C64 - f[:, :, None]).amin(dim=1)
    ok = out.converged
    f, g = exact_duals.center(xp, a, b, f, g)
    primal, _, gap, infeas = exact_duals.certificate(xp, C64, a, b, plan, f, g)
    bad = ~ok | (gap > GAP_TOL * scale) | (infeas > GAP_TOL * scale)
    converged = torch.ones(B, dtype=torch.bool, device=C.device)
    if bool(bad.any()):  # the repair: these problems again, by the host network simplex
        idx = torch.nonzero(bad)[:, 0]
        host = exact_host.network_simplex(C64[idx].cpu().numpy(), a[idx].cpu().numpy(),
                                          b[idx].cpu().numpy(), n_threads=n_threads)
        fixed = [torch.from_numpy(x).to(C.device) for x in (host.plan, host.f, host.g)]
        plan[idx], f[idx], g[idx] = fixed[0], *exact_duals.center(xp, a[idx], b[idx], *fixed[1:])
        converged[idx] = torch.from_numpy(host.converged).to(C.device)
        primal, _, gap, infeas = exact_duals.certificate(xp, C64, a, b, plan, f, g)
    dtype = C.dtype
    return plan.to(dtype), f.to(dtype), g.to(dtype), primal, gap, infeas, converged


def solve_any(xp: Any, ext: Any, M: Any, a: Any, b: Any, n_threads: Any = None,
              max_rounds: int = 1_000_000):
    """:func:`solve_torch` on torch, JAX or CuPy CUDA arrays; results in the caller's library.
    ``a`` and ``b`` must be uniform (checked by the caller)."""
    out = solve_torch(to_torch(M), max_rounds=max_rounds, n_threads=n_threads)
    return tuple(from_torch(t, ext) for t in out)

