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
from acla.study.tables import difference_se, published_for, split_departures, variant_label


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
    grid.figure.suptitle("Insertion search: running sum of each term's gradient on alpha (the search loss); below 0 "
                         "opens", y=1.02)
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
    grid.figure.suptitle("ACLA: share of queries by the fraction of their R·K keys left open", y=1.03)
    return _save(grid.figure, path)


def sampled_keys(keys_dir: Path, path: Path) -> Path | None:
    """Where the keys of a few queries land, one row per query: the network input with the query (*), then per
    module a crop around the query zoomed until its keys (a pixel or two away) are visible: x open, o closed,
    coloured by reference layer."""
    csv = keys_dir / "sampled_keys.csv"
    if not csv.is_file():
        return None
    keys = pd.read_csv(csv)
    if keys.empty:
        return None
    image = np.asarray(Image.open(keys_dir / "input.png"))
    cmap = "gray" if image.ndim == 2 else None
    blocks = sorted(keys.block.unique())
    queries = list(keys.groupby(["query_y", "query_x"]).groups)
    side = round(max((keys.x - keys.query_x).abs().max(), (keys.y - keys.query_y).abs().max()) + 0.8, 1)
    layers = sorted(keys.reference_layer.unique())
    colors = dict(zip(layers, sns.color_palette("bright", len(layers))))
    figure, axes = plt.subplots(len(queries), 1 + len(blocks), figsize=(2.3 * (1 + len(blocks)), 2.4 * len(queries)),
                                squeeze=False, constrained_layout=True)
    for row, (qy, qx) in zip(axes, queries):
        row[0].imshow(image, cmap=cmap)
        row[0].scatter([qx], [qy], marker="*", s=160, color="yellow", edgecolors="black", linewidths=0.6)
        row[0].set(title=f"query ({qx}, {qy})", xticks=[], yticks=[])
        for axis, block in zip(row[1:], blocks):
            here = keys[(keys.block == block) & (keys.query_y == qy) & (keys.query_x == qx)]
            axis.imshow(image, cmap=cmap, interpolation="nearest")
            axis.set(xlim=(qx - side, qx + side), ylim=(qy + side, qy - side), xticks=[], yticks=[],
                     title=f"after block {block}: {int(here.open.sum())} of {len(here)} open")
            axis.scatter([qx], [qy], marker="*", s=260, color="yellow", edgecolors="black", linewidths=0.6, zorder=2)
            for order, (layer, group) in enumerate(here.groupby("reference_layer")):  # keys at one place: nested
                opened, closed, size = group[group.open], group[~group.open], 110 / (1 + 0.6 * order)
                axis.scatter(opened.x, opened.y, marker="x", s=size, linewidths=2.0, color=colors[layer], zorder=4)
                axis.scatter(closed.x, closed.y, marker="o", s=size, linewidths=1.4, facecolors="none",
                             edgecolors=colors[layer], zorder=3)
    handles = [plt.Line2D([], [], marker="*", color="yellow", markeredgecolor="black", markersize=11, linestyle="",
                          label="query"),
               plt.Line2D([], [], marker="x", color="gray", markeredgewidth=2, linestyle="", label="open key"),
               plt.Line2D([], [], marker="o", color="gray", markerfacecolor="none", linestyle="", label="closed key"),
               *(plt.Line2D([], [], marker="s", color=colors[layer], linestyle="", label=f"reference F^{layer}")
                 for layer in layers)]
    figure.legend(handles=handles, loc="lower center", bbox_to_anchor=(0.5, 1.0), ncol=len(handles), fontsize=8,
                  frameon=False)
    figure.suptitle(f"Where ACLA's keys land ({keys_dir.parent.name}): each row one query, each module zoomed to "
                    f"±{side:g} px", y=1.045)
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
    figure, axes = plt.subplots(1, 3, figsize=(13, 3.8), constrained_layout=True)
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
    axes[2].set_title("gradient norm on the gate head\n(solid: reconstruction, dashed: key budget)", fontsize=10)
    figure.legend(*axes[0].get_legend_handles_labels(), loc="outside lower center", ncol=len(blocks), fontsize=8,
                  frameon=False)
    setting = curves_csv.parent.parent.name + (f", {variant_label(variant)}" if variant else "")
    figure.suptitle(f"ACLA's gates while training ({setting}; mean over seeds)")
    return _save(figure, path)


