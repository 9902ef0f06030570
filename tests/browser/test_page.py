"""The page (magedit/web) in a real browser: its first screen, examples, clicks on the photo at
desktop and phone widths, a streamed edit and its results, Cancel, the queue, errors next to
their control, and user text that is never run as HTML; the file route serves no server file.

The tiny model with few steps (5 to 8, one guidance iteration, 256 pixels) keeps an edit to
seconds on a CPU; the cancelled one has 60 steps so that it is still running when cancelled.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from scipy import ndimage

pytestmark = [pytest.mark.browser, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
PHOTO = ROOT / "assets" / "cat.jpg"
HEIGHT, WIDTH = 300, 451  # PHOTO's size: under 1024 px, the canvas shows it at its own size
EXAMPLE = json.loads((ROOT / "assets" / "examples.json").read_text())[0]  # cat-eyes, on PHOTO
SOURCE = EXAMPLE["source"]  # "a close-up photo of a tabby cat with green eyes"
TARGET = EXAMPLE["target"]  # "... with blue eyes"
PHONE = {"width": 412, "height": 900}  # the `studio` fixture's visitor is at 1366 x 768
XSS = "<img src=x onerror=window.__x=1>"
BAD_WORD_MESSAGE = "edit word 'purple' is not in the target prompt"
# The canvas tints the mask in use red: a pixel's red rises and its green falls by about 80 where
# it is inside (JPEG noise moves them by a few units), and the click is a green dot.
TINT = 25
DOT_RADIUS = 5  # the dot (radius 3) and its white ring


@pytest.fixture(scope="module")
def sam_mask():
    """``sam_mask(x, y)``: the mask the page's Segment Anything gives PHOTO for one click at
    (x, y): the random-weight SAM that ``app.py --tiny`` loads, its best candidate."""
    from magedit import images
    from magedit.segment import Segmenter

    segmenter = Segmenter.tiny()  # the same seed and weights as the server's
    photo = images.load_image(PHOTO)

    def best(x: int, y: int) -> np.ndarray:
        return segmenter.predict(photo, points=[(x, y)], labels=[1], multimask=True)[0].mask

    return best


@pytest.fixture(scope="module")
def target_pixel(sam_mask) -> tuple[int, int]:
    """A pixel of PHOTO whose click gives a mask covering 10 pixels around it: the random model's
    masks are noise, so "the mask contains the clicked pixel" is checked where it should."""
    rows, cols = np.mgrid[:HEIGHT, :WIDTH]
    for y in range(60, HEIGHT - 60, 20):
        for x in range(60, WIDTH - 60, 20):
            disk = (cols - x) ** 2 + (rows - y) ** 2 <= 10**2
            if sam_mask(x, y)[disk].all():
                return x, y
    pytest.fail("the tiny SAM covers no clicked pixel of the photo; pick another photo")


def example_mask() -> np.ndarray:
    """(H, W) bool: the example's mask as its file has it."""
    return np.asarray(Image.open(ROOT / "assets" / EXAMPLE["mask"])) > 0


def tinted(before: np.ndarray, after: np.ndarray) -> np.ndarray:
    """(h, w) bool: the pixels the canvas tints red in ``after`` (the mask in use) that it did
    not in ``before`` (the photo with no mask)."""
    assert before.shape == after.shape, "the canvas changed size"
    diff = after.astype(int) - before.astype(int)
    return diff[..., 0] - diff[..., 1] > TINT


def dot_centre(before: np.ndarray, after: np.ndarray) -> tuple[float, float]:
    """(x, y): the centre of the green dot the canvas draws where the server put the click."""

    def green(image: np.ndarray) -> np.ndarray:
        r, g, b = (image[..., c].astype(int) for c in range(3))
        return (g - r > 80) & (g - b > 50)

    rows, cols = np.nonzero(green(after) & ~green(before))
    assert len(rows) >= 5, "no click dot on the canvas"
    return float(cols.mean()), float(rows.mean())


def inside_viewport(box: dict[str, float], viewport: dict[str, int]) -> bool:
    return (
        box["x"] >= 0
        and box["y"] >= 0
        and box["x"] + box["width"] <= viewport["width"]
        and box["y"] + box["height"] <= viewport["height"]
    )


