"""Reusing a finished run whose weights another run would only reproduce.

Two profiles (or two steps of one profile) often train the very same model: profile ``cpu``'s 600-iteration
backbone and ACLA are ``cpu-long``'s first budget, seed for seed. Training is bit-exact on one machine, so a
finished run of the same model, training config and training code under the runs folder holds exactly the
weights a new run would produce. ``reuse_finished_run`` copies it into the new run's folder; ``train`` then
resumes the finished run, which trains nothing and only validates once.

A run counts as finished by the record ``train`` writes after its last iteration (``FINISHED``): the config's
digest, the training code's digest and the validation crop (which changes the logged curves, not the weights).
Checkpoints never travel between machines (``runs/`` is local), so a twin was trained on this machine.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from acla.config import Config
from acla.engine.train import FINISHED, ModelSpec, finished_record


def finished_twin(runs_root: Path, spec: ModelSpec, config: Config, out_dir: Path) -> Path | None:
    """A run folder under ``runs_root`` other than ``out_dir`` that finished this model, config and code."""
    wanted = finished_record(spec, config)
    out_dir = Path(out_dir).resolve()
    for record in sorted(Path(runs_root).rglob(FINISHED)):
        folder = record.parent
        if folder.resolve() != out_dir and _holds(folder, wanted):
            return folder
    return None


def finished_here(spec: ModelSpec, config: Config, out_dir: Path) -> bool:
    """``out_dir`` holds a finished run of this model, config and training code (resuming it trains nothing)."""
    return _holds(Path(out_dir), finished_record(spec, config))


def _holds(folder: Path, wanted: dict) -> bool:
    """``folder`` has a checkpoint and a finished record equal to ``wanted``."""
    try:
        return (folder / "last.pt").is_file() and json.loads((folder / FINISHED).read_text()) == wanted
    except (OSError, json.JSONDecodeError):
        return False


def reuse_finished_run(runs_root: Path, spec: ModelSpec, config: Config, out_dir: Path) -> Path | None:
    """Copy a finished twin (``finished_twin``) into ``out_dir`` when ``out_dir`` holds no checkpoint of its own;
    the twin's folder, or None when nothing was copied. The copy lands whole or not at all."""
    out_dir = Path(out_dir)
    if (out_dir / "last.pt").exists():
        return None
    twin = finished_twin(runs_root, spec, config, out_dir)
    if twin is None:
        return None
    partial = out_dir.with_name(out_dir.name + ".copying")
    shutil.rmtree(partial, ignore_errors=True)
    shutil.copytree(twin, partial)
    shutil.rmtree(out_dir, ignore_errors=True)  # an empty or checkpoint-less folder of an interrupted start
    partial.rename(out_dir)
    print(f"reusing {twin} for {out_dir}: the same model, config and training code finished there", flush=True)
    return twin
