"""Benchmark (c): what ACLA adds to EDSR-baseline x2 at a 320x180 LR input (a 640x360 output).

Inference (eval mode, no autograd): parameters, forward FLOPs (``acla.efficiency``), median latency
and peak memory, backbone alone vs with modules at the authors' four stages and after every block.
Usage: ``python benchmarks/bench_overhead.py [--device cuda] [--repeats 3]``.
"""

from __future__ import annotations

import argparse
import statistics

import pandas as pd
import seaborn as sns
import torch

from acla.efficiency import count_flops, median_seconds, peak_memory_bytes
from acla.models import build_model
from benchmarks.common import device_name, save_figure, write_csv

CONFIGURATIONS = (
    ("EDSR-baseline", "none", "none"),
    ("+ CLA, four stages", "cla", "four-stages"),
    ("+ ACLA, four stages", "acla", "four-stages"),
    ("+ ACLA, every block", "acla", "every"),
)


def run(device: torch.device, height: int, width: int, repeats: int) -> pd.DataFrame:
    models = []
    for label, attention, insert in CONFIGURATIONS:
        torch.manual_seed(0)
        models.append(build_model("sr", "edsr-baseline", attention=attention, insert=insert, scale=2).to(device).eval())
    x = torch.rand(1, 3, height, width, device=device)

    def forward(model: torch.nn.Module):
        def step() -> None:
            with torch.inference_mode():
                model(x)

        return step

    # Latency in interleaved rounds (one forward of each model per round), so drift of a shared machine
    # hits every model alike; the median over rounds is reported.
    times: list[list[float]] = [[] for _ in models]
    for round_index in range(repeats + 1):
        for model, samples in zip(models, times):
            seconds = median_seconds(forward(model), device, repeats=1, warmup=0)
            if round_index:  # round 0 warms up
                samples.append(seconds)
    rows = []
    for (label, attention, insert), model, samples in zip(CONFIGURATIONS, models, times):
        rows.append({"model": label, "attention": attention, "insert": insert,
                     "params": sum(p.numel() for p in model.parameters()),
                     "gflops": count_flops(forward(model)) / 1e9, "latency_s": statistics.median(samples),
                     "peak_mib": peak_memory_bytes(forward(model), device) / 2**20, "input": f"{width}x{height}",
                     "device": device_name(device)})
        print(rows[-1], flush=True)
    frame = pd.DataFrame(rows)
    base = frame.iloc[0]
    for column, new in (("params", "params_overhead_pct"), ("gflops", "flops_overhead_pct"),
                        ("latency_s", "latency_overhead_pct"), ("peak_mib", "memory_overhead_pct")):
        frame[new] = 100 * (frame[column] / base[column] - 1)
    return frame


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--height", type=int, default=180)
    parser.add_argument("--width", type=int, default=320)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    device = torch.device(args.device)
    frame = run(device, args.height, args.width, args.repeats)
    write_csv(frame, f"overhead_{device.type}.csv")
    overheads = frame.iloc[1:].melt(
        id_vars="model", value_vars=["params_overhead_pct", "flops_overhead_pct", "latency_overhead_pct", "memory_overhead_pct"],
        var_name="cost", value_name="overhead (%)",
    )
    overheads["cost"] = overheads["cost"].str.replace("_overhead_pct", "")
    grid = sns.catplot(data=overheads, x="cost", y="overhead (%)", hue="model", kind="bar", height=3.5, aspect=1.6)
    grid.figure.suptitle(f"Added to EDSR-baseline x2 at {args.width}x{args.height}; {device_name(device)}", y=1.03)
    save_figure(grid.figure, f"overhead_{device.type}.png")


if __name__ == "__main__":
    main()
