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
