"""What a profile costs before anyone spends it: ``python -m acla plan --profile paper --gpus 8 64``.

Every run the stages would train (the same enumeration as ``acla.study.steps``: search per setting, the
headline, the ablations and budget sweep, the frontier), each run's seconds per iteration, and from them the
GPU-hours (CPU-hours with ``--device cpu``) and the wall time on N devices.

Seconds per iteration are measured on one device and scaled to each run by forward FLOPs:

- a GPU: ``reports/gpu/<device>/learning/learning.csv`` (``python -m acla gpu-check``): whole training runs of the
  backbone and of +ACLA at the ``gpu`` profile's SR x2 batch and patch, data loading and validation included;
- the CPU: the ``cpu`` profile's headline runs (``reports/study/cpu/<task>/retrain/runs.csv``), per variant.

A run's time is the measured time of its kind (backbone, or attention: ACLA's for every attention variant) times
the ratio of its model's forward FLOPs at its input size to the measured model's. The ratio scales patch size,
backbone and attention alike; it is exact for neither (a small model on a GPU is bound by kernel launches, not
FLOPs), so every row says whether its time was measured (ratio 1) or scaled. The search's supernet carries a
module at every candidate block and is counted as such. Runs that a stage copies from a finished twin are counted
as trained (an upper bound). Evaluation is not counted.

The wall time takes the stage graph as two phases: every search first (each task's other stages wait for its
search), then every other run; within a phase, runs go longest first to the first free device (one device a run).
"""

from __future__ import annotations

import argparse
import heapq
from dataclasses import dataclass, replace
from pathlib import Path

import pandas as pd

from acla.config import Study, load_study
from acla.engine.efficiency import inference_flops
from acla.engine.train import ModelSpec
from acla.models.backbones import BACKBONES, insertion_locations
from acla.study.steps import frontier_specs, variant_specs
from acla.tasks import parse_task

GPU_MEASURES = "reports/gpu"
REFERENCE_SETTING = "sr_x2"  # gpu-check's learning part trains SR x2; the CPU reference is each task's own


@dataclass(frozen=True)
class PlannedRun:
    task: str
    stage: str
    setting: str
    label: str
    seed: int
    iterations: int
    spec: ModelSpec
    batch: int
    patch: int  # HR (clean) patch side
    search: bool = False


