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

Sampling is vectorised over references and keys, never a Python loop over keys: the bilinear taps of
every key become rows of a channels-last table, and one ``F.embedding_bag`` per map gathers them with
the attention and bilinear weights fused (``benchmarks/bench_sampling.py`` compares it with one
batched ``grid_sample`` and with a per-key loop).
"""

from __future__ import annotations

import math
import warnings

import torch
import torch.nn.functional as F
from torch import nn

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
        if logits not in LOGIT_FORMS:
            raise ValueError(f"logits must be one of {LOGIT_FORMS}, got {logits!r}")
        if num_refs < 1:
            raise ValueError(f"num_refs must be >= 1, got {num_refs}")
        self.num_refs, self.num_keys, self.logit_form, self.adaptive = num_refs, num_keys, logits, adaptive
        self.keys_per_query = num_refs * num_keys
        self.temperature = temperature  # (S6) Gumbel-sigmoid tau; the trainer anneals it
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

    def sampling_positions(self, query: torch.Tensor) -> torch.Tensor:
        """(B, H, W, R, K, 2) pixel positions (x, y) of every key: p + p_k + dp_{r,k}(p)."""
        batch, _, height, width = query.shape
        offsets = self.offset(query).permute(0, 2, 3, 1)  # (S1) (B, H, W, 2*R*K), pixels, zero at init
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
        scores = self.gate(query)  # (S6) s, (B, R*K, H, W)
        self.key_budget = torch.sigmoid(scores.float()).mean()  # (S8) expected fraction of open keys
        if self.training:
            uniform = torch.rand_like(scores).clamp_(1e-6, 1 - 1e-6)
            relaxed = torch.sigmoid((scores + torch.log(uniform) - torch.log1p(-uniform)) / self.temperature)
            hard = relaxed > 0.5
        else:
            relaxed, hard = None, scores > 0  # deterministic at inference
        strongest = F.one_hot(scores.argmax(dim=1), scores.shape[1]).permute(0, 3, 1, 2).bool()
        hard = hard | strongest  # (S7) the best-scored key is always open
        if relaxed is None:
            return hard.to(scores.dtype)
        return hard.to(scores.dtype) + (relaxed - relaxed.detach())  # straight-through, exactly 0/1 forward

    def forward(self, query: torch.Tensor, refs: list[torch.Tensor]) -> torch.Tensor:
        self._check_refs(query, refs, self.num_refs)
        batch, _, height, width = query.shape
        # Channels-last throughout: the 1x1 convs then emit (B, H, W, c) memory, which is the layout the
        # per-query gathers read, so no permute copies are needed.
        output_format = torch.channels_last if query.is_contiguous(memory_format=torch.channels_last) else (
            torch.contiguous_format
        )
        query = query.contiguous(memory_format=torch.channels_last)
        stacked = torch.stack([ref.permute(0, 2, 3, 1) for ref in refs], dim=1)  # (B, R, H, W, C)
        values = self.value(stacked.flatten(0, 1).permute(0, 3, 1, 2))  # (S2) V^r, (B*R, Cv, H, W) channels-last
        positions = self.sampling_positions(query)  # (S1) (B, H, W, R, K, 2)
        if self.fast:  # (S2) taps, offsets and weights computed inside one autograd node per gather
            sample = lambda maps: bilinear_gather(maps, positions)  # noqa: E731
            aggregate = lambda maps, weights: bilinear_gather(maps, positions, weights)  # noqa: E731
        else:  # reference: taps computed once by traced torch ops, shared by both gathers
            taps = bilinear_taps(positions, height, width)  # (B, H, W, R, K, 4) each
            sample = lambda maps: sample_taps(maps, taps)  # noqa: E731
            aggregate = lambda maps, weights: aggregate_taps(maps, taps, weights)  # noqa: E731

        if self.logit_form == "predicted":
            logits = self.attention(query).permute(0, 2, 3, 1)  # (S3) (B, H, W, R*K)
        else:
            sampled_keys = sample(self.key(values)).flatten(3, 4)  # (S3) (B, H, W, R*K, d)
            q = self.query(query).permute(0, 2, 3, 1)  # (B, H, W, d)
            logits = torch.einsum("bhwd,bhwkd->bhwk", q, sampled_keys) / math.sqrt(q.shape[-1])

        if self.adaptive:
            gates = self.gates(query).permute(0, 2, 3, 1)  # (S6) (B, H, W, R*K), exactly 0/1
            # (S7) closed keys leave the softmax: a = g exp(e - max_open) / sum g exp(e - max_open).
            # Multiplying by g (not masking with -inf) lets the straight-through gradient reach the gate.
            open_max = logits.masked_fill(gates.detach() == 0, float("-inf")).amax(dim=-1, keepdim=True).detach()
            unnormalised = gates * torch.exp((logits - open_max).clamp(max=0))
            weights = unnormalised / unnormalised.sum(dim=-1, keepdim=True)
            counts = gates.detach().sum(dim=-1)
        else:
            weights = logits.softmax(dim=-1)  # (S4) jointly over the R*K keys
            counts = torch.full((batch, height, width), float(self.keys_per_query), device=query.device)
        self.open_key_counts = counts
        self.open_keys = counts.float().mean()

        weights = weights.view(batch, height, width, self.num_refs, self.num_keys)
        aggregated = aggregate(values, weights).permute(0, 3, 1, 2)  # (S5) (B, Cv, H, W)
        return self.output(aggregated).contiguous(memory_format=output_format)  # (S5) W_z


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
    """out[q] = sum_t weights[q, t] * table[index[q, t]]: (Q, T) index and weights, (N, c) table -> (Q, c)."""
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


def bilinear_gather(maps: torch.Tensor, positions: torch.Tensor, weights: torch.Tensor | None = None) -> torch.Tensor:
    """The fast path of ``sample_taps`` / ``aggregate_taps``: one autograd node, same numbers.

    ``maps`` (B*R, c, H, W) (channels-last memory avoids a copy), ``positions`` (B, H, W, R, K, 2) in
    pixels. Without ``weights``: the bilinear samples (B, H, W, R, K, c). With ``weights`` (B, H, W, R, K):
    (S5) their weighted sum over the R*K keys, (B, H, W, c). The bilinear taps and weights are computed
    once in the forward and again (cheaply, without autograd) in the backward, whose gradients for the
    positions and weights are written out by hand; no traced per-tap intermediate is kept.
    """
    height, width = maps.shape[-2:]
    table = as_table(maps)
    if torch.compiler.is_compiling():  # traced ops: inductor fuses gather, weighting and sum (and the scatter back)
        return _gather_forward(table, positions, weights, height, width, traced=True)
    wants_grad = torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in (table, positions, weights))
    if not wants_grad:
        return _gather_forward(table, positions, weights, height, width)
    if table.device.type != "cpu" or table.dtype not in (torch.float32, torch.float64):  # the sparse backward's
        # devices and dtypes; elsewhere the reference ops
        taps = bilinear_taps(positions, height, width)
        return sample_taps(maps, taps) if weights is None else aggregate_taps(maps, taps, weights)
    return _BilinearGather.apply(table, positions, weights, height, width)


def _gather_forward(table, positions, weights, height, width, *, traced: bool = False) -> torch.Tensor:
    """The forward of ``bilinear_gather`` from a (rows, c) table: one weighted embedding_bag.

    ``traced``: autograd (or the compiler) follows the taps, and the gather is an indexing whose weighted
    sum inductor fuses (eagerly it would build every sampled row).
    """
    with torch.set_grad_enabled(traced and torch.is_grad_enabled()):
        index, _, bilinear, _ = _taps(positions, height, width, per_key=weights is None)
    fused = bilinear if weights is None else bilinear.to(weights.dtype) * weights.reshape(index.shape[0], 1, -1)
    fused = fused.to(table.dtype)
    if traced:
        out = (table[index] * fused.unsqueeze(-1)).sum((1, 2))
    else:
        out = F.embedding_bag(index.flatten(1), table, per_sample_weights=fused.flatten(1), mode="sum")
    shape = positions.shape[:-1] if weights is None else positions.shape[:3]
    return out.view(*shape, table.shape[1])


class _BilinearGather(torch.autograd.Function):
    """out[q] = sum_m weights[q, m] Bilinear(table, positions[q, m]) with a hand-written backward.

    Backward: with u[q, t, m] = <grad[q], table[index[q, t, m]]> (embedding_bag's kernel), the weights
    get sum_t u * bilinear_t, the positions get the derivative of the bilinear weights (the floor has
    none), and the table gets S^T grad (S the sparse (Q, rows) gather matrix) as four sparse products, one
    per tap corner, that share one CSR structure sorted on the top-left rows: a quarter of the sort.
    Every per-tap tensor is corner-major, (Q, 4, M), so elementwise ops run over long contiguous rows.
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
            index, top_left, bilinear, (weight_x, weight_y, inside_x, inside_y) = _taps(
                positions, height, width, per_key=weights is None)
        queries, _, keys = index.shape
        flat_weights = None if weights is None else weights.reshape(queries, 1, keys).to(bilinear.dtype)
        fused = bilinear if weights is None else bilinear * flat_weights
        grad_out = grad_out.reshape(queries, table.shape[1]).contiguous()
        grad_table = grad_positions = grad_weights = None
        if ctx.needs_input_grad[0]:
            grad_table = _transposed_gather(grad_out, top_left.flatten(), fused.to(grad_out.dtype), table.shape[0], width)
        if ctx.needs_input_grad[1] or (weights is not None and ctx.needs_input_grad[2]):
            flat_index = index.flatten()
            taps = index.shape[1] * keys
            tap_grad = torch.ops.aten._embedding_bag_per_sample_weights_backward(
                grad_out, table, flat_index, torch.arange(0, queries * taps, taps, dtype=flat_index.dtype),
                torch.arange(queries, dtype=flat_index.dtype).repeat_interleave(taps), 0,  # offset2bag; mode 0 = sum
            ).view(index.shape).to(bilinear.dtype)  # u[q, t, m]
            if weights is not None and ctx.needs_input_grad[2]:
                grad_weights = (tap_grad * bilinear).sum(1).view(weights.shape).to(weights.dtype)
            if ctx.needs_input_grad[1]:
                if flat_weights is not None:
                    tap_grad = tap_grad * flat_weights
                u00, u01, u10, u11 = tap_grad.unbind(1)  # taps (y0 x0, y0 x1, y1 x0, y1 x1)
                grad_x = weight_y[0] * (u01 * inside_x[1] - u00 * inside_x[0]) + weight_y[1] * (
                    u11 * inside_x[1] - u10 * inside_x[0])
                grad_y = weight_x[0] * (u10 * inside_y[1] - u00 * inside_y[0]) + weight_x[1] * (
                    u11 * inside_y[1] - u01 * inside_y[0])
                grad_positions = torch.stack([grad_x, grad_y], -1).view(positions.shape)
        return grad_table, grad_positions, grad_weights, None, None


def _taps(positions: torch.Tensor, height: int, width: int, *, per_key: bool):
    """``bilinear_taps`` corner-major, plus what the hand-written backward needs.

    With Q bags of M keys (Q = B*H*W and M = R*K, or one bag per key when ``per_key``): ``index`` and
    ``bilinear`` (Q, 4, M), the same rows and numbers as ``bilinear_taps`` (taps y0 x0, y0 x1, y1 x0,
    y1 x1); ``top_left`` (Q, M), the row of the (y0, x0) tap clamped to [-(W+1), rows-1], so that every
    tap with a non-zero weight is ``top_left + (0, 1, W, W+1)``; and the per-axis weights and inside
    masks (each a pair of (Q, M) tensors for the 0 and +1 neighbour).
    """
    batch, _, _, refs = positions.shape[:4]
    keys = 1 if per_key else positions.shape[3] * positions.shape[4]
    queries = positions[..., 0].numel() // keys
    x, y = positions[..., 0].reshape(queries, keys), positions[..., 1].reshape(queries, keys)
    x0, y0 = x.floor(), y.floor()
    fx, fy = x - x0, y - y0
    inside_x = ((x0 >= 0) & (x0 <= width - 1), (x0 >= -1) & (x0 <= width - 2))
    inside_y = ((y0 >= 0) & (y0 <= height - 1), (y0 >= -1) & (y0 <= height - 2))
    weight_x = ((1 - fx) * inside_x[0], fx * inside_x[1])
    weight_y = ((1 - fy) * inside_y[0], fy * inside_y[1])
    bilinear = torch.stack([wy * wx for wy in weight_y for wx in weight_x], 1)  # (Q, 4, M)
    rows = batch * refs * height * width
    index_type = torch.int32 if rows < 2**31 - width - 2 else torch.int64  # int32 halves the index memory
    map_index = torch.arange(batch * refs, device=positions.device, dtype=index_type).view(batch, 1, 1, refs, 1)
    top_left = (map_index * (height * width)).expand(positions.shape[:-1]).reshape(queries, keys) + (
        y0.to(index_type) * width + x0.to(index_type))
    index = torch.stack([top_left + corner for corner in (0, 1, width, width + 1)], 1).clamp_(0, rows - 1)
    top_left = top_left.clamp_(-(width + 1), rows - 1)
    as_float = lambda pair: tuple(mask.to(positions.dtype) for mask in pair)  # noqa: E731
    return index, top_left, bilinear, (weight_x, weight_y, as_float(inside_x), as_float(inside_y))


def _transposed_gather(grad_out: torch.Tensor, top_left: torch.Tensor, corner_weights: torch.Tensor,
                       rows: int, width: int) -> torch.Tensor:
    """S^T grad_out, (rows, c), with S[q, top_left[q, m] + corner_t] = corner_weights[q, t, m].

    ``top_left`` flattened (Q*M,), ``corner_weights`` (Q, 4, M). One sort of the top-left rows (shifted
    by W+1 into [0, rows+W]) gives a CSR structure; each corner is one sparse product with it, added at
    its row shift into a padded gradient.
    """
    keys = corner_weights.shape[2]
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
        for corner, offset in enumerate((0, 1, width, width + 1)):
            transposed = torch.sparse_csr_tensor(row_starts, columns, corner_weights[:, corner].flatten()[order],
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
