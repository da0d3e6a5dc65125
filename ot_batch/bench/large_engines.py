"""The ``large`` suite's engines: one large problem from points, on CUDA when present.

Each engine solves a :class:`~ot_batch.bench.large_workloads.LargeProblem` by its protocol
(see :mod:`ot_batch.bench.large_workloads`):

``ot_batch_online``
    Fixed: ``ot_batch.samples_loss_batch(x[None], y[None], a[None], b[None], p=2,
    cost="sqeuclidean", eps_list=[0.1] * 10, debias=False, backend="online",
    precision="tf32")``; end to end: ``ot_batch.SamplesLoss("sinkhorn", p=2, blur=0.05,
    scaling=0.5, debias=True, backend="online")(a, x, b, y)``. Without CUDA the online
    kernels run only in Triton's interpreter (``TRITON_INTERPRET=1``, minutes at n = 500);
    when that is unset the engine falls back to ``backend="tensorized"`` and says so.
``ot_batch_online_f32``
    The fixed protocol with ``precision="tf32x3"`` (float32-accurate products).
``flash_sinkhorn``, ``flash_sinkhorn_alt``
    FlashSinkhorn's symmetric and alternating solvers, fixed protocol exactly as its
    ``bench_forward.py`` (``use_epsilon_scaling=False, eps=0.1, n_iters=10, debias=False,
    normalize=False, autotune=True, last_extrapolation=False, allow_tf32=True``); end to end
    (symmetric only) ``SamplesLoss("sinkhorn", p=2, blur=0.05, scaling=0.5, debias=True,
    half_cost=True, normalize=False)``. CUDA only.
``geomloss_online``
    GeomLoss on KeOps: fixed as ``bench_forward.py`` (``sinkhorn_loop`` with
    ``eps_list=[0.1] * 10``, ``lse_genred("SqDist(X,Y)", d)``, ``last_extrapolation=False``);
    end to end ``geomloss.SamplesLoss(..., backend="online")``. KeOps compiles with nvcc at
    first use of each formula (in the untimed warm-up).
``geomloss_tensorized``
    GeomLoss on dense costs, where four n x m float32 arrays fit in 40 GB: fixed as
    ``bench_forward.py`` (the cost is formed once, outside the timed call), end to end
    ``backend="tensorized"``.
``ott_dense``
    OTT-JAX ``PointCloud(x, y, epsilon=0.1)``, dense, ``Sinkhorn(min_iterations=10,
    max_iterations=10, threshold=-1)``, JAX's default (TF32) products; fixed protocol only,
    where one n x m float32 array fits in 40 GB.

An engine raises :class:`~ot_batch.bench.runner.Skip` (the case is reported as skipped, with
the reason) where its protocol does not apply ("N/A"), where the workload names it in its
``skip`` or its dense arrays do not fit, and where setting up or a call fails (a library that
raises, KeOps that does not compile, an out-of-memory error): the suite goes on.

Every engine reports its value in GeomLoss's convention (``<a, f> + <b, g>``, with the
debiasing terms end to end), the peak GPU memory of its last timed call
(``torch.cuda.max_memory_allocated`` after ``reset_peak_memory_stats``, inputs included; None
on the CPU and for JAX) and, with a backward, the norm of the gradient with respect to ``x``.
"""
from __future__ import annotations

import contextlib
import ctypes
import gc
import os
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, Callable

import numpy as np

from .engines import Engine, Output, _needs
from .large_workloads import LargeProblem, LargeWorkload, fits
from .runner import Skip

__all__ = ["LargeOutput", "Prepared", "LargeEngine", "LARGE_ENGINES", "FIXED", "SYMMETRIC",
           "ALTERNATING_F", "ALTERNATING_G", "ANNEALED"]

