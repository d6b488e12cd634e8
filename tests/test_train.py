"""Training engine: resume after SIGKILL, 2-rank gloo DDP, checkpoints, search, tiling, bad input.

Runs use the bundled images, the tiny backbone and a handful of iterations on small patches.
"""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from conftest import study_params

import acla
from acla.cli import main as cli_main
from acla.config import load_config
from acla.data.sets import resolve_data_root
from acla.engine.evaluate import tiled_forward
from acla.engine.reuse import reuse_finished_run
from acla.engine.train import FINISHED, CheckpointError, ModelSpec, load_checkpoint, source_files, train
from acla.models import build_model

ROOT = Path(__file__).resolve().parents[1]

PARAMS = """
profile: smoke
model:
  backbone: tiny
  attention: acla
  insert: four-stages
train:
  iterations: {iterations}
  batch_size: 4
  patch_size: 32
  validate_every: 1000
  checkpoint_every: {checkpoint_every}
  samples_per_epoch: 24
  learning_rate: 0.001
  validation_set: bundled-test
search:
  iterations: 6
  warmup_fraction: 0.5
"""


def params(tmp_path: Path, iterations: int = 12, checkpoint_every: int = 4, extra: str = "") -> Path:
    path = tmp_path / "params.yaml"
    path.write_text(study_params(PARAMS.format(iterations=iterations, checkpoint_every=checkpoint_every) + extra))
    return path


def run_cli(*args: str, env: dict | None = None) -> subprocess.Popen:
    environment = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", **(env or {})}
    return subprocess.Popen([sys.executable, "-m", "acla", *args], cwd=ROOT, env=environment,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def final_weights(out: Path) -> dict[str, torch.Tensor]:
    return load_checkpoint(out / "last.pt")["model"]


def assert_same_weights(a: dict, b: dict, atol: float = 0.0) -> None:
    assert a.keys() == b.keys()
    for key in a:
        if atol:
            assert torch.allclose(a[key], b[key], atol=atol), key
        else:
            assert torch.equal(a[key], b[key]), key


def test_sigkill_then_resume_reproduces_the_uninterrupted_run(tmp_path: Path) -> None:
    config = params(tmp_path, iterations=12, checkpoint_every=4)
    straight, interrupted = tmp_path / "straight", tmp_path / "interrupted"
    process = run_cli("train", "--config", str(config), "--task", "sr_x2", "--out", str(straight))
    assert process.wait(timeout=300) == 0, process.stdout.read()

    process = run_cli("train", "--config", str(config), "--task", "sr_x2", "--out", str(interrupted))
    deadline = time.time() + 300
    while time.time() < deadline:  # kill as soon as a checkpoint before the end exists
        if (interrupted / "last.pt").exists() and load_checkpoint(interrupted / "last.pt")["iteration"] >= 4:
            break
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=60)
    stopped_at = load_checkpoint(interrupted / "last.pt")["iteration"]
    assert 4 <= stopped_at < 12, f"the kill came too late (iteration {stopped_at})"

    process = run_cli("train", "--config", str(config), "--task", "sr_x2", "--out", str(interrupted), "--resume")
    output = process.communicate(timeout=300)[0]
    assert process.returncode == 0, output
    assert_same_weights(final_weights(straight), final_weights(interrupted))
    assert json.loads(output.strip().splitlines()[-1])["last_psnr"] == pytest.approx(
        load_checkpoint(straight / "last.pt")["best_psnr"], abs=0)


def test_two_gloo_ranks_equal_one_process_with_the_same_global_batch(tmp_path: Path) -> None:
    # cla, not acla: ACLA's Gumbel noise is drawn per rank (like dropout), so only a deterministic
    # model can be compared sample for sample.
    config = params(tmp_path, iterations=3, checkpoint_every=3)
    config.write_text(config.read_text().replace("attention: acla", "attention: cla"))
    single, distributed = tmp_path / "single", tmp_path / "ddp"
    process = run_cli("train", "--config", str(config), "--task", "sr_x2", "--out", str(single))
    assert process.wait(timeout=300) == 0, process.stdout.read()
    environment = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m", "acla", "train",
         "--config", str(config), "--task", "sr_x2", "--out", str(distributed)],
        cwd=ROOT, env=environment, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert_same_weights(final_weights(single), final_weights(distributed), atol=1e-5)
    params_logged = (distributed / "dvclive" / "params.yaml").read_text()
    assert "global_batch: 4" in params_logged and "ranks: 2" in params_logged


