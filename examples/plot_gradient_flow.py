r"""
=================================
Sinkhorn divergence gradient flow
=================================

The entropic OT cost :math:`\mathrm{OT}_\varepsilon(\alpha, \beta)` is not zero when
:math:`\alpha = \beta`: it is biased, and more so as :math:`\varepsilon` grows. The Sinkhorn
divergence :math:`S_\varepsilon(\alpha, \beta) = \mathrm{OT}_\varepsilon(\alpha, \beta)
- \frac12 \mathrm{OT}_\varepsilon(\alpha, \alpha) - \frac12 \mathrm{OT}_\varepsilon(\beta,
\beta)` removes that bias. This example follows OTT-JAX's tutorial *Sinkhorn divergence
gradient flow*: gradient descent (PyTorch's autograd) moves 25 points ``x`` toward 50
points ``y`` in 2-D along

1. the entropic OT cost at OTT-JAX's default epsilon (0.05 times the standard deviation of
   the cost matrix, recomputed at each step): the cloud matches the target,
2. the entropic OT cost at epsilon = 1: the cloud collapses toward the target's mean,
3. the Sinkhorn divergence at epsilon = 1: it does not.

Flows 1 and 2 are one batch of two problems for :func:`ot_batch.solve_sample_batch`; flow 3
uses :func:`ot_batch.sinkhorn_divergence_batch`. ``--gif PATH`` also saves an animation.
"""

# License: MIT License

import argparse

import matplotlib.pyplot as plt
import torch
from matplotlib.animation import FuncAnimation, PillowWriter

import ot_batch

parser = argparse.ArgumentParser()
parser.add_argument("--gif", help="save an animation of the three flows to this GIF")
args, _ = parser.parse_known_args()  # sphinx-gallery runs the script with its own argv
torch.set_num_threads(1)  # 25 x 50 problems: a thread pool costs more than it saves

# %%
# The point clouds, as in the tutorial: a small Gaussian at the origin and a wider one at
# (6, 0), in float64 so that the check below is not blurred by rounding.
gen = torch.Generator().manual_seed(0)
x0 = 0.25 * torch.randn(25, 2, generator=gen, dtype=torch.float64)
y = 0.5 * torch.randn(50, 2, generator=gen, dtype=torch.float64) + torch.tensor([6.0, 0.0])
TOL = 1e-4  # marginal error (L2 for the OT cost, L1 for the divergence) that stops a solve


# %%
# The two losses, with the same conventions
# -----------------------------------------
#
# OTT-JAX's ``reg_ot_cost`` is :math:`\langle T, C \rangle + \varepsilon KL(T | a b^\top)` with
# :math:`C_{ij} = |x_i - y_j|^2`: ``solve_sample_batch`` with ``reg_type="kl"``. That takes
# one ``reg`` for the whole batch; since :math:`\mathrm{OT}_\varepsilon(C) = \varepsilon\,
# \mathrm{OT}_1(C / \varepsilon)`, dividing each problem's points by
# :math:`\sqrt{\varepsilon}` gives every problem its own epsilon in one call.
# ``sinkhorn_divergence_batch`` takes POT's arguments (``reg``, the cost
# :math:`|x - y|^2`) and computes OTT-JAX's divergence. Both return (B,) values whose
# gradients reach the points through autograd (envelope theorem: no backpropagation through
# the iterations).
def ot_cost(x, y, eps, init=None):
    """OT costs of x (B, n, 2) and y (B, m, 2), an epsilon per problem (B,); potentials."""
    s = eps.sqrt()[:, None, None]
    res = ot_batch.solve_sample_batch(x / s, y / s, reg=1.0, reg_type="kl", tol=TOL,
                                      potentials_init=init)
    assert bool(res.log["converged"].all())
    return eps * res.value, tuple(f.detach() for f in res.potentials)


def sinkhorn_div(x, y, eps):  # POT's arguments, OTT-JAX's definition
    res = ot_batch.sinkhorn_divergence_batch(x, y, eps, tol=TOL)
    assert bool(res.log["converged"].all())
    return res.value


# Check that S = OT(x, y) - OT(x, x) / 2 - OT(y, y) / 2 on the first step, with gradients.
one = torch.ones(1, dtype=torch.float64)
X, Y = x0[None].clone().requires_grad_(), y[None]
by_hand = ot_cost(X, Y, one)[0] - ot_cost(X, X, one)[0] / 2 - ot_cost(Y, Y, one)[0] / 2
div = sinkhorn_div(X, Y, 1.0)
gap = torch.autograd.grad(by_hand.sum(), X)[0] - torch.autograd.grad(div.sum(), X)[0]
print(f"eps = 1: sinkhorn_divergence_batch {div.item():.8f}, OT(x,y) - OT(x,x)/2 - OT(y,y)/2 "
      f"{by_hand.item():.8f}; gradients differ by {gap.abs().max().item():.1e}")


