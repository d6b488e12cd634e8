"""Does adaptivity pay? The key budget's forms (S8) against fixed keys, from a frontier (docs/method.md#key-budget-forms).

ACLA with a key budget is adaptive only if its gates open different numbers of keys for different queries, and that
pays only if it beats CLA with fixed keys at the same number of keys per query (or matches it with fewer). This module
turns a frontier's ``frontier.csv`` and ``curves.csv`` into that comparison, one row per ACLA point, training length
and test set: its budget form and target, where its gates settled (the mean gate probability at the end of training
against the target; the hard-open fraction of the keys at inference), whether its modules adapt and whether the open
keys follow the image, and its PSNR against the backbone and against CLA at the matching K, each difference with the
standard error of independent seeds.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from acla.files import slug
from acla.study.keys import open_keys_against_activity
from acla.study.tables import difference_se, frontier_table, noise_word, variant_label

TAU_RECIPE = "1 → 0.1"


def point_settings(runs: pd.DataFrame) -> pd.DataFrame:
    """Per frontier point (setting, iterations, variant): its budget form (``linear`` for ACLA runs that predate the
    ``key_budget`` column), target t and tau schedule, read from the runs' columns and departures."""
    acla = runs[runs.attention == "acla"].copy()
    form = acla["key_budget"] if "key_budget" in acla else pd.Series("linear", index=acla.index)
    acla["form"] = ["linear" if pd.isna(value) or value == "" else str(value) for value in form]
    acla["target"] = acla["budget_target"] if "budget_target" in acla else np.nan
    departures = acla["departures"].fillna("").astype(str) if "departures" in acla else pd.Series("", index=acla.index)
    acla["tau"] = ["1 fixed" if "temperature_end=1.0" in text else TAU_RECIPE for text in departures]
    return acla.groupby(["setting", "iterations", "variant"], sort=False)[["form", "target", "tau"]].first().reset_index()


def final_gate_probability(curves_csv: Path) -> pd.DataFrame:
    """Per (setting, iterations, variant): the mean gate probability of the ACLA modules on the last training batch
    (``train/gate_probability``), mean over seeds; empty when the runs did not log it."""
    if not curves_csv.is_file():
        return pd.DataFrame(columns=["setting", "iterations", "variant", "gate_probability"])
    curves = pd.read_csv(curves_csv)
    logged = curves[curves.metric == "train/gate_probability"]
    if logged.empty:
        return pd.DataFrame(columns=["setting", "iterations", "variant", "gate_probability"])
    last = logged.sort_values("step").groupby(["setting", "iterations", "variant", "seed"]).value.last()
    return last.groupby(["setting", "iterations", "variant"]).mean().rename("gate_probability").reset_index()


def activity_correlation(keys_dir: Path, variant: str) -> float:
    """Mean over a point's varying modules and key images of the Spearman correlation between a query's open keys and
    the input's local activity (``acla.study.keys.open_keys_against_activity``); NaN when no module varies."""
    values = [value for folder in sorted((keys_dir / slug(variant)).glob("*/"))
              for value in open_keys_against_activity(folder).values() if not np.isnan(value)]
    return float(np.mean(values)) if values else float("nan")


def matching_cla(cla: pd.DataFrame, open_keys: float) -> pd.Series | None:
    """The CLA point of the same setting, length and set with the fewest keys per query at or above ``open_keys`` (fixed
    keys at least as many as the adaptive model opens), else the one with the most keys."""
    if cla.empty:
        return None
    enough = cla[cla.open_keys_mean >= open_keys - 1e-9]
    return (enough.nsmallest(1, "open_keys_mean") if len(enough) else cla.nlargest(1, "open_keys_mean")).iloc[0]


def open_fraction(runs: pd.DataFrame) -> pd.DataFrame:
    """Per (setting, iterations, variant, set): the fraction of its keys that a module keeps open at inference, mean
    over the modules (``open_keys_by_block``, "block:open/keys ...") and the seeds: what the target t aims at."""
    fractions = []
    for text in runs.open_keys_by_block.fillna("").astype(str):
        pairs = [item.split(":")[1].split("/") for item in text.split()]
        fractions.append(np.mean([float(open_) / float(keys) for open_, keys in pairs]) if pairs else np.nan)
    frame = runs.assign(open_fraction=fractions)
    return frame.groupby(["setting", "iterations", "variant", "set"], sort=False).open_fraction.mean().reset_index()


