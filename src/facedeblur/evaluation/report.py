"""Turn the scores into report.json, report.md and comparison.png (all written atomically)."""
from __future__ import annotations

import json
import math
from collections import defaultdict
from pathlib import Path

import cv2
import numpy as np

from ..image_files import write_bytes_atomic, write_image_atomic
from .classical import CLASSICAL_METHODS
from .dlib_identity import SAME_PERSON_DISTANCE
from .runner import INPUT, OURS, GridSample, Score, split_case

METRICS = ("psnr", "ssim", "identity")
DLIB_METRICS = ("dlib_match", "dlib_distance")
METHOD_TITLES = {
    INPUT: "degraded input", OURS: "ours", "unsharp_mask": "unsharp mask",
    "wiener": "Wiener (true kernel)", "richardson_lucy": "Richardson-Lucy (true kernel)",
    "nl_means": "non-local means",
}


def _mean(values: list[float]) -> float:
    return float(np.mean(values)) if values else math.nan


def _metric_means(scores: list[Score]) -> dict:
    means = {"psnr": _mean([s.psnr for s in scores]), "ssim": _mean([s.ssim for s in scores]),
             "identity": _mean([s.identity for s in scores]), "n": len(scores),
             # per face, in face order: two models' reports of the same faces and damage pair up face by face
             "psnr_by_face": [s.psnr for s in sorted(scores, key=lambda score: score.face)]}
    distances = [s.dlib_distance for s in scores if s.dlib_distance is not None]
    if distances:  # the independent judge: share still recognised as the same person, and the mean distance
        means["dlib_match"] = float(np.mean(np.asarray(distances) < SAME_PERSON_DISTANCE))
        means["dlib_distance"] = float(np.mean(distances))
    return means


def summarise(scores: list[Score], categories: tuple[str, ...]) -> dict:
    """Means per category and method, the best classical method per category (by PSNR), per-race gains,
    and the overall mean (every category weighted equally)."""
    by_category: dict[str, dict[str, list[Score]]] = defaultdict(lambda: defaultdict(list))
    for score in scores:
        by_category[score.category][score.method].append(score)
    per_category = {}
    for category in categories:
        methods = {method: _metric_means(by_category[category][method])
                   for method in (INPUT, OURS, *CLASSICAL_METHODS) if by_category[category][method]}
        classical = [m for m in CLASSICAL_METHODS if m in methods]
        best = max(classical, key=lambda m: methods[m]["psnr"]) if classical else None
        per_category[category] = {
            "methods": methods,
            "best_classical": best,
            "gain_db": methods[OURS]["psnr"] - methods[INPUT]["psnr"],
            "best_classical_gain_db": methods[best]["psnr"] - methods[INPUT]["psnr"] if best else None,
        }
    severities = {}
    for severity in dict.fromkeys(split_case(c)[1] for c in categories):
        severities[severity] = _mean_over(per_category, [c for c in categories if split_case(c)[1] == severity])
    return {"categories": per_category, "severities": severities, "races": summarise_races(scores),
            "overall": _mean_over(per_category, list(categories))}


def _mean_over(per_category: dict, categories: list[str]) -> dict:
    """Input, ours and the best classical method, averaged over `categories` (each weighted equally)."""
    with_classical = all(per_category[c]["best_classical"] for c in categories)
    result = {}
    for row in (INPUT, OURS, *(("best_classical",) if with_classical else ())):
        picks = [per_category[c]["methods"][per_category[c]["best_classical"] if row == "best_classical" else row]
                 for c in categories]
        result[row] = {metric: _mean([p[metric] for p in picks]) for metric in METRICS}
        if all("dlib_match" in p for p in picks):
            result[row].update({metric: _mean([p[metric] for p in picks]) for metric in DLIB_METRICS})
    result["gain_db"] = result[OURS]["psnr"] - result[INPUT]["psnr"]
    return result


