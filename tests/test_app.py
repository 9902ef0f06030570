"""The web page's handlers, called directly (no browser, no server) on the tiny pipeline and
the tiny Segment Anything."""

import dataclasses
import sys
import threading
import time
from pathlib import Path

import gradio as gr
import numpy as np
import pytest
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # app.py lives at the repo root
import app  # noqa: E402
from magedit import images  # noqa: E402
from magedit.segment import Segmenter  # noqa: E402

SOURCE = "a photo of a red sofa in a living room"
TARGET = "a photo of a green sofa in a living room"
H, W = 192, 256
BOX = (slice(48, 144), slice(64, 192))  # the painted rectangle (rows, columns)


def photo() -> np.ndarray:
    y, x = np.mgrid[0:H, 0:W]
    image = np.stack([x * 255 / W, y * 255 / H, 128 + 0 * x], -1).round().astype(np.uint8)
    image[BOX] = (150, 30, 30)
    return image


def painted_editor(box=BOX, size=(H, W)) -> dict:
    """An ImageEditor value as Gradio 6 gives it (type="numpy", image_mode="RGBA")."""
    background = np.dstack([photo(), np.full((H, W), 255, np.uint8)])
    layer = np.zeros((*size, 4), np.uint8)
    if box is not None:
        layer[box] = (255, 45, 85, 255)
    return {"background": background, "layers": [layer], "composite": background}


def edit_kwargs(**changes) -> dict:
    kwargs = {
        "image": photo(),
        "editor": painted_editor(),
        "mask_file": None,
        "source": SOURCE,
        "target": TARGET,
        "words": "",
        "negative_word": "",
        "preset": "color",
        "iterations": 1,
        "granularity": 2.5,
        "steps": 6,
        "guidance": 7.5,
        "inversion": "direct",
        "resolution": 256,
    }
    kwargs.update(changes)
    return kwargs


def named(update: tuple) -> dict:
    assert len(update) == len(app.EDIT_OUTPUTS)
    return dict(zip(app.EDIT_OUTPUTS, update, strict=True))


def is_skip(value) -> bool:
    return isinstance(value, dict) and value.get("__type__") == "update" and len(value) == 1


@pytest.fixture(scope="module")
def get_pipe(tiny_pipe):
    return lambda: tiny_pipe


def test_build_demo_on_tiny_pipeline(get_pipe, tmp_path):
    demo = app.build_demo(get_pipe, tiny=True, output_dir=tmp_path)
    assert isinstance(demo, gr.Blocks)
    texts = [b.value for b in demo.blocks.values() if isinstance(b, gr.Markdown)]
    assert any("random, untrained weights" in (t or "") for t in texts)
    edit = next(fn for fn in demo.fns.values() if fn.api_name == "edit")
    assert edit.concurrency_limit == 1
    assert demo._queue.max_size == app.QUEUE_SIZE
    (cancel,) = [fn for fn in demo.fns.values() if fn.cancels]
    assert cancel.cancels == [edit._id], "the Cancel button cancels the edit event"
    # The same click also says so in the status line (Gradio registers it as its own function).
    (said,) = [fn for fn in demo.fns.values() if fn.fn is app.cancelled_status]
    assert said.targets == cancel.targets and "Cancelled" in app.cancelled_status()
    assert [b.elem_id for b in said.outputs] == ["magedit-status"] and said.queue is False
    # Real weights: no banner, the paper's defaults.
    demo = app.build_demo(get_pipe, tiny=False, output_dir=tmp_path)
    texts = [b.value for b in demo.blocks.values() if isinstance(b, gr.Markdown)]
    assert not any("random, untrained weights" in (t or "") for t in texts)
    radios = [b.value for b in demo.blocks.values() if isinstance(b, gr.Radio)]
    assert "null_text" in radios and 512 in radios


def test_upload_sets_the_editor_background(tmp_path):
    path = tmp_path / "photo.png"
    Image.fromarray(photo()).save(path)
    value, status, clicks, shown, mask_status, region2 = app.load_upload(str(path))
    assert np.array_equal(value["background"], photo()) and value["layers"] == []
    assert np.array_equal(region2["background"], photo()) and region2["layers"] == []
    assert "256x192" in status and "Preparing Segment Anything" in mask_status
    assert clicks.size == (H, W) and clicks.points == () and np.array_equal(shown, photo())
    assert clicks.key == images.image_hash(photo())
    none, status, clicks, shown, mask_status, region2 = app.load_upload(None)
    assert (none, status, shown, mask_status, region2) == (None, "", None, "", None)
    assert clicks.size is None
    bad = tmp_path / "notes.png"
    bad.write_bytes(b"not an image at all")
    with pytest.raises(gr.Error, match="not an image that can be read") as error:
        app.load_upload(str(bad))
    assert str(tmp_path) not in error.value.message


def test_a_model_that_cannot_load_is_a_page_error_without_paths(tmp_path, capsys):
    def fail():
        raise OSError(f"no file named config.json in {tmp_path}")

    with pytest.raises(gr.Error, match="see the server's log") as error:
        next(app.run_edit(fail, tmp_path, app.TIME_LIMIT, **edit_kwargs()))
    assert str(tmp_path) not in error.value.message
    assert str(tmp_path) in capsys.readouterr().err


