"""The streaming Sinkhorn divergence (``backend="online"``): small sizes under
``TRITON_INTERPRET=1`` on the CPU, full sizes on a GPU (marker ``gpu``).

References: the dense generic path in float64 (``backend="tensorized"``), GeomLoss's
tensorized ``SamplesLoss``, and finite differences.
"""
from __future__ import annotations

import os

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("triton")

import ot_batch  # noqa: E402
from ot_batch.backends import triton as tri  # noqa: E402

CUDA = torch.cuda.is_available()
DEV = "cuda" if CUDA else "cpu"
pytestmark = pytest.mark.skipif(
    not (CUDA or os.environ.get("TRITON_INTERPRET") == "1"),
    reason="needs a GPU or TRITON_INTERPRET=1 (set by conftest for the CPU run)")


def clouds(B=2, N=23, M=19, D=3, seed=0, dtype=torch.float64, device=DEV):
    g = torch.Generator().manual_seed(seed)
    X = torch.rand(B, N, D, generator=g, dtype=dtype)
    Y = torch.rand(B, M, D, generator=g, dtype=dtype) * 0.9 + 0.05
    a = torch.rand(B, N, generator=g, dtype=dtype) + 0.1
    b = torch.rand(B, M, generator=g, dtype=dtype) + 0.1
    return [t.to(device) for t in (X, Y, a / a.sum(1, keepdim=True), b / b.sum(1, keepdim=True))]


def both(kw, X, Y, a, b, grad=True):
    """Value and gradients (x, y, a) of the tensorized (float64) and online paths."""
    out = []
    for be in ("tensorized", "online"):
        Xg, Yg, ag = (t.clone().requires_grad_(grad) for t in (X, Y, a))
        v = ot_batch.samples_loss_batch(Xg, Yg, ag, b, backend=be, **kw)
        gs = torch.autograd.grad(v.sum(), (Xg, Yg, ag)) if grad else ()
        out.append((v.detach(), *gs))
    return out


def close(ref, got, rtol, atol=1e-7):
    """Relative to the largest entry; ``atol`` for the float32 round-off of debiased values
    that cancel (terms of order 1, a difference of order 1e-3)."""
    ref, got = ref.detach(), got.detach()
    scale = ref.abs().max()
    err = float((ref - got.to(ref.dtype)).abs().max())
    assert err <= rtol * float(scale) + atol, (err, ref, got)


# few temperatures: the interpreter runs every program in Python
CASES = [
    dict(scaling=0.3),
    dict(debias=False, scaling=0.3),
    dict(reach=0.5, scaling=0.3),
    dict(reach=0.5, scaling=0.3, grad="converged"),
    dict(reach_x=0.3, blur=0.1, scaling=0.3),
    dict(cost="sqeuclidean", blur=0.1, scaling=0.3),
    dict(eps_list=[0.05] * 4, debias=False),
]


@pytest.mark.parametrize("kw", CASES, ids=[str(k) for k in CASES])
def test_online_matches_tensorized(kw):
    X, Y, a, b = clouds(B=1 if kw.get("debias", True) else 2)
    (v0, gx0, gy0, ga0), (v1, gx1, gy1, ga1) = both(dict(kw, precision="tf32x3"), X, Y, a, b)
    close(v0, v1, 1e-5)
    for g0, g1 in ((gx0, gx1), (gy0, gy1), (ga0, ga1)):
        close(g0, g1, 1e-4)


@pytest.mark.parametrize("kw", [dict(scaling=0.3),
                                dict(debias=False, tol=1e-4, max_iter=30, check_every=5,
                                     scaling=0.3),
                                dict(reach=0.5, scaling=0.3)], ids=["debias", "tol", "reach"])
def test_keys_split_in_chunks(monkeypatch, kw):
    """The two-phase steps (keys in chunks, then the merge) equal the one-phase ones and the
    dense path: values and gradients, with and without tol."""
    from ot_batch.backends.triton import online_solve
    X, Y, a, b = clouds(B=2, N=70, M=90)
    out = {}
    for chunks in (1, 3):
        monkeypatch.setattr(online_solve, "KEY_CHUNKS", chunks)
        Xg = X.clone().requires_grad_()
        v = ot_batch.samples_loss_batch(Xg, Y, a, b, backend="online", precision="tf32x3", **kw)
        out[chunks] = (v.detach(), torch.autograd.grad(v.sum(), Xg)[0])
    ref = ot_batch.samples_loss_batch(X, Y, a, b, backend="tensorized", **kw)
    close(ref, out[3][0], 1e-5)
    close(out[1][0], out[3][0], 1e-6)
    close(out[1][1], out[3][1], 1e-5)


