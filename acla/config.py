"""``params.yaml`` -> frozen, validated dataclasses.

The file holds ``profile`` (which profile is active), ``data``, ``classical``, ``defaults`` (the model,
training, search, evaluation, ablation and efficiency settings every task starts from) and ``tasks``
(one section per task: ``sr``, ``denoise``, ``demosaic``, ``jpeg``, each listing its ``settings`` and
overriding any default). Any section may carry ``profiles: {smoke: {...}, gpu: {...}, ...}``: the
active profile's entry is merged over that section. For a task the order is: defaults, the task's own
values, the defaults' profile entry, the task's profile entry (the most specific wins). Keeping the
overrides inside the section they change lets DVC re-run only that task when they change.

A key that is unknown, a value of the wrong type, an unknown profile or a missing task stops
loading with an error that names the key.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from acla.models.attention import KEY_BUDGET_FORMS

# ci: the size the notebooks default to, so nbval runs each in seconds; smoke: the default study (CPU,
# minutes, a pipeline check); cpu: learned results on the real benchmarks in at most 90 minutes on 2 cores;
# cpu-gates: SR x2 at the cpu profile's scale, ACLA's gates (the accuracy-against-keys frontier and the remedies
# of docs/method.md#departures), in at most 90 minutes too; cpu-long: SR x2 at the cpu profile's scale against
# training length, in at most 90 minutes; cpu-budget, cpu-budget-long and cpu-jpeg-long: the key budget's forms
# (docs/method.md#key-budget-forms) for SR x2 at 600 and 2,400 iterations and for JPEG at 2,400, each in at most 90
# minutes; gpu: one GPU, a few minutes a task; paper: docs/method.md#schedule. Listed
# from the most informative to the least: the front page of reports/ shows the profiles present in this order.
PROFILES = ("paper", "gpu", "cpu", "cpu-budget-long", "cpu-budget", "cpu-jpeg-long", "cpu-long", "cpu-gates", "smoke",
            "ci")
TASKS = ("sr", "denoise", "demosaic", "jpeg")
# The TrainConfig fields of ACLA's gate recipe that a remedy (FrontierConfig.remedies, docs/method.md#departures)
# may change.
GATE_OPTIONS = ("temperature_start", "temperature_end", "gate_bias", "gate_learning_rate", "straight_through",
                "key_budget", "budget_target", "budget_warmup", "budget_multiplier_lr")


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
    """The network: a backbone preset, an attention variant and where it goes (docs/method.md, (S1)-(S8))."""

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
    """One training run (docs/method.md#schedule for the paper profile; fewer iterations in the others)."""

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
    temperature_start: float = 1.0  # (S6) Gumbel-sigmoid tau, annealed geometrically (the recipe: 1 to 0.1)
    temperature_end: float = 0.1
    # ACLA's gate head: the defaults are the recipe (docs/method.md#recipe), anything else a labelled departure
    gate_bias: float = 2.0  # initial bias of the gate logits W_m (ours, not the paper's: sigmoid(2) = 0.88 open)
    gate_learning_rate: float = 0.0  # Adam's learning rate for W_m; 0: learning_rate (the recipe: one optimiser)
    straight_through: bool = True  # (S6) hard 0/1 gates forward, relaxed gradient; False: the relaxed gates forward
    key_budget: str = "linear"  # (S8) the budget's form: linear (the recipe) | target | lagrangian (departures)
    budget_target: float = 0.5  # t of the target form: the mean gate probability each ACLA module is pulled toward
    budget_warmup: float = 0.0  # > 0: t moves linearly from 1 (every key open) to budget_target over this run fraction
    budget_multiplier_lr: float = 0.01  # Adam's learning rate of the lagrangian form's multipliers (gradient ascent)

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
        if self.gate_learning_rate < 0:
            raise ValueError(f"train.gate_learning_rate must be >= 0 (0: train.learning_rate), got {self.gate_learning_rate}")
        if self.key_budget not in KEY_BUDGET_FORMS:
            raise ValueError(f"train.key_budget: {self.key_budget!r} is not one of {KEY_BUDGET_FORMS}")
        if not 0 < self.budget_target < 1:
            raise ValueError(f"train.budget_target must be in (0, 1), got {self.budget_target}")
        if not 0 <= self.budget_warmup < 1 or not self.budget_multiplier_lr > 0:
            raise ValueError(f"train.budget_warmup must be in [0, 1) and train.budget_multiplier_lr > 0, got "
                             f"{self.budget_warmup} and {self.budget_multiplier_lr}")

    def departures(self) -> dict[str, object]:
        """The gate options that differ from the recipe (the defaults, docs/method.md#recipe): name -> value."""
        recipe = TrainConfig()
        return {name: getattr(self, name) for name in GATE_OPTIONS if getattr(self, name) != getattr(recipe, name)}


@dataclass(frozen=True)
class SearchConfig:
    """Insertion-location search ((S9), docs/method.md#s9)."""

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
class EvaluateConfig:
    """Scoring on the test sets (and the crop that validation during training shares)."""

    test_sets: tuple[str, ...] = ()  # empty: the task's benchmarks in the data root (bundled-test without one)
    crop: int = 0  # > 0: centre-crop every validation/test image to this side first (keeps smoke in minutes)
    tile: int = 0  # > 0: tiled inference, tile side in network-input pixels
    overlap: int = 16
    self_ensemble: bool = False
    saved_crops: int = 2  # output crops saved per test set for the visual comparison

    def __post_init__(self) -> None:
        for name in ("crop", "tile", "overlap", "saved_crops"):
            if getattr(self, name) < 0:
                raise ValueError(f"evaluate.{name} must be >= 0, got {getattr(self, name)}")


@dataclass(frozen=True)
class HeadlineConfig:
    """The task tables' comparison: these variants, each trained from scratch once per seed at one budget."""

    variants: tuple[str, ...] = ("backbone", "acla")  # backbone, acla (searched places), and optionally cla
    seeds: tuple[int, ...] = (0,)  # one training run per seed; tables show mean ± std over them

    def __post_init__(self) -> None:
        allowed = ("backbone", "acla", "cla")
        if "backbone" not in self.variants or any(v not in allowed for v in self.variants):
            raise ValueError(f"headline.variants: {list(self.variants)} must include 'backbone' and only use {allowed}")
        if not self.seeds or len(set(self.seeds)) != len(self.seeds):
            raise ValueError(f"headline.seeds: {list(self.seeds)} must be a non-empty list of distinct seeds")


ABLATION_INSERTIONS = ("every", "four-stages", "random")


@dataclass(frozen=True)
class AblationConfig:
    """The ablation variants (docs/method.md#variants) beside the headline pair (backbone, acla at the searched
    locations)."""

    attentions: tuple[str, ...] = ("nonlocal", "cla")  # other modules at the searched locations
    num_keys: tuple[int, ...] = (1, 4, 16)  # K sweep of acla at the searched locations
    insertions: tuple[str, ...] = ABLATION_INSERTIONS  # acla elsewhere; random keeps the searched count
    random_seed: int = 0
    seeds: tuple[int, ...] = ()  # training seeds of every variant; empty: the first headline seed
    iterations: int = 0  # 0: train.iterations (the headline pair's rows are reused); else every variant,
    #                      backbone and acla included, is trained for this many (a cheaper, still equal budget)
    budgets: tuple[int, ...] = ()  # the backbone (first seed) retrained at each of these iteration counts, each a
    #                                whole schedule: final PSNR against budget says what budget a published score needs

    def __post_init__(self) -> None:
        from acla.models import ATTENTIONS

        for name in self.attentions:
            if name not in ATTENTIONS or name in ("none", "acla"):
                raise ValueError(f"ablation.attentions: {name!r} is not one of {[a for a in ATTENTIONS if a not in ('none', 'acla')]}")
        for keys in self.num_keys:
            if keys < 1:
                raise ValueError(f"ablation.num_keys: {keys} must be >= 1")
        if self.iterations < 0:
            raise ValueError(f"ablation.iterations must be >= 0, got {self.iterations}")
        for budget in self.budgets:
            if budget < 1:
                raise ValueError(f"ablation.budgets: {budget} must be >= 1 iteration")
        for name in self.insertions:
            if name not in ABLATION_INSERTIONS:
                raise ValueError(f"ablation.insertions: {name!r} is not one of {ABLATION_INSERTIONS}")


@dataclass(frozen=True)
class Remedy:
    """One attempt to make ACLA's gates adapt (docs/method.md#departures): ACLA at ``key_budget_weight`` trained with
    the gate options of ``TrainConfig`` given here (None: the profile's own), a departure from the recipe."""

    name: str
    key_budget_weight: float = 0.0
    gate_bias: float | None = None
    gate_learning_rate: float | None = None
    temperature_start: float | None = None
    temperature_end: float | None = None
    straight_through: bool | None = None
    key_budget: str | None = None
    budget_target: float | None = None
    budget_warmup: float | None = None
    budget_multiplier_lr: float | None = None

    def __post_init__(self) -> None:
        if not self.name.strip():
            raise ValueError("frontier.remedies: every remedy needs a name")
        if self.key_budget_weight < 0:
            raise ValueError(f"frontier.remedies.{self.name}: key_budget_weight must be >= 0")

    def train_overrides(self) -> dict[str, object]:
        """The ``TrainConfig`` fields this remedy sets."""
        return {name: getattr(self, name) for name in GATE_OPTIONS if getattr(self, name) is not None}


@dataclass(frozen=True)
class FrontierConfig:
    """Accuracy against keys per query: ACLA at several key-budget weights lambda_k and CLA at several K,
    at the searched locations, beside the backbone, over seeds and whole schedules of one or more lengths, scored on
    ``test_sets`` with the open keys counted there. Empty ``budget_weights`` and ``cla_num_keys``: no frontier."""

    budget_weights: tuple[float, ...] = ()  # (S8) lambda_k of each ACLA point
    cla_num_keys: tuple[int, ...] = ()  # K of each CLA point (the K ablation of docs/method.md#variants)
    seeds: tuple[int, ...] = (0, 1)
    budgets: tuple[int, ...] = (0,)  # iterations of each whole schedule; 0: train.iterations
    long_points: tuple[str, ...] = ()  # the points (labels) also trained at the budgets after the first
    remedies: tuple[Remedy, ...] = ()  # departures from the recipe, each an ACLA point at the first budget
    test_sets: tuple[str, ...] = ("Set5", "B100")
    key_sets: tuple[str, ...] = ("Set14", "Urban100")  # the first image of each: ACLA's open-key maps and zoomed keys

    def __post_init__(self) -> None:
        if any(weight < 0 for weight in self.budget_weights):
            raise ValueError(f"frontier.budget_weights must be >= 0, got {list(self.budget_weights)}")
        if any(keys < 1 for keys in self.cla_num_keys):
            raise ValueError(f"frontier.cla_num_keys must be >= 1, got {list(self.cla_num_keys)}")
        if not self.seeds or any(budget < 0 for budget in self.budgets) or not self.budgets:
            raise ValueError(f"frontier: seeds and budgets (>= 0) must not be empty, got {list(self.seeds)}, "
                             f"{list(self.budgets)}")
        points = [(remedy.name, remedy.key_budget_weight) for remedy in self.remedies]
        if len(set(points)) != len(points):
            raise ValueError(f"frontier.remedies: two remedies share a name and key_budget_weight: {points}")

    @property
    def enabled(self) -> bool:
        return bool(self.budget_weights or self.cla_num_keys or self.remedies)


@dataclass(frozen=True)
class EfficiencyConfig:
    """Parameters, FLOPs, peak memory and latency of every variant at one input size."""

    input_size: tuple[int, ...] = (180, 320)  # (H, W) of the network input (the LR image for SR)
    repeats: int = 5

    def __post_init__(self) -> None:
        if len(self.input_size) != 2 or min(self.input_size) < 8:
            raise ValueError(f"efficiency.input_size must be [H, W] with sides >= 8, got {list(self.input_size)}")
        if self.repeats < 1:
            raise ValueError(f"efficiency.repeats must be >= 1, got {self.repeats}")


@dataclass(frozen=True)
class Config:
    """Everything one run (a search, a training, an evaluation) reads."""

    profile: str = "smoke"
    data: DataConfig = field(default_factory=DataConfig)
    classical: ClassicalConfig = field(default_factory=ClassicalConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    search: SearchConfig = field(default_factory=SearchConfig)
    evaluate: EvaluateConfig = field(default_factory=EvaluateConfig)


@dataclass(frozen=True)
class Sections:
    """The per-task sections, as ``defaults`` gives them and each task overrides them."""

    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    search: SearchConfig = field(default_factory=SearchConfig)
    evaluate: EvaluateConfig = field(default_factory=EvaluateConfig)
    headline: HeadlineConfig = field(default_factory=HeadlineConfig)
    ablation: AblationConfig = field(default_factory=AblationConfig)
    efficiency: EfficiencyConfig = field(default_factory=EfficiencyConfig)
    frontier: FrontierConfig = field(default_factory=FrontierConfig)


@dataclass(frozen=True)
class TaskConfig(Sections):
    """One task of the study (sr, denoise, demosaic or jpeg), resolved for the active profile."""

    settings: tuple[str, ...] = ()  # task names: sr_x2, denoise_color_s30, demosaic, jpeg_q20, ...; a profile's
    #                                 empty list skips the task (its stages write only a provenance.json saying so)


@dataclass(frozen=True)
class Study:
    """The whole params file, resolved for one profile."""

    profile: str
    data: DataConfig
    classical: ClassicalConfig
    defaults: Sections
    tasks: dict[str, TaskConfig]

    def run_config(self, setting: str, task: TaskConfig | None = None) -> Config:
        """The config of one run of ``setting`` (e.g. ``sr_x2``), from its task's section."""
        task = task or self.tasks[task_of(setting)]
        return Config(self.profile, self.data, self.classical, task.model, task.train, task.search, task.evaluate)


def task_of(setting: str) -> str:
    """``sr_x2`` -> ``sr``; refuses names that are not tasks."""
    from acla.tasks import parse_task

    return parse_task(setting).kind


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


def _split_profiles(section: Any, profile: str, where: str) -> tuple[Any, dict]:
    """A section without its ``profiles`` key, and the active profile's entry of it ({} if none)."""
    if not isinstance(section, dict) or "profiles" not in section:
        return section, {}
    section = dict(section)
    profiles = section.pop("profiles") or {}
    if not isinstance(profiles, dict):
        raise ConfigError(f"{where}.profiles: expected a mapping of profile -> overrides, got {profiles!r}")
    unknown = sorted(set(profiles) - set(PROFILES))
    if unknown:
        raise ConfigError(f"{where}.profiles: unknown profile(s) {unknown}; expected some of {list(PROFILES)}")
    override = profiles.get(profile) or {}
    if not isinstance(override, dict):
        raise ConfigError(f"{where}.profiles.{profile}: expected a mapping, got {override!r}")
    return section, override


def _resolved(section: Any, profile: str, where: str) -> Any:
    base, override = _split_profiles(section, profile, where)
    return _merge(base, override) if override else base


def _read(path: str | Path, profile: str | None) -> tuple[dict, str, Path]:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"params file {path} not found")
    raw = yaml.safe_load(path.read_text()) or {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    profile = profile or raw.get("profile", "smoke")
    if profile not in PROFILES:
        raise ConfigError(f"{path}: profile {profile!r} is unknown; expected one of {list(PROFILES)}")
    unknown = sorted(set(raw) - {"profile", "data", "classical", "defaults", "tasks"})
    if unknown:
        raise ConfigError(f"{path}: unknown key(s) {unknown}; expected some of ['classical', 'data', 'defaults', "
                          "'profile', 'tasks']")
    return raw, profile, path


def load_study(path: str | Path = "params.yaml", profile: str | None = None) -> Study:
    """Read ``path`` and resolve every task for the active profile (or ``profile``), validating all."""
    raw, profile, path = _read(path, profile)
    try:
        data = _build(DataConfig, _resolved(raw.get("data") or {}, profile, "data"), "data")
        classical = _build(ClassicalConfig, _resolved(raw.get("classical") or {}, profile, "classical"), "classical")
        defaults, defaults_override = _split_profiles(raw.get("defaults") or {}, profile, "defaults")
        resolved_defaults = _build(Sections, _merge(defaults, defaults_override), "defaults")
        tasks_raw = raw.get("tasks")
        if not isinstance(tasks_raw, dict):
            raise ConfigError(f"tasks: expected a mapping with the tasks {list(TASKS)}, got {tasks_raw!r}")
        missing = [name for name in TASKS if name not in tasks_raw]
        unknown = sorted(set(tasks_raw) - set(TASKS))
        if missing or unknown:
            raise ConfigError(f"tasks: missing task(s) {missing}, unknown task(s) {unknown}; expected exactly {list(TASKS)}")
        tasks = {}
        for name in TASKS:
            own, own_override = _split_profiles(tasks_raw[name] or {}, profile, f"tasks.{name}")
            merged = _merge(_merge(_merge(defaults, own), defaults_override), own_override)
            task = _build(TaskConfig, merged, f"tasks.{name}")
            if not own.get("settings"):  # a profile may empty the list (it skips the task); the task's own may not
                raise ConfigError(f"tasks.{name}.settings: empty; list at least one setting (e.g. {_EXAMPLES[name]})")
            for setting in task.settings:
                try:
                    kind = task_of(setting)
                except ValueError as error:
                    raise ConfigError(f"tasks.{name}.settings: {error}") from error
                if kind != name:
                    raise ConfigError(f"tasks.{name}.settings: {setting!r} is a {kind} setting, not {name}")
            tasks[name] = task
    except ConfigError as error:
        raise ConfigError(f"{path}: {error}") from error
    return Study(profile, data, classical, resolved_defaults, tasks)


_EXAMPLES = {"sr": "sr_x2", "denoise": "denoise_color_s30", "demosaic": "demosaic", "jpeg": "jpeg_q20"}


def load_config(path: str | Path = "params.yaml", profile: str | None = None, task: str | None = None) -> Config:
    """The config of one run: ``task`` (a setting such as ``sr_x2``) picks its task's section; without
    it, the defaults (enough for the classical rows and the data)."""
    study = load_study(path, profile)
    if task is None:
        base = study.defaults
        return Config(study.profile, study.data, study.classical, base.model, base.train, base.search, base.evaluate)
    try:
        return study.run_config(task)
    except ValueError as error:
        raise ConfigError(f"--task: {error}") from error
