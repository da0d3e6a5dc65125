"""PyTorch extras (see :mod:`backends`)."""
from __future__ import annotations

from typing import Any

import array_api_compat.torch as xp
import numpy as np
import torch

from . import _eager, _host

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


def _plain(x: Any):
    """The value under torch.func's wrappers (grad / jvp levels of ``torch.func.hessian``),
    whose host copies fail; the solvers only read back values that carry no derivative."""
    functorch = torch._C._functorch
    while functorch.is_functorch_wrapped_tensor(x):
        x = functorch.get_unwrapped(x)
    return x


def to_numpy(x: Any) -> np.ndarray:
    with torch._C._DisableFuncTorch():  # or the copy would be wrapped again
        x = _plain(x).detach().cpu()
        return (x.float() if x.dtype == torch.bfloat16 else x).numpy()  # no bfloat16 in NumPy


def from_numpy(x: np.ndarray, like: Any):
    return torch.from_numpy(x).to(like.device)


host_call = _host.make_host_call(to_numpy, from_numpy)


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


class _Implicit(torch.autograd.Function):
    """``(f, g)`` returned as they are, with the derivatives of the solution map of the OT
    problem ``(C, a, b)`` (:mod:`ot_batch.solvers.implicit`): ``backward`` for reverse mode,
    ``jvp`` for forward mode (``torch.func.jacfwd``, ``torch.func.hessian``). Both are torch
    code that autograd differentiates again, so derivatives of any order work."""

    generate_vmap_rule = True

    @staticmethod
    def forward(C, a, b, f, g, spec):
        return f.clone(), g.clone()

    @staticmethod
    def setup_context(ctx, inputs, output):
        C, a, b, _, _, spec = inputs
        ctx.spec = spec
        ctx.save_for_backward(C, a, b, *output)
        ctx.save_for_forward(C, a, b, *output)

    @staticmethod
    def backward(ctx, vf, vg):
        from ot_batch.solvers import implicit

        C, a, b, f, g = ctx.saved_tensors
        gC, ga, gb = implicit.cotangent(xp, _this(), ctx.spec, C, a, b, f, g, vf, vg)
        return gC, ga, gb, None, None, None

    @staticmethod
    def jvp(ctx, dC, da, db, df, dg, _):
        from ot_batch.solvers import implicit

        C, a, b, f, g = ctx.saved_tensors
        return implicit.tangent(xp, _this(), ctx.spec, C, a, b, f, g, dC, da, db)


def _this():
    import sys
    return sys.modules[__name__]


def implicit_attach(spec: Any, C: Any, a: Any, b: Any, f: Any, g: Any):
    """``(f, g)``, solutions of the problems ``(C, a, b)`` (:class:`Spec` ``spec``), carrying
    the derivatives of the implicit function theorem in C, a and b."""
    return _Implicit.apply(C, a, b, f.detach(), g.detach(), spec)


def linear_solve(matvec: Any, rhs: Any, solve: Any):
    """``solve(matvec, rhs)``; autograd follows the solver's loop (see
    :func:`backends.jax.linear_solve`)."""
    return solve(matvec, rhs)
