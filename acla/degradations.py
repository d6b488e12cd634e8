"""Degradations of the four restoration tasks, made the way the benchmarks were made.

Every function takes and returns ``numpy`` arrays in (H, W) or (H, W, C) layout. Clean images are
``uint8`` in 0..255; noisy images are ``float64`` in 0..255 units (not clipped, not rounded), because
the AWGN protocol of the denoising literature adds noise to the real-valued image.

Hand-written rather than taken from a library, and why:

* ``imresize``: PIL, OpenCV, scikit-image and torch all implement *a* bicubic, but none reproduces
  MATLAB's ``imresize(..., 'bicubic')`` on uint8 images, which is how every SR benchmark LR was made.
  The rules that make ours bit-exact are listed in its docstring and checked against MATLAB output
  in ``tests/test_degradations.py``.
* ``bayer_mosaic`` / ``bilinear_demosaic``: a few lines; no maintained library offers a
  mask-normalised bilinear demosaic.
* ``jpeg``: *is* a library call (Pillow's libjpeg, whose quality scaling of the IJG standard
  quantisation tables is what MATLAB ``imwrite(..., 'Quality', q)`` uses).
"""

from __future__ import annotations

import hashlib
import io
import math

import numpy as np
from PIL import Image

from acla.images import rgb_to_y, to_uint8

SR_SCALES = (2, 3, 4)
BAYER_PATTERNS = ("GRBG", "RGGB", "BGGR", "GBRG")


# --------------------------------------------------------------------------------------------
# Bicubic resize (MATLAB-compatible)
# --------------------------------------------------------------------------------------------
def _cubic(x: np.ndarray) -> np.ndarray:
    """Keys' cubic convolution kernel with a = -0.5 (MATLAB's ``cubic``)."""
    absx = np.abs(x)
    absx2 = absx**2
    absx3 = absx**3
    near = (1.5 * absx3 - 2.5 * absx2 + 1) * (absx <= 1)
    far = (-0.5 * absx3 + 2.5 * absx2 - 4 * absx + 2) * ((absx > 1) & (absx <= 2))
    return near + far


def _output_length(in_length: int, scale: float) -> int:
    """``ceil(scale * in_length)`` as MATLAB computes it, immune to 1/3-style float noise."""
    exact = scale * in_length
    nearest = round(exact)
    return nearest if abs(exact - nearest) < 1e-9 else math.ceil(exact)


def _contributions(in_length: int, out_length: int, scale: float) -> tuple[np.ndarray, np.ndarray]:
    """Bicubic taps along one axis: (weights, 0-based indices), each (out_length, taps).

    MATLAB's ``contributions``: antialiasing when shrinking (kernel stretched by 1/scale),
    ``u = x/scale + 0.5*(1 - 1/scale)`` in 1-based coordinates, weights normalised to sum 1,
    and out-of-range taps clamped to the edge pixel (replicate, not mirror).
    """
    kernel_width = 4.0
    if scale < 1:
        kernel_width /= scale
        kernel = lambda x: scale * _cubic(scale * x)  # noqa: E731
    else:
        kernel = _cubic
    x = np.arange(1, out_length + 1, dtype=np.float64)
    u = x / scale + 0.5 * (1 - 1 / scale)
    left = np.floor(u - kernel_width / 2)
    taps = int(math.ceil(kernel_width)) + 2
    indices = left[:, None] + np.arange(taps)[None, :]  # (out, taps), 1-based
    weights = kernel(u[:, None] - indices)
    weights /= weights.sum(axis=1, keepdims=True)
    return weights, np.clip(indices, 1, in_length).astype(np.int64) - 1


def _resize_axis0(pixels: np.ndarray, scale: float) -> np.ndarray:
    """Resize along axis 0, summing taps in order (a fixed summation order keeps results exact)."""
    weights, indices = _contributions(pixels.shape[0], _output_length(pixels.shape[0], scale), scale)
    weights = weights.reshape(weights.shape + (1,) * (pixels.ndim - 1))
    out = np.zeros((weights.shape[0],) + pixels.shape[1:], dtype=np.float64)
    for tap in range(indices.shape[1]):
        out += weights[:, tap] * pixels[indices[:, tap]]
    return out