def input_side(setting: str, patch: int) -> int:
    """The network's input side for an HR patch: SR networks run at LR size."""
    return max(patch // parse_task(setting).scale, 1)


def planned_runs(study: Study) -> list[PlannedRun]:
    """Every run that the profile's training stages would train, in stage order."""
    runs: list[PlannedRun] = []
    for name, task in study.tasks.items():
        for setting in task.settings:
            config = study.run_config(setting, task).train
            # the search decides the places, not the count of runs: four modules stand in for what it keeps
            places = tuple(insertion_locations("four-stages", BACKBONES[task.model.backbone].num_blocks))
            stand_in = replace(ModelSpec.from_config(setting, task.model), insert=places)

            def add(stage: str, labels: dict[str, ModelSpec], seeds, iterations: int, search: bool = False) -> None:
                runs.extend(PlannedRun(name, stage, setting, label, seed, iterations, spec, config.batch_size,
                                       config.patch_size, search)
                            for label, spec in labels.items() for seed in seeds)

            add("search", {"supernet": stand_in}, [0], task.search.iterations, search=True)
            variants = variant_specs(task, setting, stand_in)
            add("retrain", {k: v for k, v in variants.items() if k in task.headline.variants}, task.headline.seeds,
                config.iterations)
            ablation_iterations = task.ablation.iterations or config.iterations
            reuse = ablation_iterations == config.iterations
            add("ablation", {k: v for k, v in variants.items() if not (reuse and k in task.headline.variants)},
                task.ablation.seeds or task.headline.seeds[:1], ablation_iterations)
            for budget in task.ablation.budgets:
                if budget != config.iterations:
                    add(f"ablation budget {budget}", {"backbone": variants["backbone"]}, task.headline.seeds[:1], budget)
            if task.frontier.enabled:
                points = frontier_specs(task, setting, stand_in)
                for index, budget in enumerate(task.frontier.budgets):
                    chosen = points if index == 0 else {k: points[k] for k in task.frontier.long_points}
                    add(f"frontier {budget or config.iterations}", chosen, task.frontier.seeds,
                        budget or config.iterations)
    return runs


_FLOPS: dict[tuple, int] = {}


def forward_flops(spec: ModelSpec, side: int, search: bool = False) -> int:
    """Forward FLOPs at ``side`` x ``side``; settings that differ only in noise level or quality share a count."""
    task = parse_task(spec.task)
    key = (replace(spec, task=""), task.kind, task.scale, task.color, side, search)
    if key not in _FLOPS:
        channels = 3 if task.color == "rgb" else 1
        _FLOPS[key] = inference_flops(spec.build(search=search), (1, channels, side, side))
    return _FLOPS[key]


def _kind(spec: ModelSpec) -> str:
    return "backbone" if spec.attention == "none" else "attention"


@dataclass(frozen=True)
class Measured:
    """A measured training iteration: its seconds, and the model and batch it was measured on."""

    seconds: float
    spec: ModelSpec
    batch: int
    patch: int
    source: str

    def per_iteration(self, run: PlannedRun) -> tuple[float, bool]:
        """Seconds per iteration of ``run``, and whether it was scaled from this measurement."""
        here = forward_flops(self.spec, input_side(self.spec.task, self.patch)) * self.batch
        there = forward_flops(run.spec, input_side(run.setting, run.patch), run.search) * run.batch
        return self.seconds * there / here, here != there


def gpu_measures(device_folder: Path, params: Path) -> dict[tuple[str, str], Measured]:
    """gpu-check's whole training runs (backbone and + ACLA), for every task: (task, kind) -> measurement."""
    table = pd.read_csv(device_folder / "learning" / "learning.csv").dropna(subset=["train_seconds"])
    gpu = load_study(params, "gpu")
    task = gpu.tasks[parse_task(REFERENCE_SETTING).kind]
    config = gpu.run_config(REFERENCE_SETTING, task).train
    backbone = ModelSpec(REFERENCE_SETTING, task.model.backbone)
    acla = ModelSpec.from_config(REFERENCE_SETTING, replace(task.model, insert="four-stages"))
    out = {}
    for kind, spec, pattern in (("backbone", backbone, r"^[^+]+$"), ("attention", acla, r"\+ ACLA")):
        rows = table[table.method.str.contains(pattern)]
        if rows.empty:
            raise ValueError(f"{device_folder / 'learning' / 'learning.csv'}: no finished {kind} run")
        row = rows.iloc[0]
        measured = Measured(float(row.train_seconds) / float(row.iterations), spec, config.batch_size,
                            config.patch_size, f"{device_folder.name}: {row.method}, {int(row.iterations)} it")
        out.update({(name, kind): measured for name in gpu.tasks})
    return out


def cpu_measures(reports: Path, params: Path) -> dict[tuple[str, str], Measured]:
    """The cpu profile's headline runs, per task and kind (the mean over seeds of seconds per iteration)."""
    cpu = load_study(params, "cpu")
    out = {}
    for name, task in cpu.tasks.items():
        path = reports / "study" / "cpu" / name / "retrain" / "runs.csv"
        if not path.is_file() or not task.settings:
            continue
        runs = pd.read_csv(path)
        runs = runs[runs.reused_from.isna() | (runs.reused_from == "")] if "reused_from" in runs else runs
        setting = task.settings[0]
        config = cpu.run_config(setting, task).train
        for kind, variant in (("backbone", "backbone"), ("attention", "acla")):
            rows = runs[(runs.variant == variant) & (runs.setting == setting)]
            if rows.empty:
                continue
            row = rows.iloc[0]
            spec = ModelSpec(setting, task.model.backbone, row.attention,
                             tuple(int(b) for b in str(row.insert).split()) if variant != "backbone" else "none")
            out[(name, kind)] = Measured(float((rows.seconds / rows.iterations).mean()), spec, config.batch_size,
                                         config.patch_size, f"cpu profile, {setting} {variant}")
    return out


def plan_table(runs: list[PlannedRun], measures: dict[tuple[str, str], Measured]) -> pd.DataFrame:
    rows = []
    for run in runs:
        measured = measures.get((run.task, _kind(run.spec))) or next(
            (m for (task, kind), m in measures.items() if kind == _kind(run.spec)), None)
        if measured is None:
            raise ValueError(f"no measured step time for a {_kind(run.spec)} run ({run.setting} {run.label})")
        seconds, scaled = measured.per_iteration(run)
        rows.append({"task": run.task, "stage": run.stage, "setting": run.setting, "variant": run.label,
                     "seed": run.seed, "iterations": run.iterations, "seconds_per_iteration": seconds,
                     "hours": seconds * run.iterations / 3600, "step_time": "scaled" if scaled else "measured",
                     "measured_on": measured.source})
    return pd.DataFrame(rows)


def projected_hours(params: Path, profile: str, measures: dict[tuple[str, str], Measured]) -> float:
    """The training hours that the plan projects for ``profile`` from ``measures`` (the front page's profile table
    puts them beside the measured wall time, from ``cpu_measures``)."""
    return float(plan_table(planned_runs(load_study(params, profile)), measures).hours.sum())


def wall_hours(table: pd.DataFrame, devices: int) -> float:
    """Searches first, then everything else; longest run first to the first free device within each phase."""
    total = 0.0
    for phase in (table[table.stage == "search"], table[table.stage != "search"]):
        free = [0.0] * min(devices, max(len(phase), 1))
        for hours in sorted(phase.hours, reverse=True):
            heapq.heappush(free, heapq.heappop(free) + hours)
        total += max(free)
    return total


def render(table: pd.DataFrame, profile: str, device: str, gpus: list[int], unit: str = "GPU") -> str:
    by_stage = (table.assign(stage=table.stage.str.split().str[0])
                .groupby(["task", "stage"], sort=False)
                .agg(runs=("hours", "size"), iterations=("iterations", "sum"), hours=("hours", "sum")).reset_index())
    lines = [f"profile {profile} on {device}: {len(table)} runs, {table.iterations.sum():,} iterations, "
             f"{table.hours.sum():,.1f} {unit}-hours",
             "", by_stage.to_string(index=False, formatters={"hours": "{:,.1f}".format, "iterations": "{:,}".format}),
             ""]
    lines += [f"wall time on {n:>3} {unit}{'s' if n > 1 else ''}: {wall_hours(table, n):,.1f} h" for n in gpus]
    sources = table.groupby(["measured_on", "step_time"]).size().reset_index(name="runs")
    lines += ["", "step times (seconds per iteration, measured on one device, scaled by forward FLOPs):",
              sources.to_string(index=False)]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m acla plan", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--profile", required=True, help="a profile of the params file (paper, gpu, cpu, ...)")
    parser.add_argument("--config", default="params.yaml", help="params file (default: params.yaml)")
    parser.add_argument("--gpus", type=int, nargs="+", default=[1, 8, 64], help="device counts for the wall time")
    parser.add_argument("--device", default="", help="a folder of reports/gpu (default: the first), or cpu")
    parser.add_argument("--reports", default="reports", help="reports folder holding the measurements")
    parser.add_argument("--csv", help="also write every planned run with its time to this CSV")
    args = parser.parse_args(argv)
    reports, params = Path(args.reports), Path(args.config)
    study = load_study(params, args.profile)
    if args.device == "cpu":
        measures, device = cpu_measures(reports, params), "the CPU of the cpu profile's runs"
    else:
        folders = sorted(p for p in (reports / "gpu").glob("*") if (p / "learning" / "learning.csv").is_file())
        chosen = [p for p in folders if p.name == args.device] if args.device else folders[:1]
        if not chosen:
            parser.error(f"--device {args.device!r}: expected cpu or one of {[p.name for p in folders]} "
                         f"(folders of {reports / 'gpu'} with learning/learning.csv)")
        measures, device = gpu_measures(chosen[0], params), chosen[0].name
    table = plan_table(planned_runs(study), measures)
    if args.csv:
        table.to_csv(args.csv, index=False)
    print(render(table, args.profile, device, args.gpus, "CPU" if args.device == "cpu" else "GPU"))
    return 0
