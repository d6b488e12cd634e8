"""The verdict on the paper's claims: one row per claim of its abstract, one column per profile (and device) that
measured it, each cell a word, the numbers behind it and the scale they were measured at.

Every claim is tested by comparisons, and one rule (``RULE``) turns any claim's comparisons into a word. A
comparison has a measured difference d and a noise band e: it is *for* the claim when d > e, *against* it when
d < -e, and *neutral* otherwise (e is infinite when the noise is unknown, e.g. one seed). The claim is then

* **supported** when at least half of its comparisons are for it and none is against it,
* **contradicted** when at least half are against it and none is for it,
* **inconclusive** otherwise (mixed, within the noise, or unmeasured noise).

What the comparisons of each claim are:

* *ACLA improves <task> over its backbone*: per setting and test set, d = PSNR(ACLA) - PSNR(backbone) (means
  over seeds, equal training budget), e = 2 standard errors of that difference over the seeds. From the headline
  (``evaluate``) when the profile trains both; else from the frontier's longest budget that holds both, with
  the spec's-recipe ACLA point chosen on the validation set.
* *the number of keys per query is adaptive*: per trained ACLA model with a key budget (lambda_k > 0) and the
  spec's recipe, whose gates had stopped moving: for when at least half its modules pass issue #28's test (no
  open-key count holds more than 80 % of the queries, the mean is within 10-90 % of R K; mean over seeds),
  against otherwise (e = 0; a model whose gates still moved at the end of training is neutral). The frontier's
  models are tested on a test set; the headline's ACLA on its validation set at its last validation (its
  training curves log the gates' statistics there).
* *the searched insertion beats other placements at equal cost*: per other placement of as many ACLA modules
  (the ablation), d = validation PSNR(searched) - PSNR(other), e = 2 standard errors over seeds.
* *ACLA is efficient*: per measured input, d = 2 x FLOPs overhead - latency overhead (both of ACLA over its
  backbone, in %), e = 0: for when the latency overhead is within twice the FLOPs overhead (the module runs about
  as fast as its arithmetic says), against otherwise.

Smoke and ci are pipeline checks, not results: they get no column.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from acla.config import ABLATION_INSERTIONS
from acla.engine.gates import adaptive
from acla.study.tables import (
    BACKBONE_NAMES,
    difference_se,
    frontier_table,
    headline,
    moving_gates,
    split_departures,
    stage_provenance,
)

RULE = ("Each claim is tested by comparisons, each a measured difference d with a noise band e (2 standard errors "
        "over seeds for PSNR; e = 0 for the adaptivity and efficiency tests): a comparison is *for* the claim when "
        "d > e, *against* it when d < -e, neutral otherwise (one seed: neutral). A claim is **supported** when at "
        "least half its comparisons are for it and none against, **contradicted** when at least half are against "
        "it and none for, **inconclusive** otherwise. Comparisons: each task's rows, ACLA − backbone PSNR per test "
        "set at equal budget; adaptivity, each ACLA model trained with a key budget (λk > 0) under the spec's "
        "recipe, for when at least half its modules pass issue #28's test (no open-key count above 80 % of the "
        "queries, mean within 10–90 % of R·K; the frontier's models on a test set, the headline's on the validation "
        "set at its last validation, every seed), against when fewer do, neutral while its gates still move; "
        "placement, the searched locations against each other placement of as many modules (validation PSNR); "
        "efficiency, for when ACLA's latency overhead over its backbone is at most twice its FLOPs overhead. "
        "Smoke and ci are pipeline checks and get no column (rules in `acla/study/verdict.py`).")

TASK_CLAIMS = {"sr": "ACLA improves super-resolution over its backbone",
               "denoise": "ACLA improves denoising over its backbone",
               "demosaic": "ACLA improves demosaicing over its backbone",
               "jpeg": "ACLA improves JPEG artifact reduction over its backbone"}
CLAIMS = {**TASK_CLAIMS, "adaptive": "The number of keys per query is adaptive",
          "placement": "The searched insertion beats other placements at equal cost",
          "efficient": "ACLA is efficient (latency overhead against FLOPs overhead)"}
RESULT_PROFILES = ("paper", "gpu", "cpu", "cpu-gates", "cpu-long")  # smoke and ci: pipeline checks, not results


@dataclass(frozen=True)
class Comparison:
    """One test of a claim: the measured difference, its noise band, and the numbers in words."""

    difference: float
    noise: float
    text: str

    @property
    def side(self) -> int:
        """+1 for the claim, -1 against it, 0 neutral."""
        if math.isnan(self.difference) or math.isnan(self.noise):
            return 0
        return 1 if self.difference > self.noise else -1 if self.difference < -self.noise else 0


def word(comparisons: list[Comparison]) -> str:
    """``RULE``: supported / contradicted / inconclusive from the comparisons' sides ("not measured" for none)."""
    if not comparisons:
        return "not measured"
    sides = [c.side for c in comparisons]
    half = len(sides) / 2
    if sides.count(1) >= half and -1 not in sides:
        return "supported"
    if sides.count(-1) >= half and 1 not in sides:
        return "contradicted"
    return "inconclusive"