def test_read_mask_from_painted_layer():
    mask = app.read_mask(painted_editor(), None, (H, W))
    expected = np.zeros((H, W), bool)
    expected[BOX] = True
    assert mask.dtype == bool and np.array_equal(mask, expected)
    # A layer at half the photo's size is scaled up to it.
    half = painted_editor(box=(slice(24, 72), slice(32, 96)), size=(H // 2, W // 2))
    assert np.array_equal(app.read_mask(half, None, (H, W)), expected)


@pytest.mark.parametrize("box", [None, "no layers"])
def test_read_mask_without_paint_asks_to_paint(box):
    editor = painted_editor(box=None)
    if box == "no layers":
        editor["layers"] = []
    with pytest.raises(gr.Error, match="paint the region"):
        app.read_mask(editor, None, (H, W))
    with pytest.raises(gr.Error, match="paint the region"):
        app.read_mask(None, None, (H, W))


def test_mask_file_is_used_instead_of_painting(tmp_path):
    file_mask = np.zeros((H // 2, W // 2), np.uint8)
    file_mask[:10, :10] = 255
    path = tmp_path / "mask.png"
    Image.fromarray(file_mask).save(path)
    mask = app.read_mask(painted_editor(), str(path), (H, W))
    assert mask.shape == (H, W) and mask[:20, :20].all() and mask.sum() == 400


def test_edit_words_are_suggested_from_the_prompts(get_pipe):
    assert app.suggest_words(get_pipe, SOURCE, TARGET) == ("green", "")
    words, status = app.suggest_words(get_pipe, SOURCE, SOURCE)
    assert is_skip(words) and "adds no new word" in status
    assert is_skip(app.suggest_words(get_pipe, SOURCE, "")[0])
    assert app.check_inputs(get_pipe, SOURCE, TARGET, "green", "", 1) == ""
    assert "not in the target prompt" in app.check_inputs(get_pipe, SOURCE, TARGET, "blue", "", 1)
    assert "in both prompts" in app.check_inputs(get_pipe, SOURCE, TARGET, "sofa", "", 1)
    assert app.check_inputs(get_pipe, SOURCE, TARGET, "sofa", "", 0) == ""
    assert "source prompt" in app.check_inputs(get_pipe, SOURCE, TARGET, "", "green", 1)


def test_parse_words():
    assert app.parse_words(" green, ice cream ,") == ["green", "ice cream"]
    assert app.parse_words("green  velvet") == ["green", "velvet"]
    assert app.parse_words(None) == []


def test_config_from_the_controls():
    config = app.build_config("object", 5, 3.0, 20, 6.0, "ddim", 384)
    assert config.constraint == "spatial_ratio" and config.tau1 == 16  # 40 of 50 -> 16 of 20
    assert (config.max_iter, config.scale, config.guidance_scale) == (5, 3.0, 6.0)
    assert (config.inversion, config.resolution, config.steps) == ("ddim", 384, 20)
    with pytest.raises(ValueError, match="steps"):
        app.build_config("color", 5, 3.0, None, 6.0, "ddim", 384)


def test_edit_streams_and_saves_the_result(get_pipe, tmp_path):
    updates = [
        named(u)
        for u in app.run_edit(get_pipe, tmp_path, app.TIME_LIMIT, **edit_kwargs(words="green"))
    ]
    streamed = updates[1:-1]
    assert any("Step 6/6" in u["status"] for u in streamed if isinstance(u["status"], str))
    previews = [u["preview"] for u in streamed if isinstance(u["preview"], np.ndarray)]
    assert len(previews) == 6 and previews[0].shape == (H, W, 3)  # upscaled to processing size
    heat = [u["attention"] for u in streamed if isinstance(u["attention"], np.ndarray)]
    assert heat and heat[-1].shape == (H, W, 3) and heat[-1].dtype == np.uint8
    curve = updates[-2]["curve"]
    assert set(curve["series"]) == {"MAG loss", "loss", "in-mask ratio"}

    final = updates[-1]
    before, after = final["result"]
    assert np.array_equal(before, photo()) and after.shape == (H, W, 3)
    assert np.array_equal(after[:, :20], photo()[:, :20])  # far outside the mask: untouched
    path = Path(final["download"])
    assert path.parent.parent == tmp_path and path.is_file() and path.name.startswith("green-")
    assert np.array_equal(np.asarray(Image.open(path)), after)
    settings = final["settings"]
    assert settings["edit words"] == ["green"]
    assert settings["config"]["steps"] == 6 and settings["inversion"] == "direct"
    assert "Done" in final["status"]

    # The same photo and source prompt again: the inversion is reused, and the page says so.
    again = [named(u) for u in app.run_edit(get_pipe, tmp_path, app.TIME_LIMIT, **edit_kwargs())]
    assert "Reused the cached inversion" in again[-1]["status"]
    assert again[-1]["settings"]["inversion"] == "reused the cached inversion"
    assert again[-1]["settings"]["edit words"] == ["green"]  # picked from the prompts
    assert len(list(tmp_path.rglob("*.png"))) == 2


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"target": "  "}, "target prompt is empty"),
        ({"words": "blue"}, "edit word 'blue' is not in the target prompt"),
        ({"image": None}, "upload the photo"),
        ({"editor": painted_editor(box=None)}, "paint the region"),
        ({"editor": painted_editor(box=np.s_[:, :])}, "covers 100.0%"),
        ({"target": "<b>a</b> " + "very " * 80 + "green sofa"}, "&lt;b&gt;"),
    ],
)
def test_bad_input_is_a_readable_error_before_any_work(get_pipe, tmp_path, changes, message):
    events = app.run_edit(get_pipe, tmp_path, app.TIME_LIMIT, **edit_kwargs(**changes))
    with pytest.raises(gr.Error) as error:
        next(events)
    assert message in error.value.message
    assert "Traceback" not in error.value.message and str(tmp_path) not in error.value.message


def test_library_failures_become_gradio_errors():
    with pytest.raises(gr.Error, match="NaN"), app.gradio_errors():
        raise FloatingPointError("the edited latents became NaN at step 3; lower the scale")
    with pytest.raises(KeyError), app.gradio_errors():
        raise KeyError("a bug stays a bug")


def test_cancel_stops_the_worker(get_pipe, tmp_path):
    events = app.run_edit(
        get_pipe, tmp_path, app.TIME_LIMIT, **edit_kwargs(steps=8, inversion="ddim")
    )
    next(events)  # "Starting…": the worker is running
    next(events)
    events.close()  # what Gradio does when the Cancel button cancels the event
    assert app._PIPELINE_LOCK.acquire(timeout=60), "the cancelled edit still holds the pipeline"
    app._PIPELINE_LOCK.release()
    time.sleep(0.1)
    assert not list(tmp_path.glob("*.png"))


@pytest.mark.parametrize("model", ["missing-folder", "nobody/no-such-model"])
def test_main_reports_a_model_that_cannot_load(capsys, tmp_path, monkeypatch, model):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # as on a machine without network
    if model == "missing-folder":
        model = str(tmp_path / "missing")
    with pytest.raises(SystemExit) as done:
        app.main(["--model", model, "--port", "0"])
    assert done.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("app.py: error: ")
    assert "--tiny" in err and "--model" in err and "folder" in err


# ----------------------------------------------------------------------------------------------
# Click to segment (tiny SAM: random weights, so the masks are arbitrary but deterministic)

OBJECT = (128, 96)  # (x, y) inside the painted rectangle
BACKGROUND = (20, 170)


@pytest.fixture(scope="module")
def seg():
    return Segmenter.tiny()


@pytest.fixture
def get_seg(seg):
    seg.clear()
    return lambda: seg


