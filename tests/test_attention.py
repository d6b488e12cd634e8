"""The attention family against direct implementations of the same maths (CPU, tiny, float64)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from conftest import skip_without_kernel

from acla.engine.efficiency import count_flops
from acla.models import attention, build_attention, build_model
from acla.models.attention import KEY_BUDGET_FORMS, SampledCrossLayerAttention, key_grid
from acla.ops import custom_ops, extension
from acla.ops import gather as gather_ops


def randomise(module: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Give every parameter (zero-initialised ones included) random values, so outputs are non-trivial."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in module.parameters():
            parameter.copy_(torch.randn(parameter.shape, generator=generator, dtype=parameter.dtype) * 0.3)
    return module


def maps(*shape: int, count: int = 1, seed: int = 1) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return [torch.randn(*shape, generator=generator, dtype=torch.float64) for _ in range(count)]


def conv1x1(conv: torch.nn.Conv2d, x: torch.Tensor) -> torch.Tensor:
    return torch.einsum("oc,bchw->bohw", conv.weight[:, :, 0, 0], x) + conv.bias.view(1, -1, 1, 1)


def test_cla_dense_equals_a_direct_einsum() -> None:
    module = randomise(build_attention("cla-dense", 6, 2).double())
    query, *refs = maps(2, 6, 4, 5, count=3)
    q = conv1x1(module.query, query).flatten(2)  # (B, d, N)
    values = [conv1x1(module.value, ref).flatten(2) for ref in refs]  # (B, Cv, N) each
    keys = [conv1x1(module.key, conv1x1(module.value, ref)).flatten(2) for ref in refs]
    logits = torch.einsum("bdq,bdk->bqk", q, torch.cat(keys, 2)) / math.sqrt(q.shape[1])  # (B, N, R*N)
    attended = torch.einsum("bqk,bck->bcq", logits.softmax(-1), torch.cat(values, 2))
    expected = conv1x1(module.output, attended.view(2, -1, 4, 5))
    assert torch.allclose(module(query, refs), expected, atol=1e-12)


def test_nonlocal_equals_a_direct_einsum() -> None:
    module = randomise(build_attention("nonlocal", 6, 0).double())
    (query,) = maps(1, 6, 3, 4)
    theta, phi, g = (conv1x1(conv, query).flatten(2) for conv in (module.theta, module.phi, module.g))
    attended = torch.einsum("bqk,bck->bcq", torch.einsum("bdq,bdk->bqk", theta, phi).softmax(-1), g)
    assert torch.allclose(module(query, []), conv1x1(module.output, attended.view(1, -1, 3, 4)), atol=1e-12)


def test_cla_on_integer_keys_equals_cla_dense_restricted_to_them() -> None:
    # A 3x3 map and K = 9 keys on the 3x3 grid with offsets frozen at zero: the centre query's keys are
    # exactly every position of each reference, i.e. cla-dense's key set.
    dense = randomise(build_attention("cla-dense", 5, 2).double())
    sampled = build_attention("cla", 5, 2, num_keys=9, logits="dot").double()
    for name in ("value", "query", "key", "output"):
        getattr(sampled, name).load_state_dict(getattr(dense, name).state_dict())
    assert not sampled.offset.weight.any() and not sampled.offset.bias.any()  # offsets frozen at zero
    query, *refs = maps(2, 5, 3, 3, count=3)
    assert torch.allclose(sampled(query, refs)[..., 1, 1], dense(query, refs)[..., 1, 1], atol=1e-12)

    # Every other query: its in-map keys plus keys outside the map, whose value is 0 (S2) and whose key is
    # W_k 0 + b_k = b_k ((S3) applies W_k to the sampled value).
    values = torch.stack([conv1x1(sampled.value, ref) for ref in refs], 1)  # (B, R, C, 3, 3)
    keys = torch.stack([conv1x1(sampled.key, conv1x1(sampled.value, ref)) for ref in refs], 1)
    q = conv1x1(sampled.query, query)
    key_bias = sampled.key.bias.view(1, 1, -1, 1, 1)
    padded_values, padded_keys = F.pad(values, (1, 1, 1, 1)), F.pad(keys - key_bias, (1, 1, 1, 1)) + key_bias
    out = torch.zeros(2, values.shape[2], 3, 3, dtype=torch.float64)
    for y in range(3):
        for x in range(3):
            window_values = padded_values[..., y : y + 3, x : x + 3].flatten(3).permute(0, 1, 3, 2).flatten(1, 2)
            window_keys = padded_keys[..., y : y + 3, x : x + 3].flatten(3).permute(0, 1, 3, 2).flatten(1, 2)
            weights = (torch.einsum("bd,bkd->bk", q[..., y, x], window_keys) / math.sqrt(q.shape[1])).softmax(-1)
            out[..., y, x] = torch.einsum("bk,bkc->bc", weights, window_values)
    assert torch.allclose(sampled(query, refs), conv1x1(sampled.output, out), atol=1e-12)


def test_bilinear_sampling_at_integer_positions_returns_the_feature() -> None:
    module = build_attention("cla", 4, 1, num_keys=9).double()
    (values,) = maps(2, 4, 5, 6)
    positions = module.sampling_positions(torch.zeros(2, 4, 5, 6, dtype=torch.float64))  # zero offsets at init
    sampled = module.sample(values, positions).permute(0, 3, 4, 5, 1, 2)  # (B, R, K, C, H, W)
    padded = F.pad(values, (1, 1, 1, 1))
    for k, (dx, dy) in enumerate(key_grid(9).long().tolist()):
        expected = padded[..., 1 + dy : 6 + dy, 1 + dx : 7 + dx]  # shifted copy, zeros outside
        assert torch.equal(sampled[:, 0, k], expected)


def test_offsets_move_the_sampled_key() -> None:
    module = build_attention("cla", 2, 1, num_keys=1).double()
    torch.nn.init.constant_(module.offset.bias, 0.0)
    with torch.no_grad():
        module.offset.bias.copy_(torch.tensor([1.0, 0.5]))  # dx = 1, dy = 0.5
    (values,) = maps(1, 2, 4, 4)
    sampled = module.sample(values, module.sampling_positions(torch.zeros(1, 2, 4, 4, dtype=torch.float64)))
    expected = 0.5 * (values[..., 0, 1] + values[..., 1, 1])  # query (0, 0) reads between rows 0 and 1 of column 1
    assert torch.allclose(sampled[0, 0, 0, 0, 0], expected[0], atol=1e-12)
    # and matches torch's grid_sample (align_corners=False, zero padding) at arbitrary positions
    with torch.no_grad():
        module.offset.weight.normal_(0, 2.0)
    query = maps(1, 2, 4, 4, seed=9)[0]
    positions = module.sampling_positions(query)[:, :, :, 0, 0]  # (B, H, W, 2) pixels
    normalised = torch.stack([(2 * positions[..., 0] + 1) / 4 - 1, (2 * positions[..., 1] + 1) / 4 - 1], -1)
    reference = F.grid_sample(values, normalised, mode="bilinear", padding_mode="zeros", align_corners=False)
    ours = module.sample(values, module.sampling_positions(query))[:, :, :, 0, 0].permute(0, 3, 1, 2)
    assert torch.allclose(ours, reference, atol=1e-12)


@pytest.mark.parametrize("attention", ["nonlocal", "cla-dense", "cla", "acla"])
def test_inserted_modules_start_as_the_identity(attention: str) -> None:
    torch.manual_seed(0)
    model = build_model("sr", "tiny", attention=attention, insert="every", scale=2)
    backbone = build_model("sr", "tiny", scale=2)
    backbone.load_state_dict({k: v for k, v in model.state_dict().items() if not k.startswith("attention.")})
    x = torch.rand(2, 3, 12, 10)
    model.train()
    assert torch.equal(model(x), backbone(x))


def test_predicted_logits_and_gates_are_one_interface() -> None:
    for name in ("cla", "acla"):
        for logits in ("predicted", "dot"):
            module = build_attention(name, 8, 3, num_keys=4, logits=logits)
            query, *refs = (t.float() for t in maps(2, 8, 6, 7, count=4))
            assert module(query, refs).shape == query.shape
            assert module.keys_per_query == 12 and 1 <= float(module.open_keys) <= 12
    with pytest.raises(ValueError, match="use logits='dot'"):
        build_attention("cla-dense", 8, 2, logits="predicted")
    with pytest.raises(ValueError, match="unknown attention 'transformer'"):
        build_attention("transformer", 8, 2)
    with pytest.raises(ValueError, match="num_keys must be a square"):
        build_attention("cla", 8, 2, num_keys=5)
    with pytest.raises(ValueError, match="expected 2 reference map"):
        build_attention("cla", 8, 2)(torch.zeros(1, 8, 4, 4), [torch.zeros(1, 8, 4, 4)])


def gated(seed: int = 0) -> SampledCrossLayerAttention:
    torch.manual_seed(seed)
    module = build_attention("acla", 8, 2, num_keys=9, gate_bias=0.0)
    torch.nn.init.normal_(module.gate.weight, std=1.0)
    return module


def test_gates_at_inference_are_exactly_binary_with_one_key_open() -> None:
    module = gated().eval()
    query = torch.randn(3, 8, 6, 6)
    gates = module.gates(query)
    assert set(gates.unique().tolist()) <= {0.0, 1.0}
    assert (gates.sum(1) >= 1).all()
    closed = torch.full_like(module.gate.bias, -50.0)
    with torch.no_grad():
        module.gate.bias.copy_(closed)
    gates = module.gates(query)
    assert (gates.sum(1) == 1).all()  # every score negative: only the strongest key stays open
    module(query, [torch.randn(3, 8, 6, 6), torch.randn(3, 8, 6, 6)])
    assert float(module.open_keys) == 1.0


def test_closed_keys_get_zero_weight_and_open_keys_renormalise() -> None:
    module = gated(1).eval().double()
    randomise(module.attention, 3), randomise(module.output, 4)
    query, *refs = maps(1, 8, 5, 5, count=3)
    gates = module.gates(query)
    out = module(query, refs)
    # the same module without gates, on the open keys only
    plain = build_attention("cla", 8, 2, num_keys=9).double()
    plain.load_state_dict({k: v for k, v in module.state_dict().items() if not k.startswith("gate.")})
    values = plain.value(torch.stack(refs, 1).flatten(0, 1))
    sampled = plain.sample(values, plain.sampling_positions(query)).flatten(3, 4)  # (B, H, W, R*K, C)
    logits = plain.attention(query).masked_fill(gates == 0, float("-inf"))  # (B, R*K, H, W)
    expected = plain.output(torch.einsum("bkhw,bhwkc->bchw", logits.softmax(1), sampled))
    assert torch.allclose(out, expected, atol=1e-12)


def test_training_gates_are_straight_through_and_reach_the_gate_logits() -> None:
    module = gated(2).train()
    randomise(module.output, 5)
    query, *refs = (t.float() for t in maps(2, 8, 5, 5, count=3))
    out = module(query, refs)
    assert set(module.gates(query).detach().unique().tolist()) <= {0.0, 1.0}
    (out.square().mean() + module.budget_loss).backward()
    assert module.gate.weight.grad is not None and module.gate.weight.grad.abs().sum() > 0


def test_a_higher_budget_weight_opens_fewer_keys() -> None:
    def open_keys_after_training(budget_weight: float) -> float:
        torch.manual_seed(0)
        module = build_attention("acla", 8, 2, num_keys=9, budget_weight=budget_weight)
        optimiser = torch.optim.Adam(module.parameters(), lr=0.02)
        generator = torch.Generator().manual_seed(1)
        for _ in range(60):
            query, ref_a, ref_b = (torch.randn(4, 8, 6, 6, generator=generator) for _ in range(3))
            target = 0.5 * ref_a  # a toy target the module can reach through its keys
            loss = F.mse_loss(query + module(query, [ref_a, ref_b]), query + target) + module.budget_loss
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
        module.eval()
        with torch.no_grad():
            module(*(lambda q, a, b: (q, [a, b]))(*(torch.randn(4, 8, 6, 6, generator=generator) for _ in range(3))))
        return float(module.open_keys)

    low, high = open_keys_after_training(0.0), open_keys_after_training(2.0)
    assert high < low - 2, f"open keys: budget 0 -> {low:.2f}, budget 2 -> {high:.2f}"


def test_the_open_target_pulls_on_the_keys_inference_opens_not_on_the_mean_probability() -> None:
    """(S8) with every gate probability near 0.75, inference opens every key: the target form at t = 0.75 is content,
    the open-target form pushes the gates closed; at a probability near 0.25 (one key per query) it pushes them open."""
    pushes = {}
    for bias in (1.1, -1.1):  # sigmoid 0.75 and 0.25
        for form in ("target", "open_target"):
            module = build_attention("acla", 8, 2, num_keys=9, budget_weight=1.0, gate_bias=bias).double().train()
            torch.nn.init.zeros_(module.gate.weight)  # every score equal to the bias
            module.budget_form, module.budget_target = form, 0.75 if bias > 0 else 0.25
            query, *refs = maps(1, 8, 5, 5, count=3)
            module(query, refs)
            module.budget_loss.backward()
            pushes[bias, form] = round(float(module.gate.bias.grad.sum()), 3)
    assert abs(pushes[1.1, "target"]) < 1e-2 and abs(pushes[-1.1, "target"]) < 1e-2
    assert pushes[1.1, "open_target"] > 1e-2 and pushes[-1.1, "open_target"] < -1e-2  # close, then open


@pytest.mark.parametrize("logits", ["predicted", "dot"])  # predicted: the fused walk where the kernel builds
def test_gradcheck_of_a_tiny_acla_in_float64(logits: str) -> None:
    torch.manual_seed(0)
    module = build_attention("acla", 3, 2, num_keys=4, logits=logits).double().eval()
    randomise(module, 7)
    with torch.no_grad():  # keep sampling positions away from pixel boundaries (bilinear kinks)
        module.offset.bias.add_(0.25)
    query, *refs = (t.requires_grad_() for t in maps(1, 3, 3, 4, count=3, seed=4))
    assert torch.autograd.gradcheck(lambda q, a, b: module(q, [a, b]), (query, *refs), atol=1e-6)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_runs_in_reduced_precision(dtype: torch.dtype) -> None:
    query, *refs = (t.to(dtype) for t in maps(1, 8, 6, 6, count=3))
    gated_module = randomise(build_attention("acla", 8, 2, num_keys=9)).to(dtype).eval()
    assert gated_module(query, refs).dtype == dtype
    # accuracy on the ungated module (a gate score near 0 may flip between precisions)
    module = randomise(build_attention("cla", 8, 2, num_keys=9)).to(dtype).eval()
    reference = randomise(build_attention("cla", 8, 2, num_keys=9)).double().eval()
    out, expected = module(query, refs), reference(*(lambda q, r: (q.double(), [x.double() for x in r]))(query, refs))
    assert out.dtype == dtype
    tolerance = {torch.float32: 1e-4, torch.bfloat16: 0.15, torch.float16: 0.03}[dtype]
    assert (out.double() - expected).abs().max() <= tolerance * expected.abs().max()


def outputs_and_gradients(module: torch.nn.Module, inputs: list[torch.Tensor], seed: int = 5) -> list[torch.Tensor]:
    """The output of ``module(query, refs)`` and the gradients of a fixed linear loss w.r.t. inputs and parameters."""
    for tensor in [*inputs, *module.parameters()]:
        tensor.grad = None
    torch.manual_seed(seed)  # the same Gumbel noise for every call (training gates)
    out = module(inputs[0], inputs[1:])
    (out * torch.linspace(-1, 1, out.numel(), dtype=out.dtype).view_as(out)).sum().backward()
    return [out.detach()] + [torch.zeros_like(t) if t.grad is None else t.grad for t in [*inputs, *module.parameters()]]


@pytest.fixture(params=["kernel", "torch"])
def gather(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """The fast path's gather: the C++ kernel (skipped where it cannot be built) or its pure-torch fallback."""
    if request.param == "torch":
        monkeypatch.setattr(extension, "load", lambda: None)
    else:
        skip_without_kernel()
    return request.param


