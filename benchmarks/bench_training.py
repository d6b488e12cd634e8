"""Training step: backbone time / ACLA time, eager, eager channels-last and compiled, for the study's training settings.

Adam + L1 steps (as ``acla.engine.train``) on random tensors (no data loading: the figure is the network's),
batch 16: SR x2 at LR patch 24 and denoising at 48x48, ``tiny`` (8 x 32) and ``edsr-baseline``
(16 x 64), backbone alone and + ACLA at the four stages. The eager rows of one backbone and task are
timed in interleaved rounds (a step of each model per round), so drift on a shared machine hits them
alike; ``eager, channels-last`` rows hold model and batches in channels-last memory (the CPU convolutions'
fast layout); ``compiled`` rows (``torch.compile``, default inductor) also give the compile time (the first
two steps minus two timed steps). Where the C++ kernel builds, the eager rounds also time the ACLA model without
the fused walk (gates and softmax in torch, the gather kernel alone: ``acla, without the fused walk``), and eager
rows give the peak memory of one step. Usage: ``python -m benchmarks.bench_training [--device cuda]
[--no-compile] [--steps 5]``.
"""

from __future__ import annotations

import argparse
import statistics
import time

import pandas as pd
import torch
import torch.nn.functional as F

from acla.engine.efficiency import peak_memory_bytes
from acla.models import build_model
from benchmarks.common import device_name, gather_implementation, round_ratio_range, without_fused_walk, write_csv

SETTINGS = (("tiny", "sr", 24), ("tiny", "denoise", 48), ("edsr-baseline", "sr", 24), ("edsr-baseline", "denoise", 48))
MODELS = (("backbone", "none", "none"), ("acla", "acla", "four-stages"))
MODES = ("eager", "eager, channels-last", "compiled")
GATHER_ONLY = "acla, without the fused walk"  # eager rows only, where the C++ kernel builds


def training_step(backbone: str, task: str, patch: int, attention: str, insert: str, device: torch.device,
                  mode: str, batch: int = 16):
    """A closure running one Adam step of the model on a fixed random batch."""
    torch.manual_seed(0)
    scale = 2 if task == "sr" else 1
    memory_format = torch.channels_last if mode == "eager, channels-last" else torch.contiguous_format
    model = build_model(task, backbone, attention=attention, insert=insert, scale=scale).to(device).train()
    model = model.to(memory_format=memory_format)
    network = torch.compile(model, dynamic=False) if mode == "compiled" else model
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
    inputs = torch.rand(batch, 3, patch, patch, device=device).contiguous(memory_format=memory_format)
    target = torch.rand(batch, 3, patch * scale, patch * scale, device=device).contiguous(memory_format=memory_format)

    def step() -> None:
        loss = F.l1_loss(network(inputs), target)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    return step


def seconds(step) -> float:
    start = time.perf_counter()
    step()
    return time.perf_counter() - start


def without_fused_walk_step(step):
    """``step`` with CLA/ACLA on the gather-kernel path (gates and softmax in torch): what the fused walk replaces."""

    def wrapped() -> None:
        with without_fused_walk():
            step()

    return wrapped


def measure_setting(backbone: str, task: str, patch: int, device: torch.device, mode: str, steps: int) -> list[dict]:
    runs = {}
    if mode == "compiled":
        # compiled afresh per setting, as in a training run; not between its models, whose rounds interleave: a
        # reset there dropped the backbone's compiled code, and it recompiled inside the first timed round
        torch._dynamo.reset()
    for name, attention, insert in MODELS:
        step = training_step(backbone, task, patch, attention, insert, device, mode)
        warmup = seconds(step) + seconds(step)  # compiles here when compiled
        runs[name] = (step, warmup, [])
        if mode == "eager" and attention == "acla" and gather_implementation(device) == "C++ kernel":
            # the same weights without the fused walk, timed in the same rounds
            unfused = without_fused_walk_step(step)
            runs[GATHER_ONLY] = (unfused, seconds(unfused) + seconds(unfused), [])
    for _ in range(steps):  # interleaved rounds
        for step, _, samples in runs.values():
            samples.append(seconds(step))
    rows = []
    backbone_samples = runs["backbone"][2]
    for name, (step, warmup, samples) in runs.items():
        step_s = statistics.median(samples)
        low, high = round_ratio_range(backbone_samples, samples)  # backbone time / this model's, round by round
        rows.append({"backbone": backbone, "task": task, "lr_patch": patch, "batch": 16, "model": name,
                     "mode": mode, "step_s": step_s, "ratio_low": low, "ratio_high": high, "rounds": steps,
                     "compile_s": max(warmup - 2 * step_s, 0.0) if mode == "compiled" else 0.0,
                     "peak_mib": peak_memory_bytes(step, device) / 2**20 if mode == "eager" else float("nan")})
        print(rows[-1], flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--steps", type=int, default=5, help="timed steps per model (median reported)")
    parser.add_argument("--no-compile", action="store_true", help="the eager modes only")
    args = parser.parse_args()
    device = torch.device(args.device)
    rows = []
    for mode in (m for m in MODES if not (args.no_compile and m == "compiled")):
        for backbone, task, patch in SETTINGS:
            rows += measure_setting(backbone, task, patch, device, mode, args.steps)
    frame = pd.DataFrame(rows)
    backbone_time = frame[frame.model == "backbone"].set_index(["backbone", "task", "mode"])["step_s"]
    frame["backbone_over_model"] = [backbone_time[(row.backbone, row.task, row.mode)] / row.step_s
                                    for row in frame.itertuples()]
    frame["device"], frame["gather"] = device_name(device), gather_implementation(device)
    write_csv(frame, f"training_{device.type}.csv")


if __name__ == "__main__":
    main()
