"""The attention family of the study: the equations (S1)...(S8) of ``docs/method.md``, in reading order.

Every module has the same interface, so an ablation is one name in ``build_attention``:

    residual = module(query, refs)   # query (B, C, H, W); refs: list of R maps (B, C, H, W)
    block_output = query + residual  # residual is exactly zero at initialisation (S5)

and after each call exposes ``open_keys`` (mean number of keys a query attended to), ``key_budget``
(mean gate probability, (S8)) and ``budget_loss`` (``budget_weight * key_budget``; zero for the
non-adaptive modules).

Variants (docs/method.md#variants):
* ``nonlocal``  dense same-layer embedded-Gaussian non-local attention (Wang et al. 2018); quadratic.
* ``cla-dense`` every position of every reference is a key; quadratic; dot-product logits only.
* ``cla``       K keys per reference sampled around the query (S1)-(S5).
* ``acla``      ``cla`` with a per-key gate (S6)-(S8): a flexible number of keys per query.

Sampling is vectorised over references and keys, never a Python loop over keys. Two paths compute the
same numbers (``SampledCrossLayerAttention(fast=...)``; tests check outputs and gradients equal in float64):

* the fast path (default): the 1x1 projections as matrix products on channels-last rows (the query's
  heads in one), the output in the query's memory layout. With predicted logits on CPU, where the C++
  kernel builds, CLA and ACLA run as one kernel walk per query, forward and backward, training and
  inference (``fused_walk``; at inference ACLA's walk projects the open keys' offsets and logits alone,
  ``open_key_walk``). Otherwise ``bilinear_gather`` samples the keys (the kernel, pure torch, or
  ``F.grid_sample`` for CUDA training). At inference with deterministic gates closed keys are never read.
* the reference path (``fast=False``): 1x1 convolutions and the four bilinear taps of every key as rows of
  a channels-last table, autograd through every op.

This file holds the method; how the sampling and the walk run lives in ``acla.ops``: ``gather`` (the
bilinear gather, pure torch and its dispatch), ``custom_ops`` (the kernel's ops, their fake kernels,
autograd and FLOP formulas), ``extension`` (builds the C++ of ``acla/ops/csrc`` on first use).
"""


from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from acla.ops import extension
from acla.ops.custom_ops import kernel_attend, kernel_attend_open
from acla.ops.gather import aggregate_taps, bilinear_gather, bilinear_taps, sample_taps

LOGIT_FORMS = ("predicted", "dot")


