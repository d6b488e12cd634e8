"""Benchmark (c): what ACLA adds to EDSR-baseline x2 at a 320x180 LR input (a 640x360 output).

Inference (eval mode, no autograd): parameters, forward FLOPs (``acla.efficiency``), median latency
and peak memory, backbone alone vs with modules at the authors' four stages and after every block.
Usage: ``python benchmarks/bench_overhead.py [--device cuda] [--repeats 3]``.
"""

from __future__ import annotations

import argparse

import pandas as pd
import torch

from acla.efficiency import profile
from acla.models import build_model
from benchmarks.common import device_name, write_csv

CONFIGURATIONS = (
    ("EDSR-baseline", "none", "none"),
    ("+ CLA, four stages", "cla", "four-stages"),
    ("+ ACLA, four stages", "acla", "four-stages"),
    ("+ ACLA, every block", "acla", "every"),
)


def run(device: torch.device, height: int, width: int, repeats: int) -> pd.DataFrame:
    rows = []
    for label, attention, insert in CONFIGURATIONS:
        torch.manual_seed(0)
        model = build_model("sr", "edsr-baseline", attention=attention, insert=insert, scale=2)
        result = profile(model, (1, 3, height, width), device=device, repeats=repeats)
        rows.append({"model": label, "attention": attention, "insert": insert, "params": result.params,
                     "gflops": result.flops / 1e9, "latency_s": result.latency_s,
                     "peak_mib": result.peak_memory_bytes / 2**20, "input": f"{width}x{height}",
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
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    device = torch.device(args.device)
    write_csv(run(device, args.height, args.width, args.repeats), f"overhead_{device.type}.csv")


if __name__ == "__main__":
    main()
