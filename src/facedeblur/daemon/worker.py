"""Worker processes: each loads the models once, then runs jobs sent by the daemon over a pipe.

Publishing is what makes a job happen exactly once. The pipeline writes into OUTBOX/.staging/NAME
(its own temp folder renamed into place there), then the worker renames that folder into the outbox.
The rename is atomic, and a published folder is recognised by its manifest's (journal id, job id, input
SHA-256), never by its name alone, so:
  * a crash before the rename leaves nothing in the outbox (the daemon wipes .staging at start-up);
  * a crash after the rename but before the journal says 'done' is recognised at the next run by
    that manifest, and the job is marked done without processing it again;
  * a second publish of the same job cannot happen: renaming onto an existing non-empty folder fails;
  * a folder of the same name made by another journal (a second daemon sharing the outbox, or a journal
    moved away to process everything again) is left alone: the job publishes beside it, as NAME-2...
  * an input whose content changed while it was processed (its hash is not the one taken at intake) is
    not published: the daemon supersedes the job, and the new content becomes a new job.
"""
from __future__ import annotations

import ctypes
import errno
import json
import logging
import multiprocessing
import os
import re
import shutil
import signal
import stat
import time
import unicodedata
from collections.abc import Callable
from multiprocessing.connection import Connection
from pathlib import Path, PurePosixPath
from typing import Any

from .journal import inbox_name
from .messages import JobProgress, JobResult, JobTicket, Outcome
from .progress import REPORT_EVERY_SECONDS

log = logging.getLogger("facedeblur.daemon")

STAGING = ".staging"
MANIFEST_KEY = "daemon"   # the key under which the daemon's own fields go into manifest.json
# Errors of the machine, not of the input: the job is retried later without using up an attempt.
ENVIRONMENT_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EFBIG, errno.ENOMEM}


def output_name(rel_path: str, job_id: int) -> str:
    """A readable, filesystem-safe folder name, unique per job: 'cam1__front door.mp4' -> 'cam1__front_door.mp4-j42'.

    The job id suffix is what guarantees that two inputs with the same name (in different subfolders,
    or the same path dropped again with new content) never share an output folder.
    """
    text = unicodedata.normalize("NFC", rel_path).replace("/", "__")
    text = re.sub(r"[^\w.\-]+", "_", text, flags=re.UNICODE).strip("._") or "input"
    encoded = text.encode("utf-8")[:150]   # stay well under the 255-byte name limit
    return f"{encoded.decode('utf-8', 'ignore')}-j{job_id}"


MAX_NAME_CANDIDATES = 50   # NAME, NAME-2 ... NAME-50: other journals' folders of the same name


def publish_identity(folder: Path) -> tuple[str | None, int, str | None] | None:
    """(journal id, job id, input sha256) of a published folder, from its manifest; None if it has none."""
    try:
        manifest = json.loads((folder / "manifest.json").read_text(encoding="utf-8"))
        daemon = manifest[MANIFEST_KEY]
        return daemon.get("journal_id"), int(daemon["job_id"]), daemon.get("sha256")
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None


def name_candidates(name: str) -> list[str]:
    return [name] + [f"{name}-{n}" for n in range(2, MAX_NAME_CANDIDATES + 1)]


def find_published(outbox: Path, name: str, identity: tuple[str | None, int, str | None]) -> Path | None:
    """This job's published folder (by manifest identity), or None."""
    for candidate in name_candidates(name):
        folder = outbox / candidate
        if not os.path.lexists(folder):
            return None   # candidates are taken in order, so the job's folder cannot lie beyond a gap
        if publish_identity(folder) == identity:
            return folder
    return None


def publish(staging: Path, outbox: Path, name: str) -> Path:
    """Rename the finished staging folder to the first free name; a folder that appears meanwhile (another
    daemon on the same outbox) makes the rename fail, and the next name is tried."""
    for candidate in name_candidates(name):
        final = outbox / candidate
        if os.path.lexists(final):
            continue
        try:
            os.rename(staging, final)
        except OSError as exc:
            if exc.errno in (errno.ENOTEMPTY, errno.EEXIST, errno.ENOTDIR):
                continue
            raise
        _fsync_dir(outbox)
        return final
    raise FileExistsError(errno.EEXIST, f"{MAX_NAME_CANDIDATES} output folders named {name}... already exist; "
                          "move old outputs out of the outbox", str(outbox / name))


