"""Case export: chosen tracks from any jobs as one folder and one zip, with the evidence to trust them.

Layout of EXPORTS/case-<id>/ (and the same tree in case-<id>.zip):
    report.html, report.pdf      every processing step, model and its file hash, settings, hashes, marks
    SHA256SUMS                   `sha256sum -c` checks every other file
    selection.json               the selection the case was made from
    jobs/j<id>/manifest.json     the pipeline's manifest, byte for byte
    jobs/j<id>/input/<name>      the original input, or input.sha256 when it is too large or gone
    jobs/j<id>/track-<n>/...     the original crops beside the restored faces

The case id is a hash of the selection, and nothing written depends on the time of the export or on file
system order: the same selection over the same outputs and marks gives the same bytes (zip entries carry a
fixed date and mode). The folder is built under a hidden name and renamed into place.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import secrets
import shutil
import threading
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from .. import __version__
from ..errors import FacedeblurError
from ..inputs import sha256_of_file, sha256_of_stream
from ..safe_text import display_name
from . import evidence, report, safe_files
from .catalog import Catalog
from .store import Mark, ReviewStore

ZIP_DATE = (1980, 1, 1, 0, 0, 0)
CASE_ID = re.compile(r"^[0-9a-f]{16}$")
CHUNK = 1 << 20


_case_locks: dict[str, threading.Lock] = {}
_case_locks_guard = threading.Lock()


@contextmanager
def case_lock(case_id: str) -> Iterator[None]:
    """One export of a case at a time, and no reader opening its files while an export swaps them in: two
    exports of one selection would otherwise rename the same folders under each other (a 500, a 404 for a
    viewer, an old copy left behind, the other export's zip hash in the audit row)."""
    with _case_locks_guard:
        lock = _case_locks.setdefault(case_id, threading.Lock())
    with lock:
        yield


class ExportError(FacedeblurError):
    """The selection cannot be exported; the message says which job or track and why."""


@dataclass(frozen=True)
class CaseResult:
    case_id: str
    folder: Path
    zip_path: Path
    zip_sha256: str


def case_id_of(selection: list[tuple[int, int]], details: dict[str, str] | None = None,
               people: list[dict[str, Any]] | None = None) -> str:
    """A hash of what the export holds: the tracks, the name, investigator and purpose printed in it, and the
    reviewers' merges of its tracks (`people`), so that a merge made later exports anew instead of replacing
    an export that said otherwise. Without merges the id is what it was before merges existed."""
    text = json.dumps([sorted(set(selection)), details or {}] + ([people] if people else []), sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def people_of(store: ReviewStore, selection: list[tuple[int, int]]) -> list[dict[str, Any]]:
    """Each selected track that reviewers merged with others of its job into one person: its job, the person's
    tracks, and the live merges that made them one (who, when), sorted so the same state gives the same list."""
    people = []
    for job_id in sorted({job for job, _ in selection}):
        groups = store.person_groups(job_id)
        if not groups:
            continue
        merges = store.merges_for_job(job_id)
        for track_id in sorted(track for job, track in selection if job == job_id):
            members = next((tracks for tracks in groups.values() if track_id in tracks), None)
            if members is None:
                continue
            people.append({"job": job_id, "track": track_id, "tracks": members,
                           "merges": [{"track": m.track_id, "into": m.into_track, "by": m.merged_by,
                                       "at": report.utc_text(m.merged_at)}
                                      for m in sorted(merges, key=lambda m: (m.track_id, m.into_track))
                                      if m.track_id in members]})
    return people


def _file_name(name: str) -> str:
    """A plain file name for the export (the input's own name may hold anything)."""
    cleaned = re.sub(r"[^\w.\-]+", "_", display_name(name)).strip("._")
    return cleaned[:150] or "input"


def _copy_fd(fd: int, target: Path, limit: int | None = None) -> str:
    """Copy what the descriptor holds (at most `limit` bytes) to `target`; returns the SHA-256 of the copy."""
    digest = hashlib.sha256()
    left = limit
    with os.fdopen(fd, "rb") as source, open(target, "wb") as sink:
        while left is None or left > 0:
            block = source.read(CHUNK if left is None else min(CHUNK, left))
            if not block:
                break
            if left is not None:
                left -= len(block)
            digest.update(block)
            sink.write(block)
    return digest.hexdigest()


def sha256_fd(fd: int) -> str:
    with os.fdopen(fd, "rb") as source:
        return sha256_of_stream(source)


def _copy_input(job: dict[str, Any], target_dir: Path, max_bytes: int) -> tuple[str, str, Path | None]:
    """Copy the original input when it is one file within the size limit and still has the content that was
    processed; otherwise write its SHA-256. Returns (what the report says, sha256 as recorded, the copy)."""
    recorded = job.get("sha256") or ""
    target_dir.mkdir(parents=True)
    reason = ""
    if job.get("kind") != "file":
        reason = "a folder of frames: listed by its SHA-256 only"
    elif job.get("size", 0) > max_bytes:
        reason = f"larger than serve.export_max_input_mb ({job['size']} bytes): listed by its SHA-256 only"
    else:
        path = Path(job["path"])
        target = target_dir / _file_name(job["name"])
        try:
            fd = safe_files.open_recorded_input(path, int(job.get("size") or 0))
        except safe_files.InputUnusable as exc:
            reason = f"{exc}: listed by its SHA-256 only"
        else:
            copied = _copy_fd(fd, target, limit=int(job.get("size") or 0))
            if copied == recorded:
                return f"yes: input/{target.name}", recorded, target
            target.unlink()
            reason = f"changed since it was processed (now {copied}): listed by its SHA-256 only"
    (target_dir / "input.sha256").write_text(f"{recorded}  {display_name(job['name'])}\n# {reason}\n",
                                             encoding="utf-8")
    return f"no, {reason} (input/input.sha256)", recorded, None


def _recording_start(job: dict[str, Any], kind: str | None, input_copy: Path | None) -> evidence.RecordingStart:
    """The recording's start from the export's checked copy of the input, else from the inbox file while it is
    still a regular file of the processed size (its metadata only; the report says the hash was not re-checked)."""
    if input_copy is not None or kind != "video" or job.get("kind") != "file":
        return evidence.recording_start(input_copy, kind, "not available: the original input is not in this export")
    try:
        fd = safe_files.open_recorded_input(Path(job["path"]), int(job.get("size") or 0))
    except safe_files.InputUnusable as exc:
        return evidence.RecordingStart(None, f"not available: the original input is {exc}")
    try:
        start = evidence.recording_start(Path(f"/proc/self/fd/{fd}"), kind, "")
    finally:
        os.close(fd)
    if start.when is None:
        return start
    return evidence.RecordingStart(start.when, f"{start.source}; read from the inbox file of the processed size, "
                                               "whose SHA-256 was not checked again at export")


def _mark_dict(mark: Mark) -> dict[str, Any]:
    return {"status": mark.status, "note": mark.note, "version": mark.version, "updated_by": mark.updated_by,
            "updated_at": report.utc_text(mark.updated_at)}


def build_case(catalog: Catalog, store: ReviewStore, selection: list[tuple[int, int]], exports: Path,
               environment, max_input_bytes: int, details: dict[str, str]) -> CaseResult:
    """Export the tracks of `selection`; `details` are the case's name, investigator and purpose."""
    selection = sorted(set(selection))
    if not selection:
        raise ExportError("nothing selected: add tracks to the case from their job pages first")
    people = people_of(store, selection)
    case_id = case_id_of(selection, details, people)
    exports.mkdir(parents=True, exist_ok=True)
    with case_lock(case_id):
        staging = exports / f".case-{case_id}-{secrets.token_hex(4)}"
        root = staging / f"case-{case_id}"
        try:
            document = _write_case_files(catalog, store, selection, case_id, root, max_input_bytes, people)
            document.update(name=details["name"], investigator=details["investigator"], purpose=details["purpose"])
            (root / "report.html").write_text(report.render_html(document, environment), encoding="utf-8")
            (root / "report.pdf").write_bytes(report.render_pdf(document, root))
            files = sorted(p for p in root.rglob("*") if p.is_file())
            sums = "".join(f"{sha256_of_file(p)}  {p.relative_to(root).as_posix()}\n" for p in files)
            (root / "SHA256SUMS").write_text(sums, encoding="utf-8")
            zip_tmp = staging / f"case-{case_id}.zip"
            _write_zip(root, zip_tmp)
            folder, zip_path = exports / f"case-{case_id}", exports / f"case-{case_id}.zip"
            _replace(root, folder, exports)
            os.replace(zip_tmp, zip_path)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        return CaseResult(case_id, folder, zip_path, sha256_of_file(zip_path))


def _replace(built: Path, final: Path, exports: Path) -> None:
    """Put a finished folder in place; an earlier export of the same selection is swapped out, not merged."""
    if final.exists():
        old = exports / f".old-{final.name}-{secrets.token_hex(4)}"
        os.rename(final, old)
        os.rename(built, final)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.rename(built, final)


def _write_zip(root: Path, target: Path) -> None:
    with zipfile.ZipFile(target, "w") as archive:
        for path in sorted(p for p in root.rglob("*") if p.is_file()):
            info = zipfile.ZipInfo(f"{root.name}/{path.relative_to(root).as_posix()}", date_time=ZIP_DATE)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o100644 << 16
            info.create_system = 3
            with open(path, "rb") as source, archive.open(info, "w") as sink:
                shutil.copyfileobj(source, sink, CHUNK)


def _write_case_files(catalog: Catalog, store: ReviewStore, selection: list[tuple[int, int]], case_id: str,
                      root: Path, max_input_bytes: int, people: list[dict[str, Any]]) -> dict[str, Any]:
    person_of = {(person["job"], person["track"]): person for person in people}
    by_job: dict[int, list[int]] = {}
    for job_id, track_id in selection:
        by_job.setdefault(job_id, []).append(track_id)
    jobs, dates = [], []
    root.mkdir(parents=True)
    (root / "selection.json").write_text(json.dumps([{"job": j, "track": t} for j, t in selection], indent=1)
                                         + "\n", encoding="utf-8")
    for job_id, track_ids in by_job.items():
        job = catalog.job(job_id)
        manifest = catalog.manifest(job) if job else None
        if job is None or manifest is None:
            raise ExportError(f"job {job_id} has no published output (not done, or removed by retention); "
                              "remove it from the case")
        tracks = {t.get("id"): t for t in manifest.get("tracks") or [] if isinstance(t, dict)}
        missing = [t for t in track_ids if t not in tracks]
        if missing:
            raise ExportError(f"job {job_id} has no track {missing[0]}; remove it from the case")
        folder = root / "jobs" / f"j{job_id}"
        folder.mkdir(parents=True)
        _copy_fd(catalog.open_output_file(job, "manifest.json"), folder / "manifest.json")
        input_included, input_sha, input_copy = _copy_input(job, folder / "input", max_input_bytes)
        source = manifest.get("input") or {}
        outputs = []
        for name in sorted(v for v in (manifest.get("outputs") or {}).values() if isinstance(v, str)):
            try:
                outputs.append({"name": name, "sha256": sha256_fd(catalog.open_output_file(job, name))})
            except safe_files.NotServable:
                continue   # a folder (faces/, restored/ of a frame folder): its files are listed per track
        marks = store.marks_for_job(job_id)
        boxes = {(t, f.get("frame")): f.get("box") for t in track_ids for f in tracks[t].get("frames") or []
                 if isinstance(f, dict)}
        wanted = [(best.get("frame"), boxes.get((t, best.get("frame")))) for t in track_ids
                  for best in tracks[t].get("best_frames") or []]
        frames = evidence.context_frames(catalog, job, manifest, input_copy, wanted)
        start = _recording_start(job, source.get("kind"), input_copy)
        track_docs = []
        for track_id in track_ids:
            track = tracks[track_id]
            track_folder = folder / f"track-{track_id}"
            track_folder.mkdir()
            by_frame = {f.get("frame"): f for f in track.get("frames") or [] if isinstance(f, dict)}
            def copy_pair(entry: dict[str, Any]) -> dict[str, Any]:
                return _copy_pair(catalog, job, entry, track_folder, root, track_id)

            images = []
            for best in track.get("best_frames") or []:
                pair = copy_pair(best)
                number = best.get("frame")
                seen = by_frame.get(number) or {}
                images.append({"frame": number, "quality": best.get("quality"), "time": seen.get("time"),
                               "wall_clock": evidence.wall_clock(start, seen.get("time")), "box": seen.get("box"),
                               "context": _context_file(frames, number, seen.get("box"), track_folder, root),
                               **pair})
            history = [{"id": h["id"], "at": report.utc_text(h["at"]), "who": h["who"],
                        "before": (h["before"] or {}).get("status", "-") + _note_part(h["before"]),
                        "after": h["after"].get("status", "-") + _note_part(h["after"])}
                       for h in store.history(job_id, track_id)]
            track_docs.append({"id": track_id, "start_time": track.get("start_time"),
                               "end_time": track.get("end_time"), "detections": track.get("detections"),
                               "sharpness_before": track.get("sharpness_before_mean"),
                               "sharpness_after": track.get("sharpness_after_mean"), "images": images,
                               "portrait": _portrait(track.get("portrait"), copy_pair),
                               "person": report.person_text(person_of.get((job_id, track_id))),
                               "mark": _mark_dict(marks.get(track_id, Mark(job_id, track_id))),
                               "history": history})
        model = manifest.get("model") or {}
        dates.append(str(manifest.get("created_utc") or ""))
        jobs.append({"id": job_id, "rel_path": job["shown_name"], "input_sha256": input_sha,
                     "manifest_input_sha256": source.get("sha256"), "input_included": input_included,
                     "notice": manifest.get("notice") or report.AI_NOTICE, "created_utc": manifest.get("created_utc"),
                     "tool": manifest.get("tool"), "steps": report.processing_steps(manifest),
                     "outputs": outputs, "tracks": track_docs, "source": source,
                     "model": {"name": model.get("name"), "version": model.get("version"), "file": model.get("file"),
                               "sha256": report.model_file_sha256(manifest)},
                     "detector": (manifest.get("detector") or {}).get("name"),
                     "recording_start": evidence.utc_text(start.when), "recording_source": start.source,
                     "context_source": frames.source or frames.problem})
    files = [{"path": p.relative_to(root).as_posix(), "sha256": sha256_of_file(p)}
             for p in sorted(p for p in root.rglob("*") if p.is_file())]
    return {"case_id": case_id, "tool_version": __version__, "jobs": jobs, "files": files,
            "selection": [{"job": j, "track": t} for j, t in selection], "dated": _newest(dates)}


def _copy_pair(catalog: Catalog, job: dict[str, Any], entry: dict[str, Any], folder: Path, root: Path,
               track_id: int) -> dict[str, Any]:
    """Copy the original and restored images `entry` names (OUTDIR-relative) into the track's folder:
    {role: {path in the export, source in the output, sha256}}."""
    pair = {}
    for role in ("original", "restored"):
        relative = entry.get(role)
        if not isinstance(relative, str):
            continue
        target = folder / _file_name(relative.rsplit("/", 1)[-1])
        try:
            fd = catalog.open_output_file(job, relative)
        except safe_files.NotServable as exc:
            raise ExportError(f"job {job['id']}: {display_name(relative)} cannot be read from its output "
                              f"folder ({exc}); remove track {track_id} from the case") from None
        pair[role] = {"path": target.relative_to(root).as_posix(), "source": relative,
                      "sha256": _copy_fd(fd, target)}
    return pair


def _portrait(portrait: Any, copy_pair) -> dict[str, Any] | None:
    """The track's fused portrait (the reference frame's crop and the AI-restored fusion of several frames),
    or None for a manifest without one (older than portraits, or its reference frame was not restored)."""
    if not isinstance(portrait, dict):
        return None
    merged = portrait.get("frames_merged")
    merged = [n for n in merged if isinstance(n, int) and not isinstance(n, bool)] if isinstance(merged, list) else []
    pair = copy_pair(portrait)
    if not pair:
        return None
    return {"frame": portrait.get("frame"), "frames_merged": merged, "label": report.portrait_label(merged), **pair}


def _context_file(frames: evidence.ContextFrames, number: Any, box: Any, folder: Path, root: Path
                  ) -> dict[str, Any]:
    """The context frame of one face, written beside its crops; or why there is none."""
    data = frames.pictures.get((number, evidence.box_key(box))) if isinstance(number, int) else None
    if data is None:
        return {"problem": frames.problem or f"frame {display_name(number)} was not found in {frames.source}"}
    target = folder / f"frame-{number:06d}-context.jpg"
    target.write_bytes(data)
    return {"path": target.relative_to(root).as_posix(), "sha256": hashlib.sha256(data).hexdigest(),
            "source": frames.source}


def _note_part(content: dict[str, Any] | None) -> str:
    note = (content or {}).get("note") or ""
    return f" ({note})" if note else ""


def _newest(dates: list[str]) -> datetime:
    """The newest manifest time: the PDF needs a date, and the export time would break reproducibility."""
    parsed = []
    for text in dates:
        try:
            parsed.append(datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=timezone.utc))
        except ValueError:
            continue
    return max(parsed, default=datetime(1980, 1, 1, tzinfo=timezone.utc))