# %%
# The gradient flows
# ------------------
#
# Plain gradient descent on the points as in the tutorial, but 250 steps of size 0.4 instead
# of 500 of size 0.2 (the same flow time, half the solves). The OT solves start from the
# previous step's potentials (the tutorial starts cold: the same flow, more iterations);
# ``sinkhorn_divergence_batch`` has no warm start.
def flow(loss, x, steps=250, lr=0.4):  # positions (steps + 1, B, n, 2) and losses
    xs, losses = [x], []
    for _ in range(steps + 1):
        x = xs[-1].clone().requires_grad_()
        value = loss(x)
        losses.append(value.detach())
        xs.append((x - lr * torch.autograd.grad(value.sum(), x)[0]).detach())
    return torch.stack(xs[:-1]), torch.stack(losses)


def default_eps(x, y):  # OTT-JAX's epsilon=None: 0.05 x the std of each cost matrix
    return 0.05 * torch.cdist(x, y).square().flatten(1).std(1).detach()


warm, y2 = [None], y.expand(2, -1, -1)


def ot_flows(x):  # flows 1 and 2, a batch of two problems
    value, warm[0] = ot_cost(x, y2, torch.stack([default_eps(x, y2)[0], one[0]]), warm[0])
    return value


traj12, loss12 = flow(ot_flows, x0.expand(2, -1, -1))
traj3, loss3 = flow(lambda x: sinkhorn_div(x, y[None], 1.0), x0[None])
traj, losses = torch.cat([traj12, traj3], 1), torch.cat([loss12, loss3], 1)
names = ["OT, default epsilon", "OT, epsilon = 1", "Sinkhorn divergence, epsilon = 1"]


def spread(z):  # root mean square distance of the points to their mean
    return (z - z.mean(0)).square().sum(1).mean().sqrt().item()


eps1 = default_eps(traj[[0, -1], 0], y2)
print(f"flow 1's epsilon: {eps1[0]:.3f} to {eps1[1]:.4f}; target: spread {spread(y):.3f}, "
      f"mean {y.mean(0).numpy().round(3)}")
for k, name in enumerate(names):
    print(f"{name:33s}: spread {spread(traj[-1, k]):.3f}, "
          f"mean {traj[-1, k].mean(0).numpy().round(3)}, final loss {losses[-1, k]:.2e}")

# %%
# Where the points go: target in orange, initial source in grey, final source in blue, and
# each point's path. At epsilon = 1 the OT cost pulls every point to the target's mean (its
# plan tends to the rank-one :math:`a b^\top`); the divergence spreads them over the target.
fig, axes = plt.subplots(1, 3, figsize=(13, 2.7), sharex=True, sharey=True,
                         layout="tight")
for k, ax in enumerate(axes):
    ax.plot(traj[:, k, :, 0], traj[:, k, :, 1], color="C0", alpha=0.2, lw=0.8)
    ax.scatter(*y.T, c="C1", marker="X", s=40, edgecolors="k", lw=0.5, label="target y")
    ax.scatter(*traj[0, k].T, c="0.7", s=25, edgecolors="k", lw=0.5, label="initial x")
    ax.scatter(*traj[-1, k].T, c="C0", s=25, edgecolors="k", lw=0.5, label="final x")
    ax.set_title(f"{names[k]}\nspread {spread(traj[-1, k]):.2f} (target {spread(y):.2f})")
    ax.set_aspect("equal")
axes[0].legend(loc="lower center", fontsize=8, ncol=3)

# %%
# The losses along the flows (flow 1's epsilon shrinks as the clouds meet: its loss is not
# that of one fixed problem).
fig, ax = plt.subplots(figsize=(6, 3.5), layout="tight")
for k, name in enumerate(names):
    ax.semilogy(losses[:, k].clamp(min=1e-12), label=name)
ax.set(xlabel="gradient step", ylabel="loss")
ax.legend()

# %%
# The animation, a frame every 5 steps, with ``--gif PATH`` only (nothing written otherwise).
if args.gif:
    fig, axes = plt.subplots(1, 3, figsize=(12, 2.6), sharex=True, sharey=True)
    dots = []
    for k, ax in enumerate(axes):  # no ticks: tick labels are most of a frame's drawing time
        ax.scatter(*y.T, c="C1", marker="X", s=40, edgecolors="k", lw=0.5)
        dots.append(ax.scatter(*traj[0, k].T, c="C0", s=25, edgecolors="k", lw=0.5))
        ax.set(aspect="equal", xticks=[], yticks=[])
    fig.tight_layout()  # once: tight_layout at every frame would slow the GIF down

    def frame(i):
        for k, (ax, dot) in enumerate(zip(axes, dots)):
            dot.set_offsets(traj[i, k].numpy())
            ax.set_title(f"{names[k]}\nstep {i}, loss {losses[i, k]:.4f}", fontsize=9)
        return dots

    anim = FuncAnimation(fig, frame, frames=range(0, len(traj), 5))
    anim.save(args.gif, writer=PillowWriter(fps=10), dpi=72)
    plt.close(fig)
    print(f"animation saved to {args.gif}")
plt.show()
