"""The footage pipeline end to end, and the API the daemon calls.

A frame's journey (one module per stage):
  decode.py -> detect (pipeline/detect.py) -> track.py -> smooth.py -> restore_faces.py (align, restore,
  paste) -> annotate.py -> encode.py, and per track select_best.py -> gallery.py; manifest.py records it all.

The input is read twice: pass 1 detects and tracks (keeping only face positions, never frames), pass 2
restores with the whole track known, so smoothing is centred in time (no lag) and the best frames are
known before pass 2 writes the gallery crops. Memory therefore stays flat however long the clip.
"""
from __future__ import annotations

import logging
import os
import time
from collections import defaultdict
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

import numpy as np

from ..config import PipelineSettings
from ..errors import FacedeblurError, UnusableInputError
from ..safe_text import json_safe
from .decode import FrameFolderSource, open_source

log = logging.getLogger(__name__)

QUEUE_BYTES = 256 * 1024 * 1024  # frames waiting for a full restore batch; bounds memory on 4K input


@dataclass
class LoadedModels:
    """The ONNX sessions, loaded once and reused for every input (loading takes about a second)."""

    detector: object
    restorer: object
    embedder: object | None


def load_models(settings: PipelineSettings) -> LoadedModels:
    from ..pipeline.detect import FaceDetector
    from ..pipeline.identity import IdentityEmbedder
    from ..pipeline.restore import FaceRestorer

    detector = FaceDetector(**settings.detector.detector_options(), provider=settings.provider,
                            threads=settings.threads)
    restorer = FaceRestorer(settings.restorer.model, provider=settings.provider, threads=settings.threads,
                            batch_size=settings.restorer.batch_size, colour_lock=settings.restorer.colour_lock,
                            flip_average=settings.restorer.flip_average)
    # Loaded even with tracker.use_identity off: every track's identity vector comes from it (person search).
    embedder = IdentityEmbedder(provider=settings.provider, threads=settings.threads)
    log.info("onnxruntime providers: detector %s, restorer %s%s", detector.providers[0], restorer.providers[0],
             f", identity {embedder.session.get_providers()[0]}" if embedder else "")
    return LoadedModels(detector, restorer, embedder)


@dataclass
class StageTimer:
    """Wall time per stage, for the benchmark (never written to the manifest: outputs stay reproducible)."""

    seconds: dict[str, float] = field(default_factory=lambda: defaultdict(float))
    # Process time (every thread), which other work on a shared machine changes far less than wall time.
    cpu_seconds: dict[str, float] = field(default_factory=lambda: defaultdict(float))

    @contextmanager
    def __call__(self, stage: str):
        started, cpu_started = time.perf_counter(), time.process_time()
        try:
            yield
        finally:
            self.seconds[stage] += time.perf_counter() - started
            self.cpu_seconds[stage] += time.process_time() - cpu_started

    def timed(self, iterable, stage: str):
        iterator = iter(iterable)
        while True:
            with self(stage):
                item = next(iterator, _END)
            if item is _END:
                return
            yield item


_END = object()


# on_progress(stage, frames done, frames total or None): how a caller (the daemon's worker) follows a run.
# Stages, in order: "detecting" (pass 1), "restoring" (pass 2), "gallery" (manifest, crops and page).
ProgressCallback = Callable[[str, int, "int | None"], None]


class _StageProgress:
    """The console bar of one pass, and the same count handed to `on_progress`."""

    def __init__(self, total: int | None, description: str, enabled: bool, stage: str,
                 on_progress: ProgressCallback | None):
        from tqdm import tqdm

        self.bar = tqdm(total=total, desc=description, unit="frame", disable=not enabled, leave=False,
                        dynamic_ncols=True)
        self.total, self.stage, self.on_progress, self.done = total, stage, on_progress, 0
        if on_progress is not None:
            on_progress(stage, 0, total)

    def update(self, frames: int) -> None:
        self.bar.update(frames)
        self.done += frames
        if self.on_progress is not None:
            self.on_progress(self.stage, self.done, self.total)

    def __enter__(self) -> "_StageProgress":
        return self

    def __exit__(self, *exc: object) -> None:
        self.bar.close()


def _progress(total: int | None, description: str, enabled: bool, stage: str = "",
              on_progress: ProgressCallback | None = None) -> _StageProgress:
    return _StageProgress(total, description, enabled, stage, on_progress)


