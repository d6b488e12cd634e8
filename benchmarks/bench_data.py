"""Training patches at DIV2K's size: samples per second of one DataLoader worker, and the workers a GPU needs.

``acla.data.patches.PatchDataset`` decodes every training image once, when training starts, and keeps them as
uint8 arrays; a sample is then a random crop, a dihedral augmentation, the task's degradation (MATLAB-exact
bicubic for SR, noise, mosaic or JPEG) and two tensors, in the worker, with no image decoded per step. Here the
images are synthetic (random uint8 of DIV2K's typical 2040 x 1356), fewer than DIV2K's 800 because a sample's cost
does not depend on how many images there are (only the memory does: 800 such images are 6.6 GB of uint8, shared
by a worker's fork).

One worker's rate is timed in the main process on one thread (a worker is one process, one thread); the GPU's need
is the batch over its measured training step (``reports/gpu/<device>/speed/speed.csv``, ``training step`` rows),
so the workers that keep it fed are need / rate, rounded up. Usage: ``python -m benchmarks.bench_data
[--images 16] [--samples 400]``.
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from acla.data.patches import PatchDataset
from acla.tasks import parse_task
from benchmarks.common import write_csv

DIV2K_SIZE = (1356, 2040)  # height, width of most DIV2K training images
SETTINGS = (("sr_x2", 96), ("sr_x4", 192), ("denoise_color_s50", 48), ("demosaic", 48), ("jpeg_q10", 48))


def samples_per_second(setting: str, patch: int, images: list[np.ndarray], samples: int) -> float:
    dataset = PatchDataset(images, parse_task(setting), patch_size=patch, length=samples, seed=0)
    dataset[0]  # warm-up: first-call costs (JPEG codec, imports)
    start = time.perf_counter()
    for index in range(samples):
        dataset[index]
    return samples / (time.perf_counter() - start)


def gpu_needs(root: Path) -> pd.DataFrame:
    """Samples per second that each measured GPU training step consumes (batch / seconds)."""
    rows = []
    for path in sorted(root.glob("*/speed/speed.csv")):
        speed = pd.read_csv(path)
        steps = speed[(speed.measure == "training step") & speed.seconds.notna()]
        for row in steps.itertuples():
            rows.append({"device": path.parent.parent.name, "model": row.model, "step": f"{row.input}, {row.mode}",
                         "step_seconds": row.seconds, "needs_samples_per_second": row.batch / row.seconds})
    return pd.DataFrame(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--images", type=int, default=16)
    parser.add_argument("--samples", type=int, default=400)
    args = parser.parse_args()
    torch.set_num_threads(1)
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (*DIV2K_SIZE, 3), dtype=np.uint8) for _ in range(args.images)]
    rows = [{"setting": setting, "hr_patch": patch,
             "samples_per_second_per_worker": samples_per_second(setting, patch, images, args.samples)}
            for setting, patch in SETTINGS]
    rates = pd.DataFrame(rows)
    needs = gpu_needs(Path(__file__).resolve().parents[1] / "reports" / "gpu")
    out = rates.merge(needs, how="cross") if not needs.empty else rates
    if not needs.empty:
        # SR's measured step is at HR 96: it feeds sr_x2 only; the others' steps are not measured, so the row says
        # what the same step rate would need
        out["workers_needed"] = [math.ceil(n / r) for n, r in zip(out.needs_samples_per_second,
                                                                   out.samples_per_second_per_worker)]
    print(out.to_string(index=False))
    write_csv(out, "data_cpu.csv")


if __name__ == "__main__":
    main()
