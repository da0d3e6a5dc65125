"""Exact OT on the host: compiled solvers from well-kept libraries, threads over the batch.

Two solvers, both float64 NumPy in and out:

``network_simplex``
    POT's network simplex (``ot.lp.emd_wrap.emd_c``, the C++ code behind ``ot.emd``), one
    problem per worker thread: ``emd_c`` releases the GIL while it pivots, so a batch runs on
    every core. Any weights. It returns an optimal vertex (a spanning-tree basis: at most
    ``n + m - 1`` non-zeros) and exact duals. Zero weights (padding) are removed before the
    solve, as ``ot.emd`` does, and their duals filled in by the c-transform afterwards.
``assignment``
    lapx's batched Jonker-Volgenant (``lap.lapjvr_batch``, MIT licence, native threads) for
    uniform weights with ``n == m``: the plan is a permutation / n. JV returns no duals; they
    are recovered from the permutation by :func:`ot_batch.solvers.exact_duals.from_matching`
    (shortest paths in the residual graph), which costs more than the matching itself for
    large ``n``, so ``method="auto"`` prefers the network simplex on the CPU.

Why these: both are exact combinatorial solvers (no tolerance), permissively licensed (POT:
MIT; lapx: MIT) and ship wheels for every platform; mdot-tnt (non-commercial) is never used.
"""
from __future__ import annotations

import functools
import os
from concurrent.futures import ThreadPoolExecutor
from typing import Any, NamedTuple

import numpy as np

__all__ = ["HostResult", "network_simplex", "assignment", "threads", "MAX_ITER"]

MAX_ITER = 1_000_000  # ot.solve's default for the exact solver
OPTIMAL = 1  # emd_c's result code for an optimal basis (2: unbounded, 3: iteration limit)


class HostResult(NamedTuple):
    """float64 plans (B, n, m), duals (B, n) and (B, m), and per-problem ``converged``."""

    plan: np.ndarray
    f: np.ndarray
    g: np.ndarray
    converged: np.ndarray


def threads(n_threads: Any, batch: int) -> int:
    """Worker count: ``None`` or ``"max"`` is every core; never more than the batch."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    want = (cores or 1) if n_threads in (None, "max") else int(n_threads)
    return max(1, min(want, batch))


@functools.lru_cache(maxsize=8)
def _pool(workers: int) -> ThreadPoolExecutor:
    """One pool per worker count, kept: starting threads at every call costs more than a
    small batch's solves."""
    return ThreadPoolExecutor(workers, thread_name_prefix="ot_batch_exact")


def _map(fn, count: int, n_threads: Any):
    """``[fn(i) for i in range(count)]`` over worker threads, in a few chunks per worker (a
    task per problem would cost more in hand-offs than a small problem's solve)."""
    workers = threads(n_threads, count)
    if workers == 1:
        return [fn(i) for i in range(count)]
    bounds = np.linspace(0, count, min(count, 4 * workers) + 1).astype(int)
    chunks = _pool(workers).map(lambda k: [fn(i) for i in range(bounds[k], bounds[k + 1])],
                                range(len(bounds) - 1))
    return [out for chunk in chunks for out in chunk]


def fill_null_duals(M: np.ndarray, a: np.ndarray, b: np.ndarray, f: np.ndarray,
                    g: np.ndarray):
    """Duals of zero-weight points by the c-transform: feasible, and such a point carries no
    mass, so complementary slackness holds whatever its dual is."""
    rows, cols = a == 0, b == 0
    if cols.any():
        g = np.where(cols, np.min(np.where(rows[:, None], np.inf, M - f[:, None]), axis=0), g)
    if rows.any():
        f = np.where(rows, np.min(M - g[None, :], axis=1), f)
    return f, g


