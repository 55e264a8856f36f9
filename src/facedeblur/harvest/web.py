"""Web pages: rendered in headless Chromium driven by Selenium, because galleries insert their images with
JavaScript and lazy loading, and a plain HTTP fetch of the HTML misses them.

The browser only renders and reads the page. It never loads an image (images are switched off: the
harvester downloads each one itself, checked against robots.txt, paced and size-limited), downloads are
refused, and the Disallow paths of the site's robots.txt are on its URL block list, so a page cannot make
it fetch what the site asked crawlers to leave alone. Every request the browser makes goes through
browser_proxy.GuardProxy, which applies the harvester's own address and robots checks, so a page's scripts
cannot reach a private host the harvester refuses. Every page load is one paced request to its host.
"""
from __future__ import annotations

import logging
import os
import shutil
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from ..errors import FacedeblurError
from ..inputs import is_image_name
from .browser_proxy import GuardProxy
from .checks import HTTP_ERROR, ROBOTS, Skipped
from .fetch import Fetcher, normalise_url, refuse_unsafe_url
from .politeness import host_key, origin
from .settings import USER_AGENT, HarvestSettings

log = logging.getLogger(__name__)

CHROMIUM_CANDIDATES = ("chromium", "chromium-browser", "google-chrome")
SCROLL_SETTLE_SECONDS = 1.5   # how long a scroll may take to bring new content before scrolling stops
SCROLL_POLL_SECONDS = 0.25
# driver.get returns at DOMContentLoaded (see _start); galleries often fill themselves on `load`, so that is
# waited for first, up to this long (a held-back disallowed iframe means it never comes).
LOAD_WAIT_SECONDS = 5.0

# Everything the harvester reads from a rendered page, in one script: image URLs (src, srcset and the usual
# lazy-loading attributes, and links straight to image files), links, and a declared licence.
_READ_PAGE = r"""
const abs = (value) => { try { return new URL(value, document.baseURI).href; } catch (e) { return null; } };
const largest = (srcset) => {
  let best = null, bestSize = -1;
  for (const part of (srcset || '').split(',')) {
    const [url, size] = part.trim().split(/\s+/);
    if (!url) continue;
    const n = parseFloat(size || '1') || 1;
    if (n > bestSize) { best = url; bestSize = n; }
  }
  return best;
};
const images = [], links = [];
for (const img of document.querySelectorAll('img')) {
  for (const name of ['src', 'data-src', 'data-original', 'data-lazy-src', 'data-full']) {
    const value = img.getAttribute(name);
    if (value) images.push(abs(value));
  }
  const set = largest(img.getAttribute('srcset') || img.getAttribute('data-srcset'));
  if (set) images.push(abs(set));
}
for (const source of document.querySelectorAll('picture source[srcset]')) {
  const set = largest(source.getAttribute('srcset'));
  if (set) images.push(abs(set));
}
for (const a of document.querySelectorAll('a[href]')) links.push(abs(a.getAttribute('href')));
let licence = null;
const rel = document.querySelector('link[rel~="license" i][href], a[rel~="license" i][href]');
if (rel) licence = abs(rel.getAttribute('href'));
if (!licence) {
  const meta = document.querySelector('meta[name="license" i], meta[name="dcterms.license" i], ' +
                                      'meta[name="dc.rights" i], meta[property="og:license" i]');
  if (meta && meta.getAttribute('content')) licence = meta.getAttribute('content');
}
if (!licence) {
  for (const script of document.querySelectorAll('script[type="application/ld+json"]')) {
    try {
      const data = JSON.parse(script.textContent);
      for (const item of (Array.isArray(data) ? data : [data])) {
        const value = item && (item.license || item.acquireLicensePage);
        if (value) { licence = typeof value === 'string' ? value : (value.url || value['@id'] || null); break; }
      }
    } catch (e) {}
    if (licence) break;
  }
}
return {images: images.filter(Boolean), links: links.filter(Boolean), licence: licence, url: location.href};
"""


@dataclass
class RenderedPage:
    url: str
    depth: int
    images: list[str] = field(default_factory=list)
    licence: str | None = None


