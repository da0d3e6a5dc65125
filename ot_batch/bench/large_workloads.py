"""The ``large`` suite's workloads: one large problem (B = 1) from point clouds, float32.

Three protocols, each a family of workloads named after its sizes:

``fixed_<n>_<d>``
    FlashSinkhorn's own forward benchmark (``flash_sinkhorn/bench/bench_forward.py``):
    full squared Euclidean cost ``|x - y|^2``, ``eps = 0.1``, exactly 10 iterations at that
    temperature, no debiasing, no epsilon scaling, TF32 products allowed. Data as there
    (:func:`point_clouds` with ``unit_box=False``): ``x, y ~ N(0, I_d)``.
``e2e_<n>_<d>`` and ``e2e_<n>_<d>_grad``
    End to end, GeomLoss's defaults: ``SamplesLoss("sinkhorn", p=2, blur=0.05,
    scaling=0.5, debias=True)``, cost ``|x - y|^2 / 2``, its epsilon-scaling schedule from the
    diameter of the data down to ``blur**2``; the forward alone, and (``_grad``) the forward
    and the backward (the gradient with respect to ``x``). Data in the unit box
    (``unit_box=True``): ``x ~ U[0,1]^d``, ``y ~ U[0.05,0.95]^d``, the unit-size domain that
    GeomLoss's ``blur = 0.05`` is made for: a diameter of ``sqrt(d)`` and schedules of 8, 10
    and 12 temperatures at d = 3, 64, 1024. Gaussian clouds at d = 1024 lie 45 apart on
    average, in a box of diameter 280 (15 temperatures, down to a blur 1/900 of the typical
    distance).
``mem_1000000_64``
    The peak GPU memory of the e2e forward at ``n = m = 10^6``, ``d = 64``, with ``blur = 0.5``
    (so ``scaling = 0.5`` gives 6 temperatures rather than 10: about half a minute per call
    on one H100 instead of a minute); the memory does not depend on the schedule's length.

``--quick`` keeps the names and shrinks every workload to ``n = m = 500`` with ``d = 3``
(where it was 3) or ``d = 8``: a smoke test of the engines, not a measurement.

Targets (:class:`SpeedGoal`, :class:`MemoryGoal`) are evaluated on the cases of one workload and
printed as met / not met with the other targets (:meth:`LargeWorkload.target_lines`).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np

from .workloads import Problem, Workload

__all__ = ["point_clouds", "LargeProblem", "LargeWorkload", "SpeedGoal", "MemoryGoal",
           "GoalResult", "WORKLOADS", "DEFAULT", "SUBJECT", "FIT_BYTES"]

SUBJECT = "ot_batch_online"  # the engine under test, which the targets name
FIT_BYTES = 40e9  # dense engines run where their n x m arrays take less than this

_QUICK_N = 500


def point_clouds(n: int, m: int, d: int, seed: int = 0,
                 unit_box: bool = False) -> tuple[np.ndarray, ...]:
    """``(x, y, a, b)`` in float32, drawn as FlashSinkhorn's ``bench_forward.py`` draws them.

    ``torch.manual_seed(seed)``, then ``x`` (n, d), ``y`` (m, d), ``a = rand(n) + 0.1`` and
    ``b = rand(m) + 0.1``, each weight vector divided by its sum. The draws run on CUDA when it
    is present, as that benchmark's do (so seed 0 gives its very data), else on the CPU (other
    numbers, same distributions).

    Parameters
    ----------
    n, m, d : int
        Points in ``x`` and in ``y``, dimension.
    seed : int
        ``torch.manual_seed``'s seed.
    unit_box : bool
        False: ``x, y ~ N(0, I)`` (the fixed protocol). True: ``x ~ U[0,1]^d`` and
        ``y ~ U[0.05,0.95]^d`` (the end-to-end protocol: a diameter of about ``sqrt(d)``).

    Returns
    -------
    x : ndarray, shape (n, d)
    y : ndarray, shape (m, d)
    a : ndarray, shape (n,)
    b : ndarray, shape (m,)
    """
    import torch

    dev = "cuda" if torch.cuda.is_available() else "cpu"
    torch.manual_seed(seed)
    f32 = dict(device=dev, dtype=torch.float32)
    if unit_box:
        x = torch.rand(n, d, **f32)
        y = torch.rand(m, d, **f32) * 0.9 + 0.05
    else:
        x = torch.randn(n, d, **f32)
        y = torch.randn(m, d, **f32)
    a = torch.rand(n, **f32) + 0.1
    b = torch.rand(m, **f32) + 0.1
    a, b = a / a.sum(), b / b.sum()
    return tuple(t.cpu().numpy() for t in (x, y, a, b))


@dataclass(frozen=True)
class LargeProblem(Problem):
    """A :class:`~ot_batch.bench.workloads.Problem` of one pair of point clouds.

    ``X``, ``Y`` (1, n, d) and (1, m, d), ``a``, ``b`` (1, n) and (1, m), float32. ``M`` is an
    empty (1, 0, 0) placeholder: no engine of this suite is given a cost matrix (at
    ``n = 10^5`` it would take 40 GB). ``workload`` says which protocol to run.
    """

    workload: Any = None


def _no_costs(*args: Any) -> np.ndarray:
    raise NotImplementedError("the large suite's problems come as point clouds only")


@dataclass(frozen=True)
class GoalResult:
    """A target's line of the report and its verdict (None: not measured)."""

    text: str
    met: bool | None


