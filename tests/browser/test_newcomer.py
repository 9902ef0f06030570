"""What a newcomer hit in the first ten minutes on the page (issue 22, items 1, 2, 3, 5 and 7),
each tried again as they tried it, at 1366 x 768 and at 412 px wide, in a real Chromium. The
screenshots each test saves are the ones looked at (in $MAGEDIT_ARTIFACTS/browser)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytestmark = [pytest.mark.browser, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = json.loads((ROOT / "assets" / "examples.json").read_text())[0]  # cat eyes: green → blue
PHOTO = ROOT / "assets" / "cat.jpg"
PHONE = {"width": 412, "height": 900}


def on_screen(box: dict[str, float], viewport: dict[str, int]) -> bool:
    return box["y"] >= 0 and box["y"] + box["height"] <= viewport["height"]


def test_a_file_that_is_not_an_image_says_so_in_words(studio, tmp_path):
    """Item 1: an HTML page named .png showed "[object Object]" under the photo."""
    bad = tmp_path / "notes.png"
    bad.write_text("<html><body>my notes</body></html>")
    studio.page.locator("#magedit-canvas input[type=file]").set_input_files(str(bad))
    line = studio.wait_for_text("magedit-mask", "Cannot use this file")
    studio.save_as("newcomer-1-not-an-image.png")
    assert "not an image that can be read" in line
    assert "Cannot use this file" in studio.status_line()
    assert "[object Object]" not in studio.page.locator("body").inner_text()


def test_filled_in_words_follow_the_prompts_until_typed(studio):
    """Item 2: after the example's prompts became blue -> purple the negative word stayed
    "green" and the edit was refused."""
    studio.choose_example(0, EXAMPLE["name"])
    assert (studio.value("magedit-words"), studio.value("magedit-negative-word")) == (
        "blue",
        "green",
    )
    studio.fill("magedit-source", "a close-up photo of a tabby cat with blue eyes")
    studio.fill("magedit-target", "a close-up photo of a tabby cat with purple eyes")
    studio.page.wait_for_function(
        "() => document.querySelector('#magedit-negative-word input, "
        "#magedit-negative-word textarea').value === 'blue'"
    )
    assert studio.value("magedit-words") == "purple"
    studio.wait_for_text("magedit-status", "Ready: the edit guides “purple”")
    studio.save_as("newcomer-2-words-follow.png")
    # Typed by the visitor: it stays when the prompts change again.
    studio.fill("magedit-negative-word", "cat")
    studio.fill("magedit-target", "a close-up photo of a tabby cat with red eyes")
    studio.page.wait_for_function(
        "() => document.querySelector('#magedit-words input, #magedit-words textarea')"
        ".value === 'red'"
    )
    assert studio.value("magedit-negative-word") == "cat"


def test_with_no_mask_the_status_line_asks_for_one(studio):
    """Item 3: with no mask the status line said "Ready ... Press Edit", before and after the
    refusal."""
    studio.upload(PHOTO)
    studio.fill("magedit-source", EXAMPLE["source"])
    studio.fill("magedit-target", EXAMPLE["target"])
    said = studio.wait_for_text("magedit-status", "click the object")
    assert "Press Edit" not in said
    studio.edit()
    studio.page.locator("#magedit-canvas .validation-error").first.wait_for()
    studio.next_frames()
    studio.save_as("newcomer-3-no-mask.png")
    assert "Press Edit" not in studio.status_line()
    assert "click the object" in studio.status_line()


def test_at_1366x768_errors_and_results_stay_on_the_first_screen(studio):
    """Item 5: an error pushed Edit and the status line below the fold; the results sat below
    it; the previous result stayed on screen while a new edit streamed."""
    viewport = studio.page.viewport_size
    studio.choose_example(0, EXAMPLE["name"])
    studio.fill("magedit-words", "purple")
    studio.wait_for_text("magedit-status", "Edit words: edit word 'purple'")
    studio.edit()
    studio.page.locator("#magedit-words .validation-error").first.wait_for()
    studio.next_frames()
    studio.save_as("newcomer-5-error-1366x768.png")
    for elem_id in ("magedit-edit", "magedit-status", "magedit-words"):
        assert on_screen(studio.box(elem_id), viewport), (elem_id, studio.box(elem_id))

    studio.fill("magedit-words", "blue")
    studio.quick(steps=6)
    studio.edit()
    studio.wait_done()
    studio.page.locator("#magedit-result img").first.wait_for()
    studio.page.evaluate("() => window.scrollTo(0, 0)")
    studio.next_frames()
    studio.save_as("newcomer-5-result-1366x768.png")
    for elem_id in ("magedit-result", "magedit-download", "magedit-use-as-input"):
        assert on_screen(studio.box(elem_id), viewport), (elem_id, studio.box(elem_id))
    # The next edit: the old result leaves the screen as soon as it starts.
    studio.watch_status()
    studio.edit()
    studio.page.locator("#magedit-result").wait_for(state="hidden")
    studio.wait_done()
    studio.page.locator("#magedit-result img").first.wait_for()


def test_at_412_px_the_steps_edit_captions_and_charts_fit_a_phone(open_studio):
    """Item 7: on a phone the four steps took a line each, Edit was 1.5 screens down, the
    examples' captions were cut and the charts' labels were tiny."""
    studio = open_studio(PHONE)
    page = studio.page
    assert page.locator(".magedit-howto").is_hidden()
    assert page.locator(".magedit-howto-short").is_visible()
    short = page.locator(".magedit-howto-short").bounding_box()
    assert short["height"] < 40, short  # one line
    studio.choose_example(0, EXAMPLE["name"])
    studio.save_as("newcomer-7-phone.png")
    # Edit, Cancel and the status line are on the screen wherever the visitor has scrolled.
    for scroll in (0, 600, 1200):
        page.evaluate(f"() => window.scrollTo(0, {scroll})")
        studio.next_frames()
        assert on_screen(studio.box("magedit-edit"), PHONE), (scroll, studio.box("magedit-edit"))
        assert studio.painted(studio.button("magedit-edit"))
    # The examples' captions are whole.
    cut = page.locator("#magedit-examples .caption-label").evaluate_all(
        "labels => labels.filter(l => l.scrollWidth > l.clientWidth || "
        "l.scrollHeight > l.clientHeight + 1).map(l => l.innerText)"
    )
    assert cut == [], cut
    # The charts' labels are at least 11 px high, one chart under the other.
    studio.quick(steps=5)
    studio.edit()
    studio.wait_done()
    page.locator("#magedit-charts").scroll_into_view_if_needed()
    studio.next_frames()
    studio.screenshot("charts")
    heights = page.locator(".magedit-chart text").evaluate_all(
        "texts => texts.map(t => t.getBoundingClientRect().height)"
    )
    assert heights and min(heights) >= 11, heights
    loss, ratio = (page.locator(f"#magedit-chart-{n}").bounding_box() for n in ("loss", "ratio"))
    assert ratio["y"] >= loss["y"] + loss["height"] - 1, (loss, ratio)


def test_the_mask_stands_out_on_a_red_object(studio, tmp_path):
    """Item 7: the red tint was hard to see on red objects. A red sofa's mask is tinted cyan."""
    import numpy as np
    from PIL import Image

    photo = np.full((240, 320, 3), 200, np.uint8)
    photo[60:180, 80:240] = (190, 30, 40)  # the red sofa
    mask = np.zeros((240, 320), np.uint8)
    mask[60:180, 80:240] = 255
    Image.fromarray(photo).save(tmp_path / "sofa.png")
    Image.fromarray(mask).save(tmp_path / "sofa-mask.png")
    studio.upload(tmp_path / "sofa.png")
    studio.page.locator("#magedit-refine").get_by_text("Refine the mask").first.click()
    studio.page.locator("#magedit-mask-file input[type=file]").set_input_files(
        str(tmp_path / "sofa-mask.png")
    )
    studio.wait_for_text("magedit-mask", "from the mask file")
    studio.next_frames()
    studio.save_as("newcomer-7-red-sofa.png")
    shown = studio.canvas_pixels().astype(int)
    inside = shown[70:170, 90:230].reshape(-1, 3).mean(0)
    # Tinted towards cyan: its blue and green rose above its red (the sofa is red 190, 30, 40).
    assert inside[2] > 100 and inside[1] > 100 and inside[0] < 150, inside
