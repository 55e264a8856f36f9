"""Find a person across jobs: one SFace identity vector per track (written by `process` into the manifest),
an index of every published track's vector, and searches by track or by photo (docs/review.md, "Person search")."""

DEFAULT_RESULTS = 20   # tracks listed per search (here, with no imports, so `facedeblur --help` stays quick)
