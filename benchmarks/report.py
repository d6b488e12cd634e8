"""Render ``reports/benchmarks/README.md`` from the CSVs the benchmarks wrote (no number typed by hand)."""

from __future__ import annotations

import json

import pandas as pd

from acla.files import atomic_write_text
from benchmarks.common import RESULTS


def _table(frame: pd.DataFrame, columns: list[str], formats: dict[str, str]) -> str:
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for row in frame[columns].itertuples(index=False):
        cells = [formats.get(column, "{}").format(value) for column, value in zip(columns, row)]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _times(factor: float) -> str:
    """A speed-up to two significant figures at most: 295, 2.7."""
    return f"{factor:.0f}" if factor >= 10 else f"{factor:.1f}"


def attention_section(frame: pd.DataFrame) -> str:
    device = frame["device"].iloc[0]
    largest = frame["size"].max()
    at = frame[frame["size"] == largest].set_index("variant")
    acla = frame[frame.variant == "acla"].set_index("size")
    smallest_linear = sorted(acla.index)[len(acla) // 2]
    growth = acla.loc[largest, "peak_mib"] / acla.loc[smallest_linear, "peak_mib"]
    position_ratio = (largest / smallest_linear) ** 2
    pivot_time = frame.pivot(index="size", columns="variant", values="seconds").reset_index()
    pivot_memory = frame.pivot(index="size", columns="variant", values="peak_mib").reset_index()
    seconds = {column: "{:.4f}" for column in pivot_time.columns if column != "size"}
    mib = {column: "{:.1f}" for column in pivot_memory.columns if column != "size"}
    return f"""## (a) Attention cost against feature size ({device})

`python -m benchmarks.bench_attention` — forward + backward of one module, C = {frame['channels'].iloc[0]},
R = {frame['refs'].iloc[0]} references, K = {frame['keys'].iloc[0]} keys; peak memory of tensors made during the step.
Figure: `attention_cost_{'cpu' if 'cpu' in device else 'cuda'}.png`.

- At {largest}x{largest}: `acla` is **{_times(at.loc['cla-dense', 'seconds'] / at.loc['acla', 'seconds'])}x**
  faster than `cla-dense` with the same references ({at.loc['acla', 'seconds']:.3f} s vs {at.loc['cla-dense', 'seconds']:.2f} s) and
  {_times(at.loc['nonlocal', 'seconds'] / at.loc['acla', 'seconds'])}x faster than `nonlocal`; memory
  {at.loc['acla', 'peak_mib']:.0f} MiB vs {at.loc['cla-dense', 'peak_mib']:.0f} MiB.
- `acla` memory from {smallest_linear}x{smallest_linear} to {largest}x{largest}: x{growth:.2f} for x{position_ratio:.1f}
  positions (linear in H*W); `cla-dense`: x{frame[(frame.variant == 'cla-dense') & (frame['size'] == largest)]['peak_mib'].iloc[0] / frame[(frame.variant == 'cla-dense') & (frame['size'] == smallest_linear)]['peak_mib'].iloc[0]:.1f}.

Time (s):

{_table(pivot_time, list(pivot_time.columns), {'size': '{}', **seconds})}

Peak memory (MiB):

{_table(pivot_memory, list(pivot_memory.columns), {'size': '{}', **mib})}
"""




def note(section: str) -> str:
    """The hand-written note of ``notes.md`` for ``section`` (its ``## section: title`` heading), without the heading;
    empty where there is none."""
    path = RESULTS / "notes.md"
    if not path.is_file():
        return ""
    for block in path.read_text().split("\n## ")[1:]:
        heading, _, body = block.partition("\n")
        if heading.split(":", 1)[0].strip() == section:
            return body.strip()
    return ""


def sampling_section(frame: pd.DataFrame) -> str:
    device = frame["device"].iloc[0]
    trials = note("sampling") + "\n" if "cpu" in device else ""  # the formulations tried and dropped, on CPU
    pivot = frame.pivot(index="size", columns="formulation", values="speedup_vs_loop").reset_index()
    memory = frame.pivot(index="size", columns="formulation", values="peak_mib").reset_index()
    return f"""## (b) Vectorised sampling against a per-key loop ({device})

`python -m benchmarks.bench_sampling` — the same aggregation sum_(r,k) a * Bilinear(V^r, p) in
{frame['formulation'].nunique()} formulations, checked equal, forward + backward; B = {frame['batch'].iloc[0]},
C = {frame['channels'].iloc[0]}, R = {frame['refs'].iloc[0]}, K = {frame['keys'].iloc[0]}. Speed-up over the per-key
`grid_sample` loop (higher is better):

{_table(pivot, list(pivot.columns), {column: '{:.2f}' for column in pivot.columns if column != 'size'} | {'size': '{}'})}

Peak memory (MiB):

{_table(memory, list(memory.columns), {column: '{:.1f}' for column in memory.columns if column != 'size'} | {'size': '{}'})}

{trials}"""


def _conditions(frame: pd.DataFrame) -> str:
    """The run's device, gather implementation and note, for a section title and first line."""
    note = frame["note"].dropna().iloc[0] if "note" in frame and frame["note"].notna().any() else ""
    gather = f"; gather: {frame['gather'].iloc[0]}" if "gather" in frame else ""
    return f"{frame['device'].iloc[0]}{gather}" + (f". Conditions: {note}" if note else "")


def _acla_path(frame: pd.DataFrame, *, inference: bool) -> str:
    """How the run's CLA/ACLA modules computed, from its ``gather`` column: the wording of (c) (``inference``) and
    (d)."""
    if "gather" in frame and frame["gather"].iloc[0] == "C++ kernel":
        projected = (
            "at inference, eager, ACLA's walk projects the open keys' offsets and logits alone; " if inference else "")
        return ("the fused C++ walk (gates, softmax over the open keys and their bilinear sum in one pass per query; "
                f"{projected}W_v folded into W_z; a custom op, eager or compiled)")
    return ("the pure-torch path (training on CUDA: `F.grid_sample` and a weighted sum; inference: `embedding_bag` "
            "gathers of the bilinear taps; under `torch.compile`, ops that inductor fuses): the fused walk is the CPU "
            "kernel's")




def _open_key_paths(frame: pd.DataFrame) -> str:
    """Which of the paths timed in (e) this run had: the C++ ones exist on CPU only."""
    paths = frame["path"].unique()
    timed = f"Paths timed on this device: {', '.join(f'`{path}`' for path in paths)}."
    return f"{timed} {note('open_keys')}" if "fused C++ walk" in paths else timed


def _range(low: float, high: float, pattern: str) -> str:
    """``[low, high]`` of a per-round spread, empty where the run did not record one (an older CSV)."""
    return "" if pd.isna(low) or pd.isna(high) else f"[{pattern.format(low)}, {pattern.format(high)}]"


def _ratio_cells(frame: pd.DataFrame, ratio: str, low: str, high: str) -> list[str]:
    """Each row's ``ratio`` to two decimals, with its lowest and highest round where the CSV has those columns."""
    if low not in frame:
        return [f"{value:.2f}" for value in frame[ratio]]
    return [f"{value:.2f} {_range(lo, hi, '{:.2f}')}" for value, lo, hi in zip(frame[ratio], frame[low], frame[high])]


def overhead_section(frame: pd.DataFrame) -> str:
    columns = ["model", "mode", "params", "gflops", "latency_s", "peak_mib", "params_overhead_pct",
               "flops_overhead_pct", "latency_overhead_pct"]
    if "mode" not in frame:
        frame = frame.assign(mode="eager")
    if "latency_overhead_low_pct" in frame:  # the spread of the overhead over the run's rounds
        spreads = zip(frame.attention, frame.latency_overhead_low_pct, frame.latency_overhead_high_pct)
        frame = frame.assign(per_round_range=["" if attention == "none" else _range(low, high, "{:+.1f}")
                                              for attention, low, high in spreads])  # the backbone against itself
        columns.append("per_round_range")
    formats = {"params": "{:,}", "gflops": "{:.1f}", "latency_s": "{:.3f}", "peak_mib": "{:.0f}",
               "params_overhead_pct": "{:+.1f}", "flops_overhead_pct": "{:+.1f}", "latency_overhead_pct": "{:+.1f}"}
    four = frame[(frame.attention == "acla") & (frame["insert"] == "four-stages")]
    fastest = four.loc[four.latency_s.idxmin()] if len(four) else None
    summary = "" if fastest is None else (
        f"Fastest + ACLA at the four stages: mode `{fastest['mode']}`, {fastest['latency_s']:.3f} s, "
        f"{fastest['latency_overhead_pct']:+.1f} % latency over the backbone in the same mode (FLOPs "
        f"{fastest['flops_overhead_pct']:+.1f} %). CLA and ACLA run by {_acla_path(frame, inference=True)}; a fresh "
        "module has every gate open (gate bias 2), so these rows gather every key.\n")
    return f"""## (c) Overhead of ACLA on EDSR-baseline x2 ({_conditions(frame)})

`python -m benchmarks.bench_overhead` — inference at a {frame['input'].iloc[0]} LR input (640x360 output),
FLOPs = 2 x multiply-adds (`acla.engine.efficiency`), median latency, per mode: eager, eager with model and input in
channels-last memory, compiled (overheads against the backbone in the same mode{_spread(frame, "latency_overhead_low_pct",
": of the medians, and the lowest and highest of the rounds, each model against the backbone's call in the same round")}):

{_table(frame, columns, formats)}

{summary}"""


def _spread(frame: pd.DataFrame, column: str, text: str) -> str:
    """``text`` and the run's round count where the run recorded per-round spreads (``column``), else nothing."""
    if column not in frame or frame[column].isna().all():
        return ""
    return f"{text}; {int(frame['rounds'].iloc[0])} rounds" if "rounds" in frame else text


def training_section(frame: pd.DataFrame) -> str:
    if "backbone_over_model" not in frame:  # an older CSV (iterations per second)
        columns = ["model", "iterations_per_s", "relative_to_backbone", "batch", "hr_patch"]
        return f"""## Training throughput, EDSR-baseline x2 ({frame['device'].iloc[0]})

{_table(frame, columns, {"iterations_per_s": "{:.3f}", "relative_to_backbone": "{:.2f}"})}
"""
    acla = frame[frame.model == "acla"]
    acla = acla.assign(backbone_over_model=_ratio_cells(acla, "backbone_over_model", "ratio_low", "ratio_high"))
    pivot = acla.pivot_table(index=["backbone", "task", "lr_patch"], columns="mode", values="backbone_over_model",
                             aggfunc="first")
    pivot = pivot.reset_index()
    steps = frame.pivot_table(index=["backbone", "task", "model"], columns="mode", values="step_s").reset_index()
    compile_s = frame[frame["mode"] == "compiled"][["backbone", "task", "model", "compile_s"]]
    modes = ("eager", "eager, channels-last", "compiled")
    seconds = {column: "{:.3f}" for column in steps.columns if column in modes}
    compile_table = _table(compile_s, list(compile_s.columns), {"compile_s": "{:.0f}"}) if len(compile_s) else "(not run)"
    eager = frame[(frame["mode"] == "eager")]
    memory = "" if "peak_mib" not in frame else "Eager steps: backbone time / model time and peak memory of one step (MiB):\n\n" + _table(
        eager, ["backbone", "task", "model", "backbone_over_model", "peak_mib"],
        {"backbone_over_model": "{:.2f}", "peak_mib": "{:.0f}"}) + "\n"
    return f"""## (d) Training step: backbone time / ACLA time ({_conditions(frame)})

`python -m benchmarks.bench_training` — Adam + L1 steps on random tensors, batch {frame['batch'].iloc[0]}, + ACLA
at the four stages, forward and backward by {_acla_path(frame, inference=False)}; SR x2 at an LR patch of 24,
denoising at 48x48.
Backbone time / ACLA time (1 = free){_spread(frame, "ratio_low", ", of the median steps, and in brackets the lowest and "
"highest of the rounds (each ACLA step against the backbone's in the same round)")}:

{_table(pivot, list(pivot.columns), {})}

Median step (s):

{_table(steps, list(steps.columns), seconds)}

Compile time (s, first two steps minus two steps):

{compile_table}

{memory}"""


def open_keys_section(frame: pd.DataFrame) -> str:
    pivot = frame.pivot(index="open_fraction", columns="path", values="seconds").reset_index()
    frame = frame.assign(relative=_ratio_cells(frame, "relative_to_all_open", "relative_low", "relative_high"))
    relative = frame.pivot(index="open_fraction", columns="path", values="relative").reset_index()
    formats = {column: "{:.4f}" for column in pivot.columns if column != "open_fraction"} | {"open_fraction": "{:.2f}"}
    relative_formats = {"open_fraction": "{:.2f}"}
    first = frame.iloc[0]
    return f"""## (e) ACLA module at inference against the open-key fraction ({_conditions(frame)})

`python -m benchmarks.bench_open_keys` — one module, C = {first['channels']}, R = {first['refs']}, K = {first['keys']},
{first['size']}, eval mode, inputs {first.get('layout', 'contiguous (NCHW)')}, exactly that fraction of each query's keys
open. Latency (s):

{_table(pivot, list(pivot.columns), formats)}

Relative to all keys open{_spread(frame, "relative_low", " (of the medians; in brackets the lowest and highest of the "
"rounds)")}:

{_table(relative, list(relative.columns), relative_formats)}

{_open_key_paths(frame)}

{half_closed_ceiling(frame)}
"""


def half_closed_ceiling(frame: pd.DataFrame) -> str:
    """The share of the module's FLOPs that closing half the keys removes, beside the run's measured savings: per
    query, the gather of 4 taps x C per open key (2 FLOPs a multiply-add), the 4 M heads (offsets, logits, gates)
    from C channels and W_z W_v from C + 1. With every key projected only the gathers fall with the open keys; with
    the open keys' offsets and logits projected in the walk (3 of the 4 M heads) those fall too."""
    first = frame.iloc[0]
    channels, keys_per_query = int(first["channels"]), int(first["refs"]) * int(first["keys"])
    gather = 2 * 4 * channels * keys_per_query
    heads, output = 2 * channels * 4 * keys_per_query, 2 * (channels + 1) * channels
    every_key = gather / 2 / (gather + heads + output)
    open_keys = (gather + 2 * channels * 3 * keys_per_query) / 2 / (gather + heads + output)
    half = frame[(frame.open_fraction - 0.5).abs() < 1e-9].set_index("path")["relative_to_all_open"]
    measured = "; ".join(f"{path}: {100 * (1 - value):.0f} %" for path, value in half.items())
    return (f"Closing half the keys removes {100 * every_key:.0f} % of this module's FLOPs where every key's offsets "
            f"and logits are projected, {100 * open_keys:.0f} % where the open keys' alone are (C = {channels}, M = R K "
            f"= {keys_per_query}: per query the gathers are {gather} FLOPs with every key open, the projections "
            f"{heads + output}, of which the open keys' offsets and logits {2 * channels * 3 * keys_per_query}). "
            f"Measured saving at one half: {measured or 'not measured'}; a path whose time follows its FLOPs saves "
            "about its share, a path whose gathers cost more than their FLOPs (pure torch) more of a larger total.")




def trained_section(frame: pd.DataFrame) -> str:
    first = frame.iloc[0]
    columns = ["model", "gflops", "flops_overhead_pct", "latency_s", "overhead_pct"]
    if "mode" in frame:  # older runs timed NCHW only
        columns.insert(1, "mode")
    if "overhead_low_pct" in frame:
        frame = frame.assign(per_round_range=["" if model == "backbone" else _range(low, high, "{:+.1f}") for
                                              model, low, high in
                                              zip(frame.model, frame.overhead_low_pct, frame.overhead_high_pct)])
        columns.append("per_round_range")
    formats = {"gflops": "{:.2f}", "flops_overhead_pct": "{:+.1f}", "latency_s": "{:.3f}", "overhead_pct": "{:+.1f}"}
    acla = frame[frame.model != "backbone"]
    fastest = acla.loc[acla.latency_s.idxmin()]
    summary = (f"Fastest + ACLA: `{fastest['model'].removeprefix('+ ACLA, ')}`"
               + (f", mode `{fastest['mode']}`" if "mode" in frame else "")
               + f", {fastest['overhead_pct']:+.1f} % latency over the backbone in the same mode.")
    reading = f" {note('trained')}".rstrip()  # how the overheads are read (notes.md)
    return f"""## (f) Trained models at inference ({_conditions(frame)})

`python -m benchmarks.bench_trained` — the `{first['profile']}` profile's trained {first['setting']} models (backbone
`{first['backbone']}`, first seed; + ACLA after blocks {first['inserted_after']}), {first['input']} LR input, eval mode, no
autograd, interleaved rounds{_spread(frame, "overhead_low_pct", reading)}. Keys the trained gates leave open per
query, by module: {first['open_keys']}.

{_table(frame, columns, formats)}

{summary}
FLOPs count the gather of every key, closed ones included (as (c) does); latency pays only for the open ones.
`fused C++ walk, every key projected` is the walk `torch.compile` takes: the offsets and logits of every key
projected in one matrix product before it.
"""


def frontier_section(frame: pd.DataFrame) -> str:
    first = frame.iloc[0]
    frame = frame.fillna({"budget": "", "tau": "", "open_keys_by_block": ""})  # the backbone and CLA have none
    frame = frame.assign(target=["" if pd.isna(t) else f"{t:.2f}" for t in frame.target],
                         per_round_range=["" if variant == "backbone" else _range(low, high, "{:+.1f}") for
                                          variant, low, high in
                                          zip(frame.variant, frame.overhead_low_pct, frame.overhead_high_pct)])
    columns = ["point", "budget", "target", "tau", "open_keys", "gflops", "latency_s", "overhead_pct", "per_round_range",
               "open_keys_by_block"]
    formats = {"open_keys": "{:.2f}", "gflops": "{:.2f}", "latency_s": "{:.3f}", "overhead_pct": "{:+.1f}"}
    return f"""## (h) Trained frontier points at inference, closed keys skipped ({_conditions(frame)})

`python -m benchmarks.bench_frontier --profile {first['profile']}` — every point of the `{first['profile']}` profile's
{first['setting']} frontier (first seed, {int(first['iterations'])} iterations): the backbone, CLA with K fixed keys per
reference, ACLA under each key-budget form (budget, target t, the gate temperature's schedule tau;
docs/method.md#key-budget-forms). Input: {first['input']};
{first['mode']}, eval mode, no autograd, the fused C++ walk (closed keys are never gathered), interleaved rounds{
        _spread(frame, "overhead_low_pct", ", overheads against the backbone of the same round")}. Open keys: per query,
mean over the modules, on this input (by module: block:open/keys). GFLOPs: this input's, closed keys skipped.

{_table(frame, columns, formats)}
"""


def gpu_section(frame: pd.DataFrame, device: str) -> str:
    """The CUDA counterparts of (c) and (d), from the speed part of ``python -m acla gpu-check``."""
    ok = frame[frame.status == "ok"]
    inference = ok[ok.measure == "inference"]
    inference = inference.assign(overhead_pct=[f"{value:+.1f}" if pd.notna(value) else "" for value in inference.overhead_pct])
    steps = ok[ok.measure == "training step"].copy()
    steps["backbone"] = ~steps.model.str.contains("ACLA")
    ratios = []
    for mode, group in steps.groupby("mode", sort=False):
        backbone, acla = group[group.backbone], group[~group.backbone]
        if len(backbone) and len(acla):
            ratios.append({"mode": mode, "input": group.input.iloc[0], "batch": group.batch.iloc[0],
                           "precision": group.precision.iloc[0], "backbone_s": backbone.seconds.iloc[0],
                           "acla_s": acla.seconds.iloc[0],
                           "backbone_over_model": backbone.seconds.iloc[0] / acla.seconds.iloc[0]})
    ratio_table = _table(pd.DataFrame(ratios), ["mode", "input", "batch", "precision", "backbone_s", "acla_s",
                                                "backbone_over_model"],
                         {"backbone_s": "{:.4f}", "acla_s": "{:.4f}", "backbone_over_model": "{:.2f}"}) if ratios else "(not measured)"
    inference_table = _table(inference, ["model", "input", "precision", "seconds", "gflops", "peak_mib", "overhead_pct"],
                             {"seconds": "{:.4f}", "gflops": "{:.1f}", "peak_mib": "{:.0f}"})
    return f"""## (g) On CUDA: {gpu_run_title(device)}

From `python -m acla gpu-check` (`reports/gpu/{device}/`, its speed part; how that run was made:
`reports/gpu/README.md`). CUDA has no fused walk: at that run's commit ACLA ran the pure-torch path (`embedding_bag` gathers in eager,
traced ops that inductor fuses under `torch.compile`). EDSR-baseline + ACLA at the four stages against the backbone, inference (eager):

{inference_table}

Training step (Adam + L1, SR x2, HR patch 96 = LR 48, not (d)'s LR 24), backbone time / ACLA time:

{ratio_table}
"""


def gpu_run_title(device: str) -> str:
    """The device a gpu-check folder names, with its run's torch and commit when its run.json says them."""
    record = RESULTS.parent / "gpu" / device / "run.json"
    if not record.is_file():
        return device
    run = json.loads(record.read_text())
    return f"{run['device']}, torch {run['torch']}, commit {run['commit']}, {run['date']}"


def render() -> str:
    sections = [("# Benchmarks\n\nGenerated by `python -m benchmarks.report` from the CSVs beside this file; rerun "
                "`python -m benchmarks` to measure again. Ratios matter, not absolute times: every row of a table "
                "was measured in one run on one machine. What the CSVs cannot hold (formulations tried and dropped, how to "
                "read a section) is quoted from `notes.md`, written by hand and dated.\n")]
    for name, section in (("attention_cost", attention_section), ("sampling", sampling_section),
                          ("overhead", overhead_section), ("training", training_section),
                          ("open_keys", open_keys_section), ("trained", trained_section)):
        for path in sorted(RESULTS.glob(f"{name}_*.csv")):
            sections.append(section(pd.read_csv(path)))
    for path in sorted((RESULTS.parent / "gpu").glob("*/speed/speed.csv")):
        sections.append(gpu_section(pd.read_csv(path), path.parent.parent.name))
    for path in sorted(RESULTS.glob("frontier_*.csv")):  # after (g), the CUDA run, as its letter says
        sections.append(frontier_section(pd.read_csv(path)))
    return "\n".join(sections)


def main() -> None:
    atomic_write_text(RESULTS / "README.md", render())


if __name__ == "__main__":
    main()
