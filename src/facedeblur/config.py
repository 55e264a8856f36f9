"""config.yaml: one file for the pipeline and the daemon, validated by pydantic.

Unknown keys are rejected and every error names the key and its line in the YAML file, so a typo
never silently falls back to a default.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from .errors import FacedeblurError, NotYetAvailableError
from .inputs import default_include
from .defaults import (AUTO_TEMPORAL_WINDOW, AUTO_TEMPORAL_WINDOW_NAME, DEFAULT_FULL_SEARCH_EVERY, DEFAULT_LARGE_FACES,
                       DEFAULT_MAX_IMAGE_PIXELS, DEFAULT_MIN_FACE_SIZE, DEFAULT_MOSAIC_THRESHOLD, DEFAULT_NMS_THRESHOLD,
                       DEFAULT_PYRAMID, DEFAULT_SCORE_THRESHOLD, DEFAULT_TEMPORAL_WINDOW, DEFAULT_WEAK_THRESHOLD,
                       MAX_TEMPORAL_WINDOW, PACKAGED_MODELS, PROVIDER_CHOICES, LargeFaceMode, TemporalWindow,
                       packaged_models_help)


class StrictModel(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class DetectorSettings(StrictModel):
    score_threshold: float = Field(DEFAULT_SCORE_THRESHOLD, ge=0.05, le=1.0, description="minimum YuNet confidence")
    nms_threshold: float = Field(DEFAULT_NMS_THRESHOLD, gt=0.0, le=1.0)
    min_face_size: int = Field(DEFAULT_MIN_FACE_SIZE, ge=4, description="smallest face (px, box side) that is kept")
    stride: int = Field(1, ge=1, le=30, description="detect on every k-th frame; tracks carry faces in between")
    pyramid: list[float] = Field(list(DEFAULT_PYRAMID), min_length=1, max_length=5,
                                 description="search each frame at these fractions of the 640 px input; the smaller "
                                             "passes find blurred, dark and compressed faces (their blur shrinks "
                                             "with them) for about a third more time; [1.0] = one pass")
    full_search_every: int = Field(DEFAULT_FULL_SEARCH_EVERY, ge=1, le=100,
                                   description="video: run the full search (pyramid and mosaics over the whole "
                                               "frame) at least every k-th detection frame; in between only the "
                                               "pass that found the previous frame's faces runs, and the full "
                                               "search whenever a face is lost, weak, small or in a mosaic; "
                                               "1 = full search on every frame")
    find_mosaics: bool = Field(True, description="find pixelated regions (grid of flat cells), smooth them back to "
                                                 "the picture the cells sample, and search that for faces")
    mosaic_threshold: float = Field(DEFAULT_MOSAIC_THRESHOLD, ge=0.05, le=1.0,
                                    description="minimum YuNet confidence for a face inside a detected mosaic")
    weak_threshold: float = Field(DEFAULT_WEAK_THRESHOLD, ge=0.05, le=1.0,
                                  description="footage: candidates from this up to score_threshold with plausible "
                                              "landmarks are given to the tracker, which only lets them extend a "
                                              "track (a face blurred for a few frames), never start one")

    @model_validator(mode="after")
    def _pyramid_fractions(self) -> "DetectorSettings":
        if any(not 0.05 <= fraction <= 2.0 for fraction in self.pyramid):
            raise ValueError("pyramid: each fraction must be between 0.05 and 2.0")
        return self

    def detector_options(self) -> dict:
        """Keyword arguments for FaceDetector, so every command builds the same detector from one config."""
        return dict(score_threshold=self.score_threshold, nms_threshold=self.nms_threshold,
                    min_face_size=self.min_face_size, pyramid=tuple(self.pyramid), find_mosaics=self.find_mosaics,
                    mosaic_threshold=self.mosaic_threshold, weak_threshold=self.weak_threshold)


class TrackerSettings(StrictModel):
    track_activation_threshold: float = Field(0.45, ge=0.0, le=1.0,
                                              description="ByteTrack: detections at or above this are first-round "
                                                          "matches (weaker ones only extend a track); new tracks "
                                                          "start at it + 0.1")
    lost_track_buffer: int = Field(30, ge=1, description="frames a track survives without a detection")
    minimum_matching_threshold: float = Field(0.8, ge=0.0, le=1.0,
                                              description="ByteTrack: a confident detection joins a track whose "
                                                          "predicted box it overlaps with IoU >= 1 - this "
                                                          "(higher = looser matches)")
    minimum_consecutive_frames: int = Field(1, ge=1, description="detection frames in a row before a new track is "
                                                                 "confirmed; one that loses its face sooner is "
                                                                 "dropped (1 = confirmed at once)")
    min_track_detections: int = Field(3, ge=1, description="a track with fewer detections is dropped as false; "
                                                           "never more than one per 10 detection frames of the "
                                                           "clip, so a short clip or single image keeps its faces")
    min_track_score: float = Field(0.0, ge=0.0, le=1.0, description="a track whose best detector score stays "
                                                                    "below this is dropped as false")
    min_track_face_size: int = Field(0, ge=0, description="a track whose largest face (px, shorter box side) "
                                                          "stays below this is dropped as false; 0 = off")
    use_identity: bool = Field(True, description="use SFace embeddings to keep identities apart")
    verify_faces: bool = Field(True, description="drop tracks whose sampled crops show no face (too dark and flat, "
                               "or weak to both the detector and SFace); needs use_identity")
    reid_max_gap_seconds: float = Field(5.0, ge=0.0, description="merge a track that reappears within this time "
                                                                 "with the same identity; 0 = never")
    max_interpolation_gap: int = Field(10, ge=0, description="fill up to this many frames without a detection")
    landmark_smoothing_sigma: float = Field(1.5, ge=0.0, le=10.0,
                                            description="Gaussian sigma (frames) along a track; 0 = none")


class RestorerSettings(StrictModel):
    model: Literal[tuple(PACKAGED_MODELS)] | Path | None = Field(
        None, description=f"restorer: a model of the package ({packaged_models_help()}) or the path of an .onnx "
                          "file; unset = default")
    batch_size: int = Field(16, ge=1, le=512)
    colour_lock: bool = Field(True, description="keep the input's colour per region and its mean brightness in "
                                                "every restored face (skin tone, white balance, exposure)")
    flip_average: bool = Field(False, description="restore each face and its mirror image and average the two: "
                                                  "about 0.1 dB better, at twice the restorer's time")
    large_faces: LargeFaceMode = Field(DEFAULT_LARGE_FACES, description="faces larger than the model's working "
                                       "size: adaptive or correction (add the model's correction to the native "
                                       "pixels), native (run the network at the native size) or resize (shrink "
                                       "and enlarge)")
    temporal_window: TemporalWindow = Field(
        DEFAULT_TEMPORAL_WINDOW,
        description=f"video: merge this many frames before and after into each face before restoring it (aligned "
                    f"by flow, mismatches rejected); 0 = off; {AUTO_TEMPORAL_WINDOW_NAME} = {AUTO_TEMPORAL_WINDOW} "
                    "frames at most, only where fusion helps: a noisy face before restoring, a smeared one after "
                    "(its neighbours' restored faces merged into its own)")

    @field_validator("temporal_window", mode="before")
    @classmethod
    def _window_or_auto(cls, value: Any) -> TemporalWindow:
        if value == AUTO_TEMPORAL_WINDOW_NAME:
            return value
        if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= MAX_TEMPORAL_WINDOW:
            return value
        raise ValueError(f"must be {AUTO_TEMPORAL_WINDOW_NAME} or a whole number of frames from 0 (off) to "
                         f"{MAX_TEMPORAL_WINDOW}, not {value!r}")


class OutputSettings(StrictModel):
    write_restored: bool = True
    write_annotated: bool = True
    gallery_frames_per_track: int = Field(3, ge=1, le=50)
    video_crf: int = Field(18, ge=0, le=51)
    video_preset: Literal["ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow"] = "veryfast"


class PipelineSettings(StrictModel):
    provider: Literal[PROVIDER_CHOICES] = Field("auto", description="onnxruntime device for every model")
    threads: int = Field(0, ge=0, description="onnxruntime threads per model; 0 = all cores")
    frame_folder_fps: float = Field(25.0, gt=0, le=1000, description="frame rate given to a folder of frames")
    raw_stream_fps: float | None = Field(None, gt=0, le=1000, description="frame rate of a raw H.264/H.265 stream "
                                         "(it carries none); null = 25, with a warning")
    max_frames: int | None = Field(None, ge=1, description="process only the first N frames; null = all")
    max_image_pixels: int = Field(DEFAULT_MAX_IMAGE_PIXELS, ge=1, description="refuse an image (photo or frame) larger than "
                                  "this many pixels, from its header, before decoding it")
    detector: DetectorSettings = DetectorSettings()
    tracker: TrackerSettings = TrackerSettings()
    restorer: RestorerSettings = RestorerSettings()
    output: OutputSettings = OutputSettings()


class DaemonSettings(StrictModel):
    """`facedeblur watch`: folders, intake, retries and housekeeping. config.yaml documents every key."""
    inbox: list[Path] = Field(default_factory=list, description="folders to watch (the NVR's drop folders)")
    outbox: Path | None = Field(None, description="one output folder per processed input, plus index.html")
    state: Path | None = Field(None, description="the journal (SQLite) and the daemon's lock")
    recursive: bool = True
    polling: bool = Field(False, description="poll instead of inotify; needed on NFS/SMB shares")
    poll_interval: float = Field(5.0, gt=0)
    stable_seconds: float = Field(5.0, ge=0, description="size and mtime unchanged this long before a file is taken")
    rescan_seconds: float = Field(60.0, gt=0, description="full rescan period, catches missed events")
    frame_folders: bool = Field(True, description="a subfolder holding only images is one frame-sequence job")
    workers: int = Field(1, ge=1, le=64)
    max_attempts: int = Field(3, ge=1)
    retry_seconds: float = Field(60.0, ge=0, description="back-off before a retry; doubles each attempt")
    after: Literal["keep", "move", "delete"] = "keep"
    done_folder: Path | None = Field(None, description="where `after: move` moves processed inputs")
    failed_folder: Path | None = Field(None, description="default OUTBOX/failed")
    failed_copy_max_mb: float = Field(1024.0, ge=0, description="a failed input larger than this is not copied "
                                      "into failed/ (its note keeps the SHA-256)")
    skip_duplicates: bool = True
    follow_symlinks: bool = False
    include: list[str] = Field(default_factory=default_include,
                               description="every video and image extension facedeblur takes (inputs.py)")
    ignore: list[str] = Field(default_factory=lambda: [".*", "*~", "*.part", "*.tmp", "@eaDir", ".DS_Store",
                                                       "Thumbs.db", ".stfolder", "#recycle"])
    shutdown_timeout: float = Field(30.0, gt=0)
    job_timeout: float | None = Field(21600.0, gt=0, description="a job running longer is stopped (its worker "
                                      "killed) and retried like a crash; null = no limit")
    metrics_port: int | None = Field(None, ge=1, le=65535)
    metrics_address: str = "127.0.0.1"
    retention_days: float | None = Field(None, gt=0)
    retention_max_gb: float | None = Field(None, gt=0)

    @model_validator(mode="after")
    def _move_needs_a_folder(self) -> "DaemonSettings":
        if self.after == "move" and self.done_folder is None:
            raise ValueError("after: move needs done_folder (where processed inputs go)")
        return self


class ServeUser(StrictModel):
    """One reviewer who may log in to `facedeblur serve`; only a hash of the password is ever stored."""
    name: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9._@-]+$")
    password_hash: str = Field(description="from `facedeblur serve --hash-password` (werkzeug scrypt/pbkdf2)")

    @model_validator(mode="after")
    def _hashed_not_plain(self) -> "ServeUser":
        if not self.password_hash.startswith(("scrypt:", "pbkdf2:")):
            raise ValueError("password_hash is not a password hash (plain text is never accepted); make one with "
                             "`facedeblur serve --hash-password` and paste its output")
        return self


class ServeSettings(StrictModel):
    """`facedeblur serve`: the review web server over the daemon's outbox and journal (docs/review.md)."""
    host: str = Field("127.0.0.1", description="address to bind; anything but loopback needs users or a token")
    port: int = Field(8471, ge=1, le=65535)
    users: list[ServeUser] = Field(default_factory=list, description="reviewers who log in with a password")
    token_file: Path | None = Field(None, description="file holding the API token (Authorization: Bearer ...)")
    token_env: str | None = Field(None, description="environment variable holding the API token")
    exports: Path | None = Field(None, description="where case exports are written; default STATE/exports")
    export_max_input_mb: float = Field(200.0, ge=0, description="an original input larger than this goes into "
                                       "a case export as its SHA-256 only")
    page_size: int = Field(50, ge=5, le=500, description="jobs per page in the list")
    refresh_seconds: float = Field(5.0, ge=0, le=3600, description="how often the jobs list, and the page of a "
                                   "queued or running job, fetch themselves again (0: never)")
    login_attempts: int = Field(5, ge=1, description="failed logins allowed per address (and per user name) "
                                "within login_window_seconds before further tries are refused")
    login_window_seconds: float = Field(300.0, gt=0)
    secure_cookies: bool = Field(False, description="mark the session cookie Secure (set it when a TLS proxy "
                                 "fronts the server)")
    threads: int = Field(8, ge=1, le=64, description="threads that run the page handlers (file reads, exports)")


