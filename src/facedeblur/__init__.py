"""facedeblur: make faces in bad footage recognisable again, faithfully."""

__version__ = "0.1.0"
