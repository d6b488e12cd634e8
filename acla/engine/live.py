"""Training metrics: dvclive where it is installed, the same files written directly where it is not.

dvclive belongs to the study's extras (``pip install -e ".[study]"``); a GPU box with torch preinstalled
may have only the core packages (``pip install --no-deps -e .``), and training must run there too.
``TsvLive`` writes the part of dvclive's layout that the project reads back: one
``plots/metrics/<name>.tsv`` per metric (columns ``step`` and the metric's last name, as
``acla.study.steps.dvclive_curves`` expects), ``metrics.json`` (latest values and step) and ``params.yaml``.
It resumes the way dvclive does: the step after the one ``metrics.json`` records.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import yaml

from acla.files import atomic_write_text


class TsvLive:
    """The subset of ``dvclive.Live`` that ``acla.engine.train`` calls: params, metrics, steps, end."""

    def __init__(self, directory: str | Path, resume: bool = False) -> None:
        self.directory = Path(directory)
        self.metrics_dir = self.directory / "plots" / "metrics"
        self.summary: dict = {}
        self.params: dict = {}
        self.step = 0
        if resume:
            self._read_previous()
        else:  # a fresh run starts from empty files, as dvclive's cleanup does
            shutil.rmtree(self.metrics_dir, ignore_errors=True)
            for name in ("metrics.json", "params.yaml"):
                (self.directory / name).unlink(missing_ok=True)
        self.metrics_dir.mkdir(parents=True, exist_ok=True)

    def _read_previous(self) -> None:
        metrics, params = self.directory / "metrics.json", self.directory / "params.yaml"
        if metrics.is_file():
            self.summary = json.loads(metrics.read_text())
            self.step = self.summary.get("step", 0)
            self.step += 1 if self.step else 0  # the step after the last one logged
        if params.is_file():
            self.params = yaml.safe_load(params.read_text()) or {}

    def log_param(self, name: str, value: object) -> None:
        self.params[name] = value
        atomic_write_text(self.directory / "params.yaml", yaml.safe_dump(self.params, sort_keys=False))

    def log_metric(self, name: str, value: float) -> None:
        """Append ``step<TAB>value`` to ``plots/metrics/<name>.tsv`` (``name`` may hold ``/``: subfolders)."""
        path = self.metrics_dir / f"{name}.tsv"
        path.parent.mkdir(parents=True, exist_ok=True)
        new = not path.is_file()
        with open(path, "a", encoding="utf-8") as handle:
            if new:
                handle.write(f"step\t{name.rsplit('/', 1)[-1]}\n")
            handle.write(f"{self.step}\t{value!r}\n")
        *groups, last = name.split("/")
        section = self.summary
        for group in groups:
            section = section.setdefault(group, {})
        section[last] = value

    def next_step(self) -> None:
        self._write_summary()
        self.step += 1

    def end(self) -> None:
        self.step = self.summary.get("step", self.step)  # as dvclive: end() after next_step() keeps that step
        self._write_summary()

    def _write_summary(self) -> None:
        """Once per step, so a plain write (as dvclive's): an fsync here would cost more than a small step."""
        self.summary["step"] = self.step
        (self.directory / "metrics.json").write_text(json.dumps(self.summary, indent=4) + "\n")


def repair_summary(directory: str | Path, last_step: int) -> None:
    """Rewrite an unreadable ``metrics.json`` as ``{"step": last_step}``.

    dvclive (and ``TsvLive``) write it with a plain write once per step, so a run killed during that write
    leaves it empty or cut, and resuming would fail on it. The checkpoint's last step is what resuming needs.
    """
    metrics = Path(directory) / "metrics.json"
    if not metrics.is_file():
        return
    try:
        json.loads(metrics.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError):
        atomic_write_text(metrics, json.dumps({"step": last_step}, indent=4) + "\n")
        print(f"warning: {metrics} was cut short (a run killed while writing it); rewritten at step {last_step}",
              file=sys.stderr, flush=True)


def open_live(directory: str | Path, resume: bool = False, last_step: int = 0):
    """``dvclive.Live`` in ``directory``, or a ``TsvLive`` (with a one-line warning) without dvclive. On resume,
    ``last_step`` (the checkpoint's) replaces a ``metrics.json`` that a kill left unreadable."""
    if resume:
        repair_summary(directory, last_step)
    try:
        from dvclive import Live
    except ImportError:
        print(f"warning: dvclive is not installed: training metrics go to {Path(directory).name}/plots/metrics/*.tsv "
              "directly (install the study extras for dvclive)", file=sys.stderr, flush=True)
        return TsvLive(directory, resume)
    return Live(str(directory), resume=resume, save_dvc_exp=False, dvcyaml=None)
