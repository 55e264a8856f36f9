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


def portrait_label(frames_merged: list[int]) -> str:
    count = len(frames_merged)
    return f"Fused portrait of {count} frame{'' if count == 1 else 's'}, AI-restored"


def person_text(person: dict[str, Any] | None) -> str:
    """What the report says of a track that reviewers merged with others into one person; '' for none."""
    if not person:
        return ""
    merges = "; ".join(f"track {m['track']} merged into track {m['into']} by {m['by']}, {m['at']}"
                       for m in person["merges"])
    return (f"one person with tracks {', '.join(str(t) for t in person['tracks'])} (a reviewer's judgement, "
            f"not the pipeline's: {merges})")


def render_html(document: dict[str, Any], environment) -> str:
    return environment.get_template("report.html").render(case=document, notice=AI_NOTICE)


def _pdf_text(value: Any) -> str:
    """Core PDF fonts are Latin-1: anything else is written escaped (\\u1234), never dropped or guessed."""
    text = display_name("" if value is None else value) if not isinstance(value, str) or "\n" not in value else \
        "\n".join(display_name(part) for part in value.split("\n"))
    return text.encode("latin-1", "backslashreplace").decode("latin-1")


def wrapped_hash(digest: str, width: int = 32) -> str:
    """A SHA-256 in lines of `width` hex digits: whole, and broken only where the reader can see it is."""
    return "\n".join(digest[i:i + width] for i in range(0, len(digest), width)) if digest else "-"


def seconds_text(value: Any) -> str:
    return f"{value:.3f} s" if isinstance(value, (int, float)) and not isinstance(value, bool) else "-"


def render_pdf(document: dict[str, Any], root: Path) -> bytes:
    """The PDF report; `root` is the export folder the document's image paths are relative to."""
    return _CaseReport(document, root).build()