# What a fixed-protocol call computes. After 10 iterations at eps = 0.1 the potentials are far
# from converged, so these differ by ~1e-3 relative: values are compared within one kind.
FIXED = "symmetric + final update"  # ot_batch: GeomLoss's loop with its last extrapolation
SYMMETRIC = "symmetric"  # GeomLoss's loop with last_extrapolation=False (bench_forward)
ALTERNATING_F = "alternating, f first"  # FlashSinkhorn's alternating solver
ALTERNATING_G = "alternating, g first"  # OTT-JAX's
ANNEALED = "GeomLoss's annealed divergence"  # every end-to-end engine


@dataclass
class LargeOutput(Output):
    """:class:`~ot_batch.bench.engines.Output` with what the ``large`` suite reports besides.

    ``value_linear`` holds the engine's value (one problem). ``peak_mb``: peak GPU memory of
    the last timed call in 10^6 bytes (None where not tracked); ``grad_norm``: norm of the
    gradient with respect to x (backward runs); ``algorithm``: which iteration it ran (values
    are compared within one); ``note``: how the engine ran this case.
    """

    peak_mb: float | None = None
    grad_norm: float | None = None
    algorithm: str = ""
    note: str = ""


@dataclass
class Prepared:
    """A problem on the engine's device and the call to time.

    ``fn()`` is the timed call; ``value(raw)`` turns its result into ``(value, grad_norm)``
    (untimed).
    """

    pb: LargeProblem
    fn: Callable[[], Any]
    value: Callable[[Any], tuple[float, float | None]]
    algorithm: str
    note: str = ""


def _brief(exc: BaseException) -> str:
    """``Type: first line of the message`` (at most 200 characters)."""
    msg = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {msg[0][:200] if msg else ''}".rstrip(": ")


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def _free() -> None:
    """Drop what earlier cases left (so that they neither crowd nor count in this one)."""
    gc.collect()
    if _cuda():
        import torch

        torch.cuda.empty_cache()


def _scalar(raw: Any, backward: bool = False) -> tuple[float, float | None]:
    """``(value, grad_norm)`` of a loss tensor, or of ``(loss, grad)`` with a backward."""
    if backward:
        loss, grad = raw
        return float(loss), float(grad.double().norm())
    return float(raw.reshape(-1)[0]), None


def _e2e_call(loss_fn: Callable, x: Any, y: Any, a: Any, b: Any,
              backward: bool) -> Callable[[], Any]:
    """The timed call of an end-to-end loss: the forward, or the forward and the backward."""
    if not backward:
        return lambda: loss_fn(a, x, b, y)
    xg = x.detach().clone().requires_grad_(True)

    def call():
        xg.grad = None  # a fresh gradient each call (no accumulation kernel)
        loss = loss_fn(a, xg, b, y)
        loss.backward()
        return loss.detach(), xg.grad
    return call


@contextlib.contextmanager
def _tf32_matmul():
    """TF32 torch matrix products inside (bench_forward.py turns them on for the run)."""
    import torch

    old = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = True
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32 = old


