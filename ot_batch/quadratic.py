"""Batched Gromov-Wasserstein, POT's ``ot.batch`` API: ``solve_gromov_batch``, losses, tensors."""
from __future__ import annotations

import functools
import warnings
from typing import Any

from . import _validate
from .backends import namespace, pick, register
from .backends import triton as _triton
from .result import OTResult, status_of
from .solvers import gromov, gromov_cg, gromov_cost, gromov_semirelaxed, gromov_unbalanced
from .solvers import gromov_grad
from .solvers.rounding import round_to_marginals as gromov_round

__all__ = ["solve_gromov_batch", "loss_quadratic_batch", "loss_quadratic_samples_batch",
           "tensor_batch", "pad_batch"]


def tensor_batch(a: Any, b: Any, Ca: Any, Cb: Any, symmetric: bool | None = True,
                 nx: Any = None, loss: str = "sqeuclidean", logits: bool | None = None) -> dict:
    r"""The matrices that define the Gromov-Wasserstein cost tensor (POT's ``tensor_batch``).

    For a loss :math:`\ell(x, y) = f_1(x) + f_2(y) - \langle h_1(x), h_2(y)\rangle`, the tensor
    :math:`\mathcal{L}_{ijkl} = \ell(C_{a,ij}, C_{b,kl})` never needs to be formed: its product
    with a plan is two matrix products per feature.

    Parameters
    ----------
    a, b : arrays, shapes (B, n) and (B, m), or None (uniform)
    Ca, Cb : arrays, shapes (B, n, n) and (B, m, m), or (B, n, n, d) and (B, m, m, d)
        Structure matrices, or edge features.
    symmetric : bool or None, default True
        When False the ``f`` parts are symmetrised (the gradient averages both orientations).
        None tests the inputs.
    nx : ignored
        POT's backend argument; the array library is read from the inputs.
    loss : {'sqeuclidean', 'kl'}, default 'sqeuclidean'
        POT's names 'square_loss', 'l2' and 'kl_loss' are accepted.
    logits : bool, optional
        For ``loss='kl'`` on edge features: ``Ca`` holds log-probabilities.

    Returns
    -------
    dict
        ``constC`` (B, n, m) for the marginals ``a`` and ``b``, ``fCa`` (B, n, n), ``fCb``
        (B, m, m), ``hCa`` (B, n, n, d) and ``hCb`` (B, m, m, d) (d = 1 for plain matrices),
        as POT lays them out.

    Examples
    --------
    >>> import numpy as np, ot_batch
    >>> C = np.random.default_rng(0).random((3, 5, 5)); C = C + C.transpose(0, 2, 1)
    >>> L = ot_batch.tensor_batch(None, None, C, C)
    >>> L["constC"].shape, L["hCa"].shape
    ((3, 5, 5), (3, 5, 5, 1))
    """
    q = _validate.quadratic_inputs(Ca, Cb, a, b, loss, symmetric, logits)
    xp = q.xp
    cost = gromov_cost.decompose(xp, q.Ca, q.Cb, q.loss, q.logits, q.symmetric)
    hCa, hCb = cost.hCa, cost.hCb
    if hCa.ndim == 3:
        hCa, hCb = hCa[..., None], hCb[..., None]
    else:
        hCa, hCb = xp.permute_dims(hCa, (0, 2, 3, 1)), xp.permute_dims(hCb, (0, 2, 3, 1))
    return {"constC": gromov_cost.const(xp, cost, q.a, q.b), "hCa": hCa, "hCb": hCb,
            "fCa": cost.fCa, "fCb": cost.fCb}


def _div_between_products(xp: Any, mu: Any, nu: Any, a: Any, b: Any, kind: str):
    """Divergence between the product measures ``mu x nu`` and ``a x b`` (POT's
    ``div_between_product_batch``): generalised KL, or half the squared L2 distance. The
    unbalanced GW solver's penalty, so that its values are these."""
    return gromov_unbalanced.penalty(xp, mu, nu, a, b, kind)


