"""The study, one task at a time: what each stage of ``dvc.yaml`` (and each notebook) runs.

``TaskStudy`` holds one task of ``params.yaml`` (``sr``, ``denoise``, ``demosaic`` or ``jpeg``) resolved
for a profile, and runs its steps over every setting of that task (``sr_x2``, ``sr_x3``, ...):

- ``search``     insertion search, then the derived ``arch.json`` (docs/method.md#s9);
- ``retrain``    the headline pair at one training budget: the backbone and +ACLA at the searched places;
- ``evaluate``   both, and the classical rows, on the test sets; what ACLA's gates and offsets did;
- ``ablate``     the variants of docs/method.md#variants at the same budget (modules, K, insertion);
- ``efficiency`` parameters, FLOPs, peak memory and latency of every variant.
- ``frontier``   accuracy against keys per query: ACLA at several lambda_k, CLA at several K and the key budget's forms.

Outputs that the report reads are small CSV/JSON files under ``reports/study/<profile>/<task>/<step>/``;
checkpoints go to ``runs/<profile>/<task>/<step>/<setting>/<variant>/seed<k>/`` and training resumes from them
when the config is unchanged (``resume="auto"``), so an interrupted stage continues where it stopped. Each
profile has its own folders, so running one never overwrites another's results; a run that another profile or
step already finished with the same model, config and training code is copied, not trained again
(``acla.engine.reuse``; column ``reused_from`` of ``runs.csv``).
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from acla.config import Remedy, Study, TaskConfig, load_study
from acla.data import open_set
from acla.data.sets import resolve_data_root
from acla.engine.efficiency import closed_key_flops, inference_flops
from acla.engine.gates import OpenKeyTally, adaptive, gated_modules, sampled_modules
from acla.engine.launch import Run, launcher_from_environment, run_all
from acla.engine.reuse import finished_here, finished_twin, reuse_finished_run
from acla.engine.train import Distributed, ModelSpec, load_model, train, validate
from acla.files import atomic_write_text, slug
from acla.models.backbones import BACKBONES, insertion_locations
from acla.provenance import run_record
from acla.study.keys import key_maps_report
from acla.study.tables import seed_spread
from acla.tasks import parse_task


def write_csv(frame: pd.DataFrame, path: Path) -> pd.DataFrame:
    atomic_write_text(path, frame.to_csv(index=False, float_format="%.10g"))
    return frame


def variant_specs(task: TaskConfig, setting: str, searched: ModelSpec) -> dict[str, ModelSpec]:
    """Every variant of docs/method.md#variants for one setting, by label; ``searched`` is the derived ACLA model.

    All share the backbone; the modules, K and insertion variants change one thing each relative to
    ``acla`` (the searched locations). ``random`` draws as many locations as the search kept.
    """
    backbone = ModelSpec(setting, task.model.backbone)
    if searched.attention == "none":  # the search kept no location: there is no +ACLA model to train
        return {"backbone": backbone}
    variants = {"backbone": backbone, "acla": searched}
    for attention in dict.fromkeys([*(v for v in task.headline.variants if v == "cla"), *task.ablation.attentions]):
        variants[attention] = replace(searched, attention=attention)
    for keys in task.ablation.num_keys:
        if keys != searched.num_keys:
            variants[f"acla K={keys}"] = replace(searched, num_keys=keys)
    num_blocks = BACKBONES[task.model.backbone].num_blocks
    for insertion in task.ablation.insertions:
        if insertion == "random":
            rng = np.random.default_rng(task.ablation.random_seed)
            chosen = rng.choice(np.arange(1, num_blocks + 1), size=len(searched.insert), replace=False)
            insert = tuple(sorted(int(i) for i in chosen))
        else:
            insert = tuple(insertion_locations(insertion, num_blocks))
        variants[f"acla {insertion}"] = replace(searched, insert=insert, references=None)
    return variants


def frontier_specs(task: TaskConfig, setting: str, searched: ModelSpec) -> dict[str, ModelSpec]:
    """The points of the accuracy-against-keys frontier (``frontier``) for one setting: the backbone, CLA at each K
    and ACLA at each key-budget weight, the modules at the searched locations. Labels ``cla K=9``, ``acla lk=0.001``.
    CLA K=9 at the searched locations is the headline's ``cla`` (same spec), ACLA at the headline's lambda_k its
    ``acla``."""
    specs = {"backbone": ModelSpec(setting, task.model.backbone)}
    if searched.attention == "none":
        return specs
    for keys in task.frontier.cla_num_keys:
        specs[f"cla K={keys}"] = replace(searched, attention="cla", num_keys=keys)
    for weight in task.frontier.budget_weights:
        specs[f"acla lk={weight:g}"] = replace(searched, key_budget_weight=float(weight))
    for remedy in task.frontier.remedies:
        specs[remedy_label(remedy)] = replace(searched, key_budget_weight=remedy.key_budget_weight)
    return specs


def remedy_label(remedy: Remedy) -> str:
    """A remedy's frontier point: ``acla lk=0.0003 + gate bias 0``."""
    return f"acla lk={remedy.key_budget_weight:g} + {remedy.name}"


