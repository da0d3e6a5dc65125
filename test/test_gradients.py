"""Gradients of solve_batch on torch and JAX: envelope, autodiff, last_step, detach."""
from __future__ import annotations

import numpy as np
import ot
import pytest
import torch
from conftest import Backend, cloud_costs, random_weights

import ot_batch

REG = 0.5
KW = dict(tol=1e-12, max_iter=5000)


def _grads(bk, M, a, b, grad="envelope", **kw):
    """d sum(value) / d(M, a, b) as NumPy arrays, for torch or jax arrays."""
    if bk.name == "torch":
        Mt, at, bt = (bk.asarray(x).requires_grad_(True) for x in (M, a, b))
        res = ot_batch.solve_batch(Mt, REG, at, bt, grad=grad, **KW, **kw)
        res.value.sum().backward()
        return [x.grad.cpu().numpy() for x in (Mt, at, bt)], res
    import jax

    def f(M_, a_, b_):
        return ot_batch.solve_batch(M_, REG, a_, b_, grad=grad, **KW, **kw).value.sum()

    args = [bk.asarray(x) for x in (M, a, b)]
    g = jax.grad(f, argnums=(0, 1, 2))(*args)
    return [np.asarray(x) for x in g], ot_batch.solve_batch(*args[:1], REG, *args[1:],
                                                            grad=grad, **KW, **kw)


def _value(M, a, b, **kw):
    return ot_batch.solve_batch(M, REG, a, b, **KW, **kw).value


@pytest.fixture(params=["torch", "jax"])
def dbk(request):
    """The differentiable libraries (CPU)."""
    return Backend(request.param)


@pytest.fixture
def problem(rng):
    M = cloud_costs(rng, 3, 5, 4)
    return M, random_weights(rng, 3, 5), random_weights(rng, 3, 4)


@pytest.mark.parametrize("reg_type", ["entropy", "kl"])
def test_envelope_gradients_match_finite_differences(dbk, problem, rng, reg_type):
    M, a, b = problem
    (gM, ga, gb), res = _grads(dbk, M, a, b, reg_type=reg_type)
    np.testing.assert_allclose(gM, dbk.to_numpy(res.plan), rtol=1e-10, atol=1e-14)
    h = 1e-6
    # a alone along zero-sum directions (b fixed: mass must stay equal) ...
    d = rng.normal(size=a.shape)
    d -= d.mean(1, keepdims=True)
    fd = (_value(M, a + h * d, b, reg_type=reg_type)
          - _value(M, a - h * d, b, reg_type=reg_type)) / (2 * h)
    np.testing.assert_allclose((ga * d).sum(1), fd, rtol=1e-5, atol=1e-8)
    # ... and a and b scaled together (the total-mass direction).
    fd = (_value(M, a * (1 + h), b * (1 + h), reg_type=reg_type)
          - _value(M, a * (1 - h), b * (1 - h), reg_type=reg_type)) / (2 * h)
    np.testing.assert_allclose((ga * a).sum(1) + (gb * b).sum(1), fd, rtol=1e-5, atol=1e-8)
    dM = rng.normal(size=M.shape)
    fd = (_value(M + h * dM, a, b, reg_type=reg_type)
          - _value(M - h * dM, a, b, reg_type=reg_type)) / (2 * h)
    np.testing.assert_allclose((gM * dM).sum((1, 2)), fd, rtol=1e-5, atol=1e-8)


def test_envelope_gradient_of_a_matches_pot(problem):
    # POT's ot.solve sets the envelope gradient of a to reg * (u - mean u); ours is the same up
    # to the constant that zero-sum directions do not see.
    M, a, b = problem
    (_, ga, _), _ = _grads(Backend("torch"), M, a, b)
    for i in range(M.shape[0]):
        at = torch.tensor(a[i], requires_grad=True)
        res = ot.solve(torch.tensor(M[i]), at, torch.tensor(b[i]), reg=REG,
                       method="sinkhorn_log", reg_type="entropy", tol=1e-12, max_iter=5000,
                       grad="envelope")
        res.value.backward()
        np.testing.assert_allclose(ga[i] - ga[i].mean(), at.grad.numpy() - at.grad.numpy().mean(),
                                   rtol=1e-6, atol=1e-10)


