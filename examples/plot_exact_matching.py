"""
=======================================
Exact matching of many point clouds
=======================================

Without regularisation (``reg=None``), :func:`ot_batch.solve_batch` solves the optimal
transport linear program exactly, for every problem of the batch at once: the plans are
vertices of the transport polytope, not blurred entropic plans, and the values are those of
POT's :func:`ot.emd2` to round-off.

With uniform weights on two clouds of the same size, an optimal plan is a permutation (each
point is matched to exactly one other): an assignment problem. With other weights, a point's
mass may be split between several points. We

1. draw four pairs of 2-D point clouds, two with uniform and two with random weights,
2. solve the four problems with one call of :func:`ot_batch.solve_batch`,
3. compare the values with a loop of :func:`ot.emd2` and read the duality-gap certificate,
4. draw the plans as segments between the points they connect.
"""

# License: MIT License

import matplotlib.pyplot as plt
import numpy as np
import ot

import ot_batch

# %%
# Four pairs of clouds
# --------------------
#
# Every problem of a batch has the same sizes: here ``n = m = 40`` points in 2-D. The source
# clouds are Gaussian blobs; the target clouds are rings, shifted at random. Problems 0 and 1
# get uniform weights (a matching), problems 2 and 3 random positive weights (a transport).

B, n, m = 4, 40, 40
rng = np.random.default_rng(0)
X = rng.normal(scale=0.6, size=(B, n, 2))
angle = rng.uniform(0, 2 * np.pi, size=(B, m))
radius = rng.uniform(1.5, 2.0, size=(B, m, 1))
Y = radius * np.stack([np.cos(angle), np.sin(angle)], axis=-1)
Y += rng.uniform(-1, 1, size=(B, 1, 2))

a = np.full((B, n), 1.0 / n)
b = np.full((B, m), 1.0 / m)
uniform = np.array([True, True, False, False])
for i in np.flatnonzero(~uniform):
    a[i] = rng.uniform(0.2, 1.0, n)
    b[i] = rng.uniform(0.2, 1.0, m)
a /= a.sum(axis=1, keepdims=True)
b /= b.sum(axis=1, keepdims=True)

M = ot_batch.dist_batch(X, Y)  # (B, n, m) squared Euclidean costs
print("costs:", M.shape)

# %%
# One call for the whole batch
# ----------------------------
#
# ``reg=None`` (the default) asks for the exact solution. ``method="auto"`` (the default) picks
# the solver from the inputs: for NumPy arrays, POT's network simplex with the problems spread
# over the CPU cores (``n_threads``); for CUDA tensors with uniform weights, a batched auction
# on the GPU. Four problems are too few for the batch to pay off:
# ``python -m ot_batch.bench exact`` times batches of 16 to 1,024 problems against loops and
# other batch solvers.

res = ot_batch.solve_batch(M, a=a, b=b)
value_loop = np.array([ot.emd2(a[i], b[i], M[i]) for i in range(B)])

for i in range(B):
    print(f"problem {i}: value {res.value[i]:.10f}   ot.emd2 {value_loop[i]:.10f}   "
          f"relative difference {abs(res.value[i] - value_loop[i]) / value_loop[i]:.1e}")

# %%
# The certificate
# ---------------
#
# An exact solver returns dual potentials ``f`` and ``g`` beside the plan. They are feasible
# (``f_i + g_j <= M_ij`` for all ``i, j``) and the plan meets the marginals, so the dual value
# ``<a, f> + <b, g>`` is a lower bound of every plan's cost and the plan's cost an upper bound:
# their difference, ``res.log["gap"]``, bounds how far the value can be from the optimum. At
# round-off level, the plan is optimal.

f, g = res.potentials
dual = (a * f).sum(axis=1) + (b * g).sum(axis=1)
slack = M - f[:, :, None] - g[:, None, :]
print("gap (primal - dual):   ", np.array2string(np.asarray(res.log["gap"]), precision=2))
print("recomputed primal-dual:", np.array2string(res.value - dual, precision=2))
print("largest violation of f_i + g_j <= M_ij:", max(0.0, -slack.min()))
print("largest marginal error:", max(np.abs(res.plan.sum(axis=2) - a).max(),
                                     np.abs(res.plan.sum(axis=1) - b).max()))
print("converged:", np.asarray(res.log["converged"]))

# %%
# With uniform weights and ``n == m`` the plan is a permutation matrix divided by ``n``: each
# row has one non-zero entry. With other weights, a vertex of the polytope has at most
# ``n + m - 1`` non-zero entries, so only a few points split their mass.

nonzero = (res.plan > 1e-12).sum(axis=(1, 2))
for i in range(B):
    kind = "uniform" if uniform[i] else "random "
    print(f"problem {i} ({kind} weights): {nonzero[i]:3d} non-zero entries "
          f"(n + m - 1 = {n + m - 1})")

# %%
# The plans
# ---------
#
# A segment joins ``x_i`` and ``y_j`` wherever the plan moves mass between them, darker for
# more mass; point sizes follow the weights.

fig, axes = plt.subplots(2, 2, figsize=(9, 9))
for i, ax in enumerate(axes.flat):
    P = res.plan[i]
    rows, cols = np.nonzero(P > 1e-12)
    strength = P[rows, cols] / P.max()
    for r, c, s in zip(rows, cols, strength):
        ax.plot([X[i, r, 0], Y[i, c, 0]], [X[i, r, 1], Y[i, c, 1]], color="k",
                alpha=0.15 + 0.85 * s, lw=1)
    ax.scatter(*X[i].T, s=2000 * a[i], c="C0", label="source", zorder=3)
    ax.scatter(*Y[i].T, s=2000 * b[i], c="C1", label="target", zorder=3)
    kind = "uniform weights: a matching" if uniform[i] else "random weights"
    ax.set_title(f"problem {i}, {kind}\nvalue {res.value[i]:.4f} (ot.emd2 {value_loop[i]:.4f})",
                 fontsize=10)
    ax.set_aspect("equal")
    ax.set_xticks([])
    ax.set_yticks([])
axes[0, 0].legend(loc="upper left", fontsize=8)
fig.suptitle("Exact OT plans of four problems from one call of ot_batch.solve_batch")
fig.tight_layout()
plt.show()
