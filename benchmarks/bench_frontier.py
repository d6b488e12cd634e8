"""Benchmark (h): CPU latency of a profile's trained frontier points, each with the keys its gates close skipped.

FLOPs with closed keys skipped are counted in the frontier's table; whether they become time depends on the path.
This loads every point of a profile's frontier (first seed, the longest training it had: the backbone, CLA at each K,
ACLA under each key-budget form) and times them on a real test image's degraded input (the first image of
``--set``), so the trained gates open what they open on images, not on noise. Eval mode, no autograd, channels-last
(the fastest layout of (f)), the fused C++ walk (eager inference gathers the open keys only), interleaved rounds,
each point against the backbone's call of the same round. It also records the keys each point opens per query on
that input and the FLOPs of that input with its closed keys skipped (the frontier table's count). It needs the
frontier's checkpoints, so ``python -m benchmarks`` does not run it.
Usage: ``ACLA_DATA=... python -m benchmarks.bench_frontier --profile cpu-budget-long [--set B100] [--repeats 15]``.
"""

from __future__ import annotations

import pandas as pd
import torch

from acla.data import open_set
from acla.engine.efficiency import closed_key_flops, inference_flops
from acla.engine.gates import gated_modules, sampled_modules
from acla.engine.train import load_model
from acla.images import network_input
from acla.study.budget import point_settings
from acla.study.steps import open_task
from acla.study.tables import variant_label
from acla.tasks import parse_task
from benchmarks.common import (
    MEMORY_FORMATS,
    against_baseline,
    device_name,
    inference_step,
    interleaved_samples,
    parse_trained,
    trained_arguments,
    write_csv,
)

MODE = "eager, channels-last"


def degraded_input(setting: str, set_name: str, data_root, seed: int) -> torch.Tensor:
    """The network input of ``set_name``'s first image, degraded as the benchmark's test pairs are."""
    task = parse_task(setting)
    image_set = open_set(set_name, data_root)
    _, degraded = task.benchmark_pair(image_set.read(0), set_name, image_set.image_names()[0], seed)
    return network_input(degraded, task.channels)[None]


def run(task_name: str, profile: str, runs: str, set_name: str, repeats: int) -> pd.DataFrame:
    study = open_task(task_name, "params.yaml", profile=profile, runs=runs, progress=False)
    trained = pd.read_csv(study.reports / "frontier" / "runs.csv")
    setting = str(trained.setting.iloc[0])
    longest = trained[(trained.setting == setting) & (trained.seed == study.config.frontier.seeds[0])]
    longest = longest.sort_values("iterations").groupby("variant", sort=False).last().reset_index()
    forms = point_settings(trained).set_index("variant")
    points = study.frontier_points(setting)
    memory_format = MEMORY_FORMATS[MODE]
    x = degraded_input(setting, set_name, study.data_root, study.run_config(setting).train.seed)
    x = x.contiguous(memory_format=memory_format)
    models, steps = {}, {}
    for run_row in longest.to_dict(orient="records"):
        model, _ = load_model(study.runs / run_row["checkpoint"], points[run_row["variant"]])
        models[run_row["variant"]] = model.eval().to(memory_format=memory_format)
        steps[run_row["variant"]] = inference_step(models[run_row["variant"]], x)
    if "backbone" not in steps:
        raise ValueError(f"profile {profile}: its frontier has no backbone point to time the others against")
    samples = interleaved_samples(steps, torch.device("cpu"), repeats)
    rows = []
    for variant, step in steps.items():
        step()  # the open-key counts of this input, on the path inference takes
        modules = sampled_modules(models[variant])
        opened = {block: float(module.open_keys) for block, module in modules.items()}
        gated = {block: opened[block] for block in gated_modules(models[variant])}
        shape = tuple(x.shape)
        flops = inference_flops(models[variant], shape) - closed_key_flops(models[variant], shape, gated)
        form = forms.loc[variant] if variant in forms.index else None
        rows.append({"point": variant_label(variant), "variant": variant, "attention": points[variant].attention,
                     "budget": "" if form is None else form["form"],
                     "target": float("nan") if form is None else form["target"],
                     "tau": "" if form is None else form["tau"],
                     "iterations": int(longest.set_index("variant").loc[variant, "iterations"]),
                     "open_keys": sum(opened.values()) / len(opened) if opened else 0.0,
                     "open_keys_by_block": " ".join(f"{b}:{v:.2f}/{modules[b].keys_per_query}"
                                                    for b, v in opened.items()),
                     "gflops": flops / 1e9, **against_baseline(samples, variant, "backbone"), "mode": MODE,
                     "setting": setting, "profile": profile, "input": f"{set_name}, first image "
                     f"({x.shape[-1]}x{x.shape[-2]})", "device": device_name(torch.device("cpu"))})
        print(rows[-1], flush=True)
    return pd.DataFrame(rows)


def main() -> None:
    parser = trained_arguments(__doc__, profile="cpu-budget-long", repeats=15, input_size=False)
    parser.add_argument("--task", default="sr", help="the task of the profile's frontier")
    parser.add_argument("--set", default="B100", help="the test set whose first image is the input")
    args = parse_trained(parser)
    frame = run(args.task, args.profile, args.runs, args.set, args.repeats)
    write_csv(frame, f"frontier_{args.profile}_cpu.csv")

if __name__ == "__main__":
    main()
