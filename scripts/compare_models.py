#!/usr/bin/env python3
"""Ship by measurement: two `facedeblur evaluate` reports of the same faces and damage, side by side.

    .venv/bin/python scripts/compare_models.py OLD/report.json NEW/report.json [--markdown OUT.md]

Prints one row per tier and per case (input PSNR, each model's gain, the difference, dlib same-person share
input / old / new) and the verdict of issue 20's shipping rule. The new model ships only if

* it gains more than the old one in every tier, and in every case (category x tier) except by less than
  NOISE_FLOOR_DB and less than twice the case's paired standard error over its faces (reports written
  since evaluate records PSNR per face; a tie that close is a coin toss on 40 faces, and is listed as a note);
* its dlib match rate is not below the input's in any category (the issue's rule: the faces of the
  category's tiers pooled, 120 with the usual 40 faces a case);
* its mean dlib distance to the clean face is not above the input's in any case: identity is never worse
  on average anywhere.

A case whose match rate alone dips below the input's is listed as a note, not a reason: with 40 faces one
face crossing dlib's 0.6 threshold moves it by 2.5 points, while the mean distance, which every face moves,
is the steadier sign of identity lost. Exit status 0 when it may ship, 1 when not, 2 when the reports are
not comparable.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


NOISE_FLOOR_DB = 0.05


def _paired_standard_error(before: dict, after: dict) -> float | None:
    """The standard error of the new model's mean PSNR advantage in one case, face against face."""
    old_faces = before["methods"]["ours"].get("psnr_by_face")
    new_faces = after["methods"]["ours"].get("psnr_by_face")
    if not old_faces or not new_faces or len(old_faces) != len(new_faces) or len(old_faces) < 2:
        return None
    differences = [n - o for n, o in zip(new_faces, old_faces)]
    mean = sum(differences) / len(differences)
    variance = sum((d - mean) ** 2 for d in differences) / (len(differences) - 1)
    return (variance / len(differences)) ** 0.5


def _model(report: dict) -> str:
    return f"{report['model']['name']} {report['model']['version']}"


def _dlib(entry: dict, method: str, key: str = "dlib_match") -> float | None:
    return entry[method].get(key) if method in entry else entry["methods"][method].get(key)


def _pooled_matches(report: dict, method: str) -> dict[str, tuple[int, int]]:
    """Per category: (faces dlib calls the same person, faces scored), over the category's tiers."""
    pooled: dict[str, tuple[int, int]] = {}
    for case, entry in report["categories"].items():
        scores = entry["methods"][method]
        if scores.get("dlib_match") is None:
            continue
        category = case.split("/")[0]
        matched, count = pooled.get(category, (0, 0))
        pooled[category] = (matched + round(scores["dlib_match"] * scores["n"]), count + scores["n"])
    return pooled


def _share(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.0f}"


def compare(old: dict, new: dict) -> tuple[list[str], list[str], list[str]]:
    """The markdown table, the reasons not to ship (empty: ship) and notes that do not stop it."""
    same = ("faces", "seed")
    if any(old[key] != new[key] for key in same) or old["categories"].keys() != new["categories"].keys():
        raise ValueError("the reports score different faces, seeds or cases; run evaluate with the same "
                         "arguments for both models")
    old_name, new_name = _model(old), _model(new)
    lines = [f"| scope | input PSNR | {old_name} gain | {new_name} gain | difference | dlib same person: "
             f"input / old / new (%) |", "|---|---|---|---|---|---|"]
    reasons: list[str] = []
    notes: list[str] = []
    rows = [(f"**{tier}**", old["severities"][tier], new["severities"][tier]) for tier in old["severities"]]
    rows.append(("**all**", old["overall"], new["overall"]))
    rows += [(case, old["categories"][case], new["categories"][case]) for case in old["categories"]]
    for scope, before, after in rows:
        methods_before = before.get("methods", before)
        difference = after["gain_db"] - before["gain_db"]
        dlib_input, dlib_old, dlib_new = (_dlib(before, "input"), _dlib(before, "ours"), _dlib(after, "ours"))
        lines.append(f"| {scope} | {methods_before['input']['psnr']:.2f} | {before['gain_db']:+.2f} | "
                     f"{after['gain_db']:+.2f} | {difference:+.2f} | "
                     f"{_share(dlib_input)} / {_share(dlib_old)} / {_share(dlib_new)} |")
        if scope != "**all**" and difference <= 0:
            error = None if scope.startswith("**") else _paired_standard_error(before, after)
            if error is not None and -difference < NOISE_FLOOR_DB and -difference < 2 * error:
                notes.append(f"{scope}: gains {difference:+.3f} dB less than {old_name}, within the faces' noise "
                             f"(paired standard error {error:.3f} dB)")
            else:
                reasons.append(f"{scope.strip('*')}: gains {difference:+.2f} dB less than {old_name}")
        if scope.startswith("**"):
            continue
        distance_input, distance_new = _dlib(before, "input", "dlib_distance"), _dlib(after, "ours", "dlib_distance")
        if dlib_input is not None and dlib_new is not None and dlib_new < dlib_input:
            notes.append(f"{scope}: dlib same person {_share(dlib_new)} % against the input's {_share(dlib_input)} % "
                         f"(mean distance {distance_new:.3f} against the input's {distance_input:.3f})")
        if distance_input is not None and distance_new is not None and distance_new > distance_input:
            reasons.append(f"{scope}: mean dlib distance {distance_new:.3f} is above the input's {distance_input:.3f}")
    inputs, news = _pooled_matches(old, "input"), _pooled_matches(new, "ours")
    lines += ["", "| category (tiers pooled) | dlib same person: input | new |", "|---|---|---|"]
    for category, (matched_input, count) in inputs.items():
        if category not in news:
            continue
        matched_new, count_new = news[category]
        lines.append(f"| {category} | {matched_input}/{count} | {matched_new}/{count_new} |")
        if matched_new / count_new < matched_input / count:
            reasons.append(f"{category}: dlib same person {matched_new}/{count_new} is below the input's "
                           f"{matched_input}/{count}")
    return lines, reasons, notes


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("old", type=Path)
    parser.add_argument("new", type=Path)
    parser.add_argument("--markdown", type=Path, help="also write the table and verdict here")
    args = parser.parse_args()
    old, new = (json.loads(path.read_text()) for path in (args.old, args.new))
    try:
        lines, reasons, notes = compare(old, new)
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    verdict = (f"verdict: {_model(new)} may ship: it gains more than {_model(old)} in every tier and in every case "
               "but ties within the faces' noise (notes), "
               "dlib's match rate is not below the input's in any category and its mean distance not above the "
               "input's in any case" if not reasons else
               f"verdict: {_model(new)} does not ship ({len(reasons)} reasons):\n" + "\n".join(f"- {r}" for r in reasons))
    if notes:
        verdict += "\nnotes (not reasons):\n" + "\n".join(f"- {note}" for note in notes)
    text = "\n".join(lines) + "\n\n" + verdict + "\n"
    print(text)
    if args.markdown:
        args.markdown.write_text(text)
    return 0 if not reasons else 1


if __name__ == "__main__":
    sys.exit(main())
