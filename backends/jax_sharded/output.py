"""What a sharded solve returns (no JAX import: the class is public in ot_batch.sharded)."""
from __future__ import annotations

import math
from typing import Any, NamedTuple


class ShardedOutput(NamedTuple):
    """The result of :func:`solve_sample`, with OTT-JAX's ``SinkhornOutput`` names.

    Attributes
    ----------
    f, g : jax.Array, shapes (n,) and (m,)
        Dual potentials, ``P_ij = exp((f_i + g_j - C_ij) / epsilon)``; sharded as x and y.
    converged : jax.Array (bool)
        The final L1 error of P's column sums is under ``tol``.
    n_iter : jax.Array (int)
        Sinkhorn iterations (one g- and one f-update each) run.
    errors : jax.Array, shape (max_iter + 1,)
        ``errors[k]`` is the marginal error after ``k`` iterations; -1 where none ran.
    epsilon : jax.Array
        The regularisation used (``reg`` times the cost's std or mean when relative).
    reg_ot_cost : jax.Array
        ``<P, C> + epsilon KL(P | a b^T) (+ epsilon (1 - sum P))``, OTT's ``reg_ot_cost``.
    primal_cost : jax.Array
        ``<P, C>``.
    entropy : jax.Array
        ``-sum P log P``.
    rowsum, colsum : jax.Array
        The marginals of P.
    diag : jax.Array or None
        ``P_ii`` (n == m only), computed from the points in O(n d).
    mode : str
        'kept' or 'chunked'.
    """

    f: Any
    g: Any
    converged: Any
    n_iter: Any
    errors: Any
    epsilon: Any
    reg_ot_cost: Any
    primal_cost: Any
    entropy: Any
    rowsum: Any
    colsum: Any
    diag: Any
    mode: str

    @property
    def normalized_entropy(self) -> Any:
        """``entropy / log(n) - 1``: 0 for a permutation, 1 for the independent coupling
        (OTT-JAX's, for assignment problems)."""
        return self.entropy / math.log(self.f.shape[0]) - 1.0

    @property
    def transport_mass(self) -> Any:
        """``sum P``."""
        return self.rowsum.sum()
