"""What the ACLA modules of a model did on one image: where they sampled keys, and how many they kept.

Hooks record each module's query map during an ordinary forward pass; the module's own
``sampling_positions`` (S1) and ``gates`` (S6)-(S7) are then evaluated on it, so the positions and
open/closed decisions are exactly those of inference (no re-implementation of the module).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from acla.data import open_set
from acla.engine.gates import sampled_modules
from acla.files import atomic_open, atomic_write_text
from acla.images import network_input, to_uint8
from acla.models.attention import SampledCrossLayerAttention
from acla.tasks import parse_task


def query_points(height: int, width: int, count: int = 4) -> list[tuple[int, int]]:
    """``count`` query pixels (y, x) spread over the map: the centres of a 2 x 2 (or n x n) grid of cells."""
    side = max(1, int(np.ceil(np.sqrt(count))))
    points = [(int((i + 0.5) * height / side), int((j + 0.5) * width / side)) for i in range(side) for j in range(side)]
    return points[:count]


@torch.no_grad()
def query_maps(model: torch.nn.Module, x: torch.Tensor) -> tuple[dict[int, SampledCrossLayerAttention],
                                                                   dict[int, torch.Tensor]]:
    """One inference pass of ``model`` (eval) on ``x``: its CLA/ACLA modules by block, and the query map each received
    (a forward pre-hook); each module's last-call statistics (``open_key_counts``) are then this pass's."""
    model.eval()
    modules = sampled_modules(model)
    queries: dict[int, torch.Tensor] = {}
    handles = [module.register_forward_pre_hook(lambda m, args, block=block: queries.__setitem__(block, args[0]))
               for block, module in modules.items()]
    try:
        model(x)
    finally:
        for handle in handles:
            handle.remove()
    return modules, queries


@torch.no_grad()
def inspect_keys(model: torch.nn.Module, x: torch.Tensor, points: list[tuple[int, int]] | None = None
                 ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(open-key counts per query and block, sampled keys of a few queries) for one input ``x`` (1, C, H, W).

    The first frame has one row per (block, number of open keys) with the number of queries; the second
    one row per (block, query, reference, key) with the key's position in pixels and whether it was open.
    """
    modules, queries = query_maps(model, x)
    counts, keys = [], []
    for block, module in modules.items():
        query = queries[block]
        references = model.references[block]
        per_query = module.open_key_counts[0].flatten().long().cpu() if module.adaptive else torch.full(
            (query.shape[-2] * query.shape[-1],), module.keys_per_query)
        histogram = torch.bincount(per_query, minlength=module.keys_per_query + 1)
        counts += [{"block": block, "open_keys": k, "queries": int(n), "keys_per_query": module.keys_per_query}
                   for k, n in enumerate(histogram.tolist()) if k > 0]
        positions = module.sampling_positions(query)[0].float().cpu()  # (H, W, R, K, 2) as (x, y)
        gates = module.gates(query)[0].cpu() if module.adaptive else torch.ones(module.keys_per_query, *query.shape[-2:])
        gates = gates.view(module.num_refs, module.num_keys, *query.shape[-2:])
        for y, x_ in points or query_points(*query.shape[-2:]):
            for r, layer in enumerate(references):
                for k in range(module.num_keys):
                    px, py = positions[y, x_, r, k].tolist()
                    keys.append({"block": block, "query_y": y, "query_x": x_, "reference_layer": layer, "key": k,
                                 "x": px, "y": py, "open": bool(gates[r, k, y, x_] > 0)})
    return pd.DataFrame(counts), pd.DataFrame(keys)


def key_report(model: torch.nn.Module, setting: str, set_name: str, out_dir: Path, *, data_root: Path | None,
               crop: int = 0, seed: int = 0, verify: bool = True) -> dict:
    """``open_keys.csv``, ``sampled_keys.csv``, the network input as ``input.png`` and a summary, for the
    first image of ``set_name``."""
    from acla.engine.evaluate import save_png

    task = parse_task(setting)
    image_set = open_set(set_name, data_root, verify=verify, crop=crop)
    name = image_set.image_names()[0]
    _, degraded = task.benchmark_pair(image_set.read(0), set_name, name, seed)
    device = next(model.parameters()).device
    counts, keys = inspect_keys(model, network_input(degraded, task.channels)[None].to(device))
    out_dir = Path(out_dir)
    atomic_write_text(out_dir / "open_keys.csv", counts.to_csv(index=False))
    atomic_write_text(out_dir / "sampled_keys.csv", keys.to_csv(index=False, float_format="%.4f"))
    save_png(out_dir / "input.png", to_uint8(degraded))
    mean = {str(block): float((group.open_keys * group.queries).sum() / group.queries.sum())
            for block, group in counts.groupby("block")} if len(counts) else {}
    summary = {"setting": setting, "image": f"{image_set.label}/{name}", "mean_open_keys": mean,
               "keys_per_query": {str(b): int(g.keys_per_query.iloc[0]) for b, g in counts.groupby("block")}}
    atomic_write_text(out_dir / "summary.json", json.dumps(summary, indent=2) + "\n")
    return summary


