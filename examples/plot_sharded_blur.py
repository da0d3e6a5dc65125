"""
===================================================
Sharded Sinkhorn: CIFAR-10 and its blurred copy
===================================================

This example follows OTT-JAX's tutorial *Sharded Sinkhorn* with
:func:`ot_batch.sharded.solve_sample`. The source cloud ``x`` holds the 50,000 CIFAR-10
training images and their horizontal flips (100,000 points in dimension 3072); the target
``y`` holds the same images blurred by a Gaussian filter. The blur is a symmetric positive
definite linear map, hence the gradient of a convex function, so by Brenier's theorem the
optimal coupling under the squared-Euclidean cost (or its negative dot product part, which
has the same plans) is the identity divided by ``n``: each image goes to its own blurred copy.
How much of the entropic plan's mass sits on that diagonal measures the solver.

The clouds are split along the points over every JAX device (``x`` and ``y`` on a 1-D mesh);
the ``n x n`` costs are never gathered on one device. We

1. read CIFAR-10 from ``--cifar DIR`` (the python pickle batches), or, without it, make
   smooth random images with the spectrum of natural ones,
2. solve for six values of ``epsilon`` (relative to the standard deviation of the costs),
   each warm-started from the potentials of the previous, larger one,
3. plot, as the tutorial does, the generalized KL divergence of the plan's diagonal to
   ``1/n``, its sum, the time, the iterations and the plan's normalized entropy.

When the gallery is built it runs on the CPU with ``n = 2000``; the tutorial's problem is
``python examples/plot_sharded_blur.py --cifar DIR --n 100000`` on GPUs. On a CPU,
``XLA_FLAGS=--xla_force_host_platform_device_count=4`` shows the sharding at work.
"""

# License: MIT License

# sphinx_gallery_thumbnail_number = 2

import argparse
import json
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np

from ot_batch import sharded
from ot_batch.bench import blur_images

parser = argparse.ArgumentParser()
parser.add_argument("--cifar", help="folder with CIFAR-10's data_batch_1..5 pickles")
parser.add_argument("--n", type=int, default=2000, help="points per cloud (at most 100000)")
parser.add_argument("--save", help="save the figure to this PNG")
parser.add_argument("--json", help="write the numbers to this JSON file")
# sphinx-gallery runs the script with its own argv: ignore what we do not know.
args, _ = parser.parse_known_args()

# %%
# The images
# ----------
#
# Half of the points are originals and half their flips; the split must also be even over
# the devices.
n = args.n - args.n % (2 * jax.device_count())
images, blurred = blur_images.clouds(n, args.cifar)

# %%
# The blur
# --------
#
# :mod:`ot_batch.bench.blur_images` makes both clouds: the images (CIFAR-10 with ``--cifar``,
# else smooth random images with the 1/f spectrum of natural ones), their flips, and each
# channel convolved with OTT-JAX's 31-tap Gaussian (sigma 1) along rows then columns,
# zero-padded. That blur is ``B @ image @ B.T`` with ``B`` the 32 x 32 banded Toeplitz matrix
# of the taps, symmetric positive definite: what makes the identity the optimal plan.
x = sharded.shard_points(jnp.asarray(images))
y = sharded.shard_points(jnp.asarray(blurred))
print(f"{n} points in dimension {x.shape[1]} on {jax.device_count()} device(s): "
      f"{'CIFAR-10' if args.cifar else 'random images'}")

fig, axes = plt.subplots(1, 2, figsize=(6, 3.2))
for ax, img, title in zip(axes, (images[0], blurred[0]), ("input image", "blurred image")):
    img = img.reshape(3, 32, 32)
    ax.imshow(np.clip(img.transpose(1, 2, 0) / 2 + 0.5, 0, 1))
    ax.set_title(title)
    ax.axis("off")

# %%
# Solving along the epsilon grid
# ------------------------------
#
# The largest epsilon is the easiest problem; solving from there down and starting each
# solve from the previous potentials saves most of the iterations at the small ones. JAX
# compiles one program for a cold start and one for a warm start (epsilon is an argument,
# not a constant); both are compiled before the clock starts, so the table shows solver time
# only. The KL divergence is OTT-JAX's ``gen_kl(1/n, diag)``.
epsilons = 10 ** np.linspace(-1.5, 0, 6)