def psnr_comparison(a_mean: float, a_std: float, a_n: int, b_mean: float, b_std: float, b_n: int,
                    where: str) -> Comparison:
    """a - b with 2 standard errors of independent seeds as the noise band (infinite with one seed)."""
    delta = a_mean - b_mean
    if a_n > 1 and b_n > 1:
        se = float(difference_se(a_std, a_n, b_std, b_n))
        return Comparison(delta, 2 * se, f"{where} {delta:+.3f} ± {se:.3f} dB (n={a_n}/{b_n})")
    return Comparison(delta, math.inf, f"{where} {delta:+.3f} dB (one seed)")


# ------------------------------------------------------------------------------------------ the claims
def task_comparisons(task_dir: Path) -> tuple[list[Comparison], str]:
    """ACLA - backbone PSNR per setting and test set, and the scale, from the headline; else from the frontier."""
    scores = task_dir / "evaluate" / "scores.csv"
    if scores.is_file():
        top = headline(task_dir)
        if len(top) and "acla_psnr_mean" in top:
            comparisons = [psnr_comparison(r.acla_psnr_mean, r.acla_psnr_std, int(r.acla_n_seeds), r.backbone_psnr_mean,
                                           r.backbone_psnr_std, int(r.backbone_n_seeds), r.set)
                           for r in top.itertuples() if not pd.isna(r.acla_psnr_mean)]
            return comparisons, scale(task_dir, int(top.iterations.iloc[0]))
    frontier = frontier_table(task_dir)
    if frontier.empty:
        return [], ""
    recipe, _ = split_departures(frontier)
    both = [i for i in sorted(recipe.iterations.unique(), reverse=True)
            if {"none", "acla"} <= set(recipe[recipe.iterations == i].attention)]
    if not both:
        return [], ""
    at = recipe[recipe.iterations == both[0]]
    acla = at[at.attention == "acla"]
    chosen = acla.loc[acla.val_psnr_mean.idxmax(), "variant"]  # on the validation set, never a test set
    comparisons = []
    for set_name, rows in at.groupby("set", sort=False):
        a, b = rows[rows.variant == chosen], rows[rows.attention == "none"]
        if len(a) and len(b):
            a, b = a.iloc[0], b.iloc[0]
            comparisons.append(psnr_comparison(a.psnr_mean, a.psnr_std, int(a.n_seeds), b.psnr_mean, b.psnr_std,
                                               int(b.n_seeds), set_name))
    return comparisons, scale(task_dir, int(both[0])) + f", {chosen} (chosen on the validation set)"


def adaptive_comparisons(study_dir: Path) -> tuple[list[Comparison], str]:
    """Every key-budgeted recipe ACLA model of the frontier; else the headline ACLA (``headline_gate_comparison``)."""
    comparisons, scales = [], []
    for task_dir in sorted(p for p in study_dir.iterdir() if p.is_dir()):
        frontier = frontier_table(task_dir)
        if len(frontier):
            recipe, _ = split_departures(frontier)
            points = recipe[(recipe.attention == "acla") & (recipe.key_budget_weight > 0)]
            points = points[points.set == points.set.iloc[-1]] if len(points) else points
            comparisons += [gate_comparison(f"λk={r.key_budget_weight:g} at {int(r.iterations)} it",
                                            r.adaptive_modules_mean, int(r.modules), r.open_keys_mean,
                                            r.keys_per_query, r.gates_moving == "yes")
                            for r in points.itertuples()]
            if len(points):
                scales.append(scale(task_dir, int(points.iterations.max())) + f" (open keys on {points.set.iloc[-1]})")
            continue
        retrain = stage_provenance(task_dir, "retrain")
        for summary_path in sorted((task_dir / "evaluate").glob("*/keys/summary.json")):
            found = headline_gate_comparison(task_dir, json.loads(summary_path.read_text()), retrain)
            if found is not None:
                comparisons.append(found)
                scales.append(scale(task_dir, int(retrain.get("train", {}).get("iterations", 0))))
    return comparisons, "; ".join(dict.fromkeys(scales))


