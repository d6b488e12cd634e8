"""EDSR-style backbones with attention insertion points (docs/method.md#layers).

EDSR (Lim et al., CVPRW 2017): head conv, a body of residual blocks (conv-ReLU-conv, scaled, plus
skip) closed by a conv, a global skip from the head output, and a tail (pixel-shuffle upsampler for
SR, a plain conv otherwise). Non-SR tasks add the input back at the end (global residual).

"Layer" l is the output F^l of block l (F^0 = head output). A module inserted after block l takes
F^l as its query and reference maps R(l), and the block output becomes F^l + O^l. References are
block outputs *before* their own module's residual is added (as in the authors' EDSR-CLA).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from acla.models.attention import ATTENTIONS, build_attention

# DIV2K RGB mean (EDSR); subtracted at the input and added back at the output of SR models.
DIV2K_RGB_MEAN = (0.4488, 0.4371, 0.4040)
MAX_REFERENCES = 4  # R_max of docs/method.md#layers


@dataclass(frozen=True)
class BackboneSize:
    num_blocks: int
    channels: int
    res_scale: float


BACKBONES: dict[str, BackboneSize] = {
    "edsr-baseline": BackboneSize(16, 64, 1.0),
    "edsr": BackboneSize(32, 256, 0.1),
    "tiny": BackboneSize(8, 32, 1.0),  # smoke-profile preset of the same model
}
TASK_KINDS = ("sr", "denoise", "demosaic", "jpeg")


def conv3x3(in_channels: int, out_channels: int) -> nn.Conv2d:
    return nn.Conv2d(in_channels, out_channels, 3, padding=1)


class ResBlock(nn.Module):
    def __init__(self, channels: int, res_scale: float) -> None:
        super().__init__()
        self.body = nn.Sequential(conv3x3(channels, channels), nn.ReLU(inplace=True), conv3x3(channels, channels))
        self.res_scale = res_scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x) * self.res_scale


class Upsampler(nn.Sequential):
    """Pixel shuffle: x2 and x4 as one or two (conv C->4C, shuffle 2) steps, x3 as (conv C->9C, shuffle 3)."""

    def __init__(self, scale: int, channels: int) -> None:
        steps = {2: [2], 3: [3], 4: [2, 2]}
        if scale not in steps:
            raise ValueError(f"SR scale must be one of (2, 3, 4), got {scale}")
        layers: list[nn.Module] = []
        for factor in steps[scale]:
            layers += [conv3x3(channels, channels * factor * factor), nn.PixelShuffle(factor)]
        super().__init__(*layers)


def insertion_locations(insert: str | Sequence[int], num_blocks: int) -> list[int]:
    """Block indices (1-based) after which a module is inserted."""
    if isinstance(insert, str):
        if insert == "none":
            return []
        if insert == "every":
            return list(range(1, num_blocks + 1))
        if insert == "four-stages":
            if num_blocks % 4:
                raise ValueError(f"insert='four-stages' needs a block count divisible by 4, got {num_blocks}")
            return [num_blocks // 4 * stage for stage in range(1, 5)]
        raise ValueError(f"insert must be 'none', 'every', 'four-stages' or a list of block indices, got {insert!r}")
    locations = sorted(set(int(index) for index in insert))
    if locations != sorted(int(index) for index in insert) or any(not 1 <= i <= num_blocks for i in locations):
        raise ValueError(f"insert indices must be distinct block indices in 1..{num_blocks}, got {list(insert)}")
    return locations


def default_references(locations: Sequence[int], max_references: int = MAX_REFERENCES) -> dict[int, list[int]]:
    """R(l): F^0 and the earlier insertion locations, the most recent ``max_references`` maps."""
    return {location: ([0] + [j for j in locations if j < location])[-max_references:] for location in locations}


class RestorationNet(nn.Module):
    """EDSR head/body/tail with optional attention modules after chosen blocks."""

    def __init__(
        self,
        *,
        task: str,
        num_blocks: int,
        channels: int,
        res_scale: float,
        scale: int = 1,
        in_channels: int = 3,
        attention: str = "none",
        locations: Sequence[int] = (),
        references: dict[int, list[int]] | None = None,
        attention_options: dict | None = None,
        search: bool = False,
    ) -> None:
        super().__init__()
        if task not in TASK_KINDS:
            raise ValueError(f"unknown task {task!r}; expected one of {TASK_KINDS}")
        if task != "sr" and scale != 1:
            raise ValueError(f"scale applies to SR only; got scale={scale} for task {task!r}")
        self.task, self.scale, self.in_channels = task, scale, in_channels
        self.mean_shift = task == "sr" and in_channels == 3
        self.register_buffer("rgb_mean", torch.tensor(DIV2K_RGB_MEAN).view(1, 3, 1, 1), persistent=False)
        self.head = conv3x3(in_channels, channels)
        self.blocks = nn.ModuleList(ResBlock(channels, res_scale) for _ in range(num_blocks))
        self.body_end = conv3x3(channels, channels)
        self.tail = nn.Sequential(Upsampler(scale, channels), conv3x3(channels, in_channels)) if task == "sr" else (
            conv3x3(channels, in_channels)
        )
        if attention == "none" and locations:
            raise ValueError("insertion locations given but attention='none'")
        self.references = {} if attention == "none" else (references or default_references(locations))
        if set(self.references) != set(locations):
            raise ValueError(f"references must name exactly the insertion locations {list(locations)}")
        for location, refs in self.references.items():
            if not refs or any(not 0 <= j < location for j in refs):
                raise ValueError(f"references of block {location} must be earlier layers 0..{location - 1}, got {refs}")
        self.attention = nn.ModuleDict(
            {str(location): build_attention(attention, channels, len(refs), **(attention_options or {}))
             for location, refs in self.references.items()}
        )
        self.needed_layers = {j for refs in self.references.values() for j in refs}
        # The sampled modules read their references as channels-last rows: each kept layer is laid out so once,
        # not once per module that reads it (a no-op when the model already runs channels-last).
        self.reference_format = torch.channels_last if attention in ("cla", "acla") else torch.contiguous_format
        # Search ((S9), docs/method.md#s9): one architecture parameter per location; block output F + sigmoid(alpha) O.
        self.alpha = nn.Parameter(torch.zeros(len(self.references))) if search else None
        self.alpha_index = {location: index for index, location in enumerate(sorted(self.references))}

    def attention_modules(self) -> list[nn.Module]:
        return list(self.attention.values())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        source = x
        if self.mean_shift:
            x = x - self.rgb_mean.to(x.dtype)
        head = self.head(x)
        # F^j kept only where a module reads it
        layers = {0: head.contiguous(memory_format=self.reference_format)} if 0 in self.needed_layers else {}
        features = head
        for index, block in enumerate(self.blocks, start=1):
            features = block(features)
            if index in self.needed_layers:
                layers[index] = features.contiguous(memory_format=self.reference_format)
            module = self.attention[str(index)] if str(index) in self.attention else None
            if module is not None:
                residual = module(features, [layers[j] for j in self.references[index]])
                if self.alpha is not None:
                    residual = torch.sigmoid(self.alpha[self.alpha_index[index]]) * residual
                features = features + residual
        features = self.body_end(features) + head
        out = self.tail(features)
        if self.mean_shift:
            return out + self.rgb_mean.to(out.dtype)
        return out + source if self.task != "sr" else out


def build_model(
    task: str,
    backbone: str,
    attention: str = "none",
    insert: str | Sequence[int] = "none",
    scale: int = 1,
    *,
    color: str = "rgb",
    references: dict[int, list[int]] | None = None,
    num_blocks: int | None = None,
    channels: int | None = None,
    search: bool = False,
    **attention_options,
) -> RestorationNet:
    """A task backbone by name, with ``attention`` inserted at ``insert``.

    ``backbone``: ``edsr-baseline`` (16 x 64, res_scale 1), ``edsr`` (32 x 256, res_scale 0.1) or
    ``tiny`` (8 x 32, the smoke preset); ``num_blocks``/``channels`` override the preset.
    ``color``: ``rgb`` or ``gray`` input/output. ``search=True`` adds the architecture parameters
    ``alpha`` (one per location) of the insertion search. Remaining keyword arguments go to the
    attention modules (``num_keys``, ``logits``, ``budget_weight``, ...).
    """
    if backbone not in BACKBONES:
        raise ValueError(f"unknown backbone {backbone!r}; expected one of {sorted(BACKBONES)}")
    if color not in ("rgb", "gray"):
        raise ValueError(f"color must be 'rgb' or 'gray', got {color!r}")
    if attention not in ATTENTIONS:
        raise ValueError(f"unknown attention {attention!r}; expected one of {ATTENTIONS}")
    size = BACKBONES[backbone]
    num_blocks = num_blocks or size.num_blocks
    locations = insertion_locations(insert, num_blocks) if attention != "none" else []
    if attention == "none" and insert not in ("none", [], ()):
        raise ValueError(f"insert={insert!r} needs an attention other than 'none'")
    if references is not None:
        references = {int(location): list(refs) for location, refs in references.items()}
    return RestorationNet(
        task=task, num_blocks=num_blocks, channels=channels or size.channels, res_scale=size.res_scale,
        scale=scale, in_channels=3 if color == "rgb" else 1, attention=attention, locations=locations,
        references=references, attention_options=attention_options, search=search,
    )
