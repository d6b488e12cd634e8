"""The study's tables as data frames: measured rows beside published ones, with their spread over seeds.

Published numbers are read from files (``acla/resources/published_*.csv`` for the classical rows the
literature agrees on and for other methods' published results, each row citing its source;
``../shared/paper/tables/*.csv`` for the paper's own tables once someone transcribes them) and never
typed into code. A row whose set is partial is never compared with a full-set published number.
``acla.study.report`` renders these frames as Markdown pages and ``acla.study.figures`` draws them.
"""

from __future__ import annotations

import json
import re
from importlib import resources
from pathlib import Path

import numpy as np
import pandas as pd

from acla.study.classical import task_columns
from acla.tasks import parse_task

KEY = ["task", "set", "setting", "method"]


def published_classical() -> pd.DataFrame:
    with resources.files("acla.resources").joinpath("published_classical.csv").open() as handle:
        return pd.read_csv(handle)


def compare(measured: pd.DataFrame, published: pd.DataFrame) -> pd.DataFrame:
    """Measured rows with ``paper_psnr``/``paper_ssim`` and deltas where a published row exists."""
    merged = measured.merge(published.drop(columns=["source"], errors="ignore"), on=KEY, how="left",
                            suffixes=("", "_published"))
    merged = merged.rename(columns={"psnr_published": "published_psnr", "ssim_published": "published_ssim"})
    merged["delta_psnr"] = merged["psnr"] - merged["published_psnr"]
    merged["delta_ssim"] = merged["ssim"] - merged["published_ssim"]
    return merged


PAPER_KEY = ["setting", "method", "set"]

BACKBONE_NAMES = {"tiny": "tiny EDSR (8x32)", "edsr-baseline": "EDSR-baseline", "edsr": "EDSR"}


def _normalise(text: str) -> str:
    """Method/set names compared without case, spaces, dashes or plus signs ("EDSR-baseline + ACLA")."""
    return "".join(ch for ch in str(text).lower() if ch.isalnum())


def read_paper_tables(folder: Path | None) -> tuple[pd.DataFrame, list[str]]:
    """Rows (setting, method, set, psnr, ssim, source) of every paper-table CSV in ``folder``.

    A CSV is read when it has the columns ``setting`` (``sr_x2``, ``denoise_color_s30``, ...), ``method``,
    ``set`` and ``psnr`` and/or ``ssim`` ("—" or empty for a blank). Other CSVs are listed in the notes,
    never guessed at. A missing folder or no CSV gives an empty frame: every paper cell is then "n/a".
    """
    columns = PAPER_KEY + ["psnr", "ssim", "source"]
    notes: list[str] = []
    frames = []
    for path in sorted(folder.glob("*.csv")) if folder and folder.is_dir() else []:
        frame = pd.read_csv(path, na_values=["—", "-", ""], keep_default_na=True)
        frame.columns = [str(c).strip().lower() for c in frame.columns]
        if not set(PAPER_KEY) <= set(frame.columns) or not {"psnr", "ssim"} & set(frame.columns):
            notes.append(f"{path.name}: not read (columns {list(frame.columns)}; expected setting, method, set, psnr/ssim)")
            continue
        for column in ("psnr", "ssim"):
            frame[column] = pd.to_numeric(frame.get(column), errors="coerce")
        frames.append(frame.assign(source=path.name)[columns])
        notes.append(f"{path.name}: {len(frame)} rows read")
    paper = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=columns)
    return paper, notes


def method_label(method: str, backbone: str) -> str:
    """Display name of a row of the task tables: classical methods keep theirs; networks name the backbone."""
    name = BACKBONE_NAMES.get(backbone, backbone)
    return {"backbone": name, "acla": f"{name} + ACLA"}.get(method, method)


def stage_provenance(task_dir: Path, step: str) -> dict:
    path = task_dir / step / "provenance.json"
    return json.loads(path.read_text()) if path.is_file() else {}