def gate_comparison(label: str, adapting: float, modules: int, open_keys: float, keys_per_query: float,
                    moving: bool, where: str = "") -> Comparison:
    """One ACLA model against issue #28's test: for when at least half its ``modules`` adapt (``adapting``, mean
    over seeds), against when fewer do, neutral while its gates still move."""
    side = math.nan if moving else 1.0 if adapting >= modules / 2 else -1.0
    return Comparison(side, 0.0, f"{label}: {adapting:.1f}/{modules} modules adapting, {open_keys:.2f} of "
                                 f"{keys_per_query:.2f} keys{where}" + (" (gates still moving)" if moving else ""))


def headline_gate_comparison(task_dir: Path, summary: dict, retrain: dict) -> Comparison | None:
    """Issue #28's test of the headline ACLA (every seed) on its gate statistics at the last validation of its
    training (``retrain/curves.csv``, on the validation set), with the frontier's rule for gates still moving.
    The key summary of the evaluation gives each module's R K, ``retrain`` (the stage's provenance) λk, budget and
    validation set. None without gate statistics."""
    curves_csv = task_dir / "retrain" / "curves.csv"
    if not curves_csv.is_file():
        return None
    curves = pd.read_csv(curves_csv)
    setting, sizes = summary["setting"], {int(b): int(k) for b, k in summary["keys_per_query"].items()}
    gates = curves[(curves.setting == setting) & (curves.variant == "acla") & curves.metric.str.startswith("gates/")]
    if gates.empty or not sizes:
        return None
    adapting, open_keys = [], []
    for _, seed_curves in gates.groupby("seed"):
        last = seed_curves[seed_curves.step == seed_curves.step.max()]
        stats = dict(zip(last.metric, last.value))
        adapting.append(sum(adaptive(stats, block, size) for block, size in sizes.items()))
        open_keys.append(sum(stats.get(f"gates/block{b}/open_mean", math.nan) for b in sizes) / len(sizes))
    weight = retrain.get("model", {}).get("key_budget_weight", math.nan)
    iterations = int(retrain.get("train", {}).get("iterations", 0))
    where = retrain.get("train", {}).get("validation_set", "the validation set")
    moving = moving_gates(gates, ["setting"]).get((setting,)) == "yes"
    return gate_comparison(f"{setting} λk={weight:g} at {iterations} it", sum(adapting) / len(adapting), len(sizes),
                           sum(open_keys) / len(open_keys), sum(sizes.values()) / len(sizes), moving,
                           f" on {where} (n={len(adapting)})")


def placement_comparisons(study_dir: Path) -> tuple[list[Comparison], str]:
    """The searched ACLA against each other placement of as many modules, on the validation set."""
    comparisons, scales = [], []
    for path in sorted(study_dir.glob("*/ablation/ablation.csv")):
        runs = pd.read_csv(path)
        if runs.empty or "acla" not in set(runs.variant):
            continue
        searched = runs[runs.variant == "acla"]
        found = len(comparisons)
        placements = runs[runs.variant.isin([f"acla {name}" for name in ABLATION_INSERTIONS])]  # not K or modules
        for variant, other in placements.groupby("variant", sort=False):
            if other.modules.iloc[0] != searched.modules.iloc[0]:
                continue
            comparisons.append(psnr_comparison(
                searched.val_psnr.mean(), searched.val_psnr.std(ddof=1), len(searched), other.val_psnr.mean(),
                other.val_psnr.std(ddof=1), len(other),
                f"{searched.setting.iloc[0]} searched ({searched['insert'].iloc[0]}) − {variant} ({other['insert'].iloc[0]}), "
                f"{searched.val_set.iloc[0]}:"))
        if len(comparisons) > found:
            scales.append(scale(path.parents[1], int(searched.iterations.iloc[0])))
    return comparisons, "; ".join(dict.fromkeys(scales))


def efficiency_comparisons(rows: pd.DataFrame, backbone: str, acla: str, where: str) -> list[Comparison]:
    """2 x FLOPs overhead - latency overhead (%) of ``acla`` over ``backbone`` per input of ``rows``
    (columns model, input, flops, latency)."""
    comparisons = []
    for size, group in rows.groupby("input", sort=False):
        base, module = group[group.model == backbone], group[group.model == acla]
        if len(base) and len(module):
            flops = 100 * (module.flops.iloc[0] / base.flops.iloc[0] - 1)
            latency = 100 * (module.latency.iloc[0] / base.latency.iloc[0] - 1)
            comparisons.append(Comparison(2 * flops - latency, 0.0, f"{where} {size}: FLOPs {flops:+.1f} %, "
                                          f"latency {latency:+.1f} %"))
    return comparisons


