"""Efficiency counting: FLOPs of known layers, the attention operators, memory that scales."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from acla.engine.efficiency import count_flops, peak_memory_bytes, profile
from acla.models import build_attention, build_model


def test_convolution_flops_are_two_per_multiply_add() -> None:
    conv = torch.nn.Conv2d(4, 8, 3, padding=1)
    x = torch.rand(1, 4, 10, 10)
    assert count_flops(lambda: conv(x)) == 2 * 4 * 8 * 9 * 10 * 10


def test_gather_softmax_and_grid_sample_are_counted() -> None:
    table, index = torch.rand(50, 16), torch.randint(0, 50, (30, 12))
    weights = torch.rand(30, 12)
    assert count_flops(lambda: F.embedding_bag(index, table, per_sample_weights=weights, mode="sum")) == 2 * 30 * 12 * 16
    assert count_flops(lambda: torch.rand(3, 7).softmax(-1)) == 5 * 21
    grid = torch.rand(2, 5, 6, 2) * 2 - 1
    assert count_flops(lambda: F.grid_sample(torch.rand(2, 4, 8, 8), grid, align_corners=False)) == 8 * 2 * 4 * 5 * 6


def test_attention_flops_grow_linearly_for_sampled_and_quadratically_for_dense() -> None:
    def flops(name: str, size: int) -> int:
        module = build_attention(name, 8, 2).eval()
        query, refs = torch.rand(1, 8, size, size), [torch.rand(1, 8, size, size) for _ in range(2)]
        with torch.no_grad():
            return count_flops(lambda: module(query, refs))

    # every term is per position but one: inference folds W_v into W_z (2 C^3 FLOPs) once per call
    fold = 2 * 8**3
    assert flops("acla", 16) - fold == 4 * (flops("acla", 8) - fold)
    assert flops("cla-dense", 16) > 14 * flops("cla-dense", 8)  # quadratic attention dominates
    assert flops("nonlocal", 16) > 12 * flops("nonlocal", 8)


def test_peak_memory_tracks_tensors_made_during_the_call() -> None:
    def make() -> None:
        a = torch.ones(1000, 250)  # 1 MB
        b = a * 2  # 2 MB live
        del a
        c = b + 1  # still 2 MB live at most
        del b, c

    peak = peak_memory_bytes(make, torch.device("cpu"))
    assert 2_000_000 <= peak <= 2_100_000


def test_profile_reports_every_figure() -> None:
    model = build_model("sr", "tiny", attention="acla", insert="four-stages", scale=2)
    result = profile(model, (1, 3, 16, 16), repeats=1)
    assert result.params == sum(p.numel() for p in model.parameters())
    assert result.flops > 0 and result.peak_memory_bytes > 0 and result.latency_s > 0
    trained = profile(model, (1, 3, 16, 16), repeats=1, backward=True)
    assert trained.flops > 2 * result.flops  # backward costs about twice the forward
