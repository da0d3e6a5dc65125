"""Generic solvers, written once against the array namespace ``xp`` and the extras ``ext``.

One algorithm per module. Each takes checked arrays of one library (see ``ot_batch._validate``)
and loop options, runs the backend's per-problem fixed-point loop, and returns a
:class:`SolverOutput`. They are the reference that fused kernels are tested against.
"""
from ._common import SolverOutput, loop_inputs

__all__ = ["SolverOutput", "loop_inputs"]
