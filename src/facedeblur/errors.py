"""One exception type whose message is the whole user-facing story: the problem and the fix, on one line."""


class FacedeblurError(Exception):
    """An error caused by the user's input or environment, reported as one line without a traceback."""