class LargeEngine(Engine):
    """Base of the ``large`` suite's engines (torch tensors on CUDA, else on the CPU)."""

    # Triton autotuning, KeOps and JAX compile per shape: warm up on the problem itself.
    warmup_full = True
    requires: tuple[str, ...] = ("torch",)
    cuda_only = False
    protocols: tuple[str, ...] = ("fixed", "e2e", "mem")
    na = ""  # why the other protocols do not apply
    dense_arrays = 0  # n x m float32 arrays the engine holds at once (0: none)

    def available(self) -> str | None:
        for module in self.requires:
            reason = _needs(module)
            if reason is not None:
                return reason
        if self.cuda_only and not _cuda():
            return "needs a CUDA device"
        return None

    def device(self) -> str:
        return "cuda" if _cuda() else "cpu"

    def sync(self) -> None:
        if _cuda():
            import torch

            torch.cuda.synchronize()

    def not_here(self, wl: LargeWorkload) -> str | None:
        """Why this engine does not run ``wl`` (None: it does)."""
        if wl.protocol not in self.protocols:
            return f"N/A: {self.na}"
        if self.name in wl.skip:
            return wl.skip[self.name]
        return fits(wl, self.dense_arrays) if self.dense_arrays else None

    def prepare(self, pb: LargeProblem) -> Prepared:
        why = self.not_here(pb.workload)
        if why is not None:
            raise Skip(why)
        _free()
        try:
            data = self._prepare(pb, pb.workload)
        except Skip:
            raise
        except Exception as exc:  # a peer's library failing must not end the suite
            raise Skip(f"failed to set up: {_brief(exc)}") from None
        self.sync()
        return data

    def _prepare(self, pb: LargeProblem, wl: LargeWorkload) -> Prepared:
        raise NotImplementedError

    def tensors(self, pb: LargeProblem) -> tuple[Any, ...]:
        """``x`` (n, d), ``y`` (m, d), ``a`` (n,), ``b`` (m,): float32 on the engine's device."""
        import torch

        return tuple(torch.as_tensor(t[0], dtype=torch.float32, device=self.device())
                     for t in (pb.X, pb.Y, pb.a, pb.b))

    def run(self, data: Prepared) -> Any:
        self._reset_peak()
        try:
            return data.fn()
        except Exception as exc:  # an out-of-memory error, a kernel that fails to compile
            raise Skip(f"failed: {_brief(exc)}") from None

    def _reset_peak(self) -> None:
        # a host call of microseconds: the peak then is this call's (plus the inputs)
        if _cuda():
            import torch

            torch.cuda.reset_peak_memory_stats()

    def _peak_mb(self) -> float | None:
        if not _cuda():
            return None
        import torch

        return torch.cuda.max_memory_allocated() / 1e6

    def summarize(self, raw: Any, data: Prepared) -> LargeOutput:
        peak = self._peak_mb()  # first: nothing of summarize's may count
        value, grad = data.value(raw)
        return LargeOutput(np.array([value]), peak_mb=peak, grad_norm=grad,
                           algorithm=data.algorithm, note=data.note)


class OtBatchOnline(LargeEngine):
    name = "ot_batch_online"
    description = ("ot_batch.samples_loss_batch(..., eps_list=[0.1] * 10, debias=False, "
                   "cost='sqeuclidean', backend='online', precision='tf32') (fixed; GeomLoss's "
                   "loop, which ends with its last extrapolation: one more update than "
                   "FlashSinkhorn's protocol); ot_batch.SamplesLoss('sinkhorn', p=2, blur, "
                   "scaling, debias=True, backend='online') (end to end). Without CUDA the "
                   "online kernels run only in Triton's interpreter (TRITON_INTERPRET=1, about a "
                   "minute a call at n = 500); with it unset the engine falls back to "
                   "backend='tensorized' (dense costs), as its note says")
    precision = "tf32"

    def backend(self, x: Any) -> tuple[str, str]:
        """``(backend, note)``: 'online' on CUDA or in Triton's interpreter, else 'tensorized'."""
        if x.is_cuda:
            return "online", f"online, {self.precision}"
        if os.environ.get("TRITON_INTERPRET") == "1":
            return "online", f"online in Triton's interpreter (CPU), {self.precision}"
        return "tensorized", "backend='tensorized' fallback (no CUDA, TRITON_INTERPRET unset)"

    def _prepare(self, pb: LargeProblem, wl: LargeWorkload) -> Prepared:
        import ot_batch

        x, y, a, b = self.tensors(pb)
        backend, note = self.backend(x)
        if backend == "tensorized":
            why = fits(wl, 4)  # the fallback holds dense costs, as GeomLoss's tensorized
            if why is not None:
                raise Skip(why)
        if wl.protocol == "fixed":
            X, Y, A, B = x[None], y[None], a[None], b[None]
            eps_list = [wl.reg] * wl.max_iter

            def fn():
                return ot_batch.samples_loss_batch(
                    X, Y, A, B, p=2, cost="sqeuclidean", eps_list=eps_list, debias=False,
                    backend=backend, precision=self.precision)
            return Prepared(pb, fn, _scalar, FIXED, note)
        loss = ot_batch.SamplesLoss("sinkhorn", p=2, blur=wl.blur, scaling=wl.scaling,
                                    debias=True, backend=backend)
        return Prepared(pb, _e2e_call(loss, x, y, a, b, wl.backward),
                        partial(_scalar, backward=wl.backward), ANNEALED, note)


