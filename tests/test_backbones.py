"""Backbones: published parameter counts, insertion points, references, task heads, clear errors."""

from __future__ import annotations

import pytest
import torch

from acla.models import build_model
from acla.models.backbones import default_references, insertion_locations


def parameters(model: torch.nn.Module) -> int:
    return sum(parameter.numel() for parameter in model.parameters())


@pytest.mark.parametrize(
    ("backbone", "scale", "expected"),
    [
        ("edsr-baseline", 2, 1_369_859),  # EDSR paper: 1.37 M (the authors' log: 1,369,883 with 24 trainable mean-shift weights)
        ("edsr-baseline", 3, 1_554_499),
        ("edsr-baseline", 4, 1_517_571),
        ("edsr", 2, 40_729_603),  # EDSR paper: 40.7 M
    ],
)
def test_parameter_counts_match_the_published_edsr(backbone: str, scale: int, expected: int) -> None:
    assert parameters(build_model("sr", backbone, scale=scale)) == expected


def test_output_shapes_per_task() -> None:
    x = torch.rand(1, 3, 12, 16)
    for scale in (2, 3, 4):
        assert build_model("sr", "tiny", scale=scale)(x).shape == (1, 3, 12 * scale, 16 * scale)
    assert build_model("denoise", "tiny")(x).shape == x.shape
    assert build_model("denoise", "tiny", color="gray")(x[:, :1]).shape == (1, 1, 12, 16)
    assert build_model("demosaic", "tiny", attention="acla", insert="four-stages")(x).shape == x.shape
    assert build_model("jpeg", "tiny", color="gray")(x[:, :1]).shape == (1, 1, 12, 16)


def test_non_sr_models_start_near_the_identity_through_the_global_residual() -> None:
    model = build_model("denoise", "tiny")
    with torch.no_grad():
        model.tail.weight.zero_(), model.tail.bias.zero_()
    x = torch.rand(1, 3, 8, 8)
    assert torch.equal(model(x), x)


def test_insertion_locations() -> None:
    assert insertion_locations("none", 16) == []
    assert insertion_locations("every", 4) == [1, 2, 3, 4]
    assert insertion_locations("four-stages", 16) == [4, 8, 12, 16]
    assert insertion_locations([3, 9], 16) == [3, 9]
    with pytest.raises(ValueError, match="distinct block indices in 1..16"):
        insertion_locations([0, 3], 16)
    with pytest.raises(ValueError, match="distinct block indices"):
        insertion_locations([3, 3], 16)
    with pytest.raises(ValueError, match="divisible by 4"):
        insertion_locations("four-stages", 6)
    with pytest.raises(ValueError, match="insert must be"):
        insertion_locations("somewhere", 16)


def test_references_are_the_head_and_earlier_locations_most_recent_four() -> None:
    # the authors' four stages: stage s attends to the head output and the s - 1 earlier stage outputs
    assert default_references([4, 8, 12, 16]) == {4: [0], 8: [0, 4], 12: [0, 4, 8], 16: [0, 4, 8, 12]}
    assert default_references([1, 2, 3, 4, 5])[5] == [1, 2, 3, 4]  # at most R_max = 4 maps, the most recent
    model = build_model("sr", "tiny", attention="cla", insert="four-stages", scale=2)
    assert [module.num_refs for module in model.attention_modules()] == [1, 2, 3, 4]


def test_references_read_block_outputs_before_their_own_attention() -> None:
    model = build_model("denoise", "tiny", attention="cla", insert=[2, 4], references={2: [0], 4: [2]})
    seen: dict[str, list[torch.Tensor]] = {}
    block_outputs: dict[int, torch.Tensor] = {}

    def remember_inputs(name: str):
        return lambda module, args, out: seen.update({name: [args[0], *args[1]]})

    def remember_output(index: int):
        return lambda module, args, out: block_outputs.update({index: out})

    for name, module in model.attention.items():
        module.register_forward_hook(remember_inputs(name))
    for index, block in enumerate(model.blocks, start=1):
        block.register_forward_hook(remember_output(index))
    model(torch.rand(1, 3, 8, 8))
    assert torch.equal(seen["4"][1], block_outputs[2])  # the reference is F^2 itself, not F^2 + O^2


def test_bad_names_are_refused() -> None:
    with pytest.raises(ValueError, match="unknown backbone 'resnet'"):
        build_model("sr", "resnet", scale=2)
    with pytest.raises(ValueError, match="unknown attention 'swin'"):
        build_model("sr", "tiny", attention="swin", insert="every", scale=2)
    with pytest.raises(ValueError, match="unknown task 'deblur'"):
        build_model("deblur", "tiny")
    with pytest.raises(ValueError, match="SR scale must be one of"):
        build_model("sr", "tiny", scale=5)
    with pytest.raises(ValueError, match="scale applies to SR only"):
        build_model("denoise", "tiny", scale=2)
    with pytest.raises(ValueError, match="needs an attention other than 'none'"):
        build_model("sr", "tiny", insert="every", scale=2)
    with pytest.raises(ValueError, match="must be earlier layers"):
        build_model("sr", "tiny", attention="cla", insert=[2], references={2: [3]}, scale=2)
