"""Batched semi-relaxed (fused) Gromov-Wasserstein by proximal steps with a closed form.

Semi-relaxed GW (Vincent-Cuaz et al. 2022) keeps only the first marginal, ``T 1 = a``; the
second is free. The objective is the (fused) GW loss of the plan with its own column
marginal ``q = T^T 1``, which changes at every step::

    F(T) = (1 - alpha) <M, T> + alpha <L x T, T>        (L x T with marginals a and q)

Each outer step is the KL mirror-descent step of the balanced solver (:mod:`.gromov`)::

    G_k     = (1 - alpha) M + 2 alpha L x T_k
    T_{k+1} = argmin_{T >= 0, T 1 = a} <G_k, T> + reg KL(T | T_k)
            = a_i softmax_j(log T_k - G_k / reg)           (row by row)

With one marginal the inner problem separates over rows and has this closed form: no Sinkhorn,
one softmax per step. It is POT's ``entropic_semirelaxed_(fused_)gromov_wasserstein`` update,
run per problem with the balanced solver's stopping rule. Target nodes with ``b_j = 0`` (padding)
get no mass; the values of ``b`` are not used.
"""
from __future__ import annotations

from typing import Any

from . import gromov_cg, gromov_cost
from ._sinkhorn_parts import safe_log
from .gromov import GromovOutput, iterate_frozen, step_error


def _project_rows(xp: Any, T: Any, a: Any, cols: Any):
    """``T`` restricted to the real columns with its rows scaled to ``a`` (a start off the
    constraint, as a user's ``T_init`` or a random start may be); empty rows get ``a_i``
    spread over the real columns."""
    T = xp.where(cols[:, None, :], T, xp.zeros_like(T))
    fill = xp.astype(cols, T.dtype)[:, None, :] * xp.ones_like(T)
    r = xp.sum(T, axis=2, keepdims=True)
    T = xp.where(r > 0, T, fill)
    r = xp.sum(T, axis=2, keepdims=True)
    return T * (a[:, :, None] / xp.where(r > 0, r, xp.ones_like(r)))


def solve(xp: Any, ext: Any, cost: gromov_cost.QuadraticCost, M: Any, alpha: Any, a: Any,
          b: Any, reg: float, T_init: Any, *, max_iter: int, tol: float, grad: str,
          verbose: bool, finish_steps: int = 0, check_every: int = 1,
          **_: Any) -> GromovOutput:
    """Run the proximal steps; see the module docstring.

    Arguments as :func:`ot_batch.solvers.gromov.solve` (the Sinkhorn options are not used);
    ``b`` only marks the real target nodes (``b > 0``). ``finish_steps``: conditional-gradient
    steps at the end (:mod:`.gromov_cg`; the sharpened plan, each row's mass on its largest
    entry, meets ``T 1 = a`` as it is). Returns the plan (``T 1 = a`` to round-off), the row
    log-normalisers of the last step and zeros as potentials, and zero inner iterations.
    """
    fused = M is not None
    data = (cost.fCa, cost.fCb, cost.hCa, cost.hCb, alpha, a, b) + ((M,) if fused else ())
    if grad != "autodiff":
        data = tuple(ext.stop_gradient(x) for x in data)
        T_init = ext.stop_gradient(T_init)
    dtype, dev = a.dtype, getattr(a, "device", None)
    batch, n, m = T_init.shape
    T_init = _project_rows(xp, T_init, data[5], data[6] > 0)

    def step(d, state):
        fCa, fCb, hCa, hCb, al, a_, b_ = d[:7]
        T = state[0]
        c = gromov_cost.QuadraticCost(fCa, fCb, hCa, hCb, cost.symmetric)
        # the columns' own marginal in the constant term (c=None)
        G, f = gromov_cost.linearize(xp, c, T, al, d[7] if fused else None, a_, None)
        logit = safe_log(xp, T) - G / reg
        # padded rows (a_i = 0) get finite logits (their mass is a_i = 0 anyway): a row of
        # -inf would give NaN; padded columns get -inf (no mass)
        logit = xp.where((a_ > 0)[:, :, None], logit, xp.zeros_like(logit))
        logit = xp.where((b_ > 0)[:, None, :], logit, xp.full_like(logit, -float("inf")))
        u = ext.logsumexp(logit, axis=2)
        T_new = a_[:, :, None] * xp.exp(logit - u[:, :, None])
        err = step_error(xp, f, state[2], T_new, T, xp.sum(a_, axis=1))
        return T_new, safe_log(xp, a_) - u, f, err

    inf = xp.full((batch,), float("inf"), dtype=dtype, device=dev)
    state = (T_init, xp.zeros((batch, n), dtype=dtype, device=dev), inf, inf)
    (T, u, _, err), n_iter, converged = iterate_frozen(
        xp, ext, step, 3, data, state, max_iter=max_iter, tol=tol, check_every=check_every,
        differentiable=grad == "autodiff", verbose=verbose)
    if finish_steps:
        c = gromov_cost.QuadraticCost(*data[:4], cost.symmetric)
        T = gromov_cg.finish(xp, c, data[7] if fused else None, data[4], data[5], None, T,
                             finish_steps)
    zeros = xp.zeros((batch,), dtype=xp.int32, device=dev)
    return GromovOutput(T, (u, xp.zeros((batch, m), dtype=dtype, device=dev)), n_iter,
                        converged, err, zeros)
