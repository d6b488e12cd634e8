"""Shared bits of the benchmark scripts: timing, memory, where results go."""

from __future__ import annotations

import argparse
import platform
from pathlib import Path

import pandas as pd
import torch

from acla.efficiency import median_seconds, peak_memory_bytes
from acla.files import atomic_save_figure, atomic_write_text

RESULTS = Path(__file__).resolve().parents[1] / "reports" / "benchmarks"


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


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


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
    path = RESULTS / name
    atomic_write_text(path, frame.to_csv(index=False))
    return path


def save_figure(figure, name: str) -> Path:
    return atomic_save_figure(figure, RESULTS / name)
