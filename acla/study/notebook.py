"""What the study's notebooks share, so that each notebook holds its step and not its set-up.

A notebook ``notebooks/NN_step.ipynb`` is run by its DVC stage with the papermill parameters of ``dvc.yaml``
(``params``, ``profile``, ``task``, ``reports``, ``runs``). ``open_step`` opens that task of that profile; the
notebook then calls the step (``TaskStudy.search``, ``.retrain``, ...), which writes the stage's CSV/JSON/PNG under
``<reports>/<profile>/<task>/<step>/``, and shows what it wrote. With ``run_step=False`` it calls no step and only
reads those files: ``render_profile`` re-renders a profile's executed copies that way (``reports/notebooks/<profile>/``,
with an index ``README.md``) on a machine that lacks the profile's checkpoints, in under a minute per notebook.

Each notebook also shows its step on small inputs (``demo_study``: the ``ci`` profile's sizes, in a temporary
folder), so that a reader sees the mechanics even where the profile ran nothing for the task.

``python -m acla.study.notebook PROFILE`` re-renders one profile's copies read-only.
"""

from __future__ import annotations

import argparse
import io
import json
import re
import sys
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from acla.config import Study, load_study
from acla.files import atomic_write_text, slug
from acla.study.steps import TaskStudy, open_task
from acla.study.tables import NETWORKS
from acla.tasks import parse_task

# What a reader meets in each step's folder, and the words for it.
STEP_WORDS = {"search": "insertion search", "retrain": "retraining of the headline models",
              "evaluate": "evaluation on the test sets", "ablation": "ablation", "efficiency": "cost measurement",
              "frontier": "accuracy-against-keys frontier", "module": "key figures of the trained ACLA"}


# ------------------------------------------------------------------------------------------ opening a step
def open_step(task: str, params: str | Path, *, profile: str | None, reports: str | Path,
              runs: str | Path) -> TaskStudy:
    """The task study a notebook's parameters name (``acla.study.steps.open_task``, without progress bars), with
    pandas set to print 4 decimals."""
    pd.set_option("display.precision", 4)
    pd.set_option("display.max_colwidth", 80)
    return open_task(task, params, profile=profile, reports=reports, runs=runs, progress=False)


def runs_step(study: TaskStudy, step: str) -> bool:
    """Whether the study's profile runs ``step`` for its task: it lists a setting for it, and for the frontier a
    point (``frontier.budget_weights`` or ``frontier.cla_num_keys``)."""
    if not study.settings:
        return False
    return study.config.frontier.enabled if step == "frontier" else True


def missing_checkpoint(study: TaskStudy, label: str = "acla") -> bool:
    """Whether the headline trains ``label`` but the checkpoint of its first seed (first setting) is not on this
    machine: ``01_module`` then reads what the module stage wrote instead of drawing the trained keys anew."""
    if not study.settings or label not in study.config.headline.variants:
        return False
    return not (study.run_dir("retrain", study.settings[0], label, study.seeds[0]) / "last.pt").is_file()


def recorded(study: TaskStudy, step: str) -> dict:
    """The ``provenance.json`` the step wrote (empty before it ran)."""
    path = study.reports / step / "provenance.json"
    return json.loads(path.read_text()) if path.is_file() else {}


def about(study: TaskStudy, step: str) -> str:
    """Markdown: what the step ran on (settings, model, budget, seeds) and where and when its outputs were written."""
    config = study.config
    train = config.train
    settings = ", ".join(study.settings) or "none"
    lines = [f"**Profile `{study.study.profile}`, task `{study.name}`**: settings {settings}; "
             f"backbone `{config.model.backbone}`; {train.iterations:,} training iterations (batch {train.batch_size}, "
             f"patch {train.patch_size}) on {', '.join(train.train_sets)}; headline seeds "
             f"{', '.join(map(str, config.headline.seeds))}."]
    info = recorded(study, step)
    if info:
        lines.append(f"Outputs of the {STEP_WORDS.get(step, step)} under `{study.reports / step}`: written "
                     f"{info.get('date', '?')} at commit {info.get('commit', '?')} on {info.get('device', '?')} in "
                     f"{float(info.get('wall_seconds') or 0):.0f} s; data root {info.get('data_root', '?')}.")
    return "\n\n".join(lines)


