"""``python -m benchmarks [--device cuda]``: every benchmark in one run, then the README of the results."""

from __future__ import annotations

import subprocess
import sys

SCRIPTS = ("benchmarks.bench_attention", "benchmarks.bench_sampling", "benchmarks.bench_overhead",
           "benchmarks.bench_training", "benchmarks.bench_open_keys")


def main() -> None:
    for script in SCRIPTS:
        subprocess.run([sys.executable, "-m", script, *sys.argv[1:]], check=True)
    subprocess.run([sys.executable, "-m", "benchmarks.report"], check=True)


if __name__ == "__main__":
    main()
