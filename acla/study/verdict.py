"""The verdict on the paper's claims: one row per claim of its abstract, one column per profile (and device) that
measured it, each cell a word, the numbers behind it and the scale they were measured at.

Every claim is tested by comparisons (``CLAIMS[...].test`` says what one comparison of each claim measures), and one
rule (``RULE``, ``word``) turns any claim's comparisons into a word. Smoke and ci are pipeline checks, not results:
they get no column (``PIPELINE_CHECKS``); every other profile of ``acla.config.PROFILES`` is a result profile.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from acla.config import ABLATION_INSERTIONS, PROFILES
from acla.engine.gates import adaptive
from acla.study.budget import adapts, key_budget_table, pays
from acla.study.tables import (
    BACKBONE_NAMES,
    difference_se,
    frontier_table,
    headline,
    moving_gates,
    split_departures,
    stage_provenance,
    variant_label,
)

RULE = ("A comparison measures a difference d and its noise band e (2 SE for PSNR; 0 for counts and timings; unknown "
        "with one seed). It is *for* the claim when d > e, *against* it when d < −e, neutral otherwise. A claim is "
        "**supported** when at least half its comparisons are for it and none against, **contradicted** when at least "
        "half are against it and none for, **inconclusive** otherwise. Comparisons per claim:")


@dataclass(frozen=True)
class Claim:
    """One claim of the paper's abstract: the verdict table's row ``name``, the claim in full, and what one
    comparison of it measures (the rules at the front page's end)."""

    name: str
    statement: str
    test: str


_TASK_TEST = ("per test set, Δ = PSNR(ACLA) − PSNR(backbone) at equal budget: the headline models, else the "
              "frontier's longest budget, its recipe ACLA chosen on the validation set.")
CLAIMS = {
    "sr": Claim("SR", "ACLA improves super-resolution over its backbone", _TASK_TEST),
    "denoise": Claim("denoising", "ACLA improves denoising over its backbone", _TASK_TEST),
    "demosaic": Claim("demosaicing", "ACLA improves demosaicing over its backbone", _TASK_TEST),
    "jpeg": Claim("JPEG", "ACLA improves JPEG artifact reduction over its backbone", _TASK_TEST),
    "adaptive": Claim("adaptive keys, linear budget", "The number of keys per query is adaptive (linear key budget)",
                      "per ACLA model trained with the recipe and λk > 0: for when at least half its modules adapt, "
                      "against when fewer do, neutral while its gates still move."),
    "adaptive_target": Claim("adaptive keys, target budget",
                             "The number of keys per query is adaptive (target key budget, a departure)",
                             "the same per ACLA model trained with the target form of the key budget."),
    "adaptive_open_target": Claim("adaptive keys, open-share target budget",
                                  "The number of keys per query is adaptive (open-share target key budget, a departure)",
                                  "the same per ACLA model trained with the open-share target form of the key budget."),
    "adaptive_lagrangian": Claim("adaptive keys, lagrangian budget",
                                 "The number of keys per query is adaptive (lagrangian key budget, a departure)",
                                 "the same per ACLA model trained with the lagrangian form of the key budget."),
    "pays": Claim("adaptivity pays", "Adaptive keys beat fixed keys at equal keys per query",
                  "per adapting ACLA model with a target, open-share target or lagrangian budget and per test set, Δ = PSNR(ACLA) − "
                  "PSNR(CLA with the fewest fixed keys at or above ACLA's open keys): for when Δ > 2 SE or when Δ is "
                  "within 2 SE with fewer keys, against when Δ < −2 SE."),
    "placement": Claim("placement", "The searched insertion beats other placements at equal cost",
                       "per other placement of as many modules, Δ = validation PSNR(searched) − PSNR(other)."),
    "efficient": Claim("efficiency", "ACLA is efficient (latency overhead against FLOPs overhead)",
                       "per input size, for when ACLA's latency overhead is at most twice its FLOPs overhead, "
                       "against otherwise."),
}
TASKS = ("sr", "denoise", "demosaic", "jpeg")
PIPELINE_CHECKS = ("smoke", "ci")  # they check that the pipeline runs; their numbers judge nothing
RESULT_PROFILES = tuple(p for p in PROFILES if p not in PIPELINE_CHECKS)


@dataclass(frozen=True)
class Comparison:
    """One test of a claim: the measured difference, its noise band, the numbers in words, and the number alone
    (``short``) with what it was measured on (``label``: a test set, an input size)."""

    difference: float
    noise: float
    text: str
    short: str = ""
    label: str = ""

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


def carrying(comparisons: list[Comparison]) -> Comparison | None:
    """The comparison that carries a claim's word: the strongest for it (supported), the strongest against it
    (contradicted), else the largest difference."""
    verdict = word(comparisons)
    side = {"supported": 1, "contradicted": -1}.get(verdict)
    if side is not None:
        return max((c for c in comparisons if c.side == side), key=lambda c: side * c.difference - c.noise)
    measured = [c for c in comparisons if not math.isnan(c.difference)]
    return max(measured, key=lambda c: abs(c.difference)) if measured else comparisons[0] if comparisons else None


def psnr_comparison(a_mean: float, a_std: float, a_n: int, b_mean: float, b_std: float, b_n: int,
                    where: str) -> Comparison:
    """a - b with 2 standard errors of independent seeds as the noise band (infinite with one seed)."""
    delta = a_mean - b_mean
    if a_n > 1 and b_n > 1:
        se = float(difference_se(a_std, a_n, b_std, b_n))
        return Comparison(delta, 2 * se, f"{where} {delta:+.3f} ± {se:.3f} dB", f"{delta:+.3f} ± {se:.3f} dB", where)
    return Comparison(delta, math.inf, f"{where} {delta:+.3f} dB (one seed)", f"{delta:+.3f} dB, one seed", where)


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
    return comparisons, scale(task_dir, int(both[0])) + f", {variant_label(chosen)} (chosen on the validation set)"


def adaptive_comparisons(study_dir: Path, form: str = "linear") -> tuple[list[Comparison], str]:
    """The adaptivity test of every ACLA model a profile trained with the key budget's ``form``
    (docs/method.md#key-budget-forms): per task, the frontier's points when it has a frontier
    (``frontier_gate_comparisons``), else the headline ACLA (``headline_gate_comparison``; the headline trains
    the linear form)."""
    comparisons, scales = [], []
    for task_dir in sorted(p for p in study_dir.iterdir() if p.is_dir()):
        frontier = frontier_table(task_dir)
        if len(frontier):
            found = frontier_gate_comparisons(frontier, form)
            comparisons += found
            if found:
                scales.append(f"{scale(task_dir, int(frontier.iterations.max()))} (open keys on "
                              f"{frontier.set.iloc[-1]})")
            continue
        if form != "linear":
            continue
        retrain = stage_provenance(task_dir, "retrain")
        for summary_path in sorted((task_dir / "evaluate").glob("*/keys/summary.json")):
            found = headline_gate_comparison(task_dir, json.loads(summary_path.read_text()), retrain)
            if found is not None:  # its label names the setting, budget and set
                comparisons.append(found)
    return comparisons, "; ".join(dict.fromkeys(scales))


def frontier_gate_comparisons(frontier: pd.DataFrame, form: str = "linear") -> list[Comparison]:
    """The frontier's points that can show adaptivity under the key budget's ``form``, each on the frontier's last
    test set: for ``linear``, ACLA trained with the recipe (no departure) and λk > 0; for another form, every ACLA
    point trained with it (the form is itself a departure)."""
    forms = frontier.key_budget if "key_budget" in frontier else pd.Series("linear", index=frontier.index)
    if form == "linear":
        recipe, _ = split_departures(frontier[forms.isin(["linear", ""])])
        points = recipe[(recipe.attention == "acla") & (recipe.key_budget_weight > 0)]
    else:
        points = frontier[(frontier.attention == "acla") & (forms == form)]
    points = points[points.set == frontier.set.iloc[-1]]
    return [gate_comparison(f"{variant_label(r.variant) if form != 'linear' else f'λk={r.key_budget_weight:g}'} at "
                            f"{int(r.iterations)} it", r.adaptive_modules_mean, int(r.modules), r.open_keys_mean,
                            r.keys_per_query, r.gates_moving == "yes")
            for r in points.itertuples()]


def pays_comparisons(study_dir: Path) -> tuple[list[Comparison], str]:
    """Does adaptivity pay? Per task, every adapting ACLA point with a target or lagrangian key budget and per test
    set, against CLA with the fewest fixed keys at or above its open keys (``acla.study.budget``)."""
    comparisons, scales = [], []
    for task_dir in sorted(p for p in study_dir.iterdir() if p.is_dir()):
        table = key_budget_table(task_dir)
        if table.empty:
            continue
        found = len(comparisons)
        for row in table[(table.form != "linear") & (table.cla_point != "")].itertuples():
            if not adapts(row):
                continue
            text = (f"{variant_label(row.point)} − {variant_label(row.cla_point)} at {row.iterations} it, {row.set}: "
                    f"{row.vs_cla:+.3f} ± {row.vs_cla_se:.3f} dB with {row.open_keys:.1f} against {row.cla_keys:.1f} "
                    "keys per query" + (" (gates still moving)" if row.gates_moving == "yes" else ""))
            verdict = pays(row)
            # a tie within 2 SE with fewer keys counts for the claim: its noise band is then -inf (always for)
            noise = math.inf if verdict is None else -math.inf if verdict and abs(row.vs_cla) <= 2 * row.vs_cla_se \
                else 2 * row.vs_cla_se
            comparisons.append(Comparison(row.vs_cla, noise, text, f"{row.vs_cla:+.3f} ± {row.vs_cla_se:.3f} dB vs "
                                          f"{variant_label(row.cla_point)}", row.set))
        if len(comparisons) > found:
            scales.append(scale(task_dir, int(table.iterations.max())))
    return comparisons, "; ".join(dict.fromkeys(scales))


def gate_comparison(label: str, adapting: float, modules: int, open_keys: float, keys_per_query: float,
                    moving: bool, where: str = "") -> Comparison:
    """One ACLA model against the adaptivity test: for when at least half its ``modules`` adapt (``adapting``, mean
    over seeds; ``acla.engine.gates.adaptive``), against when fewer do, neutral while its gates still move (the
    difference says which way they stood; the noise band is unknown)."""
    side = 1.0 if adapting >= modules / 2 else -1.0
    return Comparison(side, math.inf if moving else 0.0, f"{label}: {adapting:.1f}/{modules} modules adapting, {open_keys:.2f} of "
                                 f"{keys_per_query:.2f} keys{where}" + (" (gates still moving)" if moving else ""),
                      f"{adapting:.1f}/{modules} modules adapt", label)


def headline_gate_comparison(task_dir: Path, summary: dict, retrain: dict) -> Comparison | None:
    """The adaptivity test of the headline ACLA (every seed) on its gate statistics at the last validation of its
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
                f"{searched.setting.iloc[0]} searched ({searched['insert'].iloc[0]}) − {variant_label(variant)} "
                f"({other['insert'].iloc[0]}), {searched.val_set.iloc[0]}:"))
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
            comparisons.append(Comparison(2 * flops - latency, 0.0, f"{where}{size}: FLOPs {flops:+.1f} %, latency "
                                          f"{latency:+.1f} %", f"latency {latency:+.0f} %, FLOPs {flops:+.0f} %", size))
    return comparisons


def profile_efficiency(study_dir: Path) -> list[Comparison]:
    comparisons = []
    for path in sorted(study_dir.glob("*/efficiency/efficiency.csv")):
        frame = pd.read_csv(path).rename(columns={"variant": "model", "latency_s": "latency"})
        for (setting, device), group in frame.groupby(["setting", "device"], sort=False):
            comparisons += efficiency_comparisons(group, "backbone", "acla", f"{setting} ")
    return comparisons


def scale(task_dir: Path, iterations: int) -> str:
    """The model, budget and training data of a task's runs, in words."""
    info = stage_provenance(task_dir, "retrain") or stage_provenance(task_dir, "search")
    backbone = info.get("model", {}).get("backbone", "?")
    train_sets = "+".join(info.get("train", {}).get("train_sets", []) or ["?"])
    return f"{BACKBONE_NAMES.get(backbone, backbone)}, {iterations:,} it on {train_sets}"


# ------------------------------------------------------------------------------------------ the table
def claim_comparisons(study_dir: Path) -> dict[str, tuple[list[Comparison], str]]:
    """One profile's comparisons (``reports/study/<profile>``) and their scale in words, per claim of ``CLAIMS``."""
    found = {task: task_comparisons(study_dir / task) if (study_dir / task).is_dir() else ([], "") for task in TASKS}
    found["adaptive"] = adaptive_comparisons(study_dir)
    found["adaptive_target"] = adaptive_comparisons(study_dir, "target")
    found["adaptive_open_target"] = adaptive_comparisons(study_dir, "open_target")
    found["adaptive_lagrangian"] = adaptive_comparisons(study_dir, "lagrangian")
    found["pays"] = pays_comparisons(study_dir)
    found["placement"] = placement_comparisons(study_dir)
    found["efficient"] = (profile_efficiency(study_dir), "inference, 1 image")
    return found


def gpu_check_comparisons(run_dir: Path) -> dict[str, tuple[list[Comparison], str]]:
    """The claims a ``gpu-check`` run measured (``reports/gpu/<device>/``): SR (its short training, one seed) and
    efficiency (its inference timings)."""
    found: dict[str, tuple[list[Comparison], str]] = {}
    learning = run_dir / "learning" / "learning.csv"
    if learning.is_file():
        frame = pd.read_csv(learning)
        backbone = frame[frame.method == "EDSR-baseline"].set_index("set")
        acla = frame[frame.method.str.startswith("EDSR-baseline + ACLA")].set_index("set")
        comparisons = [psnr_comparison(acla.psnr[name], math.nan, 1, backbone.psnr[name], math.nan, 1, name)
                       for name in acla.index.intersection(backbone.index, sort=False)]
        if comparisons:
            found["sr"] = (comparisons, f"EDSR-baseline, {int(acla.iterations.iloc[0]):,} it on T91")
    speed = run_dir / "speed" / "speed.csv"
    if speed.is_file():
        frame = pd.read_csv(speed)
        frame = frame[(frame.measure == "inference") & (frame.status == "ok")].rename(
            columns={"gflops": "flops", "seconds": "latency"})
        models = list(dict.fromkeys(frame.model))
        acla = [m for m in models if "ACLA" in m]
        if acla:
            found["efficient"] = (efficiency_comparisons(frame, models[0], acla[0], ""),
                                  "inference, 1 image, fp32 eager")
    return found


def claims_frame(found: dict[str, tuple[list[Comparison], str]]) -> pd.DataFrame:
    """One row per claim of ``CLAIMS``: its word, the counts, the evidence in words, the scale, and the number that
    carries the word (``carrying``)."""
    rows = []
    for claim_id, claim in CLAIMS.items():
        comparisons, where = found.get(claim_id, ([], ""))
        carrier = carrying(comparisons)
        rows.append({"claim_id": claim_id, "claim": claim.statement, "word": word(comparisons),
                     "evidence": "; ".join(c.text for c in comparisons), "scale": where,
                     "for": sum(c.side == 1 for c in comparisons), "against": sum(c.side == -1 for c in comparisons),
                     "comparisons": len(comparisons), "number": carrier.short if carrier else "",
                     "on": carrier.label if carrier else "", "carried_by": carrier.text if carrier else ""})
    return pd.DataFrame(rows)


def comparisons_frame(found: dict[str, tuple[list[Comparison], str]]) -> pd.DataFrame:
    """Every comparison of ``found`` as a row (claim, what it was measured on, difference, noise band, side): what
    the front page's summary figure draws."""
    return pd.DataFrame([{"claim_id": claim_id, "label": c.label, "difference": c.difference, "noise": c.noise,
                          "side": c.side, "scale": where, "text": c.text}
                         for claim_id, (comparisons, where) in found.items() for c in comparisons],
                        columns=["claim_id", "label", "difference", "noise", "side", "scale", "text"])


def profile_claims(study_dir: Path) -> pd.DataFrame:
    """One profile's claims (``reports/study/<profile>``): claim, word, evidence, scale."""
    return claims_frame(claim_comparisons(study_dir))


def gpu_check_claims(run_dir: Path) -> pd.DataFrame:
    return claims_frame(gpu_check_comparisons(run_dir))


def cell(row: pd.Series | None, link: str = "") -> str:
    """A verdict table's cell: the word in bold and the number that carries it (linked to the evidence)."""
    if row is None or row.word == "not measured":
        return "not measured"
    number = row.number if row.word != "inconclusive" or not (row["for"] or row.against) else (
        f"{row['for']} for, {row.against} against")
    return f"**{row.word}**" + (f" [{number}]({link})" if link and number else f" {number}" if number else "")


def verdict_markdown(columns: dict[str, pd.DataFrame], links: dict[str, str] | None = None) -> str:
    """The front page's narrow table: one row per claim, one column per profile/device (``columns``: header -> the
    frame of ``claims_frame``), each cell a word and one number linked to ``links[header]``."""
    if not columns:
        return ""
    headers = list(columns)
    lines = ["| claim | " + " | ".join(headers) + " |", "|---|" + "---|" * len(headers)]
    for claim_id, claim in CLAIMS.items():
        cells = []
        for header in headers:
            found = columns[header][columns[header].claim == claim.statement]
            cells.append(cell(found.iloc[0] if len(found) else None, (links or {}).get(header, "")))
        if set(cells) != {"not measured"}:  # a row no profile measured (a key-budget form never trained) is left out
            lines.append(f"| {claim.name} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
