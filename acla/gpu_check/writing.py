"""The check's reports: per part a CSV and a README.md, and the front README.md and run.json, with every path
of the machine replaced by a placeholder (``scrubbed``).
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from acla.files import atomic_write_text


@dataclass
class Part:
    name: str
    title: str
    frame: pd.DataFrame = field(default_factory=pd.DataFrame)
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)
    error: str | None = None

    @property
    def failed(self) -> list[str]:
        """What makes the exit status non-zero: a failed check, or the part crashing."""
        failures = [self.error] if self.error else []
        if "passed" in self.frame:
            failures += [f"{r.variant} {r.logits} {r.precision} {r.quantity}: relative error {r.relative_error:.2e} "
                         f"> {r.tolerance:g}" for r in self.frame[~self.frame.passed.astype(bool)].itertuples()]
        if "status" in self.frame:
            failures += [f"{r.get('measure', '')} {r.get('model', r.get('method', ''))}: {r['note']}".strip()
                         for r in self.frame[self.frame.status == "error"].to_dict(orient="records")]
        return failures

    @property
    def status(self) -> str:
        if self.failed:
            return "FAILED"
        skipped = int((self.frame.get("status", pd.Series(dtype=str)) == "skipped").sum())
        return f"ok ({skipped} skipped)" if skipped else "ok"


COLUMNS = {
    "correctness": {"check": ("check", 0, False), "variant": ("variant", 0, False), "logits": ("logits", 0, False),
                    "precision": ("precision", 0, False), "quantity": ("quantity", 0, False),
                    "worst_tensor": ("worst tensor", 0, False), "relative_error": ("relative error", 0, False),
                    "tolerance": ("tolerance", 0, False), "passed": ("passed", 0, False)},
    "speed": {"measure": ("measure", 0, False), "model": ("model", 0, False), "input": ("input", 0, False),
              "batch": ("batch", 0, False), "precision": ("precision", 0, False), "mode": ("mode", 0, False),
              "per_second": ("iterations/s", 2, False), "seconds": ("s / iteration", 4, False),
              "first_call_seconds": ("first call s", 2, False), "overhead_pct": ("ACLA overhead %", 1, True),
              "gflops": ("GFLOPs", 2, False), "peak_mib": ("peak MiB", 0, False), "status": ("status", 0, False),
              "note": ("note", 0, False)},
    "learning": {"method": ("method", 0, False), "set": ("set", 0, False), "n_images": ("images", 0, False),
                 "psnr": ("PSNR", 4, False), "ssim": ("SSIM", 5, False), "published_psnr": ("PSNR published", 2, False),
                 "published_ssim": ("SSIM published", 4, False),
                 "iterations": ("iterations", 0, False), "train_seconds": ("train s", 0, False),
                 "status": ("status", 0, False), "note": ("note", 0, False)},
}


def scrubbed(text: str, placeholders: dict[Path, str]) -> str:
    """``text`` with every path of ``placeholders`` (and the temporary folder and the home folder) replaced
    by its placeholder, longest first: files written here name no path of the machine."""
    replacements = {str(Path(tempfile.gettempdir())): "$TMPDIR", str(Path.home()): "~"}
    for path, placeholder in placeholders.items():
        replacements[str(path)] = replacements[str(path.resolve())] = placeholder
    for old in sorted(replacements, key=len, reverse=True):
        text = text.replace(old, replacements[old])
    return text


def shown(frame: pd.DataFrame) -> pd.DataFrame:
    """The frame as the README tables show it: errors in scientific notation, pass/fail in words."""
    frame = frame.copy()
    for column in ("relative_error", "max_abs_error", "tolerance"):
        if column in frame:
            frame[column] = frame[column].map(lambda value: f"{value:.1e}")
    if "passed" in frame:
        frame["passed"] = frame["passed"].map(lambda value: "yes" if value else "**NO**")
    return frame


def part_readme(part: Part, record: dict, columns: dict) -> str:
    from acla.study.tables import markdown

    failures = "".join(f"- **failed:** {line}\n" for line in part.failed)
    notes = "".join(f"- {line}\n" for line in part.notes)
    frame = shown(part.frame)
    table = markdown(frame, {k: v for k, v in columns.items() if k in frame}) if len(frame) else ""
    return (f"# GPU check, {part.title}: {record['device']}\n\n"
            f"Status: **{part.status}**; {part.seconds:.1f} s wall; torch {record['torch']}, commit "
            f"{record['commit']}, {record['date']}; data {record['data_root']}. Every number: `{part.name}.csv`.\n\n"
            f"{failures}{notes}\n{table}")


def write_reports(out: Path, parts: list[Part], record: dict, paths: dict[Path, str]) -> None:
    """Per part ``<part>/<part>.csv`` and ``<part>/README.md``; the front ``README.md`` and ``run.json``."""
    for part in parts:
        text = part.frame.to_csv(index=False, float_format="%.6g")
        atomic_write_text(out / part.name / f"{part.name}.csv", scrubbed(text, paths))
        atomic_write_text(out / part.name / "README.md", scrubbed(part_readme(part, record, COLUMNS[part.name]), paths))
    lines = [f"# GPU check: {record['device']}\n",
             f"`python -m acla gpu-check` with a budget of {record['budget_seconds']:.0f} s (start-up and data "
             f"loading included): {record['wall_seconds']:.1f} s wall. torch {record['torch']}, commit "
             f"{record['commit']}, {record['date']}, data {record['data_root']}.\n",
             "| part | status | wall s | files |", "|---|---|---|---|"]
    lines += [f"| {p.title} | {p.status} | {p.seconds:.1f} | [{p.name}/]({p.name}/README.md) |" for p in parts]
    failures = [f"- {p.name}: {line}" for p in parts for line in p.failed]
    lines += ["", "Failures:" if failures else "Every correctness check passed.", *failures, ""]
    atomic_write_text(out / "README.md", scrubbed("\n".join(lines), paths))
    summary = {**record, "parts": {p.name: {"status": p.status, "wall_seconds": round(p.seconds, 1)} for p in parts}}
    atomic_write_text(out / "run.json", scrubbed(json.dumps(summary, indent=2) + "\n", paths))
