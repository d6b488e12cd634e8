"""The report's figures, each drawn from the CSV/JSON files that the study's stages wrote.

Every function takes the study's folder (``reports/study``) or a frame and a PNG path, draws with
seaborn, and saves atomically; nothing here computes a result.
"""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
from PIL import Image

from acla.files import atomic_save_figure
from acla.study.tables import published_for, split_departures


def _save(figure: plt.Figure, path: Path) -> Path:
    atomic_save_figure(figure, path, dpi=110)
    plt.close(figure)
    return path


def _settings(study: Path, step: str, name: str) -> list[Path]:
    return sorted(study.glob(f"*/{step}/*/{name}"))


def alpha_trajectories(study: Path, path: Path) -> Path | None:
    """sigmoid(alpha) of every candidate location over the search, one panel per setting."""
    frames = []
    for csv in _settings(study, "search", "alpha.csv"):
        frame = pd.read_csv(csv)
        long = frame.melt(id_vars="iteration", value_vars=[c for c in frame if c.startswith("block_")],
                          var_name="block", value_name="sigmoid(alpha)")
        frames.append(long.assign(setting=csv.parent.name, block=long["block"].str.removeprefix("block_")))
    if not frames:
        return None
    data = pd.concat(frames, ignore_index=True)
    grid = sns.relplot(data=data, x="iteration", y="sigmoid(alpha)", hue="block", col="setting", kind="line",
                       col_wrap=min(4, data.setting.nunique()), height=2.8, aspect=1.3, facet_kws={"sharex": False})
    grid.figure.suptitle("Insertion search: sigmoid(alpha) per candidate block (y zoomed to the range reached)", y=1.03)
    return _save(grid.figure, path)


def search_gradients(study: Path, path: Path) -> Path | None:
    """What moved each alpha: the running sum of the reconstruction's and the cost term's gradient on it
    (``rec_grad_*`` / ``cost_grad_*`` of ``alpha.csv``), one row of panels per setting; negative opens."""
    frames = []
    for csv in _settings(study, "search", "alpha.csv"):
        frame = pd.read_csv(csv)
        for term, prefix in (("reconstruction", "rec_grad_"), ("cost", "cost_grad_")):
            columns = [c for c in frame if c.startswith(prefix)]
            if not columns:
                continue
            running = frame[columns].cumsum().assign(iteration=frame.iteration)
            long = running.melt(id_vars="iteration", var_name="block", value_name="summed gradient")
            frames.append(long.assign(setting=csv.parent.name, term=term, block=long.block.str.removeprefix(prefix)))
    if not frames:
        return None
    data = pd.concat(frames, ignore_index=True)
    grid = sns.relplot(data=data, x="iteration", y="summed gradient", hue="block", row="setting", col="term",
                       kind="line", height=2.6, aspect=1.4, facet_kws={"sharey": False, "sharex": False})
    grid.set_titles("{row_name}: {col_name}")
    grid.figure.suptitle("Insertion search: running sum of each term's gradient on alpha (S9); below 0 opens", y=1.02)
    return _save(grid.figure, path)


def insertion_map(study: Path, path: Path) -> Path | None:
    """Final sigmoid(alpha) per setting and block; the kept blocks are outlined."""
    rows, kept = [], []
    for arch_path in _settings(study, "search", "arch.json"):
        arch = json.loads(arch_path.read_text())
        setting = arch_path.parent.name
        insert = arch["insert"] if isinstance(arch["insert"], list) else []
        for block, value in arch["alpha_sigmoid"].items():
            rows.append({"setting": setting, "block": int(block), "sigmoid(alpha)": value})
            if int(block) in insert:
                kept.append((setting, int(block)))
    if not rows:
        return None
    table = pd.DataFrame(rows).pivot(index="setting", columns="block", values="sigmoid(alpha)")
    figure, axis = plt.subplots(figsize=(2.0 + 0.65 * table.shape[1], 1.0 + 0.45 * table.shape[0]))
    sns.heatmap(table, annot=True, fmt=".3f", vmin=0, vmax=1, cmap="viridis", cbar=False, ax=axis)
    for setting, block in kept:
        i, j = list(table.index).index(setting), list(table.columns).index(block)
        axis.add_patch(plt.Rectangle((j, i), 1, 1, fill=False, edgecolor="red", linewidth=2.5))
    axis.set(title="Searched insertion map (red: kept)", xlabel="after block", ylabel="")
    return _save(figure, path)


