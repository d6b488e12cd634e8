"""The README's five-line example runs as written."""

from __future__ import annotations

import re
from pathlib import Path

import torch


def test_readme_module_example_runs() -> None:
    text = (Path(__file__).parents[1] / "README.md").read_text()
    section = text.split("## ACLA in your own network", 1)[1]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    scope = {name: torch.rand(1, 64, 12, 12) for name in ("features", "head_features", "earlier_features")}
    scope["reconstruction_loss"] = torch.tensor(0.0)
    exec(code, scope)  # noqa: S102 - our own documentation
    assert scope["features"].shape == (1, 64, 12, 12)
    assert 1 <= float(scope["acla"].open_keys) <= 18


def test_readme_opens_with_the_study_and_test_commands_that_ci_runs() -> None:
    root = Path(__file__).parents[1]
    block = re.search(r"```bash\n(.*?)```", (root / "README.md").read_text(), re.S).group(1)
    commands = [line.split("#")[0].strip() for line in block.strip().splitlines()]
    assert commands[0] == 'pip install -e ".[dev]" && dvc repro'
    assert commands[1].startswith('pip install -e ".[dev]" && pytest --nbval-lax')
    ci = (root / ".ci" / "run").read_text()
    assert commands[1].split("&& ", 1)[1] in ci  # CI runs the README's test command, notebooks included


def test_ci_holds_torch_at_a_release_inside_the_projects_range() -> None:
    from packaging.requirements import Requirement

    root = Path(__file__).parents[1]
    assert 'pip install --quiet -c .ci/constraints.txt -e ".[dev]"' in (root / ".ci" / "run").read_text()
    pins = dict(line.split("==") for line in (root / ".ci" / "constraints.txt").read_text().splitlines()
                if line.strip() and not line.startswith("#"))
    declared = re.search(r'"(torch[^"]*)"', (root / "pyproject.toml").read_text()).group(1)
    assert Requirement(declared).specifier.contains(pins["torch"]), (declared, pins["torch"])
