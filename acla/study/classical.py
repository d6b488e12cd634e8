"""The classical rows: what the degraded input (or a textbook method) scores on every benchmark.

``python -m acla.study.classical --data-root DIR --out FILE.csv`` writes one row per
(task, set, setting, method) with the mean PSNR/SSIM over the set's images:

* SR sets, x2/x3/x4: ``bicubic`` (MATLAB bicubic LR upscaled with MATLAB bicubic);
* denoising sets (gray or colour as the set is), each sigma: ``noisy input``;
* demosaicing sets: ``mosaiced input`` and ``bilinear`` demosaic;
* JPEG sets, each quality, on Y/gray: ``jpeg input``.

Without a data root it scores the bundled scikit-image test images, so the command runs anywhere.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm import tqdm

from acla.config import ClassicalConfig, ConfigError, load_config
from acla.data.sets import SETS, DataError, ImageSet, available_sets, open_set, resolve_data_root
from acla.files import atomic_write_text
from acla.provenance import run_record
from acla.tasks import Task

COLUMNS = ["task", "set", "setting", "method", "psnr", "ssim", "n_images"]
DEMOSAIC_SETS = ("McMaster", "Kodak24", "CBSD68", "Urban100")
BUNDLED_TEST = "bundled-test"


def tasks_for_set(name: str, config: ClassicalConfig) -> Iterator[Task]:
    """Every task this set is a benchmark for, at every setting of ``config``."""
    kinds = SETS[name].tasks if name in SETS else ("sr", "denoise", "demosaic", "jpeg")
    color = "gray" if name in SETS and SETS[name].color == "gray" else "rgb"
    if "sr" in kinds:
        yield from (Task("sr", scale=scale) for scale in config.scales)
    if "denoise" in kinds:
        yield from (Task("denoise", color=color, sigma=sigma) for sigma in config.sigmas)
    if "demosaic" in kinds and (name in DEMOSAIC_SETS or name not in SETS):
        yield Task("demosaic", bayer_pattern=config.bayer_pattern)
    if "jpeg" in kinds:
        yield from (Task("jpeg", color="gray", quality=quality) for quality in config.qualities)


def task_columns(task: Task) -> tuple[str, str]:
    """(task, setting) as written in the CSV."""
    if task.kind == "sr":
        return "sr", f"x{task.scale}"
    if task.kind == "denoise":
        return f"denoise_{'color' if task.color == 'rgb' else 'gray'}", f"sigma{task.sigma:g}"
    if task.kind == "demosaic":
        return "demosaic", task.bayer_pattern
    return "jpeg", f"q{task.quality}"


def score_set(image_set: ImageSet, task: Task, seed: int,
              visit: Callable[[int, str, np.ndarray, dict[str, np.ndarray]], None] | None = None,
              ) -> dict[str, list[tuple[float, float]]]:
    """Method -> per-image (PSNR, SSIM) of the task's classical methods over the set, in image order.
    ``visit(index, name, target, outputs)`` sees each image's outputs (the study saves visual crops)."""
    scores: dict[str, list[tuple[float, float]]] = {}
    for index, (image_name, image) in enumerate(image_set):
        target, degraded = task.benchmark_pair(image, image_set.name, image_name, seed)
        outputs = task.classical(degraded)
        for method, output in outputs.items():
            scores.setdefault(method, []).append(task.score(output, target))
        if visit is not None:
            visit(index, image_name, target, outputs)
    return scores


def _score_job(job: tuple[ImageSet, Task, int]) -> list[tuple[tuple[str, str, str, str], list[tuple[float, float]]]]:
    """``score_set`` for the process pool, keyed as the CSV's (task, set, setting, method)."""
    image_set, task, seed = job
    task_name, setting = task_columns(task)
    return [((task_name, image_set.label, setting, method), values)
            for method, values in score_set(image_set, task, seed).items()]


def classical_rows(image_sets: list[ImageSet], config: ClassicalConfig, *, progress: bool = True,
                   workers: int | None = None) -> pd.DataFrame:
    """One row per (task, set, setting, method). The (set, task) jobs run in ``workers`` processes (default:
    one per CPU core; numpy's resizing and SSIM are single-threaded); results are gathered in job order,
    so the rows do not depend on the worker count."""
    jobs = [(image_set, task, config.seed) for image_set in image_sets for task in tasks_for_set(image_set.name, config)]
    workers = max(1, min(len(jobs), workers or len(os.sched_getaffinity(0))))
    scores: dict[tuple[str, str, str, str], list[tuple[float, float]]] = {}
    with tqdm(total=len(jobs), desc="classical rows", unit="job", disable=not progress) as bar:
        pool = ProcessPoolExecutor(workers) if workers > 1 else None
        try:
            for results in (pool.map(_score_job, jobs) if pool else map(_score_job, jobs)):
                for key, values in results:
                    scores.setdefault(key, []).extend(values)
                bar.update()
        finally:
            if pool:
                pool.shutdown(cancel_futures=True)
    rows = [
        {"task": key[0], "set": key[1], "setting": key[2], "method": key[3],
         "psnr": float(np.mean([p for p, _ in values])), "ssim": float(np.mean([s for _, s in values])),
         "n_images": len(values)}
        for key, values in scores.items()
    ]
    return pd.DataFrame(rows, columns=COLUMNS)


def write_csv(frame: pd.DataFrame, path: str | Path) -> None:
    """Full precision (repr of each float), written atomically."""
    buffer = io.StringIO()
    frame.to_csv(buffer, index=False, float_format="%.17g")
    atomic_write_text(path, buffer.getvalue())


def run(data_root: Path | None, config: ClassicalConfig, out: Path, *, verify: bool = True, progress: bool = True,
        profile: str | None = None) -> pd.DataFrame:
    """Score every classical row into ``out``; with ``profile``, ``classical_provenance.json`` goes beside it
    (device, torch, commit, date, wall time: the study's front page sums the wall times)."""
    start = time.perf_counter()
    names = list(config.sets) or available_sets(data_root) or [BUNDLED_TEST]
    evaluable = [name for name in names if name not in SETS or SETS[name].tasks != ("train",)]
    image_sets = [open_set(name, data_root, verify=verify) for name in evaluable]
    frame = classical_rows(image_sets, config, progress=progress)
    write_csv(frame, out)
    if profile:
        record = {"step": "classical", **run_record(profile, data_root, time.perf_counter() - start, "cpu")}
        atomic_write_text(Path(out).with_name("classical_provenance.json"), json.dumps(record, indent=2) + "\n")
    return frame


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m acla.study.classical", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True, help="CSV to write (task,set,setting,method,psnr,ssim,n_images)")
    parser.add_argument("--data-root", help="data root (beats params.yaml data.root and $ACLA_DATA)")
    parser.add_argument("--config", help="params.yaml to read the classical section from (default: built-in defaults)")
    parser.add_argument("--profile", help="profile of --config to use (default: the file's `profile`)")
    parser.add_argument("--sets", nargs="+", help="only these sets (default: every evaluation set the data root holds)")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    args = parser.parse_args(argv)
    try:
        config = load_config(args.config, args.profile) if args.config else None
        classical = config.classical if config else ClassicalConfig()
        if args.sets:
            classical = ClassicalConfig(**{**classical.__dict__, "sets": tuple(args.sets)})
        root = resolve_data_root(args.data_root, config.data.root if config else None)
        frame = run(root, classical, Path(args.out), verify=config.data.verify if config else True,
                    progress=not args.no_progress)
    except (ConfigError, DataError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(frame.to_string(index=False, float_format=lambda value: f"{value:.4f}"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