class OtBatchOnlineF32(OtBatchOnline):
    name = "ot_batch_online_f32"
    description = ("ot_batch_online with precision='tf32x3' (three TF32 products per product: "
                   "float32 accuracy at about twice the time), fixed protocol")
    precision = "tf32x3"
    protocols = ("fixed",)
    na = "the tf32x3 variant is timed on the fixed protocol only"


class FlashSinkhorn(LargeEngine):
    name = "flash_sinkhorn"
    description = ("flash_sinkhorn.SamplesLoss, symmetric backend: bench_forward.py's settings "
                   "(fixed; no last extrapolation, autotune, TF32); half_cost=True, debias=True, "
                   "normalize=False and its defaults (end to end: scaling, last extrapolation, "
                   "TF32)")
    requires = ("torch", "flash_sinkhorn")
    cuda_only = True  # flash_sinkhorn.SamplesLoss requires CUDA tensors
    flash_backend = "symmetric"
    algorithm = SYMMETRIC

    def _prepare(self, pb: LargeProblem, wl: LargeWorkload) -> Prepared:
        from flash_sinkhorn import SamplesLoss

        x, y, a, b = self.tensors(pb)
        if wl.protocol == "fixed":
            loss = SamplesLoss("sinkhorn", backend=self.flash_backend, use_epsilon_scaling=False,
                               eps=wl.reg, n_iters=wl.max_iter, debias=False, potentials=False,
                               normalize=False, autotune=True, last_extrapolation=False,
                               allow_tf32=True)
            return Prepared(pb, lambda: loss(a, x, b, y), _scalar, self.algorithm,
                            f"{self.flash_backend}, TF32")
        # half_cost: GeomLoss's |x - y|^2 / 2 (its schedule is then GeomLoss's too).
        # normalize=False: a and b sum to one already, so the value is the same, minus a
        # division.
        loss = SamplesLoss("sinkhorn", p=2, blur=wl.blur, scaling=wl.scaling, debias=True,
                           half_cost=True, normalize=False, backend=self.flash_backend)
        return Prepared(pb, _e2e_call(loss, x, y, a, b, wl.backward),
                        partial(_scalar, backward=wl.backward), ANNEALED,
                        f"{self.flash_backend}, TF32")


class FlashSinkhornAlt(FlashSinkhorn):
    name = "flash_sinkhorn_alt"
    description = ("flash_sinkhorn.SamplesLoss, alternating backend (f then g each iteration), "
                   "bench_forward.py's settings, fixed protocol")
    flash_backend = "alternating"
    algorithm = ALTERNATING_F
    protocols = ("fixed",)
    na = "FlashSinkhorn's alternating backend runs one fixed eps (no epsilon scaling)"


def _preload_cuda_libs() -> None:
    """Load nvrtc and cudart globally so that KeOps finds them (as bench_forward.py does)."""
    cuda_home = os.environ.get("CUDA_HOME") or os.environ.get("CUDA_PATH")
    if cuda_home is None:
        try:
            from torch.utils.cpp_extension import CUDA_HOME as cuda_home
        except Exception:
            return
    if not cuda_home:
        return
    os.environ.setdefault("CUDA_HOME", cuda_home)
    os.environ.setdefault("CUDA_PATH", cuda_home)
    lib_dir = Path(cuda_home) / "targets" / "x86_64-linux" / "lib"
    if not lib_dir.is_dir():
        lib_dir = Path(cuda_home) / "lib64"
    for pattern in ("libnvrtc.so*", "libnvrtc-builtins.so*", "libcudart.so*"):
        for lib in sorted(lib_dir.glob(pattern)):
            try:
                ctypes.CDLL(str(lib), mode=ctypes.RTLD_GLOBAL)
            except OSError:
                pass


