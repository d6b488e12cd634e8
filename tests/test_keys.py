"""Where acla.study.keys looks: the query kinds of the zoomed-keys figure."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from acla.study.keys import query_kinds


def test_edge_texture_and_flat_queries_land_where_the_image_is_so() -> None:
    """A 64 x 96 image: a flat left third, a fine low-contrast texture in the middle third, and one strong vertical
    step (dark to bright) in the right third."""
    rng = np.random.default_rng(0)
    image = np.full((64, 96), 100.0)
    image[:, 32:64] += rng.uniform(-6, 6, size=(64, 32))  # many moderate changes, no strong step
    image[:, 80:] = 240.0  # the step at x = 80
    kinds = query_kinds(image.astype(np.uint8))
    assert 12 <= kinds["flat"][1] < 32 - 2
    assert 32 + 2 <= kinds["texture"][1] < 64 - 2
    assert abs(kinds["edge"][1] - 79.5) <= 1
    assert all(12 <= y < 64 - 12 for y, _ in kinds.values())


def test_the_open_keys_correlate_with_the_activity_of_the_image_where_they_follow_it(tmp_path: Path) -> None:
    from PIL import Image

    from acla.study.keys import local_activity, open_keys_against_activity

    rng = np.random.default_rng(0)
    image = (rng.random((20, 24)) * np.linspace(0, 255, 24)).astype(np.uint8)  # busier to the right
    Image.fromarray(image).save(tmp_path / "input.png")
    activity = local_activity(image)
    follows = np.argsort(np.argsort(activity.ravel())).reshape(activity.shape)  # the activity's ranks
    np.savez(tmp_path / "open_key_maps.npz", **{"1": follows, "2": np.full(image.shape, 9), "3": -follows})
    rho = open_keys_against_activity(tmp_path)
    assert rho["1"] == pytest.approx(1.0) and rho["3"] == pytest.approx(-1.0)
    assert np.isnan(rho["2"])  # every query keeps as many keys: no correlation to speak of
