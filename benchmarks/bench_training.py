"""Training throughput: iterations per second of EDSR-baseline x2 with and without ACLA.

Batch 16, HR patch 96 (LR 48x48), L1 + Adam steps as in ``acla.train`` (no data loading: random
tensors, so the figure is the network's). Usage: ``python -m benchmarks.bench_training [--device cuda]``.
"""

from __future__ import annotations

import argparse
import time

import pandas as pd
import torch
import torch.nn.functional as F

from acla.models import build_model
from benchmarks.common import device_name, write_csv

CONFIGURATIONS = (("EDSR-baseline", "none", "none"), ("+ ACLA, four stages", "acla", "four-stages"))


def iterations_per_second(model: torch.nn.Module, device: torch.device, batch: int, patch: int, steps: int) -> float:
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
    lr, hr = torch.rand(batch, 3, patch // 2, patch // 2, device=device), torch.rand(batch, 3, patch, patch, device=device)
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else torch.autocast("cpu", enabled=False)

    def step() -> None:
        with autocast:
            loss = F.l1_loss(model(lr).float(), hr)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    step()  # warm-up
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    for _ in range(steps):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return steps / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--patch", type=int, default=96)
    parser.add_argument("--steps", type=int, default=3)
    args = parser.parse_args()
    device = torch.device(args.device)
    rows = []
    for label, attention, insert in CONFIGURATIONS:
        torch.manual_seed(0)
        model = build_model("sr", "edsr-baseline", attention=attention, insert=insert, scale=2).to(device).train()
        speed = iterations_per_second(model, device, args.batch, args.patch, args.steps)
        rows.append({"model": label, "iterations_per_s": speed, "batch": args.batch, "hr_patch": args.patch,
                     "device": device_name(device)})
        print(rows[-1], flush=True)
    frame = pd.DataFrame(rows)
    frame["relative_to_backbone"] = frame["iterations_per_s"] / frame["iterations_per_s"].iloc[0]
    write_csv(frame, f"training_{device.type}.csv")


if __name__ == "__main__":
    main()
