"""``sinkhorn_divergence_batch``: Sinkhorn divergences of many pairs of point clouds, POT's
arguments (``reg``, ``metric``) and OTT-JAX's definition, with envelope, unrolled and implicit
gradients.

Each problem is three entropic OT problems on the costs ``C(x, y)``, ``C(x, x)`` and
``C(y, y)``, solved together by GeomLoss's symmetric updates
(:mod:`ot_batch.solvers.annealed`): the temperature is annealed from the largest cost down to
``reg``, then each problem iterates at ``reg`` until its three marginal errors are below
``tol``. The value is formed from the potentials by the dual objective
(:func:`ot_batch.solvers.implicit.dual_value`), so one formula serves every gradient mode.
"""
from __future__ import annotations

from typing import Any

from . import _validate
from .backends import namespace
from .distances import dist_batch
from .geomloss import _diameter
from .result import OTResult, status_of
from .solvers import annealed, implicit

__all__ = ["sinkhorn_divergence_batch"]

DIV_GRADS = ("envelope", "autodiff", "implicit", "detach")


def _schedule(xp: Any, ext: Any, X_a: Any, X_b: Any, metric: str, p: float, reg: float,
              factor: float = 0.25) -> list[float]:
    """Temperatures from the largest cost down to ``reg`` by ``factor`` (GeomLoss's
    epsilon-scaling with ``scaling=0.5`` at p = 2): a warm start that the iterations at
    ``reg`` then finish."""
    if ext.is_tracer(X_a) or ext.is_tracer(X_b):  # under jax.jit: no host read, no warm start
        return [reg]
    if metric == "sqeuclidean":  # the squared diagonal of the points' box: no cost pass
        top = _diameter(xp, ext, X_a, X_b) ** 2
    else:
        C = dist_batch(ext.stop_gradient(X_a), ext.stop_gradient(X_b), metric=metric, p=p)
        top = float(ext.to_numpy(xp.max(C)))
    eps, out = top, []
    while eps > reg:
        out.append(eps)
        eps *= factor
    return out + [reg]


def sinkhorn_divergence_batch(X_a: Any, X_b: Any, reg: float, a: Any = None, b: Any = None,
                              metric: str = "sqeuclidean", max_iter: int = 1000,
                              tol: float = 1e-6, grad: str = "envelope", unbalanced: Any = None,
                              *, p: float = 2, check_every: int = 10,
                              implicit_solver: str = "auto") -> OTResult:
    r"""Sinkhorn divergences of many pairs of point clouds at once.

    For each problem :math:`i` of the batch,

    .. math::
        S_\varepsilon(a, b) = OT_\varepsilon(a, b) - \tfrac12 OT_\varepsilon(a, a)
        - \tfrac12 OT_\varepsilon(b, b) + \tfrac{\varepsilon}{2} (m(a) - m(b))^2,

    with :math:`OT_\varepsilon` the entropic OT cost with the KL regularisation
    :math:`\varepsilon\, KL(P \| a b^\top)` (and :math:`\tau\, KL` penalties on the marginals
    when ``unbalanced=tau``), as OTT-JAX's ``sinkhorn_divergence`` (its ``reg_ot_cost``, and the
    mass term of Séjourné et al. 2019). It is GeomLoss's debiased loss for the same cost and
    ``blur**p = reg``. POT's ``empirical_sinkhorn_divergence`` takes the same arguments but
    sums the transport costs ``<P, C>`` without the entropy, and clips at 0.

    Parameters
    ----------
    X_a : array, shape (B, n, d)
    X_b : array, shape (B, m, d)
    reg : float
        Entropic regularisation :math:`\varepsilon`, one for the whole batch.
    a, b : arrays, shapes (B, n) and (B, m), optional
        Weights; uniform when omitted. Balanced problems need equal masses.
    metric : str, default 'sqeuclidean'
        Ground cost, as :func:`ot_batch.dist_batch` (``p`` for 'minkowski').
    max_iter : int, default 1000
        Iterations at ``reg``, after the annealed warm start.
    tol : float, default 1e-6
        Each problem stops when the L1 marginal errors of its three transports (balanced) or
        the largest change of a potential (unbalanced) are below ``tol``.
    grad : {'envelope', 'autodiff', 'implicit', 'detach'}, default 'envelope'
        Gradients of the value in ``X_a``, ``X_b``, ``a`` and ``b``. 'envelope': the
        potentials held fixed (Danskin; exact at convergence, first order only). 'autodiff':
        through every iteration (derivatives of any order of the unrolled loop). 'implicit':
        the potentials carry the derivatives of the implicit function theorem, so
        derivatives of any order (``jax.hessian``, ``torch.func.hessian``, double backward)
        are those of the exact solution, at the cost of one linear solve per derivative.
        'detach': no gradient.
    unbalanced : float or pair of floats, optional
        KL weights :math:`\tau` of the marginal penalties (a side, b side; inf: exact).
    p : float, default 2
        Exponent of the 'minkowski' metric.
    check_every : int, default 10
        Iterations between convergence checks.
    implicit_solver : {'auto', 'dense', 'cg'}, default 'auto'
        Linear solver of ``grad='implicit'``: dense (``(n + m)^2`` memory per problem),
        conjugate gradient, or dense while ``n + m <= 1024``.

    Returns
    -------
    OTResult
        ``value`` (B,); ``plan``, ``value_linear`` and ``potentials`` of the transport
        ``a -> b``; ``log["potentials"]`` holds the potentials of the three terms,
        ``((f_ab, g_ab), (f_aa, f_aa), (g_bb, g_bb))``, and ``log["n_iter"]``,
        ``log["converged"]``, ``log["err"]`` are per problem. Potentials follow the
        ``KL(P | a b^T)`` convention, ``P = a b^T exp((f + g - C) / reg)``.

    Examples
    --------
    >>> import numpy as np, ot_batch
    >>> rng = np.random.default_rng(0)
    >>> X, Y = rng.random((4, 30, 2)), rng.random((4, 40, 2))
    >>> res = ot_batch.sinkhorn_divergence_batch(X, Y, reg=0.1)
    >>> res.value.shape, bool(res.log["converged"].all())
    ((4,), True)
    >>> float(ot_batch.sinkhorn_divergence_batch(X, X, reg=0.1).value.max()) < 1e-12
    True
    """
    xp, ext = namespace(X_a=X_a, X_b=X_b, a=a, b=b)
    for name, Z in (("X_a", X_a), ("X_b", X_b)):
        if Z is None or Z.ndim != 3:
            raise ValueError(f"{name} must have shape (B, n, d), got "
                             f"{None if Z is None else tuple(Z.shape)}")
        _validate._check_float(name, Z, xp)
        _validate.check_finite(name, Z, xp, ext)
    if X_a.shape[0] != X_b.shape[0] or X_a.shape[2] != X_b.shape[2]:
        raise ValueError(f"X_a {tuple(X_a.shape)} and X_b {tuple(X_b.shape)} must agree in B "
                         "and d")
    if hasattr(reg, "shape") and getattr(reg, "ndim", 1) == 0 and not ext.is_tracer(reg):
        reg = float(reg)
    reg = _validate.nonneg_float("reg", reg, strict=True)
    grad = _validate.choice("grad", grad, DIV_GRADS)
    implicit_solver = _validate.choice("implicit_solver", implicit_solver,
                                       ("auto", "dense", "cg"))
    max_iter = _validate.positive_int("max_iter", max_iter, minimum=0)
    tol = _validate.nonneg_float("tol", tol, strict=True)
    check_every = _validate.positive_int("check_every", check_every)
    unb = _validate.unbalanced_pair(unbalanced)
    B, n, m = X_a.shape[0], X_a.shape[1], X_b.shape[1]
    a_given, b_given = a is not None, b is not None
    a = _validate.weights("a", a, (B, n), X_a, xp, ext)
    b = _validate.weights("b", b, (B, m), X_a, xp, ext)
    if unb is None and B and (a_given or b_given):
        _validate.equal_mass(a, b, xp, ext)
    spec = implicit.Spec(reg, implicit.relaxation(unb), "kl", implicit_solver)

    schedule = _schedule(xp, ext, X_a, X_b, metric, p, reg)
    value, value_linear, plan, pots, n_iter, converged, err = ext.compile(_divergence_arrays)(
        X_a, X_b, a, b, static=(xp, ext, spec, metric, p, grad, tuple(schedule), max_iter,
                                tol, check_every))
    log = {"n_iter": n_iter, "converged": converged, "err": err, "potentials": pots}
    return OTResult(potentials=pots[0], value=value, value_linear=value_linear, plan=plan,
                    log=log, backend=xp, status=status_of(converged, ext.to_numpy))


