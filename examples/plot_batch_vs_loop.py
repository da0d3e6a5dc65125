"""
===================================================
Solving many optimal transport problems in parallel
===================================================

Many applications need not one optimal transport (OT) problem but hundreds of small ones with
the same structure: the same numbers of points, the same cost, the same regularisation.
Solving them one after the other in a Python loop pays the overhead of every call and of every
iteration once per problem; a batched solver pays it once for the whole batch.

This example follows POT's gallery example *Solving Many Optimal Transport Problems in
Parallel*, with :mod:`ot_batch` in place of ``ot.batch``. We

1. build a batch of problems and their cost matrices with :func:`ot_batch.dist_batch`,
2. solve them in a loop of POT's :func:`ot.solve` and at once with
   :func:`ot_batch.solve_batch`, and compare times and values,
3. look at the number of iterations that each problem needed,
4. solve the same batch from PyTorch and JAX arrays (on the CPU) and check that the numbers
   agree with NumPy's.

All timings are measured when this script runs, on the machine that runs it (the CPU only):
they change from one machine, and one run, to the next.
"""

# License: MIT License

# sphinx_gallery_thumbnail_number = 2

import time

import jax
import matplotlib.pyplot as plt
import numpy as np
import ot
import torch

import ot_batch

# JAX computes in float32 unless asked otherwise; we ask for float64 before any JAX array is
# made, so that NumPy, PyTorch and JAX all solve in the same precision.
jax.config.update("jax_enable_x64", True)
import jax.numpy as jnp  # noqa: E402

# %%
# A batch of problems
# -------------------
#
# Each problem moves ``n = 24`` points drawn from a Gaussian to ``m = 32`` points of an
# elongated Gaussian that is rotated and shifted at random, in two dimensions. Source and
# target sizes differ on purpose: the marginals of the plans then have shapes (B, n) and
# (B, m).
#
# A loop of :func:`ot.dist` gives the cost matrices one by one;
# :func:`ot_batch.dist_batch` gives all of them in one call, as a (B, n, m) array.

n_problems, n, m, dim = 64, 24, 32, 2

rng = np.random.default_rng(0)
xs = rng.normal(size=(n_problems, n, dim))
angles = rng.uniform(0, np.pi, size=n_problems)
rot = np.stack([np.stack([np.cos(angles), -np.sin(angles)], -1),
                np.stack([np.sin(angles), np.cos(angles)], -1)], -2)  # (B, 2, 2)
xt = rng.normal(size=(n_problems, m, dim)) * np.array([2.0, 0.3])
xt = xt @ np.swapaxes(rot, 1, 2) + rng.uniform(2, 4, size=(n_problems, 1, dim))

M_list = [ot.dist(xs[i], xt[i]) for i in range(n_problems)]  # the loop
M = ot_batch.dist_batch(xs, xt)  # the batch

print("cost matrices:", M.shape)
print("largest difference with the loop of ot.dist:",
      max(np.abs(M_list[i] - M[i]).max() for i in range(n_problems)))

# %%
# Solving in a loop and in a batch
# --------------------------------
#
# Both solve the entropic problem
#
# .. math::
#     \min_{T \ge 0,\ T 1 = a,\ T^\top 1 = b} \langle T, M \rangle
#     + \mathrm{reg} \sum_{ij} T_{ij} \log T_{ij}
#
# with uniform weights and a log-domain Sinkhorn algorithm: POT's
# ``ot.solve(..., method="sinkhorn_log", reg_type="entropy")`` one problem at a time, and
# ``ot_batch.solve_batch(..., reg_type="entropy")`` (the same arguments as POT's
# ``ot.batch.solve_batch``) for the whole batch.

reg = 1.0
max_iter = 2000
tol = 1e-8

start = time.perf_counter()
res_loop = [ot.solve(M_list[i], reg=reg, method="sinkhorn_log", reg_type="entropy",
                     max_iter=max_iter, tol=tol) for i in range(n_problems)]
time_loop = time.perf_counter() - start