@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("logits", ["predicted", "dot"])
@pytest.mark.parametrize("name", ["cla", "acla"])
def test_fast_path_equals_the_reference_path(name: str, logits: str, training: bool, gather: str) -> None:
    module = randomise(build_attention(name, 16, 3, num_keys=9, logits=logits, gate_bias=0.0).double(), 11)
    with torch.no_grad():  # large offsets: keys off the grid, between pixels and outside the map
        module.offset.weight.mul_(6.0)
    module.train(training)
    inputs = [t.requires_grad_() for t in maps(2, 16, 5, 7, count=4, seed=12)]  # 16 channels: the unrolled kernel
    fast = outputs_and_gradients(module, inputs)
    module.fast = False
    reference = outputs_and_gradients(module, inputs)
    assert len(fast) == len(reference) > 5
    for ours, expected in zip(fast, reference):
        assert torch.allclose(ours, expected, rtol=0, atol=1e-12)


@pytest.mark.parametrize("form", KEY_BUDGET_FORMS)
def test_every_key_budget_forms_gradient_equals_the_reference_paths(form: str, gather: str) -> None:
    """(S8) each form of the key budget, added to a loss of the output: the fast path (the fused walk, whose backward
    takes the budget's incoming gradient, or torch's ops) gives the reference path's gradients, and the budget loss
    is the form's formula of the mean gate probability."""
    module = randomise(build_attention("acla", 16, 3, num_keys=9, budget_weight=0.3, gate_bias=0.0).double(), 13)
    module.budget_form, module.budget_target = form, 0.25
    multipliers = torch.tensor([0.2, 0.5], dtype=torch.float64)  # lambda_1, lambda_2 of the lagrangian form
    module.budget_multipliers = multipliers
    module.train()
    inputs = [t.requires_grad_() for t in maps(2, 16, 5, 7, count=4, seed=14)]

    def gradients() -> tuple[torch.Tensor, list[torch.Tensor]]:
        for tensor in [*inputs, *module.parameters()]:
            tensor.grad = None
        torch.manual_seed(6)  # the same gate noise on both paths
        out = module(inputs[0], inputs[1:])
        budget = module.budget_loss
        scores = module.gate(inputs[0].detach()).permute(0, 2, 3, 1)
        probability = torch.sigmoid(scores).mean()
        gap = probability - 0.25
        opened = ((scores > 0) | (scores == scores.amax(dim=-1, keepdim=True))).double().mean()  # (S6), (S7)
        expected = {"linear": 0.3 * probability, "target": 0.3 * gap ** 2, "open_target": 0.3 * (opened - 0.25) ** 2,
                    "lagrangian": multipliers[0] * gap + multipliers[1] * gap ** 2}[form]
        assert torch.allclose(budget.detach(), expected.detach(), rtol=0, atol=1e-12)
        (out.sum() * 1e-3 + budget).backward()
        return budget.detach(), [torch.zeros_like(t) if t.grad is None else t.grad for t in [*inputs, *module.parameters()]]

    fast_budget, fast = gradients()
    module.fast = False
    reference_budget, reference = gradients()
    assert torch.equal(fast_budget, reference_budget) or torch.allclose(fast_budget, reference_budget, atol=1e-14)
    assert module.gate.weight.grad.abs().sum() > 0
    for ours, expected in zip(fast, reference):
        assert torch.allclose(ours, expected, rtol=0, atol=1e-12)