class PathMapping(StrictModel):
    """One shared folder mounted at different paths: `coordinator` on the machine running `facedeblur watch`,
    `worker` on the machines running `facedeblur worker`."""
    coordinator: Path
    worker: Path


class QueueSettings(StrictModel):
    """Where jobs run: `local` worker processes (default) or remote `facedeblur worker`s through Celery and Redis
    (docs/daemon.md, "Several machines")."""
    backend: Literal["local", "celery"] = Field("local", description="local: worker processes of the daemon; "
                                                "celery: `facedeblur worker` processes on any machine")
    broker_url: str | None = Field(None, description="redis://HOST:PORT/DB, without the password")
    password_file: Path | None = Field(None, description="file holding the Redis password (requirepass)")
    password_env: str | None = Field(None, description="environment variable holding the Redis password")
    secret_file: Path | None = Field(None, description="file holding the key that signs every task and result "
                                     "(celery: this or secret_env is required; not the Redis password)")
    secret_env: str | None = Field(None, description="environment variable holding that key")
    visibility_timeout: float = Field(3600.0, gt=0, description="seconds before Redis hands an unacknowledged "
                                      "task (its worker vanished) to another worker")
    lease_seconds: float = Field(120.0, gt=0, description="a running job with no heartbeat for this long is "
                                 "sent again as a new attempt")
    heartbeat_seconds: float = Field(10.0, gt=0, description="how often each worker reports itself and its jobs")
    path_map: list[PathMapping] = Field(default_factory=list, description="shared folders mounted at other "
                                        "paths on the workers")

    @model_validator(mode="after")
    def _celery_needs_a_broker(self) -> "QueueSettings":
        if self.backend == "celery" and not self.broker_url:
            raise ValueError("backend: celery needs broker_url (redis://HOST:PORT/DB)")
        if self.broker_url is not None:
            from urllib.parse import urlsplit
            url = urlsplit(self.broker_url)
            if url.scheme != "redis" or not url.hostname:
                raise ValueError("broker_url must look like redis://HOST:PORT/DB")
            if url.password or url.username:
                raise ValueError("broker_url must not hold a password (it would show in logs and process lists); "
                                 "put it in password_file or password_env")
        if self.password_file is not None and self.password_env is not None:
            raise ValueError("set password_file or password_env, not both")
        if self.secret_file is not None and self.secret_env is not None:
            raise ValueError("set secret_file or secret_env, not both")
        if self.heartbeat_seconds * 2 > self.lease_seconds:
            raise ValueError("lease_seconds must be at least twice heartbeat_seconds, or a busy worker's jobs "
                             "would be sent again between two heartbeats")
        return self


