"""Part (a), correctness: every attention variant forward and backward on the device (fp32, then bf16 autocast)
against CPU float64, and tiled against whole-image inference. A failed check is a row with ``passed`` False.
"""

from __future__ import annotations

import copy
import math

import pandas as pd
import torch
from torch import nn

from acla.engine.train import ModelSpec, attention_modules
from acla.gpu_check.plan import TASK, Plan, autocast_bf16
from acla.models import build_attention
from acla.provenance import device_name

# bf16 keeps 8 bits of mantissa (~0.4 % per rounding): outputs of the dense modules come out ~0.6 % off,
# gradients, through a few more roundings and the differences of the bilinear derivatives, up to ~15 %.
BF16_TOLERANCE = {"output": 0.02, "input gradients": 0.2, "parameter gradients": 0.2}

VARIANTS = (("acla", "predicted"), ("acla", "dot"), ("cla", "predicted"), ("cla", "dot"), ("cla-dense", "dot"),
            ("nonlocal", "-"))


# Small (float64 on the CPU takes milliseconds) but wide: sampling positions reach 80 px, where a position held
# in bf16 moves in steps of 0.5 px, so precision lost in the positions shows.
CHANNELS, HEIGHT, WIDTH, BATCH, REFS, KEYS = 16, 8, 80, 2, 2, 9


