"""Person search across jobs, driven as users drive it: the real daemon's output (two jobs of the sample clip,
so one person in two jobs), the identity vector in its manifests, the index the daemon keeps, the real
`facedeblur search` command on a real photo (a frame of the clip, and a photo of someone else), the review
server's "find this face elsewhere" and photo upload in headless Chromium, and hostile uploads over a socket.
"""
from __future__ import annotations

import http.client
import json
import subprocess
import tarfile
import time
import uuid
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest

from browser_support import headless_chromium, needs_chromium, screenshot
from review_support import (PYTHON, REPO, SAMPLE_CLIP, Server, csrf_of, processed_outbox, session_cookie,
                            write_serve_config)

pytestmark = pytest.mark.slow

ANOTHER_PHOTO_OF_HER = REPO / "src" / "facedeblur" / "sample" / "sample-photo.png"   # the clip's astronaut, blurred
SHARED_FACES = REPO.parent / "shared" / "data" / "aaf-val.tar"


@pytest.fixture(scope="module")
def box(tmp_path_factory):
    return processed_outbox(tmp_path_factory)


def done_jobs(box) -> list[dict]:
    return [job for job in box.jobs() if job["state"] == "done"]


def manifest_of(job: dict) -> dict:
    return json.loads((Path(job["output"]) / "manifest.json").read_text())


def clip_frames(indices: set[int]) -> dict[int, np.ndarray]:
    from facedeblur.footage.decode import open_source
    return {frame.index: frame.image for frame in open_source(SAMPLE_CLIP, 25.0, None).frames()
            if frame.index in indices}


@pytest.fixture(scope="module")
def photo_of_the_person(box, tmp_path_factory) -> Path:
    """A frame of the clip where the person is seen best, saved as a JPEG like a still someone hands in."""
    track = manifest_of(done_jobs(box)[0])["tracks"][0]
    frame = track["identity"]["frames"][0]
    path = tmp_path_factory.mktemp("photos") / "still of the person.jpg"
    cv2.imwrite(str(path), clip_frames({frame})[frame])
    return path


