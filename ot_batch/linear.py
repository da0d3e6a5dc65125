"""Batched linear OT, POT's ``ot.batch`` API: ``solve_batch``, ``solve_sample_batch``, losses."""
from __future__ import annotations

from dataclasses import fields
from typing import Any

import numpy as np

from . import _validate
from .backends import pick, register
from .backends import triton as _triton
from .distances import dist_batch
from .result import LazyPlan, OTResult, status_of
from .solvers import implicit, proximal, sinkhorn, sinkhorn_log, sinkhorn_stabilized
from .solvers._sinkhorn_parts import safe_log

__all__ = ["solve_batch", "solve_sample_batch", "loss_linear_batch", "loss_linear_samples_batch",
           "entropy_batch"]


def _xlogy_ratio(xp: Any, p: Any, q: Any = None):
    """``p * log(p / q)`` (``q`` None means 1) with 0 where ``p == 0``: no NaN from empty cells
    or zero weights."""
    pos = p > 0
    one = xp.ones_like(p)
    ratio = xp.where(pos, p, one)
    if q is not None:
        ratio = ratio / xp.where(pos, q, one)
    return xp.where(pos, p * xp.log(ratio), xp.zeros_like(p))


def _kl_generalized(xp: Any, p: Any, q: Any, axes: tuple[int, ...]):
    """Generalised KL divergence ``sum p log(p/q) - p + q`` over ``axes`` (``q`` None: 1)."""
    extra = 1.0 if q is None else q
    return xp.sum(_xlogy_ratio(xp, p, q) - p + extra, axis=axes)


def entropy_batch(T: Any, nx: Any = None, eps: float = 1e-16) -> Any:
    r"""Entropy :math:`H(T_b) = -\sum_{ij} T_{bij} \log T_{bij}` of each plan.

    Parameters
    ----------
    T : array, shape (B, n, m)
        Transport plans.
    nx : ignored
        Accepted for POT compatibility.
    eps : float, default 1e-16
        Added inside the log, as POT does.

    Returns
    -------
    H : array, shape (B,)

    Examples
    --------
    >>> import numpy as np, ot_batch
    >>> round(float(ot_batch.entropy_batch(np.full((1, 2, 2), 0.25))[0]), 12)  # log(4)
    1.38629436112
    """
    from .backends import namespace

    xp, _ = namespace(T=T)
    if T.ndim != 3:
        raise ValueError(f"T must have shape (B, n, m), got shape {tuple(T.shape)}")
    return -xp.sum(T * xp.log(T + eps), axis=(1, 2))


def loss_linear_batch(M: Any, T: Any, nx: Any = None) -> Any:
    r"""Linear OT loss :math:`\langle T_b, M_b \rangle_F` of each problem.

    Parameters
    ----------
    M, T : arrays, shape (B, n, m)
        Costs and plans.
    nx : ignored
        Accepted for POT compatibility.

    Returns
    -------
    loss : array, shape (B,)

    Examples
    --------
    >>> import numpy as np, ot_batch
    >>> ot_batch.loss_linear_batch(np.ones((2, 3, 3)), np.full((2, 3, 3), 1 / 9))
    array([1., 1.])
    """
    from .backends import namespace

    xp, _ = namespace(M=M, T=T)
    if M.ndim != 3 or tuple(M.shape) != tuple(T.shape):
        raise ValueError(f"M and T must have the same shape (B, n, m), got {tuple(M.shape)} "
                         f"and {tuple(T.shape)}")
    return xp.sum(M * T, axis=(1, 2))


def loss_linear_samples_batch(X: Any, Y: Any, T: Any, metric: str = "sqeuclidean") -> Any:
    """Linear OT loss from samples: ``dist_batch`` then ``loss_linear_batch``.

    Parameters
    ----------
    X : array, shape (B, n, d)
    Y : array, shape (B, m, d)
    T : array, shape (B, n, m)
    metric : str, default 'sqeuclidean'
        Any metric of :func:`ot_batch.dist_batch`.

    Returns
    -------
    loss : array, shape (B,)

    Examples
    --------
    >>> import numpy as np, ot_batch
    >>> X = np.zeros((1, 2, 1)); Y = np.ones((1, 2, 1))
    >>> ot_batch.loss_linear_samples_batch(X, Y, np.full((1, 2, 2), 0.25))
    array([1.])
    """
    return loss_linear_batch(dist_batch(X, Y, metric=metric), T)