def open_key_distribution(study: Path, path: Path) -> Path | None:
    """How many keys each query kept open, per ACLA module, on one test image per setting."""
    frames = [pd.read_csv(csv).assign(setting=csv.parents[1].name) for csv in _settings(study, "evaluate", "keys/open_keys.csv")]
    frames = [f for f in frames if len(f)]
    if not frames:
        return None
    data = pd.concat(frames, ignore_index=True)
    edges = np.linspace(0, 1, 11)
    labels = [f"{int(100 * a)}-{int(100 * b)}%" for a, b in zip(edges[:-1], edges[1:])]
    fraction = data.open_keys / data.keys_per_query
    data["keys open"] = pd.Categorical(pd.cut(fraction, edges, labels=labels, include_lowest=True), labels)
    data["block"] = "after block " + data.block.astype(str)
    shares = data.groupby(["setting", "block", "keys open"], observed=False).queries.sum().reset_index()
    shares["share of queries"] = shares.queries / shares.groupby(["setting", "block"]).queries.transform("sum")
    grid = sns.catplot(data=shares, x="keys open", y="share of queries", hue="block", col="setting", kind="bar",
                       col_wrap=min(4, shares.setting.nunique()), height=2.8, aspect=1.4, sharex=False)
    grid.set_xticklabels(rotation=60, fontsize=7)
    grid.figure.suptitle("ACLA: share of queries by the fraction of their R x K keys left open", y=1.03)
    return _save(grid.figure, path)


def sampled_keys(keys_dir: Path, path: Path) -> Path | None:
    """Key positions of a few queries drawn on the network input, one panel per module (x open, o closed)."""
    csv = keys_dir / "sampled_keys.csv"
    if not csv.is_file():
        return None
    keys = pd.read_csv(csv)
    if keys.empty:
        return None
    image = np.asarray(Image.open(keys_dir / "input.png"))
    blocks = sorted(keys.block.unique())
    figure, axes = plt.subplots(1, len(blocks), figsize=(3.2 * len(blocks), 3.4), squeeze=False)
    palette = sns.color_palette("bright", keys.groupby(["query_y", "query_x"]).ngroups)
    for axis, block in zip(axes[0], blocks):
        axis.imshow(image, cmap="gray" if image.ndim == 2 else None)
        for color, ((qy, qx), group) in zip(palette, keys[keys.block == block].groupby(["query_y", "query_x"])):
            opened, closed = group[group.open], group[~group.open]
            axis.scatter(opened.x, opened.y, s=14, marker="x", color=color)
            axis.scatter(closed.x, closed.y, s=14, marker="o", facecolors="none", edgecolors=color, alpha=0.6)
            axis.scatter([qx], [qy], s=60, marker="*", color=color, edgecolors="black", linewidths=0.5)
        axis.set(title=f"after block {block}", xticks=[], yticks=[])
    figure.suptitle(f"Sampled keys ({keys_dir.parent.name}): * query, x open key, o closed key")
    return _save(figure, path)