class AttentionBase(nn.Module):
    """Bookkeeping shared by the family: the statistics each call leaves behind."""

    keys_per_query: int  # keys a query can attend to when every gate is open

    def __init__(self, budget_weight: float = 0.0) -> None:
        super().__init__()
        if budget_weight < 0:
            raise ValueError(f"budget_weight must be >= 0, got {budget_weight}")
        self.budget_weight = float(budget_weight)
        self.open_keys = torch.tensor(0.0)  # mean keys attended per query, last call
        self.open_key_counts: torch.Tensor | None = None  # (B, H, W) per-query counts, last call (ACLA)
        self.key_budget = torch.tensor(0.0)  # (S8) mean gate probability, last call (0 without gates)
        self.open_fraction = torch.tensor(0.0)  # share of keys inference's gates would open, last call (no gradient)
        # (S8) the form of the key budget (KEY_BUDGET_FORMS; the trainer sets it): "linear", the recipe's, or
        # "target", a departure from it that the dynamic-network literature trains with
        self.budget_form = "linear"
        self.budget_target = 0.5  # t of the "target", "open_target" and "lagrangian" forms
        self.budget_multipliers: torch.Tensor | None = None  # (2,) lambda_1, lambda_2 of "lagrangian" (the trainer's)

    @property
    def budget_loss(self) -> torch.Tensor:
        """(S8) the key budget, to be added to the training loss: ``lambda_k * mean(sigmoid(s))`` (``linear``), or
        ``lambda_k * (mean(sigmoid(s)) - t)^2`` (``target``), or ``lambda_1 (mean - t) + lambda_2 (mean - t)^2`` with
        multipliers that the trainer raises by gradient ascent while the network descends (``lagrangian``, CoFi's), or
        ``lambda_k * (f - t)^2`` with f the share of keys that inference's gates would open (s > 0, and each query's
        best key), its gradient taken through the mean gate probability (straight-through: ``open_target``).

        Why a target: under Adam the linear form's gradient on the gate head has one sign and a steady size, so every
        gate moves at the learning rate whatever lambda_k is (all keys open, or one per query); the target form's
        gradient changes sign at t, so the mean gate probability settles there and each query stays free to open more
        or fewer keys than the mean (DynamicViT's keep ratio and ConvNet-AIG's target rate are of this form). Why the
        open share: what settles at t is the mean probability, while inference opens the keys with s > 0; with every
        probability near 0.75 every key is open, near 0.25 one key per query."""
        budget = self.key_budget
        if self.budget_form == "open_target":  # value f, gradient of the mean probability
            budget = budget + (self.open_fraction.to(budget) - budget).detach()
        gap = budget - self.budget_target
        if self.budget_form in ("target", "open_target"):
            return self.budget_weight * gap ** 2
        if self.budget_form == "lagrangian":
            if self.budget_multipliers is None:
                raise RuntimeError("the lagrangian key budget needs its multipliers (acla.engine.gates.BudgetMultipliers)")
            return self.budget_multipliers[0] * gap + self.budget_multipliers[1] * gap ** 2
        return self.budget_weight * self.key_budget

    @staticmethod
    def _check_refs(query: torch.Tensor, refs: list[torch.Tensor], expected: int) -> None:
        if len(refs) != expected:
            raise ValueError(f"expected {expected} reference map(s), got {len(refs)}")
        for index, ref in enumerate(refs):
            if ref.shape != query.shape:
                raise ValueError(f"reference {index} has shape {tuple(ref.shape)}, the query {tuple(query.shape)}")


def zero_init(conv: nn.Conv2d) -> nn.Conv2d:
    nn.init.zeros_(conv.weight)
    if conv.bias is not None:
        nn.init.zeros_(conv.bias)
    return conv