def plan(study: Study) -> pd.DataFrame:
    """What a profile runs for each task: its settings, the headline models and seeds, the ablation's variants and
    the frontier's points (empty cells: nothing)."""
    rows = []
    for name, task in study.tasks.items():
        ablation = [*task.ablation.attentions, *(f"K={k}" for k in task.ablation.num_keys), *task.ablation.insertions]
        frontier = [*(f"CLA K={k}" for k in task.frontier.cla_num_keys),
                    *(f"ACLA λk={w:g}" for w in task.frontier.budget_weights),
                    *(f"ACLA λk={r.key_budget_weight:g} + {r.name}" for r in task.frontier.remedies)]
        runs = bool(task.settings)
        rows.append({"task": name, "settings": ", ".join(task.settings) or "none (settings: [])",
                     "iterations": task.train.iterations if runs else "",
                     "headline models": ", ".join(task.headline.variants) if runs else "",
                     "seeds": ", ".join(map(str, task.headline.seeds)) if runs else "",
                     "ablation variants": ", ".join(ablation) if runs else "",
                     "frontier points": ", ".join(frontier) if runs and task.frontier.enabled else ""})
    return pd.DataFrame(rows)


def not_run(study: TaskStudy, step: str) -> str:
    """Markdown for a step the profile does not run for this task: why, what the profile runs instead, and where the
    index of its notebooks is."""
    profile = study.study.profile
    why = (f"its `tasks.{study.name}.profiles.{profile}` lists no setting (`settings: []` in params.yaml)"
           if not study.settings else "its `frontier.budget_weights` and `frontier.cla_num_keys` are empty")
    return (f"**Profile `{profile}` runs no {STEP_WORDS.get(step, step)} for `{study.name}`**: {why}. The step wrote "
            f"only `{study.reports / step / 'provenance.json'}` (saying so), so this page has no result of its own; "
            "the cells above show the step on the `ci` profile's small inputs. What the profile "
            "runs:\n\n" + markdown_table(plan(study.study)) + "\n\nThe index of this profile's notebooks, with the "
            "steps each task ran: [README.md](README.md) beside this copy (`reports/notebooks/" + profile + "/`).")


def demo_study(task: str, params: str | Path) -> TaskStudy:
    """The ``ci`` profile of ``task`` with its outputs in a fresh temporary folder: the small inputs (a tiny network,
    a few iterations, scikit-image's bundled images) on which a notebook shows its step in seconds."""
    folder = temporary_folder()
    return open_task(task, params, profile="ci", reports=folder / "reports", runs=folder / "runs", progress=False)


_TEMPORARY: list[tempfile.TemporaryDirectory] = []  # the notebook's scratch folders, removed when its kernel exits


def temporary_folder() -> Path:
    """A fresh folder that lives as long as the notebook's kernel (demonstration outputs, figures to show)."""
    folder = tempfile.TemporaryDirectory(prefix="acla-notebook-")
    _TEMPORARY.append(folder)
    return Path(folder.name)


# ------------------------------------------------------------------------------------------ showing results
def markdown_table(frame: pd.DataFrame) -> str:
    """A frame as a Markdown table (no index), cells as pandas prints them."""
    header = "| " + " | ".join(map(str, frame.columns)) + " |"
    lines = [header, "|" + "---|" * len(frame.columns)]
    for row in frame.itertuples(index=False):
        lines.append("| " + " | ".join("" if pd.isna(v) else (f"{v:.4g}" if isinstance(v, float) else str(v))
                                       for v in row) + " |")
    return "\n".join(lines)


def say(text: str) -> None:
    """Display Markdown written by a cell (a sentence built from the numbers)."""
    from IPython.display import Markdown, display

    display(Markdown(text))