def key_maps(folder: Path, path: Path, half: int = 12, zoom: int = 3) -> Path | None:
    """What the gates of each ACLA module did on one image (``acla.study.keys.key_maps_report``). Top row: the
    network input and, per module, the open keys of every query pixel. Below, one row per query kind (edge,
    texture, flat): a (2 half) px crop around the query (*), then per module a (2 zoom + 1) px crop, where the keys
    (a few pixels from their query) are visible, with each key's fixed grid position p + p_k (+) joined to its
    learned position p + p_k + dp (o filled: open; o hollow: closed), coloured by reference."""
    csv = folder / "zoomed_keys.csv"
    if not csv.is_file():
        return None
    keys = pd.read_csv(csv)
    maps = np.load(folder / "open_key_maps.npz")
    image = np.asarray(Image.open(folder / "input.png"))
    summary = json.loads((folder / "summary.json").read_text())
    blocks = sorted(int(b) for b in maps.files)
    kinds = list(dict.fromkeys(keys.kind))
    figure, axes = plt.subplots(1 + len(kinds), 1 + len(blocks), figsize=(3.1 * (1 + len(blocks)), 3.0 * (1 + len(kinds))),
                                squeeze=False)
    cmap = "gray" if image.ndim == 2 else None
    axes[0, 0].imshow(image, cmap=cmap)
    axes[0, 0].set_title(summary["image"], fontsize=9)
    for kind, (y, x) in summary["queries"].items():
        axes[0, 0].scatter([x], [y], marker="*", s=70, color="yellow", edgecolors="black", linewidths=0.5)
        axes[0, 0].annotate(kind, (x, y), xytext=(4, -4), textcoords="offset points", fontsize=7, color="yellow")
    for axis, block in zip(axes[0, 1:], blocks):
        total = summary["keys_per_query"][str(block)]
        shown = axis.imshow(maps[str(block)], cmap="viridis", vmin=1, vmax=total)
        axis.set_title(f"after block {block}: open keys (of {total})\nmean {maps[str(block)].mean():.2f}", fontsize=9)
        figure.colorbar(shown, ax=axis, fraction=0.046, pad=0.02)
    palette = sns.color_palette("bright", keys.reference_layer.nunique())
    colors = dict(zip(sorted(keys.reference_layer.unique()), palette))
    for row, kind in enumerate(kinds, start=1):
        part = keys[keys.kind == kind]
        qy, qx = int(part.query_y.iloc[0]), int(part.query_x.iloc[0])
        for column, axis in enumerate(axes[row]):
            axis.imshow(image, cmap=cmap, interpolation="nearest")
            side = half if column == 0 else zoom + 0.5
            axis.set(xlim=(qx - side - 0.5, qx + side - 0.5), ylim=(qy + side - 0.5, qy - side - 0.5), xticks=[], yticks=[])
            axis.scatter([qx], [qy], marker="*", s=120, color="yellow", edgecolors="black", linewidths=0.6, zorder=4)
            if column == 0:
                axis.set_title(f"{kind} query ({qx}, {qy}), {2 * half} px", fontsize=9)
                continue
            block = blocks[column - 1]
            here = part[part.block == block]
            layers = sorted(here.reference_layer.unique())
            for r in here.itertuples():  # the first reference's keys largest: keys at one place show as rings
                color, size = colors[r.reference_layer], 70 / (1 + layers.index(r.reference_layer))
                axis.plot([r.grid_x, r.x], [r.grid_y, r.y], color=color, linewidth=0.8, alpha=0.8, zorder=2)
                axis.scatter([r.grid_x], [r.grid_y], marker="+", s=25, color=color, zorder=3)
                axis.scatter([r.x], [r.y], marker="o", s=size, zorder=3, edgecolors=color, linewidths=1.2,
                             facecolors=color if r.open else "none")
            axis.set_title(f"after block {block}: {int(here.open.sum())} of {len(here)} open ({2 * zoom + 1} px)",
                           fontsize=9)
    handles = [plt.Line2D([], [], color=color, marker="o", linestyle="", label=f"reference F^{layer}")
               for layer, color in colors.items()]
    axes[-1, -1].legend(handles=handles, fontsize=7, loc="lower right")
    figure.suptitle(f"ACLA's keys on {summary['image']}: + grid position, o learned position (filled open, hollow "
                    "closed)", y=1.0)
    figure.tight_layout()
    return _save(figure, path)


def training_curves(study: Path, path: Path) -> Path | None:
    """Training loss and validation PSNR of the headline pair, per setting: the mean over seeds, and a band of
    one standard deviation (the tables' spread). Seaborn's default band, a 1000-sample bootstrap per point, took
    two of the smoke study's 25 minutes here and drew a different band each run."""
    frames = [pd.read_csv(csv) for csv in sorted(study.glob("*/retrain/curves.csv"))]
    frames = [f for f in frames if len(f)]
    if not frames:
        return None
    data = pd.concat(frames, ignore_index=True)
    data = data[data.metric.isin(["train/loss", "val/psnr"])]
    grid = sns.relplot(data=data, x="step", y="value", hue="variant", row="metric", col="setting", kind="line",
                       errorbar="sd", marker="o", markersize=4, height=2.5, aspect=1.4,
                       facet_kws={"sharey": False, "sharex": False})
    grid.figure.suptitle("Training curves (retrain stage): mean over seeds, band ± 1 std", y=1.02)
    return _save(grid.figure, path)


