"""Where a stage's training runs go: the stage's own process, parallel processes, or SLURM jobs.

A stage that trains (search, retrain, ablation, frontier) hands its independent runs (setting x variant x seed)
to ``run_all`` and waits for their results. Where they go is a setting of the machine, not of the study, so it
lives outside ``params.yaml`` in ``$ACLA_LAUNCHER``: switching it re-runs nothing and leaves ``dvc.lock`` as it
is, and every kind computes the same weights (training resumes bit-exactly on one device).

- ``local`` (the default): one run after another in the stage's process, as a plain loop.
- ``processes``: a multi-GPU box. The runs are dealt round-robin to ``workers`` lanes; each lane is one process
  (submitit's local executor) that trains its runs one after another on its own GPU (``gpus``), or on
  ``cpu_threads`` CPU threads where there is no GPU.
- ``slurm``: one job per run in a job array (submitit), with the cluster's settings under ``slurm``
  (``slurm_partition``, ``gpus_per_node``, ``cpus_per_task``, ``mem_gb``, ``timeout_min``, ``slurm_account``,
  ``slurm_array_parallelism``, ...: submitit's names). A job that times out or is preempted is requeued and
  its trainer resumes from ``last.pt``.

``$ACLA_LAUNCHER`` holds a kind's name (its defaults) or the path of a YAML file with the fields of ``Launcher``.
A run that finished before (its ``finished`` test) is never submitted: the stage's process only reads it back.
"""

from __future__ import annotations

import dataclasses
import os
import socket
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import submitit
import yaml

ENVIRONMENT_VARIABLE = "ACLA_LAUNCHER"
KINDS = ("local", "processes", "slurm")
A_WEEK_IN_MINUTES = 7 * 24 * 60  # submitit's local executor kills a job after its timeout (default: 2 minutes)


class LaunchError(RuntimeError):
    """A run's job failed: its id, its log and its last error lines."""


@dataclass(frozen=True)
class Launcher:
    kind: str = "local"
    folder: str = "runs/jobs"  # submitit's pickles and logs, one subfolder per stage
    workers: int = 0  # processes: parallel lanes (0: one per GPU of ``gpus``, or 1)
    gpus: tuple[int, ...] = ()  # processes: the GPU of each lane
    cpu_threads: int = 0  # processes: torch threads per lane (0: the machine's cores shared among lanes)
    slurm: dict[str, Any] = field(default_factory=dict)  # submitit's parameters of a SLURM executor
    poll_seconds: float = 30.0  # how often job states are read (SLURM: through sacct)

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"{ENVIRONMENT_VARIABLE}: kind {self.kind!r} is not one of {list(KINDS)}")
        if self.workers < 0 or self.cpu_threads < 0 or self.poll_seconds <= 0:
            raise ValueError(f"{ENVIRONMENT_VARIABLE}: workers and cpu_threads must be >= 0, poll_seconds > 0")
        object.__setattr__(self, "gpus", tuple(int(g) for g in self.gpus))

    @property
    def lanes(self) -> int:
        return self.workers or len(self.gpus) or 1


def launcher_from_environment() -> Launcher:
    """``$ACLA_LAUNCHER``: unset (local), a kind's name, or a YAML file of ``Launcher``'s fields."""
    value = os.environ.get(ENVIRONMENT_VARIABLE, "").strip()
    if not value or value in KINDS:
        return Launcher(kind=value or "local")
    path = Path(value)
    if not path.is_file():
        raise ValueError(f"{ENVIRONMENT_VARIABLE}={value!r}: expected one of {list(KINDS)} or a YAML file's path")
    raw = yaml.safe_load(path.read_text()) or {}
    known = {f.name for f in dataclasses.fields(Launcher)}
    if not isinstance(raw, dict) or set(raw) - known:
        raise ValueError(f"{path}: unknown key(s) {sorted(set(raw) - known) if isinstance(raw, dict) else raw!r}; "
                         f"expected some of {sorted(known)}")
    try:
        return Launcher(**raw)
    except (TypeError, ValueError) as error:
        raise ValueError(f"{path}: {error}") from None


@dataclass
class Run:
    """One independent run of a stage. ``call`` must pickle (submitit sends it to another process)."""

    name: str  # e.g. retrain/sr_x2/acla/seed0: progress, errors and provenance
    call: Callable[[], Any]
    finished: Callable[[], bool] = lambda: False


def where() -> str:
    """This process's place: host, SLURM job and GPU where there are any."""
    parts = [socket.gethostname()]
    if os.environ.get("SLURM_JOB_ID"):
        array = os.environ.get("SLURM_ARRAY_JOB_ID")
        job = f"{array}_{os.environ['SLURM_ARRAY_TASK_ID']}" if array else os.environ["SLURM_JOB_ID"]
        parts.append(f"slurm job {job} (restart {os.environ.get('SLURM_RESTART_COUNT', '0')})")
    if os.environ.get("CUDA_VISIBLE_DEVICES"):
        parts.append(f"gpu {os.environ['CUDA_VISIBLE_DEVICES']}")
    return ", ".join(parts)


