"""The page's photo and mask handlers, called directly (no browser, no server) on the tiny
Segment Anything (random weights: its masks are arbitrary but deterministic): upload, clicks,
candidates, undo, clear, grow, the brush, mask files, examples, the second region, "Use as
input" and the /segment API."""

import dataclasses
import io
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from web_support import (
    ADD,
    BACKGROUND,
    BOX,
    OBJECT,
    REMOVE,
    SOURCE2,
    TABLE,
    TARGET2,
    H,
    W,
    box,
    edit_request,
    painted,
    photo,
    png_header,
    services,
    write_mask,
    write_photo,
)

from magedit import images
from magedit.segment import MAX_POINTS, Segmenter
from magedit.web import events, job, masks
from magedit.web.layout import ASSETS_DIR
from magedit.web.limits import DISPLAY_SIDE
from magedit.web.services import Lazy, ModelUnavailable

BLUE = masks.REGION_COLORS[1]


def tint(mask: np.ndarray) -> tuple[int, int, int]:
    """The first region's tint on the test photo (cyan on its red sofa)."""
    return masks.first_region_tint(photo(), mask)


@pytest.fixture(scope="module")
def seg():
    return Segmenter.tiny()


@pytest.fixture
def svc(seg, tmp_path):
    return services(segmenter=seg, output_dir=tmp_path / "out")


@pytest.fixture
def path(tmp_path) -> str:
    return write_photo(tmp_path)


@pytest.fixture
def fresh(path) -> masks.MaskState:
    """A session's state right after uploading the photo."""
    return events.upload(path)["state"]


def line(update: dict) -> str:
    """The mask line's text."""
    return update["mask_line"].text


def away_from(points, shape=(H, W), radius: int = 8) -> np.ndarray:
    """Pixels farther than ``radius`` from every point (x, y): where no dot is drawn."""
    rows, cols = np.ogrid[: shape[0], : shape[1]]
    far = np.ones(shape, bool)
    for x, y in points:
        far &= (cols - x) ** 2 + (rows - y) ** 2 > radius**2
    return far


def click(svc, state, point=OBJECT, mode="object") -> dict:
    return events.click(svc, state, mode, point)


# ------------------------------------------------------------------------------ upload
def test_a_photo_upload_starts_a_fresh_state(path):
    update = events.upload(path)
    state = update["state"]
    assert state.photo == path and state.size == (H, W)
    assert state.key == images.image_hash(photo())
    assert state.points == () and state.mask is None and state.region2 is None
    assert np.array_equal(update["canvas"], photo())  # 256 px long: shown as it is
    assert line(update) == "No mask yet: click the object to edit on the photo."
    assert "Photo 256x192" in update["status"].text and update["status"].kind == ""
    for name in ("editor", "region2_editor"):  # both brushes start over on the photo
        assert update[name]["layers"] == []
        assert np.array_equal(update[name]["background"], photo())


def test_a_large_photo_is_shown_at_display_size(tmp_path):
    big = photo(1536, 2048)
    update = events.upload(write_photo(tmp_path, image=big))
    assert update["state"].size == (1536, 2048)
    assert update["canvas"].shape == (768, DISPLAY_SIDE, 3)
    assert update["editor"]["background"].shape == (768, DISPLAY_SIDE, 3)
    assert "Photo 2048x1536" in update["status"].text


def jpeg_head() -> bytes:
    """The first 200 bytes of a JPEG of the photo: a header and nothing to decode."""
    buffer = io.BytesIO()
    Image.fromarray(photo()).save(buffer, "JPEG")
    return buffer.getvalue()[:200]


