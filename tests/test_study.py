"""The study layer: ablation variants, the ci-sized chain of steps, auto-resume, and the report's paper column."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest

from acla.config import AblationConfig, TaskConfig, load_study
from acla.engine.train import ModelSpec, load_checkpoint, train
from acla.study.report import (
    _sweep_sentence,
    budget_decision,
    delta_sentence,
    literature_sentence,
    open_keys_sentence,
    render_front_page,
    render_study,
    resource_table,
    search_sentence,
)
from acla.study.steps import TaskStudy, open_task, variant_specs
from acla.study.verdict import CLAIMS, claims_frame, comparisons_frame, gate_comparison, psnr_comparison
from acla.study.tables import (
    budget_fit,
    frontier_table,
    headline,
    literature_key,
    published_results,
    read_paper_tables,
    seed_spread,
    task_table,
    training_length,
)

ROOT = Path(__file__).resolve().parents[1]


def test_every_ablation_variant_changes_one_thing_relative_to_the_searched_model() -> None:
    searched = ModelSpec("sr_x2", "tiny", "acla", (1, 2, 3, 8), {1: [0], 2: [0, 1], 3: [1, 2], 8: [2, 3]}, 9, "predicted", 1e-3)
    task = TaskConfig(settings=("sr_x2",), ablation=AblationConfig())
    variants = variant_specs(task, "sr_x2", searched)
    assert list(variants) == ["backbone", "acla", "nonlocal", "cla", "acla K=1", "acla K=4", "acla K=16", "acla every",
                              "acla four-stages", "acla random"]
    assert variants["backbone"].attention == "none" and variants["acla"] is searched
    assert variants["cla"].insert == searched.insert and variants["cla"].references == searched.references
    assert variants["acla K=4"].num_keys == 4 and variants["acla K=4"].insert == searched.insert
    assert variants["acla every"].insert == tuple(range(1, 9)) and variants["acla four-stages"].insert == (2, 4, 6, 8)
    random = variants["acla random"].insert
    assert len(random) == len(searched.insert) == len(set(random)) and all(1 <= b <= 8 for b in random)
    for spec in variants.values():  # every variant builds
        spec.build()


def test_a_search_that_keeps_nothing_leaves_only_the_backbone() -> None:
    task = TaskConfig(settings=("sr_x2",))
    assert list(variant_specs(task, "sr_x2", ModelSpec("sr_x2", "tiny", "none", "none"))) == ["backbone"]


@pytest.fixture(scope="module")
def ci_study(tmp_path_factory: pytest.TempPathFactory):
    """search -> retrain -> evaluate -> ablate -> efficiency for SR at the ci size (a few seconds)."""
    folder = tmp_path_factory.mktemp("study")
    study = open_task("sr", ROOT / "params.yaml", profile="ci", reports=folder / "reports" / "study",
                      runs=folder / "runs", progress=False)
    study.search()
    study.retrain()
    study.evaluate()
    study.ablate()
    study.efficiency()
    return study


def test_the_steps_write_what_the_report_reads(ci_study) -> None:
    reports = ci_study.reports
    for path in ("search/sr_x2/arch.json", "search/summary.csv", "retrain/runs.csv", "retrain/curves.csv",
                 "evaluate/scores.csv", "evaluate/sr_x2/keys/open_keys.csv", "evaluate/sr_x2/keys/sampled_keys.csv",
                 "ablation/ablation.csv", "efficiency/efficiency.csv", "evaluate/provenance.json"):
        assert (reports / path).is_file(), path
    scores = pd.read_csv(reports / "evaluate" / "scores.csv")
    assert set(scores.method) == {"bicubic", *ci_study.config.headline.variants}
    assert set(scores.set) == {"bundled-test (centre 48px)"}  # the crop is in the label
    assert reports.parent.name == "ci" and "runs" in ci_study.runs.parts and ci_study.runs.parent.name == "ci"
    provenance = json.loads((reports / "evaluate" / "provenance.json").read_text())
    assert provenance["profile"] == "ci" and provenance["device"].startswith("cpu: ")
    assert {"torch", "commit", "date", "wall_seconds"} <= set(provenance)
    assert provenance["data_root"] == "bundled" or provenance["data_root"].startswith("$ACLA_DATA (MANIFEST.csv sha256 ")
    assert "/" not in provenance["data_root"] and str(ROOT) not in json.dumps(provenance)  # no path of the machine
    assert ci_study.metrics_file == reports.parents[2] / "metrics" / "ci" / "sr.json"
    assert json.loads(ci_study.metrics_file.read_text())["sr_x2"]
    ablation = pd.read_csv(reports / "ablation" / "ablation.csv")
    # ci: ablation.iterations is 0, so the headline pair's rows come from retrain, the rest are trained here
    headline = pd.read_csv(reports / "retrain" / "runs.csv")
    assert ablation.iloc[:2].equals(headline)
    assert list(ablation.variant) == ["backbone", "acla", "cla", "acla K=4", "acla random"]
    assert (ablation.iterations == ci_study.config.train.iterations).all()
    efficiency = pd.read_csv(reports / "efficiency" / "efficiency.csv")
    assert list(efficiency.variant) == list(ablation.variant)
    assert efficiency.set_index("variant").params.to_dict() == ablation.set_index("variant").params.to_dict()


def ci_sr_with_ablation(ablation: str, tmp_path: Path, reports: Path) -> TaskStudy:
    """The ci profile's SR task with its ``ablation`` section replaced (params written to ``tmp_path``)."""
    text = (ROOT / "params.yaml").read_text().replace(
        "ablation: {attentions: [cla], num_keys: [4], insertions: [random]}", f"ablation: {ablation}")
    params = tmp_path / "params.yaml"
    params.write_text(text)
    return open_task("sr", params, profile="ci", reports=reports, runs=tmp_path / "runs", progress=False)