def query_kinds(image: np.ndarray, margin: int = 12) -> dict[str, tuple[int, int]]:
    """One query pixel (y, x) of each kind on ``image`` (uint8, (H, W[, C])), at least ``margin`` pixels from the
    border: ``edge`` where the luminance gradient is largest; ``texture`` where the mean gradient over a 7 x 7 window
    is largest among windows without a strong step (their largest gradient below the image's 95th percentile):
    many moderate changes; ``flat`` where the 5 x 5 local standard deviation is smallest."""
    gray = luminance(image)
    gy, gx = np.gradient(gray)
    gradient = np.hypot(gx, gy)
    local_std = local_activity(image)
    gradient_windows = windows(gradient, 7)
    inside = np.zeros_like(gray, dtype=bool)
    inside[margin:-margin, margin:-margin] = True
    pick = lambda score: np.unravel_index(np.argmax(np.where(inside, score, -np.inf)), gray.shape)  # noqa: E731
    no_step = gradient_windows.max(axis=(-2, -1)) < np.percentile(gradient[inside], 95)
    points = {"edge": pick(gradient), "texture": pick(np.where(no_step, gradient_windows.mean(axis=(-2, -1)), -np.inf)),
              "flat": pick(-local_std)}
    return {kind: (int(y), int(x)) for kind, (y, x) in points.items()}


@torch.no_grad()
def key_maps_report(model: torch.nn.Module, setting: str, set_name: str, out_dir: Path, *, data_root: Path | None,
                    image_index: int = 0, seed: int = 0, verify: bool = True) -> dict:
    """What each ACLA module of ``model`` did on one image of ``set_name``: ``open_key_maps.npz`` (block -> (H, W)
    open keys of every query pixel, inference's gates), ``zoomed_keys.csv`` (for one edge, one texture and one flat
    query: every key's grid position p + p_k and learned position p + p_k + dp (S1), its reference and whether it
    is open), ``input.png`` (the network input) and ``summary.json``."""
    from acla.engine.evaluate import save_png

    task = parse_task(setting)
    image_set = open_set(set_name, data_root, verify=verify)
    name = image_set.image_names()[image_index]
    _, degraded = task.benchmark_pair(image_set.read(image_index), set_name, name, seed)
    device = next(model.parameters()).device
    modules, queries = query_maps(model, network_input(degraded, task.channels)[None].to(device))
    points = query_kinds(degraded)
    maps, keys = {}, []
    for block, module in modules.items():
        query = queries[block]
        maps[str(block)] = (module.open_key_counts[0].cpu().numpy() if module.adaptive else
                            np.full(query.shape[-2:], module.keys_per_query))
        positions = module.sampling_positions(query)[0].float().cpu()  # (H, W, R, K, 2) as (x, y)
        grid = module.grid.float().cpu()  # (K, 2) p_k
        gates = module.gates(query)[0].cpu() if module.adaptive else torch.ones(module.keys_per_query, *query.shape[-2:])
        gates = gates.view(module.num_refs, module.num_keys, *query.shape[-2:])
        for kind, (y, x) in points.items():
            for r, layer in enumerate(model.references[block]):
                for k in range(module.num_keys):
                    px, py = positions[y, x, r, k].tolist()
                    keys.append({"block": block, "kind": kind, "query_y": y, "query_x": x, "reference_layer": layer,
                                 "key": k, "grid_x": x + float(grid[k, 0]), "grid_y": y + float(grid[k, 1]),
                                 "x": px, "y": py, "open": bool(gates[r, k, y, x] > 0),
                                 "keys_per_query": module.keys_per_query})
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    with atomic_open(out_dir / "open_key_maps.npz", "wb") as handle:
        np.savez_compressed(handle, **maps)
    atomic_write_text(out_dir / "zoomed_keys.csv", pd.DataFrame(keys).to_csv(index=False, float_format="%.4f"))
    save_png(out_dir / "input.png", to_uint8(degraded))
    summary = {"setting": setting, "image": f"{image_set.label}/{name}", "queries": points,
               "mean_open_keys": {block: float(m.mean()) for block, m in maps.items()},
               "keys_per_query": {str(b): int(m.keys_per_query) for b, m in modules.items()}}
    atomic_write_text(out_dir / "summary.json", json.dumps(summary, indent=2) + "\n")
    return summary


def luminance(image: np.ndarray) -> np.ndarray:
    """The channel mean of ``image`` (uint8, (H, W[, C])) as float64: the brightness the query kinds are found on."""
    return image.astype(np.float64).mean(axis=-1) if image.ndim == 3 else image.astype(np.float64)


def windows(values: np.ndarray, side: int) -> np.ndarray:
    """Every ``side`` x ``side`` window of ``values`` (H, W) centred on a pixel, reflected at the border."""
    return np.lib.stride_tricks.sliding_window_view(np.pad(values, side // 2, mode="reflect"), (side, side))


def local_activity(image: np.ndarray, side: int = 5) -> np.ndarray:
    """The standard deviation of the luminance over a ``side`` x ``side`` window around each pixel (reflected at the
    border): how much the image changes where a query sits (``query_kinds``' flatness measure)."""
    return windows(luminance(image), side).std(axis=(-2, -1))


def open_keys_against_activity(folder: Path) -> dict[str, float]:
    """Block -> Spearman correlation, over the query pixels of ``key_maps_report``'s image (``folder``), between the
    keys a query keeps open and the local activity of the network input there: positive when busy areas keep more
    keys ("more where it pays"), near 0 when the gates ignore the image; NaN where every query keeps as many."""
    from PIL import Image

    maps = np.load(Path(folder) / "open_key_maps.npz")
    activity = local_activity(np.asarray(Image.open(Path(folder) / "input.png")))
    found = {}
    for block in maps.files:
        counts = maps[block]
        if counts.shape != activity.shape or np.all(counts == counts.flat[0]):
            found[block] = float("nan")
            continue
        found[block] = float(pd.Series(counts.ravel()).corr(pd.Series(activity.ravel()), method="spearman"))
    return found