def test_the_target_forms_gradient_changes_sign_at_the_target() -> None:
    """(S8) target form: below t the budget pushes the gates open, above t closed (the linear form always closes)."""
    signs = {}
    for bias in (-3.0, 3.0):  # mean gate probability ~0.05 and ~0.95
        module = build_attention("acla", 8, 2, num_keys=9, budget_weight=1.0, gate_bias=bias).double().train()
        module.budget_form, module.budget_target = "target", 0.5
        query, *refs = maps(1, 8, 5, 5, count=3)
        module(query, refs)
        module.budget_loss.backward()
        signs[bias] = float(module.gate.bias.grad.sum().sign())
    assert signs == {-3.0: -1.0, 3.0: 1.0}  # gradient descent raises low gates and lowers high ones


@pytest.mark.parametrize("logits", ["predicted", "dot"])  # predicted: the fused walk where the kernel builds
@pytest.mark.parametrize("layout", [torch.contiguous_format, torch.channels_last])
def test_the_residual_comes_in_the_query_layout(layout: torch.memory_format, logits: str, gather: str) -> None:
    # the block adds the residual to the query: one layout for both keeps that add a plain elementwise pass
    module = randomise(build_attention("acla", 8, 2, num_keys=9, logits=logits)).train()
    query, *refs = (t.float().contiguous(memory_format=layout) for t in maps(2, 8, 5, 6, count=3))
    assert module(query, refs).is_contiguous(memory_format=layout)
    module.eval()
    with torch.no_grad():
        assert module(query, refs).is_contiguous(memory_format=layout)


