"""Where a result came from, in words a reader can compare across machines, and never a path of one.

Every result folder of the study (and the GPU check) records the same fields: the profile, the device as a
person would name it (``NVIDIA H200``, ``cpu: AMD EPYC 7B13, 2 threads``), the torch version, the commit,
the date and the wall time. The data root is named ``$ACLA_DATA`` with the digest of its manifest (two
roots with the same manifest hold the same images), or ``bundled``: the absolute path would only tell
which machine made the file.
"""

from __future__ import annotations

import datetime
import hashlib
import os
import platform
import subprocess
from pathlib import Path

import torch

from acla.data.sets import MANIFEST_NAME


def device_name(device: str | torch.device | None = None) -> str:
    """``NVIDIA H200`` for a CUDA device, ``cpu: <processor model>, N threads`` for the CPU."""
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    threads = torch.get_num_threads()
    return f"cpu: {cpu_model()}, {threads} thread{'s' if threads != 1 else ''}"


def cpu_model() -> str:
    """The processor's marketing name (``/proc/cpuinfo`` on Linux; ``platform.processor()`` elsewhere)."""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text(errors="replace").splitlines():
            if line.lower().startswith("model name"):
                return " ".join(line.split(":", 1)[1].split())
    return platform.processor() or platform.machine() or "unknown"


def data_root_label(root: Path | None) -> str:
    """``$ACLA_DATA (MANIFEST.csv sha256 1a2b3c4d5e6f)`` or ``bundled``: which images, not where they were."""
    if root is None:
        return "bundled"
    manifest = Path(root) / MANIFEST_NAME
    if not manifest.is_file():
        return "$ACLA_DATA (no manifest)"
    return f"$ACLA_DATA (MANIFEST.csv sha256 {hashlib.sha256(manifest.read_bytes()).hexdigest()[:12]})"


def git_commit() -> str:
    """The commit of the source tree (``+dirty`` when it has uncommitted changes); for a copied tree
    without ``.git`` (a GPU box gets the files, not the history) ``$ACLA_COMMIT`` marked ``(declared)``,
    else ``unknown``."""
    here = Path(__file__).resolve().parent
    try:
        commit = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], cwd=here, capture_output=True,
                                text=True, timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", "."], cwd=here,
                               capture_output=True, text=True, timeout=10, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        declared = os.environ.get("ACLA_COMMIT", "").strip()
        return f"{declared[:12]} (declared)" if declared else "unknown"
    return commit + ("+dirty" if dirty else "")


def run_record(profile: str, data_root: Path | None, wall_seconds: float,
               device: str | torch.device | None = None) -> dict:
    """The fields every result folder carries (profile, device, torch, commit, date, wall time, data)."""
    return {"profile": profile, "device": device_name(device), "torch": torch.__version__, "commit": git_commit(),
            "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            "wall_seconds": round(float(wall_seconds), 1), "data_root": data_root_label(data_root)}
