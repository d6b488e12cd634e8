"""The experiment drivers produce their tables (tiny runs; the real ones are in reports/smoke)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
from conftest import study_params

from acla.config import load_config
from acla.study.experiments import degraded_baseline, seeds

PARAMS = """
train:
  iterations: 2
  batch_size: 2
  patch_size: 32
  validate_every: 2
  checkpoint_every: 2
  samples_per_epoch: 8
"""


def test_seed_comparison_writes_per_run_and_summary_tables(tmp_path: Path) -> None:
    path = tmp_path / "params.yaml"
    path.write_text(study_params(PARAMS))
    config = load_config(path)
    summary = seeds("sr_x2", config, tmp_path / "out", None, [0], (4, 8))
    runs = pd.read_csv(tmp_path / "out" / "seeds.csv")
    assert list(runs["attention"]) == ["none", "cla", "acla"] and (runs["iterations"] == 2).all()
    assert list(summary["attention"]) == ["none", "cla", "acla"]
    bicubic_psnr, _ = degraded_baseline("sr_x2", config, None)
    assert (summary["classical_psnr"] == bicubic_psnr).all()
    assert 30 < bicubic_psnr < 35  # bicubic x2 on the bundled test images (32.5 dB in reports/tables)
