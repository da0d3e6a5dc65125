"""GeomLoss's kernel norms between point clouds: ``SamplesLoss("energy" | "gaussian" |
"laplacian")``, written once against the array namespace.

``Loss(a, b) = 1/2 <a - b, k * (a - b)>`` with ``k(x, y) = exp(-|x - y|^2 / 2 blur^2)``
(gaussian), ``exp(-|x - y| / blur)`` (laplacian) or ``-|x - y|`` (energy). The gradients are
GeomLoss's: its self-interaction terms ``K(x, x.detach())`` see only their first argument and
double its gradient (``double_grad``), which gives the exact gradient of the symmetric form.
"""
from __future__ import annotations

from typing import Any

from .distances import _sqeuclidean

__all__ = ["KERNELS", "kernel_loss"]

KERNELS = ("energy", "gaussian", "laplacian")


def floored_sqrt(xp: Any, sq: Any):
    """``|x - y|`` from squared distances, kept off 0 as GeomLoss does (so that ``C(x, x)``
    has a gradient)."""
    return xp.sqrt(xp.clip(sq, min=1e-8))


def _distances(xp: Any, X: Any, Y: Any):
    return floored_sqrt(xp, _sqeuclidean(xp, X, Y))


def _kernel(xp: Any, name: str, X: Any, Y: Any, blur: float):
    if name == "gaussian":
        return xp.exp(-_sqeuclidean(xp, X / blur, Y / blur) / 2)
    if name == "laplacian":
        return xp.exp(-_distances(xp, X / blur, Y / blur))
    return -_distances(xp, X, Y)


def kernel_loss(xp: Any, ext: Any, name: str, X: Any, Y: Any, a: Any, b: Any, blur: float,
                potentials: bool = False):
    """The kernel norm of each problem, (B,), or the potentials ``(F, G)``, as GeomLoss's
    tensorized ``kernel_loss`` computes them (values and gradients)."""
    sg = ext.stop_gradient

    def double_grad(z):  # value z, gradient 2 dz
        return z + (z - sg(z))

    K_xx = _kernel(xp, name, double_grad(X), sg(X), blur)
    K_yy = _kernel(xp, name, double_grad(Y), sg(Y), blur)
    K_xy = _kernel(xp, name, X, Y, blur)
    a_x = xp.matmul(K_xx, sg(a)[:, :, None])[:, :, 0]
    b_y = xp.matmul(K_yy, sg(b)[:, :, None])[:, :, 0]
    b_x = xp.matmul(K_xy, b[:, :, None])[:, :, 0]
    if potentials:
        a_y = xp.matmul(xp.matrix_transpose(K_xy), a[:, :, None])[:, :, 0]
        return a_x - b_x, b_y - a_y
    return (0.5 * xp.sum(double_grad(a) * a_x, axis=1) + 0.5 * xp.sum(double_grad(b) * b_y, axis=1)
            - xp.sum(a * b_x, axis=1))
