"""Training metrics without dvclive: the same files, and training that runs where dvclive is absent."""

from __future__ import annotations

import json
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from acla.config import load_config
from acla.engine.live import TsvLive, open_live
from acla.engine.train import ModelSpec, train
from acla.study.steps import dvclive_curves

ROOT = Path(__file__).parents[1]


def log_a_run(live, steps: range) -> None:
    live.log_param("global_batch", 4)
    for step in steps:
        live.log_metric("train/loss", 1.0 / (step + 1))
        if step % 2:
            live.log_metric("val/psnr", 20.0 + step)
        live.next_step()
    live.end()


def test_tsv_live_writes_what_dvclive_writes_and_resumes_alike(tmp_path: Path) -> None:
    pytest.importorskip("dvclive")
    from dvclive import Live

    ours, theirs = tmp_path / "ours", tmp_path / "dvclive"
    log_a_run(TsvLive(ours), range(3))
    log_a_run(Live(str(theirs), save_dvc_exp=False, dvcyaml=None), range(3))
    log_a_run(TsvLive(ours, resume=True), range(3, 5))
    log_a_run(Live(str(theirs), resume=True, save_dvc_exp=False, dvcyaml=None), range(3, 5))
    for name in ("plots/metrics/train/loss.tsv", "plots/metrics/val/psnr.tsv", "params.yaml"):
        assert (ours / name).read_text() == (theirs / name).read_text(), name
    assert json.loads((ours / "metrics.json").read_text()) == json.loads((theirs / "metrics.json").read_text())


def test_a_fresh_run_starts_from_empty_files(tmp_path: Path) -> None:
    log_a_run(TsvLive(tmp_path), range(3))
    log_a_run(TsvLive(tmp_path), range(2))
    assert (tmp_path / "plots/metrics/train/loss.tsv").read_text().splitlines() == ["step\tloss", "0\t1.0", "1\t0.5"]


def test_training_runs_without_dvclive_and_the_study_reads_its_curves(tmp_path: Path, monkeypatch, capsys) -> None:
    monkeypatch.setitem(sys.modules, "dvclive", None)  # `import dvclive` now raises ImportError
    config = load_config(ROOT / "params.yaml", "ci", "sr_x2")
    config = replace(config, train=replace(config.train, iterations=2, validate_every=2, checkpoint_every=2))
    assert isinstance(open_live(tmp_path / "probe"), TsvLive)
    result = train(ModelSpec.from_config("sr_x2", config.model), config, tmp_path / "run", progress=False)
    warnings = [line for line in capsys.readouterr().err.splitlines() if "dvclive" in line]
    assert warnings[-1] == ("warning: dvclive is not installed: training metrics go to dvclive/plots/metrics/*.tsv "
                            "directly (install the study extras for dvclive)")
    assert len(warnings) == 2  # one line for each Live opened (the probe, the run)
    assert result.checkpoint.is_file()
    curves = dvclive_curves(tmp_path / "run")
    assert set(curves.metric) >= {"train/loss", "train/lr", "val/psnr", "val/ssim"}
    assert curves[curves.metric == "train/loss"].step.tolist() == [0, 1]
    assert "global_batch: 2" in (tmp_path / "run" / "dvclive" / "params.yaml").read_text()


@pytest.mark.parametrize("dvclive_installed", [True, False])
def test_resuming_after_a_kill_mid_write_of_metrics_json_repairs_it(tmp_path: Path, monkeypatch,
                                                                    dvclive_installed: bool) -> None:
    """A SIGKILL during the per-step plain write of ``metrics.json`` leaves it empty (seen in CI's kill test)."""
    if dvclive_installed:
        pytest.importorskip("dvclive")
    else:
        monkeypatch.setitem(sys.modules, "dvclive", None)  # import fails: the TsvLive fallback
    log_a_run(open_live(tmp_path), range(5))
    (tmp_path / "metrics.json").write_text('{\n    "train": {')  # cut mid-write
    live = open_live(tmp_path, resume=True, last_step=3)
    assert json.loads((tmp_path / "metrics.json").read_text())["step"] == 3
    assert live.step == 4  # the step after the checkpoint's last one
    live.end()