def solve(eps, init):
    out = sharded.solve_sample(x, y, reg=float(eps), cost="negdot", relative_reg="std",
                               tol=1e-3, max_iter=2000, init=init)
    jax.block_until_ready((out.f, out.g, out.diag))
    return out


t0 = time.perf_counter()
warm = solve(epsilons[-1], None)
solve(epsilons[-1], (warm.f, warm.g))
print(f"compilation (and two solves at the largest epsilon): {time.perf_counter() - t0:.2f} s")

rows, init = {}, None
p = 1.0 / n
for eps in epsilons[::-1]:
    t0 = time.perf_counter()
    out = solve(eps, init)
    seconds = time.perf_counter() - t0
    init = (out.f, out.g)
    q = np.maximum(np.asarray(out.diag, dtype=np.float64), np.finfo(np.float32).tiny)
    rows[eps] = dict(
        epsilon=float(eps), abs_epsilon=float(out.epsilon), seconds=seconds,
        n_iter=int(np.max(out.n_iter)), converged=bool(np.all(out.converged)),
        kl=float(np.sum(p * np.log(p / q) - p + q)), diag_sum=float(q.sum()),
        normalized_entropy=float(out.normalized_entropy))
rows = [rows[eps] for eps in epsilons]  # the tutorial's order, smallest epsilon first

print(f"{'epsilon':>8} {'abs eps':>9} {'time (s)':>9} {'iters':>6} {'conv':>5} "
      f"{'KL':>10} {'sum diag':>9} {'norm ent':>9}")
for r in rows:
    print(f"{r['epsilon']:8.4f} {r['abs_epsilon']:9.3g} {r['seconds']:9.3f} {r['n_iter']:6d} "
          f"{str(r['converged']):>5} {r['kl']:10.4g} {r['diag_sum']:9.4f} "
          f"{r['normalized_entropy']:9.4f}")

if args.json:
    info = dict(n=n, d=int(x.shape[1]), data="cifar10" if args.cifar else "random",
                devices=[str(d) for d in jax.devices()], rows=rows)
    Path(args.json).write_text(json.dumps(info, indent=2))

# %%
# The tutorial's figure
# ---------------------
#
# As epsilon shrinks the plan concentrates on the diagonal (sum toward 1, KL toward 0) and
# its entropy falls, at the price of more iterations. With fewer points each image has fewer
# rivals for its blurred copy, so at small ``n`` the diagonal fills at larger epsilons than in
# the tutorial's 100,000-point figure.
col = {k: [r[k] for r in rows] for k in rows[0]}
fig = plt.figure(figsize=(10, 8))
panels = [plt.subplot2grid((8, 1), (0, 0), rowspan=3), plt.subplot2grid((8, 1), (3, 0), rowspan=3),
          plt.subplot2grid((8, 1), (6, 0), rowspan=2)]


def plot_two_y(ax, y1, y2, label1, label2, log1, log2):
    ax.plot(epsilons, y1, color="tab:red", marker="o", linewidth=3, label=label1)
    ax.set_ylabel(label1, color="tab:red")
    ax.set_xscale("log")
    ax.set_yscale("log" if log1 else "linear")
    ax.set_title(label1 + (f" / {label2}" if label2 else "") + " vs. epsilon")
    ax.grid(True)
    if y2 is not None:
        ax2 = ax.twinx()
        ax2.plot(epsilons, y2, color="tab:blue", marker="x", linewidth=3, label=label2)
        ax2.set_ylabel(label2, color="tab:blue")
        ax2.set_yscale("log" if log2 else "linear")


plot_two_y(panels[0], col["kl"], col["diag_sum"], "KL divergence", "sum of diagonal", True, False)
plot_two_y(panels[1], col["seconds"], col["n_iter"], "time (seconds)", "Sinkhorn iterations",
           True, True)
plot_two_y(panels[2], col["normalized_entropy"], None, "normalized entropy", None, False, False)
panels[2].set_xlabel("epsilon (relative to the standard deviation of the costs)")
plt.tight_layout()
if args.save:
    fig.savefig(args.save, dpi=120)
plt.show()