def process_input(input_path: Path, outdir: Path, settings: PipelineSettings, models: LoadedModels | None = None,
                  progress: bool = True, extra_manifest: dict | None = None,
                  on_progress: ProgressCallback | None = None) -> dict:
    """Restore every face in INPUT into OUTDIR; returns the manifest. Raises FacedeblurError, leaving no OUTDIR."""
    manifest, _ = run_pipeline(input_path, outdir, settings, models, progress, extra_manifest, on_progress)
    return manifest


def run_pipeline(input_path: Path, outdir: Path, settings: PipelineSettings, models: LoadedModels | None = None,
                 progress: bool = True, extra_manifest: dict | None = None,
                 on_progress: ProgressCallback | None = None) -> tuple[dict, StageTimer]:
    """process_input, also returning the per-stage times (scripts/bench_footage.py)."""
    from .output_folder import StagedOutput

    from ..image_files import set_max_image_pixels

    input_path, outdir = Path(input_path), Path(outdir)
    set_max_image_pixels(settings.max_image_pixels)
    source = open_source(input_path, settings.frame_folder_fps, settings.raw_stream_fps)  # validates INPUT before anything is created
    models = models or load_models(settings)
    staged = StagedOutput(outdir)
    try:
        manifest, timer = _run(source, input_path, staged.path, settings, models, progress, extra_manifest,
                               on_progress)
        staged.commit()
    except FacedeblurError:
        staged.discard()
        raise
    except OSError as exc:  # disk full, folder made read-only mid-run, input vanished: one line, not a traceback
        staged.discard()
        where = f" ({exc.filename})" if exc.filename else ""
        raise FacedeblurError(f"{input_path}: {exc.strerror or exc.__class__.__name__}{where} while processing; "
                              f"check free space and permissions beside {outdir} and that the input is still there") from exc
    except MemoryError:
        staged.discard()
        raise FacedeblurError(f"{input_path}: ran out of memory; lower restorer.batch_size or process a shorter clip") from None
    except BaseException:
        staged.discard()
        raise
    return manifest, timer


@dataclass
class FoundFaces:
    """Pass 1's result: where every face is in every frame, and which frames each track shows best."""
    frame_count: int
    frame_times: list[float]
    frame_pts: list[int | None]
    tracker: object
    tracks: list
    planned: dict[int, list]
    best_frames: dict[int, list[tuple[int, float]]]
    identity_frames: dict[int, list[int]]


@dataclass
class RestoredFaces:
    """Pass 2's record of the faces it restored (the frames themselves went straight to the encoders)."""
    track_frames: dict[int, list[dict]] = field(default_factory=lambda: defaultdict(list))
    untracked_faces: list[dict] = field(default_factory=list)
    gallery_paths: dict[tuple[int, int], dict] = field(default_factory=dict)
    portraits: dict[int, dict] = field(default_factory=dict)  # track id -> manifest `portrait`
    identity_samples: dict[int, list[tuple[int, np.ndarray]]] = field(default_factory=lambda: defaultdict(list))
    audio_note: object = None
    timestamps_note: object = None
    output_names: tuple[str, str] = ("", "")


def _run(source, input_path: Path, workdir: Path, settings: PipelineSettings, models: LoadedModels,
         progress: bool, extra_manifest: dict | None, on_progress: ProgressCallback | None = None):
    timer = StageTimer()
    info, restorer, detector = source.info, models.restorer, models.detector
    log.info("%s: %s %dx%d, %s; detector on %s, restorer %s %s on %s", input_path.name, info.kind, info.width,
             info.height, f"{info.fps:.2f} fps" if info.fps else "still", detector.providers[0], restorer.info.name,
             restorer.info.version, restorer.providers[0])
    if info.kind == "photos":
        from .photos import find_faces_in_photos
        found = find_faces_in_photos(source, input_path, settings, models, timer, progress)
    else:
        found = _find_faces(source, input_path, settings, models, timer, progress, on_progress)
    restored = _restore_and_write(source, input_path, workdir, found, settings, models, timer, progress, on_progress)
    if on_progress is not None:
        on_progress("gallery", 0, None)
    with timer("gallery"):
        manifest = _build_manifest(source, input_path, found, restored, settings, models, extra_manifest)
        from .gallery import write_gallery
        from .manifest import write_manifest
        write_gallery(workdir, manifest, _clip_links(info.kind, info.fps, _frame_files(source)))
        write_manifest(workdir / "manifest.json", manifest)
    return manifest, timer


def _frame_files(source) -> list[Path] | None:
    from .photos import PhotoFolderSource
    return source.files if isinstance(source, (FrameFolderSource, PhotoFolderSource)) else None