def nothing_ran(studio) -> None:
    """No edit started: no preview, no result, Cancel disabled, no step on the status line."""
    assert studio.page.locator("#magedit-preview img").count() == 0
    assert studio.page.locator("#magedit-result img").count() == 0
    assert studio.page.locator("#magedit-download a").count() == 0
    assert studio.button("magedit-cancel").is_disabled()
    assert not re.search(r"Step \d|Done|queue", studio.text("magedit-status"))


# ---------------------------------------------------------------------------------- first screen
def test_at_1366x768_edit_is_on_the_first_screen_and_an_example_fills_without_running(studio):
    studio.save_as("first-screen-1366x768.png")
    viewport = studio.page.viewport_size
    assert viewport == {"width": 1366, "height": 768}
    assert inside_viewport(studio.box("magedit-edit"), viewport), studio.box("magedit-edit")
    nothing_ran(studio)

    studio.choose_example(0, EXAMPLE["name"])
    studio.save_as("example-1366x768.png")
    assert inside_viewport(studio.box("magedit-edit"), viewport), studio.box("magedit-edit")
    # The photo, its mask and the prompts are in, as examples.json has them.
    size = studio.canvas.evaluate("img => [img.naturalWidth, img.naturalHeight]")
    assert size == [WIDTH, HEIGHT], size
    assert f"{example_mask().mean():.1%} of the photo" in studio.text("magedit-mask")
    assert studio.value("magedit-source") == EXAMPLE["source"]
    assert studio.value("magedit-target") == EXAMPLE["target"]
    assert studio.value("magedit-words") == ", ".join(EXAMPLE["words"])
    assert studio.value("magedit-negative-word") == EXAMPLE["negative_word"]
    checked = studio.page.locator("#magedit-preset input:checked")
    assert checked.evaluate("input => input.value") == EXAMPLE["preset"]
    # ... and nothing ran.
    nothing_ran(studio)
    assert studio.button("magedit-edit").is_enabled()
    assert studio.toasts() == []


# ---------------------------------------------------------------------------------- clicks
def test_at_412_px_wide_a_click_lands_on_the_intended_pixel(open_studio, sam_mask, target_pixel):
    studio = open_studio(PHONE)
    studio.save_as("first-screen-412x900.png")
    width = studio.page.evaluate("() => document.documentElement.scrollWidth")
    assert width <= PHONE["width"], f"the page is {width} px wide: it scrolls sideways"

    studio.upload(PHOTO)
    before = studio.canvas_pixels()
    assert before.shape == (HEIGHT, WIDTH, 3)
    x, y = target_pixel
    studio.click_and_wait(x, y)
    after = studio.canvas_pixels()
    studio.screenshot("clicked")

    # The server drew the click where it was meant to be: within the rounding of the browser
    # (a click is at a whole CSS pixel, 1.3 photo pixels at this width) and of Gradio (to a
    # whole photo pixel).
    dot_x, dot_y = dot_centre(before, after)
    assert abs(dot_x - x) <= 1.5 and abs(dot_y - y) <= 1.5, ((dot_x, dot_y), (x, y))
    # The mask in use contains the clicked pixel: the ring around the dot is tinted.
    shown = tinted(before, after)
    rows, cols = np.mgrid[: shown.shape[0], : shown.shape[1]]
    distance = np.hypot(cols - x, rows - y)
    ring = (distance > DOT_RADIUS + 1) & (distance <= 9)
    assert shown[ring].mean() > 0.95, f"{shown[ring].mean():.0%} of the ring is in the mask"
    # ... and it is Segment Anything's mask for a click there, pixel for pixel away from its
    # edges (JPEG bleeds the red outline a pixel or two outwards). The random model's masks
    # hardly move with the click: where the click landed is shown by the dot, above.
    expected = sam_mask(x, y)
    edges = ndimage.binary_dilation(expected, iterations=2) & ~ndimage.binary_erosion(
        expected, iterations=2
    )
    judged = (distance > DOT_RADIUS + 1) & ~edges
    agreement = (shown == expected)[judged].mean()
    assert agreement > 0.99, f"the shown mask agrees with the click's on {agreement:.1%}"


