r"""
============================
Sinkhorn divergence Hessians
============================

This example follows OTT-JAX's tutorial *Sinkhorn Divergence Hessians*: the Hessians of the
Sinkhorn divergence :math:`S_\varepsilon(a, x)` between a weighted cloud :math:`(a, x)` and a
fixed one :math:`(b, y)`, in the weights :math:`a` (an :math:`n \times n` matrix) and in the
points :math:`x` (an :math:`n \times 3 \times n \times 3` tensor), computed in two ways by
:func:`ot_batch.sinkhorn_divergence_batch`:

* ``grad="implicit"``: the potentials carry the derivatives of the implicit function
  theorem, so the Hessian is that of the exact solution, whatever the iterations did;
* ``grad="autodiff"``: automatic differentiation through every Sinkhorn iteration (unrolled).

The same code runs in JAX (``jax.hessian``) and in PyTorch (``torch.func.hessian`` and
``torch.autograd.functional.hessian``). We check that the Hessian in the weights is positive
semi-definite, compare both Hessians with finite differences of the gradient, the two modes
with each other, the two libraries with each other and, when it is installed, with OTT-JAX.
All numbers are computed on the CPU when the script runs.
"""

# License: MIT License

# sphinx_gallery_thumbnail_number = 1

import time

import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib import colors

import ot_batch

x64_before = jax.config.jax_enable_x64
jax.config.update("jax_enable_x64", True)  # float64, as the comparisons below need


# %%
# The data
# --------
#
# As in the tutorial: two clouds of 17 and 15 points in the unit cube of :math:`\mathbb{R}^3`,
# random weights, a perturbation :math:`\delta_a` of the weights that sums to zero (it keeps
# the problem balanced) and a perturbation :math:`\delta_x` of the points. The regularisation
# is OTT-JAX's default, 0.05 times the standard deviation of the cost matrix
# :math:`C_{ij} = |x_i - y_j|^2`.
def sample(n, m, dim):
    """Points, weights and perturbation directions, drawn as the tutorial draws them."""
    rngs = jax.random.split(jax.random.key(0), 7)
    x = jax.random.uniform(rngs[0], (n, dim))
    y = jax.random.uniform(rngs[1], (m, dim))
    a = jax.random.uniform(rngs[2], (n,)) + 0.1
    b = jax.random.uniform(rngs[3], (m,)) + 0.1
    a, b = a / jnp.sum(a), b / jnp.sum(b)
    delta_a = jax.random.uniform(rngs[5], (n,)) - 0.5
    delta_a = delta_a - jnp.mean(delta_a)  # sums to 0
    delta_x = jax.random.uniform(rngs[6], (n, dim)) - 0.5
    return a, x, b, y, delta_a, delta_x


a, x, b, y, delta_a, delta_x = sample(17, 15, 3)
n = len(a)
eps = 0.05 * float(jnp.std(jnp.sum((x[:, None] - y[None]) ** 2, axis=-1)))
print(f"epsilon = {eps:.6f}")


# %%
# The loss
# --------
#
# :func:`ot_batch.sinkhorn_divergence_batch` takes a batch of problems; here the batch holds
# one. The same function serves JAX and PyTorch arrays. Both modes stop when the three
# marginal errors are below ``1e-10``. Under ``jax.jit`` the unrolled loop is a scan of
# fixed length ``max_iter`` (a problem that has converged stops changing), so ``max_iter``
# matters there: it must let the loop converge, or the unrolled Hessian is that of an
# unfinished iterate. 600 is enough here (the loop needs about 300 iterations).
TOL = 1e-10
MAX_ITER = {"implicit": 5000, "autodiff": 600}
MODES = {"implicit": "Implicit", "autodiff": "Unrolled"}


def divergence(a, x, y, b, mode):
    """Sinkhorn divergence and the loop's log, a batch of one problem."""
    res = ot_batch.sinkhorn_divergence_batch(x[None], y[None], reg=eps, a=a[None], b=b[None],
                                             grad=mode, tol=TOL, max_iter=MAX_ITER[mode])
    return res.value[0], (res.log["n_iter"][0], res.log["converged"][0])


def rel(A, B):
    """Largest entry of A - B, relative to the largest of B."""
    A, B = np.asarray(A), np.asarray(B)
    return np.abs(A - B).max() / np.abs(B).max()


# The problem is balanced: the divergence is defined for weights of total mass 1 only, so its
# Hessian in a is defined on the directions that sum to zero. Q projects onto them.
Q = np.eye(n) - np.ones((n, n)) / n


def project(H):
    return Q @ np.asarray(H) @ Q


def timed(fn, *args, repeat=3):
    """Result of fn(*args), seconds of its first call, best milliseconds of the next ones."""
    t0 = time.perf_counter()
    out = jax.block_until_ready(fn(*args))
    first = time.perf_counter() - t0
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        jax.block_until_ready(fn(*args))
        best = min(best, time.perf_counter() - t0)
    return out, first, 1e3 * best


