"""The study's training stages through a real SLURM (sbatch, sacct): the same scores as in the stage's process, and
a job requeued mid-run resumes to the weights of an uninterrupted run.

Runs where a cluster answers (start one on this machine: ``sudo bash tests/slurm/cluster.sh start``), and
otherwise skips saying why. With ``ACLA_SLURM_RECORD=<folder>`` it also writes the evidence there: the ``sacct``
lines of its jobs, the per-run comparison with the local launcher and the requeue's record.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import threading
import time
from dataclasses import replace
from functools import partial
from pathlib import Path

import pandas as pd
import pytest
import torch

from acla.config import load_config
from acla.engine.launch import Launcher, Run, run_all
from acla.engine.train import ModelSpec, train
from acla.study.steps import open_task, train_run

ROOT = Path(__file__).resolve().parents[1]
STAGES = ("retrain", "ablation", "frontier")  # with the search: every stage of the task that trains
SACCT_FORMAT = "JobID,JobName%12,Partition,State,ExitCode,Elapsed,NodeList"


def _why_no_cluster() -> str | None:
    if shutil.which("sbatch") is None:
        return "no SLURM here: sbatch is not installed (sudo bash tests/slurm/cluster.sh install)"
    try:
        subprocess.run(["sinfo", "-h"], check=True, capture_output=True, timeout=10)
        subprocess.run(["sacct", "-n", "-X"], check=True, capture_output=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return "no SLURM cluster answers here (start one: sudo bash tests/slurm/cluster.sh start)"
    return None


pytestmark = pytest.mark.skipif(_why_no_cluster() is not None, reason=_why_no_cluster() or "")


def slurm_launcher(folder: Path) -> Launcher:
    # the stage's own torch threads in every job: equal threads, equal sums
    return Launcher(kind="slurm", folder=str(folder), poll_seconds=2.0,
                    slurm={"timeout_min": 30, "cpus_per_task": os.cpu_count() or 1, "slurm_partition": "debug",
                           "slurm_setup": [f"export OMP_NUM_THREADS={torch.get_num_threads()}"]})


def record_folder() -> Path | None:
    value = os.environ.get("ACLA_SLURM_RECORD")
    return Path(value) if value else None


def sacct(job_ids: list[str], settle_seconds: float = 120) -> str:
    """The jobs' accounting lines (every requeue too), once the database has caught up with their ends (it lags
    behind the results submitit reads)."""
    deadline = time.time() + settle_seconds
    while True:
        lines = subprocess.run(["sacct", "-X", "--duplicates", "-j", ",".join(job_ids), f"--format={SACCT_FORMAT}"],
                               check=True, capture_output=True, text=True).stdout
        if not {"RUNNING", "PENDING", "COMPLETING"} & set(lines.split()) or time.time() > deadline:
            return lines
        time.sleep(2)


def submitted_job_ids(jobs: Path) -> list[str]:
    """Every job submitit submitted under ``jobs`` (its ``<id>_submitted.pkl`` files), array tasks included."""
    return sorted({path.name.split("_submitted")[0] for path in jobs.rglob("*_submitted.pkl")})


def ci_study(kind: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("ACLA_LAUNCHER", kind if kind == "local" else str(tmp_path / "slurm.yaml"))
    return open_task("sr", ROOT / "params.yaml", profile="ci", reports=tmp_path / kind / "study",
                     runs=tmp_path / kind / "runs", progress=False)


def test_the_ci_profile_through_sbatch_scores_exactly_as_in_the_stage(tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    import yaml

    launcher = slurm_launcher(tmp_path / "jobs")
    (tmp_path / "slurm.yaml").write_text(yaml.safe_dump({"kind": "slurm", "folder": launcher.folder,
                                                         "poll_seconds": 2.0, "slurm": launcher.slurm}))
    runs = {}
    for kind in ("local", "slurm"):
        study = ci_study(kind, tmp_path, monkeypatch)
        study.search()
        study.retrain()
        study.ablate()
        study.frontier()
        runs[kind] = pd.concat([pd.read_csv(study.reports / stage / "runs.csv").assign(stage=stage)
                                for stage in STAGES], ignore_index=True)
        runs[kind]["arch"] = (study.reports / "search" / "sr_x2" / "arch.json").read_text()
        ran_on = json.loads((study.reports / "retrain" / "provenance.json").read_text())["ran_on"]
        assert all(("slurm job" in place) == (kind == "slurm") for place in ran_on.values())
    columns = ["stage", "setting", "variant", "seed", "iterations", "val_psnr", "val_ssim", "checkpoint", "arch"]
    local, slurm = runs["local"][columns], runs["slurm"][columns]
    jobs = submitted_job_ids(tmp_path / "jobs")
    lines = sacct(jobs)
    states = [line.split()[3] for line in lines.splitlines()[2:] if line.strip()]
    assert len(states) == len(jobs) > 0 and set(states) == {"COMPLETED"}, lines
    if record_folder():
        folder = record_folder()
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "sacct_ci_profile.txt").write_text(lines)
        comparison = local.drop(columns="arch").merge(slurm.drop(columns="arch"), on=columns[:5],
                                                      suffixes=("_local", "_slurm"))
        comparison["same_scores"] = ((comparison.val_psnr_local == comparison.val_psnr_slurm)
                                     & (comparison.val_ssim_local == comparison.val_ssim_slurm))
        comparison.to_csv(folder / "ci_profile_local_vs_slurm.csv", index=False)
    pd.testing.assert_frame_equal(local, slurm)


def test_a_job_requeued_mid_run_resumes_to_the_weights_of_an_uninterrupted_run(tmp_path: Path) -> None:
    config = load_config(ROOT / "params.yaml", "ci")
    # long enough that the requeue at the first checkpoints lands mid-run on an idle machine (200 iterations did not)
    config = replace(config, train=replace(config.train, iterations=1000, checkpoint_every=10, validate_every=1000))
    spec = ModelSpec.from_config("sr_x2", config.model)
    run_dir = (tmp_path / "slurm" / "run").resolve()
    launcher = slurm_launcher(tmp_path / "jobs")
    outcome: dict = {}

    def submit() -> None:
        try:
            outcome["results"] = run_all([Run("requeue/sr_x2", partial(train_run, run_dir.parent, spec, config,
                                                                        run_dir, None, False))], "requeue", launcher)
        except Exception as error:  # noqa: BLE001 - reported below, in the test's thread
            outcome["error"] = error

    waiting = threading.Thread(target=submit)
    waiting.start()
    deadline = time.time() + 300
    while not (run_dir / "last.pt").is_file() and time.time() < deadline and waiting.is_alive():
        time.sleep(0.2)
    assert (run_dir / "last.pt").is_file(), outcome.get("error", "the job wrote no checkpoint in 300 s")
    at_requeue = torch.load(run_dir / "last.pt", map_location="cpu", weights_only=False)["iteration"]
    job = submitted_job_ids(tmp_path / "jobs")[0]
    subprocess.run(["scontrol", "requeue", job], check=True, capture_output=True, timeout=30)
    waiting.join(timeout=900)
    assert not waiting.is_alive() and "error" not in outcome, outcome.get("error")
    (result,), places = outcome["results"]
    assert at_requeue < config.train.iterations
    assert "restart 1" in places["requeue/sr_x2"], places
    lines = sacct([job])
    assert "REQUEUED" in lines and "COMPLETED" in lines, lines

    reference = train(spec, config, tmp_path / "local" / "run", progress=False)  # uninterrupted, in this process
    resumed = torch.load(result["checkpoint"], map_location="cpu", weights_only=False)["model"]
    uninterrupted = torch.load(reference.checkpoint, map_location="cpu", weights_only=False)["model"]
    same = sorted(resumed) == sorted(uninterrupted) and all(torch.equal(resumed[k], uninterrupted[k])
                                                             for k in resumed)
    if record_folder():
        folder = record_folder()
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "sacct_requeue.txt").write_text(lines)
        (folder / "requeue.json").write_text(json.dumps(
            {"job": job, "iterations": config.train.iterations, "checkpoint_every": config.train.checkpoint_every,
             "last_checkpoint_at_requeue": at_requeue, "ran_on": places["requeue/sr_x2"].split(", ", 1)[1],
             "val_psnr_resumed": result["val_psnr"], "val_psnr_uninterrupted": reference.last_psnr,
             "weights_bit_identical": same}, indent=2) + "\n")
    assert same
    assert result["val_psnr"] == reference.last_psnr