def _head(group: Mapping[str, Any]) -> str:
    return f"{next(iter(group.values())).workload.name:18s}"


@dataclass(frozen=True)
class SpeedGoal:
    """``subject`` at least ``least`` times faster than the fastest of ``peers`` that ran.

    Listed when ``subject`` and one of ``peers`` were asked for (as the other targets are);
    "not measured" when either side has no time.
    """

    peers: tuple[str, ...]
    least: float
    subject: str = SUBJECT

    def evaluate(self, group: Mapping[str, Any]) -> GoalResult | None:
        """The verdict on ``group`` (engine name -> its case of one workload), or None."""
        asked = [group[p] for p in self.peers if p in group]
        if self.subject not in group or not asked:
            return None
        head = f"{_head(group)} " + ("fastest of " + ", ".join(self.peers)
                                     if len(self.peers) > 1 else self.peers[0])
        want = f"target >= {self.least:g}x"
        ran = [c for c in asked if c.output is not None]
        s = group[self.subject]
        if s.output is None or not ran:
            return GoalResult(f"{head} / {self.subject}: not measured ({want})", None)
        fastest = min(ran, key=lambda c: c.seconds)
        ratio = fastest.seconds / s.seconds
        met = ratio >= self.least
        which = f" ({fastest.engine})" if len(self.peers) > 1 else ""
        return GoalResult(f"{head}{which} / {self.subject} = {ratio:6.2f}x   {want}: "
                          f"{'met' if met else 'NOT met'}", met)


@dataclass(frozen=True)
class MemoryGoal:
    """``engine``'s peak GPU memory below ``most_mb`` megabytes (10^6 bytes)."""

    most_mb: float
    engine: str = SUBJECT

    def evaluate(self, group: Mapping[str, Any]) -> GoalResult | None:
        """The verdict on ``group`` (engine name -> its case of one workload), or None."""
        if self.engine not in group:
            return None
        head = f"{_head(group)} {self.engine} peak GPU memory"
        want = f"target < {self.most_mb:g} MB"
        c = group[self.engine]
        peak = getattr(c.output, "peak_mb", None)
        if c.output is None or peak is None:
            why = c.skipped or "no CUDA: peak memory is not tracked"
            return GoalResult(f"{head}: not measured, {why} ({want})", None)
        met = peak < self.most_mb
        return GoalResult(f"{head} = {peak:.0f} MB   {want}: {'met' if met else 'NOT met'}",
                          met)


