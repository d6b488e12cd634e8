"""Benchmark (c): what ACLA adds to EDSR-baseline x2 at a 320x180 LR input (a 640x360 output).

Inference (eval mode, no autograd): parameters, forward FLOPs (``acla.efficiency``), median latency
and peak memory, backbone alone vs with modules at the authors' four stages and after every block,
eager and under ``torch.compile`` (``--no-compile``: eager only; the compile time is not in the latency).
Usage: ``python benchmarks/bench_overhead.py [--device cuda] [--repeats 3]``.
"""

from __future__ import annotations

import pandas as pd
import seaborn as sns
import torch

from acla.efficiency import count_flops, peak_memory_bytes
from acla.models import build_model
from benchmarks.common import (
    device_name,
    gather_implementation,
    inference_arguments,
    interleaved_seconds,
    save_figure,
    write_csv,
)

CONFIGURATIONS = (
    ("EDSR-baseline", "none", "none"),
    ("+ CLA, four stages", "cla", "four-stages"),
    ("+ ACLA, four stages", "acla", "four-stages"),
    ("+ ACLA, every block", "acla", "every"),
)


def run(device: torch.device, height: int, width: int, repeats: int, compiled: bool) -> pd.DataFrame:
    models = []
    for label, attention, insert in CONFIGURATIONS:
        torch.manual_seed(0)
        model = build_model("sr", "edsr-baseline", attention=attention, insert=insert, scale=2).to(device).eval()
        models.append(torch.compile(model, dynamic=False) if compiled else model)
    x = torch.rand(1, 3, height, width, device=device)

    def forward(model: torch.nn.Module):
        def step() -> None:
            with torch.inference_mode():
                model(x)

        return step

    seconds = interleaved_seconds({label: forward(model) for (label, _, _), model in zip(CONFIGURATIONS, models)},
                                  device, repeats)
    rows = []
    for (label, attention, insert), model in zip(CONFIGURATIONS, models):
        rows.append({"model": label, "attention": attention, "insert": insert,
                     "params": sum(p.numel() for p in model.parameters()),
                     "gflops": count_flops(forward(getattr(model, "_orig_mod", model))) / 1e9,
                     "latency_s": seconds[label], "peak_mib": peak_memory_bytes(forward(model), device) / 2**20,
                     "input": f"{width}x{height}", "mode": "compiled" if compiled else "eager",
                     "device": device_name(device), "gather": gather_implementation(device)})
        print(rows[-1], flush=True)
    frame = pd.DataFrame(rows)
    base = frame.iloc[0]
    for column, new in (("params", "params_overhead_pct"), ("gflops", "flops_overhead_pct"),
                        ("latency_s", "latency_overhead_pct"), ("peak_mib", "memory_overhead_pct")):
        frame[new] = 100 * (frame[column] / base[column] - 1)
    return frame


def main() -> None:
    parser = inference_arguments(__doc__, repeats=5)
    parser.add_argument("--no-compile", action="store_true", help="eager rows only")
    args = parser.parse_args()
    device = torch.device(args.device)
    frame = pd.concat([run(device, args.height, args.width, args.repeats, compiled)
                       for compiled in ((False,) if args.no_compile else (False, True))], ignore_index=True)
    write_csv(frame, f"overhead_{device.type}.csv")
    overheads = frame[frame.attention != "none"].melt(
        id_vars=["model", "mode"],
        value_vars=["params_overhead_pct", "flops_overhead_pct", "latency_overhead_pct", "memory_overhead_pct"],
        var_name="cost", value_name="overhead (%)",
    )
    overheads["cost"] = overheads["cost"].str.replace("_overhead_pct", "")
    grid = sns.catplot(data=overheads, x="cost", y="overhead (%)", hue="model", col="mode", kind="bar", height=3.5,
                       aspect=1.3)
    grid.figure.suptitle(f"Added to EDSR-baseline x2 at {args.width}x{args.height}; {device_name(device)}", y=1.03)
    save_figure(grid.figure, f"overhead_{device.type}.png")


if __name__ == "__main__":
    main()
