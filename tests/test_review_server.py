"""The review server over a real outbox: list, filters, job page, video Range requests, marks and their
audit log under concurrent reviewers, and reproducible case exports whose report hashes check out."""
from __future__ import annotations

import hashlib
import html
import io
import json
import os
import re
import sqlite3
import subprocess
import sys
import threading
import zipfile
from pathlib import Path

import pytest

from cli_support import one_error_line
from facedeblur.daemon.journal import Journal
from facedeblur.review.command import SERVE_EXTRA_MISSING
from review_support import (CAMERA_INPUTS, FAILING_INPUT, HOSTILE_NAME, SAMPLE_CLIP, Server, csrf_of,
                            one_job_copy, processed_outbox, session_cookie, write_serve_config)


@pytest.fixture(scope="module")
def box(tmp_path_factory):
    return processed_outbox(tmp_path_factory)


@pytest.fixture(scope="module")
def server(box, tmp_path_factory):
    config = write_serve_config(tmp_path_factory.mktemp("serve") / "serve.yaml", box,
                                exports=str(tmp_path_factory.mktemp("exports")))
    running = Server(config)
    yield running
    running.stop()


def browser_session(server: Server, page: str = "/jobs/1") -> tuple[str, str]:
    """(cookie, csrf token) as a browser gets them from a page."""
    status, headers, body = server.request("GET", page)
    assert status == 200
    return session_cookie(headers), csrf_of(body)


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.mark.slow
def test_healthz_and_the_list_shows_every_job_with_its_status(server: Server, box) -> None:
    assert server.request("GET", "/healthz")[0] == 200
    status, _, body = server.request("GET", "/")
    page = body.decode()
    assert status == 200
    rows = re.findall(r'<tr class="job state-(\w+)" data-job="(\d+)">', page)
    assert sorted(rows, key=lambda r: int(r[1])) == [("done", "1"), ("done", "2"), ("failed", "3")]
    assert "not a readable video" in page                   # the failure's reason
    assert "cam1" in page and "cam2" in page                 # the camera folders
    assert '<img src="/jobs/1/thumbnail?face=0"' in page
    thumb_status, headers, thumb = server.request("GET", "/jobs/1/thumbnail")
    assert thumb_status == 200 and headers["content-type"] == "image/png" and thumb[:4] == b"\x89PNG"
    done = box.job_by_input("cam1/sample-clip.mp4")
    assert f'<td class="n">{done["frames"]}</td>' in page


@pytest.mark.slow
@pytest.mark.parametrize("query, expected", [
    ("status=failed", {3}),
    ("status=done", {1, 2}),
    ("folder=cam1", {1}),
    ("folder=cam2", {2, 3}),
    ("q=sample", {1}),
    ("q=onerror", {2}),
    ("q=%25", set()),                        # a LIKE wildcard is searched for literally
    ("from=2000-01-01&to=2999-12-31", {1, 2, 3}),
    ("to=2000-01-01", set()),
])
def test_filters_and_search(server: Server, query: str, expected: set[int]) -> None:
    status, _, body = server.request("GET", f"/?{query}")
    assert status == 200
    assert {int(i) for i in re.findall(r'data-job="(\d+)"', body.decode())} == expected


@pytest.mark.slow
def test_a_bad_filter_is_a_clear_error(server: Server) -> None:
    status, _, body = server.request("GET", "/?from=yesterday")
    assert status == 400
    assert "date from 'yesterday' is not YYYY-MM-DD" in html.unescape(body.decode())


