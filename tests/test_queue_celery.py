"""queue.backend: celery, end to end: a real redis-server (loopback, random port, password, no persistence), a
real coordinator (`facedeblur watch`) and real `facedeblur worker` processes, observed through the filesystem,
the journal and Redis. Workers are killed with SIGKILL and Redis is restarted mid-batch: every clip must still
be published exactly once."""
from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from facedeblur.config import load_config
from facedeblur.daemon.broker import WORKER_KEY_PREFIX, map_path
from facedeblur.errors import FacedeblurError

from daemon_support import PYTHON, DaemonRun, assert_processed_exactly_once, make_clip

REDIS_SERVER = shutil.which("redis-server")
try:
    import celery  # noqa: F401
    import redis
except ImportError:   # the queue extra is not installed
    redis = None

needs_redis = pytest.mark.skipif(REDIS_SERVER is None or redis is None,
                                 reason="needs redis-server (apt-get install redis-server; .ci/run does this) and "
                                        "the queue extra (pip install -e '.[queue]')")
PASSWORD = "test-password-7d1f"
SECRET = b"test-signing-key-3a9c5e0b71d24f86"
LEASE_SECONDS, HEARTBEAT_SECONDS = 6.0, 1.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class RedisServer:
    """redis-server on 127.0.0.1 only, with requirepass and no persistence: a restart loses every queued task."""

    def __init__(self, root: Path):
        self.port = free_port()
        self.log_path = root / "redis.log"
        self.process: subprocess.Popen | None = None

    def start(self) -> "RedisServer":
        self.process = subprocess.Popen([REDIS_SERVER, "--port", str(self.port), "--bind", "127.0.0.1",
                                         "--save", "", "--appendonly", "no", "--requirepass", PASSWORD,
                                         "--logfile", str(self.log_path)])
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                if self.client().ping():
                    return self
            except redis.RedisError:
                time.sleep(0.1)
        raise AssertionError(f"redis-server did not start on port {self.port}")

    def client(self):
        return redis.Redis(host="127.0.0.1", port=self.port, password=PASSWORD, socket_timeout=5)

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)