def show_figure(path: str | Path | None, caption: str) -> None:
    """A PNG the pipeline drew, then its caption (what to look for); a short note instead when it was not drawn."""
    from IPython.display import Image, display

    if path is None or not Path(path).is_file():
        say(f"*Not drawn for this profile{f' (`{path}`)' if path else ''}.*")
        return
    display(Image(filename=str(path)))
    say(caption)


def show_plot(figure, caption: str) -> None:
    """A matplotlib figure drawn in the notebook, as a PNG (whatever backend the package selected), then its caption."""
    import matplotlib.pyplot as plt
    from IPython.display import Image, display

    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    plt.close(figure)
    display(Image(data=buffer.getvalue()))
    say(caption)


def image_row(images: Mapping[str, np.ndarray], title: str, size: float = 2.6):
    """Images side by side (uint8 or float, gray or RGB), each titled by its key: a matplotlib figure."""
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, len(images), figsize=(size * len(images), size + 0.5), squeeze=False)
    for axis, (name, image) in zip(axes[0], images.items()):
        image = np.asarray(image)
        gray = image.ndim == 2
        axis.imshow(image if image.dtype != np.float64 else np.clip(image, 0, 255).astype(np.uint8),
                    cmap="gray" if gray else None, vmin=0, vmax=255, interpolation="nearest")
        axis.set_title(name, fontsize=9)
        axis.set(xticks=[], yticks=[])
    figure.tight_layout()
    figure.suptitle(title, fontsize=10, y=1.06)
    return figure


def spread_cell(mean: float, std: float, n: int, digits: int = 3) -> str:
    """``mean ± std (n=…)``; ``mean (one seed)`` without a spread."""
    if n > 1 and not pd.isna(std):
        return f"{mean:.{digits}f} ± {std:.{digits}f} (n={n})"
    return f"{mean:.{digits}f} (one seed)"


def headline_view(top: pd.DataFrame) -> pd.DataFrame:
    """``acla.study.tables.headline`` as a reader's table: per setting and test set the classical row, each network as
    mean ± std over seeds, and each difference from the backbone ± its standard error with whether it exceeds twice
    that."""
    rows = []
    for r in top.to_dict(orient="records"):
        row = {"setting": r["setting"], "set": r["set"], "classical": f"{r['classical']} {r['classical_psnr']:.3f}",
               "backbone": spread_cell(r["backbone_psnr_mean"], r["backbone_psnr_std"], r["backbone_n_seeds"])}
        for method in ("cla", "acla"):
            if f"delta_{method}" in r:
                row[method] = spread_cell(r[f"{method}_psnr_mean"], r[f"{method}_psnr_std"], r[f"{method}_n_seeds"])
                se = r[f"delta_{method}_se"]
                row[f"Δ {method} (dB)"] = f"{r[f'delta_{method}']:+.3f}" + ("" if pd.isna(se) else f" ± {se:.3f}")
                row[f"Δ {method}: noise?"] = r[f"delta_{method}_verdict"]
        rows.append(row)
    return pd.DataFrame(rows)


# ------------------------------------------------------------------------------------------ step figures
def search_figure(alpha_csv: Path, arch: dict):
    """One search: sigma(alpha_j) of every candidate block j over the iterations (kept blocks solid) and the running
    sum of each term's gradient on alpha_j ((S9): reconstruction and cost; below 0 pushes alpha up)."""
    import matplotlib.pyplot as plt

    frame = pd.read_csv(alpha_csv)
    blocks = [c.removeprefix("block_") for c in frame if c.startswith("block_")]
    kept = set(map(str, arch["insert"])) if isinstance(arch.get("insert"), list) else set()
    terms = [("reconstruction", "rec_grad_"), ("cost", "cost_grad_")]
    terms = [(name, prefix) for name, prefix in terms if f"{prefix}{blocks[0]}" in frame]
    figure, axes = plt.subplots(1, 1 + len(terms), figsize=(4.6 * (1 + len(terms)), 3.4), squeeze=False)
    colors = plt.get_cmap("viridis")(np.linspace(0, 0.9, len(blocks)))
    for color, block in zip(colors, blocks):
        style = "-" if block in kept else ":"
        axes[0, 0].plot(frame.iteration, frame[f"block_{block}"], style, color=color, label=f"block {block}")
        for axis, (_, prefix) in zip(axes[0, 1:], terms):
            axis.plot(frame.iteration, frame[f"{prefix}{block}"].cumsum(), style, color=color)
    axes[0, 0].axhline(0.5, color="gray", linewidth=0.8, linestyle="--")
    axes[0, 0].set(xlabel="iteration", ylabel="σ(α_j)", title="σ(α_j) per candidate (solid: kept)")
    axes[0, 0].legend(fontsize=7, ncol=2)
    for axis, (name, _) in zip(axes[0, 1:], terms):
        axis.axhline(0, color="gray", linewidth=0.8)
        axis.set(xlabel="iteration", ylabel="running sum of ∂L/∂α_j", title=f"{name} term's push on α_j")
    figure.tight_layout()
    figure.suptitle(f"{alpha_csv.parent.name}: which blocks did the search keep, and which term of (S9) decided?",
                    fontsize=10, y=1.04)
    return figure