def test_resume_refuses_another_config_a_corrupt_file_and_a_missing_one(tmp_path: Path, capsys) -> None:
    config = params(tmp_path, iterations=2, checkpoint_every=2)
    out = tmp_path / "run"
    assert cli_main(["train", "--config", str(config), "--task", "sr_x2", "--out", str(out)]) == 0
    changed = tmp_path / "changed.yaml"
    changed.write_text(config.read_text().replace("  learning_rate: 0.001", "  learning_rate: 0.002"))
    assert cli_main(["train", "--config", str(changed), "--task", "sr_x2", "--out", str(out), "--resume"]) == 2
    assert "train.learning_rate: checkpoint 0.001 != now 0.002" in capsys.readouterr().err
    (out / "last.pt").write_bytes((out / "last.pt").read_bytes()[:1000])
    with pytest.raises(CheckpointError, match="corrupt or not a checkpoint"):
        load_checkpoint(out / "last.pt")
    assert cli_main(["train", "--config", str(config), "--task", "sr_x2", "--out", str(tmp_path / "none"), "--resume"]) == 2
    assert "none/last.pt not found" in capsys.readouterr().err


def test_the_lagrangian_budget_raises_its_multipliers_and_resumes_them_exactly(tmp_path: Path) -> None:
    """(S8) lagrangian form: the multipliers climb while the gates' mean probability sits above a warmed-up target,
    and a run killed after a mid-run checkpoint resumes to the uninterrupted run's weights and multipliers."""
    config = params(tmp_path, iterations=8, checkpoint_every=2)
    raw = yaml.safe_load(config.read_text())
    raw["defaults"]["train"].update(key_budget="lagrangian", budget_target=0.3, budget_warmup=0.5,
                                    budget_multiplier_lr=0.05)
    config.write_text(yaml.safe_dump(raw, sort_keys=False))
    straight, interrupted = tmp_path / "straight", tmp_path / "interrupted"
    process = run_cli("train", "--config", str(config), "--task", "sr_x2", "--out", str(straight))
    assert process.wait(timeout=300) == 0, process.stdout.read()
    multipliers = load_checkpoint(straight / "last.pt")["budget_multipliers"]["values"]
    assert (multipliers > 0).all(), multipliers  # gate bias 2: mean p ~0.88 > t, so the gap is positive

    process = run_cli("train", "--config", str(config), "--task", "sr_x2", "--out", str(interrupted))
    deadline = time.time() + 300
    while time.time() < deadline and not ((interrupted / "last.pt").exists()
                                          and load_checkpoint(interrupted / "last.pt")["iteration"] >= 2):
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=60)
    assert load_checkpoint(interrupted / "last.pt")["iteration"] < 8, "the kill came too late"
    process = run_cli("train", "--config", str(config), "--task", "sr_x2", "--out", str(interrupted), "--resume")
    output = process.communicate(timeout=300)[0]
    assert process.returncode == 0, output
    assert_same_weights(final_weights(straight), final_weights(interrupted))
    assert torch.equal(load_checkpoint(interrupted / "last.pt")["budget_multipliers"]["values"], multipliers)


def test_a_finished_run_of_the_same_model_config_and_code_is_copied_not_retrained(tmp_path: Path) -> None:
    config_path = params(tmp_path, iterations=2, checkpoint_every=2)
    runs = tmp_path / "runs"
    first = runs / "cpu" / "sr" / "retrain" / "seed0"
    assert cli_main(["train", "--config", str(config_path), "--task", "sr_x2", "--out", str(first)]) == 0
    config = load_config(config_path)
    spec = ModelSpec.from_config("sr_x2", config.model)
    second = runs / "cpu-long" / "sr" / "frontier" / "seed0"
    second.mkdir(parents=True)  # an interrupted start left the folder, and no checkpoint, behind
    assert reuse_finished_run(runs, spec, config, second) == first
    trained = (second / "last.pt").read_bytes()
    result = train(spec, config, second, data_root=resolve_data_root(None, config.data.root), resume="auto",
                   progress=False)
    assert (second / "last.pt").read_bytes() == trained  # resumed at its last iteration: nothing trained
    assert_same_weights(final_weights(first), final_weights(second))
    assert result.last_psnr == pytest.approx(json.loads((first / "dvclive" / "metrics.json").read_text())["val"]["psnr"])
    assert reuse_finished_run(runs, spec, config, second) is None  # it has a checkpoint of its own now
    other = dataclasses.replace(config, train=dataclasses.replace(config.train, learning_rate=0.002))
    assert reuse_finished_run(runs, spec, other, runs / "other" / "seed0") is None  # another config
    for run in (first, second):
        (run / FINISHED).unlink()  # no record: not known to be finished
    assert reuse_finished_run(runs, spec, config, runs / "third" / "seed0") is None
    assert not (runs / "third").exists()


def test_a_checkpoint_of_another_architecture_is_refused(tmp_path: Path, capsys) -> None:
    config = params(tmp_path, iterations=2, checkpoint_every=2)
    out = tmp_path / "run"
    assert cli_main(["train", "--config", str(config), "--task", "sr_x2", "--out", str(out)]) == 0
    state = load_checkpoint(out / "last.pt")
    other = ModelSpec("sr_x2", "tiny", "cla", (4, 8))
    from acla.engine.train import load_weights

    with pytest.raises(CheckpointError, match="another architecture: attention: checkpoint 'acla' != now 'cla'"):
        load_weights(other.build(), state, other, out / "last.pt")


