"""The training engine: one entry point for a laptop, one GPU, or ``torchrun`` on several.

``train(spec, config, out_dir)`` trains ``spec`` (what ``build_model`` needs) on ``config.train``:
L1 loss plus the ACLA key budget (S8), Adam, step or cosine schedule, validation every N iterations
on a named set with the task's metric, ``last.pt``/``best.pt`` checkpoints written atomically, dvclive
metrics (the same TSV files without dvclive: ``acla.engine.live``), a tqdm bar. Under ``torchrun`` it wraps the
model in DistributedDataParallel (NCCL on GPU, gloo on CPU), splits every global batch over the ranks
with a DistributedSampler, validates each image on exactly one rank and reduces the sums, and only
rank 0 writes.

Samples depend only on (seed, epoch, index), and checkpoints hold every RNG state, so a run resumed
from its last checkpoint continues bit for bit on CPU.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import random
from collections.abc import Iterator
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, DistributedSampler
from tqdm import tqdm

from acla.config import Config, ModelConfig, TrainConfig
from acla.data import PatchDataset, open_set
from acla.data.sets import ImageSet
from acla.engine.gates import (BudgetMultipliers, OpenKeyTally, configure_gates, gate_gradients, gated_modules,
                               parameter_groups)
from acla.engine.live import open_live
from acla.files import atomic_open, atomic_write_text
from acla.images import restore_image
from acla.models import build_model
from acla.models.attention import AttentionBase
from acla.models.backbones import RestorationNet
from acla.tasks import Task, parse_task


class CheckpointError(RuntimeError):
    """A checkpoint that is missing, corrupt, or made for another architecture or config."""


# --------------------------------------------------------------------------------------------
# What is trained
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ModelSpec:
    """Everything ``build_model`` needs; stored in checkpoints and in a search's ``arch.json``."""

    task: str  # a task name: sr_x2, denoise_color_s30, demosaic, jpeg_q20, ...
    backbone: str
    attention: str = "none"
    insert: str | tuple[int, ...] = "none"
    references: dict[int, list[int]] | None = None
    num_keys: int = 9
    logits: str = "predicted"
    key_budget_weight: float = 0.0

    @classmethod
    def from_config(cls, task: str, model: ModelConfig) -> ModelSpec:
        parse_task(task)
        return cls(task, model.backbone, model.attention, model.insert if model.attention != "none" else "none",
                   None, model.num_keys, model.logits, model.key_budget_weight)

    @classmethod
    def from_dict(cls, description: dict) -> ModelSpec:
        """The inverse of ``as_dict`` (JSON turns the insert tuple into a list and int keys into strings)."""
        names = {f.name for f in dataclasses.fields(cls)}
        spec = {key: value for key, value in description.items() if key in names}
        if isinstance(spec.get("insert"), list):
            spec["insert"] = tuple(spec["insert"])
        if spec.get("references") is not None:
            spec["references"] = {int(key): list(value) for key, value in spec["references"].items()}
        return cls(**spec)

    @classmethod
    def from_arch(cls, path: str | Path) -> ModelSpec:
        """Read back the ``arch.json`` a search derived."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"architecture file {path} not found (run `python -m acla search` first)")
        return cls.from_dict(json.loads(path.read_text()))

    def as_dict(self) -> dict:
        description = dataclasses.asdict(self)
        if isinstance(self.insert, tuple):
            description["insert"] = list(self.insert)
        return description

    def attention_options(self) -> dict:
        if self.attention in ("cla", "acla"):
            options = {"num_keys": self.num_keys, "logits": self.logits}
            return options | ({"budget_weight": self.key_budget_weight} if self.attention == "acla" else {})
        return {"logits": "dot"} if self.attention == "cla-dense" else {}

    def build(self, *, search: bool = False) -> RestorationNet:
        task = parse_task(self.task)
        insert = list(self.insert) if isinstance(self.insert, tuple) else self.insert
        return build_model(task.kind, self.backbone, self.attention, insert if self.attention != "none" else "none",
                           task.scale, color=task.color, references=self.references, search=search,
                           **self.attention_options())


# The sources whose change changes what training computes, as folders and modules of the acla package; a checkpoint
# records their digest so that the pipeline's automatic resume never continues (or reuses) weights that older code
# trained. Folders count every source file in them (Python and the kernel's C++), so a file moved or added inside
# one needs no edit here.
TRAINING_SOURCES = ("data", "engine", "models", "ops", "degradations.py", "images.py", "metrics.py", "tasks.py")
SOURCE_SUFFIXES = (".py", ".cpp", ".h")


def source_files() -> list[Path]:
    """The files of ``TRAINING_SOURCES``, in a fixed order."""
    root = Path(__file__).resolve().parents[1]  # the acla package
    files = []
    for name in TRAINING_SOURCES:
        path = root / name
        if path.is_dir():
            files += sorted(f for f in path.rglob("*") if f.suffix in SOURCE_SUFFIXES and "__pycache__" not in f.parts)
        else:
            files.append(path)
    return files


def source_digest() -> str:
    root = Path(__file__).resolve().parents[1]
    digest = hashlib.sha256()
    for path in source_files():
        digest.update(path.relative_to(root).as_posix().encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:16]


def config_hash(spec: ModelSpec, train: TrainConfig) -> str:
    text = json.dumps({"model": spec.as_dict(), "train": dataclasses.asdict(train)}, sort_keys=True, default=list)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


# The record ``train`` writes beside ``last.pt`` once the run's last iteration is done (acla.engine.reuse).
FINISHED = "finished.json"


def finished_record(spec: ModelSpec, config: Config) -> dict:
    """What makes two finished runs interchangeable on one machine: the same model and training config, the same
    training code, the same validation crop (the logged curves depend on it), the same number of iterations."""
    return {"config_hash": config_hash(spec, config.train), "source_digest": source_digest(),
            "validation_crop": config.evaluate.crop, "iterations": config.train.iterations}


# --------------------------------------------------------------------------------------------
# Distributed context
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Distributed:
    rank: int = 0
    world: int = 1
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    @property
    def main(self) -> bool:
        return self.rank == 0

    @classmethod
    def setup(cls) -> Distributed:
        """Single process, or the process group ``torchrun`` describes in the environment."""
        cuda = torch.cuda.is_available()
        if "RANK" not in os.environ:
            return cls(device=torch.device("cuda" if cuda else "cpu"))
        if not dist.is_initialized():
            dist.init_process_group(backend="nccl" if cuda else "gloo")
        local_rank = int(os.environ.get("LOCAL_RANK", 0))
        device = torch.device(f"cuda:{local_rank}") if cuda else torch.device("cpu")
        if cuda:
            torch.cuda.set_device(device)
        return cls(dist.get_rank(), dist.get_world_size(), device)

    def all_sum(self, values: list[float]) -> list[float]:
        if self.world == 1:
            return values
        tensor = torch.tensor(values, dtype=torch.float64, device=self.device)
        dist.all_reduce(tensor)
        return tensor.tolist()

    def barrier(self) -> None:
        if self.world > 1:
            dist.barrier()


# --------------------------------------------------------------------------------------------
# Checkpoints
# --------------------------------------------------------------------------------------------
def rng_states() -> dict:
    return {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []}


def set_rng_states(states: dict) -> None:
    torch.set_rng_state(states["torch"])
    np.random.set_state(states["numpy"])
    random.setstate(states["python"])
    if states["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


def save_checkpoint(path: Path, state: dict) -> None:
    """Temporary file, fsync, rename: a crash leaves the previous checkpoint intact."""
    with atomic_open(path, "wb") as handle:
        torch.save(state, handle)


def load_checkpoint(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} not found")
    try:
        state = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as error:  # torch raises several types for a damaged file
        raise CheckpointError(f"checkpoint {path} is corrupt or not a checkpoint ({type(error).__name__}: {error})") from error
    if not isinstance(state, dict) or "model" not in state or "architecture" not in state:
        raise CheckpointError(f"checkpoint {path} lacks the model or its architecture description")
    return state


def differing_keys(stored: dict, current: dict, prefix: str = "") -> list[str]:
    keys = []
    for key in sorted(set(stored) | set(current)):
        a, b = stored.get(key), current.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            keys += differing_keys(a, b, f"{prefix}{key}.")
        elif a != b:
            keys.append(f"{prefix}{key}: checkpoint {a!r} != now {b!r}")
    return keys


def load_weights(model: torch.nn.Module, state: dict, spec: ModelSpec, path: Path) -> None:
    if state["architecture"] != spec.as_dict():
        raise CheckpointError(f"checkpoint {path} is for another architecture: "
                              + "; ".join(differing_keys(state["architecture"], spec.as_dict())))
    try:
        model.load_state_dict(state["model"], strict=True)
    except RuntimeError as error:
        raise CheckpointError(f"checkpoint {path} does not fit the model: {error}") from error



def load_model(path: str | Path, spec: ModelSpec | None = None) -> tuple[RestorationNet, ModelSpec]:
    """The model a checkpoint holds, and its spec. With ``spec`` given, the checkpoint must be of exactly
    that architecture (the study asks for a variant by name); without, the checkpoint says what to build."""
    state = load_checkpoint(path)
    spec = spec or ModelSpec.from_dict(state["architecture"])
    model = spec.build()
    load_weights(model, state, spec, Path(path))
    return model, spec

# --------------------------------------------------------------------------------------------
# Pieces of the loop
# --------------------------------------------------------------------------------------------
def attention_modules(model: torch.nn.Module) -> list[AttentionBase]:
    return [module for module in model.modules() if isinstance(module, AttentionBase)]


def temperature(iteration: int, config: TrainConfig) -> float:
    """(S6) tau from temperature_start to temperature_end, geometrically over the run."""
    progress = min(iteration / max(config.iterations - 1, 1), 1.0)
    return config.temperature_start * (config.temperature_end / config.temperature_start) ** progress


def budget_target(iteration: int, config: TrainConfig) -> float:
    """(S8) t of the target and lagrangian forms: from 1 (every key open) linearly down to ``budget_target`` over the
    first ``budget_warmup`` of the run (CoFi warms its target sparsity up from 0 so), then ``budget_target``."""
    if not config.budget_warmup:
        return config.budget_target
    progress = min(iteration / (config.budget_warmup * config.iterations), 1.0)
    return 1.0 - (1.0 - config.budget_target) * progress


def make_scheduler(optimizer: torch.optim.Optimizer, config: TrainConfig) -> torch.optim.lr_scheduler.LRScheduler:
    if config.schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=config.iterations)
    return torch.optim.lr_scheduler.StepLR(optimizer, step_size=config.lr_step, gamma=config.lr_gamma)


def load_images(names: tuple[str, ...], data_root: Path | None, verify: bool) -> tuple[list[np.ndarray], list[str]]:
    images, labels = [], []
    for name in names:
        image_set = open_set(name, data_root, verify=verify)
        for image_name, image in image_set:
            images.append(image)
            labels.append(f"{name}/{image_name}")
    return images, labels


def batches(dataset: PatchDataset, sampler: DistributedSampler, per_rank_batch: int, start: int,
            num_workers: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Batches from iteration ``start`` on, epoch after epoch; the position follows from the iteration."""
    per_epoch = len(sampler) // per_rank_batch
    epoch, offset = divmod(start, per_epoch)
    while True:
        sampler.set_epoch(epoch)
        dataset.set_epoch(epoch)
        indices = list(sampler)
        chunks = [indices[i : i + per_rank_batch] for i in range(0, per_epoch * per_rank_batch, per_rank_batch)]
        # A private generator: a DataLoader otherwise draws its base seed from the global RNG, which
        # would shift the ACLA gate noise whenever an iterator starts mid-epoch (on resume).
        loader = DataLoader(dataset, batch_sampler=chunks[offset:], num_workers=num_workers,
                            generator=torch.Generator().manual_seed(epoch))
        yield from loader
        epoch, offset = epoch + 1, 0


