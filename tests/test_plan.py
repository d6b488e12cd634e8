"""``python -m acla plan``: the runs it counts are the runs the stages trained, and its wall time keeps the graph."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from acla.cli import main as acla_main
from acla.config import load_study
from acla.study.plan import planned_runs, wall_hours

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("profile", ["smoke", "cpu", "cpu-gates", "cpu-long"])
def test_the_plan_counts_the_runs_that_the_profile_trained(profile: str) -> None:
    planned = pd.DataFrame([{"task": r.task, "stage": r.stage.split()[0], "setting": r.setting}
                            for r in planned_runs(load_study(ROOT / "params.yaml", profile))])
    checked = 0
    for (task, stage), rows in planned.groupby(["task", "stage"]):
        folder = ROOT / "reports" / "study" / profile / task / stage
        if stage == "search":
            trained = len(pd.read_csv(folder / "summary.csv"))
        elif stage == "ablation" and (folder / "budget.csv").is_file():
            budget = pd.read_csv(folder / "budget.csv")
            trained = len(pd.read_csv(folder / "runs.csv")) + int((budget.source == "ablation").sum())
        else:
            trained = len(pd.read_csv(folder / "runs.csv")) if (folder / "runs.csv").is_file() else 0
        assert len(rows) == trained, (profile, task, stage)
        checked += 1
    assert checked > 0


def test_the_wall_time_runs_every_search_first_and_never_splits_a_run() -> None:
    table = pd.DataFrame({"stage": ["search", "search", "retrain", "retrain", "retrain"],
                          "hours": [1.0, 2.0, 5.0, 3.0, 3.0]})
    assert wall_hours(table, 1) == pytest.approx(14.0)
    assert wall_hours(table, 2) == pytest.approx(2.0 + 6.0)  # longest first: 5 | 3 + 3
    assert wall_hours(table, 64) == pytest.approx(2.0 + 5.0)


def test_the_paper_profile_prints_gpu_hours_and_the_wall_time_on_8_and_64_gpus(capsys) -> None:
    assert acla_main(["plan", "--profile", "paper", "--gpus", "8", "64", "--config", str(ROOT / "params.yaml"),
                      "--reports", str(ROOT / "reports")]) == 0
    text = capsys.readouterr().out
    assert "profile paper on nvidia_h200" in text and "GPU-hours" in text
    assert "wall time on   8 GPUs" in text and "wall time on  64 GPUs" in text
    assert "scaled" in text  # the paper's patch and settings differ from gpu-check's: nothing there is measured
