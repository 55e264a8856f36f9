"""The watch-folder daemon (`facedeblur watch`, `facedeblur status`); see docs/daemon.md."""