def test_a_separate_ablation_budget_trains_the_headline_pair_too(ci_study, tmp_path: Path) -> None:
    study = ci_sr_with_ablation("{attentions: [cla], num_keys: [4], insertions: [random], iterations: 2}", tmp_path,
                                ci_study.reports.parents[1])
    table = study.ablate()
    assert list(table.variant) == ["backbone", "acla", "cla", "acla K=4", "acla random"]
    assert (table.iterations == 2).all()
    assert (tmp_path / "runs" / "ci" / "sr" / "ablation" / "sr_x2" / "backbone" / "seed0" / "last.pt").is_file()


def test_the_budget_sweep_trains_the_backbone_at_each_budget_beside_the_headline_runs(ci_study, tmp_path: Path) -> None:
    study = ci_sr_with_ablation("{attentions: [], num_keys: [], insertions: [], budgets: [2, 4]}", tmp_path,
                                tmp_path / "reports")
    for step in ("search", "retrain"):
        shutil.copytree(ci_study.reports / step, study.reports / step)
    retrained = pd.read_csv(ci_study.reports / "retrain" / "runs.csv")
    sweep = study.budget_sweep()
    # 4 is the headline budget: its runs (every seed) come from retrain, and only the 2-iteration run is trained
    assert list(sweep.iterations) == [2, 4] and list(sweep.source) == ["ablation", "retrain"]
    assert sweep.val_psnr.iloc[1] == retrained[retrained.variant == "backbone"].val_psnr.iloc[0]
    assert (tmp_path / "runs" / "ci" / "sr" / "ablation" / "budget" / "it2" / "sr_x2" / "backbone" / "seed0" / "last.pt").is_file()
    curves = pd.read_csv(study.reports / "ablation" / "budget_curves.csv")
    assert set(curves.metric) >= {"train/loss", "val/psnr"}
    study.ablate()  # the ablation step runs the sweep, and its clock covers it
    swept = pd.read_csv(study.reports / "ablation" / "budget.csv")
    provenance = json.loads((study.reports / "ablation" / "provenance.json").read_text())
    assert provenance["wall_seconds"] >= swept[swept.source == "ablation"].seconds.sum() - 0.1  # rounded to 0.1 s