class _CaseReport:
    """A4 portrait, Amped-FIVE-like: a cover page, then per job its input and model, then per face the context
    frame, the original crop and the AI-restored face with their SHA-256s; the processing settings and every
    file's SHA-256 in appendices. The notice is in every page's header; every page says 'page N of M'."""

    MARGIN = 15.0
    INK, MUTED, RULE, BAND, STRIPE, WARN_FILL, WARN_INK = (20, 24, 31), (95, 99, 107), (200, 203, 208), \
        (228, 231, 235), (246, 247, 249), (255, 243, 196), (92, 67, 0)

    def __init__(self, document: dict[str, Any], root: Path):
        from fpdf import FPDF

        self.document, self.root = document, root
        report = self

        class Pages(FPDF):
            def header(self) -> None:
                report._header()

            def footer(self) -> None:
                report._footer()

        self.pdf = Pages(format="A4")
        self.pdf.set_creation_date(document["dated"])
        self.pdf.set_producer(f"facedeblur {__version__}")
        self.pdf.set_creator(f"facedeblur {__version__}")
        self.pdf.set_title(_pdf_text(f"{document.get('name') or 'Case'}: face evidence report"))
        self.pdf.set_author(_pdf_text(document.get("investigator") or ""))
        self.pdf.set_subject(_pdf_text(document.get("purpose") or ""))
        self.pdf.set_margins(self.MARGIN, 22, self.MARGIN)
        self.pdf.set_auto_page_break(True, margin=18)
        self.width = self.pdf.epw

    # ---- page furniture --------------------------------------------------------------------------------
    def _header(self) -> None:
        pdf = self.pdf
        pdf.set_xy(self.MARGIN, 8)
        pdf.set_font("Helvetica", "B", 7.5)
        pdf.set_text_color(*self.WARN_INK)
        pdf.set_fill_color(*self.WARN_FILL)
        pdf.cell(self.width, 6, "AI-RESTORED FACES: the model infers detail. Compare each with its original crop.",
                 fill=True, align="C")
        pdf.set_text_color(*self.INK)
        pdf.set_y(22)

    def _footer(self) -> None:
        pdf = self.pdf
        pdf.set_y(-13)
        pdf.set_draw_color(*self.RULE)
        pdf.line(self.MARGIN, pdf.get_y(), self.MARGIN + self.width, pdf.get_y())
        pdf.set_font("Helvetica", "", 7.5)
        pdf.set_text_color(*self.MUTED)
        pdf.set_y(-11.5)
        pdf.cell(self.width * 0.75, 5, _pdf_text(f"facedeblur case export {self.document['case_id']}"))
        pdf.cell(self.width * 0.25, 5, f"page {pdf.page_no()} of {{nb}}", align="R")
        pdf.set_text_color(*self.INK)

    # ---- building blocks -------------------------------------------------------------------------------
    def wrap(self, text: str, width: float) -> list[str]:
        """`text` in lines no wider than `width` (mm) in the current font, broken between words; only a word
        wider than a whole line (a long path) is broken inside, after a '/', '_' or '.' where it has one.
        (fpdf2's own multi_cell does this too, but an order of magnitude slower, which a report of hundreds of
        faces and settings feels.)"""
        width_of = self.pdf.get_string_width
        lines: list[str] = []
        for paragraph in text.split("\n"):
            line = ""
            for word in paragraph.split(" "):
                candidate = f"{line} {word}" if line else word
                if width_of(candidate) <= width:
                    line = candidate
                    continue
                if line:
                    lines.append(line)
                line = word
                while width_of(line) > width:
                    cut = self._longest_prefix(line, width)
                    lines.append(line[:cut])
                    line = line[cut:]
            lines.append(line)
        return lines

    def _longest_prefix(self, word: str, width: float) -> int:
        width_of = self.pdf.get_string_width
        fits = max(1, next((n for n in range(len(word), 0, -1) if width_of(word[:n]) <= width), 1))
        breaks = [i + 1 for i in range(fits) if word[i] in "/_.-"]
        return breaks[-1] if breaks and breaks[-1] > fits // 2 else fits

    def lines_at(self, x: float, width: float, lines: list[str], height: float, align: str = "L") -> None:
        for line in lines:
            self.pdf.set_x(x)
            self.pdf.cell(width, height, line, align=align, new_x="LEFT", new_y="NEXT")

    def text(self, value: Any, size: float = 9, style: str = "", colour: tuple[int, int, int] | None = None,
             family: str = "Helvetica", height: float | None = None) -> None:
        pdf = self.pdf
        pdf.set_font(family, style, size)
        pdf.set_text_color(*(colour or self.INK))
        self.lines_at(self.MARGIN, self.width, self.wrap(_pdf_text(value), self.width - 2 * pdf.c_margin),
                      height or size * 0.47)
        pdf.set_text_color(*self.INK)

    def heading(self, value: str, level: int = 0, outline: bool = True) -> None:
        """A heading, kept with at least 30 mm of what follows; `outline`: also a bookmark in the PDF."""
        pdf = self.pdf
        size = (15, 12, 10.5)[level]
        if pdf.will_page_break(size * 0.5 + 30):
            pdf.add_page()
        pdf.ln(2 if level else 4)
        if outline:
            pdf.start_section(_pdf_text(value), level=level)
        self.text(value, size, "B", height=size * 0.5)
        if level == 0:
            pdf.set_draw_color(*self.INK)
            pdf.set_line_width(0.4)
            pdf.line(self.MARGIN, pdf.get_y() + 0.5, self.MARGIN + self.width, pdf.get_y() + 0.5)
            pdf.set_line_width(0.2)
        pdf.ln(2)

    def facts(self, rows: list[tuple[str, Any]], key_width: float = 45, size: float = 8.5,
              mono_keys: tuple[str, ...] = (), heading: tuple[str, str] | None = None,
              mono_key_column: bool = False) -> None:
        """A two-column table of (label, value), striped; values wrap between words, hashes in monospace. A row
        is never split over two pages."""
        pdf = self.pdf
        line, pad = size * 0.47, 1.0
        value_width = self.width - key_width
        if heading:
            pdf.set_fill_color(*self.BAND)
            pdf.set_font("Helvetica", "B", size)
            pdf.set_x(self.MARGIN)
            pdf.cell(key_width, line + 2 * pad, heading[0], fill=True)
            pdf.cell(value_width, line + 2 * pad, heading[1], fill=True, new_x="LMARGIN", new_y="NEXT")
        for index, (key, value) in enumerate(rows):
            mono = key in mono_keys
            pdf.set_font("Courier" if mono_key_column else "Helvetica", "" if mono_key_column else "B",
                         size - (0.8 if mono_key_column else 0))
            key_lines = self.wrap(_pdf_text(key), key_width - 2 * pdf.c_margin)
            value_font = ("Courier", "", size - 0.8) if mono else ("Helvetica", "", size)
            pdf.set_font(*value_font)
            value_lines = self.wrap(_pdf_text("-" if value in (None, "") else value), value_width - 2 * pdf.c_margin)
            height = max(len(key_lines), len(value_lines)) * line + 2 * pad
            if pdf.will_page_break(height):
                pdf.add_page()
            top = pdf.get_y()
            if index % 2 == 0:
                pdf.set_fill_color(*self.STRIPE)
                pdf.rect(self.MARGIN, top, self.width, height, style="F")
            pdf.set_draw_color(*self.RULE)
            pdf.line(self.MARGIN, top + height, self.MARGIN + self.width, top + height)
            pdf.set_font("Courier" if mono_key_column else "Helvetica", "" if mono_key_column else "B",
                         size - (0.8 if mono_key_column else 0))
            pdf.set_y(top + pad)
            self.lines_at(self.MARGIN, key_width, key_lines, line)
            pdf.set_font(*value_font)
            pdf.set_y(top + pad)
            self.lines_at(self.MARGIN + key_width, value_width, value_lines, line)
            pdf.set_y(top + height)
        pdf.set_font("Helvetica", "", size)
        pdf.ln(2)

    def notice_box(self, value: str) -> None:
        pdf = self.pdf
        pdf.set_fill_color(*self.WARN_FILL)
        pdf.set_draw_color(201, 161, 0)
        pdf.set_font("Helvetica", "B", 9.5)
        pdf.set_text_color(*self.WARN_INK)
        lines = self.wrap(_pdf_text(value), self.width - 6 - 2 * pdf.c_margin)
        top = pdf.get_y()
        pdf.rect(self.MARGIN, top, self.width, len(lines) * 5 + 5, style="DF")
        pdf.set_y(top + 2.5)
        self.lines_at(self.MARGIN + 3, self.width - 6, lines, 5)
        pdf.set_y(top + len(lines) * 5 + 5)
        pdf.set_text_color(*self.INK)
        pdf.ln(3)

    # ---- the report ----------------------------------------------------------------------------------
    def build(self) -> bytes:
        document, pdf = self.document, self.pdf
        pdf.add_page()
        self.cover()
        for job in document["jobs"]:
            pdf.add_page()
            self.job(job)
        pdf.add_page()
        self.heading("Appendix A: processing history")
        self.text("Every stage each job's footage went through, in order, with every setting that drove it, as "
                  "recorded in the job's manifest.json (included in this export).", 8.5, colour=self.MUTED)
        pdf.ln(2)
        for job in document["jobs"]:
            self.heading(f"Job {job['id']}: {job['rel_path']}", 1)
            for step in job["steps"]:
                self.heading(step["name"], 2)
                self.facts([(key, value) for key, value in step["lines"]], key_width=62, size=7.5,
                           mono_keys=("model file SHA-256", "model file SHA-256 (this server, at export)"))
        pdf.add_page()
        self.heading("Appendix B: files in this export")
        self.text("sha256sum -c SHA256SUMS in the export folder checks each of these (and this report) again.",
                  8.5, colour=self.MUTED)
        pdf.ln(2)
        self.facts([(entry["sha256"], entry["path"]) for entry in document["files"]], key_width=90, size=7.2,
                   heading=("SHA-256", "file"), mono_key_column=True)
        return bytes(pdf.output())

    def cover(self) -> None:
        document, pdf = self.document, self.pdf
        pdf.ln(6)
        self.text("FACE EVIDENCE REPORT", 9, "B", colour=self.MUTED)
        pdf.ln(1)
        pdf.start_section(_pdf_text(document.get("name") or "Case"), level=0)
        self.text(document.get("name") or "Case", 20, "B", height=9)
        pdf.ln(4)
        faces = sum(len(track["images"]) for job in document["jobs"] for track in job["tracks"])
        tracks = sum(len(job["tracks"]) for job in document["jobs"])
        self.facts([
            ("Case", document.get("name")),
            ("Investigator", document.get("investigator")),
            ("Purpose", document.get("purpose")),
            ("Export", document["case_id"]),
            ("Contents", f"{faces} faces from {tracks} tracks in {len(document['jobs'])} "
                         f"job{'s' if len(document['jobs']) != 1 else ''}"),
            ("Sources", "; ".join(f"job {job['id']}: {job['rel_path']}" for job in document["jobs"])),
            ("Processed", f"facedeblur; newest result {document['dated'].strftime('%Y-%m-%d %H:%M:%S UTC')}"),
            ("Report made by", f"facedeblur {document['tool_version']} (nothing in it depends on when or by whom "
                               "it was exported: the same tracks and fields give the same bytes)"),
        ], key_width=38, size=9.5)
        pdf.ln(2)
        self.notice_box(AI_NOTICE)
        self.heading("How to read this report", 1)
        self.text("For each exported face: the whole frame it was found in, with the face's box drawn; the original "
                  "crop from the footage; and the AI-restored face. Under each picture is the SHA-256 of the file "
                  "in the export folder that it shows, so a printed copy can be matched to the files. Times are "
                  "seconds from the first frame of the clip; a wall-clock time is given where the input file "
                  "records when the recording began, as the recorder's own clock set it.", 9)
        pdf.ln(2)
        self.text("Each job's section names its input (and its SHA-256), the face detector and the restoration "
                  "model with its version and file hash; Appendix A lists every processing setting, Appendix B "
                  "every file of the export with its SHA-256. The review mark of each track, with its full audit "
                  "history, is shown beside it.", 9)

    def job(self, job: dict[str, Any]) -> None:
        source = job.get("source") or {}
        model = job.get("model") or {}
        self.heading(f"Job {job['id']}: {job['rel_path']}")
        size = f"{source.get('width')}x{source.get('height')}" if source.get("width") else "-"
        self.facts([
            ("Input", job["rel_path"]),
            ("Input SHA-256 (journal)", job["input_sha256"]),
            ("Input SHA-256 (manifest)", job.get("manifest_input_sha256")),
            ("Original in this export", job["input_included"]),
            ("Footage", f"{source.get('kind') or '-'}, {source.get('codec') or '-'}, {size}, "
                        f"{source.get('frames') or '-'} frames at {source.get('fps') or '-'} fps"),
            ("Recording began", job.get("recording_start") or "-"),
            ("  (source)", job.get("recording_source")),
            ("Processed by", f"{(job.get('tool') or {}).get('name', '')} {(job.get('tool') or {}).get('version', '')}"
                             f", {job.get('created_utc') or '-'}"),
            ("Face detector", job.get("detector")),
            ("Restoration model", f"{model.get('name') or '-'} version {model.get('version') or '-'} "
                                  f"({model.get('file') or '-'})"),
            ("Model file SHA-256", model.get("sha256")),
            ("Context frames from", job.get("context_source")),
        ], mono_keys=("Input SHA-256 (journal)", "Input SHA-256 (manifest)", "Model file SHA-256"))
        self.text(job["notice"], 8, "I", colour=self.MUTED)
        self.pdf.ln(1)
        self.heading("Output files", 2, outline=False)
        self.facts([(output["name"], output["sha256"]) for output in job["outputs"]], key_width=45, size=7.5,
                   mono_keys=tuple(output["name"] for output in job["outputs"]))
        for track in job["tracks"]:
            self.track(job, track)

    def track(self, job: dict[str, Any], track: dict[str, Any]) -> None:
        mark = track["mark"]
        self.heading(f"Job {job['id']}, track {track['id']}", 1)
        self.facts([
            ("In the clip", f"{seconds_text(track['start_time'])} to {seconds_text(track['end_time'])}, "
                            f"{track['detections']} detections"),
            ("Sharpness", f"{track['sharpness_before']} in the footage, {track['sharpness_after']} restored "
                          "(mean Laplacian variance of the aligned face crop; a measure, not a verdict)"),
            ("Review mark", f"{mark['status']} (version {mark['version']}, by {mark['updated_by'] or '-'}, "
                            f"{mark['updated_at'] or '-'})"),
            ("Note", mark["note"] or "-"),
        ] + ([("Same person", track["person"])] if track.get("person") else [])
          + [(f"Audit #{entry['id']}", f"{entry['at']} {entry['who']}: {entry['before']} -> {entry['after']}")
             for entry in track["history"]], key_width=30, size=8.5)
        if track.get("portrait"):
            self.portrait(job, track, track["portrait"])
        for number, image in enumerate(track["images"], 1):
            self.face(job, track, number, image)

    def portrait(self, job: dict[str, Any], track: dict[str, Any], portrait: dict[str, Any]) -> None:
        """The track's fused portrait first: the reference frame's original crop beside the AI-restored fusion,
        each with its file's SHA-256."""
        pdf = self.pdf
        crop, gap = 60.0, 6.0
        if pdf.will_page_break(8 + crop + 6 + 3 * 4.4 + 14):
            pdf.add_page()
        frames = ", ".join(str(n) for n in portrait["frames_merged"]) or "-"
        pdf.set_fill_color(*self.BAND)
        pdf.set_font("Helvetica", "B", 9)
        pdf.set_x(self.MARGIN)
        pdf.cell(self.width, 6, _pdf_text(f"Job {job['id']}, track {track['id']}: {portrait['label']}"),
                 fill=True, new_x="LMARGIN", new_y="NEXT")
        pdf.ln(2)
        top = pdf.get_y()
        pictures = [(portrait.get("original") or {}, f"Original crop, frame {portrait.get('frame')}"),
                    (portrait.get("restored") or {}, portrait["label"])]
        x = self.MARGIN
        for entry, caption in pictures:
            pdf.set_draw_color(*self.RULE)
            if entry.get("path"):
                pdf.image(str(self.root / entry["path"]), x=x, y=top, w=crop, h=crop, keep_aspect_ratio=True)
            pdf.rect(x, top, crop, crop)
            pdf.set_xy(x, top + crop + 1)
            pdf.set_font("Helvetica", "B", 7.5)
            self.lines_at(x, crop, self.wrap(_pdf_text(caption), crop), 3.6)
            x += crop + gap
        pdf.set_y(top + crop + 6)
        self.facts([(caption, f"{entry['sha256']}  {entry['path'].rsplit('/', 1)[-1]}")
                    for entry, caption in pictures if entry.get("sha256")],
                   key_width=44, size=7.2, mono_keys=tuple(caption for _, caption in pictures),
                   heading=("SHA-256 of", "the file in this export"))
        self.text(f"The restored portrait is one restoration of frames {frames} aligned and merged around frame "
                  f"{portrait.get('frame')}: the model infers detail, as in every restored face.", 7, "I",
                  colour=self.MUTED)
        pdf.ln(4)

    def face(self, job: dict[str, Any], track: dict[str, Any], number: int, image: dict[str, Any]) -> None:
        """One exhibit, kept whole on one page: the caption; the context frame (left) and the two crops (right);
        under them each picture's file and its SHA-256 on one line, so a printed page matches the files."""
        pdf = self.pdf
        gap, crop = 4.0, 44.0
        context_width = self.width - 2 * crop - 2 * gap
        context = image.get("context") or {}
        context_height = context_width * 9 / 16
        if context.get("path"):
            info = _image_size(self.root / context["path"])
            context_height = context_width * info[1] / info[0] if info else context_height
        height = 8 + max(context_height, crop) + 6 + 3 * 4.4 + 10
        if pdf.will_page_break(height):
            pdf.add_page()
        when = f"frame {image.get('frame')}, {seconds_text(image.get('time'))} in the clip"
        if image.get("wall_clock"):
            when += f", {image['wall_clock']} wall clock"
        pdf.set_fill_color(*self.BAND)
        pdf.set_font("Helvetica", "B", 9)
        pdf.set_x(self.MARGIN)
        pdf.cell(self.width, 6, _pdf_text(f"Job {job['id']}, track {track['id']}, face {number} of "
                                          f"{len(track['images'])}: {when}"), fill=True, new_x="LMARGIN", new_y="NEXT")
        pdf.ln(2)
        top = pdf.get_y()
        pictures = [(context_width, context_height, context, "Context frame (face box drawn)"),
                    (crop, crop, image.get("original") or {}, "Original crop"),
                    (crop, crop, image.get("restored") or {}, "AI-restored")]
        x, bottom = self.MARGIN, top
        for width, box_height, entry, caption in pictures:
            pdf.set_draw_color(*self.RULE)
            if entry.get("path"):
                pdf.image(str(self.root / entry["path"]), x=x, y=top, w=width, h=box_height, keep_aspect_ratio=True)
                pdf.rect(x, top, width, box_height)
            else:
                pdf.set_fill_color(*self.BAND)
                pdf.rect(x, top, width, box_height, style="DF")
                pdf.set_xy(x + 1, top + 2)
                pdf.set_font("Helvetica", "I", 7.5)
                self.lines_at(x + 1, width - 2, self.wrap(_pdf_text(entry.get("problem") or "not available"),
                                                          width - 4), 3.6)
            pdf.set_xy(x, top + box_height + 1)
            pdf.set_font("Helvetica", "B", 7.5)
            self.lines_at(x, width, [caption], 3.6)
            bottom = max(bottom, pdf.get_y())
            x += width + gap
        pdf.set_y(bottom + 1)
        self.facts([(caption, f"{entry['sha256']}  {entry['path'].rsplit('/', 1)[-1]}")
                    for _, _, entry, caption in pictures if entry.get("sha256")],
                   key_width=44, size=7.2, mono_keys=tuple(caption for *_, caption in pictures),
                   heading=("SHA-256 of", "the file in this export"))
        if context.get("source"):
            self.text(f"Context frame from {context['source']}. This frame's quality within the track: "
                      f"{image.get('quality')} (0-1: sharpness, size, frontalness, detector score).", 7, "I",
                      colour=self.MUTED)
        pdf.ln(4)


def _image_size(path: Path) -> tuple[int, int] | None:
    from PIL import Image   # fpdf2's own dependency; reads the header only

    try:
        with Image.open(path) as image:
            return image.size
    except OSError:
        return None


def utc_text(seconds: float | None) -> str:
    if not seconds:
        return ""
    return datetime.fromtimestamp(seconds, timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