def seed_spread(frame: pd.DataFrame, by: list[str], values: list[str]) -> pd.DataFrame:
    """Mean, sample std (ddof 1; NaN for one seed), n and the per-seed values of ``values`` over the rows of each
    ``by`` group: the one place every table and headline gets its spread from. Rows without a ``seed``
    column (or with NaN seeds: classical methods) count as one draw."""
    records = []
    for key, group in frame.groupby(by, sort=False, dropna=False):
        record = dict(zip(by, key if isinstance(key, tuple) else (key,)))
        seeds = group["seed"] if "seed" in group else pd.Series([float("nan")] * len(group))
        record["n_seeds"] = int(seeds.notna().sum())
        record["seeds"] = " ".join(str(int(v)) for v in seeds.dropna())
        for value in values:
            column = group[value].astype(float)
            record[f"{value}_mean"] = column.mean()
            record[f"{value}_std"] = column.std(ddof=1) if len(column) > 1 else float("nan")
            record[f"{value}_per_seed"] = " ".join(f"{v:.4f}" for v in column)
        if "n_images" in group:
            record["n_images"] = group["n_images"].iloc[0]
        records.append(record)
    return pd.DataFrame(records)


def published_results() -> pd.DataFrame:
    """Published results of well-known methods (``acla/resources/published_results.csv``), each row citing its
    paper and table; empty when the file is absent."""
    columns = ["task", "set", "setting", "method", "psnr", "ssim", "source", "citation"]
    path = resources.files("acla.resources").joinpath("published_results.csv")
    if not path.is_file():
        return pd.DataFrame(columns=columns)
    with path.open() as handle:
        return pd.read_csv(handle)


NETWORKS = ("backbone", "acla", "cla")


def _scores(task_dir: Path) -> pd.DataFrame:
    scores = pd.read_csv(task_dir / "evaluate" / "scores.csv")
    return scores if "seed" in scores else scores.assign(seed=float("nan"))


def task_table(task_dir: Path, paper: pd.DataFrame) -> pd.DataFrame:
    """One task's rows (setting x test set x method): ours as mean ± std over seeds (per-seed values kept),
    the classical rows, the literature rows of the same benchmark (never beside a partial set) and the
    paper's, with profile and stage columns."""
    info = stage_provenance(task_dir, "evaluate")
    backbone = info.get("model", {}).get("backbone", "?")
    published = published_classical()
    literature = published_results()
    spread = seed_spread(_scores(task_dir), ["setting", "set", "method"], ["psnr", "ssim"])
    rows = []
    for row in spread.itertuples(index=False):
        label = method_label(row.method, backbone)
        network = row.method in NETWORKS
        match = paper[(paper.setting == row.setting) & (paper.set.map(_normalise) == _normalise(row.set))
                      & (paper.method.map(_normalise) == _normalise(label))]
        paper_psnr = paper_ssim = float("nan")
        source = ""
        if len(match):
            paper_psnr, paper_ssim, source = match.psnr.iloc[0], match.ssim.iloc[0], match.source.iloc[0]
            if len(match) > 1:  # the same row in several tables: the first file (sorted) wins, and says so
                source += f" (first of {len(match)} matches: {', '.join(match.source)})"
        elif not network:
            kind, short = task_columns(parse_task(row.setting))
            known = published[(published.task == kind) & (published.setting == short) & (published.set == row.set)
                              & (published.method == row.method)]
            if len(known):
                paper_psnr, paper_ssim, source = known.psnr.iloc[0], known.ssim.iloc[0], "published classical row"
        stage = f"evaluate@{task_dir.name}" + ("" if network else " (classical method)")
        rows.append({"setting": row.setting, "set": row.set, "method": label, "kind": "ours" if network else "classical",
                     "n_images": row.n_images, "n_seeds": row.n_seeds if network else 0,
                     "paper_psnr": paper_psnr, "ours_psnr": row.psnr_mean, "ours_psnr_std": row.psnr_std,
                     "delta_psnr": row.psnr_mean - paper_psnr, "paper_ssim": paper_ssim, "ours_ssim": row.ssim_mean,
                     "ours_ssim_std": row.ssim_std, "delta_ssim": row.ssim_mean - paper_ssim,
                     "psnr_per_seed": row.psnr_per_seed if network else "", "seeds": row.seeds,
                     "profile": info.get("profile", "?"), "device": info.get("device", "?"), "stage": stage,
                     "paper_source": source or "n/a"})
        if row.method == "backbone":  # the literature rows of this benchmark, once per (setting, set)
            rows += literature_rows(literature, row.setting, row.set)
    return pd.DataFrame(rows)