def test_the_budget_fit_says_when_a_target_is_reached_and_otherwise_bounds_the_budget_it_needs() -> None:
    points = pd.DataFrame({"iterations": [300, 600, 600, 1200, 2400], "val_psnr": [34.0, 35.0, 35.2, 35.6, 36.0],
                           "seed": [0, 0, 1, 0, 0], "seconds": [30, 60, 60, 120, 240.0]})
    assert budget_fit(points, 35.5, 600)["reached_at"] == 1200
    assert "Reached at 1,200 iterations (1 seed, 2.0 min of training per run" in _sweep_sentence("sr_x2", points, 35.5,
                                                                                                600, "a source")
    where = budget_fit(points, 37.0, 600)
    assert where["psnr"][1] == pytest.approx(35.1)  # seeds averaged
    assert where["last_pair_db_per_doubling"] == pytest.approx(0.4)
    assert where["last_pair_budget"] == pytest.approx(2400 * 2 ** 2.5)  # 1 dB more at 0.4 dB per doubling
    assert where["fit_db_per_doubling"] == pytest.approx(0.45)  # least squares through 35.1, 35.6, 36.0
    assert 2400 < where["fit_budget"] < where["last_pair_budget"]
    text = _sweep_sentence("sr_x2", points, 37.0, 600, "a source")
    assert "600 it: 35.10 dB (n=2)" in text and "Not reached by 2,400 iterations (-1.00 dB)" in text
    assert "0.100 s per iteration" in text and "lower bounds" in text
    flat = budget_fit(points.assign(val_psnr=[34.0, 35.0, 35.0, 35.0, 34.9]), 37.0, 600)
    assert "fit_budget" not in flat and "last_pair_budget" not in flat


def test_auto_resume_continues_a_finished_run_and_restarts_after_a_config_change(ci_study, tmp_path: Path) -> None:
    config = ci_study.run_config("sr_x2")
    spec = ci_study.searched("sr_x2")
    first = train(spec, config, tmp_path, resume="auto", progress=False)
    stamp = (tmp_path / "last.pt").stat().st_mtime_ns
    again = train(spec, config, tmp_path, resume="auto", progress=False)  # finished: only re-validated
    assert again.last_psnr == first.last_psnr and (tmp_path / "last.pt").stat().st_mtime_ns == stamp
    from dataclasses import replace

    longer = replace(config, train=replace(config.train, iterations=config.train.iterations + 2))
    train(spec, longer, tmp_path, resume="auto", progress=False)  # another config: starts afresh, no error
    assert load_checkpoint(tmp_path / "last.pt")["iteration"] == config.train.iterations + 2

    from acla.engine.train import resumable, save_checkpoint

    state = load_checkpoint(tmp_path / "last.pt")
    assert resumable(tmp_path / "last.pt", state["config_hash"])
    save_checkpoint(tmp_path / "last.pt", state | {"source_digest": "older code"})
    assert not resumable(tmp_path / "last.pt", state["config_hash"])  # weights of other training code are not reused