start = time.perf_counter()
res = ot_batch.solve_batch(M, reg=reg, max_iter=max_iter, tol=tol, reg_type="entropy")
time_batch = time.perf_counter() - start

value_loop = np.array([r.value for r in res_loop])
plan_loop = np.stack([r.plan for r in res_loop])

print(f"loop of ot.solve     : {time_loop:8.3f} s")
print(f"ot_batch.solve_batch : {time_batch:8.3f} s")
print(f"speed-up             : {time_loop / time_batch:8.1f} x")
print("largest difference of values         :", np.abs(value_loop - res.value).max())
print("largest relative difference of values:",
      (np.abs(value_loop - res.value) / np.abs(value_loop)).max())
print("largest difference of plans          :", np.abs(plan_loop - res.plan).max())

# %%
# The result is an :class:`ot_batch.OTResult` with POT's attribute names, every array with the
# batch first. Unlike in POT, the marginals are those of each plan:

print(res)
print("marginal_a:", res.marginal_a.shape, " marginal_b:", res.marginal_b.shape)
print("largest marginal error:", max(np.abs(res.marginal_a - 1 / n).max(),
                                     np.abs(res.marginal_b - 1 / m).max()))

# %%
# Each problem converges on its own
# ---------------------------------
#
# Problems of a batch do not need the same number of iterations. :func:`ot_batch.solve_batch`
# checks each problem's marginal error every ``check_every`` iterations (10 by default),
# stops updating a problem as soon as its error is below ``tol``, and returns the count for
# each problem in ``res.log["n_iter"]`` and the flag in ``res.log["converged"]`` (shape (B,)).
# The batch runs as long as its slowest member needs, and no longer.

n_iter = res.log["n_iter"]
print("n_iter of the first 16 problems:", n_iter[:16])
print(f"n_iter: min {n_iter.min()}, median {np.median(n_iter):g}, max {n_iter.max()}")
print("all converged:", bool(res.log["converged"].all()), "| status:", res.status)

fig, ax = plt.subplots(figsize=(6, 3))
ax.hist(n_iter, bins=np.arange(0, n_iter.max() + 20, 10) - 5, color="C0")
ax.set_xlabel('res.log["n_iter"]')
ax.set_ylabel("number of problems")
ax.set_title(f"Iterations needed by each of the {n_problems} problems")
fig.tight_layout()

# %%
# A few of the plans
# ------------------
#
# Top: source points in blue, target points in red, and an arrow from each source point to
# the average of the target points that the plan sends it to (its barycentric projection,
# :math:`\sum_j T_{ij} y_j / \sum_j T_{ij}`). Bottom: the plans as images, with the points
# of both clouds sorted along the long axis of the target cloud, where a plan that keeps
# the order shows as a band.

fig, axes = plt.subplots(2, 4, figsize=(12, 6.5))
for k, i in enumerate([0, 1, 2, 3]):
    T = res.plan[i]
    mapped = (T @ xt[i]) / T.sum(axis=1, keepdims=True)
    ax = axes[0, k]
    ax.scatter(*xt[i].T, c="C3", s=12, label="target")
    ax.scatter(*xs[i].T, c="C0", s=12, label="source")
    ax.quiver(*xs[i].T, *(mapped - xs[i]).T, angles="xy", scale_units="xy", scale=1,
              width=0.004, color="0.3")
    ax.set_aspect("equal")
    ax.set_title(f"problem {i}: {int(n_iter[i])} iterations")
    axis = np.array([np.cos(angles[i]), np.sin(angles[i])])  # long axis of the target
    order_s, order_t = np.argsort(xs[i] @ axis), np.argsort(xt[i] @ axis)
    axes[1, k].imshow(T[order_s][:, order_t], cmap="Blues", aspect="auto")
    axes[1, k].set_xlabel("target point (sorted)")
    axes[1, k].set_ylabel("source point (sorted)")
