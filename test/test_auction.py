"""The batched auction kernel (``backends/triton/auction.py``) against exact references.

Assignments are compared with SciPy's ``linear_sum_assignment`` and plans of ``n != m``
problems with POT's ``ot.emd2``. Without a GPU the kernel runs in Triton's interpreter on CPU
tensors (small sizes); the ``gpu`` tests run full sizes on CUDA (``make test-gpu``).
"""
from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("triton")
from scipy.optimize import linear_sum_assignment  # noqa: E402

from ot_batch.backends.triton.auction import (MAX_L, AuctionResult, auction,  # noqa: E402
                                              expand, plan_from_owner)

GPU = torch.cuda.is_available()
DEV = "cuda" if GPU else "cpu"


def _eps(C):
    """The caller's choice: half the cost range to start, 1e-12 of the largest cost to end."""
    C = C.double()
    e0 = (C.amax((1, 2)) - C.amin((1, 2))) / 2
    ef = 1e-12 * C.abs().amax((1, 2)).clamp_min(1e-300)
    return e0, ef


def _lsa(C):
    """Optimal assignment costs of a (B, n, n) NumPy array."""
    out = []
    for Cb in C:
        i, j = linear_sum_assignment(Cb)
        out.append(Cb[i, j].sum())
    return np.array(out)


def _check_assignment(C, res, rtol=1e-9):
    """Every object owned, every person exactly once, cost equal to the optimum."""
    B, n, _ = C.shape
    owner = res.owner.cpu().numpy()
    Cn = C.double().cpu().numpy()
    assert res.converged.all()
    for b in range(B):
        assert sorted(owner[b].tolist()) == list(range(n))
    cost = np.array([Cn[b][owner[b], np.arange(n)].sum() for b in range(B)])
    opt = _lsa(Cn)
    scale = np.maximum(np.abs(opt), np.abs(Cn).max((1, 2)))
    np.testing.assert_array_less(np.abs(cost - opt), rtol * scale + 1e-300)


@pytest.mark.parametrize("n", [1, 2, 5, 16, 33])
def test_square_random_matches_lsa(n):
    g = np.random.default_rng(n)
    B = 2 if n == 33 else 3
    C = torch.tensor(g.random((B, n, n)) * 10 - 3, device=DEV)
    res = auction(C, *_eps(C))
    assert isinstance(res, AuctionResult)
    assert res.owner.dtype == torch.int32 and res.owner.shape == (B, n)
    assert res.price.dtype == torch.float64 and res.price.shape == (B, n)
    assert res.rounds.dtype == torch.int32 and res.converged.dtype == torch.bool
    assert (res.rounds > 0).all()
    _check_assignment(C, res)


@pytest.mark.parametrize("n", [6, 10])
def test_square_integer_ties_and_repeated_rows(n):
    g = np.random.default_rng(100 + n)
    C = g.integers(0, 4, size=(3, n, n)).astype(np.float64)
    C[0, 1] = C[0, 0]  # repeated rows
    C[0, 3] = C[0, 0]
    C[1] = 2.0  # every assignment optimal
    C[2, :, 2] = C[2, :, 0]  # repeated columns
    C = torch.tensor(C, device=DEV)
    e0, ef = _eps(C)
    res = auction(C, e0, ef)
    _check_assignment(C, res)
    # integer costs: eps < 1/n is enough for an exact optimum
    res = auction(C, e0, torch.full_like(ef, 0.9 / n))
    _check_assignment(C, res)


def test_per_problem_independent():
    """A problem's result does not depend on the others in the batch."""
    g = np.random.default_rng(7)
    C = torch.tensor(g.random((3, 8, 8)), device=DEV)
    e0, ef = _eps(C)
    full = auction(C, e0, ef)
    one = auction(C[1:2], e0[1:2], ef[1:2])
    assert torch.equal(full.owner[1:2], one.owner)
    assert torch.equal(full.rounds[1:2], one.rounds)
    assert torch.equal(full.price[1:2], one.price)