@torch.no_grad()
def validate(model: torch.nn.Module, task: Task, image_set: ImageSet, context: Distributed,
             seed: int, tally: OpenKeyTally | None = None) -> tuple[float, float]:
    """Mean PSNR/SSIM over the set; image i is scored on rank i % world only, then sums are reduced. ``tally``
    counts the open keys per query of each ACLA module over the images (summed over the ranks too)."""
    was_training = model.training
    model.eval()
    totals = [0.0, 0.0, 0.0]
    channels = 3 if task.color == "rgb" else 1
    for index in range(context.rank, len(image_set), context.world):
        target, degraded = task.benchmark_pair(image_set.read(index), image_set.name, image_set.image_names()[index], seed)
        psnr, ssim = task.score(restore_image(model, degraded, target, channels, context.device), target)
        totals = [totals[0] + psnr, totals[1] + ssim, totals[2] + 1]
        if tally is not None:
            tally.add()
    model.train(was_training)
    psnr_sum, ssim_sum, count, *histograms = context.all_sum(totals + (tally.as_list() if tally else []))
    if tally is not None:
        tally.load_list(histograms)
    return psnr_sum / count, ssim_sum / count


def train_step(forward, optimizer: torch.optim.Optimizer, modules: list[AttentionBase], degraded: torch.Tensor,
               target: torch.Tensor, autocast) -> torch.Tensor:
    """One optimisation step: L1 plus the key budget (S8) under ``autocast``, backward, Adam; the L1 loss.
    (The GPU check times this very step.)"""
    with autocast:
        output = forward(degraded)
        loss = F.l1_loss(output.float(), target)
        budget = sum((module.budget_loss for module in modules), torch.zeros((), device=degraded.device))
    optimizer.zero_grad(set_to_none=True)
    (loss + budget).backward()
    optimizer.step()
    return loss


