"""Benchmark (b): formulations of the same sampled-key aggregation, forward + backward.

    out(p) = sum_{r,k} a_{r,k}(p) * Bilinear(V^r, position_{r,k}(p))

* ``per-key loop``: one ``grid_sample`` per reference and key, weighted and accumulated (the
  structure of the authors' code, without its bugs);
* ``batched grid_sample``: one ``grid_sample`` over all references and keys, then a weighted sum
  over the (B, R, C, K, H, W) samples;
* ``fused gather`` (the reference path, ``acla.ops.gather.aggregate_keys``): bilinear taps as
  rows of a channels-last table, attention and bilinear weights fused, one ``embedding_bag``, autograd
  through every tap op and, on CPU, a sparse-matrix backward for the table;
* ``fast path, pure torch`` (``acla.ops.gather.bilinear_gather`` without the kernel): on CPU the taps
  per corner, one autograd node with a hand-written backward (a quarter of the sort); on CUDA, with
  gradients and weights, ``bilinear_gather`` dispatches to the batched grid_sample (``grid_sample_aggregate``),
  so there this row and that one are one formulation (CUDA rows measured before b3d294b timed the
  ``embedding_bag`` ops instead);
* ``fast path, C++ kernel`` (CPU, where it builds): one walk over the taps, forward and backward.

All get the same inputs (values in NCHW, positions in pixels, weights), are checked to agree,
then timed side by side. Usage: ``python -m benchmarks.bench_sampling [--device cuda] [--sizes 64 96]``.
"""

from __future__ import annotations

import pandas as pd
import seaborn as sns
import torch
import torch.nn.functional as F

from acla.models.attention import key_grid
from acla.ops import extension
from acla.ops.gather import aggregate_keys, bilinear_gather, grid_sample_aggregate, grid_sample_coordinates
from benchmarks.common import attention_arguments, device_name, measure, save_figure, write_csv


def per_key_loop(values: torch.Tensor, positions: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    batch, height, width, refs, keys, _ = positions.shape
    maps = values.view(batch, refs, -1, height, width)
    out = values.new_zeros(batch, values.shape[1], height, width)
    for r in range(refs):
        for k in range(keys):
            grid = grid_sample_coordinates(positions[:, :, :, r, k], height, width)  # (B, H, W, 2)
            sampled = F.grid_sample(maps[:, r], grid, mode="bilinear", padding_mode="zeros", align_corners=False)
            out = out + weights[:, :, :, r, k].unsqueeze(1) * sampled
    return out


def batched_grid_sample(values: torch.Tensor, positions: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Every key of every query in one ``grid_sample``, then the weighted sum: what CUDA trains with."""
    return grid_sample_aggregate(values, positions, weights).permute(0, 3, 1, 2)


def fused_gather(values: torch.Tensor, positions: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    return aggregate_keys(values, positions, weights).permute(0, 3, 1, 2)


def fast_path(kernel: bool):
    def gather(values: torch.Tensor, positions: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        built = extension.load()
        extension._kernel = built if kernel else None
        try:
            return bilinear_gather(values, positions, weights).permute(0, 3, 1, 2)
        finally:
            extension._kernel = built

    return gather


FORMULATIONS = {"per-key loop": per_key_loop, "batched grid_sample": batched_grid_sample, "fused gather": fused_gather,
                "fast path, pure torch": fast_path(kernel=False), "fast path, C++ kernel": fast_path(kernel=True)}


def inputs(size: int, batch: int, channels: int, refs: int, keys: int, device: torch.device) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(size)
    values = torch.randn(batch * refs, channels, size, size, generator=generator)
    ys, xs = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    base = torch.stack([xs, ys], -1).float().view(1, size, size, 1, 1, 2)
    offsets = torch.randn(batch, size, size, refs, keys, 2, generator=generator) * 1.5
    positions = base + key_grid(keys).view(1, 1, 1, 1, keys, 2) + offsets
    weights = torch.randn(batch, size, size, refs * keys, generator=generator).softmax(-1).view(
        batch, size, size, refs, keys
    )
    return [tensor.to(device).requires_grad_() for tensor in (values, positions, weights)]


def run(sizes: list[int], device: torch.device, batch: int, channels: int, refs: int, keys: int, repeats: int) -> pd.DataFrame:
    rows = []
    for size in sizes:
        tensors = inputs(size, batch, channels, refs, keys, device)
        formulations = {name: function for name, function in FORMULATIONS.items()
                        if not name.endswith("kernel") or (device.type == "cpu" and extension.load() is not None)}
        outputs = {name: function(*tensors) for name, function in formulations.items()}
        reference = outputs["per-key loop"]
        for name, output in outputs.items():  # the same maths, or the comparison means nothing
            torch.testing.assert_close(output, reference, atol=1e-4, rtol=1e-4, msg=f"{name} disagrees at {size}")
        for name, function in formulations.items():

            def step(function=function, tensors=tensors) -> None:
                for tensor in tensors:
                    tensor.grad = None
                function(*tensors).mean().backward()

            seconds, peak = measure(step, device, repeats)
            rows.append({"formulation": name, "size": size, "seconds": seconds, "peak_mib": peak / 2**20,
                         "batch": batch, "channels": channels, "refs": refs, "keys": keys, "device": device_name(device)})
            print(f"{size:4d}^2 {name:20s} {seconds * 1e3:9.1f} ms  {peak / 2**20:8.1f} MiB", flush=True)
    frame = pd.DataFrame(rows)
    loop = frame[frame.formulation == "per-key loop"].set_index("size")["seconds"]
    frame["speedup_vs_loop"] = [loop[size] / seconds for size, seconds in zip(frame["size"], frame["seconds"])]
    return frame


def main() -> None:
    parser = attention_arguments(__doc__, sizes=[32, 64, 96], channels=64, repeats=5)
    parser.add_argument("--batch", type=int, default=2)
    args = parser.parse_args()
    device = torch.device(args.device)
    frame = run(args.sizes, device, args.batch, args.channels, args.refs, args.keys, args.repeats)
    tag = device.type
    write_csv(frame, f"sampling_{tag}.csv")
    grid = sns.catplot(data=frame, x="size", y="speedup_vs_loop", hue="formulation", kind="bar", height=3.5, aspect=1.5)
    grid.set_axis_labels("feature size (H = W)", "forward+backward speed-up over the per-key loop")
    grid.figure.suptitle(f"Sampled-key aggregation, {device_name(device)}", y=1.03)
    save_figure(grid.figure, f"sampling_{tag}.png")


if __name__ == "__main__":
    main()