@pytest.mark.parametrize(
    ("name", "content", "says"),
    [
        (
            "page.png",
            b"<!DOCTYPE html><html><body><script>alert(1)</script></body></html>",
            "the file is not an image that can be read",
        ),
        ("empty.png", b"", "the file is not an image that can be read"),
        ("cut.jpg", jpeg_head(), "the image file is damaged"),
        ("huge.png", png_header(50_000, 50_000), "the image is too large to open safely"),
        (
            "drawing.svg",
            b'<svg xmlns="http://www.w3.org/2000/svg" width="64" height="64"><rect/></svg>',
            "the file is not an image that can be read",
        ),
    ],
)
def test_a_file_that_is_not_a_usable_photo_is_explained_in_words(
    tmp_path, capsys, name, content, says
):
    bad = tmp_path / name
    bad.write_bytes(content)
    update = events.upload(str(bad))
    assert update["canvas"] is None and update["editor"] is None
    assert update["state"].photo is None and update["state"].size is None
    under_canvas = line(update)
    assert update["mask_line"].kind == "error"
    assert f"Cannot use this file: {says}" in under_canvas
    status = update["status"].text
    assert update["status"].kind == "error" and f"Cannot use this file: {says}" in status
    for text in (under_canvas, status):
        assert str(tmp_path) not in text and "<script>" not in text
    # Newcomer item 9: a refused upload leaves one line in the server's log, as every refusal.
    log = capsys.readouterr().err.splitlines()
    assert [line for line in log if line.startswith("magedit: refused: a photo upload: ")]
    assert str(tmp_path) not in "\n".join(log)


def test_no_photo_clears_the_page():
    update = events.upload(None)
    assert update["canvas"] is None and update["editor"] is None
    assert update["state"].photo is None and update["region2_editor"] is None
    assert "Upload a photo or pick an example" in update["status"].text


def test_the_photo_is_embedded_once_for_all_its_clicks(seg, svc, fresh):
    seg.clear()
    encoded = []
    hook = seg.sam.image_encoder.register_forward_hook(lambda *_: encoded.append(1))
    try:
        assert events.embed(svc, fresh) == {"mask_line": events.mask_line(fresh)}
        assert len(encoded) == 1
        state = fresh
        for point, mode in [(OBJECT, "object"), (BACKGROUND, "background"), ((60, 60), "object")]:
            state = click(svc, state, point, mode)["state"]
        state = events.undo(svc, state)["state"]
        assert len(state.points) == 2 and len(encoded) == 1, "a click encoded the photo again"
        seg.clear()  # other photos pushed it out of the cache: the next click encodes it again
        assert click(svc, fresh)["state"].candidates and len(encoded) == 2
    finally:
        hook.remove()
    assert events.embed(svc, masks.MaskState()) == {}


def test_a_photo_whose_upload_is_gone_is_explained_on_the_next_click(svc, fresh, monkeypatch):
    """Gradio deletes uploads after two hours (limits.DELETE_CACHE); a tab left open longer
    clicks on a photo whose file is gone."""
    Path(fresh.photo).unlink()
    monkeypatch.setattr(masks, "DISPLAYS", masks.DisplayCache())  # not shown recently either
    for handler in (
        lambda: click(svc, fresh),
        lambda: events.clear_points(fresh),
        lambda: events.set_grow(fresh, 3),
    ):
        update = handler()  # words under the canvas, not an exception
        assert update["mask_line"].kind == "error"


# ------------------------------------------------------------------------------ clicks
def test_a_click_adds_a_point_and_shows_the_mask_in_use(svc, fresh):
    update = click(svc, fresh)
    state = update["state"]
    assert state.points == (OBJECT,) and state.labels == (1,) and state.source == "clicks"
    assert len(state.candidates) == 3  # one click: SAM's three masks, best first
    assert list(state.scores) == sorted(state.scores, reverse=True)
    mask = state.mask
    assert mask.shape == (H, W) and np.array_equal(mask, state.candidates[0].unpack())
    assert 0 < mask.mean() < 1
    canvas, far = update["canvas"], away_from([OBJECT])
    assert np.array_equal(canvas[far], images.mask_overlay(photo(), mask, color=tint(mask))[far])
    assert np.array_equal(canvas[~mask & far], photo()[~mask & far])  # untouched outside
    changed = (canvas != photo()).any(axis=-1)
    assert changed[mask & far].all()  # tinted inside
    assert tuple(canvas[OBJECT[1], OBJECT[0]]) == masks.POINT_COLORS[1]  # the green dot
    text = line(update)
    assert "Mask in use: from your clicks (1 on the object, 0 off it; candidate 1 of 3" in text
    assert f"{mask.mean():.1%} of the photo" in text
    # The brush paints over the same mask, without the dots.
    assert update["editor"]["layers"] == []
    assert np.array_equal(
        update["editor"]["background"], images.mask_overlay(photo(), mask, color=tint(mask))
    )
    assert fresh.points == () and fresh.mask is None  # the old state is not changed

    # A background click adds label 0, drawn red; Segment Anything gets both points.
    update = click(svc, state, BACKGROUND, "background")
    state = update["state"]
    assert state.points == (OBJECT, BACKGROUND) and state.labels == (1, 0)
    assert tuple(update["canvas"][BACKGROUND[1], BACKGROUND[0]]) == masks.POINT_COLORS[0]
    assert "(1 on the object, 1 off it; candidate 1 of 1" in line(update)