@dataclass(frozen=True)
class LargeWorkload(Workload):
    """One large problem from points (see the module docstring).

    ``protocol``: 'fixed' (``reg`` = eps, ``max_iter`` iterations), 'e2e' or 'mem'
    (GeomLoss's schedule from ``blur`` and ``scaling``); ``backward``: time the backward too;
    ``skip``: engines not run here and why; ``goals``: the targets.
    """

    protocol: str = "fixed"
    backward: bool = False
    blur: float = 0.05
    scaling: float = 0.5
    skip: Mapping[str, str] = field(default_factory=dict)
    goals: tuple = ()

    @property
    def mode(self) -> str:
        """What one timed call does, in a few words."""
        if self.protocol == "fixed":
            return f"fixed eps={self.reg:g}, {self.max_iter} it"
        return "fwd+bwd" if self.backward else "fwd"

    @property
    def sizes(self) -> str:
        if self.protocol == "fixed":
            return (f"n={self.n}, m={self.m}, d={self.d}, eps={self.reg:g}, "
                    f"{self.max_iter} iterations")
        return (f"n={self.n}, m={self.m}, d={self.d}, blur={self.blur:g}, "
                f"scaling={self.scaling:g}, {self.mode}")

    @property
    def unit_box(self) -> bool:
        return self.protocol != "fixed"

    def generate(self, seed: int = 0) -> LargeProblem:
        x, y, a, b = point_clouds(self.n, self.m, self.d, seed, unit_box=self.unit_box)
        return LargeProblem(M=np.empty((1, 0, 0), np.float32), reg=self.reg,
                            max_iter=self.max_iter, tol=0.0, a=a[None], b=b[None],
                            X=x[None], Y=y[None], workload=self)

    def target_lines(self, group: Mapping[str, Any]) -> list[str]:
        """Each goal's line on ``group`` (engine name -> case), for ``report.targets``."""
        results = (g.evaluate(group) for g in self.goals)
        return [r.text for r in results if r is not None]


_FIXED_DOC = ("FlashSinkhorn's protocol (bench_forward.py): x, y ~ N(0, I_d), a, b = "
              "rand + 0.1 normalised, cost |x - y|^2, eps = 0.1, exactly 10 iterations, no "
              "debiasing, no epsilon scaling, TF32 allowed.")
_E2E_DOC = ("GeomLoss's defaults end to end: SamplesLoss('sinkhorn', p=2, blur=0.05, "
            "scaling=0.5, debias=True), cost |x - y|^2 / 2, its schedule from the diameter "
            "(about sqrt(d): 8, 10, 12 temperatures at d = 3, 64, 1024) down to blur^2; "
            "x ~ U[0,1]^d, y ~ U[0.05,0.95]^d, a, b = rand + 0.1 normalised (the unit box "
            "GeomLoss's blur is made for: Gaussian clouds at d = 1024 lie 45 apart).")
_MEM_DOC = ("Peak GPU memory (torch.cuda.max_memory_allocated after reset_peak_memory_stats, "
            "inputs included) of the e2e forward at n = m = 10^6, d = 64, with blur = 0.5 and "
            "scaling = 0.5 (6 temperatures, so a call takes about half a minute on one H100; "
            "the memory does not depend on the schedule).")

# ANCHORS.md: GeomLoss KeOps took 855 ms for 10 iterations (22 passes over 2.5e9 pairs) at
# n = 50,000, d = 64; the mem workload's 32 passes over 10^12 pairs would take ~8 minutes.
_KEOPS_MEM = ("over the budget: KeOps would take ~8 min per call at n = 10^6 (855 ms for 10 "
              "iterations at n = 50,000, ANCHORS.md)")


def _quick(d: int) -> dict:
    """--quick: the same workload at n = m = 500 and d = 3 (where it is 3) or 8."""
    return {"n": _QUICK_N, "m": _QUICK_N, "d": 3 if d == 3 else 8}