def gate_diagnostics(curves_csv: Path, path: Path, variant: str | None = None) -> Path | None:
    """What ACLA's gates did while one setting trained (``acla.engine.gates``, logged at every validation), mean over
    seeds: open keys per query on the validation images (band: ± 1 std across queries), the share of the queries at
    the most common count (1: no query differs from another), and the gradient norm on the gate head from the
    reconstruction loss and from the key budget (log scale)."""
    curves = pd.read_csv(curves_csv) if curves_csv.is_file() else pd.DataFrame()
    if variant is not None and len(curves):  # one model of several (the frontier's points)
        curves = curves[curves.variant == variant]
    gates = curves[curves.metric.str.startswith("gates/")] if len(curves) else curves
    if gates.empty:
        return None
    parts = gates.metric.str.split("/", expand=True)
    several = gates.setting.nunique() > 1 if "setting" in gates else False
    label = "after block " + parts[1].str.removeprefix("block")
    gates = gates.assign(block=gates.setting + ", " + label if several else label, quantity=parts[2])
    mean = gates.groupby(["block", "quantity", "step"]).value.mean().unstack("quantity").reset_index()
    blocks = sorted(mean.block.unique(), key=lambda name: (name.rsplit(" ", 1)[0], int(name.rsplit(" ", 1)[1])))
    palette = dict(zip(blocks, sns.color_palette("colorblind", len(blocks))))
    figure, axes = plt.subplots(1, 3, figsize=(13, 3.4))
    for block, group in mean.groupby("block"):
        color = palette[block]
        axes[0].plot(group.step, group.open_mean, marker="o", markersize=3, color=color, label=block)
        axes[0].fill_between(group.step, group.open_mean - group.open_std, group.open_mean + group.open_std,
                             color=color, alpha=0.15)
        axes[1].plot(group.step, group.mode_share, marker="o", markersize=3, color=color, label=block)
        for part, style in (("reconstruction", "-"), ("budget", "--")):
            column = f"{part}_grad_norm"
            if column in group:
                axes[2].plot(group.step, group[column].clip(lower=1e-12), linestyle=style, color=color,
                             label=f"{block}, {part}")
    axes[0].set(xlabel="iteration", ylabel="keys")
    axes[0].set_title("open keys per query\n(band: ± 1 std across queries)", fontsize=10)
    axes[1].set(xlabel="iteration", ylim=(0, 1.05))
    axes[1].set_title("share of queries at the\nmost common count (1: all alike)", fontsize=10)
    axes[2].set(xlabel="iteration", yscale="log")
    axes[2].set_title("gradient norm on the gate head W_m\n(solid: reconstruction, dashed: key budget)", fontsize=10)
    axes[0].legend(fontsize=7)
    setting = curves_csv.parent.parent.name + (f", {variant}" if variant else "")
    figure.suptitle(f"ACLA's gates while training ({setting}; mean over seeds)", y=1.04)
    figure.tight_layout()
    return _save(figure, path)