@pytest.mark.slow
def test_pagination_over_many_jobs(tmp_path: Path) -> None:
    """120 jobs written through the daemon's own journal API, 30 a page."""
    (tmp_path / "outbox").mkdir()
    (tmp_path / "state").mkdir()
    journal = Journal(tmp_path / "state")
    for i in range(120):
        job_id = journal.add(path=f"/in/cam{i % 3}/clip{i:03d}.mp4", inbox="/in", rel_path=f"cam{i % 3}/clip{i:03d}.mp4",
                             kind="file", size=1000 + i, mtime_ns=i, sha256=f"{i:064x}")
        journal.mark_failed(job_id, f"reason {i}", None)
    journal.close()
    config = tmp_path / "serve.yaml"
    config.write_text(f"daemon:\n  outbox: {tmp_path / 'outbox'}\n  state: {tmp_path / 'state'}\n"
                      "serve:\n  page_size: 30\n", encoding="utf-8")
    running = Server(config)
    try:
        seen = []
        for page in (1, 2, 3, 4):
            body = running.request("GET", f"/?page={page}")[2].decode()
            seen += [int(i) for i in re.findall(r'data-job="(\d+)"', body)]
            assert f"page {page} of 4" in body
        assert seen == list(range(120, 0, -1))
        body = running.request("GET", "/?folder=cam1&page=2")[2].decode()
        ids = [int(i) for i in re.findall(r'data-job="(\d+)"', body)]
        assert len(ids) == 10 and all(i % 3 == 2 for i in ids)   # cam1 holds jobs 2, 5, ... 119: 40, 10 on page 2
        assert 'href="?folder=cam1&amp;page=1"' in body          # page links keep the filter
    finally:
        running.stop()


@pytest.mark.slow
def test_job_page_shows_videos_tracks_slider_and_provenance(server: Server, box) -> None:
    job = box.job_by_input("cam1/sample-clip.mp4")
    manifest = json.loads((Path(job["output"]) / "manifest.json").read_text())
    page = server.request("GET", f"/jobs/{job['id']}")[2].decode()
    assert f'src="/jobs/{job["id"]}/files/restored.mp4"' in page
    assert f'src="/jobs/{job["id"]}/files/annotated.mp4"' in page
    for track in manifest["tracks"]:
        assert f'id="track-{track["id"]}"' in page
        for best in track["best_frames"]:
            assert f'/jobs/{job["id"]}/files/{best["original"]}' in page
            assert f'/jobs/{job["id"]}/files/{best["restored"]}' in page
        assert f'data-time="{track["start_time"]}"' in page
        assert str(track["sharpness_after_mean"]) in page
    assert manifest["input"]["sha256"] in page
    assert f'{manifest["model"]["name"]} {manifest["model"]["version"]}' in page
    assert "score_threshold" in page                          # the settings that drove each step


@pytest.mark.slow
def test_video_is_served_with_range_requests(server: Server, box) -> None:
    job = box.job_by_input("cam1/sample-clip.mp4")
    whole = (Path(job["output"]) / "restored.mp4").read_bytes()
    status, headers, body = server.request("GET", f"/jobs/{job['id']}/files/restored.mp4")
    assert status == 200 and body == whole and headers["accept-ranges"] == "bytes"
    assert headers["content-type"] == "video/mp4"
    status, headers, body = server.request("GET", f"/jobs/{job['id']}/files/restored.mp4",
                                           headers={"Range": "bytes=100-1099"})
    assert status == 206 and body == whole[100:1100]
    assert headers["content-range"] == f"bytes 100-1099/{len(whole)}"
    status, headers, body = server.request("GET", f"/jobs/{job['id']}/files/restored.mp4",
                                           headers={"Range": "bytes=-500"})
    assert status == 206 and body == whole[-500:]
    status, _, _ = server.request("GET", f"/jobs/{job['id']}/files/restored.mp4",
                                  headers={"Range": f"bytes={len(whole) + 10}-"})
    assert status == 416


def mark(server: Server, cookie: str, csrf: str, job: int, track: int, status: str, note: str,
         version: int) -> int:
    return server.request("POST", f"/jobs/{job}/tracks/{track}/mark", cookie=cookie,
                          body={"csrf_token": csrf, "status": status, "note": note, "version": version})[0]


