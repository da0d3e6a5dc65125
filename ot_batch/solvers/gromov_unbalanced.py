"""Batched unbalanced (fused) Gromov-Wasserstein by proximal steps, per-problem stopping.

The objective is that of POT ``ot.batch``'s ``loss_quadratic_batch`` with ``unbalanced``::

    F(T) = (1 - alpha) <M, T> + alpha <L x T, T> + lam D(mu x nu | a x b)

with ``mu = T 1``, ``nu = T^T 1`` (``L x T`` uses them) and ``D`` the generalised KL or half
the squared L2 distance between the product measures. ``ot.solve_gromov(unbalanced=lam,
unbalanced_type='KL')`` (fused unbalanced GW with ``reg_marginals = lam / (2 alpha)``) has the
same objective when its two plans agree, up to a constant when ``a`` and ``b`` have different
masses.

KL (Sejourne, Vialard and Peyre 2021, UGW, with its two plans kept equal). With
``m = sum T``, ``D = m KL(mu | a) + m KL(nu | b) + (m - m_a)(m - m_b)``. Each step keeps the
convex part ``lam m_k (KL(mu | a) + KL(nu | b))`` exact, the mass frozen at the current
``m_k``, and linearises the rest: its gradient at ``T_k`` is the GW gradient ``G_k`` plus the
constant ``c_k = lam (E(mu_k | a) + E(nu_k | b))``, ``E(mu | a) = sum mu log(mu / a)``, the
cost UGW adds::

    T' = argmin_T <G_k + c_k, T> + lam m_k (KL(T 1 | a) + KL(T^T 1 | b)) + reg w_k KL(T | T_k)

an unbalanced entropic OT problem (marginal weight ``lam m_k``, per problem), solved by the
log-domain Sinkhorn of :mod:`.sinkhorn_log`, warm-started. The marginal terms stay implicit
because their gradient ``lam m log(mu / a)`` is stiff: explicit steps would oscillate.

L2. The penalty's gradient is explicit (``lam (mu_i |nu|^2 - a_i <b, nu>)`` plus the same in
``nu``), so each step is a mirror-descent step on the whole objective, in closed form,
``T' = T_k exp(-sigma grad F(T_k) / (reg w_k))``, with a per-problem step fraction ``sigma``
(backtracking: a step that would raise ``F`` is refused and ``sigma`` divided by 4; accepted
steps double it, up to 1). ``F`` never increases.

For both, as in UGW:

- the proximal weight scales with the mass, ``w_k = m_k / sqrt(m_a m_b)`` (UGW scales its
  ``eps`` and ``rho`` so): the plan's shape moves at the same pace whatever its mass, where a
  fixed weight lets the steps stall once the mass is small (``F`` is flat near zero mass);
- the new plan is rescaled to the geometric mean of the old and new masses,
  ``T_{k+1} = sqrt(m_k / m') T'`` (POT's ``rescale_plan``), and its mass changes by a factor
  ``e`` at most: a step from a poorly aligned plan, whose GW gradient is large, would empty it
  (with ``M > 0`` the empty plan is a local minimum) before its shape has moved. Fixed points
  are unchanged. (L2: the candidate is rescaled so before the backtracking test.)

KL steps, unlike L2 steps, may raise ``F`` (the mass term is linearised); stationary points
of ``F`` are their fixed points. Each problem stops when the relative change of
``F - F(0)`` or the total variation of its plan's change (relative to its mass) is below
``tol``: ``F`` itself is flat near zero mass, where the plan may still move.

Zero-weight nodes (padding) receive no mass: KL keeps them out through its marginal terms, L2
through its kernel, -inf there.
"""
from __future__ import annotations

from typing import Any

from . import gromov_cost, sinkhorn_log
from .gromov import GromovOutput, iterate_frozen


def _entropy(xp: Any, mu: Any, w: Any):
    """``sum mu log(mu / w)`` per problem, with ``0 log 0 = 0`` (and ``inf`` for mass where
    ``w = 0``), without a warning."""
    pos, support = mu > 0, w > 0
    ratio = xp.where(pos & support, mu / xp.where(support, w, xp.ones_like(w)),
                     xp.ones_like(mu))
    terms = xp.where(pos, mu * xp.log(ratio), xp.zeros_like(mu))
    return xp.sum(xp.where(pos & ~support, xp.full_like(mu, float("inf")), terms), axis=1)