@pytest.fixture
def photo_path(tmp_path) -> str:
    path = tmp_path / "photo.png"
    Image.fromarray(photo()).save(path)
    return str(path)


@pytest.fixture
def session(photo_path) -> "app.Clicks":
    """A session's state right after uploading the photo."""
    return app.load_upload(photo_path)[2]


def click(get_seg, photo_path, clicks, point=OBJECT, mode="object", grow=0):
    return app.add_point(get_seg, photo_path, clicks, mode, grow, point)


def test_upload_embeds_the_photo_once_for_all_clicks(seg, get_seg, photo_path, session):
    calls = []
    hook = seg.sam.image_encoder.register_forward_hook(lambda *_: calls.append(1))
    try:
        assert "Ready" in app.embed_photo(get_seg, photo_path)
        assert len(calls) == 1
        clicks = session
        for point, mode in [(OBJECT, "object"), (BACKGROUND, "background"), ((60, 60), "object")]:
            clicks = click(get_seg, photo_path, clicks, point, mode)[1]
        clicks = app.next_candidate(clicks, 0)[1]
        clicks = app.undo_point(get_seg, photo_path, clicks, 0)[1]
        assert len(calls) == 1, "the image encoder ran again for a click"
        # Pushed out of the cache (other photos since): the next click embeds it again.
        seg.clear()
        assert click(get_seg, photo_path, session)[1].candidates and len(calls) == 2
    finally:
        hook.remove()
    assert app.embed_photo(get_seg, None) == ""


def test_a_click_adds_a_point_and_shows_its_mask(get_seg, photo_path, session):
    shown, clicks, status = click(get_seg, photo_path, session)
    assert shown.shape == (H, W, 3) and shown.dtype == np.uint8
    assert clicks.points == (OBJECT,) and clicks.labels == (1,) and clicks.index == 0
    assert clicks.candidates and "Mask 1 of" in status
    scores = [c.score for c in clicks.candidates]
    assert scores == sorted(scores, reverse=True)
    x, y = OBJECT
    assert tuple(shown[y, x]) == app.POINT_COLORS[1]  # a green dot on the point
    mask = clicks.candidates[0].mask
    assert mask.shape == (H, W)
    expected = images.mask_overlay(photo(), mask)
    far = np.ones((H, W), bool)
    far[y - 10 : y + 11, x - 10 : x + 11] = False  # away from the dot: exactly the overlay
    assert np.array_equal(shown[far], expected[far]) and not np.array_equal(shown, photo())
    assert session.points == () and session.candidates == ()  # the old state is not changed

    # A background click adds label 0 and is drawn red; SAM gets both points.
    shown, clicks, status = click(get_seg, photo_path, clicks, BACKGROUND, "background")
    assert clicks.points == (OBJECT, BACKGROUND) and clicks.labels == (1, 0)
    assert tuple(shown[BACKGROUND[1], BACKGROUND[0]]) == app.POINT_COLORS[0]
    assert "1 object and 1 background point(s)" in status


def test_a_background_click_alone_is_kept_and_explained(get_seg, photo_path, session):
    shown, clicks, status = click(get_seg, photo_path, session, BACKGROUND, "background")
    assert clicks.labels == (0,) and clicks.candidates == ()
    assert status.startswith("⚠️") and "no point on the object" in status
    assert shown.shape == (H, W, 3)
    clicks = click(get_seg, photo_path, clicks)[1]
    assert clicks.labels == (0, 1) and clicks.candidates


@pytest.mark.parametrize("point", [(W, 10), (10, H), (-1, 5), (300, 400)])
def test_a_click_outside_the_photo_is_a_readable_error(get_seg, photo_path, session, point):
    with pytest.raises(gr.Error, match="outside the 256x192 image") as error:
        click(get_seg, photo_path, session, point)
    assert error.value.title == app.SEGMENT_TITLE and "Traceback" not in error.value.message


@pytest.mark.parametrize(
    "index, says",
    [
        (("a", "b"), "pair of numbers"),
        ((1,), "pair of numbers"),
        (None, "pair of numbers"),
        ((float("nan"), 3), "outside the 256x192 image"),
    ],
)
def test_a_malformed_click_is_a_readable_error(get_seg, photo_path, session, index, says):
    with pytest.raises(gr.Error) as error:
        click(get_seg, photo_path, session, index)
    assert error.value.title == app.SEGMENT_TITLE and says in error.value.message


def test_the_loss_curve_has_float_columns():
    """Object columns make the line plot draw a categorical y axis (one label per value)."""
    stream = app._Stream.__new__(app._Stream)
    stream.curve = [{"step": 1, "value": 0.5, "series": "loss"}]
    frame = stream._curve()
    assert frame["step"].dtype == float and frame["value"].dtype == float


def test_a_click_without_a_photo_asks_for_one(get_seg):
    with pytest.raises(gr.Error, match="upload a photo"):
        app.add_point(get_seg, None, app.Clicks(), "object", 0, OBJECT)