def test_the_cuda_training_aggregate_by_grid_sample_equals_the_reference_ops() -> None:
    # grid_sample_aggregate is what CUDA trains with; it is plain torch, so its maths is checked here on CPU
    generator = torch.Generator().manual_seed(16)
    batch, height, width, refs, keys = 2, 5, 6, 2, 9
    values = torch.randn(batch * refs, 3, height, width, generator=generator, dtype=torch.float64)
    ys, xs = torch.meshgrid(torch.arange(height), torch.arange(width), indexing="ij")
    base = torch.stack([xs, ys], -1).double().view(1, height, width, 1, 1, 2) + key_grid(keys).double().view(
        1, 1, 1, 1, keys, 2)
    base = base.expand(batch, height, width, refs, keys, 2)
    offsets = torch.randn(batch, height, width, refs, keys, 2, generator=generator, dtype=torch.float64) * 2
    weights = torch.randn(batch, height, width, refs * keys, generator=generator, dtype=torch.float64).softmax(-1)
    weights = weights.view(batch, height, width, refs, keys)
    # integer positions (exact samples) and keys beyond every border (zero padding) in the forward
    for positions in (base, base + offsets, base + 4 * offsets):
        expected = gather_ops.aggregate_keys(values, positions, weights)
        assert torch.allclose(gather_ops.grid_sample_aggregate(values, positions, weights), expected, atol=1e-12)
    inputs = (values.requires_grad_(), (base + offsets).requires_grad_(), weights.requires_grad_())
    ours = torch.autograd.grad(gather_ops.grid_sample_aggregate(*inputs).square().sum(), inputs)
    reference = torch.autograd.grad(gather_ops.aggregate_keys(*inputs).square().sum(), inputs)
    for got, expected in zip(ours, reference):
        assert torch.allclose(got, expected, atol=1e-12)
    small = [t.detach()[:, :3, :3].contiguous().requires_grad_() if t.dim() > 4 else t for t in inputs[1:]]
    assert torch.autograd.gradcheck(gather_ops.grid_sample_aggregate,
                                    (values[:, :, :3, :3].detach().requires_grad_(), *small))