def _sqdist(x: Any, y: Any) -> Any:
    """``|x - y|^2`` as bench_forward.py's tensorized GeomLoss forms it."""
    x2 = (x * x).sum(dim=-1, keepdim=True)
    y2 = (y * y).sum(dim=-1, keepdim=True).transpose(-2, -1)
    return x2 + y2 - 2.0 * (x @ y.transpose(-2, -1))


def _geomloss_e2e(pb: LargeProblem, wl: LargeWorkload, data, backend: str,
                  note: str) -> Prepared:
    """GeomLoss's ``SamplesLoss`` with the end-to-end defaults on one of its backends."""
    from geomloss import SamplesLoss

    loss = SamplesLoss("sinkhorn", p=2, blur=wl.blur, scaling=wl.scaling, debias=True,
                       backend=backend)
    return Prepared(pb, _e2e_call(loss, *data, wl.backward),
                    partial(_scalar, backward=wl.backward), ANNEALED, note)


class GeomLossOnline(LargeEngine):
    name = "geomloss_online"
    description = ("GeomLoss on KeOps: sinkhorn_loop(eps_list=[0.1] * 10, last_extrapolation="
                   "False) with lse_genred('SqDist(X,Y)', d) (fixed, bench_forward.py; exact "
                   "float32); geomloss.SamplesLoss(..., backend='online') (end to end)")
    requires = ("torch", "geomloss", "pykeops")

    def _prepare(self, pb: LargeProblem, wl: LargeWorkload) -> Prepared:
        if _cuda():
            _preload_cuda_libs()
        x, y, a, b = self.tensors(pb)
        if wl.protocol != "fixed":
            return _geomloss_e2e(pb, wl, (x, y, a, b), "online", "KeOps")
        from geomloss._legacy.sinkhorn_divergence import (log_weights, sinkhorn_cost,
                                                          sinkhorn_loop)
        from geomloss._legacy.sinkhorn_samples import lse_genred, softmin_online

        a_log, b_log = log_weights(a), log_weights(b)
        softmin = partial(softmin_online, log_conv=lse_genred("SqDist(X,Y)", wl.d))
        C_xy, C_yx = (x, y.detach()), (y, x.detach())
        eps, eps_list = wl.reg, [wl.reg] * wl.max_iter

        def fn():
            return sinkhorn_loop(softmin, a_log, b_log, None, None, C_xy, C_yx, eps_list,
                                 rho=None, debias=False, last_extrapolation=False)

        def value(raw):
            _, _, g_ab, f_ba = raw
            return float(sinkhorn_cost(eps, None, a, b, None, None, g_ab, f_ba, batch=False,
                                       debias=False, potentials=False)), None
        return Prepared(pb, fn, value, SYMMETRIC, "KeOps, float32")