def loss_quadratic_batch(a: Any, b: Any, Ca: Any, Cb: Any, T: Any, M: Any = None,
                         alpha: Any = None, unbalanced: Any = None, unbalanced_type: str = "kl",
                         loss: str = "sqeuclidean", symmetric: bool | None = True,
                         nx: Any = None, logits: bool | None = None,
                         recompute_const: bool = False, log: bool = False):
    r"""(Fused) Gromov-Wasserstein loss of given plans (POT's ``loss_quadratic_batch``).

    .. math::
        (1 - \alpha) \langle M, T\rangle + \alpha \sum_{ijkl} \ell(C_{a,ij}, C_{b,kl})
        T_{ik} T_{jl} + \lambda_u D(T 1 \otimes T^\top 1, a \otimes b)

    Parameters
    ----------
    a, b : arrays, shapes (B, n) and (B, m), or None (uniform)
    Ca, Cb : arrays, shapes (B, n, n) and (B, m, m), or (B, n, n, d) and (B, m, m, d)
    T : array, shape (B, n, m)
        Plans.
    M : array, shape (B, n, m), optional
        Linear cost of fused GW.
    alpha : float or array (B,), optional
        Weight of the quadratic term; 0.5 when ``M`` is given, 1 otherwise.
    unbalanced : float or array (B,), optional
        Weight :math:`\lambda_u` of the marginal penalty ``D``.
    unbalanced_type : {'kl', 'l2'}, default 'kl'
    loss : {'sqeuclidean', 'kl'}, default 'sqeuclidean'
    symmetric : bool or None, default True
        Accepted for POT compatibility: the value does not depend on it.
    nx : ignored
    logits : bool, optional
        See :func:`tensor_batch`.
    recompute_const : bool, default False
        Take the constant term from the plan's marginals instead of ``a`` and ``b`` (exact for
        plans that do not meet them; always done when ``unbalanced`` is given).
    log : bool, default False
        Also return a dict with ``value``, ``value_quadratic``, ``value_linear`` and
        ``value_unbalanced``.

    Returns
    -------
    value : array, shape (B,)
    log : dict, only with ``log=True``

    Examples
    --------
    >>> import numpy as np, ot_batch
    >>> X = np.random.default_rng(0).normal(size=(2, 4, 2)); C = ot_batch.dist_batch(X, X)
    >>> T = np.repeat(np.eye(4)[None] / 4, 2, axis=0)
    >>> v = ot_batch.loss_quadratic_batch(None, None, C, C, T)  # identity plan: GW = 0
    >>> v.shape, bool(np.allclose(v, 0.0))
    ((2,), True)
    """
    q = _validate.quadratic_inputs(Ca, Cb, a, b, loss, False, logits, M=M, alpha=alpha, T=T)
    xp = q.xp
    batch, n, m = q.Ca.shape[0], q.Ca.shape[1], q.Cb.shape[1]
    if T is None or tuple(T.shape) != (batch, n, m):
        raise ValueError(f"T must have shape {(batch, n, m)}, got "
                         f"{None if T is None else tuple(T.shape)}")
    T = xp.astype(T, q.Ca.dtype) if T.dtype != q.Ca.dtype else T
    cost = gromov_cost.decompose(xp, q.Ca, q.Cb, q.loss, q.logits, True)
    recompute = recompute_const or unbalanced is not None
    r, c = (None, None) if recompute else (q.a, q.b)
    quad = xp.sum(gromov_cost.product(xp, cost, T, r, c) * T, axis=(1, 2))
    value = quad if q.M is None else (1 - q.alpha) * xp.sum(q.M * T, axis=(1, 2)) + q.alpha * quad
    out = {"value_quadratic": quad, "value_linear": None, "value_unbalanced": None}
    if q.M is not None:
        out["value_linear"] = xp.sum(q.M * T, axis=(1, 2))
    if unbalanced is not None:
        kind = _validate.choice("unbalanced_type", unbalanced_type, ("kl", "l2"))
        lam = _validate.unbalanced_weights(unbalanced, batch, q.Ca, xp, q.ext, strict=False)
        pen = _div_between_products(xp, xp.sum(T, axis=2), xp.sum(T, axis=1), q.a, q.b, kind)
        out["value_unbalanced"] = pen
        value = value + lam * pen
    out["value"] = value
    return (value, out) if log else value


def loss_quadratic_samples_batch(a: Any, b: Any, Ca: Any, Cb: Any, T: Any,
                                 loss: str = "sqeuclidean", symmetric: bool | None = None,
                                 nx: Any = None, logits: bool | None = None,
                                 recompute_const: bool = False, log: bool = False):
    """Deprecated alias of :func:`loss_quadratic_batch` (as in POT 0.9.7).

    Examples
    --------
    >>> import numpy as np, ot_batch, warnings
    >>> C = np.zeros((1, 2, 2)); T = np.full((1, 2, 2), 0.25)
    >>> with warnings.catch_warnings():
    ...     warnings.simplefilter("ignore")
    ...     ot_batch.loss_quadratic_samples_batch(None, None, C, C, T)
    array([0.])
    """
    warnings.warn("loss_quadratic_samples_batch is deprecated; use loss_quadratic_batch",
                  DeprecationWarning, stacklevel=2)
    return loss_quadratic_batch(a, b, Ca, Cb, T, loss=loss, symmetric=symmetric, logits=logits,
                                recompute_const=recompute_const, log=log)