axes[0, 0].legend(loc="best", fontsize=8)
fig.suptitle("Entropic OT plans from one call of ot_batch.solve_batch")
fig.tight_layout()

# %%
# The same batch on PyTorch and JAX arrays
# ----------------------------------------
#
# :func:`ot_batch.solve_batch` takes the arrays of any supported library and returns the
# result in the same library, dtype and device; no ``nx=`` argument is needed. Here on the
# CPU, in float64. The first call of each library includes one-time costs (JAX, for one,
# compiles the solver for these shapes), so we time a first and a second call. For problems
# this small on a CPU, NumPy is the natural choice; PyTorch and JAX arrays matter when the
# data already live there, need gradients, or sit on a GPU.


def timed(fn, sync=lambda r: r):
    """Run ``fn()`` and return its result and the time it took (waiting for the result)."""
    start = time.perf_counter()
    out = fn()
    sync(out)
    return out, time.perf_counter() - start


def solve(M_any):
    return ot_batch.solve_batch(M_any, reg=reg, max_iter=max_iter, tol=tol, reg_type="entropy")


# PyTorch splits each operation over a pool of CPU threads; on tensors this small, waking the
# pool costs more than it saves (and much more on a busy machine), so we use one thread.
torch.set_num_threads(1)
M_torch = torch.from_numpy(M)
res_torch, time_torch_first = timed(lambda: solve(M_torch))
res_torch, time_torch = timed(lambda: solve(M_torch))

M_jax = jnp.asarray(M)
res_jax, time_jax_first = timed(lambda: solve(M_jax), sync=lambda r: r.value.block_until_ready())
res_jax, time_jax = timed(lambda: solve(M_jax), sync=lambda r: r.value.block_until_ready())

print("torch:", type(res_torch.plan).__name__, res_torch.plan.dtype,
      "| jax:", type(res_jax.plan).__name__, res_jax.plan.dtype)

rows = [("NumPy", res.value, res.plan, res.log["n_iter"]),
        ("PyTorch", res_torch.value.numpy(), res_torch.plan.numpy(),
         res_torch.log["n_iter"].numpy()),
        ("JAX", np.asarray(res_jax.value), np.asarray(res_jax.plan),
         np.asarray(res_jax.log["n_iter"]))]
print(f"{'library':<8} {'max |value - NumPy|':>20} {'max |plan - NumPy|':>20} "
      f"{'same n_iter':>12}")
for name, value, plan, it in rows:
    print(f"{name:<8} {np.abs(value - res.value).max():20.2e} "
          f"{np.abs(plan - res.plan).max():20.2e} {str(np.array_equal(it, n_iter)):>12}")

print()
print(f"{'solver':<34} {'first call':>11} {'second call':>12}")
print(f"{'loop of ot.solve (NumPy)':<34} {time_loop:10.3f}s")
print(f"{'ot_batch.solve_batch, NumPy':<34} {time_batch:10.3f}s")
print(f"{'ot_batch.solve_batch, PyTorch CPU':<34} {time_torch_first:10.3f}s "
      f"{time_torch:11.3f}s")
print(f"{'ot_batch.solve_batch, JAX CPU':<34} {time_jax_first:10.3f}s {time_jax:11.3f}s")

# %%
# Timings
# -------
#
# The loop and the NumPy batch as measured above, and the second calls of PyTorch and JAX, on a
# log scale. The bars are measured when this page is built.

labels = ["loop of\not.solve", "solve_batch\nNumPy", "solve_batch\nPyTorch",
          "solve_batch\nJAX"]
times = [time_loop, time_batch, time_torch, time_jax]
fig, ax = plt.subplots(figsize=(7, 3.5))
bars = ax.bar(labels, times, color=["C7", "C0", "C1", "C2"])
ax.bar_label(bars, labels=[f"{t:.3g} s" for t in times])
ax.set_yscale("log")
ax.set_ylabel("seconds")
ax.set_title(f"{n_problems} problems of size {n} x {m}, reg={reg}, tol={tol:g}")
fig.tight_layout()

plt.show()