def penalty(xp: Any, mu: Any, nu: Any, a: Any, b: Any, kind: str):
    """``D(mu x nu | a x b)`` per problem: the marginal penalty of :func:`solve`."""
    if kind == "l2":
        return (xp.sum(a ** 2, axis=1) * xp.sum(b ** 2, axis=1)
                - 2 * xp.sum(a * mu, axis=1) * xp.sum(b * nu, axis=1)
                + xp.sum(mu ** 2, axis=1) * xp.sum(nu ** 2, axis=1)) / 2
    m_mu, m_nu = xp.sum(mu, axis=1), xp.sum(nu, axis=1)
    m_a, m_b = xp.sum(a, axis=1), xp.sum(b, axis=1)
    kl_a = _entropy(xp, mu, a) - m_mu + m_a  # generalised KL(mu | a)
    kl_b = _entropy(xp, nu, b) - m_nu + m_b
    return m_nu * kl_a + m_mu * kl_b + (m_mu - m_a) * (m_nu - m_b)


MASS_STEP = 1.0  # largest change of log-mass in one step


def _damped(xp: Any, log_new: Any, log_old: Any):
    """The log-mass of the next plan: half the step's change (the geometric mean of the old
    and new masses, UGW's rescaling), at most ``MASS_STEP`` either way."""
    return log_old + xp.clip((log_new - log_old) / 2, -MASS_STEP, MASS_STEP)


def _objective(xp: Any, cost: Any, M: Any, al: Any, lam: Any, a: Any, b: Any, T: Any,
               kind: str):
    """``(F(T) - F(0), G, T 1, T^T 1)`` with ``G`` the gradient of the (fused) GW part.
    ``F(0) = lam D(0)`` is left out: ``F`` is flat
    near zero mass, and the relative change of ``F - F(0)`` still sees the plan moving."""
    mu, nu = xp.sum(T, axis=2), xp.sum(T, axis=1)
    G, f = gromov_cost.linearize(xp, cost, T, al, M, mu, nu)
    f = f + lam * (penalty(xp, mu, nu, a, b, kind)
                   - penalty(xp, xp.zeros_like(mu), xp.zeros_like(nu), a, b, kind))
    return f, G, mu, nu


def _kl_step(xp, ext, G, T, logT, real, mu, nu, w, lam, a, b, reg, init, inner):
    """The unbalanced entropic OT problem of a KL step (module docstring), divided by ``w``:
    cost ``(G + c_k) / w``, marginal weight ``lam m_k / w = lam sqrt(m_a m_b)``."""
    G = G + (lam * (_entropy(xp, mu, a) + _entropy(xp, nu, b)))[:, None, None]
    rho = lam * xp.sqrt(xp.sum(a, axis=1) * xp.sum(b, axis=1))
    # padded rows and columns get a finite kernel: their potential is -inf (no mass)
    out = sinkhorn_log.solve(xp, ext, G / w - reg * xp.where(real, logT, xp.zeros_like(T)), a,
                             b, reg, unbalanced=(rho, rho), init=init, **inner)
    return out.plan, out.potentials, out.n_iter


def _l2_logits(xp, G, T, logT, real, mu, nu, w, lam, a, b, reg, sigma):
    """``log T_k - sigma grad F(T_k) / (reg w)``, -inf on padded entries."""
    g_mu = mu * xp.sum(nu ** 2, axis=1)[:, None] - a * xp.sum(b * nu, axis=1)[:, None]
    g_nu = nu * xp.sum(mu ** 2, axis=1)[:, None] - b * xp.sum(a * mu, axis=1)[:, None]
    G = G + lam[:, None, None] * (g_mu[:, :, None] + g_nu[:, None, :])
    return xp.where(real, logT - sigma[:, None, None] * G / (reg * w),
                    xp.full_like(T, -float("inf")))