def fixed(n: int, d: int, goals: Sequence = ()) -> LargeWorkload:
    return LargeWorkload(name=f"fixed_{n}_{d}", doc=_FIXED_DOC, B=1, n=n, m=n, d=d, reg=0.1,
                         max_iter=10, tol=0.0, costs=_no_costs, quick=_quick(d),
                         protocol="fixed", goals=tuple(goals))


def e2e(n: int, d: int, backward: bool, goals: Sequence = ()) -> LargeWorkload:
    name = f"e2e_{n}_{d}" + ("_grad" if backward else "")
    return LargeWorkload(name=name, doc=_E2E_DOC, B=1, n=n, m=n, d=d, reg=0.05 ** 2,
                         max_iter=0, tol=0.0, costs=_no_costs, quick=_quick(d),
                         protocol="e2e", backward=backward, goals=tuple(goals))


_FLASH_MODES = ("flash_sinkhorn", "flash_sinkhorn_alt")
_SIZES = (100000, 50000, 10000)  # large to small, as bench_forward runs them (autotune caches)
_DIMS = (3, 64, 1024)


def _fixed_goals(n: int, d: int) -> tuple:
    return (SpeedGoal(_FLASH_MODES, 1.25),) if (n, d) == (50000, 64) else ()


def _e2e_goals(n: int, d: int) -> tuple:
    return (SpeedGoal(("flash_sinkhorn",), 2.0),) if (n, d) == (50000, 64) else ()


MEM = LargeWorkload(
    name="mem_1000000_64", doc=_MEM_DOC, B=1, n=10 ** 6, m=10 ** 6, d=64, reg=0.5 ** 2,
    max_iter=0, tol=0.0, costs=_no_costs, quick=_quick(64), protocol="mem", blur=0.5,
    scaling=0.5, skip={"geomloss_online": _KEOPS_MEM}, goals=(MemoryGoal(2000.0),))

WORKLOADS: dict[str, LargeWorkload] = {w.name: w for w in (
    [fixed(n, d, _fixed_goals(n, d)) for d in _DIMS for n in _SIZES]
    + [e2e(n, d, bwd, _e2e_goals(n, d)) for d in _DIMS for n in _SIZES
       for bwd in (False, True)]
    + [MEM])}

# The default run (some 8 minutes on one H100 with every peer): the grids at n = 10^4 and
# 5 10^4 with d in {3, 64}, a few larger cases, and the memory workload; large to small.
DEFAULT: tuple[str, ...] = (
    "fixed_100000_64", "fixed_50000_1024", "fixed_50000_64", "fixed_50000_3",
    "fixed_10000_64", "fixed_10000_3",
    "e2e_100000_64", "e2e_100000_64_grad", "e2e_50000_64", "e2e_50000_64_grad",
    "e2e_50000_3", "e2e_50000_3_grad", "e2e_10000_64", "e2e_10000_64_grad", "e2e_10000_3",
    "e2e_10000_3_grad",
    "mem_1000000_64",
)


def dense_bytes(wl: Workload, arrays: int) -> float:
    """Bytes of ``arrays`` float32 n x m arrays (what a dense engine holds at once)."""
    return 4.0 * arrays * wl.n * wl.m


def fits(wl: Workload, arrays: int) -> str | None:
    """None when ``arrays`` n x m float32 arrays take less than :data:`FIT_BYTES`, else why."""
    need = dense_bytes(wl, arrays)
    if need < FIT_BYTES:
        return None
    return (f"does not fit: {arrays} dense {wl.n} x {wl.m} float32 arrays take "
            f"{need / 1e9:.0f} GB (>= {FIT_BYTES / 1e9:.0f} GB)")


assert all(name in WORKLOADS for name in DEFAULT)
assert math.isclose(MEM.reg, MEM.blur ** 2)