def test_the_paper_column_reads_tables_added_later_without_code_changes(ci_study, tmp_path: Path) -> None:
    task_dir = ci_study.reports
    empty, notes = read_paper_tables(tmp_path / "absent")
    assert empty.empty and notes == []
    table = task_table(task_dir, empty)
    assert table.paper_psnr.isna().all() and (table.paper_source == "n/a").all()

    tables = tmp_path / "tables"
    tables.mkdir()
    (tables / "README.md").write_text("not a table")
    (tables / "table02_wide.csv").write_text("Method,Set5 PSNR,Set5 SSIM\nBicubic,33.66,0.9299\n")
    label = "bundled-test (centre 48px)"
    (tables / "table03_sr.csv").write_text(
        "setting,method,set,psnr,ssim\n"
        f"sr_x2,tiny EDSR (8x32) + ACLA,{label},40.00,—\n"
        f"sr_x2,Bicubic,{label},12.5,0.5\n")
    paper, notes = read_paper_tables(tables)
    assert any("table02_wide.csv: not read" in note for note in notes)
    assert any("table03_sr.csv: 2 rows read" in note for note in notes)
    table = task_table(task_dir, paper).set_index("method")
    assert table.loc["tiny EDSR (8x32) + ACLA", "paper_psnr"] == 40.0
    assert table.loc["tiny EDSR (8x32) + ACLA", "delta_psnr"] == pytest.approx(table.loc["tiny EDSR (8x32) + ACLA", "ours_psnr"] - 40)
    assert pd.isna(table.loc["tiny EDSR (8x32) + ACLA", "paper_ssim"])  # "—" is a blank, not a number
    assert table.loc["bicubic", "paper_psnr"] == 12.5 and table.loc["tiny EDSR (8x32)", "paper_source"] == "n/a"

    out = tmp_path / "out"
    result = render_study(task_dir.parent, out / "tables" / "ci", out / "figures" / "ci",
                          out / "tables" / "ci" / "section.md", tables)
    assert result["tasks"] == ["sr"]
    assert "| 40.00 |" in (out / "tables" / "ci" / "sr.md").read_text()
    page = (out / "tables" / "ci" / "section.md").read_text()  # the profile's page, its links relative to it
    assert "table02_wide.csv: not read" in page and "Δ acla − backbone" in page and "# Profile `ci`" in page
    assert "![training curves](../../figures/ci/training_curves.png)" in page  # shown, not only linked
    render_front_page(out)
    assert "[`ci`](tables/ci/section.md)" in (out / "pipeline-checks.md").read_text()  # ci is no result: not on the front
    for name in ("alpha_trajectories", "search_gradients", "insertion_map", "open_keys", "training_curves",
                 "accuracy_vs_cost", "sampled_keys_sr_x2", "crops_sr_x2"):
        assert (out / "figures" / "ci" / f"{name}.png").is_file(), name


def test_seed_spread_is_mean_std_n_and_the_values_of_each_group() -> None:
    frame = pd.DataFrame({"method": ["a", "a", "a", "b", "c"], "seed": [0, 1, 2, 0, float("nan")],
                          "psnr": [30.0, 31.0, 32.0, 29.0, 28.0]})
    spread = seed_spread(frame, ["method"], ["psnr"]).set_index("method")
    assert spread.loc["a", "psnr_mean"] == 31.0 and spread.loc["a", "psnr_std"] == pytest.approx(1.0)
    assert spread.loc["a", "n_seeds"] == 3 and spread.loc["a", "psnr_per_seed"] == "30.0000 31.0000 32.0000"
    assert pd.isna(spread.loc["b", "psnr_std"]) and spread.loc["b", "n_seeds"] == 1  # one seed: no spread
    assert spread.loc["c", "n_seeds"] == 0  # a classical row has no seed


def test_the_headline_shows_seeds_spread_and_whether_a_difference_exceeds_the_noise(tmp_path: Path) -> None:
    task = tmp_path / "sr"
    (task / "evaluate").mkdir(parents=True)
    (task / "retrain").mkdir()
    rows = [{"setting": "sr_x2", "method": "bicubic", "seed": float("nan"), "set": "Set5", "psnr": 33.0, "ssim": 0.9,
             "n_images": 5}]
    for seed, (backbone, acla) in enumerate([(35.0, 35.5), (35.1, 35.6), (34.9, 35.4)]):
        rows += [{"setting": "sr_x2", "method": "backbone", "seed": seed, "set": "Set5", "psnr": backbone, "ssim": 0.9,
                  "n_images": 5},
                 {"setting": "sr_x2", "method": "acla", "seed": seed, "set": "Set5", "psnr": acla, "ssim": 0.9,
                  "n_images": 5}]
    pd.DataFrame(rows).to_csv(task / "evaluate" / "scores.csv", index=False)
    pd.DataFrame({"iterations": [10]}).to_csv(task / "retrain" / "runs.csv", index=False)
    top = headline(task).iloc[0]
    assert top.backbone_n_seeds == 3 and top.acla_psnr_mean == pytest.approx(35.5)
    assert top.delta_acla == pytest.approx(0.5) and top.delta_acla_se == pytest.approx((2 * 0.01 / 3) ** 0.5)
    assert top.delta_acla_verdict == "exceeds noise"
    (task / "evaluate" / "scores.csv").write_text(pd.DataFrame(rows).assign(
        psnr=lambda f: f.psnr.where(~((f.method == "acla") & (f.seed == 0)), 34.0)).to_csv(index=False))
    assert headline(task).iloc[0].delta_acla_verdict == "within noise"


