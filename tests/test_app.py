"""The web page's handlers, called directly (no browser, no server) on the tiny pipeline."""

import sys
import time
from pathlib import Path

import gradio as gr
import numpy as np
import pytest
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # app.py lives at the repo root
import app  # noqa: E402

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
    value, status = app.load_upload(str(path))
    assert np.array_equal(value["background"], photo()) and value["layers"] == []
    assert "256x192" in status
    assert app.load_upload(None) == (None, "")
    bad = tmp_path / "notes.png"
    bad.write_bytes(b"not an image at all")
    with pytest.raises(gr.Error, match="not an image that can be read") as error:
        app.load_upload(str(bad))
    assert str(tmp_path) not in error.value.message


def test_a_model_that_cannot_load_is_a_page_error_without_paths(tmp_path, capsys):
    def fail():
        raise OSError(f"no file named config.json in {tmp_path}")

    with pytest.raises(gr.Error, match="see the server's log") as error:
        next(app.run_edit(fail, tmp_path, **edit_kwargs()))
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
        named(u) for u in app.run_edit(get_pipe, tmp_path, **edit_kwargs(words="green", seed=3))
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
    again = [named(u) for u in app.run_edit(get_pipe, tmp_path, **edit_kwargs())]
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
    events = app.run_edit(get_pipe, tmp_path, **edit_kwargs(**changes))
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
    events = app.run_edit(get_pipe, tmp_path, **edit_kwargs(steps=8, inversion="ddim"))
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