def frontier_overrides(task: TaskConfig) -> dict[str, dict]:
    """Frontier label -> the ``TrainConfig`` fields its runs change (the remedies'; none for the other points)."""
    return {remedy_label(remedy): remedy.train_overrides() for remedy in task.frontier.remedies}


def budget_form(spec: ModelSpec, train_config) -> dict:
    """The key budget's columns (S8): its form (``linear``, the recipe's, ``target`` or ``lagrangian``) and the target
    t of the other forms; empty for the models without gates."""
    if spec.attention != "acla":
        return {"key_budget": "", "budget_target": np.nan}
    target = train_config.budget_target if train_config.key_budget != "linear" else np.nan
    return {"key_budget": train_config.key_budget, "budget_target": target}


def describe(spec: ModelSpec) -> dict:
    """The columns that tell variants apart in the tables."""
    insert = spec.insert if isinstance(spec.insert, str) else " ".join(map(str, spec.insert))
    modules = len(spec.insert) if isinstance(spec.insert, tuple) and spec.attention != "none" else 0
    return {"attention": spec.attention, "insert": insert, "modules": modules,
            "num_keys": spec.num_keys if spec.attention in ("cla", "acla") else np.nan}


def dvclive_curves(run_dir: Path) -> pd.DataFrame:
    """Every metric dvclive logged in ``run_dir/dvclive`` as long rows (metric, step, value)."""
    frames = []
    root = run_dir / "dvclive" / "plots" / "metrics"
    for path in sorted(root.rglob("*.tsv")):
        frame = pd.read_csv(path, sep="\t")
        value = [c for c in frame.columns if c not in ("step", "timestamp")][0]
        frames.append(pd.DataFrame({"metric": str(path.relative_to(root).with_suffix("")), "step": frame["step"],
                                    "value": frame[value]}))
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=["metric", "step", "value"])


