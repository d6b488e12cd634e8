"""Shared bits of the benchmark scripts: timing, memory, where results go."""

from __future__ import annotations

import argparse
import os
import statistics
from collections.abc import Callable, Hashable
from contextlib import AbstractContextManager, contextmanager, nullcontext
from pathlib import Path

import pandas as pd
import torch

from acla.engine.efficiency import median_seconds, peak_memory_bytes
from acla.files import atomic_save_figure, atomic_write_text
from acla.provenance import device_name  # noqa: F401 - re-exported: every benchmark names its device as the study does

RESULTS = Path(__file__).resolve().parents[1] / "reports" / "benchmarks"

# The inference modes of (c) and (f), and the memory layout of model and input in each.
MEMORY_FORMATS = {"eager": torch.contiguous_format, "eager, channels-last": torch.channels_last,
                  "compiled": torch.contiguous_format}


def attention_arguments(doc: str | None, *, sizes: list[int], channels: int, repeats: int) -> argparse.ArgumentParser:
    """The options every attention benchmark shares: device, feature sizes and module shape."""
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu", help="cpu or cuda[:N]")
    parser.add_argument("--sizes", type=int, nargs="+", default=sizes, help="feature sizes H = W")
    parser.add_argument("--channels", type=int, default=channels)
    parser.add_argument("--refs", type=int, default=2, help="reference maps R")
    parser.add_argument("--keys", type=int, default=9, help="keys per reference K")
    parser.add_argument("--repeats", type=int, default=repeats, help="timed repeats (median reported)")
    return parser


def inference_arguments(doc: str | None, *, repeats: int, input_size: bool = True) -> argparse.ArgumentParser:
    """The options of the inference benchmarks: device, LR input size (unless the input is an image), timed rounds."""
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu", help="cpu or cuda[:N]")
    if input_size:
        parser.add_argument("--height", type=int, default=180)
        parser.add_argument("--width", type=int, default=320)
    parser.add_argument("--repeats", type=int, default=repeats, help="timed rounds (median reported)")
    return parser


def trained_arguments(doc: str | None, *, profile: str, repeats: int,
                      input_size: bool = True) -> argparse.ArgumentParser:
    """The options of the benchmarks that time a profile's trained checkpoints (CPU only: the fused walk is the CPU
    kernel's); ``parse_trained`` refuses another device."""
    parser = inference_arguments(doc, repeats=repeats, input_size=input_size)
    parser.add_argument("--profile", default=profile, help="the profile whose stage wrote the checkpoints")
    parser.add_argument("--runs", default="runs", help="the checkpoints' root (runs/<profile>/<task>/...)")
    return parser


def parse_trained(parser: argparse.ArgumentParser) -> argparse.Namespace:
    args = parser.parse_args()
    if args.device != "cpu":
        parser.error("the fused walk is the CPU kernel's: --device cpu only")
    return args


def against_baseline(samples: dict[Hashable, list[float]], name: Hashable, baseline: Hashable) -> dict[str, float]:
    """Step ``name``'s median seconds and its overhead over ``baseline`` timed in the same rounds: of the medians, and
    the lowest and highest round (``round_ratio_range``), in percent."""
    latency, base = statistics.median(samples[name]), statistics.median(samples[baseline])
    low, high = round_ratio_range(samples[name], samples[baseline])
    return {"latency_s": latency, "overhead_pct": 100 * (latency / base - 1), "overhead_low_pct": 100 * (low - 1),
            "overhead_high_pct": 100 * (high - 1), "rounds": len(samples[name])}


def interleaved_samples(steps: dict[Hashable, Callable[[], None]], device: torch.device,
                        rounds: int) -> dict[Hashable, list[float]]:
    """Seconds of each step in each of ``rounds`` rounds of one call of every step (after a warm-up round), so
    that drift on a shared machine hits every step alike, and a ratio of two steps can be taken round by round."""
    samples: dict[Hashable, list[float]] = {name: [] for name in steps}
    for round_index in range(rounds + 1):
        for name, step in steps.items():
            seconds = median_seconds(step, device, repeats=1, warmup=0)
            if round_index:  # round 0 warms up
                samples[name].append(seconds)
    return samples


def interleaved_seconds(steps: dict[Hashable, Callable[[], None]], device: torch.device,
                        rounds: int) -> dict[Hashable, float]:
    """Median seconds of each step over the rounds of ``interleaved_samples``."""
    return {name: statistics.median(values) for name, values in interleaved_samples(steps, device, rounds).items()}


def round_ratio_range(numerator: list[float], denominator: list[float]) -> tuple[float, float]:
    """The lowest and highest ratio of two steps timed in the same rounds: the spread that a ratio of medians
    hides (on a shared machine one step's speed can change by a quarter between minutes)."""
    ratios = [top / bottom for top, bottom in zip(numerator, denominator, strict=True)]
    return min(ratios), max(ratios)


def gather_implementation(device: torch.device) -> str:
    """Which gather the fast path runs here: the C++ kernel (CPU, where it builds) or the pure-torch path."""
    from acla.ops import extension

    return "C++ kernel" if device.type == "cpu" and extension.load() is not None else "pure torch"


@contextmanager
def answering_false(predicate: str):
    """Every CLA/ACLA module with its method ``predicate`` answering False, so that a benchmark can time another path
    on the same weights."""
    from acla.models.attention import SampledCrossLayerAttention

    original = getattr(SampledCrossLayerAttention, predicate)
    setattr(SampledCrossLayerAttention, predicate, lambda self, *args: False)
    try:
        yield
    finally:
        setattr(SampledCrossLayerAttention, predicate, original)


def without_fused_walk():
    """CLA/ACLA without the fused walk: every module on the gather-kernel path (gates and softmax in torch, training
    and inference)."""
    return answering_false("runs_fused_walk")


def with_every_key_projected():
    """ACLA's fused walk at inference as ``torch.compile`` runs it: the offsets and logits of every key projected in one
    matrix product before the walk (eager inference projects the open keys' alone, in the walk)."""
    return answering_false("skips_closed_keys")


def inference_step(model: torch.nn.Module, *inputs: torch.Tensor,
                   path: Callable[[], AbstractContextManager] = nullcontext) -> Callable[[], None]:
    """A closure running one forward of ``model`` on ``inputs`` without autograd, on the attention path that ``path``
    selects (``without_fused_walk``, ``with_every_key_projected``; by default the one inference takes)."""

    def step() -> None:
        with path(), torch.inference_mode():
            model(*inputs)

    return step


def forward_backward(module: torch.nn.Module, inputs: list[torch.Tensor]):
    """A closure running forward and backward of ``module(*inputs).mean()``."""

    def step() -> None:
        for tensor in inputs:
            tensor.grad = None
        module.zero_grad(set_to_none=True)
        module(*inputs).float().mean().backward()

    return step


def measure(step, device: torch.device, repeats: int) -> tuple[float, int]:
    """(median seconds, peak bytes) of one call of ``step``."""
    return median_seconds(step, device, repeats=repeats, warmup=1), peak_memory_bytes(step, device)


def write_csv(frame: pd.DataFrame, name: str) -> Path:
    """Write ``frame`` beside the README, with the run's conditions from ``$ACLA_BENCH_NOTE`` (e.g. "another
    job was running") in a ``note`` column."""
    frame = frame.assign(note=os.environ.get("ACLA_BENCH_NOTE", ""))
    path = RESULTS / name
    atomic_write_text(path, frame.to_csv(index=False))
    return path


def save_figure(figure, name: str) -> Path:
    return atomic_save_figure(figure, RESULTS / name)