def _starts(xp: Any, T0: Any, a: Any, b: Any, n_init: int, seed: int):
    """``T0`` and ``n_init - 1`` random plans around it, stacked along the batch.

    The noise is a fixed hash of the indices and ``seed`` computed on the arrays' device (no
    host transfer, traceable under ``jax.jit``); each noisy plan is rounded onto the marginals.
    All the random starts are formed and rounded at once (a few operations, whatever
    ``n_init``).
    """
    batch, n, m = T0.shape
    if n_init == 1:
        return T0
    dev, dt = getattr(T0, "device", None), T0.dtype
    i = xp.astype(xp.arange(n, device=dev), dt)[None, :, None]
    j = xp.astype(xp.arange(m, device=dev), dt)[None, None, :]
    # start k of problem p is row (k - 1) * batch + p of the random starts
    k = xp.astype(xp.arange(1, n_init, device=dev), dt)[:, None]
    p = xp.astype(xp.arange(batch, device=dev), dt)[None, :]
    shift = xp.reshape((k + 0 * p + 31.0 * seed) * 0.6180339, (-1, 1, 1))
    p = xp.reshape(p + 0 * k, (-1, 1, 1))
    h = xp.sin(i * 12.9898 + j * 78.233 + p * 3.7719 + shift) * 43758.5453
    u = h - xp.floor(h)  # uniform-looking in [0, 1)
    rep = n_init - 1
    noisy = xp.concat([T0] * rep, axis=0) * xp.exp(4.0 * (u - 0.5))
    rounded = gromov_round(xp, noisy, xp.concat([a] * rep, axis=0),
                           xp.concat([b] * rep, axis=0))
    return xp.concat([T0, rounded], axis=0)


def _best(xp: Any, values: Any, n_init: int, *arrays: Any):
    """Per problem, the start with the lowest value: ``(index, arrays picked from it)``."""
    batch = values.shape[0] // n_init
    best = xp.argmin(xp.reshape(values, (n_init, batch)), axis=0)
    rows = best * batch + xp.arange(batch, device=getattr(values, "device", None))
    return best, [x[rows] for x in arrays]  # (one gather each; xp.take adds index checks)


def _kernels_run(ext: Any, like: Any) -> bool:
    """Triton can run on these arrays: torch on CUDA (or the interpreter in the tests), or
    CuPy (viewed as torch tensors through DLPack)."""
    if ext.name == "torch":
        return _triton.available(like)
    if ext.name == "cupy" and _triton.available():
        import torch
        return torch.cuda.is_available()
    return False


def _fused_inner_ok(ext: Any, like: Any, grad: str) -> bool:
    """float32 torch or CuPy arrays where Triton runs, no graph through the iterations (the
    kernel has no backward), and chunks of columns that fit the kernel's tile."""
    from .backends.triton import sinkhorn_inner
    return (grad != "autodiff" and like.dtype.itemsize == 4 and _kernels_run(ext, like)
            and sinkhorn_inner.fits(like.shape[1]))


@register("gromov_inner", "triton", accepts=_fused_inner_ok)
def _fused_inner(xp, ext, cost, a, b, reg, init, *, grad, max_iter, tol, check_every, omega):
    """:func:`ot_batch.solvers.gromov.inner_generic` as one Triton launch per step."""
    from .backends.triton import sinkhorn_split
    from .backends.triton._dlpack import from_torch, to_torch
    logK = -cost / reg
    u, v, n_iter = (from_torch(t, ext) for t in sinkhorn_split.solve(
        *(to_torch(x) for x in (logK, a, b, init[0], init[1])), max_iter=max_iter, tol=tol,
        check_every=check_every, omega=omega)[:3])
    return xp.exp(logK + u[:, :, None] + v[:, None, :]), u, v, n_iter


def _whole_solve_ok(ext: Any, like: Any, grad: str, cost: Any, verbose: bool) -> bool:
    """Plain symmetric structure matrices of up to 64 nodes, otherwise as the fused inner."""
    from .backends.triton import gromov_small
    return (_fused_inner_ok(ext, like, grad) and not verbose and cost.symmetric
            and cost.hCa.ndim == 3 and gromov_small.fits(cost.hCa.shape[1], cost.hCb.shape[1]))


