"""The bilinear gather of the sampled keys: ``bilinear_gather`` picks the kernel or pure torch.

For query p, reference r and key k, ``bilinear_gather`` returns the bilinear sample of reference r at the
key's pixel position (zero outside the map), or the (S5) sum of the samples weighted by the attention.
Where the work runs:

* CPU, float32/float64, where the C++ kernel builds: ``acla::bilinear_gather`` (``acla.ops.custom_ops``);
* elsewhere on CPU: pure torch, one autograd node whose backward is written by hand (``_BilinearGather``):
  the taps are computed per corner, the table's gradient is a sparse product (an ``argsort`` builds S^T);
* CUDA training: the weighted sum as one batched ``F.grid_sample`` (``grid_sample_aggregate``);
* inference with deterministic gates: only the open keys are read (packed bags, ``_open_key_gather``);
* under ``torch.compile``: traced indexing ops, which inductor fuses.

The reference formulation beside them (``bilinear_taps``, ``sample_taps``, ``aggregate_taps``: the four taps
of every key as rows of a channels-last table and one weighted ``F.embedding_bag``) is what the attention
module's reference path (``fast=False``) and the tests compare against.
"""

from __future__ import annotations

import warnings
from typing import NamedTuple

import torch
import torch.nn.functional as F

from acla.ops import extension
from acla.ops.custom_ops import kernel_gather


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