def _run_solver(pb: _validate.LinearProblem, log_module=sinkhorn_log):
    xp, ext = pb.xp, pb.ext
    loop = dict(grad=pb.grad, max_iter=pb.max_iter, tol=pb.tol, check_every=pb.check_every,
                verbose=pb.verbose)
    if pb.method == "proximal":
        return proximal.solve(xp, ext, pb.M, pb.a, pb.b, pb.reg, inner_reg=pb.inner_reg,
                              inner_iter=pb.inner_iter, min_step=pb.min_step, **loop)
    module = log_module if pb.method == "log_sinkhorn" else sinkhorn
    return module.solve(xp, ext, pb.M, pb.a, pb.b, pb.reg, reg_type=pb.reg_type,
                        unbalanced=pb.unbalanced, init=pb.potentials_init, **loop)


def _values(pb: _validate.LinearProblem, out):
    """``(value, value_linear, plan)`` with the gradients that ``grad`` asks for.

    With ``grad="envelope"`` the plan and potentials are constants and ``value`` is the
    objective at the solution plus ``<f, a - a> + <g, b - b>``: zero in value, but its gradient
    is Danskin's, ``plan`` for M and the dual potentials for a and b (balanced), or the
    derivative of the marginal penalties (unbalanced).
    """
    if pb.grad == "implicit":
        return _implicit_values(pb, out)
    xp, ext = pb.xp, pb.ext
    M, a, b, reg = pb.M, pb.a, pb.b, pb.reg
    T = out.plan
    if pb.grad in ("detach", "envelope"):
        T = ext.stop_gradient(T)
    if pb.grad == "detach":
        M, a, b = (ext.stop_gradient(x) for x in (M, a, b))
    value_linear = xp.sum(T * M, axis=(1, 2))
    if reg is None:
        value = value_linear
    elif pb.unbalanced is None:
        # POT ot.batch's objective: entropy is sum T log T; "kl" is KL(T | a b^T) without the
        # mass term (equal at unit mass).
        ref = a[:, :, None] * b[:, None, :] if pb.reg_type == "kl" else None
        value = value_linear + reg * xp.sum(_xlogy_ratio(xp, T, ref), axis=(1, 2))
    else:
        # The objective the unbalanced updates minimise: generalised KL everywhere.
        ref = a[:, :, None] * b[:, None, :] if pb.reg_type == "kl" else None
        value = value_linear + reg * _kl_generalized(xp, T, ref, (1, 2))
        for tau, marg, w in ((pb.unbalanced[0], xp.sum(T, axis=2), a),
                             (pb.unbalanced[1], xp.sum(T, axis=1), b)):
            if tau != float("inf"):
                value = value + tau * _kl_generalized(xp, marg, w, (1,))
    value = _envelope_weights(pb, value, out.dual)
    return value, value_linear, out.plan if pb.grad != "detach" else ext.stop_gradient(out.plan)


def implicit_spec(reg: float, unbalanced: Any, reg_type: str) -> implicit.Spec:
    """The :class:`~ot_batch.solvers.implicit.Spec` of ``solve_batch``'s problems: POT's
    ``unbalanced`` (inf: exact marginal) and the entropy's reference measure."""
    ref = "entropy" if unbalanced is not None and reg_type == "entropy" else "kl"
    return implicit.Spec(float(reg), implicit.relaxation(unbalanced), ref)


