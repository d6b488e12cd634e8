"""The launchers: a stage's runs in parallel processes give the stage's own results; failures name their job.

A job's call is pickled by reference, so the calls here are functions of importable modules."""

from __future__ import annotations

import json
import os
from functools import partial
from pathlib import Path

import pandas as pd
import pytest
import torch

from acla.engine.launch import Launcher, LaunchError, Run, launcher_from_environment, run_all
from acla.study.steps import open_task

ROOT = Path(__file__).resolve().parents[1]


def test_processes_return_every_result_in_order_and_run_apart_from_the_stage(tmp_path: Path) -> None:
    launcher = Launcher(kind="processes", workers=2, folder=str(tmp_path / "jobs"), poll_seconds=0.5)
    runs = [Run(f"square/{k}", partial(pow, k, 2)) for k in range(5)]
    results, places = run_all(runs, "test/square", launcher)
    assert results == [k * k for k in range(5)]
    assert set(places) == {run.name for run in runs}
    pids, _ = run_all([Run(f"pid/{k}", os.getpid) for k in range(4)], "test/pid", launcher)
    assert os.getpid() not in pids and len(set(pids)) == 2  # two lanes, each one process


def test_a_finished_run_is_read_back_here_and_never_submitted(tmp_path: Path) -> None:
    launcher = Launcher(kind="processes", folder=str(tmp_path / "jobs"), poll_seconds=0.5)
    results, _ = run_all([Run("done", os.getpid, finished=lambda: True)], "test/done", launcher)
    assert results == [os.getpid()]
    assert not (tmp_path / "jobs").exists()


def test_a_failed_job_names_its_id_its_log_and_its_error(tmp_path: Path) -> None:
    launcher = Launcher(kind="processes", folder=str(tmp_path / "jobs"), poll_seconds=0.5)
    with pytest.raises(LaunchError) as raised:
        # int() of that text raises a ValueError in the job
        run_all([Run("broken/run", partial(int, "the loss is NaN at iteration 7"))], "test/fail", launcher)
    text = str(raised.value)
    assert text.startswith("broken/run: job ") and "log: " in text and "the loss is NaN at iteration 7" in text
    assert Path(text.split("log: ")[1].splitlines()[0]).is_file()


def test_the_launcher_is_read_from_the_environment_and_bad_settings_are_named(tmp_path: Path,
                                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ACLA_LAUNCHER", raising=False)
    assert launcher_from_environment().kind == "local"
    monkeypatch.setenv("ACLA_LAUNCHER", "processes")
    assert launcher_from_environment().kind == "processes"
    settings = tmp_path / "launcher.yaml"
    settings.write_text("kind: slurm\nslurm: {slurm_partition: gpu, gpus_per_node: 1, timeout_min: 60}\n")
    monkeypatch.setenv("ACLA_LAUNCHER", str(settings))
    assert launcher_from_environment().slurm["slurm_partition"] == "gpu"
    settings.write_text("kind: slurm\npartition: gpu\n")
    with pytest.raises(ValueError, match=r"launcher.yaml: unknown key\(s\) \['partition'\]"):
        launcher_from_environment()
    monkeypatch.setenv("ACLA_LAUNCHER", "kubernetes")
    with pytest.raises(ValueError, match="ACLA_LAUNCHER='kubernetes': expected one of"):
        launcher_from_environment()


def test_the_ci_profile_trained_in_parallel_processes_scores_exactly_as_in_the_stage(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    scores = {}
    for kind in ("local", "processes"):
        settings = tmp_path / f"{kind}.yaml"
        # each lane gets the stage's threads: equal threads, equal sums
        settings.write_text(f"kind: {kind}\nworkers: 2\ncpu_threads: {torch.get_num_threads()}\n"
                            f"folder: {tmp_path / 'jobs'}\npoll_seconds: 0.5\n")
        monkeypatch.setenv("ACLA_LAUNCHER", str(settings))
        study = open_task("sr", ROOT / "params.yaml", profile="ci", reports=tmp_path / kind / "study",
                          runs=tmp_path / kind / "runs", progress=False)
        study.search()
        scores[kind] = study.retrain()
        provenance = json.loads((study.reports / "retrain" / "provenance.json").read_text())
        assert provenance["launcher"] == kind and len(provenance["ran_on"]) == len(scores[kind])
    columns = ["setting", "variant", "seed", "val_psnr", "val_ssim", "checkpoint"]
    pd.testing.assert_frame_equal(scores["local"][columns], scores["processes"][columns])
