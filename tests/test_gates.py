"""The gate diagnostics of acla.engine.gates: open-key statistics and the split of the gate head's gradient."""

from __future__ import annotations

from contextlib import nullcontext

import pytest
import torch
import torch.nn.functional as F

from acla.engine.gates import OpenKeyTally, configure_gates, gate_gradients, gated_modules, parameter_groups
from acla.models import build_model


def tiny_acla(budget_weight: float = 1e-2) -> torch.nn.Module:
    torch.manual_seed(0)
    model = build_model("sr", "tiny", "acla", "four-stages", 2, num_keys=4, budget_weight=budget_weight)
    with torch.no_grad():  # a trained-looking module: offsets, logits and gates that depend on the query
        for module in gated_modules(model).values():
            for head in (module.offset, module.attention, module.output):
                head.weight.normal_(std=0.1)
            module.gate.weight.normal_(std=0.5)
            module.gate.bias.normal_(std=0.5)
    return model.train()


def test_the_open_key_statistics_of_a_known_histogram() -> None:
    model = tiny_acla()
    modules = gated_modules(model)
    first = next(iter(modules))
    tally = OpenKeyTally(modules)
    for module in modules.values():  # 6 queries with 1 open key, 2 with 3
        module.open_key_counts = torch.tensor([[1, 1, 1, 3], [1, 1, 1, 3]])
    tally.add()
    stats = tally.statistics()
    assert stats[f"gates/block{first}/open_mean"] == pytest.approx(1.5)
    assert stats[f"gates/block{first}/open_std"] == pytest.approx(0.75 ** 0.5)  # E[(k - 1.5)^2] = 0.75
    assert stats[f"gates/block{first}/mode_share"] == pytest.approx(0.75)
    tally.load_list([2 * value for value in tally.as_list()])  # as after a sum over two ranks
    assert tally.statistics() == stats


def test_the_gradient_split_adds_up_and_leaves_training_untouched() -> None:
    """Reconstruction + budget parts = the gradient of the training loss on the same Gumbel noise; the random state
    and the parameters' .grad are as before the call."""
    model = tiny_acla()
    degraded, target = torch.rand(2, 3, 12, 12), torch.rand(2, 3, 24, 24)
    torch.manual_seed(5)
    state = torch.get_rng_state()
    metrics = gate_gradients(model, degraded, target, nullcontext())
    assert torch.equal(torch.get_rng_state(), state)
    assert all(parameter.grad is None for parameter in model.parameters())

    modules = gated_modules(model)
    output = model(degraded)  # the same noise: the state gate_gradients restored
    loss = F.l1_loss(output, target) + sum(module.budget_loss for module in modules.values())
    heads = [p for module in modules.values() for p in (module.gate.weight, module.gate.bias)]
    total = torch.autograd.grad(loss, heads)
    for position, index in enumerate(modules):
        bias = total[2 * position + 1]
        split = metrics[f"gates/block{index}/reconstruction_bias_grad"] + metrics[f"gates/block{index}/budget_bias_grad"]
        assert split == pytest.approx(float(bias.mean()), rel=1e-4, abs=1e-9)
        assert metrics[f"gates/block{index}/budget_grad_norm"] > 0  # sigmoid' > 0: the budget always pushes
        assert metrics[f"gates/block{index}/budget_bias_grad"] > 0  # ... towards closing keys


def test_without_a_budget_only_the_reconstruction_moves_the_gates() -> None:
    metrics = gate_gradients(tiny_acla(budget_weight=0.0), torch.rand(1, 3, 12, 12), torch.rand(1, 3, 24, 24),
                             nullcontext())
    budget = [value for name, value in metrics.items() if name.endswith("budget_grad_norm")]
    reconstruction = [value for name, value in metrics.items() if name.endswith("reconstruction_grad_norm")]
    assert budget and all(value == 0 for value in budget)
    assert any(value > 0 for value in reconstruction)


def test_the_gate_options_set_the_bias_and_the_learning_rate_of_the_gate_head_only() -> None:
    model = tiny_acla()
    others = {name: p.detach().clone() for name, p in model.named_parameters() if ".gate." not in name}
    configure_gates(model, gate_bias=0.0, straight_through=False)
    modules = gated_modules(model)
    assert all(torch.equal(m.gate.bias, torch.zeros_like(m.gate.bias)) and not m.straight_through
               for m in modules.values())
    assert all(torch.equal(p, others[name]) for name, p in model.named_parameters() if name in others)
    assert len(parameter_groups(model, 0.0)) == 1  # the spec: one learning rate
    rest, gates = parameter_groups(model, 1e-4)
    assert gates["lr"] == 1e-4 and "lr" not in rest  # the optimiser's own for the rest
    heads = {id(p) for m in modules.values() for p in m.gate.parameters()}
    assert {id(p) for p in gates["params"]} == heads
    assert len(rest["params"]) + len(gates["params"]) == len(list(model.parameters()))


def test_relaxed_gates_forward_weigh_every_key_by_its_relaxed_gate() -> None:
    """straight_through=False: the training forward uses sigmoid((s + n) / tau) itself (no key removed, counts
    fractional) and the gradient is the relaxed gates' own; inference keeps the 0/1 gates."""
    model = tiny_acla()
    module = next(iter(gated_modules(model).values()))
    scores = torch.randn(1, 2, 2, module.keys_per_query, requires_grad=True)
    module.straight_through = False
    torch.manual_seed(3)
    relaxed = module.gate_values(scores)
    torch.manual_seed(3)
    assert torch.equal(relaxed, module.relaxed_gates(scores))
    assert ((relaxed > 0) & (relaxed < 1)).any()
    module.straight_through = True
    torch.manual_seed(3)
    hard = module.gate_values(scores)
    assert set(hard.detach().unique().tolist()) <= {0.0, 1.0}
    model.eval()
    module.straight_through = False
    assert set(module.gate_values(scores).detach().unique().tolist()) <= {0.0, 1.0}
    model.train()
    degraded = torch.rand(1, 3, 12, 12)
    assert not module.runs_fused_walk(degraded, [degraded])  # the C++ walk's training gates are 0/1
    output = model(degraded)
    counts = module.open_key_counts
    assert not torch.equal(counts, counts.round())  # a sum of relaxed gates
    output.mean().backward()
    assert module.gate.weight.grad is not None and module.gate.weight.grad.abs().sum() > 0