@register("gromov_solve", "triton", accepts=_whole_solve_ok)
def _whole_solve(xp, ext, cost, M, alpha, a, b, reg, T_init, *, max_iter, tol, max_iter_inner,
                 tol_inner, grad, omega, check_every_inner, verbose, inner=None,
                 finish_steps=0):
    """:func:`ot_batch.solvers.gromov.solve` for small problems as one Triton launch."""
    from .backends.triton import gromov_small
    from .backends.triton._dlpack import from_torch, to_torch
    sg = ext.stop_gradient
    cost = cost.map(sg)
    M, alpha, a, b, T_init = (None if x is None else sg(x) for x in (M, alpha, a, b, T_init))
    al3 = alpha[:, None, None]
    const = gromov_cost.const(xp, cost, a, b)
    lin = xp.zeros_like(const) if M is None else (1 - al3) * M
    T, u, v, n_iter, n_inner, err, conv = gromov_small.solve(*(to_torch(x) for x in (
        cost.hCa, cost.hCb, al3 * const + lin, 2 * al3 * const + lin, alpha, a, b, T_init)),
        reg=reg, max_iter=max_iter, tol=tol, max_iter_inner=max_iter_inner,
        tol_inner=tol_inner, omega=omega, check_every=check_every_inner,
        finish_steps=finish_steps)
    dt = to_torch(a).dtype
    T, u, v, n_iter, n_inner, err, conv = (from_torch(t, ext) for t in (
        T.to(dt), u.to(dt), v.to(dt), n_iter.long(), n_inner, err.to(dt), conv))
    return gromov.GromovOutput(T, (u, v), n_iter, conv, err, n_inner, finished=True)


def _relaxed_solver(xp: Any, opts: dict, unbalanced: Any, n_init: int):
    """The proximal solver of a semi-relaxed or unbalanced problem, options bound
    (``unbalanced`` repeated for the ``n_init`` starts); None for a balanced one."""
    kind = opts["unbalanced_type"]
    if kind == "semirelaxed":
        return functools.partial(gromov_semirelaxed.solve,
                                 finish_steps=opts["finish_steps_relaxed"])
    if kind is None:
        return None
    return functools.partial(gromov_unbalanced.solve, kind=kind,
                             unbalanced=xp.concat([unbalanced] * n_init, axis=0))


def _exact_lp(G: Any, a: Any, b: Any):
    """Plan and duals of ``min <G, P>`` over ``Pi(a, b)`` (exact OT, host or GPU)."""
    from .linear import solve_batch
    res = solve_batch(G, a=a, b=b, reg=None, grad="detach")
    return res.plan, res.potentials[0], res.potentials[1]


def _on_accelerator(ext: Any, x: Any) -> bool:
    """Arrays whose loop checks cost a host synchronisation (CUDA torch, CuPy)."""
    return ext.name == "cupy" or bool(getattr(x, "is_cuda", False))