class NonLocalAttention(AttentionBase):
    """Same-layer embedded-Gaussian non-local block: softmax(theta(x)^T phi(x)) g(x), then W_z.

    Ignores ``refs`` (it attends within the query map), so it drops in where the others go.
    """

    def __init__(self, channels: int, num_refs: int = 0, *, inner_channels: int | None = None) -> None:
        super().__init__()
        inner = inner_channels or max(channels // 2, 1)
        self.theta = nn.Conv2d(channels, inner, 1)
        self.phi = nn.Conv2d(channels, inner, 1)
        self.g = nn.Conv2d(channels, inner, 1)
        self.output = zero_init(nn.Conv2d(inner, channels, 1))
        self.keys_per_query = 0  # set per call: H * W

    def forward(self, query: torch.Tensor, refs: list[torch.Tensor] | None = None) -> torch.Tensor:
        batch, _, height, width = query.shape
        q = self.theta(query).flatten(2).transpose(1, 2)  # (B, HW, d)
        k = self.phi(query).flatten(2).transpose(1, 2)  # (B, HW, d)
        v = self.g(query).flatten(2).transpose(1, 2)  # (B, HW, d)
        attended = F.scaled_dot_product_attention(q, k, v, scale=1.0)  # embedded Gaussian: no 1/sqrt(d)
        self.keys_per_query = height * width
        self.open_keys = torch.tensor(float(height * width))
        return self.output(attended.transpose(1, 2).reshape(batch, -1, height, width))


class DenseCrossLayerAttention(AttentionBase):
    """``cla-dense``: every position of every reference layer is a key (quadratic in H*W).

    Same parameters and maths as ``SampledCrossLayerAttention(logits="dot")`` with the key set
    widened to all positions: q = W_q F^l, v = W_v F^r, k = W_k v, softmax over all R*H*W keys.
    """

    def __init__(
        self, channels: int, num_refs: int, *, value_channels: int | None = None,
        key_channels: int | None = None, logits: str = "dot",
    ) -> None:
        super().__init__()
        if logits != "dot":
            raise ValueError("cla-dense has no fixed key set to predict logits for: use logits='dot'")
        self.num_refs = num_refs
        value_channels = value_channels or channels
        key_channels = key_channels or channels
        self.value = nn.Conv2d(channels, value_channels, 1)  # (S2) W_v, shared by the references
        self.query = nn.Conv2d(channels, key_channels, 1)  # (S3) W_q
        self.key = nn.Conv2d(value_channels, key_channels, 1)  # (S3) W_k, on the values
        self.output = zero_init(nn.Conv2d(value_channels, channels, 1))  # (S5) W_z
        self.keys_per_query = 0

    def forward(self, query: torch.Tensor, refs: list[torch.Tensor]) -> torch.Tensor:
        self._check_refs(query, refs, self.num_refs)
        batch, _, height, width = query.shape
        values = self.value(torch.cat(refs, dim=0))  # (R*B, Cv, H, W)
        keys = self.key(values)  # (R*B, d, H, W)
        # (R*B, c, H, W) -> (B, R*H*W, c): every position of every reference is one key
        as_tokens = lambda t: t.view(len(refs), batch, t.shape[1], -1).permute(1, 0, 3, 2).flatten(1, 2)  # noqa: E731
        q = self.query(query).flatten(2).transpose(1, 2)  # (B, HW, d)
        attended = F.scaled_dot_product_attention(q, as_tokens(keys), as_tokens(values))  # (S3)-(S5), 1/sqrt(d)
        self.keys_per_query = len(refs) * height * width
        self.open_keys = torch.tensor(float(self.keys_per_query))
        return self.output(attended.transpose(1, 2).reshape(batch, -1, height, width))


def key_grid(num_keys: int, dilation: float = 1.0) -> torch.Tensor:
    """(K, 2) fixed (x, y) offsets p_k of the keys around the query: a centred sqrt(K) x sqrt(K) grid."""
    side = math.isqrt(num_keys)
    if side * side != num_keys:
        raise ValueError(f"num_keys must be a square (1, 4, 9, 16, ...), got {num_keys}")
    steps = (torch.arange(side, dtype=torch.float32) - (side - 1) / 2) * dilation
    y, x = torch.meshgrid(steps, steps, indexing="ij")
    return torch.stack([x.flatten(), y.flatten()], dim=1)


class SampledCrossLayerAttention(AttentionBase):
    """``cla`` (fixed K keys per reference) and, with ``adaptive=True``, ``acla`` (gated keys).

    For query position p, reference r and key k the key sits at p + p_k + dp_{r,k}(p).
    """

    def __init__(
        self,
        channels: int,
        num_refs: int,
        num_keys: int = 9,
        *,
        logits: str = "predicted",
        value_channels: int | None = None,
        key_channels: int | None = None,
        dilation: float = 1.0,
        adaptive: bool = False,
        budget_weight: float = 0.0,
        temperature: float = 1.0,
        gate_bias: float = 2.0,
        fast: bool = True,
    ) -> None:
        super().__init__(budget_weight if adaptive else 0.0)
        self.fast = fast  # False: the reference path (autograd through every bilinear op), kept for tests
        if fast:
            extension.load()  # build or find the C++ kernel now, not inside a graph torch.compile traces
        if logits not in LOGIT_FORMS:
            raise ValueError(f"logits must be one of {LOGIT_FORMS}, got {logits!r}")
        if num_refs < 1:
            raise ValueError(f"num_refs must be >= 1, got {num_refs}")
        self.num_refs, self.num_keys, self.logit_form, self.adaptive = num_refs, num_keys, logits, adaptive
        # (S6) training gates hard 0/1 forward with the relaxed gradient (straight-through, the recipe); False: the
        # relaxed gates forward (a departure, docs/method.md#departures; the trainer sets it, inference is unaffected)
        self.straight_through = True
        self.keys_per_query = num_refs * num_keys
        # (S6) Gumbel-sigmoid tau, which the trainer anneals (``temperature``): a 0-dim buffer rather than a float
        # attribute, so that torch.compile reads it as a tensor input (dynamo may specialise on a float and recompile
        # at every annealed value). Float64 unless the module is cast (``.half()`` rounds tau too; autocast does not).
        self.register_buffer("tau", torch.tensor(float(temperature), dtype=torch.float64), persistent=False)
        value_channels = value_channels or channels
        self.register_buffer("grid", key_grid(num_keys, dilation), persistent=False)  # (K, 2) p_k
        self.value = nn.Conv2d(channels, value_channels, 1)  # (S2) W_v, shared by the references
        self.offset = zero_init(nn.Conv2d(channels, 2 * num_refs * num_keys, 1))  # (S1) W_o, starts on the grid
        if logits == "predicted":
            self.attention = zero_init(nn.Conv2d(channels, num_refs * num_keys, 1))  # (S3) W_a, uniform start
        else:
            key_channels = key_channels or channels
            self.query = nn.Conv2d(channels, key_channels, 1)  # (S3) W_q
            self.key = nn.Conv2d(value_channels, key_channels, 1)  # (S3) W_k, on the values
        if adaptive:
            self.gate = nn.Conv2d(channels, num_refs * num_keys, 1)  # (S6) W_m
            nn.init.normal_(self.gate.weight, std=0.01)
            nn.init.constant_(self.gate.bias, gate_bias)  # start with most keys open (sigmoid(2) = 0.88)
        self.output = zero_init(nn.Conv2d(value_channels, channels, 1))  # (S5) W_z, identity at init

    def sampling_positions(self, query: torch.Tensor, offsets: torch.Tensor | None = None) -> torch.Tensor:
        """(B, H, W, R, K, 2) pixel positions (x, y) of every key: p + p_k + dp_{r,k}(p).

        ``offsets`` (B, H, W, 2*R*K), the (S1) projection when the caller has it, else computed from ``query``.
        """
        batch, _, height, width = query.shape
        if offsets is None:
            offsets = self.offset(query).permute(0, 2, 3, 1)  # (S1) (B, H, W, 2*R*K), pixels, zero at init
        # Positions in at least float32: bf16 (autocast) holds a pixel position of ~80 only to 0.5 px and one of
        # ~300 to 2 px, which would move every key (found by `python -m acla gpu-check`'s bf16 checks).
        offsets = offsets.to(torch.promote_types(offsets.dtype, torch.float32))
        offsets = offsets.reshape(batch, height, width, self.num_refs, self.num_keys, 2)
        ys = torch.arange(height, device=query.device, dtype=offsets.dtype).view(1, height, 1, 1, 1)
        xs = torch.arange(width, device=query.device, dtype=offsets.dtype).view(1, 1, width, 1, 1)
        base = torch.stack(torch.broadcast_tensors(xs, ys), dim=-1)  # (1, H, W, 1, 1, 2)
        return base + self.grid.to(offsets.dtype) + offsets

    def sample(self, maps: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """Bilinear samples (B, H, W, R, K, c) of ``maps`` (B*R, c, H, W) at ``positions``; zeros outside."""
        return sample_taps(maps, bilinear_taps(positions, *maps.shape[-2:]))

    def gates(self, query: torch.Tensor) -> torch.Tensor:
        """(S6)-(S7) per-key gates (B, R*K, H, W), exactly 0/1 in the forward pass."""
        return self.gate_values(self.gate(query).permute(0, 2, 3, 1)).permute(0, 3, 1, 2)

    def gate_values(self, scores: torch.Tensor) -> torch.Tensor:
        """(S6)-(S7) gates (B, H, W, R*K) from the gate logits ``scores`` s (B, H, W, R*K)."""
        self.key_budget = gate_probabilities(scores).mean()  # (S8) expected fraction of open keys
        self.open_fraction = inference_open_fraction(scores)
        if self.training:
            relaxed = self.relaxed_gates(scores)
            hard = relaxed > 0.5
        else:
            relaxed, hard = None, scores > 0  # deterministic at inference
        if relaxed is not None and not self.straight_through:
            return relaxed  # every key weighted by its relaxed gate, none removed (the departure's training forward)
        hard = hard.scatter(-1, scores.argmax(dim=-1, keepdim=True), True)  # (S7) the best-scored key is always open
        if relaxed is None:
            return hard.to(scores.dtype)
        return hard.to(scores.dtype) + (relaxed - relaxed.detach())  # straight-through, exactly 0/1 forward

    @property
    def temperature(self) -> float:
        """(S6) tau as a number (a read, not for use inside a compiled forward)."""
        return float(self.tau)

    @temperature.setter
    def temperature(self, value: float) -> None:
        with torch.no_grad():
            self.tau.fill_(value)  # in place: a compiled forward keeps reading the same buffer

    def relaxed_gates(self, scores: torch.Tensor) -> torch.Tensor:
        """(S6) the relaxed training gates sigmoid((s + n) / tau), n logistic noise log u - log(1 - u)."""
        noise = torch.logit(torch.rand_like(scores), eps=1e-6)
        # Divided in at least float32 and rounded once, as a division by a Python float is (bf16 autocast; on CUDA
        # that multiplied by the reciprocal: within an ulp). A copy of tau: autograd may save it for the backward,
        # and the trainer fills the buffer in place.
        opmath = torch.promote_types(scores.dtype, torch.float32)
        return torch.sigmoid(((scores + noise).to(opmath) / self.tau.to(opmath, copy=True)).to(scores.dtype))

    def skips_closed_keys(self) -> bool:
        """Whether this call gathers the open keys only: deterministic gates, nothing to differentiate, eager."""
        return self.fast and not self.training and not torch.is_grad_enabled() and not torch.compiler.is_compiling()

    def projections(self, query: torch.Tensor, refs: list[torch.Tensor]):
        """The 1x1 projections, as channels-last rows: (S1) offsets (B, H, W, 2*R*K), (S3) the logits
        (``predicted``) or W_q F^l (``dot``) (B, H, W, R*K or d), (S6) the gate logits (B, H, W, R*K) or
        None, and (S2) the values V^r: fast path, a list of R rows (B, H, W, Cv); reference path, maps
        (B*R, Cv, H, W) with channels-last memory.

        Fast path: the query's heads are one matrix product on its rows, and each reference's values one
        more; the reference path runs the 1x1 convolutions.
        """
        heads = self.query_heads()
        if self.fast:
            rows = query.permute(0, 2, 3, 1)  # (B, H, W, C)
            outputs = self.project_query(rows).split([head.out_channels for head in heads], dim=-1)
            values = [rows_linear(self.value, ref.permute(0, 2, 3, 1)) for ref in refs]
        else:
            query = query.contiguous(memory_format=torch.channels_last)  # the convs then emit (B, H, W, c) memory
            outputs = [head(query).permute(0, 2, 3, 1) for head in heads]
            stacked = torch.stack([ref.permute(0, 2, 3, 1) for ref in refs], dim=1)  # (B, R, H, W, C)
            values = self.value(stacked.flatten(0, 1).permute(0, 3, 1, 2))
        return outputs[0], outputs[1], outputs[2] if self.adaptive else None, values

    def query_heads(self) -> list[nn.Conv2d]:
        """The 1x1 projections of the query: (S1) W_o, (S3) W_a or W_q, and (S6) W_m for ACLA."""
        heads = [self.offset, self.attention if self.logit_form == "predicted" else self.query]
        return heads + ([self.gate] if self.adaptive else [])

    def project_query(self, rows: torch.Tensor) -> torch.Tensor:
        """Every head of ``query_heads`` on the query's rows (B, H, W, C) in one matrix product, concatenated."""
        heads = self.query_heads()
        return F.linear(rows, torch.cat([head.weight.flatten(1) for head in heads]), torch.cat([head.bias for head in heads]))

    def runs_fused_walk(self, query: torch.Tensor, refs: list[torch.Tensor]) -> bool:
        """Whether this call takes ``fused_walk``: predicted logits (CLA or ACLA) on the fast path, on CPU in
        float32/float64, where the C++ kernel builds; training (with straight-through gates) or inference, eager or
        compiled (the kernel is a custom op with its own backward)."""
        relaxed_forward = self.adaptive and self.training and not self.straight_through  # the kernel's gates are 0/1
        return (self.logit_form == "predicted" and self.fast and query.device.type == "cpu" and not relaxed_forward
                and query.dtype in (torch.float32, torch.float64) and all(ref.dtype == query.dtype for ref in refs)
                and extension.load() is not None)

    def fused_walk(self, query: torch.Tensor, refs: list[torch.Tensor]) -> torch.Tensor:
        """(S1)-(S7) in one walk of the C++ kernel per query (``kernel_attend``), forward and backward: the gates,
        the softmax over the open keys and the weighted bilinear sum of the open keys only (closed keys are read
        only by the backward of training gates, for their straight-through gradient).

        W_v is shared by the references (S2) and (S5) is linear in the values, so the kernel gathers the raw
        reference features and W_z W_v is applied once to the sum:
            sum_{r,k} a Bilinear(W_v F^r + b_v) = W_v sum_{r,k} a Bilinear(F^r) + b_v sum_{r,k} a m_{r,k},
        with m the key's in-map bilinear weight (zero padding). That saves the R value projections (and their
        gradients) and folds W_v into W_z; the reference path gives the same numbers up to float rounding (tests,
        float64, outputs and gradients).
        """
        if self.adaptive and self.skips_closed_keys():
            return self.open_key_walk(query, refs)
        rows = query.permute(0, 2, 3, 1)  # (B, H, W, C)
        # (S1) offsets, (S3) logits, (S6) gate scores; in the maps' dtype (autocast computes them in bf16)
        heads = self.project_query(rows).to(query.dtype)
        relaxed = probability = heads.new_empty(0)
        if self.adaptive:
            # Computed here without autograd: the kernel's backward writes the gate scores' gradient into the heads'
            # (``gate_score_gradients``), saving the graph of a slice of the heads, two sigmoids and a division.
            with torch.no_grad():
                scores = heads[..., -self.keys_per_query:]
                probability = gate_probabilities(scores)  # (S8) the key budget is their mean
                self.open_fraction = inference_open_fraction(scores)
                if self.training:  # (S6) the kernel opens relaxed > 1/2
                    relaxed = self.relaxed_gates(scores)
        maps = [ref.permute(0, 2, 3, 1) for ref in refs]  # raw F^r as rows (the op makes them contiguous)
        # tau as a tensor (a float argument of a custom op would make torch.compile recompile at every annealed value)
        temperature = self.tau.to(heads.dtype, copy=True)  # a copy: the backward reads it; the trainer refills tau
        summed, counts, _, budget = kernel_attend(maps, heads, relaxed, probability, self.grid.to(query.dtype),
                                                  self.adaptive, temperature)
        if self.adaptive:
            self.key_budget = budget  # (S8)
        return self.project_walk_sums(query, summed, counts)

    def open_key_walk(self, query: torch.Tensor, refs: list[torch.Tensor]) -> torch.Tensor:
        """``fused_walk`` at inference with deterministic gates: only the gate scores (S6) are projected for every
        key; the offsets (S1) and logits (S3) of the open keys alone are projected in the kernel's walk
        (``kernel_attend_open``), so that every cost that depends on the keys falls with the open fraction (with
        the dense projection, half the keys closed saved 17 % of the module's time on 2 CPU threads, where a
        third of its FLOPs go)."""
        rows = query.permute(0, 2, 3, 1)  # (B, H, W, C)
        scores = F.linear(rows, self.gate.weight.flatten(1), self.gate.bias).to(query.dtype)  # (S6)
        self.key_budget = gate_probabilities(scores).mean()  # (S8)
        self.open_fraction = inference_open_fraction(scores)
        maps = [ref.permute(0, 2, 3, 1) for ref in refs]
        summed, counts = kernel_attend_open(maps, rows, scores, self.offset.weight.flatten(1).to(query.dtype),
                                            self.offset.bias.to(query.dtype),
                                            self.attention.weight.flatten(1).to(query.dtype),
                                            self.attention.bias.to(query.dtype), self.grid.to(query.dtype))
        return self.project_walk_sums(query, summed, counts)

    def project_walk_sums(self, query: torch.Tensor, summed: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
        """(S5) W_z W_v on a kernel walk's sums (B, H, W, C + 1; the last column carries W_v's bias), in the query's
        layout, and the open-key statistics (S7)."""
        w_z = self.output.weight.flatten(1)
        weight = torch.cat([w_z @ self.value.weight.flatten(1), (w_z @ self.value.bias).unsqueeze(1)], dim=1)
        self.open_key_counts = counts  # (S7)
        self.open_keys = counts.float().mean()
        return linear_in_layout_of(query, summed, weight, self.output.bias)  # (S5) W_z W_v

    def keys(self, values: torch.Tensor | list[torch.Tensor]) -> torch.Tensor | list[torch.Tensor]:
        """(S3) W_k on the value maps, in their layout (``projections``), without its bias: ``key_bias`` adds it to
        each sampled key. Sampling is linear, so Bilinear(W_k V) = W_k Bilinear(V) for every key (zero padding
        included), and W_k Bilinear(V) + b_k is what (S3) asks: W_k applied to the sampled key. With the bias applied
        to the map, a key partly outside it would get the bias times its in-map bilinear weight."""
        if isinstance(values, list):
            return [F.linear(rows, self.key.weight.flatten(1)) for rows in values]
        return F.conv2d(values, self.key.weight)

    def key_bias(self, sampled_keys: torch.Tensor) -> torch.Tensor:
        """(S3) W_k's bias on sampled keys (..., d): see ``keys``."""
        return sampled_keys + self.key.bias.to(sampled_keys.dtype)

    def forward(self, query: torch.Tensor, refs: list[torch.Tensor]) -> torch.Tensor:
        self._check_refs(query, refs, self.num_refs)
        if self.runs_fused_walk(query, refs):
            return self.fused_walk(query, refs)
        batch, _, height, width = query.shape
        # Channels-last rows throughout: (B, H, W, c) memory is the layout the per-query gathers read.
        offsets, head, scores, values = self.projections(query, refs)  # (S1), (S3), (S6), (S2) V^r
        positions = self.sampling_positions(query, offsets)  # (S1) (B, H, W, R, K, 2)
        if self.fast:  # (S2) taps, offsets and weights computed inside one autograd node per gather
            sample = lambda maps: bilinear_gather(maps, positions)  # noqa: E731
            aggregate = lambda maps, weights: bilinear_gather(maps, positions, weights)  # noqa: E731
        else:  # reference: taps computed once by traced torch ops, shared by both gathers
            taps = bilinear_taps(positions, height, width)  # (B, H, W, R, K, 4) each
            sample = lambda maps: sample_taps(maps, taps)  # noqa: E731
            aggregate = lambda maps, weights: aggregate_taps(maps, taps, weights)  # noqa: E731

        gates = None if scores is None else self.gate_values(scores)  # (S6) (B, H, W, R*K), exactly 0/1
        open_keys = None
        if gates is not None and self.skips_closed_keys():  # (S7) closed keys are never gathered
            open_keys = gates.view(positions.shape[:-1]) > 0  # (B, H, W, R, K)
            sample = lambda maps: bilinear_gather(maps, positions, open_keys=open_keys)  # noqa: E731
            aggregate = lambda maps, weights: bilinear_gather(maps, positions, weights, open_keys)  # noqa: E731

        if self.logit_form == "predicted":
            logits = head  # (S3) (B, H, W, R*K)
        elif open_keys is not None:  # (S3) dot logits of the open keys; closed ones -inf
            q = head.reshape(-1, head.shape[-1])  # (B*H*W, d)
            q = q.repeat_interleave(open_keys.flatten(3).sum(-1).flatten(), dim=0)  # (P, d): each open key's query
            products = (q * self.key_bias(sample(self.keys(values)))).sum(-1) / math.sqrt(q.shape[-1])  # (P,)
            logits = torch.full_like(gates, float("-inf")).masked_scatter_(open_keys.view_as(gates), products)
        else:
            sampled_keys = self.key_bias(sample(self.keys(values)).flatten(3, 4))  # (S3) (B, H, W, R*K, d)
            logits = torch.einsum("bhwd,bhwkd->bhwk", head, sampled_keys) / math.sqrt(head.shape[-1])

        if self.adaptive:
            # (S7) closed keys leave the softmax: a = g exp(e - max_open) / sum g exp(e - max_open).
            # Multiplying by g (not masking with -inf) lets the straight-through gradient reach the gate.
            open_max = logits.detach().masked_fill(gates.detach() == 0, float("-inf")).amax(dim=-1, keepdim=True)
            unnormalised = gates * torch.exp((logits - open_max).clamp(max=0))
            weights = unnormalised / unnormalised.sum(dim=-1, keepdim=True)
            counts = gates.detach().sum(dim=-1)
        else:
            weights = logits.softmax(dim=-1)  # (S4) jointly over the R*K keys
            counts = torch.full((batch, height, width), float(self.keys_per_query), device=query.device)
        self.open_key_counts = counts
        self.open_keys = counts.float().mean()

        weights = weights.view(batch, height, width, self.num_refs, self.num_keys)
        aggregated = aggregate(values, weights)  # (S5) (B, H, W, Cv)
        if self.fast:  # (S5) W_z on the rows, the result in the query's memory layout
            return linear_in_layout_of(query, aggregated, self.output.weight.flatten(1), self.output.bias)
        output_format = torch.channels_last if query.is_contiguous(memory_format=torch.channels_last) else (
            torch.contiguous_format
        )
        return self.output(aggregated.permute(0, 3, 1, 2)).contiguous(memory_format=output_format)  # (S5) W_z


def gate_probabilities(scores: torch.Tensor) -> torch.Tensor:
    """(S8) sigmoid(s) of the gate logits, in at least float32 (a mean of many bf16 values would drift)."""
    return torch.sigmoid(scores.to(torch.promote_types(scores.dtype, torch.float32)))


@torch.no_grad()
def inference_open_fraction(scores: torch.Tensor) -> torch.Tensor:
    """The share of keys that inference's gates open for the gate logits ``scores`` (..., R*K): s > 0 (S6), and each
    query's best-scored key (S7)."""
    open_ = (scores > 0).scatter(-1, scores.argmax(dim=-1, keepdim=True), True)
    return open_.double().mean()  # a count over many keys: float32 would round it


def rows_linear(conv: nn.Conv2d, rows: torch.Tensor) -> torch.Tensor:
    """A 1x1 convolution applied to channels-last rows (..., C_in) -> (..., C_out): one matrix product."""
    return F.linear(rows, conv.weight.flatten(1), conv.bias)


def linear_in_layout_of(query: torch.Tensor, rows: torch.Tensor, weight: torch.Tensor,
                        bias: torch.Tensor) -> torch.Tensor:
    """A 1x1 projection of channels-last rows (B, H, W, c_in) -> (B, c_out, H, W) in ``query``'s memory layout.

    The block adds the result to the query, and on CPU an add of an NCHW and a channels-last tensor costs several
    times one of a single layout (15 vs 2 ms at 64 x 320 x 180): NCHW queries get W rows^T per image, written
    NCHW; channels-last queries get the rows' own layout.
    """
    if query.is_contiguous() and not query.is_contiguous(memory_format=torch.channels_last):
        batch, height, width, _ = rows.shape
        columns = torch.baddbmm(bias.view(1, -1, 1), weight.expand(batch, -1, -1), rows.flatten(1, 2).transpose(1, 2))
        return columns.view(batch, -1, height, width)
    return F.linear(rows, weight, bias).permute(0, 3, 1, 2)


ATTENTIONS = ("none", "nonlocal", "cla-dense", "cla", "acla")
KEY_BUDGET_FORMS = ("linear", "target", "open_target", "lagrangian")  # (S8) ``AttentionBase.budget_loss``


def build_attention(name: str, channels: int, num_refs: int, num_keys: int = 9, **options) -> nn.Module:
    """One attention module of the family by name (see the module docstring)."""
    if name == "nonlocal":
        return NonLocalAttention(channels, num_refs, **options)
    if name == "cla-dense":
        return DenseCrossLayerAttention(channels, num_refs, **options)
    if name in ("cla", "acla"):
        return SampledCrossLayerAttention(channels, num_refs, num_keys, adaptive=name == "acla", **options)
    raise ValueError(f"unknown attention {name!r}; expected one of {ATTENTIONS[1:]}")