@dataclass
class TaskStudy:
    """One task of the study; every method loops over the task's settings."""

    name: str
    study: Study
    reports: Path  # reports/study/<task>
    runs: Path  # runs/<task>
    data_root: Path | None
    progress: bool = True
    places: dict[str, str] = field(default_factory=dict)  # run -> where it ran, since the last provenance saved

    @property
    def config(self) -> TaskConfig:
        return self.study.tasks[self.name]

    @property
    def settings(self) -> tuple[str, ...]:
        return self.config.settings

    def run_config(self, setting: str):
        return self.study.run_config(setting, self.config)

    # ---------------------------------------------------------------------------------- search
    def search(self) -> pd.DataFrame:
        """Search every setting; ``search/<setting>/{alpha.csv, alpha.png, arch.json}`` and a summary."""
        from acla.engine.search import search

        if not self.settings:
            return self.skip("search")
        rows = []
        started = time.perf_counter()
        runs = [Run(f"search/{setting}", partial(timed, search, setting, self.run_config(setting),
                                                   (self.reports / "search" / setting).resolve(),
                                                   data_root=self.data_root, progress=self.progress))
                for setting in self.settings]
        results, places = run_all(runs, f"{self.study.profile}/{self.name}/search")
        for setting, (arch, seconds) in zip(self.settings, results):
            rows.append({"setting": setting, "kept": " ".join(map(str, arch["insert"])) if arch["insert"] != "none"
                         else "none", "rule": arch["rule"], "params": arch["params"],
                         "flops_at_patch": arch["flops_at_patch"], "seconds": seconds,
                         **{f"sigmoid_alpha_block_{k}": v for k, v in arch["alpha_sigmoid"].items()}})
        save_provenance(self, "search", time.perf_counter() - started, places=places)
        return write_csv(pd.DataFrame(rows), self.reports / "search" / "summary.csv")

    def searched(self, setting: str) -> ModelSpec:
        return ModelSpec.from_arch(self.reports / "search" / setting / "arch.json")

    def variants(self, setting: str) -> dict[str, ModelSpec]:
        return variant_specs(self.config, setting, self.searched(setting))

    def frontier_points(self, setting: str) -> dict[str, ModelSpec]:
        return frontier_specs(self.config, setting, self.searched(setting))

    def skip(self, step: str) -> pd.DataFrame:
        """A profile that lists no setting (or no frontier point) for this task: the step writes only
        ``provenance.json`` (saying so), the empty checkpoint folder and metrics file DVC expects, and no table the
        report would read."""
        save_provenance(self, step, 0.0, skipped=True)
        if step in ("retrain", "ablation", "frontier"):
            (self.runs / step).mkdir(parents=True, exist_ok=True)
        if step == "evaluate":
            atomic_write_text(self.metrics_file, "{}\n")
        return pd.DataFrame()

    @property
    def seeds(self) -> tuple[int, ...]:
        return self.config.headline.seeds

    @property
    def runs_root(self) -> Path:
        """``runs/``: every profile's checkpoints, where a finished twin of a run may be (acla.engine.reuse)."""
        return self.runs.parents[1]

    def run_dir(self, step: str, setting: str, label: str, seed: int) -> Path:
        return self.runs / step / setting / slug(label) / f"seed{seed}"

    # ---------------------------------------------------------------------------------- training
    def _fit(self, step: str, labels: list[str], seeds: tuple[int, ...], iterations: int = 0,
             specs_of=None, overrides: dict[str, dict] | None = None) -> tuple[list[dict], list[pd.DataFrame]]:
        """Train ``labels`` x ``seeds`` of every setting (checkpoints under ``runs/<step>``): one row per run and
        its dvclive curves. ``iterations`` > 0 replaces the training budget (a whole schedule of that length).
        ``specs_of(setting)``: the label -> spec mapping to take the labels from (default: ``variants``);
        ``overrides``: label -> ``TrainConfig`` fields that label's runs change (the columns record every departure
        from the recipe, docs/method.md#recipe)."""
        (self.runs / step).mkdir(parents=True, exist_ok=True)  # a DVC output, even when no variant is trained here
        rows, runs = [], []
        for setting in self.settings:
            specs = (specs_of or self.variants)(setting)
            config = self.run_config(setting)
            if iterations and iterations != config.train.iterations:
                config = replace(config, train=replace(config.train, iterations=iterations,
                                                       validate_every=min(config.train.validate_every, iterations),
                                                       checkpoint_every=min(config.train.checkpoint_every, iterations)))
            for label in labels:
                if label not in specs:
                    continue
                spec = specs[label]
                trained = replace(config, train=replace(config.train, **(overrides or {}).get(label, {})))
                departures = trained.train.departures() if spec.attention == "acla" else {}
                columns = {**describe(spec), "params": sum(p.numel() for p in spec.build().parameters()),
                           "iterations": config.train.iterations, "batch_size": config.train.batch_size,
                           "val_set": open_set(config.train.validation_set, self.data_root, verify=False,
                                               crop=config.evaluate.crop).label,
                           "departures": " ".join(f"{name}={value}" for name, value in departures.items()),
                           **budget_form(spec, trained.train)}
                for seed in seeds:
                    run_dir = self.run_dir(step, setting, label, seed).resolve()
                    seeded = replace(trained, train=replace(trained.train, seed=seed))
                    runs.append(Run(f"{step}/{setting}/{slug(label)}/seed{seed}",
                                    partial(train_run, self.runs_root.resolve(), spec, seeded, run_dir,
                                            self.data_root, self.progress),
                                    partial(ready, self.runs_root, spec, seeded, run_dir)))
                    rows.append({"setting": setting, "variant": label, "seed": seed, **columns})
        results, places = run_all(runs, f"{self.study.profile}/{self.name}/{step}")
        self.places.update(places)
        curves = []
        for row, result in zip(rows, results):
            twin = result.pop("twin")
            row.update(result, checkpoint=str(result["checkpoint"].relative_to(self.runs.resolve())),
                       reused_from=str(twin.relative_to(self.runs_root.resolve())) if twin else "")
            run_dir = self.run_dir(step, row["setting"], row["variant"], row["seed"])
            curves.append(dvclive_curves(run_dir).assign(setting=row["setting"], variant=row["variant"],
                                                         seed=row["seed"]))
        return rows, curves

    def _train(self, step: str, labels: list[str], seeds: tuple[int, ...], iterations: int = 0) -> pd.DataFrame:
        """``_fit``, then ``reports/<step>/{runs.csv, curves.csv, provenance.json}``."""
        start_step = time.perf_counter()
        rows, curves = self._fit(step, labels, seeds, iterations)
        out = self.reports / step
        save_provenance(self, step, time.perf_counter() - start_step)
        write_csv(pd.concat(curves, ignore_index=True) if curves else pd.DataFrame(), out / "curves.csv")
        return write_csv(pd.DataFrame(rows), out / "runs.csv")

    def retrain(self) -> pd.DataFrame:
        """The headline variants (backbone, +ACLA at the searched locations, optionally CLA there), from
        scratch, at the same budget, once per seed of ``headline.seeds``."""
        if not self.settings:
            return self.skip("retrain")
        return self._train("retrain", list(self.config.headline.variants), self.seeds)

    def ablate(self) -> pd.DataFrame:
        """Every variant at one budget and each of ``ablation.seeds`` (default: the first headline seed). With
        ``ablation.iterations`` 0 that is the headline's budget and the headline's rows of those seeds are reused
        from ``retrain``; otherwise all variants, the headline's included, are trained for
        ``ablation.iterations`` (a cheaper, still equal, budget)."""
        if not self.settings:
            return self.skip("ablation")
        start = time.perf_counter()
        iterations = self.config.ablation.iterations
        seeds = self.config.ablation.seeds or self.seeds[:1]
        reuse = iterations in (0, self.config.train.iterations)
        if reuse and not set(seeds) <= set(self.seeds):
            raise ValueError(f"ablation.seeds {list(seeds)}: at the headline's budget the headline's runs are reused, "
                             f"so they must be among headline.seeds {list(self.seeds)}")
        headline = self.config.headline.variants
        labels = list(dict.fromkeys(label for setting in self.settings for label in self.variants(setting)
                                    if not (reuse and label in headline)))
        trained = self._train("ablation", labels, tuple(seeds), iterations)
        if reuse:
            retrained = pd.read_csv(self.reports / "retrain" / "runs.csv")
            trained = pd.concat([retrained[retrained.seed.isin(seeds)], trained], ignore_index=True)
        self.budget_sweep()
        save_provenance(self, "ablation", time.perf_counter() - start)  # the step's clock covers the budget sweep
        return write_csv(trained, self.reports / "ablation" / "ablation.csv")

    def budget_sweep(self) -> pd.DataFrame:
        """The backbone (first headline seed) trained at each of ``ablation.budgets`` iterations, each a whole
        schedule of its own length, beside the headline's runs (every seed) at the training budget:
        ``ablation/budget.csv`` (final validation PSNR per budget and seed) and ``ablation/budget_curves.csv``.

        Why: under a cosine schedule one run's curve flattens because its learning rate reaches 0, so it cannot
        say what a longer run would reach; the end points of whole schedules of several lengths can."""
        budgets = [b for b in self.config.ablation.budgets if b != self.config.train.iterations]
        if not budgets:
            return pd.DataFrame()
        rows, curves = [], []
        for budget in budgets:
            fitted, drawn = self._fit(f"ablation/budget/it{budget}", ["backbone"], self.seeds[:1], budget)
            rows += fitted
            curves += drawn
        retrained = pd.read_csv(self.reports / "retrain" / "runs.csv")
        frame = pd.concat([pd.DataFrame(rows).assign(source="ablation"),
                           retrained[retrained.variant == "backbone"].assign(source="retrain")], ignore_index=True)
        frame = frame.sort_values(["setting", "iterations", "seed"], ignore_index=True)
        write_csv(pd.concat(curves, ignore_index=True), self.reports / "ablation" / "budget_curves.csv")
        return write_csv(frame, self.reports / "ablation" / "budget.csv")

    def frontier(self) -> pd.DataFrame:
        """The accuracy-against-keys frontier (``frontier`` section): every point of ``frontier_specs``,
        every seed of ``frontier.seeds``, a whole schedule per budget of ``frontier.budgets`` (``frontier/runs.csv``,
        ``frontier/curves.csv`` with the gate diagnostics while training), then ``score_frontier`` and
        ``frontier_keys``."""
        frontier = self.config.frontier
        if not self.settings or not frontier.enabled:
            return self.skip("frontier")
        start = time.perf_counter()
        rows, curves = [], []
        labels = list(dict.fromkeys(label for setting in self.settings for label in self.frontier_points(setting)))
        unknown = sorted(set(frontier.long_points) - set(labels))
        if unknown:
            raise ValueError(f"frontier.long_points: {unknown} are not frontier points; expected some of {labels}")
        for index, budget in enumerate(frontier.budgets):
            iterations = budget or self.config.train.iterations
            fitted, drawn = self._fit(f"frontier/it{iterations}", labels if index == 0 else list(frontier.long_points),
                                      frontier.seeds, iterations, self.frontier_points, frontier_overrides(self.config))
            rows += fitted
            curves += [frame.assign(iterations=iterations) for frame in drawn]
        write_csv(pd.concat(curves, ignore_index=True) if curves else pd.DataFrame(), self.reports / "frontier" / "curves.csv")
        write_csv(pd.DataFrame(rows), self.reports / "frontier" / "runs.csv")
        table = self.score_frontier()
        self.frontier_keys()
        save_provenance(self, "frontier", time.perf_counter() - start)
        return table

    def score_frontier(self) -> pd.DataFrame:
        """Every run of ``frontier/runs.csv`` on each of ``frontier.test_sets`` (``score_frontier_run``):
        ``frontier/frontier.csv``, one row per run and test set. Runs again on the saved checkpoints alone."""
        runs = pd.read_csv(self.reports / "frontier" / "runs.csv")
        rows = []
        for run in runs.to_dict(orient="records"):
            rows += self.score_frontier_run(run, self.frontier_points(run["setting"])[run["variant"]])
        return write_csv(pd.DataFrame(rows), self.reports / "frontier" / "frontier.csv")

    def frontier_keys(self) -> None:
        """What the gates of every ACLA point (first seed, the longest budget it was trained at) did on the first image
        of each of ``frontier.key_sets``: ``frontier/keys/<point>/<set>/`` (``acla.study.keys.key_maps_report``)."""
        frontier = self.config.frontier
        budgets = [budget or self.config.train.iterations for budget in frontier.budgets]
        for setting in self.settings:
            for label, spec in self.frontier_points(setting).items():
                if spec.attention != "acla":
                    continue
                iterations = max(budgets[1:]) if label in frontier.long_points and len(budgets) > 1 else budgets[0]
                checkpoint = self.run_dir(f"frontier/it{iterations}", setting, label, frontier.seeds[0]) / "last.pt"
                model, _ = load_model(checkpoint, spec)
                for set_name in frontier.key_sets:
                    key_maps_report(model.to(self.device), setting, set_name,
                                    self.reports / "frontier" / "keys" / slug(label) / set_name,
                                    data_root=self.data_root, seed=self.run_config(setting).train.seed,
                                    verify=self.run_config(setting).data.verify)

    def score_frontier_run(self, run: dict, spec: ModelSpec) -> list[dict]:
        """One trained frontier run on each test set: PSNR/SSIM (``validate``'s scoring), open keys per query per
        ACLA module over the set's images, and inference GFLOPs with closed keys skipped."""
        model, _ = load_model(self.runs / run["checkpoint"], spec)
        model = model.to(self.device).eval()
        task = parse_task(run["setting"])
        config = self.run_config(run["setting"])
        keys_per_query = {block: module.keys_per_query for block, module in sampled_modules(model).items()}
        input_shape = (1, task.channels, *self.config.efficiency.input_size)
        counted = inference_flops(model, input_shape)  # every key charged; the open keys depend on the test set
        rows = []
        for name in self.config.frontier.test_sets:
            image_set = open_set(name, self.data_root, verify=config.data.verify, crop=config.evaluate.crop)
            tally = OpenKeyTally(gated_modules(model))
            psnr, ssim = validate(model, task, image_set, Distributed(device=self.device), config.train.seed, tally)
            stats = tally.statistics()
            open_keys = {block: stats.get(f"gates/block{block}/open_mean", float(keys)) for block, keys
                         in keys_per_query.items()}
            flops = counted - closed_key_flops(model, input_shape, open_keys)
            rows.append({**{k: run[k] for k in ("setting", "variant", "seed", "attention", "num_keys", "iterations")},
                         "departures": run.get("departures") if isinstance(run.get("departures"), str) else "",
                         "key_budget_weight": spec.key_budget_weight if spec.attention == "acla" else float("nan"),
                         "key_budget": run.get("key_budget") if isinstance(run.get("key_budget"), str) else "",
                         "budget_target": run.get("budget_target", float("nan")),
                         "set": image_set.label, "psnr": psnr, "ssim": ssim, "val_psnr": run["val_psnr"],
                         "open_keys": float(np.mean(list(open_keys.values()))) if open_keys else 0.0,
                         "keys_per_query": float(np.mean(list(keys_per_query.values()))) if keys_per_query else 0.0,
                         "open_keys_by_block": " ".join(f"{b}:{v:.2f}/{keys_per_query[b]}" for b, v in open_keys.items()),
                         "mode_share_by_block": " ".join(f"{b}:{stats[f'gates/block{b}/mode_share']:.3f}" for b
                                                         in open_keys if f"gates/block{b}/mode_share" in stats),
                         "adaptive_modules": sum(adaptive(stats, block, keys_per_query[block]) for block in open_keys),
                         "modules": len(open_keys),
                         "mode_share_min": min((v for k, v in stats.items() if k.endswith("mode_share")), default=float("nan")),
                         "mode_share_max": max((v for k, v in stats.items() if k.endswith("mode_share")), default=float("nan")),
                         "gflops": flops / 1e9, "flops_input": "x".join(map(str, self.config.efficiency.input_size)),
                         "seconds": run["seconds"]})
        return rows

    # ---------------------------------------------------------------------------------- evaluation
    def model(self, setting: str, label: str, seed: int | None = None, step: str = "retrain") -> torch.nn.Module:
        """A trained variant (of ``seed``, default the first headline seed) on the study's device, in eval mode."""
        seed = self.seeds[0] if seed is None else seed
        model, _ = load_model(self.run_dir(step, setting, label, seed) / "last.pt", self.variants(setting)[label])
        return model.to(self.device).eval()

    @property
    def device(self) -> torch.device:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")

    def test_sets(self, setting: str) -> list[str]:
        """The sets ``evaluate`` scores: ``evaluate.test_sets``, else the task's benchmarks in the data root."""
        from acla.engine.evaluate import test_sets

        return list(self.run_config(setting).evaluate.test_sets) or test_sets(parse_task(setting), self.data_root)

    def explain(self, out: Path, *, trained: bool) -> dict | None:
        """``01_module``: ACLA's sampled keys and open-key counts on the first test image of the first setting,
        from the retrained model (``trained``) or a fresh tiny-size one with modules after blocks 2 and 4;
        writes ``open_keys.csv``, ``sampled_keys.csv``, ``input.png``, ``module_keys.png`` and, like every step,
        ``provenance.json`` to ``out``. None when the search kept no ACLA module."""
        from acla.study.figures import sampled_keys
        from acla.study.keys import key_report

        start = time.perf_counter()
        setting = self.settings[0]
        config = self.run_config(setting)
        # the search kept no ACLA module, or the headline trains none (a profile whose frontier trains the ACLAs)
        no_module = trained and not ("acla" in self.variants(setting) and "acla" in self.config.headline.variants)
        summary = None
        if not no_module:
            if trained:
                model = self.model(setting, "acla")
            else:
                model = ModelSpec(setting, config.model.backbone, "acla", (2, 4), num_keys=config.model.num_keys).build()
            summary = key_report(model.to(self.device), setting, self.test_sets(setting)[0], out,
                                 data_root=self.data_root, crop=config.evaluate.crop or 96, seed=config.train.seed,
                                 verify=config.data.verify)
            summary |= {"figure": str(sampled_keys(out, out / "module_keys.png"))}
        save_provenance(self, "module", time.perf_counter() - start, folder=out, skipped=no_module)
        return summary

    def evaluate(self) -> pd.DataFrame:
        """The classical rows and every headline variant and seed on every test set (``scores.csv``, one row
        per seed); crops of the first seed; ACLA's keys on one image."""
        from acla.engine.evaluate import Inference, evaluate
        from acla.study.keys import key_report

        if not self.settings:
            return self.skip("evaluate")
        start = time.perf_counter()
        rows = []
        out = self.reports / "evaluate"
        for setting in self.settings:
            config = self.run_config(setting)
            sets = self.test_sets(setting)
            rows += classical_scores(setting, sets, self.data_root, config.evaluate.crop, config.train.seed,
                                     config.data.verify, out / setting, config.evaluate.saved_crops)
            inference = Inference(config.evaluate.tile, config.evaluate.overlap, config.evaluate.self_ensemble)
            for label in self.config.headline.variants:
                if label not in self.variants(setting):
                    continue
                for seed in self.seeds:
                    folder = out / setting / slug(label) / ("" if seed == self.seeds[0] else f"seed{seed}")
                    mean = evaluate(self.model(setting, label, seed), setting, folder, data_root=self.data_root,
                                    sets=sets, inference=inference, seed=config.train.seed,
                                    crops=config.evaluate.saved_crops if seed == self.seeds[0] else 0,
                                    verify=config.data.verify, crop=config.evaluate.crop, device=self.device)
                    rows += [{"setting": setting, "method": label, "seed": seed, "set": r["set"], "psnr": r["psnr"],
                              "ssim": r["ssim"], "n_images": r["n_images"]} for r in mean.to_dict(orient="records")]
            if "acla" in self.variants(setting) and "acla" in self.config.headline.variants:  # a trained headline ACLA
                key_report(self.model(setting, "acla"), setting, sets[0], out / setting / "keys", data_root=self.data_root,
                           crop=config.evaluate.crop, seed=config.train.seed, verify=config.data.verify)
        save_provenance(self, "evaluate", time.perf_counter() - start)
        scores = write_csv(pd.DataFrame(rows), out / "scores.csv")
        spread = seed_spread(scores, ["setting", "set", "method"], ["psnr", "ssim"])
        metrics = {setting: {f"{r.set} | {r.method}": {"psnr": r.psnr_mean, "psnr_std": _json_number(r.psnr_std),
                                                       "ssim": r.ssim_mean, "n_seeds": r.n_seeds}
                             for r in group.itertuples(index=False)}
                   for setting, group in spread.groupby("setting")}
        atomic_write_text(self.metrics_file, json.dumps(metrics, indent=2, allow_nan=False) + "\n")
        return scores

    @property
    def metrics_file(self) -> Path:
        """``reports/metrics/<profile>/<task>.json`` (beside ``reports/study/<profile>/<task>``): the evaluation's
        PSNR/SSIM over seeds, for ``dvc metrics show``."""
        return self.reports.parents[2] / "metrics" / self.reports.parent.name / f"{self.name}.json"

    # ---------------------------------------------------------------------------------- efficiency
    def efficiency(self) -> pd.DataFrame:
        """Parameters, FLOPs, peak memory and median latency of every variant at one input size."""
        from acla.engine.efficiency import profile

        if not self.settings:
            return self.skip("efficiency")
        start = time.perf_counter()
        rows = []
        device = self.device
        for setting in self.settings:
            task = parse_task(setting)
            shape = (1, task.channels, *self.config.efficiency.input_size)
            for label, spec in self.variants(setting).items():
                torch.manual_seed(0)
                result = profile(spec.build(), shape, device=device, repeats=self.config.efficiency.repeats)
                rows.append({"setting": setting, "variant": label, **describe(spec), "params": result.params,
                             "flops": result.flops, "peak_memory_bytes": result.peak_memory_bytes,
                             "latency_s": result.latency_s, "device": result.device,
                             "input": "x".join(map(str, shape))})
        save_provenance(self, "efficiency", time.perf_counter() - start)
        return write_csv(pd.DataFrame(rows), self.reports / "efficiency" / "efficiency.csv")