def _solve_arrays(Ca, Cb, a, b, M, alpha, T_init, static, unbalanced=None):
    """Solve and form the values (compiled once per shape and options under JAX).

    ``unbalanced``: the (B,) marginal-penalty weights of 'kl' and 'l2' problems."""
    opts = dict(static)
    xp, ext = namespace(Ca=Ca)
    grad, K = opts["grad"], opts["n_init"]
    if grad == "detach":
        Ca, Cb, a, b, M, alpha = (None if x is None else ext.stop_gradient(x)
                                  for x in (Ca, Cb, a, b, M, alpha))
    if T_init is None:
        mass = xp.sqrt(xp.sum(a, axis=1) * xp.sum(b, axis=1))
        T_init = a[:, :, None] * b[:, None, :] / mass[:, None, None]
    if K > 1:  # every start is one more problem of the batch
        T_init = _starts(xp, ext.stop_gradient(T_init), a, b, K, opts["seed"])
        Ca, Cb, a, b, alpha = (xp.concat([x] * K, axis=0) for x in (Ca, Cb, a, b, alpha))
        M = None if M is None else xp.concat([M] * K, axis=0)
    cost = gromov_cost.decompose(xp, Ca, Cb, opts["loss"], opts["logits"], opts["symmetric"])
    # backend="triton": the whole-solve kernel where it fits, else the fused inner solves
    solver = pick("gromov_solve", "auto" if opts["backend"] == "triton" else opts["backend"],
                  gromov.solve, ext=ext, like=Ca, grad=grad, cost=cost, verbose=opts["verbose"])
    # semi-relaxed and unbalanced problems: their own proximal steps, the same call
    relaxed = _relaxed_solver(xp, opts, unbalanced, K)
    if relaxed is not None:
        solver = relaxed
    elif solver is _whole_solve:  # the kernel also rounds and finishes the plans
        solver = functools.partial(_whole_solve, finish_steps=opts["finish_steps"])
    if _on_accelerator(ext, Ca) and getattr(solver, "func", solver) is not _whole_solve:
        # a convergence check is a host synchronisation: one every few steps (each problem
        # still stops at its own step)
        solver = functools.partial(solver, check_every=4)
    out = solver(
        xp, ext, cost, M, alpha, a, b, opts["reg"], T_init, max_iter=opts["max_iter"],
        tol=opts["tol"], max_iter_inner=opts["max_iter_inner"], tol_inner=opts["tol_inner"],
        grad=grad, omega=opts["overrelaxation"], check_every_inner=opts["check_every"],
        verbose=opts["verbose"],
        inner=pick("gromov_inner", opts["backend"], gromov.inner_generic, ext=ext, like=Ca,
                   grad=grad))
    T = out.plan if grad == "autodiff" else ext.stop_gradient(out.plan)
    if opts["finish_steps"] and not out.finished:
        # autodiff differentiates through the finishing steps too (every input live)
        sg = (lambda x: x) if grad == "autodiff" else ext.stop_gradient
        T = gromov_cg.finish(xp, cost.map(sg), None if M is None else sg(M), sg(alpha),
                             sg(a), sg(b), T, opts["finish_steps"])
    duals = None
    if opts["cg_steps"]:
        sg = ext.stop_gradient
        T, duals = gromov_cg.polish(
            xp, cost.map(sg), None if M is None else sg(M), sg(alpha), sg(a), sg(b), sg(T),
            opts["cg_steps"], _exact_lp, on_host=None if ext.name == "jax" else ext.to_numpy)
    quad = gromov_cost.value(xp, cost, T)
    lin = xp.zeros_like(quad) if M is None else xp.sum(M * T, axis=(1, 2))
    value_quad, value_linear = alpha * quad, (1 - alpha) * lin
    value = value_quad + value_linear
    if opts["unbalanced_type"] in ("kl", "l2"):  # the marginal penalty, before picking starts
        value = value + xp.concat([unbalanced] * K, axis=0) * _div_between_products(
            xp, xp.sum(T, axis=2), xp.sum(T, axis=1), a, b, opts["unbalanced_type"])
    u, v = out.potentials
    if (grad == "envelope" and opts.get("unbalanced_type") is None
            and gromov_grad.differentiable(ext, a, b)):  # zeros: d value / d (a, b)
        # the duals of the last exact linear program after cg_steps, else the last proximal
        # step's potentials
        pu, pv, preg = (u, v, opts["reg"]) if duals is None else (*duals, 1.0)
        value = value + gromov_grad.weight_terms(xp, ext, a, b, pu, pv, preg)
    arrays = (value, value_linear, value_quad, T, u, v, out.n_iter, out.converged, out.err,
              out.n_iter_inner)
    best = xp.zeros(value.shape, dtype=xp.int32, device=getattr(value, "device", None))
    if K > 1:
        best, arrays = _best(xp, ext.stop_gradient(value), K, *arrays)
    value, value_linear, value_quad, T, u, v, n_iter, converged, err, n_inner = arrays
    return (value, value_linear, value_quad, T, (u, v), n_iter, converged, err, n_inner, best)


