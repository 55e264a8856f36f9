"""The review server as an attacker sees it: hostile names, traversal, symlinks, CSRF, logins, tokens,
binding beyond loopback, and the systemd unit that confines it."""
from __future__ import annotations

import html
import os
import re
import resource
import shutil
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from cli_support import one_error_line
from facedeblur.daemon.journal import Journal
from review_support import (HOSTILE_NAME, PASSWORD, PYTHON, REPO, TOKEN, Outbox, Server, csrf_of, one_job_copy,
                            password_hash, processed_outbox, session_cookie, write_serve_config)


@pytest.fixture(scope="module")
def box(tmp_path_factory):
    return processed_outbox(tmp_path_factory)


@pytest.fixture(scope="module")
def open_server(box, tmp_path_factory):
    """Loopback without credentials: the default for one analyst on the machine itself."""
    running = Server(write_serve_config(tmp_path_factory.mktemp("open") / "serve.yaml", box,
                                        exports=str(tmp_path_factory.mktemp("open-exports"))))
    yield running
    running.stop()


@pytest.fixture(scope="module")
def token_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("secrets") / "review.token"
    path.write_text(TOKEN + "\n", encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def locked_server(box, tmp_path_factory, token_file):
    """A user with a password hash and an API token read from a file."""
    config = write_serve_config(tmp_path_factory.mktemp("locked") / "serve.yaml", box,
                                users=[{"name": "alice", "password_hash": password_hash()}],
                                token_file=str(token_file), login_attempts=3,
                                exports=str(tmp_path_factory.mktemp("locked-exports")))
    running = Server(config)
    yield running
    running.stop()


def serve_command(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([PYTHON, "-m", "facedeblur", "serve", *args], capture_output=True, text=True, timeout=60,
                          env={**os.environ, **(env or {})})


# ---- escaping ----------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_hostile_names_and_notes_render_as_text(open_server: Server, box) -> None:
    job = box.job_by_input(f"cam2/{HOSTILE_NAME}")["id"]
    listing = open_server.request("GET", "/")[2].decode()
    _, headers, page = open_server.request("GET", f"/jobs/{job}")
    cookie, csrf = session_cookie(headers), csrf_of(page)
    note = '</textarea><script>alert("note")</script><img src=x onerror=alert(2)>'
    version = int(re.search(rb'name="version" value="(\d+)"', page).group(1))
    assert open_server.request("POST", f"/jobs/{job}/tracks/1/mark", cookie=cookie,
                               body={"csrf_token": csrf, "status": "flagged", "note": note,
                                     "version": version})[0] == 303
    page = open_server.request("GET", f"/jobs/{job}", cookie=cookie)[2].decode()
    for rendered in (listing, page):
        assert "&lt;img src=x onerror=alert(1)&gt;.mp4" in rendered
        assert "<img src=x" not in rendered and "<script>alert" not in rendered
    textarea = re.search(r'<textarea name="note"[^>]*>(.*?)</textarea>', page, re.S).group(1)
    assert html.unescape(textarea) == note                            # shown back exactly, as text


@pytest.mark.slow
def test_security_headers_forbid_inline_scripts(open_server: Server) -> None:
    for path in ("/", "/jobs/1", "/jobs/1/files/manifest.json", "/healthz"):
        _, headers, _ = open_server.request("GET", path)
        policy = dict(d.strip().split(" ", 1) for d in headers["content-security-policy"].split(";") if " " in d.strip())
        assert policy["default-src"] == "'none'" and policy.get("script-src", "'self'") == "'self'"
        assert headers["x-content-type-options"] == "nosniff"
        assert headers["x-frame-options"] == "DENY"
        assert headers["referrer-policy"] == "no-referrer"
    _, headers, page = open_server.request("GET", "/")
    assert b"<script>" not in page and b" on" + b"click=" not in page
    cookie_attributes = {part.strip().lower() for part in headers["set-cookie"].split(";")[1:]}   # names are case-blind
    assert {"samesite=strict", "httponly"} <= cookie_attributes
    # A served file never runs script, even an HTML one.
    file_policy = open_server.request("GET", "/jobs/1/files/index.html")[1]["content-security-policy"]
    assert "default-src 'none'" in file_policy and "script-src" not in file_policy
    assert "sandbox" in file_policy and "allow-scripts" not in file_policy


@pytest.mark.slow
def test_without_credentials_only_loopback_host_names_are_answered(open_server: Server,
                                                                   locked_server: Server) -> None:
    """DNS rebinding: a page on evil.example re-pointed at 127.0.0.1 must not read or change anything."""
    for host in ("evil.example", f"evil.example:{open_server.port}", "127.0.0.1.evil.example"):
        status, _, body = open_server.request("GET", "/", headers={"Host": host})
        assert status == 400 and b"sample-clip" not in body
    for host in (f"127.0.0.1:{open_server.port}", f"localhost:{open_server.port}", "localhost"):
        assert open_server.request("GET", "/", headers={"Host": host})[0] == 200
    # With credentials any name may reach it (behind a proxy); the login protects it.
    assert locked_server.request("GET", "/", headers={"Host": "review.example"})[0] == 401


# ---- traversal and symlinks --------------------------------------------------------------------------------
TRAVERSALS = ["/jobs/1/files/../../state/journal.sqlite3", "/jobs/1/files/..%2F..%2Fstate%2Fjournal.sqlite3",
              "/jobs/1/files/%2e%2e/%2e%2e/state/journal.sqlite3", "/jobs/1/files//etc/passwd",
              "/jobs/1/files/%2Fetc%2Fpasswd", "/jobs/1/files/faces/../../../../../../etc/passwd",
              "/jobs/1/files/..\\..\\state\\journal.sqlite3", "/jobs/1/files/manifest.json%00.png",
              "/jobs/1/files/./manifest.json", "/jobs/1/files/faces", "/jobs/1/files/",
              "/cases/../../state/journal.sqlite3", "/cases/0123456789abcdef/files/../../journal.sqlite3",
              "/static/../review/app.py", "/static/..%2fapp.py"]


@pytest.mark.slow
@pytest.mark.parametrize("path", TRAVERSALS)
def test_no_traversal_out_of_a_job_folder(open_server: Server, path: str) -> None:
    status, _, body = open_server.request("GET", path)
    assert status in (400, 404), (status, body[:200])
    assert b"SQLite format" not in body and b"root:" not in body and b"def create_app" not in body


@pytest.mark.slow
def test_symlinks_inside_the_outbox_are_never_followed(open_server: Server, box, tmp_path: Path) -> None:
    secret = tmp_path / "secret.png"
    secret.write_bytes(b"\x89PNG secret outside the outbox")
    folder = Path(box.job_by_input("cam1/sample-clip.mp4")["output"])
    (folder / "leak.png").symlink_to(secret)
    (folder / "faces" / "77").symlink_to(tmp_path, target_is_directory=True)
    (folder / "inside.png").symlink_to(folder / "faces" / "1" / "frame-000002-restored.png")   # even inside
    try:
        for path in ("/jobs/1/files/leak.png", "/jobs/1/files/faces/77/secret.png", "/jobs/1/files/inside.png"):
            status, _, body = open_server.request("GET", path)
            assert status == 404 and b"secret" not in body
    finally:
        for link in (folder / "leak.png", folder / "faces" / "77", folder / "inside.png"):
            link.unlink()


@pytest.mark.slow
def test_a_journal_pointing_outside_the_outbox_is_not_followed(tmp_path: Path) -> None:
    outbox, state, elsewhere = tmp_path / "outbox", tmp_path / "state", tmp_path / "elsewhere"
    for folder in (outbox, state, elsewhere):
        folder.mkdir()
    (elsewhere / "manifest.json").write_text('{"tracks": []}', encoding="utf-8")
    journal = Journal(state)
    for output in (elsewhere, outbox / ".." / "elsewhere"):
        job_id = journal.add(path="/in/x.mp4", inbox="/in", rel_path="x.mp4", kind="file", size=1, mtime_ns=0,
                             sha256="0" * 64)
        journal.mark_done(job_id, str(output), 1.0, 1, 0)
    journal.close()
    running = Server(write_serve_config(tmp_path / "serve.yaml", Outbox(tmp_path, tmp_path, outbox, state)))
    try:
        for job_id in (1, 2):
            assert running.request("GET", f"/jobs/{job_id}/files/manifest.json")[0] == 404
            assert "No published output" in running.request("GET", f"/jobs/{job_id}")[2].decode()
    finally:
        running.stop()


# ---- CSRF ------------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_state_changes_need_the_csrf_token_of_the_session(open_server: Server, box) -> None:
    _, headers, page = open_server.request("GET", "/jobs/1")
    cookie, csrf = session_cookie(headers), csrf_of(page)
    other_page = open_server.request("GET", "/jobs/1")[2]
    other_csrf = csrf_of(other_page)
    db = sqlite3.connect(box.state / "review.sqlite3")
    before = db.execute("SELECT COUNT(*) FROM audit").fetchone()[0]
    forged = [dict(cookie=cookie, body={"status": "flagged", "note": "x", "version": 0}),
              dict(cookie=cookie, body={"csrf_token": "guess", "status": "flagged", "note": "x", "version": 0}),
              dict(cookie=cookie, body={"csrf_token": other_csrf, "status": "flagged", "note": "x", "version": 0}),
              dict(cookie=None, body={"csrf_token": csrf, "status": "flagged", "note": "x", "version": 0})]
    for attempt in forged:
        assert open_server.request("POST", "/jobs/1/tracks/1/mark", **attempt)[0] == 403
    for path in ("/case/toggle", "/case/new", "/case/1/export", "/case/1/tracks", "/case/1/rename", "/case/1/open",
                 "/logout"):
        assert open_server.request("POST", path, cookie=cookie, body={"job": 1, "track": 1})[0] == 403
    assert db.execute("SELECT COUNT(*) FROM audit").fetchone()[0] == before
    db.close()


# ---- authentication ------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_wrong_or_missing_token_is_refused(locked_server: Server) -> None:
    assert locked_server.request("GET", "/healthz")[0] == 200          # for monitoring, without credentials
    assert locked_server.request("GET", "/")[0] == 401
    assert locked_server.request("GET", "/", headers={"Accept": "text/html"})[1]["location"].startswith("/login")
    assert locked_server.request("GET", "/jobs/1/files/manifest.json")[0] == 401
    for header in (f"Bearer {TOKEN}x", f"Bearer {TOKEN[:-1]}", "Bearer ", f"Basic {TOKEN}", TOKEN):
        status, headers, _ = locked_server.request("GET", "/", headers={"Authorization": header})
        assert status == 401 and "Bearer" in headers["www-authenticate"]
    assert locked_server.request("GET", "/", headers={"Authorization": f"Bearer {TOKEN}"})[0] == 200
    status, _, body = locked_server.request("GET", "/jobs/1/files/manifest.json",
                                            headers={"Authorization": f"Bearer {TOKEN}"})
    assert status == 200 and body.startswith(b"{")


@pytest.mark.slow
def test_a_script_with_the_token_marks_without_csrf_and_is_audited(locked_server: Server, box) -> None:
    bearer = {"Authorization": f"Bearer {TOKEN}"}
    job = box.job_by_input("cam1/sample-clip.mp4")["id"]
    page = locked_server.request("GET", f"/jobs/{job}", headers=bearer)[2].decode()
    version = int(re.search(r'name="version" value="(\d+)"', page).group(1))
    status, _, _ = locked_server.request("POST", f"/jobs/{job}/tracks/1/mark", headers=bearer,
                                         body={"status": "reviewed", "note": "by script", "version": version})
    assert status == 303                         # a browser never sends the header on its own: no CSRF risk
    db = sqlite3.connect(box.state / "review.sqlite3")
    who, after = db.execute("SELECT who, after FROM audit ORDER BY id DESC LIMIT 1").fetchone()
    db.close()
    assert who == "api-token" and '"by script"' in after


def login(server: Server, user: str, password: str) -> tuple[int, dict]:
    _, headers, page = server.request("GET", "/login")
    cookie = session_cookie(headers)
    status, headers, _ = server.request("POST", "/login", cookie=cookie,
                                        body={"csrf_token": csrf_of(page), "user": user, "password": password,
                                              "next": "//evil.example/"})
    return status, headers


@pytest.mark.slow
def test_login_works_and_failed_logins_are_limited(locked_server: Server) -> None:
    status, headers = login(locked_server, "alice", PASSWORD)
    assert status == 302 and headers["location"] == "/"                 # never an open redirect
    assert locked_server.request("GET", "/", cookie=session_cookie(headers))[0] == 200
    # login_attempts: 3 per address and per user name; then even the right password waits.
    for _ in range(3):
        assert login(locked_server, "alice", "wrong password")[0] == 401
    status, headers = login(locked_server, "alice", PASSWORD)
    assert status == 429 and int(headers["retry-after"]) > 0
    assert login(locked_server, "bob", "anything at all")[0] == 429      # the address is limited too


@pytest.mark.slow
def test_plain_text_passwords_and_bad_token_sources_are_refused(tmp_path: Path, box) -> None:
    config = write_serve_config(tmp_path / "plain.yaml", box, users=[{"name": "alice", "password_hash": "hunter22"}])
    line = one_error_line(serve_command("--config", str(config)), "password_hash", "--hash-password")
    assert re.search(r"plain\.yaml line \d+", line)
    config = write_serve_config(tmp_path / "env.yaml", box, token_env="FACEDEBLUR_TEST_TOKEN_UNSET")
    one_error_line(serve_command("--config", str(config)), "FACEDEBLUR_TEST_TOKEN_UNSET", "no usable token")
    config = write_serve_config(tmp_path / "missing.yaml", box, token_file=str(tmp_path / "nope"))
    one_error_line(serve_command("--config", str(config)), "serve.token_file", "cannot be read")
    config = write_serve_config(tmp_path / "typo.yaml", box, tokn_file="x")
    one_error_line(serve_command("--config", str(config)), "serve.tokn_file", "unknown key")


@pytest.mark.slow
def test_a_token_from_the_environment_works(tmp_path: Path, box) -> None:
    config = write_serve_config(tmp_path / "env.yaml", box, token_env="FACEDEBLUR_REVIEW_TOKEN")
    running = Server(config, env={"FACEDEBLUR_REVIEW_TOKEN": TOKEN})
    try:
        assert running.request("GET", "/", headers={"Authorization": f"Bearer {TOKEN}"})[0] == 200
        assert running.request("GET", "/", headers={"Authorization": "Bearer not-the-token-at-all"})[0] == 401
    finally:
        running.stop()


# ---- binding ---------------------------------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.0.2.10", "review.example"])
def test_binding_beyond_loopback_without_auth_is_refused(tmp_path: Path, box, host: str) -> None:
    config = write_serve_config(tmp_path / "serve.yaml", box)
    result = serve_command("--config", str(config), "--host", host, "--port", "0")
    assert result.returncode == 2
    one_error_line(result, f"refusing to serve on {host} without authentication", "serve.users")


@pytest.mark.slow
def test_binding_beyond_loopback_with_a_token_starts(tmp_path: Path, box, token_file: Path) -> None:
    config = write_serve_config(tmp_path / "serve.yaml", box, token_file=str(token_file))
    running = Server(config, "--host", "0.0.0.0")
    try:
        assert running.request("GET", "/healthz")[0] == 200
        assert running.request("GET", "/")[0] == 401
        assert running.request("GET", "/", headers={"Accept": "text/html"})[0] == 401   # no login page to loop to
        assert "API tokens only" in running.request("GET", "/login")[2].decode()
    finally:
        running.stop()


def test_missing_folders_are_one_line_errors(tmp_path: Path) -> None:
    config = tmp_path / "serve.yaml"
    config.write_text("serve:\n  port: 8471\n", encoding="utf-8")
    one_error_line(serve_command("--config", str(config)), "daemon.outbox", "daemon.state")
    config.write_text(f"daemon:\n  outbox: {tmp_path}\n  state: {tmp_path}\n", encoding="utf-8")
    result = serve_command("--config", str(config))
    assert result.returncode == 75                                   # systemd retries: the daemon may start later
    one_error_line(result, "no job journal", "start the daemon")


def test_search_finds_the_daemons_folders_as_serve_does(tmp_path: Path) -> None:
    def search(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([PYTHON, "-m", "facedeblur", "search", str(tmp_path / "photo.jpg"), *args],
                              capture_output=True, text=True, timeout=60)
    config = tmp_path / "search.yaml"
    config.write_text("serve:\n  port: 8471\n", encoding="utf-8")
    result = search("--config", str(config))
    assert result.returncode == 2
    one_error_line(result, "search needs the daemon's folders", "daemon.outbox")
    result = search("--config", str(config), "--outbox", str(tmp_path / "no-outbox"), "--state", str(tmp_path))
    assert result.returncode == 75
    one_error_line(result, f"outbox {tmp_path / 'no-outbox'} is not a folder (yet)", "fix daemon.outbox")
    config.write_text(f"daemon:\n  outbox: {tmp_path}\n  state: {tmp_path}\n", encoding="utf-8")
    result = search("--config", str(config))
    assert result.returncode == 75
    one_error_line(result, "no job journal", "start the daemon")


# ---- the systemd unit --------------------------------------------------------------------------------------
UNIT = REPO / "systemd" / "facedeblur-serve.service"


def unit_settings() -> dict[str, list[str]]:
    settings: dict[str, list[str]] = {}
    for line in UNIT.read_text(encoding="utf-8").splitlines():
        if "=" in line and not line.lstrip().startswith("#"):
            key, value = line.split("=", 1)
            settings.setdefault(key.strip(), []).append(value.strip())
    return settings


def test_the_unit_is_hardened_and_read_only_on_the_outbox() -> None:
    settings = unit_settings()
    daemon_unit = (REPO / "systemd" / "facedeblur.service").read_text(encoding="utf-8")
    for key in ("NoNewPrivileges", "PrivateTmp", "ProtectHome", "ProtectKernelTunables", "ProtectKernelModules",
                "ProtectControlGroups", "RestrictSUIDSGID", "LockPersonality", "RestrictNamespaces"):
        assert settings[key] == ["yes"] and f"{key}=yes" in daemon_unit, key
    assert settings["ProtectSystem"] == ["strict"]
    assert "/srv/facedeblur/outbox" in " ".join(settings["ReadOnlyPaths"])
    assert "/srv/facedeblur/outbox" not in " ".join(settings.get("ReadWritePaths", []))
    assert settings["PrivateDevices"] == ["yes"]                     # no GPU needed to serve pages
    assert any("facedeblur serve" in line for line in settings["ExecStart"])
    assert settings["RestartPreventExitStatus"] == ["2"]
    from facedeblur.review.connections import WANTED_OPEN_FILES
    assert settings["LimitNOFILE"] == [str(WANTED_OPEN_FILES)]      # room for many clients, not systemd's 1024


def test_the_unit_passes_systemd_analyze_verify(tmp_path: Path) -> None:
    if shutil.which("systemd-analyze") is None:
        pytest.skip("systemd-analyze is not installed (apt-get install systemd)")
    entry = Path(sys.executable).parent / "facedeblur"
    if not entry.exists():
        pytest.skip(f"{entry} missing: install the package into the venv (pip install -e .)")
    unit = tmp_path / "facedeblur-serve.service"
    unit.write_text(UNIT.read_text(encoding="utf-8").replace("/opt/facedeblur/.venv/bin/facedeblur", str(entry)),
                    encoding="utf-8")
    result = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, timeout=120)
    problems = [line for line in (result.stdout + result.stderr).splitlines() if "facedeblur-serve.service" in line]
    assert result.returncode == 0 and not problems, result.stdout + result.stderr


def test_concurrent_wrong_logins_get_no_more_password_checks_than_the_limit(box, tmp_path: Path) -> None:
    """40 wrong logins sent at once: only login_attempts of them may reach the password check (401); the rest
    are refused by the limiter (429) however they interleave."""
    config = write_serve_config(tmp_path / "serve.yaml", box, login_attempts=3, threads=16,
                                users=[{"name": "alice", "password_hash": password_hash()}])
    running = Server(config)
    try:
        sessions = []
        for _ in range(40):
            _, headers, page = running.request("GET", "/login")
            sessions.append((session_cookie(headers), csrf_of(page)))
        start = threading.Barrier(len(sessions))
        statuses: list[int] = []

        def attempt(cookie: str, csrf: str) -> None:
            start.wait()
            statuses.append(running.request("POST", "/login", cookie=cookie,
                                            body={"csrf_token": csrf, "user": "alice", "password": "wrong"})[0])
        threads = [threading.Thread(target=attempt, args=session) for session in sessions]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=300)
        assert sorted(statuses) == [401] * 3 + [429] * 37, sorted(statuses)
    finally:
        running.stop()


def test_a_right_password_does_not_count_against_the_limit(box, tmp_path: Path) -> None:
    config = write_serve_config(tmp_path / "serve.yaml", box, login_attempts=2,
                                users=[{"name": "alice", "password_hash": password_hash()}])
    running = Server(config)
    try:
        for _ in range(4):
            assert login(running, "alice", PASSWORD)[0] == 302
        assert login(running, "alice", "wrong password")[0] == 401
        assert login(running, "alice", PASSWORD)[0] == 302
    finally:
        running.stop()


# ---- slow clients ------------------------------------------------------------------------------------------
def test_slowloris_connections_are_cut_off_and_do_not_lock_out_reviewers(box, tmp_path: Path) -> None:
    """1,100 connections each sending one header line every 2 s, against a server started with systemd's
    default of 1,024 open files: a reviewer is still answered while they are held, and the server closes them
    once their request head has taken longer than REQUEST_HEAD_SECONDS."""
    from facedeblur.review.connections import REQUEST_HEAD_SECONDS

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < 4096:
        pytest.skip(f"the hard limit on open files is {hard}; this test needs 4096")
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, 4096), hard))   # this test's own 1,100 sockets
    running = Server(write_serve_config(tmp_path / "serve.yaml", box), open_files=1024)
    slow: list[socket.socket] = []
    try:
        for _ in range(1100):
            client = socket.create_connection(("127.0.0.1", running.port), timeout=30)
            client.sendall(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n")
            slow.append(client)
        started = time.monotonic()
        assert running.request("GET", "/healthz")[0] == 200          # answered while all 1,100 are held
        closed: set[int] = set()
        while len(closed) < len(slow) and time.monotonic() < started + REQUEST_HEAD_SECONDS + 30:
            for index, client in enumerate(slow):
                if index in closed:
                    continue
                try:
                    client.sendall(b"X-Slow: 1\r\n")
                    client.settimeout(0.001)
                    if client.recv(1024) == b"":
                        closed.add(index)
                except (BlockingIOError, TimeoutError):
                    pass
                except OSError:
                    closed.add(index)                                  # reset by the server: cut off too
            time.sleep(2)
        assert len(closed) == len(slow), f"{len(slow) - len(closed)} slow connections still open"
        assert running.request("GET", "/healthz")[0] == 200
    finally:
        for client in slow:
            client.close()
        running.stop()
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_logout_revokes_the_session_and_every_copy_of_its_cookie(box, tmp_path: Path) -> None:
    running = Server(write_serve_config(tmp_path / "serve.yaml", box,
                                        users=[{"name": "alice", "password_hash": password_hash()}]))
    try:
        status, headers = login(running, "alice", PASSWORD)
        assert status == 302
        copied = session_cookie(headers)                               # e.g. lifted from a shared machine
        status, headers, page = running.request("GET", "/case", cookie=copied)
        assert status == 200
        cookie = session_cookie(headers) or copied
        assert running.request("POST", "/logout", cookie=cookie, body={"csrf_token": csrf_of(page)})[0] == 302
        for stale in {copied, cookie}:
            assert running.request("GET", "/", cookie=stale)[0] == 401
        status, headers = login(running, "alice", PASSWORD)            # logging in again works
        assert status == 302 and running.request("GET", "/", cookie=session_cookie(headers))[0] == 200
    finally:
        running.stop()


def test_weak_password_hashes_are_refused_at_start(tmp_path: Path, box) -> None:
    import hashlib
    weak = {"pbkdf2:sha256:1$salt$" + hashlib.pbkdf2_hmac("sha256", PASSWORD.encode(), b"salt", 1).hex():
            "pbkdf2 with 1 iterations",
            "scrypt:2:8:1$salt$" + hashlib.scrypt(PASSWORD.encode(), salt=b"salt", n=2, r=8, p=1, dklen=64).hex():
            "scrypt with N=2"}
    for stored, named in weak.items():
        config = write_serve_config(tmp_path / "weak.yaml", box, users=[{"name": "alice", "password_hash": stored}])
        result = serve_command("--config", str(config), "--port", "0")
        assert result.returncode == 2
        one_error_line(result, "serve.users alice", named, "--hash-password")


def test_the_report_never_hashes_a_file_the_manifest_names(box, tmp_path: Path) -> None:
    """A manifest without model.sha256 whose settings name another file: the server must not hash that file
    and show the hash (an oracle for any file it can read); only its own bundled models are hashed."""
    import hashlib
    import json
    copy, job = one_job_copy(box, tmp_path / "box")
    secret = tmp_path / "secret.key"
    secret.write_bytes(b"the server's private key\n")
    manifest_path = next(copy.outbox.iterdir()) / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["model"].pop("sha256", None)
    manifest["model"]["file"] = "secret.key"
    manifest["settings"]["restorer"]["model"] = str(secret)
    manifest_path.write_text(json.dumps(manifest))
    running = Server(write_serve_config(tmp_path / "serve.yaml", copy))
    try:
        status, _, page = running.request("GET", f"/jobs/{job}")
    finally:
        running.stop()
    assert status == 200
    assert hashlib.sha256(secret.read_bytes()).hexdigest().encode() not in page
    assert b"not available on this server" in page


def test_hostile_ids_and_manifests_of_the_wrong_types_get_no_bare_500(box, tmp_path: Path) -> None:
    """A job id beyond SQLite's integers, and manifests whose tracks are an object or whose track id is a
    string: each is a clear answer below 500, and every answer carries the security headers."""
    import json
    copy, job = one_job_copy(box, tmp_path / "box")
    manifest_path = next(copy.outbox.iterdir()) / "manifest.json"
    good = json.loads(manifest_path.read_text())
    running = Server(write_serve_config(tmp_path / "serve.yaml", copy))
    try:
        for path in (f"/jobs/{2 ** 63}", f"/jobs/{10 ** 30}", f"/jobs/{2 ** 63}/thumbnail",
                     f"/jobs/{2 ** 63}/files/manifest.json"):
            status, headers, _ = running.request("GET", path)
            assert status == 404 and "content-security-policy" in headers, (path, status)
        _, headers, page = running.request("GET", f"/jobs/{job}")
        cookie, csrf = session_cookie(headers), csrf_of(page)
        status, headers, _ = running.request("POST", "/case/toggle", cookie=cookie,
                                             body={"csrf_token": csrf, "job": 2 ** 64, "track": 1})
        assert status == 400 and "content-security-policy" in headers
        tracks_as_object = {**good, "tracks": {"1": good["tracks"][0]}}
        id_as_text = {**good, "tracks": [{**good["tracks"][0], "id": "1"}]}
        for variant in (tracks_as_object, id_as_text):
            manifest_path.write_text(json.dumps(variant))
            status, headers, page = running.request("GET", f"/jobs/{job}")
            assert status == 200 and "content-security-policy" in headers
            assert b"manifest cannot be read" in page
    finally:
        running.stop()
