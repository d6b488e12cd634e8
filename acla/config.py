"""``params.yaml`` -> frozen, validated dataclasses.

The file has one section per concern plus ``profile`` (which profile is active) and ``profiles``
(per-profile overrides, deep-merged over the sections). A key that is unknown, a value of the
wrong type or an unknown profile stops loading with an error that names the key.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

PROFILES = ("smoke", "gpu", "paper")


class ConfigError(ValueError):
    """A params.yaml that does not describe a valid study."""


@dataclass(frozen=True)
class DataConfig:
    root: str | None = None  # None: $ACLA_DATA, else the bundled scikit-image images
    verify: bool = True  # check every file against MANIFEST.csv before use


@dataclass(frozen=True)
class ClassicalConfig:
    """The classical rows: bicubic SR, noisy input, mosaic and bilinear demosaic, JPEG input."""

    scales: tuple[int, ...] = (2, 3, 4)
    sigmas: tuple[float, ...] = (10, 15, 25, 30, 50, 70)
    qualities: tuple[int, ...] = (10, 20, 30, 40)
    bayer_pattern: str = "GRBG"
    seed: int = 0  # noise seeds derive from (seed, set, image, task)
    sets: tuple[str, ...] = ()  # empty: every set the data root holds (bundled-test without a root)

    def __post_init__(self) -> None:
        from acla import degradations

        for scale in self.scales:
            if scale not in degradations.SR_SCALES:
                raise ValueError(f"classical.scales: {scale} is not one of {degradations.SR_SCALES}")
        for sigma in self.sigmas:
            if sigma < 0:
                raise ValueError(f"classical.sigmas: {sigma} is negative (0..255 scale)")
        for quality in self.qualities:
            if not 1 <= quality <= 100:
                raise ValueError(f"classical.qualities: {quality} is outside 1..100")
        if self.bayer_pattern not in degradations.BAYER_PATTERNS:
            raise ValueError(f"classical.bayer_pattern: {self.bayer_pattern!r} is not one of {degradations.BAYER_PATTERNS}")


@dataclass(frozen=True)
class ModelConfig:
    """The network: a backbone preset, an attention variant and where it goes (spec sections 1-5)."""

    backbone: str = "tiny"  # tiny | edsr-baseline | edsr
    attention: str = "acla"  # none | nonlocal | cla-dense | cla | acla
    insert: str | tuple[int, ...] = "four-stages"  # none | every | four-stages | block indices
    num_keys: int = 9  # K keys per reference
    logits: str = "predicted"  # (S3) predicted | dot
    key_budget_weight: float = 1e-3  # (S8) lambda_k

    def __post_init__(self) -> None:
        from acla.models import ATTENTIONS, BACKBONES

        if self.backbone not in BACKBONES:
            raise ValueError(f"model.backbone: {self.backbone!r} is not one of {sorted(BACKBONES)}")
        if self.attention not in ATTENTIONS:
            raise ValueError(f"model.attention: {self.attention!r} is not one of {ATTENTIONS}")
        if self.logits not in ("predicted", "dot"):
            raise ValueError(f"model.logits: {self.logits!r} is not 'predicted' or 'dot'")
        if self.num_keys < 1:
            raise ValueError(f"model.num_keys must be >= 1, got {self.num_keys}")
        if self.key_budget_weight < 0:
            raise ValueError(f"model.key_budget_weight must be >= 0, got {self.key_budget_weight}")


@dataclass(frozen=True)
class TrainConfig:
    """One training run (spec section 6 for the paper profile; fewer iterations in the others)."""

    iterations: int = 300
    batch_size: int = 16  # global batch, split over the ranks under torchrun
    patch_size: int = 96  # side of the clean (HR) patch
    learning_rate: float = 1e-4
    schedule: str = "step"  # step | cosine
    lr_step: int = 200_000  # iterations between halvings (schedule: step)
    lr_gamma: float = 0.5
    validate_every: int = 100
    checkpoint_every: int = 100
    validation_set: str = "bundled-test"
    train_sets: tuple[str, ...] = ("bundled-train",)
    samples_per_epoch: int = 16_000  # sampler epoch length (EDSR's 1000 batches of 16)
    seed: int = 0
    ema_decay: float = 0.0  # 0: no EMA of the weights
    mixed_precision: bool = True  # bf16 autocast, CUDA only
    channels_last: bool = True  # CUDA only
    compile: bool = False
    num_workers: int = 0
    temperature_start: float = 1.0  # (S6) Gumbel-sigmoid tau, annealed geometrically
    temperature_end: float = 0.1

    def __post_init__(self) -> None:
        for name in ("iterations", "batch_size", "patch_size", "validate_every", "checkpoint_every", "samples_per_epoch"):
            if getattr(self, name) < 1:
                raise ValueError(f"train.{name} must be >= 1, got {getattr(self, name)}")
        if self.schedule not in ("step", "cosine"):
            raise ValueError(f"train.schedule: {self.schedule!r} is not 'step' or 'cosine'")
        if not 0 <= self.ema_decay < 1:
            raise ValueError(f"train.ema_decay must be in [0, 1), got {self.ema_decay}")
        if not self.learning_rate > 0:
            raise ValueError(f"train.learning_rate must be > 0, got {self.learning_rate}")
        if self.samples_per_epoch < self.batch_size:
            raise ValueError(f"train.samples_per_epoch ({self.samples_per_epoch}) is smaller than train.batch_size "
                             f"({self.batch_size})")
        if not 0 < self.temperature_end <= self.temperature_start:
            raise ValueError("train.temperature_end must be in (0, temperature_start]")


@dataclass(frozen=True)
class SearchConfig:
    """Insertion-location search (spec section 4)."""

    iterations: int = 300
    warmup_fraction: float = 0.25  # first part of the search trains the weights only (alphas see O_j != 0)
    arch_learning_rate: float = 0.05  # SGD with momentum: steps keep the FLOPs weighting of (S9)
    cost_weight: float = 0.5  # (S9) lambda_a
    threshold: float = 0.5  # keep locations with sigmoid(alpha) above it
    max_modules: int = 0  # > 0: keep the top-M locations instead
    candidate_every: int = 1  # G: a candidate location after every G blocks

    def __post_init__(self) -> None:
        if self.iterations < 1 or self.candidate_every < 1 or self.max_modules < 0:
            raise ValueError("search.iterations and search.candidate_every must be >= 1, search.max_modules >= 0")
        if not 0 < self.threshold < 1:
            raise ValueError(f"search.threshold must be in (0, 1), got {self.threshold}")
        if not 0 <= self.warmup_fraction < 1:
            raise ValueError(f"search.warmup_fraction must be in [0, 1), got {self.warmup_fraction}")


@dataclass(frozen=True)
class Config:
    profile: str = "smoke"
    data: DataConfig = field(default_factory=DataConfig)
    classical: ClassicalConfig = field(default_factory=ClassicalConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    search: SearchConfig = field(default_factory=SearchConfig)


def _check_type(value: Any, annotation: Any, where: str) -> Any:
    """Return ``value`` converted to ``annotation`` (lists -> tuples, ints -> floats) or raise."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(annotation)
        if value is None and type(None) in options:
            return None
        errors = []
        for option in (o for o in options if o is not type(None)):
            try:
                return _check_type(value, option, where)
            except ConfigError as error:
                errors.append(str(error))
        raise ConfigError(errors[0])
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        item_type = typing.get_args(annotation)[0]
        return tuple(_check_type(item, item_type, f"{where}[{i}]") for i, item in enumerate(value))
    if dataclasses.is_dataclass(annotation):
        return _build(annotation, value, where)
    if annotation is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, bool) != (annotation is bool) or not isinstance(value, annotation):
        raise ConfigError(f"{where}: expected {annotation.__name__}, got {value!r} ({type(value).__name__})")
    return value


