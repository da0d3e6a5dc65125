"""CuPy extras (see :mod:`backends`)."""
from __future__ import annotations

from functools import partial
from typing import Any

import array_api_compat.cupy as xp
import cupy
import numpy as np

from . import _host, _numpy_like

name = "cupy"
logsumexp = partial(_numpy_like.logsumexp, cupy)
take, put = _numpy_like.take, _numpy_like.put
implicit_attach = _numpy_like.implicit_attach
linear_solve = _numpy_like.linear_solve


def stop_gradient(x: Any):
    return x


def to_numpy(x: Any) -> np.ndarray:
    return cupy.asnumpy(x)


def from_numpy(x: np.ndarray, like: Any):
    with like.device:
        return cupy.asarray(x)


host_call = _host.make_host_call(to_numpy, from_numpy)


def compile(fn):
    """Eager library: run ``fn`` as it is (see :func:`backends.jax.compile`)."""
    return fn


def is_tracer(x: Any) -> bool:
    return False


def device_of(x: Any) -> str:
    return f"cuda:{x.device.id}"


_iterate = _numpy_like.make_iterate(xp, to_numpy)


def iterate(step, error, data, state, *, max_iter, check_every, tol, differentiable=False,
            verbose=False, start=0):
    return _iterate(step, error, data, state, max_iter=max_iter, check_every=check_every,
                    tol=tol, verbose=verbose, start=start)