def test_clicks_on_a_shrunk_photo_are_mapped_to_its_pixels(get_seg, photo_path, monkeypatch):
    monkeypatch.setattr(app, "DISPLAY_SIDE", W // 2)  # the photo is shown at half its size
    session = app.load_upload(photo_path)[2]
    assert session.display.shape == (H // 2, W // 2, 3) and session.size == (H, W)
    shown, clicks, _ = click(get_seg, photo_path, session, (OBJECT[0] / 2, OBJECT[1] / 2))
    assert clicks.points == (OBJECT,) and shown.shape == (H // 2, W // 2, 3)
    assert app.clicked_mask(clicks, 2).shape == (H, W)
    with pytest.raises(gr.Error, match="outside the 256x192 image"):
        click(get_seg, photo_path, session, (W // 2, 10))


def test_next_candidate_cycles_best_first_and_wraps(get_seg, photo_path, session):
    clicks = click(get_seg, photo_path, session)[1]
    count = len(clicks.candidates)
    assert count == 3  # one click: SAM's three masks (part, object, group)
    seen = [clicks.index]
    for _ in range(count):
        shown, clicks, status = app.next_candidate(clicks, 0)
        seen.append(clicks.index)
        assert np.array_equal(app.clicked_mask(clicks, 0), clicks.candidates[clicks.index].mask)
        assert f"Mask {clicks.index + 1} of {count}" in status
    assert seen == [0, 1, 2, 0]
    empty = app.next_candidate(session, 0)
    assert empty[1] is session and "click the object first" in empty[2]


def test_undo_removes_the_last_point(get_seg, photo_path, session):
    one = click(get_seg, photo_path, session)[1]
    two = click(get_seg, photo_path, one, BACKGROUND, "background")[1]
    shown, undone, _ = app.undo_point(get_seg, photo_path, two, 0)
    assert undone.points == (OBJECT,) and undone.labels == (1,)
    assert len(undone.candidates) == len(one.candidates)
    for a, b in zip(undone.candidates, one.candidates, strict=True):
        assert np.array_equal(a.mask, b.mask)
    shown, none, status = app.undo_point(get_seg, photo_path, undone, 0)
    assert none.points == () and none.candidates == () and np.array_equal(shown, photo())
    assert "No point to undo" in app.undo_point(get_seg, photo_path, none, 0)[2]


def test_clear_forgets_every_point(get_seg, photo_path, session):
    clicks = click(get_seg, photo_path, session)[1]
    clicks = click(get_seg, photo_path, clicks, BACKGROUND, "background")[1]
    shown, cleared, status = app.clear_points(clicks)
    assert cleared.points == () and cleared.labels == () and cleared.candidates == ()
    assert cleared.key == session.key and cleared.size == (H, W)
    assert np.array_equal(shown, photo()) and "Cleared" in status
    assert app.clicked_mask(cleared, 5) is None


def test_two_sessions_keep_their_own_clicks(get_seg, photo_path, tmp_path):
    demo = app.build_demo(lambda: None, get_seg, tiny=True, output_dir=tmp_path)
    state = next(b for b in demo.blocks.values() if isinstance(b, gr.State))
    assert isinstance(state.value, app.Clicks) and state.value.points == ()
    first, second = (app.load_upload(photo_path)[2] for _ in range(2))
    first = click(get_seg, photo_path, first, OBJECT)[1]
    second = click(get_seg, photo_path, second, (200, 60))[1]
    second = click(get_seg, photo_path, second, BACKGROUND, "background")[1]
    assert first.points == (OBJECT,) and first.labels == (1,)
    assert second.points == ((200, 60), BACKGROUND) and second.labels == (1, 0)
    assert state.value.points == ()


def test_the_grow_slider_grows_the_shown_and_used_mask(get_seg, photo_path, session):
    clicks = click(get_seg, photo_path, session)[1]
    sam = clicks.candidates[0].mask
    grown = app.clicked_mask(clicks, 4)
    assert np.array_equal(grown, images.dilate(sam, 4)) and grown.sum() > sam.sum()
    shown = app.render_clicks(clicks, 4)
    outside = ~grown
    outside[OBJECT[1] - 10 : OBJECT[1] + 11, OBJECT[0] - 10 : OBJECT[0] + 11] = False  # the dot
    assert np.array_equal(shown[outside], photo()[outside])
    assert not np.array_equal(shown, app.render_clicks(clicks, 0))


def test_the_brush_refines_the_clicked_mask(
    get_pipe, get_seg, photo_path, session, tmp_path, monkeypatch
):
    clicks = click(get_seg, photo_path, session, (100, 150))[1]
    received = []

    def prepare(image, source, target, *args, regions, **kwargs):
        received.append(regions[0].mask)
        raise ValueError("stop before inverting")

    monkeypatch.setattr(get_pipe(), "prepare", prepare)

    def edit(editor, **changes):
        kwargs = edit_kwargs(
            **{"image": photo_path, "editor": editor, "grow": 6, "clicks": clicks, **changes}
        )
        with pytest.raises(gr.Error, match="stop before inverting"):
            next(app.run_edit(get_pipe, tmp_path, app.TIME_LIMIT, **kwargs))
        return received[-1]

    clicked = images.dilate(clicks.candidates[0].mask, 6)
    # After the click the brush shows the photo with the clicked mask (grown) tinted, no paint.
    view = app.brush_view(clicks, 6)
    assert view["layers"] == [] and view["background"].shape == (H, W, 3)
    assert np.array_equal(
        view["background"], images.mask_overlay(photo(), clicked, app.ADD_RGBA[:3])
    )
    assert np.array_equal(view["background"][~clicked], photo()[~clicked])
    assert np.array_equal(edit(view), clicked)
    assert np.array_equal(edit(None), clicked)  # an API call: no editor
    # Red paint adds to the clicked mask; blue paint takes out of it.
    corner = (slice(0, 20), slice(0, 20))
    rows = np.flatnonzero(clicked.any(axis=1))
    stripe = (slice(rows[0], rows[0] + 5), slice(None))
    layer = np.zeros((H, W, 4), np.uint8)
    layer[corner] = app.ADD_RGBA
    layer[stripe] = app.REMOVE_RGBA
    expected = (clicked | _box(corner)) & ~_box(stripe)
    assert np.array_equal(edit({**view, "layers": [layer]}), expected)
    # A layer at the shown photo's size (half here) is scaled to the photo.
    half = np.zeros((H // 2, W // 2, 4), np.uint8)
    half[:10, :10] = app.ADD_RGBA
    assert np.array_equal(edit({**view, "layers": [half]}), clicked | _box(corner))
    # The next candidate, when chosen, is the one shown and used.
    second = app.next_candidate(clicks, 0)[1]
    other_mask = images.dilate(second.candidates[1].mask, 6)
    shown = app.brush_view(second, 6)["background"]
    assert np.array_equal(shown, images.mask_overlay(photo(), other_mask, app.ADD_RGBA[:3]))
    assert np.array_equal(edit(None, clicks=second), other_mask)
    # Cleared clicks: the plain photo; no photo yet: nothing to change.
    assert np.array_equal(app.brush_view(app.clear_points(clicks)[1], 6)["background"], photo())
    assert is_skip(app.brush_view(app.Clicks(), 6))
    # A mask file still overrides clicks and painting.
    file_mask = np.zeros((H, W), np.uint8)
    file_mask[100:110, 200:220] = 255
    path = tmp_path / "mask.png"
    Image.fromarray(file_mask).save(path)
    assert np.array_equal(edit(view, mask_file=str(path)), file_mask > 0)
    # Clicks made on another photo are not used.
    other = dataclasses.replace(clicks, key="another photo")
    assert np.array_equal(edit(painted_editor(box=corner), clicks=other), _box(corner))
    kwargs = edit_kwargs(image=photo_path, editor=view, clicks=other)
    with pytest.raises(gr.Error, match="no region is marked"):
        next(app.run_edit(get_pipe, tmp_path, app.TIME_LIMIT, **kwargs))


def _box(box) -> np.ndarray:
    mask = np.zeros((H, W), bool)
    mask[box] = True
    return mask


def test_segment_api_writes_the_best_mask(get_seg, photo_path, tmp_path, seg):
    path, score = app.segment_api(get_seg, tmp_path, photo_path, [list(OBJECT)], [1])
    best = seg.predict(photo(), points=[OBJECT], labels=[1])[0]
    written = np.asarray(Image.open(path))
    assert Path(path).parent.parent == tmp_path and Path(path).name.startswith("mask-")
    assert written.shape == (H, W) and np.array_equal(written > 0, best.mask)
    assert score == pytest.approx(best.score)
    # Two points, labels default to 1.
    assert Path(app.segment_api(get_seg, tmp_path, photo_path, [[10, 10], [128, 96]], None)[0])
    with pytest.raises(gr.Error, match="outside the 256x192 image"):
        app.segment_api(get_seg, tmp_path, photo_path, [[999, 5]], [1])
    with pytest.raises(gr.Error, match="no point on the object"):
        app.segment_api(get_seg, tmp_path, photo_path, [], [])
    with pytest.raises(gr.Error, match="no photo"):
        app.segment_api(get_seg, tmp_path, None, [[1, 1]], [1])


def test_segment_anything_that_cannot_load_is_a_page_error(photo_path, session, capsys):
    def fail():
        raise FileNotFoundError("no SAM checkpoint at '/secret/sam.pth'; pass --sam-checkpoint")

    with pytest.raises(gr.Error, match="paint the region") as error:
        click(fail, photo_path, session)
    assert "/secret" not in error.value.message and "/secret" in capsys.readouterr().err
    assert "could not be loaded" in app.embed_photo(fail, photo_path)


def test_the_page_wires_clicks_outside_the_queue(get_pipe, get_seg, tmp_path):
    demo = app.build_demo(get_pipe, get_seg, tiny=True, output_dir=tmp_path)
    fns = list(demo.fns.values())
    segment = next(fn for fn in fns if fn.api_name == "segment")
    assert segment.concurrency_limit is None and segment.concurrency_id != "gpu"
    edit = next(fn for fn in fns if fn.api_name == "edit")
    assert edit.concurrency_id == "gpu" and edit.queue
    clicks = [fn for fn in fns if getattr(fn.fn, "__name__", "") == "on_click"]
    assert len(clicks) == 1 and clicks[0].queue is False
    assert [t[1] for t in clicks[0].targets] == ["select"]
    named_fns = {getattr(fn.fn, "func", fn.fn).__name__: fn for fn in fns if fn.fn is not None}
    for name in ("next_candidate", "undo_point", "clear_points", "embed_photo", "load_upload"):
        assert named_fns[name].queue is False, name
    assert demo.api_open is False  # queued endpoints cannot be reached past the queue
    # The API: segment(image, points, labels); edit needs the photo and the prompts, the rest
    # defaults to the page's values (the session's clicks are not part of it).
    api = demo.get_api_info()["named_endpoints"]
    assert [p["parameter_name"] for p in api["/segment"]["parameters"]] == [
        "image",
        "points",
        "labels",
    ]
    required = [
        p["parameter_name"] for p in api["/edit"]["parameters"] if not p["parameter_has_default"]
    ]
    assert required == ["image", "source", "target"]
    assert {"mask_file", "editor", "grow"} <= {
        p["parameter_name"] for p in api["/edit"]["parameters"]
    }


def test_main_reports_a_sam_checkpoint_that_cannot_load(capsys, tmp_path, monkeypatch, tiny_pipe):
    import magedit.loading

    monkeypatch.setattr(magedit.loading, "load_pipeline", lambda *args: tiny_pipe)
    with pytest.raises(SystemExit) as done:
        app.main(["--sam-checkpoint", str(tmp_path / "sam.pth"), "--port", "0"])
    assert done.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("app.py: error: Segment Anything")
    assert "--sam-checkpoint" in err and "--tiny" in err
    with pytest.raises(SystemExit) as done:
        app.main(["--tiny", "--sam-checkpoint", str(tmp_path / "sam.pth")])
    assert done.value.code == 2 and "does not go with --tiny" in capsys.readouterr().err


# ----------------------------------------------------------------------------------------------
# Numbers from the API, faults during a job, the time limit


def run(get_pipe, out, time_limit=app.TIME_LIMIT, **changes) -> list[dict]:
    """One whole edit through the page's handler: its updates by name."""
    return [named(u) for u in app.run_edit(get_pipe, out, time_limit, **edit_kwargs(**changes))]


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"iterations": 31}, "iterations is 31, out of range; give a whole number from 0 to 30"),
        ({"iterations": 2.5}, "iterations is 2.5; give a whole number from 0 to 30"),
        ({"iterations": True}, "iterations is True, not a number"),
        ({"steps": float("nan")}, "steps is nan; give a whole number from 5 to 100"),
        ({"steps": 4}, "steps is 4, out of range"),
        ({"guidance": float("inf")}, "guidance scale is inf; give a number from 1 to 15"),
        ({"granularity": None}, "granularity is empty; give a number from 0 to 10"),
        ({"granularity": -0.5}, "granularity is -0.5, out of range"),
        ({"resolution": 300}, "resolution is 300; choose one of [256, 384, 512]"),
        ({"resolution": float("nan")}, "resolution is nan"),
        ({"inversion": "magic"}, "unknown inversion 'magic'"),
        ({"preset": "<b>x</b>"}, "unknown preset '&lt;b&gt;x&lt;/b&gt;'"),
        ({"grow": 1.5}, "grow (pixels) is 1.5; give a whole number from 0 to 50"),
        ({"grow": 51}, "grow (pixels) is 51, out of range"),
        ({"region2_weight": 0}, "the second region's weight is 0, out of range"),
        ({"region2_weight": float("nan")}, "the second region's weight is nan"),
    ],
)
def test_every_number_from_the_api_is_checked_before_any_work(
    tiny_pipe, get_pipe, tmp_path, monkeypatch, changes, message
):
    def no_unet(*args):
        raise AssertionError("the UNet ran for a refused request")

    monkeypatch.setattr(tiny_pipe, "_eps", no_unet)
    with pytest.raises(gr.Error) as error:
        next(app.run_edit(get_pipe, tmp_path, app.TIME_LIMIT, **edit_kwargs(**changes)))
    assert message in error.value.message
    assert "Traceback" not in error.value.message and str(tmp_path) not in error.value.message
    assert not list(tmp_path.iterdir())


def test_check_number_returns_ints_for_integer_controls():
    assert app.check_number("steps", 20.0) == 20 and isinstance(
        app.check_number("steps", 20.0), int
    )
    assert app.check_number("granularity", np.float32(2.5)) == 2.5
    assert app.check_number("steps", np.int64(7)) == 7
    for name, limits in app.RANGES.items():  # both ends of every range are accepted
        assert app.check_number(name, limits.low) == limits.low
        assert app.check_number(name, limits.high) == limits.high


def test_the_sliders_have_the_ranges_that_are_checked(get_pipe, tmp_path):
    demo = app.build_demo(get_pipe, tiny=True, output_dir=tmp_path)
    sliders = {b.elem_id: b for b in demo.blocks.values() if isinstance(b, gr.Slider)}
    for name in ("iterations", "granularity", "steps", "guidance", "grow", "region2_weight"):
        slider = sliders[f"magedit-{name.replace('_', '-')}"]
        assert (slider.minimum, slider.maximum) == (app.RANGES[name].low, app.RANGES[name].high)


def _unet_double(pipe, monkeypatch, fault):
    """Replace the tiny pipeline's UNet call by ``fault(call, latents, t, emb, real)``."""
    real = pipe._eps
    calls = []

    def eps(latents, t, emb):
        calls.append(latents.shape[0])
        return fault(calls, latents, t, emb, real)

    monkeypatch.setattr(pipe, "_eps", eps)
    return calls


def _finishes(get_pipe, out, **changes) -> dict:
    final = run(get_pipe, out, **changes)[-1]
    assert "Done" in final["status"] and Path(final["download"]).is_file()
    return final


def test_nan_at_step_k_stops_the_job_readably_and_the_next_job_runs(
    tiny_pipe, get_pipe, tmp_path, monkeypatch
):
    def nan_from_step_3(calls, latents, t, emb, real):
        out = real(latents, t, emb)
        # With DDIM inversion and no guidance, each denoising step is one UNet call of batch 4
        # (both branches, both halves of classifier-free guidance); the inversion's are smaller.
        return out * float("nan") if calls.count(4) >= 3 and latents.shape[0] == 4 else out

    settings = {"inversion": "ddim", "iterations": 0, "words": "green"}
    _unet_double(tiny_pipe, monkeypatch, nan_from_step_3)
    with pytest.raises(gr.Error) as error:
        run(get_pipe, tmp_path, **settings)
    assert "NaN or infinite at step 3" in error.value.message
    assert "lower the granularity" in error.value.message
    assert not list(tmp_path.rglob("*.png"))
    monkeypatch.undo()
    final = _finishes(get_pipe, tmp_path, **settings)
    assert np.isfinite(final["result"][1].astype(float)).all()


def test_cuda_out_of_memory_once_gives_a_hint_and_the_next_job_runs(
    tiny_pipe, get_pipe, tmp_path, monkeypatch
):
    import torch

    def out_of_memory_once(calls, latents, t, emb, real):
        if len(calls) == 1:
            raise torch.cuda.OutOfMemoryError(
                "CUDA out of memory. Tried to allocate 2.00 GiB (/srv/secret/cache)"
            )
        return real(latents, t, emb)

    calls = _unet_double(tiny_pipe, monkeypatch, out_of_memory_once)
    settings = {"inversion": "ddim", "steps": 7}  # steps: not an inversion in cache
    with pytest.raises(gr.Error) as error:
        run(get_pipe, tmp_path, **settings)
    message = error.value.message
    assert message.startswith("out of GPU memory") and "fewer iterations" in message
    assert "smaller resolution" in message and "/srv/secret" not in message
    assert len(calls) == 1
    final = _finishes(get_pipe, tmp_path, **settings)  # the same double: it failed only once
    assert len(calls) > 1 and "Done" in final["status"]


def test_a_slow_step_trips_the_time_limit_and_the_next_job_runs(
    tiny_pipe, get_pipe, tmp_path, monkeypatch
):
    release = threading.Event()

    def slow_third_call(calls, latents, t, emb, real):
        if len(calls) == 3:
            release.wait(timeout=30)  # a step that hangs until the test lets it go
        return real(latents, t, emb)

    calls = _unet_double(tiny_pipe, monkeypatch, slow_third_call)
    settings = {"inversion": "ddim", "steps": 9}
    with pytest.raises(gr.Error) as error:
        run(get_pipe, tmp_path, time_limit=0.5, **settings)
    assert (
        "ran longer than this page's limit of 0.5 s per job and was stopped" in error.value.message
    )
    assert "fewer steps or iterations" in error.value.message
    stopped_at = len(calls)
    release.set()  # the slow step ends; the worker stops before the next one
    assert app._PIPELINE_LOCK.acquire(timeout=60), "the stopped job still holds the pipeline"
    app._PIPELINE_LOCK.release()
    # No UNet call after the step that was running (one more only if the worker had just passed
    # its check between steps when the limit passed).
    assert len(calls) <= stopped_at + 1
    assert not list(tmp_path.rglob("*.png"))
    monkeypatch.undo()
    _finishes(get_pipe, tmp_path, **settings)


def test_the_worker_stops_at_its_next_step_once_past_the_time_limit(
    tiny_pipe, get_pipe, tmp_path, monkeypatch
):
    def tick(calls, latents, t, emb, real):
        time.sleep(0.02)  # every step takes a little time: the limit passes between steps
        return real(latents, t, emb)

    calls = _unet_double(tiny_pipe, monkeypatch, tick)
    with pytest.raises(gr.Error, match="ran longer than this page's limit of 0.05 s"):
        run(get_pipe, tmp_path, time_limit=0.05, inversion="ddim", steps=30)
    assert app._PIPELINE_LOCK.acquire(timeout=60)
    app._PIPELINE_LOCK.release()
    assert len(calls) < 30  # stopped early, not at the end of the inversion and the edit


def test_gradio_errors_recognise_out_of_memory_runtime_errors():
    with pytest.raises(gr.Error, match="out of GPU memory"), app.gradio_errors():
        raise RuntimeError("CUDA error: out of memory")
    with pytest.raises(RuntimeError, match="some other failure"), app.gradio_errors():
        raise RuntimeError("some other failure")


def test_inline_warnings_escape_the_users_text(get_pipe):
    target = "<img src=x onerror=alert(1)> a green sofa"
    status = app.check_inputs(get_pipe, SOURCE, target, "blue", "", 1)
    assert "&lt;img" in status and "<img" not in status


# ----------------------------------------------------------------------------------------------
# Second region (Eq. 9), result section


SOURCE2 = "a photo of a red sofa and a table in a living room"
TARGET2 = "a photo of a green sofa and a wooden table in a living room"


def mask_png(tmp_path, box, name="region2.png") -> str:
    mask = np.zeros((H, W), np.uint8)
    mask[box] = 255
    path = tmp_path / name
    Image.fromarray(mask).save(path)
    return str(path)


def test_second_region_is_passed_to_the_engine(get_pipe, tmp_path, monkeypatch):
    received = []

    real = get_pipe().prepare

    def prepare(*args, **kwargs):
        received.append(real(*args, **kwargs).regions)
        raise ValueError("stop before inverting")

    monkeypatch.setattr(get_pipe(), "prepare", prepare)
    table = (slice(150, 190), slice(10, 60))
    changes = {
        "source": SOURCE2,
        "target": TARGET2,
        "region2_mask_file": mask_png(tmp_path, table),
        "region2_words": "wooden",
        "region2_weight": 2.0,
    }
    with pytest.raises(gr.Error, match="stop before inverting"):
        run(get_pipe, tmp_path, **changes)
    first, second = received[-1]
    assert first.words == ["green"]  # the target's new words less the second region's
    assert np.array_equal(first.mask, _box(BOX)) and first.weight == 1.0
    assert second.words == ["wooden"] and second.weight == 2.0
    assert np.array_equal(second.mask, _box(table))
    # Painted instead of uploaded.
    region2 = painted_editor(box=table)
    with pytest.raises(gr.Error, match="stop before inverting"):
        run(get_pipe, tmp_path, **{**changes, "region2_mask_file": None, "region2_editor": region2})
    assert np.array_equal(received[-1][1].mask, _box(table))
    # No second region: one region.
    with pytest.raises(gr.Error, match="stop before inverting"):
        run(get_pipe, tmp_path, source=SOURCE2, target=TARGET2, region2_editor=painted_editor(None))
    assert len(received[-1]) == 1 and received[-1][0].words == ["green", "wooden"]


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"region2_words": "wooden"}, "the second region has edit words but no mask"),
        ({"region2_mask_file": "table"}, "the second region has a mask but no edit words"),
        (
            {"region2_mask_file": "table", "region2_words": "green", "words": "green, wooden"},
            "the edit word 'green' is given to regions 1 and 2",
        ),
        (
            {"region2_mask_file": "table", "region2_words": "green, wooden"},
            "adds no word for region 1 besides the other regions' words",
        ),
        ({"region2_mask_file": "table", "region2_words": "blue"}, "'blue' is not in the target"),
        ({"region2_mask_file": "corner", "region2_words": "wooden"}, "vanishes at the"),
    ],
)
def test_second_region_is_checked(get_pipe, tmp_path, changes, message):
    boxes = {"table": (slice(150, 190), slice(10, 60)), "corner": (slice(1, 3), slice(1, 3))}
    if "region2_mask_file" in changes:
        changes["region2_mask_file"] = mask_png(tmp_path, boxes[changes["region2_mask_file"]])
    with pytest.raises(gr.Error) as error:
        run(get_pipe, tmp_path, source=SOURCE2, target=TARGET2, **changes)
    assert message in error.value.message.replace("&#x27;", "'")


