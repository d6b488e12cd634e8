"""Parameters, FLOPs, peak memory and latency of a model: ``profile(model, input_shape)``.

FLOPs are counted by ``torch.utils.flop_counter.FlopCounterMode`` (2 FLOPs per multiply-add, so
MACs = FLOPs / 2) with formulas added for the operators it does not know:

* ``embedding_bag`` (our fused bilinear gather, sum mode with per-sample weights): 2 FLOPs per tap
  per channel (one multiply, one add);
* ``grid_sampler_2d``: 8 FLOPs per output element (4 taps x multiply-add), coordinate maths excluded;
* ``_softmax``: 5 FLOPs per element (max, subtract, exp, sum, divide);
* CPU scaled-dot-product attention (``_scaled_dot_product_flash_attention_for_cpu``): the same
  formula torch uses for the CUDA kernels (two batched matmuls).

Element-wise operations (ReLU, residual adds, gates, exp of logits) are not counted, as in fvcore and
thop; in these models they are well under 1 % of the convolutions.

Peak memory: on CUDA, ``max_memory_allocated`` above what was allocated before the call; on CPU,
the peak of bytes held by tensors created during the call (a dispatch-mode tracker, because the CPU
allocator keeps no statistics). Parameters and inputs are excluded in both.
"""

from __future__ import annotations

import statistics
import time
import weakref
from collections.abc import Callable
from dataclasses import asdict, dataclass

import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import FlopCounterMode, sdpa_backward_flop_count, sdpa_flop_count

from acla.engine.gates import gated_modules

aten = torch.ops.aten


def _embedding_bag_flop(weight_shape, indices_shape, *args, out_shape=None, **kwargs) -> int:
    return 2 * _numel(indices_shape) * weight_shape[1]


def _grid_sample_flop(input_shape, grid_shape, *args, out_shape=None, **kwargs) -> int:
    return 8 * input_shape[0] * input_shape[1] * grid_shape[1] * grid_shape[2]


def _softmax_flop(input_shape, *args, out_shape=None, **kwargs) -> int:
    return 5 * _numel(input_shape)


def _sdpa_cpu_flop(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
    return sdpa_flop_count(query_shape, key_shape, value_shape)


def _sdpa_cpu_backward_flop(grad_out_shape, query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
    return sdpa_backward_flop_count(grad_out_shape, query_shape, key_shape, value_shape)


def _numel(shape) -> int:
    count = 1
    for size in shape:
        count *= size
    return count


EXTRA_FLOP_FORMULAS: dict = {
    aten._embedding_bag: _embedding_bag_flop,
    aten._embedding_bag_forward_only: _embedding_bag_flop,
    aten.grid_sampler_2d: _grid_sample_flop,
    aten._softmax: _softmax_flop,
    aten._scaled_dot_product_flash_attention_for_cpu: _sdpa_cpu_flop,
    aten._scaled_dot_product_flash_attention_for_cpu_backward: _sdpa_cpu_backward_flop,
}


def count_flops(function: Callable[[], object]) -> int:
    """FLOPs of everything ``function`` runs (forward, and backward if it calls it)."""
    with FlopCounterMode(display=False, custom_mapping=EXTRA_FLOP_FORMULAS) as counter:
        function()
    return counter.get_total_flops()


class _LiveTensorBytes(TorchDispatchMode):
    """Tracks bytes of storages created by operators while active, and their peak."""

    def __init__(self) -> None:
        super().__init__()
        self.live: dict[int, list[int]] = {}  # storage data_ptr -> [bytes, tensors alive]
        self.current = 0
        self.peak = 0

    def _release(self, key: int) -> None:
        entry = self.live.get(key)
        if entry is None:
            return
        entry[1] -= 1
        if entry[1] == 0:
            self.current -= entry[0]
            del self.live[key]

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for tensor in torch.utils._pytree.tree_leaves(out):
            # sparse tensors hold no storage of their own; their index/value tensors are counted
            if isinstance(tensor, torch.Tensor) and tensor.device.type == "cpu" and tensor.layout == torch.strided:
                storage = tensor.untyped_storage()
                key = storage.data_ptr()
                if key not in self.live:
                    self.live[key] = [storage.nbytes(), 0]
                    self.current += storage.nbytes()
                    self.peak = max(self.peak, self.current)
                self.live[key][1] += 1
                weakref.finalize(tensor, self._release, key)
        return out


def peak_memory_bytes(function: Callable[[], object], device: torch.device) -> int:
    """Peak bytes allocated by ``function`` beyond what existed before it ran."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        before = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        function()
        torch.cuda.synchronize(device)
        return torch.cuda.max_memory_allocated(device) - before
    tracker = _LiveTensorBytes()
    with tracker:
        function()
    return tracker.peak


def median_seconds(function: Callable[[], object], device: torch.device, *, repeats: int = 5, warmup: int = 1) -> float:
    for _ in range(warmup):
        function()
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        function()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


@dataclass(frozen=True)
class Efficiency:
    params: int
    flops: int  # forward FLOPs (2 per multiply-add), or forward + backward when backward=True
    peak_memory_bytes: int
    latency_s: float  # median
    device: str
    input_shape: tuple[int, ...]
    backward: bool

    def as_dict(self) -> dict:
        return asdict(self)


def profile(
    model: nn.Module,
    input_shape: tuple[int, ...],
    *,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
    backward: bool = False,
    repeats: int = 5,
    warmup: int = 1,
) -> Efficiency:
    """Count and time ``model`` on a random input of ``input_shape`` (B, C, H, W).

    ``backward=False``: inference (eval mode, no autograd). ``backward=True``: one training step's
    forward and backward of ``output.mean()``.
    """
    device = torch.device(device)
    model = model.to(device)
    model.train(backward)
    generator = torch.Generator(device="cpu").manual_seed(0)
    x = torch.rand(input_shape, generator=generator).to(device=device, dtype=dtype)

    def step() -> None:
        if backward:
            model.zero_grad(set_to_none=True)
            model(x).float().mean().backward()
        else:
            with torch.inference_mode():
                model(x)

    return Efficiency(
        params=sum(parameter.numel() for parameter in model.parameters()),
        flops=count_flops(step),
        peak_memory_bytes=peak_memory_bytes(step, device),
        latency_s=median_seconds(step, device, repeats=repeats, warmup=warmup),
        device=torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        input_shape=tuple(input_shape),
        backward=backward,
    )


def inference_flops(model: torch.nn.Module, input_shape: tuple[int, ...]) -> int:
    """Forward FLOPs of ``model`` at inference (eval, no autograd) on an input of ``input_shape``. ACLA's open-key
    walk is charged for every key (``acla::attend_open``'s formula); ``closed_key_flops`` says what closed keys save."""
    model = model.eval()
    x = torch.zeros(input_shape, device=next(model.parameters()).device)
    with torch.no_grad():
        return count_flops(lambda: model(x))


def closed_key_flops(model: torch.nn.Module, input_shape: tuple[int, ...], open_keys: dict[int, float]) -> int:
    """What ``inference_flops`` charges for keys the open-key walk skips, when each ACLA module (by block index) reads
    ``open_keys[block]`` keys per query on average: per closed key and query, its offsets and logit (2 C x 3), its
    four taps (2 x 4 C) and its softmax term (5), C the references' channels."""
    queries = input_shape[-2] * input_shape[-1]
    return sum(round(queries * (module.keys_per_query - open_keys[block]) * (14 * module.value.in_channels + 5))
               for block, module in gated_modules(model).items())