def literature_key(setting: str) -> tuple[str, str]:
    """``published_results.csv``'s (task, setting) for one of ours: ``sr_x2`` -> (sr, x2), ``denoise_gray_s25``
    -> (denoise, gray_s25), ``jpeg_q20`` on gray images -> (jpeg, gray_q20), ``demosaic`` -> (demosaic, demosaic)."""
    task = parse_task(setting)
    rest = setting.split("_", 1)[1] if "_" in setting else setting
    if task.kind == "jpeg":
        rest = f"{'gray' if task.color == 'gray' else 'color'}_{rest}"
    return task.kind, rest


def published_for(setting: str, set_name: str, methods: tuple[str, ...]) -> pd.DataFrame:
    """The published rows (``published_results``) of ``methods`` for one of our settings on one set: the values
    the report and the figures draw beside ours (SRCNN and VDSR on Set5 for ``sr_x2``, ...)."""
    kind, short = literature_key(setting)
    literature = published_results()
    return literature[(literature.task == kind) & (literature.setting == short) & (literature.set == set_name)
                      & literature.method.isin(methods)]


def literature_rows(literature: pd.DataFrame, setting: str, set_label: str) -> list[dict]:
    """Published rows of other methods for ``setting`` on the set labelled ``set_label``, marked as literature.
    A partial or cropped set (``Urban100 (partial 19/100)``) matches nothing: a full-set number is never
    put beside it."""
    kind, short = literature_key(setting)
    found = literature[(literature.task == kind) & (literature.setting == short) & (literature.set == set_label)]
    return [{"setting": setting, "set": set_label, "method": r.method, "kind": "literature", "n_images": float("nan"),
             "n_seeds": float("nan"), "paper_psnr": float("nan"), "ours_psnr": r.psnr, "ours_psnr_std": float("nan"),
             "delta_psnr": float("nan"), "paper_ssim": float("nan"), "ours_ssim": r.ssim, "ours_ssim_std": float("nan"),
             "delta_ssim": float("nan"), "psnr_per_seed": "", "seeds": "", "profile": "literature", "device": "",
             "stage": "acla/resources/published_results.csv", "paper_source": r.source}
            for r in found.itertuples(index=False)]


def difference_se(std_a, n_a, std_b, n_b):
    """The standard error of a difference of two means over independent seeds, sqrt(s_a²/n_a + s_b²/n_b): the one
    spread every Δ of the tables, sentences and verdict carries (scalars or Series)."""
    return np.sqrt(std_a ** 2 / n_a + std_b ** 2 / n_b)


def noise_word(delta: float, se: float) -> str:
    """Whether a difference exceeds twice its standard error ("n/a (one seed)" when that is unknown)."""
    if pd.isna(se):
        return "n/a (one seed)"
    return "exceeds noise" if abs(delta) > 2 * se else "within noise"