def shown_version(server: Server, cookie: str, job: int, track: int) -> int:
    """The mark version the job page's form for this track carries (other tests may have marked it)."""
    page = server.request("GET", f"/jobs/{job}", cookie=cookie)[2].decode()
    form = page[page.index(f'id="track-{track}"'):]
    return int(re.search(r'name="version" value="(\d+)"', form).group(1))


def audit_rows(box, job: int, track: int) -> list[sqlite3.Row]:
    db = sqlite3.connect(box.state / "review.sqlite3")
    db.row_factory = sqlite3.Row
    try:
        return db.execute("SELECT * FROM audit WHERE job_id=? AND track_id=? ORDER BY id", (job, track)).fetchall()
    finally:
        db.close()


@pytest.mark.slow
def test_marks_are_stored_with_an_append_only_audit_log(server: Server, box) -> None:
    job = box.job_by_input(f"cam2/{HOSTILE_NAME}")["id"]
    cookie, csrf = browser_session(server, f"/jobs/{job}")
    start = shown_version(server, cookie, job, 1)
    assert mark(server, cookie, csrf, job, 1, "flagged", "face half hidden", start) == 303
    assert mark(server, cookie, csrf, job, 1, "reviewed", "checked against the original", start + 1) == 303
    page = server.request("GET", f"/jobs/{job}", cookie=cookie)[2].decode()
    assert "checked against the original" in page and f"(version {start + 2})" in page
    rows = audit_rows(box, job, 1)
    assert [(r["who"], r["action"]) for r in rows[-2:]] == [("local", "mark"), ("local", "mark")]
    assert json.loads(rows[-1]["before"]) == {"status": "flagged", "note": "face half hidden", "version": start + 1}
    assert json.loads(rows[-1]["after"])["status"] == "reviewed"
    db = sqlite3.connect(box.state / "review.sqlite3")
    for statement in ("UPDATE audit SET who='mallory'", "DELETE FROM audit"):
        with pytest.raises(sqlite3.IntegrityError, match="append-only"):
            db.execute(statement)
    db.close()
    assert mark(server, cookie, csrf, job, 99, "flagged", "", 0) == 404         # no such track
    assert mark(server, cookie, csrf, job, 1, "deleted", "", start + 2) == 400  # no such status


