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
import copy
import json
import math
import os
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path

import pandas as pd
import torch
from torch import nn

from acla.config import Config, load_config
from acla.data.sets import available_sets, resolve_data_root
from acla.engine.efficiency import median_seconds, profile
from acla.engine.train import ModelSpec, attention_modules, train_step
from acla.files import atomic_write_text
from acla.models import build_attention
from acla.provenance import cpu_model, device_name, run_record
from acla.tasks import parse_task

TASK = "sr_x2"


# --------------------------------------------------------------------------------------------
# Sizes and time
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Plan:
    """What the check runs at: the issue's sizes on CUDA, tiny ones on the CPU (the same code paths)."""

    backbone: str
    attention_sizes: tuple[int, ...]  # H = W of the attention benchmark
    attention_batch: int
    train_batch: int
    train_patch: int  # HR patch side of the timed training steps
    inference_sizes: tuple[tuple[int, int], ...]  # (H, W) of the LR input
    profile: str  # params.yaml profile that sizes the learning part
    use_data_root: bool  # False: the bundled images, whatever data root is set
    learning_size: tuple[int, int] | None  # (batch, HR patch) of the learning part; None: the profile's
    data_workers: int  # DataLoader workers of the learning part
    compile_estimate_s: float  # guess for the first torch.compile of a model, until one is measured
    fp32_tolerance: float  # ||error|| / ||float64|| allowed to fp32 on the device


FULL = Plan("edsr-baseline", (64, 96, 128), 4, 16, 96, ((180, 320), (720, 1280)), "gpu", True, None,
            max(0, min(8, (os.cpu_count() or 1) - 2)), 150.0,
            5e-3)  # cuDNN convolutions run in TF32 by default (10-bit mantissa)
TINY = Plan("tiny", (32,), 1, 2, 24, ((24, 32), (48, 64)), "ci", False, (2, 24), 0, 90.0, 1e-4)
# bf16 keeps 8 bits of mantissa (~0.4 % per rounding): outputs of the dense modules come out ~0.6 % off,
# gradients, through a few more roundings and the differences of the bilinear derivatives, up to ~15 %.
BF16_TOLERANCE = {"output": 0.02, "input gradients": 0.2, "parameter gradients": 0.2}
SPEED_SHARE = 0.45  # the speed part ends by this fraction of the budget; learning has the rest
WRITE_RESERVE_S = 3.0  # kept for writing the reports at the end
SAFETY = 1.3  # training time per iteration is planned at this multiple of the measured time
LOOP_OVERHEAD_S = 0.005  # per iteration of acla.engine.train.train besides the step: metrics logging, scheduler


def process_age_seconds() -> float:
    """Seconds since this process started (Linux ``/proc``), so interpreter start-up and imports count."""
    try:
        fields = Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()
        uptime = float(Path("/proc/uptime").read_text().split()[0])
        return max(uptime - int(fields[19]) / os.sysconf("SC_CLK_TCK"), 0.0)  # field 22: starttime in ticks
    except (OSError, ValueError, IndexError):
        return 0.0


@dataclass
class Budget:
    """``--budget-seconds`` counted from ``started`` (a ``time.monotonic()`` reading)."""

    seconds: float
    started: float = field(default_factory=time.monotonic)

    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def left(self, share: float = 1.0) -> float:
        """Seconds left until ``share`` of the budget has elapsed."""
        return self.seconds * share - self.elapsed()


class Skip(Exception):
    """A measure that does not fit the time left (or cannot run here); its message is the reason."""


def require(seconds: float, available: float, what: str) -> None:
    if seconds > available:
        raise Skip(f"{what} needs ~{seconds:.0f} s, {max(available, 0):.0f} s left")


def autocast_bf16(device: torch.device, enabled: bool = True):
    return torch.autocast(device.type, dtype=torch.bfloat16) if enabled else nullcontext()


