"""Two small experiments over the engine, for the smoke profile and beyond.

``chain``: search -> derive -> retrain from scratch -> evaluate, timed, for one task.
``seeds``: backbone vs ``cla`` vs ``acla`` (at the searched locations) at equal iterations over several
seeds, with the bicubic / degraded-input row of the same validation images beside them.

``python -m acla.study.experiments chain|seeds --task sr_x2 --out reports/smoke/sr_x2 [--seeds 0 1 2]``
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

from acla.config import Config, load_config
from acla.data import open_set
from acla.data.sets import resolve_data_root
from acla.engine.evaluate import evaluate
from acla.engine.search import search
from acla.engine.train import ModelSpec, load_model, train
from acla.files import atomic_write_text
from acla.tasks import parse_task


def chain(task: str, config: Config, out: Path, data_root: Path | None) -> dict:
    """Search, derive, retrain and evaluate; returns the timings and scores (also ``chain.json``)."""
    timings = {}
    start = time.perf_counter()
    description = search(task, config, out / "search", data_root=data_root)
    timings["search_s"] = time.perf_counter() - start
    spec = ModelSpec.from_arch(out / "search" / "arch.json")
    start = time.perf_counter()
    result = train(spec, config, out / "retrain", data_root=data_root)
    timings["retrain_s"] = time.perf_counter() - start
    start = time.perf_counter()
    model, _ = load_model(result.checkpoint, spec)
    mean = evaluate(model, task, out / "evaluate", data_root=data_root, seed=config.train.seed,
                    verify=config.data.verify)
    timings["evaluate_s"] = time.perf_counter() - start
    summary = {"task": task, "kept": description["insert"], "alpha_sigmoid": description["alpha_sigmoid"],
               "rule": description["rule"], **timings, "total_s": sum(timings.values()),
               "evaluation": mean.to_dict(orient="records")}
    atomic_write_text(out / "chain.json", json.dumps(summary, indent=2) + "\n")
    return summary


def degraded_baseline(task: str, config: Config, data_root: Path | None) -> tuple[float, float]:
    """The task's classical row on the validation set with the same seeds (bicubic, noisy input, bilinear
    demosaic or JPEG input: the last classical method of the task)."""
    task_object = parse_task(task)
    image_set = open_set(config.train.validation_set, data_root, verify=config.data.verify)
    scores = []
    for name, image in image_set:
        target, degraded = task_object.benchmark_pair(image, image_set.name, name, config.train.seed)
        scores.append(task_object.score(list(task_object.classical(degraded).values())[-1], target))
    psnr, ssim = np.mean(scores, axis=0)
    return float(psnr), float(ssim)


def seeds(task: str, config: Config, out: Path, data_root: Path | None, seed_list: list[int], insert) -> pd.DataFrame:
    """Backbone, cla and acla at equal iterations, several seeds; ``seeds.csv`` and ``seeds_summary.csv``."""
    rows = []
    for seed in seed_list:
        for attention in ("none", "cla", "acla"):
            model = dataclasses.replace(config.model, attention=attention, insert=insert if attention != "none" else "none")
            run_config = dataclasses.replace(config, model=model, train=dataclasses.replace(config.train, seed=seed))
            spec = ModelSpec.from_config(task, model)
            start = time.perf_counter()
            result = train(spec, run_config, out / f"{attention}_seed{seed}", data_root=data_root)
            rows.append({"task": task, "attention": attention, "insert": str(insert if attention != "none" else "none"),
                         "seed": seed, "iterations": config.train.iterations, "val_set": config.train.validation_set,
                         "psnr": result.last_psnr, "ssim": result.last_ssim, "seconds": time.perf_counter() - start})
            print(rows[-1], flush=True)
    frame = pd.DataFrame(rows)
    baseline_psnr, baseline_ssim = degraded_baseline(task, config, data_root)
    summary = frame.groupby("attention", sort=False).agg(
        psnr_mean=("psnr", "mean"), psnr_std=("psnr", "std"), ssim_mean=("ssim", "mean"), ssim_std=("ssim", "std"),
        seconds_mean=("seconds", "mean"), seeds=("seed", "count")).reset_index()
    summary["classical_psnr"] = baseline_psnr
    summary["classical_ssim"] = baseline_ssim
    summary["delta_vs_classical_db"] = summary["psnr_mean"] - baseline_psnr
    atomic_write_text(out / "seeds.csv", frame.to_csv(index=False, float_format="%.6f"))
    atomic_write_text(out / "seeds_summary.csv", summary.to_csv(index=False, float_format="%.6f"))
    return summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m acla.study.experiments", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("experiment", choices=("chain", "seeds"))
    parser.add_argument("--config", default="params.yaml")
    parser.add_argument("--profile")
    parser.add_argument("--task", required=True)
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--data-root")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--arch", help="seeds: take cla/acla locations from this arch.json (default: model.insert)")
    args = parser.parse_args(argv)
    config = load_config(args.config, args.profile)
    data_root = resolve_data_root(args.data_root, config.data.root)
    if args.experiment == "chain":
        print(json.dumps(chain(args.task, config, args.out, data_root), indent=2))
    else:
        insert = ModelSpec.from_arch(args.arch).insert if args.arch else config.model.insert
        print(seeds(args.task, config, args.out, data_root, args.seeds, insert).to_string(index=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