@pytest.mark.parametrize("shape", [(3, 6), (4, 6), (6, 4), (5, 3)])
def test_rectangular_plan_matches_emd(shape):
    ot = pytest.importorskip("ot")
    n, m = shape
    r, c, L = expand(n, m)
    assert n * r == m * c == L
    g = np.random.default_rng(n * 10 + m)
    Cn = g.random((2, n, m))
    Cn[1, :, 1] = Cn[1, :, 0]  # ties
    C = torch.tensor(Cn, device=DEV)
    res = auction(C, *_eps(C))
    assert res.converged.all() and res.owner.shape == (2, L)
    owner = res.owner.cpu().numpy()
    for b in range(2):
        assert sorted(owner[b].tolist()) == list(range(L))
    T = plan_from_owner(res.owner, n, m)
    assert T.dtype == torch.float64 and T.shape == (2, n, m)
    Tn = T.cpu().numpy()
    np.testing.assert_allclose(Tn.sum(2), 1.0 / n, atol=1e-12, rtol=0)
    np.testing.assert_allclose(Tn.sum(1), 1.0 / m, atol=1e-12, rtol=0)
    a, bb = np.full(n, 1.0 / n), np.full(m, 1.0 / m)
    for b in range(2):
        ref = ot.emd2(a, bb, Cn[b])
        assert abs((Tn[b] * Cn[b]).sum() - ref) <= 1e-9 * max(abs(ref), Cn[b].max())


def test_float32_costs():
    g = np.random.default_rng(3)
    C = torch.tensor(g.random((3, 10, 10)), dtype=torch.float32, device=DEV)
    res = auction(C, *_eps(C))
    _check_assignment(C, res, rtol=1e-6)


def test_max_rounds_not_converged():
    g = np.random.default_rng(4)
    C = torch.tensor(g.random((2, 8, 8)), device=DEV)
    e0, ef = _eps(C)
    res = auction(C, e0, ef, max_rounds=3)
    assert not res.converged.any()
    assert (res.rounds == 3).all()
    full = auction(C, e0, ef)
    assert full.converged.all() and (full.rounds > 3).all()
    # one problem with enough rounds, the other without: each stops on its own
    Cmix = torch.stack([torch.zeros(8, 8, dtype=torch.float64, device=DEV), C[0]])
    e0m = torch.tensor([1.0, float(e0[0])], dtype=torch.float64, device=DEV)
    efm = torch.tensor([1.0, float(ef[0])], dtype=torch.float64, device=DEV)
    res = auction(Cmix, e0m, efm, max_rounds=int(full.rounds[0]) - 1)
    assert res.converged.tolist() == [True, False]
    T = plan_from_owner(res.owner, 8, 8)  # unowned objects carry no mass
    assert abs(float(T[1].sum()) - float((res.owner[1] >= 0).sum()) / 8) < 1e-12


def test_scalar_eps_and_theta():
    g = np.random.default_rng(5)
    C = torch.tensor(g.random((2, 7, 7)), device=DEV)
    res = auction(C, 0.5, 1e-12, theta=3.0)
    _check_assignment(C, res)
    res = auction(C, 0.0, 1e-12)  # eps0 below eps_final: one phase at eps_final
    _check_assignment(C, res)


def test_plan_from_owner():
    T = plan_from_owner(torch.tensor([[1, 0]], device=DEV), 2, 2)
    assert torch.equal(T.cpu(), torch.tensor([[[0.0, 0.5], [0.5, 0.0]]], dtype=torch.float64))
    # (2, 4): r = 2, c = 1, L = 4
    T = plan_from_owner(torch.tensor([[0, 2, 3, 1]], device=DEV), 2, 4)
    assert torch.equal(T.cpu(), torch.tensor([[[0.25, 0.0, 0.0, 0.25],
                                               [0.0, 0.25, 0.25, 0.0]]], dtype=torch.float64))
    assert expand(4, 6) == (3, 2, 12) and expand(1, 1) == (1, 1, 1)