def _implicit_values(pb: _validate.LinearProblem, out):
    """``(value, value_linear, plan)`` from potentials that carry the derivatives of the
    implicit function theorem (:mod:`ot_batch.solvers.implicit`). The value is the dual
    objective, stationary in the potentials, equal to POT's objective at the solution."""
    xp, ext = pb.xp, pb.ext
    M, a, b, reg = pb.M, pb.a, pb.b, pb.reg
    spec = implicit_spec(reg, pb.unbalanced, pb.reg_type)
    f, g = (ext.stop_gradient(d) for d in out.dual)
    if spec.balanced:  # the solver's kernel -M / reg has no log a + log b: shift to "kl"
        f = f - reg * safe_log(xp, ext.stop_gradient(a))
        g = g - reg * safe_log(xp, ext.stop_gradient(b))
    if spec.ref == "kl":
        f, g = implicit.fill_empty(xp, ext, spec, ext.stop_gradient(M), ext.stop_gradient(a),
                                   ext.stop_gradient(b), f, g)
    f, g = ext.implicit_attach(spec, M, a, b, f, g)
    _, T = implicit.kernel(xp, spec, M, a, b, f, g)
    value_linear = xp.sum(T * M, axis=(1, 2))
    n, m = a.shape[1], b.shape[1]
    if spec.balanced:  # at the solution <P, 1> = sum a: the value is <a, f> + <b, g>
        total = xp.sum(a, axis=1)
    elif spec.ref == "kl":
        total = xp.sum(a, axis=1) * xp.sum(b, axis=1)
    else:
        total = float(n * m)
    value = implicit.dual_value(xp, spec, M, a, b, f, g, total)
    if spec.balanced and pb.reg_type == "entropy":  # sum T log T = KL(T | a b^T) + ...
        value = value + reg * (xp.sum(_xlogy_ratio(xp, a), axis=1)
                               + xp.sum(_xlogy_ratio(xp, b), axis=1))
    return value, value_linear, T


def _envelope_weights(pb: _validate.LinearProblem, value: Any, dual: Any):
    """``value`` plus a zero whose gradient in ``a`` and ``b`` is the envelope's (balanced).

    Multipliers of the marginal constraints: stationarity of the Lagrangian gives
    f_i + g_j = dual_u_i + dual_v_j + reg (entropy), minus reg (log a_i + log b_j) for "kl";
    the reg is split evenly (any split is a valid gradient on equal-mass directions, this one
    is also exact for scaling a and b together).
    """
    if pb.grad != "envelope" or pb.unbalanced is not None or dual is None:
        return value
    xp, ext, a, b, reg = pb.xp, pb.ext, pb.a, pb.b, pb.reg
    du, dv = (ext.stop_gradient(d) for d in dual)
    if reg is not None:
        shift = reg / 2
        du, dv = du + shift, dv + shift
        if pb.reg_type == "kl":
            du = du - reg * xp.log(ext.stop_gradient(a))
            dv = dv - reg * xp.log(ext.stop_gradient(b))
    du = xp.where(a > 0, du, xp.zeros_like(du))
    dv = xp.where(b > 0, dv, xp.zeros_like(dv))
    return (value + xp.sum(du * (a - ext.stop_gradient(a)), axis=1)
            + xp.sum(dv * (b - ext.stop_gradient(b)), axis=1))


def _weighted_log(xp: Any, mass: Any, w: Any):
    """Per problem ``sum_i mass_i log w_i``, 0 where the mass is 0."""
    pos = mass > 0
    logw = xp.log(xp.where(pos, w, xp.ones_like(w)))
    return xp.sum(xp.where(pos, mass * logw, xp.zeros_like(mass)), axis=1)


def _values_from_stats(pb: _validate.LinearProblem, lin: Any, plogp: Any, rowsum: Any,
                       colsum: Any, dual: Any):
    """The values of :func:`_values` from the plan's statistics, the plan never formed.

    ``lin = <T, C>`` carries the gradient of the cost (the envelope's); ``plogp = <T, log T>``
    and the row and column sums of ``T`` are constants. Same objectives as :func:`_values`.
    """
    xp = pb.xp
    a, b, reg = pb.a, pb.b, pb.reg
    if pb.grad == "detach":
        a, b = pb.ext.stop_gradient(a), pb.ext.stop_gradient(b)
    ent = plogp
    if pb.reg_type == "kl":  # <T, log (a b^T)> with a and b attached
        ent = ent - _weighted_log(xp, rowsum, a) - _weighted_log(xp, colsum, b)
    if pb.unbalanced is None:
        value = lin + reg * ent
    else:  # generalised KL: - <T, 1> + <ref, 1>
        n, m = rowsum.shape[1], colsum.shape[1]
        ref = xp.sum(a, axis=1) * xp.sum(b, axis=1) if pb.reg_type == "kl" else float(n * m)
        value = lin + reg * (ent - xp.sum(rowsum, axis=1) + ref)
        for tau, marg, w in ((pb.unbalanced[0], rowsum, a), (pb.unbalanced[1], colsum, b)):
            if tau != float("inf"):
                value = value + tau * _kl_generalized(xp, marg, w, (1,))
    return _envelope_weights(pb, value, dual), lin


