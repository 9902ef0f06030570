"""Browser tests: ``python app.py --tiny`` on a free loopback port, driven by a real headless
Chromium through Playwright.

Chromium is Debian's (``/usr/bin/chromium``, or ``$MAGEDIT_CHROMIUM``); Playwright's own browser
download is never used. The tests are skipped only when no Chromium can be found. Each visitor is
a browser context of its own (its own Gradio session) at a given viewport. Screenshots (one at the
end of every test, more where a test says) and the server's log go to
``$MAGEDIT_ARTIFACTS/browser`` (default ``test-artifacts/browser`` at the repo root), which CI
keeps.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import shutil
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
from playwright.sync_api import Error as PlaywrightError
from playwright.sync_api import sync_playwright

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
DESKTOP = {"width": 1366, "height": 768}  # the `studio` fixture's visitor


def chromium_path() -> str | None:
    """Debian's Chromium ($MAGEDIT_CHROMIUM, /usr/bin/chromium, or `chromium` on PATH)."""
    for candidate in (os.environ.get("MAGEDIT_CHROMIUM"), "/usr/bin/chromium"):
        if candidate and Path(candidate).is_file() and os.access(candidate, os.X_OK):
            return candidate
    return shutil.which("chromium")


@pytest.fixture(scope="package")
def chromium() -> str:
    """The Chromium to drive; the browser tests are skipped (before any server starts) without
    one."""
    executable = chromium_path()
    if executable is None:
        pytest.skip(
            "no Chromium found ($MAGEDIT_CHROMIUM, /usr/bin/chromium or `chromium` on PATH): "
            "install Debian's chromium (apt-get install chromium)"
        )
    return executable


@pytest.fixture(scope="session")
def artifacts() -> Path:
    """Where screenshots go: $MAGEDIT_ARTIFACTS/browser or test-artifacts/browser."""
    folder = Path(os.environ.get("MAGEDIT_ARTIFACTS") or ROOT / "test-artifacts") / "browser"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@pytest.fixture(scope="package")  # stopped once the browser tests are done
def app_server(chromium, tmp_path_factory, artifacts) -> Iterator[AppServer]:
    """``python app.py --tiny`` for the browser tests; its log is copied to the artifacts."""
    server = AppServer(tmp_path_factory.mktemp("browser-app")).start()
    try:
        yield server
    finally:
        server.stop()
        shutil.copy(server.log_path, artifacts / "server.log")


@pytest.fixture(scope="package")
def browser(chromium):
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(
            executable_path=chromium, args=CHROMIUM_ARGS, headless=True
        )
        try:
            yield launched
        finally:
            launched.close()


@pytest.fixture
def open_studio(browser, app_server, artifacts, request) -> Iterator[Callable[..., Studio]]:
    """``open_studio(viewport, who="")``: a new visitor (a browser context: its own Gradio
    session) on the page. Each is screenshotted when the test ends."""
    opened: list[Studio] = []
    test_name = re.sub(r"[^\w.-]+", "_", request.node.name)

    def open_(viewport: dict[str, int] = DESKTOP, who: str = "") -> Studio:
        context = browser.new_context(viewport=viewport)
        context.set_default_timeout(TIMEOUT_MS)
        # The settings are read through their Copy button.
        context.grant_permissions(["clipboard-read", "clipboard-write"])
        page = context.new_page()
        studio = Studio(page, artifacts, test_name + (f"-{who}" if who else ""))
        opened.append(studio)
        page.goto(app_server.url)
        studio.wait_for_text("magedit-status", "Upload a photo")
        return studio

    yield open_
    for studio in opened:
        try:
            studio.screenshot("end", full_page=True)
            # An edit a failed test left running would hold up the next test's edits; the
            # test's own failure is the one to report, not this clean-up's.
            if studio.button("magedit-cancel").is_enabled():
                with (
                    contextlib.suppress(PlaywrightError),
                    studio.page.expect_response(
                        lambda r: r.url.endswith("/cancel"), timeout=10_000
                    ),
                ):
                    studio.button("magedit-cancel").click()
        finally:
            studio.page.context.close()


