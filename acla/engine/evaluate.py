"""Scoring trained models on benchmark sets, with tiled inference for large images.

``evaluate`` writes per-image and mean PSNR/SSIM CSVs for every test set of a task (self-ensemble x8
optional) and saves a few output crops; ``restore`` runs one image file through a model. Both can run
the network on overlapping tiles, so attention models fit in memory on Urban100- or DIV2K-sized
images: each tile is processed with ``overlap`` pixels of context on every side and only its centre is
kept, so a convolutional model whose receptive field fits in the overlap gives exactly the full-image
result.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from PIL import Image

from acla.data import open_set
from acla.data.sets import SETS, available_sets
from acla.files import atomic_open, atomic_write_text
from acla.images import read_image, restore_image
from acla.tasks import Task, parse_task

# The benchmarks of each task kind, in the literature's order (docs/method.md#schedule).
TEST_SETS = {
    "sr": ("Set5", "Set14", "B100", "Urban100"),
    "denoise_color": ("CBSD68", "Kodak24", "McMaster", "Urban100"),
    "denoise_gray": ("Set12", "BSD68"),
    "demosaic": ("McMaster", "Kodak24", "CBSD68", "Urban100"),
    "jpeg": ("LIVE1", "Classic5"),
}


def test_sets(task: Task, data_root: Path | None) -> list[str]:
    """The task's benchmark sets that the data root holds; the bundled test images without one."""
    key = task.kind if task.kind != "denoise" else f"denoise_{'color' if task.color == 'rgb' else 'gray'}"
    present = set(available_sets(data_root))
    names = [name for name in TEST_SETS[key] if name in present and name in SETS]
    return names or ["bundled-test"]


def automatic_tile(model: torch.nn.Module, device: torch.device, channels: int = 64) -> int:
    """A tile side for CUDA from free memory (a rough 40 float activations per pixel and channel)."""
    if device.type != "cuda":
        return 0
    free, _ = torch.cuda.mem_get_info(device)
    return max(64, int((free * 0.5 / (4 * 40 * channels)) ** 0.5) // 8 * 8)


@torch.no_grad()
def tiled_forward(model: torch.nn.Module, x: torch.Tensor, *, tile: int, overlap: int, scale: int = 1) -> torch.Tensor:
    """``model(x)`` computed on ``tile`` x ``tile`` input tiles with ``overlap`` pixels of context."""
    if tile <= 0 or (x.shape[-2] <= tile and x.shape[-1] <= tile):
        return model(x)
    if overlap < 0:
        raise ValueError(f"tile overlap must be >= 0, got {overlap}")
    height, width = x.shape[-2:]
    out = None
    for top in range(0, height, tile):
        for left in range(0, width, tile):
            bottom, right = min(top + tile, height), min(left + tile, width)
            y0, x0 = max(top - overlap, 0), max(left - overlap, 0)
            y1, x1 = min(bottom + overlap, height), min(right + overlap, width)
            piece = model(x[..., y0:y1, x0:x1])
            if out is None:
                out = piece.new_zeros(*piece.shape[:2], height * scale, width * scale)
            out[..., top * scale : bottom * scale, left * scale : right * scale] = piece[
                ..., (top - y0) * scale : (bottom - y0) * scale, (left - x0) * scale : (right - x0) * scale
            ]
    return out


def dihedral(x: torch.Tensor, index: int) -> torch.Tensor:
    x = torch.rot90(x, index % 4, dims=(-2, -1))
    return x.flip(-1) if index >= 4 else x


def undo_dihedral(x: torch.Tensor, index: int) -> torch.Tensor:
    x = x.flip(-1) if index >= 4 else x
    return torch.rot90(x, -(index % 4), dims=(-2, -1))


@dataclass(frozen=True)
class Inference:
    """How to run the network at test time."""

    tile: int = 0  # 0: whole image (or, on CUDA, an automatic tile size when ``auto_tile``)
    overlap: int = 16
    self_ensemble: bool = False  # average the 8 flips/rotations (x8)
    auto_tile: bool = False

    def run(self, model: torch.nn.Module, x: torch.Tensor, scale: int) -> torch.Tensor:
        tile = automatic_tile(model, x.device) if self.auto_tile and not self.tile else self.tile
        if not self.self_ensemble:
            return tiled_forward(model, x, tile=tile, overlap=self.overlap, scale=scale)
        outputs = [undo_dihedral(tiled_forward(model, dihedral(x, i), tile=tile, overlap=self.overlap, scale=scale), i)
                   for i in range(8)]
        return torch.stack(outputs).mean(0)


def save_png(path: Path, image: np.ndarray) -> None:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    with atomic_open(path, "wb") as handle:
        handle.write(buffer.getvalue())


def centre(image: np.ndarray, size: int) -> np.ndarray:
    """The central ``size`` x ``size`` part of an image (the visual-comparison crop)."""
    top, left = (max((side - size) // 2, 0) for side in image.shape[:2])
    return image[top : top + size, left : left + size]


@torch.no_grad()
def evaluate(model: torch.nn.Module, task_name: str, out_dir: str | Path, *, data_root: Path | None = None,
             sets: list[str] | None = None, inference: Inference = Inference(), seed: int = 0, crops: int = 2,
             crop_size: int = 96, verify: bool = True, device: str | torch.device = "cpu", crop: int = 0) -> pd.DataFrame:
    """Score ``model`` on every test set of the task; writes ``per_image.csv``, ``mean.csv`` and crops.

    ``crop`` > 0 centre-crops every test image first (labelled in the set name); ``crops`` output
    crops of ``crop_size`` are saved per set for the visual comparison."""
    task = parse_task(task_name)
    out_dir = Path(out_dir)
    device = torch.device(device)
    model = model.to(device).eval()
    channels = 3 if task.color == "rgb" else 1
    rows = []
    for set_name in sets or test_sets(task, data_root):
        image_set = open_set(set_name, data_root, verify=verify, crop=crop)
        for index, (name, image) in enumerate(image_set):
            target, degraded = task.benchmark_pair(image, set_name, name, seed)
            restored = restore_image(lambda x: inference.run(model, x, task.scale), degraded, target, channels, device)
            psnr, ssim = task.score(restored, target)
            rows.append({"task": task.name, "set": image_set.label, "image": name, "psnr": psnr, "ssim": ssim,
                         "self_ensemble": inference.self_ensemble})
            if index < crops:
                save_png(out_dir / "crops" / f"{set_name}_{name}.png", centre(restored, crop_size))
    per_image = pd.DataFrame(rows)
    mean = per_image.groupby(["task", "set", "self_ensemble"], sort=False).agg(
        psnr=("psnr", "mean"), ssim=("ssim", "mean"), n_images=("image", "count")).reset_index()
    atomic_write_text(out_dir / "per_image.csv", per_image.to_csv(index=False, float_format="%.17g"))
    atomic_write_text(out_dir / "mean.csv", mean.to_csv(index=False, float_format="%.17g"))
    return mean


@torch.no_grad()
def restore(model: torch.nn.Module, task_name: str, source: str | Path, destination: str | Path, *,
            inference: Inference = Inference(), device: str | torch.device = "cpu") -> np.ndarray:
    """Run one degraded image file (LR / noisy / mosaiced / JPEG) through the model into ``destination``."""
    task = parse_task(task_name)
    device = torch.device(device)
    model = model.to(device).eval()
    degraded = read_image(source, "L" if task.color == "gray" else "RGB")
    channels = 3 if task.color == "rgb" else 1
    restored = restore_image(lambda x: inference.run(model, x, task.scale), degraded, degraded, channels, device)
    save_png(Path(destination), restored)
    return restored
