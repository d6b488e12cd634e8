"""Part (c), learning: the backbone and +ACLA trained from scratch by ``acla.engine.train.train`` for as many
iterations as the budget still allows (the same count for both), scored by ``acla.engine.evaluate`` beside
the bicubic rows.
"""

from __future__ import annotations

import tempfile
import time
import traceback
from dataclasses import dataclass, field, replace
from pathlib import Path

import pandas as pd
import torch

from acla.config import Config, load_config
from acla.data.sets import available_sets
from acla.engine.efficiency import median_seconds
from acla.engine.train import ModelSpec
from acla.files import slug
from acla.gpu_check.plan import LOOP_OVERHEAD_S, SAFETY, TASK, WRITE_RESERVE_S, Budget, Plan
from acla.gpu_check.speed import training_step
from acla.tasks import parse_task


def learning_config(params: Path, plan: Plan, data_root: Path | None) -> tuple[Config, Path | None]:
    """The plan's profile of ``params.yaml`` for sr_x2 and the data root it trains on: the root's T91 when
    it has one, else the bundled images (the CPU plan always uses those)."""
    config = load_config(params, plan.profile, TASK)
    train = replace(config.train, num_workers=plan.data_workers)
    if not plan.use_data_root or data_root is None or "T91" not in available_sets(data_root):
        data_root = None
        train = replace(train, train_sets=("bundled-train",), validation_set="bundled-test")
    if plan.learning_size:
        train = replace(train, batch_size=plan.learning_size[0], patch_size=plan.learning_size[1])
    return replace(config, train=train), data_root


def learning_specs(config: Config, arch: Path | None = None) -> dict[str, ModelSpec]:
    """The configured backbone, +ACLA after blocks 4/8/12/16 (a quarter of the blocks each), and the
    placement of a search when ``arch`` is given."""
    acla = ModelSpec.from_config(TASK, replace(config.model, attention="acla", insert="four-stages"))
    label = "EDSR-baseline" if acla.backbone == "edsr-baseline" else acla.backbone
    specs = {label: replace(acla, attention="none", insert="none", key_budget_weight=0.0),
             f"{label} + ACLA (four stages)": acla}
    if arch is not None:
        searched = ModelSpec.from_arch(arch)
        if searched.task != TASK:
            raise ValueError(f"--arch was searched for {searched.task}, the learning part trains {TASK}")
        blocks = " ".join(map(str, searched.insert)) if isinstance(searched.insert, tuple) else searched.insert
        specs[f"{label} + {searched.attention.upper()} (searched: {blocks})"] = searched
    return specs


def data_seconds_per_batch(config: Config, data_root: Path | None) -> float:
    """Seconds the CPU spends making one training batch (crops, augmentation, MATLAB-bicubic degradation)."""
    from acla.data import PatchDataset
    from acla.engine.train import load_images

    images, names = load_images(config.train.train_sets, data_root, config.data.verify)
    dataset = PatchDataset(images, parse_task(TASK), patch_size=config.train.patch_size, length=64, names=names)
    start = time.perf_counter()
    for index in range(min(config.train.batch_size, 8)):
        dataset[index]
    return (time.perf_counter() - start) / min(config.train.batch_size, 8) * config.train.batch_size


def step_seconds(spec: ModelSpec, config: Config, device: torch.device, measured: dict) -> float:
    """The eager step time at the learning part's batch and patch: the speed part's when it measured
    exactly that, else the median of two steps after a warm-up one, now."""
    batch, patch = config.train.batch_size, config.train.patch_size
    if (repr(spec), batch, patch) in measured:
        return measured[(repr(spec), batch, patch)]
    return median_seconds(training_step(spec, batch, patch, device), device, repeats=2, warmup=1)


