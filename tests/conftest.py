"""Shared fixtures. Tests that need the benchmark images take ``data_root``.

Without ``$ACLA_DATA`` they are skipped with a reason; CI sets ``ACLA_REQUIRE_DATA=1`` so that a
missing data root fails the run instead of hiding behind skips. Tests of the C++ kernel call
``skip_without_kernel()`` the same way, with ``ACLA_REQUIRE_KERNEL=1``.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REFERENCE = "reference"


@pytest.fixture(scope="session")
def data_root() -> Path:
    value = os.environ.get("ACLA_DATA")
    if not value or not (Path(value) / "MANIFEST.csv").is_file():
        if os.environ.get("ACLA_REQUIRE_DATA") == "1":
            pytest.fail(f"ACLA_REQUIRE_DATA=1 but ACLA_DATA={value!r} holds no MANIFEST.csv")
        pytest.skip("needs the benchmark images: set ACLA_DATA to a data root (e.g. ../shared/data)")
    return Path(value)


def skip_without_kernel() -> None:
    """Skip where the C++ kernel cannot be built (no compiler), or fail where CI requires it."""
    from acla.ops import extension

    if extension.load() is None:
        if os.environ.get("ACLA_REQUIRE_KERNEL") == "1":
            pytest.fail("ACLA_REQUIRE_KERNEL=1 but the C++ kernel cannot be built here")
        pytest.skip("the C++ gather kernel cannot be built here (no compiler)")


@pytest.fixture(scope="session")
def reference_root(data_root: Path) -> Path:
    path = data_root / REFERENCE
    if not path.is_dir():
        pytest.fail(f"{path} missing: the MATLAB reference images are part of the shared data root")
    return path


RUN_SECTIONS = ("model", "train", "search", "evaluate", "ablation", "efficiency")
MINIMAL_TASKS = {"sr": {"settings": ["sr_x2"]}, "denoise": {"settings": ["denoise_color_s30"]},
                 "demosaic": {"settings": ["demosaic"]}, "jpeg": {"settings": ["jpeg_q20"]}}


def study_params(text: str) -> str:
    """A params file from the one-run sections a test cares about: ``model``/``train``/... go under
    ``defaults`` (every task inherits them) and the four tasks get one setting each."""
    import yaml

    raw = yaml.safe_load(text) or {}
    defaults = {key: raw.pop(key) for key in RUN_SECTIONS if key in raw}
    raw.setdefault("defaults", {}).update(defaults)
    raw.setdefault("tasks", MINIMAL_TASKS)
    return yaml.safe_dump(raw, sort_keys=False)