def manifest_numbers(manifest: dict[str, Any]) -> tuple[int | None, int | None, int | None]:
    """(frames, faces restored, tracks) from the pipeline's manifest."""
    def number(section: str, key: str) -> int | None:
        value = manifest.get(section, {}).get(key) if isinstance(manifest.get(section), dict) else None
        return int(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None
    return number("input", "frames"), number("summary", "faces_restored"), number("summary", "tracks")


def _die_with_parent() -> None:
    """Linux: the kernel kills this worker if the daemon dies (even by SIGKILL), so an orphan can never
    publish a job that the restarted daemon is running again."""
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        PR_SET_PDEATHSIG = 1
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    except OSError:
        pass


def worker_main(conn: Connection, pipeline_json: str, parent_pid: int) -> None:
    _die_with_parent()
    if os.getppid() != parent_pid:   # the parent died before prctl took effect
        os._exit(1)
    signal.signal(signal.SIGINT, signal.SIG_IGN)    # Ctrl-C and SIGHUP are for the daemon, which tells us
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    from ..config import PipelineSettings
    from ..errors import FacedeblurError
    from .logs import setup_daemon_logging
    setup_daemon_logging()   # the pipeline's own log lines go to the same journal as the daemon's
    settings = PipelineSettings.model_validate_json(pipeline_json)
    started = time.monotonic()
    try:
        from ..footage.process import load_models
        models = load_models(settings)
    except FacedeblurError as exc:
        conn.send(("load_failed", str(exc)))
        return
    except Exception as exc:  # noqa: BLE001 - reported to the daemon, which decides
        conn.send(("load_failed", f"{exc.__class__.__name__}: {exc}"))
        return
    conn.send(("ready", time.monotonic() - started))
    while True:
        try:
            job = conn.recv()
        except (EOFError, OSError):
            return
        if job is None:
            return
        conn.send(("result", run_job(job, settings, models,
                                     report=lambda progress: conn.send(("progress", progress.model_dump(mode="json"))))))


class ProgressReporter:
    """Turns the pipeline's per-frame counts into JobProgress reports: at every stage change, at the end of a
    stage, and otherwise at most once every REPORT_EVERY_SECONDS (a report is one journal write)."""

    def __init__(self, ticket: JobTicket, send: Callable[[JobProgress], None]):
        self.ticket, self.send = ticket, send
        self.stage: str | None = None
        self.sent_at = 0.0

    def __call__(self, stage: str, done: int, total: int | None) -> None:
        now = time.monotonic()
        finished = total is not None and done >= total
        if stage == self.stage and not finished and now - self.sent_at < REPORT_EVERY_SECONDS:
            return
        self.stage, self.sent_at = stage, now
        if total is not None and done > total:
            total = done   # a container's frame count is an estimate; the frames decoded are the truth
        try:
            self.send(JobProgress(job_id=self.ticket.id, attempt=self.ticket.attempt,
                                  journal_id=self.ticket.journal_id, stage=stage, frames_done=done,
                                  frames_total=total))
        except Exception as exc:  # noqa: BLE001 - progress is shown, never needed: a lost report loses nothing
            log.debug("event=progress_not_sent job=%d error=%s", self.ticket.id, exc)


def run_job(ticket: JobTicket, settings, models, publish_output: bool = True,
            report: Callable[[JobProgress], None] | None = None) -> JobResult:
    """Process one job into OUTBOX/.staging/NAME and publish it, or, with `publish_output` false (a remote
    worker), into OUTBOX/.staging/NAME.a<attempt>, left staged: only the coordinator, which knows whether this
    attempt is still the live one, may publish it. `report` gets the job's progress as it goes."""
    from ..errors import FacedeblurError, UnusableInputError
    from ..image_files import refuse_symlinks

    outbox = Path(ticket.outbox)
    staging_name = ticket.name if publish_output else ticket.staging_name
    staging = outbox / STAGING / staging_name
    held = outbox / STAGING / f"{staging_name}.input"
    staged = False

    shown = inbox_name(ticket.inbox, ticket.rel_path)
    # The pipeline names the path it was handed: the held copy in .staging, or the absolute inbox path. A person
    # knows the input by its place in the inbox, so errors say that (longest first: the held link before its folder).
    internal_names = sorted({str(held / PurePosixPath(ticket.rel_path).name), str(held), ticket.path}, key=len,
                            reverse=True)

    def result(outcome: Outcome, **fields: Any) -> JobResult:
        if fields.get("error"):
            for name in internal_names:
                fields["error"] = fields["error"].replace(name, shown)
        return JobResult(job_id=ticket.id, attempt=ticket.attempt, journal_id=ticket.journal_id, outcome=outcome,
                         **fields)
    if ticket.sha256 is not None:
        earlier = find_published(outbox, ticket.name, (ticket.journal_id, ticket.id, ticket.sha256))
        if earlier is not None:
            return result(Outcome.ALREADY_PUBLISHED, output=str(earlier))
    refuse_symlinks(not ticket.follow_symlinks)   # every image this job reads is opened with O_NOFOLLOW
    held_fd: int | None = None
    try:
        if not os.path.lexists(ticket.path):
            return result(Outcome.VANISHED, error="input disappeared before it was processed; drop it again to "
                                                  "process it")
        reporter = ProgressReporter(ticket, report) if report is not None else None
        if reporter is not None:
            reporter("starting", 0, None)
        input_path, held_fd = _checked_input(ticket, held)
        numbers = _process(ticket, input_path, staging, settings, models, reporter)
        if numbers is None:
            # The file changed while it was processed (a writer that paused and went on): publishing would
            # describe neither version. The daemon supersedes this job; the new content is a new job.
            return result(Outcome.CHANGED, error="the input changed while it was processed; its new content is "
                                                 "processed as a new job")
        if not publish_output:
            staged = True
            return result(Outcome.STAGED, staging=str(staging), **numbers)
        return result(Outcome.DONE, output=str(publish(staging, outbox, ticket.name)), **numbers)
    except PermanentInputError as exc:
        return result(Outcome.INPUT_FAULT_PERMANENT, error=str(exc))
    except FacedeblurError as exc:
        # The pipeline words write errors for a person ("cannot create the output folder..."); whether
        # the cause was the machine (disk full, read-only outbox) decides if the input is to blame.
        cause = _environment_cause(exc, outbox)
        if cause is not None:
            return result(Outcome.TRANSIENT_FAILURE,
                          error=f"{exc} [{cause}; the job is retried once {outbox} is writable]")
        permanent = isinstance(exc, UnusableInputError)
        return result(Outcome.INPUT_FAULT_PERMANENT if permanent else Outcome.INPUT_FAULT, error=str(exc))
    except OSError as exc:
        environment = exc.errno in ENVIRONMENT_ERRNOS or _under(exc, outbox)
        text = f"{exc.strerror or exc.__class__.__name__}: {exc.filename or ''}".rstrip(": ")
        if exc.errno == errno.ENOSPC:
            text = f"output disk full ({text}); free space in {outbox}, the job is retried"
        elif environment:
            text = f"cannot write the output ({text}); fix {outbox}, the job is retried"
        return result(Outcome.TRANSIENT_FAILURE if environment else Outcome.INPUT_FAULT, error=text)
    except Exception as exc:  # noqa: BLE001 - any pipeline failure on this input is recorded, not fatal
        return result(Outcome.INPUT_FAULT, error=f"{exc.__class__.__name__}: {exc}".replace("\n", " ")[:500])
    finally:
        if not staged:
            shutil.rmtree(staging, ignore_errors=True)
        shutil.rmtree(held, ignore_errors=True)
        if held_fd is not None:
            os.close(held_fd)


def _process(ticket: JobTicket, input_path: Path, staging: Path, settings, models,
             on_progress: Callable[[str, int, int | None], None] | None = None) -> dict[str, Any] | None:
    """Run the pipeline into `staging`; its numbers, or None when the input changed while it was read."""
    from ..footage.process import process_input
    started = time.monotonic()
    sha256 = ticket.sha256
    if sha256 is None:   # it could not be read at intake; maybe it can now
        sha256 = _readable_sha256(Path(ticket.path), ticket.follow_symlinks)
    if staging.exists():
        shutil.rmtree(staging)
    staging.parent.mkdir(parents=True, exist_ok=True)
    extra = {MANIFEST_KEY: {"journal_id": ticket.journal_id, "job_id": ticket.id, "input": ticket.rel_path,
                            "inbox": ticket.inbox, "sha256": sha256, "size": ticket.size}}
    manifest = process_input(input_path, staging, settings, models=models, progress=False, extra_manifest=extra,
                             on_progress=on_progress)
    if manifest["input"]["sha256"] != sha256:
        return None
    frames, faces, tracks = manifest_numbers(manifest)
    return {"seconds": time.monotonic() - started, "frames": frames, "faces": faces, "tracks": tracks}


def _permission_error(shown: str, exc: OSError) -> Exception:
    from ..errors import FacedeblurError
    if isinstance(exc, PermissionError):
        return FacedeblurError(f"{shown}: not readable by the daemon (permission denied); fix its permissions "
                               "or the service user's groups")
    return exc


class PermanentInputError(Exception):
    """The input can never succeed as it is (a symlink, not a regular file...): fail at once, no retry."""


def _open_beneath(inbox: str, rel_path: str, flags: int, shown: str) -> int:
    """An fd of INBOX/REL_PATH with every component below the inbox opened without following links: a folder
    on the way swapped for a link (to /etc, to another inbox) is refused, not walked through."""
    dir_fd = os.open(inbox, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        *folders, last = rel_path.split("/")
        for part in folders:
            try:
                next_fd = os.open(part, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dir_fd)
            except OSError as exc:
                if exc.errno in (errno.ELOOP, errno.ENOTDIR):
                    raise PermanentInputError(f"{shown}: the folder {part!r} on its path is a symbolic link; "
                                              "symlinks are not followed (daemon.follow_symlinks: false)") from None
                raise
            os.close(dir_fd)
            dir_fd = next_fd
        return os.open(last, flags, dir_fd=dir_fd)
    finally:
        os.close(dir_fd)


def _checked_input(ticket: JobTicket, held: Path) -> tuple[Path, int | None]:
    """With follow_symlinks false: neither the input nor a folder on its way from the inbox may be a symlink,
    and a frame folder may not hold one.

    A file is opened here with O_NOFOLLOW and checked with fstat; a video is then handed to the pipeline as
    HELD/<its name> -> /proc/self/fd/N, so every later open by the pipeline (PyAV, twice, plus the audio
    copy) reads exactly the inode checked here, even if the name is swapped for a link meanwhile. Images
    are read with O_NOFOLLOW (image_files.refuse_symlinks), which covers photos and frames."""
    from ..inputs import is_video_name
    from ..safe_text import display_name
    path = Path(ticket.path)
    if ticket.follow_symlinks:
        return path, None
    shown = inbox_name(ticket.inbox, ticket.rel_path)
    flags = os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK | os.O_NOFOLLOW
    if ticket.kind == "frames":
        try:
            os.close(_open_beneath(ticket.inbox, ticket.rel_path, flags | os.O_DIRECTORY, shown))
        except OSError as exc:
            if exc.errno in (errno.ELOOP, errno.ENOTDIR):
                raise PermanentInputError(f"{shown}: is a symbolic link, not a folder; symlinks are not followed "
                                          "(daemon.follow_symlinks: false)") from None
            raise _permission_error(shown, exc) from None
        with os.scandir(path) as entries:
            links = sorted(e.name for e in entries if e.is_symlink())
        if links:
            names = ", ".join(display_name(n) for n in links[:5]) + (" ..." if len(links) > 5 else "")
            raise PermanentInputError(f"{shown}: the frame folder holds symbolic links ({names}); symlinks are not "
                                      "followed (daemon.follow_symlinks: false); drop the frames themselves")
        return path, None
    try:
        fd = _open_beneath(ticket.inbox, ticket.rel_path, flags, shown)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise PermanentInputError(f"{shown}: is a symbolic link; symlinks are not followed "
                                      "(daemon.follow_symlinks: false)") from None
        raise _permission_error(shown, exc) from None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise PermanentInputError(f"{shown}: not a regular file (a device, FIFO or socket); drop a video or image")
        if not is_video_name(path.name) or not os.path.exists(f"/proc/self/fd/{fd}"):
            return path, fd
        shutil.rmtree(held, ignore_errors=True)   # left by a worker killed mid-job (timeout, crash)
        held.mkdir(parents=True)
        link = held / path.name
        os.symlink(f"/proc/self/fd/{fd}", link)
        return link, fd
    except BaseException:
        os.close(fd)
        raise


def _environment_cause(exc: BaseException, outbox: Path) -> str | None:
    """Why the outbox, not the input, is at fault, or None. Follows the exception's context chain
    (the pipeline raises its one-line errors `from None`, which keeps the original as __context__),
    then checks that the outbox really takes a write."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, OSError) and seen.errno in ENVIRONMENT_ERRNOS:
            return os.strerror(seen.errno)
        seen = seen.__cause__ or seen.__context__
    return outbox_write_problem(outbox)


def outbox_write_problem(outbox: Path) -> str | None:
    """None if the outbox takes a small write now, else why not (disk full, read-only, permissions)."""
    probe = outbox / STAGING / f".probe-{os.getpid()}"
    try:
        probe.parent.mkdir(parents=True, exist_ok=True)
        with open(probe, "wb") as handle:
            handle.write(b"\0" * 65536)
            handle.flush()
            os.fsync(handle.fileno())
        return None
    except OSError as probe_error:
        return f"the outbox does not take writes: {probe_error.strerror or probe_error}"
    finally:
        try:
            probe.unlink()
        except OSError:
            pass


def _readable_sha256(path: Path, follow_symlinks: bool) -> str:
    """The hash intake could not take (the input was unreadable then); the same rule as the manifest's."""
    from ..errors import FacedeblurError
    from ..inputs import sha256_of_input
    try:
        return sha256_of_input(path, follow_symlinks=follow_symlinks)
    except PermissionError:
        raise FacedeblurError(f"{path}: not readable by the daemon (permission denied); fix its permissions "
                              "or the service user's groups") from None


def _under(exc: OSError, folder: Path) -> bool:
    name = exc.filename
    return isinstance(name, (str, os.PathLike)) and str(name).startswith(str(folder))


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class WorkerHandle:
    """The daemon's side of one worker process."""

    def __init__(self, index: int, pipeline_json: str):
        ctx = multiprocessing.get_context("spawn")   # no fork: the daemon has watchdog threads running
        self.index = index
        self.pipeline_json = pipeline_json
        self.conn, child = ctx.Pipe()
        self.process = ctx.Process(target=worker_main, args=(child, pipeline_json, os.getpid()),
                                   name=f"facedeblur-worker-{index}", daemon=True)
        self.process.start()
        child.close()
        self.ready = False
        self.job_id: int | None = None
        self.job_started = 0.0
        self.load_seconds: float | None = None
        self.retire = False   # set on reload: replace once idle

    @property
    def pid(self) -> int:
        return self.process.pid or 0

    def send(self, ticket: JobTicket | None) -> None:
        self.conn.send(ticket)

    def kill(self) -> None:
        if self.process.is_alive():
            self.process.kill()
        self.process.join(timeout=5)
        self.conn.close()

    def stop(self) -> None:
        try:
            self.conn.send(None)
        except OSError:
            pass
        self.process.join(timeout=5)
        self.kill()