def test_bad_input_raises():
    C = torch.rand(2, 3, 3, dtype=torch.float64, device=DEV)
    with pytest.raises(TypeError, match="C"):
        auction(C.numpy() if not GPU else [1.0], 1.0, 1e-9)
    with pytest.raises(ValueError, match="C"):
        auction(C[0], 1.0, 1e-9)
    with pytest.raises(TypeError, match="C"):
        auction(C.to(torch.int32), 1.0, 1e-9)
    with pytest.raises(TypeError, match="C"):
        auction(C.half(), 1.0, 1e-9)
    with pytest.raises(ValueError, match="C"):
        auction(torch.zeros(2, 0, 3, dtype=torch.float64, device=DEV), 1.0, 1e-9)
    bad = C.clone()
    bad[1, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="C"):
        auction(bad, 1.0, 1e-9)
    with pytest.raises(ValueError, match="eps_final"):
        auction(C, 1.0, 0.0)
    with pytest.raises(ValueError, match="eps_final"):
        auction(C, 1.0, torch.tensor([1e-9, -1.0], dtype=torch.float64, device=DEV))
    with pytest.raises(ValueError, match="eps0"):
        auction(C, -1.0, 1e-9)
    with pytest.raises(ValueError, match="eps0"):
        auction(C, torch.ones(3, dtype=torch.float64, device=DEV), 1e-9)
    with pytest.raises(TypeError, match="eps0"):
        auction(C, "1", 1e-9)
    with pytest.raises(ValueError, match="theta"):
        auction(C, 1.0, 1e-9, theta=1.0)
    with pytest.raises(ValueError, match="max_rounds"):
        auction(C, 1.0, 1e-9, max_rounds=-1)
    with pytest.raises(ValueError, match="4097"):
        auction(torch.zeros(1, 17, 241, dtype=torch.float64, device=DEV), 1.0, 1e-9)
    assert 17 * 241 > MAX_L
    with pytest.raises(ValueError, match="owner"):
        plan_from_owner(torch.zeros(1, 5, dtype=torch.int32), 2, 3)
    # the input is not modified
    C0 = C.clone()
    auction(C, 1.0, 1e-9)
    assert torch.equal(C, C0)


def test_empty_batch():
    res = auction(torch.zeros(0, 4, 6, dtype=torch.float64, device=DEV), 1.0, 1e-9)
    assert res.owner.shape == (0, 12) and res.converged.shape == (0,)


def _clouds(B, n, seed=0, device=DEV):
    g = np.random.default_rng(seed)
    X = torch.tensor(g.random((B, n, 2)), device=device)
    Y = torch.tensor(g.random((B, n, 2)), device=device)
    return ((X[:, :, None, :] - Y[:, None, :, :]) ** 2).sum(-1)


@pytest.mark.gpu
@pytest.mark.skipif(not GPU, reason="needs a CUDA GPU")
@pytest.mark.parametrize("B,n", [(64, 32), (1024, 64), (64, 128), (16, 512)])
def test_gpu_full_size_matches_lsa(B, n):
    C = _clouds(B, n, seed=n)
    res = auction(C, *_eps(C))
    assert res.converged.all()
    pick = [0, B // 2, B - 1]
    sub = AuctionResult(res.owner[pick], res.price[pick], res.rounds[pick], res.converged[pick])
    _check_assignment(C[pick], sub)


@pytest.mark.gpu
@pytest.mark.skipif(not GPU, reason="needs a CUDA GPU")
@pytest.mark.parametrize("shape", [(96, 128), (300, 200), (1024, 512)])
def test_gpu_rectangular_marginals(shape):
    n, m = shape
    g = np.random.default_rng(1)
    C = torch.tensor(g.random((2, n, m)), device="cuda")
    res = auction(C, *_eps(C))
    assert res.converged.all()
    T = plan_from_owner(res.owner, n, m)
    torch.testing.assert_close(T.sum(2), torch.full_like(T.sum(2), 1.0 / n), atol=1e-12, rtol=0)
    torch.testing.assert_close(T.sum(1), torch.full_like(T.sum(1), 1.0 / m), atol=1e-12, rtol=0)


@pytest.mark.parametrize("tuning", [{"seq_below": 0}, {"seq_below": 10**6},
                                    {"scratch": False}, {"block_p": 4, "seq_below": 3}])
def test_variants_agree(tuning, monkeypatch):
    """Jacobi rounds only, one bid at a time only, no scratch memory, small chunks: the same
    optimum (the rounds may differ)."""
    from ot_batch.backends.triton import auction as mod
    g = np.random.default_rng(11)
    Cn = g.random((2, 9, 9))
    Cn[1, 2] = Cn[1, 5]
    C = torch.tensor(Cn, device=DEV)
    monkeypatch.setattr(mod, "TUNING", dict(tuning))
    _check_assignment(C, auction(C, *_eps(C)))
    Cr = torch.tensor(g.random((1, 4, 6)), device=DEV)
    res = auction(Cr, *_eps(Cr))
    T = plan_from_owner(res.owner, 4, 6).cpu().numpy()
    np.testing.assert_allclose(T.sum(2), 0.25, atol=1e-12, rtol=0)
    np.testing.assert_allclose(T.sum(1), 1 / 6, atol=1e-12, rtol=0)
