"""Shared helpers for the footage tests: synthetic clips (scripts/make_sample.py) and a controllable restorer.

The shipped restorer may still be an untrained placeholder, so tests that need restoration to *do*
something use a tiny sharpening model built here: a fixed unsharp-mask convolution exported as a real
facedeblur ONNX file and run through onnxruntime like any trained model. It proves the pipeline feeds the
model the right crops and puts its output back in the right place, independently of how well the shipped
model is trained.
"""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import cv2
import numpy as np

REPO = Path(__file__).resolve().parent.parent
SHARED_VIDEOS = REPO.parent / "shared" / "videos"


def load_make_sample():
    spec = importlib.util.spec_from_file_location("make_sample", REPO / "scripts" / "make_sample.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


make_sample = load_make_sample()


def build_sharpening_model(path: Path, amount: float = 1.5, crop_size: int = 128) -> Path:
    """An ONNX restorer that applies a 3x3 unsharp mask per channel and clips to [0, 1]."""
    import onnx
    from onnx import TensorProto, helper

    from facedeblur.pipeline.align import FACE_TEMPLATE
    from facedeblur.pipeline.restore import FORMAT_MARKER

    kernel = np.array([[0, -amount, 0], [-amount, 1 + 4 * amount, -amount], [0, -amount, 0]], np.float32)
    weights = np.repeat(kernel[None, None], 3, axis=0)  # depthwise: one kernel per colour channel
    graph = helper.make_graph(
        [helper.make_node("Conv", ["degraded", "kernel"], ["sharpened"], group=3, pads=[1, 1, 1, 1]),
         helper.make_node("Clip", ["sharpened", "low", "high"], ["restored"])],
        "sharpen",
        [helper.make_tensor_value_info("degraded", TensorProto.FLOAT, ["batch", 3, "height", "width"])],
        [helper.make_tensor_value_info("restored", TensorProto.FLOAT, ["batch", 3, "height", "width"])],
        initializer=[helper.make_tensor("kernel", TensorProto.FLOAT, weights.shape, weights.ravel()),
                     helper.make_tensor("low", TensorProto.FLOAT, [], [0.0]),
                     helper.make_tensor("high", TensorProto.FLOAT, [], [1.0])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    for key, value in {"format": FORMAT_MARKER, "name": "test-sharpen", "version": "1",
                       "crop_size": str(crop_size), "template": json.dumps(FACE_TEMPLATE.tolist())}.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def decode_video(path: Path) -> tuple[list[np.ndarray], dict]:
    import av

    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        frames = [f.to_ndarray(format="bgr24") for f in container.decode(stream)]
        info = {"fps": float(stream.average_rate), "width": stream.width, "height": stream.height,
                "audio": [a.codec_context.name for a in container.streams.audio]}
    return frames, info


def laplacian_variance(image: np.ndarray) -> float:
    return float(cv2.Laplacian(cv2.cvtColor(image, cv2.COLOR_BGR2GRAY), cv2.CV_64F).var())


def grid_of_faces(columns: int = 10, rows: int = 5, face_height: int = 110, seed: int = 3) -> np.ndarray:
    """One image with columns x rows copies of the astronaut's head (the '50 faces in a frame' case)."""
    head = make_sample.astronaut_head(face_height)
    tile = cv2.copyMakeBorder(head, 6, 6, 6, 6, cv2.BORDER_CONSTANT, value=(90, 90, 90))
    return np.vstack([np.hstack([tile] * columns)] * rows)


def write_avi_with_pcm_audio(path: Path, frames: list[np.ndarray], fps: int = 10) -> Path:
    """MPEG-4 video with PCM audio in AVI: audio that an MP4 file cannot carry as it is."""
    from fractions import Fraction

    import av

    height, width = frames[0].shape[:2]
    with av.open(str(path), "w") as container:
        video = container.add_stream("mpeg4", rate=fps)
        video.width, video.height, video.pix_fmt = width, height, "yuv420p"
        audio = container.add_stream("pcm_s16le", rate=16000)
        audio.layout = "mono"
        for index, frame in enumerate(frames):
            video_frame = av.VideoFrame.from_ndarray(frame, format="bgr24")
            video_frame.pts, video_frame.time_base = index, Fraction(1, fps)
            container.mux(video.encode(video_frame))
        container.mux(video.encode(None))
        samples = 16000 * len(frames) // fps
        tone = (3000 * np.sin(np.arange(samples) * 0.1)).astype(np.int16)
        for start in range(0, samples, 1600):
            audio_frame = av.AudioFrame.from_ndarray(tone[None, start:start + 1600], format="s16", layout="mono")
            audio_frame.sample_rate, audio_frame.pts, audio_frame.time_base = 16000, start, Fraction(1, 16000)
            container.mux(audio.encode(audio_frame))
        container.mux(audio.encode(None))
    return path


def damaged_talking_head(category: str, severity: str, frames: int = 80) -> list[np.ndarray]:
    """The first frames of the shared webcam clip, each damaged afresh as a CCTV camera or a shaking phone
    would (the trainer's degradations scaled to the face, as scripts/bench_video.py does)."""
    import av

    from facedeblur.degradations import degrade, scale_for_face
    from facedeblur.pipeline.detect import FaceDetector

    clean = []
    with av.open(str(SHARED_VIDEOS / "webcam-single-face.mp4")) as container:
        for frame in container.decode(video=0):
            clean.append(frame.to_ndarray(format="bgr24"))
            if len(clean) == frames:
                break
    face = max(FaceDetector().detect(clean[0]), key=lambda f: f.width * f.height)
    return [degrade(image, category, np.random.default_rng([0, index]), severity, scale=scale_for_face(face.width)).image
            for index, image in enumerate(clean)]