def find_chromium() -> tuple[str, str]:
    """(browser, driver) paths: Debian's chromium and chromium-driver, or raise with the fix."""
    browser = next((path for name in CHROMIUM_CANDIDATES if (path := shutil.which(name))), None)
    driver = shutil.which("chromedriver")
    for fallback in ("/usr/bin/chromium", "/usr/lib/chromium/chromium"):
        if browser is None and os.path.exists(fallback):
            browser = fallback
    if driver is None and os.path.exists("/usr/bin/chromedriver"):
        driver = "/usr/bin/chromedriver"
    if browser is None or driver is None:
        raise FacedeblurError("web sources need Chromium and its driver; install them "
                              "(Debian/Ubuntu: apt-get install chromium chromium-driver) or harvest local sources only")
    return browser, driver


class Browser:
    """One headless Chromium for the whole harvest, started on first use."""

    def __init__(self, settings: HarvestSettings, fetcher: Fetcher):
        self.settings = settings
        self.fetcher = fetcher
        self._driver = None
        self._proxy: GuardProxy | None = None

    def _check_host(self, url: str) -> None:
        """What an https request (a CONNECT) can be checked for: the scheme and the host's address."""
        refuse_unsafe_url(url)
        self.fetcher.refuse_private_address(url)

    def _start(self):
        try:
            from selenium import webdriver
            from selenium.webdriver.chrome.service import Service
        except ImportError:
            raise FacedeblurError("web sources need Selenium: pip install 'facedeblur[train]'") from None
        browser, driver = find_chromium()
        os.environ["SE_OFFLINE"] = "true"  # Selenium Manager must never download a browser or driver
        options = webdriver.ChromeOptions()
        options.binary_location = browser
        flags = ["--headless", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--no-first-run", "--disable-dev-shm-usage", "--disable-extensions", "--disable-sync",
                 "--mute-audio", f"--user-agent={USER_AGENT}"]
        if os.geteuid() == 0:
            flags.append("--no-sandbox")  # Chromium refuses to start its sandbox as root (containers)
        self._proxy = GuardProxy(self.fetcher.check_allowed, self._check_host, self.fetcher.open_connection,
                                 self.settings.timeout)
        # Every request through the checking proxy, loopback included (Chromium bypasses proxies for loopback
        # unless told otherwise), and no WebRTC UDP around it.
        flags += [f"--proxy-server=http://{self._proxy.address}", "--proxy-bypass-list=<-loopback>",
                  "--force-webrtc-ip-handling-policy=disable_non_proxied_udp"]
        for flag in flags:
            options.add_argument(flag)
        options.add_experimental_option("prefs", {
            "profile.managed_default_content_settings.images": 2,   # the harvester fetches images itself
            "download_restrictions": 3,                              # never download a file
            "profile.default_content_setting_values.notifications": 2,
        })
        # Return at DOMContentLoaded: a request held back below (a disallowed iframe) would otherwise keep the
        # load event, and so driver.get, waiting until the timeout. The scrolling loop waits for late content.
        options.page_load_strategy = "eager"
        try:
            self._driver = webdriver.Chrome(service=Service(executable_path=driver), options=options)
        except Exception as exc:  # WebDriverException and its many causes
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise FacedeblurError(f"Chromium did not start ({first[:160]}); check that chromium and "
                                  "chromium-driver are installed with matching versions") from None
        self._driver.set_page_load_timeout(self.settings.timeout)
        self._driver.set_script_timeout(self.settings.timeout)
        self._driver.execute_cdp_cmd("Network.enable", {})

    def render(self, url: str, blocked_prefixes: list[str]) -> dict:
        """Load, scroll until nothing new appears (or max_scrolls), and read the page."""
        if self._driver is None:
            self._start()
        driver = self._driver
        patterns = [_escape_pattern(prefix) + "*" for prefix in blocked_prefixes]
        # Two locks on robots.txt's Disallow paths: the block list fails scripts, styles and XHR at once, but
        # Chromium does not apply it to frame navigations (an <iframe> of a disallowed page), so those are
        # also paused by the Fetch domain and, never continued, never leave the browser.
        driver.execute_cdp_cmd("Network.setBlockedURLs", {"urls": patterns})
        if patterns:
            driver.execute_cdp_cmd("Fetch.enable", {"patterns": [{"urlPattern": p, "requestStage": "Request"}
                                                                 for p in patterns]})
        else:
            driver.execute_cdp_cmd("Fetch.disable", {})
        driver.get(url)
        loaded_by = time.monotonic() + LOAD_WAIT_SECONDS
        while driver.execute_script("return document.readyState;") != "complete" and time.monotonic() < loaded_by:
            time.sleep(SCROLL_POLL_SECONDS)
        state = lambda: driver.execute_script(  # noqa: E731
            "return [document.documentElement.scrollHeight, document.images.length];")
        previous = state()
        for _ in range(self.settings.max_scrolls):
            driver.execute_script("window.scrollTo(0, document.documentElement.scrollHeight);")
            settle_until = time.monotonic() + SCROLL_SETTLE_SECONDS
            current = state()
            while current == previous and time.monotonic() < settle_until:
                time.sleep(SCROLL_POLL_SECONDS)
                current = state()
            if current == previous:
                break
            previous = current
        return driver.execute_script(_READ_PAGE)

    def close(self) -> None:
        try:
            if self._driver is not None:
                self._driver.quit()
        finally:
            self._driver = None
            if self._proxy is not None:
                self._proxy.close()
                self._proxy = None


