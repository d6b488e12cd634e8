"""The attention family of the study, next to ``shared/paper/spec.md`` (labels (S1)...(S8)).

Every module has the same interface, so an ablation is one name in ``build_attention``:

    residual = module(query, refs)   # query (B, C, H, W); refs: list of R maps (B, C, H, W)
    block_output = query + residual  # residual is exactly zero at initialisation (S5)

and after each call exposes ``open_keys`` (mean number of keys a query attended to), ``key_budget``
(mean gate probability, (S8)) and ``budget_loss`` (``budget_weight * key_budget``; zero for the
non-adaptive modules).

Variants (spec section 5):
* ``nonlocal``  dense same-layer embedded-Gaussian non-local attention (Wang et al. 2018); quadratic.
* ``cla-dense`` every position of every reference is a key; quadratic; dot-product logits only.
* ``cla``       K keys per reference sampled around the query (S1)-(S5).
* ``acla``      ``cla`` with a per-key gate (S6)-(S8): a flexible number of keys per query.

Sampling is vectorised over references and keys, never a Python loop over keys. Two paths compute the
same numbers (``SampledCrossLayerAttention(fast=...)``; tests check outputs and gradients equal in float64):

* the fast path (default): the 1x1 projections as matrix products on channels-last rows (the query's
  heads in one), the output in the query's memory layout. With predicted logits on CPU, where the C++
  kernel of ``acla.ops.extension`` builds, CLA and ACLA run as one kernel walk per query, forward and backward,
  training and inference (``fused_walk``, the custom op ``acla::attend`` so that ``torch.compile`` keeps
  it): gates, the softmax over the open keys, the open keys' bilinear sum, W_v folded into W_z. Otherwise
  ``bilinear_gather``: on CPU the kernel's gather walk (custom op ``acla::bilinear_gather``), or, where no
  compiler builds it, pure torch (taps per corner, one autograd node with a hand-written backward); on
  CUDA, training's weighted sum is one batched ``F.grid_sample`` (``grid_sample_aggregate``). At inference
  with deterministic gates, closed keys are never gathered: the kernels skip them (ACLA's eager walk,
  ``open_key_walk``, the custom op ``acla::attend_open``, projects the open keys' offsets and logits alone, too),
  the pure-torch path packs each query's open keys into one bag.
* the reference path (``fast=False``): 1x1 convolutions, the four bilinear taps of every key as rows of a
  channels-last table and one ``F.embedding_bag`` with the attention and bilinear weights fused, autograd
  through every op (``benchmarks/bench_sampling.py`` compares the formulations, with one batched
  ``grid_sample`` and a per-key loop).
"""

from __future__ import annotations

import math
import warnings
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.flop_counter import register_flop_formula

