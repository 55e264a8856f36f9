"""Stage 7b, annotate: boxes, track ids and a visible "AI-restored" notice drawn on the restored frame."""
from __future__ import annotations

import cv2
import numpy as np

NOTICE = "AI-restored faces - not the original footage"


def track_colour(track_id: int | None) -> tuple[int, int, int]:
    if track_id is None:
        return (160, 160, 160)
    hue = (track_id * 47) % 180  # golden-angle-like spread: neighbouring ids get distinct colours
    bgr = cv2.cvtColor(np.uint8([[[hue, 220, 255]]]), cv2.COLOR_HSV2BGR)[0, 0]
    return int(bgr[0]), int(bgr[1]), int(bgr[2])


def draw_annotations(image: np.ndarray, faces: list) -> np.ndarray:
    """`faces`: objects with `.track_id` and `.box`; returns a new image."""
    out = image.copy()
    height, width = out.shape[:2]
    scale = max(0.8, min(width, height) / 450)  # labels readable on small CCTV frames and on 4K
    thickness = max(1, int(round(2 * scale)))
    for face in faces:
        x1, y1, x2, y2 = (int(round(v)) for v in face.box)
        colour = track_colour(face.track_id)
        cv2.rectangle(out, (x1, y1), (x2, y2), colour, thickness)
        label = f"#{face.track_id}" if face.track_id is not None else "face"
        (tw, th), base = cv2.getTextSize(label, cv2.FONT_HERSHEY_SIMPLEX, 0.5 * scale, thickness)
        top = max(0, y1 - th - base - 2)
        cv2.rectangle(out, (x1, top), (x1 + tw + 4, top + th + base + 2), colour, -1)
        cv2.putText(out, label, (x1 + 2, top + th + 1), cv2.FONT_HERSHEY_SIMPLEX, 0.5 * scale, (0, 0, 0), thickness,
                    cv2.LINE_AA)
    # The notice sits on a dark band at the top so it reads on any footage.
    (unit_width, _), _ = cv2.getTextSize(NOTICE, cv2.FONT_HERSHEY_SIMPLEX, 1.0, thickness)
    text_scale = float(np.clip(width * 0.6 / unit_width, 0.35, 2.5))  # about 60% of the frame's width
    (tw, th), base = cv2.getTextSize(NOTICE, cv2.FONT_HERSHEY_SIMPLEX, text_scale, thickness)
    band = th + base + 8
    out[:band] = (out[:band].astype(np.float32) * 0.35).astype(np.uint8)
    cv2.putText(out, NOTICE, (4, band - base - 4), cv2.FONT_HERSHEY_SIMPLEX, text_scale, (0, 255, 255), thickness,
                cv2.LINE_AA)
    return out
