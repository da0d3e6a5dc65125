"""Fused Triton kernels for torch tensors: one file per kernel, each with its launch wrapper,
and the generic solver in ``ot_batch/solvers`` as its reference in the tests.

Importing this package never fails: :data:`available` says whether Triton can run here (a
CUDA device, or ``TRITON_INTERPRET=1`` on the CPU for the tests).
"""
from __future__ import annotations

import functools
import importlib.util
import os


@functools.lru_cache(maxsize=None)
def _importable() -> bool:
    return importlib.util.find_spec("triton") is not None


def available(tensor=None) -> bool:
    """Triton is importable and can run on ``tensor``'s device."""
    if not _importable():
        return False
    if tensor is None:
        return True
    if getattr(tensor, "is_cuda", False):
        return True
    return os.environ.get("TRITON_INTERPRET") == "1"
