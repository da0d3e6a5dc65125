"""``backend="online"`` of :func:`ot_batch.samples_loss_batch`: the streaming loop
(:mod:`.online_solve`), its envelope gradients and, for balanced losses, the implicit
Hessian-vector products, assembled into the dense path's formulas."""
from __future__ import annotations

from typing import Optional, Sequence

from ot_batch.backends import namespace
from ot_batch.solvers import annealed

from . import online_solve
from .online_grad import Attach


def sinkhorn_divergence(X, Y, a, b, *, eps_list: Sequence[float],
                        rho: tuple[Optional[float], Optional[float]], c: float, debias: bool,
                        potentials: bool, tol: Optional[float], max_iter: int,
                        check_every: int, precision: str = "tf32x3", dual: bool = False):
    """Values (B,) or potentials ``(F, G)``, and the ``tol`` log; see
    :func:`ot_batch.samples_loss_batch`."""
    xp, ext = namespace(X=X)
    cl = online_solve.Clouds.of(X, Y, a, b, c, precision)
    balanced = rho[0] is None and rho[1] is None

    def damping(eps):
        return annealed.damping(eps, rho[0]), annealed.damping(eps, rho[1])

    pots = online_solve.annealed(cl, eps_list, damping, debias=debias, balanced=balanced,
                                 tol=tol, max_iter=max_iter, check_every=check_every)
    N = X.shape[1]
    dtype = X.dtype
    split = [[pots.pot[:, k, :N].to(dtype), pots.pot[:, k, N:].to(dtype)]
             for k in range(pots.pot.shape[1])]
    if X.requires_grad or Y.requires_grad:
        J = online_solve.envelope(cl, pots, [s for s, Z in enumerate((X, Y)) if Z.requires_grad])
        hvp = None
        if balanced and not potentials:
            hvp = _hvp_closures(cl, pots, X, Y, a, b, debias)
        for kind in range(len(split)):
            for side, pts in ((0, X), (1, Y)):
                if pts.requires_grad:
                    h = None if hvp is None else hvp[kind][side]
                    split[kind][side] = Attach.apply(split[kind][side], pts, J[kind][side], h)
    f_ba, g_ab = split[0]
    f_aa, g_bb = split[1] if debias else (None, None)
    if potentials:
        out = (f_ba - f_aa, g_ab - g_bb) if debias else (f_ba, g_ab)
    else:
        out = annealed.cost(xp, ext, a, b, f_aa, g_bb, g_ab, f_ba, eps_list[-1], rho, dual)
    return out, pots.log


def _hvp_closures(cl, pots, X, Y, a, b, debias):
    """Per attached potential, ``hvp(V, grad)``: the implicit derivative of ``<V, grad J>``
    with respect to the points (x side only; the y side raises)."""
    from .online_hvp import closures
    return closures(cl, pots, X, Y, a, b, debias)
