"""Insertion-location search ((S9), docs/method.md#s9) and the derived architecture.

Every candidate location j (after every G blocks) holds an attention module whose residual is scaled
by sigmoid(alpha_j). Weights and alphas are updated alternately, first order (DARTS style), on two
disjoint halves of the training images: the weights on split A with the reconstruction loss and the
key budget (S8), the alphas on split B with

    (S9)  L_rec + lambda_a * sum_j sigmoid(alpha_j) cost_j / sum_j cost_j,

cost_j being module j's FLOPs at the training patch size. ``derive`` keeps the locations with
sigmoid(alpha_j) > threshold (or the top M), and writes ``arch.json``, which ``ModelSpec.from_arch``
reads back for retraining from scratch.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from tqdm import tqdm

from acla.config import Config
from acla.data import PatchDataset
from acla.engine.efficiency import count_flops
from acla.engine.train import ModelSpec, attention_modules, load_images, temperature
from acla.files import atomic_save_figure, atomic_write_text
from acla.models.backbones import BACKBONES, RestorationNet
from acla.tasks import parse_task


def candidate_locations(num_blocks: int, every: int) -> list[int]:
    return list(range(every, num_blocks + 1, every))


def module_costs(model: RestorationNet, input_shape: tuple[int, int]) -> dict[int, int]:
    """FLOPs of each attention module at the feature size of a training patch, counted on the reference path
    (the maths of (S1)-(S5)): the fused walk folds W_v into W_z and would give other costs where its kernel builds than
    where it does not, and so another search."""
    height, width = input_shape
    channels = model.head.out_channels
    costs = {}
    for location, refs in model.references.items():
        module = model.attention[str(location)]
        query = torch.zeros(1, channels, height, width)
        fast = getattr(module, "fast", None)
        if fast is not None:
            module.fast = False
        try:
            with torch.no_grad():
                costs[location] = count_flops(lambda: module(query, [query] * len(refs)))
        finally:
            if fast is not None:
                module.fast = fast
    return costs


def split_images(images: list[np.ndarray], labels: list[str]) -> tuple[tuple[list, list], tuple[list, list]]:
    """Two disjoint image splits (alternate images): A trains the weights, B the alphas."""
    if len(images) < 2:
        raise ValueError(f"the search needs at least 2 training images for its two splits, got {len(images)}")
    return (images[0::2], labels[0::2]), (images[1::2], labels[1::2])


def infinite(dataset: PatchDataset, batch: int):
    epoch = 0
    while True:
        dataset.set_epoch(epoch)
        for start in range(0, len(dataset) - batch + 1, batch):
            samples = [dataset[i] for i in range(start, start + batch)]
            yield torch.stack([s[0] for s in samples]), torch.stack([s[1] for s in samples])
        epoch += 1


def search(task_name: str, config: Config, out_dir: str | Path, *, data_root: Path | None = None,
           progress: bool = True) -> dict:
    """Run the search; writes ``alpha.csv`` (trajectory), ``alpha.png`` and ``arch.json``."""
    settings, training = config.search, config.train
    if config.model.attention == "none":
        raise ValueError("model.attention is 'none': there is nothing to place")
    out_dir = Path(out_dir)
    task = parse_task(task_name)
    candidates = candidate_locations(BACKBONES[config.model.backbone].num_blocks, settings.candidate_every)
    spec = replace(ModelSpec.from_config(task_name, config.model), insert=tuple(candidates))
    torch.manual_seed(training.seed)
    model = spec.build(search=True)
    images, labels = load_images(training.train_sets, data_root, config.data.verify)
    (images_a, labels_a), (images_b, labels_b) = split_images(images, labels)
    split_a = PatchDataset(images_a, task, patch_size=training.patch_size, length=training.samples_per_epoch,
                           seed=training.seed, names=labels_a)
    split_b = PatchDataset(images_b, task, patch_size=training.patch_size, length=training.samples_per_epoch,
                           seed=training.seed + 1, names=labels_b)
    stream_a, stream_b = infinite(split_a, training.batch_size), infinite(split_b, training.batch_size)

    lr_side = training.patch_size // task.scale
    costs = module_costs(model, (lr_side, lr_side))
    locations = sorted(costs)
    cost = torch.tensor([costs[location] for location in locations], dtype=torch.float32)
    cost = cost / cost.sum()
    weights = [p for name, p in model.named_parameters() if name != "alpha"]
    weight_optimizer = torch.optim.Adam(weights, lr=training.learning_rate, betas=(0.9, 0.999), eps=1e-8)
    # SGD, not Adam, for the alphas: Adam's per-parameter normalisation would move every alpha by the
    # same step and erase the FLOPs weighting of the cost term.
    alpha_optimizer = torch.optim.SGD([model.alpha], lr=settings.arch_learning_rate, momentum=0.9)
    warmup = int(settings.warmup_fraction * settings.iterations)
    trajectory = []
    model.train()
    modules = attention_modules(model)
    for iteration in tqdm(range(settings.iterations), desc=f"search {task_name}", disable=not progress):
        for module in modules:
            module.temperature = temperature(iteration, replace(training, iterations=settings.iterations))
        degraded, target = next(stream_a)  # weights on split A
        loss = F.l1_loss(model(degraded), target) + sum(m.budget_loss for m in modules)
        weight_optimizer.zero_grad(set_to_none=True)
        alpha_optimizer.zero_grad(set_to_none=True)
        loss.backward()
        model.alpha.grad = None
        weight_optimizer.step()
        degraded, target = next(stream_b)  # alphas on split B, (S9)
        gates = torch.sigmoid(model.alpha)
        arch_loss = F.l1_loss(model(degraded), target) + settings.cost_weight * (gates * cost).sum()
        rec_grad = cost_grad = torch.zeros_like(model.alpha)  # no alpha step during the warm-up
        if iteration >= warmup:
            weight_optimizer.zero_grad(set_to_none=True)
            alpha_optimizer.zero_grad(set_to_none=True)
            arch_loss.backward()
            # What moved each alpha: the cost term's gradient is known in closed form, lambda_a sigma'(alpha)
            # cost_j, so the reconstruction's share is the rest of the total (the sums tell which term won).
            cost_grad = (settings.cost_weight * gates * (1 - gates) * cost).detach()
            rec_grad = model.alpha.grad.detach() - cost_grad
            alpha_optimizer.step()
        trajectory.append({"iteration": iteration + 1, "loss": loss.item(), "arch_loss": arch_loss.item(),
                           **{f"block_{loc}": float(g) for loc, g in zip(locations, torch.sigmoid(model.alpha.detach()))},
                           **{f"rec_grad_{loc}": float(g) for loc, g in zip(locations, rec_grad)},
                           **{f"cost_grad_{loc}": float(g) for loc, g in zip(locations, cost_grad)}})
    frame = pd.DataFrame(trajectory)
    atomic_write_text(out_dir / "alpha.csv", frame.to_csv(index=False))
    plot_trajectory(frame, settings.threshold, out_dir / "alpha.png")
    return derive(model, spec, config, out_dir, costs)


def derive(model: RestorationNet, spec: ModelSpec, config: Config, out_dir: Path, costs: dict[int, int]) -> dict:
    settings = config.search
    locations = sorted(model.references)
    probabilities = torch.sigmoid(model.alpha.detach()).tolist()
    if settings.max_modules:
        ranked = sorted(zip(probabilities, locations), reverse=True)[: settings.max_modules]
        kept = sorted(location for _, location in ranked)
    else:
        kept = [location for location, p in zip(locations, probabilities) if p > settings.threshold]
    derived = replace(spec, insert=tuple(kept), references={loc: model.references[loc] for loc in kept},
                      attention=spec.attention if kept else "none")
    if not kept:
        derived = replace(derived, insert="none", references=None)
    network = derived.build()
    task = parse_task(spec.task)
    side = config.train.patch_size // task.scale
    flops = count_flops(lambda: network.eval()(torch.zeros(1, 3 if task.color == "rgb" else 1, side, side)))
    description = derived.as_dict() | {
        "candidates": locations,
        "alpha_sigmoid": dict(zip(map(str, locations), probabilities)),
        "module_flops": {str(loc): costs[loc] for loc in locations},
        "params": sum(p.numel() for p in network.parameters()),
        "flops_at_patch": flops,
        "patch_input": [side, side],
        "rule": f"top {settings.max_modules}" if settings.max_modules else f"sigmoid(alpha) > {settings.threshold}",
    }
    atomic_write_text(out_dir / "arch.json", json.dumps(description, indent=2) + "\n")
    return description


def plot_trajectory(frame: pd.DataFrame, threshold: float, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import seaborn as sns

    long = frame.melt(id_vars="iteration", value_vars=[c for c in frame if c.startswith("block_")],
                      var_name="location", value_name="sigmoid(alpha)")
    figure, axis = plt.subplots(figsize=(7, 3.5))
    sns.lineplot(data=long, x="iteration", y="sigmoid(alpha)", hue="location", ax=axis)
    axis.axhline(threshold, color="gray", linestyle="--", linewidth=1)
    axis.set(ylim=(0, 1), title="Insertion search: architecture weights")
    atomic_save_figure(figure, path, dpi=110)
    plt.close(figure)
