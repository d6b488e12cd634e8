"""PSNR and SSIM, with each task's convention named in one place (``CONVENTIONS``).

Inputs are uint8 numpy images, (H, W) or (H, W, 3): restored outputs are rounded to 8 bit before
they are scored (``acla.images.to_uint8`` / ``to_image``), as a saved PNG would be.

Both are hand-written in float64 numpy, because torchmetrics' functions differ from the literature's
convention. Its PSNR returns float32 (1e-6 dB off, which a "full precision" CSV would show); ours is
10 log10(255^2 / MSE) over every kept pixel and channel in float64. Its SSIM
reflect-pads the image and averages the SSIM map over the *full* image, windows that hang over the
reflected border included (0.002 higher on a noisy Kodak image), and it is slow in float64 (an
11x11 grouped conv2d, ~6 s per Kodak image). Ours is Wang et al. 2004 as in MATLAB ``ssim_index``
and BasicSR: Gaussian window 11x11, sigma 1.5, K1 0.01, K2 0.03, data range 255, mean over the
*valid* region (every window inside the image), channels averaged; separable, via scipy.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.ndimage import correlate1d

from acla.images import rgb_to_y

DATA_RANGE = 255.0
SSIM_RADIUS = 5  # 11x11 window
SSIM_SIGMA = 1.5
SSIM_C1 = (0.01 * DATA_RANGE) ** 2
SSIM_C2 = (0.03 * DATA_RANGE) ** 2


@dataclass(frozen=True)
class Convention:
    """How a task is scored."""

    on_y_channel: bool  # score BT.601 luma of RGB images (gray images are scored as they are)
    crop_by_scale: bool  # shave ``scale`` pixels at each border (SR), else no crop


CONVENTIONS: dict[str, Convention] = {
    "sr": Convention(on_y_channel=True, crop_by_scale=True),
    "denoise": Convention(on_y_channel=False, crop_by_scale=False),
    "demosaic": Convention(on_y_channel=False, crop_by_scale=False),
    "jpeg": Convention(on_y_channel=True, crop_by_scale=False),
}


def convention(task: str) -> Convention:
    if task not in CONVENTIONS:
        raise ValueError(f"unknown task {task!r}; expected one of {sorted(CONVENTIONS)}")
    return CONVENTIONS[task]


def _prepare(image: np.ndarray, crop_border: int, on_y_channel: bool) -> np.ndarray:
    """uint8 (H, W[, C]) -> float64 (C, H', W') array, luma and crop applied."""
    if image.dtype != np.uint8:
        raise TypeError(f"metrics expect uint8 images (round outputs first), got {image.dtype}")
    values = rgb_to_y(image) if on_y_channel and image.ndim == 3 else image.astype(np.float64)
    if values.ndim == 2:
        values = values[..., None]
    if crop_border:
        values = values[crop_border:-crop_border, crop_border:-crop_border]
    return np.ascontiguousarray(values.transpose(2, 0, 1))


def _check_pair(output: np.ndarray, target: np.ndarray) -> None:
    if output.shape != target.shape:
        raise ValueError(f"output shape {output.shape} differs from target shape {target.shape}")


def psnr(output: np.ndarray, target: np.ndarray, *, crop_border: int = 0, on_y_channel: bool = False) -> float:
    """PSNR in dB over all kept pixels and channels, data range 255 (inf when identical)."""
    _check_pair(output, target)
    mse = np.mean((_prepare(output, crop_border, on_y_channel) - _prepare(target, crop_border, on_y_channel)) ** 2)
    return float("inf") if mse == 0 else float(10 * np.log10(DATA_RANGE**2 / mse))


def _gaussian_window() -> np.ndarray:
    offsets = np.arange(-SSIM_RADIUS, SSIM_RADIUS + 1, dtype=np.float64)
    window = np.exp(-(offsets**2) / (2 * SSIM_SIGMA**2))
    return window / window.sum()


def _local_means(stack: np.ndarray) -> np.ndarray:
    """Gaussian-weighted local means of (..., H, W) planes over the valid region ("valid" filter2)."""
    window = _gaussian_window()
    blurred = correlate1d(correlate1d(stack, window, axis=-2), window, axis=-1)
    return blurred[..., SSIM_RADIUS:-SSIM_RADIUS, SSIM_RADIUS:-SSIM_RADIUS]


def _ssim_per_channel(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Mean SSIM of each (C, H, W) channel; the five local statistics are filtered in one stack."""
    mean_x, mean_y, mean_xx, mean_yy, mean_xy = _local_means(np.stack([x, y, x * x, y * y, x * y]))
    var_x = mean_xx - mean_x**2
    var_y = mean_yy - mean_y**2
    covariance = mean_xy - mean_x * mean_y
    ssim_map = ((2 * mean_x * mean_y + SSIM_C1) * (2 * covariance + SSIM_C2)) / (
        (mean_x**2 + mean_y**2 + SSIM_C1) * (var_x + var_y + SSIM_C2)
    )
    return ssim_map.mean(axis=(-2, -1))


def ssim(output: np.ndarray, target: np.ndarray, *, crop_border: int = 0, on_y_channel: bool = False) -> float:
    """Mean SSIM (Gaussian 11/1.5, valid region), averaged over channels."""
    _check_pair(output, target)
    x = _prepare(output, crop_border, on_y_channel)
    y = _prepare(target, crop_border, on_y_channel)
    if min(x.shape[1:]) <= 2 * SSIM_RADIUS:
        raise ValueError(f"SSIM needs images larger than 11x11 after cropping, got {x.shape[1:]}")
    return float(_ssim_per_channel(x, y).mean())


def score(task: str, output: np.ndarray, target: np.ndarray, *, scale: int = 1) -> tuple[float, float]:
    """(PSNR, SSIM) of one restored image under ``task``'s convention."""
    rule = convention(task)
    crop = scale if rule.crop_by_scale else 0
    return (
        psnr(output, target, crop_border=crop, on_y_channel=rule.on_y_channel),
        ssim(output, target, crop_border=crop, on_y_channel=rule.on_y_channel),
    )