def solve_gromov_batch(Ca: Any, Cb: Any, reg: float = 1e-2, a: Any = None, b: Any = None,
                       loss: str = "sqeuclidean", symmetric: bool | None = None, M: Any = None,
                       alpha: Any = None, T_init: Any = None, max_iter: int = 50,
                       tol: float = 1e-5, max_iter_inner: int = 50, tol_inner: float = 1e-5,
                       grad: str = "envelope", logits: bool | None = None, *,
                       overrelaxation: float = 1.5, n_init: int = 1, seed: int = 0,
                       finish_steps: int = 2, cg_steps: int = 0, check_every: int = 5,
                       verbose: bool = False, backend: str = "auto", unbalanced: Any = None,
                       unbalanced_type: str = "kl") -> OTResult:
    r"""Solve many (fused) Gromov-Wasserstein problems at once (POT's ``solve_gromov_batch``).

    For each problem of the batch,

    .. math::
        \min_{T \in \Pi(a, b)} (1 - \alpha) \langle M, T \rangle
        + \alpha \sum_{ijkl} \ell(C_{a,ij}, C_{b,kl}) T_{ik} T_{jl}

    by proximal steps :math:`T_{k+1} = \arg\min_{T \in \Pi(a, b)} \langle G_k, T\rangle +
    \mathrm{reg}\, KL(T \| T_k)` with :math:`G_k` the gradient at :math:`T_k`, each an entropic
    OT problem solved by log-domain Sinkhorn (see :mod:`ot_batch.solvers.gromov`). GW is not
    convex: the result is a local minimum, which depends on ``T_init``.

    ``unbalanced_type='semirelaxed'`` keeps only :math:`T 1 = a` (semi-relaxed GW, POT's
    ``entropic_semirelaxed_(fused_)gromov_wasserstein``): each proximal step is then a row-wise
    softmax (:mod:`ot_batch.solvers.gromov_semirelaxed`). ``unbalanced=lambda`` replaces the
    constraint by the penalty :math:`\lambda D(T 1 \otimes T^\top 1 \,|\, a \otimes b)` (KL or
    half squared L2; fused unbalanced GW, the objective of :func:`loss_quadratic_batch` with
    ``unbalanced``): each step is then an unbalanced Sinkhorn problem (KL) or a closed-form
    mirror-descent step (L2), see :mod:`ot_batch.solvers.gromov_unbalanced`. As for balanced
    GW, ``reg`` is a proximal step and ``value`` the unregularised objective.

    Graphs of different sizes go in one batch by padding: give the missing nodes zero weight
    (:func:`pad_batch` does it). Zero-weight nodes receive no mass, so the plan, the value and
    the potentials of the real nodes are those of the unpadded problem.

    Parameters
    ----------
    Ca, Cb : arrays, shapes (B, n, n) and (B, m, m), or (B, n, n, d) and (B, m, m, d)
        Structure matrices (or POT's edge features), NumPy, PyTorch, JAX or CuPy.
    reg : float, default 1e-2
        Weight of the KL proximal term, > 0. Larger is smoother and slower to move.
    a, b : arrays, shapes (B, n) and (B, m), optional
        Node weights; uniform when omitted. Equal mass per problem when balanced.
        Semi-relaxed, only the zero entries of ``b`` are used (padded target nodes get no
        mass); its values are ignored, as POT's semi-relaxed solvers have no ``b``.
    loss : {'sqeuclidean', 'kl'}, default 'sqeuclidean'
        Also POT's 'square_loss', 'l2' and 'kl_loss'. 'kl' on plain matrices is POT's
        ``kl_loss`` :math:`x \log(x / y) - x + y`; on edge features, POT ``ot.batch``'s KL
        between feature vectors.
    symmetric : bool or None, default None
        None tests ``Ca`` and ``Cb``; True is checked; False uses the general gradient.
    M : array, shape (B, n, m), optional
        Feature cost of fused GW.
    alpha : float or array (B,), optional
        Weight of the quadratic term: 0.5 by default when ``M`` is given (POT's documented
        default), and ``M`` is required with it.
    T_init : array, shape (B, n, m), optional
        Starting plans; :math:`a b^\top` (scaled to the mass) by default. Semi-relaxed,
        their rows are rescaled to ``a``.
    max_iter : int, default 50
        Most proximal steps of any problem.
    tol : float, default 1e-5
        A problem stops when the relative change of its objective, or the total variation of
        its plan's change (relative to its mass), falls below ``tol``.
    max_iter_inner : int, default 50
        Most Sinkhorn iterations per proximal step.
    tol_inner : float, default 1e-5
        Sinkhorn's threshold on the L2 error of the first marginal.
    grad : {'envelope', 'autodiff', 'detach'}, default 'envelope'
        'envelope': gradients of the values with respect to ``Ca``, ``Cb``, ``M`` and
        ``alpha`` at the solution plan held fixed, and (of ``value``, balanced problems) with
        respect to ``a`` and ``b``: the centred duals of the linearised problem at the plan,
        ``reg`` times the log-scalings of the last proximal step, minus their mean over the
        nodes of positive weight (0 on zero-weight nodes), as POT's
        ``ot.gromov.gromov_wasserstein2`` gives them (see
        :mod:`ot_batch.solvers.gromov_grad`); 'autodiff': through every step, the plan
        included; 'detach': none.
    logits : bool, optional
        For ``loss='kl'`` on edge features: ``Ca`` holds log-probabilities.
    overrelaxation : float in [1, 2), default 1.5, keyword-only
        Over-relaxation of the inner Sinkhorn updates (1 is plain Sinkhorn).
    n_init : int, default 1, keyword-only
        Starting plans per problem: ``T_init`` (or :math:`a b^\top`) and ``n_init - 1``
        random plans around it, solved together as one larger batch; each problem keeps the
        start that ends lowest. GW has many local minima (reflections and rotations of point
        clouds, automorphisms of graphs): a few starts avoid most bad ones, at
        ``n_init`` times the work.
    seed : int, default 0, keyword-only
        Seed of the random starts: a hash of the indices, so a run is reproducible for the
        same inputs, dtype and device (float32 and float64 give different starts).
    finish_steps : int, default 2, keyword-only
        Conditional-gradient steps at the end, each towards the plan that puts every row's
        mass on its largest entry, with exact line search (they never increase the
        objective; 0 turns them off). Proximal steps reach a vertex slowly; these finish it.
    cg_steps : int, default 0, keyword-only
        Then up to ``cg_steps`` steps of POT's conditional gradient (``ot.solve_gromov``'s
        solver) from that plan: each direction is the exact OT plan (:func:`solve_batch` with
        ``reg=None``) for the gradient at the current plan, with exact line search; the loop
        ends when no problem moves. They never increase the objective and end at a
        stationary point of the linearised problem, where proximal steps stop near one; with
        ``grad='envelope'`` the gradients in ``a`` and ``b`` are then the exact duals of the
        last linear program. Balanced problems; not with ``grad='autodiff'``.
    check_every : int, default 5, keyword-only
        Inner iterations between convergence checks.
    verbose : bool, default False, keyword-only
        Print the outer errors at each step.
    backend : str, default 'auto', keyword-only
        'auto' uses the Triton kernels for float32 torch tensors and CuPy arrays on a GPU
        (grad other than 'autodiff', balanced problems): up to 64 nodes a side with plain
        symmetric structure matrices, the whole solve (every proximal step and its Sinkhorn
        iterations) is one launch, one program per problem, plan and potentials on chip
        (``backends/triton/gromov_small.py``); otherwise each step's Sinkhorn solve is one
        launch (``backends/triton/sinkhorn_inner.py``) and the loop checks convergence every
        4 steps (each problem still stops at its own step). 'generic' forces the array-API
        solver; 'triton' requires the kernels.
    unbalanced : float or array (B,), optional, keyword-only
        Weight :math:`\lambda > 0` of the marginal penalty (POT ``ot.solve_gromov``'s
        ``unbalanced``; its fused unbalanced GW has ``reg_marginals = unbalanced / (2 alpha)``).
        None: balanced, or semi-relaxed with ``unbalanced_type='semirelaxed'``.
    unbalanced_type : {'kl', 'l2', 'semirelaxed'}, default 'kl', keyword-only
        Case-insensitive (POT's 'KL' works). 'kl' and 'l2' need ``unbalanced``;
        'semirelaxed' takes none. 'partial' (partial GW) raises NotImplementedError.
        ``finish_steps`` applies to balanced and semi-relaxed problems; unbalanced ones end
        with their last proximal step.

    Returns
    -------
    OTResult
        ``plan`` (B, n, m), meeting ``a`` and ``b`` to round-off; ``value``;
        ``value_linear`` (weighted by ``1 - alpha``) and ``value_quad`` (weighted by
        ``alpha``), as ``ot.solve_gromov`` reports them; ``potentials``: the log-scalings of
        the last proximal step; ``log["n_iter"]``, ``log["converged"]`` (B,),
        ``log["n_iter_inner"]`` (Sinkhorn iterations of each problem), ``log["err"]`` and
        ``log["init"]`` (the start kept, with ``n_init > 1``). Semi-relaxed: ``T 1 = a`` to
        round-off, ``potentials`` the row log-normalisers and zeros, no inner iterations.
        Unbalanced: ``value`` includes :math:`\lambda D`, also in
        ``log["value_unbalanced"]`` (:math:`D`, unweighted); ``potentials`` from the last
        Sinkhorn (KL; zeros for L2).

    Examples
    --------
    >>> import numpy as np, ot_batch
    >>> rng = np.random.default_rng(0)
    >>> X = rng.normal(size=(8, 10, 2)); Y = X + 0.1 * rng.normal(size=(8, 10, 2))
    >>> res = ot_batch.solve_gromov_batch(ot_batch.dist_batch(X, X), ot_batch.dist_batch(Y, Y),
    ...                                   reg=1.0, tol=1e-3)
    >>> res.value.shape, res.log["n_iter"].shape
    ((8,), (8,))
    """
    if not isinstance(backend, str):
        raise TypeError(f"backend must be a string, got {type(backend).__name__}")
    pb = _validate.gromov_problem(Ca, Cb, reg, a, b, loss, symmetric, M, alpha, T_init, max_iter,
                                  tol, max_iter_inner, tol_inner, grad, logits, overrelaxation,
                                  check_every, verbose, n_init, seed, finish_steps, unbalanced,
                                  unbalanced_type)
    kind = pb.unbalanced_type
    cg_steps = _validate.positive_int("cg_steps", cg_steps, minimum=0)
    if cg_steps and (kind is not None or pb.grad == "autodiff"):
        raise ValueError("cg_steps applies to balanced problems without grad='autodiff', got "
                         f"unbalanced_type={kind!r}, grad={pb.grad!r}")
    if kind is not None and backend == "triton":
        raise ValueError(f"backend='triton' solves balanced GW only, not unbalanced_type="
                         f"{kind!r}; use backend='auto' or 'generic'")
    q, xp, ext = pb.quad, pb.quad.xp, pb.quad.ext
    static = (("loss", q.loss), ("logits", q.logits), ("symmetric", q.symmetric),
              ("reg", pb.reg), ("max_iter", pb.max_iter), ("tol", pb.tol),
              ("max_iter_inner", pb.max_iter_inner), ("tol_inner", pb.tol_inner),
              ("grad", pb.grad), ("overrelaxation", pb.overrelaxation),
              ("check_every", pb.check_every), ("verbose", pb.verbose),
              ("n_init", pb.n_init), ("seed", pb.seed), ("finish_steps", pb.finish_steps),
              ("cg_steps", cg_steps), ("backend", backend))
    # the balanced finish rounds onto a and b: semi-relaxed plans get their own, unbalanced
    # ones none
    static = static + (("unbalanced_type", kind),
                       ("finish_steps_relaxed", pb.finish_steps if kind == "semirelaxed" else 0))
    if kind is not None:
        static = tuple((k, 0 if k == "finish_steps" else v) for k, v in static)
    solve = ext.compile(_solve_arrays)
    (value, value_linear, value_quad, plan, potentials, n_iter, converged, err, n_inner,
     best) = solve(q.Ca, q.Cb, q.a, q.b, q.M, q.alpha, pb.T_init, static=static,
                   unbalanced=pb.unbalanced)
    log = {"n_iter": n_iter, "converged": converged, "err": err, "n_iter_inner": n_inner,
           "init": best}
    if kind in ("kl", "l2"):
        log["value_unbalanced"] = _div_between_products(
            xp, xp.sum(plan, axis=2), xp.sum(plan, axis=1), q.a, q.b, kind)
    return OTResult(potentials=potentials, value=value, value_linear=value_linear,
                    value_quad=value_quad, plan=plan, log=log, backend=xp,
                    status=status_of(converged, ext.to_numpy))


