"""PyTorch extras (see :mod:`backends`)."""
from __future__ import annotations

from typing import Any

import array_api_compat.torch as xp
import numpy as np
import torch

from . import _eager

name = "torch"


def logsumexp(x: Any, axis: int):
    return torch.logsumexp(x, dim=axis)


def stop_gradient(x: Any):
    return x.detach()


def take(x: Any, idx: Any):
    return torch.index_select(x, 0, idx)


def put(x: Any, idx: Any, rows: Any):
    # Out of place so that autograd (grad="autodiff") can follow the write-back.
    return torch.index_copy(x, 0, idx, rows)


def to_numpy(x: Any) -> np.ndarray:
    x = x.detach().cpu()
    return (x.float() if x.dtype == torch.bfloat16 else x).numpy()  # NumPy has no bfloat16


def compile(fn):
    """Eager library: run ``fn`` as it is (see :func:`backends.jax.compile`)."""
    return fn


def is_tracer(x: Any) -> bool:
    return False


def device_of(x: Any) -> str:
    return str(x.device)


def iterate(step, error, data, state, *, max_iter, check_every, tol, differentiable=False,
            verbose=False, start=0):
    return _eager.iterate(step, error, data, state, xp=xp, take=take, put=put,
                          to_numpy=to_numpy, max_iter=max_iter, check_every=check_every,
                          tol=tol, verbose=verbose, start=start)
