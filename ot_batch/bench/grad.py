"""``python -m ot_batch.bench grad``: the price of derivatives, Hessians and gradients.

Workloads (timings and ratios reported, nothing asserted):

* ``hessian``: OTT-JAX's "Sinkhorn Divergence Hessians" tutorial. Two clouds of 17 and 15
  points in 3-D with random weights (``jax.random.key(0)`` split 7 ways, as the tutorial),
  epsilon 0.05 x the std of the squared-Euclidean costs, the same explicit value for every
  engine. Each engine times ``jax.jit(jax.hessian(loss, argnums=k))`` (k = 0: the weights a,
  k = 1: the points x) after a warm-up, compile time apart, median run time reported; torch
  engines time ``torch.func.hessian`` (``torch.autograd.functional.hessian`` when it fails,
  the row says which). Engines: OTT-JAX's ``sinkhorn_divergence`` with ``ImplicitDiff()`` or
  unrolled (``implicit_diff=None``), ``use_danskin=False``; ot_batch's
  ``sinkhorn_divergence_batch`` with ``grad='implicit'`` or ``'autodiff'`` on JAX and torch.
  Stopping as OTT's defaults: L1 marginal error 1e-3 (``--tol``), at most 2000 iterations.
  Under ``jax.jit`` ot_batch's unrolled loop is a fixed-length scan of ``max_iter`` steps:
  by default as many as its own jitted loop needs to reach ``--tol`` (a multiple of 10: the
  same stopping rule as OTT's unrolled loop, which runs until its error is below 1e-3);
  ``--unroll ott`` gives it OTT's count instead (the largest of OTT's three problems'
  ``n_iters``; fewer, as OTT's alternating updates converge faster than the averaged
  symmetric ones, and without epsilon-scaling under jit) and ``--unroll own,ott`` both. The
  rows give each engine's forward iterations to the tolerance. Every Hessian is compared with
  ott_implicit's (the first engine that ran when OTT did not): max |H - H_ref| / max |H_ref|,
  both projected on the zero-sum space (``Q H Q``, ``Q = I - 11^T/n``) for the weights.
* ``grad_vs_forward``: one problem, n = m = 10,000 points (``--n``; 500 with ``--quick``)
  uniform in the unit cube of R^3, uniform weights, reg = 0.05 x the exact std of
  ``|x - y|^2`` for such points (``sqrt(7 d / 180)``: reg = 0.0171 in 3-D), tol 1e-3, at
  most 2000 iterations. For ``sinkhorn_divergence_batch`` and ``solve_sample_batch``, on
  torch (CUDA when present) and JAX (``jax.jit`` of the value, or of ``jax.value_and_grad``):
  the value alone (``grad='detach'``), value and gradient in X_a and a with
  ``grad='envelope'`` and with ``grad='implicit'``; the ratios gradient / value. Mode
  ``hvp``: a Hessian-vector product in X_a with ``grad='implicit'`` (forward, gradient with
  its graph, then the gradient of ``<grad, V>`` for a fixed random V; JAX: ``jax.jvp`` of
  ``jax.grad``), whole, against the value alone.

Each row is printed as JSON as soon as it is measured; ``--out`` gets ``grad.json`` and
``grad.md``. A missing library (OTT-JAX, torch, JAX) skips its engines with a note.
"""
from __future__ import annotations

import argparse
import gc
import json
import math
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from .timing import measure, time_once

WORKLOADS = ("hessian", "grad_vs_forward")
HESS_ENGINES = ("ott_implicit", "ott_unrolled", "ot_batch_jax_implicit",
                "ot_batch_jax_unrolled", "ot_batch_torch_implicit", "ot_batch_torch_unrolled")
LIBS = ("torch", "jax")
FUNCS = ("divergence", "solve_sample")
MODES = {"forward": "detach", "envelope": "envelope", "implicit": "implicit",
         "hvp": "implicit"}
REL_EPS = 0.05
CHECK_EVERY = 10