def _escape_pattern(text: str) -> str:
    """A robots.txt path as a CDP URL pattern: '*' stays a wildcard, a final '$' is dropped (blocking a little
    more is the safe side), '?' and '\\' are escaped."""
    text = text[:-1] if text.endswith("$") else text
    return text.replace("\\", "\\\\").replace("?", "\\?")


def crawl(start_url: str, fetcher: Fetcher, browser: Browser, settings: HarvestSettings,
          on_skipped_page, keep_going) -> Iterator[RenderedPage]:
    """Render the start page and same-site pages linked from it, breadth first, to `settings.depth` links
    away and at most `settings.max_pages` pages. `on_skipped_page(reason)` counts refused pages;
    `keep_going()` is asked before each page (limits reached)."""
    site = host_key(start_url)
    queue = deque([(normalise_url(start_url), 0)])
    queued = {queue[0][0]}
    rendered = 0
    while queue and rendered < settings.max_pages and keep_going():
        url, depth = queue.popleft()
        try:
            fetcher.check_allowed(url)
        except Skipped as skipped:
            log.info("page %s not visited: %s", url, skipped)
            on_skipped_page(skipped.reason)
            continue
        rules = fetcher.site_rules(url)
        blocked = [origin(url) + path for path in rules.disallowed_paths()]
        with fetcher.pacer.turn(host_key(url), fetcher.delay_for(url)):
            try:
                found = browser.render(url, blocked)
            except FacedeblurError:
                raise
            except Exception as exc:  # a page that times out or crashes the tab: the crawl goes on
                log.warning("page %s could not be rendered: %s", url, str(exc).strip().splitlines()[0][:160]
                            if str(exc).strip() else type(exc).__name__)
                on_skipped_page(HTTP_ERROR)
                continue
        rendered += 1
        final = normalise_url(found.get("url") or url)
        try:
            refuse_unsafe_url(final)
            if host_key(final) != site:
                raise Skipped("off-site", f"redirected to {final}")
            if not fetcher.site_rules(final).allowed(final):
                raise Skipped(ROBOTS, f"redirected to {final}")
        except Skipped as skipped:
            log.info("page %s dropped: %s", url, skipped)
            on_skipped_page(skipped.reason)
            continue
        images = list(dict.fromkeys(normalise_url(u) for u in found["images"] + image_links(found["links"])))
        yield RenderedPage(final, depth, images, found.get("licence"))
        if depth >= settings.depth:
            continue
        for link in found["links"]:
            link = normalise_url(link)
            parts = urlsplit(link)
            if parts.scheme not in ("http", "https") or host_key(link) != site or link in queued:
                continue
            if is_image_name(parts.path):
                continue  # a link to a photo is read as an image by the caller, not rendered as a page
            queued.add(link)
            queue.append((link, depth + 1))


def image_links(links: list[str]) -> list[str]:
    """Links that point straight at a photo file (a gallery thumbnail linking its full-size image)."""
    return [link for link in links if is_image_name(urlsplit(link).path)]