def test_key_chunks_fill_the_gpu(monkeypatch):
    """Chunks only where the query blocks leave multiprocessors idle, each of >= 8 tiles."""
    from types import SimpleNamespace

    from ot_batch.backends.triton import online_solve as os_
    monkeypatch.setattr(os_, "KEY_CHUNKS", None)  # the automatic choice
    monkeypatch.setattr(torch.cuda, "get_device_properties",
                        lambda dev: SimpleNamespace(multi_processor_count=132))
    cuda = torch.device("cuda")
    assert os_.key_chunks(158, 10_000, 128, cuda) == 4    # one 10^4-point problem, no debias
    assert os_.key_chunks(1564, 50_000, 128, cuda) == 1   # 5 x 10^4 points fill it already
    assert os_.key_chunks(40, 2_000, 128, cuda) == 1      # too few keys to split
    assert os_.key_chunks(4, 100_000, 128, cuda) == 97    # 132 wanted, capped by the tiles
    assert os_.key_chunks(158, 10_000, 128, torch.device("cpu")) == 1


def test_online_tol_log_and_potentials():
    X, Y, a, b = clouds(seed=1)
    kw = dict(tol=1e-6, check_every=5, precision="tf32x3", log=True, blur=0.3, scaling=0.3)
    v0, log0 = ot_batch.samples_loss_batch(X, Y, a, b, backend="tensorized", **kw)
    v1, log1 = ot_batch.samples_loss_batch(X, Y, a, b, backend="online", **kw)
    close(v0, v1, 1e-5)
    assert torch.equal(log0["n_iter"].cpu(), log1["n_iter"].cpu())
    assert bool(log1["converged"].all()) and float(log1["err"].max()) < 1e-6
    kw = dict(potentials=True, scaling=0.3)
    F0, G0 = ot_batch.samples_loss_batch(X, Y, a, b, backend="tensorized", **kw)
    F1, G1 = ot_batch.samples_loss_batch(X, Y, a, b, backend="online",
                                                precision="tf32x3", **kw)
    close(F0, F1, 1e-5)
    close(G0, G1, 1e-5)


def test_online_vs_geomloss():
    geomloss = pytest.importorskip("geomloss")
    X, Y, a, b = clouds(B=1, N=31, M=27, D=2, seed=2)
    x = X[0].clone().requires_grad_()
    ref = geomloss.SamplesLoss("sinkhorn", p=2, blur=0.05, scaling=0.3,
                               backend="tensorized")(a[0], x, b[0], Y[0])
    (gref,) = torch.autograd.grad(ref, x)
    x1 = X[0].clone().requires_grad_()
    got = ot_batch.SamplesLoss(blur=0.05, scaling=0.3, backend="online", precision="tf32x3")(
        a[0], x1, b[0], Y[0])
    (g1,) = torch.autograd.grad(got, x1)
    close(ref.detach(), got.detach(), 1e-5)
    close(gref, g1, 1e-4)


def test_batch_equals_loop_and_large_d():
    """Problems of a batch are independent, and d over one tile (the loop over d)."""
    X, Y, a, b = clouds(B=3, N=17, M=13, D=150, seed=3)
    X, Y = X / 10, Y / 10
    kw = dict(blur=0.1, scaling=0.3, debias=False, diameter=0.5)  # one schedule for all
    batch = ot_batch.samples_loss_batch(X, Y, a, b, backend="online",
                                               precision="tf32x3", **kw)
    loop = torch.cat([ot_batch.samples_loss_batch(
        X[i:i + 1], Y[i:i + 1], a[i:i + 1], b[i:i + 1], backend="online",
        precision="tf32x3", **kw) for i in range(3)])
    ref = ot_batch.samples_loss_batch(X, Y, a, b, backend="tensorized", **kw)
    close(ref, batch, 1e-5)
    close(batch, loop, 1e-6)


def test_tf32_is_the_exact_loss_of_rounded_points():
    """'tf32' rounds the centred coordinates and takes the norms of the rounded numbers: the
    value is the dense float64 value of the rounded points, close to the exact one."""
    from ot_batch.backends.triton.online_solve import round_tf32
    X, Y, a, b = clouds(B=1, seed=4)
    kw = dict(scaling=0.3)
    (v0, gx0, _, _), (v1, gx1, _, _) = both(dict(precision="tf32", **kw), X, Y, a, b)
    P = torch.cat([X, Y], 1)
    R = round_tf32((P - P.mean(1, keepdim=True)).float()).double()
    v_round = ot_batch.samples_loss_batch(R[:, :X.shape[1]], R[:, X.shape[1]:], a, b,
                                                 backend="tensorized", **kw)
    close(v_round, v1, 1e-6)
    close(v0, v1, 1e-4)
    close(gx0, gx1, 5e-3)


