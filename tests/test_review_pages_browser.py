"""Every kind of page the review server serves, in headless Chromium over a real socket, on the real daemon's
outbox: every image loads (the list, a job page, the job's gallery, the case page and a served case report),
the original plays beside the restored clip in step, faces zoom to full size, and the keyboard works."""
from __future__ import annotations

import hashlib
import re
import sqlite3
import subprocess
import time

import pytest

from browser_support import headless_chromium, needs_chromium, wait_until
from review_support import HOSTILE_NAME, PYTHON, SAMPLE_CLIP, Server, processed_outbox, write_serve_config

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
    page_background = browser.execute_script("return getComputedStyle(document.body).backgroundColor;")
    assert images_of(browser, f"{server.base}/jobs/{job}/files/index.html") >= 3   # the job's own gallery
    # One theme: the gallery's page is the server's colour; and its own inline script never runs when served.
    assert browser.execute_script("return getComputedStyle(document.body).backgroundColor;") == page_background
    toggle = browser.find_element(By.CSS_SELECTOR, "button.toggle")
    toggle.click()
    assert toggle.text == "show original"

    browser.get(server.base + "/case")
    browser.find_element(By.ID, "new-case-name").send_keys("every image loads")
    browser.find_element(By.ID, "new-case").click()                      # made and current: the job pages add here
    wait_until(lambda: re.search(r"/case/\d+$", browser.current_url) and browser.find_elements(By.ID, "case-name"),
               "the new case's page")
    case_page = browser.current_url
    for job_id in (job, other):
        browser.get(f"{server.base}/jobs/{job_id}")
        add = browser.find_element(By.CSS_SELECTOR, "article.track button.case-add")
        add.click()
        # the page the form posts to replaces this one: until then the old page (and its title) is still there
        wait_until(lambda: is_stale(add) and browser.find_elements(By.ID, "job-title"), "the job page again")
    assert images_of(browser, case_page) >= 4                               # original and restored, two tracks
    browser.find_element(By.ID, "investigator").send_keys("A. Reviewer")
    browser.find_element(By.ID, "purpose").send_keys("every image of the served pages loads")
    browser.find_element(By.ID, "export").click()
    wait_until(lambda: browser.find_elements(By.ID, "zip-sha256"), "the exported case")
    report = browser.find_element(By.ID, "report-html").get_attribute("href")
    assert images_of(browser, report) >= 4                                  # original and restored, two tracks


def is_stale(element) -> bool:
    from selenium.common.exceptions import StaleElementReferenceException
    try:
        element.is_enabled()
    except StaleElementReferenceException:
        return True
    return False


RECORDED_AT = "2026-01-02T03:04:05.000000Z"
FRAME_FOLDER = "cam3/door_20260102_070809"


