"""The classical-rows command: CSV shape, values that follow from the degradations, clean failures."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from acla.config import ClassicalConfig
from acla.study.classical import COLUMNS, main, run

SMALL = ClassicalConfig(scales=(2,), sigmas=(25,), qualities=(10,))


def test_bundled_rows_without_a_data_root(tmp_path: Path) -> None:
    out = tmp_path / "rows.csv"
    frame = run(None, SMALL, out, progress=False)
    written = pd.read_csv(out)
    assert list(written.columns) == COLUMNS
    assert set(written["method"]) == {"bicubic", "noisy input", "mosaiced input", "bilinear", "jpeg input"}
    assert (written["n_images"] == 3).all() and (written["set"] == "bundled-test").all()
    noisy = frame.set_index("method").loc["noisy input"]
    assert 20.0 < noisy["psnr"] < 21.5  # 20 log10(255/25) = 20.17 dB, a little higher after clipping to 0..255
    bilinear, mosaic = (frame.set_index("method").loc[name, "psnr"] for name in ("bilinear", "mosaiced input"))
    assert bilinear > mosaic + 15
    # full precision: the CSV holds the same floats as the frame
    assert np.array_equal(written["psnr"].to_numpy(), frame["psnr"].to_numpy())


def test_rows_cover_every_task_of_every_set(data_root: Path, tmp_path: Path) -> None:
    config = ClassicalConfig(scales=(4,), sigmas=(50,), qualities=(40,), sets=("Set12", "McMaster", "Classic5", "Urban100"))
    frame = run(data_root, config, tmp_path / "rows.csv", progress=False)
    keys = set(zip(frame["task"], frame["set"], frame["setting"], frame["method"]))
    assert keys == {
        ("denoise_gray", "Set12", "sigma50", "noisy input"),
        ("denoise_color", "McMaster", "sigma50", "noisy input"),
        ("demosaic", "McMaster", "GRBG", "mosaiced input"), ("demosaic", "McMaster", "GRBG", "bilinear"),
        ("jpeg", "Classic5", "q40", "jpeg input"),
        ("sr", "Urban100 (partial 19/100)", "x4", "bicubic"),
        ("denoise_color", "Urban100 (partial 19/100)", "sigma50", "noisy input"),
        ("demosaic", "Urban100 (partial 19/100)", "GRBG", "mosaiced input"),
        ("demosaic", "Urban100 (partial 19/100)", "GRBG", "bilinear"),
    }


def test_bad_input_exits_2_and_writes_nothing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "rows.csv"
    assert main(["--out", str(out), "--sets", "Set6", "--no-progress"]) == 2
    assert "unknown set 'Set6'" in capsys.readouterr().err
    assert main(["--out", str(out), "--data-root", str(tmp_path / "none"), "--no-progress"]) == 2
    assert "is not a directory" in capsys.readouterr().err
    bad = tmp_path / "params.yaml"
    bad.write_text("classical:\n  qualities: [0]\n")
    assert main(["--out", str(out), "--config", str(bad), "--no-progress"]) == 2
    assert "classical.qualities: 0 is outside 1..100" in capsys.readouterr().err
    assert not out.exists() and not list(tmp_path.glob(".rows.csv*"))