def headline(task_dir: Path) -> pd.DataFrame:
    """Every network against the backbone at equal training budget, per setting and test set: mean ± std over
    seeds, the classical row, and each difference with its standard error (independent seeds:
    sqrt(s_a²/n_a + s_b²/n_b)); "exceeds noise" when |Δ| is more than twice that."""
    scores = _scores(task_dir)
    networks = seed_spread(scores[scores.method.isin(NETWORKS)], ["setting", "set", "method"], ["psnr", "ssim"])
    if networks.empty:
        return pd.DataFrame()
    # the task's last classical method (bicubic, noisy input, bilinear, JPEG input): scores.csv keeps their order
    classical = scores[~scores.method.isin(NETWORKS)].groupby(["setting", "set"]).last().reset_index()
    wide = classical[["setting", "set", "method", "psnr"]].rename(columns={"method": "classical", "psnr": "classical_psnr"})
    for method in [m for m in NETWORKS if m in set(networks.method)]:
        part = networks[networks.method == method][["setting", "set", "psnr_mean", "psnr_std", "n_seeds",
                                                     "psnr_per_seed", "ssim_mean"]]
        part = part.rename(columns={c: f"{method}_{c}" for c in part.columns if c not in ("setting", "set")})
        wide = wide.merge(part, on=["setting", "set"], how="right" if method == "backbone" else "left")
    for method in ("acla", "cla"):
        if f"{method}_psnr_mean" in wide:
            error = difference_se(wide[f"{method}_psnr_std"].fillna(0), wide[f"{method}_n_seeds"],
                                  wide["backbone_psnr_std"].fillna(0), wide["backbone_n_seeds"])
            wide[f"delta_{method}"] = wide[f"{method}_psnr_mean"] - wide["backbone_psnr_mean"]
            wide[f"delta_{method}_se"] = error.where(wide[f"{method}_n_seeds"].gt(1) & wide["backbone_n_seeds"].gt(1))
            wide[f"delta_{method}_verdict"] = [noise_word(d, se) for d, se in
                                               zip(wide[f"delta_{method}"], wide[f"delta_{method}_se"])]
    runs = pd.read_csv(task_dir / "retrain" / "runs.csv")
    wide["iterations"] = runs.iterations.iloc[0]
    return wide


def not_above_classical(top: pd.DataFrame) -> list[str]:
    """Network rows whose mean is not above the classical row by more than their seed spread (std; with one
    seed, any margin counts)."""
    found = []
    for r in top.to_dict(orient="records"):
        for m in NETWORKS:
            if f"{m}_psnr_mean" in r and not pd.isna(r[f"{m}_psnr_mean"]):
                margin = r[f"{m}_psnr_mean"] - r["classical_psnr"]
                spread = 0.0 if pd.isna(r[f"{m}_psnr_std"]) else r[f"{m}_psnr_std"]
                if not margin > spread:
                    found.append(f"{m} on {r['set']} ({r['setting']}): {margin:+.3f} dB over {r['classical']}, "
                                 f"std {spread:.3f}")
    return found


def budget_to_reach(curves: pd.DataFrame, target: float) -> dict:
    """Where a validation curve (``val/psnr`` against ``step``, mean over seeds) stands against ``target``:
    the last value, the first step that reached it, or else the step at which a straight-line fit of PSNR
    against log(step) over the curve's second half would reach it (an extrapolation, said as one)."""
    curve = curves[curves.metric == "val/psnr"].groupby("step").value.mean().sort_index()
    if curve.empty:
        return {}
    reached = curve[curve >= target]
    result = {"last_step": int(curve.index[-1]), "last_psnr": float(curve.iloc[-1]), "target": target}
    if len(reached):
        return result | {"reached_at": int(reached.index[0])}
    half = curve[curve.index >= curve.index[-1] / 2]
    if len(half) >= 2:
        result["db_per_doubling"], reach = log_linear_reach(half, target)
        if reach is not None:
            result["extrapolated_step"] = reach
    return result


def log_linear_reach(psnr: pd.Series, target: float) -> tuple[float, float | None]:
    """The least-squares line of PSNR (values) against log2 of its index (steps or budgets): its gain per doubling
    and the step at which it reaches ``target`` (None when the line does not rise)."""
    slope, intercept = np.polyfit(np.log2(psnr.index.to_numpy(dtype=float)), psnr.to_numpy(), 1)
    return float(slope), (float(2 ** ((target - intercept) / slope)) if slope > 0 else None)