def test_a_background_click_alone_is_kept_and_explained(svc, fresh):
    update = click(svc, fresh, BACKGROUND, "background")
    state = update["state"]
    assert state.points == (BACKGROUND,) and state.labels == (0,) and state.mask is None
    assert update["mask_line"].kind == "error"
    assert "no point on the object and no box" in line(update)
    assert tuple(update["canvas"][BACKGROUND[1], BACKGROUND[0]]) == masks.POINT_COLORS[0]
    state = click(svc, state)["state"]
    assert state.labels == (0, 1) and state.mask is not None


@pytest.mark.parametrize("point", [(W, 10), (10, H), (-1, 5), (300, 400)])
def test_a_click_outside_the_photo_is_explained(svc, fresh, point):
    update = click(svc, fresh, point)
    assert "state" not in update  # nothing changes
    assert "is outside the 256x192 image" in line(update)
    assert update["mask_line"].kind == "error"


@pytest.mark.parametrize(
    ("index", "says"),
    [
        (("a", "b"), "a click must be an (x, y) pair of numbers"),
        ((1,), "a click must be an (x, y) pair of numbers"),
        ((1, 2, 3), "a click must be an (x, y) pair of numbers"),
        (None, "a click must be an (x, y) pair of numbers"),
        ((float("nan"), 3), "is outside the 256x192 image"),
    ],
)
def test_a_malformed_click_is_explained(svc, fresh, index, says):
    update = click(svc, fresh, index)
    assert "state" not in update and says in line(update)


def test_a_click_mode_that_is_not_offered_marks_the_object(svc, fresh):
    assert click(svc, fresh, mode="sideways")["state"].labels == (1,)


def test_a_click_without_a_photo_asks_for_one(svc):
    update = click(svc, masks.MaskState())
    assert "state" not in update and "Upload a photo first" in line(update)


def test_clicks_on_the_shown_photo_map_to_the_photos_pixels(svc, tmp_path):
    update = events.upload(write_photo(tmp_path, "big.png", photo(2048, 2048)))
    assert update["canvas"].shape == (DISPLAY_SIDE, DISPLAY_SIDE, 3)  # half the photo's size
    # A click at (x, y) on the canvas is at (2x, 2y) in the photo.
    clicked = click(svc, update["state"], (100, 300))
    assert clicked["state"].points == ((200.0, 600.0),)
    assert clicked["state"].mask.shape == (2048, 2048)
    assert clicked["canvas"].shape == (DISPLAY_SIDE, DISPLAY_SIDE, 3)
    assert tuple(clicked["canvas"][300, 100]) == masks.POINT_COLORS[1]
    outside = click(svc, update["state"], (DISPLAY_SIDE, 10))  # the canvas's edge is the photo's
    assert "state" not in outside
    assert "the point (2048, 20) is outside the 2048x2048 image" in line(outside)


def test_next_candidate_cycles_best_first_and_wraps(svc, fresh):
    state = click(svc, fresh)["state"]
    assert len(state.candidates) == 3
    seen = [state.index]
    for _ in range(3):
        update = events.next_candidate(state)
        state = update["state"]
        seen.append(state.index)
        chosen = state.candidates[state.index].unpack()
        assert np.array_equal(state.mask, chosen)
        far = away_from([OBJECT])
        expected = images.mask_overlay(photo(), chosen, color=tint(chosen))
        assert np.array_equal(update["canvas"][far], expected[far])
        assert f"candidate {state.index + 1} of 3, score {state.scores[state.index]:.2f}" in line(
            update
        )
    assert seen == [0, 1, 2, 0]


def test_next_candidate_with_one_candidate_says_so(svc, fresh):
    state = click(svc, click(svc, fresh)["state"], (100, 80))["state"]
    assert len(state.candidates) == 1  # several points: SAM gives one mask
    update = events.next_candidate(state)
    assert "state" not in update and update["mask_line"].kind == "error"
    assert "Segment Anything gave one mask for these points; add a point" in line(update)
    update = events.next_candidate(fresh)
    assert "state" not in update and "No mask yet: click the object first." in line(update)