def randomised(module: nn.Module, generator: torch.Generator) -> nn.Module:
    """``module`` with random weights instead of its zero-initialised output and offsets, so every path
    carries signal: unit-scale outputs, offsets of about a pixel (fractional bilinear taps), and ACLA gate
    scores near +-2 with half the keys closed (decisive in bf16 too, so no gate flips on rounding)."""
    for name, parameter in module.named_parameters():
        fan_in = parameter[0].numel() if parameter.dim() > 1 else 1
        with torch.no_grad():
            if name == "gate.bias":
                parameter.copy_(torch.tensor([2.0, -2.0]).repeat(parameter.numel() // 2 + 1)[: parameter.numel()])
            elif name.startswith("gate."):
                parameter.copy_(torch.randn(parameter.shape, generator=generator, dtype=torch.float64) * 0.01)
            else:
                scale = 0.7 if name.startswith("offset.") else 1.0
                parameter.copy_(torch.randn(parameter.shape, generator=generator, dtype=torch.float64)
                                * (scale / math.sqrt(fan_in) if parameter.dim() > 1 else 0.1))
    return module


def attention_case(name: str, logits: str) -> tuple[nn.Module, list[torch.Tensor], torch.Tensor]:
    """A float64 CPU module of the variant, its inputs (query, then references) and an output cotangent."""
    generator = torch.Generator().manual_seed(0)
    options = {"logits": logits} if name in ("acla", "cla") else {}
    module = build_attention(name, CHANNELS, REFS, KEYS, **options).double()
    randomised(module, generator)
    shape = (BATCH, CHANNELS, HEIGHT, WIDTH)
    inputs = [torch.randn(shape, generator=generator, dtype=torch.float64) for _ in range(1 + REFS)]
    cotangent = torch.randn(shape, generator=generator, dtype=torch.float64)
    return module.eval(), inputs, cotangent  # eval: ACLA's gates are deterministic (no Gumbel noise)


def output_and_gradients(module: nn.Module, inputs: list[torch.Tensor], cotangent: torch.Tensor,
                         device: torch.device, dtype: torch.dtype, bf16: bool) -> dict[str, dict[str, torch.Tensor]]:
    """Output, input gradients and parameter gradients of ``<module(inputs), cotangent>``, as CPU float64
    tensors by name, computed on ``device`` in ``dtype`` (optionally under bf16 autocast)."""
    module = copy.deepcopy(module).to(device=device, dtype=dtype)
    leaves = [tensor.detach().to(device=device, dtype=dtype).requires_grad_() for tensor in inputs]
    with autocast_bf16(device, bf16):
        output = module(leaves[0], leaves[1:])
    weights = cotangent.to(device=device, dtype=dtype)
    (output.to(dtype) * weights).sum().backward()
    names = ["query"] + [f"reference {i}" for i in range(len(leaves) - 1)]
    return {
        "output": {"output": as_reference(output)},
        "input gradients": {name: gradient_of(leaf) for name, leaf in zip(names, leaves, strict=True)},
        "parameter gradients": {name: gradient_of(parameter) for name, parameter in module.named_parameters()},
    }


def as_reference(tensor: torch.Tensor) -> torch.Tensor:
    return tensor.detach().to("cpu", torch.float64)


def gradient_of(leaf: torch.Tensor) -> torch.Tensor:
    """The leaf's gradient; zeros where nothing reached it (non-local ignores the references; ACLA's hard
    gates pass no gradient to the gate convolution in eval mode)."""
    return as_reference(leaf.grad if leaf.grad is not None else torch.zeros_like(leaf))


def relative_error(reference: dict[str, torch.Tensor], measured: dict[str, torch.Tensor]) -> dict:
    """||measured - reference|| / ||reference|| over all tensors of a quantity (the pass criterion: unlike
    the largest element error it does not jump where bf16 rounding moves a position across a pixel), the
    largest element error, and the tensor with the largest error of its own (for diagnosis; its norm is
    floored at 1 % of the quantity's, since some gradients are zero up to rounding, e.g. a key bias)."""
    squared = lambda tensors: sum(float(t.square().sum()) for t in tensors) ** 0.5  # noqa: E731
    total = squared(reference.values())
    errors = {name: measured[name] - expected for name, expected in reference.items()}
    worst = max(reference, key=lambda name: float(errors[name].norm()) / max(float(reference[name].norm()),
                                                                             0.01 * total, 1e-30))
    return {"relative_error": squared(errors.values()) / max(total, 1e-30), "worst_tensor": worst,
            "max_abs_error": max(float(e.abs().max()) for e in errors.values()),
            "reference_max_abs": max(float(t.abs().max()) for t in reference.values())}


def attention_checks(device: torch.device, plan: Plan) -> list[dict]:
    rows = []
    for name, logits in VARIANTS:
        module, inputs, cotangent = attention_case(name, logits)
        reference = output_and_gradients(module, inputs, cotangent, torch.device("cpu"), torch.float64, False)
        for precision, bf16 in (("fp32", False), ("bf16 autocast", True)):
            measured = output_and_gradients(module, inputs, cotangent, device, torch.float32, bf16)
            for quantity, expected in reference.items():
                error = relative_error(expected, measured[quantity])
                tolerance = BF16_TOLERANCE[quantity] if bf16 else plan.fp32_tolerance
                rows.append({"check": "attention vs CPU float64", "variant": name, "logits": logits,
                             "precision": precision, "quantity": quantity, **error, "tolerance": tolerance,
                             "passed": error["relative_error"] <= tolerance})
    return rows


def tiled_check(device: torch.device, plan: Plan) -> dict:
    """``acla.engine.evaluate.tiled_forward`` against one whole-image pass of a tiny SR x2 model with four
    randomised ACLA modules: with the overlap wider than the receptive field the two must agree."""
    from acla.engine.evaluate import tiled_forward

    torch.manual_seed(0)
    model = ModelSpec(TASK, "tiny", "acla", "four-stages").build()
    generator = torch.Generator().manual_seed(1)
    for module in attention_modules(model):
        randomised(module.double(), generator).float()
    model = model.to(device).eval()
    x = torch.rand(1, 3, 40, 40, generator=generator).to(device)
    with torch.no_grad():
        whole = model(x)
        tiled = tiled_forward(model, x, tile=16, overlap=40, scale=2)
    error = relative_error({"output": as_reference(whole)}, {"output": as_reference(tiled)})
    return {"check": "tiled vs whole image", "variant": "tiny + acla four-stages", "logits": "predicted",
            "precision": "fp32", "quantity": "output (40x40 input, tile 16, overlap 40)", **error,
            "tolerance": plan.fp32_tolerance, "passed": error["relative_error"] <= plan.fp32_tolerance}


def correctness(device: torch.device, plan: Plan) -> pd.DataFrame:
    return pd.DataFrame(attention_checks(device, plan) + [tiled_check(device, plan)])


def correctness_notes(device: torch.device, plan: Plan) -> list[str]:
    where = "the CPU" if device.type == "cpu" else device_name(device)
    return [
        f"Each attention variant ({REFS} references, {KEYS} keys, {CHANNELS} channels, {BATCH}x{HEIGHT}x{WIDTH} maps, "
        "random weights including the offsets and the output projection, eval mode so that ACLA's gates carry no "
        f"Gumbel noise) runs forward and backward on {where} in fp32 and under bf16 autocast, against the same "
        "module in float64 on the CPU.",
        "relative error = ||result - float64|| / ||float64|| over the output, over the input gradients (query and "
        "references) or over the parameter gradients; the worst tensor is the one with the largest error of its own.",
        f"Tolerances: fp32 {plan.fp32_tolerance:g}" + (" (TF32 convolutions, torch's default on CUDA)"
                                                        if device.type == "cuda" else "")
        + f"; bf16 autocast {BF16_TOLERANCE['output']:g} for outputs and {BF16_TOLERANCE['input gradients']:g} for "
        "gradients (8-bit mantissa).",
        "Tiled inference: a tiny SR x2 model with four randomised ACLA modules, a 40x40 input run as 16x16 tiles "
        "with 40 pixels of overlap against one whole pass (`acla.engine.evaluate.tiled_forward`).",
    ]