def key_budget_table(task_dir: Path) -> pd.DataFrame:
    """One row per ACLA point, training length and test set of the task's frontier (see the module docstring).
    Empty without a frontier or ACLA points."""
    frontier = frontier_table(task_dir)
    path = task_dir / "frontier" / "frontier.csv"
    if frontier.empty or not path.is_file():
        return pd.DataFrame()
    runs = pd.read_csv(path)
    settings = point_settings(runs)
    if settings.empty:
        return pd.DataFrame()
    table = frontier.merge(settings, on=["setting", "iterations", "variant"])
    table = table.merge(open_fraction(runs), on=["setting", "iterations", "variant", "set"], how="left")
    table = table.merge(final_gate_probability(task_dir / "frontier" / "curves.csv"),
                        on=["setting", "iterations", "variant"], how="left")
    rows = []
    for row in table.itertuples():
        same = frontier[(frontier.setting == row.setting) & (frontier.iterations == row.iterations)
                        & (frontier.set == row.set)]
        backbone = same[same.attention == "none"]
        cla = matching_cla(same[same.attention == "cla"], row.open_keys_mean)
        record = {"setting": row.setting, "iterations": int(row.iterations), "set": row.set, "point": row.variant,
                  "form": row.form, "target": row.target, "weight": row.key_budget_weight, "tau": row.tau,
                  "gate_probability": row.gate_probability,
                  "open_keys": row.open_keys_mean, "keys_per_query": row.keys_per_query,
                  "open_fraction": row.open_fraction,
                  "adapting_modules": row.adaptive_modules_mean, "modules": row.modules,
                  "mode_share_min": row.mode_share_min_mean, "mode_share_max": row.mode_share_max_mean,
                  "gates_moving": row.gates_moving,
                  "activity_rho": activity_correlation(task_dir / "frontier" / "keys", row.variant),
                  "psnr_mean": row.psnr_mean, "psnr_std": row.psnr_std, "n_seeds": row.n_seeds,
                  "psnr_per_seed": row.psnr_per_seed, "gflops": row.gflops_mean}
        for name, other in (("backbone", backbone.iloc[0] if len(backbone) else None), ("cla", cla)):
            delta = row.psnr_mean - other.psnr_mean if other is not None else np.nan
            se = difference_se(row.psnr_std, row.n_seeds, other.psnr_std, other.n_seeds) if other is not None else np.nan
            record |= {f"vs_{name}": delta, f"vs_{name}_se": se, f"vs_{name}_word": noise_word(delta, se)}
        record |= {"cla_point": cla.variant if cla is not None else "",
                   "cla_keys": cla.open_keys_mean if cla is not None else np.nan,
                   "cla_gflops": cla.gflops_mean if cla is not None else np.nan}
        rows.append(record)
    return pd.DataFrame(rows)


def adapts(row) -> bool:
    """At least half of a point's modules adapt (``acla.engine.gates.adaptive``, mean over seeds) at the end of
    training, settled or not (the comparison's text says when its gates still moved)."""
    return row.adapting_modules >= row.modules / 2


def pays(row) -> bool | None:
    """Adaptive keys pay when the point beats CLA at the matching K beyond 2 standard errors, or matches it within
    them with fewer keys per query; None without a spread (one seed) or a CLA point."""
    if np.isnan(row.vs_cla_se) or np.isnan(row.vs_cla):
        return None
    if row.vs_cla > 2 * row.vs_cla_se:
        return True
    return abs(row.vs_cla) <= 2 * row.vs_cla_se and row.open_keys < row.cla_keys - 1e-9


COLUMNS = {"iterations": ("iterations", 0, False), "point": ("point", 0, False), "set": ("test set", 0, False),
           "form": ("budget", 0, False), "target": ("t", 2, False), "tau": ("τ", 0, False),
           "gate_probability": ("mean p at end", 3, False), "open_fraction": ("open fraction", 3, False),
           "open_keys": ("open keys", 2, False), "adapting_modules": ("adapting", 1, False),
           "activity_rho": ("ρ activity", 2, True), "psnr_mean": ("PSNR", 3, False), "psnr_std": ("± std", 3, False),
           "n_seeds": ("n", 0, False), "vs_backbone": ("Δ backbone", 3, True), "vs_backbone_se": ("± SE", 3, False),
           "cla_point": ("CLA match", 0, False), "vs_cla": ("Δ CLA", 3, True), "vs_cla_se": ("± SE", 3, False),
           "gates_moving": ("moving", 0, False)}
NOTE = ("One row per ACLA point, training length and test set. Budget: the key budget's form "
        "([docs/method.md](../../../docs/method.md#key-budget-forms)); t its target; τ the gate temperature's schedule; "
        "mean p at end: the ACLA modules' mean gate probability on the last training batch (what the target pulls "
        "toward t); open fraction: the share of each module's keys a query keeps open at inference (mean over modules "
        "and seeds, each module's open keys divided by its own R·K: R references times K keys); open keys: a query's open "
        "keys, mean over modules and seeds (each module has R·K keys); adapting: modules whose open-key count varies across queries (of 4); ρ activity: Spearman "
        "correlation of a query's open keys with the input's local activity (first seed, first key image; empty where "
        "no module's open keys vary on that image); Δ: PSNR minus the backbone's, and minus CLA's with the fewest fixed keys at or above the "
        "point's open keys (CLA match), ± the standard error of independent seeds; moving: gates still changing at the "
        "end of training.\n\n")


def key_budget_sentence(table: pd.DataFrame) -> str:
    """The answer in words, at the longest training of each non-linear point, on the last test set: where its gates
    settled, whether they adapt, and what it buys against the backbone and CLA at equal keys."""
    if table.empty or set(table.form) <= {"linear"}:
        return ""
    last = table[(table.iterations == table.iterations.max()) & (table.set == table.set.iloc[-1])]
    parts = []
    for row in last.itertuples():
        cla = (f", {row.vs_cla:+.3f} ± {row.vs_cla_se:.3f} dB against {variant_label(row.cla_point)}"
               if row.cla_point else "")
        settled = "" if pd.isna(row.gate_probability) else f"mean p {row.gate_probability:.2f}, "
        parts.append(f"{variant_label(row.point)} (τ {row.tau}): {settled}{100 * row.open_fraction:.0f} % of keys open, "
                     f"{row.adapting_modules:.1f}/{row.modules} modules adapting, {row.vs_backbone:+.3f} ± "
                     f"{row.vs_backbone_se:.3f} dB against the backbone{cla}")
    return (f"Key-budget forms at {int(last.iterations.iloc[0]):,} iterations on {last.set.iloc[0]}: "
            + "; ".join(parts) + ".\n")
