"""Benchmark workloads: seeded problem generators, one registry entry per workload.

A :class:`Workload` names its sizes, solver arguments, data generator and the speed-up targets
of ot_batch over the other engines. :meth:`Workload.generate` turns it into a
:class:`Problem` (NumPy arrays) that every engine solves with the same arguments.

Each suite owns a registry of workloads (two suites may each have a ``pot_doc``); this module
holds the ``cpu`` suite's, :data:`WORKLOADS` (float64 costs), and :func:`lookup` for any
registry. The ``batch`` suite's are in :mod:`ot_batch.bench.batch_workloads`.

Adding a workload: write a cost generator ``costs(B, n, m, d, seed) -> M`` (or reuse one) and
add one :class:`Workload` to its suite's registry.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Callable, Mapping

import numpy as np

REFERENCE = "ot_batch"  # the engine a target names by default (the one under test)

__all__ = ["Problem", "Workload", "WORKLOADS", "get", "lookup"]


@dataclass(frozen=True)
class Problem:
    """One batch of OT problems and the solver arguments every engine gets.

    ``a`` and ``b`` are None for uniform weights (engines then pass None / omit them, as the
    POT example does). ``X`` and ``Y`` are the point clouds, (B, n, d) and (B, m, d), when the
    workload has them and engines that solve from points may use them: their squared
    Euclidean distances are ``M``.
    """

    M: np.ndarray
    reg: float
    max_iter: int
    tol: float
    a: np.ndarray | None = None
    b: np.ndarray | None = None
    X: np.ndarray | None = None
    Y: np.ndarray | None = None

    @property
    def batch(self) -> int:
        return self.M.shape[0]

    def head(self, k: int) -> Problem:
        """The first ``k`` problems (for warm-ups and for loops timed on a subset)."""
        if k >= self.batch:
            return self

        def cut(x):
            return None if x is None else x[:k]
        return replace(self, M=self.M[:k], a=cut(self.a), b=cut(self.b), X=cut(self.X),
                       Y=cut(self.Y))


def _sqeuclidean(X: np.ndarray, Y: np.ndarray) -> np.ndarray:
    """(B, n, m) squared Euclidean costs, one coordinate at a time (no (B, n, m, d) temporary)."""
    M = np.zeros((X.shape[0], X.shape[1], Y.shape[1]))
    for k in range(X.shape[2]):
        diff = X[:, :, None, k] - Y[:, None, :, k]
        M += diff * diff
    return M


def pot_doc_costs(B: int, n: int, m: int, d: int, seed: int, scale: float = 1.0) -> np.ndarray:
    """POT's gallery example "Solving Many Optimal Transport Problems in Parallel".

    ``np.random.seed(seed)``; the example first draws its 4-problem demo (two (4, 8, 2)
    arrays), then ``X ~ N(0, I)`` of shape (B, n, d) and ``Y = X + 0.1 N(0, I)``;
    ``M = |x - y|^2``. The demo draws are skipped here so that seed 0 gives exactly the
    example's 128-problem batch. ``scale`` multiplies every coordinate (costs by
    ``scale**2``).
    """
    if m != n:
        raise ValueError("pot_doc data pairs each point with a noisy copy: needs m == n")
    rs = np.random.RandomState(seed)
    rs.standard_normal(2 * 4 * 8 * 2)  # the example's first demo batch
    X = rs.standard_normal((B, n, d))
    Y = X + 0.1 * rs.standard_normal((B, n, d))
    return _sqeuclidean(scale * X, scale * Y)


def anchors_costs(B: int, n: int, m: int, d: int, seed: int) -> np.ndarray:
    """ANCHORS.md's batches: ``X ~ U[0,1]^d``, ``Y ~ U[0.05,0.95]^d``, ``M = |x - y|^2 / d``.

    Same generator and draw order as ``/work/shared/bench/peers_batch.py`` (float64 here).
    """
    rng = np.random.default_rng(seed)
    X = rng.random((B, n, d))
    Y = rng.random((B, m, d)) * 0.9 + 0.05
    return _sqeuclidean(X, Y) / d


def half_scale_doc_costs(B: int, n: int, m: int, d: int, seed: int) -> np.ndarray:
    """POT example's clouds with every coordinate halved (see ``converge_256``)."""
    return pot_doc_costs(B, n, m, d, seed, scale=0.5)