def test_a_two_region_edit_runs_and_reports_its_regions(get_pipe, tmp_path):
    table = (slice(150, 190), slice(10, 60))
    final = _finishes(
        get_pipe,
        tmp_path,
        source=SOURCE2,
        target=TARGET2,
        region2_mask_file=mask_png(tmp_path, table),
        region2_words="wooden",
        region2_weight=0.5,
    )
    regions = final["settings"]["regions"]
    assert [r["words"] for r in regions] == [["green"], ["wooden"]]
    assert [r["weight"] for r in regions] == [1.0, 0.5]
    assert regions[1]["pixels"] == 40 * 50
    before, after = final["result"]
    outside = ~(_box(BOX) | _box(table))
    outside[images.dilate(~outside, 8)] = False  # away from the feathered edges
    assert np.array_equal(after[outside], before[outside])


def test_results_go_to_the_session_gallery_newest_first_and_bounded(get_pipe, tmp_path):
    first = run(get_pipe, tmp_path)[-1]
    history = first["history"]
    assert history == [(first["download"], history[0][1])]
    second = run(get_pipe, tmp_path, history=history)[-1]
    assert [path for path, _ in second["history"]] == [second["download"], first["download"]]
    assert "Done" in second["status"]
    # Bounded: the oldest entries fall out.
    many = [(first["download"], f"old {i}") for i in range(app.GALLERY_SIZE)]
    third = run(get_pipe, tmp_path, history=many)[-1]["history"]
    assert len(third) == app.GALLERY_SIZE and not third[0][1].startswith("old")
    assert third[-1] == (first["download"], f"old {app.GALLERY_SIZE - 2}")
    # Shown without the files pruned since; captions hold no user text.
    Path(first["download"]).unlink()
    assert app.show_history(second["history"]) == [second["history"][0]]
    assert all(TARGET not in caption for _, caption in third)