from acla.ops import extension

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

    @property
    def budget_loss(self) -> torch.Tensor:
        """(S8) ``lambda_k * mean(sigmoid(s))``, to be added to the training loss."""
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
        if self.training:
            relaxed = self.relaxed_gates(scores)
            hard = relaxed > 0.5
        else:
            relaxed, hard = None, scores > 0  # deterministic at inference
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
        float32/float64, where the C++ kernel builds; training or inference, eager or compiled (the kernel is a
        custom op with its own backward)."""
        return (self.logit_form == "predicted" and self.fast and query.device.type == "cpu"
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
        """(S3) W_k on the values, in their layout (``projections``)."""
        return [rows_linear(self.key, rows) for rows in values] if isinstance(values, list) else self.key(values)

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
            products = (q * sample(self.keys(values))).sum(-1) / math.sqrt(q.shape[-1])  # (P,)
            logits = torch.full_like(gates, float("-inf")).masked_scatter_(open_keys.view_as(gates), products)
        else:
            sampled_keys = sample(self.keys(values)).flatten(3, 4)  # (S3) (B, H, W, R*K, d)
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


def as_table(maps: torch.Tensor) -> torch.Tensor:
    """(N, c, H, W) maps -> (N*H*W, c) rows, channels last: row (n*H + y)*W + x is pixel (x, y) of map n."""
    return maps.permute(0, 2, 3, 1).reshape(-1, maps.shape[1])


def aggregate_keys(values: torch.Tensor, positions: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """(S5) sum_{r,k} a_{r,k}(p) Bilinear(V^r, position_{r,k}(p)) for every query p -> (B, H, W, Cv).

    ``values`` (B*R, Cv, H, W) (channels-last memory avoids a copy), ``positions`` (B, H, W, R, K, 2)
    in pixels, ``weights`` (B, H, W, R, K).
    """
    return aggregate_taps(values, bilinear_taps(positions, *values.shape[-2:]), weights)


def aggregate_taps(values: torch.Tensor, taps: tuple[torch.Tensor, torch.Tensor], weights: torch.Tensor) -> torch.Tensor:
    """``aggregate_keys`` from precomputed ``bilinear_taps``.

    Attention and bilinear weights are fused into one weighted gather (one bag of 4*R*K taps per
    query), so no tensor of sampled values (B, H, W, R*K, Cv) is ever built, forward or backward.
    """
    index, bilinear = taps  # (B, H, W, R, K, 4) each
    batch, height, width = index.shape[:3]
    fused = weights.unsqueeze(-1) * bilinear.to(weights.dtype)
    aggregated = weighted_gather(as_table(values), index.flatten(3).flatten(0, 2), fused.flatten(3).flatten(0, 2))
    return aggregated.view(batch, height, width, values.shape[1])


def sample_taps(maps: torch.Tensor, taps: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    """Bilinear samples (B, H, W, R, K, c) of ``maps`` (B*R, c, H, W) at precomputed ``bilinear_taps``."""
    index, weight = taps
    bags = weighted_gather(as_table(maps), index.flatten(0, -2), weight.flatten(0, -2))
    return bags.view(*index.shape[:-1], maps.shape[1])


def weighted_gather(table: torch.Tensor, index: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """out[q] = sum_t weights[q, t] * table[index[q, t]]: (Q, T) index and weights, (N, c) table -> (Q, c).

    A bf16/fp16 table (autocast) is gathered and summed in float32: the sum of 4*R*K taps keeps its
    precision, and CUDA's ``embedding_bag`` has no bf16 backward for the weights (torch 2.11; found by
    ``python -m acla gpu-check`` on an H200).
    """
    if table.dtype in (torch.bfloat16, torch.float16):
        return weighted_gather(table.float(), index, weights.float()).to(table.dtype)
    weights = weights.to(table.dtype)
    fast_backward = torch.is_grad_enabled() and table.device.type == "cpu" and table.dtype in (torch.float32, torch.float64)
    if fast_backward and (table.requires_grad or weights.requires_grad):
        return _WeightedGatherCPU.apply(table, index, weights)
    return F.embedding_bag(index, table, per_sample_weights=weights, mode="sum")


class _WeightedGatherCPU(torch.autograd.Function):
    """``embedding_bag`` forward with a sparse-matrix backward, 2-3x faster on CPU.

    Hand-written because ``embedding_bag``'s CPU backward for the table costs ~10x its forward here.
    Seen as a sparse (Q, N) matrix S with the weights as values, the forward is S @ table, so the
    table's gradient is S^T @ grad: one argsort builds S^T in CSR form and an MKL sparse matmul does
    the rest. The weights' gradient reuses embedding_bag's own kernel.
    """

    @staticmethod
    def forward(ctx, table: torch.Tensor, index: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(table, index, weights)
        return F.embedding_bag(index, table, per_sample_weights=weights, mode="sum")

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):
        table, index, weights = ctx.saved_tensors
        queries, taps = index.shape
        rows = table.shape[0]
        flat_index = index.flatten()
        grad_out = grad_out.contiguous()
        grad_table = grad_weights = None
        if ctx.needs_input_grad[0]:
            order = torch.argsort(flat_index)
            row_starts = torch.zeros(rows + 1, dtype=torch.long)
            torch.cumsum(torch.bincount(flat_index, minlength=rows), 0, out=row_starts[1:])
            with warnings.catch_warnings():  # "sparse CSR support is in beta": the ops used here are stable
                warnings.simplefilter("ignore", UserWarning)
                transposed = torch.sparse_csr_tensor(
                    row_starts, order // taps, weights.flatten()[order], size=(rows, queries), check_invariants=False
                )
            grad_table = transposed @ grad_out
        if ctx.needs_input_grad[2]:  # <grad[q], table[index[q, t]]>: embedding_bag's own kernel for this part
            grad_weights = torch.ops.aten._embedding_bag_per_sample_weights_backward(
                grad_out, table, flat_index, torch.arange(0, queries * taps, taps, dtype=flat_index.dtype),
                torch.arange(queries, dtype=flat_index.dtype).repeat_interleave(taps), 0,  # offset2bag; mode 0 = sum
            ).view(queries, taps)
        return grad_table, None, grad_weights


def bilinear_taps(positions: torch.Tensor, height: int, width: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows and weights of the four bilinear taps of each (x, y) in ``positions`` (B, H, W, R, K, 2).

    Returns ``index`` and ``weight`` of shape (B, H, W, R, K, 4) with taps ordered (y0 x0, y0 x1,
    y1 x0, y1 x1): ``index`` is a row of ``as_table(maps)`` with maps ordered (b, r); a tap outside
    the map gets weight 0 (zero padding) and a clamped, harmless row. At integer positions the
    fractional part is exactly 0, so sampling returns the feature exactly. Gradients reach the
    positions through the weights.
    """
    batch, _, _, refs = positions.shape[:4]
    x, y = positions[..., 0], positions[..., 1]
    x0, y0 = x.floor(), y.floor()
    fx, fy = x - x0, y - y0
    # per-axis weights, zeroed where that neighbour lies outside the map: (..., 2) for (0, +1)
    weight_x = torch.stack([(1 - fx) * ((x0 >= 0) & (x0 <= width - 1)), fx * ((x0 >= -1) & (x0 <= width - 2))], -1)
    weight_y = torch.stack([(1 - fy) * ((y0 >= 0) & (y0 <= height - 1)), fy * ((y0 >= -1) & (y0 <= height - 2))], -1)
    weight = (weight_y.unsqueeze(-1) * weight_x.unsqueeze(-2)).flatten(-2)  # (..., 4)
    rows = batch * refs * height * width
    index_type = torch.int32 if rows < 2**31 - width - 2 else torch.int64  # int32 halves the index memory
    map_index = torch.arange(batch * refs, device=positions.device, dtype=index_type).view(batch, 1, 1, refs, 1)
    top_left = map_index * (height * width) + y0.to(index_type) * width + x0.to(index_type)  # (B, H, W, R, K)
    corners = torch.tensor([0, 1, width, width + 1], device=positions.device, dtype=index_type)
    index = (top_left.unsqueeze(-1) + corners).clamp_(0, rows - 1)
    return index, weight


