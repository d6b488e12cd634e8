"""``python -m acla gpu-check``: is this machine's torch right and fast for ACLA, and do the models learn?

One command and one time budget (``--budget-seconds``, default 480, counted from the process start, so
start-up and data loading count), for a GPU box that has torch preinstalled and no network. Three parts,
each writing a CSV and a README.md under ``--out`` (default ``reports/gpu/<device>/``), and a front
README.md with the device, torch, commit, date and wall time of each part:

* ``correctness``: every attention variant forward and backward on the device (fp32, then bf16
  autocast) against CPU float64, and tiled against whole-image inference. A failed check is listed
  in the CSV and the READMEs and makes the exit status 1; it is never hidden.
* ``speed``: attention forward+backward, EDSR-baseline and +ACLA training steps (bf16 autocast and
  channels-last on CUDA, eager and ``torch.compile``), inference latency and ACLA's overhead.
* ``learning``: EDSR-baseline and +ACLA trained from scratch by ``acla.engine.train.train`` for as many
  iterations as the budget still allows (the same count for both), scored by ``acla.engine.evaluate.evaluate``
  beside the bicubic rows.

A measure that does not fit the time left is skipped with its reason written down. On the CPU the same
code runs at tiny sizes (tiny backbone, bundled images), which is how CI runs it (``--device cpu
--budget-seconds 60``). No written file names a path of the machine: the data root is ``$ACLA_DATA``
with its manifest's digest, or ``bundled``.
"""

from __future__ import annotations

import argparse
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import torch

from acla.config import load_config
from acla.data.sets import resolve_data_root
from acla.files import slug
from acla.gpu_check.correctness import correctness, correctness_notes
from acla.gpu_check.learning import LearningRun, learning_config, learning_specs
from acla.gpu_check.plan import FULL, TINY, Budget, process_age_seconds
from acla.gpu_check.speed import SpeedRun, speed_notes
from acla.gpu_check.writing import Part, write_reports
from acla.provenance import cpu_model, device_name, run_record


def run_part(part: Part, work: Callable[[], pd.DataFrame]) -> Part:
    """Run one part, timing it; an exception is recorded in the part (and the exit status), not raised."""
    print(f"gpu-check: {part.title}...", flush=True)
    start = time.perf_counter()
    try:
        part.frame = work()
    except Exception as error:  # noqa: BLE001 - reported in the README and the exit status
        part.error = f"{type(error).__name__}: {error}"
        traceback.print_exc()
    part.seconds = time.perf_counter() - start
    print(f"gpu-check: {part.title}: {part.status} in {part.seconds:.1f} s", flush=True)
    return part


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu",
                        help="cuda[:N] (the issue's sizes) or cpu (tiny sizes, bundled images)")
    parser.add_argument("--budget-seconds", type=float, default=480.0,
                        help="wall-clock budget, process start-up and data loading included (default 480)")
    parser.add_argument("--out", help="output folder (default: reports/gpu/<device>)")
    parser.add_argument("--data-root", help="data root (beats params.yaml data.root and $ACLA_DATA)")
    parser.add_argument("--arch", help="arch.json of an sr_x2 search: also train and score that placement")
    parser.add_argument("--config", default="params.yaml", help="params file (default: params.yaml)")


def device_slug(device: torch.device) -> str:
    return slug(device_name(device) if device.type == "cuda" else f"cpu {cpu_model()}").lower()


def run(args: argparse.Namespace, *, from_command_line: bool) -> int:
    """The check; 0 when every correctness check passed and no part crashed, else 1 (2: bad arguments).
    From the command line the budget counts from the process start, else from this call."""
    budget = Budget(args.budget_seconds, time.monotonic() - (process_age_seconds() if from_command_line else 0.0))
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("error: --device cuda: torch sees no CUDA device (use --device cpu for the tiny check)", file=sys.stderr)
        return 2
    plan = FULL if device.type == "cuda" else TINY
    out = Path(args.out) if args.out else Path("reports") / "gpu" / device_slug(device)
    given_root = resolve_data_root(args.data_root, load_config(args.config).data.root)
    config, data_root = learning_config(Path(args.config), plan, given_root)
    specs = learning_specs(config, Path(args.arch) if args.arch else None)
    speed_run = SpeedRun(device, plan, budget, dict(list(specs.items())[:2]))
    learning_run = LearningRun(device, plan, budget, config, data_root, specs)
    parts = [run_part(Part("correctness", "(a) correctness", notes=correctness_notes(device, plan)),
                      lambda: correctness(device, plan)),
             run_part(Part("speed", "(b) speed", notes=speed_notes(device, plan)), speed_run.run),
             run_part(Part("learning", "(c) learning", notes=learning_run.notes),
                      lambda: learning_run.run(speed_run.step_seconds))]
    record = {**run_record(plan.profile, data_root, budget.elapsed(), device), "budget_seconds": args.budget_seconds}
    placeholders = {path: "$ACLA_DATA" for path in (given_root, data_root) if path is not None}
    write_reports(out, parts, record, {**placeholders, out: "$OUT", Path.cwd(): "."})
    print(f"gpu-check: {budget.elapsed():.1f} s of {args.budget_seconds:.0f}; reports in {out}", flush=True)
    return 1 if any(part.failed for part in parts) else 0