@pytest.mark.slow
def test_concurrent_reviewers_never_lose_a_mark(server: Server, box) -> None:
    job = box.job_by_input("cam1/sample-clip.mp4")["id"]
    before = len(audit_rows(box, job, 1))
    # Eight reviewers who all saw the same version save at once: exactly one wins, the others are told.
    sessions = [browser_session(server, f"/jobs/{job}") for _ in range(8)]
    seen = shown_version(server, sessions[0][0], job, 1)
    results: list[int] = []
    barrier = threading.Barrier(len(sessions))

    def save(index: int) -> None:
        cookie, csrf = sessions[index]
        barrier.wait()
        results.append(mark(server, cookie, csrf, job, 1, "flagged", f"reviewer {index}", seen))

    threads = [threading.Thread(target=save, args=(i,)) for i in range(len(sessions))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(results) == [303] + [409] * 7
    # Then each retries on top of what it is shown: every change lands, in one unbroken version chain.
    def retry(index: int) -> None:
        cookie, csrf = sessions[index]
        while True:
            version = shown_version(server, cookie, job, 1)
            if mark(server, cookie, csrf, job, 1, "reviewed", f"retry {index}", version) == 303:
                return

    threads = [threading.Thread(target=retry, args=(i,)) for i in range(len(sessions))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    rows = audit_rows(box, job, 1)[before:]
    assert len(rows) == 1 + len(sessions)
    versions = [json.loads(r["after"])["version"] for r in rows]
    assert versions == list(range(versions[0], versions[0] + len(rows)))
    notes = {json.loads(r["after"])["note"] for r in rows[1:]}
    assert notes == {f"retry {i}" for i in range(len(sessions))}
    for previous, row in zip(rows, rows[1:]):               # each change was made on top of the one before
        assert json.loads(row["before"]) == json.loads(previous["after"])


EXPORT_FIELDS = {"name": "Side door, 24 November", "investigator": "Det. A. Example",
                 "purpose": "Identify the people at the side door before the alarm (request 2026/114)."}


def make_case(server: Server, cookie: str, csrf: str, items: list[tuple[int, int]], name: str = "Side door") -> int:
    """A new case holding the tracks, as a reviewer makes it on the case pages; returns its number."""
    status, headers, body = server.request("POST", "/case/new", cookie=cookie, body={"csrf_token": csrf, "name": name})
    assert status == 303, body
    number = int(headers["location"].rsplit("/", 1)[-1])
    for job, track in items:
        status, _, body = server.request("POST", f"/case/{number}/tracks", cookie=cookie,
                                         body={"csrf_token": csrf, "job": job, "track": track, "action": "add"})
        assert status == 303, body
    return number


def export(server: Server, cookie: str, csrf: str, items: list[tuple[int, int]]) -> tuple[str, int]:
    """Make a case of the tracks and export it; returns (the export's id, the case's number)."""
    number = make_case(server, cookie, csrf, items)
    return export_case(server, cookie, csrf, number), number


def export_case(server: Server, cookie: str, csrf: str, number: int, **fields: str) -> str:
    status, headers, body = server.request("POST", f"/case/{number}/export", cookie=cookie,
                                           body={"csrf_token": csrf, **EXPORT_FIELDS, **fields})
    assert status == 303, body
    return headers["location"].rsplit("/", 1)[-1]


@pytest.mark.slow
def test_case_export_is_complete_verifiable_and_reproducible(server: Server, box) -> None:
    jobs = [box.job_by_input(rel)["id"] for rel in CAMERA_INPUTS]
    cookie, csrf = browser_session(server)
    case_id, number = export(server, cookie, csrf, [(jobs[0], 1), (jobs[1], 1)])
    status, headers, first_zip = server.request("GET", f"/cases/{case_id}/download", cookie=cookie)
    assert status == 200 and headers["content-type"] == "application/zip"
    archive = zipfile.ZipFile(io.BytesIO(first_zip))
    files = {name.split("/", 1)[1]: archive.read(name) for name in archive.namelist()}
    # Every file is listed in SHA256SUMS with its true hash.
    sums = dict(line.split("  ", 1)[::-1] for line in files["SHA256SUMS"].decode().splitlines())
    assert set(sums) == set(files) - {"SHA256SUMS"}
    assert all(sha256(files[name]) == digest for name, digest in sums.items())
    # The original inputs, byte for byte, and the crops beside the restored faces, as in the outbox.
    sample_sha = sha256(SAMPLE_CLIP.read_bytes())
    assert files[f"jobs/j{jobs[0]}/input/sample-clip.mp4"] == SAMPLE_CLIP.read_bytes()
    for job_id in jobs:
        job = next(j for j in box.jobs() if j["id"] == job_id)
        manifest = json.loads((Path(job["output"]) / "manifest.json").read_text())
        assert files[f"jobs/j{job_id}/manifest.json"] == (Path(job["output"]) / "manifest.json").read_bytes()
        for best in manifest["tracks"][0]["best_frames"]:
            for role in ("original", "restored"):
                name = f"jobs/j{job_id}/track-1/{best[role].rsplit('/', 1)[-1]}"
                assert files[name] == (Path(job["output"]) / best[role]).read_bytes()
    # The report: steps, model and its file hash, settings, input/output hashes, marks, the AI notice.
    report = files["report.html"].decode()
    model_file = Path(__file__).resolve().parents[1] / "src/facedeblur/models/facedeblur-default.onnx"
    for needle in ("AI-restored", "1. Decode the input", "2. Detect faces", "4. Restore faces",
                   "facedeblur-default", sha256(model_file.read_bytes()), sample_sha, "detector.score_threshold",
                   sha256((Path(box.job_by_input("cam1/sample-clip.mp4")["output"]) / "restored.mp4").read_bytes())):
        assert needle in report, needle
    listed = dict(re.findall(r'<td class="hash">([0-9a-f]{64})</td><td class="path">([^<]+)</td>', report))
    assert listed and all(sha256(files[path]) == digest for digest, path in listed.items())
    assert "&lt;img src=x onerror=alert(1)&gt;" in report and "<img src=x" not in report
    assert files["report.pdf"].startswith(b"%PDF-")
    # Same selection, same state: the same bytes.
    assert export_case(server, cookie, csrf, number) == case_id
    assert server.request("GET", f"/cases/{case_id}/download", cookie=cookie)[2] == first_zip
    page = server.request("GET", f"/cases/{case_id}", cookie=cookie)[2].decode()
    assert sha256(first_zip) in page


@pytest.mark.slow
def test_exporting_a_failed_job_is_refused_clearly(server: Server, box) -> None:
    failed = box.job_by_input(FAILING_INPUT)["id"]
    cookie, csrf = browser_session(server)
    number = make_case(server, cookie, csrf, [(failed, 1)])
    status, _, body = server.request("POST", f"/case/{number}/export", cookie=cookie,
                                     body={"csrf_token": csrf, **EXPORT_FIELDS})
    assert status == 400
    assert f"job {failed} has no published output" in body.decode()


@pytest.mark.slow
def test_an_input_over_the_size_limit_is_exported_as_its_hash(box, tmp_path: Path) -> None:
    running = Server(write_serve_config(tmp_path / "serve.yaml", box, exports=str(tmp_path / "exports"),
                                        export_max_input_mb=0))
    try:
        job = box.job_by_input("cam1/sample-clip.mp4")["id"]
        cookie, csrf = browser_session(running, f"/jobs/{job}")
        case_id, _ = export(running, cookie, csrf, [(job, 1)])
    finally:
        running.stop()
    folder = tmp_path / "exports" / f"case-{case_id}" / "jobs" / f"j{job}" / "input"
    assert [p.name for p in folder.iterdir()] == ["input.sha256"]
    recorded = folder.joinpath("input.sha256").read_text(encoding="utf-8")
    assert recorded.startswith(f"{sha256(SAMPLE_CLIP.read_bytes())}  sample-clip.mp4\n")
    assert "larger than serve.export_max_input_mb" in recorded


def test_hash_password_refuses_a_short_password() -> None:
    result = subprocess.run([sys.executable, "-m", "facedeblur", "serve", "--hash-password"], input="short\n",
                            capture_output=True, text=True, timeout=60)
    one_error_line(result, "shorter than 8 characters")


@pytest.mark.slow
def test_files_answer_head_conditional_and_multi_range_requests(server: Server, box) -> None:
    job = box.job_by_input("cam1/sample-clip.mp4")
    path = f"/jobs/{job['id']}/files/restored.mp4"
    whole = (Path(job["output"]) / "restored.mp4").read_bytes()
    status, headers, body = server.request("HEAD", path)
    assert status == 200 and body == b"" and int(headers["content-length"]) == len(whole)
    status, again, body = server.request("GET", path, headers={"If-None-Match": headers["etag"]})
    assert status == 304 and body == b"" and again["etag"] == headers["etag"]
    # A browser may ask for several spans at once: one multipart/byteranges answer holding each of them.
    status, headers, body = server.request("GET", path, headers={"Range": "bytes=0-9,200-209"})
    assert status == 206 and headers["content-type"].startswith("multipart/byteranges")
    assert whole[0:10] in body and whole[200:210] in body
    status, _, _ = server.request("GET", path, headers={"Range": "bytes=50-10"})   # inverted: not satisfiable
    assert status in (400, 416)


@pytest.mark.slow
def test_a_form_larger_than_any_of_ours_is_refused_unread(server: Server, box) -> None:
    job = box.job_by_input("cam1/sample-clip.mp4")
    status, _, _ = server.request("POST", f"/jobs/{job['id']}/tracks/1/mark",
                                  body={"status": "flagged", "note": "x" * 70_000, "version": "0"})
    assert status == 413


def test_password_hashes_from_the_flask_version_still_log_in() -> None:
    """config.yaml files written while the server ran on Flask hold werkzeug-format hashes; they must keep working."""
    from facedeblur.review.auth import check_password_hash, hash_password
    made_by_werkzeug = {
        "scrypt:32768:8:1$PU2jVfHor8HIIbys$ec9be6098a4fb7578af90aeefdc2f324dd657bb6b5a81a0e961ddbac2e6cd605a3172f"
        "f49696df9cebf6baebd41784ae487275eabfd6426aa5d31350b64ff64c",
        "pbkdf2:sha256:1000$ivSrdAIbU6AuOMiG$1bed08314739675d68c89002b62385459904bcdbae7d7d3e30f6d6faad3bfb57"}
    for stored in made_by_werkzeug:
        assert check_password_hash(stored, "correct horse battery")
        assert not check_password_hash(stored, "correct horse battery!")
    fresh = hash_password("correct horse battery")
    assert fresh.startswith("scrypt:32768:8:1$") and check_password_hash(fresh, "correct horse battery")
    assert not check_password_hash("scrypt:0:0:0$salt$00", "x") and not check_password_hash("md5$a$b", "x")


# Run the real CLI with the serve extra made unimportable: a None entry in sys.modules makes `import` fail
# exactly as a missing package does.
WITHOUT_SERVE_EXTRA = ("import sys\n"
                       "for name in ('starlette', 'uvicorn', 'jinja2', 'itsdangerous', 'fpdf'):\n"
                       "    sys.modules[name] = None\n"
                       "from facedeblur.cli import main\n"
                       "sys.exit(main(sys.argv[1:]))\n")


def test_serve_without_the_extra_is_one_line_and_other_commands_still_work(tmp_path: Path) -> None:
    result = subprocess.run([sys.executable, "-c", WITHOUT_SERVE_EXTRA, "serve"], capture_output=True, text=True,
                            timeout=60)
    line = one_error_line(result)
    assert line == f"facedeblur: error: {SERVE_EXTRA_MISSING}"
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    for command in ("./scripts/setup-venv serve", "pip install -e '.[cpu,serve]'", "pip install 'facedeblur[serve]'"):
        assert command in line and command in readme, command     # the message and the README agree
    assert result.returncode == 2
    for other in (["--help"], ["serve", "--help"], ["watch", "--help"]):
        assert subprocess.run([sys.executable, "-c", WITHOUT_SERVE_EXTRA, *other], capture_output=True, text=True,
                              timeout=60).returncode == 0, other
    hashed = subprocess.run([sys.executable, "-c", WITHOUT_SERVE_EXTRA, "serve", "--hash-password"],
                            input="long enough password\n", capture_output=True, text=True, timeout=60)
    assert hashed.returncode == 0 and hashed.stdout.startswith("scrypt:"), hashed.stderr


def test_repo_config_documents_every_serve_key() -> None:
    """config.yaml is the annotated reference: every serve: key is there, commented, at its default."""
    from facedeblur.config import ServeSettings, load_config
    repo_config = Path(__file__).resolve().parents[1] / "config.yaml"
    text = repo_config.read_text(encoding="utf-8").split("\nserve:", 1)[1]
    for key in ServeSettings.model_fields:
        line = next((l for l in text.splitlines() if l.strip().startswith(f"{key}:")), None)
        assert line is not None and "#" in line, f"serve.{key} missing or uncommented in config.yaml"
    assert load_config(repo_config).serve == ServeSettings()


def test_an_inbox_input_swapped_for_a_fifo_or_a_larger_file_does_not_hang_or_bloat_the_export(
        box, tmp_path: Path) -> None:
    """The inbox is writable by whoever drops footage: the export must neither wait on a FIFO planted in place
    of a processed input nor copy a larger file that took its name."""
    copy, job = one_job_copy(box, tmp_path / "box")
    original = copy.inbox / "sample-clip.mp4"
    exports = tmp_path / "exports"
    running = Server(write_serve_config(tmp_path / "serve.yaml", copy, exports=str(exports),
                                        export_max_input_mb=200))
    try:
        original.unlink()
        os.mkfifo(original)
        cookie, csrf = browser_session(running, f"/jobs/{job}")
        case_id, number = export(running, cookie, csrf, [(job, 1)])            # returns: no wait for a writer
        recorded = (exports / f"case-{case_id}" / "jobs" / f"j{job}" / "input" / "input.sha256").read_text()
        assert "no longer a regular file" in recorded
        assert running.request("GET", "/healthz")[0] == 200
        original.unlink()
        with open(original, "wb") as grown:                                    # the processed bytes, then more
            grown.write(SAMPLE_CLIP.read_bytes())
            grown.truncate(SAMPLE_CLIP.stat().st_size + 64 * 1024 * 1024)
        assert export_case(running, cookie, csrf, number) == case_id
        folder = exports / f"case-{case_id}" / "jobs" / f"j{job}" / "input"
        assert [p.name for p in folder.iterdir()] == ["input.sha256"]
        assert f"not the {SAMPLE_CLIP.stat().st_size} bytes processed" in (folder / "input.sha256").read_text()
    finally:
        running.stop()


def test_concurrent_exports_of_one_selection_are_serialised(box, tmp_path: Path) -> None:
    """Reviewers pressing export on one selection at once, while another views the case: every export
    succeeds, the viewer never gets a 404 once the case exists, no swapped-out folder is left behind, and
    every audit row holds the hash of the zip that is there."""
    exports = tmp_path / "exports"
    running = Server(write_serve_config(tmp_path / "serve.yaml", box, exports=str(exports), threads=16))
    try:
        job = box.job_by_input("cam1/sample-clip.mp4")["id"]
        cookie, csrf = browser_session(running, f"/jobs/{job}")
        case_id, number = export(running, cookie, csrf, [(job, 1)])
        db = sqlite3.connect(box.state / "review.sqlite3")
        first_row = db.execute("SELECT MAX(id) FROM audit").fetchone()[0]
        db.close()
        statuses: list[int] = []
        viewed: list[int] = []
        done = threading.Event()

        def exporter() -> None:
            # Each waits for the exports before it (one at a time): the last one for all 23 others.
            statuses.append(running.request("POST", f"/case/{number}/export", cookie=cookie,
                                            body={"csrf_token": csrf, **EXPORT_FIELDS}, timeout=600)[0])

        def viewer() -> None:
            while not done.is_set():
                # A view waits while an export swaps the files in (the case's lock, which is not first come,
                # first served): possibly behind several exports.
                viewed.append(running.request("GET", f"/cases/{case_id}", cookie=cookie, timeout=600)[0])
                viewed.append(running.request("GET", f"/cases/{case_id}/download", cookie=cookie, timeout=600)[0])
        threads = [threading.Thread(target=exporter) for _ in range(24)]
        watchers = [threading.Thread(target=viewer) for _ in range(2)]
        for thread in watchers + threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=600)
        done.set()
        for thread in watchers:
            thread.join(timeout=120)
    finally:
        running.stop()
    assert statuses == [303] * 24, statuses
    assert viewed and set(viewed) == {200}, sorted(set(viewed))
    assert sorted(p.name for p in exports.iterdir()) == [f"case-{case_id}", f"case-{case_id}.zip"]
    final = sha256((exports / f"case-{case_id}.zip").read_bytes())
    db = sqlite3.connect(box.state / "review.sqlite3")
    rows = [json.loads(r[0]) for r in db.execute("SELECT after FROM audit WHERE action = 'export' AND id > ?",
                                                 (first_row,))]
    db.close()
    assert len(rows) == 24 and {r["zip_sha256"] for r in rows if r["case"] == case_id} == {final}