def curves_figure(curves: pd.DataFrame, metrics: Mapping[str, str], title: str, by: str = "variant"):
    """Curves of ``curves.csv`` (long rows: metric, step, value, ``by``, seed): one panel per metric (key: the metric,
    value: its axis label), one line per ``by`` value, the mean over seeds with a band of ± 1 std."""
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, len(metrics), figsize=(4.8 * len(metrics), 3.3), squeeze=False)
    for axis, (metric, label) in zip(axes[0], metrics.items()):
        part = curves[curves.metric == metric]
        for name, group in part.groupby(by, sort=False):
            stats = group.groupby("step").value.agg(["mean", "std"]).reset_index()
            line, = axis.plot(stats.step, stats["mean"], marker="o" if len(stats) <= 40 else None, markersize=3,
                              label=str(name))
            band = stats["std"].fillna(0)
            axis.fill_between(stats.step, stats["mean"] - band, stats["mean"] + band, color=line.get_color(),
                              alpha=0.15)
        axis.set(xlabel="iteration", ylabel=label)
        axis.legend(fontsize=7)
    figure.tight_layout()
    figure.suptitle(title, fontsize=10, y=1.04)
    return figure


def keys_figure(image: np.ndarray, panels: Mapping[str, tuple], queries: list[tuple[int, int]], title: str):
    """Where a module samples the keys of a few query pixels, drawn on ``image`` (H, W[, 3]): one panel per entry of
    ``panels``, each (positions (H, W, R, K, 2) as (x, y) pixels, open (H, W, R*K) bool or None: all open). Star: the
    query; filled dot: an open key; ring: a closed key; one colour per query, one marker size per reference."""
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, len(panels), figsize=(3.6 * len(panels), 3.8), squeeze=False)
    colors = plt.get_cmap("tab10")(np.arange(len(queries)))
    for axis, (name, (positions, opened)) in zip(axes[0], panels.items()):
        axis.imshow(image, cmap="gray" if image.ndim == 2 else None, interpolation="nearest")
        refs, keys = positions.shape[2], positions.shape[3]
        for color, (y, x) in zip(colors, queries):
            for r in range(refs):
                points = np.asarray(positions[y, x, r])  # (K, 2)
                mask = np.ones(keys, bool) if opened is None else np.asarray(opened[y, x, r * keys:(r + 1) * keys])
                size = 28 / (1 + r)
                axis.scatter(points[mask, 0], points[mask, 1], s=size, color=color)
                axis.scatter(points[~mask, 0], points[~mask, 1], s=size, facecolors="none", edgecolors=color)
            axis.scatter([x], [y], marker="*", s=140, color=color, edgecolors="black", linewidths=0.6)
        axis.set(title=name, xticks=[], yticks=[], xlim=(-0.5, image.shape[1] - 0.5), ylim=(image.shape[0] - 0.5, -0.5))
    figure.tight_layout()
    figure.suptitle(title, fontsize=10, y=1.03)
    return figure