def _find_faces(source, input_path: Path, settings: PipelineSettings, models: LoadedModels, timer: StageTimer,
                progress: bool, on_progress: ProgressCallback | None = None) -> FoundFaces:
    """Pass 1: detect and track. Only face positions are kept, never frames."""
    from .search import FaceSearch
    from ..search.identity_vector import IDENTITY_FRAMES
    from ..pipeline.face_crops import sharpness
    from .select_best import choose_best_frames
    from .shots import ShotCutDetector
    from .smooth import plan_faces
    from .track import FaceTracker
    from ..pipeline.align import estimate_alignment, warp_to_crop

    info, restorer, detector = source.info, models.restorer, models.detector
    stride, limit = settings.detector.stride, settings.max_frames
    tracker = FaceTracker(settings.tracker, info.fps or 25.0, stride, models.embedder)
    search = FaceSearch(detector, settings.detector.full_search_every)
    frame_times: list[float] = []
    frame_pts: list[int | None] = []
    shots, cut_pending = ShotCutDetector(), False
    expected = min(info.expected_frames or 0, limit or 10**9) or None
    with _progress(expected, "finding faces", progress, "detecting", on_progress) as bar:
        for frame in timer.timed(source.frames(), "decode"):
            if limit and frame.index >= limit:
                break
            frame_times.append(frame.time)
            frame_pts.append(frame.pts)
            with timer("track"):
                cut_pending = shots.is_cut(frame.image) or cut_pending
            if frame.index % stride == 0:
                after_cut = cut_pending
                if cut_pending:
                    tracker.cut(frame.index)
                    cut_pending = False
                with timer("detect"):
                    faces = search.find(frame.image, after_cut)  # weak ones only extend tracks
                with timer("track"):
                    tracked = tracker.update(frame.index, frame.image, faces)
                with timer("align"):
                    for _, observation in tracked:  # input sharpness of each face, for choosing the best frames
                        matrix = estimate_alignment(observation.landmarks, restorer.crop_size, restorer.info.template)
                        observation.sharpness = sharpness(warp_to_crop(frame.image, matrix, restorer.crop_size))
            bar.update(1)
    frame_count = len(frame_times)
    if frame_count == 0:
        raise UnusableInputError(f"{input_path}: no frames could be decoded; supply a complete video")
    with timer("track"):
        tracks = tracker.finish()
        max_gap = max(settings.tracker.max_interpolation_gap, stride - 1)
        last_detection_frame = (frame_count - 1) // stride * stride
        planned = plan_faces(tracks, tracker.untracked, max_gap, settings.tracker.landmark_smoothing_sigma,
                             last_detection_frame, frame_count - 1)
        best_frames = {t.track_id: choose_best_frames(t, settings.output.gallery_frames_per_track) for t in tracks}
        identity_frames = {t.track_id: [frame for frame, _ in choose_best_frames(t, IDENTITY_FRAMES)] for t in tracks}
    log.info("%d frame(s), %d shot(s), %d track(s), %d face(s) to restore (identity guard: %d swap(s) corrected, "
             "%d track(s) merged; %d false track(s) dropped)", frame_count, len(tracker.cuts) + 1, len(tracks),
             sum(len(v) for v in planned.values()), tracker.swaps, tracker.merges, len(tracker.dropped))
    return FoundFaces(frame_count, frame_times, frame_pts, tracker, tracks, planned, best_frames, identity_frames)


OUTPUT_NAMES = {  # kind -> (restored output, annotated output)
    "video": ("restored.mp4", "annotated.mp4"),
    "frames": ("restored", "annotated.mp4"),
    "image": ("restored.png", "annotated.png"),
    "photos": ("restored", "annotated"),  # folders of the photos under their own names
}


