"""The result of a batched solve, with POT's attribute names."""
from __future__ import annotations

from typing import Any


class OTResult:
    """Solutions of a batch of OT problems, as POT's :class:`ot.utils.OTResult` names them.

    Every array has the batch as its first axis and comes back in the caller's array library,
    dtype and device. Unlike POT's, the marginals are those of each problem: ``marginal_a`` has
    shape (B, n) and ``marginal_b`` (B, m).

    Parameters
    ----------
    potentials : tuple of arrays, shapes (B, n) and (B, m), optional
        Dual variables, in the convention of the method that produced them (log-scalings for
        the log-domain methods, as POT's ``ot.batch`` returns them).
    value : array, shape (B,), optional
        Full objective, regularisation included.
    value_linear : array, shape (B,), optional
        Linear part :math:`\\langle T_b, M_b \\rangle`.
    value_quad : array, shape (B,), optional
        Quadratic part (Gromov-Wasserstein).
    plan : array, shape (B, n, m), optional
        Transport plans.
    log : dict, optional
        Solver information: ``n_iter`` and ``converged`` (shape (B,)), ``err``.
    backend : module, optional
        The array namespace of the arrays.
    status : str, optional
        ``"converged"`` when every problem met ``tol``, otherwise a summary; the per-problem
        status is ``log["converged"]``.

    Examples
    --------
    >>> import numpy as np, ot_batch
    >>> M = np.random.default_rng(0).random((4, 5, 6))
    >>> res = ot_batch.solve_batch(M, reg=0.1)
    >>> res.plan.shape, res.marginal_a.shape, res.log["converged"].shape
    ((4, 5, 6), (4, 5), (4,))
    """

    def __init__(self, potentials=None, value=None, value_linear=None, value_quad=None,
                 plan=None, log=None, backend=None, sparse_plan=None, lazy_plan=None,
                 status=None, batch_size=100):
        self._potentials = potentials
        self._value = value
        self._value_linear = value_linear
        self._value_quad = value_quad
        self._plan = plan
        self._log = log
        self._backend = backend
        self._sparse_plan = sparse_plan
        self._lazy_plan = lazy_plan
        self._status = status
        self._batch_size = batch_size

    def __repr__(self) -> str:
        fields = ["value", "value_linear", "value_quad", "plan", "potentials", "status"]
        shown = []
        for f in fields:
            v = getattr(self, "_" + f)
            if v is None:
                continue
            if isinstance(v, (tuple, list)):
                shown.append(f"{f}=(" + ", ".join(str(tuple(x.shape)) for x in v) + ")")
            elif getattr(v, "shape", None) is not None:
                shown.append(f"{f}={tuple(v.shape)}")
            else:
                shown.append(f"{f}={v!r}")
        return "OTResult(" + ", ".join(shown) + ")"

    # Dual potentials --------------------------------------------------------------------
    @property
    def potentials(self):
        """Dual potentials ``(potential_a, potential_b)``."""
        return self._potentials

    @property
    def potential_a(self):
        """First dual potential, shape (B, n)."""
        return None if self._potentials is None else self._potentials[0]

    @property
    def potential_b(self):
        """Second dual potential, shape (B, m)."""
        return None if self._potentials is None else self._potentials[1]

    # Transport plan ---------------------------------------------------------------------
    @property
    def plan(self):
        """Transport plans, shape (B, n, m)."""
        return self._plan

    @property
    def sparse_plan(self):
        """Not available for batches (dense plans only); kept for POT's interface."""
        return self._sparse_plan

    @property
    def lazy_plan(self):
        """A lazy plan, when a solver returns one instead of a dense plan."""
        return self._lazy_plan

    # Values -----------------------------------------------------------------------------
    @property
    def value(self):
        """Full objective of each problem, shape (B,)."""
        return self._value

    @property
    def value_linear(self):
        """Linear part of the objective, shape (B,)."""
        return self._value_linear

    @property
    def value_quad(self):
        """Quadratic part of the objective (Gromov-Wasserstein), shape (B,)."""
        return self._value_quad

    # Marginals --------------------------------------------------------------------------
    @property
    def marginals(self):
        """``(marginal_a, marginal_b)`` of each plan."""
        return self.marginal_a, self.marginal_b

    @property
    def marginal_a(self):
        """Row sums of each plan, shape (B, n)."""
        if self._plan is None:
            return None
        return self._backend.sum(self._plan, axis=2)

    @property
    def marginal_b(self):
        """Column sums of each plan, shape (B, m)."""
        if self._plan is None:
            return None
        return self._backend.sum(self._plan, axis=1)

    # Solver information -----------------------------------------------------------------
    @property
    def status(self):
        """``"converged"`` or a summary of the problems that did not converge."""
        return self._status

    @property
    def log(self):
        """Solver information; ``log["n_iter"]`` and ``log["converged"]`` have shape (B,)."""
        return self._log

    @property
    def backend(self):
        """Array namespace of the results."""
        return self._backend

    @property
    def a_to_b(self):
        """Displacement vectors from the first to the second measure (not for batches)."""
        raise NotImplementedError("a_to_b is not defined for batched cost matrices")

    @property
    def b_to_a(self):
        """Displacement vectors from the second to the first measure (not for batches)."""
        raise NotImplementedError("b_to_a is not defined for batched cost matrices")

    @property
    def citation(self) -> str:
        """References for the solvers, in plain text."""
        return (
            "M. Cuturi, Sinkhorn Distances: Lightspeed Computation of Optimal Transport, "
            "NeurIPS 2013.\n"
            "Y. Xie, X. Wang, R. Wang, H. Zha, A Fast Proximal Point Method for Computing "
            "Exact Wasserstein Distance, UAI 2020.\n"
            "R. Flamary et al., POT: Python Optimal Transport, JMLR 22(78), 2021."
        )


