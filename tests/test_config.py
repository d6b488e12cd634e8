"""params.yaml validation: every bad key, type or profile is named."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
from conftest import study_params

from acla.config import (
    PROFILES,
    ClassicalConfig,
    ConfigError,
    FrontierConfig,
    Remedy,
    TrainConfig,
    load_config,
    load_study,
)
from acla.tasks import parse_task

ROOT = Path(__file__).parents[1]


def write(tmp_path: Path, text: str, *, raw: bool = False) -> Path:
    path = tmp_path / "params.yaml"
    path.write_text(text if raw else study_params(text))
    return path


def test_defaults_and_profile_overrides(tmp_path: Path) -> None:
    path = write(tmp_path, "profile: smoke\nclassical:\n  sigmas: [15, 25]\n  profiles:\n    gpu:\n      sigmas: [50]\n")
    assert load_config(path).classical.sigmas == (15.0, 25.0)
    config = load_config(path, "gpu")
    assert config.profile == "gpu" and config.classical.sigmas == (50.0,)
    assert config.classical.qualities == ClassicalConfig().qualities


def test_task_sections_override_defaults_in_the_documented_order(tmp_path: Path) -> None:
    text = """
defaults:
  train: {iterations: 1000, patch_size: 48}
  profiles:
    smoke: {train: {iterations: 10, patch_size: 24}}
tasks:
  sr:
    settings: [sr_x2, sr_x4]
    train: {patch_size: 96}
    profiles:
      smoke: {settings: [sr_x2], train: {patch_size: 32}}
  denoise: {settings: [denoise_color_s30], train: {iterations: 7}}
  demosaic: {settings: [demosaic]}
  jpeg: {settings: [jpeg_q20]}
"""
    path = write(tmp_path, text, raw=True)
    smoke, paper = load_study(path, "smoke"), load_study(path, "paper")
    # defaults < task < defaults.profiles.<p> < task.profiles.<p>
    assert paper.tasks["sr"].settings == ("sr_x2", "sr_x4") and paper.tasks["sr"].train.patch_size == 96
    assert smoke.tasks["sr"].settings == ("sr_x2",) and smoke.tasks["sr"].train.patch_size == 32
    assert smoke.tasks["denoise"].train.iterations == 10 and paper.tasks["denoise"].train.iterations == 7
    assert smoke.tasks["jpeg"].train.patch_size == 24 and paper.tasks["jpeg"].train.patch_size == 48
    assert load_config(path, "smoke", task="sr_x4").train.patch_size == 32  # a setting outside the list still resolves


def test_the_repository_params_file_loads_in_every_profile() -> None:
    for profile in PROFILES:
        study = load_study(ROOT / "params.yaml", profile)
        assert set(study.tasks) == {"sr", "denoise", "demosaic", "jpeg"}
    smoke = load_study(ROOT / "params.yaml")
    assert smoke.profile == "smoke"
    assert [t.settings for t in smoke.tasks.values()] == [("sr_x2",), ("denoise_color_s30",), ("demosaic",), ("jpeg_q20",)]
    assert {t.model.backbone for t in smoke.tasks.values()} == {"tiny"}
    paper = load_study(ROOT / "params.yaml", "paper")
    assert paper.tasks["sr"].settings == ("sr_x2", "sr_x3", "sr_x4")
    assert paper.tasks["sr"].train.train_sets == ("DIV2K_train_HR",) and paper.tasks["sr"].train.patch_size == 96


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("profile: huge\n", "profile 'huge' is unknown"),
        ("data:\n  rooot: /x\n", r"data: unknown key\(s\) \['rooot'\]"),
        ("data:\n  verify: 'yes'\n", r"data.verify: expected bool, got 'yes'"),
        ("classical:\n  qualities: [10, ten]\n", r"classical.qualities\[1\]: expected int, got 'ten'"),
        ("classical:\n  scales: 2\n", "classical.scales: expected a list"),
        ("classical:\n  seed: true\n", "classical.seed: expected int, got True"),
        ("classical:\n  profiles:\n    laptop: {}\n", r"classical.profiles: unknown profile\(s\) \['laptop'\]"),
        ("train:\n  iterations: many\n", r"defaults.train.iterations: expected int, got 'many'"),
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


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda t: t.replace("  jpeg:\n", "  jpg:\n"), r"tasks: missing task\(s\) \['jpeg'\], unknown task\(s\) \['jpg'\]"),
        (lambda t: t.replace("settings: [demosaic]", "settings: []"), "tasks.demosaic.settings: empty"),
        (lambda t: t.replace("settings: [demosaic]", "settings: [sr_x2]"), "tasks.demosaic.settings: 'sr_x2' is a sr setting"),
        (lambda t: t.replace("settings: [demosaic]", "settings: [demosaic_x2]"), "tasks.demosaic.settings: unknown task"),
        (lambda t: t.replace("profile: smoke", "profile: laptop"), "profile 'laptop' is unknown"),
        (lambda t: t.replace("      smoke: {settings: [sr_x2], train: {patch_size: 48}}",
                             "      smoke: {settings: [sr_x2], train: {patch_size: big}}"),
         "tasks.sr.train.patch_size: expected int, got 'big'"),
    ],
)
def test_bad_edits_of_the_repository_file_name_the_key(tmp_path: Path, edit, message: str) -> None:
    text = (ROOT / "params.yaml").read_text()
    edited = edit(text)
    assert edited != text
    with pytest.raises(ConfigError, match=message):
        load_study(write(tmp_path, edited, raw=True))


def test_missing_params_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "absent.yaml")


def test_gpu_patches_fit_the_smallest_training_image_of_the_data_root(data_root: Path) -> None:
    import csv

    rows = list(csv.DictReader((data_root / "MANIFEST.csv").open()))
    study = load_study(ROOT / "params.yaml", "gpu")
    for name, task in study.tasks.items():
        sides = [min(int(r["width"]), int(r["height"])) for r in rows if r["set"] in task.train.train_sets]
        assert sides, f"{name}: no training images of {task.train.train_sets} in the manifest"
        assert task.train.patch_size <= min(sides), name
        for setting in task.settings:
            assert task.train.patch_size % parse_task(setting).scale == 0, setting


def test_the_key_budgets_form_is_a_labelled_departure_and_checked() -> None:
    remedy = Remedy("target t=0.25", key_budget_weight=0.01, key_budget="target", budget_target=0.25)
    train = replace(TrainConfig(), **remedy.train_overrides())
    assert train.departures() == {"key_budget": "target", "budget_target": 0.25}
    with pytest.raises(ValueError, match="train.key_budget"):
        TrainConfig(key_budget="quadratic")
    with pytest.raises(ValueError, match="train.budget_target"):
        TrainConfig(key_budget="target", budget_target=1.0)


def test_a_remedy_names_its_departures_from_the_spec_recipe() -> None:
    remedy = Remedy("tau 1 fixed", key_budget_weight=3e-4, temperature_end=1.0, straight_through=False)
    assert remedy.train_overrides() == {"temperature_end": 1.0, "straight_through": False}
    train = replace(TrainConfig(), **remedy.train_overrides())
    assert train.departures() == {"temperature_end": 1.0, "straight_through": False}
    assert TrainConfig().departures() == {}  # the defaults are the recipe
    with pytest.raises(ValueError, match="share a name"):
        FrontierConfig(remedies=(Remedy("a", 1e-4), Remedy("a", 1e-4)))
    with pytest.raises(ValueError, match="gate_learning_rate"):
        TrainConfig(gate_learning_rate=-1.0)
