"""A reviewer's view of a live daemon, in headless Chromium over a real socket: a real `facedeblur watch` processes
real clips while a real `facedeblur serve` shows its journal.

* Progress: a running job's stage, frames and ETA appear on the list and the job page without a reload (the
  list refreshes itself, keeping the page, its scroll and a marker set in it); the job page reloads itself
  into the finished job.
* Messages: a failed input is named by its inbox path on the list, the job page, `facedeblur status` and the
  failed/ error note, with no internal staging path and no list of extensions.
* Triage: a "not a face" mark, hiding and sorting tracks, and merging two tracks into one person (audit-logged,
  undone, readable by case exports through store.person_groups).
"""
from __future__ import annotations

import subprocess
import time
from pathlib import Path

import numpy as np
import pytest

import browser_support

from browser_support import headless_chromium, needs_chromium
from daemon_support import PYTHON, DaemonRun, make_clip
from review_support import Server, write_serve_config

pytestmark = [needs_chromium, pytest.mark.slow]


def two_face_clip(path: Path, frames: int = 12) -> Path:
    """A real clip of two people side by side, one larger than the other: two tracks of different sizes."""
    import av
    import cv2
    from skimage import data
    face = data.astronaut()[:, :, ::-1]
    large, small = cv2.resize(face, (200, 200)), cv2.resize(face, (120, 120))
    canvas = np.full((200, 360, 3), 90, np.uint8)
    canvas[:, :200], canvas[40:160, 220:340] = large, small
    rng = np.random.default_rng(1)
    with av.open(str(path), "w", format="mp4") as container:
        stream = container.add_stream("libx264" if "libx264" in av.codecs_available else "mpeg4", rate=10)
        stream.width, stream.height, stream.pix_fmt = 360, 200, "yuv420p"
        for _ in range(frames):
            noisy = np.clip(canvas.astype(np.int16) + rng.integers(-4, 4, canvas.shape), 0, 255).astype(np.uint8)
            for packet in stream.encode(av.VideoFrame.from_ndarray(noisy, format="bgr24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path



def wait_until(predicate, what: str, timeout: float = 60.0):
    return browser_support.wait_until(predicate, what, timeout)   # a live daemon: slower pages


def drop(run: DaemonRun, source: Path, rel_path: str) -> None:
    target = run.inbox / rel_path
    target.parent.mkdir(parents=True, exist_ok=True)
    source.rename(target)   # whole at once: one job


@pytest.fixture
def live(tmp_path: Path):
    run = DaemonRun(tmp_path / "site", max_attempts=1).start()
    server = Server(write_serve_config(tmp_path / "serve.yaml", run, refresh_seconds=1))
    browser = headless_chromium("--window-size=1280,900")
    try:
        yield run, server, browser
    finally:
        browser.quit()
        server.stop()
        run.stop()


def test_progress_messages_and_triage_in_a_browser_on_a_live_daemon(live, tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    run, server, browser = live
    drop(run, two_face_clip(tmp_path / "two.mp4"), "cam1/two-people.mp4")
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"this is not a video " * 500)
    drop(run, broken, "cam2/broken.mp4")
    run.wait_for(lambda: run.settled(2), 300, "the two inputs")
    jobs = {j["rel_path"]: j for j in run.jobs()}
    assert jobs["cam1/two-people.mp4"]["state"] == "done" and jobs["cam2/broken.mp4"]["state"] == "failed", jobs

    # ---- messages: the inbox path, never the staging copy, and no list of extensions ----
    failed_id = jobs["cam2/broken.mp4"]["id"]
    status = subprocess.run([PYTHON, "-m", "facedeblur", "status", "--state", str(run.state)], capture_output=True,
                            text=True, timeout=60, check=True).stdout
    note = next((run.outbox / "failed").glob("*.error.txt")).read_text(encoding="utf-8")
    browser.get(server.base + "/")
    listed = browser.find_element(By.CSS_SELECTOR, f'tr[data-job="{failed_id}"] .reason').text
    browser.get(f"{server.base}/jobs/{failed_id}")
    on_page = browser.find_element(By.ID, "job-error").text
    assert "inbox/cam2/broken.mp4" in browser.find_element(By.ID, "job-title").text
    for text in (status, note.split("error: ", 1)[1], listed, on_page):
        assert "inbox/cam2/broken.mp4: not a readable video" in text, text
        assert ".staging" not in text and ".m2ts" not in text and "footage-pipeline.md" in text, text

    # ---- progress: the list shows a running job and refreshes itself into its end ----
    browser.get(server.base + "/")
    browser.execute_script("window.stillThisPage = true;")
    drop(run, make_clip(tmp_path / "long.mp4", frames=120, width=320, height=240), "cam1/long.mp4")
    progress = wait_until(lambda: [e.text for e in browser.find_elements(By.CSS_SELECTOR, "tr.state-running .progress-line")
                                   if "frames" in e.text and "ETA" in e.text and "ETA unknown" not in e.text],
                          "a running row with frames and an ETA", timeout=240)
    assert any(stage in progress[0] for stage in ("finding faces", "restoring faces")), progress
    assert browser.execute_script("return window.stillThisPage === true;")   # updated in place, not reloaded
    long_id = next(j["id"] for j in run.jobs() if j["rel_path"] == "cam1/long.mp4")

    # The running job's page shows the same, then reloads itself into the finished job.
    browser.get(f"{server.base}/jobs/{long_id}")
    if browser.find_element(By.ID, "job-state").get_attribute("data-state") == "running":
        assert "frames" in browser.find_element(By.ID, "job-state").text
    wait_until(lambda: browser.find_elements(By.CSS_SELECTOR, "article.track"), "the job page to show the finished job",
               timeout=300)
    browser.get(server.base + "/")
    browser.execute_script("window.stillThisPage = true;")
    assert browser.find_element(By.CSS_SELECTOR, f'tr[data-job="{long_id}"] .badge').text == "done"

    # ---- triage on the two-person clip ----
    two_id = jobs["cam1/two-people.mp4"]["id"]
    browser.get(f"{server.base}/jobs/{two_id}")
    articles = browser.find_elements(By.CSS_SELECTOR, "article.track")
    assert len(articles) >= 2, browser.page_source[:2000]
    ids = [int(a.get_attribute("data-track")) for a in articles]
    assert ids == sorted(ids)
    Select(browser.find_element(By.ID, "track-sort")).select_by_value("size")   # applies on change (triage.js)
    wait_until(lambda: "sort=size" in browser.current_url, "the size order")
    sizes = [float(a.get_attribute("data-size")) for a in browser.find_elements(By.CSS_SELECTOR, "article.track")]
    assert sizes == sorted(sizes, reverse=True) and sizes[0] > sizes[-1], sizes
    smallest = browser.find_elements(By.CSS_SELECTOR, "article.track")[-1].get_attribute("data-track")
    largest = browser.find_elements(By.CSS_SELECTOR, "article.track")[0].get_attribute("data-track")
    for key in ("score", "duration"):
        Select(browser.find_element(By.ID, "track-sort")).select_by_value(key)
        wait_until(lambda: f"sort={key}" in browser.current_url, f"the {key} order")
        values = [float(a.get_attribute(f"data-{key}")) for a in browser.find_elements(By.CSS_SELECTOR, "article.track")]
        assert values == sorted(values, reverse=True), (key, values)

    # "not a face" on the smaller track, then hide that mark.
    track = browser.find_element(By.ID, f"track-{smallest}")
    Select(track.find_element(By.CSS_SELECTOR, "select.mark-status")).select_by_value("not_a_face")
    track.find_element(By.CSS_SELECTOR, "button.mark-save").click()
    wait_until(lambda: "not a face by local" in browser.find_element(By.ID, f"track-{smallest}").text, "the mark")
    browser.find_element(By.ID, "hide-not_a_face").click()
    wait_until(lambda: "hide=not_a_face" in browser.current_url, "the hidden view")
    shown = [a.get_attribute("data-track") for a in browser.find_elements(By.CSS_SELECTOR, "article.track")]
    assert smallest not in shown and largest in shown
    assert f"({smallest})" in browser.find_element(By.ID, "hidden-tracks").text
    browser.get(server.base + "/")
    assert "1 not a face" in browser.find_element(By.CSS_SELECTOR, f'tr[data-job="{two_id}"] td.review').text

    # Merge the two tracks into one person, then undo it.
    from facedeblur.review.store import ReviewStore
    store = ReviewStore(run.state)
    browser.get(f"{server.base}/jobs/{two_id}")
    track = browser.find_element(By.ID, f"track-{smallest}")
    Select(track.find_element(By.CSS_SELECTOR, "select.merge-into")).select_by_value(largest)
    track.find_element(By.CSS_SELECTOR, "button.merge-button").click()
    wait_until(lambda: "unmerge" in browser.find_element(By.ID, f"track-{smallest}").text, "the merge")
    members = sorted([int(smallest), int(largest)])
    person = f"person of tracks {', '.join(map(str, members))}"
    assert person in browser.find_element(By.ID, f"track-{smallest}").text
    assert person in browser.find_element(By.ID, f"track-{largest}").text
    assert f"merged into track {largest}" in browser.find_element(By.ID, "history").text
    assert store.person_groups(two_id) == {members[0]: members}
    browser.find_element(By.ID, f"track-{smallest}").find_element(By.CSS_SELECTOR, "button.unmerge-button").click()
    wait_until(lambda: browser.find_elements(By.CSS_SELECTOR, f"#track-{smallest} button.merge-button"), "the unmerge")
    assert "person of tracks" not in browser.find_element(By.TAG_NAME, "main").text
    assert store.person_groups(two_id) == {}
    actions = [(entry["action"], entry["who"]) for entry in store.history(two_id, int(smallest))]
    assert actions == [("mark", "local"), ("merge", "local"), ("unmerge", "local")], actions
    assert "unmerged" in browser.find_element(By.ID, "history").text