def open_key_summary(counts: pd.DataFrame) -> pd.DataFrame:
    """``open_keys.csv`` (block, open_keys, queries, keys_per_query: a histogram per module) as one row per module:
    its R K keys, the mean open keys per query, the fewest and most any query kept, the most common count and the
    share of queries at it (1: every query alike, the gates do not adapt across the image)."""
    rows = []
    for block, group in counts.groupby("block"):
        held = group[group.queries > 0]
        mode = held.loc[held.queries.idxmax()]
        rows.append({"after block": block, "keys (R·K)": int(group.keys_per_query.iloc[0]),
                     "mean open": float((held.open_keys * held.queries).sum() / held.queries.sum()),
                     "fewest": int(held.open_keys.min()), "most": int(held.open_keys.max()),
                     "most common": int(mode.open_keys), "share at it": float(mode.queries / held.queries.sum())})
    return pd.DataFrame(rows)


def temporary_png(name: str) -> Path:
    """A path in a fresh temporary folder, for a figure that ``acla.study.figures`` saves and the notebook shows."""
    return temporary_folder() / name


# ------------------------------------------------------------------------------------------ restored images
def restored_examples(study: TaskStudy, setting: str, labels: list[str],
                      size: int = 96) -> tuple[dict[str, np.ndarray], str]:
    """The centre ``size`` px of a test image (the first of the first test set, or of the saved crops): its network
    input (the task's classical output; for SR, bicubic), each network of ``labels`` (first headline seed) and the
    target, and where they come from: the checkpoints when they are here (restored now), else the crops the
    evaluation saved; empty when neither is."""
    import torch

    from acla.data import open_set
    from acla.engine.evaluate import centre
    from acla.images import restore_image

    checkpoints = all((study.run_dir("retrain", setting, label, study.seeds[0]) / "last.pt").is_file()
                      for label in labels)
    if checkpoints:
        task = parse_task(setting)
        config = study.run_config(setting)
        set_name = study.test_sets(setting)[0]
        image_set = open_set(set_name, study.data_root, verify=config.data.verify, crop=config.evaluate.crop)
        target, degraded = task.benchmark_pair(image_set.read(0), set_name, image_set.image_names()[0],
                                               config.train.seed)
        shown = {f"input ({name})": output for name, output in task.classical(degraded).items()}
        for label in labels:
            with torch.no_grad():
                shown[label] = restore_image(study.model(setting, label), degraded, target, task.channels, study.device)
        where = (f"{image_set.label}/{image_set.image_names()[0]}, restored now from the checkpoints "
                 f"(seed {study.seeds[0]})")
        return {name: centre(image, size) for name, image in (shown | {"target": target}).items()}, where
    folder = study.reports / "evaluate" / setting
    truth = sorted((folder / "ground_truth" / "crops").glob("*.png"))
    if not truth:
        return {}, ""
    from PIL import Image

    networks = [slug(label) for label in labels]
    skipped = ("ground_truth", "keys", *NETWORKS)
    inputs = [m.name for m in sorted(folder.iterdir()) if m.is_dir() and m.name not in skipped]
    found = {}
    for name in [*inputs, *networks, "ground_truth"]:
        path = folder / name / "crops" / truth[0].name
        if path.is_file():
            key = ("target" if name == "ground_truth" else name if name in networks
                   else f"input ({name.replace('_', ' ')})")
            found[key] = np.asarray(Image.open(path))
    return found, (f"{truth[0].stem}: the crops the evaluation saved (seed {study.seeds[0]}; no checkpoint on this "
                   "machine)")


# ------------------------------------------------------------------------------------------ re-rendering copies
@dataclass(frozen=True)
class Copy:
    """One executed copy of a notebook for one profile (and task): its file name, the parameters it runs with, and
    what the step recorded for it (``ran``, ``not run``, or ``no outputs``)."""

    notebook: str
    name: str
    task: str
    step: str
    parameters: dict
    status: str


NOTEBOOKS = ("00_classical", "01_module", "02_search", "03_retrain", "04_evaluate", "05_ablation", "06_efficiency",
             "07_report", "08_frontier")