def test_the_section_says_whether_each_difference_exceeds_the_noise_and_sets_the_literature_beside_it() -> None:
    top = pd.DataFrame([{"setting": "sr_x2", "set": "Set5", "backbone_psnr_mean": 36.0, "backbone_psnr_std": 0.1,
                         "acla_psnr_mean": 36.5, "acla_psnr_std": 0.1, "delta_acla": 0.5, "delta_acla_se": 0.08,
                         "delta_acla_verdict": "exceeds noise"},
                        {"setting": "sr_x2", "set": "Urban100 (partial 19/100)", "backbone_psnr_mean": 30.0,
                         "backbone_psnr_std": 0.1, "acla_psnr_mean": 29.9, "acla_psnr_std": 0.1, "delta_acla": -0.1,
                         "delta_acla_se": 0.08, "delta_acla_verdict": "within noise"}])
    assert delta_sentence(top) == ("ACLA − backbone exceeds the seed noise (|Δ| > 2 SE) on 1 of 2 test sets "
                                   "(Set5 +0.500 ± 0.080); mean Δ over the sets +0.200 dB.\n")
    literature = published_results()
    srcnn = literature[(literature.task == "sr") & (literature.setting == "x2") & (literature.set == "Set5")
                       & (literature.method == "SRCNN")].psnr.iloc[0]
    text = literature_sentence("sr", top)
    assert f"SRCNN {srcnn:.2f} (backbone {36.0 - srcnn:+.2f})" in text
    assert "Urban100" not in text  # a partial set is never set beside a full-set number
    assert literature_sentence("demosaic", top) == ""
    # each task's settings find their rows: the CSV keys denoising by colour and sigma, JPEG by colour and quality
    assert [literature_key(s) for s in ("sr_x2", "denoise_gray_s25", "jpeg_q20", "demosaic")] == [
        ("sr", "x2"), ("denoise", "gray_s25"), ("jpeg", "gray_q20"), ("demosaic", "demosaic")]
    gray = top.assign(setting="denoise_gray_s25", set=["BSD68", "Set12"])
    bm3d = literature[(literature.task == "denoise") & (literature.setting == "gray_s25") & (literature.set == "BSD68")
                      & (literature.method == "BM3D")].psnr.iloc[0]
    assert f"BM3D {bm3d:.2f} (backbone {36.0 - bm3d:+.2f})" in literature_sentence("denoise", gray)


def test_the_module_step_writes_its_provenance_beside_its_figure(tmp_path: Path) -> None:
    study = open_task("sr", ROOT / "params.yaml", profile="ci", reports=tmp_path / "study", runs=tmp_path / "runs",
                      progress=False)
    out = tmp_path / "module"
    summary = study.explain(out, trained=False)  # a fresh model: needs no earlier stage
    provenance = json.loads((out / "provenance.json").read_text())
    assert summary is not None and (out / "module_keys.png").is_file()
    assert provenance["step"] == "module" and provenance["profile"] == "ci" and provenance["wall_seconds"] > 0
    assert provenance["skipped"] is False
    # a search that kept no ACLA module: nothing to draw, and the provenance says so
    study.variants = lambda setting: ("backbone",)
    assert study.explain(tmp_path / "none", trained=True) is None
    assert json.loads((tmp_path / "none" / "provenance.json").read_text())["skipped"] is True
    assert [path.name for path in (tmp_path / "none").iterdir()] == ["provenance.json"]