class GeomLossTensorized(LargeEngine):
    name = "geomloss_tensorized"
    description = ("GeomLoss on dense costs: sinkhorn_loop with softmin_tensorized on a cost "
                   "formed once outside the timed call with TF32 products (fixed, "
                   "bench_forward.py); geomloss.SamplesLoss(..., backend='tensorized') (end to "
                   "end, torch's default float32 products)")
    requires = ("torch", "geomloss")
    dense_arrays = 4  # C_xy and the log-sum-exp temporaries (e2e: C_xx, C_yy too)

    def _prepare(self, pb: LargeProblem, wl: LargeWorkload) -> Prepared:
        x, y, a, b = self.tensors(pb)
        if wl.protocol != "fixed":
            return _geomloss_e2e(pb, wl, (x, y, a, b), "tensorized", "dense")
        from geomloss._legacy.sinkhorn_divergence import (log_weights, sinkhorn_cost,
                                                          sinkhorn_loop)
        from geomloss._legacy.sinkhorn_samples import softmin_tensorized

        with _tf32_matmul():
            C_xy = _sqdist(x[None], y[None])
        C_yx = C_xy.transpose(-1, -2)
        a_log, b_log = log_weights(a)[None], log_weights(b)[None]
        eps, eps_list = wl.reg, [wl.reg] * wl.max_iter

        def fn():
            return sinkhorn_loop(softmin_tensorized, a_log, b_log, None, None, C_xy, C_yx,
                                 eps_list, rho=None, debias=False, last_extrapolation=False)

        def value(raw):
            _, _, g_ab, f_ba = raw
            return float(sinkhorn_cost(eps, None, a[None], b[None], None, None, g_ab, f_ba,
                                       batch=True, debias=False, potentials=False)[0]), None
        return Prepared(pb, fn, value, SYMMETRIC, "dense cost given (not timed), TF32")


class OttDense(LargeEngine):
    name = "ott_dense"
    description = ("OTT-JAX PointCloud(x, y, epsilon=0.1) dense, Sinkhorn(min_iterations=10, "
                   "max_iterations=10, threshold=-1), jax.jit, JAX's default (TF32) products "
                   "(bench_forward.py's bench_ott_jax_dense; the arrays are arguments rather "
                   "than constants of the compiled function); value <a, f> + <b, g> - "
                   "eps (<a, log a> + <b, log b>): GeomLoss's convention")
    requires = ("jax", "ott")
    protocols = ("fixed",)
    na = "OTT-JAX has no GeomLoss epsilon schedule"
    dense_arrays = 1  # the cost matrix (below 40 GB; its temporaries come on top)

    def device(self) -> str:
        from .device_engines import _jax

        return _jax().devices()[0].platform

    def sync(self) -> None:
        """``run`` blocks until its result is ready."""

    def _reset_peak(self) -> None:
        """JAX's allocator keeps no peak that can be reset: not tracked."""

    def _peak_mb(self) -> float | None:
        return None

    def _prepare(self, pb: LargeProblem, wl: LargeWorkload) -> Prepared:
        from .device_engines import _jax

        jax = _jax()  # not preallocating 75% of the GPU that the torch engines share
        import jax.numpy as jnp
        from ott.geometry import pointcloud
        from ott.problems.linear import linear_problem
        from ott.solvers.linear import sinkhorn

        eps, iters = wl.reg, wl.max_iter
        solver = sinkhorn.Sinkhorn(threshold=-1.0, max_iterations=iters, min_iterations=iters)

        def solve(x, y, a, b):
            geom = pointcloud.PointCloud(x, y, epsilon=eps)
            return solver(linear_problem.LinearProblem(geom, a=a, b=b))

        args = [jax.device_put(jnp.asarray(t[0], dtype=jnp.float32))
                for t in (pb.X, pb.Y, pb.a, pb.b)]
        for t in args:
            t.block_until_ready()
        jitted = jax.jit(solve)

        def fn():
            out = jitted(*args)
            out.f.block_until_ready()
            return out

        a64, b64 = (np.asarray(t[0], dtype=np.float64) for t in (pb.a, pb.b))

        def value(out):
            # OTT's potentials hold eps log a and eps log b; GeomLoss's do not.
            f, g = (np.asarray(t, dtype=np.float64) for t in (out.f, out.g))
            shift = eps * (a64 @ np.log(a64) + b64 @ np.log(b64))
            return float(a64 @ f + b64 @ g - shift), None
        return Prepared(pb, fn, value, ALTERNATING_G, "JAX: peak memory not tracked")


LARGE_ENGINES: dict[str, Engine] = {e.name: e for e in (
    OtBatchOnline(), OtBatchOnlineF32(), FlashSinkhorn(), FlashSinkhornAlt(), GeomLossOnline(),
    GeomLossTensorized(), OttDense())}