PER_TASK = {"02_search": "search", "03_retrain": "retrain", "04_evaluate": "evaluate", "05_ablation": "ablation",
            "06_efficiency": "efficiency", "08_frontier": "frontier"}


def step_status(folder: Path) -> str:
    """``ran`` / ``not run`` (the step recorded ``skipped``) / ``no outputs`` for a step's folder."""
    path = folder / "provenance.json"
    if not path.is_file():  # a step of an older pipeline wrote its outputs without provenance
        return "ran" if folder.is_dir() and any(folder.iterdir()) else "no outputs"
    return "not run" if json.loads(path.read_text()).get("skipped") else "ran"


def profile_copies(profile: str, *, params: str = "params.yaml", reports: Path = Path("reports"),
                   paper_tables: str = "../shared/paper/tables") -> list[Copy]:
    """Every copy ``dvc.yaml`` writes for ``profile``, with the read-only parameters (``run_step=False``) that
    re-render it from ``reports/``; the paths are relative to the repository root (papermill's ``--cwd``)."""
    study_dir = reports / "study" / profile
    tables = reports / "tables" / profile
    common = {"params": params, "profile": profile, "run_step": False}
    copies = [Copy("00_classical", "00_classical", "", "classical", common | {"out": str(tables / "classical.csv")},
                   "ran" if (tables / "classical.csv").is_file() else "no outputs"),
              Copy("01_module", "01_module", "sr", "module",
                   common | {"task": "sr", "reports": str(reports / "study"), "runs": "runs", "trained": True,
                             "out": str(study_dir / "sr" / "module")}, step_status(study_dir / "sr" / "module"))]
    for notebook, step in PER_TASK.items():
        for task in ("sr", "denoise", "demosaic", "jpeg"):
            copies.append(Copy(notebook, f"{notebook}_{task}", task, step,
                               common | {"task": task, "reports": str(reports / "study"), "runs": "runs"},
                               step_status(study_dir / task / step)))
    copies.append(Copy("07_report", "07_report", "", "report",
                       {"study": str(study_dir), "out": str(reports), "paper_tables": paper_tables,
                        "classical_md": str(tables / "classical.md"), "run_step": False},
                       "ran" if (tables / "section.md").is_file() else "no outputs"))
    return sorted(copies, key=lambda c: (NOTEBOOKS.index(c.notebook), c.name))


def relink(notebook: Path) -> None:
    """Point the Markdown cells' relative links, written for ``notebooks/``, at the same files from a copy under
    ``reports/notebooks/<profile>/`` (two folders deeper): ``../docs/method.md`` becomes ``../../../docs/method.md``."""
    import nbformat

    book = nbformat.read(notebook, as_version=4)
    for cell in book.cells:
        if cell.cell_type == "markdown":
            cell.source = re.sub(r"\]\(\.\./", "](../../../", cell.source)
    nbformat.write(book, notebook)


def render_profile(profile: str, *, root: Path = Path("."), only: tuple[str, ...] = (),
                   paper_tables: str = "../shared/paper/tables") -> Path:
    """Re-render ``profile``'s executed copies read-only (``run_step=False``: no step runs, nothing under ``reports/``
    but the copies and the index changes) into ``reports/notebooks/<profile>/``, then write its index ``README.md``.
    ``only``: the copies to render (file names without ``.ipynb``; default every copy whose step left outputs)."""
    import papermill

    root = Path(root).resolve()
    out = root / "reports" / "notebooks" / profile
    out.mkdir(parents=True, exist_ok=True)
    copies = profile_copies(profile, reports=Path("reports"), paper_tables=paper_tables)
    for copy in copies:
        if copy.status == "no outputs" or (only and copy.name not in only):
            continue
        target = out / f"{copy.name}.ipynb"
        papermill.execute_notebook(str(root / "notebooks" / f"{copy.notebook}.ipynb"), str(target),
                                   parameters=copy.parameters, cwd=str(root), progress_bar=False, log_output=False)
        relink(target)
    atomic_write_text(out / "README.md", index_markdown(profile, copies, out))
    return out / "README.md"


