"""params.yaml validation: every bad key, type or profile is named."""

from __future__ import annotations

from pathlib import Path

import pytest

from acla.config import ClassicalConfig, ConfigError, load_config


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "params.yaml"
    path.write_text(text)
    return path


def test_defaults_and_profile_overrides(tmp_path: Path) -> None:
    path = write(tmp_path, "profile: smoke\nclassical:\n  sigmas: [15, 25]\nprofiles:\n  gpu:\n    classical:\n      sigmas: [50]\n")
    assert load_config(path).classical.sigmas == (15.0, 25.0)
    config = load_config(path, "gpu")
    assert config.profile == "gpu" and config.classical.sigmas == (50.0,)
    assert config.classical.qualities == ClassicalConfig().qualities


def test_the_repository_params_file_loads() -> None:
    config = load_config(Path(__file__).parents[1] / "params.yaml")
    assert config.profile == "smoke"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("profile: huge\n", "profile 'huge' is unknown"),
        ("data:\n  rooot: /x\n", r"data: unknown key\(s\) \['rooot'\]"),
        ("data:\n  verify: 'yes'\n", r"data.verify: expected bool, got 'yes'"),
        ("classical:\n  qualities: [10, ten]\n", r"classical.qualities\[1\]: expected int, got 'ten'"),
        ("classical:\n  scales: 2\n", "classical.scales: expected a list"),
        ("classical:\n  seed: true\n", "classical.seed: expected int, got True"),
        ("profiles:\n  laptop: {}\n", r"unknown profile\(s\) \['laptop'\]"),
        ("surprise: 1\n", r"unknown key\(s\) \['surprise'\]"),
        ("classical:\n  scales: [2, 8]\n", r"classical.scales: 8 is not one of \(2, 3, 4\)"),
        ("classical:\n  sigmas: [-5]\n", "classical.sigmas: -5.0 is negative"),
        ("classical:\n  qualities: [101]\n", "classical.qualities: 101 is outside 1..100"),
        ("classical:\n  bayer_pattern: RGBG\n", "classical.bayer_pattern: 'RGBG' is not one of"),
    ],
)
def test_bad_params_name_the_key(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config(write(tmp_path, text))


def test_missing_params_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "absent.yaml")