def test_use_as_input_makes_the_result_the_next_photo(get_pipe, tmp_path):
    final = run(get_pipe, tmp_path)[-1]
    photo, mask_file, region2_file, status = app.use_as_input(final["download"])
    assert photo == final["download"] and mask_file is None and region2_file is None
    assert "new photo" in status
    # The upload handler then starts afresh on it: new clicks, no painting, the result's pixels.
    value, _, clicks, shown, mask_status, region2 = app.load_upload(photo)
    assert np.array_equal(value["background"], final["result"][1]) and value["layers"] == []
    assert clicks.points == () and clicks.key == images.image_hash(final["result"][1])
    assert region2["layers"] == [] and "Preparing" in mask_status
    with pytest.raises(gr.Error, match="no result yet"):
        app.use_as_input(None)
    # The next edit of it inverts anew (another photo), and says so.
    again = run(get_pipe, tmp_path, image=photo)[-1]
    assert "Reused" not in again["status"] and again["settings"]["inversion"] == "direct"


# ----------------------------------------------------------------------------------------------
# Spaces, examples, launch


def test_gpu_duration_grows_with_steps_and_iterations_and_is_capped():
    def duration(**changes):
        kwargs = {**edit_kwargs(), "time_limit": app.TIME_LIMIT, **changes}
        kwargs.pop("image")
        return app.gpu_duration(None, None, image=None, **kwargs)

    base = duration(steps=50, iterations=15, inversion="direct", resolution=512)
    assert duration(steps=100, iterations=15, inversion="direct", resolution=512) > base
    assert duration(steps=50, iterations=30, inversion="direct", resolution=512) > base
    assert duration(steps=50, iterations=15, inversion="null_text", resolution=512) > base
    assert duration(steps=50, iterations=15, inversion="direct", resolution=256) < base
    assert duration(steps=100, iterations=30, inversion="null_text", time_limit=90) == 90
    assert duration(steps=5, iterations=0, inversion="ddim", resolution=256) == 30  # the floor
    assert duration(steps="many") > 0  # unreadable: the defaults' estimate, run_edit refuses
    # Positionally, as Gradio calls it through functools.partial.
    positional = [None, None, 120.0, None, SOURCE, TARGET, "", "", "color", 15, 2.5, 50, 7.5]
    assert app.gpu_duration(*positional, "direct", 512) == base


