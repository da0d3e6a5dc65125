"""What the solvers share: their output record and the detach rule for the loop inputs."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass
class SolverOutput:
    """Raw solver output, before values are formed.

    ``potentials`` are in the method's own convention; ``log_potentials`` are the log-scalings
    against the kernel ``-M / reg`` (scaled so that the envelope gradient can be formed from
    them); ``n_iter``, ``converged`` and ``err`` have shape (B,).
    """

    plan: Any
    potentials: tuple[Any, Any]
    dual: tuple[Any, Any] | None
    n_iter: Any
    converged: Any
    err: Any


def loop_inputs(ext: Any, grad: str, *arrays: Any):
    """The arrays the iterations run on: detached unless gradients must follow the loop."""
    if grad == "autodiff":
        return arrays
    return tuple(None if x is None else ext.stop_gradient(x) for x in arrays)