_ARRAYS = ("M", "a", "b", "potentials_init")


def _solve_arrays(M, a, b, potentials_init, static):
    """Solve and form the values from arrays and hashable options (compiled once under JAX)."""
    log_module, options = static
    pb = _validate.LinearProblem(M=M, a=a, b=b, potentials_init=potentials_init, **dict(options))
    out = _run_solver(pb, log_module)
    value, value_linear, plan = _values(pb, out)
    return value, value_linear, plan, out.potentials, out.n_iter, out.converged, out.err


def _solve_generic(pb: _validate.LinearProblem, log_module=sinkhorn_log) -> OTResult:
    xp, ext = pb.xp, pb.ext
    options = tuple((f.name, getattr(pb, f.name)) for f in fields(pb) if f.name not in _ARRAYS)
    value, value_linear, plan, potentials, n_iter, converged, err = ext.compile(_solve_arrays)(
        pb.M, pb.a, pb.b, pb.potentials_init, static=(log_module, options))
    log = {"n_iter": n_iter, "converged": converged, "err": err}
    return OTResult(potentials=potentials, value=value, value_linear=value_linear, plan=plan,
                    log=log, backend=xp, status=status_of(converged, ext.to_numpy))


def _on_cpu_eager(problem: _validate.LinearProblem) -> bool:
    """Eager CPU arrays, where the stabilised solver's per-iteration range test is free."""
    return (problem.method == "log_sinkhorn" and problem.grad in ("envelope", "detach")
            and (problem.ext.name == "numpy"
                 or (problem.ext.name == "torch" and problem.M.device.type == "cpu")))


@register("solve_batch", "stabilized", accepts=_on_cpu_eager)
def _solve_stabilized(pb: _validate.LinearProblem) -> OTResult:
    return _solve_generic(pb, log_module=sinkhorn_stabilized)


def _fusable(ext: Any, x: Any, method: str, grad: str) -> bool:
    """Torch float32 / float16 / bfloat16 arrays where Triton runs, a Sinkhorn method, and no
    gradient through the iterations (the kernels have none)."""
    return (ext.name == "torch" and method in ("log_sinkhorn", "sinkhorn")
            and grad in ("envelope", "detach") and x.is_floating_point()
            and x.dtype.itemsize <= 4 and _triton.available(x))


def _fused_ok(problem: _validate.LinearProblem) -> bool:
    return _fusable(problem.ext, problem.M, problem.method, problem.grad)


def _fused_result(pb, f, value, value_linear, plan, lazy_plan=None, nonfinite=None):
    """The OTResult of a fused solve. Its one read back to the host comes last, once every
    launch is queued: the converged flags and (from M) the count of NaN / inf costs."""
    import torch

    flags = f.converged.to(torch.float32)
    if nonfinite is not None:
        flags = torch.cat([flags, nonfinite])
    host = flags.cpu().numpy()
    B = f.converged.shape[0]
    if nonfinite is not None and (host[B:] > 0).any():
        bad = np.nonzero(host[B:] > 0)[0][:10].tolist()
        raise ValueError(f"M contains NaN or inf (problems {bad})")
    log = {"n_iter": f.n_iter, "converged": f.converged, "err": f.err}
    return OTResult(potentials=f.potentials, value=value, value_linear=value_linear,
                    plan=plan, log=log, backend=pb.xp, lazy_plan=lazy_plan,
                    status=status_of(host[:B] > 0, lambda x: x))


