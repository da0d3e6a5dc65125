"""Backend fixture: every solver test runs on every array library present.

``bk`` converts NumPy test data to the library under test (``bk.asarray``) and back
(``bk.to_numpy``). numpy, torch (CPU) and jax (CPU) always run; cupy, torch-cuda and jax-gpu
are added, marked ``gpu``, where a CUDA device is present (``make test-gpu``).
"""
from __future__ import annotations

import os

import numpy as np
import pytest

os.environ.setdefault("JAX_PLATFORMS", "" if os.environ.get("OT_BATCH_GPU") else "cpu")
# Without a GPU run, Triton kernels run in its interpreter on CPU tensors (small sizes).
if not os.environ.get("OT_BATCH_GPU"):
    os.environ.setdefault("TRITON_INTERPRET", "1")
# Eight host devices, so that the sharded solver's tests split clouds over a real mesh.
if "xla_force_host_platform_device_count" not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "")
                               + " --xla_force_host_platform_device_count=8").strip()
import jax  # noqa: E402

jax.config.update("jax_enable_x64", True)


class Backend:
    def __init__(self, name: str, device: str = "cpu"):
        self.name, self.device = name, device
        if name == "numpy":
            self.lib = np
        elif name == "torch":
            import torch
            self.lib = torch
        elif name == "jax":
            import jax.numpy as jnp
            self.lib = jnp
        elif name == "cupy":
            import cupy
            self.lib = cupy

    def __repr__(self) -> str:
        return f"{self.name}-{self.device}"

    @property
    def differentiable(self) -> bool:
        return self.name in ("torch", "jax")

    def asarray(self, x, dtype=None):
        x = np.asarray(x) if dtype is None else np.asarray(x, dtype=dtype)
        if self.name == "numpy":
            return x.copy()
        if self.name == "torch":
            import torch
            return torch.as_tensor(x.copy(), device=self.device)
        if self.name == "jax":
            import jax.numpy as jnp
            dev = jax.devices("gpu")[0] if self.device == "gpu" else jax.devices("cpu")[0]
            return jax.device_put(jnp.asarray(x), dev)
        import cupy
        return cupy.asarray(x)

    def to_numpy(self, x):
        if self.name == "torch":
            return x.detach().cpu().numpy()
        if self.name == "cupy":
            import cupy
            return cupy.asnumpy(x)
        return np.asarray(x)


def _gpu_backends():
    out = []
    try:
        import torch
        if torch.cuda.is_available():
            out.append(("torch", "cuda"))
    except ImportError:
        pass
    try:
        import cupy
        if cupy.cuda.runtime.getDeviceCount() > 0:
            out.append(("cupy", "cuda"))
    except Exception:
        pass
    try:
        if jax.devices("gpu"):
            out.append(("jax", "gpu"))
    except RuntimeError:
        pass
    return out


def _params():
    cpu = [pytest.param(Backend("numpy"), id="numpy"), pytest.param(Backend("torch"), id="torch"),
           pytest.param(Backend("jax"), id="jax")]
    gpu = [pytest.param(Backend(n, d), id=f"{n}-{d}", marks=pytest.mark.gpu)
           for n, d in _gpu_backends()]
    return cpu + gpu


BACKENDS = _params()


@pytest.fixture(params=BACKENDS)
def bk(request) -> Backend:
    return request.param


@pytest.fixture
def rng():
    return np.random.default_rng(0)


def cloud_costs(rng, batch, n, m, d=2, scale=1.0):
    """(B, n, m) squared-Euclidean costs between Gaussian clouds, as NumPy float64."""
    X = rng.normal(size=(batch, n, d))
    Y = rng.normal(size=(batch, m, d)) + 0.5
    M = ((X[:, :, None, :] - Y[:, None, :, :]) ** 2).sum(-1)
    return M * scale


def random_weights(rng, batch, n):
    w = rng.random((batch, n)) + 0.1
    return w / w.sum(1, keepdims=True)
