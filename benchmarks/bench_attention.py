"""Benchmark (a): attention cost against feature size, forward + backward, same references.

``acla`` and ``cla`` sample K keys per reference (linear in H*W); ``cla-dense`` attends to every
position of every reference and ``nonlocal`` to every position of the query map (quadratic).
Usage: ``python -m benchmarks.bench_attention [--device cuda] [--sizes 32 48 64 96 128]``.
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import pandas as pd
import seaborn as sns
import torch

from acla.models import build_attention
from benchmarks.common import attention_arguments, device_name, forward_backward, measure, save_figure, write_csv

VARIANTS = ("acla", "cla", "cla-dense", "nonlocal")


class WithReferences(torch.nn.Module):
    """module(query) with fixed reference maps, so every variant is called the same way."""

    def __init__(self, attention: torch.nn.Module, refs: list[torch.Tensor]) -> None:
        super().__init__()
        self.attention, self.refs = attention, refs

    def forward(self, query: torch.Tensor) -> torch.Tensor:
        return self.attention(query, self.refs)


def run(sizes: list[int], device: torch.device, channels: int, refs: int, keys: int, repeats: int) -> pd.DataFrame:
    rows = []
    for size in sizes:
        generator = torch.Generator().manual_seed(size)
        query, *reference_maps = (
            torch.randn(1, channels, size, size, generator=generator).to(device) for _ in range(refs + 1)
        )
        query.requires_grad_()
        for variant in VARIANTS:
            torch.manual_seed(0)
            options = {"num_keys": keys} if variant in ("cla", "acla") else {}
            attention = build_attention(variant, channels, refs, **options).to(device).train()
            for parameter in attention.parameters():  # leave the zero init, so gradients reach every branch
                torch.nn.init.normal_(parameter, std=0.05)
            step = forward_backward(WithReferences(attention, reference_maps), [query])
            seconds, peak = measure(step, device, repeats)
            rows.append({"variant": variant, "size": size, "positions": size * size, "seconds": seconds,
                         "peak_mib": peak / 2**20, "channels": channels, "refs": refs, "keys": keys,
                         "device": device_name(device)})
            print(f"{size:4d}^2 {variant:10s} {seconds * 1e3:10.1f} ms {peak / 2**20:10.1f} MiB", flush=True)
    return pd.DataFrame(rows)


def main() -> None:
    args = attention_arguments(__doc__, sizes=[32, 48, 64, 96, 128], channels=32, repeats=3).parse_args()
    device = torch.device(args.device)
    frame = run(args.sizes, device, args.channels, args.refs, args.keys, args.repeats)
    tag = device.type
    write_csv(frame, f"attention_cost_{tag}.csv")
    figure, axes = plt.subplots(1, 2, figsize=(11, 4))
    for axis, column, label in ((axes[0], "seconds", "forward+backward time (s)"), (axes[1], "peak_mib", "peak memory (MiB)")):
        sns.lineplot(data=frame, x="positions", y=column, hue="variant", marker="o", ax=axis)
        axis.set(xscale="log", yscale="log", xlabel="feature positions H*W", ylabel=label)
    figure.suptitle(f"Attention cost, C={args.channels}, R={args.refs}, K={args.keys}; {device_name(device)}")
    save_figure(figure, f"attention_cost_{tag}.png")


if __name__ == "__main__":
    main()