def test_undo_removes_the_last_point(svc, fresh):
    one = click(svc, fresh)["state"]
    two = click(svc, one, BACKGROUND, "background")["state"]
    undone = events.undo(svc, two)["state"]
    assert undone.points == (OBJECT,) and undone.labels == (1,)
    assert len(undone.candidates) == len(one.candidates) == 3
    for a, b in zip(undone.candidates, one.candidates, strict=True):
        assert np.array_equal(a.unpack(), b.unpack())
    update = events.undo(svc, undone)
    assert update["state"].points == () and update["state"].mask is None
    assert np.array_equal(update["canvas"], photo())
    update = events.undo(svc, update["state"])
    assert "state" not in update and "No point to undo." in line(update)


def test_clear_forgets_every_point_and_keeps_the_photo_and_second_region(svc, fresh, tmp_path):
    state = click(svc, click(svc, fresh)["state"], BACKGROUND, "background")["state"]
    state = events.region2(state, None, write_mask(tmp_path, TABLE, "table.png"))["state"]
    update = events.clear_points(state)
    cleared = update["state"]
    assert cleared.points == () and cleared.labels == () and cleared.candidates == ()
    assert cleared.mask is None and cleared.key == fresh.key and cleared.size == (H, W)
    assert np.array_equal(cleared.region2.unpack(), box(TABLE))
    assert np.array_equal(update["canvas"], images.mask_overlay(photo(), box(TABLE), color=BLUE))
    assert "No mask yet" in line(update)


def test_the_65th_point_is_refused(svc, fresh):
    many = dataclasses.replace(fresh, points=((float(OBJECT[0]), 96.0),) * 63, labels=(1,) * 63)
    state = click(svc, many)["state"]
    assert len(state.points) == MAX_POINTS == 64 and state.mask is not None
    update = click(svc, state, (20, 20))
    assert "state" not in update
    assert "at most 64 points per mask; undo some, or clear and start over" in line(update)


def test_grow_widens_the_mask_in_use(svc, fresh):
    state = click(svc, fresh)["state"]
    base = state.mask
    update = events.set_grow(state, 4)
    grown = update["state"].mask
    assert np.array_equal(grown, images.dilate(base, 4)) and grown.sum() > base.sum()
    assert "grown 4 px" in line(update)
    far = away_from([OBJECT])
    assert np.array_equal(update["canvas"][~grown & far], photo()[~grown & far])
    assert (update["canvas"] != photo()).any(axis=-1)[grown & ~base & far].all()
    # The grow applies to the next clicks' masks too.
    again = click(svc, update["state"], (100, 80))["state"]
    assert np.array_equal(again.mask, images.dilate(again.candidates[0].unpack(), 4))
    for bad, says in [(1.5, "Grow the mask (pixels) is 1.5; give a whole number from 0 to 50"),
                      (51, "Grow the mask (pixels) is 51, out of range")]:  # fmt: skip
        update = events.set_grow(state, bad)
        assert "state" not in update and says in line(update)


def test_the_grow_in_use_survives_clear(svc, fresh):
    """The grow slider is not reset by Clear: the grow it shows applies to the next clicks."""
    state = events.set_grow(click(svc, fresh)["state"], 4)["state"]
    state = events.clear_points(state)["state"]
    state = click(svc, state)["state"]
    assert state.grow == 4, "Clear reset the grow that the slider still shows"
    assert np.array_equal(state.mask, images.dilate(state.candidates[0].unpack(), 4))


def test_two_sessions_keep_their_own_state(svc, path):
    first = events.upload(path)["state"]
    second = events.upload(path)["state"]
    first = click(svc, first)["state"]
    second = click(svc, click(svc, second, (200, 60))["state"], BACKGROUND, "background")["state"]
    second = events.set_grow(second, 3)["state"]
    assert first.points == (OBJECT,) and first.labels == (1,) and first.grow == 0
    assert second.points == ((200.0, 60.0), BACKGROUND) and second.labels == (1, 0)
    assert not np.array_equal(first.mask, second.mask)