def test_closed_keys_are_never_read(gather: str) -> None:
    # A closed key's position is NaN: reading it anywhere would make the output NaN.
    generator = torch.Generator().manual_seed(15)
    batch, height, width, refs, keys = 2, 5, 6, 3, 4
    values = torch.randn(batch * refs, 7, height, width, generator=generator, dtype=torch.float64)
    positions = torch.rand(batch, height, width, refs, keys, 2, generator=generator, dtype=torch.float64) * 8 - 1
    open_keys = torch.rand(batch, height, width, refs, keys, generator=generator) < 0.5
    open_keys[..., 0, 0] = True  # every query has an open key
    weights = torch.rand(batch, height, width, refs, keys, generator=generator, dtype=torch.float64) * open_keys
    poisoned = positions.masked_fill(~open_keys.unsqueeze(-1), float("nan"))
    expected = gather_ops.aggregate_keys(values, positions, weights)  # dense reference: closed keys weighted 0
    with torch.no_grad():
        assert torch.allclose(gather_ops.bilinear_gather(values, poisoned, weights, open_keys), expected, atol=1e-12)
        samples = gather_ops.bilinear_gather(values, poisoned, open_keys=open_keys)  # (P, C) where packed
        if gather == "torch":
            dense = gather_ops.bilinear_gather(values, positions)  # (B, H, W, R, K, C)
            assert torch.allclose(samples, dense[open_keys], atol=1e-12)


def test_the_kernel_op_passes_opcheck() -> None:
    # schema, fake (meta) implementation, autograd registration and AOT dispatch of the custom op
    skip_without_kernel()
    generator = torch.Generator().manual_seed(16)
    positions = (torch.rand(1, 3, 4, 2, 4, 2, generator=generator, dtype=torch.float64) * 5 - 1).requires_grad_()
    weights = torch.rand(1, 3, 4, 2, 4, generator=generator, dtype=torch.float64).requires_grad_()
    maps = [torch.randn(1, 3, 4, 5, generator=generator, dtype=torch.float64).requires_grad_() for _ in range(2)]
    torch.library.opcheck(custom_ops.kernel_gather, (positions, weights, maps))  # weighted sums
    torch.library.opcheck(custom_ops.kernel_gather, (positions, weights.new_empty(0), maps))  # one sample per key
    grid = attention.key_grid(4).double()
    empty = torch.empty(0, dtype=torch.float64)
    for gated in (False, True):  # the fused walk: CLA's heads, ACLA's, with and without relaxed training gates
        heads = torch.randn(1, 3, 4, (4 if gated else 3) * 2 * 4, generator=generator, dtype=torch.float64)
        probability = torch.sigmoid(heads[..., -8:]) if gated else empty
        relaxed = [empty] + ([torch.rand(1, 3, 4, 2 * 4, generator=generator, dtype=torch.float64)] if gated else [])
        for gates in relaxed:
            torch.library.opcheck(custom_ops.kernel_attend, (maps, heads.requires_grad_(), gates, probability, grid,
                                                            gated, torch.tensor(0.5, dtype=torch.float64)))
    # ACLA's inference walk, which projects the open keys' offsets and logits itself (no autograd)
    rows, scores = (torch.randn(1, 3, 4, c, generator=generator, dtype=torch.float64) for c in (5, 8))
    weights = [torch.randn(c, 5, generator=generator, dtype=torch.float64) for c in (16, 8)]
    torch.library.opcheck(custom_ops.kernel_attend_open, ([m.detach() for m in maps], rows, scores, weights[0],
                                                         torch.randn(16, dtype=torch.float64), weights[1],
                                                         torch.randn(8, dtype=torch.float64), grid))


