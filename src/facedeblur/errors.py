"""One exception type whose message is the whole user-facing story: the problem and the fix, on one line."""


class FacedeblurError(Exception):
    """An error caused by the user's input or environment, reported as one line without a traceback."""

    exit_status = 2   # the command's exit status (systemd: RestartPreventExitStatus=2, a person must fix it)


class NotYetAvailableError(FacedeblurError):
    """Something that may appear by itself (an inbox on a share not mounted yet): exit 75 (EX_TEMPFAIL), which
    systemd's Restart=on-failure retries, unlike a config error's 2."""

    exit_status = 75


class UnusableInputError(FacedeblurError):
    """The input itself can never be processed as it is (empty, not a video or image, undecodable,
    unsupported type): retrying the same bytes cannot help, so the daemon fails it on the first attempt."""
