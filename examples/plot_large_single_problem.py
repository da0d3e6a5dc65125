"""
=========================================================
One large problem: a Sinkhorn divergence without the cost
=========================================================

GeomLoss users write ``SamplesLoss("sinkhorn", p=2, blur=0.05)(x, y)`` for point clouds of
10^4 to 10^6 points. :class:`ot_batch.SamplesLoss` takes the same arguments. On a CUDA
device its ``backend="online"`` streams the points through fused Triton kernels and never
builds the n x m cost matrix, so memory grows like ``(n + m) d``. The gradient with respect
to the points comes from one more pass (the envelope theorem), not from backpropagating
through the iterations.

This example

1. computes the debiased divergence between two clouds and its gradient, and moves the
   source points along it (a few steps of a gradient flow),
2. compares the value with GeomLoss's own ``SamplesLoss`` when GeomLoss is installed,
3. on a CUDA device, times the online backend as ``n`` grows and prints its peak memory.

Without a GPU (as when this gallery is built), step 3 is skipped and the dense
("tensorized") path computes the same numbers on a smaller problem.
"""

# License: MIT License

import time

import matplotlib.pyplot as plt
import numpy as np
import torch

import ot_batch

cuda = torch.cuda.is_available()
device = "cuda" if cuda else "cpu"
backend = "online" if cuda else "tensorized"
rng = np.random.default_rng(0)


def moons(n):
    """Two interleaved half circles: the source is one, the target the other."""
    t = rng.uniform(0, np.pi, n)
    x = np.stack([np.cos(t), np.sin(t)], 1) + 0.05 * rng.standard_normal((n, 2))
    y = np.stack([1 - np.cos(t), 0.5 - np.sin(t)], 1) + 0.05 * rng.standard_normal((n, 2))
    return (torch.tensor(x, dtype=torch.float32, device=device),
            torch.tensor(y, dtype=torch.float32, device=device))


##############################################################################
# The divergence and its gradient
# -------------------------------
n = 20000 if cuda else 1500
x, y = moons(n)
loss = ot_batch.SamplesLoss("sinkhorn", p=2, blur=0.05, scaling=0.5, backend=backend)
x0 = x.clone().requires_grad_()
value = loss(x0, y)
(grad,) = torch.autograd.grad(value, x0)
print(f"S(x, y) = {float(value.detach()):.5f} with n = {n} points ({backend})")

##############################################################################
# A gradient flow: each point moves along ``-n * grad`` (the gradient of a uniform
# measure carries the weight 1/n).
steps, lr = 5, 0.5
traj = [x.detach().cpu().numpy()]
z = x.clone()
for _ in range(steps):
    z.requires_grad_()
    (g,) = torch.autograd.grad(loss(z, y), z)
    z = (z - lr * n * g).detach()
    traj.append(z.cpu().numpy())
print(f"after {steps} steps: S = {float(loss(z, y)):.5f}")

show = rng.choice(n, 400, replace=False)
fig, axes = plt.subplots(1, 2, figsize=(10, 4))
yy = y.cpu().numpy()
axes[0].scatter(*yy[show].T, s=4, c="C1", label="target y")
axes[0].scatter(*traj[0][show].T, s=4, c="C0", label="source x")
gg = -grad.cpu().numpy()[show] * n
axes[0].quiver(*traj[0][show].T, *gg.T, angles="xy", scale_units="xy", scale=4, width=0.002)
axes[0].set_title("-gradient of the divergence")
axes[0].legend(loc="lower left")
axes[1].scatter(*yy[show].T, s=4, c="C1")
for k, t in enumerate(traj):
    axes[1].scatter(*t[show].T, s=3, color=plt.cm.Blues(0.3 + 0.7 * k / steps))
axes[1].set_title(f"{steps} steps of the gradient flow")
for ax in axes:
    ax.set_aspect("equal")
plt.tight_layout()

##############################################################################
# The same number from GeomLoss
# -----------------------------
try:
    import geomloss
except ImportError:
    geomloss = None
if geomloss is not None:
    m = min(n, 3000)  # GeomLoss's tensorized backend stores the m x m costs
    ref = geomloss.SamplesLoss("sinkhorn", p=2, blur=0.05, scaling=0.5,
                               backend="tensorized")(x[:m], y[:m])
    ours = loss(x[:m], y[:m])
    print(f"GeomLoss {float(ref):.7f}  ot_batch {float(ours):.7f}  "
          f"relative difference {abs(float(ref) - float(ours)) / abs(float(ref)):.1e}")

##############################################################################
# Time and memory as n grows (CUDA only)
# --------------------------------------
# The online backend's memory is that of the points and a few vectors; its time grows like
# n^2 d (every pass recomputes the costs).
if cuda:
    sizes, times, peaks = [10000, 50000, 200000], [], []
    for size in sizes:
        xs, ys = moons(size)
        loss(xs, ys)  # compile
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        t0 = time.perf_counter()
        loss(xs, ys)
        torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
        peaks.append(torch.cuda.max_memory_allocated() / 2**20)
        print(f"n = {size:7d}: {times[-1] * 1e3:8.1f} ms, peak memory {peaks[-1]:7.1f} MiB")
    fig, ax = plt.subplots(figsize=(5, 3.5))
    ax.loglog(sizes, times, "o-")
    ax.set_xlabel("n = m")
    ax.set_ylabel("seconds (debiased, blur 0.05)")
    plt.tight_layout()
plt.show()
