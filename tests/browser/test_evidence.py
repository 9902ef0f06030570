"""The evidence on the page (issue 23): compare mode's labelled results side by side, the report
under every result, and a recipe that replays the edit, in a real Chromium at 1366 x 768 and at
412 px wide."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

pytestmark = [pytest.mark.browser, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = json.loads((ROOT / "assets" / "examples.json").read_text())[0]  # cat eyes: green → blue
PHOTO = ROOT / "assets" / "cat.jpg"
PHONE = {"width": 412, "height": 900}
LABELS = ("MAG-Edit", "P2P + latent blend", "P2P")


def compare_and_wait(studio, viewport_name: str) -> list[str]:
    studio.choose_example(0, EXAMPLE["name"])
    studio.quick(steps=5)
    studio.page.locator("#magedit-compare input[type=checkbox]").check()
    studio.watch_status()
    studio.edit()
    studio.wait_done()
    gallery = studio.page.locator("#magedit-compare-results")
    gallery.wait_for()
    gallery.scroll_into_view_if_needed()
    studio.next_frames()
    studio.save_as(f"compare-{viewport_name}.png")
    return gallery.locator(".caption-label").all_inner_texts()


def test_compare_shows_the_three_methods_labelled_side_by_side(studio):
    captions = compare_and_wait(studio, "1366x768")
    assert captions[0] == "Photo" and len(captions) == 4, captions
    for caption, label in zip(captions[1:], LABELS, strict=True):
        assert re.fullmatch(rf"{re.escape(label)} · \d+\.\d s", caption), caption
    # The streaming status named the method running.
    seen = " | ".join(text for text, _ in studio.seen_status())
    assert "MAG-Edit (1/3)" in seen and "P2P (3/3)" in seen, seen
    # Side by side: the four thumbnails on one row.
    boxes = [
        b.bounding_box()
        for b in studio.page.locator("#magedit-compare-results .thumbnail-item").all()
    ]
    assert len({round(b["y"]) for b in boxes}) == 1, boxes
    # One column per method in the report.
    heads = studio.page.locator("#magedit-report th").all_inner_texts()
    assert heads == ["Report", *LABELS]


def test_compare_on_a_phone(open_studio):
    studio = open_studio(PHONE)
    captions = compare_and_wait(studio, "412px")
    assert captions[0] == "Photo" and len(captions) == 4, captions
    width = studio.page.evaluate("() => document.documentElement.scrollWidth")
    assert width <= PHONE["width"], width


def test_the_report_and_the_recipe_come_with_a_normal_edit(studio, tmp_path):
    studio.choose_example(0, EXAMPLE["name"])
    studio.quick(steps=5)
    studio.edit()
    studio.wait_done()
    report = studio.page.locator("#magedit-report")
    report.wait_for()
    studio.page.locator("#magedit-leakage img").wait_for()
    report.scroll_into_view_if_needed()
    studio.next_frames()
    studio.save_as("report-1366x768.png")
    said = report.inner_text()
    assert "pixels changed (result)\t0" in said or re.search(r"pixels changed \(result\)\s+0", said)
    assert re.search(r"token ratio, before → after guidance\s+0\.\d{4} → 0\.\d{4}", said), said
    assert "CLIP not measured" in said and "random weights" in said
    assert studio.page.locator("#magedit-compare-results").is_hidden()
    # The recipe replays the edit: the same PNG, byte for byte.
    link = studio.page.locator("#magedit-recipe a[download]")
    recipe = studio.page.request.get(link.get_attribute("href")).body()
    first = studio.page.request.get(
        studio.page.locator("#magedit-download a[download]").get_attribute("href")
    ).body()
    (tmp_path / "recipe.json").write_bytes(recipe)
    again = studio.page.context.new_page()
    studio.page.goto(studio.page.url)  # a fresh session: the photo, then the recipe
    studio.wait_for_text("magedit-status", "Upload a photo")
    studio.upload(PHOTO)
    studio.open_advanced()
    studio.page.locator("#magedit-recipe-load input[type=file]").set_input_files(
        str(tmp_path / "recipe.json")
    )
    studio.wait_for_text("magedit-mask", "the recipe's mask")
    studio.wait_for_text("magedit-status", "Ready: the edit guides “blue”")
    studio.save_as("recipe-loaded-1366x768.png")
    studio.edit()
    studio.wait_done()
    replayed = studio.page.request.get(
        studio.page.locator("#magedit-download a[download]").get_attribute("href")
    ).body()
    assert replayed == first
    again.close()