def _build(cls: type, values: Any, where: str) -> Any:
    if not isinstance(values, dict):
        raise ConfigError(f"{where}: expected a mapping, got {values!r}")
    hints = typing.get_type_hints(cls)
    unknown = sorted(set(values) - set(hints))
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {unknown}; expected some of {sorted(hints)}")
    kwargs = {key: _check_type(value, hints[key], f"{where}.{key}" if where else key) for key, value in values.items()}
    try:
        return cls(**kwargs)
    except ValueError as error:
        raise ConfigError(str(error)) from error


def _merge(base: dict, override: dict) -> dict:
    merged = dict(base)
    for key, value in override.items():
        merged[key] = _merge(merged[key], value) if isinstance(value, dict) and isinstance(merged.get(key), dict) else value
    return merged


def load_config(path: str | Path = "params.yaml", profile: str | None = None) -> Config:
    """Read ``path``, apply the active profile's overrides, validate."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"params file {path} not found")
    raw = yaml.safe_load(path.read_text()) or {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    profiles = raw.pop("profiles", {}) or {}
    profile = profile or raw.get("profile", "smoke")
    if profile not in PROFILES:
        raise ConfigError(f"{path}: profile {profile!r} is unknown; expected one of {PROFILES}")
    unknown_profiles = sorted(set(profiles) - set(PROFILES))
    if unknown_profiles:
        raise ConfigError(f"{path}: profiles has unknown profile(s) {unknown_profiles}; expected {PROFILES}")
    raw["profile"] = profile
    try:
        return _build(Config, _merge(raw, profiles.get(profile) or {}), "")
    except ConfigError as error:
        raise ConfigError(f"{path}: {error}") from error
