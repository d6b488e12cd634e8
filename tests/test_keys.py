"""Where acla.study.keys looks: the query kinds of the zoomed-keys figure."""

from __future__ import annotations

import numpy as np

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