def timed(work, *args, **kwargs) -> tuple:
    """``work``'s result and its seconds."""
    start = time.perf_counter()
    return work(*args, **kwargs), time.perf_counter() - start


def train_run(runs_root: Path, spec: ModelSpec, config, run_dir: Path, data_root: Path | None,
              progress: bool) -> dict:
    """One run of a training stage, wherever a launcher sends it (``acla.engine.launch``): copy a finished twin
    or resume/train, then what the stage's row needs."""
    start = time.perf_counter()
    twin = reuse_finished_run(runs_root, spec, config, run_dir)
    result = train(spec, config, run_dir, data_root=data_root, resume="auto", progress=progress)
    return {"val_psnr": result.last_psnr, "val_ssim": result.last_ssim, "seconds": time.perf_counter() - start,
            "checkpoint": Path(result.checkpoint).resolve(), "twin": twin.resolve() if twin else None}


def ready(runs_root: Path, spec: ModelSpec, config, run_dir: Path) -> bool:
    """The run finished before, here or in a twin: the stage's own process reads it back, nothing is submitted."""
    return finished_here(spec, config, run_dir) or finished_twin(runs_root, spec, config, run_dir) is not None


def classical_scores(setting: str, sets: list[str], data_root: Path | None, crop: int, seed: int,
                     verify: bool, out: Path | None = None, saved_crops: int = 0) -> list[dict]:
    """The classical methods of ``setting`` on exactly the images (and crops) the networks see; the
    ground truth's and the classical outputs' visual crops go beside the networks' (``out/<method>/crops``)."""
    from acla.engine.evaluate import centre, save_png
    from acla.study.classical import score_set

    task = parse_task(setting)
    rows = []
    for set_name in sets:
        image_set = open_set(set_name, data_root, verify=verify, crop=crop)

        def save_crops(index: int, name: str, target: np.ndarray, outputs: dict[str, np.ndarray],
                       set_name: str = set_name) -> None:
            if out is not None and index < saved_crops:
                for method, output in {"ground truth": target, **outputs}.items():
                    save_png(out / slug(method) / "crops" / f"{set_name}_{name}.png", centre(output, 96))

        for method, values in score_set(image_set, task, seed, save_crops).items():
            rows.append({"setting": setting, "method": method, "set": image_set.label,
                         "psnr": float(np.mean([v[0] for v in values])), "ssim": float(np.mean([v[1] for v in values])),
                         "n_images": len(values)})
    return rows


