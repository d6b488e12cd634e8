"""ACLA module latency at inference against the fraction of open keys (closed keys are not gathered).

One ``acla`` module (C = 64, R = 4 references, K = 9 keys, as at the last of the four stages of
EDSR-baseline) on a 180x320 feature map, eval mode, no autograd. The gate logits are set so that exactly
the given fraction of each query's R*K keys is open (fraction 0: one key, as trained gates mostly leave). Five
paths, timed in interleaved rounds: the fused C++ walk (CPU: gates, the open keys' offsets and logits, the softmax
over them and their bilinear sum in one pass per query, W_v folded into W_z), the same walk with every key's offsets
and logits projected before it (as under ``torch.compile``), the fast path with the C++ gather kernel only (it skips
weight-0 keys; the gates and softmax in torch), the fast path in pure torch (packed bags of the open keys), and the
reference path (every key gathered, closed ones weighted 0). Every fraction and path is timed in the same
interleaved rounds (one module per fraction), so that the ratios between fractions do not hold the machine's drift.
``--channels-last``: query and references in channels-last memory, as a channels-last network hands them (the
fused walk then copies none), results in ``open_keys_<device>_channels_last.csv``.
Usage: ``python -m benchmarks.bench_open_keys [--device cuda] [--repeats 3] [--channels-last]``.
"""

from __future__ import annotations

import statistics
from contextlib import nullcontext
from copy import deepcopy

import pandas as pd
import seaborn as sns
import torch

from acla.models import build_attention
from acla.ops import extension
from benchmarks.common import (
    device_name,
    inference_arguments,
    interleaved_samples,
    round_ratio_range,
    save_figure,
    with_every_key_projected,
    without_fused_walk,
    write_csv,
)

FRACTIONS = (0.0, 0.1, 0.25, 0.5, 0.75, 1.0)  # 0: one key open


def run(device: torch.device, height: int, width: int, channels: int, refs: int, keys: int,
        repeats: int, channels_last: bool = False) -> pd.DataFrame:
    torch.manual_seed(0)
    module = build_attention("acla", channels, refs, num_keys=keys).to(device).eval()
    layout = torch.channels_last if channels_last else torch.contiguous_format
    query, *reference_maps = (torch.randn(1, channels, height, width, device=device).contiguous(memory_format=layout)
                              for _ in range(refs + 1))
    kernel = extension.load() if device.type == "cpu" else None
    paths = {"fused C++ walk": kernel, "fused C++ walk, every key projected": kernel, "fast, C++ gather kernel": kernel,
             "fast, pure torch": None, "reference (dense)": None} if kernel else {"fast, pure torch": None,
                                                                                 "reference (dense)": None}
    switches = {"fast, C++ gather kernel": without_fused_walk,
                "fused C++ walk, every key projected": with_every_key_projected}
    opened = {fraction: max(1, round(fraction * refs * keys)) for fraction in FRACTIONS}
    modules = {fraction: with_open_keys(module, count) for fraction, count in opened.items()}

    def call(fraction: float, path: str):
        def step() -> None:
            extension._kernel = paths[path]
            modules[fraction].fast = not path.startswith("reference")
            with switches.get(path, nullcontext)(), torch.inference_mode():
                modules[fraction](query, reference_maps)

        return step

    steps = {(fraction, path): call(fraction, path) for fraction in FRACTIONS for path in paths}
    try:  # every fraction and path in the same rounds: the ratios between fractions see the same drift
        samples = interleaved_samples(steps, device, repeats)
    finally:
        extension._kernel = kernel
    spread = {(fraction, path): round_ratio_range(samples[(fraction, path)], samples[(1.0, path)])
              for fraction, path in steps}  # relative to all open, round by round
    rows = [{"path": path, "open_fraction": opened[fraction] / (refs * keys), "open_keys": opened[fraction],
             "seconds": statistics.median(samples[(fraction, path)]),
             "relative_low": spread[(fraction, path)][0], "relative_high": spread[(fraction, path)][1],
             "rounds": repeats, "size": f"{width}x{height}", "channels": channels, "refs": refs,
             "keys": keys, "device": device_name(device),
             "layout": "channels-last" if channels_last else "contiguous (NCHW)"} for fraction, path in steps]
    frame = pd.DataFrame(rows)
    all_open = frame[frame.open_fraction == 1.0].set_index("path")["seconds"]
    frame["relative_to_all_open"] = frame["seconds"] / frame["path"].map(all_open)
    print(frame.to_string(), flush=True)
    return frame


def with_open_keys(module: torch.nn.Module, opened: int) -> torch.nn.Module:
    """A copy of ``module`` whose gates open exactly ``opened`` keys (the same random ones) at every query."""
    copy = deepcopy(module)
    with torch.no_grad():
        copy.gate.weight.zero_()
        copy.gate.bias.fill_(-10.0)
        copy.gate.bias[torch.randperm(copy.keys_per_query)[:opened]] = 10.0
    return copy


def main() -> None:
    parser = inference_arguments(__doc__, repeats=3)
    parser.add_argument("--channels", type=int, default=64)
    parser.add_argument("--refs", type=int, default=4)
    parser.add_argument("--keys", type=int, default=9)
    parser.add_argument("--channels-last", action="store_true", help="inputs in channels-last memory")
    args = parser.parse_args()
    device = torch.device(args.device)
    frame = run(device, args.height, args.width, args.channels, args.refs, args.keys, args.repeats, args.channels_last)
    suffix = "_channels_last" if args.channels_last else ""
    write_csv(frame, f"open_keys_{device.type}{suffix}.csv")
    grid = sns.relplot(data=frame, x="open_fraction", y="seconds", hue="path", kind="line", marker="o", height=3.5,
                       aspect=1.5)
    grid.set(ylim=(0, None), xlabel="fraction of open keys", ylabel="module latency (s)")
    grid.figure.suptitle(f"One ACLA module, C={args.channels}, R={args.refs}, K={args.keys}, {args.width}x{args.height};"
                         f" {frame['layout'].iloc[0]} inputs; {frame['device'].iloc[0]}", y=1.03)
    save_figure(grid.figure, f"open_keys_{device.type}{suffix}.png")


if __name__ == "__main__":
    main()
