"""The C++ kernel's entry points as ``torch.library`` custom ops, one place for their schemas and registrations.

Each op has a fake kernel (``register_fake``: shapes for ``torch.compile`` and ``FlopCounterMode`` without
running it), its autograd (``register_autograd``, the backward being an op of its own) and a FLOP formula
(``register_flop_formula``, so ``acla.engine.efficiency`` counts the kernel walk as the work it replaces):

* ``acla::bilinear_gather`` / ``acla::bilinear_gather_backward``: bilinear samples of the keys, or their
  weighted sum, and its gradients (``acla.ops.gather.bilinear_gather`` calls it on CPU);
* ``acla::attend`` / ``acla::attend_backward``: CLA/ACLA with predicted logits, (S1)-(S7), in one walk per
  query (``SampledCrossLayerAttention.fused_walk``);
* ``acla::attend_open``: ACLA at inference, the open keys' offsets and logits projected in the walk
  (``SampledCrossLayerAttention.open_key_walk``; no backward).

They run only where ``acla.ops.extension.load()`` built the kernel (CPU, float32/float64); callers check that
first. ``torch.library.opcheck`` tests them (``tests/test_attention.py``).
"""

from __future__ import annotations

import math

import torch
from torch.utils.flop_counter import register_flop_formula

from acla.ops import extension


@torch.library.custom_op("acla::bilinear_gather", mutates_args=())
def kernel_gather(positions: torch.Tensor, weights: torch.Tensor, maps: list[torch.Tensor]) -> torch.Tensor:
    """``bilinear_gather`` by the C++ kernel of ``acla.ops.extension`` (CPU, float32/float64): maps R x (B, H, W, c),
    positions (B, H, W, R, K, 2), weights (B, H, W, R, K) or empty (one sample per key). A custom op, so
    that ``torch.compile`` keeps it whole in its graphs; its backward is ``kernel_gather_backward``."""
    return extension.load().gather_forward([rows.contiguous() for rows in maps], positions.contiguous(),
                                               weights.contiguous())


@kernel_gather.register_fake
def _(positions, weights, maps):
    batch, height, width, refs, keys = positions.shape[:5]
    shape = (batch, height, width) if weights.numel() else (batch, height, width, refs, keys)
    return maps[0].new_empty((*shape, maps[0].shape[-1]))


@torch.library.custom_op("acla::bilinear_gather_backward", mutates_args=())
def kernel_gather_backward(positions: torch.Tensor, weights: torch.Tensor, maps: list[torch.Tensor],
                           grad: torch.Tensor) -> list[torch.Tensor]:
    """Gradients of ``kernel_gather``: the R maps', the positions' and the weights' (empty without weights)."""
    *grad_maps, grad_positions, grad_weights = extension.load().gather_backward(
        [rows.contiguous() for rows in maps], positions.contiguous(), weights.contiguous(), grad.contiguous(),
        True, True, weights.numel() > 0)
    return [*grad_maps, grad_positions, grad_weights if weights.numel() else weights.new_empty(0)]