def budget_fit(points: pd.DataFrame, target: float, start: int) -> dict:
    """Final PSNR of whole schedules against their length (``iterations``, ``val_psnr``; seeds averaged) against
    ``target``: the smallest budget whose mean reached it, or else where two straight lines of PSNR against
    log2(iterations) would reach it: the least-squares line through the budgets >= ``start`` and the line
    through the two longest budgets (returns per doubling shrink as budgets grow, so both are lower bounds)."""
    means = points.groupby("iterations").val_psnr.mean().sort_index()
    if means.empty:
        return {}
    result = {"budgets": [int(b) for b in means.index], "psnr": [float(v) for v in means], "target": target}
    reached = means[means >= target]
    if len(reached):
        return result | {"reached_at": int(reached.index[0])}
    upper = means[means.index >= start]
    for name, part in (("fit", upper), ("last_pair", means.iloc[-2:])):
        if len(part) < 2:
            continue
        result[f"{name}_db_per_doubling"], reach = log_linear_reach(part, target)
        if reach is not None:
            result[f"{name}_budget"] = reach
    return result


def ablation_table(task_dir: Path) -> pd.DataFrame:
    ablation = pd.read_csv(task_dir / "ablation" / "ablation.csv")
    efficiency_csv = task_dir / "efficiency" / "efficiency.csv"
    if efficiency_csv.is_file():
        efficiency = pd.read_csv(efficiency_csv)[["setting", "variant", "flops", "latency_s", "input", "device"]]
        ablation = ablation.merge(efficiency, on=["setting", "variant"], how="left")
        ablation["gflops"] = ablation.flops / 1e9
        ablation["latency_ms"] = ablation.latency_s * 1e3
    backbone = ablation[ablation.variant == "backbone"].groupby("setting").val_psnr.mean()
    ablation["delta_vs_backbone"] = ablation.val_psnr - ablation.setting.map(backbone)
    ablation["num_keys"] = ablation.num_keys.map(lambda k: "" if pd.isna(k) else str(int(k)))
    return ablation


def profile_summary(profile_dir: Path) -> dict:
    """Profile, devices, torch, commits, dates and total wall time of one profile's study folder, from the
    ``provenance.json`` of every stage (and the classical rows'), and what it trained (``training_scale``)."""
    records = [json.loads(p.read_text()) for p in sorted(profile_dir.glob("*/*/provenance.json"))]
    classical = profile_dir.parents[1] / "tables" / profile_dir.name / "classical_provenance.json"
    if classical.is_file():
        records.append(json.loads(classical.read_text()))

    def values(key: str) -> str:
        found = sorted({str(r.get(key, "?")) for r in records})
        if key == "date" and len(found) > 1:  # the span of the stages, not every stage's date
            return f"{found[0]} – {found[-1]}"
        return ", ".join(found) or "?"

    return {"profile": profile_dir.name, "device": values("device"), "torch": values("torch"),
            "commit": values("commit"), "date": values("date"), "data_root": values("data_root"),
            "wall_seconds": sum(float(r.get("wall_seconds") or 0) for r in records), "stages": len(records),
            "scale": training_scale(profile_dir)}


def training_scale(study: Path) -> dict:
    """What a profile trained, from its stages' provenance and CSVs: the backbones, iterations and training sets, and
    the seeds per stage (headline, frontier, ablation) with the headline's variants."""
    backbones, iterations, train_sets, seeds, headline_variants = set(), set(), set(), {}, set()

    def count(stage: str, n: int) -> None:
        low, high = seeds.get(stage, (n, n))
        seeds[stage] = (min(low, n), max(high, n))

    for task_dir in sorted(p for p in study.iterdir() if p.is_dir()) if study.is_dir() else []:
        info = stage_provenance(task_dir, "retrain")
        if not info or info.get("skipped"):
            continue
        backbones.add(BACKBONE_NAMES.get(info["model"]["backbone"], info["model"]["backbone"]))
        iterations.add(int(info["train"]["iterations"]))
        train_sets.update(info["train"]["train_sets"])
        count("headline", len(info.get("seeds", [])))
        headline_variants.update(info.get("headline", []))
        for stage in ("frontier", "ablation"):
            csv = task_dir / stage / f"{stage}.csv"
            runs = pd.read_csv(csv) if csv.is_file() else pd.DataFrame()
            if len(runs) and (stage == "frontier" or not set(runs.variant) <= set(NETWORKS)):  # not the headline's
                count(stage, int(runs.groupby("variant").seed.nunique().max()))
                iterations.update(int(i) for i in runs.iterations.unique())
    return {"backbones": sorted(backbones), "iterations": sorted(iterations), "train_sets": sorted(train_sets),
            "seeds": {stage: list(span) for stage, span in seeds.items()},
            "headline": [v for v in NETWORKS if v in headline_variants]}


