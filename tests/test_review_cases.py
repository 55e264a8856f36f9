"""Named cases in the review database and the evidence report of their export, over real servers, real
`facedeblur process` output and a real PDF parser.

* A case, and the login of the reviewer who made it, survive a restart of the server process; another reviewer
  sees and changes the same case; every change is an audit row; logout stays a logout across the restart.
* The session key file is private (0600) and refused when others could read it.
* The PDF of a two-job, four-track case holds, for every face, the original crop, the restored face and a
  context frame as images, the text of each one's SHA-256, the times (with the wall clock of the input that
  records one), the case's name, investigator and purpose, "page N of M" on every page and a note whose words
  are never cut; the same selection exports to the same bytes.
* Each track's fused portrait comes first in the export (files, hashes, label); a manifest without one exports
  as before; a merge of two tracks is said in the next export, which gets a new id, and never in the earlier.
"""
from __future__ import annotations

import hashlib
import io
import json
import re
import shutil
import sqlite3
import subprocess
import sys
import zipfile
from fractions import Fraction
from pathlib import Path

import pytest

from facedeblur.errors import FacedeblurError
from review_support import (PASSWORD, Server, csrf_of, password_hash, processed_outbox, session_cookie,
                            write_serve_config)

SHARED_VIDEOS = Path(__file__).resolve().parents[1] / ".." / "shared" / "videos"
TWO_PEOPLE = SHARED_VIDEOS / "head-pose-two-people.gif"
RECORDED_AT = "2026-11-24T01:20:00.000000Z"
FRAMES = 28
NOTE = ("Compared against the doorway camera recording: the jacket and the bag match, the face does not "
        "clearly match; a second reviewer should decide before anyone relies on this restoration elsewhere.")


# ---- the session key ----------------------------------------------------------------------------------------
def test_the_session_key_is_kept_private_and_refused_when_others_can_read_it(tmp_path: Path) -> None:
    from facedeblur.review.auth import SESSION_KEY_FILE, session_key

    key = session_key(tmp_path)
    path = tmp_path / SESSION_KEY_FILE
    assert len(key) >= 32 and path.stat().st_mode & 0o777 == 0o600
    assert session_key(tmp_path) == key                                   # the same key at the next start
    assert [p.name for p in tmp_path.iterdir()] == [SESSION_KEY_FILE]     # no temporary file left behind
    path.chmod(0o644)
    with pytest.raises(FacedeblurError, match="chmod 600"):
        session_key(tmp_path)
    path.chmod(0o600)
    other = tmp_path / "elsewhere"
    other.mkdir()
    (other / SESSION_KEY_FILE).symlink_to(path)
    with pytest.raises(FacedeblurError, match="cannot be read"):
        session_key(other)                                                # a planted link is never followed


def test_case_fields_are_checked() -> None:
    from facedeblur.review.cases import CaseError, form_text

    assert form_text("  Side   door \n", "the case name", 200) == "Side door"
    assert form_text("line one\r\nline two ", "the purpose", 2000, lines=True) == "line one\nline two"
    for value, limit, lines, problem in (("   ", 200, False, "is empty"), ("x" * 201, 200, False, "at most 200"),
                                         ("a\x1b[2Jb", 200, False, "control character"),
                                         ("a\x00b", 2000, True, "control character")):
        with pytest.raises(CaseError, match=problem):
            form_text(value, "the field", limit, lines)


# ---- cases on the server ------------------------------------------------------------------------------------
def login(server: Server, user: str) -> str:
    status, headers, page = server.request("GET", "/login")
    cookie = session_cookie(headers)
    status, headers, _ = server.request("POST", "/login", cookie=cookie,
                                        body={"csrf_token": csrf_of(page), "user": user, "password": PASSWORD})
    assert status == 302
    return session_cookie(headers)


def page_and_csrf(server: Server, cookie: str, path: str) -> tuple[int, str, str]:
    status, _, body = server.request("GET", path, cookie=cookie)
    text = body.decode()
    return status, text, (csrf_of(body) if status == 200 else "")


