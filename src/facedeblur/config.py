"""config.yaml: one file for the pipeline and the daemon, validated by pydantic.

Unknown keys are rejected and every error names the key and its line in the YAML file, so a typo
never silently falls back to a default.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from .errors import FacedeblurError


class StrictModel(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class DetectorSettings(StrictModel):
    score_threshold: float = Field(0.6, ge=0.05, le=1.0, description="minimum YuNet confidence")
    nms_threshold: float = Field(0.3, gt=0.0, le=1.0)
    min_face_size: int = Field(12, ge=4, description="smallest face (px, box side) that is kept")
    stride: int = Field(1, ge=1, description="detect on every k-th frame; tracks carry faces in between")


class TrackerSettings(StrictModel):
    track_activation_threshold: float = Field(0.5, ge=0.0, le=1.0)
    lost_track_buffer: int = Field(30, ge=1, description="frames a track survives without a detection")
    minimum_matching_threshold: float = Field(0.8, ge=0.0, le=1.0)
    minimum_consecutive_frames: int = Field(1, ge=1)
    use_identity: bool = Field(True, description="use SFace embeddings to keep identities apart")
    landmark_smoothing: float = Field(0.6, ge=0.0, lt=1.0, description="0 = none; higher = steadier crops")


class RestorerSettings(StrictModel):
    model: Path | None = Field(None, description="ONNX model; default: the one shipped in the package")
    batch_size: int = Field(16, ge=1, le=512)
    provider: Literal["auto", "cpu", "cuda"] = "auto"
    threads: int = Field(0, ge=0, description="onnxruntime threads; 0 = all cores")
    colour_lock: bool = True


class OutputSettings(StrictModel):
    write_restored: bool = True
    write_annotated: bool = True
    gallery_frames_per_track: int = Field(3, ge=1, le=50)
    video_crf: int = Field(18, ge=0, le=51)


class PipelineSettings(StrictModel):
    detector: DetectorSettings = DetectorSettings()
    tracker: TrackerSettings = TrackerSettings()
    restorer: RestorerSettings = RestorerSettings()
    output: OutputSettings = OutputSettings()


class DaemonSettings(StrictModel):
    inbox: list[Path] = Field(default_factory=list)
    outbox: Path | None = None
    state: Path | None = None
    recursive: bool = True
    polling: bool = False
    poll_interval: float = Field(5.0, gt=0)
    stable_seconds: float = Field(5.0, ge=0)
    rescan_seconds: float = Field(60.0, gt=0)
    workers: int = Field(1, ge=1, le=64)
    max_attempts: int = Field(3, ge=1)
    after: Literal["keep", "move", "delete"] = "keep"
    done_folder: Path | None = None
    failed_folder: Path | None = None
    skip_duplicates: bool = True
    follow_symlinks: bool = False
    include: list[str] = Field(default_factory=lambda: ["*.mp4", "*.mkv", "*.avi", "*.mov", "*.gif", "*.png",
                                                        "*.jpg", "*.jpeg", "*.webp", "*.bmp", "*.tif", "*.tiff"])
    ignore: list[str] = Field(default_factory=lambda: [".*", "*~", "*.part", "*.tmp", "@eaDir", ".DS_Store",
                                                       "Thumbs.db", ".stfolder", "#recycle"])
    shutdown_timeout: float = Field(30.0, gt=0)
    metrics_port: int | None = Field(None, ge=1, le=65535)
    retention_days: float | None = Field(None, gt=0)
    retention_max_gb: float | None = Field(None, gt=0)


class Config(StrictModel):
    pipeline: PipelineSettings = PipelineSettings()
    daemon: DaemonSettings = DaemonSettings()


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
        raise FacedeblurError(f"{path}: the top level must be a mapping with 'pipeline:' and/or 'daemon:'")
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
