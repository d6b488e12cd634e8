"""The restoration tasks: what the clean target is, how it is degraded, how it is scored.

A task is named like ``sr_x2``, ``denoise_color_s30``, ``denoise_gray_s15``, ``demosaic`` or
``jpeg_q20``; ``parse_task`` turns the name into a ``Task`` and refuses anything else.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from acla import degradations, metrics
from acla.images import to_uint8

KINDS = ("sr", "denoise", "demosaic", "jpeg")

# MATLAB rgb2gray weights: BSD68 is exactly round(rgb2gray(CBSD68)) (see the data README).
RGB2GRAY_WEIGHTS = np.array([0.298936021293775, 0.587043074451121, 0.114020904255103])


@dataclass(frozen=True)
class Task:
    kind: str  # sr | denoise | demosaic | jpeg
    color: str = "rgb"  # rgb | gray: the channels the network sees and is scored on
    scale: int = 1  # SR only
    sigma: float = 0.0  # denoise only, 0..255 scale
    quality: int = 0  # jpeg only
    bayer_pattern: str = "GRBG"  # demosaic only

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"unknown task kind {self.kind!r}; expected one of {KINDS}")
        if self.color not in ("rgb", "gray"):
            raise ValueError(f"task color must be 'rgb' or 'gray', got {self.color!r}")
        if self.kind == "sr":
            degradations.check_scale(self.scale)
        elif self.scale != 1:
            raise ValueError(f"scale applies to SR only, got scale={self.scale} for {self.kind}")
        if self.kind == "denoise" and not self.sigma >= 0:
            raise ValueError(f"noise sigma must be >= 0 (0..255 scale), got {self.sigma}")
        if self.kind == "jpeg":
            degradations.check_quality(self.quality)
            if self.color != "gray":
                raise ValueError("jpeg is run on the Y/gray channel: use color='gray'")
        if self.kind in ("demosaic", "sr") and self.color != "rgb":
            raise ValueError(f"{self.kind} needs color='rgb'")

    @property
    def name(self) -> str:
        if self.kind == "sr":
            return f"sr_x{self.scale}"
        if self.kind == "denoise":
            return f"denoise_{'color' if self.color == 'rgb' else 'gray'}_s{self.sigma:g}"
        if self.kind == "jpeg":
            return f"jpeg_q{self.quality}"
        return "demosaic"

    @property
    def channels(self) -> int:
        return 3 if self.color == "rgb" else 1

    def target(self, image: np.ndarray, source: str = "image") -> np.ndarray:
        """The clean uint8 ground truth this task scores against, made from a stored image.

        Gray stored images stay gray for SR (Set14's bridge): the MATLAB evaluation behind the
        published SR rows scores a gray image on its gray values, not on the luma of a replicated
        RGB copy (which would differ by 20*log10(255/219) = 1.32 dB). Colour denoising and
        demosaicing refuse gray images, which would be scored as if they had colour.
        """
        if self.color == "gray":
            if image.ndim == 2:
                return image
            if self.kind == "jpeg":  # CAR protocol: the luma of YCbCr
                return degradations.rgb_to_y_uint8(image)
            return to_uint8(image.astype(np.float64) @ RGB2GRAY_WEIGHTS)  # gray denoising: rgb2gray
        if image.ndim == 2 and self.kind != "sr":
            raise ValueError(f"{source}: task {self.name} needs a colour image, got a gray (H, W) one")
        return degradations.modcrop(image, self.scale) if self.kind == "sr" else image

    def benchmark_pair(self, image: np.ndarray, set_name: str, image_name: str, seed: int) -> tuple[np.ndarray, np.ndarray]:
        """(target, degraded) of a benchmark image; the noise seed depends on (seed, set, image, task) only,
        so classical rows, validation and evaluation all see the same degraded inputs."""
        target = self.target(image, f"{set_name}/{image_name}")
        rng = np.random.default_rng(degradations.image_seed(seed, set_name, image_name, self.name))
        return target, self.degrade(target, rng)

    def degrade(self, target: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """The network input for ``target``: uint8, except denoising's real-valued noisy image."""
        if self.kind == "sr":
            return degradations.imresize(target, 1 / self.scale)
        if self.kind == "denoise":
            return degradations.add_gaussian_noise(target, self.sigma, rng)
        if self.kind == "demosaic":
            return degradations.bayer_mosaic(target, self.bayer_pattern)
        return degradations.jpeg(target, self.quality, channel="y")

    def classical(self, degraded: np.ndarray) -> dict[str, np.ndarray]:
        """The literature's classical rows for this task: method name -> uint8 output."""
        if self.kind == "sr":
            return {"bicubic": degradations.bicubic_upscale(degraded, self.scale)}
        if self.kind == "denoise":
            return {"noisy input": to_uint8(degraded)}
        if self.kind == "demosaic":
            return {"mosaiced input": degraded, "bilinear": degradations.bilinear_demosaic(degraded, self.bayer_pattern)}
        return {"jpeg input": degraded}

    def score(self, output: np.ndarray, target: np.ndarray) -> tuple[float, float]:
        return metrics.score(self.kind, output, target, scale=self.scale)


_PATTERNS = {
    r"sr_x(?P<scale>\d+)": lambda m: Task("sr", scale=int(m["scale"])),
    r"denoise_(?P<color>color|gray)_s(?P<sigma>\d+(\.\d+)?)": lambda m: Task(
        "denoise", color="rgb" if m["color"] == "color" else "gray", sigma=float(m["sigma"])
    ),
    r"demosaic": lambda m: Task("demosaic"),
    r"jpeg_q(?P<quality>\d+)": lambda m: Task("jpeg", color="gray", quality=int(m["quality"])),
}


def parse_task(name: str) -> Task:
    for pattern, build in _PATTERNS.items():
        match = re.fullmatch(pattern, name)
        if match:
            return build(match)
    raise ValueError(
        f"unknown task {name!r}; expected sr_x2|sr_x3|sr_x4, denoise_color_sN, denoise_gray_sN, demosaic or jpeg_qN"
    )