def status_of(converged: Any, to_numpy) -> str:
    """One-line status from the per-problem ``converged`` flags."""
    try:
        conv = to_numpy(converged)
    except Exception:  # traced under jax.jit: the flags are in log["converged"]
        return "traced"
    n_bad = int((~conv.astype(bool)).sum())
    if n_bad == 0:
        return "converged"
    return f"not converged: {n_bad} of {conv.size} problems reached max_iter"


class LazyPlan:
    """The plans of ``solve_sample_batch(..., lazy=True)``, formed only for what is indexed.

    ``T_b = exp(-C(X_b, Y_b) / reg + u_b + v_b)`` (plus ``log a_b + log b_b`` for the KL
    reference of an unbalanced problem), with ``u``, ``v`` the log-potentials. Indexing the
    first axis forms the cost of the chosen problems only; ``lazy[...]`` forms them all.

    Examples
    --------
    >>> import numpy as np, ot_batch
    >>> X = np.random.default_rng(0).normal(size=(3, 5, 2))
    >>> res = ot_batch.solve_sample_batch(X, X + 0.1, reg=1.0, lazy=True)
    >>> res.plan is None, res.lazy_plan[1].shape, res.lazy_plan.shape
    (True, (5, 5), (3, 5, 5))
    """

    def __init__(self, X, Y, metric, p, log_u, log_v, reg, shift=None):
        self.X, self.Y, self.metric, self.p = X, Y, metric, p
        self.log_u, self.log_v, self.reg, self.shift = log_u, log_v, reg, shift

    @property
    def shape(self):
        return (self.X.shape[0], self.X.shape[1], self.Y.shape[1])

    def _form(self, idx):
        from .backends import namespace
        from .distances import dist_batch

        xp, _ = namespace(X=self.X)
        logT = (-dist_batch(self.X[idx], self.Y[idx], self.metric, self.p) / self.reg
                + self.log_u[idx][:, :, None] + self.log_v[idx][:, None, :])
        if self.shift is not None:
            logT = logT + self.shift[0][idx][:, :, None] + self.shift[1][idx][:, None, :]
        return xp.exp(logT)

    def __getitem__(self, key):
        first, rest = (key[0], key[1:]) if isinstance(key, tuple) else (key, ())
        if isinstance(first, int):
            b = first + self.shape[0] if first < 0 else first
            out = self._form(slice(b, b + 1))[0]
        else:
            out = self._form(first)
        return out[rest] if rest else out
