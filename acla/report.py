"""Report rendering: measured rows beside published ones, as CSV and Markdown.

Published numbers are read from files (``acla/resources/published_*.csv`` for the classical rows
the literature agrees on; ``../shared/paper/tables/*.csv`` for the paper's own tables once someone
transcribes them) and never typed into code. A row whose set is partial is never compared with a
full-set published number.
"""

from __future__ import annotations

import argparse
import sys
from importlib import resources
from pathlib import Path

import pandas as pd

from acla.files import atomic_write_text

KEY = ["task", "set", "setting", "method"]


def published_classical() -> pd.DataFrame:
    with resources.files("acla.resources").joinpath("published_classical.csv").open() as handle:
        return pd.read_csv(handle)


def compare(measured: pd.DataFrame, published: pd.DataFrame) -> pd.DataFrame:
    """Measured rows with ``paper_psnr``/``paper_ssim`` and deltas where a published row exists."""
    merged = measured.merge(published.drop(columns=["source"], errors="ignore"), on=KEY, how="left",
                            suffixes=("", "_published"))
    merged = merged.rename(columns={"psnr_published": "published_psnr", "ssim_published": "published_ssim"})
    merged["delta_psnr"] = merged["psnr"] - merged["published_psnr"]
    merged["delta_ssim"] = merged["ssim"] - merged["published_ssim"]
    return merged


def _cell(value: float, digits: int) -> str:
    return "n/a" if pd.isna(value) else f"{value:.{digits}f}"


def _signed(value: float, digits: int) -> str:
    return "n/a" if pd.isna(value) else f"{value:+.{digits}f}"


def markdown_table(comparison: pd.DataFrame) -> str:
    header = ("| task | set | setting | method | images | PSNR ours | PSNR published | Δ PSNR | "
              "SSIM ours | SSIM published | Δ SSIM |")
    lines = [header, "|" + "---|" * 11]
    for row in comparison.itertuples(index=False):
        lines.append(
            f"| {row.task} | {row.set} | {row.setting} | {row.method} | {row.n_images} | "
            f"{_cell(row.psnr, 4)} | {_cell(row.published_psnr, 2)} | {_signed(row.delta_psnr, 4)} | "
            f"{_cell(row.ssim, 5)} | {_cell(row.published_ssim, 4)} | {_signed(row.delta_ssim, 5)} |"
        )
    return "\n".join(lines) + "\n"


def render_classical(rows_csv: Path, out_md: Path) -> pd.DataFrame:
    comparison = compare(pd.read_csv(rows_csv), published_classical())
    text = (
        "# Classical rows\n\n"
        f"Measured by `python -m acla.classical` ({rows_csv.name}); published values from "
        "`acla/resources/published_classical.csv` (n/a: none given). Sets marked partial are never "
        "compared with a full-set published number.\n\n" + markdown_table(comparison)
    )
    atomic_write_text(out_md, text)
    return comparison


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m acla.report", description=__doc__)
    verbs = parser.add_subparsers(dest="verb", required=True)
    classical = verbs.add_parser("classical", help="classical rows beside the published ones, as Markdown")
    classical.add_argument("--rows", required=True, type=Path, help="CSV written by python -m acla.classical")
    classical.add_argument("--out", required=True, type=Path, help="Markdown file to write")
    args = parser.parse_args(argv)
    if not args.rows.is_file():
        print(f"error: {args.rows} not found (run python -m acla.classical first)", file=sys.stderr)
        return 2
    render_classical(args.rows, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
