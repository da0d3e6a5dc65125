"""ot-batch: many optimal-transport problems at once, with POT's ``ot.batch`` API.

Change ``from ot.batch import solve_batch`` to ``from ot_batch import solve_batch``: the same
arguments give the same numbers on NumPy, PyTorch, JAX and CuPy arrays, with per-problem
convergence (``res.log["n_iter"]``, ``res.log["converged"]``).
"""
from .bregman import (bregman_log_projection_batch, bregman_projection_batch,
                      proximal_bregman_log_plan_batch)
from .distances import dist_batch
from .divergence import sinkhorn_divergence_batch
from .geomloss import SamplesLoss, samples_loss_batch
from .linear import (entropy_batch, loss_linear_batch, loss_linear_samples_batch, solve_batch,
                     solve_sample_batch)
from .quadratic import (loss_quadratic_batch, loss_quadratic_samples_batch, pad_batch,
                        solve_gromov_batch, tensor_batch)
from .result import LazyPlan, OTResult
from . import sharded  # noqa: E402,F401  (registers the sharded path of solve_sample_batch)

__version__ = "0.1.0"

__all__ = [
    "LazyPlan",
    "OTResult",
    "SamplesLoss",
    "bregman_log_projection_batch",
    "bregman_projection_batch",
    "dist_batch",
    "entropy_batch",
    "loss_linear_batch",
    "loss_linear_samples_batch",
    "loss_quadratic_batch",
    "loss_quadratic_samples_batch",
    "pad_batch",
    "proximal_bregman_log_plan_batch",
    "solve_batch",
    "solve_gromov_batch",
    "samples_loss_batch",
    "sinkhorn_divergence_batch",
    "solve_sample_batch",
    "tensor_batch",
]
