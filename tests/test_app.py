"""The web page's handlers, called directly (no browser, no server) on the tiny pipeline and
the tiny Segment Anything."""

import dataclasses
import sys
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
        "seed": 0,
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
    cancels = [fn for fn in demo.fns.values() if fn.fn is None and fn.cancels]
    assert cancels, "the Cancel button cancels the edit event"
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
    config = app.build_config("object", 5, 3.0, 20, 6.0, "ddim", 7, 384)
    assert config.constraint == "spatial_ratio" and config.tau1 == 16  # 40 of 50 -> 16 of 20
    assert (config.max_iter, config.scale, config.guidance_scale) == (5, 3.0, 6.0)
    assert (config.inversion, config.seed, config.resolution, config.steps) == ("ddim", 7, 384, 20)
    with pytest.raises(ValueError, match="seed"):
        app.build_config("color", 5, 3.0, 20, 6.0, "ddim", None, 384)


def test_edit_streams_and_saves_the_result(get_pipe, tmp_path):
    updates = [
        named(u)
        for u in app.run_edit(
            get_pipe, tmp_path, app.TIME_LIMIT, **edit_kwargs(words="green", seed=3)
        )
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
    assert path.parent == tmp_path and path.is_file() and path.name.startswith("magedit-")
    assert np.array_equal(np.asarray(Image.open(path)), after)
    settings = final["settings"]
    assert settings["seed"] == 3 and settings["edit words"] == ["green"]
    assert settings["config"]["steps"] == 6 and settings["inversion"] == "direct"
    assert "Done" in final["status"]

    # The same photo and source prompt again: the inversion is reused, and the page says so.
    again = [named(u) for u in app.run_edit(get_pipe, tmp_path, app.TIME_LIMIT, **edit_kwargs())]
    assert "Reused the cached inversion" in again[-1]["status"]
    assert again[-1]["settings"]["inversion"] == "reused the cached inversion"
    assert again[-1]["settings"]["edit words"] == ["green"]  # picked from the prompts
    assert len(list(tmp_path.glob("magedit-*.png"))) == 2


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"target": "  "}, "target prompt is empty"),
        ({"words": "blue"}, "edit word 'blue' is not in the target prompt"),
        ({"image": None}, "upload the photo"),
        ({"editor": painted_editor(box=None)}, "paint the region"),
        ({"editor": painted_editor(box=np.s_[:, :])}, "covers 100%"),
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
    assert np.array_equal(grown, images.grow(sam, 4)) and grown.sum() > sam.sum()
    shown = app.render_clicks(clicks, 4)
    outside = ~grown
    outside[OBJECT[1] - 10 : OBJECT[1] + 11, OBJECT[0] - 10 : OBJECT[0] + 11] = False  # the dot
    assert np.array_equal(shown[outside], photo()[outside])
    assert not np.array_equal(shown, app.render_clicks(clicks, 0))


def test_the_edit_gets_the_brush_layer_which_starts_as_the_clicked_mask(
    get_pipe, get_seg, photo_path, session, tmp_path, monkeypatch
):
    clicks = click(get_seg, photo_path, session, (100, 150))[1]
    received = []

    def check_edit(size, source, target, regions, *args):
        received.append(regions[0].mask)
        raise ValueError("stop before inverting")

    monkeypatch.setattr(get_pipe(), "check_edit", check_edit)

    def edit(editor, **changes):
        kwargs = edit_kwargs(
            **{"image": photo_path, "editor": editor, "grow": 6, "clicks": clicks, **changes}
        )
        with pytest.raises(gr.Error, match="stop before inverting"):
            next(app.run_edit(get_pipe, tmp_path, app.TIME_LIMIT, **kwargs))
        return received[-1]

    clicked = images.grow(clicks.candidates[0].mask, 6)
    # After the click the page puts the clicked mask (grown) into the brush as its layer.
    blank = painted_editor(box=None)
    blank["layers"] = []
    layered = app.brush_layer(blank, clicks, 6)
    assert len(layered["layers"]) == 1 and layered["layers"][0].shape == (H, W, 4)
    assert np.array_equal(layered["layers"][0][..., 3] > 0, clicked)
    assert np.array_equal(layered["background"], blank["background"])
    assert not np.array_equal(layered["composite"], blank["background"])
    assert np.array_equal(edit(layered), clicked)
    # Painting adds to it, the eraser (alpha back to 0) removes from it.
    corner = (slice(0, 20), slice(0, 20))
    layer = layered["layers"][0].copy()
    layer[corner] = app.BRUSH_RGBA
    rows = np.flatnonzero(clicked.any(axis=1))
    erased = (slice(rows[0], rows[0] + 5), slice(None))
    layer[erased] = 0
    expected = clicked.copy()
    expected[corner] = True
    expected[erased] = False
    assert np.array_equal(edit({**layered, "layers": [layer]}), expected)
    # The next candidate, when chosen, is the one put into the brush.
    second = app.next_candidate(clicks, 0)[1]
    layer = app.brush_layer(blank, second, 6)["layers"][0]
    assert np.array_equal(layer[..., 3] > 0, images.grow(second.candidates[1].mask, 6))
    # Cleared clicks empty the brush; no photo in the editor: nothing to change.
    assert app.brush_layer(layered, app.clear_points(clicks)[1], 6)["layers"] == []
    assert is_skip(app.brush_layer(None, clicks, 6))
    # Nothing painted (an API call): the clicked mask, grown.
    assert np.array_equal(edit(None), clicked)
    assert np.array_equal(edit(blank), clicked)
    # A mask file still overrides clicks and painting.
    file_mask = np.zeros((H, W), np.uint8)
    file_mask[100:110, 200:220] = 255
    path = tmp_path / "mask.png"
    Image.fromarray(file_mask).save(path)
    assert np.array_equal(edit(layered, mask_file=str(path)), file_mask > 0)
    # Clicks made on another photo are not used.
    other = dataclasses.replace(clicks, key="another photo")
    painted = painted_editor(box=corner)
    assert np.array_equal(edit(painted, clicks=other), _box(corner))
    kwargs = edit_kwargs(image=photo_path, editor=blank, clicks=other)
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
    assert Path(path).parent == tmp_path and Path(path).name.startswith("magedit-mask-")
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
    import magedit.cli

    monkeypatch.setattr(magedit.cli, "load_pipeline", lambda *args: tiny_pipe)
    with pytest.raises(SystemExit) as done:
        app.main(["--sam-checkpoint", str(tmp_path / "sam.pth"), "--port", "0"])
    assert done.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("app.py: error: Segment Anything")
    assert "--sam-checkpoint" in err and "--tiny" in err
    with pytest.raises(SystemExit) as done:
        app.main(["--tiny", "--sam-checkpoint", str(tmp_path / "sam.pth")])
    assert done.value.code == 2 and "does not go with --tiny" in capsys.readouterr().err