def _brief(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}".strip().splitlines()[0]
    return text[:200]


def _emit(rows: list, row: dict) -> None:
    """Keep ``row`` and print it at once: a run cut short still shows what it measured."""
    print(json.dumps(row), flush=True)
    rows.append(row)


def _missing(lib: str) -> str | None:
    """Why ``lib`` cannot run here, or None."""
    try:
        if lib == "ott":
            import ott  # noqa: F401
            from ott.tools import sinkhorn_divergence  # noqa: F401
        elif lib == "jax":
            import jax  # noqa: F401
        elif lib == "torch":
            import torch  # noqa: F401
    except ImportError as exc:
        return f"{lib} is not installed ({_brief(exc)})"
    return None


def _engine_lib(engine: str) -> str:
    return "ott" if engine.startswith("ott") else engine.split("_")[2]


def _torch_device() -> str:
    import torch
    return "cuda" if torch.cuda.is_available() else "cpu"


def _torch_sync() -> Callable[[], None] | None:
    import torch
    return torch.cuda.synchronize if torch.cuda.is_available() else None


def _jax_device() -> str:
    import jax
    return str(jax.devices()[0])


def _round_up(k: int, step: int = CHECK_EVERY) -> int:
    return max(step, -(-int(k) // step) * step)


# ---------------------------------------------------------------------------- hessian

def tutorial_data(x64: bool = False):
    """``a, x, b, y`` (NumPy) of OTT-JAX's Hessians tutorial: 17 and 15 points in 3-D."""
    dtype = np.float64 if x64 else np.float32
    if _missing("jax") is None:
        import jax
        import jax.numpy as jnp

        n, m, dim = 17, 15, 3
        rngs = jax.random.split(jax.random.key(0), 7)
        x = jax.random.uniform(rngs[0], (n, dim))
        y = jax.random.uniform(rngs[1], (m, dim))
        a = jax.random.uniform(rngs[2], (n,)) + 0.1
        b = jax.random.uniform(rngs[3], (m,)) + 0.1
        a, b = a / jnp.sum(a), b / jnp.sum(b)
        out = [np.asarray(v) for v in (a, x, b, y)]
    else:  # same shapes from NumPy (the tutorial's values need JAX's generator)
        print("# jax is not installed: the hessian clouds come from NumPy's generator",
              flush=True)
        rng = np.random.default_rng(0)
        x, y = rng.random((17, 3)), rng.random((15, 3))
        a, b = rng.random(17) + 0.1, rng.random(15) + 0.1
        out = [a / a.sum(), x, b / b.sum(), y]
    return tuple(v.astype(dtype) for v in out)


def _tutorial_eps(x: np.ndarray, y: np.ndarray) -> float:
    """0.05 x the std of the squared-Euclidean costs, rounded to the data's dtype."""
    C = np.sum((x[:, None, :].astype(np.float64) - y[None, :, :]) ** 2, axis=-1)
    return float(x.dtype.type(REL_EPS * C.std()))


def _ott_loss(y, b, eps, implicit: bool):
    from ott.geometry import pointcloud
    from ott.solvers.linear import implicit_differentiation as imp_diff
    from ott.tools import sinkhorn_divergence

    def loss(a, x):
        div, _ = sinkhorn_divergence.sinkhorn_divergence(
            pointcloud.PointCloud, x, y, a=a, b=b, epsilon=eps,
            solve_kwargs={"implicit_diff": imp_diff.ImplicitDiff() if implicit else None,
                          "use_danskin": False})
        return div
    return loss


def _ott_iters(a, x, y, b, eps) -> tuple[list[int], list[bool]]:
    """OTT's iteration counts (three problems) and convergence, forward pass, defaults."""
    import jax
    from ott.geometry import pointcloud
    from ott.tools import sinkhorn_divergence

    @jax.jit
    def fwd(a, x):
        _, out = sinkhorn_divergence.sinkhorn_divergence(
            pointcloud.PointCloud, x, y, a=a, b=b, epsilon=eps,
            solve_kwargs={"implicit_diff": None, "use_danskin": False})
        return out.n_iters, out.converged
    its, conv = fwd(a, x)
    return [int(i) for i in its], [bool(c) for c in conv]


def _ours_loss(y, b, eps, grad: str, tol: float, max_iter: int):
    import ot_batch

    def loss(a, x):
        return ot_batch.sinkhorn_divergence_batch(x[None], y[None], eps, a[None], b[None],
                                                  grad=grad, tol=tol, max_iter=max_iter,
                                                  check_every=CHECK_EVERY).value[0]
    return loss


def _ours_iters(lib: str, a, x, y, b, eps, tol: float, max_iter: int) -> tuple[int, bool]:
    """Iterations ot_batch's forward loop needs to reach ``tol`` (JAX: under jit, as in the
    Hessians; torch: eager, after the annealed warm start)."""
    import ot_batch

    def fwd(a, x):
        out = ot_batch.sinkhorn_divergence_batch(x[None], y[None], eps, a[None], b[None],
                                                 grad="envelope", tol=tol, max_iter=max_iter,
                                                 check_every=CHECK_EVERY)
        return out.log["n_iter"][0], out.log["converged"][0]
    if lib == "jax":
        import jax
        fwd = jax.jit(fwd)
    it, conv = fwd(a, x)
    return int(it), bool(conv)


def _unroll_lengths(spec: Sequence[str], own: int, ott: list[int] | None):
    """``(scan length, source)`` of ot_batch_jax_unrolled for each entry of ``--unroll``."""
    out = []
    for s in spec:
        if s == "own":
            out.append((_round_up(own), "ot_batch's iterations to tol under jit"))
        elif s == "ott":
            if ott is None:
                print("# --unroll ott: OTT did not run, no scan of its length", flush=True)
                continue
            out.append((_round_up(max(ott)), "OTT's unrolled iterations"))
        else:
            out.append((int(s), "--unroll"))
    return out or [(_round_up(own), "ot_batch's iterations to tol under jit")]


def _project(H: np.ndarray) -> np.ndarray:
    n = H.shape[0]
    Q = np.eye(n) - 1.0 / n
    return Q @ H @ Q


def _rel_diff(H: np.ndarray, ref: np.ndarray, wrt: str) -> float:
    H, ref = np.asarray(H, np.float64), np.asarray(ref, np.float64)
    if wrt == "a":
        H, ref = _project(H), _project(ref)
    return float(np.abs(H - ref).max() / np.abs(ref).max())


def _hess_jax(loss, k: int, a, x, repeats: int, budget: float):
    import jax

    jitted = jax.jit(jax.hessian(loss, argnums=k))
    t0 = time.perf_counter()
    compiled = jitted.lower(a, x).compile()
    compile_s = time.perf_counter() - t0

    def call():
        return jax.block_until_ready(compiled(a, x))
    timing, H = measure(call, repeats=repeats, budget_s=budget, warmup=call)
    return dict(compile_s=compile_s), timing, np.asarray(H)


def _hess_torch(loss, k: int, a, x, repeats: int, budget: float):
    import torch

    sync = _torch_sync()
    func = torch.func.hessian(loss, argnums=k)
    info: dict = {"api": "torch.func.hessian"}
    try:
        first_s, H = _first(lambda: func(a, x), sync)
        fn = lambda: func(a, x)  # noqa: E731
    except Exception as exc:  # noqa: BLE001 - then the autograd API, and the row says why
        info = {"api": "torch.autograd.functional.hessian", "func_error": _brief(exc)}

        def fn():
            if k == 0:
                return torch.autograd.functional.hessian(lambda z: loss(z, x), a)
            return torch.autograd.functional.hessian(lambda z: loss(a, z), x)
        first_s, H = _first(fn, sync)
    info["compile_s"] = first_s  # torch has no compile: the first (warm-up) call
    timing, H = measure(fn, repeats=repeats, budget_s=budget, sync=sync)
    return info, timing, H.detach().cpu().numpy()


def _first(fn, sync):
    """``(seconds, result)`` of the first (warm-up) call."""
    return time_once(fn, sync)


def run_hessian(engines: Sequence[str], wrts: Sequence[str], args) -> list[dict]:
    a, x, b, y = tutorial_data(args.x64)
    eps = _tutorial_eps(x, y)
    dtype = str(x.dtype)
    print(f"# hessian: n={x.shape[0]}, m={y.shape[0]}, d={x.shape[1]}, eps={eps:.6g} "
          f"(0.05 x std of the costs), {dtype}, tol={args.tol}, max_iter={args.max_iter}",
          flush=True)
    missing = {lib: _missing(lib) for lib in ("ott", "jax", "torch")}
    ott_iters = ott_conv = None
    if missing["ott"] is None and missing["jax"] is None and any(
            e.startswith("ott") or (e == "ot_batch_jax_unrolled" and "ott" in args.unroll)
            for e in engines):
        try:
            import jax.numpy as jnp
            ott_iters, ott_conv = _ott_iters(*(jnp.asarray(v) for v in (a, x, y, b)),
                                             jnp.asarray(eps, dtype))
            print(f"# OTT forward iterations (xy, xx, yy): {ott_iters}, converged {ott_conv}",
                  flush=True)
        except Exception as exc:  # noqa: BLE001
            print(f"# OTT forward failed: {_brief(exc)}", flush=True)
    rows: list[dict] = []
    refs: dict[str, tuple[str, np.ndarray, float]] = {}  # wrt -> (engine, H, median)
    own_iters: dict[str, tuple[int, bool]] = {}
    for eng in engines:
        lib = _engine_lib(eng)
        base = dict(workload="hessian", engine=eng, n=int(x.shape[0]), m=int(y.shape[0]),
                    d=int(x.shape[1]), eps=eps, dtype=dtype)
        why = missing[lib] or (missing["jax"] if lib == "ott" else None)
        if why is not None:
            print(f"# {eng} skipped: {why}", flush=True)
            for w in wrts:
                _emit(rows, dict(base, wrt=w, skipped=why))
            continue
        implicit = eng.endswith("implicit")
        try:
            if lib == "ott":
                import jax.numpy as jnp
                A, X, Y, Bw = (jnp.asarray(v) for v in (a, x, y, b))
                # eps as an array of the data's dtype: given as a Python float, OTT's lineax
                # solve of the weights' Hessian returns non-finite values in float32
                losses = [(_ott_loss(Y, Bw, jnp.asarray(eps, dtype), implicit),
                           dict(tol=1e-3, max_iter=2000))]
                extra = dict(device=_jax_device(),
                             n_iter=ott_iters, converged=ott_conv,
                             variant="ImplicitDiff()" if implicit else "implicit_diff=None")
                hess = _hess_jax
            elif lib == "jax":
                import jax.numpy as jnp
                A, X, Y, Bw = (jnp.asarray(v) for v in (a, x, y, b))
                if "jax" not in own_iters:
                    own_iters["jax"] = _ours_iters("jax", A, X, Y, Bw, eps, args.tol,
                                                   args.max_iter)
                variants = [(args.max_iter, None)]
                if not implicit:  # a fixed-length scan: its length, and where it comes from
                    variants = _unroll_lengths(args.unroll, own_iters["jax"][0], ott_iters)
                losses = [(_ours_loss(Y, Bw, eps, "implicit" if implicit else "autodiff",
                                      args.tol, it),
                           dict(max_iter=it) if src is None else
                           dict(max_iter=it, unrolled_steps=it, unroll_from=src))
                          for it, src in variants]
                extra = dict(tol=args.tol, device=_jax_device(),
                             n_iter=own_iters["jax"][0], converged=own_iters["jax"][1])
                hess = _hess_jax
            else:
                import torch
                dev = _torch_device()
                A, X, Y, Bw = (torch.as_tensor(np.array(v), device=dev) for v in (a, x, y, b))
                if "torch" not in own_iters:
                    own_iters["torch"] = _ours_iters("torch", A, X, Y, Bw, eps, args.tol,
                                                     args.max_iter)
                losses = [(_ours_loss(Y, Bw, eps, "implicit" if implicit else "autodiff",
                                      args.tol, args.max_iter), dict(max_iter=args.max_iter))]
                extra = dict(tol=args.tol, device=dev,
                             n_iter=own_iters["torch"][0], converged=own_iters["torch"][1])
                hess = _hess_torch
        except Exception as exc:  # noqa: BLE001
            for w in wrts:
                _emit(rows, dict(base, wrt=w, error=_brief(exc)))
            continue
        for w, (loss, kw) in ((w, lk) for w in wrts for lk in losses):
            k = 0 if w == "a" else 1
            print(f"# {time.strftime('%H:%M:%S')} hessian {eng} wrt {w}"
                  + (f", scan of {kw['unrolled_steps']}" if "unrolled_steps" in kw else ""),
                  flush=True)
            row = dict(base, wrt=w, **extra, **kw)
            try:
                info, timing, H = hess(loss, k, A, X, args.repeats, args.budget)
                row.update(info, median_s=timing.median, repeats=timing.repeats,
                           finite=bool(np.isfinite(H).all()))
                if w not in refs and row["finite"]:
                    refs[w] = (eng, H, timing.median)
                ref_eng, ref_H, ref_t = refs.get(w, (None, None, None))
                if ref_eng is not None:
                    row.update(diff_ref=ref_eng, max_rel_diff=_rel_diff(H, ref_H, w),
                               time_vs_ref=timing.median / ref_t)
            except Exception as exc:  # noqa: BLE001 - an engine that cannot run is data
                row["error"] = _brief(exc)
            _emit(rows, row)
            gc.collect()
    return rows


# ---------------------------------------------------------------------------- grad_vs_forward

def cube_reg(d: int) -> float:
    """0.05 x the std of |x - y|^2 for x, y uniform in the unit cube of R^d."""
    return REL_EPS * math.sqrt(7.0 * d / 180.0)


def _gvf_call(func: str, X, Y, a, b, reg, grad: str, tol: float, max_iter: int):
    import ot_batch

    if func == "divergence":
        return ot_batch.sinkhorn_divergence_batch(X, Y, reg, a, b, grad=grad, tol=tol,
                                                  max_iter=max_iter, check_every=CHECK_EVERY)
    return ot_batch.solve_sample_batch(X, Y, reg, a, b, grad=grad, tol=tol, max_iter=max_iter,
                                       check_every=CHECK_EVERY)


def _log_iters(res) -> tuple[int | None, bool | None]:
    log = getattr(res, "log", None) or {}
    try:
        return int(np.asarray(log["n_iter"]).max()), bool(np.asarray(log["converged"]).all())
    except (KeyError, TypeError):
        return None, None


def _gvf_torch(func, mode, Xn, Yn, an, bn, reg, args):
    import torch

    dev = _torch_device()
    sync = _torch_sync()
    X, Y, a, b = (torch.as_tensor(v, device=dev) for v in (Xn, Yn, an, bn))
    grad = MODES[mode]
    box: dict = {}

    V = torch.as_tensor(_direction(Xn), device=dev)

    def call():
        if mode == "forward":
            res = _gvf_call(func, X, Y, a, b, reg, grad, args.tol, args.max_iter)
            box["res"] = res
            return res.value.sum()
        if mode == "hvp":  # forward, gradient with its graph, and the product
            Xr = X.clone().requires_grad_(True)
            res = _gvf_call(func, Xr, Y, a, b, reg, grad, args.tol, args.max_iter)
            box["res"] = res
            (gX,) = torch.autograd.grad(res.value.sum(), Xr, create_graph=True)
            return torch.autograd.grad((gX * V).sum(), Xr)[0]
        Xr, ar = X.clone().requires_grad_(True), a.clone().requires_grad_(True)
        res = _gvf_call(func, Xr, Y, ar, b, reg, grad, args.tol, args.max_iter)
        box["res"] = res
        v = res.value.sum()
        gX, ga = torch.autograd.grad(v, (Xr, ar))
        return v.detach(), gX, ga
    first_s, _ = _first(call, sync)
    timing, _ = measure(call, repeats=args.repeats, budget_s=args.budget, sync=sync)
    it, conv = _log_iters(box["res"])
    box.clear()
    return dict(device=dev, compile_s=first_s, median_s=timing.median,
                repeats=timing.repeats, n_iter=it, converged=conv)


def _gvf_jax(func, mode, Xn, Yn, an, bn, reg, args):
    import jax

    X, Y, a, b = (jax.numpy.asarray(v) for v in (Xn, Yn, an, bn))
    grad = MODES[mode]

    # Y and b are arguments too, not constants baked into the program (closed over, they
    # also tripped ot_batch's input checks under jit until _validate.check_finite skipped
    # staged values)
    def value(X, a, Y, b):
        res = _gvf_call(func, X, Y, a, b, reg, grad, args.tol, args.max_iter)
        log = res.log or {}
        return res.value.sum(), (log.get("n_iter"), log.get("converged"))
    if mode == "forward":
        fn = jax.jit(value)
    elif mode == "hvp":  # forward over reverse: the gradient's derivative along V
        V = jax.numpy.asarray(_direction(Xn))

        def hvp(X, a, Y, b):
            def grad_x(Z):
                return jax.grad(value, has_aux=True)(Z, a, Y, b)
            _, h, aux = jax.jvp(grad_x, (X,), (V,), has_aux=True)
            return h, aux
        fn = jax.jit(hvp)
    else:
        fn = jax.jit(jax.value_and_grad(value, argnums=(0, 1), has_aux=True))
    t0 = time.perf_counter()
    compiled = fn.lower(X, a, Y, b).compile()
    compile_s = time.perf_counter() - t0

    def call():
        return jax.block_until_ready(compiled(X, a, Y, b))
    timing, out = measure(call, repeats=args.repeats, budget_s=args.budget, warmup=call)
    (_, (n_iter, conv)) = out[0] if mode not in ("forward", "hvp") else out
    it = None if n_iter is None else int(np.asarray(n_iter).max())
    cv = None if conv is None else bool(np.asarray(conv).all())
    return dict(device=_jax_device(), compile_s=compile_s, median_s=timing.median,
                repeats=timing.repeats, n_iter=it, converged=cv)


def _direction(X: np.ndarray) -> np.ndarray:
    """The fixed direction ``V`` of the Hessian-vector products (seeded, X's shape)."""
    return np.random.default_rng(1).standard_normal(X.shape).astype(X.dtype)


def run_grad_vs_forward(libs: Sequence[str], funcs: Sequence[str], args) -> list[dict]:
    n, d = (500 if args.quick and args.n is None else args.n or 10_000), args.d
    dtype = np.float64 if args.x64 else np.float32
    rng = np.random.default_rng(args.seed)
    X = rng.random((1, n, d)).astype(dtype)
    Y = rng.random((1, n, d)).astype(dtype)
    a = np.full((1, n), 1.0 / n, dtype=dtype)
    b = a.copy()
    reg = cube_reg(d)
    print(f"# grad_vs_forward: B=1, n=m={n}, d={d}, reg={reg:.5g} (0.05 x std of the costs "
          f"of unit-cube points), {np.dtype(dtype).name}, tol={args.tol}, "
          f"max_iter={args.max_iter}", flush=True)
    rows: list[dict] = []
    for lib in libs:
        why = _missing(lib)
        for func in funcs:
            fwd = None
            for mode in MODES:
                row = dict(workload="grad_vs_forward", lib=lib, func=func, mode=mode,
                           grad=MODES[mode], n=n, m=n, d=d, reg=reg,
                           dtype=np.dtype(dtype).name, tol=args.tol, max_iter=args.max_iter)
                if why is not None:
                    if mode == "forward":
                        print(f"# {lib} skipped: {why}", flush=True)
                    _emit(rows, dict(row, skipped=why))
                    continue
                print(f"# {time.strftime('%H:%M:%S')} grad_vs_forward {lib} {func} {mode}",
                      flush=True)
                try:
                    run = _gvf_torch if lib == "torch" else _gvf_jax
                    row.update(run(func, mode, X, Y, a, b, reg, args))
                    if mode == "forward":
                        fwd = row["median_s"]
                    elif fwd:
                        row["ratio_vs_forward"] = row["median_s"] / fwd
                except Exception as exc:  # noqa: BLE001
                    row["error"] = _brief(exc)
                _emit(rows, row)
                gc.collect()
    return rows


# ---------------------------------------------------------------------------- report

def _f(v: Any, spec: str) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    return format(v, spec)


def _tables(rows: list[dict]) -> str:
    out = []
    hess = [r for r in rows if r["workload"] == "hessian"]
    if hess:
        out += ["| engine | wrt | compile s | median ms | x ref time | forward iterations "
                "| max rel diff vs ref | notes |", "|---|---|---|---|---|---|---|---|"]
        for r in hess:
            note = r.get("skipped") or r.get("error") or ""
            if not note:
                bits = [r.get("device", "")]
                if "unrolled_steps" in r:
                    bits.append(f"scan of {r['unrolled_steps']} steps ({r['unroll_from']})")
                if "api" in r:
                    bits.append(r["api"])
                if r.get("func_error"):
                    bits.append(f"torch.func failed: {r['func_error']}")
                if r.get("diff_ref"):
                    bits.append(f"ref {r['diff_ref']}")
                if not r.get("finite", True):
                    bits.append("NON-FINITE")
                note = "; ".join(b for b in bits if b)
            ms = r.get("median_s")
            out.append(f"| {r['engine']} | {r['wrt']} | {_f(r.get('compile_s'), '.2f')} | "
                       f"{_f(None if ms is None else ms * 1e3, '.2f')} | "
                       f"{_f(r.get('time_vs_ref'), '.2f')} | {r.get('n_iter', '-')} | "
                       f"{_f(r.get('max_rel_diff'), '.1e')} | {note} |")
        out.append("")
    gvf = [r for r in rows if r["workload"] == "grad_vs_forward"]
    if gvf:
        out += ["| lib | function | mode | n | compile / first call s | median s "
                "| x forward | iterations | converged | notes |",
                "|---|---|---|---|---|---|---|---|---|---|"]
        for r in gvf:
            note = r.get("skipped") or r.get("error") or r.get("device", "")
            out.append(f"| {r['lib']} | {r['func']} | {r['mode']} | {r['n']} | "
                       f"{_f(r.get('compile_s'), '.2f')} | {_f(r.get('median_s'), '.4f')} | "
                       f"{_f(r.get('ratio_vs_forward'), '.2f')} | {_f(r.get('n_iter'), 'd')} | "
                       f"{r.get('converged', '-')} | {note} |")
    return "\n".join(out)


def _names(text: str, known: Sequence[str], what: str, p: argparse.ArgumentParser) -> list[str]:
    names = [s.strip() for s in text.split(",") if s.strip()]
    for s in names:
        if s not in known:
            p.error(f"unknown {what} {s!r}; known: {', '.join(known)}")
    return names


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m ot_batch.bench grad",
                                description=__doc__.splitlines()[0])
    p.add_argument("--workloads", default=",".join(WORKLOADS),
                   help=f"comma-separated (default {','.join(WORKLOADS)})")
    p.add_argument("--engines", default=None,
                   help=f"hessian engines (default {','.join(HESS_ENGINES)}; --quick: "
                        "all but ott_unrolled)")
    p.add_argument("--wrt", default=None,
                   help="hessian in the weights a and/or the points x (default a,x; --quick: a)")
    p.add_argument("--libs", default=",".join(LIBS),
                   help=f"grad_vs_forward libraries (default {','.join(LIBS)})")
    p.add_argument("--funcs", default=",".join(FUNCS),
                   help=f"grad_vs_forward functions (default {','.join(FUNCS)}: "
                        "sinkhorn_divergence_batch, solve_sample_batch)")
    p.add_argument("--n", type=int, default=None,
                   help="grad_vs_forward points per cloud (default 10000; 500 with --quick)")
    p.add_argument("--d", type=int, default=3, help="grad_vs_forward dimension (default 3)")
    p.add_argument("--tol", type=float, default=1e-3,
                   help="ot_batch's tol (default 1e-3: OTT's default threshold)")
    p.add_argument("--max-iter", type=int, default=2000,
                   help="ot_batch's max_iter (default 2000: OTT's max_iterations)")
    p.add_argument("--unroll", default="own",
                   help="scan lengths of ot_batch_jax_unrolled, comma-separated: 'own' (the "
                        "iterations ot_batch's jitted loop needs to reach --tol), 'ott' (the "
                        "largest of OTT's three iteration counts) or a number (default own)")
    p.add_argument("--x64", action="store_true", help="float64 (JAX x64 and torch)")
    p.add_argument("--repeats", type=int, default=None,
                   help="timed repeats after a warm-up, median reported (default 3; --quick: 1)")
    p.add_argument("--budget", type=float, default=20.0, metavar="SECONDS",
                   help="per case: start no repeat that would end past this (default 20)")
    p.add_argument("--seed", type=int, default=0, help="grad_vs_forward data seed")
    p.add_argument("--quick", action="store_true",
                   help="a smoke test: n = 500, one repeat, the Hessians in a only, no "
                        "ott_unrolled (the Hessian clouds are tiny already; compiling is what "
                        "costs)")
    p.add_argument("--out", type=Path, default=Path("bench_results"),
                   help="folder for grad.json and grad.md (default bench_results/)")
    args = p.parse_args(argv)
    q = args.quick
    if args.engines is None:
        args.engines = ",".join(e for e in HESS_ENGINES if not (q and e == "ott_unrolled"))
    args.wrt = args.wrt or ("a" if q else "a,x")
    args.repeats = args.repeats or (1 if q else 3)
    wls = _names(args.workloads, WORKLOADS, "workload", p)
    engines = _names(args.engines, HESS_ENGINES, "engine", p)
    wrts = _names(args.wrt, ("a", "x"), "--wrt", p)
    args.unroll = [u.strip() for u in args.unroll.split(",") if u.strip()]
    for u in args.unroll:
        if u not in ("own", "ott") and not (u.isdigit() and int(u) > 0):
            p.error(f"--unroll takes 'own', 'ott' or a positive number, got {u!r}")
    libs = _names(args.libs, LIBS, "library", p)
    funcs = _names(args.funcs, FUNCS, "function", p)
    if args.repeats < 1:
        p.error("--repeats must be >= 1")
    if args.x64 and _missing("jax") is None:
        import jax
        jax.config.update("jax_enable_x64", True)
    from .batch_report import environment

    env = environment()
    t0 = time.perf_counter()
    rows: list[dict] = []
    if "hessian" in wls:
        rows += run_hessian(engines, wrts, args)
    if "grad_vs_forward" in wls:
        rows += run_grad_vs_forward(libs, funcs, args)
    text = (f"# ot_batch bench grad{' --quick' if args.quick else ''}\n{env}\n\n"
            f"{_tables(rows)}\n\nTotal wall time {time.perf_counter() - t0:.1f} s")
    print(text, flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "grad.md").write_text(text + "\n")
    (args.out / "grad.json").write_text(json.dumps(rows, indent=1))
    print(f"\nWrote {args.out / 'grad.json'}, {args.out / 'grad.md'}", flush=True)
    return 0