@register("solve_batch", "triton", accepts=_fused_ok, auto=lambda problem: problem.M.is_cuda)
def _solve_fused(pb: _validate.LinearProblem) -> OTResult:
    """The fused Triton Sinkhorn (:mod:`ot_batch.backends.triton`), values as the generic
    solver forms them."""
    from .backends.triton import envelope
    from .backends.triton import solve as fused

    f = fused.from_cost(pb)
    lin, plogp, rowsum, colsum, nonfinite = f.stats
    if pb.grad == "envelope" and pb.M.requires_grad:
        lin = envelope.MatrixLinear.apply(pb.M, lin, f.plan)
    dual = (pb.reg * f.lu, pb.reg * f.lv) if pb.grad == "envelope" else None
    # weights of half-precision costs are float32 already (_validate.weights): so are values
    value, value_linear = _values_from_stats(pb, lin, plogp, rowsum, colsum, dual)
    # solve_batch left the NaN / inf test of M to the final pass, which counted them
    return _fused_result(pb, f, value, value_linear, f.plan, nonfinite=nonfinite)


def solve_batch(M: Any, reg: float | None = None, a: Any = None, b: Any = None,
                max_iter: int | None = None, tol: float = 1e-5, method: str = "auto",
                inner_iter: int = 1, inner_reg: float = 1e-3, reg_type: str = "entropy",
                grad: str = "envelope", *, unbalanced: Any = None, potentials_init: Any = None,
                verbose: bool = False, solver: str | None = None, check_every: int = 10,
                min_step: float = 0.1, backend: str = "auto",
                n_threads: int | str | None = None) -> OTResult:
    r"""Solve many OT problems at once (POT's ``ot.batch.solve_batch``, same arguments).

    For each problem :math:`b` of the batch,

    .. math::
        \min_{T \ge 0} \langle T, M_b \rangle + \mathrm{reg}\, R(T)
        \quad \text{s.t.} \quad T 1 = a_b, \; T^\top 1 = b_b,

    with :math:`R(T) = \sum T \log T` (``reg_type="entropy"``) or
    :math:`KL(T \| a_b b_b^\top)` (``"kl"``). With ``unbalanced=tau`` the marginal constraints
    become penalties :math:`\tau\, KL(T 1 \| a_b) + \tau\, KL(T^\top 1 \| b_b)` (generalised KL).
    Each problem stops on its own when its error is below ``tol``; finished problems are
    frozen and the batch stops when its slowest member is done.

    Parameters
    ----------
    M : array, shape (B, n, m)
        Cost matrices (NumPy, PyTorch, JAX or CuPy; float32 stays float32).
    reg : float or None, default None
        Entropic regularisation. ``None`` (or 0) solves exact OT, the linear program, as
        ``ot.emd2`` does (see ``method``; :mod:`ot_batch.exact`).
    a, b : arrays, shapes (B, n) and (B, m), optional
        Weights; uniform when omitted. Balanced problems need equal mass in each problem.
    max_iter : int, optional
        Largest number of iterations of any problem. None: 1000 for the Sinkhorn and proximal
        methods (POT ot.batch's default), 1,000,000 pivots of the network simplex or rounds
        of the GPU auction for exact OT (``ot.solve``'s default).
    tol : float, default 1e-5
        Stopping threshold on each problem's L2 marginal error (balanced) or on the largest
        change of its log-potentials in one iteration (unbalanced). ``tol=0`` runs
        ``max_iter`` iterations.
    method : str, default 'auto'
        With ``reg``: 'log_sinkhorn' (the default) or 'sinkhorn'. Exact OT (``reg=None``):
        'network_simplex' (POT's, on the host, one problem per thread, any weights),
        'assignment' (lapx's Jonker-Volgenant, uniform weights and n == m), 'gpu' (a batched
        auction in Triton on CUDA arrays, uniform weights) or 'proximal' (the approximate
        Bregman proximal point method of POT's ot.batch, kept under this name); 'auto' takes
        'gpu' for uniform weights on CUDA arrays with Triton, else 'network_simplex'. Exact
        results carry a certificate per problem: ``log["gap"]`` (primal minus dual value) and
        ``log["dual_infeasibility"]``; the value is computed in float64. Its gradients are
        the envelope's, as ``ot.emd2``'s: the plan for M, the centred duals ``f - mean(f)``
        and ``g - mean(g)`` for a and b; where the optimal plan is not unique the value is not
        differentiable and these are one subgradient.
    inner_iter : int, default 1
        Sinkhorn sweeps per proximal step.
    inner_reg : float, default 1e-3
        Proximal step (KL weight to the previous plan).
        For ``reg=None`` see ``min_step``.
    reg_type : {'entropy', 'kl'}, default 'entropy'
        Regulariser; any case is accepted.
    grad : {'envelope', 'autodiff', 'implicit', 'last_step', 'detach'}, default 'envelope'
        'envelope': gradients of ``value`` with respect to M, a and b from the solution,
        no graph through the iterations; 'autodiff': through every iteration; 'implicit'
        (Sinkhorn methods): the potentials carry the derivatives of the implicit function
        theorem on the optimality conditions (a linear solve per derivative, dense or
        conjugate gradient, :mod:`ot_batch.solvers.implicit`), so ``value`` and ``plan``
        have exact derivatives of every order (``jax.hessian``, ``torch.func.hessian``,
        double backward) with no graph through the iterations; 'last_step': through the
        last iteration only; 'detach': none.
    unbalanced : float or (float, float), optional, keyword-only
        KL relaxation of the marginals (a side, b side; ``inf`` keeps a side exact).
    potentials_init : (array, array), optional, keyword-only
        Warm start, in the convention of ``res.potentials`` of the same method.
    verbose : bool, default False
        Print the errors at each check.
    solver : str, optional
        POT 0.9.6's name for ``method`` (deprecated).
    check_every : int, default 10
        Iterations between convergence checks (one host sync each).
    min_step : float, default 0.1
        For exact OT (``reg=None``), the proximal step of each problem is at least
        ``min_step`` times its mean cost: exact OT does not depend on the scale of M, and
        with POT's ``inner_reg=1e-3`` on unit-scale costs the method stalls 10-70% above the
        exact cost. ``min_step=0`` uses ``inner_reg`` as given.
    backend : {'auto', 'generic', 'triton'}, default 'auto'
        'auto' takes a registered fast path when one suits the inputs: on CUDA torch tensors
        (float32, float16 or bfloat16) with Triton installed, the fused kernels of
        ``ot_batch.backends.triton`` for the Sinkhorn methods with ``grad`` 'envelope' or
        'detach' (whole solves on chip for n x m up to 64 x 64, else one fused pass over M
        per half-iteration, convergence tested on the device); on CPU arrays, a stabilised
        log-domain solver. 'generic' forces the generic solver; 'triton' requests the kernels
        and raises ValueError when they cannot take the problem (with
        ``TRITON_INTERPRET=1`` they also run, slowly, on CPU tensors). The kernels compute in
        float32 and return float32 values for half-precision costs.
    n_threads : int or 'max', optional, keyword-only
        Host threads of the exact solvers (one problem per thread); None or 'max': every
        core.

    Returns
    -------
    OTResult
        ``plan`` (B, n, m), ``value`` and ``value_linear`` (B,), ``potentials`` (log-scalings
        for 'log_sinkhorn' and 'proximal', scalings for 'sinkhorn', as POT), ``log["n_iter"]``
        and ``log["converged"]`` (B,), ``status``.

    Examples
    --------
    >>> import numpy as np, ot_batch
    >>> rng = np.random.default_rng(0)
    >>> M = ot_batch.dist_batch(rng.normal(size=(8, 10, 2)), rng.normal(size=(8, 12, 2)))
    >>> res = ot_batch.solve_batch(M, reg=0.5)
    >>> res.value.shape, bool(res.log["converged"].all())
    ((8,), True)
    >>> exact = ot_batch.solve_batch(M)  # reg=None: exact OT (network simplex on the CPU)
    >>> bool(np.abs(exact.log["gap"]).max() < 1e-12)
    True
    """
    pb = _validate.linear_problem(M, reg, a, b, max_iter, tol, method, inner_iter, inner_reg,
                                  reg_type, grad, unbalanced, potentials_init, solver,
                                  check_every, verbose, min_step, check_M=False,
                                  n_threads=n_threads)
    if pb.exact:
        from . import exact

        if backend not in ("auto", "generic"):
            raise ValueError(f"backend={backend!r} cannot solve exact OT (reg=None) for "
                             "solve_batch: choose its solver with method=")
        _validate.check_finite("M", pb.M, pb.xp, pb.ext)
        return exact.solve(pb)
    impl = pick("solve_batch", backend, _solve_generic, problem=pb)
    if impl is not _solve_fused:  # the fused path checks M in its final pass, for free
        _validate.check_finite("M", pb.M, pb.xp, pb.ext)
    return impl(pb)