@dataclass(frozen=True)
class Workload:
    """A named benchmark problem set.

    ``targets`` maps an engine name to the least speed-up (its time / ot_batch's time) that
    ot_batch aims for, or a pair ``(peer, subject)`` of engine names to the least speed-up
    of ``subject`` over ``peer`` (peer's time / subject's time); ``quick`` holds the field
    overrides of ``--quick`` (tiny sizes for a smoke test); ``report_iters`` asks engines for
    their iteration counts (an untimed extra pass where an engine cannot report them from the
    timed run).
    """

    name: str
    doc: str
    B: int
    n: int
    m: int
    d: int
    reg: float
    max_iter: int
    tol: float
    costs: Callable[..., np.ndarray]
    targets: Mapping[str | tuple[str, str], float] = field(default_factory=dict)
    quick: Mapping[str, Any] = field(default_factory=dict)
    report_iters: bool = False

    def target_pairs(self) -> list[tuple[str, str, float]]:
        """``(peer, subject, least peer time / subject time)`` for every target."""
        return [(k, REFERENCE, v) if isinstance(k, str) else (k[0], k[1], v)
                for k, v in self.targets.items()]

    def generate(self, seed: int = 0) -> Problem:
        M = self.costs(self.B, self.n, self.m, self.d, seed)
        return Problem(M=M, reg=self.reg, max_iter=self.max_iter, tol=self.tol)

    def quick_version(self) -> Workload:
        return replace(self, **dict(self.quick))

    @property
    def sizes(self) -> str:
        return (f"B={self.B}, n={self.n}, m={self.m}, d={self.d}, reg={self.reg:g}, "
                f"tol={self.tol:g}, max_iter={self.max_iter}")


POT_DOC = Workload(
    name="pot_doc",
    doc="POT's gallery example (examples/backends/plot_ot_batch.py): 128 problems of 8 points "
        "in 2-D, X ~ N(0, I), Y = X + 0.1 N(0, I), squared Euclidean cost, reg=10, tol=1e-3, "
        "max_iter=1000, as its ot.batch.solve_batch call. Timed from the cost tensor (the "
        "example also times dist_batch).",
    B=128, n=8, m=8, d=2, reg=10.0, max_iter=1000, tol=1e-3,
    costs=pot_doc_costs,
    targets={"pot_batch": 2.0, "pot_loop": 30.0},
    quick={"B": 16},
    report_iters=True,
)

SMALL_FIXED = Workload(
    name="small_fixed",
    doc="ANCHORS.md 'small': 1024 problems, n=m=64, d=8, X ~ U[0,1]^d, Y ~ U[0.05,0.95]^d, "
        "M = |x - y|^2 / d, uniform weights, reg=0.05, exactly 200 iterations (tol=0).",
    B=1024, n=64, m=64, d=8, reg=0.05, max_iter=200, tol=0.0,
    costs=anchors_costs,
    targets={"pot_batch": 2.0},
    quick={"B": 16, "n": 16, "m": 16, "max_iter": 50},
)

CONVERGE_256 = Workload(
    name="converge_256",
    doc="64 problems of 256 points in 2-D run to tol=1e-5 (max_iter=10000, so every engine "
        "stops by tolerance). Data: the POT example's clouds with every coordinate halved, "
        "X ~ N(0, I/4), Y = X + 0.05 N(0, I), squared Euclidean cost, reg=0.1; problems need "
        "30 to 270 iterations (median 50), a spread that per-problem stopping can use. (The "
        "unscaled clouds need 70-600 iterations, too long for a CPU run of minutes; ANCHORS' "
        "uniform costs stop after 10.)",
    B=64, n=256, m=256, d=2, reg=0.1, max_iter=10000, tol=1e-5,
    costs=half_scale_doc_costs,
    targets={"pot_batch": 2.0, "pot_loop": 5.0},
    quick={"B": 4, "n": 64, "m": 64},
    report_iters=True,
)

WORKLOADS: dict[str, Workload] = {w.name: w for w in (POT_DOC, SMALL_FIXED, CONVERGE_256)}


def lookup(registry: Mapping[str, Workload], name: str, quick: bool = False) -> Workload:
    """The workload called ``name`` in ``registry`` (its ``--quick`` version when ``quick``)."""
    try:
        wl = registry[name]
    except KeyError:
        raise ValueError(f"unknown workload {name!r}; known: {', '.join(registry)}") from None
    return wl.quick_version() if quick else wl


def get(name: str, quick: bool = False) -> Workload:
    """The ``cpu`` suite's workload called ``name`` (its ``--quick`` version when ``quick``)."""
    return lookup(WORKLOADS, name, quick)
