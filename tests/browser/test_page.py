"""The page in a real browser (issue 4: upload, click to segment, prompts, streamed edit, cancel,
readable errors; issue 6: user text is never run as HTML, the file route serves no server file).

Tiny settings (10 steps, 1 guidance iteration, 256 pixels) keep an edit to seconds on a CPU.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.browser

ROOT = Path(__file__).resolve().parents[2]
PHOTO = ROOT / "assets" / "cat.jpg"
SOURCE = "a close-up photo of a tabby cat with green eyes"
TARGET = "a close-up photo of a tabby cat with blue eyes"
XSS = "<img src=x onerror=window.__x=1>"


@pytest.fixture(scope="module")
def photo(tmp_path_factory) -> Path:
    """A photo from assets/, or a generated one where the checkout has none."""
    if PHOTO.exists():
        return PHOTO
    from benchmarks.load import write_inputs

    return write_inputs(tmp_path_factory.mktemp("photo"))[0]


def changed_share(before: np.ndarray, after: np.ndarray) -> float:
    """Share of the pixels whose colour changed by more than JPEG noise (any channel > 24)."""
    assert before.shape == after.shape, "the shown photo changed size"
    return float((np.abs(before.astype(int) - after.astype(int)).max(-1) > 24).mean())


def prepare(studio, photo: Path, *, steps: int = 10, clicks: int = 1) -> None:
    """Upload, click the middle of the photo, type the prompts, pick quick settings."""
    studio.upload(photo)
    for n, (fx, fy) in enumerate([(0.5, 0.5), (0.3, 0.4)][:clicks], start=1):
        studio.click_photo(fx, fy)
        studio.wait_for_text("magedit-mask-status", rf"from {n} object")
    studio.fill("magedit-source", SOURCE)
    studio.fill("magedit-target", TARGET)
    studio.page.wait_for_function(
        "() => document.querySelector('#magedit-words textarea, #magedit-words input').value"
        " === 'blue'"
    )
    studio.set_number("magedit-iterations", 1)
    studio.open_advanced()
    studio.set_number("magedit-steps", steps)


def test_upload_click_twice_and_the_mask_overlay_changes_each_time(studio, photo):
    studio.upload(photo)
    shown = [studio.clickable_pixels()]
    for n, (fx, fy) in enumerate([(0.5, 0.5), (0.3, 0.4)], start=1):
        studio.click_photo(fx, fy)
        status = studio.wait_for_text("magedit-mask-status", rf"from {n} object")
        assert re.search(r"Mask \d+ of \d+ \(score", status), status
        shown.append(studio.clickable_pixels())
        studio.screenshot(f"click{n}")
    # The overlay tints the mask: each click repaints much more than its dot (about 0.1 %).
    assert changed_share(shown[0], shown[1]) > 0.01
    assert changed_share(shown[1], shown[2]) > 0.01


def test_an_edit_streams_previews_then_shows_the_result(studio, photo):
    prepare(studio, photo, clicks=2)
    studio.watch_images("magedit-preview")
    studio.edit()
    status = studio.wait_for_text("magedit-status", r"Done")
    studio.screenshot("done")
    previews = studio.seen_images("magedit-preview")
    # Ten denoising steps, each shown: at least two distinct previews arrived while it ran.
    assert len(previews) >= 2, previews
    assert "seed" not in status.lower()
    before_after = studio.page.locator("#magedit-result img")
    assert before_after.count() >= 2  # the slider's before and after images
    sizes = before_after.evaluate_all("imgs => imgs.map(i => [i.naturalWidth, i.naturalHeight])")
    assert all(w > 0 and h > 0 for w, h in sizes), sizes
    assert re.search(r"blue-\w+\s*\.png", studio.text("magedit-download"))


def test_clicks_answer_during_an_edit_and_cancel_frees_the_edit_button(studio, photo):
    prepare(studio, photo, steps=60)  # long enough to be cancelled mid-run
    studio.watch_images("magedit-preview")
    studio.edit()
    studio.wait_for_text("magedit-status", r"Step ([2-9]|\d\d)/60")  # running, far from done
    # Clicks do not wait behind the running edit (they skip the queue).
    studio.click_photo(0.3, 0.4)
    studio.wait_for_text("magedit-mask-status", "from 2 object")
    assert re.search(r"Step \d+/60", studio.text("magedit-status"))
    studio.page.locator("#magedit-cancel").click()
    # Wait for the page to say so; what it said is asserted last, after the Edit button is tried.
    said_cancelled = True
    try:
        studio.page.locator("#magedit-status").filter(
            has_text=re.compile("cancel", re.IGNORECASE)
        ).wait_for(timeout=15_000)
    except Exception:  # noqa: BLE001 - Playwright's TimeoutError: no message came
        said_cancelled = False
    studio.screenshot("cancelled")
    status_after_cancel = studio.text("magedit-status")
    assert "Done" not in status_after_cancel

    studio.set_number("magedit-steps", 10)
    studio.edit()
    assert "Done" in studio.wait_for_text("magedit-status", r"Done")
    assert said_cancelled, (
        f"after Cancel the status still reads {status_after_cancel!r}; it should say the edit "
        "was cancelled"
    )


def test_a_bad_prompt_gets_a_readable_error(studio, photo):
    prepare(studio, photo)
    studio.fill("magedit-words", "purple")  # not a word of the target prompt
    inline = studio.wait_for_text("magedit-prompt-status", r"purple")
    assert "'purple' is not in the target prompt" in inline
    studio.edit()
    studio.page.locator(".toast-body").first.wait_for()
    toasts = studio.error_toasts()
    assert any("'purple' is not in the target prompt" in toast for toast in toasts), toasts
    for toast in toasts:
        assert "Traceback" not in toast and str(ROOT) not in toast and "/tmp/" not in toast
    assert "Done" not in studio.text("magedit-status")


def test_html_in_a_prompt_is_shown_as_text_never_run(studio, photo):
    studio.upload(photo)
    studio.click_photo(0.5, 0.5)
    studio.wait_for_text("magedit-mask-status", "from 1 object")
    studio.fill("magedit-source", f"{SOURCE} {XSS}")
    studio.fill("magedit-target", f"{TARGET} {XSS}")
    studio.set_number("magedit-iterations", 1)
    studio.open_advanced()
    studio.set_number("magedit-steps", 10)
    # A message that quotes the prompt: inline, then as the Edit button's error.
    studio.fill("magedit-words", "purple")
    assert XSS in studio.wait_for_text("magedit-prompt-status", "purple")
    studio.edit()
    studio.page.locator(".toast-body").first.wait_for()
    assert any(XSS in toast for toast in studio.error_toasts())
    # And a finished edit, whose settings show the prompts.
    studio.fill("magedit-words", "blue")
    studio.edit()
    studio.wait_for_text("magedit-status", "Done")
    studio.page.get_by_text("Settings and timings").click()
    assert XSS in studio.wait_for_text("magedit-settings", "onerror")
    studio.screenshot("rendered")
    assert studio.page.evaluate("typeof window.__x") == "undefined"
    assert studio.page.locator("[onerror]").count() == 0


@pytest.fixture(scope="module")
def refused_paths(app_server) -> list[str]:
    gradio_cache = app_server.workdir / "gradio"
    return [
        "/etc/passwd",
        "%2Fetc%2Fpasswd",
        "..%2F..%2F..%2F..%2F..%2Fetc%2Fpasswd",
        f"{gradio_cache}/../../../../../etc/passwd",
        f"{gradio_cache}/..%2F..%2F..%2F..%2F..%2Fetc%2Fpasswd",
        "app.py",
        "./app.py",
        "../main/app.py",
        "%2e%2e%2fapp.py",
        f"{ROOT}/app.py",
        "assets/../app.py",
        f"{ROOT}/assets/../app.py",
        f"{ROOT}/assets/%2e%2e/app.py",
        f"{ROOT}/assets/..%2Fapp.py",
    ]


# What the refused files hold: a response containing this leaked the file.
CONTENT = {"passwd": "root:x:0:", "app.py": "def build_demo("}


def test_the_file_route_refuses_files_outside_the_app(browser_context, app_server, refused_paths):
    leaked = []
    for path in refused_paths:
        for route in ("gradio_api/file=", "file="):
            response = browser_context.request.get(app_server.url + route + path)
            body = response.text()
            marker = CONTENT["passwd"] if "passwd" in path else CONTENT["app.py"]
            if response.status == 200 or marker in body:
                leaked.append(f"{route}{path}: {response.status} {body[:60]!r}")
    assert leaked == []


def test_the_file_route_serves_the_page_its_own_images(studio, photo):
    """The refusals above are not a broken route: the uploaded photo's URL is served."""
    studio.upload(photo)
    url = studio.clickable.get_attribute("src")
    assert "/gradio_api/file=" in url
    response = studio.page.request.get(url)
    assert response.status == 200 and response.body()[:3] in (b"\xff\xd8\xff", b"\x89PN")