def _points_ok(problem: _validate.SampleProblem) -> bool:
    pb = problem.linear
    if problem.metric not in ("sqeuclidean", "negdot"):
        return False
    if pb.grad == "implicit":
        # implicit second derivatives in X_a on the kernels (balanced, squared Euclidean);
        # derivatives in X_b, a or b go through the generic solver
        return (problem.metric == "sqeuclidean" and pb.unbalanced is None
                and _fusable(pb.ext, problem.X, pb.method, "envelope")
                and not any(getattr(t, "requires_grad", False)
                            for t in (problem.Y, pb.a, pb.b)))
    return _fusable(pb.ext, problem.X, pb.method, pb.grad)


@register("solve_sample_batch", "triton", accepts=_points_ok,
          auto=lambda problem: problem.X.is_cuda)
def _solve_points_fused(sp: _validate.SampleProblem) -> OTResult:
    """Fused Sinkhorn on point clouds: the cost is recomputed in tiles, never stored."""
    from .backends.triton import envelope, points_implicit
    from .backends.triton import solve as fused

    pb = sp.linear
    f = fused.from_points(sp)
    lin, plogp, rowsum, colsum, _ = f.stats
    if pb.grad in ("envelope", "implicit") and (sp.X.requires_grad or sp.Y.requires_grad):
        data = dict(f.inputs, u=f.lu, v=f.lv, rowsum=rowsum, colsum=colsum, dtype=sp.X.dtype)
        if pb.grad == "implicit":
            data["hvp"] = points_implicit.transport_hvp(
                sp.X.detach(), sp.Y.detach(), pb.a.detach(), pb.b.detach(), f.lu, f.lv,
                pb.reg, fused.DOT_PRECISION[sp.precision])
        lin = envelope.PointsLinear.apply(sp.X, sp.Y, lin, data)
    value, value_linear = _values_from_stats(pb, lin, plogp, rowsum, colsum,
                                             (pb.reg * f.lu, pb.reg * f.lv))
    if pb.grad == "implicit":  # only the value's derivatives are the implicit ones here
        value_linear = value_linear.detach()
    lazy = None
    if sp.lazy:
        lazy = LazyPlan(sp.X.detach(), sp.Y.detach(), sp.metric, sp.p, f.lu, f.lv, pb.reg,
                        _kl_shift(pb))
    plan = f.plan
    return _fused_result(pb, f, value, value_linear, plan, lazy)