class Config(StrictModel):
    pipeline: PipelineSettings = PipelineSettings()
    daemon: DaemonSettings = DaemonSettings()
    serve: ServeSettings = ServeSettings()
    queue: QueueSettings = QueueSettings()


def _line_of(node: yaml.Node | None, loc: tuple[Any, ...]) -> int | None:
    """Walk the composed YAML tree along a pydantic error location to find the offending line."""
    line = node.start_mark.line + 1 if node is not None else None
    for key in loc:
        if isinstance(node, yaml.MappingNode):
            match = next(((k, v) for k, v in node.value if k.value == key), None)
            if match is None:
                return line
            line = match[0].start_mark.line + 1
            node = match[1]
        elif isinstance(node, yaml.SequenceNode) and isinstance(key, int) and key < len(node.value):
            node = node.value[key]
            line = node.start_mark.line + 1
        else:
            return line
    return line


def load_config(path: str | Path | None) -> Config:
    if path is None:
        return Config()
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise FacedeblurError(f"config file {path} not found; pass --config with an existing file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise FacedeblurError(f"config file {path} cannot be read ({exc.__class__.__name__}); check permissions") from None
    try:
        node = yaml.compose(text)
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        raise FacedeblurError(f"{path}{where}: not valid YAML ({getattr(exc, 'problem', exc)})") from None
    if not isinstance(data, dict):
        raise FacedeblurError(f"{path}: the top level must be a mapping with 'pipeline:', 'daemon:', 'serve:' and/or 'queue:'")
    try:
        return Config.model_validate(data)
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            loc = tuple(error["loc"])
            key = ".".join(str(part) for part in loc)
            line = _line_of(node, loc)
            message = "unknown key (check the spelling against config.yaml)" if error["type"] == "extra_forbidden" else error["msg"]
            problems.append(f"{path} line {line}: {key}: {message}")
        raise FacedeblurError("; ".join(problems)) from None


def daemon_folders(config: Config, outbox: Path | None, state: Path | None, command: str) -> tuple[Path, Path]:
    """For the commands that read what the daemon made (serve, search): the outbox and state folders
    (--outbox/--state over the config's daemon.outbox/daemon.state), refused in one line until the daemon has
    made them (exit 75: they may appear once it runs)."""
    from .daemon.journal import JOURNAL_FILE

    outbox = outbox or config.daemon.outbox
    state = state or config.daemon.state
    if outbox is None or state is None:
        raise FacedeblurError(f"{command} needs the daemon's folders: set daemon.outbox and daemon.state in the "
                              "config (or pass --outbox and --state)")
    outbox, state = Path(outbox), Path(state)
    if not outbox.is_dir():
        raise NotYetAvailableError(f"outbox {outbox} is not a folder (yet); start the daemon or fix daemon.outbox")
    if not (state / JOURNAL_FILE).is_file():
        raise NotYetAvailableError(f"no job journal at {state / JOURNAL_FILE}; start the daemon once (it creates "
                                   "it) or fix daemon.state")
    return outbox, state
