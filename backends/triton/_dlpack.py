"""CUDA arrays of CuPy and JAX viewed as torch tensors (DLPack, no copy), and back.

The kernels are launched on torch tensors; these two functions let the CuPy and JAX paths
use them on the caller's device without a copy.
"""
from __future__ import annotations

from typing import Any


def to_torch(x: Any):
    """A torch view of a CUDA array (torch tensors pass through); None stays None."""
    import torch

    if x is None or isinstance(x, torch.Tensor):
        return x
    return torch.from_dlpack(x)


def from_torch(t: Any, ext: Any):
    """``t`` in the library of ``ext`` (torch, CuPy or JAX), on the same device."""
    if ext.name == "torch":
        return t
    if ext.name == "cupy":
        import cupy

        return cupy.from_dlpack(t.contiguous())
    import jax
    import jax.numpy as jnp

    if t.dtype.is_floating_point and t.dtype.itemsize == 8 and not jax.config.jax_enable_x64:
        t = t.float()  # x64 off: JAX has no float64 arrays
    return jnp.from_dlpack(t.contiguous())