# --------------------------------------------------------------------------------------------
# (a) correctness
# --------------------------------------------------------------------------------------------
VARIANTS = (("acla", "predicted"), ("acla", "dot"), ("cla", "predicted"), ("cla", "dot"), ("cla-dense", "dot"),
            ("nonlocal", "-"))
# Small (float64 on the CPU takes milliseconds) but wide: sampling positions reach 80 px, where a position held
# in bf16 moves in steps of 0.5 px, so precision lost in the positions shows.
CHANNELS, HEIGHT, WIDTH, BATCH, REFS, KEYS = 16, 8, 80, 2, 2, 9


def randomised(module: nn.Module, generator: torch.Generator) -> nn.Module:
    """``module`` with random weights instead of its zero-initialised output and offsets, so every path
    carries signal: unit-scale outputs, offsets of about a pixel (fractional bilinear taps), and ACLA gate
    scores near +-2 with half the keys closed (decisive in bf16 too, so no gate flips on rounding)."""
    for name, parameter in module.named_parameters():
        fan_in = parameter[0].numel() if parameter.dim() > 1 else 1
        with torch.no_grad():
            if name == "gate.bias":
                parameter.copy_(torch.tensor([2.0, -2.0]).repeat(parameter.numel() // 2 + 1)[: parameter.numel()])
            elif name.startswith("gate."):
                parameter.copy_(torch.randn(parameter.shape, generator=generator, dtype=torch.float64) * 0.01)
            else:
                scale = 0.7 if name.startswith("offset.") else 1.0
                parameter.copy_(torch.randn(parameter.shape, generator=generator, dtype=torch.float64)
                                * (scale / math.sqrt(fan_in) if parameter.dim() > 1 else 0.1))
    return module


def attention_case(name: str, logits: str) -> tuple[nn.Module, list[torch.Tensor], torch.Tensor]:
    """A float64 CPU module of the variant, its inputs (query, then references) and an output cotangent."""
    generator = torch.Generator().manual_seed(0)
    options = {"logits": logits} if name in ("acla", "cla") else {}
    module = build_attention(name, CHANNELS, REFS, KEYS, **options).double()
    randomised(module, generator)
    shape = (BATCH, CHANNELS, HEIGHT, WIDTH)
    inputs = [torch.randn(shape, generator=generator, dtype=torch.float64) for _ in range(1 + REFS)]
    cotangent = torch.randn(shape, generator=generator, dtype=torch.float64)
    return module.eval(), inputs, cotangent  # eval: ACLA's gates are deterministic (no Gumbel noise)


def output_and_gradients(module: nn.Module, inputs: list[torch.Tensor], cotangent: torch.Tensor,
                         device: torch.device, dtype: torch.dtype, bf16: bool) -> dict[str, dict[str, torch.Tensor]]:
    """Output, input gradients and parameter gradients of ``<module(inputs), cotangent>``, as CPU float64
    tensors by name, computed on ``device`` in ``dtype`` (optionally under bf16 autocast)."""
    module = copy.deepcopy(module).to(device=device, dtype=dtype)
    leaves = [tensor.detach().to(device=device, dtype=dtype).requires_grad_() for tensor in inputs]
    with autocast_bf16(device, bf16):
        output = module(leaves[0], leaves[1:])
    weights = cotangent.to(device=device, dtype=dtype)
    (output.to(dtype) * weights).sum().backward()
    names = ["query"] + [f"reference {i}" for i in range(len(leaves) - 1)]
    return {
        "output": {"output": as_reference(output)},
        "input gradients": {name: gradient_of(leaf) for name, leaf in zip(names, leaves, strict=True)},
        "parameter gradients": {name: gradient_of(parameter) for name, parameter in module.named_parameters()},
    }


def as_reference(tensor: torch.Tensor) -> torch.Tensor:
    return tensor.detach().to("cpu", torch.float64)


def gradient_of(leaf: torch.Tensor) -> torch.Tensor:
    """The leaf's gradient; zeros where nothing reached it (non-local ignores the references; ACLA's hard
    gates pass no gradient to the gate convolution in eval mode)."""
    return as_reference(leaf.grad if leaf.grad is not None else torch.zeros_like(leaf))


def relative_error(reference: dict[str, torch.Tensor], measured: dict[str, torch.Tensor]) -> dict:
    """||measured - reference|| / ||reference|| over all tensors of a quantity (the pass criterion: unlike
    the largest element error it does not jump where bf16 rounding moves a position across a pixel), the
    largest element error, and the tensor with the largest error of its own (for diagnosis; its norm is
    floored at 1 % of the quantity's, since some gradients are zero up to rounding, e.g. a key bias)."""
    squared = lambda tensors: sum(float(t.square().sum()) for t in tensors) ** 0.5  # noqa: E731
    total = squared(reference.values())
    errors = {name: measured[name] - expected for name, expected in reference.items()}
    worst = max(reference, key=lambda name: float(errors[name].norm()) / max(float(reference[name].norm()),
                                                                             0.01 * total, 1e-30))
    return {"relative_error": squared(errors.values()) / max(total, 1e-30), "worst_tensor": worst,
            "max_abs_error": max(float(e.abs().max()) for e in errors.values()),
            "reference_max_abs": max(float(t.abs().max()) for t in reference.values())}


def attention_checks(device: torch.device, plan: Plan) -> list[dict]:
    rows = []
    for name, logits in VARIANTS:
        module, inputs, cotangent = attention_case(name, logits)
        reference = output_and_gradients(module, inputs, cotangent, torch.device("cpu"), torch.float64, False)
        for precision, bf16 in (("fp32", False), ("bf16 autocast", True)):
            measured = output_and_gradients(module, inputs, cotangent, device, torch.float32, bf16)
            for quantity, expected in reference.items():
                error = relative_error(expected, measured[quantity])
                tolerance = BF16_TOLERANCE[quantity] if bf16 else plan.fp32_tolerance
                rows.append({"check": "attention vs CPU float64", "variant": name, "logits": logits,
                             "precision": precision, "quantity": quantity, **error, "tolerance": tolerance,
                             "passed": error["relative_error"] <= tolerance})
    return rows


def tiled_check(device: torch.device, plan: Plan) -> dict:
    """``acla.engine.evaluate.tiled_forward`` against one whole-image pass of a tiny SR x2 model with four
    randomised ACLA modules: with the overlap wider than the receptive field the two must agree."""
    from acla.engine.evaluate import tiled_forward

    torch.manual_seed(0)
    model = ModelSpec(TASK, "tiny", "acla", "four-stages").build()
    generator = torch.Generator().manual_seed(1)
    for module in attention_modules(model):
        randomised(module.double(), generator).float()
    model = model.to(device).eval()
    x = torch.rand(1, 3, 40, 40, generator=generator).to(device)
    with torch.no_grad():
        whole = model(x)
        tiled = tiled_forward(model, x, tile=16, overlap=40, scale=2)
    error = relative_error({"output": as_reference(whole)}, {"output": as_reference(tiled)})
    return {"check": "tiled vs whole image", "variant": "tiny + acla four-stages", "logits": "predicted",
            "precision": "fp32", "quantity": "output (40x40 input, tile 16, overlap 40)", **error,
            "tolerance": plan.fp32_tolerance, "passed": error["relative_error"] <= plan.fp32_tolerance}


def correctness(device: torch.device, plan: Plan) -> pd.DataFrame:
    return pd.DataFrame(attention_checks(device, plan) + [tiled_check(device, plan)])


# --------------------------------------------------------------------------------------------
# (b) speed
# --------------------------------------------------------------------------------------------
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


# --------------------------------------------------------------------------------------------
# (c) learning
# --------------------------------------------------------------------------------------------
def learning_config(params: Path, plan: Plan, data_root: Path | None) -> tuple[Config, Path | None]:
    """The plan's profile of ``params.yaml`` for sr_x2 and the data root it trains on: the root's T91 when
    it has one, else the bundled images (the CPU plan always uses those)."""
    config = load_config(params, plan.profile, TASK)
    train = replace(config.train, num_workers=plan.data_workers)
    if not plan.use_data_root or data_root is None or "T91" not in available_sets(data_root):
        data_root = None
        train = replace(train, train_sets=("bundled-train",), validation_set="bundled-test")
    if plan.learning_size:
        train = replace(train, batch_size=plan.learning_size[0], patch_size=plan.learning_size[1])
    return replace(config, train=train), data_root


def learning_specs(config: Config, arch: Path | None = None) -> dict[str, ModelSpec]:
    """The configured backbone, +ACLA after blocks 4/8/12/16 (a quarter of the blocks each), and the
    placement of a search when ``arch`` is given."""
    acla = ModelSpec.from_config(TASK, replace(config.model, attention="acla", insert="four-stages"))
    label = "EDSR-baseline" if acla.backbone == "edsr-baseline" else acla.backbone
    specs = {label: replace(acla, attention="none", insert="none", key_budget_weight=0.0),
             f"{label} + ACLA (four stages)": acla}
    if arch is not None:
        searched = ModelSpec.from_arch(arch)
        if searched.task != TASK:
            raise ValueError(f"--arch was searched for {searched.task}, the learning part trains {TASK}")
        blocks = " ".join(map(str, searched.insert)) if isinstance(searched.insert, tuple) else searched.insert
        specs[f"{label} + {searched.attention.upper()} (searched: {blocks})"] = searched
    return specs


def data_seconds_per_batch(config: Config, data_root: Path | None) -> float:
    """Seconds the CPU spends making one training batch (crops, augmentation, MATLAB-bicubic degradation)."""
    from acla.data import PatchDataset
    from acla.engine.train import load_images

    images, names = load_images(config.train.train_sets, data_root, config.data.verify)
    dataset = PatchDataset(images, parse_task(TASK), patch_size=config.train.patch_size, length=64, names=names)
    start = time.perf_counter()
    for index in range(min(config.train.batch_size, 8)):
        dataset[index]
    return (time.perf_counter() - start) / min(config.train.batch_size, 8) * config.train.batch_size


def step_seconds(spec: ModelSpec, config: Config, device: torch.device, measured: dict) -> float:
    """The eager step time at the learning part's batch and patch: the speed part's when it measured
    exactly that, else the median of two steps after a warm-up one, now."""
    batch, patch = config.train.batch_size, config.train.patch_size
    if (repr(spec), batch, patch) in measured:
        return measured[(repr(spec), batch, patch)]
    return median_seconds(training_step(spec, batch, patch, device), device, repeats=2, warmup=1)


@dataclass
class LearningRun:
    """The learning part: every variant of ``specs`` trained by ``acla.engine.train.train`` for one affordable
    count of iterations and scored by ``acla.engine.evaluate.evaluate``; ``notes`` say what was planned."""

    device: torch.device
    plan: Plan
    budget: Budget
    config: Config
    data_root: Path | None
    specs: dict[str, ModelSpec]
    notes: list[str] = field(default_factory=list)

    @property
    def crop(self) -> int:
        return self.config.evaluate.crop

    def test_sets(self) -> list[str]:
        from acla.engine.evaluate import test_sets

        return test_sets(parse_task(TASK), self.data_root)

    def bicubic(self) -> tuple[list[dict], float]:
        """The bicubic rows on exactly the images the networks are scored on, and the seconds they took
        (the CPU part of scoring a network is about the same work)."""
        from acla.study.steps import classical_scores
        from acla.study.tables import compare, published_classical

        start = time.perf_counter()
        rows = classical_scores(TASK, self.test_sets(), self.data_root, self.crop, self.config.train.seed,
                                self.config.data.verify)
        seconds = time.perf_counter() - start
        frame = pd.DataFrame(rows).assign(task="sr", setting="x2")
        frame = compare(frame, published_classical()).drop(columns=["task", "setting", "delta_psnr", "delta_ssim"])
        return frame.to_dict(orient="records"), seconds

    def iterations(self, measured: dict, scoring_seconds: float) -> int:
        """As many iterations as fit in the time left for every variant alike, after reserving each
        variant's evaluation (about the bicubic rows' CPU time again, plus its forwards) and start-up."""
        data = data_seconds_per_batch(self.config, self.data_root) / max(self.config.train.num_workers, 1)
        per_iteration = sum(max(step_seconds(spec, self.config, self.device, measured), data) + LOOP_OVERHEAD_S
                            for spec in self.specs.values()) * SAFETY
        per_variant = 1.2 * scoring_seconds + 2.0 + (1.0 if self.device.type == "cpu" else 5.0)
        available = self.budget.left() - WRITE_RESERVE_S - len(self.specs) * per_variant
        self.notes.append(f"planned {per_iteration:.3f} s per iteration for the {len(self.specs)} variants together "
                          f"(measured step and data time x {SAFETY}), {per_variant:.0f} s per variant for start-up "
                          f"and scoring, {max(available, 0):.0f} s for training")
        return int(available // per_iteration)

    def train_and_score(self, label: str, spec: ModelSpec, iterations: int, scratch: Path) -> list[dict]:
        from acla.engine.evaluate import Inference, evaluate
        from acla.engine.train import load_model, train
        from acla.study.steps import slug

        settings = replace(self.config.train, iterations=iterations, validate_every=iterations,
                           checkpoint_every=iterations)
        start = time.perf_counter()
        result = train(spec, replace(self.config, train=settings), scratch / "runs" / slug(label),
                       data_root=self.data_root, progress=False)
        trained = time.perf_counter() - start
        model, _ = load_model(result.checkpoint, spec)
        start = time.perf_counter()
        mean = evaluate(model, TASK, scratch / "evaluate" / slug(label), data_root=self.data_root,
                        sets=self.test_sets(), inference=Inference(), seed=self.config.train.seed, crops=0,
                        verify=self.config.data.verify, device=self.device, crop=self.crop)
        scored = time.perf_counter() - start
        print(f"  learning: {label}: {iterations} iterations in {trained:.0f} s, scored in {scored:.0f} s", flush=True)
        return [{"method": label, "set": row["set"], "psnr": row["psnr"], "ssim": row["ssim"],
                 "n_images": row["n_images"], "iterations": iterations, "train_seconds": trained,
                 "score_seconds": scored, "status": "ok"} for row in mean.to_dict(orient="records")]

    def run(self, measured: dict) -> pd.DataFrame:
        """The bicubic rows, then every variant trained for the same affordable count and scored."""
        settings = self.config.train
        self.notes.append(f"profile `{self.plan.profile}` of params.yaml: {self.config.model.backbone}, batch "
                          f"{settings.batch_size}, HR patch {settings.patch_size}, learning rate "
                          f"{settings.learning_rate:g}, trained on {', '.join(settings.train_sets)}, validated once "
                          f"at the end" + (f"; test images centre-cropped to {self.crop} px" if self.crop else ""))
        bicubic, scoring_seconds = self.bicubic()
        rows = [{**row, "status": "ok"} for row in bicubic]
        iterations = self.iterations(measured, scoring_seconds)
        if iterations < 1:
            return pd.DataFrame(rows + [{"method": label, "status": "skipped", "note": "no time left to train"}
                                        for label in self.specs])
        with tempfile.TemporaryDirectory(prefix="acla-gpu-check-") as scratch:
            for label, spec in self.specs.items():
                try:
                    rows += self.train_and_score(label, spec, iterations, Path(scratch))
                except Exception as error:  # noqa: BLE001 - reported, and the other variants still run
                    traceback.print_exc()
                    rows.append({"method": label, "status": "error", "note": f"{type(error).__name__}: {error}"})
        return pd.DataFrame(rows)


# --------------------------------------------------------------------------------------------
# Reports
# --------------------------------------------------------------------------------------------
@dataclass
class Part:
    name: str
    title: str
    frame: pd.DataFrame = field(default_factory=pd.DataFrame)
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)
    error: str | None = None

    @property
    def failed(self) -> list[str]:
        """What makes the exit status non-zero: a failed check, or the part crashing."""
        failures = [self.error] if self.error else []
        if "passed" in self.frame:
            failures += [f"{r.variant} {r.logits} {r.precision} {r.quantity}: relative error {r.relative_error:.2e} "
                         f"> {r.tolerance:g}" for r in self.frame[~self.frame.passed.astype(bool)].itertuples()]
        if "status" in self.frame:
            failures += [f"{r.get('measure', '')} {r.get('model', r.get('method', ''))}: {r['note']}".strip()
                         for r in self.frame[self.frame.status == "error"].to_dict(orient="records")]
        return failures

    @property
    def status(self) -> str:
        if self.failed:
            return "FAILED"
        skipped = int((self.frame.get("status", pd.Series(dtype=str)) == "skipped").sum())
        return f"ok ({skipped} skipped)" if skipped else "ok"


COLUMNS = {
    "correctness": {"check": ("check", 0, False), "variant": ("variant", 0, False), "logits": ("logits", 0, False),
                    "precision": ("precision", 0, False), "quantity": ("quantity", 0, False),
                    "worst_tensor": ("worst tensor", 0, False), "relative_error": ("relative error", 0, False),
                    "tolerance": ("tolerance", 0, False), "passed": ("passed", 0, False)},
    "speed": {"measure": ("measure", 0, False), "model": ("model", 0, False), "input": ("input", 0, False),
              "batch": ("batch", 0, False), "precision": ("precision", 0, False), "mode": ("mode", 0, False),
              "per_second": ("iterations/s", 2, False), "seconds": ("s / iteration", 4, False),
              "first_call_seconds": ("first call s", 2, False), "overhead_pct": ("ACLA overhead %", 1, True),
              "gflops": ("GFLOPs", 2, False), "peak_mib": ("peak MiB", 0, False), "status": ("status", 0, False),
              "note": ("note", 0, False)},
    "learning": {"method": ("method", 0, False), "set": ("set", 0, False), "n_images": ("images", 0, False),
                 "psnr": ("PSNR", 4, False), "ssim": ("SSIM", 5, False), "published_psnr": ("PSNR published", 2, False),
                 "published_ssim": ("SSIM published", 4, False),
                 "iterations": ("iterations", 0, False), "train_seconds": ("train s", 0, False),
                 "status": ("status", 0, False), "note": ("note", 0, False)},
}


def scrubbed(text: str, placeholders: dict[Path, str]) -> str:
    """``text`` with every path of ``placeholders`` (and the temporary folder and the home folder) replaced
    by its placeholder, longest first: files written here name no path of the machine."""
    replacements = {str(Path(tempfile.gettempdir())): "$TMPDIR", str(Path.home()): "~"}
    for path, placeholder in placeholders.items():
        replacements[str(path)] = replacements[str(path.resolve())] = placeholder
    for old in sorted(replacements, key=len, reverse=True):
        text = text.replace(old, replacements[old])
    return text


def shown(frame: pd.DataFrame) -> pd.DataFrame:
    """The frame as the README tables show it: errors in scientific notation, pass/fail in words."""
    frame = frame.copy()
    for column in ("relative_error", "max_abs_error", "tolerance"):
        if column in frame:
            frame[column] = frame[column].map(lambda value: f"{value:.1e}")
    if "passed" in frame:
        frame["passed"] = frame["passed"].map(lambda value: "yes" if value else "**NO**")
    return frame


def part_readme(part: Part, record: dict, columns: dict) -> str:
    from acla.study.tables import markdown

    failures = "".join(f"- **failed:** {line}\n" for line in part.failed)
    notes = "".join(f"- {line}\n" for line in part.notes)
    frame = shown(part.frame)
    table = markdown(frame, {k: v for k, v in columns.items() if k in frame}) if len(frame) else ""
    return (f"# GPU check, {part.title}: {record['device']}\n\n"
            f"Status: **{part.status}**; {part.seconds:.1f} s wall; torch {record['torch']}, commit "
            f"{record['commit']}, {record['date']}; data {record['data_root']}. Every number: `{part.name}.csv`.\n\n"
            f"{failures}{notes}\n{table}")


def write_reports(out: Path, parts: list[Part], record: dict, paths: dict[Path, str]) -> None:
    """Per part ``<part>/<part>.csv`` and ``<part>/README.md``; the front ``README.md`` and ``run.json``."""
    for part in parts:
        text = part.frame.to_csv(index=False, float_format="%.6g")
        atomic_write_text(out / part.name / f"{part.name}.csv", scrubbed(text, paths))
        atomic_write_text(out / part.name / "README.md", scrubbed(part_readme(part, record, COLUMNS[part.name]), paths))
    lines = [f"# GPU check: {record['device']}\n",
             f"`python -m acla gpu-check` with a budget of {record['budget_seconds']:.0f} s (start-up and data "
             f"loading included): {record['wall_seconds']:.1f} s wall. torch {record['torch']}, commit "
             f"{record['commit']}, {record['date']}, data {record['data_root']}.\n",
             "| part | status | wall s | files |", "|---|---|---|---|"]
    lines += [f"| {p.title} | {p.status} | {p.seconds:.1f} | [{p.name}/]({p.name}/README.md) |" for p in parts]
    failures = [f"- {p.name}: {line}" for p in parts for line in p.failed]
    lines += ["", "Failures:" if failures else "Every correctness check passed.", *failures, ""]
    atomic_write_text(out / "README.md", scrubbed("\n".join(lines), paths))
    summary = {**record, "parts": {p.name: {"status": p.status, "wall_seconds": round(p.seconds, 1)} for p in parts}}
    atomic_write_text(out / "run.json", scrubbed(json.dumps(summary, indent=2) + "\n", paths))


def correctness_notes(device: torch.device, plan: Plan) -> list[str]:
    where = "the CPU" if device.type == "cpu" else device_name(device)
    return [
        f"Each attention variant ({REFS} references, {KEYS} keys, {CHANNELS} channels, {BATCH}x{HEIGHT}x{WIDTH} maps, "
        "random weights including the offsets and the output projection, eval mode so that ACLA's gates carry no "
        f"Gumbel noise) runs forward and backward on {where} in fp32 and under bf16 autocast, against the same "
        "module in float64 on the CPU.",
        "relative error = ||result - float64|| / ||float64|| over the output, over the input gradients (query and "
        "references) or over the parameter gradients; the worst tensor is the one with the largest error of its own.",
        f"Tolerances: fp32 {plan.fp32_tolerance:g}" + (" (TF32 convolutions, torch's default on CUDA)"
                                                        if device.type == "cuda" else "")
        + f"; bf16 autocast {BF16_TOLERANCE['output']:g} for outputs and {BF16_TOLERANCE['input gradients']:g} for "
        "gradients (8-bit mantissa).",
        "Tiled inference: a tiny SR x2 model with four randomised ACLA modules, a 40x40 input run as 16x16 tiles "
        "with 40 pixels of overlap against one whole pass (`acla.engine.evaluate.tiled_forward`).",
    ]


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


# --------------------------------------------------------------------------------------------
# Entry point
# --------------------------------------------------------------------------------------------
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
    from acla.study.steps import slug

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