def _located(call: Callable[[], Any]) -> tuple[Any, str]:
    return call(), where()


class _Job(submitit.helpers.Checkpointable):
    """What a SLURM job runs: the run's call. Checkpointable: on a timeout or a preemption submitit requeues the
    same call, and the trainer resumes from the run's ``last.pt`` (``resume="auto"``)."""

    def __call__(self, call: Callable[[], Any]) -> tuple[Any, str]:
        return _located(call)


def _lane(calls: list[Callable[[], Any]]) -> list[tuple[Any, str]]:
    return [_located(call) for call in calls]


def run_all(runs: list[Run], stage: str, launcher: Launcher | None = None) -> tuple[list[Any], dict[str, str]]:
    """Every run's result, in order, and where each ran. Runs that finished before are read back here."""
    launcher = launcher or launcher_from_environment()
    results: list[Any] = [None] * len(runs)
    places: dict[str, str] = {}
    pending = []
    for index, run in enumerate(runs):
        if launcher.kind == "local" or run.finished():
            results[index], places[run.name] = _located(run.call)
        else:
            pending.append(index)
    if pending:
        folder = Path(launcher.folder) / stage.replace("/", "-")
        submit = _submit_processes if launcher.kind == "processes" else _submit_slurm
        for index, (result, place) in zip(pending, submit([runs[i] for i in pending], folder, launcher)):
            results[index], places[runs[index].name] = result, place
    return results, places


def _submit_processes(runs: list[Run], folder: Path, launcher: Launcher) -> list[tuple[Any, str]]:
    lanes = [list(range(start, len(runs), launcher.lanes)) for start in range(min(launcher.lanes, len(runs)))]
    threads = launcher.cpu_threads or max(1, (os.cpu_count() or 1) // len(lanes))
    executor = submitit.LocalExecutor(folder=folder)
    jobs = []
    for number, lane in enumerate(lanes):
        gpu = [launcher.gpus[number]] if launcher.gpus else []
        executor.update_parameters(timeout_min=A_WEEK_IN_MINUTES, gpus_per_node=len(gpu), visible_gpus=gpu,
                                   setup=[f"export OMP_NUM_THREADS={threads} MKL_NUM_THREADS={threads}"])
        jobs.append(executor.submit(_lane, [runs[i].call for i in lane]))
    lane_results = _wait(jobs, [" + ".join(runs[i].name for i in lane) for lane in lanes], launcher)
    out: list[tuple[Any, str]] = [None] * len(runs)  # type: ignore[list-item]
    for lane, results in zip(lanes, lane_results):
        for index, result in zip(lane, results):
            out[index] = result
    return out


def _submit_slurm(runs: list[Run], folder: Path, launcher: Launcher) -> list[tuple[Any, str]]:
    executor = submitit.AutoExecutor(folder=folder, cluster="slurm")
    executor.update_parameters(**launcher.slurm)
    jobs = executor.map_array(_Job(), [run.call for run in runs])
    return _wait(jobs, [run.name for run in runs], launcher)


def _wait(jobs: list, names: list[str], launcher: Launcher) -> list[Any]:
    """submitit's monitor until every job is done (queued, running, finished and failed counts as it goes), then
    the results; a failed job stops the stage with its id, its log and its last lines."""
    last: list[str] = []

    def report(started: float, total: int, states: dict[str, set[int]]) -> None:
        failed = len(states["FAILED"])
        counts = Counter({"finished": len(states["DONE"]) - failed, "failed": failed,
                          "running": len(states["RUNNING"] - states["DONE"])})
        counts["queued"] = total - sum(counts.values())
        line = f"{total} jobs: " + ", ".join(f"{counts[k]} {k}" for k in ("queued", "running", "finished", "failed"))
        if last[-1:] != [line]:  # a line when a count changes
            last.append(line)
            print(f"[{time.time() - started:7.0f} s] {line}", flush=True)

    submitit.helpers.monitor_jobs(jobs, poll_frequency=launcher.poll_seconds, test_mode=launcher.poll_seconds < 30,
                                  custom_logging=report)
    results = []
    for job, name in zip(jobs, names):
        try:
            results.append(job.result())
        except Exception as error:  # noqa: BLE001 - submitit raises its own errors; the stage names the job
            log = job.paths.stderr
            tail = log.read_text(errors="replace").strip().splitlines()[-12:] if log.is_file() else [str(error)]
            raise LaunchError(f"{name}: job {job.job_id} failed; log: {log}\n" + "\n".join(tail)) from None
    return results