# ------------------------------------------------------------------------ brush and files
def test_the_brush_refines_the_mask_in_use(svc, fresh):
    state = click(svc, fresh)["state"]
    clicked = state.mask
    corner = (slice(0, 20), slice(0, 20))
    rows = np.flatnonzero(clicked.any(axis=1))
    stripe = (slice(rows[0], rows[0] + 5), slice(None))
    update = events.brush(state, painted((corner, ADD), (stripe, REMOVE)))
    refined = update["state"]
    expected = (clicked | box(corner)) & ~box(stripe)
    assert np.array_equal(refined.mask, expected)
    assert refined.points == state.points and refined.source == "clicks"
    text = line(update)
    assert "from your clicks" in text and "refined with the brush" in text
    assert f"{expected.mean():.1%} of the photo" in text
    far = away_from([OBJECT])
    assert np.array_equal(
        update["canvas"][far], images.mask_overlay(photo(), expected, color=tint(expected))[far]
    )
    # Any colour at least as red as it is blue adds; a layer at the shown size is scaled.
    half = painted(((slice(0, 10), slice(0, 10)), (200, 0, 0, 255)), size=(H // 2, W // 2))
    assert np.array_equal(events.brush(state, half)["state"].mask, clicked | box(corner))
    # Paint wiped: the clicked mask again.
    wiped = events.brush(refined, painted())
    assert np.array_equal(wiped["state"].mask, clicked)
    assert "refined with the brush" not in line(wiped)
    assert events.brush(masks.MaskState(), painted((corner, ADD))) == {}


def test_a_mask_file_replaces_the_clicks(svc, fresh, tmp_path):
    state = click(svc, fresh)["state"]
    small = write_mask(tmp_path, (slice(10, 30), slice(20, 40)), size=(H // 2, W // 2))
    update = events.mask_file(state, small)
    used = update["state"]
    assert used.source == "file" and used.points == () and used.candidates == ()
    assert np.array_equal(used.mask, box((slice(20, 60), slice(40, 80))))  # scaled to the photo
    assert "Mask in use: from the mask file · 3.3% of the photo" in line(update)
    assert np.array_equal(
        update["canvas"], images.mask_overlay(photo(), used.mask, color=tint(used.mask))
    )
    # A click afterwards replaces the file's mask.
    assert click(svc, used)["state"].source == "clicks"
    # The file removed: no mask; a file that is no mask: said in words, nothing changes.
    assert events.mask_file(used, None)["state"].mask is None
    black = tmp_path / "black.png"
    Image.fromarray(np.zeros((H, W), np.uint8)).save(black)
    update = events.mask_file(used, str(black))
    assert "state" not in update
    assert "Cannot use this mask: the mask is empty: no pixel is marked" in line(update)
    update = events.mask_file(masks.MaskState(), small)
    assert "state" not in update and "Upload the photo first" in line(update)


@pytest.fixture
def with_examples(svc):
    return dataclasses.replace(svc, examples=events.load_examples(ASSETS_DIR))


def test_an_example_fills_the_photo_its_mask_and_its_prompts(with_examples):
    chosen = with_examples.examples[0]
    update = events.example(with_examples, 0)
    state = update["state"]
    assert state.source == "example" and state.example == chosen["name"]
    assert np.array_equal(state.mask, images.load_mask(chosen["mask"], size=state.size))
    assert update["source"] == chosen["source"] and update["target"] == chosen["target"]
    assert update["words"] == ", ".join(chosen["words"]) and update["preset"] == chosen["preset"]
    assert update["negative_word"] == (chosen["negative_word"] or "")
    assert f"from the example's mask ({chosen['name']})" in line(update)


def test_an_example_then_a_click_edits_the_clicked_mask(tiny_pipe, with_examples):
    """Issue: after an example, the mask in use stayed the example's whatever was clicked."""
    svc = dataclasses.replace(with_examples, pipeline=lambda: tiny_pipe)
    example = events.example(svc, 0)
    height, width = example["state"].size
    update = click(svc, example["state"], (width // 3, height // 3))
    state = update["state"]
    assert state.source == "clicks" and "from your clicks" in line(update)
    assert "example's mask" not in line(update)
    clicked = state.candidates[0].unpack()
    assert np.array_equal(state.mask, clicked)
    example_pixels = int(example["state"].mask.sum())
    assert int(clicked.sum()) != example_pixels
    request = edit_request(
        state.photo,
        state.mask,
        source=example["source"],
        target=example["target"],
        words=example["words"],
        negative_word=example["negative_word"],
        steps=5,
    )
    prepared = events.prepare(svc, request)
    assert np.array_equal(prepared.regions[0].mask, clicked)
    final = list(job.run(svc, prepared, frozenset(), []))[-1]
    assert final["settings"]["regions"][0]["pixels"] == int(clicked.sum())


# ------------------------------------------------------------------------ second region
def test_the_second_region_is_shown_in_blue_and_passed_to_the_engine(tiny_pipe, svc, tmp_path):
    state = events.upload(write_photo(tmp_path))["state"]
    state = events.mask_file(state, write_mask(tmp_path, BOX))["state"]
    table = write_mask(tmp_path, TABLE, "table.png")
    update = events.region2(state, None, table)
    state = update["state"]
    assert np.array_equal(state.region2.unpack(), box(TABLE))
    shown = images.mask_overlay(
        images.mask_overlay(photo(), box(BOX), color=tint(box(BOX))), box(TABLE), color=BLUE
    )
    assert np.array_equal(update["canvas"], shown)
    assert "second region 4.1%" in line(update)  # 40 x 50 of 192 x 256
    # Painted instead (any colour), or a file that wins over the painting; neither: none.
    painted_table = events.region2(state, painted((TABLE, REMOVE)), None)["state"]
    assert np.array_equal(painted_table.region2.unpack(), box(TABLE))
    corner = painted(((slice(0, 20), slice(0, 20)), REMOVE))
    assert np.array_equal(
        events.region2(state, corner, table)["state"].region2.unpack(), box(TABLE)
    )
    assert events.region2(state, painted(), None)["state"].region2 is None

    svc = dataclasses.replace(svc, pipeline=lambda: tiny_pipe)
    request = edit_request(
        state.photo,
        state.mask,
        source=SOURCE2,
        target=TARGET2,
        region2=state.region2.unpack(),
        region2_words="wooden",
        region2_weight=2.0,
    )
    prepared = events.prepare(svc, request)
    first, second = prepared.regions
    assert first.words == ["green"] and first.weight == 1.0
    assert np.array_equal(first.mask, box(BOX))
    assert second.words == ["wooden"] and second.weight == 2.0
    assert np.array_equal(second.mask, box(TABLE))
    final = list(job.run(svc, prepared, frozenset(), []))[-1]
    assert final["settings"]["regions"] == [
        {"words": ["green"], "weight": 1.0, "pixels": 96 * 128},
        {"words": ["wooden"], "weight": 2.0, "pixels": 40 * 50},
    ]
    before, after = final["result"]
    outside = ~images.dilate(box(BOX) | box(TABLE), 8)  # away from the feathered edges
    assert np.array_equal(after[outside], before[outside])


@pytest.mark.parametrize(
    ("region2", "changes", "control", "says"),
    [
        (TABLE, {}, "region2_words", "the second region has no edit words"),
        (
            TABLE,
            {"words": "green, wooden", "region2_words": "green"},
            "region2_words",
            "the edit word 'green' is given to regions 1 and 2",
        ),
        (
            TABLE,
            {"region2_words": "green, wooden"},
            "words",
            "the target prompt adds no word for region 1 besides the other regions' words",
        ),
        (
            TABLE,
            {"region2_words": "blue"},
            "region2_words",
            "edit word 'blue' is not in the target",
        ),
        (
            (slice(1, 3), slice(1, 3)),
            {"region2_words": "wooden"},
            "region2_words",
            "the mask is too small: it vanishes at the",
        ),
        (None, {"region2_words": "wooden"}, "region2_words", "mask"),
    ],
)
def test_second_region_errors_are_in_words(tiny_pipe, tmp_path, region2, changes, control, says):
    svc = services(pipe=tiny_pipe)
    request = edit_request(
        write_photo(tmp_path),
        source=SOURCE2,
        target=TARGET2,
        region2=None if region2 is None else box(region2),
        **changes,
    )
    with pytest.raises(events.ControlErrors) as refused:
        events.prepare(svc, request)
    where = refused.value.where("page")
    assert list(where) == [control]
    message = where[control]
    assert says in message
    assert "['" not in message and '["' not in message  # words, not Python lists


def test_a_second_region_file_that_is_no_mask_is_explained(fresh, tmp_path):
    bad = tmp_path / "notes.png"
    bad.write_bytes(b"<html></html>")
    update = events.region2(fresh, None, str(bad))
    assert "state" not in update and "Second region: " in line(update)
    assert "the file is not a mask that can be read" in line(update)
    assert events.region2(masks.MaskState(), painted((TABLE, ADD)), None) == {}


# ------------------------------------------------------------------------ use as input
def test_use_as_input_makes_the_result_the_next_photo(tmp_path):
    result = photo()
    result[BOX] = (20, 160, 40)  # the green sofa
    path = write_photo(tmp_path, "green-sofa-0a1b.png", result)
    for given in (path, type("FileData", (), {"path": path})()):
        update = events.use_as_input(given)
        state = update["state"]
        assert state.photo == path and state.points == () and state.mask is None
        assert state.key == images.image_hash(result)
        assert np.array_equal(update["canvas"], result)
        assert update["editor"]["layers"] == [] and update["region2_editor"]["layers"] == []
        assert "The result is the new photo" in update["status"].text
    update = events.use_as_input(None)
    assert "state" not in update and "No result yet: run an edit first." in update["status"].text
    assert update["status"].kind == "error"


# ------------------------------------------------------------------------ /segment, no SAM
def test_segment_api_writes_the_best_mask(seg, svc, path, tmp_path):
    written, score = events.segment_api(svc, path, [list(OBJECT)], [1])
    best = seg.predict(photo(), points=[OBJECT], labels=[1])[0]
    mask = np.asarray(Image.open(written))
    assert Path(written).parent.parent == tmp_path / "out"
    assert Path(written).name.startswith("mask-") and mask.shape == (H, W)
    assert np.array_equal(mask > 0, best.mask) and score == pytest.approx(best.score)
    two = np.asarray(Image.open(events.segment_api(svc, path, [[10, 10], [128, 96]], None)[0]))
    assert two.shape == (H, W) and two.any()  # labels default to 1
    for points, labels, says in [
        ([[999, 5]], [1], "the point (999, 5) is outside the 256x192 image"),
        ([], [], "no point on the object"),
        ([[10, 10]], [2], "labels are [2] for 1 points"),
    ]:
        with pytest.raises(ValueError, match=re.escape(says)):
            events.segment_api(svc, path, points, labels)
    with pytest.raises(ValueError, match="no photo"):
        events.segment_api(svc, None, [[1, 1]], [1])


def test_segment_anything_that_cannot_load_is_explained_without_paths(fresh, capsys):
    def fail():
        raise FileNotFoundError("no SAM checkpoint at '/secret/sam.pth'; pass --sam-checkpoint")

    svc = services()
    svc.segmenter = Lazy(fail)
    update = click(svc, fresh)
    assert "state" not in update
    assert "Segment Anything could not be loaded; see the server's log; mark the region with " \
           "the brush instead" in line(update)  # fmt: skip
    assert "could not be loaded" in line(events.embed(svc, fresh))
    with pytest.raises(ModelUnavailable) as error:
        events.segment_api(svc, fresh.photo, [list(OBJECT)], [1])
    shown = line(update) + str(error.value) + line(events.embed(svc, fresh))
    assert "/secret" not in shown
    assert "/secret/sam.pth" in capsys.readouterr().err  # the server's log has the reason


def test_the_mask_stands_out_on_a_red_object(tmp_path):
    """Newcomer item 7: the red tint was hard to see on red objects. On the test photo's red
    sofa the mask is tinted a colour far from the sofa's; on a grey photo it is red."""
    sofa = box(BOX)
    tint_on_red = masks.first_region_tint(photo(), sofa)
    assert tint_on_red != masks.REGION_COLORS[0]
    red = np.asarray(photo()[sofa], float).mean(0)
    assert np.linalg.norm(red - np.asarray(tint_on_red)) >= 200
    grey = np.full((H, W, 3), 128, np.uint8)
    assert masks.first_region_tint(grey, sofa) == masks.REGION_COLORS[0]
    state, _ = masks.new_photo(write_photo(tmp_path))
    canvas = masks.render(masks.with_base(state, sofa, "file"), photo())
    # The outline (the mask's inner band) is the tint itself, far from the sofa's red.
    band = sofa & ~images.dilate(sofa, -2)
    assert np.linalg.norm(canvas[band].mean(0) - red) >= 200