@pytest.mark.slow
def test_a_case_and_its_login_survive_a_restart_and_are_shared_between_reviewers(tmp_path_factory) -> None:
    box = processed_outbox(tmp_path_factory)
    root = tmp_path_factory.mktemp("restart")
    hashed = password_hash()
    config = write_serve_config(root / "serve.yaml", box, exports=str(root / "exports"),
                                users=[{"name": "alice", "password_hash": hashed},
                                       {"name": "bob", "password_hash": hashed}])
    jobs = sorted(j["id"] for j in box.jobs() if j["state"] == "done")
    server = Server(config)
    try:
        alice = login(server, "alice")
        _, _, csrf = page_and_csrf(server, alice, "/case")
        status, headers, _ = server.request("POST", "/case/new", cookie=alice,
                                            body={"csrf_token": csrf, "name": "Restart <check>"})
        assert status == 303
        number = int(headers["location"].rsplit("/", 1)[-1])
        alice = session_cookie(headers) or alice                          # the session now names the case
        for job in jobs:                                                  # "add to case" on the job pages
            status, headers, _ = server.request("POST", "/case/toggle", cookie=alice,
                                                body={"csrf_token": csrf, "job": job, "track": 1})
            assert status == 303 and headers["location"] == f"/jobs/{job}#track-1"
    finally:
        server.stop()

    server = Server(config)                                               # a new process, the same state folder
    try:
        status, page, csrf = page_and_csrf(server, alice, f"/case/{number}")
        assert status == 200, "the restart logged alice out"
        assert "Restart &lt;check&gt;" in page and f"Case ({len(jobs)})" in page
        assert sorted(int(j) for j in re.findall(r'class="case-item" data-job="(\d+)" data-track="1"', page)) == jobs
        bob = login(server, "bob")
        status, listing, bob_csrf = page_and_csrf(server, bob, "/case")
        assert status == 200 and f'data-case="{number}"' in listing       # shared: bob sees alice's case
        status, _, _ = server.request("POST", f"/case/{number}/tracks", cookie=bob,
                                      body={"csrf_token": bob_csrf, "job": jobs[0], "track": 1, "action": "remove"})
        assert status == 303
        status, _, _ = server.request("POST", f"/case/{number}/rename", cookie=bob,
                                      body={"csrf_token": bob_csrf, "name": "x" * 201})
        assert status == 400                                              # refused, and nothing logged
        assert server.request("POST", "/logout", cookie=alice, body={"csrf_token": csrf})[0] == 302
    finally:
        server.stop()
    assert (box.state / "review-session.key").stat().st_mode & 0o777 == 0o600

    server = Server(config)
    try:
        assert server.request("GET", "/", cookie=alice)[0] == 401         # logged out stays logged out
        status, page, _ = page_and_csrf(server, bob, f"/case/{number}")
        assert status == 200 and re.findall(r'class="case-item" data-job="(\d+)"', page) == [str(jobs[1])]
    finally:
        server.stop()
    db = sqlite3.connect(box.state / "review.sqlite3")
    rows = [(who, json.loads(after)) for who, after in
            db.execute("SELECT who, after FROM audit WHERE action = 'case' ORDER BY id")]
    db.close()
    ops = [(who, after["op"], after.get("job")) for who, after in rows if after.get("case") == number]
    assert ops == [("alice", "create", None)] + [("alice", "add", job) for job in jobs] + [("bob", "remove", jobs[0])]


# ---- the evidence report ------------------------------------------------------------------------------------
def recorded_copy(source: Path, target: Path) -> None:
    """The first FRAMES frames of `source` as an H.264 MP4 whose metadata says when it was recorded, as a
    camera's MP4 does (creation_time)."""
    import av

    with av.open(str(source)) as clip, av.open(str(target), "w", format="mp4") as out:
        out.metadata["creation_time"] = RECORDED_AT
        stream = out.add_stream("libx264", rate=Fraction(25, 2))
        stream.width, stream.height, stream.pix_fmt = 480, 270, "yuv420p"
        for index, frame in enumerate(clip.decode(video=0)):
            if index == FRAMES:
                break
            picture = av.VideoFrame.from_ndarray(frame.to_ndarray(format="rgb24"), format="rgb24")
            for packet in stream.encode(picture.reformat(format="yuv420p")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)