class RemoteWorker:
    """A real `facedeblur worker` process (one thread)."""

    def __init__(self, config: Path, log_path: Path):
        self.config, self.log_path = config, log_path
        self.process: subprocess.Popen | None = None

    def start(self) -> "RemoteWorker":
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen([PYTHON, "-m", "facedeblur", "worker", "--config", str(self.config),
                                             "--concurrency", "1"], stdout=log, stderr=subprocess.STDOUT,
                                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
        return self

    @property
    def pid(self) -> int:
        return self.process.pid

    def kill9(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=30)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def queue_section(port: int, password_file: Path, secret_file: Path | None = None) -> str:
    secret = f"  secret_file: {json.dumps(str(secret_file))}\n" if secret_file else ""
    return (f"queue:\n  backend: celery\n  broker_url: redis://127.0.0.1:{port}/0\n"
            f"  password_file: {json.dumps(str(password_file))}\n  lease_seconds: {LEASE_SECONDS}\n"
            f"  heartbeat_seconds: {HEARTBEAT_SECONDS}\n  visibility_timeout: 30\n{secret}")


def celery_run(root: Path, server: RedisServer, **settings: object) -> DaemonRun:
    run = DaemonRun(root, **{"max_attempts": 2, **settings})
    password_file = root / "redis-password"
    password_file.write_text(PASSWORD + "\n", encoding="utf-8")
    secret_file = root / "queue-secret"
    secret_file.write_bytes(SECRET + b"\n")
    with open(run.config, "a", encoding="utf-8") as config:
        config.write(queue_section(server.port, password_file, secret_file))
    return run


def heartbeats(server: RedisServer) -> dict[int, dict]:
    """pid -> the live heartbeat of each worker (unsealed with the test secret)."""
    from facedeblur.daemon.messages import WorkerHeartbeat, unseal_raw
    client = server.client()
    beats = {}
    for key in client.scan_iter(match=WORKER_KEY_PREFIX + "*"):
        raw = client.get(key)
        if raw:
            beat = unseal_raw(raw, WorkerHeartbeat, SECRET).model_dump()
            beats[beat["pid"]] = beat
    return beats


def drop_clips(run: DaemonRun, names: list[str], frames: int, first_seed: int) -> None:
    """Each clip is written beside the inbox, then renamed in, so intake never sees half a file."""
    for offset, name in enumerate(names):
        temp = make_clip(run.root / f".{name}", frames=frames, seed=first_seed + offset)
        os.rename(temp, run.inbox / name)


@contextmanager
def cluster(run: DaemonRun, server: RedisServer, logs: Path, count: int) -> Iterator[list[RemoteWorker]]:
    """The coordinator and `count` workers, up until each heartbeats; all stopped at the end, including
    workers a test put in place of killed ones (it replaces them in the yielded list)."""
    workers = [RemoteWorker(run.config, logs / f"worker{i}.log") for i in range(count)]
    try:
        run.start()
        for worker in workers:
            worker.start()
        run.wait_for(lambda: len(heartbeats(server)) == count, 90, f"{count} live worker(s)")
        yield workers
    finally:
        for worker in workers:
            worker.stop()
        run.stop()


@pytest.fixture
def redis_server(tmp_path: Path):
    server = RedisServer(tmp_path).start()
    yield server
    server.kill()


@pytest.mark.slow
@needs_redis
def test_workers_killed_and_redis_restarted_lose_nothing_and_publish_each_clip_once(tmp_path: Path,
                                                                                    redis_server: RedisServer) -> None:
    run = celery_run(tmp_path / "site", redis_server)
    with cluster(run, redis_server, tmp_path, 2) as workers:
        status = subprocess.run([PYTHON, "-m", "facedeblur", "status", "--json", "--config", str(run.config)],
                                capture_output=True, text=True, timeout=60, check=True)
        listed = json.loads(status.stdout)["workers"]
        assert sorted(w["pid"] for w in listed) == sorted(w.pid for w in workers)
        assert all(w["host"] == socket.gethostname() and w["seconds_since_heartbeat"] < 10 for w in listed)

        # 1. A worker is killed with SIGKILL while it holds a job, then started again.
        first = [f"cam{i}.mp4" for i in range(6)]
        drop_clips(run, first, frames=60, first_seed=1)
        (run.inbox / "broken.mp4").write_bytes(b"this is not a video at all" * 40)
        victim = workers[0]
        run.wait_for(lambda: heartbeats(redis_server).get(victim.pid, {}).get("jobs"), 90,
                     "the first worker to hold a job")
        held = heartbeats(redis_server)[victim.pid]["jobs"][0]
        victim.kill9()
        workers[0] = RemoteWorker(run.config, tmp_path / "worker0-restarted.log").start()
        run.wait_for(lambda: run.settled(7), 150, "every clip of the first batch to settle")
        assert_processed_exactly_once(run, first)
        broken = next(j for j in run.jobs() if j["rel_path"] == "broken.mp4")
        assert broken["state"] == "failed" and broken["error"], broken
        note = (run.outbox / "failed" / f"broken.mp4-j{broken['id']}.mp4.error.txt").read_text(encoding="utf-8")
        assert broken["error"][:40] in note
        killed = next(j for j in run.jobs() if j["id"] == held["job_id"])
        assert killed["state"] == "done" and killed["dispatches"] >= 2, killed   # sent again as a new attempt
        assert f"event=lease_expired job={held['job_id']}" in run.log()

        # 2. Redis is killed mid-batch (no persistence: its queue and results are gone) and started again.
        second = [f"door{i}.mp4" for i in range(4)]
        drop_clips(run, second, frames=60, first_seed=20)
        run.wait_for(lambda: any(j["state"] == "running" for j in run.jobs()), 90, "a job of the second batch to run")
        redis_server.kill()
        time.sleep(2.0)
        redis_server.start()
        run.wait_for(lambda: run.settled(11), 150, "every clip of the second batch to settle")
        assert_processed_exactly_once(run, first + second)
        assert "event=broker_unreachable" in run.log() and "event=broker_reachable" in run.log()

        # Staged folders of attempts that are no longer live (the killed worker's) are swept, never published.
        run.wait_for(lambda: not any((run.outbox / ".staging").iterdir()), 30, "stale staging folders to be swept")
        assert all(worker.process.poll() is None for worker in workers), "a worker died with the broker"


@pytest.mark.slow
@needs_redis
def test_a_job_whose_worker_dies_every_time_ends_in_failed_and_the_cluster_goes_on(tmp_path: Path,
                                                                                  redis_server: RedisServer) -> None:
    """A poison clip: every worker that takes it dies (SIGKILL here, a decoder crash or OOM in life). After
    max_attempts (2) it is in failed/ with the reason; the other clips are processed, the workers are back."""
    run = celery_run(tmp_path / "site", redis_server)
    with cluster(run, redis_server, tmp_path, 2) as workers:
        drop_clips(run, ["poison.mp4"], frames=200, first_seed=40)
        run.wait_for(lambda: any(j["rel_path"] == "poison.mp4" for j in run.jobs()), 30, "the poison clip's job")
        poison_id = next(j["id"] for j in run.jobs() if j["rel_path"] == "poison.mp4")
        drop_clips(run, ["ok0.mp4", "ok1.mp4"], frames=10, first_seed=50)
        deaths = 0
        deadline = time.monotonic() + 120
        while next(j for j in run.jobs() if j["id"] == poison_id)["state"] != "failed":
            assert time.monotonic() < deadline, run.log()[-3000:]
            holder = next((i for i, w in enumerate(workers) if any(
                j["job_id"] == poison_id for j in heartbeats(redis_server).get(w.pid, {}).get("jobs", []))), None)
            if holder is None:
                time.sleep(0.2)
                continue
            workers[holder].kill9()
            deaths += 1
            workers[holder] = RemoteWorker(run.config, tmp_path / f"worker{holder}-{deaths}.log").start()
        run.wait_for(lambda: run.settled(3), 90, "the other clips")
        poison = next(j for j in run.jobs() if j["id"] == poison_id)
        assert deaths == 2 and "stopped reporting" in poison["error"], (deaths, poison)
        assert (run.outbox / "failed" / f"poison.mp4-j{poison_id}.mp4").is_file()
        assert_processed_exactly_once(run, ["ok0.mp4", "ok1.mp4"])
        run.wait_for(lambda: len(heartbeats(redis_server)) == 2, 90, "both workers live again")


@pytest.mark.slow
@needs_redis
def test_a_coordinator_killed_mid_job_adopts_the_remote_result_at_its_restart(tmp_path: Path,
                                                                             redis_server: RedisServer) -> None:
    """The worker goes on while the coordinator is down; the restarted coordinator takes the result of the
    attempt still running in its journal instead of processing the clip again."""
    run = celery_run(tmp_path / "site", redis_server)
    worker = RemoteWorker(run.config, tmp_path / "worker.log")
    try:
        run.start()
        worker.start()
        run.wait_for(lambda: len(heartbeats(redis_server)) == 1, 90, "a live worker")
        drop_clips(run, ["long.mp4"], frames=150, first_seed=60)
        run.wait_for(lambda: heartbeats(redis_server).get(worker.pid, {}).get("jobs"), 60, "the worker to hold the job")
        run.kill9()
        run.start()
        run.wait_for(lambda: run.settled(1), 90, "the adopted job")
        assert_processed_exactly_once(run, ["long.mp4"])
        job = run.jobs()[0]
        assert job["dispatches"] == 1 and f"event=job_adopted job={job['id']} attempt=1" in run.log(), job
        assert not any((run.outbox / ".staging").iterdir())
    finally:
        worker.stop()
        run.stop()


@pytest.mark.slow
@needs_redis
def test_a_worker_with_the_wrong_broker_password_refuses_to_start_with_one_line(tmp_path: Path,
                                                                               redis_server: RedisServer) -> None:
    wrong = tmp_path / "wrong-password"
    wrong.write_text("not-the-password\n", encoding="utf-8")
    config = tmp_path / "worker.yaml"
    config.write_text(queue_section(redis_server.port, wrong), encoding="utf-8")
    result = subprocess.run([PYTHON, "-m", "facedeblur", "worker", "--config", str(config)], capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "refused the password" in lines[0] and str(wrong) in lines[0], result.stderr
    assert PASSWORD not in result.stderr + result.stdout
    assert not heartbeats(redis_server)


@pytest.mark.skipif(redis is None, reason="needs the queue extra (pip install -e '.[queue]')")
def test_a_worker_without_a_reachable_broker_exits_75_for_systemd_to_retry(tmp_path: Path) -> None:
    config = tmp_path / "worker.yaml"
    config.write_text(f"queue:\n  backend: celery\n  broker_url: redis://127.0.0.1:{free_port()}/0\n",
                      encoding="utf-8")
    result = subprocess.run([PYTHON, "-m", "facedeblur", "worker", "--config", str(config)], capture_output=True,
                            text=True, timeout=60)
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 75 and len(lines) == 1 and "cannot reach the broker" in lines[0], result.stderr


def test_worker_without_the_queue_extra_says_how_to_install_it(tmp_path: Path) -> None:
    config = tmp_path / "worker.yaml"
    config.write_text("queue:\n  backend: celery\n  broker_url: redis://127.0.0.1:6379/0\n", encoding="utf-8")
    # As on a machine without the extra: importing celery fails.
    code = ("import sys; sys.modules['celery'] = None; from facedeblur.cli import main; "
            f"sys.exit(main(['worker', '--config', {str(config)!r}]))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and len(lines) == 1, result.stderr
    assert "pip install 'facedeblur[queue]'" in lines[0]


def test_queue_settings_refuse_a_password_in_the_url_and_celery_without_a_broker(tmp_path: Path) -> None:
    config = tmp_path / "c.yaml"
    config.write_text("queue:\n  backend: celery\n  broker_url: redis://:secret@10.0.0.5:6379/0\n", encoding="utf-8")
    with pytest.raises(FacedeblurError, match="must not hold a password.*password_file"):
        load_config(config)
    config.write_text("queue:\n  backend: celery\n", encoding="utf-8")
    with pytest.raises(FacedeblurError, match="line 1: queue: .*needs broker_url"):
        load_config(config)
    config.write_text("queue:\n  backend: celery\n  broker_url: redis://10.0.0.5/0\n  brokr: x\n", encoding="utf-8")
    with pytest.raises(FacedeblurError, match="queue.brokr: unknown key"):
        load_config(config)


def test_path_map_translates_the_longest_matching_prefix_both_ways() -> None:
    from facedeblur.config import PathMapping
    path_map = [PathMapping(coordinator=Path("/srv/fd"), worker=Path("/mnt/fd")),
                PathMapping(coordinator=Path("/srv/fd/outbox"), worker=Path("/mnt/out"))]
    assert map_path("/srv/fd/inbox/cam 1/a.mp4", path_map, to_worker=True) == "/mnt/fd/inbox/cam 1/a.mp4"
    assert map_path("/srv/fd/outbox/.staging/a-j1.a2", path_map, to_worker=True) == "/mnt/out/.staging/a-j1.a2"
    assert map_path("/mnt/out/.staging/a-j1.a2", path_map, to_worker=False) == "/srv/fd/outbox/.staging/a-j1.a2"
    assert map_path("/srv/fdx/a.mp4", path_map, to_worker=True) == "/srv/fdx/a.mp4"   # a prefix, not a string start


def test_the_local_backend_never_imports_celery() -> None:
    code = ("import sys; import facedeblur.daemon.service, facedeblur.cli; facedeblur.cli.build_parser(); "
            "assert not any(m.split('.')[0] in ('celery', 'redis', 'kombu') for m in sys.modules), "
            "sorted(m for m in sys.modules if m.startswith(('celery', 'redis', 'kombu')))")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_an_older_journal_gains_the_attempt_column_once(tmp_path: Path) -> None:
    import sqlite3
    from facedeblur.daemon.journal import Journal
    journal = Journal(tmp_path)
    journal.close()
    with sqlite3.connect(tmp_path / "journal.sqlite3") as raw:   # as an older facedeblur wrote it
        raw.execute("ALTER TABLE jobs DROP COLUMN dispatches")
    journal = Journal(tmp_path)
    job = journal.add(path="/in/a.mp4", inbox="/in", rel_path="a.mp4", kind="file", size=1, mtime_ns=1, sha256="h")
    assert journal.mark_running(job, 0) == 1 and journal.live_attempt(job) == 1
    journal.mark_retry(job, "x", 0)
    assert journal.live_attempt(job) is None and journal.mark_running(job, 0) == 2
    journal.close()


# ---- hostile messages: anyone who reaches the broker --------------------------------------------------------
def journal_id_of(run: DaemonRun) -> str:
    import sqlite3
    with sqlite3.connect(f"file:{run.state / 'journal.sqlite3'}?mode=ro", uri=True) as db:
        return db.execute("SELECT value FROM meta WHERE key='journal_id'").fetchone()[0]


def sealed_ticket(**fields):
    from facedeblur.daemon.messages import JobTicket, seal
    return seal(JobTicket(**fields), SECRET)


def send_raw_task(run: DaemonRun, argument) -> None:
    """A task put on the queue directly, as anyone holding the broker password can."""
    from facedeblur.daemon.broker import TASK_NAME, TASK_QUEUE, make_celery_app
    app = make_celery_app(load_config(run.config).queue)
    app.send_task(TASK_NAME, args=[argument], queue=TASK_QUEUE)


@contextmanager
def lone_worker(run: DaemonRun, server: RedisServer, log_path: Path) -> Iterator[RemoteWorker]:
    worker = RemoteWorker(run.config, log_path).start()
    try:
        run.wait_for(lambda: len(heartbeats(server)) == 1, 90, "a live worker")
        yield worker
    finally:
        worker.stop()


def rejections(log_path: Path) -> int:
    return log_path.read_text(encoding="utf-8", errors="replace").count("event=task_rejected")


@needs_redis
def test_a_task_naming_an_input_outside_the_inbox_or_another_outbox_is_rejected(tmp_path: Path,
                                                                              redis_server: RedisServer) -> None:
    run = celery_run(tmp_path / "site", redis_server)
    private = tmp_path / "private"
    make_clip(private / "private.mp4", frames=5)
    attacker_out = tmp_path / "attacker-out"
    attacker_out.mkdir()
    (run.inbox / "cams").symlink_to(private, target_is_directory=True)   # a link in the inbox to elsewhere
    worker_log = tmp_path / "worker.log"
    journal_id = "0" * 32
    results = redis_server.client()
    common = dict(id=7, attempt=1, journal_id=journal_id, kind="file", size=1, mtime_ns=1, sha256=None,
                  name="private.mp4-j7")
    with lone_worker(run, redis_server, worker_log):
        # Unsigned, in the shape of an unchecked task: any file the worker can read, into any folder.
        send_raw_task(run, {**common, "path": str(private / "private.mp4"), "inbox": str(private),
                            "rel_path": "private.mp4", "outbox": str(attacker_out), "follow_symlinks": True})
        # Signed (a leaked key), but naming a folder that is not one of the worker's inboxes, or its outbox.
        send_raw_task(run, sealed_ticket(**common, path=str(private / "private.mp4"), inbox=str(private),
                                         rel_path="private.mp4", outbox=str(run.outbox)))
        send_raw_task(run, sealed_ticket(**common, path=str(run.inbox / "a.mp4"), inbox=str(run.inbox),
                                         rel_path="a.mp4", outbox=str(attacker_out)))
        run.wait_for(lambda: rejections(worker_log) >= 3, 60, "three rejected tasks")
        # Signed and inside the inbox, through a link to a folder elsewhere: refused, never read.
        send_raw_task(run, sealed_ticket(**common, path=str(run.inbox / "cams" / "private.mp4"),
                                         inbox=str(run.inbox), rel_path="cams/private.mp4", outbox=str(run.outbox)))
        popped = results.blpop([f"facedeblur:results:{journal_id}"], timeout=60)
    assert popped is not None, worker_log.read_text()
    from facedeblur.daemon.messages import JobResult, Outcome, unseal
    result = unseal(json.loads(popped[1]), JobResult, SECRET)
    assert result.outcome is Outcome.INPUT_FAULT_PERMANENT and "'cams'" in result.error, result
    assert "unsigned task" in worker_log.read_text() and "is not one of this worker's daemon.inbox" in worker_log.read_text()
    assert not any(attacker_out.iterdir()) and not any((run.outbox / ".staging").glob("private*"))
    assert not results.llen(f"facedeblur:results:{journal_id}")


@needs_redis
def test_a_task_whose_name_climbs_out_of_the_outbox_deletes_nothing(tmp_path: Path,
                                                                   redis_server: RedisServer) -> None:
    run = celery_run(tmp_path / "site", redis_server)
    # OUTBOX/.staging/../../../victim-dir.a1 and its .input twin: what such a name would remove (.staging exists
    # on any outbox that has seen a job; the path resolves through it).
    (run.outbox / ".staging").mkdir()
    victims = [tmp_path / "victim-dir.a1", tmp_path / "victim-dir.a1.input"]
    for victim in victims:
        victim.mkdir()
        (victim / "evidence.txt").write_text("keep me", encoding="utf-8")
    worker_log = tmp_path / "worker.log"
    task = dict(id=9, attempt=1, journal_id="1" * 32, path=str(run.inbox / "gone.mp4"), inbox=str(run.inbox),
                rel_path="gone.mp4", kind="file", size=1, mtime_ns=1, sha256=None, outbox=str(run.outbox),
                name="../../../victim-dir", follow_symlinks=False)
    with lone_worker(run, redis_server, worker_log):
        send_raw_task(run, task)
        from facedeblur.daemon.messages import _mac, JobTicket
        body = json.dumps(task, sort_keys=True, separators=(",", ":"))
        send_raw_task(run, {"body": body, "hmac": _mac(SECRET, JobTicket, body)})   # signed, and still refused
        run.wait_for(lambda: rejections(worker_log) >= 2, 60, "both tasks rejected")
    assert all((victim / "evidence.txt").read_text(encoding="utf-8") == "keep me" for victim in victims)
    assert "name must be one output folder name ending in -j9" in worker_log.read_text()


@needs_redis
def test_a_forged_result_never_settles_a_running_job(tmp_path: Path, redis_server: RedisServer) -> None:
    """Results pushed onto the coordinator's list by someone else: unsigned, or signed but naming another job's
    published folder or a staging folder that is not the attempt's. Each is rejected and the job is done with
    its own output, published once."""
    from facedeblur.daemon.messages import JobResult, Outcome, seal
    run = celery_run(tmp_path / "site", redis_server, after="delete")
    with cluster(run, redis_server, tmp_path, 1) as workers:
        drop_clips(run, ["other.mp4"], frames=5, first_seed=70)
        run.wait_for(lambda: run.settled(1), 90, "the first clip")
        other = run.jobs()[0]
        drop_clips(run, ["long.mp4"], frames=150, first_seed=71)
        run.wait_for(lambda: heartbeats(redis_server).get(workers[0].pid, {}).get("jobs"), 60, "the worker on a job")
        job = next(j for j in run.jobs() if j["rel_path"] == "long.mp4")
        journal_id, key = journal_id_of(run), f"facedeblur:results:{journal_id_of(run)}"
        client = redis_server.client()
        client.rpush(key, json.dumps({"job_id": job["id"], "attempt": 1, "ok": True, "already_published": True,
                                      "output": other["output"], "journal_id": journal_id}))
        forged = [JobResult(job_id=job["id"], attempt=1, journal_id=journal_id, outcome=Outcome.ALREADY_PUBLISHED,
                            output=other["output"]),
                  JobResult(job_id=job["id"], attempt=1, journal_id=journal_id, outcome=Outcome.STAGED,
                            staging=str(run.outbox / ".staging" / Path(other["output"]).name))]
        for result in forged:
            client.rpush(key, json.dumps(seal(result, SECRET)))
        run.wait_for(lambda: run.log().count("event=result_rejected") >= 3, 30, "three rejected results")
        assert next(j for j in run.jobs() if j["id"] == job["id"])["state"] == "running"
        assert (run.inbox / "long.mp4").exists()   # after: delete did not act on a forged 'done'
        run.wait_for(lambda: run.settled(2), 120, "the real result")
    assert_processed_exactly_once(run, ["other.mp4", "long.mp4"])
    assert "unsigned result" in run.log()


def test_sealed_messages_refuse_unknown_missing_and_mistyped_fields_and_another_key() -> None:
    from facedeblur.daemon.messages import JobResult, JobTicket, MessageRejected, _mac, seal, unseal
    ticket = JobTicket(id=4, attempt=2, journal_id="a" * 32, path="/in/cam/a.mp4", inbox="/in", rel_path="cam/a.mp4",
                       kind="file", size=10, mtime_ns=5, sha256="b" * 64, outbox="/out", name="cam__a.mp4-j4")
    assert unseal(seal(ticket, SECRET), JobTicket, SECRET) == ticket

    def resealed(**change) -> dict:
        fields = {**json.loads(seal(ticket, SECRET)["body"]), **change}
        fields = {k: v for k, v in fields.items() if v is not ...}
        body = json.dumps(fields)
        return {"body": body, "hmac": _mac(SECRET, JobTicket, body)}
    for envelope, message in [
            (resealed(extra=1), "extra: Extra inputs are not permitted"),
            (resealed(size=...), "size: Field required"),
            (resealed(attempt="2"), "attempt: Input should be a valid integer"),
            (resealed(follow_symlinks=1), "follow_symlinks: Input should be a valid boolean"),
            (resealed(rel_path="../x.mp4", path="/x.mp4"), "rel_path: Value error"),
            (seal(ticket, b"another-key-of-enough-bytes"), "badly signed task"),
            ({**seal(ticket, SECRET), "x": 1}, "unsigned task")]:
        with pytest.raises(MessageRejected, match=message):
            unseal(envelope, JobTicket, SECRET)
    with pytest.raises(MessageRejected, match="badly signed result"):   # a signed ticket never passes as a result
        unseal(seal(ticket, SECRET), JobResult, SECRET)


def test_a_message_read_from_redis_is_unsealed_in_one_place_refusing_what_is_too_long_or_not_json() -> None:
    from facedeblur.daemon.messages import JobProgress, JobResult, MessageRejected, Outcome, seal, unseal_raw
    progress = JobProgress(journal_id="a" * 32, job_id=4, attempt=1, stage="restoring", frames_done=3, frames_total=9)
    raw = json.dumps(seal(progress, SECRET))
    assert unseal_raw(raw, JobProgress, SECRET, 4096) == progress
    assert unseal_raw(raw.encode(), JobProgress, SECRET) == progress               # redis-py hands bytes
    result = JobResult(journal_id="a" * 32, job_id=4, attempt=1, outcome=Outcome.DONE, output="/out/x",
                       seconds=1.0, frames=9, faces=2, tracks=1)
    assert unseal_raw(json.dumps(seal(result, SECRET)), JobResult, SECRET) == result
    for raw_message, kind, limit, message in [
            ("{not json", JobResult, None, "unreadable result: not JSON"),
            (b"\xff\xfe", JobProgress, 4096, "unreadable progress report: not JSON"),
            (raw, JobProgress, 100, f"progress report of {len(raw)} bytes"),
            (raw, JobResult, None, "badly signed result")]:
        with pytest.raises(MessageRejected, match=message):
            unseal_raw(raw_message, kind, SECRET, limit)


@needs_redis
def test_only_sealed_fresh_heartbeats_under_their_own_key_count_as_workers(redis_server: RedisServer) -> None:
    """What anyone reaching the broker might write under the worker keys: an unsigned heartbeat claiming a huge
    concurrency and a running job, one sealed with another key, a real one replayed after its lease, one copied
    under another worker's key, and bytes that are not JSON. Only the real, fresh heartbeat is a worker."""
    from facedeblur.daemon.broker import live_workers, worker_key
    from facedeblur.daemon.messages import HeldJob, WorkerHeartbeat, seal
    client = redis_server.client()
    held = HeldJob(journal_id="a" * 32, job_id=3, attempt=1, input="cam/a.mp4", started_at=time.time())
    real = WorkerHeartbeat(host="node1", pid=41, gpu=0, concurrency=2, jobs=[held], time=time.time())
    client.set(worker_key(real.name), json.dumps(seal(real, SECRET)))
    unsigned = {**real.model_dump(), "pid": 42, "concurrency": 100000}
    client.set(worker_key("node1:42"), json.dumps(unsigned))
    client.set(worker_key("node1:43"), json.dumps(seal(real.model_copy(update={"pid": 43}), b"another-key-of-enough-bytes")))
    old = real.model_copy(update={"pid": 44, "time": time.time() - 3 * LEASE_SECONDS})
    client.set(worker_key(old.name), json.dumps(seal(old, SECRET)))
    client.set(worker_key("node2:41"), json.dumps(seal(real, SECRET)))
    client.set(worker_key("node1:45"), b"\xff not json")
    workers, rejected = live_workers(client, SECRET, LEASE_SECONDS)
    assert workers == [real]
    assert workers[0].jobs[0] == held
    reasons = {key.removeprefix(WORKER_KEY_PREFIX): why for key, why in rejected.items()}
    assert set(reasons) == {"node1:42", "node1:43", "node1:44", "node2:41", "node1:45"}
    assert reasons["node1:42"].startswith("unsigned heartbeat")
    assert reasons["node1:43"].startswith("badly signed heartbeat")
    assert "replayed" in reasons["node1:44"]
    assert "another worker's key" in reasons["node2:41"]
    assert reasons["node1:45"].startswith("unreadable heartbeat")


@pytest.mark.slow
@needs_redis
def test_forged_heartbeats_neither_hold_a_job_nor_stop_the_coordinator(tmp_path: Path,
                                                                       redis_server: RedisServer) -> None:
    """While the only worker runs a long job it is killed, and someone writes unsigned heartbeats naming that
    job with a huge concurrency, plus garbage under the worker keys. The coordinator keeps running, its lease
    still runs out, the job is sent again to a new worker and every clip is published once; `facedeblur
    status` lists the real worker only, and names the refused keys."""
    run = celery_run(tmp_path / "site", redis_server)
    with cluster(run, redis_server, tmp_path, 1) as workers:
        drop_clips(run, ["long.mp4"], frames=150, first_seed=90)
        run.wait_for(lambda: heartbeats(redis_server).get(workers[0].pid, {}).get("jobs"), 90, "the worker on the job")
        held = heartbeats(redis_server)[workers[0].pid]["jobs"][0]
        workers[0].kill9()
        client = redis_server.client()
        forged = {"host": "intruder", "pid": 7, "gpu": None, "concurrency": 10 ** 6, "jobs": [held], "time": time.time()}
        for name, value in [("intruder:7", json.dumps(forged)), ("intruder:8", json.dumps({"pid": "x", "jobs": "x"})),
                            ("intruder:9", "[1, 2")]:
            client.set(WORKER_KEY_PREFIX + name, value, ex=600)
        run.wait_for(lambda: "event=heartbeat_rejected" in run.log(), 30, "the forged heartbeats refused")
        workers[0] = RemoteWorker(run.config, tmp_path / "worker-restarted.log").start()
        drop_clips(run, ["short.mp4"], frames=5, first_seed=91)
        run.wait_for(lambda: run.settled(2), 180, "both clips")
        status = subprocess.run([PYTHON, "-m", "facedeblur", "status", "--json", "--config", str(run.config)],
                                capture_output=True, text=True, timeout=60, check=True)
        report = json.loads(status.stdout)
        assert [w["pid"] for w in report["workers"]] == [workers[0].pid]
        assert len(report["rejected_heartbeats"]) == 3, report["rejected_heartbeats"]
    assert_processed_exactly_once(run, ["long.mp4", "short.mp4"])
    job = next(j for j in run.jobs() if j["rel_path"] == "long.mp4")
    assert job["state"] == "done" and job["dispatches"] >= 2, job   # the forged heartbeat held no lease