def test_unbalanced_envelope_gradients(dbk, problem, rng):
    M, a, b = problem
    b = 2 * b
    (gM, ga, gb), res = _grads(dbk, M, a, b, unbalanced=(1.0, 3.0))
    h = 1e-6
    for w, g, which in ((a, ga, "a"), (b, gb, "b")):
        d = rng.normal(size=w.shape)  # any direction: the mass is free

        def v(x):
            args = (x, b) if which == "a" else (a, x)
            return _value(M, *args, unbalanced=(1.0, 3.0))

        fd = (v(w + h * d) - v(w - h * d)) / (2 * h)
        np.testing.assert_allclose((g * d).sum(1), fd, rtol=1e-5, atol=1e-8)


def test_autodiff_gradients_agree_with_envelope_at_convergence(dbk, problem):
    M, a, b = problem
    (gM, ga, _), _ = _grads(dbk, M, a, b, grad="autodiff")
    (eM, ea, _), _ = _grads(dbk, M, a, b, grad="envelope")
    np.testing.assert_allclose(gM, eM, rtol=1e-6, atol=1e-10)
    c = lambda g: g - g.mean(1, keepdims=True)  # noqa: E731
    np.testing.assert_allclose(c(ga), c(ea), rtol=1e-5, atol=1e-9)


def test_last_step_gradient_is_one_attached_update(problem):
    """grad='last_step': gradients through one log-domain update from the converged (detached)
    potentials, the plan formed with the attached kernel. (POT's ot.batch forms the plan with
    the detached kernel, so only the path through u and v carries its gradient.)"""
    M, a, b = problem
    Mt = torch.tensor(M, requires_grad=True)
    res = ot_batch.solve_batch(Mt, REG, torch.tensor(a), torch.tensor(b), grad="last_step", **KW)
    res.value.sum().backward()
    conv = ot_batch.solve_batch(torch.tensor(M), REG, torch.tensor(a), torch.tensor(b), **KW)
    Mr = torch.tensor(M, requires_grad=True)
    K = -Mr / REG
    v = conv.potentials[1].detach()
    u = torch.log(torch.tensor(a)) - torch.logsumexp(K + v[:, None, :], 2)
    v = torch.log(torch.tensor(b)) - torch.logsumexp(K + u[:, :, None], 1)
    T = torch.exp(K + u[:, :, None] + v[:, None, :])
    ((T * Mr).sum() + REG * (T * torch.log(T)).sum()).backward()
    np.testing.assert_allclose(Mt.grad.numpy(), Mr.grad.numpy(), rtol=1e-8, atol=1e-12)


def test_envelope_records_no_graph_and_detach_none(problem):
    M, a, b = problem
    Mt = torch.tensor(M, requires_grad=True)
    res = ot_batch.solve_batch(Mt, REG, torch.tensor(a), torch.tensor(b))
    assert res.value.requires_grad and not res.plan.requires_grad
    # The graph of value is a handful of operations, not one per iteration.
    seen, stack = set(), [res.value.grad_fn]
    while stack:
        fn = stack.pop()
        if fn is None or fn in seen:
            continue
        seen.add(fn)
        stack.extend(f for f, _ in fn.next_functions)
    assert len(seen) < 40
    res = ot_batch.solve_batch(Mt, REG, torch.tensor(a), torch.tensor(b), grad="detach")
    assert not res.value.requires_grad and not res.plan.requires_grad
    res = ot_batch.solve_batch(Mt, REG, torch.tensor(a), torch.tensor(b), grad="autodiff",
                               max_iter=30)
    assert res.plan.requires_grad