def run_search(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([PYTHON, "-m", "facedeblur", "search", *args], capture_output=True, text=True, timeout=300)


def test_manifest_identity_is_the_mean_of_the_best_frames_input_embeddings(box) -> None:
    from facedeblur.pipeline.identity import IdentityEmbedder

    track = manifest_of(done_jobs(box)[0])["tracks"][0]
    identity = track["identity"]
    assert identity["model"] == "SFace 2021dec" and 1 <= len(identity["frames"]) <= 5
    vector = np.array(identity["vector"])
    assert vector.shape == (128,) and abs(np.linalg.norm(vector) - 1) < 1e-3
    # Recomputed from the input's own pixels with the landmarks the manifest records for those frames.
    landmarks = {f["frame"]: f["detected_landmarks"] for f in track["frames"]}
    frames = clip_frames(set(identity["frames"]))
    embedder = IdentityEmbedder(provider="cpu")
    embeddings = np.array([embedder.embed_faces(frames[f], [np.array(landmarks[f])])[0] for f in identity["frames"]])
    expected = embeddings.mean(axis=0)
    # Each single frame is 0.90-0.96 from the mean on this clip, so 0.99 still tells the mean of these frames
    # apart from any one of them; the recomputation here lands at 0.995, not 1 (an open question: see issue 23)
    assert float(vector @ (expected / np.linalg.norm(expected))) > 0.99


def test_the_daemon_indexes_every_published_track(box) -> None:
    from facedeblur.search.face_index import FaceIndex

    index = FaceIndex(box.state, create=False)
    jobs = done_jobs(box)
    assert index.indexed_jobs() == {job["id"] for job in jobs}
    assert index.size() == sum(1 for job in jobs for t in manifest_of(job)["tracks"] if t.get("identity"))
    first, second = jobs[0], jobs[1]
    hits = index.search(index.vector_of(first["id"], 1), 5, exclude=(first["id"], 1))
    assert (hits[0].job_id, hits[0].track_id) == (second["id"], 1) and hits[0].similarity > 0.99


def test_cli_ranks_the_person_first_from_a_photo(box, photo_of_the_person, tmp_path) -> None:
    config = write_serve_config(tmp_path / "config.yaml", box)
    result = run_search(str(photo_of_the_person), "--config", str(config), "--json")
    assert result.returncode == 0, result.stderr
    found = json.loads(result.stdout)
    assert found["faces_found"] == 1 and found["indexed_tracks"] >= 2
    top_two = found["results"][:2]
    assert {(r["job"], r["track"]) for r in top_two} == {(job["id"], 1) for job in done_jobs(box)}
    assert all(r["similarity"] > 0.6 for r in top_two)
    assert top_two[0]["input"] in {job["rel_path"] for job in done_jobs(box)}
    # Another, blurred picture of her finds her tracks too.
    again = json.loads(run_search(str(ANOTHER_PHOTO_OF_HER), "--config", str(config), "--json").stdout)
    assert {(r["job"], r["track"]) for r in again["results"][:2]} == {(r["job"], r["track"]) for r in top_two}
    assert again["results"][1]["similarity"] > 0.5
    # The plain output: one ranked line per track.
    plain = run_search(str(photo_of_the_person), "--config", str(config), "--limit", "1")
    assert plain.returncode == 0
    lines = plain.stdout.splitlines()
    assert len(lines) == 2 and f"job {top_two[0]['job']} " in lines[1] and "track 1 " in lines[1]


def test_someone_else_scores_far_below_her(box, tmp_path) -> None:
    if not SHARED_FACES.is_file():
        pytest.skip(f"needs the team's face photos at {SHARED_FACES}")
    with tarfile.open(SHARED_FACES) as archive:
        member = next(m for m in archive if m.isfile() and m.name.endswith(".webp"))
        (tmp_path / "someone.webp").write_bytes(archive.extractfile(member).read())
    config = write_serve_config(tmp_path / "config.yaml", box)
    result = run_search(str(tmp_path / "someone.webp"), "--config", str(config), "--json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["results"][0]["similarity"] < 0.4


def test_cli_errors_are_one_clear_line(box, tmp_path) -> None:
    config = write_serve_config(tmp_path / "config.yaml", box)
    grey = tmp_path / "wall.png"
    cv2.imwrite(str(grey), np.full((240, 320, 3), 128, np.uint8))
    not_an_image = tmp_path / "notes.jpg"
    not_an_image.write_text("this is a text file, not a photo\n")
    empty_state = tmp_path / "empty-state"
    empty_state.mkdir()
    no_folders = tmp_path / "no-folders.yaml"
    no_folders.write_text("serve:\n  port: 8471\n", encoding="utf-8")
    cases = [
        ((str(grey), "--config", str(config)), "no face found", 2),
        ((str(not_an_image), "--config", str(config)), "not a png, jpg, webp, bmp or tiff image", 2),
        ((str(tmp_path / "missing.jpg"), "--config", str(config)), "no such file", 2),
        ((str(ANOTHER_PHOTO_OF_HER), "--config", str(no_folders)), "search needs the daemon's folders", 2),
        # The same words and exit status as `serve` (config.daemon_folders): the daemon has not run yet.
        ((str(ANOTHER_PHOTO_OF_HER), "--config", str(config), "--state", str(empty_state)), "no job journal", 75),
    ]
    for args, message, status in cases:
        result = run_search(*args)
        assert result.returncode == status, (args, result.stdout)
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and message in lines[0] and "Traceback" not in result.stderr, result.stderr


@pytest.fixture(scope="module")
def served(box, tmp_path_factory):
    server = Server(write_serve_config(tmp_path_factory.mktemp("search-serve") / "serve.yaml", box))
    yield server
    server.stop()


def multipart(fields: dict[str, str], files: list[tuple[str, str, bytes]]) -> tuple[str, bytes]:
    boundary = uuid.uuid4().hex
    body = b""
    for name, value in fields.items():
        body += (f"--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n{value}\r\n").encode()
    for name, filename, data in files:
        body += (f"--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"; filename=\"{filename}\"\r\n"
                 "Content-Type: application/octet-stream\r\n\r\n").encode() + data + b"\r\n"
    return f"multipart/form-data; boundary={boundary}", body + f"--{boundary}--\r\n".encode()


def post_photo(server: Server, body: bytes, content_type: str, cookie: str,
               length: int | None = None) -> tuple[int, bytes]:
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=120)
    connection.putrequest("POST", "/search/photo")
    connection.putheader("Content-Type", content_type)
    connection.putheader("Content-Length", str(len(body) if length is None else length))
    connection.putheader("Cookie", cookie)
    connection.endheaders()
    try:
        connection.send(body)
    except (BrokenPipeError, ConnectionResetError):
        pass   # a body refused from its declared length is never read
    response = connection.getresponse()
    result = response.status, response.read()
    connection.close()
    return result


def png_header_claiming(width: int, height: int) -> bytes:
    """A PNG whose header declares a huge image (a decompression bomb's first bytes)."""
    header = b"IHDR" + width.to_bytes(4, "big") + height.to_bytes(4, "big") + bytes([8, 2, 0, 0, 0])
    return b"\x89PNG\r\n\x1a\n" + (13).to_bytes(4, "big") + header + zlib.crc32(header).to_bytes(4, "big")


def test_hostile_uploads_are_refused_with_a_clear_message(served, photo_of_the_person) -> None:
    status, headers, page = served.request("GET", "/search")
    assert status == 200
    cookie, token = session_cookie(headers), csrf_of(page)
    photo = photo_of_the_person.read_bytes()
    cases = [
        # (fields, files, expected status, words in the answer)
        ({}, [("photo", "a.jpg", photo)], 403, b"CSRF"),
        ({"csrf_token": token}, [], 400, b"Choose a photo"),
        ({"csrf_token": token}, [("photo", "a.png", b"MZ\x90\x00 an executable, not a photo" * 20)], 400,
         b"not a png, jpg, webp, bmp or tiff image"),
        ({"csrf_token": token}, [("photo", "bomb.png", png_header_claiming(60000, 60000))], 400, b"megapixels"),
        ({"csrf_token": token}, [("photo", "<script>alert(1)</script>.png", b"GIF89a" + b"\0" * 64)], 400,
         b"&lt;script&gt;"),
        ({"csrf_token": token}, [("photo", "a.jpg", photo), ("photo2", "b.jpg", photo)], 400, b"one file"),
    ]
    for fields, files, expected, words in cases:
        content_type, body = multipart(fields, files)
        status, answer = post_photo(served, body, content_type, cookie)
        assert status == expected and words in answer, (fields.keys(), [f[1] for f in files], status, answer[:300])
    # Too large: refused from the declared length, before the body is read.
    content_type, _ = multipart({"csrf_token": token}, [])
    status, answer = post_photo(served, b"", content_type, cookie, length=40 * 2**20)
    assert status == 413 and b"larger than" in answer
    # The server is still there and still searches.
    content_type, body = multipart({"csrf_token": token}, [("photo", "still.jpg", photo)])
    status, answer = post_photo(served, body, content_type, cookie)
    assert status == 200 and b'class="search-hit"' in answer


@needs_chromium
def test_find_elsewhere_and_photo_upload_in_a_browser(served, box, photo_of_the_person, tmp_path) -> None:
    from selenium.webdriver.common.by import By

    first, second = done_jobs(box)[:2]
    browser = headless_chromium("--window-size=1280,1000")
    try:
        browser.get(f"{served.base}/jobs/{first['id']}")
        browser.find_element(By.CSS_SELECTOR, "#track-1 a.find-elsewhere").click()
        rows = wait_for(lambda: browser.find_elements(By.CSS_SELECTOR, "tr.search-hit"), "the results")
        assert (rows[0].get_attribute("data-job"), rows[0].get_attribute("data-track")) == (str(second["id"]), "1")
        assert float(rows[0].find_element(By.CSS_SELECTOR, ".similarity").text) > 0.99
        assert_images_loaded(browser)
        rows[0].find_element(By.CSS_SELECTOR, "td:last-child a").click()
        wait_for(lambda: browser.find_elements(By.ID, "job-title"), "the matched job's page")
        assert browser.current_url.endswith(f"/jobs/{second['id']}#track-1")

        browser.find_element(By.ID, "search-link").click()
        browser.find_element(By.ID, "photo-file").send_keys(str(photo_of_the_person))
        browser.find_element(By.ID, "photo-search").click()
        rows = wait_for(lambda: browser.find_elements(By.CSS_SELECTOR, "tr.search-hit"), "the photo's results")
        top_two = {(r.get_attribute("data-job"), r.get_attribute("data-track")) for r in rows[:2]}
        assert top_two == {(str(first["id"]), "1"), (str(second["id"]), "1")}
        assert "largest of 1 face" in browser.find_element(By.ID, "search-query").text
        assert_images_loaded(browser)
        screenshot(browser, "review-search.png")

        # A file that is not a photo: the page says what is wrong, in words.
        fake = tmp_path / "holiday.png"
        fake.write_bytes(b"%PDF-1.7 not an image at all\n" * 10)
        browser.find_element(By.ID, "photo-file").send_keys(str(fake))
        browser.find_element(By.ID, "photo-search").click()
        error = wait_for(lambda: browser.find_elements(By.ID, "search-error"), "the error")[0].text
        assert "holiday.png: not a png, jpg, webp, bmp or tiff image" in error
    finally:
        browser.quit()


def wait_for(find, what: str, timeout: float = 60.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = find()
        if found:
            return found
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def assert_images_loaded(browser) -> None:
    images = browser.execute_script(
        "return Array.from(document.querySelectorAll('img.face-thumb')).map(i => [i.complete, i.naturalWidth]);")
    assert images and all(done and width > 0 for done, width in images), images