def test_a_profile_may_skip_a_task_and_its_stages_write_only_provenance(tmp_path: Path) -> None:
    text = (ROOT / "params.yaml").read_text().replace("      ci: {settings: [jpeg_q20]}", "      ci: {settings: []}")
    params = tmp_path / "params.yaml"
    params.write_text(text)
    study = open_task("jpeg", params, profile="ci", reports=tmp_path / "study", runs=tmp_path / "runs", progress=False)
    for step in (study.search, study.retrain, study.evaluate, study.ablate, study.efficiency):
        assert step().empty
    assert json.loads((study.reports / "evaluate" / "provenance.json").read_text())["skipped"] is True
    assert not (study.reports / "evaluate" / "scores.csv").exists() and (study.runs / "retrain").is_dir()
    out = tmp_path / "out"
    tables = out / "tables" / "ci"
    render_study(tmp_path / "study" / "ci", tables, out / "figures" / "ci", tables / "section.md", None)
    # the tables DVC expects exist and say why they are empty
    assert "not run in profile `ci`" in (tables / "jpeg_ablation.md").read_text()
    assert "Not run in this profile (`settings: []`): jpeg." in (tables / "section.md").read_text()


def test_the_smoke_profile_is_the_reduced_study_the_issue_names() -> None:
    study = load_study(ROOT / "params.yaml")
    assert study.profile == "smoke"
    assert {name: task.settings for name, task in study.tasks.items()} == {
        "sr": ("sr_x2",), "denoise": ("denoise_color_s30",), "demosaic": ("demosaic",), "jpeg": ("jpeg_q20",)}
    for task in study.tasks.values():
        assert task.train.train_sets == ("bundled-train",) and task.evaluate.test_sets == ("bundled-test",)


def test_the_search_sentence_says_which_term_of_s9_decided_the_kept_blocks(tmp_path: Path) -> None:
    setting = tmp_path / "sr" / "search" / "sr_x2"
    setting.mkdir(parents=True)
    (setting / "arch.json").write_text(json.dumps({"insert": [1, 3], "rule": "top 2",
                                                   "module_flops": {"1": 100, "2": 200, "3": 200}}))
    pd.DataFrame({"iteration": [1, 2], "block_1": [0.5, 0.6], "block_2": [0.5, 0.4], "block_3": [0.5, 0.55],
                  "rec_grad_1": [0.0, -0.2], "rec_grad_2": [0.0, 0.1], "rec_grad_3": [0.0, -0.1],
                  "cost_grad_1": [0.0, 0.01], "cost_grad_2": [0.0, 0.02], "cost_grad_3": [0.0, 0.02]}
                 ).to_csv(setting / "alpha.csv", index=False)
    text = search_sentence(tmp_path / "sr")
    assert "kept blocks 1 3 (top 2)" in text and "sigmoid(alpha) 0.400–0.600 after 2 iterations" in text
    assert "|reconstruction| / |cost| = 8.00" in text
    assert ("Cost alone would keep 1 2 (the cheapest modules; equal FLOPs: lower block first); "
            "reconstruction alone 1 3.") in text


def test_the_open_keys_sentence_reads_what_the_trained_gates_leave_open(tmp_path: Path) -> None:
    keys = tmp_path / "sr" / "evaluate" / "sr_x2" / "keys"
    keys.mkdir(parents=True)
    (keys / "summary.json").write_text(json.dumps({"setting": "sr_x2", "image": "Set5/baby",
                                                   "mean_open_keys": {"1": 1.0, "4": 30.5},
                                                   "keys_per_query": {"1": 9, "4": 36}}))
    assert "- sr_x2 (Set5/baby): after block 1: 1.00 of 9, after block 4: 30.50 of 36." in open_keys_sentence(
        tmp_path / "sr")
    assert open_keys_sentence(tmp_path / "denoise") == ""