class EMA:
    """Exponential moving average of the weights, evaluated and saved beside them."""

    def __init__(self, model: torch.nn.Module, decay: float) -> None:
        self.decay = decay
        self.shadow = {name: value.detach().clone() for name, value in model.state_dict().items()}

    @torch.no_grad()
    def update(self, model: torch.nn.Module) -> None:
        for name, value in model.state_dict().items():
            if value.dtype.is_floating_point:
                self.shadow[name].lerp_(value, 1 - self.decay)
            else:
                self.shadow[name].copy_(value)


# --------------------------------------------------------------------------------------------
# The loop
# --------------------------------------------------------------------------------------------
@dataclass
class TrainResult:
    best_psnr: float
    last_psnr: float
    last_ssim: float
    iterations: int
    checkpoint: Path


def resumable(path: Path, digest: str) -> bool:
    """Whether ``path`` is a readable checkpoint of this very model and config, trained by this very code
    (``resume="auto"``); otherwise the run starts afresh and says why."""
    if not path.is_file():
        return False
    try:
        state = load_checkpoint(path)
    except CheckpointError as error:
        print(f"not resuming: {error}", flush=True)
        return False
    if state["config_hash"] != digest:
        print(f"not resuming {path}: made with another config", flush=True)
        return False
    if state.get("source_digest") != source_digest():
        print(f"not resuming {path}: made by other training code ({', '.join(TRAINING_SOURCES)})", flush=True)
        return False
    return True