class _OutputWriters:
    """The restored and annotated outputs of one input: encoders for clips, a folder for frames, PNGs for
    a photo. Dropped frames and variable frame rate keep their timing; timestamps a muxer cannot take are
    re-timed (encode.plan_timestamps)."""

    def __init__(self, workdir: Path, source, input_path: Path, frame_pts: list[int | None],
                 settings: PipelineSettings, timer: StageTimer):
        from .encode import BackgroundWriter, FrameFolderWriter, VideoEncoder, encoder_error, plan_timestamps

        info = source.info
        self.kind, self.workdir, self.timer, self.output = info.kind, workdir, timer, settings.output
        self.restored_name, self.annotated_name = OUTPUT_NAMES[self.kind]
        self.output_pts, self.timestamps_note = plan_timestamps(frame_pts, info) if self.kind == "video" else (None, None)
        self.restored = self.annotated = None
        self.outputs_closed = False
        self.background = BackgroundWriter()
        try:
            if self.output.write_restored:
                if self.kind == "video":
                    self.restored = VideoEncoder(workdir / self.restored_name, info, self.output.video_crf,
                                                 self.output.video_preset, audio_from=input_path)
                elif self.kind in ("frames", "photos"):
                    self.restored = FrameFolderWriter(workdir / self.restored_name)
            if self.output.write_annotated and self.kind == "photos":
                self.annotated = FrameFolderWriter(workdir / self.annotated_name)
            elif self.output.write_annotated and self.kind != "image":
                # The annotated clip is a review aid: the fastest x264 preset halves its encoding time.
                self.annotated = VideoEncoder(workdir / self.annotated_name, info, self.output.video_crf, "ultrafast")
        except Exception as exc:  # PyAV/FFmpeg errors have many types
            self.close()
            raise encoder_error(workdir / self.restored_name, exc) from None
        self.is_video_encoder = isinstance(self.restored, VideoEncoder)

    def audio_sink(self):
        if not (self.is_video_encoder and self.restored.audio_stream is not None):
            return None
        encoder = self.restored

        def sink(packet) -> None:
            self.background.submit(encoder.write_audio, encoder.audio_payload(packet))
        return sink

    def audio_note(self):
        return self.restored.audio_note if self.is_video_encoder else None

    def write(self, frame, image, faces) -> None:
        """Queue one output frame; it is annotated and encoded on the writer thread."""
        self.background.submit(self._write_now, frame, image, faces)

    def _write_now(self, frame, image, faces) -> None:
        from ..image_files import write_image_atomic
        from .annotate import draw_annotations

        with self.timer("encode"):
            if self.kind == "video" and self.restored is not None:
                self.restored.write(image, self.output_pts[frame.index])
            elif self.kind in ("frames", "photos") and self.restored is not None:
                self.restored.write(image, frame.name)
            elif self.kind == "image" and self.output.write_restored:
                write_image_atomic(self.workdir / self.restored_name, image)
        if self.annotated is not None or (self.kind == "image" and self.output.write_annotated):
            with self.timer("annotate"):
                annotated = draw_annotations(image, [f.planned for f in faces])
            with self.timer("encode"):
                if self.kind == "photos":
                    self.annotated.write(annotated, frame.name)
                elif self.annotated is not None:
                    self.annotated.write(annotated, self.output_pts[frame.index] if self.output_pts else None)
                else:
                    write_image_atomic(self.workdir / self.annotated_name, annotated)

    def finish(self) -> None:
        """Write everything queued and close the outputs; an error here (a full disk at the last frames)
        fails the run instead of leaving a truncated clip."""
        self.background.finish()
        errors = self._close_outputs()
        if errors:
            raise errors[0]

    def close(self) -> None:
        """Stop after an error: close what is still open without raising, so the first error is the one
        reported."""
        self.background.stop()
        for error in self._close_outputs():
            log.debug("closing an output failed: %s", error)

    def _close_outputs(self) -> list[Exception]:
        """Close both outputs once (each even when the other fails); the errors, in order."""
        if self.outputs_closed:
            return []
        self.outputs_closed = True
        errors = []
        with self.timer("encode"):
            for writer in (self.restored, self.annotated):
                if writer is not None:
                    try:
                        writer.close()
                    except Exception as exc:  # PyAV/FFmpeg errors have many types
                        errors.append(exc)
        return errors


