"""The transport plan of a streaming solve as a lazy operator: products with the plan, its
transpose and its second moments, each one pass of :func:`.online._apply_kernel` over the
points (the plan itself is never stored).

Coordinates are those of :class:`.online_solve.Clouds` (centred, rounded for 'tf32'): the
quantities built from these products (gradients, Hessian-vector products) are translation
invariant, and :attr:`StreamPlan.X` / :attr:`StreamPlan.Y` give the points in that frame.
"""
from __future__ import annotations

from typing import Optional

import torch

from .online_solve import Clouds, apply


class StreamPlan:
    """``pi_ij = wq_i wk_j exp((fq_i + gk_j - c|x_i - y_j|^2) / eps)`` between the rows
    ``q`` and ``k`` (slices of the concatenated clouds ``cl.P``), for every problem.

    Implements :class:`ot_batch.implicit_hvp.PlanOps`: ``apply`` (``pi @ V``), ``apply_t``
    (``pi^T @ U``), ``moment`` (``sum_j pi_ij (v_i . y_j) y_j``) and ``moment_t``.
    """

    def __init__(self, cl: Clouds, eps: float, q: slice, k: slice, fq: torch.Tensor,
                 gk: torch.Tensor):
        self.cl, self.eps = cl, float(eps)
        self.q, self.k = q, k
        self.fq = fq.to(torch.float32).contiguous()
        self.gk = gk.to(torch.float32).contiguous()
        inv = 1.0 / self.eps
        self._row_q = (cl.logw[:, q] + (self.fq - cl.sqn[:, q]) * inv).contiguous()
        self._row_k = (cl.logw[:, k] + (self.gk - cl.sqn[:, k]) * inv).contiguous()

    @property
    def X(self) -> torch.Tensor:
        return self.cl.P[:, self.q]

    @property
    def Y(self) -> torch.Tensor:
        return self.cl.P[:, self.k]

    @property
    def shape(self) -> tuple[int, int, int]:
        return (self.cl.P.shape[0], self.q.stop - self.q.start, self.k.stop - self.k.start)

    def _ranges(self, transpose: bool) -> dict[str, int]:
        q, k = (self.k, self.q) if transpose else (self.q, self.k)
        return dict(qo=q.start, nq=q.stop - q.start, ko=k.start, nk=k.stop - k.start)

    def _apply(self, U, transpose, V=None, W=None):
        vec = U.ndim == 2
        U = U[..., None] if vec else U
        if transpose:
            out = apply(self.cl, self.eps, self.fq, self._row_k, U, V=V, W=W,
                        **self._ranges(True))
        else:
            out = apply(self.cl, self.eps, self.gk, self._row_q, U, V=V, W=W,
                        **self._ranges(False))
        return out[..., 0] if vec else out

    def apply(self, V: torch.Tensor) -> torch.Tensor:
        """``pi @ V``: (B, m) or (B, m, k) -> (B, n) or (B, n, k)."""
        return self._apply(V, False)

    def apply_t(self, U: torch.Tensor) -> torch.Tensor:
        """``pi^T @ U``: (B, n[, k]) -> (B, m[, k])."""
        return self._apply(U, True)

    def moment(self, V: torch.Tensor, W: Optional[torch.Tensor] = None,
               U: Optional[torch.Tensor] = None) -> torch.Tensor:
        """``sum_j pi_ij (v_i . w_j) u_j`` (``w``, ``u`` the keys ``y`` by default):
        (B, n, D) -> (B, n, k)."""
        return self._apply(self.Y if U is None else U, False, V=V, W=W)

    def moment_t(self, U: torch.Tensor) -> torch.Tensor:
        """``sum_i pi_ij (u_j . x_i) x_i``: (B, m, D) -> (B, m, D)."""
        return self._apply(self.X, True, V=U)

    def dense(self) -> torch.Tensor:
        """The plan as a (B, n, m) tensor (for checks on small problems)."""
        B, n, m = self.shape
        eye = torch.eye(m, device=self.cl.P.device, dtype=torch.float32).expand(B, m, m)
        return self.apply(eye.contiguous())