@pytest.mark.parametrize("relaxed", [False, True])
def test_the_kernels_key_budget_gradient_is_torchs_bit_for_bit(relaxed: bool) -> None:
    # The fused walk's backward writes the gate scores' gradient itself, in the order torch's mean and sigmoid
    # backward round (no fused multiply-add): float32 training then matches the torch graph it replaced exactly. With
    # the sums' gradient zero, the relaxed gates' part is zero and the key budget's is left.
    skip_without_kernel()
    generator = torch.Generator().manual_seed(19)
    keys = 2 * 9
    maps_ = [torch.randn(2, 5, 6, 16, generator=generator) for _ in range(2)]
    heads = (torch.randn(2, 5, 6, 4 * keys, generator=generator) * 3).requires_grad_()
    scores = heads.detach()[..., -keys:]
    probability = attention.gate_probabilities(scores)
    gates = torch.rand(2, 5, 6, keys, generator=generator) if relaxed else heads.new_empty(0)
    *_, budget = custom_ops.kernel_attend(maps_, heads, gates, probability, attention.key_grid(9), True,
                                         torch.tensor(0.5))
    (budget * 0.37).backward()
    # the graph the module ran before: autograd through the sigmoid of the heads' last columns (a strided slice: torch's
    # sigmoid rounds a few values differently on contiguous input)
    leaf = heads.detach().clone().requires_grad_()
    (torch.sigmoid(leaf[..., -keys:]).mean() * 0.37).backward()
    assert torch.equal(heads.grad[..., -keys:], leaf.grad[..., -keys:])
    assert not heads.grad[..., :-keys].any()  # the sums' gradient was zero


