#!/usr/bin/env python3
"""The training campaign's learning curve as a Markdown table: validation gain per damage category against
training hours, and for the blur categories the gain with the model's own kernel estimate beside the gain
when it is given the true kernel (the ceiling the estimator is measured against).

    .venv/bin/python scripts/campaign_report.py [RUN_FOLDER] [--every HOURS]

RUN_FOLDER defaults to $FACEDEBLUR_CAMPAIGN/deep (~/facedeblur-campaign/deep), where scripts/campaign trains;
campaign/ and campaign/shallow/ hold the kept logs of the deep run and of the kernel-aware-frequency run it grew from.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

CATEGORY_ORDER = ("motion_blur", "defocus", "gaussian_blur", "pixelate", "low_resolution", "noise", "jpeg",
                  "codec_blocks", "low_light", "mixed", "cctv")
BLUR = ("motion_blur", "defocus", "gaussian_blur")


def read_log(run: Path) -> list[dict]:
    path = run / "log.jsonl"
    if not path.is_file():
        raise SystemExit(f"{path} not found: pass the run folder of a `train run` (scripts/campaign writes "
                         "~/facedeblur-campaign/deep)")
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def thin(rows: list[dict], every_hours: float) -> list[dict]:
    """One row per `every_hours` of training, and always the last one."""
    kept, next_mark = [], 0.0
    for row in rows:
        if row.get("minutes", 0) / 60 >= next_mark:
            kept.append(row)
            next_mark = row.get("minutes", 0) / 60 + every_hours
    if rows and kept[-1] is not rows[-1]:
        kept.append(rows[-1])
    return kept


def render(rows: list[dict]) -> str:
    lines = ["| hours | steps | samples | all | " + " | ".join(CATEGORY_ORDER) + " |",
             "|" + "---|" * (4 + len(CATEGORY_ORDER))]
    for row in rows:
        gains = row.get("gain_by_category", {})
        cells = [f"{row.get('minutes', 0) / 60:.2f}", f"{row['step']:,}", f"{row.get('samples', 0):,}",
                 f"{row['psnr_gain']:+.2f}", *(f"{gains[c]:+.2f}" if c in gains else "—" for c in CATEGORY_ORDER)]
        lines.append("| " + " | ".join(cells) + " |")
    if rows and "oracle_gain_by_category" in rows[-1]:
        lines += ["", "Blur categories, own kernel estimate / true kernel given (the ceiling):", "",
                  "| hours | " + " | ".join(BLUR) + " |", "|" + "---|" * (1 + len(BLUR))]
        for row in rows:
            estimate, oracle = row.get("estimate_gain_by_category", {}), row.get("oracle_gain_by_category", {})
            cells = [f"{estimate[c]:+.2f} / {oracle[c]:+.2f}" if c in estimate and c in oracle else "—" for c in BLUR]
            lines.append(f"| {row.get('minutes', 0) / 60:.2f} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    default = Path(os.environ.get("FACEDEBLUR_CAMPAIGN", Path.home() / "facedeblur-campaign")) / "deep"
    parser.add_argument("run", nargs="?", type=Path, default=default)
    parser.add_argument("--every", type=float, default=0.25, help="hours between rows (default 0.25)")
    args = parser.parse_args(argv)
    sys.stdout.write(render(thin(read_log(args.run), args.every)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
