"""Wall-clock timing: an optional warm-up, then repeats within a time budget; the median."""
from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from typing import Any, Callable

__all__ = ["Timing", "measure", "time_once"]


@dataclass
class Timing:
    """Seconds of each timed repeat."""

    times: list[float]

    @property
    def median(self) -> float:
        return statistics.median(self.times)

    @property
    def repeats(self) -> int:
        return len(self.times)


def time_once(fn: Callable[[], Any], sync: Callable[[], None] | None = None) -> tuple[float, Any]:
    """``(seconds, result)`` of one call; ``sync`` waits for queued device work."""
    if sync is not None:
        sync()
    t0 = time.perf_counter()
    out = fn()
    if sync is not None:
        sync()
    return time.perf_counter() - t0, out


def measure(fn: Callable[[], Any], *, repeats: int = 3, budget_s: float = float("inf"),
            warmup: Callable[[], Any] | None = None,
            sync: Callable[[], None] | None = None) -> tuple[Timing, Any]:
    """Time ``fn`` up to ``repeats`` times after one untimed ``warmup()``.

    A repeat starts only if it should end within ``budget_s`` of the first timed one (judged
    by the slowest so far), so a slow case runs once and a fast one ``repeats`` times. Returns
    the timings and the last result (for verification, at no extra cost).
    """
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    if warmup is not None:
        time_once(warmup, sync)
    times: list[float] = []
    out = None
    while len(times) < repeats:
        if times and sum(times) + max(times) > budget_s:
            break
        t, out = time_once(fn, sync)
        times.append(t)
    return Timing(times), out