def accuracy_against_keys(frontier: pd.DataFrame, path: Path) -> Path | None:
    """Do ACLA's gated keys beat CLA's fixed K? PSNR against the keys a query attends to (mean over the modules), one
    column per test set at each budget where CLA was trained (else each budget with two points or more); the top row
    ACLA trained with the recipe at each λk, the bottom row the remedies (departures from the recipe), both beside
    CLA at each K (line) and the backbone (dashed). Error bars ± 1 std over seeds; hollow markers: gates still moving
    at the end of training. ACLA points at the same count are spread a little sideways."""
    if frontier.empty:
        return None
    frontier = frontier.assign(keys=np.where(frontier.attention == "cla", frontier.keys_per_query,
                                             frontier.open_keys_mean))
    with_cla = [i for i, d in frontier.groupby("iterations", sort=False) if (d.attention == "cla").any()]
    budgets = with_cla or [i for i, d in frontier.groupby("iterations", sort=False) if d.variant.nunique() > 1]
    left_out = [i for i in frontier.iterations.unique() if i not in budgets]
    data = frontier[frontier.iterations.isin(budgets)]
    if data.empty:
        return None
    acla = data[data.attention == "acla"].drop_duplicates("variant").sort_values("key_budget_weight")
    recipe, remedies = split_departures(acla)
    rows = [("ACLA, recipe", recipe, "o", "flare"), ("ACLA, departures from the recipe", remedies, "D", "Dark2")]
    rows = [row for row in rows if len(row[1])]
    panels = list(data.groupby(["iterations", "set"], sort=False))
    figure, axes = plt.subplots(len(rows), len(panels), figsize=(4.2 * len(panels) + 3.2, 3.4 * len(rows)),
                                squeeze=False, sharex=True, sharey="col", constrained_layout=True)
    for index, ((name, points, marker, palette), row) in enumerate(zip(rows, axes)):
        colors = dict(zip(points.variant, sns.color_palette(palette, len(points))))
        handles: dict[str, object] = {}
        for axis, ((iterations, set_name), panel) in zip(row, panels):
            backbone = panel[panel.attention == "none"]
            if len(backbone):
                handles["backbone"] = axis.axhline(backbone.psnr_mean.iloc[0], color="gray", linestyle="--")
            cla = panel[panel.attention == "cla"].sort_values("keys")
            if len(cla):
                handles["CLA, K = " + ", ".join(str(int(k)) for k in cla.num_keys)] = axis.errorbar(
                    cla["keys"], cla.psnr_mean, yerr=cla.psnr_std.fillna(0), marker="s", color="tab:blue", capsize=3)
            placed: list[float] = []
            for r in panel[panel.variant.isin(points.variant)].sort_values("key_budget_weight").itertuples():
                crowd = sum(abs(np.log(r.keys / x)) < 0.03 for x in placed)  # points already at (nearly) this count
                placed.append(r.keys)
                handles[variant_label(r.variant)] = axis.errorbar(
                    [r.keys * 1.06 ** crowd], [r.psnr_mean], yerr=[0 if pd.isna(r.psnr_std) else r.psnr_std],
                    xerr=[0 if pd.isna(r.open_keys_std) else r.open_keys_std], marker=marker, capsize=3,
                    color=colors[r.variant], markerfacecolor="none" if r.gates_moving == "yes" else colors[r.variant])
            axis.set(xscale="log", title=f"{set_name}, {int(iterations):,} iterations")
        row[0].set_ylabel(f"{name}\nPSNR (dB)")
        if index:  # the backbone and CLA are in the first row's legend
            handles = {label: handle for label, handle in handles.items() if label in set(points.variant.map(variant_label))}
        row[-1].legend(list(handles.values()), list(handles), loc="center left", bbox_to_anchor=(1.02, 0.5),
                       fontsize=8, frameon=False)
    for axis in axes[-1]:
        axis.set_xlabel("keys per query (open, mean over modules)")
    note = f" Not drawn: {', '.join(f'{int(i):,}' for i in left_out)} iterations (in the table)." if left_out else ""
    figure.suptitle("Do ACLA's gated keys beat CLA's fixed K? PSNR against keys per query (± 1 std over seeds; "
                    "hollow: gates still moving)." + note, fontsize=10)
    return _save(figure, path)


