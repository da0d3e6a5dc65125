"""The fixed-point loop for eager libraries (NumPy, PyTorch, CuPy).

Every problem of the batch converges on its own. The loop runs ``check_every`` steps, reads the
per-problem errors back to the host once, writes the problems that are done (or broken) into the
output, and from then on iterates only on the remaining ones: finished problems stay frozen and
cost nothing, and the batch stops when its slowest member is done.
"""
from __future__ import annotations

from typing import Any, Callable, Sequence

import numpy as np

State = Sequence[Any]


def iterate(
    step: Callable[[State, State], State],
    error: Callable[[State, State], Any],
    data: State,
    state: State,
    *,
    xp: Any,
    take: Callable[[Any, Any], Any],
    put: Callable[[Any, Any, Any], Any],
    to_numpy: Callable[[Any], np.ndarray],
    max_iter: int,
    check_every: int,
    tol: float,
    verbose: bool = False,
    start: int = 0,
):
    """Run ``state = step(data, state)`` until each problem's ``error`` is below ``tol``.

    Parameters
    ----------
    step, error
        ``step(data, state) -> state`` advances every problem by one iteration;
        ``error(data, state) -> (B,)`` is each problem's convergence error.
    data, state
        Tuples of arrays whose first axis is the batch.
    take, put
        ``take(x, idx)`` gathers rows, ``put(x, idx, rows)`` returns ``x`` with rows replaced
        (out of place, so autograd can follow it).
    to_numpy
        Host copy of a (B,) array: the one sync per ``check_every`` steps.
    start
        Iterations already done on ``state`` (checks stay at multiples of ``check_every``).

    Returns
    -------
    state, n_iter, converged, err
        The final state (batch order kept) and arrays of shape (B,) in the state's library
        and device.
    """
    batch = state[0].shape[0]
    n_iter = np.zeros(batch, dtype=np.int64)
    converged = np.zeros(batch, dtype=bool)
    err_out = np.full(batch, np.inf)
    out = list(state)
    active = np.arange(batch)
    cur_data, cur = tuple(data), tuple(state)
    it = start
    n_iter[:] = start
    while it < max_iter and active.size:
        k = min(check_every - it % check_every, max_iter - it)
        for _ in range(k):
            cur = step(cur_data, cur)
        it += k
        err = to_numpy(error(cur_data, cur)).astype(np.float64, copy=False)
        n_iter[active] = it
        err_out[active] = err
        done = err < tol
        broken = ~np.isfinite(err)
        converged[active[done]] = True
        if verbose:
            print(f"it {it:6d} | active {active.size:6d} | max err {np.nanmax(err):.3e}")
        leave = done | broken if it < max_iter else np.ones_like(done)
        if not leave.any():
            continue
        if leave.all() and active.size == batch:  # common case: no scatter needed
            out, active = list(cur), active[:0]
            break
        loc = np.nonzero(leave)[0]
        keep = np.nonzero(~leave)[0]
        idx_loc, idx_keep = _index(xp, cur[0], loc), _index(xp, cur[0], keep)
        idx_glob = _index(xp, cur[0], active[loc])
        out = [put(o, idx_glob, take(c, idx_loc)) for o, c in zip(out, cur)]
        cur = tuple(take(c, idx_keep) for c in cur)
        cur_data = tuple(take(d, idx_keep) for d in cur_data)
        active = active[keep]
        if not active.size:
            break
    if active.size:  # max_iter == 0
        idx = _index(xp, cur[0], active)
        out = [put(o, idx, c) for o, c in zip(out, cur)]
    like = state[0]
    return (tuple(out), _index(xp, like, n_iter), _index(xp, like, converged),
            _index(xp, like, err_out.astype(np.dtype(str(like.dtype).split(".")[-1]))))


def _index(xp: Any, like: Any, idx: np.ndarray):
    """Host indices as an integer array of ``like``'s library and device."""
    device = getattr(like, "device", None)
    try:
        return xp.asarray(idx, device=device)
    except TypeError:
        return xp.asarray(idx)
