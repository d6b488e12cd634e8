"""Benchmark (c): what ACLA adds to EDSR-baseline x2 at a 320x180 LR input (a 640x360 output).

Inference (eval mode, no autograd): parameters, forward FLOPs (``acla.engine.efficiency``), median latency
and peak memory, backbone alone vs with modules at the authors' four stages and after every block, in
three modes: eager, eager with channels-last memory (model and input: the convolutions' fast layout on CPU,
and the layout ACLA reads its references in, so it copies none), and under ``torch.compile``
(``--no-compile``: the eager modes only; the compile time is not in the latency).
Usage: ``python -m benchmarks.bench_overhead [--device cuda] [--repeats 3]``.
"""

from __future__ import annotations

import statistics

import pandas as pd
import seaborn as sns
import torch

from acla.engine.efficiency import count_flops, peak_memory_bytes
from acla.models import build_model
from benchmarks.common import (
    MEMORY_FORMATS,
    device_name,
    gather_implementation,
    inference_arguments,
    inference_step,
    interleaved_samples,
    round_ratio_range,
    save_figure,
    write_csv,
)

CONFIGURATIONS = (
    ("EDSR-baseline", "none", "none"),
    ("+ CLA, four stages", "cla", "four-stages"),
    ("+ ACLA, four stages", "acla", "four-stages"),
    ("+ ACLA, every block", "acla", "every"),
)


MODES = tuple(MEMORY_FORMATS)  # eager, eager channels-last, compiled


def run(device: torch.device, height: int, width: int, repeats: int, mode: str) -> pd.DataFrame:
    memory_format = MEMORY_FORMATS[mode]
    models = []
    for label, attention, insert in CONFIGURATIONS:
        torch.manual_seed(0)
        model = build_model("sr", "edsr-baseline", attention=attention, insert=insert, scale=2).to(device).eval()
        model = model.to(memory_format=memory_format)
        models.append(torch.compile(model, dynamic=False) if mode == "compiled" else model)
    x = torch.rand(1, 3, height, width, device=device).contiguous(memory_format=memory_format)
    steps = {label: inference_step(model, x) for (label, _, _), model in zip(CONFIGURATIONS, models)}
    samples = interleaved_samples(steps, device, repeats)
    backbone = samples[CONFIGURATIONS[0][0]]
    rows = []
    for (label, attention, insert), model in zip(CONFIGURATIONS, models):
        low, high = round_ratio_range(samples[label], backbone)  # this model over the backbone, round by round
        rows.append({"model": label, "attention": attention, "insert": insert,
                     "params": sum(p.numel() for p in model.parameters()),
                     "gflops": count_flops(inference_step(getattr(model, "_orig_mod", model), x)) / 1e9,
                     "latency_s": statistics.median(samples[label]),
                     "latency_overhead_low_pct": 100 * (low - 1), "latency_overhead_high_pct": 100 * (high - 1),
                     "rounds": repeats, "peak_mib": peak_memory_bytes(inference_step(model, x), device) / 2**20,
                     "input": f"{width}x{height}", "mode": mode,
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
    parser.add_argument("--no-compile", action="store_true", help="the eager modes only")
    args = parser.parse_args()
    device = torch.device(args.device)
    modes = [mode for mode in MODES if not (args.no_compile and mode == "compiled")]
    frame = pd.concat([run(device, args.height, args.width, args.repeats, mode) for mode in modes], ignore_index=True)
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
