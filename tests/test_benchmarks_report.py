"""The benchmarks' README is rendered from their CSVs: the frontier section's table says what each point cost."""

from __future__ import annotations

import math

import pandas as pd

from benchmarks.report import frontier_section


def frontier_rows() -> pd.DataFrame:
    common = {"iterations": 2400, "rounds": 3, "mode": "eager, channels-last", "setting": "sr_x2",
              "profile": "cpu-budget-long", "input": "B100, first image (160x240)", "device": "cpu: test, 2 threads"}
    return pd.DataFrame([
        {"point": "backbone", "variant": "backbone", "attention": "none", "budget": math.nan, "target": math.nan,
         "tau": math.nan, "open_keys": 0.0, "open_keys_by_block": math.nan, "gflops": 15.2, "latency_s": 0.300,
         "overhead_pct": 0.0, "overhead_low_pct": 0.0, "overhead_high_pct": 0.0, **common},
        {"point": "ACLA w=0.01 + target t=0.5", "variant": "acla lk=0.01 + target t=0.5", "attention": "acla",
         "budget": "target", "target": 0.5, "tau": "1 → 0.1", "open_keys": 8.29,
         "open_keys_by_block": "1:4.72/9 2:4.77/18", "gflops": 16.34, "latency_s": 0.415, "overhead_pct": 38.3,
         "overhead_low_pct": 30.0, "overhead_high_pct": 45.5, **common},
    ])


def test_frontier_section_gives_each_point_its_cost_and_the_backbone_no_range() -> None:
    text = frontier_section(frontier_rows())
    assert "python -m benchmarks.bench_frontier --profile cpu-budget-long" in text
    rows = {line.split(" | ")[0].strip("| "): line for line in text.splitlines() if line.startswith("| ")}
    assert rows["ACLA w=0.01 + target t=0.5"].startswith(
        "| ACLA w=0.01 + target t=0.5 | target | 0.50 | 1 → 0.1 | 8.29 | 16.34 | 0.415 | +38.3 | [+30.0, +45.5] |")
    assert rows["backbone"].startswith("| backbone |  |  |  | 0.00 | 15.20 | 0.300 | +0.0 |  |")
    assert "3 rounds" in text