@pytest.mark.parametrize("kernel", [True, False], ids=["fused-walk", "pure-torch"])
def test_compiled_acla_training_does_not_recompile_as_the_temperature_anneals(
        kernel: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    # The trainer sets a new tau every iteration: the compiled step must take it as an input, not as a constant.
    # kernel: the CPU fused walk; otherwise the fast path's torch ops (CUDA, and machines without a compiler).
    if kernel:
        skip_without_kernel()
    if not kernel:
        monkeypatch.setattr(extension, "load", lambda: None)
    from torch._dynamo.utils import counters, guard_failures
    from torch._inductor import config as inductor_config

    torch._dynamo.reset()
    counters.clear()
    guard_failures.clear()
    module = randomise(build_attention("acla", 8, 2, num_keys=4, gate_bias=0.0), 21).train()  # gates that matter
    query, *refs = (t.float().requires_grad_() for t in maps(1, 8, 6, 7, count=3, seed=20))
    compiled = torch.compile(module, fullgraph=True)

    def step(temperature: float, forward) -> list[torch.Tensor]:
        module.temperature = temperature
        module.zero_grad(set_to_none=True)
        torch.manual_seed(5)  # the same gate noise for the compiled and the eager call
        (forward(query, refs).sum() + module.budget_loss).backward()
        return [parameter.grad.clone() for parameter in module.parameters()]

    with inductor_config.patch(fallback_random=True):  # the compiled graph draws the noise as eager does
        step(1.0, compiled)
        graphs = counters["stats"]["unique_graphs"]
        for temperature in (0.9, 0.8, 0.7, 0.6):
            step(temperature, compiled)
        # tau is a buffer the trainer fills in place: a tensor input of the graph, so no new value may fail a guard
        # or add a graph. (As a float attribute it recompiled once, and a full CI run once saw dynamo specialise on
        # it, guard ``self.temperature == 0.9`` from inductor's tensorify pass, and recompile at every value.)
        reasons = [reason for found in guard_failures.values() for reason in found]
        assert not reasons and counters["stats"]["unique_graphs"] == graphs, reasons
        assert module.temperature == 0.6 and module.tau.dtype == torch.float64
        # ...and read at every call, not frozen: tau reaches the gradients only (the gates are exactly 0/1 forward),
        # which differ between tau 1 and 0.3 (eager) and agree between compiled and eager at 0.3
        eager = step(0.3, module)
        at_one = step(1.0, module)
        assert not all(torch.allclose(a, b, rtol=1e-4, atol=1e-6) for a, b in zip(at_one, eager, strict=True))
        for compiled_grad, eager_grad in zip(step(0.3, compiled), eager, strict=True):
            assert torch.allclose(compiled_grad, eager_grad, rtol=1e-4, atol=1e-6)


def test_compiled_acla_inference_keeps_the_fused_walk_and_its_numbers() -> None:
    skip_without_kernel()
    module = randomise(build_attention("acla", 16, 2, num_keys=9, gate_bias=0.0), 17).eval()
    query, *refs = (t.float() for t in maps(1, 16, 6, 7, count=3, seed=18))
    with torch.no_grad():
        assert module.runs_fused_walk(query, refs)
        eager = module(query, refs)
        compiled = torch.compile(module, fullgraph=True)(query, refs)
    assert torch.allclose(compiled, eager, atol=1e-5)


# dot logits at inference are left out: the packed open-key bags take their dot products elementwise (uncounted)
@pytest.mark.parametrize(("logits", "training"), [("predicted", True), ("predicted", False), ("dot", True)])
@pytest.mark.parametrize("name", ["cla", "acla"])
def test_the_fast_path_counts_the_flops_of_the_reference_path(name: str, logits: str, training: bool,
                                                              gather: str) -> None:
    channels, refs, queries = 8, 2, 2 * 6 * 7
    module = build_attention(name, channels, refs, num_keys=9, logits=logits, gate_bias=5.0).train(training)
    query, *references = (t.float() for t in maps(2, channels, 6, 7, count=refs + 1))
    with torch.no_grad():
        fast = count_flops(lambda: module(query, references))
        fused = module.runs_fused_walk(query, references)
        module.fast = False
        reference = count_flops(lambda: module(query, references))
    assert fused == (logits == "predicted" and gather == "kernel")
    # the gathers count alike (4 taps per key, closed ones included). The fused walk drops the R value projections;
    # W_z (C x C) becomes W_z W_v (C x (C + 1)) on the sum, and W_z W_v is formed once per call (W_z b_v too, a
    # matrix-vector product torch's counter does not count). Its softmax counts 5 per key, as CLA's ``_softmax``
    # does on the reference path; ACLA's reference softmax is elementwise ops that the counter does not count.
    folded = -2 * queries * refs * channels**2 + 2 * queries * channels + 2 * channels**3
    uncounted_softmax = 5 * queries * refs * 9 if name == "acla" else 0
    assert fast - reference == (folded + uncounted_softmax if fused else 0)
    assert reference > 0


@pytest.mark.parametrize("gate_bias", [0.0, -3.0])  # about half the keys open; a few, or none but the best
@pytest.mark.parametrize("channels", [6, 16])  # the kernel's generic loop and its unrolled one
@pytest.mark.parametrize("logits", ["predicted", "dot"])
def test_acla_inference_on_open_keys_equals_the_dense_masked_result(logits: str, gather: str, channels: int,
                                                                    gate_bias: float) -> None:
    module = randomise(build_attention("acla", channels, 3, num_keys=9, logits=logits, gate_bias=0.0).double(), 13).eval()
    with torch.no_grad():
        module.gate.bias.add_(gate_bias)
    with torch.no_grad():
        module.offset.weight.mul_(6.0)  # keys off the grid, between pixels and outside the map
    query, *refs = maps(2, channels, 5, 7, count=4, seed=14)
    with torch.no_grad():
        assert module.skips_closed_keys()
        # predicted logits with the kernel: the one-walk inference kernel, W_v folded into W_z
        assert module.runs_fused_walk(query, refs) == (logits == "predicted" and gather == "kernel")
        skipping = module(query, refs)
        counts, budget = module.open_key_counts.clone(), module.key_budget.clone()
        if module.runs_fused_walk(query, refs):  # the walk under torch.compile: every key's offsets and logits
            with pytest.MonkeyPatch.context() as patched:
                patched.setattr(SampledCrossLayerAttention, "skips_closed_keys", lambda self: False)
                dense_heads = module(query, refs)
        module.fast = False
        dense = module(query, refs)  # the reference: every key gathered, closed ones weighted 0
    if module.runs_fused_walk(query, refs):
        assert torch.allclose(dense_heads, dense, rtol=0, atol=1e-12)
    if gate_bias == 0:
        assert 0.2 < float(counts.mean()) / 27 < 0.8
    else:  # the kernel's few-open-keys walk, and queries whose gates all shut (the best-scored key alone opens)
        assert float(counts.max()) <= 27 / 4 and float(counts.min()) == 1
    assert torch.allclose(skipping, dense, rtol=0, atol=1e-12)
    assert torch.equal(counts, module.open_key_counts.to(counts.dtype))
    assert torch.allclose(budget.double(), module.key_budget.double(), atol=1e-7)


def test_the_key_budget_is_the_last_calls_at_inference_and_in_training(gather: str) -> None:
    """(S8) the key budget is the last call's: an inference call's (the open-key walk computes it beside the walk), and
    a training call's after it, with its gradient."""
    module = randomise(build_attention("acla", 8, 2, num_keys=9).double(), 3)
    (first, *refs), (second, *more) = maps(2, 8, 5, 7, count=3, seed=4), maps(2, 8, 5, 7, count=3, seed=5)

    def expected(query: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(module.gate(query)).mean()

    module.eval()
    with torch.no_grad():
        module(second, more)
        module(first, refs)
        assert torch.allclose(module.key_budget, expected(first), rtol=0, atol=1e-12)
        module(first, refs)
    module.train()
    module(second, more)
    assert module.key_budget.requires_grad
    assert torch.allclose(module.key_budget, expected(second), rtol=0, atol=1e-12)
    assert not torch.allclose(expected(first), expected(second))  # the two calls' budgets tell apart


@pytest.mark.parametrize("logits", ["predicted", "dot"])
def test_gradcheck_of_the_fast_gather(logits: str, gather: str) -> None:
    module = build_attention("cla", 3, 2, num_keys=4, logits=logits).double()
    randomise(module, 8)
    with torch.no_grad():
        module.offset.bias.add_(0.25)  # away from pixel boundaries (bilinear kinks)
    assert module.fast
    query, *refs = (t.requires_grad_() for t in maps(1, 3, 3, 4, count=3, seed=6))
    assert torch.autograd.gradcheck(lambda q, a, b: module(q, [a, b]), (query, *refs), atol=1e-6)


DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA"))]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("name", ["nonlocal", "cla-dense", "cla", "acla"])
def test_the_family_compiles_fullgraph(name: str, device: str) -> None:
    # ACLA in eval mode: compiled code draws other Gumbel noise (its training graph is compiled in the next test)
    module = randomise(build_attention(name, 4, 2, num_keys=4)).to(device).train(name != "acla")
    inputs = [t.float().to(device).requires_grad_() for t in maps(1, 4, 5, 5, count=3)]
    eager = outputs_and_gradients(module, inputs)
    compiled = outputs_and_gradients(torch.compile(module, fullgraph=True), inputs)
    for ours, expected in zip(compiled, eager):
        assert torch.allclose(ours, expected, atol=1e-4)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("task", ["sr", "denoise"])
def test_the_backbones_compile_fullgraph(task: str, device: str) -> None:
    torch.manual_seed(0)
    model = build_model(task, "tiny", attention="acla", insert="four-stages", scale=2 if task == "sr" else 1,
                        num_blocks=4, channels=8).to(device).train()
    # aot_eager: one graph, forward and backward traced by AOTAutograd as inductor gets them, without its
    # minutes of C++ code generation (the family test above runs inductor itself)
    compiled = torch.compile(model, fullgraph=True, backend="aot_eager")
    x = torch.rand(2, 3, 8, 8, device=device)
    torch.manual_seed(1)
    compiled(x).abs().mean().backward()
    assert all(p.grad is not None for p in model.parameters())
    model.eval()
    with torch.no_grad():
        assert torch.allclose(compiled(x), model(x), atol=1e-5)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device (checked when a GPU is lent)")
def test_cpu_and_gpu_agree() -> None:
    module = randomise(build_attention("acla", 8, 2, num_keys=9)).eval()
    query, *refs = (t.float() for t in maps(2, 8, 16, 16, count=3))
    on_gpu = module.cuda()(query.cuda(), [r.cuda() for r in refs]).cpu()
    assert torch.allclose(module.cpu()(query, refs), on_gpu, atol=1e-4)


def test_search_costs_do_not_depend_on_the_kernel(monkeypatch: pytest.MonkeyPatch) -> None:
    # (S9) costs are the modules' maths: a machine without a compiler must search with the same costs
    from acla.engine.search import module_costs

    model = build_model("sr", "tiny", attention="acla", insert="every", scale=2, num_blocks=4, channels=8).train()
    with_kernel = module_costs(model, (6, 6))
    monkeypatch.setattr(extension, "load", lambda: None)
    assert module_costs(model, (6, 6)) == with_kernel
    assert all(module.fast for module in model.attention_modules())  # restored


def bilinear_at(value_map: torch.Tensor, x: float, y: float) -> torch.Tensor:
    """Bilinear sample of one (c, H, W) map at pixel (x, y), written out by hand: zero outside the map (S2)."""
    height, width = value_map.shape[-2:]
    x0, y0 = math.floor(x), math.floor(y)
    sample = value_map.new_zeros(value_map.shape[0])
    for dy in (0, 1):
        for dx in (0, 1):
            xi, yi = x0 + dx, y0 + dy
            if 0 <= xi < width and 0 <= yi < height:
                weight = (1 - abs(x - xi)) * (1 - abs(y - yi))
                sample = sample + weight * value_map[:, yi, xi]
    return sample


def per_key_attention(module: SampledCrossLayerAttention, query: torch.Tensor,
                      refs: list[torch.Tensor]) -> torch.Tensor:
    """(S1)-(S7) from shared/paper/spec.md alone, one query and one key at a time, deterministic gates (eval)."""
    batch, _, height, width = query.shape
    refs_count, keys = module.num_refs, module.num_keys
    offsets = conv1x1(module.offset, query)  # (S1)
    values = [conv1x1(module.value, ref) for ref in refs]  # (S2) V^r = W_v F^r, sampled below
    grid = key_grid(keys, 1.0).double()
    summed = query.new_zeros(batch, values[0].shape[1], height, width)
    for b in range(batch):
        for y in range(height):
            for x in range(width):
                sampled = []
                for r in range(refs_count):
                    for k in range(keys):
                        m = r * keys + k
                        kx = x + grid[k, 0] + offsets[b, 2 * m, y, x]
                        ky = y + grid[k, 1] + offsets[b, 2 * m + 1, y, x]
                        sampled.append(bilinear_at(values[r][b], float(kx), float(ky)))
                sampled = torch.stack(sampled)  # (R*K, Cv): v_{r,k}(p)
                if module.logit_form == "predicted":  # (S3) e = W_a F^l
                    logits = conv1x1(module.attention, query)[b, :, y, x]
                else:  # (S3) e = <W_q F^l(p), W_k v_{r,k}(p)> / sqrt(d): W_k on the sampled key
                    q = module.query.weight[:, :, 0, 0] @ query[b, :, y, x] + module.query.bias
                    sampled_keys = sampled @ module.key.weight[:, :, 0, 0].T + module.key.bias
                    logits = sampled_keys @ q / math.sqrt(q.numel())
                if module.adaptive:  # (S6) s > 0 at inference; (S7) the best-scored key always open
                    scores = conv1x1(module.gate, query)[b, :, y, x]
                    open_keys = scores > 0
                    open_keys[scores.argmax()] = True
                    logits = logits.masked_fill(~open_keys, float("-inf"))
                weights = logits.softmax(0)  # (S4) over the (open) keys, (S7)
                summed[b, :, y, x] = weights @ sampled  # (S5) sum_{r,k} a v
    return conv1x1(module.output, summed)  # (S5) W_z


@pytest.mark.parametrize("logits", ["predicted", "dot"])
@pytest.mark.parametrize("name", ["cla", "acla"])
def test_the_module_equals_the_specification_computed_key_by_key(name: str, logits: str, gather: str) -> None:
    """Keys partly off the map included: there the dot logits take W_k's bias whole, as (S3) applies W_k to the
    sampled key (applied to the map before sampling, the bias would shrink with the key's in-map weight)."""
    module = randomise(build_attention(name, 4, 2, num_keys=4, logits=logits, gate_bias=0.0).double().eval(), 21)
    with torch.no_grad():
        module.offset.weight.mul_(4.0)  # keys a few pixels away: many partly or wholly outside a 5 x 6 map
        if logits == "dot":
            module.key.bias.mul_(10.0)  # the bias that (S3) applies to every sampled key
    query, *refs = maps(1, 4, 5, 6, count=3, seed=22)
    expected = per_key_attention(module, query, refs)
    for grad in (False, True):  # no_grad: closed keys skipped; with autograd: every key gathered, masked
        with torch.set_grad_enabled(grad):
            assert torch.allclose(module(query, refs), expected, rtol=0, atol=1e-12), f"grad enabled: {grad}"
    module.fast = False
    assert torch.allclose(module(query, refs), expected, rtol=0, atol=1e-12)