@torch.library.custom_op("acla::attend", mutates_args=())
def kernel_attend(maps: list[torch.Tensor], heads: torch.Tensor, relaxed: torch.Tensor, probability: torch.Tensor,
                  grid: torch.Tensor, gated: bool,
                  temperature: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """``SampledCrossLayerAttention.fused_walk``'s kernel walk: raw reference rows R x (B, H, W, C), the query's heads
    (B, H, W, (3 or 4)*R*K; 4 with gates), the relaxed training gates (B, H, W, R*K) at ``temperature`` (0-dim, the
    heads' dtype) or empty, the gate probabilities sigmoid(s) (B, H, W, R*K) or empty, the key grid (K, 2) -> the
    weighted sums (B, H, W, C + 1), the open-key counts (B, H, W), the softmax weights (B, H, W, R*K; what the
    backward reads) and the key budget (S8), the probabilities' mean (0 without them). The gates and probabilities are inputs without a gradient: the
    backward gives the gate scores (in the heads) theirs. A custom op, so that ``torch.compile`` keeps it whole; its
    backward is ``kernel_attend_backward``."""
    out, counts, softmax = extension.load().attend_forward([rows.contiguous() for rows in maps], heads.contiguous(),
                                                               relaxed.contiguous(), grid.contiguous(), gated)
    budget = probability.mean() if probability.numel() else probability.new_zeros(())
    return out, counts, softmax, budget


@kernel_attend.register_fake
def _(maps, heads, relaxed, probability, grid, gated, temperature):
    keys = len(maps) * grid.shape[0]
    return (heads.new_empty((*heads.shape[:3], maps[0].shape[-1] + 1)), heads.new_empty(heads.shape[:3]),
            heads.new_empty((*heads.shape[:3], keys)), probability.new_empty(()))


@torch.library.custom_op("acla::attend_open", mutates_args=())
def kernel_attend_open(maps: list[torch.Tensor], rows: torch.Tensor, scores: torch.Tensor, offset_weight: torch.Tensor,
                       offset_bias: torch.Tensor, logit_weight: torch.Tensor, logit_bias: torch.Tensor,
                       grid: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``SampledCrossLayerAttention.open_key_walk``'s kernel walk, at inference only (no backward): raw reference rows
    R x (B, H, W, C), the query's rows (B, H, W, C), its gate scores (B, H, W, R*K), W_o (2*R*K, C) and its bias, W_a
    (R*K, C) and its bias, the key grid (K, 2) -> the weighted sums (B, H, W, C + 1) and the open-key counts (B, H, W).
    A custom op so that ``FlopCounterMode`` counts it."""
    out, counts = extension.load().attend_open_forward(
        [rows.contiguous() for rows in maps], rows.contiguous(), scores.contiguous(), offset_weight.contiguous(),
        offset_bias.contiguous(), logit_weight.contiguous(), logit_bias.contiguous(), grid.contiguous())
    return out, counts


@kernel_attend_open.register_fake
def _(maps, rows, scores, offset_weight, offset_bias, logit_weight, logit_bias, grid):
    return rows.new_empty((*rows.shape[:3], maps[0].shape[-1] + 1)), rows.new_empty(rows.shape[:3])


@torch.library.custom_op("acla::attend_backward", mutates_args=())
def kernel_attend_backward(maps: list[torch.Tensor], heads: torch.Tensor, softmax: torch.Tensor, relaxed: torch.Tensor,
                           probability: torch.Tensor, temperature: torch.Tensor, grad_budget: torch.Tensor,
                           grid: torch.Tensor, gated: bool, grad: torch.Tensor, need_maps: bool) -> list[torch.Tensor]:
    """Gradients of ``kernel_attend`` for its sums' gradient ``grad`` and its key budget's ``grad_budget`` (0-dim, or
    empty for none), from its softmax weights: the R maps' (when ``need_maps``) and the heads', the gate scores'
    included (the relaxed gates' straight-through gradient and the key budget's)."""
    return extension.load().attend_backward([rows.contiguous() for rows in maps], heads.contiguous(),
                                                softmax.contiguous(), relaxed.contiguous(), probability.contiguous(),
                                                temperature, grad_budget, grid.contiguous(), gated, grad.contiguous(),
                                                need_maps)


@kernel_attend_backward.register_fake
def _(maps, heads, softmax, relaxed, probability, temperature, grad_budget, grid, gated, grad, need_maps):
    # the kernel writes contiguous gradients, whatever the strides of its inputs
    return [rows.new_empty(rows.shape) for rows in (*(maps if need_maps else []), heads)]


def _save_attend_inputs(ctx, inputs, output) -> None:
    maps, heads, relaxed, probability, grid, gated, temperature = inputs
    ctx.save_for_backward(heads, output[2], relaxed, probability, grid, *maps)
    ctx.gated, ctx.temperature = gated, temperature
    ctx.mark_non_differentiable(output[1], output[2])  # the open-key counts, the softmax weights


def _kernel_attend_gradients(ctx, grad, _grad_counts, _grad_softmax, grad_budget):
    heads, softmax, relaxed, probability, grid, *maps = ctx.saved_tensors
    need_maps = any(ctx.needs_input_grad[0])  # one flag per map
    grad_budget = grad_budget if grad_budget is not None else probability.new_empty(0)
    *grad_maps, grad_heads = kernel_attend_backward(maps, heads, softmax, relaxed, probability, ctx.temperature,
                                                    grad_budget, grid, ctx.gated, grad, need_maps)
    # the gates and probabilities get none: they are computed from the heads without autograd, and the heads' gradient
    # holds theirs
    return grad_maps if need_maps else [None] * len(maps), grad_heads, None, None, None, None, None


kernel_attend.register_autograd(_kernel_attend_gradients, setup_context=_save_attend_inputs)


@kernel_gather_backward.register_fake
def _(positions, weights, maps, grad):
    # the kernel writes contiguous gradients, whatever the strides of its inputs
    return [rows.new_empty(rows.shape) for rows in (*maps, positions, weights)]


def _save_kernel_inputs(ctx, inputs, output) -> None:
    positions, weights, maps = inputs
    ctx.save_for_backward(positions, weights, *maps)


def _kernel_gather_gradients(ctx, grad):
    positions, weights, *maps = ctx.saved_tensors
    *grad_maps, grad_positions, grad_weights = kernel_gather_backward(positions, weights, maps, grad)
    return grad_positions, grad_weights if weights.numel() else None, grad_maps


kernel_gather.register_autograd(_kernel_gather_gradients, setup_context=_save_kernel_inputs)


@register_flop_formula(torch.ops.acla.bilinear_gather)
def _kernel_gather_flops(positions_shape, weights_shape, maps_shapes, *args, out_shape=None, **kwargs) -> int:
    """Multiply-adds of every tap (4 per key, closed ones included), as counted for ``embedding_bag``."""
    return 2 * 4 * math.prod(positions_shape[:-1]) * maps_shapes[0][-1]


@register_flop_formula(torch.ops.acla.attend)
def _kernel_attend_flops(maps_shapes, heads_shape, relaxed_shape, probability_shape, grid_shape, *args, out_shape=None,
                         **kwargs) -> int:
    """The fused walk's gather, counted as ``bilinear_gather``'s (4 taps per key, closed ones included), and its
    softmax, counted as ``acla.engine.efficiency`` counts ``_softmax`` (5 per key); the projections around it are counted
    as the matrix products they are."""
    keys = len(maps_shapes) * grid_shape[0]
    return math.prod(heads_shape[:3]) * keys * (2 * 4 * maps_shapes[0][-1] + 5)


@register_flop_formula(torch.ops.acla.attend_open)
def _kernel_attend_open_flops(maps_shapes, rows_shape, scores_shape, offset_weight_shape, *args, out_shape=None,
                              **kwargs) -> int:
    """Counted as the dense projections and ``acla.attend`` it replaces (closed keys included): the offsets and logits
    of every key (2 C per output) and, per key, 4 taps and the softmax."""
    queries, keys, channels = math.prod(rows_shape[:3]), scores_shape[-1], rows_shape[-1]
    return queries * (2 * channels * 3 * keys + keys * (2 * 4 * maps_shapes[0][-1] + 5))


@register_flop_formula(torch.ops.acla.attend_backward)
def _kernel_attend_backward_flops(maps_shapes, heads_shape, softmax_shape, relaxed_shape, probability_shape,
                                  temperature, grad_budget_shape, grid_shape, *args, out_shape=None, **kwargs) -> int:
    """A dot product and a scatter per tap, and the softmax's gradient: twice the forward."""
    return 2 * _kernel_attend_flops(maps_shapes, heads_shape, softmax_shape, probability_shape, grid_shape)


@register_flop_formula(torch.ops.acla.bilinear_gather_backward)
def _kernel_gather_backward_flops(positions_shape, weights_shape, maps_shapes, grad_shape, *args, out_shape=None,
                                  **kwargs) -> int:
    """A dot product and a scatter per tap: twice the forward."""
    return 2 * _kernel_gather_flops(positions_shape, weights_shape, maps_shapes)