def number_cell(value: object, digits: int = 4, signed: bool = False) -> str:
    if isinstance(value, str):
        return value
    if value is None or pd.isna(value):
        return "n/a"
    return f"{value:+.{digits}f}" if signed else f"{value:.{digits}f}"


def markdown(frame: pd.DataFrame, columns: dict[str, tuple[str, int, bool]]) -> str:
    """A Markdown table of ``frame``: column -> (header, digits, signed)."""
    lines = ["| " + " | ".join(h for h, _, _ in columns.values()) + " |", "|" + "---|" * len(columns)]
    for record in frame.to_dict(orient="records"):
        lines.append("| " + " | ".join(number_cell(record.get(c), d, sign) for c, (_, d, sign) in columns.items()) + " |")
    return "\n".join(lines) + "\n"


def frontier_table(task_dir: Path) -> pd.DataFrame:
    """The accuracy-against-keys frontier (``frontier/frontier.csv``): per setting, budget, point and test set the
    PSNR as mean ± std over seeds (per-seed values kept), ACLA's open keys per query (mean over the modules; CLA
    keeps every key), the share of queries at each module's most common count (the smallest and the largest over
    the modules) and
    the inference GFLOPs with closed keys skipped; ``gates_moving`` says whether an ACLA point's open keys still
    changed over the last two validations of its training (then its point is a transient, not a converged one);
    ``departures`` names the gate options of a remedy that depart from the recipe (docs/method.md#recipe) (empty: the recipe)."""
    path = task_dir / "frontier" / "frontier.csv"
    if not path.is_file():
        return pd.DataFrame()
    runs = pd.read_csv(path)
    if runs.empty:
        return runs
    values = ["psnr", "ssim", "val_psnr", "open_keys", "gflops", "mode_share_min", "mode_share_max"]
    values += [column for column in ("adaptive_modules",) if column in runs]
    table = seed_spread(runs, ["setting", "iterations", "variant", "set"], values)
    extra = {"modules": ("modules", "first")} if "modules" in runs else {}
    if "departures" in runs:
        runs["departures"] = departure_labels(runs)
        extra["departures"] = ("departures", "first")
    if "key_budget" in runs:  # (S8) the budget's form of the ACLA points (empty for the others; linear before it existed)
        runs["key_budget"] = ["linear" if a == "acla" and (pd.isna(f) or f == "") else "" if pd.isna(f) else f
                              for a, f in zip(runs.attention, runs.key_budget)]
        extra["key_budget"] = ("key_budget", "first")
    table = table.merge(runs.groupby(["setting", "iterations", "variant"], sort=False).agg(
        attention=("attention", "first"), num_keys=("num_keys", "first"), key_budget_weight=("key_budget_weight", "first"),
        keys_per_query=("keys_per_query", "first"), **extra).reset_index(), on=["setting", "iterations", "variant"])
    moving = gates_moving(task_dir / "frontier" / "curves.csv")
    table["gates_moving"] = [moving.get((s, i, v), "") for s, i, v in zip(table.setting, table.iterations, table.variant)]
    return table


