"""The ``exact`` suite's workloads: batches of exact (``reg=None``) OT problems between clouds.

Each problem is one pair of 2-D point clouds drawn uniformly in the unit square, with the
squared Euclidean cost in float64 (the issue's benchmark):

==========  =====  ====  =========
workload    B      n     weights
==========  =====  ====  =========
b64_n32     64     32    uniform
b64_n128    64     128   uniform
b16_n512    16     512   uniform
b1024_n64   1024   64    uniform
nonuniform  64     128   random (n=128, m=96); not run by default
==========  =====  ====  =========

Uniform square problems are assignment problems (value = total assignment cost / n), so the
assignment solvers (lapx, SciPy) run on them; ``nonuniform`` is for the transport solvers
only (the assignment engines skip it).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .workloads import Problem, Workload, _sqeuclidean

__all__ = ["uniform_clouds", "ExactWorkload", "WORKLOADS", "DEFAULT", "DATA"]

DATA = ("Data: per problem, X ~ U[0,1]^2 (n points) and Y ~ U[0,1]^2 (m points) from "
        "np.random.default_rng(seed), M = |x - y|^2 in float64; uniform weights unless the "
        "workload says otherwise.")


def uniform_clouds(B: int, n: int, m: int, d: int,
                   seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(X, Y, M)``: B pairs of uniform point clouds and their squared Euclidean costs.

    Parameters
    ----------
    B, n, m, d : int
        Problems, points in X and in Y per problem, dimension.
    seed : int
        Seed of ``np.random.default_rng``.

    Returns
    -------
    X : ndarray, shape (B, n, d)
    Y : ndarray, shape (B, m, d)
    M : ndarray, shape (B, n, m)
        ``|x - y|^2`` in float64.
    """
    rng = np.random.default_rng(seed)
    X = rng.random((B, n, d))
    Y = rng.random((B, m, d))
    return X, Y, _sqeuclidean(X, Y)


def _costs(B: int, n: int, m: int, d: int, seed: int) -> np.ndarray:
    return uniform_clouds(B, n, m, d, seed)[2]


def _weights(rng: np.random.Generator, B: int, n: int) -> np.ndarray:
    # Bounded away from 0 so that every point carries mass (no degenerate rows).
    w = rng.uniform(0.5, 1.5, (B, n))
    return w / w.sum(axis=1, keepdims=True)


@dataclass(frozen=True)
class ExactWorkload(Workload):
    """A batch of exact OT problems (``reg`` is unused: every engine solves the LP).

    ``uniform`` False draws random positive weights ``a`` (B, n) and ``b`` (B, m) after the
    clouds (same seed: the clouds are those of the uniform workload of the same sizes).
    """

    uniform: bool = True

    def generate(self, seed: int = 0) -> Problem:
        X, Y, M = uniform_clouds(self.B, self.n, self.m, self.d, seed)
        a = b = None
        if not self.uniform:
            rng = np.random.default_rng([seed, 1])
            a, b = _weights(rng, self.B, self.n), _weights(rng, self.B, self.m)
        return Problem(M=M, reg=0.0, max_iter=self.max_iter, tol=0.0, a=a, b=b, X=X, Y=Y)

    @property
    def sizes(self) -> str:
        w = "uniform" if self.uniform else "random"
        return f"B={self.B}, n={self.n}, m={self.m}, d={self.d}, {w} weights, reg=None (exact)"


def _workload(name: str, B: int, n: int, quick: dict, doc: str, m: int | None = None,
              uniform: bool = True) -> ExactWorkload:
    return ExactWorkload(name=name, doc=doc, B=B, n=n, m=n if m is None else m, d=2, reg=0.0,
                         max_iter=0, tol=0.0, costs=_costs, quick=quick, uniform=uniform)


WORKLOADS: dict[str, ExactWorkload] = {w.name: w for w in (
    _workload("b64_n32", 64, 32, {"B": 4, "n": 8, "m": 8}, "Small problems."),
    _workload("b64_n128", 64, 128, {"B": 4, "n": 16, "m": 16}, "Medium problems."),
    _workload("b16_n512", 16, 512, {"B": 2, "n": 32, "m": 32},
              "A few large problems (little batch parallelism)."),
    _workload("b1024_n64", 1024, 64, {"B": 16, "n": 8, "m": 8},
              "Many small problems (call overheads dominate in a loop)."),
    _workload("nonuniform", 64, 128, {"B": 4, "n": 12, "m": 9},
              "Random weights, n != m: transport solvers only.", m=96, uniform=False),
)}

DEFAULT = ("b64_n32", "b64_n128", "b16_n512", "b1024_n64")  # the four