def test_an_example_then_a_click_the_edit_reports_the_clicked_masks_pixels(
    studio, sam_mask, target_pixel
):
    studio.choose_example(0, EXAMPLE["name"])
    example_pixels = int(example_mask().sum())
    x, y = target_pixel
    line = studio.click_and_wait(x, y)
    assert "Mask in use: from your clicks" in line, line
    shown_share = re.search(r"· ([\d.]+)% of the photo", line).group(1)
    studio.quick(steps=5)
    studio.edit()
    studio.wait_done()
    settings = studio.settings()
    pixels = settings["regions"][0]["pixels"]
    assert f"{100 * pixels / (HEIGHT * WIDTH):.1f}" == shown_share, (pixels, line)
    assert abs(pixels - example_pixels) > 0.5 * example_pixels, "the example's mask was used"
    clicked = int(sam_mask(x, y).sum())  # the same model, in this process
    assert abs(pixels - clicked) <= 0.02 * clicked, (pixels, clicked)
    assert settings["config"]["steps"] == 5 and settings["config"]["max_iter"] == 1


# ---------------------------------------------------------------------------------- an edit
def test_an_edit_streams_previews_then_shows_before_after_and_a_named_download(studio):
    studio.choose_example(0, EXAMPLE["name"])
    studio.quick(steps=8)
    studio.watch_images("magedit-preview")
    studio.watch_status()
    studio.edit()
    status = studio.wait_done()
    studio.save_as("result.png", full_page=True)

    # Every denoising step is shown: several distinct previews arrived while it ran.
    assert len(studio.seen_images("magedit-preview")) >= 3, studio.seen_images("magedit-preview")
    seen = studio.seen_status()
    steps = [text for text, _ in seen if re.search(r"Step \d+/8", text)]
    assert steps, seen
    # Cancel was enabled while the steps ran, and is disabled again now.
    assert all(not disabled for text, disabled in seen if re.search(r"Step \d+/8", text)), seen
    studio.page.wait_for_function("() => document.querySelector('#magedit-cancel').disabled")
    assert studio.button("magedit-edit").is_enabled()
    assert "seed" not in status.lower()
    # Before and after: the photo and the result, both at the photo's size.
    images = studio.page.locator("#magedit-result img")
    assert images.count() == 2
    sizes = images.evaluate_all("imgs => imgs.map(i => [i.naturalWidth, i.naturalHeight])")
    assert sizes == [[WIDTH, HEIGHT], [WIDTH, HEIGHT]], sizes
    # The download is named after the edit: its words and the word after them.
    link = studio.page.locator("#magedit-download a[download]")
    assert re.fullmatch(r"blue-eyes-[0-9a-f]{4}\.png", link.get_attribute("download"))
    assert re.search(r"blue-eyes-[0-9a-f]{4}\s*\.png", studio.text("magedit-download"))
    response = studio.page.request.get(link.get_attribute("href"))
    assert response.status == 200 and response.body()[:4] == b"\x89PNG"


def test_after_two_edits_the_charts_show_two_series_with_their_points(studio):
    studio.choose_example(0, EXAMPLE["name"])
    studio.quick(steps=6)
    studio.edit()
    studio.wait_done()
    studio.page.wait_for_function("() => document.querySelector('#magedit-cancel').disabled")
    studio.edit()
    studio.wait_for_text("magedit-status", "Done in .*Reused this session's inversion")

    series = studio.page.locator("#magedit-charts polyline").evaluate_all(
        """lines => lines.map(line => {
            const style = getComputedStyle(line);
            const box = line.getBoundingClientRect();
            const name = line.dataset.series;
            const dots = [...document.querySelectorAll('#magedit-charts circle')]
                .filter(c => c.dataset.series === name);
            return {
                name, stroke: style.stroke, width: parseFloat(style.strokeWidth),
                visible: style.visibility === 'visible' && style.display !== 'none'
                    && parseFloat(style.opacity) > 0 && box.width > 0,
                points: line.points.length, dots: dots.length,
            };
        })"""
    )
    assert [s["name"] for s in series] == ["loss", "in-mask ratio"], series
    for line in series:
        assert line["stroke"] not in ("none", "", "rgba(0, 0, 0, 0)"), line
        assert line["width"] > 0 and line["visible"], line
        assert line["points"] == 6 and line["dots"] == 6, line  # one per step of the last edit
    assert series[0]["stroke"] != series[1]["stroke"], series
    chart = studio.box("magedit-charts")
    assert chart["width"] > 200 and chart["height"] > 50, chart