def profile_efficiency(study_dir: Path) -> list[Comparison]:
    comparisons = []
    for path in sorted(study_dir.glob("*/efficiency/efficiency.csv")):
        frame = pd.read_csv(path).rename(columns={"variant": "model", "latency_s": "latency"})
        for (setting, device), group in frame.groupby(["setting", "device"], sort=False):
            comparisons += efficiency_comparisons(group, "backbone", "acla", f"{setting} ({device})")
    return comparisons


def scale(task_dir: Path, iterations: int) -> str:
    """The model, budget and training data of a task's runs, in words."""
    info = stage_provenance(task_dir, "retrain") or stage_provenance(task_dir, "search")
    backbone = info.get("model", {}).get("backbone", "?")
    train_sets = "+".join(info.get("train", {}).get("train_sets", []) or ["?"])
    return f"{BACKBONE_NAMES.get(backbone, backbone)}, {iterations:,} it on {train_sets}"


# ------------------------------------------------------------------------------------------ the table
def profile_claims(study_dir: Path) -> pd.DataFrame:
    """One profile's claims (``reports/study/<profile>``): claim, word, evidence, scale."""
    rows = []
    for task, claim in TASK_CLAIMS.items():
        comparisons, where = task_comparisons(study_dir / task) if (study_dir / task).is_dir() else ([], "")
        rows.append(_row(claim, comparisons, where))
    rows.append(_row(CLAIMS["adaptive"], *adaptive_comparisons(study_dir)))
    rows.append(_row(CLAIMS["placement"], *placement_comparisons(study_dir)))
    rows.append(_row(CLAIMS["efficient"], profile_efficiency(study_dir), "inference, 1 image"))
    return pd.DataFrame(rows)


def gpu_check_claims(run_dir: Path) -> pd.DataFrame:
    """The claims a ``gpu-check`` run measured (``reports/gpu/<device>/``): SR (its short training, one seed) and
    efficiency (its inference timings)."""
    rows = []
    learning = run_dir / "learning" / "learning.csv"
    comparisons, where = [], ""
    if learning.is_file():
        frame = pd.read_csv(learning)
        backbone = frame[frame.method == "EDSR-baseline"].set_index("set")
        acla = frame[frame.method.str.startswith("EDSR-baseline + ACLA")].set_index("set")
        for name in acla.index.intersection(backbone.index):
            comparisons.append(psnr_comparison(acla.psnr[name], math.nan, 1, backbone.psnr[name], math.nan, 1, name))
        if len(acla):
            where = f"EDSR-baseline, {int(acla.iterations.iloc[0]):,} it on T91"
    for task, claim in TASK_CLAIMS.items():
        rows.append(_row(claim, comparisons if task == "sr" else [], where if task == "sr" else ""))
    rows.append(_row(CLAIMS["adaptive"], [], ""))
    rows.append(_row(CLAIMS["placement"], [], ""))
    speed = run_dir / "speed" / "speed.csv"
    efficiency = []
    if speed.is_file():
        frame = pd.read_csv(speed)
        frame = frame[(frame.measure == "inference") & (frame.status == "ok")].rename(
            columns={"gflops": "flops", "seconds": "latency"})
        models = list(dict.fromkeys(frame.model))
        acla = [m for m in models if "ACLA" in m]
        if acla:
            efficiency = efficiency_comparisons(frame, models[0], acla[0], "")
    rows.append(_row(CLAIMS["efficient"], efficiency, "inference, 1 image, fp32 eager"))
    return pd.DataFrame(rows)


def _row(claim: str, comparisons: list[Comparison], where: str) -> dict:
    return {"claim": claim, "word": word(comparisons), "evidence": "; ".join(c.text for c in comparisons),
            "scale": where, "for": sum(c.side == 1 for c in comparisons),
            "against": sum(c.side == -1 for c in comparisons), "comparisons": len(comparisons)}


def verdict_markdown(columns: dict[str, pd.DataFrame]) -> str:
    """The front page's table: one row per claim, one column per profile/device (``columns``: header -> the
    frame of ``profile_claims`` or ``gpu_check_claims``)."""
    if not columns:
        return ""
    headers = list(columns)
    lines = ["| claim | " + " | ".join(headers) + " |", "|---|" + "---|" * len(headers)]
    for claim in CLAIMS.values():
        cells = []
        for header in headers:
            found = columns[header][columns[header].claim == claim]
            if found.empty or found.word.iloc[0] == "not measured":
                cells.append("not measured")
                continue
            r = found.iloc[0]
            cells.append(f"**{r.word}** ({r['for']} for, {r.against} against of {r.comparisons}): {r.evidence}"
                         + (f". Scale: {r.scale}" if r.scale else ""))
        lines.append(f"| {claim} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
