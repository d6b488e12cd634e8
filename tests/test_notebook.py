"""The notebooks' shared helper (acla.study.notebook) and the notebooks' own shape: each says what it tests in prose,
keeps the parameters its DVC stage passes, and calls its step."""

from __future__ import annotations

import json
import re
from pathlib import Path

import nbformat
import pandas as pd
import pytest

from acla.study import notebook as nb
from acla.study.steps import open_task

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = ROOT / "notebooks"
STEP_CALLS = {"00_classical": "run(root", "01_module": "study.explain(", "02_search": "study.search()",
              "03_retrain": "study.retrain()", "04_evaluate": "study.evaluate()", "05_ablation": "study.ablate()",
              "06_efficiency": "study.efficiency()", "07_report": "render_study(", "08_frontier": "study.frontier()"}
STAGE_PARAMETERS = {"00_classical": {"params", "profile", "out"}, "07_report": {"study", "out", "paper_tables",
                                                                                "classical_md"},
                    "01_module": {"params", "profile", "task", "reports", "runs", "trained", "out"}}


def read(name: str) -> nbformat.NotebookNode:
    return nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4)


@pytest.mark.parametrize("name", list(STEP_CALLS))
def test_each_notebook_keeps_its_stage_parameters_and_step_call_and_stores_no_output(name: str) -> None:
    book = read(name)
    tagged = [cell for cell in book.cells if "parameters" in cell.metadata.get("tags", [])]
    assert len(tagged) == 1, name
    assigned = set(re.findall(r"^(\w+) =", tagged[0].source, re.M))
    assert STAGE_PARAMETERS.get(name, {"params", "profile", "task", "reports", "runs"}) | {"run_step"} <= assigned
    code = "\n".join(cell.source for cell in book.cells if cell.cell_type == "code")
    assert STEP_CALLS[name] in code and re.search(r"if run_step\b", code)
    assert all(not cell.get("outputs") and cell.get("execution_count") is None
               for cell in book.cells if cell.cell_type == "code"), f"{name}: outputs are stored"


@pytest.mark.parametrize("name", [n for n in STEP_CALLS if n != "00_classical"])
def test_each_step_notebook_opens_with_the_claim_it_tests_and_has_more_prose_than_code(name: str) -> None:
    book = read(name)
    kinds = [cell.cell_type for cell in book.cells]
    assert kinds.count("markdown") >= kinds.count("code"), name
    assert book.cells[0].cell_type == "markdown" and "claim" in book.cells[0].source.lower()
    text = "\n".join(cell.source for cell in book.cells)
    assert "spec.md" not in text and not re.search(r"issue #\d", text), name


def test_the_module_notebook_links_every_equation_label_to_the_method_document() -> None:
    text = "\n".join(cell.source for cell in read("01_module").cells if cell.cell_type == "markdown")
    for label in range(1, 10):
        assert f"[(S{label})](../docs/method.md#s{label})" in text
    assert "$$" in text  # the equations are written out, not only named


def study_folder(root: Path, profile: str, task: str, step: str, *, skipped: bool) -> None:
    folder = root / "study" / profile / task / step
    folder.mkdir(parents=True)
    (folder / "provenance.json").write_text(json.dumps({"skipped": skipped}))


def test_profile_copies_say_which_steps_ran_and_re_render_them_read_only(tmp_path: Path) -> None:
    reports = tmp_path / "reports"
    study_folder(reports, "cpu", "sr", "search", skipped=False)
    study_folder(reports, "cpu", "jpeg", "search", skipped=True)
    copies = {copy.name: copy for copy in nb.profile_copies("cpu", reports=reports)}
    assert copies["02_search_sr"].status == "ran"
    assert copies["02_search_jpeg"].status == "not run"
    assert copies["03_retrain_sr"].status == "no outputs"
    assert copies["00_classical"].status == "no outputs" and copies["07_report"].status == "no outputs"
    assert all(copy.parameters["run_step"] is False for copy in copies.values())
    assert copies["02_search_sr"].parameters | {"task": "sr"} == copies["02_search_sr"].parameters
    assert {copy.notebook for copy in copies.values()} == set(STEP_CALLS)
    assert all((NOTEBOOKS / f"{copy.notebook}.ipynb").is_file() for copy in copies.values())


def test_the_index_links_the_copies_and_names_the_steps_not_run(tmp_path: Path) -> None:
    reports = tmp_path / "reports"
    study_folder(reports, "cpu", "sr", "search", skipped=False)
    study_folder(reports, "cpu", "jpeg", "search", skipped=True)
    (tmp_path / "02_search_sr.ipynb").write_text("{}")
    text = nb.index_markdown("cpu", nb.profile_copies("cpu", reports=reports), tmp_path)
    row = next(line for line in text.splitlines() if line.startswith("| `02_search`"))
    assert "[02_search_sr](02_search_sr.ipynb)" in row and "not run" in row and "no outputs recorded" in row
    assert "(02_search_jpeg.ipynb)" not in row  # no link to a copy that is not there


def test_relink_points_markdown_links_at_the_same_files_from_a_profile_folder(tmp_path: Path) -> None:
    book = nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell("[(S1)](../docs/method.md#s1) and [x](y.md)"),
                                           nbformat.v4.new_code_cell('path = "../params.yaml"')])
    path = tmp_path / "copy.ipynb"
    nbformat.write(book, path)
    nb.relink(path)
    cells = nbformat.read(path, as_version=4).cells
    assert cells[0].source == "[(S1)](../../../docs/method.md#s1) and [x](y.md)"
    assert cells[1].source == 'path = "../params.yaml"'


def test_the_open_key_summary_gives_one_row_per_module_with_its_spread() -> None:
    counts = pd.DataFrame({"block": [2, 2, 2, 4, 4], "open_keys": [1, 2, 3, 1, 2], "queries": [1, 3, 0, 4, 0],
                           "keys_per_query": [9, 9, 9, 18, 18]})
    summary = nb.open_key_summary(counts).set_index("after block")
    assert summary.loc[2, "mean open"] == pytest.approx(1.75)
    assert (summary.loc[2, "fewest"], summary.loc[2, "most"], summary.loc[2, "most common"]) == (1, 2, 2)
    assert summary.loc[2, "share at it"] == pytest.approx(0.75)
    assert summary.loc[4, "share at it"] == 1.0 and summary.loc[4, "keys (R·K)"] == 18


def test_a_step_the_profile_does_not_run_is_said_so_with_what_the_profile_runs(tmp_path: Path) -> None:
    def task(name: str, profile: str):
        return open_task(name, ROOT / "params.yaml", profile=profile, reports=tmp_path, runs=tmp_path, progress=False)

    study = task("jpeg", "cpu-gates")
    assert not nb.runs_step(study, "search")
    text = nb.not_run(study, "search")
    assert "cpu-gates" in text and "settings: []" in text and "[README.md](README.md)" in text
    assert "| sr | sr_x2 |" in text  # what the profile runs instead
    assert nb.runs_step(task("sr", "cpu-gates"), "search") and nb.runs_step(task("sr", "cpu-gates"), "frontier")
    assert not nb.runs_step(task("sr", "cpu"), "frontier")