def processed_job(root: Path, journal, source: Path, rel_path: str) -> int:
    """`facedeblur process` on an inbox file, published in the outbox and recorded done in the journal, as the
    daemon does it."""
    inbox_file = root / "inbox" / rel_path
    output = root / "outbox" / rel_path.replace("/", "__")
    result = subprocess.run([sys.executable, "-m", "facedeblur", "process", str(inbox_file), "-o", str(output),
                             "--max-frames", str(FRAMES), "--no-progress"], capture_output=True, text=True,
                            timeout=900)
    assert result.returncode == 0, result.stderr[-2000:]
    manifest = json.loads((output / "manifest.json").read_text())
    info = inbox_file.stat()
    job = journal.add(path=str(inbox_file), inbox=str(root / "inbox"), rel_path=rel_path, kind="file",
                      size=info.st_size, mtime_ns=info.st_mtime_ns, sha256=manifest["input"]["sha256"])
    journal.mark_done(job, str(output), 1.0, manifest["input"]["frames"], manifest["summary"]["faces_restored"],
                      manifest["summary"]["tracks"])
    return job


@pytest.fixture(scope="module")
def two_jobs(tmp_path_factory):
    """Two real jobs of two people each: a GIF clip, and an MP4 of the same scene that records its time."""
    if not TWO_PEOPLE.is_file():
        pytest.skip(f"needs the shared clip {TWO_PEOPLE.name} (shared/videos)")
    from facedeblur.daemon.journal import Journal

    root = tmp_path_factory.mktemp("evidence")
    for folder in ("inbox/camA", "inbox/camB", "outbox", "state"):
        (root / folder).mkdir(parents=True)
    shutil.copyfile(TWO_PEOPLE, root / "inbox/camA/two-people.gif")
    recorded_copy(TWO_PEOPLE, root / "inbox/camB/side-door.mp4")
    journal = Journal(root / "state")
    try:
        jobs = [processed_job(root, journal, TWO_PEOPLE, "camA/two-people.gif"),
                processed_job(root, journal, TWO_PEOPLE, "camB/side-door.mp4")]
    finally:
        journal.close()
    return root, jobs


def image_xobjects(reader) -> set:
    """The distinct image objects the PDF's pages draw."""
    found = set()
    for page in reader.pages:
        for reference in (page["/Resources"].get("/XObject") or {}).values():
            if reference.get_object()["/Subtype"] == "/Image":
                found.add(reference.idnum)
    return found


def serve_two_jobs(root: Path, tmp_path: Path) -> Server:
    """`facedeblur serve` on the two_jobs outbox and state, exporting into tmp_path/exports."""
    class Box:
        outbox, state = root / "outbox", root / "state"
    return Server(write_serve_config(tmp_path / "serve.yaml", Box, exports=str(tmp_path / "exports")))


def export_zip(server: Server, cookie: str, number: int, fields: dict) -> tuple[str, bytes]:
    status, headers, body = server.request("POST", f"/case/{number}/export", cookie=cookie, body=fields)
    assert status == 303, body
    export_id = headers["location"].rsplit("/", 1)[-1]
    return export_id, server.request("GET", f"/cases/{export_id}/download", cookie=cookie)[2]


def export_files(archive: bytes) -> dict[str, bytes]:
    opened = zipfile.ZipFile(io.BytesIO(archive))
    return {name.split("/", 1)[1]: opened.read(name) for name in opened.namelist()}


def checksums(files: dict[str, bytes]) -> dict[str, str]:
    """SHA256SUMS of an export: path -> digest."""
    return {path: digest for digest, path in (line.split("  ", 1) for line in files["SHA256SUMS"].decode().splitlines())}