def test_search_derives_an_architecture_that_build_model_reads_back(tmp_path: Path) -> None:
    config = params(tmp_path)
    out = tmp_path / "search"
    assert cli_main(["search", "--config", str(config), "--task", "sr_x2", "--out", str(out)]) == 0
    description = json.loads((out / "arch.json").read_text())
    assert description["candidates"] == list(range(1, 9))
    assert set(description["alpha_sigmoid"]) == {str(i) for i in range(1, 9)}
    assert (out / "alpha.png").is_file() and len((out / "alpha.csv").read_text().splitlines()) == 7
    spec = ModelSpec.from_arch(out / "arch.json")
    model = spec.build()
    assert sum(p.numel() for p in model.parameters()) == description["params"]
    kept = [] if description["insert"] == "none" else description["insert"]
    assert sorted(int(k) for k in model.attention.keys()) == sorted(kept)
    assert all((p > 0.5) == (int(loc) in kept) for loc, p in description["alpha_sigmoid"].items())


BAD_PARAMS = [
    ("model:\n  backbone: resnet\n", "model.backbone: 'resnet' is not one of"),
    ("model:\n  attention: swin\n", "model.attention: 'swin' is not one of"),
    ("train:\n  batch_size: many\n", "train.batch_size: expected int"),
    ("train:\n  itterations: 5\n", "unknown key(s) ['itterations']"),
    ("train:\n  batch_size: 64\n  samples_per_epoch: 32\n",
     "train.samples_per_epoch (32) is smaller than train.batch_size (64)"),
    ("train:\n  patch_size: 2000\n", "patch_size 2000 is larger than bundled-train/"),
    ("profile: laptop\n", "profile 'laptop' is unknown"),
]


@pytest.mark.parametrize(("text", "message"), BAD_PARAMS)
def test_bad_params_stop_training_naming_the_key(tmp_path: Path, capsys, text: str, message: str) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(study_params(text))
    assert cli_main(["train", "--config", str(bad), "--task", "sr_x2", "--out", str(tmp_path / "out")]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "out" / "last.pt").exists()


def test_bad_names_and_files_are_refused(tmp_path: Path, capsys) -> None:
    config = params(tmp_path)
    assert cli_main(["train", "--config", str(config), "--task", "deblur_x2", "--out", "x"]) == 2
    assert "unknown task 'deblur_x2'" in capsys.readouterr().err
    missing = str(tmp_path / "no.pt")
    assert cli_main(["evaluate", "--config", str(config), "--task", "sr_x2", "--out", "x", "--checkpoint", missing]) == 2
    assert "no.pt not found" in capsys.readouterr().err
    assert cli_main(["train", "--config", str(config), "--task", "sr_x2", "--out", "x", "--arch", missing]) == 2
    assert "architecture file" in capsys.readouterr().err


def test_tiled_inference_equals_whole_image_for_convolutions_and_stays_close_with_attention() -> None:
    torch.manual_seed(0)
    convolutional = build_model("sr", "tiny", scale=2).eval()
    x = torch.rand(1, 3, 45, 61)
    with torch.no_grad():
        whole = convolutional(x)
        # receptive field of tiny: 21 3x3 convs before the upsampler -> 21 pixels of context suffice
        tiled = tiled_forward(convolutional, x, tile=16, overlap=24, scale=2)
    assert torch.allclose(tiled, whole, atol=1e-5)

    attention = build_model("sr", "tiny", attention="acla", insert="four-stages", scale=2).eval()
    for parameter in attention.attention.parameters():
        torch.nn.init.normal_(parameter, std=0.05)
    with torch.no_grad():
        whole, tiled = attention(x), tiled_forward(attention, x, tile=16, overlap=24, scale=2)
    # offsets can reach past the tile's context, so a small difference remains; stated tolerance 1e-2
    assert (tiled - whole).abs().max() < 1e-2


def test_the_training_digest_covers_every_source_of_the_model_and_its_kernel() -> None:
    """Resume must not reuse weights trained by other code: every Python and C++ file under acla/models, acla/ops,
    acla/engine and acla/data counts, found by folder, so a file added or moved there is never left out."""
    package = Path(acla.__file__).resolve().parent
    expected = {path for folder in ("models", "ops", "engine", "data") for suffix in ("*.py", "*.cpp", "*.h")
                for path in (package / folder).rglob(suffix) if "__pycache__" not in path.parts}
    covered = set(source_files())
    assert expected <= covered, sorted(str(p.relative_to(package)) for p in expected - covered)
    assert package / "ops" / "csrc" / "cpu" / "attend_kernel.cpp" in covered