def bilinear_gather(
    maps: torch.Tensor | list[torch.Tensor], positions: torch.Tensor, weights: torch.Tensor | None = None,
    open_keys: torch.Tensor | None = None,
) -> torch.Tensor:
    """The fast path of ``sample_taps`` / ``aggregate_taps``: one autograd node, same numbers.

    ``maps``: the R reference maps, as a list of channels-last rows (B, H, W, c) (what the fast path
    makes: no stacked copy) or one (B*R, c, H, W) tensor; ``positions`` (B, H, W, R, K, 2) in pixels.
    Without ``weights``: the bilinear samples (B, H, W, R, K, c). With ``weights`` (B, H, W, R, K): (S5)
    their weighted sum over the R*K keys, (B, H, W, c).

    On CPU in float32/float64 the C++ kernel of ``acla.ops.extension`` does the work where it builds (it skips
    keys of weight 0); otherwise the pure-torch path: the bilinear taps and weights computed once in the
    forward and again, without autograd, in the backward, whose gradients for the positions and weights
    are written out by hand.

    ``open_keys``, inference only: a (B, H, W, R, K) mask of the keys to read (every query has one);
    the others count as weight 0 and are never read. Samples then come as (P, c), the P open keys in
    ``nonzero`` order; the weighted sum stays (B, H, W, c), from packed bags of each query's open keys.
    """
    batch, height, width, refs = positions.shape[:4]
    if isinstance(maps, torch.Tensor):
        maps = list(maps.permute(0, 2, 3, 1).unflatten(0, (batch, refs)).unbind(1))  # R x (B, H, W, c)
    on_cpu = maps[0].device.type == "cpu" and maps[0].dtype in (torch.float32, torch.float64)
    if on_cpu and extension.load() is not None and (open_keys is None or weights is not None):
        # the kernel skips weight-0 keys itself
        weights = maps[0].new_empty(0) if weights is None else weights.to(maps[0].dtype)
        return kernel_gather(positions.to(maps[0].dtype), weights, maps)
    table = torch.stack(maps, dim=1).reshape(-1, maps[0].shape[-1])  # (B*R*H*W, c), rows of maps (b, r)
    if torch.compiler.is_compiling():  # traced ops: inductor fuses gather, weighting and sum (and the scatter back)
        return _gather_forward(table, positions, weights, height, width, traced=True)
    if open_keys is not None:
        return _open_key_gather(table, positions, weights, open_keys, height, width)
    wants_grad = torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in (table, positions, weights))
    if not wants_grad:
        return _gather_forward(table, positions, weights, height, width)
    if not on_cpu:  # the reference ops; on CUDA, grid_sample for the weighted sum (see its docstring)
        stacked = table.view(batch * refs, height, width, -1).permute(0, 3, 1, 2)
        if stacked.device.type == "cuda" and weights is not None:
            return grid_sample_aggregate(stacked, positions, weights)
        taps = bilinear_taps(positions, height, width)
        return sample_taps(stacked, taps) if weights is None else aggregate_taps(stacked, taps, weights)
    return _BilinearGather.apply(table, positions, weights, height, width)


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