def summarise_races(scores: list[Score]) -> dict:
    """Per UTK race group: does the model help every group about equally? Averaged over all categories."""
    by_race: dict[str, dict[str, list[Score]]] = defaultdict(lambda: defaultdict(list))
    for score in scores:
        if score.race is not None:
            by_race[score.race][score.method].append(score)
    races = {}
    for race in sorted(by_race):
        input_means, ours_means = _metric_means(by_race[race][INPUT]), _metric_means(by_race[race][OURS])
        races[race] = {
            "faces": len({s.face for s in by_race[race][INPUT]}),
            "input": {m: input_means[m] for m in METRICS},
            "ours": {m: ours_means[m] for m in METRICS},
            "gain_db": ours_means["psnr"] - input_means["psnr"],
        }
    return races


def _cell(values: dict | None) -> str:
    if not values:
        return "—"
    return f"{values['psnr']:.2f} / {values['ssim']:.3f} / {values['identity']:.3f}"


def render_markdown(summary: dict, context: dict) -> str:
    lines = [
        "# facedeblur evaluation", "",
        f"- model: `{context['model']['name']}` {context['model']['version']} ({context['model']['path']})",
        f"- faces: {context['faces']['total']} "
        f"({', '.join(f'{n} from {Path(s).name}' for s, n in context['faces']['per_source'].items())}); "
        f"UTK faces only from the trainer's held-out validation slice",
        f"- damage cases: {len(summary['categories'])} (category/severity tier); degradation seed {context['seed']} "
        "(one fixed draw per face and case, shared by every method)",
        "- alignment: " + ("every face cut a little off it first (`--misalign`: shifted, turned and scaled as faces "
                           "found on damaged footage are)" if context.get("misaligned") else
                           "exact (landmarks from the clean photo; footage is harsher: `--misalign`)"),
        f"- runtime: {context['seconds'] / 60:.1f} min on {context['machine']}",
        "", "Command:", "", "```", context["command"], "```", "",
        "## Per category", "",
        "Each cell: PSNR (dB) / SSIM / identity similarity to the clean face (SFace cosine; same person about "
        "0.8 or more). Gain: PSNR of ours minus the degraded input. Best classical: the classical method with "
        "the highest mean PSNR in that category. Wiener and Richardson-Lucy are given the true blur kernel, "
        "so they run only on the single-blur categories.", "",
    ]
    methods = (INPUT, OURS, *CLASSICAL_METHODS)
    header = ["category", *(METHOD_TITLES[m] for m in methods[:2]), "gain (dB)", "best classical",
              *(METHOD_TITLES[m] for m in methods[2:])]
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for category, row in summary["categories"].items():
        best = row["best_classical"]
        cells = [category, _cell(row["methods"].get(INPUT)), _cell(row["methods"].get(OURS)), f"{row['gain_db']:+.2f}",
                 f"{METHOD_TITLES.get(best, '—')}: {_cell(row['methods'].get(best))}" if best else "—",
                 *(_cell(row["methods"].get(m)) for m in CLASSICAL_METHODS)]
        lines.append("| " + " | ".join(cells) + " |")
    overall = summary["overall"]
    lines += ["", "## Per severity tier (mean over categories)", "",
              "| tier | input PSNR / SSIM / identity | ours PSNR / SSIM / identity | gain (dB) |", "|---|---|---|---|"]
    for severity, row in {**summary["severities"], "all tiers": overall}.items():
        lines.append(f"| {severity} | {_cell(row[INPUT])} | {_cell(row[OURS])} | {row['gain_db']:+.2f} |")
    lines += ["", "## Overall (mean over every category and tier)", "",
              "| | PSNR (dB) | SSIM | identity |", "|---|---|---|---|"]
    for key, title in ((INPUT, "degraded input"), (OURS, "ours"), ("best_classical", "best classical per category")):
        if key in overall:
            lines.append(f"| {title} | {overall[key]['psnr']:.2f} | {overall[key]['ssim']:.3f} | {overall[key]['identity']:.3f} |")
    lines += ["", f"Gain of ours over the degraded input: **{overall['gain_db']:+.2f} dB**.", ""]
    lines += _dlib_section(summary)
    lines += ["## Per UTK race group (all categories)", ""]
    if summary["races"]:
        lines += ["| race | faces | input PSNR | ours PSNR | gain (dB) | input identity | ours identity |",
                  "|---|---|---|---|---|---|---|"]
        for race, row in summary["races"].items():
            lines.append(f"| {race} | {row['faces']} | {row['input']['psnr']:.2f} | {row['ours']['psnr']:.2f} | "
                         f"{row['gain_db']:+.2f} | {row['input']['identity']:.3f} | {row['ours']['identity']:.3f} |")
    else:
        lines.append("No UTK faces in this run (their names carry the race group).")
    lines += ["", "comparison.png: a few faces per category; columns clean, degraded, best classical, ours.", ""]
    return "\n".join(lines)