def train(spec: ModelSpec, config: Config, out_dir: str | Path, *, data_root: Path | None = None,
          resume: bool | str = False, progress: bool = True) -> TrainResult:
    """Train ``spec`` with ``config.train``; resume from ``out_dir/last.pt`` when asked.

    ``resume="auto"`` (the pipeline's stages) resumes when ``last.pt`` belongs to the same model and
    config and starts afresh otherwise, so an interrupted stage continues and a finished one only
    re-validates.
    """
    settings = config.train
    out_dir = Path(out_dir)
    context = Distributed.setup()
    task = parse_task(spec.task)
    if settings.batch_size % context.world:
        raise ValueError(f"train.batch_size {settings.batch_size} is not divisible by the {context.world} ranks")
    per_rank_batch = settings.batch_size // context.world

    images, labels = load_images(settings.train_sets, data_root, config.data.verify)
    dataset = PatchDataset(images, task, patch_size=settings.patch_size, length=settings.samples_per_epoch,
                           seed=settings.seed, names=labels)
    sampler = DistributedSampler(dataset, num_replicas=context.world, rank=context.rank, shuffle=True,
                                 seed=settings.seed, drop_last=True)
    if len(sampler) < per_rank_batch:
        raise ValueError(f"train.batch_size {settings.batch_size} is larger than train.samples_per_epoch")
    validation_set = open_set(settings.validation_set, data_root, verify=config.data.verify, crop=config.evaluate.crop)

    torch.manual_seed(settings.seed)
    model = spec.build().to(context.device)
    cuda = context.device.type == "cuda"
    if cuda and settings.channels_last:
        model = model.to(memory_format=torch.channels_last)
    configure_gates(model, settings.gate_bias, settings.straight_through, settings.key_budget, settings.budget_target)
    lagrangian = settings.key_budget == "lagrangian" and bool(gated_modules(model))
    multipliers = BudgetMultipliers(model, settings.budget_multiplier_lr) if lagrangian else None
    optimizer = torch.optim.Adam(parameter_groups(model, settings.gate_learning_rate), lr=settings.learning_rate,
                                 betas=(0.9, 0.999), eps=1e-8)
    scheduler = make_scheduler(optimizer, settings)
    ema = EMA(model, settings.ema_decay) if settings.ema_decay else None
    start, best_psnr = 0, -math.inf
    digest = config_hash(spec, settings)
    checkpoint_path = out_dir / "last.pt"
    if resume == "auto":
        resume = resumable(checkpoint_path, digest)
    if resume:
        state = load_checkpoint(checkpoint_path)
        if state["config_hash"] != digest:
            raise CheckpointError(f"{checkpoint_path} was made with another config: "
                                  + "; ".join(differing_keys(state["config"], {"model": spec.as_dict(),
                                                                                "train": dataclasses.asdict(settings)})))
        load_weights(model, state, spec, checkpoint_path)
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        if ema is not None:
            ema.shadow = state["ema"]
        if multipliers is not None:
            multipliers.load_state_dict(state["budget_multipliers"])
        start, best_psnr = state["iteration"], state["best_psnr"]
        set_rng_states(state["rng"])

    network = DistributedDataParallel(model) if context.world > 1 else model
    forward = torch.compile(network) if settings.compile else network
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if cuda and settings.mixed_precision else nullcontext()
    live = None
    if context.main:
        live = open_live(out_dir / "dvclive", resume=bool(resume), last_step=max(start - 1, 0))
        live.log_param("global_batch", settings.batch_size)
        live.log_param("ranks", context.world)

    def checkpoint_state(iteration: int) -> dict:
        return {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                "ema": ema.shadow if ema else None, "rng": rng_states(), "iteration": iteration,
                "budget_multipliers": multipliers.state_dict() if multipliers else None,
                "best_psnr": best_psnr, "architecture": spec.as_dict(), "config_hash": digest,
                "source_digest": source_digest(),
                "config": {"model": spec.as_dict(), "train": dataclasses.asdict(settings)}}

    last_psnr = last_ssim = float("nan")
    stream = batches(dataset, sampler, per_rank_batch, start, settings.num_workers)
    bar = tqdm(range(start, settings.iterations), initial=start, total=settings.iterations,
               desc=f"train {spec.task} {spec.attention}", disable=not (progress and context.main))
    modules = attention_modules(model)
    for iteration in bar:
        for module in modules:
            module.temperature = temperature(iteration, settings)
            module.budget_target = budget_target(iteration, settings)
        degraded, target = (tensor.to(context.device) for tensor in next(stream))
        if cuda and settings.channels_last:
            degraded = degraded.contiguous(memory_format=torch.channels_last)
        loss = train_step(forward, optimizer, modules, degraded, target, autocast)
        if multipliers is not None:
            multipliers.step()
        # this step's open keys, read before validation's calls replace them (and only where they are logged)
        open_keys = [float(m.open_keys) for m in modules] if live is not None else []
        # (S8) the mean gate probability of the ACLA modules: what the key budget acts on (the target form's t)
        probabilities = [float(m.key_budget.detach()) for m in modules if getattr(m, "adaptive", False)] if live else []
        scheduler.step()
        if ema is not None:
            ema.update(model)
        done = iteration + 1
        if done % settings.validate_every == 0 or done == settings.iterations:
            tally = OpenKeyTally(gated_modules(model))
            last_psnr, last_ssim = validate(model, task, validation_set, context, settings.seed, tally)
            gates = tally.statistics() | gate_gradients(model, degraded, target, autocast)  # acla.engine.gates
            if live is not None:
                live.log_metric("val/psnr", last_psnr)
                live.log_metric("val/ssim", last_ssim)
                for name, value in gates.items():
                    live.log_metric(name, value)
            if last_psnr > best_psnr:
                best_psnr = last_psnr
                if context.main:
                    save_checkpoint(out_dir / "best.pt", checkpoint_state(done))
        if live is not None:
            live.log_metric("train/loss", loss.item())
            live.log_metric("train/lr", scheduler.get_last_lr()[0])
            if open_keys:
                live.log_metric("train/open_keys", float(np.mean(open_keys)))
            if probabilities:
                live.log_metric("train/gate_probability", float(np.mean(probabilities)))
            if multipliers is not None:
                for index, value in enumerate(multipliers.values.tolist(), start=1):
                    live.log_metric(f"train/budget_lambda{index}", value)
            live.next_step()
        bar.set_postfix(loss=f"{loss.item():.4f}", psnr=f"{last_psnr:.2f}")
        if done % settings.checkpoint_every == 0 or done == settings.iterations:
            if context.main:
                save_checkpoint(checkpoint_path, checkpoint_state(done))
            context.barrier()
    if math.isnan(last_psnr):  # resumed a finished run: nothing trained, score it once
        last_psnr, last_ssim = validate(model, task, validation_set, context, settings.seed)
    if live is not None:
        live.end()
    if context.main:
        atomic_write_text(out_dir / FINISHED, json.dumps(finished_record(spec, config), indent=2) + "\n")
    return TrainResult(best_psnr, last_psnr, last_ssim, settings.iterations, checkpoint_path)