def _kl_shift(pb: _validate.LinearProblem):
    """``(log a, log b)`` when they enter the kernel (KL reference, unbalanced), else None."""
    if pb.unbalanced is None or pb.reg_type != "kl":
        return None
    return safe_log(pb.xp, pb.ext.stop_gradient(pb.a)), safe_log(pb.xp, pb.ext.stop_gradient(pb.b))


def _lazy_from(sp: _validate.SampleProblem, res: OTResult) -> OTResult:
    """Drop the dense plan of a result for ``lazy=True``; keep what forms it on demand."""
    pb = sp.linear
    u, v = res.potentials
    if pb.method == "sinkhorn":
        u, v = safe_log(pb.xp, u), safe_log(pb.xp, v)
    res._lazy_plan = LazyPlan(pb.ext.stop_gradient(sp.X), pb.ext.stop_gradient(sp.Y),
                              sp.metric, sp.p, u, v, pb.reg, _kl_shift(pb))
    res._plan = None
    return res


def solve_sample_batch(X_a: Any, X_b: Any, reg: float | None = None, a: Any = None,
                       b: Any = None, metric: str = "sqeuclidean", p: float = 2,
                       max_iter: int | None = None, tol: float = 1e-5, method: str = "auto",
                       inner_iter: int = 1, inner_reg: float = 1e-3, reg_type: str = "entropy",
                       grad: str = "envelope", *, unbalanced: Any = None,
                       potentials_init: Any = None, verbose: bool = False,
                       solver: str | None = None, check_every: int = 10,
                       min_step: float = 0.1, lazy: bool = False,
                       backend: str = "auto", n_threads: int | str | None = None,
                       precision: str = "float32") -> OTResult:
    """Solve many OT problems given by point clouds (POT's ``ot.batch.solve_sample_batch``).

    Same as ``solve_batch(dist_batch(X_a, X_b, metric, p), reg, a, b, ...)``; see
    :func:`solve_batch` for every other argument. On CUDA torch tensors with Triton, the
    'sqeuclidean' and 'negdot' costs of the Sinkhorn methods are recomputed in tiles from the
    points at each pass and never stored (memory O(B (n + m) d)).

    Parameters
    ----------
    X_a : array, shape (B, n, d)
    X_b : array, shape (B, m, d)
    metric : {'sqeuclidean', 'euclidean', 'minkowski', 'kl', 'negdot'}, default 'sqeuclidean'
        See :func:`dist_batch`.
    p : float, default 2
    lazy : bool, default False, keyword-only
        Return no dense plan: ``res.plan`` is None and ``res.lazy_plan`` forms the plans of
        the problems it is indexed with (POT's ``ot.solve_sample(lazy=True)``). Values,
        potentials and gradients are computed as usual.
    backend : str, default 'auto'
        'auto', 'generic' (form the cost, generic solver) or 'triton' (the point-cloud kernel
        when it takes the metric and method, else the cost-matrix kernel).
        With ``grad='implicit'`` the kernels take balanced squared-Euclidean problems
        whose ``X_b``, ``a`` and ``b`` need no gradient: ``value`` then has first and
        second derivatives in ``X_a`` (double backward; the Hessian-vector products solve
        the implicit system by conjugate gradient on streaming plan products), while
        ``value_linear`` and ``plan`` carry none. Other implicit derivatives take the
        generic solver ('auto') or raise ('triton').
    precision : {'float32', 'tf32'}, default 'float32', keyword-only
        Products ``x . y`` of the point-cloud kernels (torch's ``allow_tf32`` switch):
        'float32' keeps float32 accuracy (each tensor-core product split in three TF32
        products); 'tf32' uses one TF32 product, up to 3x faster for large ``d``, with the
        scores ``x . y / reg`` off by about ``1e-3 |x| |y| / reg`` (``value_linear`` moves by
        ~1e-4 relative at reg = 0.05 on unit-cube data). The log-sum-exps are float32 in
        both. Other paths compute in the input's precision and ignore it.

    Returns
    -------
    OTResult

    Examples
    --------
    >>> import numpy as np, ot_batch
    >>> rng = np.random.default_rng(0)
    >>> res = ot_batch.solve_sample_batch(rng.normal(size=(4, 6, 3)), rng.normal(size=(4, 7, 3)),
    ...                                   reg=1.0)
    >>> res.plan.shape
    (4, 6, 7)
    """
    sp = _validate.sample_problem(X_a, X_b, reg, a, b, metric, p, max_iter, tol, method,
                                  inner_iter, inner_reg, reg_type, grad, unbalanced,
                                  potentials_init, solver, check_every, verbose, min_step, lazy,
                                  n_threads, precision)
    impl = None
    if backend == "auto":
        impl = pick("solve_sample_batch", "auto", None, problem=sp)
    elif backend != "generic":
        try:
            impl = pick("solve_sample_batch", backend, None, problem=sp)
        except ValueError:  # this metric or method: the cost-matrix path of that backend
            impl = None
    if impl is not None:
        return impl(sp)
    pb = sp.linear
    if sp.lazy and pb.exact:
        raise ValueError("lazy=True needs entropic regularisation (reg > 0): an exact plan is "
                         "sparse, not a function of potentials")
    M = dist_batch(sp.X, sp.Y, metric=sp.metric, p=sp.p)
    method = "auto" if pb.method == "exact" else pb.method
    res = solve_batch(M, pb.reg, pb.a, pb.b, pb.max_iter, pb.tol, method, pb.inner_iter,
                      pb.inner_reg, pb.reg_type, pb.grad, unbalanced=pb.unbalanced,
                      potentials_init=pb.potentials_init, verbose=pb.verbose,
                      check_every=pb.check_every, min_step=pb.min_step, backend=backend,
                      n_threads=pb.n_threads)
    return _lazy_from(sp, res) if sp.lazy else res