def _restore_and_write(source, input_path: Path, workdir: Path, found: FoundFaces, settings: PipelineSettings,
                       models: LoadedModels, timer: StageTimer, progress: bool,
                       on_progress: ProgressCallback | None = None) -> RestoredFaces:
    """Pass 2: read the input again, restore and paste every planned face, write the outputs and the
    gallery crops of each track's best frames."""
    from .encode import encoder_error
    from .gallery import save_best_frame
    from .manifest import rounded
    from .portrait import PortraitMaker, choose_portrait_frames
    from .restore_faces import FrameBatchRestorer

    info = source.info
    writers = _OutputWriters(workdir, source, input_path, found.frame_pts, settings, timer)
    wanted_crops = {(track_id, frame) for track_id, chosen in found.best_frames.items() for frame, _ in chosen}
    identity_wanted = {(track_id, frame) for track_id, frames in found.identity_frames.items() for frame in frames}
    record = RestoredFaces()
    portraits = PortraitMaker(models.restorer, settings.restorer.large_faces,
                              {track.track_id: choose_portrait_frames(track, found.best_frames[track.track_id][0][0])
                               for track in found.tracks if found.best_frames.get(track.track_id)})
    frame_bytes = info.width * info.height * 3
    batch_restorer = FrameBatchRestorer(models.restorer, timer,
                                        max_queued_frames=min(16, max(1, QUEUE_BYTES // frame_bytes)),
                                        large_faces=settings.restorer.large_faces,
                                        temporal_window=settings.restorer.temporal_window)

    def frames_with_faces():
        for frame in timer.timed(source.frames(on_audio_packet=writers.audio_sink()), "decode"):
            if frame.index >= found.frame_count:
                break
            yield frame, found.planned.get(frame.index, [])

    written = 0
    with _progress(found.frame_count, "restoring", progress, "restoring", on_progress) as bar:
        try:
            for result in batch_restorer.run(frames_with_faces()):
                frame = result.source
                for face in result.faces:
                    entry = _face_entry(face, frame.time, rounded)
                    if face.planned.track_id is None:
                        record.untracked_faces.append(entry)
                        continue
                    record.track_frames[face.planned.track_id].append(entry)
                    with timer("portrait"):
                        portraits.offer(face.planned.track_id, frame.index, frame.image, face.planned.landmarks)
                    key = (face.planned.track_id, frame.index)
                    if key in identity_wanted and models.embedder is not None and face.planned.observation is not None:
                        with timer("identity"):   # the input's pixels (frame.image), never the restored ones
                            embedding = models.embedder.embed_faces(frame.image, [face.planned.observation.landmarks])[0]
                        record.identity_samples[key[0]].append((key[1], embedding))
                    if key in wanted_crops:
                        with timer("gallery"):
                            record.gallery_paths[key] = save_best_frame(workdir / "faces", key[0], key[1],
                                                                        face.original_crop, face.restored_crop)
                writers.write(frame, result.image, result.faces)
                written += 1
                bar.update(1)
            writers.finish()
        except FacedeblurError:
            raise
        except (OSError, ValueError) as exc:
            raise encoder_error(workdir / writers.restored_name, exc) from None
        finally:
            writers.close()
    if written != found.frame_count:
        raise FacedeblurError(f"{input_path}: the second read gave {written} frames instead of {found.frame_count}; "
                              "the file changed or is corrupt, copy it again and retry")
    with timer("portrait"):
        record.portraits = portraits.finish(workdir / "faces")
    record.audio_note = writers.audio_note()
    record.timestamps_note = writers.timestamps_note
    record.output_names = (writers.restored_name, writers.annotated_name)
    return record


def _build_manifest(source, input_path: Path, found: FoundFaces, restored: RestoredFaces, settings: PipelineSettings,
                    models: LoadedModels, extra_manifest: dict | None) -> dict:
    from ..inputs import sha256_of_file, sha256_of_frames
    from .manifest import base_manifest

    info, kind = source.info, source.info.kind
    restorer, detector, tracker = models.restorer, models.detector, found.tracker
    frame_files = _frame_files(source)
    fps = info.fps if kind not in ("image", "photos") else None
    duration = (found.frame_times[-1] - found.frame_times[0] + (1 / fps if fps else 0)) if fps else None
    restored_name, annotated_name = restored.output_names
    outputs = {"restored": restored_name if settings.output.write_restored else None,
               "annotated": annotated_name if settings.output.write_annotated else None,
               "faces": "faces/", "gallery": "index.html", "manifest": "manifest.json"}
    # Hashed after both passes: a file that changed meanwhile shows up as a hash the caller did not expect.
    sha256 = sha256_of_frames(frame_files) if frame_files is not None else sha256_of_file(input_path)
    manifest = base_manifest(
        input_path=input_path.resolve(), kind=kind, sha256=sha256,
        frames=found.frame_count, fps=round(fps, 4) if fps else None, width=info.width, height=info.height,
        duration=round(duration, 4) if duration else None, rotation=info.rotation, codec=info.codec,
        audio=restored.audio_note, model_info=restorer.info, model_file=restorer.path, model_sha256=restorer.sha256,
        restorer_providers=restorer.providers, detector_providers=detector.providers,
        settings=settings.model_dump(mode="json"), outputs=outputs)
    manifest["input"]["timestamps"] = restored.timestamps_note
    if frame_files is not None:
        manifest["input"]["frame_names"] = [p.name for p in frame_files[:found.frame_count]]
    if info.folder is not None:
        manifest["input"]["folder"] = info.folder
    if kind == "photos":
        manifest["input"]["photos"] = source.photo_entries()[:found.frame_count]
    manifest["tracks"] = [_track_entry(track, restored, found.best_frames[track.track_id]) for track in found.tracks]
    if kind == "photos":
        for entry in manifest["tracks"]:
            entry["photo"] = frame_files[entry["first_frame"]].name
    manifest["untracked_faces"] = restored.untracked_faces
    manifest["dropped_tracks"] = [d.as_dict() for d in tracker.dropped]
    manifest["summary"] = {
        "tracks": len(found.tracks),
        "faces_restored": sum(len(e) for e in restored.track_frames.values()) + len(restored.untracked_faces),
        "frames_with_faces": len(found.planned),
        "identity_swaps_corrected": tracker.swaps,
        "tracks_merged": tracker.merges,
        "tracks_dropped": len(tracker.dropped),
    }
    if extra_manifest:
        manifest.update(extra_manifest)
    # A file name that is not UTF-8 (b'caf\xe9.mp4') is shown escaped ('caf\\xe9.mp4'): JSON and HTML need text.
    return json_safe(manifest)


def _track_entry(track, restored: RestoredFaces, best_frames: list[tuple[int, float]]) -> dict:
    from ..search.identity_vector import manifest_identity, track_vector

    entries = restored.track_frames.get(track.track_id, [])
    samples = restored.identity_samples.get(track.track_id, [])
    best = [{"frame": frame, "quality": round(quality, 4), **restored.gallery_paths[(track.track_id, frame)]}
            for frame, quality in best_frames if (track.track_id, frame) in restored.gallery_paths]
    return {
        "id": track.track_id,
        "first_frame": entries[0]["frame"] if entries else track.first_frame,
        "last_frame": entries[-1]["frame"] if entries else track.last_frame,
        "start_time": entries[0]["time"] if entries else None,
        "end_time": entries[-1]["time"] if entries else None,
        "detections": len(track.observations),
        "sharpness_before_mean": round(float(np.mean([e["sharpness_before"] for e in entries])), 2) if entries else None,
        "sharpness_after_mean": round(float(np.mean([e["sharpness_after"] for e in entries])), 2) if entries else None,
        "best_frames": best,
        "portrait": restored.portraits.get(track.track_id),
        "identity": manifest_identity(track_vector(np.array([e for _, e in samples])), [f for f, _ in samples])
        if samples else None,
        "frames": entries,
    }


def _clip_links(kind: str, fps: float | None, frame_files: list[Path] | None):
    """For the gallery: where each track can be seen in the outputs."""
    def clip_links(track: dict) -> list[tuple[str, str]]:
        if kind == "video":
            fragment = f"#t={track['start_time']:.2f},{track['end_time'] + 1 / max(fps, 1):.2f}"
            return [("restored clip", f"restored.mp4{fragment}"), ("annotated clip", f"annotated.mp4{fragment}")]
        if kind == "photos":
            name = quote(os.fsencode(frame_files[track["first_frame"]].name))
            return [("restored photo", f"restored/{name}"), ("annotated photo", f"annotated/{name}")]
        if kind == "frames":
            # URL-encoded from the name's bytes: 'cam1 #1.png' and b'caf\xe9.png' link to the real file.
            name = os.fsencode(frame_files[track["first_frame"]].name)
            return [("restored frame", f"restored/{quote(name)}"), ("annotated clip", "annotated.mp4")]
        return [("restored image", "restored.png"), ("annotated image", "annotated.png")]
    return clip_links


def _face_entry(face, time_seconds: float, rounded) -> dict:
    planned = face.planned
    observation = planned.observation
    return {
        "frame": planned.frame_index,
        "time": round(float(time_seconds), 4) if time_seconds is not None else None,
        "box": rounded(planned.box, 1),
        "landmarks": rounded(planned.landmarks, 1),
        "detected": observation is not None,
        "score": round(float(observation.score), 4) if observation is not None else None,
        "detected_landmarks": rounded(observation.landmarks, 1) if observation is not None else None,
        "sharpness_before": round(face.sharpness_before, 2),
        "sharpness_after": round(face.sharpness_after, 2),
        "frames_merged": face.frames_merged,
        "frames_merged_after_restoring": face.frames_merged_after_restoring,
    }
