"""Browser tests: ``python app.py --tiny`` on a free loopback port, driven by a real headless
Chromium through Playwright.

Chromium is Debian's (``/usr/bin/chromium``, or ``$MAGEDIT_CHROMIUM``); Playwright's own browser
download is never used. The tests are skipped only when no Chromium can be found. Screenshots
(one at the end of every test, more where a test says) and the server's log go to
``$MAGEDIT_ARTIFACTS`` (default ``test-artifacts/`` at the repo root), which CI keeps.
"""

from __future__ import annotations

import io
import os
import re
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))  # benchmarks/ (the server helper) lives at the repo root

from benchmarks.load import AppServer  # noqa: E402

CHROMIUM_ARGS = [
    "--no-sandbox",  # CI runs as root, where Chromium's sandbox cannot start
    "--headless",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
TIMEOUT_MS = 60_000  # the CPUs are shared: generous waits, never asserted on


def chromium_path() -> str | None:
    """Debian's Chromium ($MAGEDIT_CHROMIUM, /usr/bin/chromium, or `chromium` on PATH)."""
    for candidate in (os.environ.get("MAGEDIT_CHROMIUM"), "/usr/bin/chromium"):
        if candidate and Path(candidate).is_file() and os.access(candidate, os.X_OK):
            return candidate
    return shutil.which("chromium")


@pytest.fixture(scope="session")
def artifacts() -> Path:
    """Where screenshots go: $MAGEDIT_ARTIFACTS or test-artifacts/ at the repo root."""
    folder = Path(os.environ.get("MAGEDIT_ARTIFACTS") or ROOT / "test-artifacts") / "browser"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@pytest.fixture(scope="package")  # stopped once the browser tests are done
def app_server(tmp_path_factory, artifacts) -> Iterator[AppServer]:
    """``python app.py --tiny`` for the browser tests; its log is copied to the artifacts."""
    server = AppServer(tmp_path_factory.mktemp("browser-app")).start()
    try:
        yield server
    finally:
        server.stop()
        shutil.copy(server.log_path, artifacts / "server.log")


@pytest.fixture(scope="package")
def browser_context(tmp_path_factory):
    executable = chromium_path()
    if executable is None:
        pytest.skip("no Chromium: install Debian's chromium (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(tmp_path_factory.mktemp("chromium-profile")),  # a fresh user-data-dir
            executable_path=executable,
            args=CHROMIUM_ARGS,
            headless=True,
            viewport={"width": 1280, "height": 1600},
        )
        context.set_default_timeout(TIMEOUT_MS)
        try:
            yield context
        finally:
            context.close()


@pytest.fixture
def studio(browser_context, app_server, artifacts, request) -> Iterator[Studio]:
    """A fresh tab on the page (a new Gradio session), screenshotted when the test ends."""
    page = browser_context.new_page()
    page.goto(app_server.url)
    page.locator("#magedit-status").wait_for()
    studio = Studio(page, artifacts, re.sub(r"[^\w.-]+", "_", request.node.name))
    try:
        yield studio
    finally:
        studio.screenshot("end")
        page.close()


class Studio:
    """The page as a user sees it: its controls found by elem_id and label."""

    def __init__(self, page, artifacts: Path, name: str):
        self.page = page
        self.artifacts = artifacts
        self.name = name

    def screenshot(self, what: str) -> Path:
        path = self.artifacts / f"{self.name}-{what}.png"
        self.page.screenshot(path=str(path), full_page=True)
        return path

    def text(self, elem_id: str) -> str:
        return self.page.locator(f"#{elem_id}").inner_text()

    def wait_for_text(self, elem_id: str, pattern: str) -> str:
        """Wait until the element's text matches the regular expression; return the text."""
        self.page.locator(f"#{elem_id}").filter(has_text=re.compile(pattern)).wait_for()
        return self.text(elem_id)

    def upload(self, path: Path) -> None:
        """Upload the photo and wait until Segment Anything has embedded it."""
        self.page.locator("#magedit-image input[type=file]").set_input_files(str(path))
        self.wait_for_text("magedit-mask-status", r"Ready \(")

    @property
    def clickable(self):
        return self.page.locator("#magedit-clickable img")

    def click_photo(self, fx: float, fy: float) -> None:
        """Click the photo to segment at (fx, fy), fractions of its width and height. The image
        is drawn scaled down to fit its box, never up, and centred (as Gradio maps clicks)."""
        image = self.clickable
        box = image.bounding_box()
        width, height = image.evaluate("img => [img.naturalWidth, img.naturalHeight]")
        scale = min(box["width"] / width, box["height"] / height, 1)
        left = (box["width"] - width * scale) / 2
        top = (box["height"] - height * scale) / 2
        image.click(position={"x": left + fx * width * scale, "y": top + fy * height * scale})

    def clickable_pixels(self) -> np.ndarray:
        """The photo to click on as shown: (h, w, 3) uint8 from a screenshot of the element."""
        from PIL import Image

        return np.asarray(Image.open(io.BytesIO(self.clickable.screenshot())).convert("RGB"))

    def fill(self, elem_id: str, text: str) -> None:
        self.page.locator(f"#{elem_id} textarea, #{elem_id} input[type=text]").first.fill(text)

    def set_number(self, elem_id: str, value: float) -> None:
        """Type a number into a slider's or a number field's box, and check that it stayed.

        A slider in an accordion that has just opened can be re-rendered with its old value
        right after the typing (seen in CI: Steps read 20 after 60 was typed), so the value is
        read back half a second later and typed again if it did not stay.
        """
        box = self.page.locator(f"#{elem_id} input[type=number]").first
        for _ in range(4):
            box.fill(str(value))
            box.press("Enter")
            self.page.wait_for_timeout(500)
            if float(box.input_value() or "nan") == float(value):
                return
        raise AssertionError(f"#{elem_id} reads {box.input_value()!r} after typing {value}")

    def open_advanced(self) -> None:
        if not self.page.locator("#magedit-steps").is_visible():
            self.page.locator("#magedit-advanced").get_by_text("Advanced").first.click()
        self.page.locator("#magedit-steps").wait_for()

    def watch_images(self, elem_id: str) -> None:
        """Start recording every distinct image URL the element shows (``seen_images``)."""
        self.page.evaluate(
            """(id) => {
                const block = document.getElementById(id);
                const seen = (window.__seenImages = window.__seenImages || {})[id] = [];
                const record = () => {
                    for (const img of block.querySelectorAll('img'))
                        if (img.src && !seen.includes(img.src)) seen.push(img.src);
                };
                new MutationObserver(record).observe(block, {
                    subtree: true, childList: true, attributes: true, attributeFilter: ['src'],
                });
                record();
            }""",
            elem_id,
        )

    def seen_images(self, elem_id: str) -> list[str]:
        return self.page.evaluate("(id) => window.__seenImages[id]", elem_id)

    def edit(self) -> None:
        self.page.locator("#magedit-edit").click()

    def error_toasts(self) -> list[str]:
        return [toast.inner_text() for toast in self.page.locator(".toast-body").all()]
