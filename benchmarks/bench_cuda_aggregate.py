"""CUDA's training aggregate: ``grid_sample_aggregate`` against the reference ops it replaced (``aggregate_keys``,
one ``embedding_bag`` of every tap with the attention and bilinear weights fused), both on the same inputs.

(1) One module's aggregate at the denoising shape (B 16, 48x48, R 4, K 9) with C 32 (tiny) and 64 (EDSR-baseline):
largest differences of the output and each gradient, and forward + backward time (medians of 10 interleaved rounds
after one of warm-up). (2) Eager training steps (``bench_training.training_step``) of the backbone and of + ACLA
with each aggregate, interleaved (10 rounds after one of warm-up): backbone time / ACLA time for each. Prints only;
its run is quoted in reports/gpu/README.md. Usage: ``python -m benchmarks.bench_cuda_aggregate [cuda|cpu]``
(on the CPU the fused walk runs instead: a smoke run).
"""

from __future__ import annotations

import sys
from collections.abc import Callable

import torch

from acla.models.attention import key_grid
from acla.ops import gather
from benchmarks.bench_training import training_step
from benchmarks.common import interleaved_seconds

NEW = gather.grid_sample_aggregate
SETTINGS = (("tiny", "sr", 24), ("tiny", "denoise", 48), ("edsr-baseline", "sr", 24), ("edsr-baseline", "denoise", 48))


def old(values: torch.Tensor, positions: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """The reference ops CUDA trained with before ``grid_sample_aggregate``."""
    return gather.aggregate_keys(values, positions, weights)


def module_inputs(shape: tuple[int, ...], channels: int, device: torch.device) -> list[torch.Tensor]:
    """Values (channels-last), positions around each query's key grid, softmax weights: as a module makes them."""
    batch, height, width, refs, keys = shape
    generator = torch.Generator().manual_seed(0)
    values = torch.randn(batch * refs, channels, height, width, generator=generator)
    ys, xs = torch.meshgrid(torch.arange(height), torch.arange(width), indexing="ij")
    base = torch.stack([xs, ys], -1).float().view(1, height, width, 1, 1, 2) + key_grid(keys).view(1, 1, 1, 1, keys, 2)
    positions = base + torch.randn(batch, height, width, refs, keys, 2, generator=generator) * 1.5
    weights = torch.randn(batch, height, width, refs * keys, generator=generator).softmax(-1).view(shape)
    values = values.contiguous(memory_format=torch.channels_last)
    return [t.to(device).requires_grad_() for t in (values, positions, weights)]


def compare_aggregates(shape: tuple[int, ...], channels: int, device: torch.device) -> None:
    inputs = module_inputs(shape, channels, device)
    results = {}
    for name, aggregate in (("old", old), ("new", NEW)):
        out = aggregate(*inputs)
        results[name] = (out, *torch.autograd.grad(out.square().sum(), inputs))
    differences = [f"{(a - b).abs().max().item():.2e}" for a, b in zip(results["old"], results["new"])]
    print(f"C{channels} largest |old - new| of out, d_values, d_positions, d_weights: {differences}", flush=True)
    steps = {name: (lambda aggregate=aggregate: torch.autograd.grad(aggregate(*inputs).sum(), inputs))
             for name, aggregate in (("old", old), ("new", NEW))}
    medians = interleaved_seconds(steps, device, rounds=10)
    print(f"C{channels} aggregate forward + backward, median ms: "
          + ", ".join(f"{name} {1e3 * value:.2f}" for name, value in medians.items()), flush=True)


def compare_training_steps(backbone: str, task: str, patch: int, device: torch.device, rounds: int) -> None:
    acla = training_step(backbone, task, patch, "acla", "four-stages", device, "eager")

    def with_aggregate(step: Callable[[], None], aggregate: Callable[..., torch.Tensor]) -> Callable[[], None]:
        def run() -> None:
            gather.grid_sample_aggregate = aggregate  # what bilinear_gather calls on CUDA
            step()

        return run

    steps = {"backbone": training_step(backbone, task, patch, "none", "none", device, "eager"),
             "acla old": with_aggregate(acla, old), "acla new": with_aggregate(acla, NEW)}
    try:
        median = interleaved_seconds(steps, device, rounds)
    finally:
        gather.grid_sample_aggregate = NEW
    print(f"{backbone} {task}: median step ms " + ", ".join(f"{n} {1e3 * m:.2f}" for n, m in median.items())
          + f"; backbone/ACLA old {median['backbone'] / median['acla old']:.2f}, "
          f"new {median['backbone'] / median['acla new']:.2f}", flush=True)


def main() -> None:
    device = torch.device(sys.argv[1] if len(sys.argv) > 1 else "cuda")
    smoke = device.type == "cpu"
    for channels in (32, 64):
        compare_aggregates((2, 12, 12, 4, 9) if smoke else (16, 48, 48, 4, 9), channels, device)
    for backbone, task, patch in SETTINGS[:1] if smoke else SETTINGS:
        compare_training_steps(backbone, task, patch, device, rounds=1 if smoke else 10)


if __name__ == "__main__":
    main()