@pytest.fixture
def studio(open_studio) -> Studio:
    """One visitor at 1366 x 768."""
    return open_studio()


class Studio:
    """The page as a visitor sees it: its controls found by elem_id and label."""

    def __init__(self, page, artifacts: Path, name: str):
        self.page = page
        self.artifacts = artifacts
        self.name = name

    # ------------------------------------------------------------------------------ reading
    def screenshot(self, what: str, *, full_page: bool = False) -> Path:
        """The viewport (what the visitor sees without scrolling), or the whole page."""
        path = self.artifacts / f"{self.name}-{what}.png"
        self.page.screenshot(path=str(path), full_page=full_page)
        return path

    def save_as(self, file_name: str, *, full_page: bool = False) -> Path:
        """A screenshot under a fixed name (the ones a reviewer looks at first)."""
        path = self.artifacts / file_name
        self.page.screenshot(path=str(path), full_page=full_page)
        return path

    def text(self, elem_id: str) -> str:
        return self.page.locator(f"#{elem_id}").inner_text()

    def status_line(self) -> str:
        """The page's own status line, without Gradio's queue and timer overlay."""
        return self.page.locator("#magedit-status .magedit-status").inner_text()

    def wait_for_text(self, elem_id: str, pattern: str, timeout: float | None = None) -> str:
        """Wait until the element's text matches the regular expression (at most ``timeout``
        ms; the context's default otherwise); return the text."""
        found = self.page.locator(f"#{elem_id}").filter(has_text=re.compile(pattern))
        found.wait_for(timeout=timeout)
        return self.text(elem_id)

    def value(self, elem_id: str) -> str:
        return self.page.locator(
            f"#{elem_id} textarea, #{elem_id} input[type=text]"
        ).first.input_value()

    def box(self, elem_id: str) -> dict[str, float]:
        box = self.page.locator(f"#{elem_id}").bounding_box()
        assert box is not None, f"#{elem_id} is not rendered"
        return box

    def painted(self, locator) -> bool:
        """Whether the element is drawn where it lies: what the browser hits at its centre is
        the element or inside it (not something over it, nor nothing where an ancestor clips
        it). Playwright's is_visible() says yes to both of those."""
        locator.scroll_into_view_if_needed()
        return locator.evaluate(
            """e => {
                const r = e.getBoundingClientRect();
                const hit = document.elementFromPoint(r.x + r.width / 2, r.y + r.height / 2);
                return r.width > 0 && r.height > 0 && hit !== null && e.contains(hit);
            }"""
        )

    def toasts(self) -> list[str]:
        return [toast.inner_text() for toast in self.page.locator(".toast-body").all()]

    def next_frames(self) -> None:
        """Wait until the browser has drawn two more frames (Svelte's pending updates are in)."""
        self.page.evaluate(
            "() => new Promise(r => requestAnimationFrame(() => requestAnimationFrame(r)))"
        )

    # ------------------------------------------------------------------------------ photo
    @property
    def canvas(self):
        """The photo to click on, as an <img>."""
        return self.page.locator("#magedit-canvas img")

    def upload(self, path: Path) -> None:
        """Upload a photo; wait until the canvas shows it with no mask."""
        self.page.locator("#magedit-canvas input[type=file]").set_input_files(str(path))
        self.wait_for_text("magedit-mask", "No mask yet")
        self.canvas.wait_for()

    def choose_example(self, index: int, name: str) -> None:
        """Pick an example; wait until its photo, mask and prompts are in and checked."""
        self.page.locator("#magedit-examples .thumbnail-item").nth(index).click()
        self.wait_for_text("magedit-mask", rf"example's mask \({re.escape(name)}\)")
        self.canvas.wait_for()
        self.wait_for_text("magedit-status", "Ready: the edit guides")

    def click_photo(self, x: float, y: float) -> None:
        """Click the canvas at (x, y), in pixels of the image it shows (the photo itself for a
        photo at most 1024 px long). Gradio draws the image scaled down to fit its box (never
        up), centred, and maps a click back the same way."""
        box = self.canvas.bounding_box()
        width, height = self.canvas.evaluate("img => [img.naturalWidth, img.naturalHeight]")
        scale = min(box["width"] / width, box["height"] / height, 1)
        left = (box["width"] - width * scale) / 2
        top = (box["height"] - height * scale) / 2
        self.canvas.click(position={"x": left + x * scale, "y": top + y * scale})

    def click_and_wait(self, x: float, y: float, clicks: int = 1) -> str:
        """Click the object at (x, y); wait for the mask of ``clicks`` clicks; return its line."""
        self.click_photo(x, y)
        return self.wait_for_text("magedit-mask", rf"from your clicks \({clicks} on the object")

    def canvas_pixels(self) -> np.ndarray:
        """The canvas image as the server sent it: (h, w, 3) uint8 at its natural size."""
        from PIL import Image

        body = self.page.request.get(self.canvas.get_attribute("src")).body()
        return np.asarray(Image.open(io.BytesIO(body)).convert("RGB"))

    # ------------------------------------------------------------------------------ controls
    def fill(self, elem_id: str, text: str) -> None:
        self.page.locator(f"#{elem_id} textarea, #{elem_id} input[type=text]").first.fill(text)

    def open_advanced(self) -> None:
        """Open the Advanced accordion and let its sliders mount: a number typed into a slider
        that is still mounting is overwritten by its initial value (Steps read 20 after 5)."""
        steps = self.page.locator("#magedit-steps input[type=number]")
        if not steps.is_visible():
            self.page.locator("#magedit-advanced").get_by_text("Advanced").first.click()
        steps.wait_for()
        self.next_frames()

    def set_number(self, elem_id: str, value: int) -> None:
        """Type a number into a slider's box; read it back once the page has redrawn."""
        box = self.page.locator(f"#{elem_id} input[type=number]")
        for _ in range(3):
            box.fill(str(value))
            box.press("Enter")
            self.next_frames()
            if box.input_value() == str(value):
                return
        raise AssertionError(f"#{elem_id} reads {box.input_value()!r} after typing {value}")

    def quick(self, steps: int, iterations: int = 1) -> None:
        """Few steps and guidance iterations: an edit of the tiny model in seconds."""
        self.open_advanced()
        self.set_number("magedit-steps", steps)
        self.set_number("magedit-iterations", iterations)

    def button(self, elem_id: str):
        return self.page.locator(f"#{elem_id}")

    def edit(self) -> None:
        self.button("magedit-edit").click()

    def wait_done(self) -> str:
        return self.wait_for_text("magedit-status", r"Done in")

    # ------------------------------------------------------------------------------ watching
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

    def watch_status(self) -> None:
        """Start recording every text the status line shows, with the Cancel button's state
        (``seen_status``)."""
        self.page.evaluate(
            """() => {
                const block = document.getElementById('magedit-status');
                const cancel = document.querySelector('#magedit-cancel');
                const seen = window.__seenStatus = [];
                const record = () => {
                    const entry = [block.innerText, cancel.disabled];
                    const last = seen[seen.length - 1];
                    if (!last || last[0] !== entry[0] || last[1] !== entry[1]) seen.push(entry);
                };
                new MutationObserver(record).observe(block, {
                    subtree: true, childList: true, characterData: true,
                });
                new MutationObserver(record).observe(cancel, { attributes: true });
                record();
            }"""
        )

    def seen_status(self) -> list[tuple[str, bool]]:
        """(status text, Cancel disabled) each time either changed since ``watch_status``."""
        return [tuple(entry) for entry in self.page.evaluate("() => window.__seenStatus")]

    # ------------------------------------------------------------------------------ results
    def settings(self) -> dict:
        """The finished edit's settings (the JSON under "Settings and timings"), as copied by
        its Copy button."""
        block = self.page.locator("#magedit-settings")
        if not block.is_visible():
            self.page.get_by_text("Settings and timings").click()
        block.locator("button[aria-label=Copy]").click()
        return json.loads(self.page.evaluate("() => navigator.clipboard.readText()"))