def _one_simplex(M: np.ndarray, a: np.ndarray, b: np.ndarray, max_iter: int, f0=None, g0=None):
    from ot.lp.emd_wrap import emd_c

    rows, cols = a > 0, b > 0
    if not rows.any():
        return np.zeros(M.shape), np.zeros(M.shape[0]), np.zeros(M.shape[1]), True
    b = b * (a.sum() / b.sum())  # equal to the last bit, as ot.emd does
    if rows.all() and cols.all():  # no padding: no copies
        G, _, f, g, code = emd_c(a, b, M, max_iter, 1, f0, g0)
        return G, f, g, code == OPTIMAL
    sub = np.ascontiguousarray(M[np.ix_(rows, cols)])
    init = (None, None) if f0 is None else (np.ascontiguousarray(f0[rows]),
                                            np.ascontiguousarray(g0[cols]))
    G, _, u, v, code = emd_c(a[rows], b[cols], sub, max_iter, 1, *init)
    plan = np.zeros(M.shape)
    f, g = np.zeros(M.shape[0]), np.zeros(M.shape[1])
    plan[np.ix_(rows, cols)] = G
    f[rows], g[cols] = u, v
    f, g = fill_null_duals(M, a, b, f, g)
    return plan, f, g, code == OPTIMAL


def network_simplex(M: np.ndarray, a: np.ndarray, b: np.ndarray, max_iter: int = MAX_ITER,
                    n_threads: Any = None, f0: Any = None, g0: Any = None) -> HostResult:
    """Solve every problem of the batch with POT's network simplex, in threads.

    Parameters
    ----------
    M : ndarray, shape (B, n, m), float64
    a, b : ndarrays, shapes (B, n) and (B, m), float64, equal mass per problem
    max_iter : int
        Pivots per problem before giving up (``converged`` False).
    n_threads : int, "max" or None
        Worker threads (None: every core).
    f0, g0 : ndarrays, shapes (B, n) and (B, m), optional
        Warm start of the duals (POT's ``potentials_init``).

    Returns
    -------
    HostResult

    Examples
    --------
    >>> import numpy as np
    >>> M = np.array([[[0.0, 1.0], [1.0, 0.0]]]); w = np.full((1, 2), 0.5)
    >>> network_simplex(M, w, w).plan[0]
    array([[0.5, 0. ],
           [0. , 0.5]])
    """
    M = np.ascontiguousarray(M, dtype=np.float64)
    a = np.ascontiguousarray(a, dtype=np.float64)
    b = np.ascontiguousarray(b, dtype=np.float64)
    if f0 is None:
        out = _map(lambda i: _one_simplex(M[i], a[i], b[i], max_iter), M.shape[0], n_threads)
    else:
        f0 = np.ascontiguousarray(f0, dtype=np.float64)
        g0 = np.ascontiguousarray(g0, dtype=np.float64)
        out = _map(lambda i: _one_simplex(M[i], a[i], b[i], max_iter, f0[i], g0[i]),
                   M.shape[0], n_threads)
    return _stack(out, M.shape)


def _stack(out, shape) -> HostResult:
    B, n, m = shape
    if not out:
        return HostResult(np.zeros(shape), np.zeros((B, n)), np.zeros((B, m)),
                          np.zeros(B, dtype=bool))
    plan, f, g, ok = zip(*out)
    return HostResult(np.stack(plan), np.stack(f), np.stack(g), np.array(ok, dtype=bool))


def assignment(M: np.ndarray, n_threads: Any = None) -> HostResult:
    """Uniform square problems by lapx's batched Jonker-Volgenant; duals recovered afterwards.

    Parameters
    ----------
    M : ndarray, shape (B, n, n), float64
    n_threads : int, "max" or None

    Returns
    -------
    HostResult
        Plans are permutations / n.

    Examples
    --------
    >>> import numpy as np
    >>> assignment(np.array([[[0.0, 1.0], [1.0, 0.0]]])).plan[0]
    array([[0.5, 0. ],
           [0. , 0.5]])
    """
    import lap

    from .exact_duals import from_matching
    from ..backends import numpy as np_ext
    import array_api_compat.numpy as xp

    M = np.ascontiguousarray(M, dtype=np.float64)
    B, n, m = M.shape
    if n != m:
        raise ValueError(f"method='assignment' needs square problems (n == m), got n={n}, m={m}")
    if B == 0:
        return _stack([], M.shape)
    workers = threads(n_threads, B)
    _, rows, cols = lap.lapjvr_batch(M, n_threads=workers if workers > 1 else -1)
    sigma = np.zeros((B, n), dtype=np.int64)
    for i, (r, c) in enumerate(zip(rows, cols)):
        sigma[i, r] = c
    plan = np.zeros(M.shape)
    np.put_along_axis(plan, sigma[:, :, None], 1.0 / n, axis=2)
    f, g, ok = from_matching(xp, np_ext, M, sigma)
    return HostResult(plan, f, g, ok)
