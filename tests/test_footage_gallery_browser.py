"""The gallery (index.html) in a real headless browser: Debian's chromium driven by Selenium, from file://."""
from __future__ import annotations

from pathlib import Path

import pytest

from browser_support import headless_chromium, needs_chromium
from facedeblur.config import PipelineSettings
from facedeblur.footage.process import process_input
from footage_support import build_sharpening_model, make_sample

pytestmark = [needs_chromium, pytest.mark.slow]


@pytest.fixture(scope="module")
def gallery(tmp_path_factory) -> Path:
    """A processed synthetic clip (one track, three best frames) to open in the browser."""
    folder = tmp_path_factory.mktemp("gallery")
    frames = [frame for frame, _ in make_sample.synthesize_frames(256, 192, frames=10, face_height=110, seed=1)]
    clip = folder / "clip.mp4"
    make_sample.write_clip(clip, frames, fps=10)
    settings = PipelineSettings()
    settings.restorer.model = build_sharpening_model(folder / "sharpen.onnx")
    process_input(clip, folder / "out", settings, progress=False)
    return folder / "out" / "index.html"


@pytest.fixture(scope="module")
def browser():
    driver = headless_chromium()
    yield driver
    driver.quit()


def test_cards_render_images_load_and_the_comparison_works(browser, gallery):
    from selenium.webdriver.common.by import By

    browser.get(gallery.as_uri())
    cards = browser.find_elements(By.CSS_SELECTOR, "article.card")
    assert len(cards) == 1
    assert cards[0].is_displayed()
    assert "AI-restored" in browser.find_element(By.CSS_SELECTOR, ".notice").text
    broken = browser.execute_script(
        "return Array.from(document.images).filter(i => !(i.complete && i.naturalWidth > 0)).map(i => i.src);")
    assert broken == []
    assert browser.execute_script("return document.images.length;") >= 5  # before, after, 3 thumbnails

    card = cards[0]
    before = card.find_element(By.CSS_SELECTOR, "img.before")
    clip = lambda: browser.execute_script("return arguments[0].style.clipPath;", before)
    assert clip() == "inset(0px 50% 0px 0px)"

    toggle = card.find_element(By.CSS_SELECTOR, "button.toggle")
    toggle.click()
    assert clip() in ("inset(0px)", "inset(0px 0% 0px 0px)")  # the whole original shown
    assert toggle.text == "show AI-restored"
    toggle.click()
    assert clip() == "inset(0px 100% 0px 0px)"  # the whole restored face shown
    assert toggle.text == "show original"

    slider = card.find_element(By.CSS_SELECTOR, "input.slider")
    browser.execute_script("arguments[0].value = 30; arguments[0].dispatchEvent(new Event('input'));", slider)
    assert clip() == "inset(0px 70% 0px 0px)"

    thumbs = card.find_elements(By.CSS_SELECTOR, "button.thumb")
    thumbs[-1].click()
    after = card.find_element(By.CSS_SELECTOR, "img.after")
    assert after.get_attribute("src").endswith(thumbs[-1].get_attribute("data-restored"))
    assert "active" in thumbs[-1].get_attribute("class")
    assert browser.execute_script("return arguments[0].complete && arguments[0].naturalWidth > 0;", after)