def accuracy_against_keys(frontier: pd.DataFrame, path: Path) -> Path | None:
    """PSNR against the keys a query attends to (mean over the modules), one panel per test set and budget: CLA at
    each K as a line, ACLA at each lambda_k as points (open markers where its gates were still moving at the end of
    training), the remedies (departures from the spec's recipe) as diamonds, the backbone as a dashed line; error bars
    ± 1 std over seeds. ACLA points at the same count (every key open, or one) are spread a little sideways so that
    their error bars do not hide each other; one legend below the panels, one colour per point in every panel."""
    if frontier.empty:
        return None
    frontier = frontier.assign(keys=np.where(frontier.attention == "cla", frontier.keys_per_query,
                                             frontier.open_keys_mean))
    acla = frontier[frontier.attention == "acla"].drop_duplicates("variant").sort_values("key_budget_weight")
    recipe, remedies = split_departures(acla)
    colors = dict(zip(recipe.variant, sns.color_palette("flare", max(len(recipe), 1))))
    colors |= dict(zip(remedies.variant, sns.color_palette("crest", max(len(remedies), 1))))
    departures = set(remedies.variant)
    panels = list(frontier.groupby(["iterations", "set"], sort=False))
    figure, axes = plt.subplots(1, len(panels), figsize=(5.0 * len(panels), 4.0), squeeze=False)
    handles: dict[str, object] = {}
    for axis, ((iterations, set_name), data) in zip(axes[0], panels):
        backbone = data[data.attention == "none"]
        if len(backbone):
            handles["backbone"] = axis.axhline(backbone.psnr_mean.iloc[0], color="gray", linestyle="--")
        cla = data[data.attention == "cla"].sort_values("keys")
        if len(cla):
            label = "CLA (K = " + ", ".join(str(int(k)) for k in cla.num_keys) + ")"
            handles[label] = axis.errorbar(cla["keys"], cla.psnr_mean, yerr=cla.psnr_std.fillna(0), marker="s",
                                           color="tab:blue", capsize=3)
        placed: list[float] = []
        for row in data[data.attention == "acla"].sort_values("key_budget_weight").itertuples():
            moving = row.gates_moving == "yes"
            crowd = sum(abs(np.log(row.keys / x)) < 0.03 for x in placed)  # points already at (nearly) this count
            placed.append(row.keys)
            departure = row.variant in departures
            label = (f"ACLA {row.variant.removeprefix('acla ')} (departure)" if departure
                     else f"ACLA λk={row.key_budget_weight:g}") + (" (gates still moving)" if moving else "")
            handles[label] = axis.errorbar(
                [row.keys * 1.05 ** crowd], [row.psnr_mean], yerr=[0 if pd.isna(row.psnr_std) else row.psnr_std],
                xerr=[0 if pd.isna(row.open_keys_std) else row.open_keys_std], marker="D" if departure else "o",
                capsize=3, color=colors[row.variant], markerfacecolor="none" if moving else colors[row.variant])
        axis.set(xscale="log", xlabel="keys per query (open, mean over modules)", ylabel="PSNR (dB)",
                 title=f"{set_name}, {int(iterations)} iterations")
    figure.legend(list(handles.values()), list(handles), loc="upper center", bbox_to_anchor=(0.5, 0.0), ncol=3,
                  fontsize=8, frameon=False)
    figure.suptitle("Accuracy against keys per query: CLA's fixed K against ACLA's gated keys (± 1 std over seeds; "
                    "open markers: gates still moving at the end of training)", y=1.02)
    return _save(figure, path)


def training_length(table: pd.DataFrame, path: Path) -> Path | None:
    """Issue #29's figure: per test set, Δ(point − backbone) against iterations (whole schedules) with ± 1 standard
    error; and the backbone's PSNR on Set5 against iterations beside SRCNN's and VDSR's published SR x2 values."""
    if table.empty:
        return None
    sets = list(dict.fromkeys(table.set))
    figure, axes = plt.subplots(1, len(sets) + 1, figsize=(4.6 * (len(sets) + 1), 3.6), squeeze=False)
    points = [v for v in dict.fromkeys(table.variant) if v != "backbone"]
    colors = dict(zip(points, sns.color_palette("tab10", max(len(points), 1))))
    for axis, set_name in zip(axes[0], sets):
        axis.axhline(0, color="gray", linestyle="--", linewidth=1, label="backbone")
        for variant in points:
            rows = table[(table.set == set_name) & (table.variant == variant)]
            axis.errorbar(rows.iterations, rows.delta, yerr=rows.delta_se.fillna(0), marker="o", capsize=3,
                          color=colors[variant], label=variant)
        axis.set(xscale="log", xlabel="iterations (each a whole cosine schedule)", ylabel="Δ PSNR vs backbone (dB)",
                 title=f"{set_name}: Δ ± 1 SE over seeds")
        axis.legend(fontsize=7)
    axis = axes[0][-1]
    backbone = table[(table.variant == "backbone") & (table.set == "Set5")]
    if len(backbone):
        axis.errorbar(backbone.iterations, backbone.psnr_mean, yerr=backbone.psnr_std.fillna(0), marker="o",
                      capsize=3, color="black", label="backbone (mean ± std)")
        colors = {"SRCNN": "tab:green", "VDSR": "tab:red"}
        for row in published_for(str(backbone.setting.iloc[0]), "Set5", tuple(colors)).itertuples():
            axis.axhline(float(row.psnr), color=colors[row.method], linestyle=":", label=f"{row.method} (published)")
        axis.set(xscale="log", xlabel="iterations", ylabel="PSNR (dB)", title="backbone on Set5")
        axis.legend(fontsize=7)
    figure.suptitle("Training length: does ACLA's difference from its backbone close, stay or grow?", y=1.02)
    return _save(figure, path)


