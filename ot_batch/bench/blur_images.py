"""The blurred-images problem of OTT-JAX's "Sharded Sinkhorn" tutorial, without downloads.

``x``: images (CIFAR-10 from a local folder of its python pickle batches, else smooth random
images with the spectrum of natural ones) and their horizontal flips, scaled to [-1, 1];
``y``: each channel blurred by a 31-tap Gaussian (sigma 1, zero padding), OTT's
``get_cifar10(sigma=1.0, gaussian_blur_kernel_size=15, use_flip=True)``. The blur is
symmetric positive definite, so the optimal plan is the identity over ``n``.
"""
from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np

__all__ = ["blur", "cifar_images", "clouds", "random_images"]


def cifar_images(folder: str | Path, m: int) -> np.ndarray:
    """The first ``m`` CIFAR-10 training images, (m, 3, 32, 32) in [0, 1]."""
    batches = []
    for k in range(1, 6):
        if sum(len(b) for b in batches) >= m:
            break
        with open(Path(folder) / f"data_batch_{k}", "rb") as f:
            batches.append(pickle.load(f, encoding="bytes")[b"data"])
    return np.concatenate(batches)[:m].reshape(m, 3, 32, 32).astype(np.float32) / 255


def random_images(m: int, seed: int = 0, chunk: int = 5000) -> np.ndarray:
    """Smooth random images, (m, 3, 32, 32) in [0, 1]: white noise shaped to a 1/f^alpha
    amplitude spectrum (natural images have alpha near 1), a shared luminance field plus two
    weaker colour ones, 8-bit levels. One generator per chunk keeps the first images the same
    for every ``m``."""
    f = np.hypot(*np.meshgrid(np.fft.fftfreq(32), np.fft.fftfreq(32), indexing="ij"))
    f[0, 0] = 1 / 32
    mix = np.array([[1.0, 0.35, 0.1], [1.0, -0.05, 0.3], [1.0, -0.3, -0.25]], np.float32)
    out = []
    for start in range(0, m, chunk):
        rng = np.random.default_rng([seed, start])
        k = min(chunk, m - start)
        alpha = rng.uniform(1.0, 2.0, (k, 1, 1, 1))
        fields = np.fft.ifft2(np.fft.fft2(rng.standard_normal((k, 3, 32, 32))) / f**alpha).real
        fields /= fields.std(axis=(2, 3), keepdims=True)
        rgb = np.einsum("ck,nkhw->nchw", mix, fields)
        rgb -= rgb.mean(axis=(1, 2, 3), keepdims=True)
        rgb /= rgb.std(axis=(1, 2, 3), keepdims=True)
        level = rng.uniform(0.35, 0.65, (k, 1, 1, 1)) + rng.normal(0, 0.05, (k, 3, 1, 1))
        pix = np.clip(level + rng.uniform(0.12, 0.3, (k, 1, 1, 1)) * rgb, 0, 1)
        out.append((np.round(pix * 255) / 255).astype(np.float32))
    return np.concatenate(out)


def blur(images: np.ndarray, sigma: float = 1.0, half_width: int = 15) -> np.ndarray:
    """Each channel convolved with a ``2 half_width + 1``-tap Gaussian along rows then
    columns, zero-padded to the same size: ``B @ image @ B.T`` with ``B`` the banded Toeplitz
    matrix of the taps (symmetric positive definite), one product for all images."""
    size = images.shape[-1]
    taps = np.exp(-np.arange(-half_width, half_width + 1) ** 2 / (2.0 * sigma ** 2))
    taps /= taps.sum()
    offset = np.arange(size)[None, :] - np.arange(size)[:, None]
    B = np.where(np.abs(offset) <= half_width,
                 taps[np.clip(offset + half_width, 0, 2 * half_width)], 0).astype(images.dtype)
    return B @ images @ B.T


def clouds(n: int, cifar: str | Path | None = None, seed: int = 0):
    """``(x, y)`` float32 (n, 3072): ``n / 2`` images then their flips in [-1, 1] (as
    torchvision's ``Normalize(0.5, 0.5)``), and their blurred copies."""
    m = n // 2
    images = cifar_images(cifar, m) if cifar else random_images(m, seed)
    images = 2 * images - 1
    images = np.concatenate([images, images[..., ::-1]])
    return images.reshape(len(images), -1), blur(images).reshape(len(images), -1)