def test_spaces_gpu_is_a_no_op_off_zero_gpu(monkeypatch):
    import inspect

    import spaces

    monkeypatch.delenv("SPACES_ZERO_GPU", raising=False)
    assert app._gpu is spaces.GPU

    def job(x):
        return x

    assert spaces.GPU(duration=app.gpu_duration)(job) is job
    assert inspect.isgeneratorfunction(app.run_edit)  # still the plain generator
    assert list(inspect.signature(app.run_edit).parameters)[:4] == [
        "get_pipeline",
        "output_dir",
        "time_limit",
        "image",
    ]


ELEM_IDS = {
    "magedit-image",
    "magedit-clickable",
    "magedit-mask-status",
    "magedit-brush",
    "magedit-mask-file",
    "magedit-source",
    "magedit-target",
    "magedit-words",
    "magedit-negative-word",
    "magedit-prompt-status",
    "magedit-edit",
    "magedit-cancel",
    "magedit-status",
    "magedit-preview",
    "magedit-attention",
    "magedit-curve",
    "magedit-result",
    "magedit-download",
    "magedit-use-as-input",
    "magedit-settings",
    "magedit-gallery",
    "magedit-region2-brush",
    "magedit-region2-mask-file",
    "magedit-region2-words",
    "magedit-region2-weight",
}