def solve(xp: Any, ext: Any, cost: gromov_cost.QuadraticCost, M: Any, alpha: Any, a: Any,
          b: Any, reg: float, T_init: Any, *, unbalanced: Any, kind: str, max_iter: int,
          tol: float, max_iter_inner: int, tol_inner: float, grad: str,
          check_every_inner: int, verbose: bool, check_every: int = 1,
          **_: Any) -> GromovOutput:
    """Run the proximal steps; see the module docstring.

    Arguments as :func:`ot_batch.solvers.gromov.solve`, plus ``unbalanced`` (B,), the weight
    ``lam`` of the marginal penalty, and ``kind`` ('kl' or 'l2'). The plan is not rounded (it
    has no marginals to meet). Potentials: the last Sinkhorn log-scalings (zeros for L2).
    """
    fused = M is not None
    data = (cost.fCa, cost.fCb, cost.hCa, cost.hCb, alpha, a, b, unbalanced)
    data = data + ((M,) if fused else ())
    if grad != "autodiff":
        data = tuple(ext.stop_gradient(x) for x in data)
        T_init = ext.stop_gradient(T_init)
    inner = dict(grad="autodiff" if grad == "autodiff" else "detach", max_iter=max_iter_inner,
                 tol=tol_inner, check_every=check_every_inner)
    dtype, dev = a.dtype, getattr(a, "device", None)
    batch, n, m = T_init.shape
    # a start with mass on zero-weight nodes: that mass is dropped (its KL penalty is inf)
    T_init = xp.where((data[5] > 0)[:, :, None] & (data[6] > 0)[:, None, :], T_init,
                      xp.zeros_like(T_init))
    tiny, eps = float(xp.finfo(dtype).smallest_normal), float(xp.finfo(dtype).eps)

    def floor(x, low=tiny):
        return xp.maximum(x, xp.full_like(x, low))

    def step(d, state):
        fCa, fCb, hCa, hCb, al, a_, b_, lam = d[:8]
        Md = d[8] if fused else None
        T, du, dv, f_prev, _, n_inner, sigma = state
        c = gromov_cost.QuadraticCost(fCa, fCb, hCa, hCb, cost.symmetric)
        f, G, mu, nu = _objective(xp, c, Md, al, lam, a_, b_, T, kind)
        mass = xp.sum(mu, axis=1)
        log_mass = xp.log(floor(mass))
        # (w floored at eps: the steps of an all but empty plan stay finite)
        w = floor(mass / xp.sqrt(xp.sum(a_, axis=1) * xp.sum(b_, axis=1)), eps)[:, None, None]
        real = (a_ > 0)[:, :, None] & (b_ > 0)[:, None, :]
        # log T_k floored: a row may lose (nearly) all its mass, and a row of -inf would turn
        # its potential into NaN
        logT = xp.log(floor(T))
        args = (xp, G, T, logT, real, mu, nu, w, lam, a_, b_, reg)
        if kind == "kl":
            T_new, (u, v), n_it = _kl_step(xp, ext, *args[1:], (du, dv), inner)
            log_new = xp.log(floor(xp.sum(T_new, axis=(1, 2))))
            T_new = T_new * xp.exp(_damped(xp, log_new, log_mass) - log_new)[:, None, None]
            # the objective's change between steps
            err_f = xp.abs(f - f_prev) / floor(xp.abs(f))
            accept = xp.ones(f.shape, dtype=xp.bool, device=dev)
        else:
            logit = _l2_logits(*args, sigma)
            # the damped mass in the log domain: exp(logit) may overflow
            lse = ext.logsumexp(xp.reshape(logit, (logit.shape[0], -1)), axis=1)
            T_new = xp.exp(logit - (lse - _damped(xp, lse, log_mass))[:, None, None])
            f_new = _objective(xp, c, Md, al, lam, a_, b_, T_new, kind)[0]
            accept = f_new <= f  # False for NaN: a step that raises F is refused
            T_new = xp.where(accept[:, None, None], T_new, T)
            f_new = xp.where(accept, f_new, f)
            # the accepted step's change of the objective (F of the new plan is kept)
            err_f, f = xp.abs(f_new - f) / floor(xp.abs(f_new)), f_new
            sigma = xp.where(accept, xp.minimum(2 * sigma, xp.ones_like(sigma)), sigma / 4)
            u, v, n_it = du, dv, xp.zeros_like(n_inner)
        tv = xp.sum(xp.abs(T_new - T), axis=(1, 2)) / floor(mass)
        err = xp.where(xp.isnan(err_f), tv, xp.minimum(err_f, tv))
        # a refused step counts its new step fraction: below tol, no step sees a descent
        err = xp.where(accept, err, sigma)
        return T_new, u, v, f, err, n_inner + xp.astype(n_it, n_inner.dtype), sigma

    inf = xp.full((batch,), float("inf"), dtype=dtype, device=dev)
    state = (T_init, xp.zeros((batch, n), dtype=dtype, device=dev),
             xp.zeros((batch, m), dtype=dtype, device=dev), inf, inf,
             xp.zeros((batch,), dtype=xp.int32, device=dev),
             xp.ones((batch,), dtype=dtype, device=dev))
    (T, u, v, _, err, n_inner, _), n_iter, converged = iterate_frozen(
        xp, ext, step, 4, data, state, max_iter=max_iter, tol=tol, check_every=check_every,
        differentiable=grad == "autodiff", verbose=verbose)
    return GromovOutput(T, (u, v), n_iter, converged, err, n_inner)
