"""The AI-restored label: one text for every output in which facedeblur restored faces.

Restored clips carry it as their container comment (footage/encode.py), restored images in their metadata
(image_files.labelled_png): a restored face holds detail the model inferred, and whoever finds the file later
must be able to tell it from an original, and from which model.
"""
from __future__ import annotations

from . import __version__

RESTORED_NOTICE = "Faces AI-restored by facedeblur; compare with the original before relying on details."
# How the faces' sharpness figure must be read, wherever it is shown (review pages, gallery).
EDGE_ENERGY_NOTE = ("Edge energy is the variance of the Laplacian of the face crop. Noise and compression blocks "
                    "count as edges too, so a restored face whose noise and blocking were removed can score lower "
                    "than the original: it is a measurement, not a quality score.")
SOFTWARE = f"facedeblur {__version__}"


def restored_label(model_name: str, model_version: str) -> str:
    """The label of one output, naming the model that restored its faces."""
    return f"{RESTORED_NOTICE} Model: {model_name} {model_version}."