def imresize(image: np.ndarray, scale: float) -> np.ndarray:
    """MATLAB ``imresize(image, scale, 'bicubic')`` for uint8 images, bit-exact.

    Height (MATLAB's dim 1) is resized first, then width; the intermediate image is cast to
    uint8 between the two passes, as MATLAB does for uint8 input.
    """
    if not isinstance(image, np.ndarray) or image.dtype != np.uint8:
        raise TypeError(f"imresize expects a uint8 numpy array, got {getattr(image, 'dtype', type(image))}")
    if image.ndim not in (2, 3):
        raise ValueError(f"imresize expects an (H, W) or (H, W, C) image, got shape {image.shape}")
    if not scale > 0:
        raise ValueError(f"imresize scale must be > 0, got {scale}")
    first = to_uint8(_resize_axis0(image.astype(np.float64), scale))
    second = _resize_axis0(first.swapaxes(0, 1).astype(np.float64), scale)
    return np.ascontiguousarray(to_uint8(second).swapaxes(0, 1))


def check_scale(scale: int) -> int:
    if scale not in SR_SCALES:
        raise ValueError(f"SR scale must be one of {SR_SCALES}, got {scale!r}")
    return int(scale)


def modcrop(image: np.ndarray, scale: int) -> np.ndarray:
    """Keep the top-left part whose height and width are multiples of ``scale``."""
    height, width = image.shape[:2]
    return image[: height - height % scale, : width - width % scale]


def bicubic_downscale(hr: np.ndarray, scale: int) -> np.ndarray:
    """The SR "BI" degradation: ``imresize(modcrop(hr, s), 1/s)``."""
    scale = check_scale(scale)
    return imresize(modcrop(hr, scale), 1 / scale)


def bicubic_upscale(lr: np.ndarray, scale: int) -> np.ndarray:
    """The classical bicubic SR baseline (MATLAB ``imresize(lr, s, 'bicubic')``)."""
    return imresize(lr, check_scale(scale))


# --------------------------------------------------------------------------------------------
# Additive white Gaussian noise
# --------------------------------------------------------------------------------------------
def image_seed(*parts: object) -> int:
    """A 64-bit seed derived from names (set, file, setting), independent of iteration order."""
    digest = hashlib.sha256("/".join(str(part) for part in parts).encode()).digest()
    return int.from_bytes(digest[:8], "little")


def add_gaussian_noise(image: np.ndarray, sigma: float, rng: np.random.Generator) -> np.ndarray:
    """Clean uint8 image + N(0, sigma^2) per pixel and channel, in 0..255 units, float64.

    Not clipped and not rounded: the denoising protocol (DnCNN, FFDNet, SwinIR test scripts) feeds
    the real-valued noisy image to the network. ``sigma`` is on the 0..255 scale.
    """
    if not sigma >= 0:
        raise ValueError(f"noise sigma must be >= 0 (0..255 scale), got {sigma}")
    return image.astype(np.float64) + rng.standard_normal(image.shape) * float(sigma)


# --------------------------------------------------------------------------------------------
# Bayer mosaic and the bilinear demosaic baseline
# --------------------------------------------------------------------------------------------
def bayer_masks(height: int, width: int, pattern: str = "GRBG") -> np.ndarray:
    """Boolean (H, W, 3) masks, True where the sensor samples that colour.

    ``pattern`` names the top-left 2x2 tile row by row: GRBG = row 0 "G R", row 1 "B G"
    (the layout of the RNAN/ACLA test mosaics).
    """
    if pattern not in BAYER_PATTERNS:
        raise ValueError(f"Bayer pattern must be one of {BAYER_PATTERNS}, got {pattern!r}")
    masks = np.zeros((height, width, 3), dtype=bool)
    for position, colour in enumerate(pattern):
        row, col = divmod(position, 2)
        masks[row::2, col::2, "RGB".index(colour)] = True
    return masks