# %%
# Hessians in JAX
# ---------------
#
# ``jax.hessian`` with ``argnums=(0, 1)`` gives the blocks in ``(a, a)``, ``(a, x)``,
# ``(x, a)`` and ``(x, x)`` from one compilation per mode; we keep ``(a, a)`` and ``(x, x)``.
# The first call compiles, and most of the time goes there.
jax_H = {}
for mode, name in MODES.items():
    hess = jax.jit(jax.hessian(lambda a_, x_: divergence(a_, x_, y, b, mode), argnums=(0, 1),
                               has_aux=True))
    (((Ha, _), (_, Hx)), (n_iter, converged)), first, ms = timed(hess, a, x)
    jax_H[mode] = project(Ha), np.asarray(Hx)
    print(f"{name:9s}: {int(n_iter)} iterations (converged: {bool(converged)}), compile and "
          f"first call {first:.1f} s, then {ms:.0f} ms per Hessian")

for mode, name in MODES.items():
    ev = np.linalg.eigvalsh(jax_H[mode][0])
    print(f"{name:9s}: eigenvalues of Q H_a Q from {ev[0]:.1e} (the all-ones direction) to "
          f"{ev[-1]:.3f}; the smallest on the sum-zero directions is {ev[1]:.3f}")
print(f"Unrolled vs implicit: relative difference "
      f"{rel(jax_H['autodiff'][0], jax_H['implicit'][0]):.1e} in a, "
      f"{rel(jax_H['autodiff'][1], jax_H['implicit'][1]):.1e} in x")


# %%
# Finite differences
# ------------------
#
# Along :math:`\delta`, the Hessian-vector product :math:`H \delta` should match
# :math:`(\nabla S(z + h \delta) - \nabla S(z - h \delta)) / 2h` up to :math:`O(h^2)`. The
# gradients for three steps :math:`h` are one batch of 12 problems for
# :func:`ot_batch.sinkhorn_divergence_batch`, each perturbed in its own way, differentiated
# with the default ``grad="envelope"`` (the potentials held fixed, exact for first
# derivatives at convergence): a check independent of both Hessians. The gap shrinks as
# :math:`h^2`: it is the error of the finite differences, not of the Hessians.
steps = [1e-3, 1e-4, 1e-5]
k = len(steps)
A = jnp.stack([a + s * h * delta_a for h in steps for s in (1, -1)] + [a] * 2 * k)
X = jnp.stack([x] * 2 * k + [x + s * h * delta_x for h in steps for s in (1, -1)])
Y, B = jnp.broadcast_to(y, (4 * k,) + y.shape), jnp.broadcast_to(b, (4 * k,) + b.shape)


@jax.jit
def batch_grads(A, X, Y, B):
    def total(A, X):
        res = ot_batch.sinkhorn_divergence_batch(X, Y, reg=eps, a=A, b=B, tol=1e-12,
                                                 max_iter=5000)
        return jnp.sum(res.value)  # each problem's gradient lands in its own row
    return jax.grad(total, argnums=(0, 1))(A, X)


gA, gX = (np.asarray(g) for g in batch_grads(A, X, Y, B))
da, dx = np.asarray(delta_a), np.asarray(delta_x)
print("finite differences vs H delta, relative difference (implicit | unrolled)")
for i, h in enumerate(steps):
    fd_a = Q @ (gA[2 * i] - gA[2 * i + 1]) / (2 * h)
    fd_x = (gX[2 * k + 2 * i] - gX[2 * k + 2 * i + 1]) / (2 * h)
    err_a = " | ".join(f"{rel(fd_a, Ha @ da):.1e}" for Ha, _ in jax_H.values())
    err_x = " | ".join(f"{rel(fd_x, np.tensordot(Hx, dx)):.1e}" for _, Hx in jax_H.values())
    print(f"  h = {h:.0e}: in a {err_a}, in x {err_x}")


# %%
# OTT-JAX's Hessians
# ------------------
#
# With OTT-JAX installed, its Hessians as the tutorial computes them (implicit
# differentiation), at the same epsilon, with a stopping threshold of ``1e-10``. They agree
# with ours to about 1e-9, and the gap is OTT-JAX's stopping point: our Hessians at ``tol``
# 1e-10 and 1e-12 agree to 1e-15, while OTT-JAX's at thresholds 1e-10 and 1e-12 differ by
# 1e-9, and at 1e-12 it agrees with ours to about 1e-10.
try:
    from ott.geometry import pointcloud
    from ott.solvers.linear import implicit_differentiation as imp_diff
    from ott.tools import sinkhorn_divergence
except ImportError:
    print("OTT-JAX is not installed: no comparison")