def test_inputs_untouched_and_dtype():
    X, Y, a, b = clouds(dtype=torch.float32)
    copies = [t.clone() for t in (X, Y, a, b)]
    v = ot_batch.samples_loss_batch(X, Y, a, b, backend="online", debias=False,
                                           scaling=0.3)
    assert v.dtype == torch.float32 and v.shape == (2,)
    for t, c in zip((X, Y, a, b), copies):
        assert torch.equal(t, c)


def test_bad_input():
    X, Y, a, b = clouds()
    with pytest.raises(ValueError, match="p=2"):
        ot_batch.samples_loss_batch(X, Y, p=1, backend="online")
    with pytest.raises(ValueError, match="precision"):
        ot_batch.samples_loss_batch(X, Y, backend="online", precision="fp8")
    with pytest.raises(ValueError, match="torch"):
        ot_batch.samples_loss_batch(X.cpu().numpy(), Y.cpu().numpy(), backend="online")
    with pytest.raises(ValueError, match="eps_list"):
        ot_batch.samples_loss_batch(X, Y, eps_list=[0.1, -1.0], backend="online")
    with pytest.raises(ValueError, match="backend"):
        ot_batch.SamplesLoss(backend="keops")
    with pytest.raises(ValueError, match="grad"):
        ot_batch.samples_loss_batch(X, Y, grad="unrolled")
    with pytest.raises(ValueError, match="autodiff"):
        ot_batch.samples_loss_batch(X, Y, grad="autodiff", backend="online")


def test_auto_picks_online_only_on_cuda():
    X, Y, a, b = clouds(device="cpu")
    from ot_batch.geomloss import _backend
    assert _backend("auto", X, 2, "tf32") == "tensorized"
    assert _backend("auto", X.numpy(), 2, "tf32") == "tensorized"
    if CUDA:
        assert _backend("auto", X.float().cuda(), 2, "tf32") == "online"
        # float64 stays float64 where the costs fit; unrolled gradients need the dense loop
        assert _backend("auto", X.cuda(), 2, "tf32", 100 * 100) == "tensorized"
        assert _backend("auto", X.cuda(), 2, "tf32", 10 ** 8) == "online"
        assert _backend("auto", X.float().cuda(), 2, "tf32", grad="autodiff") == "tensorized"
    assert tri.available(X) == (os.environ.get("TRITON_INTERPRET") == "1")


def test_unbalanced_second_derivative_is_refused():
    X, Y, a, b = clouds(B=1)
    Xg = X.clone().requires_grad_()
    v = ot_batch.samples_loss_batch(Xg, Y, a, b, reach=0.5, backend="online",
                                           debias=False, scaling=0.3)
    with pytest.raises(RuntimeError, match="balanced"):
        (g,) = torch.autograd.grad(v.sum(), Xg, create_graph=True)
        torch.autograd.grad(g.sum(), Xg)


@pytest.mark.gpu
@pytest.mark.skipif(not CUDA, reason="needs a GPU")
@pytest.mark.parametrize("n,d", [(4000, 3), (3000, 64), (1000, 1024)])
def test_gpu_full_sizes(n, d):
    """Full sizes against the dense path (float64) and against GeomLoss tensorized."""
    X, Y, a, b = clouds(B=1, N=n, M=n - 100, D=d, seed=5, dtype=torch.float32)
    if d > 3:
        X, Y = X / np.sqrt(d), Y / np.sqrt(d)
    ref = ot_batch.samples_loss_batch(X.double(), Y.double(), a.double(), b.double(),
                                             backend="tensorized")
    for prec, rtol in (("tf32x3", 1e-5), ("tf32", 1e-4)):
        got = ot_batch.samples_loss_batch(X, Y, a, b, backend="online", precision=prec)
        close(ref, got, rtol)
    geomloss = pytest.importorskip("geomloss")
    gl = geomloss.SamplesLoss("sinkhorn", p=2, blur=0.05, backend="tensorized")(
        a[0], X[0], b[0], Y[0])
    close(gl[None].double(), ref, 1e-4)


