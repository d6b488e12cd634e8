"""Benchmark (f): inference of a profile's trained SR models, where ACLA's gates are the ones training left.

The fresh modules of (c) keep every gate open (gate bias 2); a trained ACLA closes keys, so what it costs at
inference can only be measured on trained weights. This loads the backbone and +ACLA (first headline seed)
that a profile's ``retrain`` stage wrote (default: the ``cpu`` profile, ``runs/cpu/sr``), and times them at a
320x180 LR input in interleaved rounds, eval mode, no autograd: the backbone, +ACLA on the fused C++ walk, and
+ACLA on the gather-kernel-only path (the fused walk switched off). It also records the keys the trained gates
leave open per query. It needs those checkpoints, so ``python -m benchmarks`` does not run it.
Usage: ``ACLA_DATA=... python -m benchmarks.bench_trained [--profile cpu] [--runs runs] [--repeats 15]``.
"""

from __future__ import annotations

from contextlib import nullcontext

import pandas as pd
import torch

from acla.efficiency import count_flops
from acla.models.attention import SampledCrossLayerAttention
from acla.study import open_task
from benchmarks.common import device_name, inference_arguments, interleaved_seconds, without_fused_walk, write_csv


def run(profile: str, runs: str, height: int, width: int, repeats: int) -> pd.DataFrame:
    study = open_task("sr", "params.yaml", profile=profile, runs=runs, progress=False)
    setting = study.settings[0]
    backbone, acla = study.model(setting, "backbone"), study.model(setting, "acla")
    x = torch.rand(1, 3, height, width)

    def forward(model: torch.nn.Module, fused_walk: bool = True):
        def step() -> None:
            with nullcontext() if fused_walk else without_fused_walk(), torch.inference_mode():
                model(x)

        return step

    steps = {"backbone": forward(backbone), "+ ACLA, fused C++ walk": forward(acla),
             "+ ACLA, C++ gather kernel only": forward(acla, fused_walk=False)}
    seconds = interleaved_seconds(steps, torch.device("cpu"), repeats)
    modules = [m for m in acla.modules() if isinstance(m, SampledCrossLayerAttention)]
    opened = " ".join(f"{float(m.open_keys):.2f}/{m.keys_per_query}" for m in modules)
    gflops = {name: count_flops(step) / 1e9 for name, step in steps.items()}
    rows = [{"model": name, "gflops": gflops[name], "flops_overhead_pct": 100 * (gflops[name] / gflops["backbone"] - 1),
             "latency_s": seconds[name], "overhead_pct": 100 * (seconds[name] / seconds["backbone"] - 1),
             "setting": setting, "profile": profile, "backbone": study.config.model.backbone,
             "inserted_after": " ".join(map(str, study.searched(setting).insert)), "open_keys": opened,
             "input": f"{width}x{height}", "device": device_name(torch.device("cpu"))} for name in steps]
    for row in rows:
        print(row, flush=True)
    return pd.DataFrame(rows)


def main() -> None:
    parser = inference_arguments(__doc__, repeats=15)
    parser.add_argument("--profile", default="cpu", help="the profile whose retrain stage wrote the checkpoints")
    parser.add_argument("--runs", default="runs", help="the checkpoints' root (runs/<profile>/sr/retrain/...)")
    args = parser.parse_args()
    if args.device != "cpu":
        parser.error("the fused walk is the CPU kernel's: --device cpu only")
    frame = run(args.profile, args.runs, args.height, args.width, args.repeats)
    write_csv(frame, "trained_cpu.csv")


if __name__ == "__main__":
    main()