def test_a_step_that_trains_no_variant_still_makes_its_checkpoint_folder(tmp_path: Path) -> None:
    study = open_task("sr", ROOT / "params.yaml", profile="ci", reports=tmp_path / "study", runs=tmp_path / "runs",
                      progress=False)
    study.search()  # the architecture the variants are built from
    assert study._train("ablation", [], study.seeds).empty  # an ablation whose profile lists no variant
    assert (study.runs / "ablation").is_dir()  # a DVC output of the stage, so it must exist


def test_the_frontier_trains_every_point_and_counts_its_keys_and_flops(ci_study, tmp_path: Path) -> None:
    study = open_task("sr", ROOT / "params.yaml", profile="ci", reports=tmp_path / "reports", runs=tmp_path / "runs",
                      progress=False)
    shutil.copytree(ci_study.reports / "search", study.reports / "search")
    # the ci profile's points: CLA K=1, ACLA at lambda_k 0 and 0.01 and one remedy, 2 seeds; the backbone and ACLA at
    # 0.01 (frontier.long_points) also a whole schedule of 6 iterations
    table = study.frontier()
    remedy = "acla lk=0.01 + relaxed gates forward"
    assert list(dict.fromkeys(table.variant)) == ["backbone", "cla K=1", "acla lk=0", "acla lk=0.01", remedy]
    assert (table.groupby("variant").seed.nunique() == 2).all()
    iterations = study.config.train.iterations
    long = table.variant.isin(["backbone", "acla lk=0.01"])
    for variant in ("backbone", "acla lk=0.01"):
        assert sorted(table[table.variant == variant].iterations.unique()) == [iterations, 6]
    assert set(table[~long].iterations) == {iterations}
    assert set(table.departures[table.variant == remedy]) == {"gate_bias=0.0 straight_through=False"}
    assert set(table.departures[table.variant != remedy]) == {""}  # the spec's recipe
    assert (tmp_path / "runs" / "ci" / "sr" / "frontier" / "it6" / "sr_x2" / "acla_lk0_01" / "seed1" / "last.pt").is_file()
    assert (tmp_path / "runs" / "ci" / "sr" / "frontier" / f"it{iterations}" / "sr_x2" / "acla_lk0_01" / "seed1" /
            "last.pt").is_file()
    rows = table[table.iterations == iterations].set_index(["variant", "seed"])  # the first budget: every point
    backbone, cla, acla = rows.loc[("backbone", 0)], rows.loc[("cla K=1", 0)], rows.loc[("acla lk=0", 0)]
    assert backbone.open_keys == 0 and cla.open_keys == cla.keys_per_query  # CLA keeps every key: R K per module
    assert 1 <= acla.open_keys <= acla.keys_per_query and 0 < acla.mode_share_max <= 1
    assert (table[table.variant != "backbone"].gflops > backbone.gflops).all()
    curves = pd.read_csv(study.reports / "frontier" / "curves.csv")
    assert curves.metric.str.startswith("gates/").any()
    keys = study.reports / "frontier" / "keys" / "acla_lk0" / "bundled-test"
    assert {"zoomed_keys.csv", "open_key_maps.npz", "input.png", "summary.json"} <= {p.name for p in keys.iterdir()}
    length = training_length(study.reports)  # the long points against the backbone at each budget
    assert set(length.variant) == {"backbone", "acla lk=0.01"} and set(length.iterations) == {iterations, 6}
    frontier = frontier_table(study.reports)
    assert set(frontier.n_seeds[frontier.variant != "backbone"]) == {2}
    assert set(frontier.departures[frontier.variant == remedy]) == {"gate_bias=0.0 straight_through=False"}
    assert set(frontier.gates_moving[frontier.attention == "acla"]) <= {"yes", "no"}