@pytest.mark.slow
def test_the_report_of_a_two_job_four_track_case_shows_every_face_with_its_hashes(two_jobs, tmp_path) -> None:
    pypdf = pytest.importorskip("pypdf", reason="pip install pypdf (the dev extra)")
    root, jobs = two_jobs

    server = serve_two_jobs(root, tmp_path)
    try:
        status, headers, page = server.request("GET", f"/jobs/{jobs[1]}")
        cookie, csrf = session_cookie(headers), csrf_of(page)
        version = 0
        status, _, _ = server.request("POST", f"/jobs/{jobs[1]}/tracks/2/mark", cookie=cookie,
                                      body={"csrf_token": csrf, "status": "flagged", "note": NOTE, "version": version})
        assert status == 303
        status, headers, _ = server.request("POST", "/case/new", cookie=cookie,
                                            body={"csrf_token": csrf, "name": "Side door, 24 November"})
        number = int(headers["location"].rsplit("/", 1)[-1])
        for job in jobs:
            for track in (1, 2):
                assert server.request("POST", f"/case/{number}/tracks", cookie=cookie, body={
                    "csrf_token": csrf, "job": job, "track": track, "action": "add"})[0] == 303
        fields = {"csrf_token": csrf, "name": "Side door, 24 November", "investigator": "Det. Ana Example",
                  "purpose": "Identify the two people at the side door before the alarm (request 2026/114)."}
        archives = []
        for _ in range(2):                                                # the same selection, twice
            archives.append(export_zip(server, cookie, number, fields)[1])
        status, _, _ = server.request("POST", f"/case/{number}/export", cookie=cookie,
                                      body={**fields, "investigator": "  "})
        assert status == 400                                              # the investigator must be named
    finally:
        server.stop()
    assert archives[0] == archives[1]                                     # byte-identical, zip and all
    files = export_files(archives[0])
    assert {info.date_time for info in zipfile.ZipFile(io.BytesIO(archives[0])).infolist()} == {(1980, 1, 1, 0, 0, 0)}
    sums = checksums(files)
    pictures = {path: digest for path, digest in sums.items() if "/track-" in path}
    for kind in ("original.png", "restored.png", "context.jpg"):
        for job in jobs:
            for track in (1, 2):
                assert any(p.startswith(f"jobs/j{job}/track-{track}/") and p.endswith(kind) for p in pictures), \
                    (job, track, kind)

    reader = pypdf.PdfReader(io.BytesIO(files["report.pdf"]))
    crops = [path for path in pictures if path.endswith(".png")]
    assert len(crops) >= 8 and len(image_xobjects(reader)) >= len(pictures)   # every face, and its context
    pages = [page.extract_text() for page in reader.pages]
    text = "\n".join(pages)
    for path, digest in pictures.items():
        assert digest in text, f"the SHA-256 of {path} is not in the PDF's text"
    for number_of_page, page_text in enumerate(pages, 1):
        assert f"page {number_of_page} of {len(pages)}" in page_text
    for needed in ("Side door, 24 November", "Det. Ana Example", "(request 2026/114)", "facedeblur-default",
                   "AI-RESTORED", "Faces in this case are AI-restored",
                   "2026-11-24 01:20:0"):                               # the wall clock of the MP4's faces
        assert needed in text, needed
    words = set(text.split())
    assert [word for word in NOTE.split() if word not in words] == [], "a word of the note was cut"
    assert "0.000 s to" in text

    html = files["report.html"].decode()
    sources = re.findall(r'<img src="([^"]+)"', html)
    assert len(sources) == len(pictures) and set(sources) == set(pictures)
    for path, digest in pictures.items():
        assert digest in html and hashlib.sha256(files[path]).hexdigest() == digest
    assert "Det. Ana Example" in html and 'class="wall-clock">2026-11-24 01:20:0' in html


def without_portraits(root: Path, source: Path) -> int:
    """A copy of a job's output folder whose manifest is older than portraits (no `portrait` field), recorded
    done as a job of its own."""
    from facedeblur.daemon.journal import Journal

    journal = Journal(root / "state")
    try:
        output = root / "outbox" / "camA__two-people-old.gif"
        shutil.copytree(source, output)
        manifest = json.loads((output / "manifest.json").read_text())
        for track in manifest["tracks"]:
            track.pop("portrait", None)
        (output / "manifest.json").write_text(json.dumps(manifest))
        inbox_file = root / "inbox" / "camA" / "two-people.gif"
        info = inbox_file.stat()
        old = journal.add(path=str(inbox_file), inbox=str(root / "inbox"), rel_path="camA/two-people-old.gif",
                          kind="file", size=info.st_size, mtime_ns=info.st_mtime_ns, sha256=manifest["input"]["sha256"])
        journal.mark_done(old, str(output), 1.0, manifest["input"]["frames"], manifest["summary"]["faces_restored"],
                          manifest["summary"]["tracks"])
    finally:
        journal.close()
    return old


