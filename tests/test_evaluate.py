"""Evaluation outputs, self-ensemble and the restore verb."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import torch
from PIL import Image

from acla.cli import main as cli_main
from acla.engine.evaluate import Inference, dihedral, evaluate, undo_dihedral
from acla.engine.train import ModelSpec, save_checkpoint
from acla.models import build_model


def test_dihedral_transforms_are_undone() -> None:
    x = torch.rand(1, 3, 5, 7)
    for index in range(8):
        assert torch.equal(undo_dihedral(dihedral(x, index), index), x)
    assert len({tuple(dihedral(x, i).flatten()[:6].tolist()) for i in range(8)}) == 8


def test_evaluate_writes_per_image_and_mean_tables_and_crops(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = build_model("sr", "tiny", scale=2)
    mean = evaluate(model, "sr_x2", tmp_path, crops=1, inference=Inference(self_ensemble=True, tile=64, overlap=24))
    per_image = pd.read_csv(tmp_path / "per_image.csv")
    assert list(per_image["image"]) == ["astronaut", "chelsea", "coffee"]
    assert mean["n_images"].tolist() == [3] and bool(mean["self_ensemble"].iloc[0])
    assert mean["psnr"].iloc[0] == per_image["psnr"].mean()
    assert len(list((tmp_path / "crops").glob("*.png"))) == 1


def test_restore_verb_writes_the_restored_image(tmp_path: Path) -> None:
    spec = ModelSpec("denoise_color_s25", "tiny")
    model = spec.build()
    state = {"model": model.state_dict(), "architecture": spec.as_dict()}
    save_checkpoint(tmp_path / "model.pt", state)
    noisy = np.random.default_rng(0).integers(0, 256, (40, 56, 3)).astype(np.uint8)
    Image.fromarray(noisy).save(tmp_path / "noisy.png")
    assert cli_main(["restore", "--config", str(Path(__file__).parents[1] / "params.yaml"), "--task", "denoise_color_s25",
                     "--checkpoint", str(tmp_path / "model.pt"), "--input", str(tmp_path / "noisy.png"),
                     "--output", str(tmp_path / "out.png"), "--tile", "32"]) == 0
    with Image.open(tmp_path / "out.png") as restored:
        assert restored.size == (56, 40) and restored.mode == "RGB"