def test_the_page_is_built_without_loading_a_model_and_offers_the_examples(tmp_path):
    def never():
        raise AssertionError("a model was loaded while building the page")

    demo = app.build_demo(never, never, tiny=False, output_dir=tmp_path, time_limit=30)
    blocks = list(demo.blocks.values())
    assert {b.elem_id for b in blocks} >= ELEM_IDS
    assert not [b for b in blocks if isinstance(b, gr.HTML)]  # no user text as HTML
    assert demo.delete_cache == app.DELETE_CACHE
    examples = app.load_examples()
    assert len(examples) >= 4
    dataset = next(b for b in blocks if isinstance(b, gr.Dataset))
    assert len(dataset.samples) == len(examples)
    fns = list(demo.fns.values())
    edit = next(fn for fn in fns if fn.api_name == "edit")
    assert edit.fn.args[2] == 30.0  # the time limit bound to the handler
    assert edit.show_progress == "full" and edit.concurrency_limit == 1
    result = next(b for b in blocks if b.elem_id == "magedit-result")
    assert [b._id for b in edit.show_progress_on] == [result._id]
    # Clicking an example only fills the inputs (Gradio's load_example); nothing is cached or
    # run, and the loaders above were never called.
    (load,) = [fn for fn in fns if fn.api_name == "load_example"]
    by_id = {b._id: b.elem_id for b in blocks}
    assert [by_id[b._id] for b in load.outputs][:2] == ["magedit-image", "magedit-mask-file"]
    assert load.api_visibility == "private"
    api = demo.get_api_info()["named_endpoints"]["/edit"]
    names = [p["parameter_name"] for p in api["parameters"]]
    assert names[-4:] == ["region2_mask_file", "region2_editor", "region2_words", "region2_weight"]
    assert len(api["returns"]) == 7  # the session's gallery state is not part of the API
    with pytest.raises(ValueError, match="time_limit"):
        app.build_demo(never, tiny=True, output_dir=tmp_path, time_limit=0)


def test_examples_stay_inside_their_folder(tmp_path):
    (tmp_path / "examples.json").write_text(
        '[{"name": "x", "image": "../app.py", "mask": "m.png"}]', encoding="utf-8"
    )
    with pytest.raises(ValueError, match="no file"):
        app.load_examples(tmp_path)
    assert app.load_examples(tmp_path / "nothing") == []


def test_launch_options_serve_only_the_assets(tmp_path):
    args = app.build_parser().parse_args(["--port", "7999", "--time-limit", "45"])
    options = app.launch_options(args)
    assert options["allowed_paths"] == [str(app.ASSETS_DIR)]
    assert options["show_error"] is False and options["max_file_size"] == app.MAX_FILE_SIZE
    assert options["enable_monitoring"] is False
    assert options["server_name"] == "127.0.0.1" and options["server_port"] == 7999
    assert args.time_limit == 45.0
    assert app.build_parser().parse_args([]).time_limit == app.TIME_LIMIT
    for bad in ("0", "-3", "nan", "soon"):
        with pytest.raises(SystemExit):
            app.build_parser().parse_args(["--time-limit", bad])
    app.check_output_dir(tmp_path)  # the temp folder: Gradio accepts results from it
    app.check_output_dir(Path.cwd() / "outputs")
    with pytest.raises(ValueError, match="MAGEDIT_OUTPUT_DIR"):
        app.check_output_dir(Path("/opt/magedit-results"))


def test_on_a_cpu_the_server_keeps_a_core_for_itself(monkeypatch):
    import torch

    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        monkeypatch.setattr(app.os, "cpu_count", lambda: 2)
        assert app.leave_a_core_for_the_server() == 1 and torch.get_num_threads() == 1
        torch.set_num_threads(4)
        monkeypatch.setattr(app.os, "cpu_count", lambda: 16)
        assert app.leave_a_core_for_the_server() == 4  # never more than torch had
        monkeypatch.setattr(app.os, "cpu_count", lambda: 1)
        assert app.leave_a_core_for_the_server() == 1
    finally:
        torch.set_num_threads(before)