def training_length(task_dir: Path) -> pd.DataFrame:
    """Accuracy against training length, from a frontier trained at several budgets (whole schedules):
    per setting, test set, budget and point trained at more than one budget, its PSNR (mean ± std over seeds) and
    its difference from the backbone at the same budget with the standard error of independent seeds,
    sqrt(s_a²/n_a + s_b²/n_b). Empty unless the backbone was trained at two budgets or more."""
    path = task_dir / "frontier" / "frontier.csv"
    if not path.is_file():
        return pd.DataFrame()
    runs = pd.read_csv(path)
    if runs.empty or runs[runs.attention == "none"].iterations.nunique() < 2:
        return pd.DataFrame()
    table = seed_spread(runs, ["setting", "set", "iterations", "variant"], ["psnr"])
    long = table.groupby(["setting", "variant"]).iterations.transform("nunique") > 1
    table = table[long].copy()
    backbone = table[table.variant == "backbone"].set_index(["setting", "set", "iterations"])
    keys = list(zip(table.setting, table.set, table.iterations))
    for column in ("psnr_mean", "psnr_std", "n_seeds"):
        table[f"backbone_{column}"] = [backbone[column].get(key, np.nan) for key in keys]
    table["delta"] = table.psnr_mean - table.backbone_psnr_mean
    table["delta_se"] = difference_se(table.psnr_std, table.n_seeds, table.backbone_psnr_std, table.backbone_n_seeds)
    table["verdict"] = [noise_word(d, e) for d, e in zip(table.delta, table.delta_se)]
    return table.sort_values(["setting", "set", "variant", "iterations"], ignore_index=True)


def variant_label(variant: str) -> str:
    """A frontier point's name as the pages and figures write it: ``acla lk=0.001`` -> ``ACLA λk=0.001`` (the CSVs
    keep ASCII names); the budget weight of a target form is its w (``ACLA w=0.01 + target t=0.5``), and the
    lagrangian form, whose multipliers are learned, has none (``ACLA + lagrangian t=0.5``)."""
    label = re.sub(r"\b(acla|cla)\b", lambda m: m.group(1).upper(), str(variant))
    label = re.sub(r" lk=[^ ]+ \+ lagrangian", " + lagrangian", label)
    if re.search(r"\+ (open )?target", label):
        return label.replace("lk=", "w=")
    return label.replace("lk=", "λk=")


def split_departures(points: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Frontier rows trained with the recipe, and those of the remedies (a non-empty ``departures``)."""
    departs = departure_labels(points).astype(bool)
    return points[~departs], points[departs]


def departure_labels(points: pd.DataFrame) -> pd.Series:
    """The ``departures`` column as text, empty for the recipe (a CSV reads an all-empty column as NaN)."""
    if "departures" not in points:
        return pd.Series("", index=points.index)
    return pd.Series(["" if pd.isna(value) else str(value) for value in points.departures], index=points.index)


def gates_moving(curves_csv: Path, tolerance: float = 0.05) -> dict[tuple[str, int, str], str]:
    """(setting, iterations, variant) -> "yes" when some ACLA module's mean open keys per query (on the validation
    images) changed by more than ``tolerance`` keys between the last two validations of some seed, else "no"."""
    if not curves_csv.is_file():
        return {}
    curves = pd.read_csv(curves_csv)
    if curves.empty or "metric" not in curves:
        return {}
    return {(setting, int(iterations), variant): verdict for (setting, iterations, variant), verdict
            in moving_gates(curves, ["setting", "iterations", "variant"], tolerance).items()}


def moving_gates(curves: pd.DataFrame, keys: list[str], tolerance: float = 0.05) -> dict[tuple, str]:
    """``gates_moving`` of long curves (metric, step, value, seed and ``keys``), grouped by ``keys``."""
    opened = curves[curves.metric.str.endswith("/open_mean")]
    verdicts: dict[tuple, str] = {}
    for group_keys, group in opened.groupby([*keys, "seed", "metric"]):
        values = group.sort_values("step").value.to_numpy()
        changed = len(values) >= 2 and abs(values[-1] - values[-2]) > tolerance
        key = tuple(group_keys[:len(keys)])
        verdicts[key] = "yes" if changed or verdicts.get(key) == "yes" else "no"
    return verdicts
