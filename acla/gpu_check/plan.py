"""What the GPU check runs at and how it keeps to its time budget: the sizes (``FULL`` on CUDA, ``TINY`` on the
CPU, the same code paths), the budget counted from the process start, and a ``Skip`` for what does not fit.
"""

from __future__ import annotations

import os
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path

import torch

TASK = "sr_x2"


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