def _divergence_arrays(X_a, X_b, a, b, static):
    """The three solves and the value, from arrays and hashable options (one ``jax.jit``
    per shape and set of options under JAX)."""
    xp, ext, spec, metric, p, grad, schedule, max_iter, tol, check_every = static
    rho = spec.rho
    C_ab = dist_batch(X_a, X_b, metric=metric, p=p)
    C_aa = dist_batch(X_a, X_a, metric=metric, p=p)
    C_bb = dist_batch(X_b, X_b, metric=metric, p=p)
    if grad == "detach":
        a, b, C_ab, C_aa, C_bb = (ext.stop_gradient(z) for z in (a, b, C_ab, C_aa, C_bb))
    unrolled = grad == "autodiff"
    f_aa, g_bb, g_ab, f_ab, log = annealed.potentials(
        xp, ext, a, b, C_ab, xp.permute_dims(C_ab, (0, 2, 1)), C_aa, C_bb, list(schedule), rho,
        tol=tol, max_iter=max_iter, check_every=check_every,
        grad="autodiff" if unrolled else "envelope", alternate=True)
    # the symmetric problems relax both of their marginals like the side they come from
    terms = [(spec, C_ab, a, b, f_ab, g_ab),
             (spec._replace(rho=(rho[0], rho[0])), C_aa, a, a, f_aa, f_aa),
             (spec._replace(rho=(rho[1], rho[1])), C_bb, b, b, g_bb, g_bb)]
    pots, values = [], []
    for spec_, C, wa, wb, f, g in terms:
        if not unrolled:
            f, g = ext.stop_gradient(f), ext.stop_gradient(g)
        if grad == "implicit":
            f, g = ext.implicit_attach(spec_, C, wa, wb, f, g)
        total = xp.sum(wa, axis=1) * xp.sum(wb, axis=1)
        values.append(implicit.dual_value(xp, spec_, C, wa, wb, f, g, total))
        pots.append((f, g))
    mass = xp.sum(a, axis=1) - xp.sum(b, axis=1)
    value = values[0] - 0.5 * (values[1] + values[2]) + 0.5 * spec.eps * mass * mass
    _, plan = implicit.kernel(xp, spec, C_ab, a, b, *pots[0])
    return (value, xp.sum(plan * C_ab, axis=(1, 2)), plan, tuple(pots), log["n_iter"],
            log["converged"], log["err"])