def start_a_long_edit(studio) -> None:
    """An edit of 60 steps (far from done when it is cancelled), seen running."""
    studio.choose_example(0, EXAMPLE["name"])
    studio.quick(steps=60)
    assert studio.button("magedit-cancel").is_disabled()
    studio.edit()
    studio.wait_for_text("magedit-status", r"Step ([2-9]|\d\d)/60")


def test_cancel_is_enabled_only_while_an_edit_runs_and_stops_it(studio, target_pixel):
    cancel, edit = studio.button("magedit-cancel"), studio.button("magedit-edit")
    start_a_long_edit(studio)
    assert cancel.is_enabled() and edit.is_disabled()
    studio.save_as("running-edit.png", full_page=True)
    # Clicks do not wait behind the running edit (they skip the queue).
    studio.click_and_wait(*target_pixel)
    assert re.search(r"Step \d+/60", studio.text("magedit-status"))

    cancel.click()
    # The page answers at once; a late update of the cancelled edit must not overwrite it.
    studio.wait_for_text("magedit-status", "Cancelled", timeout=15_000)
    assert cancel.is_disabled() and edit.is_enabled()
    studio.next_frames()
    status = studio.text("magedit-status")
    assert "Cancelled" in status and "Error" not in status, status
    assert studio.page.locator("#magedit-result img").count() == 0
    assert studio.toasts() == []


def test_edit_runs_again_when_pressed_right_after_cancel(studio):
    start_a_long_edit(studio)
    studio.button("magedit-cancel").click()
    studio.wait_for_text("magedit-status", "Cancelled", timeout=15_000)
    # "Cancelled. Press Edit to run it again.": a visitor does so at once.
    studio.edit()
    studio.wait_for_text("magedit-status", "Starting|Editing|Inverting|Step", timeout=15_000)
    # The cancelled edit let go of the model: the new one runs its steps.
    studio.wait_for_text("magedit-status", r"Step \d+/60")
    studio.button("magedit-cancel").click()
    studio.wait_for_text("magedit-status", "Cancelled", timeout=15_000)


# ---------------------------------------------------------------------------------- the queue
def prepare_same_photo(studio) -> None:
    """Upload the example's photo (a file, not the example), mark it and describe it as the
    example does: an edit with the example's inversion key."""
    studio.upload(PHOTO)
    studio.click_and_wait(120, 200)
    studio.fill("magedit-source", SOURCE)
    studio.fill("magedit-target", TARGET)
    studio.wait_for_text("magedit-status", "Ready: the edit guides “blue”")


def test_the_status_line_shows_the_queue_position_while_an_edit_waits(open_studio):
    first, second = open_studio(who="first"), open_studio(who="second")
    first.choose_example(0, EXAMPLE["name"])
    first.quick(steps=20)  # long enough for the second to wait in line behind it
    second.choose_example(1, "coffee-saucer")
    second.quick(steps=5)

    first.edit()
    first.wait_for_text("magedit-status", r"Step \d+/20")
    second.edit()
    second.wait_for_text("magedit-status", r"Waiting for the GPU: 1 edit ahead of yours")
    second.save_as("queued.png")
    position = second.page.locator("#magedit-status").get_by_text(re.compile(r"1 edit ahead"))
    assert second.painted(position), "the place in line is in the page but not drawn"
    # While it waits, Edit is off and Cancel on: Cancel leaves the line.
    assert second.page.locator("#magedit-edit").is_disabled()
    assert second.page.locator("#magedit-cancel").is_enabled()
    first.wait_done()
    second.wait_done()


def test_a_second_visitor_with_the_same_photo_is_not_told_reused(open_studio):
    first, second = open_studio(who="first"), open_studio(who="second")
    first.choose_example(0, EXAMPLE["name"])
    first.quick(steps=5)
    prepare_same_photo(second)  # the same photo, uploaded, described the same way
    second.quick(steps=5)
    first.edit()
    first.wait_done()

    second.watch_status()
    second.edit()
    second.wait_done()
    said = [text for text, _ in second.seen_status()]
    assert not [text for text in said if "reused" in text.lower()], said
    settings = second.settings()
    assert settings["inversion"] == "direct", settings["inversion"]
    # It did use the first visitor's inversion: this edit spent no time inverting.
    assert settings["timings (s)"]["inversion"] == 0, settings["timings (s)"]  # not this edit's