def _gather_forward(table, positions, weights, height, width, *, traced: bool = False) -> torch.Tensor:
    """The forward of ``bilinear_gather`` from a (rows, c) table: one weighted embedding_bag per tap corner.

    ``traced``: autograd (or the compiler) follows the taps, and the gather is an indexing whose weighted
    sum inductor fuses (eagerly it would build every sampled row).
    """
    with torch.set_grad_enabled(traced and torch.is_grad_enabled()):
        taps = _taps(positions, height, width, per_key=weights is None)
    flat_weights = None if weights is None else weights.reshape(taps.top_left.shape)
    out = None
    for index, bilinear in zip(taps.index, taps.bilinear):  # (Q, M) each
        fused = (bilinear if flat_weights is None else bilinear.to(weights.dtype) * flat_weights).to(table.dtype)
        if traced:
            part = (table[index] * fused.unsqueeze(-1)).sum(1)
        else:
            part = F.embedding_bag(index, table, per_sample_weights=fused, mode="sum")
        out = part if out is None else out + part
    shape = positions.shape[:-1] if weights is None else positions.shape[:3]
    return out.view(*shape, table.shape[1])


def grid_sample_coordinates(positions: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Pixel positions (..., 2) as (x, y) -> ``F.grid_sample``'s [-1, 1] coordinates with align_corners=False."""
    x, y = positions.unbind(-1)
    return torch.stack([(2 * x + 1) / width - 1, (2 * y + 1) / height - 1], dim=-1)


def grid_sample_aggregate(values: torch.Tensor, positions: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """(S5) sum_(r,k) a_(r,k) Bilinear(V^r, p_(r,k)) with ``F.grid_sample``: the training path on CUDA.

    ``values`` (B*R, c, H, W), maps ordered (b, r); ``positions`` (B, H, W, R, K, 2) in pixels; ``weights``
    (B, H, W, R, K); returns (B, H, W, c). It builds every sample, (B, R, c, K, H, W), which the gathers
    avoid, but on an H200 the module's time went to ``embedding_bag``'s backward (per-sample weights 43 %,
    table 20 % of an ACLA module's forward + backward, profiled), and grid_sample computes the map's and the
    positions' gradients in one kernel. Same numbers as the reference ops up to rounding: the pixel positions
    pass through grid_sample's [-1, 1] coordinates (align_corners=False) and back. Sampling and weighted sum
    run in float32 at least, outside autocast, as ``weighted_gather`` keeps them.
    """
    batch, height, width, refs, keys = weights.shape
    grid = grid_sample_coordinates(positions, height, width).permute(0, 3, 4, 1, 2, 5).reshape(batch * refs, keys * height, width, 2)
    dtype = torch.promote_types(values.dtype, torch.float32)
    with torch.autocast(values.device.type, enabled=False):
        sampled = F.grid_sample(values.to(dtype), grid.to(dtype), mode="bilinear", padding_mode="zeros",
                                align_corners=False).view(batch, refs, -1, keys, height, width)
        out = torch.einsum("brckhw,bhwrk->bhwc", sampled, weights.to(dtype))
    return out.to(values.dtype)


def _open_key_gather(table, positions, weights, open_keys, height, width) -> torch.Tensor:
    """``bilinear_gather`` on the open keys only: packed bags, one per query (each has an open key)."""
    flat = open_keys.flatten().nonzero().squeeze(1)  # (P,) ascending: query-major
    taps = _taps(positions, height, width, per_key=True, open_keys=flat)  # (P, 1) each
    if weights is None:
        bags = [(index, bilinear.to(table.dtype), None) for index, bilinear in zip(taps.index, taps.bilinear)]
    else:
        per_query = open_keys.flatten(3).sum(-1).flatten()  # (B*H*W,)
        offsets = (torch.cumsum(per_query, 0) - per_query).to(taps.top_left.dtype)  # each query's first key
        open_weights = weights.flatten().index_select(0, flat).to(taps.bilinear[0].dtype)
        bags = [(index.flatten(), (bilinear.flatten() * open_weights).to(table.dtype), offsets)
                for index, bilinear in zip(taps.index, taps.bilinear)]
    out = None
    for index, fused, offsets in bags:
        part = F.embedding_bag(index, table, offsets, per_sample_weights=fused, mode="sum")
        out = part if out is None else out + part
    return out if weights is None else out.view(*positions.shape[:3], table.shape[1])


class _BilinearGather(torch.autograd.Function):
    """out[q] = sum_m weights[q, m] Bilinear(table, positions[q, m]) with a hand-written backward.

    Backward: with u_t[q, m] = <grad[q], table[index_t[q, m]]> for each tap corner t (embedding_bag's
    kernel), the weights get sum_t u_t * bilinear_t, the positions get the derivative of the bilinear
    weights (the floor has none), and the table gets S^T grad (S the sparse (Q, rows) gather matrix) as
    four sparse products, one per corner, that share one CSR structure sorted on the top-left rows: a
    quarter of a full sort. Every per-tap tensor is one (Q, M) tensor per corner, so elementwise ops
    run over long contiguous rows.
    """

    @staticmethod
    def forward(ctx, table, positions, weights, height, width):
        ctx.save_for_backward(table, positions, weights)
        ctx.sizes = (height, width)
        return _gather_forward(table, positions, weights, height, width)

    @staticmethod
    def backward(ctx, grad_out):
        table, positions, weights = ctx.saved_tensors
        height, width = ctx.sizes
        with torch.no_grad():
            taps = _taps(positions, height, width, per_key=weights is None)
        queries, keys = taps.top_left.shape
        flat_weights = None if weights is None else weights.reshape(queries, keys).to(taps.bilinear[0].dtype)
        grad_out = grad_out.reshape(queries, table.shape[1]).contiguous()
        grad_table = grad_positions = grad_weights = None
        if ctx.needs_input_grad[0]:
            fused = [(b if flat_weights is None else b * flat_weights).to(grad_out.dtype) for b in taps.bilinear]
            grad_table = _transposed_gather(grad_out, taps.top_left.flatten(), fused, table.shape[0], width)
        if ctx.needs_input_grad[1] or (weights is not None and ctx.needs_input_grad[2]):
            index_type = taps.top_left.dtype
            offsets = torch.arange(0, queries * keys, keys, dtype=index_type)
            offset2bag = torch.arange(queries, dtype=index_type).repeat_interleave(keys)
            u00, u01, u10, u11 = (  # u_t[q, m], taps (y0 x0, y0 x1, y1 x0, y1 x1)
                torch.ops.aten._embedding_bag_per_sample_weights_backward(
                    grad_out, table, index.flatten(), offsets, offset2bag, 0,  # mode 0 = sum
                ).view(queries, keys).to(taps.bilinear[0].dtype)
                for index in taps.index
            )
            if weights is not None and ctx.needs_input_grad[2]:
                grad_weights = sum(u * b for u, b in zip((u00, u01, u10, u11), taps.bilinear))
                grad_weights = grad_weights.view(weights.shape).to(weights.dtype)
            if ctx.needs_input_grad[1]:
                if flat_weights is not None:
                    u00, u01, u10, u11 = (u * flat_weights for u in (u00, u01, u10, u11))
                (wx0, wx1), (wy0, wy1) = taps.weight_x, taps.weight_y
                (in_x0, in_x1), (in_y0, in_y1) = taps.inside_x, taps.inside_y
                grad_x = wy0 * (u01 * in_x1 - u00 * in_x0) + wy1 * (u11 * in_x1 - u10 * in_x0)
                grad_y = wx0 * (u10 * in_y1 - u00 * in_y0) + wx1 * (u11 * in_y1 - u01 * in_y0)
                grad_positions = torch.stack([grad_x, grad_y], -1).view(positions.shape)
        return grad_table, grad_positions, grad_weights, None, None


class _Taps(NamedTuple):
    """The four bilinear taps of Q bags of M keys, one (Q, M) tensor per corner (y0 x0, y0 x1, y1 x0, y1 x1)."""

    index: tuple[torch.Tensor, ...]  # rows of ``as_table(maps)``, clamped into the table
    bilinear: tuple[torch.Tensor, ...]  # bilinear weights, zero for a tap outside the map
    top_left: torch.Tensor  # (Q, M) row of the y0 x0 tap, clamped to [-(W+1), rows-1]: every tap with a
    # non-zero weight is ``top_left + (0, 1, W, W+1)``
    weight_x: tuple[torch.Tensor, torch.Tensor]  # per-axis weights of the 0 and +1 neighbours
    weight_y: tuple[torch.Tensor, torch.Tensor]
    inside_x: tuple[torch.Tensor, torch.Tensor]  # 1 where that neighbour lies inside the map, else 0
    inside_y: tuple[torch.Tensor, torch.Tensor]


def _taps(positions: torch.Tensor, height: int, width: int, *, per_key: bool,
          open_keys: torch.Tensor | None = None) -> _Taps:
    """``bilinear_taps`` one corner at a time (the same rows and numbers), plus what the backward needs.

    Bags: Q = B*H*W of M = R*K keys; or one bag per key when ``per_key``; or, with ``open_keys`` (P,)
    (flat indices into the B*H*W*R*K keys), one bag per listed key.
    """
    batch, _, _, refs, num_keys = positions.shape[:5]
    rows = batch * refs * height * width
    index_type = torch.int32 if rows < 2**31 - width - 2 else torch.int64  # int32 halves the index memory
    map_index = torch.arange(batch * refs, device=positions.device, dtype=index_type).view(batch, 1, 1, refs, 1)
    map_index = map_index.expand(positions.shape[:-1])  # (B, H, W, R, K): map b*R + r of every key
    if open_keys is None:
        keys = 1 if per_key else refs * num_keys
        queries = positions.shape[:-1].numel() // keys
        x, y = positions[..., 0].reshape(queries, keys), positions[..., 1].reshape(queries, keys)
        map_index = map_index.reshape(queries, keys)
    else:
        x, y = positions.reshape(-1, 2).index_select(0, open_keys).unsqueeze(1).unbind(-1)  # (P, 1) each
        map_index = map_index.reshape(-1).index_select(0, open_keys).unsqueeze(1)
    x0, y0 = x.floor(), y.floor()
    fx, fy = x - x0, y - y0
    inside_x = ((x0 >= 0) & (x0 <= width - 1), (x0 >= -1) & (x0 <= width - 2))
    inside_y = ((y0 >= 0) & (y0 <= height - 1), (y0 >= -1) & (y0 <= height - 2))
    weight_x = ((1 - fx) * inside_x[0], fx * inside_x[1])
    weight_y = ((1 - fy) * inside_y[0], fy * inside_y[1])
    top_left = map_index * (height * width) + y0.to(index_type) * width + x0.to(index_type)
    index = tuple((top_left + corner).clamp_(0, rows - 1) for corner in (0, 1, width, width + 1))
    as_float = lambda pair: tuple(mask.to(positions.dtype) for mask in pair)  # noqa: E731
    return _Taps(index, tuple(wy * wx for wy in weight_y for wx in weight_x), top_left.clamp_(-(width + 1), rows - 1),
                 weight_x, weight_y, as_float(inside_x), as_float(inside_y))


def _transposed_gather(grad_out: torch.Tensor, top_left: torch.Tensor, corner_weights: list[torch.Tensor],
                       rows: int, width: int) -> torch.Tensor:
    """S^T grad_out, (rows, c), with S[q, top_left[q, m] + corner_t] = corner_weights[t][q, m].

    ``top_left`` flattened (Q*M,), ``corner_weights`` four (Q, M). One sort of the top-left rows
    (shifted by W+1 into [0, rows+W]) gives a CSR structure; each corner is one sparse product with it,
    added at its row shift into a padded gradient.
    """
    keys = corner_weights[0].shape[1]
    shift = width + 1
    shifted = top_left + shift
    padded_rows = rows + shift  # the values ``shifted`` takes: 0 .. rows + W
    order = torch.argsort(shifted)
    row_starts = torch.zeros(padded_rows + 1, dtype=torch.long, device=grad_out.device)
    torch.cumsum(torch.bincount(shifted, minlength=padded_rows), 0, out=row_starts[1:])
    columns = order // keys
    padded = grad_out.new_zeros(padded_rows + shift, grad_out.shape[1])
    with warnings.catch_warnings():  # "sparse CSR support is in beta": the ops used here are stable
        warnings.simplefilter("ignore", UserWarning)
        for weights, offset in zip(corner_weights, (0, 1, width, width + 1)):
            transposed = torch.sparse_csr_tensor(row_starts, columns, weights.flatten()[order],
                                                 size=(padded_rows, grad_out.shape[0]), check_invariants=False)
            padded[offset : offset + padded_rows] += transposed @ grad_out
    return padded[shift : shift + rows]


ATTENTIONS = ("none", "nonlocal", "cla-dense", "cla", "acla")


def build_attention(name: str, channels: int, num_refs: int, num_keys: int = 9, **options) -> nn.Module:
    """One attention module of the family by name (see the module docstring)."""
    if name == "nonlocal":
        return NonLocalAttention(channels, num_refs, **options)
    if name == "cla-dense":
        return DenseCrossLayerAttention(channels, num_refs, **options)
    if name in ("cla", "acla"):
        return SampledCrossLayerAttention(channels, num_refs, num_keys, adaptive=name == "acla", **options)
    raise ValueError(f"unknown attention {name!r}; expected one of {ATTENTIONS[1:]}")
