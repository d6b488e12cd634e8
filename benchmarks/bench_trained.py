"""Benchmark (f): inference of a profile's trained SR models, where ACLA's gates are the ones training left.

The fresh modules of (c) keep every gate open (gate bias 2); a trained ACLA closes keys, so what it costs at
inference can only be measured on trained weights. This loads the backbone and +ACLA (first headline seed)
that a profile's ``retrain`` stage wrote (default: the ``cpu`` profile, ``runs/cpu/sr``), and times them at a
320x180 LR input in interleaved rounds, eval mode, no autograd, NCHW and channels-last (as (c)): the backbone,
+ACLA on the fused C++ walk (the open keys' offsets and logits projected in the walk), on the fused walk with every
key's projected first (what ``torch.compile`` runs), and on the gather-kernel-only path (the fused walk switched
off), each against the backbone of the same round. It also records the keys the trained gates leave open per
query. It needs those checkpoints, so ``python -m benchmarks`` does not run it.
Usage: ``ACLA_DATA=... python -m benchmarks.bench_trained [--profile cpu] [--runs runs] [--repeats 15]``.
"""

from __future__ import annotations

import pandas as pd
import torch

from acla.engine.efficiency import count_flops
from acla.models.attention import SampledCrossLayerAttention
from acla.study.steps import open_task
from benchmarks.common import (
    MEMORY_FORMATS,
    against_baseline,
    device_name,
    inference_step,
    interleaved_samples,
    parse_trained,
    trained_arguments,
    with_every_key_projected,
    without_fused_walk,
    write_csv,
)

MODES = ("eager", "eager, channels-last")


def run(profile: str, runs: str, height: int, width: int, repeats: int) -> pd.DataFrame:
    study = open_task("sr", "params.yaml", profile=profile, runs=runs, progress=False)
    setting = study.settings[0]
    rows, gflops, opened = [], {}, ""
    for mode in MODES:  # (c)'s eager modes: the trained gates in the layout (c) recommends too
        memory_format = MEMORY_FORMATS[mode]
        backbone, acla = (study.model(setting, label).to(memory_format=memory_format) for label in ("backbone", "acla"))
        x = torch.rand(1, 3, height, width).contiguous(memory_format=memory_format)

        steps = {"backbone": inference_step(backbone, x), "+ ACLA, fused C++ walk": inference_step(acla, x),
                 "+ ACLA, fused C++ walk, every key projected": inference_step(acla, x, path=with_every_key_projected),
                 "+ ACLA, C++ gather kernel only": inference_step(acla, x, path=without_fused_walk)}
        samples = interleaved_samples(steps, torch.device("cpu"), repeats)
        if not gflops:  # FLOPs and open keys do not depend on the layout: counted once
            steps["+ ACLA, fused C++ walk"]()  # the open-key counts of the path that inference takes
            modules = [m for m in acla.modules() if isinstance(m, SampledCrossLayerAttention)]
            opened = " ".join(f"{float(m.open_keys):.2f}/{m.keys_per_query}" for m in modules)
            gflops = {name: count_flops(step) / 1e9 for name, step in steps.items()}
        for name in steps:  # against the backbone, round by round
            rows.append({"model": name, "mode": mode, "gflops": gflops[name],
                         "flops_overhead_pct": 100 * (gflops[name] / gflops["backbone"] - 1),
                         **against_baseline(samples, name, "backbone"), "setting": setting,
                         "profile": profile, "backbone": study.config.model.backbone,
                         "inserted_after": " ".join(map(str, study.searched(setting).insert)), "open_keys": opened,
                         "input": f"{width}x{height}", "device": device_name(torch.device("cpu"))})
            print(rows[-1], flush=True)
    return pd.DataFrame(rows)


def main() -> None:
    parser = trained_arguments(__doc__, profile="cpu", repeats=15)
    args = parse_trained(parser)
    frame = run(args.profile, args.runs, args.height, args.width, args.repeats)
    write_csv(frame, "trained_cpu.csv")

if __name__ == "__main__":
    main()