def budget_sweep(study: Path, path: Path) -> Path | None:
    """Final validation PSNR of the backbone against its training budget (whole schedules, ``ablation/budget.csv``),
    each seed a dot, with the published SR x2 SRCNN value on the same set when the literature CSV holds it."""
    frames = [pd.read_csv(csv).assign(task=csv.parents[1].name) for csv in sorted(study.glob("*/ablation/budget.csv"))]
    frames = [f for f in frames if len(f)]
    if not frames:
        return None
    data = pd.concat(frames, ignore_index=True)
    panels = list(data.groupby(["task", "setting"]))
    figure, axes = plt.subplots(1, len(panels), figsize=(4.8 * len(panels), 3.4), squeeze=False)
    for ax, ((task, setting), group) in zip(axes[0], panels):
        sns.lineplot(data=group, x="iterations", y="val_psnr", errorbar=None, marker="o", ax=ax, label="mean")
        sns.scatterplot(data=group, x="iterations", y="val_psnr", color="black", s=12, ax=ax, label="seeds")
        val_set = str(group.val_set.iloc[0])
        for row in published_for(setting, val_set, ("bicubic", "SRCNN")).itertuples():
            ax.axhline(row.psnr, ls="--", lw=1, color="grey")
            ax.annotate(f"{row.method} (published) {row.psnr:.2f}", (group.iterations.min(), row.psnr), fontsize=7,
                        va="bottom")
        ax.set_xscale("log", base=2)
        ax.set(title=f"{setting}: budget sweep", xlabel="iterations (each a whole schedule)",
               ylabel=f"{val_set} PSNR (dB)")
        ax.legend(fontsize=7, loc="lower right")
    figure.tight_layout()
    return _save(figure, path)


def accuracy_vs_cost(study: Path, path: Path) -> Path | None:
    """Validation PSNR of every variant against its parameters and FLOPs."""
    frames = []
    for ablation in sorted(study.glob("*/ablation/ablation.csv")):
        efficiency = ablation.parents[1] / "efficiency" / "efficiency.csv"
        if efficiency.is_file():
            merged = pd.read_csv(ablation).merge(pd.read_csv(efficiency)[["setting", "variant", "flops"]],
                                                 on=["setting", "variant"])
            frames.append(merged)
    if not frames:
        return None
    data = pd.concat(frames, ignore_index=True)
    data["GFLOPs"] = data.flops / 1e9
    data["params (k)"] = data.params / 1e3
    figure, axes = plt.subplots(1, 2, figsize=(11, 4))
    for axis, x in zip(axes, ("params (k)", "GFLOPs")):
        sns.scatterplot(data=data, x=x, y="val_psnr", hue="variant", style="setting", s=60, ax=axis)
        axis.set(ylabel="validation PSNR (dB)")
        axis.legend(fontsize=7)
    figure.suptitle("Accuracy vs cost of every variant (ablation stage; FLOPs at the efficiency input size)")
    return _save(figure, path)


def visual_crops(setting_dir: Path, path: Path) -> Path | None:
    """The first saved crop of each method (ground truth, classical, backbone, +ACLA) side by side."""
    order = ["ground_truth", "bicubic", "noisy_input", "mosaiced_input", "bilinear", "jpeg_input", "backbone", "acla"]
    crops = [(name, sorted((setting_dir / name / "crops").glob("*.png"))) for name in order]
    crops = [(name, files[0]) for name, files in crops if files]
    if not crops:
        return None
    figure, axes = plt.subplots(1, len(crops), figsize=(2.4 * len(crops), 2.8), squeeze=False)
    for axis, (name, file) in zip(axes[0], crops):
        image = np.asarray(Image.open(file))
        axis.imshow(image, cmap="gray" if image.ndim == 2 else None, vmin=0, vmax=255)
        axis.set(title=name.replace("_", " "), xticks=[], yticks=[])
    figure.suptitle(f"{setting_dir.name}: {crops[0][1].stem}")
    return _save(figure, path)
