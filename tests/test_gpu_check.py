"""``python -m acla gpu-check`` at tiny sizes on the CPU: its files, its checks, its budget, its imports."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import torch
import torch.nn.functional as F

from acla.gpu_check.correctness import VARIANTS, attention_checks
from acla.gpu_check.plan import TINY
from acla.gpu_check.writing import Part, scrubbed

ROOT = Path(__file__).parents[1]
# What a GPU box with torch preinstalled and `pip install --no-deps -e .` may lack: the engine must not need it.
ABSENT = ("dvc", "dvclive", "papermill", "matplotlib", "seaborn", "torchmetrics", "nbval", "jupyterlab")
RUN_WITHOUT_EXTRAS = f"""
import runpy, sys
for name in {ABSENT!r}:
    sys.modules[name] = None  # `import name` raises ImportError
sys.argv = ["python -m acla", *sys.argv[1:]]
runpy.run_module("acla", run_name="__main__")
"""


def test_cpu_check_writes_every_part_within_its_budget_without_the_study_extras(tmp_path: Path) -> None:
    out = tmp_path / "report"
    environment = {**os.environ, "PYTHONPATH": str(ROOT)}
    start = time.monotonic()
    result = subprocess.run([sys.executable, "-c", RUN_WITHOUT_EXTRAS, "gpu-check", "--device", "cpu",
                             "--budget-seconds", "60", "--out", str(out)],
                            cwd=ROOT, env=environment, capture_output=True, text=True, timeout=600)
    wall = time.monotonic() - start
    log = result.stdout + result.stderr
    assert wall < 120, f"a 60 s budget took {wall:.0f} s\n{log}"

    correctness = pd.read_csv(out / "correctness" / "correctness.csv")
    failed = correctness[~correctness.passed]
    assert failed.empty, f"failed checks:\n{failed.to_string()}\n{log}"
    assert set(zip(correctness.variant, correctness.logits, strict=True)) >= set(VARIANTS)
    assert set(correctness.precision) == {"fp32", "bf16 autocast"}
    assert "tiled vs whole image" in set(correctness.check)
    assert result.returncode == 0, log

    speed = pd.read_csv(out / "speed" / "speed.csv")
    assert set(speed.status) <= {"ok", "skipped"} and (speed.status == "ok").any(), speed.to_string()
    assert speed[speed.status == "skipped"].note.notna().all()  # every skip says why
    learning = pd.read_csv(out / "learning" / "learning.csv")
    assert (learning.method == "bicubic").any()
    assert {"tiny", "tiny + ACLA (four stages)"} <= set(learning.method)
    assert set(learning.status) <= {"ok", "skipped"}

    record = json.loads((out / "run.json").read_text())
    assert record["data_root"] == "bundled" and record["device"].startswith("cpu: ")
    assert record["torch"] == torch.__version__ and set(record["parts"]) == {"correctness", "speed", "learning"}
    front = (out / "README.md").read_text()
    assert "Every correctness check passed." in front
    written = [path for path in out.rglob("*") if path.is_file()]
    assert len(written) == 8  # README.md, run.json, and a CSV and a README.md per part
    for path in written:
        text = path.read_text()
        for machine_path in (str(tmp_path), str(ROOT), str(Path.home())):
            assert machine_path not in text, f"{path.relative_to(out)} names {machine_path}"


def test_a_wrong_kernel_fails_its_check_and_is_reported(monkeypatch) -> None:
    attention = F.scaled_dot_product_attention

    def off_by_a_little(*args, **kwargs):
        output = attention(*args, **kwargs)
        return output * 1.001 if output.dtype == torch.float32 else output

    monkeypatch.setattr(F, "scaled_dot_product_attention", off_by_a_little)
    part = Part("correctness", "(a) correctness", pd.DataFrame(attention_checks(torch.device("cpu"), TINY)))
    wrong = part.frame[~part.frame.passed & (part.frame.precision == "fp32")]
    assert set(wrong.variant) == {"nonlocal", "cla-dense"}  # the two modules that call it, and only in fp32
    assert part.status == "FAILED" and any(line.startswith("nonlocal - fp32 output") for line in part.failed)


def test_written_text_names_no_machine_path(tmp_path: Path) -> None:
    data = tmp_path / "data"
    text = f"corrupt file {data}/Set5/baby.png; scratch {tmp_path}/x; home {Path.home()}/y"
    text = scrubbed(text, {data: "$ACLA_DATA"})
    assert "corrupt file $ACLA_DATA/Set5/baby.png" in text
    assert str(tmp_path) not in text and str(Path.home()) not in text


def test_a_copied_tree_without_git_names_the_commit_it_was_declared_to_be(monkeypatch) -> None:
    """A GPU box receives the files without ``.git``: the reports then carry ``$ACLA_COMMIT``, marked as declared."""
    from acla import provenance

    def no_git(*args, **kwargs):
        raise OSError("git: not a repository")

    monkeypatch.setattr(provenance.subprocess, "run", no_git)
    monkeypatch.setenv("ACLA_COMMIT", "0123456789abcdef")
    assert provenance.git_commit() == "0123456789ab (declared)"
    monkeypatch.delenv("ACLA_COMMIT")
    assert provenance.git_commit() == "unknown"
