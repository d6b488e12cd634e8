"""Plain image utilities: reading, colour conversion, 8-bit quantisation, tensor layout.

Conventions: numpy images are (H, W) or (H, W, C); ``uint8`` images are in 0..255; float images
in 0..255 units unless a name says ``unit`` (0..1). Nothing here mutates its input.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

# ITU-R BT.601 luma for 0..255 RGB, offset 16 (MATLAB rgb2ycbcr; the SR/CAR metric convention).
BT601_Y_WEIGHTS = np.array([65.481, 128.553, 24.966]) / 255.0
BT601_Y_OFFSET = 16.0


class ImageReadError(ValueError):
    """An image file that is missing, truncated or not an image."""


def read_image(path: str | Path, mode: str | None = None) -> np.ndarray:
    """Decode an image file fully into a uint8 array.

    ``mode`` None keeps the file's mode ("L" gives (H, W), "RGB" gives (H, W, 3)); "RGB" converts
    gray files by replicating the channel (what the MATLAB SR scripts do); "L" refuses colour files
    rather than guess a conversion.
    """
    path = Path(path)
    if not path.is_file():
        raise ImageReadError(f"image file not found: {path}")
    try:
        with Image.open(path) as image:
            image.load()  # decode now, so a truncated file fails here and names itself
            if image.mode not in ("L", "RGB"):
                raise ImageReadError(f"{path}: unsupported image mode {image.mode!r} (expected 8-bit L or RGB)")
            if mode == "L" and image.mode != "L":
                raise ImageReadError(f"{path}: a gray (L) image is required, the file is {image.mode}")
            if mode is not None and mode != image.mode:
                image = image.convert(mode)
            return np.asarray(image).copy()
    except (OSError, UnidentifiedImageError, SyntaxError) as error:
        raise ImageReadError(f"{path}: cannot decode image ({error})") from error


def to_uint8(values: np.ndarray) -> np.ndarray:
    """Round half up and saturate to 0..255 (MATLAB's double -> uint8 cast)."""
    return np.clip(np.floor(np.asarray(values, dtype=np.float64) + 0.5), 0, 255).astype(np.uint8)


def rgb_to_y(image: np.ndarray) -> np.ndarray:
    """BT.601 luma (16..235 range) of a 0..255 RGB image, as float64, not rounded."""
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"rgb_to_y expects an (H, W, 3) image, got shape {image.shape}")
    return image.astype(np.float64) @ BT601_Y_WEIGHTS + BT601_Y_OFFSET


def gray_to_rgb(image: np.ndarray) -> np.ndarray:
    return np.repeat(image[..., None], 3, axis=2) if image.ndim == 2 else image


def to_tensor(image: np.ndarray) -> torch.Tensor:
    """(H, W[, C]) 0..255 array -> (C, H, W) float32 tensor in 0..1."""
    array = image[..., None] if image.ndim == 2 else image
    return torch.from_numpy(np.ascontiguousarray(array.transpose(2, 0, 1))).float().div(255.0)


def to_image(tensor: torch.Tensor) -> np.ndarray:
    """(C, H, W) 0..1 tensor -> uint8 (H, W[, C]) array, rounded as an 8-bit file would be."""
    array = tensor.detach().to("cpu", torch.float64).clamp(0, 1).mul(255.0).numpy().transpose(1, 2, 0)
    return to_uint8(array[..., 0] if array.shape[2] == 1 else array)


# Images <-> network tensors: what training's validation, evaluation and the key figures share.
def network_input(degraded: np.ndarray, channels: int) -> torch.Tensor:
    """uint8/float (H, W[, C]) image -> (C, H, W) tensor; gray inputs of an RGB model are replicated."""
    tensor = to_tensor(degraded)
    return tensor.expand(channels, -1, -1) if tensor.shape[0] == 1 and channels == 3 else tensor


def restore_image(forward, degraded: np.ndarray, target: np.ndarray, channels: int, device: torch.device) -> np.ndarray:
    """Run ``forward`` on one degraded image and return the uint8 restoration shaped like ``target``."""
    output = forward(network_input(degraded, channels)[None].to(device))[0]
    return network_output(output.float(), target)


def network_output(output: torch.Tensor, target: np.ndarray) -> np.ndarray:
    """Output tensor -> uint8 image shaped like the target (gray targets of RGB models: channel mean)."""
    image = to_image(output)
    if target.ndim == 2 and image.ndim == 3:
        return to_image(output.mean(dim=0, keepdim=True))
    return image
