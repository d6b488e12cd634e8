"""Training patches: random crops of clean images, augmented, degraded on the fly.

Each sample draws its randomness from a generator seeded by (seed, epoch, index), so a sample is the
same whichever worker or rank produces it, and an interrupted run resumes on the same data.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from acla.images import gray_to_rgb, to_tensor
from acla.tasks import Task


def augment(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Random horizontal flip, vertical flip and transpose: the 8 dihedral transforms."""
    if rng.random() < 0.5:
        image = image[:, ::-1]
    if rng.random() < 0.5:
        image = image[::-1]
    if rng.random() < 0.5:
        image = image.swapaxes(0, 1)
    return np.ascontiguousarray(image)


class PatchDataset(Dataset):
    """``length`` random (degraded, clean) patch pairs as (C, h, w) float tensors in 0..1.

    ``patch_size`` is the side of the clean (HR) patch; for SR the input is ``patch_size / scale``.
    """

    def __init__(
        self,
        images: Sequence[np.ndarray],
        task: Task,
        *,
        patch_size: int,
        length: int,
        seed: int = 0,
        augment: bool = True,
        names: Sequence[str] | None = None,
    ) -> None:
        if not images:
            raise ValueError("PatchDataset needs at least one image")
        if patch_size < 1 or patch_size % task.scale:
            raise ValueError(f"patch_size must be a positive multiple of the scale {task.scale}, got {patch_size}")
        if length < 1:
            raise ValueError(f"length (samples per epoch) must be >= 1, got {length}")
        names = list(names) if names is not None else [f"image {i}" for i in range(len(images))]
        # The network sees task.channels channels: gray images of an RGB task are replicated.
        self.targets = [
            gray_to_rgb(target) if task.channels == 3 else target
            for target in (task.target(image, source) for image, source in zip(images, names))
        ]
        for target, source in zip(self.targets, names):
            if min(target.shape[:2]) < patch_size:
                raise ValueError(f"patch_size {patch_size} is larger than {source} ({target.shape[1]}x{target.shape[0]})")
        self.task = task
        self.patch_size = patch_size
        self.length = length
        self.seed = seed
        self.augment = augment
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        rng = np.random.default_rng([self.seed, self.epoch, index])
        target = self.targets[rng.integers(len(self.targets))]
        height, width = target.shape[:2]
        step = self.task.scale  # SR crops start on the LR grid, like cropping the LR and HR together
        top = rng.integers((height - self.patch_size) // step + 1) * step
        left = rng.integers((width - self.patch_size) // step + 1) * step
        patch = target[top : top + self.patch_size, left : left + self.patch_size]
        if self.augment:
            patch = augment(patch, rng)
        return to_tensor(self.task.degrade(patch, rng)), to_tensor(patch)