def open_task(task: str, params: str | Path = "params.yaml", *, profile: str | None = None,
              reports: str | Path = "reports/study", runs: str | Path = "runs", data_root: str | None = None,
              progress: bool = True) -> TaskStudy:
    """The entry point of the notebooks and stages: ``open_task("sr", profile="ci")``.

    ``profile`` of None or "" means the file's own ``profile``; an unknown task is refused by name. Results go
    to ``<reports>/<profile>/<task>`` and checkpoints to ``<runs>/<profile>/<task>``, so profiles never mix.
    """
    study = load_study(params, profile or None)
    if task not in study.tasks:
        raise ValueError(f"task {task!r} is not one of {sorted(study.tasks)} (params file {params})")
    root = resolve_data_root(data_root, study.data.root)
    return TaskStudy(task, study, Path(reports) / study.profile / task, Path(runs) / study.profile / task, root,
                     progress)


def _json_number(value: float) -> float | None:
    """JSON has no NaN: a standard deviation of one seed is written as null."""
    return None if math.isnan(value) else value


def save_provenance(task: TaskStudy, step: str, wall_seconds: float, folder: Path | None = None,
                    skipped: bool | None = None, places: dict[str, str] | None = None) -> None:
    """``<step>/provenance.json`` (or in ``folder``): what was run (profile, device, torch, commit, date, wall time,
    data root, settings, training, seeds, the launcher and where each run ran) and never a path of the machine; the
    report labels its rows with it. ``skipped``: the step had nothing to do (default: the profile lists no setting
    for the task). ``places``: run -> where it ran (default: the runs trained since the last provenance saved)."""
    ran_on = dict(task.places if places is None else places)
    task.places.clear()
    info = {"task": task.name, "step": step, "skipped": not task.settings if skipped is None else skipped,
            **run_record(task.study.profile, task.data_root, wall_seconds, task.device),
            "settings": list(task.settings), "seeds": list(task.seeds),
            "headline": list(task.config.headline.variants), "train": dataclasses.asdict(task.config.train),
            "model": dataclasses.asdict(task.config.model), "search": dataclasses.asdict(task.config.search),
            "launcher": launcher_from_environment().kind, "ran_on": ran_on}
    folder = task.reports / step if folder is None else Path(folder)
    atomic_write_text(folder / "provenance.json", json.dumps(info, indent=2, default=str) + "\n")