def require_color(image: np.ndarray, what: str) -> None:
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"{what} needs an RGB (H, W, 3) image, got shape {image.shape}; "
                         "gray images have no colour to mosaic")


def bayer_mosaic(image: np.ndarray, pattern: str = "GRBG") -> np.ndarray:
    """Keep one colour per pixel, zeros elsewhere; stays (H, W, 3) like the reference mosaics."""
    require_color(image, "bayer_mosaic")
    return np.where(bayer_masks(*image.shape[:2], pattern), image, 0).astype(image.dtype)


def _convolve_same(plane: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """3x3 correlation with zero padding (kernels here are symmetric)."""
    padded = np.pad(plane, 1)
    height, width = plane.shape
    out = np.zeros_like(plane)
    for dy in range(3):
        for dx in range(3):
            out += kernel[dy, dx] * padded[dy : dy + height, dx : dx + width]
    return out


def bilinear_demosaic(mosaic: np.ndarray, pattern: str = "GRBG") -> np.ndarray:
    """Classical bilinear demosaic, normalised by the sampled weights so borders are not darkened.

    Inside the image this equals the textbook kernels (G: cross / 4, R and B: 3x3 tent / 4); at the
    border it averages only the neighbours that exist. Returns uint8.
    """
    require_color(mosaic, "bilinear_demosaic")
    masks = bayer_masks(*mosaic.shape[:2], pattern).astype(np.float64)
    tent = np.array([[1.0, 2.0, 1.0], [2.0, 4.0, 2.0], [1.0, 2.0, 1.0]])
    values = mosaic.astype(np.float64) * masks
    out = np.empty_like(values)
    for channel in range(3):
        weighted = _convolve_same(values[..., channel], tent)
        support = _convolve_same(masks[..., channel], tent)
        out[..., channel] = weighted / support
    return to_uint8(out)


# --------------------------------------------------------------------------------------------
# JPEG
# --------------------------------------------------------------------------------------------
def rgb_to_y_uint8(image: np.ndarray) -> np.ndarray:
    """MATLAB ``rgb2ycbcr`` luma of a uint8 RGB image, rounded to uint8 (the CAR test inputs)."""
    return to_uint8(rgb_to_y(image))


def check_quality(quality: int) -> int:
    if isinstance(quality, bool) or not isinstance(quality, (int, np.integer)) or not 1 <= quality <= 100:
        raise ValueError(f"JPEG quality must be an integer in 1..100, got {quality!r}")
    return int(quality)


def jpeg(image: np.ndarray, quality: int, *, channel: str = "y") -> np.ndarray:
    """Encode and decode with libjpeg at ``quality`` (IJG standard tables scaled by quality).

    ``channel="y"``: gray images are coded as they are; RGB images are reduced to their uint8 luma
    first (the ARCNN/DnCNN/RNAN protocol), so the result is (H, W). ``channel="rgb"``: RGB images are
    coded in colour with 4:2:0 chroma subsampling (libjpeg's and MATLAB's default).
    """
    quality = check_quality(quality)
    if channel not in ("y", "rgb"):
        raise ValueError(f"JPEG channel must be 'y' or 'rgb', got {channel!r}")
    if image.dtype != np.uint8:
        raise TypeError(f"jpeg expects a uint8 image, got {image.dtype}")
    if channel == "y" and image.ndim == 3:
        image = rgb_to_y_uint8(image)
    if channel == "rgb":
        require_color(image, "jpeg(channel='rgb')")
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="JPEG", quality=quality, subsampling="4:2:0")
    buffer.seek(0)
    with Image.open(buffer) as decoded:
        return np.asarray(decoded.convert(decoded.mode)).copy()
