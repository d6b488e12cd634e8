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
class Config:
    profile: str = "smoke"
    data: DataConfig = field(default_factory=DataConfig)
    classical: ClassicalConfig = field(default_factory=ClassicalConfig)


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