def write_inputs_browsers_cannot_play(inbox) -> None:
    """The sample clip as MPEG-4 Part 2 in a .mov with a creation_time (no browser plays that codec), then a
    cut to a close-up of the same frames, so the person has a track in each shot; the sample's frames as a
    frame folder whose name holds a timestamp; and an input that fails."""
    import av
    import cv2

    (inbox / FRAME_FOLDER).mkdir(parents=True)
    with av.open(str(SAMPLE_CLIP)) as source, av.open(str(inbox / "cam3" / "lobby.mov"), "w", format="mov") as out:
        out.metadata["creation_time"] = RECORDED_AT
        video = source.streams.video[0]
        stream = out.add_stream("mpeg4", rate=video.average_rate)
        stream.width, stream.height, stream.pix_fmt = video.width, video.height, "yuv420p"
        stream.options = {"qscale": "2"}
        stream.codec_context.time_base = 1 / video.average_rate
        images = [decoded.to_ndarray(format="bgr24") for decoded in source.decode(video)]
        height, width = images[0].shape[:2]
        close_ups = [cv2.resize(image[height // 6:height - height // 6, width // 6:width - width // 6], (width, height),
                                interpolation=cv2.INTER_CUBIC) for image in images]
        for index, image in enumerate(images + close_ups):
            if index < len(images):
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


def player_state(browser) -> dict:
    return browser.execute_script("""
        var o = document.getElementById('video-original'), r = document.getElementById('video-restored');
        return {original: o.currentTime, restored: r.currentTime, paused: [o.paused, r.paused],
                ready: [o.readyState, r.readyState], errors: [o.error && o.error.message, r.error && r.error.message],
                label: document.getElementById('player-time').textContent};""")


def ai_label_covers_restored_video(browser) -> bool:
    return browser.execute_script("""
        var label = document.querySelector('#player .pane-label.ai'), video = document.getElementById('video-restored');
        var a = label.getBoundingClientRect(), b = video.getBoundingClientRect();
        return getComputedStyle(label).visibility === 'visible' && label.textContent === 'AI-restored' &&
               a.left >= b.left && a.right <= b.right && a.top >= b.top && a.bottom <= b.bottom;""")


def test_original_plays_beside_the_restored_in_step_with_frame_steps(browser, served) -> None:
    from selenium.webdriver.common.by import By

    server, box = served
    job = box.job_by_input("cam1/sample-clip.mp4")
    browser.get(f"{server.base}/jobs/{job['id']}")
    assert browser.find_element(By.ID, "original-label").text == "original"   # an H.264 MP4 plays as it is
    assert browser.find_element(By.ID, "original-sha256").text == hashlib.sha256(SAMPLE_CLIP.read_bytes()).hexdigest()
    assert ai_label_covers_restored_video(browser)
    wait_until(lambda: min(player_state(browser)["ready"]) >= 2, "both clips to load")
    fps = float(browser.find_element(By.ID, "player").get_attribute("data-fps"))
    assert fps == 14.0                                                        # the sample clip's rate, from the manifest

    browser.find_element(By.ID, "play-pause").click()
    wait_until(lambda: player_state(browser)["restored"] > 1.0, "the clips to play")
    playing = player_state(browser)
    assert playing["paused"] == [False, False] and playing["errors"] == [None, None]
    assert abs(playing["original"] - playing["restored"]) < 3 / fps
    browser.find_element(By.ID, "play-pause").click()
    wait_until(lambda: player_state(browser)["paused"] == [True, True], "both to pause")
    wait_until(lambda: player_state(browser)["original"] == player_state(browser)["restored"], "the clips to align")

    browser.find_element(By.ID, "scrub").click()   # the middle of the bar: both clips jump there
    wait_until(lambda: abs(player_state(browser)["restored"] - 1.5) < 0.3, "the jump to the middle")
    frame = int(player_state(browser)["label"].split()[1])
    for step, button in ((1, "step-forward"), (1, "step-forward"), (-1, "step-back")):
        browser.find_element(By.ID, button).click()
        frame += step
        state = player_state(browser)
        assert state["label"].startswith(f"frame {frame} ·")
        assert state["original"] == state["restored"] == pytest.approx((frame + 0.5) / fps, abs=1e-5)   # the browser keeps microseconds
    # A best frame's thumbnail moves the player to that frame's time too.
    thumb = browser.find_elements(By.CSS_SELECTOR, "article.track button.thumb")[-1]
    thumb.click()
    target = float(thumb.get_attribute("data-time"))
    wait_until(lambda: abs(player_state(browser)["original"] - target) < 1e-3, "the thumbnail's time")


def test_a_proxy_stands_in_for_an_original_browsers_cannot_play(browser, other_footage) -> None:
    import av
    from selenium.webdriver.common.by import By

    server, box = other_footage
    job = box.job_by_input("cam3/lobby.mov")
    browser.get(f"{server.base}/jobs/{job['id']}")
    assert browser.find_element(By.ID, "original-label").text == "proxy of the original"
    assert "mpeg4 does not play in browsers" in browser.find_element(By.ID, "player").text
    assert browser.find_element(By.ID, "original-sha256").text == \
        hashlib.sha256((box.inbox / "cam3" / "lobby.mov").read_bytes()).hexdigest()
    assert ai_label_covers_restored_video(browser)
    wait_until(lambda: min(player_state(browser)["ready"]) >= 2, "the proxy and the restored clip to load", 120)
    assert player_state(browser)["errors"] == [None, None]
    browser.find_element(By.ID, "step-forward").click()
    state = player_state(browser)
    assert state["original"] == state["restored"] == pytest.approx(1.5 / 14.0, abs=1e-5), state

    browser.refresh()   # the proxy is made now: its own hash is shown beside the original's
    proxies = list((box.state / "proxies").glob("*.mp4"))
    assert len(proxies) == 1
    assert browser.find_element(By.ID, "proxy-sha256").text == hashlib.sha256(proxies[0].read_bytes()).hexdigest()
    with av.open(str(box.inbox / "cam3" / "lobby.mov")) as original:
        original_frames = sum(1 for _ in original.decode(video=0))
    with av.open(str(proxies[0])) as proxy:
        assert proxy.streams.video[0].codec_context.name == "h264"
        assert proxy.streams.video[0].frames == original_frames == 84   # the sample's 42 and their close-ups
        assert "not AI-restored" in proxy.metadata.get("comment", "")
    recorded = browser.find_element(By.ID, "recorded").text
    assert "2026-01-02 03:04:05" in recorded and "creation_time" in recorded
    assert "recorded 2026-01-02 03:04:05" in browser.find_element(By.CSS_SELECTOR, "article.track .recorded").text


def test_a_frame_folder_shows_its_original_and_restored_frames(browser, other_footage) -> None:
    import cv2
    from selenium.webdriver.common.by import By

    server, box = other_footage
    job = box.job_by_input(FRAME_FOLDER)
    browser.get(f"{server.base}/jobs/{job['id']}")
    original, restored = browser.find_element(By.ID, "frame-original"), browser.find_element(By.ID, "frame-restored")
    names = sorted(p.name for p in (box.inbox / FRAME_FOLDER).iterdir())
    for step, index in ((None, 0), ("step-forward", 1), ("step-forward", 2), ("step-back", 1)):
        if step:
            browser.find_element(By.ID, step).click()
        wait_until(lambda: browser.execute_script("return arguments[0].complete && arguments[1].complete && "
                                                  "arguments[0].naturalWidth > 0 && arguments[1].naturalWidth > 0;",
                                                  original, restored), "the frames")
        assert original.get_attribute("src").endswith(f"/original/{names[index]}")
        assert restored.get_attribute("src").endswith(f"/restored/{names[index]}")
        assert browser.find_element(By.ID, "player-time").text.startswith(f"frame {index + 1} of {len(names)}")
    # The original pane shows the inbox's frame itself, the restored pane the daemon's output.
    output = next(box.outbox.glob("cam3__door_*"))
    for role, folder in (("original", box.inbox / FRAME_FOLDER), ("restored", output / "restored")):
        shown = browser.execute_script("""
            var image = document.getElementById(arguments[0]), canvas = document.createElement('canvas');
            canvas.width = image.naturalWidth; canvas.height = image.naturalHeight;
            var context = canvas.getContext('2d'); context.drawImage(image, 0, 0);
            return Array.from(context.getImageData(0, 0, canvas.width, 1).data);""", f"frame-{role}")
        expected = cv2.cvtColor(cv2.imread(str(folder / names[1])), cv2.COLOR_BGR2RGBA)[0].reshape(-1).tolist()
        assert shown == expected, role
    assert "AI-restored" == browser.find_element(By.CSS_SELECTOR, "#player .pane-label.ai").text
    recorded = browser.find_element(By.ID, "recorded").text
    assert "2026-01-02 07:08:09" in recorded and "file name" in recorded


def test_zoom_keyboard_list_faces_and_edge_energy_label(browser, other_footage) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    server, box = other_footage
    job = box.job_by_input("cam3/lobby.mov")
    browser.get(server.base + "/")
    row = browser.find_element(By.CSS_SELECTOR, f"tr.job[data-job='{job['id']}']")
    faces = row.find_elements(By.CSS_SELECTOR, "td.thumb img")
    assert len(faces) == job["tracks"] == 2                                  # every track's face, not the first only
    assert len({face.get_attribute("src") for face in faces}) == 2

    browser.get(f"{server.base}/jobs/{job['id']}")
    body = browser.find_element(By.TAG_NAME, "body")
    tracks = browser.find_elements(By.CSS_SELECTOR, "article.track")
    label = tracks[0].find_element(By.CSS_SELECTOR, ".edge-energy").text
    assert label.startswith("edge energy (Laplacian variance): original") and "→" not in label
    assert "not a quality score" in browser.find_element(By.ID, "edge-energy-note").text

    body.send_keys("?")
    assert browser.find_element(By.ID, "shortcuts").is_displayed()
    assert "next / previous track" in browser.find_element(By.ID, "shortcuts").text
    body.send_keys(Keys.ESCAPE)
    wait_until(lambda: not browser.find_element(By.ID, "shortcuts").is_displayed(), "the help to close")

    body.send_keys("j")
    body.send_keys("j")
    assert "current" in tracks[1].get_attribute("class") and "current" not in tracks[0].get_attribute("class")
    body.send_keys("z")
    zoomed = wait_until(lambda: browser.execute_script("""
        var image = document.querySelector('#zoom-restored img');
        return image && image.complete && image.dataset.factor ? image : null;"""), "the zoomed face")
    natural, width, factor = browser.execute_script(
        "return [arguments[0].naturalWidth, arguments[0].getBoundingClientRect().width, "
        "Number(arguments[0].dataset.factor)];", zoomed)
    assert zoomed.get_attribute("src") == tracks[1].find_element(By.CSS_SELECTOR, "img.after").get_attribute("src")
    assert width == natural * factor and factor == max(1, 512 // natural)  # whole pixels, never less than full size
    assert browser.find_element(By.CSS_SELECTOR, "#zoom .pane-label.ai").is_displayed()
    body.send_keys(Keys.ESCAPE)
    wait_until(lambda: not browser.find_element(By.ID, "zoom").is_displayed(), "the zoom to close")
    tracks[0].find_element(By.CSS_SELECTOR, ".compare").click()          # a click on a face zooms it too
    wait_until(lambda: browser.find_element(By.ID, "zoom").is_displayed(), "the zoom by click")
    browser.find_element(By.ID, "zoom-close").click()

    browser.find_element(By.TAG_NAME, "body").send_keys("j")
    browser.find_element(By.TAG_NAME, "body").send_keys("j")
    browser.find_element(By.TAG_NAME, "body").send_keys("f")             # saved at once, as the second track's mark
    second = wait_until(lambda: browser.find_elements(By.CSS_SELECTOR, f"#track-{tracks_ids(browser)[1]} .mark-by"),
                        "the flag")
    assert second[0].text.startswith("flagged by local")
    browser.find_element(By.TAG_NAME, "body").send_keys("j")
    browser.find_element(By.TAG_NAME, "body").send_keys("r")             # j starts again at the first track
    first = wait_until(lambda: browser.find_elements(By.CSS_SELECTOR, f"#track-{tracks_ids(browser)[0]} .mark-by"),
                       "the review mark")
    assert first[0].text.startswith("reviewed by local")


def tracks_ids(browser) -> list[str]:
    return browser.execute_script("return Array.from(document.querySelectorAll('article.track'))"
                                  ".map(t => t.dataset.track);")


def test_a_failed_job_links_its_copy_and_is_retried_by_the_daemon(browser, other_footage) -> None:
    from selenium.webdriver.common.by import By

    server, box = other_footage
    job = box.job_by_input("cam3/broken.mov")
    browser.get(f"{server.base}/jobs/{job['id']}")
    copy = browser.find_element(By.ID, "failed-copy").get_attribute("href").removeprefix(server.base)
    status, headers, data = server.request("GET", copy)
    assert status == 200 and data == (box.inbox / "cam3" / "broken.mov").read_bytes()
    assert headers["content-disposition"].startswith("attachment")
    note = browser.find_element(By.ID, "failed-note").get_attribute("href").removeprefix(server.base)
    assert b"not a readable video" in server.request("GET", note)[2]

    browser.find_element(By.ID, "retry").click()
    assert "retry requested by local" in wait_until(lambda: browser.find_elements(By.ID, "retry-state"), "the request")[0].text
    review = sqlite3.connect(box.state / "review.sqlite3")
    assert review.execute("SELECT who, job_id FROM audit WHERE action='retry'").fetchall() == [("local", job["id"])]
    review.close()

    # The daemon, started again on the same folders, takes the request and queues the input as a new job.
    daemon = subprocess.Popen([PYTHON, "-m", "facedeblur", "watch", "--config", str(box.root / "daemon.yaml")],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        retried = wait_until(lambda: [j for j in box.jobs() if j["rel_path"] == "cam3/broken.mov" and j["id"] != job["id"]
                                      and j["state"] in ("done", "failed")], "the retried job", 180)
    finally:
        daemon.terminate()
        daemon.wait(timeout=60)
    assert len(retried) == 1 and box.job_by_input("cam3/broken.mov")["state"] == "failed"
    browser.refresh()
    state = browser.find_element(By.ID, "retry-state")
    assert f"job #{retried[0]['id']}" in state.text and "local" in state.text
    assert not browser.find_elements(By.ID, "retry")                     # asked once, answered: no second button


def test_the_original_is_shown_only_while_it_is_what_was_processed(browser, other_footage) -> None:
    """Inbox files are written by whoever drops footage: names that leave the folder, links and changed
    content are never served as the original."""
    from selenium.webdriver.common.by import By

    server, box = other_footage
    frames = box.job_by_input(FRAME_FOLDER)["id"]
    (box.inbox / FRAME_FOLDER / "planted.png").symlink_to("/etc/passwd")
    for name in ("planted.png", "..", "frame-0000.txt", "%2e%2e%2fbroken.mov"):
        assert server.request("GET", f"/jobs/{frames}/frames/original/{name}")[0] == 404, name
    assert server.request("GET", f"/jobs/{frames}/frames/elsewhere/frame-0000.png")[0] == 404
    lobby = box.job_by_input("cam3/lobby.mov")
    assert server.request("GET", f"/jobs/{lobby['id']}/original")[0] == 200
    clip = box.inbox / "cam3" / "lobby.mov"
    data = bytearray(clip.read_bytes())
    data[-100:] = bytes(100)                                            # same size, other content
    clip.write_bytes(bytes(data))
    assert server.request("GET", f"/jobs/{lobby['id']}/original")[0] == 404
    browser.get(f"{server.base}/jobs/{lobby['id']}")
    assert "other content than was processed" in browser.find_element(By.ID, "original-missing").text
    assert browser.find_element(By.CSS_SELECTOR, "#player .pane-label.ai").text == "AI-restored"