def test_the_front_page_answers_first_and_ends_with_its_rules_and_glossary(tmp_path: Path) -> None:
    found = {"sr": ([psnr_comparison(35.0, 0.02, 3, 35.1, 0.02, 3, "Set5")], "tiny EDSR (8x32), 600 it on T91"),
             "adaptive": ([gate_comparison("λk=0.001 at 600 it", 0.0, 4, 1.0, 24.75, False)], "")}
    folder = tmp_path / "tables" / "cpu"
    folder.mkdir(parents=True)
    claims_frame(found).to_csv(folder / "claims.csv", index=False)
    comparisons_frame(found).to_csv(folder / "comparisons.csv", index=False)
    (folder / "section.md").write_text("# Profile `cpu`: the evidence in full\n")
    scale = {"backbones": ["tiny EDSR (8x32)"], "iterations": [600], "train_sets": ["T91"],
             "seeds": {"headline": [3, 3]}, "headline": ["backbone", "acla"]}
    (folder / "summary.json").write_text(json.dumps({"device": "cpu", "wall_seconds": 60.0, "scale": scale}))
    text = render_front_page(tmp_path, ROOT / "params.yaml").read_text()
    first_screen = "\n".join(text.splitlines()[:12])
    paper = load_study(ROOT / "params.yaml", "paper").tasks["sr"].train.iterations
    assert "tiny EDSR (8 blocks x 32 channels), 600 iterations on T91" in first_screen and f"{paper:,} iterations" in first_screen
    measured = [claim for claim_id, claim in CLAIMS.items() if claim_id in found]
    assert all(claim.statement in first_screen for claim in measured)  # a word per claim some profile measured
    assert not any(claim.statement in text for claim_id, claim in CLAIMS.items() if claim_id not in found)
    assert "**contradicted** in cpu (ACLA − backbone on Set5: -0.100 ± 0.016 dB)" in first_screen  # beside its profile
    assert "What could change the answer: training at the paper's scale" in first_screen
    assert (tmp_path / "figures" / "summary_delta.png").is_file() and "figures/summary_delta.png" in text
    assert text.index("## The verdict") < text.index("## Evidence") < text.index("## Rules") < text.index("## Glossary")
    assert "issue #" not in text and "spec.md" not in text and "lk=" not in text
    defined = " ".join(resource_table("glossary.csv").term)
    for symbol in ("λk", "R·K", "CLA", "SE", "Δ", "PSNR", "recipe", "gpu-check", "it"):
        assert symbol in defined, symbol
    assert (tmp_path / "pipeline-checks.md").is_file()


def test_the_first_screen_says_which_key_budget_adapts_and_whether_it_pays() -> None:
    def column(words: dict[str, str]) -> dict:
        claims = claims_frame({})
        claims["word"] = [words.get(claim_id, "not measured") for claim_id in claims.claim_id]
        return {"claims": claims}

    assert budget_decision({"cpu": column({"adaptive": "contradicted"})}) == ""  # the linear form alone: no answer yet
    lost = budget_decision({"cpu": column({"adaptive": "contradicted"}),
                            "cpu-budget-long": column({"adaptive_target": "supported", "pays": "contradicted"})})
    assert "linear budget: no (contradicted); target budget: yes (supported)" in lost
    assert "beat fixed keys at equal keys per query: **contradicted**" in lost and "keeps the linear budget" in lost
    won = budget_decision({"p": column({"adaptive_target": "supported", "pays": "supported"})})
    assert "the target form is the candidate for the headline ACLA" in won
    # a model whose gates adapted but still moved is neutral; the answer names it beside the word it did not change
    found = {"adaptive_target": ([gate_comparison("t=0.5 at 2400 it", 4.0, 4, 9.5, 24.75, moving=True),
                                  gate_comparison("t=0.25 at 2400 it", 0.0, 4, 1.0, 24.75, moving=False)], "")}
    assert [c.side for c in found["adaptive_target"][0]] == [0, -1]
    moving = budget_decision({"long": column({"adaptive_target": "contradicted"})
                              | {"comparisons": comparisons_frame(found)}})
    assert ("target budget: no (contradicted, although t=0.5 at 2400 it in long adapted with its gates still moving)"
            in moving)
