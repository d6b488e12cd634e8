"""The verdict on the paper's claims (acla.study.verdict) and the training-length table it and the report read."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd
import pytest

from acla.study.tables import training_length
from acla.study.verdict import (
    CLAIMS,
    Comparison,
    carrying,
    claims_frame,
    adaptive_comparisons,
    pays_comparisons,
    efficiency_comparisons,
    placement_comparisons,
    psnr_comparison,
    verdict_markdown,
    word,
)


def sides(*values: int) -> list[Comparison]:
    return [Comparison(float(v), 0.5, "") for v in values]


@pytest.mark.parametrize(("values", "expected"), [
    ((1, 1), "supported"),
    ((1, 0), "supported"),  # half for, none against
    ((1, 0, 0), "inconclusive"),  # fewer than half for
    ((1, -1, 1, 1), "inconclusive"),  # one against spoils it
    ((-1, -1, 0), "contradicted"),
    ((-1, 1), "inconclusive"),
    ((0, 0), "inconclusive"),
    ((), "not measured"),
])
def test_one_rule_turns_comparisons_into_a_word(values: tuple[int, ...], expected: str) -> None:
    assert word(sides(*values)) == expected


def test_a_psnr_difference_counts_only_beyond_twice_its_standard_error() -> None:
    within = psnr_comparison(30.09, 0.05, 2, 30.00, 0.05, 2, "Set5")  # SE 0.05: 0.09 is within 2 SE
    beyond = psnr_comparison(30.20, 0.05, 2, 30.00, 0.05, 2, "Set5")
    assert within.noise == pytest.approx(0.1) and within.side == 0
    assert beyond.side == 1 and beyond.text == "Set5 +0.200 ± 0.050 dB" and beyond.short == "+0.200 ± 0.050 dB"
    one_seed = psnr_comparison(31.0, math.nan, 1, 30.0, math.nan, 1, "Set5")
    assert one_seed.side == 0 and "one seed" in one_seed.text


def test_efficiency_compares_the_latency_overhead_with_twice_the_flops_overhead() -> None:
    rows = pd.DataFrame({"model": ["base", "acla", "base", "acla"], "input": ["a", "a", "b", "b"],
                         "flops": [100.0, 120.0, 100.0, 110.0], "latency": [1.0, 1.3, 1.0, 1.5]})
    first, second = efficiency_comparisons(rows, "base", "acla", "sr")
    assert first.side == 1 and "FLOPs +20.0 %, latency +30.0 %" in first.text  # 30 % <= 2 x 20 %
    assert second.side == -1  # 50 % > 2 x 10 %


def frontier_rows(points: dict[tuple[str, int], dict], sets=("Set5", "B100"), seeds=(0, 1)) -> pd.DataFrame:
    rows = []
    for (variant, iterations), values in points.items():
        for seed in seeds:
            for set_name in sets:
                rows.append({"setting": "sr_x2", "variant": variant, "seed": seed, "iterations": iterations,
                             "set": set_name, "departures": "", **(values(seed) if callable(values) else values)})
    return pd.DataFrame(rows)


def test_the_training_length_table_takes_each_budget_against_the_backbone_of_that_budget(tmp_path: Path) -> None:
    def psnr(base: float):
        return lambda seed: {"psnr": base + 0.02 * seed, "attention": "none", "val_psnr": base}
    points = {("backbone", 600): psnr(35.0), ("backbone", 2400): psnr(36.5),
              ("acla lk=0.001", 600): lambda s: {**psnr(34.9)(s), "attention": "acla"},
              ("acla lk=0.001", 2400): lambda s: {**psnr(36.6)(s), "attention": "acla"},
              ("cla K=1", 600): lambda s: {**psnr(35.0)(s), "attention": "cla"}}  # one budget only: left out
    (tmp_path / "frontier").mkdir()
    frontier_rows(points).to_csv(tmp_path / "frontier" / "frontier.csv", index=False)
    table = training_length(tmp_path)
    assert set(table.variant) == {"backbone", "acla lk=0.001"}
    acla = table[(table.variant == "acla lk=0.001") & (table.set == "Set5")].set_index("iterations")
    assert acla.delta[600] == pytest.approx(-0.1) and acla.delta[2400] == pytest.approx(0.1)
    assert acla.delta_se[600] == pytest.approx(math.sqrt(2 * 0.02 ** 2 / 2 / 2))  # std 0.0141 each, n 2 each
    single = frontier_rows({("backbone", 600): psnr(35.0)})
    single.to_csv(tmp_path / "frontier" / "frontier.csv", index=False)
    assert training_length(tmp_path).empty  # one budget: nothing to say about training length


def test_gates_that_still_move_neither_support_nor_contradict_adaptivity(tmp_path: Path) -> None:
    folder = tmp_path / "sr" / "frontier"
    folder.mkdir(parents=True)
    base = {"attention": "acla", "psnr": 35.0, "ssim": 0.9, "val_psnr": 35.0, "open_keys": 10.0, "gflops": 1.0,
            "mode_share_min": 0.5, "mode_share_max": 0.9, "num_keys": 9, "keys_per_query": 24.75, "modules": 4}
    frame = frontier_rows({("acla lk=0", 600): {**base, "adaptive_modules": 4},  # no key budget: not a test
                           ("acla lk=0.001", 600): {**base, "adaptive_modules": 0},
                           ("acla lk=0.0003", 600): {**base, "adaptive_modules": 2}})
    frame["key_budget_weight"] = frame.variant.str.removeprefix("acla lk=").astype(float)
    frame.to_csv(folder / "frontier.csv", index=False)
    curves = [{"setting": "sr_x2", "variant": "acla lk=0.0003", "seed": 0, "iterations": 600,
               "metric": "gates/block1/open_mean", "step": step, "value": value} for step, value in ((1, 9.0), (2, 7.0))]
    pd.DataFrame(curves).to_csv(folder / "curves.csv", index=False)
    comparisons, _ = adaptive_comparisons(tmp_path)
    assert [c.side for c in comparisons] == [-1, 0]  # 1e-3 degenerate; 3e-4 adapts but its gates still moved
    assert word(comparisons) == "contradicted"  # half against, none for


def test_the_headline_acla_is_tested_on_its_last_validation_with_the_same_rule(tmp_path: Path) -> None:
    sizes = {"1": 9, "2": 18, "4": 36}
    # per case: each module's (mode share, open keys) at the last two validations, for two seeds
    cases = {"degenerate": [((1.0, 1.0), (1.0, 1.0))] * 3,  # one key per query everywhere: fails, settled
             "adapting": [((0.5, 3.0), (0.5, 3.0)), ((0.6, 6.0), (0.6, 6.0)), ((1.0, 36.0), (1.0, 36.0))],
             "moving": [((0.5, 5.0), (0.5, 3.0)), ((0.6, 6.0), (0.6, 6.0)), ((1.0, 36.0), (1.0, 36.0))]}
    for name, modules in cases.items():
        task = tmp_path / name / "sr"
        (task / "evaluate" / "sr_x2" / "keys").mkdir(parents=True)
        (task / "retrain").mkdir()
        (task / "evaluate" / "sr_x2" / "keys" / "summary.json").write_text(json.dumps(
            {"setting": "sr_x2", "image": "Set5/baby", "mean_open_keys": {}, "keys_per_query": sizes}))
        rows = [{"metric": f"gates/block{block}/{metric}", "step": step, "value": value, "setting": "sr_x2",
                 "variant": "acla", "seed": seed}
                for block, history in zip(sizes, modules) for seed in (0, 1)
                for step, (share, mean) in zip((300, 600), history)
                for metric, value in (("mode_share", share), ("open_mean", mean))]
        pd.DataFrame(rows).to_csv(task / "retrain" / "curves.csv", index=False)
    assert [c.side for c in adaptive_comparisons(tmp_path / "degenerate")[0]] == [-1]
    adapting = adaptive_comparisons(tmp_path / "adapting")[0]
    assert [c.side for c in adapting] == [1] and "2.0/3 modules adapting" in adapting[0].text  # 2 of 3 pass
    moving = adaptive_comparisons(tmp_path / "moving")[0]
    assert [c.side for c in moving] == [0] and "gates still moving" in moving[0].text
    (tmp_path / "degenerate" / "sr" / "retrain" / "curves.csv").unlink()
    assert adaptive_comparisons(tmp_path / "degenerate")[0] == []  # no gate statistics: not measured


def test_the_verdict_table_has_a_row_per_measured_claim_and_a_column_per_profile() -> None:
    against = psnr_comparison(30.0, 0.02, 3, 30.1, 0.02, 3, "Set5")
    mixed = [Comparison(1.0, 0.0, "a", "1.0/4 modules adapt"), Comparison(-1.0, 0.0, "b", "0.0/4 modules adapt")]
    claims = claims_frame({"sr": ([against], "tiny"), "adaptive": (mixed, "")})
    assert carrying([against]) is against and claims.set_index("claim_id").number["sr"] == "-0.100 ± 0.016 dB"
    text = verdict_markdown({"cpu": claims, "cpu-long": claims.iloc[:0]}, {"cpu": "#cpu"})
    lines = text.splitlines()
    assert lines[0] == "| claim | cpu | cpu-long |" and len(lines) == 2 + 2  # the claims no column measured: no row
    assert "| SR | **contradicted** [-0.100 ± 0.016 dB](#cpu) | not measured |" in text  # one word, one number
    assert "| adaptive keys, linear budget | **inconclusive** [1 for, 1 against](#cpu) |" in text


def test_each_key_budget_form_is_judged_apart_and_adaptivity_pays_only_against_cla_at_equal_keys(tmp_path: Path) -> None:
    folder = tmp_path / "sr" / "frontier"
    folder.mkdir(parents=True)
    base = {"ssim": 0.9, "val_psnr": 35.0, "gflops": 1.0, "mode_share_min": 0.5, "mode_share_max": 0.9,
            "num_keys": 9, "keys_per_query": 24.75, "modules": 4, "key_budget_weight": 0.01}
    points = {("backbone", "none", "", 24.75, 0, 35.00), ("cla K=4", "cla", "", 11.0, 0, 35.05),
              ("cla K=9", "cla", "", 24.75, 0, 35.06), ("acla lk=0.001", "acla", "", 1.0, 0, 34.90),
              ("acla lk=0.01 + target t=0.5", "acla", "target", 8.0, 4, 35.20),
              ("acla lk=0.01 + target t=0.25", "acla", "target", 4.0, 1, 35.30)}
    rows = []
    for variant, attention, form, open_keys, adapting, psnr in points:
        for seed in (0, 1):
            rows.append({**base, "setting": "sr_x2", "variant": variant, "seed": seed, "iterations": 600, "set": "B100",
                         "attention": attention, "key_budget": form, "psnr": psnr + 0.01 * seed,
                         "open_keys": open_keys, "adaptive_modules": adapting,
                         "open_keys_by_block": f"1:{open_keys:.2f}/24.75", "budget_target": float("nan"),
                         "departures": "key_budget=target" if form else ""})
    pd.DataFrame(rows).to_csv(folder / "frontier.csv", index=False)
    linear, target = adaptive_comparisons(tmp_path)[0], adaptive_comparisons(tmp_path, "target")[0]
    assert [c.side for c in linear] == [-1]  # the linear point keeps one key per query
    assert sorted(c.side for c in target) == [-1, 1]  # t=0.5 adapts in 4 of 4 modules, t=0.25 in 1 of 4
    assert adaptive_comparisons(tmp_path, "lagrangian")[0] == []
    paid, _ = pays_comparisons(tmp_path)
    assert len(paid) == 1 and "CLA K=4" in paid[0].text  # only the adapting point; 8 open keys -> K=4's 11 keys
    assert paid[0].side == 1 and paid[0].difference == pytest.approx(0.15)  # 35.205 - 35.055, well beyond 2 SE


def test_placements_compare_the_searched_locations_with_other_placements_only(tmp_path: Path) -> None:
    folder = tmp_path / "sr" / "ablation"
    folder.mkdir(parents=True)
    rows = []
    for variant, insert, modules, psnr in (("acla", "1 2 4 6", 4, 35.30), ("acla K=4", "1 2 4 6", 4, 35.0),
                                           ("acla random", "3 4 5 7", 4, 35.10), ("acla every", "1 2 3 4 5 6 7 8", 8,
                                                                                   35.5)):
        for seed in (0, 1):
            rows.append({"setting": "sr_x2", "variant": variant, "seed": seed, "insert": insert, "modules": modules,
                         "val_psnr": psnr + 0.01 * seed, "val_set": "Set5", "iterations": 600})
    pd.DataFrame(rows).to_csv(folder / "ablation.csv", index=False)
    comparisons, _ = placement_comparisons(tmp_path)
    assert len(comparisons) == 1  # K=4 is no placement; 'every' has twice the modules: not at equal cost
    assert "ACLA random" in comparisons[0].text and comparisons[0].side == 1