@dataclass
class LearningRun:
    """The learning part: every variant of ``specs`` trained by ``acla.engine.train.train`` for one affordable
    count of iterations and scored by ``acla.engine.evaluate.evaluate``; ``notes`` say what was planned."""

    device: torch.device
    plan: Plan
    budget: Budget
    config: Config
    data_root: Path | None
    specs: dict[str, ModelSpec]
    notes: list[str] = field(default_factory=list)

    @property
    def crop(self) -> int:
        return self.config.evaluate.crop

    def test_sets(self) -> list[str]:
        from acla.engine.evaluate import test_sets

        return test_sets(parse_task(TASK), self.data_root)

    def bicubic(self) -> tuple[list[dict], float]:
        """The bicubic rows on exactly the images the networks are scored on, and the seconds they took
        (the CPU part of scoring a network is about the same work)."""
        from acla.study.steps import classical_scores
        from acla.study.tables import compare, published_classical

        start = time.perf_counter()
        rows = classical_scores(TASK, self.test_sets(), self.data_root, self.crop, self.config.train.seed,
                                self.config.data.verify)
        seconds = time.perf_counter() - start
        frame = pd.DataFrame(rows).assign(task="sr", setting="x2")
        frame = compare(frame, published_classical()).drop(columns=["task", "setting", "delta_psnr", "delta_ssim"])
        return frame.to_dict(orient="records"), seconds

    def iterations(self, measured: dict, scoring_seconds: float) -> int:
        """As many iterations as fit in the time left for every variant alike, after reserving each
        variant's evaluation (about the bicubic rows' CPU time again, plus its forwards) and start-up."""
        data = data_seconds_per_batch(self.config, self.data_root) / max(self.config.train.num_workers, 1)
        per_iteration = sum(max(step_seconds(spec, self.config, self.device, measured), data) + LOOP_OVERHEAD_S
                            for spec in self.specs.values()) * SAFETY
        per_variant = 1.2 * scoring_seconds + 2.0 + (1.0 if self.device.type == "cpu" else 5.0)
        available = self.budget.left() - WRITE_RESERVE_S - len(self.specs) * per_variant
        self.notes.append(f"planned {per_iteration:.3f} s per iteration for the {len(self.specs)} variants together "
                          f"(measured step and data time x {SAFETY}), {per_variant:.0f} s per variant for start-up "
                          f"and scoring, {max(available, 0):.0f} s for training")
        return int(available // per_iteration)

    def train_and_score(self, label: str, spec: ModelSpec, iterations: int, scratch: Path) -> list[dict]:
        from acla.engine.evaluate import Inference, evaluate
        from acla.engine.train import load_model, train
        settings = replace(self.config.train, iterations=iterations, validate_every=iterations,
                           checkpoint_every=iterations)
        start = time.perf_counter()
        result = train(spec, replace(self.config, train=settings), scratch / "runs" / slug(label),
                       data_root=self.data_root, progress=False)
        trained = time.perf_counter() - start
        model, _ = load_model(result.checkpoint, spec)
        start = time.perf_counter()
        mean = evaluate(model, TASK, scratch / "evaluate" / slug(label), data_root=self.data_root,
                        sets=self.test_sets(), inference=Inference(), seed=self.config.train.seed, crops=0,
                        verify=self.config.data.verify, device=self.device, crop=self.crop)
        scored = time.perf_counter() - start
        print(f"  learning: {label}: {iterations} iterations in {trained:.0f} s, scored in {scored:.0f} s", flush=True)
        return [{"method": label, "set": row["set"], "psnr": row["psnr"], "ssim": row["ssim"],
                 "n_images": row["n_images"], "iterations": iterations, "train_seconds": trained,
                 "score_seconds": scored, "status": "ok"} for row in mean.to_dict(orient="records")]

    def run(self, measured: dict) -> pd.DataFrame:
        """The bicubic rows, then every variant trained for the same affordable count and scored."""
        settings = self.config.train
        self.notes.append(f"profile `{self.plan.profile}` of params.yaml: {self.config.model.backbone}, batch "
                          f"{settings.batch_size}, HR patch {settings.patch_size}, learning rate "
                          f"{settings.learning_rate:g}, trained on {', '.join(settings.train_sets)}, validated once "
                          f"at the end" + (f"; test images centre-cropped to {self.crop} px" if self.crop else ""))
        bicubic, scoring_seconds = self.bicubic()
        rows = [{**row, "status": "ok"} for row in bicubic]
        iterations = self.iterations(measured, scoring_seconds)
        if iterations < 1:
            return pd.DataFrame(rows + [{"method": label, "status": "skipped", "note": "no time left to train"}
                                        for label in self.specs])
        with tempfile.TemporaryDirectory(prefix="acla-gpu-check-") as scratch:
            for label, spec in self.specs.items():
                try:
                    rows += self.train_and_score(label, spec, iterations, Path(scratch))
                except Exception as error:  # noqa: BLE001 - reported, and the other variants still run
                    traceback.print_exc()
                    rows.append({"method": label, "status": "error", "note": f"{type(error).__name__}: {error}"})
        return pd.DataFrame(rows)
