"""The review server in a real headless browser (Debian's chromium driven by Selenium), over a real socket:
open the list, filter it, open a job, play and seek the clip, use the slider, mark a track, gather a case
(whose page shows each track's faces), export it, and check the exported report's hashes against the files
themselves.

FACEDEBLUR_SCREENSHOTS=docs makes this test also save docs/review-list.png, docs/review-job.png and
docs/review-case.png (the built-in sample clip, so no research faces).
"""
from __future__ import annotations

import hashlib
import re
import time

import pytest

from browser_support import headless_chromium, needs_chromium, screenshot, wait_until
from review_support import HOSTILE_NAME, SAMPLE_CLIP, Server, processed_outbox, write_serve_config

pytestmark = [needs_chromium, pytest.mark.slow]


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    box = processed_outbox(tmp_path_factory)
    exports = tmp_path_factory.mktemp("browser-exports")
    running = Server(write_serve_config(tmp_path_factory.mktemp("browser") / "serve.yaml", box,
                                        exports=str(exports)))
    yield running, box, exports
    running.stop()


@pytest.fixture(scope="module")
def browser():
    driver = headless_chromium("--autoplay-policy=no-user-gesture-required", "--window-size=1280,1000")
    yield driver
    driver.quit()




def test_review_workflow_in_a_browser(browser, served) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    server, box, exports = served
    browser.get(server.base + "/")
    rows = browser.find_elements(By.CSS_SELECTOR, "tr.job")
    assert len(rows) == 3
    names = [cell.text for cell in browser.find_elements(By.CSS_SELECTOR, "td.name")]
    assert HOSTILE_NAME in names                                       # shown as text, never as markup
    assert browser.execute_script("return document.querySelectorAll('td.name img').length") == 0
    assert "not a readable video" in browser.find_element(By.CSS_SELECTOR, "tr.state-failed .reason").text
    broken = browser.execute_script(
        "return Array.from(document.images).filter(i => !(i.complete && i.naturalWidth > 0)).map(i => i.src);")
    assert broken == []
    screenshot(browser, "review-list.png")

    # Filter: failed only, then one camera folder.
    Select(browser.find_element(By.ID, "filter-status")).select_by_value("failed")
    browser.find_element(By.ID, "filter-apply").click()
    wait_until(lambda: "status=failed" in browser.current_url, "the filtered list")
    assert [r.get_attribute("data-job") for r in browser.find_elements(By.CSS_SELECTOR, "tr.job")] == \
        [str(box.job_by_input("cam2/broken.mp4")["id"])]
    Select(browser.find_element(By.ID, "filter-status")).select_by_value("")
    Select(browser.find_element(By.ID, "filter-folder")).select_by_value("cam1")
    browser.find_element(By.ID, "filter-apply").click()
    wait_until(lambda: "folder=cam1" in browser.current_url, "the folder filter")
    rows = browser.find_elements(By.CSS_SELECTOR, "tr.job")
    assert len(rows) == 1

    # Open the job and play its clip (Range requests let the browser seek).
    rows[0].find_element(By.CSS_SELECTOR, "td.name a").click()
    wait_until(lambda: browser.find_elements(By.ID, "job-title"), "the job page")
    video = browser.find_element(By.ID, "video-annotated")
    browser.execute_script("arguments[0].muted = true; arguments[0].play();", video)
    wait_until(lambda: browser.execute_script("return arguments[0].currentTime > 0.2;", video), "the clip to play")
    assert browser.execute_script("return arguments[0].error;", video) is None
    browser.execute_script("arguments[0].pause();", video)

    # The before/after slider and the jump to a best frame's time.
    track = browser.find_element(By.CSS_SELECTOR, "article.track")
    before = track.find_element(By.CSS_SELECTOR, "img.before")
    clip = lambda: browser.execute_script("return getComputedStyle(arguments[0]).clipPath;", before)
    assert clip() == "inset(0px 50% 0px 0px)"
    slider = track.find_element(By.CSS_SELECTOR, "input.slider")
    browser.execute_script("arguments[0].value = 30; arguments[0].dispatchEvent(new Event('input'));", slider)
    assert clip() == "inset(0px 70% 0px 0px)"
    thumb = track.find_elements(By.CSS_SELECTOR, "button.thumb")[-1]
    thumb.click()
    target = float(thumb.get_attribute("data-time"))
    wait_until(lambda: abs(browser.execute_script("return arguments[0].currentTime;", video) - target) < 0.05
               and not browser.execute_script("return arguments[0].seeking;", video), "the seek")
    assert track.find_element(By.CSS_SELECTOR, "img.after").get_attribute("src").endswith(
        thumb.get_attribute("data-restored"))
    screenshot(browser, "review-job.png")

    # Mark the track.
    Select(track.find_element(By.CSS_SELECTOR, "select.mark-status")).select_by_value("flagged")
    note = track.find_element(By.CSS_SELECTOR, "textarea.mark-note")
    note.clear()
    note.send_keys("second person behind, check original <b>")
    track.find_element(By.CSS_SELECTOR, "button.mark-save").click()
    by = wait_until(lambda: browser.find_elements(By.CSS_SELECTOR, "article.track .mark-by"), "the saved mark")
    assert by[0].text.startswith("flagged by local")
    assert "check original <b>" in browser.find_element(By.ID, "history").text

    # Export a case with this track and the other clip's track.
    job_id = int(browser.current_url.split("/jobs/", 1)[1].split("#")[0].split("?")[0])
    browser.find_element(By.CSS_SELECTOR, "article.track button.case-add").click()
    wait_until(lambda: "Case (1)" in browser.find_element(By.ID, "case-link").text, "one track in the case")
    other = box.job_by_input(f"cam2/{HOSTILE_NAME}")["id"]
    browser.get(f"{server.base}/jobs/{other}")
    browser.find_element(By.CSS_SELECTOR, "article.track button.case-add").click()
    wait_until(lambda: "Case (2)" in browser.find_element(By.ID, "case-link").text, "two tracks in the case")
    browser.find_element(By.ID, "case-link").click()

    # The case page: a card per track with its best face, original and restored, loaded from the server.
    wait_until(lambda: browser.find_elements(By.ID, "case-items"), "the case page")
    assert sorted(int(card.get_attribute("data-job")) for card in
                  browser.find_elements(By.CSS_SELECTOR, "article.case-item")) == sorted([job_id, other])
    assert len(browser.find_elements(By.CSS_SELECTOR, "#case-items img")) == 4
    wait_until(lambda: browser.execute_script(
        "return Array.from(document.querySelectorAll('#case-items img'))"
        ".every(i => i.complete && i.naturalWidth > 0);"), "every face on the case page to load")
    browser.find_element(By.ID, "investigator").send_keys("Det. A. Example")
    browser.find_element(By.ID, "purpose").send_keys("Who was at the door <i>before</i> the alarm")
    screenshot(browser, "review-case.png")
    browser.find_element(By.ID, "export").click()
    zip_hash = wait_until(lambda: browser.find_elements(By.ID, "zip-sha256"), "the exported case")[0].text
    case_id = browser.current_url.rstrip("/").rsplit("/", 1)[-1]
    folder = exports / f"case-{case_id}"
    assert zip_hash == hashlib.sha256((exports / f"case-{case_id}.zip").read_bytes()).hexdigest()

    # The report, as the browser shows it: every listed hash is the hash of the file it names.
    browser.find_element(By.ID, "report-html").click()
    wait_until(lambda: browser.find_elements(By.ID, "files"), "the report")
    listed = [(row.find_element(By.CSS_SELECTOR, "td.hash").text, row.find_element(By.CSS_SELECTOR, "td.path").text)
              for row in browser.find_elements(By.CSS_SELECTOR, "#files tr") if row.find_elements(By.CSS_SELECTOR, "td")]
    assert len(listed) >= 15
    for digest, path in listed:
        assert hashlib.sha256((folder / path).read_bytes()).hexdigest() == digest, path
    sample_sha = hashlib.sha256(SAMPLE_CLIP.read_bytes()).hexdigest()
    assert [e.text for e in browser.find_elements(By.CSS_SELECTOR, ".input-sha256")] == [sample_sha, sample_sha]
    assert "AI-restored" in browser.find_element(By.ID, "ai-notice").text
    assert "flagged" in [e.text for e in browser.find_elements(By.CSS_SELECTOR, ".mark-status")]
    assert "second person behind, check original <b>" in browser.page_source.replace("&lt;", "<").replace("&gt;", ">")
    assert browser.find_element(By.ID, "investigator").text == "Det. A. Example"
    assert re.search(r"\b[0-9a-f]{64}\b", browser.find_element(By.TAG_NAME, "body").text)