NOTEBOOK_WORDS = {"00_classical": "classical rows: the degradations and the floor every network must beat",
                  "01_module": "the method, equation by equation, on a real image; the trained model's keys",
                  "02_search": "where to insert the modules: the supernet, α and the derived architecture",
                  "03_retrain": "the backbone and +ACLA trained at the same budget: curves and a restored image",
                  "04_evaluate": "test-set scores, per image, with crops and the difference's standard error",
                  "05_ablation": "one change at a time: modules, K, placement",
                  "06_efficiency": "parameters, FLOPs, memory and latency of every variant",
                  "07_report": "the verdict on each claim, with the figure that decides it",
                  "08_frontier": "accuracy against keys per query, and whether the gates adapt"}


def index_markdown(profile: str, copies: list[Copy], folder: Path) -> str:
    """The index of a profile's executed copies: one row per notebook, one column per task, each cell the copy's link
    and what its step did (ran / not run in this profile / no outputs recorded)."""
    from acla.study.report import PROFILE_NOTES

    def cell(copy: Copy) -> str:
        present = (folder / f"{copy.name}.ipynb").is_file()
        link = f"[{copy.name}]({copy.name}.ipynb)" if present else copy.name
        if copy.status == "ran":
            return link
        if copy.status == "not run":
            return f"not run in this profile ({link}: why, and the step on small inputs)" if present else "not run"
        return "no outputs recorded (no copy)"

    lines = [f"# Notebooks of profile `{profile}`\n",
             f"The executed copies of [`notebooks/`](../../../notebooks/) for profile `{profile}`"
             + (f" ({PROFILE_NOTES[profile]})" if profile in PROFILE_NOTES else "") + ". Its tables and figures: "
             f"[`reports/README.md`](../../README.md#profile-{profile}). Read in order: each step uses the one "
             "before.\n",
             "| notebook | what it shows | " + " | ".join(("sr", "denoise", "demosaic", "jpeg")) + " |",
             "|---|---|---|---|---|---|"]
    for notebook in NOTEBOOKS:
        mine = [c for c in copies if c.notebook == notebook]
        if notebook in PER_TASK:
            cells = [cell(next(c for c in mine if c.task == task)) for task in ("sr", "denoise", "demosaic", "jpeg")]
        else:
            cells = [cell(mine[0]), "", "", ""]
        lines.append(f"| `{notebook}` | {NOTEBOOK_WORDS[notebook]} | " + " | ".join(cells) + " |")
    not_run = sorted({c.task for c in copies if c.status == "not run" and c.task})
    lines += ["",
              "*not run*: the profile lists no setting for the task (`settings: []` in params.yaml) or, for the "
              "frontier, no point; the copy says so, lists what the profile runs, and still shows the step on the "
              "`ci` profile's small inputs." + (f" Tasks with a step not run here: {', '.join(not_run)}." if not_run
                                                  else ""),
              "",
              "*no outputs recorded*: the profile's study under `reports/study/" + profile + "/` holds no output of "
              "that step (it was run before the step existed), so there is nothing to show and no copy.",
              "",
              "These copies were re-rendered read-only (`python -m acla.study.notebook " + profile + "`, parameter "
              "`run_step=False`): no step ran; each notebook read the CSV/JSON/PNG files that the profile's stages "
              "wrote under `reports/study/" + profile + "/` (the provenance line of each copy says when, where and at "
              "which commit), and ran its small demonstrations at the `ci` size. The checkpoints under `runs/` were "
              "not on the machine that rendered them, so the restored images are the crops the evaluation saved. "
              "`dvc repro` re-creates the copies with the steps run (`run_step=True`).", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m acla.study.notebook", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("profile", help="a profile with outputs under reports/study/<profile>/")
    parser.add_argument("--only", nargs="*", default=(), help="copy names to render (e.g. 02_search_sr); default all")
    args = parser.parse_args(argv)
    load_study("params.yaml", args.profile)  # an unknown profile is refused by name
    print(render_profile(args.profile, only=tuple(args.only)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