def _dlib_cell(values: dict) -> str:
    return f"{values['dlib_match'] * 100:.1f} % ({values['dlib_distance']:.3f})"


def _dlib_section(summary: dict) -> list[str]:
    """Identity by the independent judge, per category and per tier: input -> ours."""
    overall = summary["overall"]
    if "dlib_match" not in overall[OURS]:
        return ["## Identity by an independent recogniser", "",
                "Not measured: dlib is not installed (pip install 'facedeblur[eval]').", ""]
    lines = ["## Identity by an independent recogniser (dlib ResNet)", "",
             f"Share of faces dlib still recognises as the same person (distance below {SAME_PERSON_DISTANCE}), and "
             "the mean distance in brackets. dlib is not the network the trainer's identity loss uses (SFace), so "
             "the model cannot have learnt to please it. A restorer must not be below the input in any row.", "",
             "| case | input | ours | change (points) |", "|---|---|---|---|"]
    rows = {**{c: row["methods"] for c, row in summary["categories"].items()}, **summary["severities"],
            "all": overall}
    for name, row in rows.items():
        if "dlib_match" in row.get(OURS, {}):
            change = (row[OURS]["dlib_match"] - row[INPUT]["dlib_match"]) * 100
            lines.append(f"| {name} | {_dlib_cell(row[INPUT])} | {_dlib_cell(row[OURS])} | {change:+.1f} |")
    return lines + [""]


def write_reports(output: Path, summary: dict, context: dict) -> None:
    write_bytes_atomic(output / "report.json", (json.dumps({**context, **summary}, indent=1, allow_nan=False)
                                                + "\n").encode())
    write_bytes_atomic(output / "report.md", render_markdown(summary, context).encode())


# ---- comparison image --------------------------------------------------------------------------------

TILE = 128
LABEL_WIDTH = 190
HEADER_HEIGHT = 30
FONT = cv2.FONT_HERSHEY_SIMPLEX


def _text(canvas: np.ndarray, text: str, origin: tuple[int, int], scale: float = 0.45) -> None:
    cv2.putText(canvas, text, origin, FONT, scale, (255, 255, 255), 1, cv2.LINE_AA)


def render_comparison(samples: list[GridSample], summary: dict) -> np.ndarray:
    """Rows: the sampled faces x categories; columns: clean, degraded, best classical, ours."""
    columns = ("clean", "degraded", "best classical", "ours")
    height = HEADER_HEIGHT + TILE * len(samples)
    canvas = np.full((height, LABEL_WIDTH + TILE * len(columns), 3), 32, np.uint8)
    for col, title in enumerate(columns):
        _text(canvas, title, (LABEL_WIDTH + col * TILE + 6, 20), 0.5)
    for row, sample in enumerate(samples):
        best = summary["categories"][sample.category]["best_classical"]
        tiles = (sample.clean, sample.outputs[INPUT], sample.outputs.get(best), sample.outputs[OURS])
        top = HEADER_HEIGHT + row * TILE
        _text(canvas, f"face {sample.face}", (6, top + 24))
        _text(canvas, sample.category, (6, top + 48))
        _text(canvas, f"classical: {METHOD_TITLES.get(best, 'none').split(' (')[0]}", (6, top + 72), 0.4)
        for col, tile in enumerate(tiles):
            if tile is None:
                continue
            resized = cv2.resize(tile, (TILE, TILE), interpolation=cv2.INTER_AREA if tile.shape[0] > TILE else cv2.INTER_NEAREST)
            canvas[top:top + TILE, LABEL_WIDTH + col * TILE:LABEL_WIDTH + (col + 1) * TILE] = resized
    return canvas


def write_comparison(output: Path, samples: list[GridSample], summary: dict) -> None:
    write_image_atomic(output / "comparison.png", render_comparison(samples, summary))
