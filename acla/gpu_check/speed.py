"""Part (b), speed: attention forward+backward, training steps of the backbone and +ACLA (bf16 autocast and
channels-last on CUDA, eager and ``torch.compile``), inference latency and ACLA's overhead, within the budget.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial

import pandas as pd
import torch

from acla.engine.efficiency import median_seconds, profile
from acla.engine.train import ModelSpec, attention_modules, train_step
from acla.gpu_check.correctness import KEYS, REFS
from acla.gpu_check.plan import SPEED_SHARE, Budget, Plan, Skip, autocast_bf16, require
from acla.models import build_attention
from acla.tasks import parse_task


def timed(step: Callable[[], object], device: torch.device, available: float, max_repeats: int = 10,
          ) -> tuple[float, float, int]:
    """(first call seconds, median seconds per call, calls in that median): a first call (warm-up, autotuning
    or compilation), a second one, then as many repeats as still fit in ``available`` seconds; when none
    fits, the second call is the measurement."""
    first = median_seconds(step, device, repeats=1, warmup=0)
    second = median_seconds(step, device, repeats=1, warmup=0)
    repeats = min(max_repeats, int((available - first - second) / max(second, 1e-9)))
    if repeats < 2:
        return first, second, 1
    return first, median_seconds(step, device, repeats=repeats, warmup=0), repeats


def attention_step(name: str, size: int, batch: int, device: torch.device) -> Callable[[], None]:
    """Forward and backward of one module at 64 channels (bf16 autocast on CUDA, as in training)."""
    torch.manual_seed(0)
    module = build_attention(name, 64, REFS, KEYS).to(device).train()
    inputs = [torch.randn(batch, 64, size, size, device=device, requires_grad=True) for _ in range(1 + REFS)]

    def step() -> None:
        module.zero_grad(set_to_none=True)
        with autocast_bf16(device, device.type == "cuda"):
            output = module(inputs[0], inputs[1:])
        output.float().mean().backward()

    return step


def training_step(spec: ModelSpec, batch: int, patch: int, device: torch.device,
                  compiled: bool = False) -> Callable[[], None]:
    """``acla.engine.train.train_step`` on random tensors, set up as ``acla.engine.train.train`` sets it up on ``device``
    (channels-last and bf16 autocast on CUDA): the network's step rate, without data loading."""
    torch.manual_seed(0)
    model = spec.build().to(device).train()
    cuda = device.type == "cuda"
    if cuda:
        model = model.to(memory_format=torch.channels_last)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
    forward = torch.compile(model) if compiled else model
    scale = parse_task(spec.task).scale
    degraded = torch.rand(batch, 3, patch // scale, patch // scale, device=device)
    degraded = degraded.contiguous(memory_format=torch.channels_last) if cuda else degraded
    target = torch.rand(batch, 3, patch, patch, device=device)
    modules = attention_modules(model)
    return lambda: train_step(forward, optimizer, modules, degraded, target, autocast_bf16(device, cuda))


@dataclass
class SpeedRun:
    """The speed part's rows, each measure run against the part's share of the budget. ``specs`` are the
    learning part's backbone and +ACLA, so a step time measured here at its size is reused there."""

    device: torch.device
    plan: Plan
    budget: Budget
    specs: dict[str, ModelSpec]
    rows: list[dict] = field(default_factory=list)
    step_seconds: dict[tuple[str, int, int], float] = field(default_factory=dict)  # (spec, batch, patch) -> s
    pending: int = 0  # measures not yet run: each gets an equal slice of the time left

    @property
    def measures(self) -> int:
        sizes = len(self.plan.attention_sizes) * 3 + len(self.plan.inference_sizes) * len(self.specs)
        return sizes + 2 * len(self.specs)  # + eager and compiled training steps

    def left(self) -> float:
        return self.budget.left(SPEED_SHARE)

    def measure(self, row: dict, run: Callable[[float], dict]) -> dict:
        """Append ``row`` completed by ``run(seconds available to it)``, or marked skipped / failed with the
        reason."""
        available = self.left() / max(self.pending, 1)
        self.pending -= 1
        try:
            if self.left() <= 0:
                raise Skip("no time left in the speed part's share of the budget")
            result = {**row, **run(available), "status": "ok"}
        except Skip as reason:
            result = {**row, "status": "skipped", "note": str(reason)}
        except Exception as error:  # noqa: BLE001 - one failed measure must not hide the others
            result = {**row, "status": "error", "note": f"{type(error).__name__}: {error}"}
        self.rows.append(result)
        print(f"  speed: {row.get('measure')} {row.get('model')} {row.get('input')} {row.get('mode', '')}: "
              f"{result['status']} {result.get('per_second', '')}", flush=True)
        return result

    def run(self) -> pd.DataFrame:
        self.pending = self.measures
        self.attention()
        self.training(compiled=False)
        self.inference()
        self.training(compiled=True)  # last: a compilation that does not fit costs the others nothing
        return pd.DataFrame(self.rows)

    def attention(self) -> None:
        for size in self.plan.attention_sizes:
            for name in ("acla", "cla-dense", "nonlocal"):
                row = {"measure": "attention fwd+bwd", "model": name, "input": f"{size}x{size}",
                       "batch": self.plan.attention_batch, "precision": self.precision(), "mode": "eager"}
                self.measure(row, partial(self.attention_rate, name, size))

    def attention_rate(self, name: str, size: int, available: float) -> dict:
        return self.rate(attention_step(name, size, self.plan.attention_batch, self.device), available)

    def precision(self) -> str:
        return "bf16 autocast" if self.device.type == "cuda" else "fp32"

    def rate(self, step: Callable[[], object], available: float) -> dict:
        first, seconds, repeats = timed(step, self.device, available)
        return {"seconds": seconds, "per_second": 1 / seconds, "repeats": repeats, "first_call_seconds": first}

    def training(self, compiled: bool) -> None:
        for label, spec in self.specs.items():
            row = {"measure": "training step", "model": label, "input": f"HR patch {self.plan.train_patch}",
                   "batch": self.plan.train_batch, "precision": self.precision(),
                   "mode": "torch.compile" if compiled else "eager"}
            self.measure(row, partial(self.training_rate, spec, compiled))

    def training_rate(self, spec: ModelSpec, compiled: bool, available: float) -> dict:
        batch, patch = self.plan.train_batch, self.plan.train_patch
        if compiled:  # compilation takes what is left, not a slice: it comes last
            measured = [row["first_call_seconds"] for row in self.rows
                        if row["mode"] == "torch.compile" and row["status"] == "ok"]
            available = self.left()
            require(1.5 * max(measured) if measured else self.plan.compile_estimate_s, available, "torch.compile")
        result = self.rate(training_step(spec, batch, patch, self.device, compiled), available)
        if not compiled and result["repeats"] >= 3:  # a median past the warm-up: good enough to plan with
            self.step_seconds[(repr(spec), batch, patch)] = result["seconds"]
        return result

    def inference(self) -> None:
        seconds_per_pixel = 0.0  # of the slowest model so far: the guess for the next size
        for height, width in self.plan.inference_sizes:
            latencies = []
            for label, spec in self.specs.items():
                row = {"measure": "inference", "model": label, "input": f"{width}x{height} LR", "batch": 1,
                       "precision": "fp32", "mode": "eager"}
                guess = 8 * seconds_per_pixel * height * width  # profile runs ~4 + repeats forwards
                result = self.measure(row, partial(self.latency, spec, height, width, guess))
                if result["status"] == "ok":
                    latencies.append(result["seconds"])
                    seconds_per_pixel = max(seconds_per_pixel, result["seconds"] / (height * width))
            if len(latencies) == len(self.specs) == 2:
                self.rows[-1]["overhead_pct"] = 100 * (latencies[1] / latencies[0] - 1)

    def latency(self, spec: ModelSpec, height: int, width: int, guess: float, available: float) -> dict:
        """``acla.engine.efficiency.profile``: median latency, forward FLOPs and peak memory of one LR image."""
        require(guess, available, f"inference at {width}x{height}")
        torch.manual_seed(0)
        result = profile(spec.build(), (1, 3, height, width), device=self.device, repeats=3)
        return {"seconds": result.latency_s, "per_second": 1 / result.latency_s, "repeats": 3,
                "gflops": result.flops / 1e9, "peak_mib": result.peak_memory_bytes / 2**20}


def speed_notes(device: torch.device, plan: Plan) -> list[str]:
    cuda = device.type == "cuda"
    return [
        f"Attention: forward and backward of one module, 64 channels, {REFS} references, {KEYS} keys"
        + (", bf16 autocast." if cuda else ", fp32."),
        "Training steps: `acla.engine.train.train_step` (L1 + key budget, Adam) on random tensors, the model set up as "
        "`acla.engine.train.train` sets it up" + (" (bf16 autocast, channels-last)" if cuda else "")
        + "; no data loading. torch.compile's first call (compilation) is in `first call s`.",
        "Inference: `acla.engine.efficiency.profile` (fp32, eval, one LR image): median latency, forward FLOPs, peak memory; "
        "the overhead is +ACLA against the backbone at the same size.",
        f"Each figure is a median over the repeats after a first call; the measures share {SPEED_SHARE:.0%} of the "
        "budget equally, torch.compile takes what is left of it, and a measure that does not fit is skipped with "
        "its reason."
        + ("" if cuda else " On the CPU every size is tiny (the same code paths)."),
    ]