@pytest.mark.slow
def test_an_export_carries_each_tracks_portrait_and_the_merges_made_before_it(two_jobs, tmp_path) -> None:
    pypdf = pytest.importorskip("pypdf", reason="pip install pypdf (the dev extra)")
    root, jobs = two_jobs
    job = jobs[0]
    output = root / "outbox" / "camA__two-people.gif"
    manifest = json.loads((output / "manifest.json").read_text())
    portraits = {t["id"]: t["portrait"] for t in manifest["tracks"] if t["id"] in (1, 2)}
    assert all(isinstance(p, dict) for p in portraits.values()) and len(portraits) == 2
    old_job = without_portraits(root, output)

    server = serve_two_jobs(root, tmp_path)
    try:
        status, headers, page = server.request("GET", f"/jobs/{job}")
        cookie, csrf = session_cookie(headers), csrf_of(page)
        status, headers, _ = server.request("POST", "/case/new", cookie=cookie,
                                            body={"csrf_token": csrf, "name": "One person, two tracks"})
        number = int(headers["location"].rsplit("/", 1)[-1])
        for item in ((job, 1), (job, 2), (old_job, 1)):
            assert server.request("POST", f"/case/{number}/tracks", cookie=cookie, body={
                "csrf_token": csrf, "job": item[0], "track": item[1], "action": "add"})[0] == 303
        case_page = server.request("GET", f"/case/{number}", cookie=cookie)[2].decode()
        fields = {"csrf_token": csrf, "name": "One person, two tracks", "investigator": "Det. Ana Example",
                  "purpose": "Who came through the side door."}
        before_id, before = export_zip(server, cookie, number, fields)
        assert server.request("POST", f"/jobs/{job}/tracks/2/merge", cookie=cookie,
                              body={"csrf_token": csrf, "into": 1})[0] == 303
        merged_id, merged = export_zip(server, cookie, number, fields)
        again_id, again = export_zip(server, cookie, number, fields)
        still = server.request("GET", f"/cases/{before_id}/download", cookie=cookie)[2]
    finally:
        server.stop()
    # The case page's cards show each track's portrait, and the best frame of a track without one.
    cards = {(int(job_id), int(track)): card for job_id, track, card in
             re.findall(r'<article class="case-item" data-job="(\d+)" data-track="(\d+)">(.*?)</article>', case_page, re.S)}
    old_best = next(t for t in manifest["tracks"] if t["id"] == 1)["best_frames"][0]
    for key, face in (((job, 1), portraits[1]), ((job, 2), portraits[2]), ((old_job, 1), old_best)):
        shown = re.findall(r'<img src="[^"]*/jobs/\d+/files/([^"]+)"', cards[key])
        assert shown == [face["original"], face["restored"]], (key, shown)
    assert f"Fused portrait of {len(portraits[1]['frames_merged'])} frame" in cards[(job, 1)]
    assert "Fused portrait" not in cards[(old_job, 1)] and "AI-restored" in cards[(old_job, 1)]

    assert merged_id != before_id and still == before                     # the earlier export is as it was
    assert (again_id, again) == (merged_id, merged)                       # the same state: the same bytes

    files = export_files(merged)
    sums = checksums(files)
    text = "\n".join(page.extract_text() for page in pypdf.PdfReader(io.BytesIO(files["report.pdf"])).pages)
    html = files["report.html"].decode()
    for track, portrait in portraits.items():
        label = f"Fused portrait of {len(portrait['frames_merged'])} frame"
        for role in ("original", "restored"):
            path = f"jobs/j{job}/track-{track}/portrait-{role}.png"
            assert files[path] == (output / portrait[role]).read_bytes()
            assert sums[path] == hashlib.sha256(files[path]).hexdigest()
            assert sums[path] in text and sums[path] in html, path
        assert label in text and label in html and "AI-restored" in text
        track_html = html.split(f'id="job-{job}-track-{track}"', 1)[1]
        shown = re.findall(r'<img src="([^"]+)"', track_html)
        assert shown[:2] == [f"jobs/j{job}/track-{track}/portrait-original.png",
                             f"jobs/j{job}/track-{track}/portrait-restored.png"]   # the portrait comes first
    for document in (text, html):
        assert document.count("one person with tracks 1, 2") == 2          # said of each of the two tracks
        assert "track 2 merged into track 1 by local" in document
    assert not any("/portrait-" in path for path in sums if path.startswith(f"jobs/j{old_job}/"))
    assert any(path.startswith(f"jobs/j{old_job}/track-1/") and path.endswith("restored.png") for path in sums)

    earlier = export_files(before)
    earlier_text = "\n".join(page.extract_text() for page in pypdf.PdfReader(io.BytesIO(earlier["report.pdf"])).pages)
    assert "one person" not in earlier_text and "one person" not in earlier["report.html"].decode()