# ---------------------------------------------------------------------------------- errors
def describe(studio, source: str = SOURCE, target: str = TARGET) -> None:
    """Upload the photo, click it and type the prompts; wait for the suggested words."""
    studio.upload(PHOTO)
    studio.click_and_wait(120, 200)
    studio.fill("magedit-source", source)
    studio.fill("magedit-target", target)
    # The words are suggested from the prompts once both are typed; nothing overwrites them
    # after that.
    studio.page.wait_for_function(
        "() => document.querySelector('#magedit-words textarea').value === 'blue'"
    )


def test_a_bad_edit_word_shows_an_error_next_to_the_control(studio):
    describe(studio)
    studio.fill("magedit-words", "purple")  # not a word of the target prompt
    # Checked as it is typed, on the status line.
    studio.wait_for_text("magedit-status", "purple")
    line = studio.page.locator("#magedit-status .magedit-status")
    assert "magedit-error" in line.get_attribute("class")
    assert f"Edit words: {BAD_WORD_MESSAGE}" in studio.status_line()

    for _ in range(3):  # pressed again and again: one message, no toasts piling up
        studio.edit()
        message = studio.page.locator("#magedit-words div.validation-error")
        message.wait_for()
    studio.save_as("error.png")
    assert message.count() == 1
    assert BAD_WORD_MESSAGE in message.inner_text()
    # Next to the control: inside the Edit words block, which sits under the target prompt.
    words, target = studio.box("magedit-words"), studio.box("magedit-target")
    shown = message.bounding_box()
    assert words["y"] <= shown["y"] and shown["y"] + shown["height"] <= words["y"] + words["height"]
    assert words["y"] >= target["y"] + target["height"], (words, target)
    assert studio.page.locator("div.validation-error").count() == 1
    assert studio.toasts() == []
    nothing_ran(studio)

    studio.fill("magedit-words", "blue")
    message.wait_for(state="detached")
    studio.wait_for_text("magedit-status", "Ready: the edit guides “blue”")
    assert studio.page.locator("div.validation-error").count() == 0


def test_html_in_a_prompt_is_shown_as_text_never_run(studio):
    describe(studio, f"{SOURCE} {XSS}", f"{TARGET} {XSS}")
    # The status line (an HTML block) quotes the target prompt when a word is not in it.
    studio.fill("magedit-words", "purple")
    assert XSS in studio.wait_for_text("magedit-status", "purple")
    # The message next to the control quotes the word.
    studio.fill("magedit-words", f"blue, {XSS}")  # in both prompts: not a word to guide
    studio.wait_for_text("magedit-status", "onerror")
    studio.edit()
    message = studio.page.locator("#magedit-words div.validation-error")
    message.wait_for()
    assert XSS in message.inner_text()
    # And a finished edit, whose settings show the prompts.
    studio.fill("magedit-words", "blue")
    message.wait_for(state="detached")
    studio.quick(steps=5)
    studio.edit()
    studio.wait_done()
    settings = studio.settings()
    assert settings["target prompt"].endswith(XSS)
    assert XSS in studio.text("magedit-settings")
    assert studio.page.evaluate("typeof window.__x") == "undefined"
    assert studio.page.locator("[onerror]").count() == 0


# ---------------------------------------------------------------------------------- files
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
CONTENT = {"passwd": "root:x:0:", "app.py": "def main("}


def test_the_file_route_refuses_files_outside_the_app(studio, app_server, refused_paths):
    leaked = []
    for path in refused_paths:
        for route in ("gradio_api/file=", "file="):
            response = studio.page.request.get(app_server.url + route + path)
            body = response.text()
            marker = CONTENT["passwd"] if "passwd" in path else CONTENT["app.py"]
            if response.status == 200 or marker in body:
                leaked.append(f"{route}{path}: {response.status} {body[:60]!r}")
    assert leaked == []


def test_the_file_route_serves_the_page_its_own_images(studio):
    """The refusals above are not a broken route: the uploaded photo's URL is served."""
    studio.upload(PHOTO)
    url = studio.canvas.get_attribute("src")
    assert "/gradio_api/file=" in url
    response = studio.page.request.get(url)
    assert response.status == 200 and response.body()[:3] in (b"\xff\xd8\xff", b"\x89PN")
