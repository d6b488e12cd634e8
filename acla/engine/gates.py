"""What ACLA's gates do during training, and what moves them: the diagnostics the trainer logs at each validation.

Per ACLA module (named by the block it follows):

* open keys per query over the validation images, with the deterministic gates of inference (S6)-(S7): the mean,
  the standard deviation across queries, and the share of the queries that hold the most common count. A share
  of 1 means every query keeps the same number of keys: the number is not adaptive, whatever the mean.
* the gradient on the gate head W_m (S6) split into the part of the reconstruction loss (L1, through the
  straight-through gates) and the part of the key budget (S8), on the iteration's training batch: the L2 norm of
  each over W_m's weight and bias, and the mean of each over the gate biases. A positive bias gradient means a
  descent step lowers the biases, which closes keys; under Adam a small constant gradient moves a parameter as
  fast as a large one, so the signs matter as much as the norms.

The gradients take one more forward and two backward passes of the batch, with the random state saved before and
restored after, so the training run draws the same Gumbel noise and batches as without them.

``configure_gates`` and ``parameter_groups`` apply the training options of the gate head (the departures of
docs/method.md#departures: its initial bias, its own learning rate, the relaxed gates forward); their defaults are the
recipe (docs/method.md#recipe).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from acla.models.attention import SampledCrossLayerAttention


def sampled_modules(model: torch.nn.Module) -> dict[int, SampledCrossLayerAttention]:
    """Block index -> CLA/ACLA module (``SampledCrossLayerAttention``) of a ``RestorationNet``; empty without any."""
    attention = getattr(model, "attention", {})
    return {int(name): module for name, module in attention.items() if isinstance(module, SampledCrossLayerAttention)}


def gated_modules(model: torch.nn.Module) -> dict[int, SampledCrossLayerAttention]:
    """Block index -> ACLA module (the gated ones of ``sampled_modules``)."""
    return {block: module for block, module in sampled_modules(model).items() if module.adaptive}


def configure_gates(model: torch.nn.Module, gate_bias: float, straight_through: bool, key_budget: str = "linear",
                    budget_target: float = 0.5) -> None:
    """Start every gate head W_m (S6) at ``gate_bias`` (a constant: no random draw, so the other weights are those of
    any other bias), set whether training gates are hard 0/1 forward (straight-through, the recipe) or relaxed, and the
    form of the key budget (S8): ``linear`` (the recipe), ``target`` or ``lagrangian`` with its ``budget_target``."""
    for module in gated_modules(model).values():
        torch.nn.init.constant_(module.gate.bias, gate_bias)
        module.straight_through = straight_through
        module.budget_form, module.budget_target = key_budget, budget_target


class BudgetMultipliers:
    """lambda_1 and lambda_2 of the lagrangian key budget (S8): shared by every ACLA module of ``model`` and raised by
    their own Adam with ``maximize`` (gradient ascent on the budget term), so that they grow while a module's mean
    gate probability misses its target and the pair acts as Lagrange multipliers of mean = t (CoFiPruning's form,
    docs/method.md#key-budget-forms). They start at 0: the budget is free until the gap appears."""

    def __init__(self, model: torch.nn.Module, learning_rate: float) -> None:
        device = next(model.parameters()).device
        self.values = torch.zeros(2, device=device, requires_grad=True)
        self.optimizer = torch.optim.Adam([self.values], lr=learning_rate, maximize=True)
        for module in gated_modules(model).values():
            module.budget_multipliers = self.values

    def step(self) -> None:
        """After the step's backward: raise the multipliers along their gradient, the budget's gap (averaged over the
        ranks under torchrun, where they live outside the DDP model)."""
        if torch.distributed.is_available() and torch.distributed.is_initialized() and self.values.grad is not None:
            torch.distributed.all_reduce(self.values.grad)
            self.values.grad /= torch.distributed.get_world_size()
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)

    def state_dict(self) -> dict:
        return {"values": self.values.detach().clone(), "optimizer": self.optimizer.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        with torch.no_grad():
            self.values.copy_(state["values"])
        self.optimizer.load_state_dict(state["optimizer"])


def parameter_groups(model: torch.nn.Module, gate_learning_rate: float) -> list[dict]:
    """Adam's parameter groups: one group (the recipe) when ``gate_learning_rate`` is 0, else the gate heads W_m at
    ``gate_learning_rate`` and every other parameter at the optimiser's learning rate."""
    gates = [p for module in gated_modules(model).values() for p in module.gate.parameters()]
    if not gate_learning_rate or not gates:
        return [{"params": list(model.parameters())}]
    chosen = {id(p) for p in gates}
    return [{"params": [p for p in model.parameters() if id(p) not in chosen]},
            {"params": gates, "lr": gate_learning_rate}]


class OpenKeyTally:
    """Counts of queries by number of open keys, per ACLA module, summed over calls (the validation images)."""

    def __init__(self, modules: dict[int, SampledCrossLayerAttention]) -> None:
        self.modules = modules
        self.histograms = {index: torch.zeros(module.keys_per_query + 1, dtype=torch.float64)
                           for index, module in modules.items()}

    def add(self) -> None:
        """Count the open keys each module left behind in its last call (``open_key_counts``, (B, H, W))."""
        for index, module in self.modules.items():
            counts = module.open_key_counts.detach().flatten().long().cpu()
            self.histograms[index] += torch.bincount(counts, minlength=len(self.histograms[index])).double()

    def as_list(self) -> list[float]:
        return [value for histogram in self.histograms.values() for value in histogram.tolist()]

    def load_list(self, values: list[float]) -> None:
        """The histograms from ``as_list``'s layout (after a sum over the ranks of a distributed run)."""
        start = 0
        for index, histogram in self.histograms.items():
            self.histograms[index] = torch.tensor(values[start:start + len(histogram)], dtype=torch.float64)
            start += len(histogram)

    def statistics(self) -> dict[str, float]:
        """``gates/block<i>/open_mean``, ``open_std`` (across queries) and ``mode_share`` per module."""
        metrics = {}
        for index, histogram in self.histograms.items():
            total = float(histogram.sum())
            if total == 0:
                continue
            keys = torch.arange(len(histogram), dtype=torch.float64)
            mean = float((histogram * keys).sum()) / total
            variance = float((histogram * (keys - mean) ** 2).sum()) / total
            metrics[f"gates/block{index}/open_mean"] = mean
            metrics[f"gates/block{index}/open_std"] = variance ** 0.5
            metrics[f"gates/block{index}/mode_share"] = float(histogram.max()) / total
        return metrics


def adaptive(stats: dict[str, float], block: int, keys_per_query: int) -> bool:
    """Whether one ACLA module's gates adapt on a set of images (docs/method.md#departures): no open-key count holds
    more than 80 % of the queries, and the mean lies between 10 % and 90 % of its R K keys (a CLA module, without gate
    statistics, never is)."""
    share, mean = stats.get(f"gates/block{block}/mode_share"), stats.get(f"gates/block{block}/open_mean")
    return share is not None and share <= 0.8 and 0.1 * keys_per_query <= mean <= 0.9 * keys_per_query


def gate_gradients(model: torch.nn.Module, degraded: torch.Tensor, target: torch.Tensor, autocast) -> dict[str, float]:
    """The gradient on each ACLA module's gate head W_m from the L1 loss and from the key budget, separately, on one
    batch in training mode: ``gates/block<i>/{reconstruction,budget}_grad_norm`` and ``..._bias_grad``. The random
    state (Gumbel noise) is restored afterwards."""
    modules = gated_modules(model)
    if not modules:
        return {}
    state = torch.get_rng_state()
    cuda_state = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None
    try:
        with autocast:
            output = model(degraded)
            reconstruction = F.l1_loss(output.float(), target)
            budget = sum(module.budget_loss for module in modules.values())
        heads = [parameter for module in modules.values() for parameter in (module.gate.weight, module.gate.bias)]
        parts = {"reconstruction": torch.autograd.grad(reconstruction, heads, retain_graph=True, allow_unused=True)}
        parts["budget"] = (torch.autograd.grad(budget, heads, allow_unused=True) if budget.requires_grad
                           else [None] * len(heads))
    finally:
        torch.set_rng_state(state)
        if cuda_state is not None:
            torch.cuda.set_rng_state_all(cuda_state)
    metrics = {}
    for position, index in enumerate(modules):
        for part, gradients in parts.items():
            weight, bias = (torch.zeros_like(head) if gradient is None else gradient.float()
                            for head, gradient in zip(heads[2 * position:2 * position + 2],
                                                      gradients[2 * position:2 * position + 2]))
            metrics[f"gates/block{index}/{part}_grad_norm"] = float(torch.cat([weight.flatten(), bias]).norm())
            metrics[f"gates/block{index}/{part}_bias_grad"] = float(bias.mean())
    return metrics