def pad_batch(matrices: Any, weights: Any = None, size: int | None = None):
    """Stack structure matrices of different sizes into one batch, padding with empty nodes.

    Padded rows and columns are zero and padded nodes get weight zero, so
    :func:`solve_gromov_batch` on the padded batch returns, on the real nodes, the plan and
    value of each unpadded problem (the padded rows and columns of the plan are zero).

    Parameters
    ----------
    matrices : sequence of arrays, shapes (n_i, n_i) or (n_i, n_i, d)
        One library, one dtype.
    weights : sequence of arrays (n_i,), optional
        Node weights; uniform (1 / n_i) when omitted.
    size : int, optional
        Padded size; the largest n_i by default.

    Returns
    -------
    C : array, shape (B, size, size) or (B, size, size, d)
    w : array, shape (B, size)

    Examples
    --------
    >>> import numpy as np, ot_batch
    >>> C, w = ot_batch.pad_batch([np.ones((2, 2)), np.ones((3, 3))])
    >>> C.shape, w[0].tolist()
    ((2, 3, 3), [0.5, 0.5, 0.0])
    """
    matrices = list(matrices)
    if not matrices:
        raise ValueError("matrices must hold at least one matrix")
    xp, _ = namespace(**{f"matrices[{i}]": C for i, C in enumerate(matrices)})
    sizes = [C.shape[0] for C in matrices]
    for i, C in enumerate(matrices):
        if C.ndim not in (2, 3) or C.shape[0] != C.shape[1]:
            raise ValueError(f"matrices[{i}] must have shape (n, n) or (n, n, d), "
                             f"got {tuple(C.shape)}")
        if C.ndim != matrices[0].ndim or C.shape[2:] != matrices[0].shape[2:]:
            raise ValueError("all matrices must have the same number of edge features")
    size = max(sizes) if size is None else _validate.positive_int("size", size)
    if size < max(sizes):
        raise ValueError(f"size={size} is smaller than the largest matrix ({max(sizes)})")
    if weights is None:
        weights = [xp.ones((k,), dtype=C.dtype, device=getattr(C, "device", None)) / k
                   for k, C in zip(sizes, matrices)]
    weights = list(weights)
    if len(weights) != len(matrices):
        raise ValueError(f"weights must hold {len(matrices)} arrays, got {len(weights)}")
    Cs, ws = [], []
    for i, (C, w) in enumerate(zip(matrices, weights)):
        k = sizes[i]
        if tuple(w.shape) != (k,):
            raise ValueError(f"weights[{i}] must have shape ({k},), got {tuple(w.shape)}")
        dev = getattr(C, "device", None)
        right = xp.zeros((k, size - k) + tuple(C.shape[2:]), dtype=C.dtype, device=dev)
        below = xp.zeros((size - k, size) + tuple(C.shape[2:]), dtype=C.dtype, device=dev)
        Cs.append(xp.concat([xp.concat([C, right], axis=1), below], axis=0))
        ws.append(xp.concat([xp.astype(w, C.dtype),
                             xp.zeros((size - k,), dtype=C.dtype, device=dev)]))
    return xp.stack(Cs), xp.stack(ws)