def training_length(table: pd.DataFrame, path: Path) -> Path | None:
    """Per test set, Δ(point − backbone) against iterations (whole schedules) with ± 1 standard
    error; and the backbone's PSNR on Set5 against iterations beside SRCNN's and VDSR's published SR x2 values."""
    if table.empty:
        return None
    sets = list(dict.fromkeys(table.set))
    figure, axes = plt.subplots(1, len(sets) + 1, figsize=(4.6 * (len(sets) + 1), 4.0), squeeze=False,
                                constrained_layout=True)
    points = [v for v in dict.fromkeys(table.variant) if v != "backbone"]
    colors = dict(zip(points, sns.color_palette("tab10", max(len(points), 1))))
    for axis, set_name in zip(axes[0], sets):
        axis.axhline(0, color="gray", linestyle="--", linewidth=1, label="backbone")
        for variant in points:
            rows = table[(table.set == set_name) & (table.variant == variant)]
            axis.errorbar(rows.iterations, rows.delta, yerr=rows.delta_se.fillna(0), marker="o", capsize=3,
                          color=colors[variant], label=variant_label(variant))
        axis.set(xscale="log", xlabel="iterations (each a whole cosine schedule)", ylabel="Δ PSNR vs backbone (dB)",
                 title=f"{set_name}: Δ ± 1 SE over seeds")
    handles, labels = axes[0][0].get_legend_handles_labels()  # below the Δ panels, clear of their points
    figure.legend(handles, labels, loc="outside lower left", ncol=len(labels), fontsize=8, frameon=False)
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
    figure.suptitle("Training length: does ACLA's difference from its backbone close, stay or grow?")
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
    """Does the attention pay for its cost? Per task, each variant's validation PSNR less the backbone's (mean over
    seeds, ± 1 standard error of the difference) against its overhead over the backbone: FLOPs (filled) and latency
    (hollow) at the efficiency input size, joined by a line."""
    frames = []
    for ablation in sorted(study.glob("*/ablation/ablation.csv")):
        efficiency = ablation.parents[1] / "efficiency" / "efficiency.csv"
        if efficiency.is_file():
            runs = pd.read_csv(ablation)
            spread = runs.groupby(["setting", "variant"], sort=False).val_psnr.agg(["mean", "std", "count"])
            cost = pd.read_csv(efficiency)[["setting", "variant", "flops", "latency_s", "input", "device"]]
            merged = spread.reset_index().merge(cost, on=["setting", "variant"])
            base = merged[merged.variant == "backbone"].set_index("setting")
            merged = merged[merged.variant != "backbone"].copy()
            if merged.empty:
                continue
            b = base.loc[merged.setting]
            merged["delta"] = merged["mean"].to_numpy() - b["mean"].to_numpy()
            merged["se"] = difference_se(merged["std"].to_numpy(), merged["count"].to_numpy(), b["std"].to_numpy(),
                                         b["count"].to_numpy())
            merged["flops_pct"] = 100 * (merged.flops.to_numpy() / b.flops.to_numpy() - 1)
            merged["latency_pct"] = 100 * (merged.latency_s.to_numpy() / b.latency_s.to_numpy() - 1)
            frames.append(merged)
    if not frames:
        return None
    data = pd.concat(frames, ignore_index=True)
    settings = list(dict.fromkeys(data.setting))
    variants = list(dict.fromkeys(data.variant))
    colors = dict(zip(variants, sns.color_palette("colorblind", len(variants))))
    columns = min(len(settings), 2)
    rows = -(-len(settings) // columns)
    figure, axes = plt.subplots(rows, columns, figsize=(4.3 * columns + 1.8, 3.2 * rows), squeeze=False, sharey=True,
                                constrained_layout=True)
    for axis in axes.flat[len(settings):]:
        axis.set_visible(False)
    for axis, setting in zip(axes.flat, settings):
        axis.axhline(0, color="gray", linestyle="--", linewidth=1)
        axis.scatter([0], [0], color="black", marker="o", zorder=3)
        for r in data[data.setting == setting].itertuples():
            color = colors[r.variant]
            axis.plot([r.flops_pct, r.latency_pct], [r.delta, r.delta], color=color, linewidth=0.8, alpha=0.6)
            axis.errorbar([r.flops_pct], [r.delta], yerr=[0 if pd.isna(r.se) else r.se], marker="o", color=color,
                          capsize=3, label=variant_label(r.variant))
            axis.scatter([r.latency_pct], [r.delta], marker="o", s=40, facecolors="none", edgecolors=color, zorder=3)
        axis.set(title=setting, xlabel="overhead over the backbone (%)")
    for row in axes:
        row[0].set_ylabel("Δ validation PSNR vs backbone (dB)")
    handles = [plt.Line2D([], [], marker="o", color="black", linestyle="", label="backbone")] + [
        plt.Line2D([], [], marker="o", color=colors[v], linestyle="", label=variant_label(v)) for v in variants]
    axes[0][-1].legend(handles=handles, loc="center left", bbox_to_anchor=(1.02, 0.5), fontsize=8, frameon=False)
    figure.suptitle(f"Does the attention pay for its cost? Filled: FLOPs, hollow: latency "
                    f"({', '.join(sorted(set(data.device)))}; input {', '.join(sorted(set(data['input'])))}); "
                    "bars ± 1 SE over seeds", fontsize=10)
    return _save(figure, path)


def claim_deltas(deltas: pd.DataFrame, path: Path) -> Path | None:
    """Does ACLA beat its backbone? Δ PSNR (ACLA − backbone) per task (a row of panels) and test set, one point per
    profile (``deltas``: task, set, profile, delta, se), with ± 1 standard error (thick) and ± 2 (thin: the
    verdict's noise band) over seeds and a zero line; hollow points: one seed, no error known."""
    if deltas.empty:
        return None
    tasks = list(dict.fromkeys(deltas.task))
    profiles = list(dict.fromkeys(deltas.profile))
    colors = dict(zip(profiles, sns.color_palette("tab10", len(profiles))))
    sizes = [deltas[deltas.task == task].groupby("set", sort=False).ngroups for task in tasks]
    figure, axes = plt.subplots(len(tasks), 1, figsize=(8.0, 1.0 + 0.55 * sum(sizes) + 0.3 * len(tasks)),
                                sharex=True, squeeze=False, constrained_layout=True,
                                gridspec_kw={"height_ratios": sizes})
    for axis, task in zip(axes[:, 0], tasks):
        part = deltas[deltas.task == task]
        sets = list(dict.fromkeys(part.set))
        axis.axvline(0, color="black", linewidth=1)
        for r in part.itertuples():
            here = list(dict.fromkeys(part[part.set == r.set].profile))
            y = sets.index(r.set) + 0.22 * (here.index(r.profile) - (len(here) - 1) / 2)
            color, known = colors[r.profile], not pd.isna(r.se)
            if known:
                axis.errorbar([r.delta], [y], xerr=[2 * r.se], color=color, linewidth=1, capsize=0)
                axis.errorbar([r.delta], [y], xerr=[r.se], color=color, linewidth=3, capsize=0)
            axis.scatter([r.delta], [y], marker="o", s=36, zorder=3, edgecolors=color,
                         facecolors=color if known else "white")
        axis.set(yticks=range(len(sets)), ylim=(len(sets) - 0.5, -0.5))
        axis.set_yticklabels(sets, fontsize=8)
        axis.set_title(task, loc="left", fontsize=10)
    axes[-1, 0].set_xlabel("Δ PSNR, ACLA − backbone (dB)")
    handles = [plt.Line2D([], [], marker="o", color=colors[p], linestyle="", label=p) for p in profiles]
    figure.legend(handles=handles, loc="lower center", bbox_to_anchor=(0.5, 1.0), ncol=len(profiles), fontsize=8,
                  frameon=False, title="profile", title_fontsize=8)
    figure.suptitle("Does ACLA beat its backbone? Thick bars ± 1 SE, thin ± 2 SE over seeds; hollow: one seed",
                    fontsize=10, y=1.08)
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


def key_budget_payoff(frontier: pd.DataFrame, table: pd.DataFrame, path: Path) -> Path | None:
    """Does adaptivity pay? Per training length and test set, PSNR minus the backbone's (± 1 standard error of
    independent seeds) against the keys a query attends to: CLA at each K (line) and ACLA under each key budget, the
    linear form grey, the target form coloured by its target t (filled: τ annealed, hollow: τ fixed at 1). A point
    above the CLA line at its keys beats fixed keys."""
    if table.empty or set(table.form) <= {"linear"}:
        return None
    panels = [(key, points) for key, points in table.groupby(["iterations", "set"], sort=False)
              if points.vs_backbone.notna().any()]  # a length without its backbone has no difference to draw
    if not panels:
        return None
    figure, axes = plt.subplots(1, len(panels), figsize=(4.4 * len(panels) + 2.8, 3.8), squeeze=False,
                                constrained_layout=True)
    targets = sorted(t for t in table.target.dropna().unique())
    colors = dict(zip(targets, sns.color_palette("viridis", len(targets))))
    handles: dict[str, object] = {}
    for axis, ((iterations, set_name), points) in zip(axes[0], panels):
        panel = frontier[(frontier.iterations == iterations) & (frontier.set == set_name)]
        backbone = panel[panel.attention == "none"]
        axis.axhline(0, color="black", linewidth=0.8)
        cla = panel[panel.attention == "cla"].sort_values("keys_per_query")
        if len(cla) and len(backbone):
            base = backbone.iloc[0]
            se = np.sqrt(cla.psnr_std ** 2 / cla.n_seeds + base.psnr_std ** 2 / base.n_seeds)
            handles["CLA, K = " + ", ".join(str(int(k)) for k in cla.num_keys)] = axis.errorbar(
                cla.keys_per_query, cla.psnr_mean - base.psnr_mean, yerr=se.fillna(0), marker="s", color="tab:blue",
                capsize=3)
        for row in points.itertuples():
            linear = row.form == "linear"
            color = "0.45" if linear else colors[row.target]
            label = f"ACLA, {row.form} budget" if linear else f"ACLA, target t = {row.target:g}"
            handle = axis.errorbar([row.open_keys], [row.vs_backbone], yerr=[0 if pd.isna(row.vs_backbone_se)
                                                                              else row.vs_backbone_se],
                                   marker="X" if linear else "o", color=color, capsize=3, linestyle="none",
                                   markerfacecolor="none" if row.tau != "1 → 0.1" else color)
            handles.setdefault(label, handle)
        keys = [*points.open_keys, *cla.keys_per_query]
        wide = max(keys) / min(keys) >= 10  # a log axis only where the keys span a decade (else its labels collide)
        axis.set(xscale="log" if wide else "linear", title=f"{set_name}, {int(iterations):,} iterations",
                 xlabel="keys per query (open)")
    axes[0][0].set_ylabel("PSNR − backbone (dB)")
    axes[0][-1].legend(list(handles.values()), list(handles), loc="center left", bbox_to_anchor=(1.02, 0.5),
                       fontsize=8, frameon=False)
    figure.suptitle("Does adaptivity pay? ACLA under each key budget against CLA's fixed keys (± 1 SE over seeds; "
                    "hollow: τ fixed at 1)", fontsize=10)
    return _save(figure, path)