def test_stream_plan_products():
    """The lazy plan: products with pi, pi^T and the second moments, against the dense plan
    built here from the same potentials."""
    from ot_batch.backends.triton import online_solve as osv
    from ot_batch.backends.triton.online_plan import StreamPlan
    X, Y, a, b = clouds(B=2, N=23, M=19, D=3)
    N, M, eps = 23, 19, 0.1
    cl = osv.Clouds.of(X, Y, a, b, 0.5, "tf32x3")
    g = torch.Generator().manual_seed(7)
    f, h = (0.01 * torch.randn(2, k, generator=g).to(DEV) for k in (N, M))
    plan = StreamPlan(cl, eps, slice(0, N), slice(N, N + M), f, h)
    Xc, Yc = plan.X.double(), plan.Y.double()
    C = 0.5 * ((Xc[:, :, None] - Yc[:, None]) ** 2).sum(-1)
    P = a[:, :, None] * b[:, None] * torch.exp((f.double()[:, :, None] + h.double()[:, None]
                                                - C) / eps)
    V, U = (torch.randn(2, k, 4, generator=g, dtype=torch.float64).to(DEV) for k in (M, N))
    Vq, Uk = (torch.randn(2, k, 3, generator=g, dtype=torch.float64).to(DEV) for k in (N, M))
    close(P, plan.dense(), 1e-6)
    close(P @ V, plan.apply(V), 1e-6)
    close((P @ V)[..., 0], plan.apply(V[..., 0]), 1e-6)
    close(P.transpose(1, 2) @ U, plan.apply_t(U), 1e-6)
    close(torch.einsum("bij,bid,bjd,bje->bie", P, Vq, Yc, Yc), plan.moment(Vq), 1e-6)
    close(torch.einsum("bij,bjd,bid,bie->bje", P, Uk, Xc, Xc), plan.moment_t(Uk), 1e-6)


@pytest.mark.parametrize("debias", [False, True])
def test_hessian_vector_product_by_implicit_differentiation(debias):
    """Double backward of the online loss (implicit function theorem, CG on streaming plan
    products) against central differences of the float64 dense gradient and against double
    backward through the unrolled float64 dense solver (``grad="autodiff"``)."""
    X, Y, a, b = clouds(B=2, N=13, M=11, D=2, seed=3)
    kw = dict(blur=0.5, scaling=0.5, tol=1e-7, max_iter=2000, debias=debias)
    V = torch.randn(X.shape, generator=torch.Generator().manual_seed(1),
                    dtype=X.dtype).to(DEV)

    def grad(Z):
        Zg = Z.clone().requires_grad_()
        v = ot_batch.samples_loss_batch(Zg, Y, a, b, backend="tensorized",
                                               **dict(kw, tol=1e-11))
        return torch.autograd.grad(v.sum(), Zg)[0]

    h = 1e-4
    fd = (grad(X + h * V) - grad(X - h * V)) / (2 * h)
    Xg = X.clone().requires_grad_()
    v = ot_batch.samples_loss_batch(Xg, Y, a, b, backend="online",
                                           precision="tf32x3", **kw)
    (g,) = torch.autograd.grad(v.sum(), Xg, create_graph=True)
    (hv,) = torch.autograd.grad((g * V).sum(), Xg)
    close(fd, hv, 1e-3)
    Xu = X.clone().requires_grad_()
    vu = ot_batch.samples_loss_batch(Xu, Y, a, b, backend="tensorized", grad="autodiff",
                                            **dict(kw, tol=1e-11))
    (gu,) = torch.autograd.grad(vu.sum(), Xu, create_graph=True)
    (hu,) = torch.autograd.grad((gu * V).sum(), Xu)
    close(fd, hu, 1e-5)
    close(hu, hv, 1e-3)


def test_unrolled_gradients_match_envelope():
    """``grad="autodiff"`` (tensorized) gives the same first derivatives in x, y and a as the
    envelope at convergence (float64)."""
    X, Y, a, b = clouds(B=2, N=9, M=7, D=2, seed=5)
    kw = dict(blur=0.5, scaling=0.5, tol=1e-11, max_iter=2000, backend="tensorized")
    out = []
    for grad in ("envelope", "autodiff"):
        Xg, Yg, ag = (t.clone().requires_grad_() for t in (X, Y, a))
        v = ot_batch.samples_loss_batch(Xg, Yg, ag, b, grad=grad, **kw)
        out.append([v, *torch.autograd.grad(v.sum(), (Xg, Yg, ag))])
    for e, u in zip(*out):
        close(u, e, 1e-7)