else:
    def ott_loss(a, x):
        div, _ = sinkhorn_divergence.sinkhorn_divergence(
            pointcloud.PointCloud, x, y, a=a, b=b, epsilon=eps,
            solve_kwargs={"implicit_diff": imp_diff.ImplicitDiff(), "use_danskin": False,
                          "threshold": 1e-10, "max_iterations": 5000})
        return div

    print(f"OTT-JAX's default epsilon here: {pointcloud.PointCloud(x, y).epsilon:.6f}")
    ((Ha, _), (_, Hx)), first, ms = timed(jax.jit(jax.hessian(ott_loss, argnums=(0, 1))),
                                          a, x, repeat=1)
    print(f"OTT-JAX  : compile and first call {first:.1f} s, then {ms:.0f} ms")
    for mode, name in MODES.items():
        print(f"{name:9s} vs OTT-JAX: relative difference "
              f"{rel(jax_H[mode][0], project(Ha)):.1e} in a, {rel(jax_H[mode][1], Hx):.1e} in x")


# %%
# Hessians in PyTorch
# -------------------
#
# The same arrays as float64 tensors, and the same function. ``torch.func.hessian`` is
# forward-mode over reverse-mode: it goes through ``grad="implicit"`` because the implicit
# potentials have a forward-mode (jvp) rule. ``torch.autograd.functional.hessian`` is
# reverse over reverse; for the unrolled loop we let it batch its backward passes
# (``vectorize=True``): ``torch.func.hessian`` works there too, but carries the forward-mode
# tangents through every iteration and is about ten times slower. PyTorch runs eagerly: no
# compilation, and the loop stops when it has converged (after a warm start that anneals
# epsilon, so it counts fewer iterations at epsilon than under ``jax.jit``).
at, xt, bt, yt = (torch.from_numpy(np.array(v)) for v in (a, x, b, y))


def torch_loss(mode):
    return lambda a_, x_: divergence(a_, x_, yt, bt, mode)[0]


for mode, name in MODES.items():
    _, (n_iter, converged) = divergence(at, xt, yt, bt, mode)
    print(f"{name:9s}: {int(n_iter)} iterations at epsilon (converged: {bool(converged)})")

torch_H = {}
runs = [("Implicit, torch.func.hessian", "implicit",
         lambda: torch.func.hessian(torch_loss("implicit"), argnums=(0, 1))(at, xt)),
        ("Implicit, autograd.functional", "implicit",
         lambda: torch.autograd.functional.hessian(torch_loss("implicit"), (at, xt))),
        ("Unrolled, autograd.functional", "autodiff",
         lambda: torch.autograd.functional.hessian(torch_loss("autodiff"), (at, xt),
                                                   vectorize=True))]
for label, mode, fn in runs:
    t0 = time.perf_counter()
    (Ha, _), (_, Hx) = fn()
    ms = 1e3 * (time.perf_counter() - t0)
    torch_H[label] = project(Ha), Hx.numpy()
    print(f"{label:30s}: {ms:5.0f} ms; vs JAX ({MODES[mode]}): relative difference "
          f"{rel(torch_H[label][0], jax_H[mode][0]):.1e} in a, "
          f"{rel(torch_H[label][1], jax_H[mode][1]):.1e} in x")


# %%
# The Hessians
# ------------
#
# The Hessian in the weights (projected on the directions that sum to zero), then the slice
# :math:`\partial^2 S / \partial x_{0,0} \partial x_{j,k}` of the Hessian in the points,
# an :math:`n \times 3` matrix, as in the tutorial (on a symmetric log scale: the entry in
# :math:`x_{0,0}` itself is 20 times the others). Implicit and unrolled, JAX and PyTorch:
# the four panels of each figure differ by less than 1e-13 (printed above).
panels = [("JAX", jax_H["implicit"], jax_H["autodiff"]),
          ("PyTorch", torch_H["Implicit, torch.func.hessian"],
           torch_H["Unrolled, autograd.functional"])]
for j, what in enumerate(["Hessian in a", "Hessian in x, slice [0, 0, :, :] (log scale)"]):
    fig, axes = plt.subplots(2, 2, figsize=(7 if j == 0 else 5, 6.5), layout="constrained")
    images = [[H[j] if j == 0 else H[j][0, 0] for H in (imp, unr)] for _, imp, unr in panels]
    vmax = max(np.abs(im).max() for row in images for im in row)
    norm = (colors.Normalize(-vmax, vmax) if j == 0
            else colors.SymLogNorm(1e-5 * vmax, vmin=-vmax, vmax=vmax))
    for row, (lib, _, _) in enumerate(panels):
        for col, method in enumerate(MODES.values()):
            shown = axes[row, col].imshow(images[row][col], cmap="RdBu_r", norm=norm,
                                          aspect="auto")
            axes[row, col].set_title(f"{lib}, {method}", fontsize=10)
    fig.colorbar(shown, ax=axes, shrink=0.6)
    fig.suptitle(what)

jax.config.update("jax_enable_x64", x64_before)  # the gallery runs every example in one process
plt.show()
