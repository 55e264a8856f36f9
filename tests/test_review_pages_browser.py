"""Every kind of page the review server serves, in headless Chromium over a real socket, on the real daemon's
outbox: every image loads (the list, a job page, the job's gallery, the case page and a served case report),
the original plays beside the restored clip in step, faces zoom to full size, and the keyboard works."""
from __future__ import annotations

import pytest

from browser_support import headless_chromium, needs_chromium
from review_support import HOSTILE_NAME, Server, processed_outbox, write_serve_config

pytestmark = [needs_chromium, pytest.mark.slow]

BROKEN_IMAGES = ("return Array.from(document.images).filter(i => !(i.complete && i.naturalWidth > 0))"
                 ".map(i => i.src);")


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    box = processed_outbox(tmp_path_factory)
    exports = tmp_path_factory.mktemp("pages-exports")
    running = Server(write_serve_config(tmp_path_factory.mktemp("pages") / "serve.yaml", box,
                                        exports=str(exports)))
    yield running, box
    running.stop()


@pytest.fixture(scope="module")
def browser():
    driver = headless_chromium("--autoplay-policy=no-user-gesture-required", "--window-size=1280,1000")
    yield driver
    driver.quit()


def wait_until(predicate, what: str, timeout: float = 30.0):
    import time

    from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            value = predicate()
        except (NoSuchElementException, StaleElementReferenceException):
            value = None
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def images_of(browser, url: str) -> int:
    """Open `url`, wait for its images to settle, and return how many there are; fail on any broken one."""
    browser.get(url)
    wait_until(lambda: browser.execute_script("return document.readyState === 'complete';"), f"{url} to load")
    for image in browser.find_elements("css selector", "img[loading=lazy]"):
        browser.execute_script("arguments[0].scrollIntoView();", image)
    wait_until(lambda: browser.execute_script("return Array.from(document.images).every(i => i.complete);"),
               f"the images of {url}")
    assert browser.execute_script(BROKEN_IMAGES) == [], url
    return browser.execute_script("return document.images.length;")


def test_every_image_loads_in_every_served_page(browser, served) -> None:
    from selenium.webdriver.common.by import By

    server, box = served
    job = box.job_by_input("cam1/sample-clip.mp4")["id"]
    other = box.job_by_input(f"cam2/{HOSTILE_NAME}")["id"]
    assert images_of(browser, server.base + "/") >= 2                       # a thumbnail per done job
    assert images_of(browser, f"{server.base}/jobs/{job}") >= 3              # faces, thumbnails
    assert images_of(browser, f"{server.base}/jobs/{job}/files/index.html") >= 3   # the job's own gallery

    for job_id in (job, other):
        browser.get(f"{server.base}/jobs/{job_id}")
        browser.find_element(By.CSS_SELECTOR, "article.track button.case-add").click()
        wait_until(lambda: browser.find_elements(By.ID, "job-title"), "the job page again")
    images_of(browser, server.base + "/case")
    browser.find_element(By.ID, "export").click()
    wait_until(lambda: browser.find_elements(By.ID, "zip-sha256"), "the exported case")
    report = browser.find_element(By.ID, "report-html").get_attribute("href")
    assert images_of(browser, report) >= 4                                  # original and restored, two tracks


RECORDED_AT = "2026-01-02T03:04:05.000000Z"
FRAME_FOLDER = "cam3/door_20260102_070809"


def write_inputs_browsers_cannot_play(inbox) -> None:
    """The sample clip as MPEG-4 Part 2 in a .mov with a creation_time (no browser plays that codec), the same
    frames as a frame folder whose name holds a timestamp, and an input that fails."""
    import av
    import cv2

    from review_support import SAMPLE_CLIP

    (inbox / FRAME_FOLDER).mkdir(parents=True)
    with av.open(str(SAMPLE_CLIP)) as source, av.open(str(inbox / "cam3" / "lobby.mov"), "w", format="mov") as out:
        out.metadata["creation_time"] = RECORDED_AT
        video = source.streams.video[0]
        stream = out.add_stream("mpeg4", rate=video.average_rate)
        stream.width, stream.height, stream.pix_fmt = video.width, video.height, "yuv420p"
        stream.options = {"qscale": "2"}
        stream.codec_context.time_base = 1 / video.average_rate
        for index, decoded in enumerate(source.decode(video)):
            image = decoded.to_ndarray(format="bgr24")
            cv2.imwrite(str(inbox / FRAME_FOLDER / f"frame-{index:04d}.png"), image)
            frame = av.VideoFrame.from_ndarray(image, format="bgr24").reformat(format="yuv420p")
            frame.pts, frame.time_base = index, stream.codec_context.time_base
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    (inbox / "cam3" / "broken.mov").write_bytes(b"not a movie at all " * 300)


@pytest.fixture(scope="module")
def other_footage(tmp_path_factory):
    """The daemon's real outbox for inputs a browser cannot show as they are, and a server on it."""
    from review_support import daemon_outbox

    root = tmp_path_factory.mktemp("other-footage")
    write_inputs_browsers_cannot_play(root / "inbox")
    box = daemon_outbox(root, 3)
    running = Server(write_serve_config(root / "serve.yaml", box))
    yield running, box
    running.stop()
