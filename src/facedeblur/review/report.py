"""The case report: one document model, rendered as HTML (Jinja2, autoescaped) and as PDF (fpdf2).

Nothing in it depends on when or by whom the export was made, so the same selection over the same outbox,
journal and review marks gives byte-identical files (the PDF's dates come from the manifests).
"""
from __future__ import annotations

import os
import stat
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from .. import __version__
from ..inputs import sha256_of_file
from ..safe_text import display_name

AI_NOTICE = ("Faces in this case are AI-restored: the model infers detail that may not have been in the "
             "footage. Compare every restored face with its original crop before relying on it.")
_MODELS = Path(__file__).resolve().parents[1] / "models"
_model_hashes: dict[tuple[str, int, int], str] = {}


def model_file_sha256(manifest: dict[str, Any]) -> str:
    """SHA-256 of the restorer model file: as recorded in the manifest when it was processed, else (manifests
    older than that record) the bundled model of that file name as found on this server now, and the report
    says which. Only the server's own models folder is looked in: a manifest naming any other path (its
    settings.restorer.model) must not make the server hash, and so reveal, a file of the attacker's choosing."""
    model = manifest.get("model") if isinstance(manifest.get("model"), dict) else {}
    recorded = model.get("sha256")
    if isinstance(recorded, str) and recorded:
        return recorded
    name = os.path.basename(str(model.get("file") or ""))
    path = _MODELS / name
    try:
        info = path.lstat()
    except OSError:
        info = None
    if not name or name in (".", "..") or info is None or not stat.S_ISREG(info.st_mode):
        return f"not available on this server ({display_name(name or 'no model file named')})"
    key = (str(path), info.st_mtime_ns, info.st_size)
    if key not in _model_hashes:
        _model_hashes[key] = sha256_of_file(path)
    return _model_hashes[key]


def _settings_lines(settings: Any, prefix: str = "") -> list[tuple[str, str]]:
    if isinstance(settings, dict):
        lines = []
        for key in sorted(settings):
            lines += _settings_lines(settings[key], f"{prefix}{key}." if isinstance(settings[key], dict) else
                                     f"{prefix}{key}")
        return lines
    shown = "null" if settings is None else str(settings).lower() if isinstance(settings, bool) else settings
    return [(prefix.rstrip("."), display_name(shown))]


def processing_steps(manifest: dict[str, Any]) -> list[dict[str, Any]]:
    """Every stage the footage went through, in order, with the settings that drove it."""
    settings = manifest.get("settings") or {}
    source = manifest.get("input") or {}
    model = manifest.get("model") or {}
    detector = manifest.get("detector") or {}
    summary = manifest.get("summary") or {}
    general = {k: v for k, v in settings.items() if not isinstance(v, dict)}
    return [
        {"name": "1. Decode the input",
         "lines": [("kind", source.get("kind")), ("codec", source.get("codec")), ("frames", source.get("frames")),
                   ("fps", source.get("fps")), ("size", f"{source.get('width')}x{source.get('height')}"),
                   ("rotation", source.get("rotation_degrees")), ("timestamps", source.get("timestamps")),
                   ("audio", source.get("audio"))] + _settings_lines(general)},
        {"name": "2. Detect faces",
         "lines": [("detector", detector.get("name")), ("providers", ", ".join(detector.get("providers") or []))]
         + _settings_lines(settings.get("detector") or {}, "detector.")},
        {"name": "3. Track faces and keep identities apart",
         "lines": [("tracks", summary.get("tracks")), ("identity swaps corrected", summary.get("identity_swaps_corrected")),
                   ("tracks merged by identity", summary.get("tracks_merged")),
                   ("tracks dropped as false", summary.get("tracks_dropped"))]
         + _settings_lines(settings.get("tracker") or {}, "tracker.")},
        {"name": "4. Restore faces (AI model)",
         "lines": [("model", model.get("name")), ("model version", model.get("version")),
                   ("model file", model.get("file")),
                   ("model file SHA-256" if model.get("sha256") else "model file SHA-256 (this server, at export)",
                    model_file_sha256(manifest)),
                   ("working size", model.get("crop_size")), ("providers", ", ".join(model.get("providers") or [])),
                   ("faces restored", summary.get("faces_restored"))]
         + _settings_lines(settings.get("restorer") or {}, "restorer.")},
        {"name": "5. Paste back and write the outputs",
         "lines": _settings_lines(settings.get("output") or {}, "output.")
         + [("outputs", ", ".join(f"{k}={v}" for k, v in sorted((manifest.get("outputs") or {}).items()) if v))]},
    ]


def render_html(document: dict[str, Any], environment) -> str:
    return environment.get_template("report.html").render(case=document, notice=AI_NOTICE)


def _pdf_text(value: Any) -> str:
    """Core PDF fonts are Latin-1: anything else is written escaped (\\u1234), never dropped or guessed."""
    text = display_name("" if value is None else value)
    return text.encode("latin-1", "backslashreplace").decode("latin-1")


def render_pdf(document: dict[str, Any]) -> bytes:
    from fpdf import FPDF
    from fpdf.enums import XPos, YPos

    pdf = FPDF(format="A4")
    pdf.set_creation_date(document["dated"])
    pdf.set_producer(f"facedeblur {__version__}")
    pdf.set_title(f"facedeblur case {document['case_id']}")
    pdf.set_auto_page_break(True, margin=15)
    pdf.add_page()

    def line(text: Any, size: float = 9, bold: bool = False, mono: bool = False) -> None:
        pdf.set_font("Courier" if mono else "Helvetica", "B" if bold else "", size)
        pdf.multi_cell(0, size * 0.5, _pdf_text(text), new_x=XPos.LMARGIN, new_y=YPos.NEXT, wrapmode="CHAR")

    line(f"facedeblur case {document['case_id']}", 16, bold=True)
    line(AI_NOTICE, 10, bold=True)
    line(f"Made by facedeblur {document['tool_version']}. Selection: " +
         ", ".join(f"job {s['job']} track {s['track']}" for s in document["selection"]))
    for job in document["jobs"]:
        pdf.ln(3)
        line(f"Job {job['id']}: {job['rel_path']}", 12, bold=True)
        line(f"Input SHA-256: {job['input_sha256']}", mono=True)
        line(f"Input in this export: {job['input_included']}")
        line(f"Manifest notice: {job['notice']}")
        for step in job["steps"]:
            line(step["name"], 10, bold=True)
            for key, value in step["lines"]:
                line(f"  {key}: {value}", 8)
        line("Output SHA-256s", 10, bold=True)
        for output in job["outputs"]:
            line(f"  {output['sha256']}  {output['name']}", 7, mono=True)
        for track in job["tracks"]:
            line(f"Track {track['id']}: {track['start_time']}-{track['end_time']} s, {track['detections']} "
                 f"detections, sharpness {track['sharpness_before']} -> {track['sharpness_after']}", 10, bold=True)
            mark = track["mark"]
            line(f"  Review: {mark['status']} (version {mark['version']}, by {mark['updated_by'] or '-'}, "
                 f"{mark['updated_at'] or '-'}) note: {mark['note'] or '-'}")
            for entry in track["history"]:
                line(f"  audit #{entry['id']} {entry['at']} {entry['who']}: {entry['before']} -> {entry['after']}", 8)
    pdf.ln(3)
    line("Files in this export (SHA-256)", 12, bold=True)
    for entry in document["files"]:
        line(f"{entry['sha256']}  {entry['path']}", 7, mono=True)
    return bytes(pdf.output())


def utc_text(seconds: float | None) -> str:
    if not seconds:
        return ""
    return datetime.fromtimestamp(seconds, timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
