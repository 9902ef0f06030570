"""The page's edit: the text checks, the numbers and choices of the API checked before any work,
the job (streamed, written, reported), its failures (NaN, out of memory, the time limit, cancel,
a model that cannot load) and the progress charts. Handlers are called directly on the tiny
pipeline; faults come from a double of its UNet call."""

import dataclasses
import html
import json
import math
import re
import threading
import types
import xml.etree.ElementTree as ET
from pathlib import Path

import gradio as gr
import numpy as np
import pytest
import torch
from PIL import Image
from web_support import (
    ADD,
    BOX,
    QUICK,
    REMOVE,
    SOURCE,
    SOURCE2,
    TARGET,
    TARGET2,
    H,
    W,
    box,
    edit_request,
    painted,
    photo,
    request,
    services,
    unet_double,
    write_mask,
    write_photo,
)

from magedit import controls, images
from magedit.hub import public_name
from magedit.web import build_demo, charts, events, job, layout, masks
from magedit.web.admission import Admission
from magedit.web.api import API_PARAMETERS
from magedit.web.job import JobTimeout
from magedit.web.limits import GALLERY_SIZE, TIME_LIMIT
from magedit.web.services import Lazy, ModelUnavailable

BIG = (2 * H, 2 * W)  # processed at 256 px long: half its size
BIG_BOX = (slice(96, 288), slice(128, 384))


def text(update: dict) -> str:
    """The status line's text."""
    return update["status"].text


def html_text(markup: str) -> str:
    """The page's HTML (its status line) as plain text."""
    return html.unescape(re.sub(r"<[^>]+>", " ", markup)).strip()


@pytest.fixture
def svc(tiny_pipe, tmp_path):
    return services(pipe=tiny_pipe, output_dir=tmp_path / "out")


@pytest.fixture
def path(tmp_path) -> str:
    return write_photo(tmp_path)


def run(svc, prepared, made=frozenset(), history=()) -> list[dict]:
    return list(job.run(svc, prepared, made, list(history)))


# ------------------------------------------------------------------------------ the text
@pytest.mark.parametrize(
    ("values", "says"),
    [
        (
            (SOURCE, TARGET, "blue", "", 1, ""),
            f"Edit words: edit word 'blue' is not in the target prompt '{TARGET}'",
        ),
        (
            (SOURCE, TARGET, "green", "x", 1, ""),
            f"Negative word: negative word 'x' is not in the source prompt '{SOURCE}'",
        ),
        ((SOURCE, TARGET, "sofa", "", 1, ""), "Edit words: edit word 'sofa' is in both prompts"),
        (
            ("a photo", "a photo", "", "", 1, ""),
            "Target prompt: the target prompt 'a photo' adds no new word",
        ),
        (
            (SOURCE, "a " + "very " * 80 + "green sofa", "", "", 1, ""),
            "Target prompt: the target prompt",
        ),
        (
            (SOURCE2, TARGET2, "green", "", 1, "blue"),
            "Second region: edit word 'blue' is not in the target prompt",
        ),
    ],
)
def test_check_text_names_the_control_at_fault(svc, values, says):
    update = events.check_text(svc, *values)
    assert update["status"].kind == "error" and text(update).startswith(says)


@pytest.mark.parametrize(
    ("values", "says"),
    [
        ((SOURCE, TARGET, "green", "red", 1, ""), "Ready: the edit guides “green”. Press Edit."),
        ((SOURCE, TARGET, "", "", 1, ""), "Ready: the edit guides “green”."),
        ((SOURCE, TARGET, "sofa", "", 0, ""), "Ready: the edit guides “sofa”."),  # no guidance
        ((SOURCE2, TARGET2, "green", "", 1, "wooden"), "Ready: the edit guides “green, wooden”."),
        (("", TARGET, "", "", 1, ""), "Describe the photo and the edit: two prompts."),
        ((SOURCE, "  ", "", "", 1, ""), "Describe the photo and the edit: two prompts."),
    ],
)
def test_check_text_says_ready_when_all_is_well(svc, values, says):
    update = events.check_text(svc, *values)
    assert update["status"].kind == "" and text(update).startswith(says)


def test_check_text_escapes_the_visitors_text(svc):
    update = events.check_text(
        svc, SOURCE, "<img src=x onerror=alert(1)> a green sofa", "blue", "", 1, ""
    )
    shown = layout.status_html(update["status"])
    assert "&lt;img" in shown and "<img" not in shown


@pytest.mark.parametrize(
    ("source", "target", "negative", "filled"),
    [
        (SOURCE, TARGET, "", {"words": "green", "negative_word": "red"}),
        (SOURCE, TARGET, "sofa", {"words": "green"}),  # a typed negative word stays
        (SOURCE2, TARGET2, "", {"words": "green, wooden", "negative_word": "red"}),
        # none replaced: the negative word is emptied (it followed the prompts)
        (
            "a photo of a sofa",
            "a photo of a green sofa",
            "",
            {"words": "green", "negative_word": ""},
        ),
        (SOURCE, SOURCE, "", None),  # the target adds nothing
        (SOURCE, "", "", None),
    ],
)
def test_suggest_words_fills_the_words_and_the_negative_word(svc, source, target, negative, filled):
    update = events.suggest_words(svc, source, target, "", negative, {})
    if filled is None:
        assert update == {}
        return
    assert {k: v for k, v in update.items() if k != "suggested"} == filled
    assert update["suggested"] == {**update["suggested"], **filled}


def test_filled_in_fields_follow_the_prompts_until_the_visitor_types_there(svc):
    """Newcomer item 2: after the example's green -> blue became blue -> purple, the negative
    word was left at "green" and the edit was refused. What was filled in follows the prompts;
    what the visitor typed stays."""
    first = events.suggest_words(svc, "a cat with green eyes", "a cat with blue eyes", "", "", {})
    assert (first["words"], first["negative_word"]) == ("blue", "green")
    again = events.suggest_words(
        svc, "a cat with blue eyes", "a cat with purple eyes", "blue", "green", first["suggested"]
    )
    assert (again["words"], again["negative_word"]) == ("purple", "blue")
    # The visitor types a negative word of their own: it stays; the words still follow.
    typed = events.suggest_words(
        svc, "a cat with green eyes", "a cat with red eyes", "purple", "cat", again["suggested"]
    )
    assert typed["words"] == "red" and "negative_word" not in typed
    # Cleared by the visitor: it follows again.
    cleared = events.suggest_words(
        svc, "a cat with green eyes", "a cat with red eyes", "red", "", typed["suggested"]
    )
    assert cleared["negative_word"] == "green"


def test_check_text_says_what_is_missing_before_ready(svc, path):
    """Newcomer item 3: with no photo or no mask the status line does not say "Press Edit"."""
    values = (SOURCE, TARGET, "green", "", 1, "")
    empty = masks.MaskState()
    assert "Upload a photo" in text(events.check_text(svc, *values, empty))
    state, _ = masks.new_photo(path)
    no_mask = text(events.check_text(svc, *values, state))
    assert "click the object" in no_mask and "Press Edit" not in no_mask
    marked = masks.with_base(state, box(BOX), "file")
    assert text(events.check_text(svc, *values, marked)).startswith("Ready: the edit guides")


def test_parse_words():
    assert events.parse_words(" green, ice cream ,") == ["green", "ice cream"]
    assert events.parse_words("green  velvet") == ["green", "velvet"]
    assert events.parse_words(None) == [] and events.parse_words(["green"]) == []


def test_the_controls_make_the_config():
    request = edit_request(
        None,
        preset="object",
        iterations=5,
        granularity=3.0,
        steps=20,
        guidance=6.0,
        inversion="ddim",
        resolution=384,
    )
    config = controls.config_from_values(request.settings)
    assert config.constraint == "spatial_ratio" and config.tau1 == 16  # 40 of 50 -> 16 of 20
    assert (config.max_iter, config.scale, config.guidance_scale) == (5, 3.0, 6.0)
    assert (config.inversion, config.resolution, config.steps) == ("ddim", 384, 20)
    assert isinstance(config.steps, int) and isinstance(config.max_iter, int)


# -------------------------------------------------------------------- numbers from the API
@pytest.fixture(scope="module")
def page(tiny_pipe, tmp_path_factory):
    """The page on the tiny pipeline, and the folder its results go to."""
    out = tmp_path_factory.mktemp("page") / "out"
    return types.SimpleNamespace(
        demo=build_demo(lambda: tiny_pipe, tiny=True, output_dir=out), out=out
    )


@pytest.fixture(scope="module")
def demo(page):
    return page.demo


def function(demo, name: str):
    return next(f for f in demo.fns.values() if getattr(f.fn, "__name__", "") == name)


def api_values(tmp_path, **changes) -> list:
    values = {
        "image": write_photo(tmp_path),
        "source": SOURCE,
        "target": TARGET,
        "words": "green",
        "negative_word": "",
        **QUICK,
        "grow": 0,
        "mask_file": write_mask(tmp_path, BOX),
        "editor": None,
        "region2_mask_file": None,
        "region2_editor": None,
        "region2_words": "",
        "region2_weight": 1.0,
        **changes,
    }
    assert list(values) == API_PARAMETERS
    return list(values.values())


NAN, INF = float("nan"), float("inf")


@pytest.mark.parametrize(
    ("name", "value", "says"),
    [
        ("iterations", 31, "iterations is 31, out of range; give a whole number from 0 to 30"),
        ("iterations", 2.5, "iterations is 2.5; give a whole number from 0 to 30"),
        ("iterations", True, "iterations is True, not a number; give a whole number"),
        ("steps", NAN, "steps is nan; give a whole number from 5 to 100"),
        ("steps", 10**400, "steps is inf; give a whole number from 5 to 100"),
        ("steps", 4, "steps is 4, out of range; give a whole number from 5 to 100"),
        ("steps", "10", "steps is '10', not a number; give a whole number from 5 to 100"),
        ("steps", [10], "steps is [10], not a number; give a whole number from 5 to 100"),
        ("steps", None, "steps is empty; give a whole number from 5 to 100"),
        ("guidance", INF, "guidance is inf; give a number from 1 to 15"),
        ("granularity", None, "granularity is empty; give a number from 0 to 10"),
        ("granularity", -0.5, "granularity is -0.5, out of range; give a number from 0 to 10"),
        ("resolution", 300, "resolution is 300; choose one of 128, 256, 384, 512"),
        ("resolution", True, "resolution is True; choose one of 128, 256, 384, 512"),
        ("resolution", "256", "resolution is '256'; choose one of 128, 256, 384, 512"),
        ("inversion", "magic", "inversion is 'magic'; choose one of null_text, direct, ddim"),
        ("preset", "<b>x</b>", "preset is '<b>x</b>'; choose one of color, texture, object"),
        ("grow", 1.5, "grow is 1.5; give a whole number from 0 to 50"),
        ("grow", 51, "grow is 51, out of range; give a whole number from 0 to 50"),
        ("region2_weight", 0, "region2_weight is 0, out of range"),
        ("region2_weight", NAN, "region2_weight is nan"),
    ],
)
def test_every_number_and_choice_from_the_api_is_checked_before_any_work(
    demo, tiny_pipe, tmp_path, monkeypatch, name, value, says
):
    def no_unet(*args):
        raise AssertionError("the UNet ran for a refused request")

    monkeypatch.setattr(tiny_pipe, "_eps", no_unet)
    edit = next(f for f in demo.fns.values() if f.api_name == "edit")
    values = api_values(tmp_path, **{name: value})
    who = request(f"api-{name}-{value!r}")
    checks = edit.validator(*values, who)
    refused = [(API_PARAMETERS[i], c["message"]) for i, c in enumerate(checks) if not c["is_valid"]]
    assert len(refused) == 1 and says in refused[0][1], refused
    assert refused[0][0] == name, f"the message is shown next to {refused[0][0]}, not {name}"
    # The job prepares again when the validator's edit is gone: the same words, as an error.
    with pytest.raises(gr.Error) as error:
        next(edit.fn(*values, who))
    assert says in error.value.message and "Traceback" not in error.value.message


def test_the_second_regions_weight_is_checked_against_its_range(demo, tmp_path):
    table = write_mask(tmp_path, (slice(150, 190), slice(10, 60)), "table.png")
    for weight in (0, 100.0):
        values = api_values(
            tmp_path,
            source=SOURCE2,
            target=TARGET2,
            region2_mask_file=table,
            region2_words="wooden",
            region2_weight=weight,
        )
        edit = next(f for f in demo.fns.values() if f.api_name == "edit")
        checks = edit.validator(*values, request(f"api-weight-{weight}"))
        refused = [
            (API_PARAMETERS[i], c["message"]) for i, c in enumerate(checks) if not c["is_valid"]
        ]
        assert refused == [
            (
                "region2_weight",
                f"region2_weight is {weight:g}, out of range; give a number from 0.1 to 10",
            )
        ]


@pytest.mark.parametrize(
    ("changes", "name", "says"),
    [
        ({"target": "  "}, "target", "the target prompt is empty"),
        ({"words": "blue"}, "words", "edit word 'blue' is not in the target prompt"),
        ({"negative_word": "blue"}, "negative_word", "negative word 'blue' is not in the source"),
        ({"image": None}, "image", "upload a photo first"),
        ({"mask_file": None}, "mask_file", "no region to edit; pass mask_file"),
        ({"mask_file": "full"}, "mask_file", "the mask covers 100.0% of the image"),
        ({"mask_file": "page"}, "mask_file", "the file is not a mask that can be read"),
        ({"image": "page"}, "image", "the file is not an image that can be read"),
    ],
)
def test_bad_input_is_refused_next_to_its_parameter_before_any_work(
    demo, tiny_pipe, tmp_path, monkeypatch, changes, name, says
):
    def no_unet(*args):
        raise AssertionError("the UNet ran for a refused request")

    monkeypatch.setattr(tiny_pipe, "_eps", no_unet)
    page = tmp_path / "page.png"
    page.write_bytes(b"<html><body>not a photo</body></html>")
    files = {"full": write_mask(tmp_path, np.s_[:, :], "full.png"), "page": str(page)}
    changes = {k: files.get(v, v) if isinstance(v, str) else v for k, v in changes.items()}
    edit = next(f for f in demo.fns.values() if f.api_name == "edit")
    checks = edit.validator(*api_values(tmp_path, **changes), request(f"api-bad-{name}"))
    refused = [(API_PARAMETERS[i], c["message"]) for i, c in enumerate(checks) if not c["is_valid"]]
    assert len(refused) == 1 and refused[0][0] == name and says in refused[0][1], refused
    assert str(tmp_path) not in refused[0][1]


def test_the_api_reads_the_region_from_a_mask_file_or_a_painting(tmp_path):
    from magedit.web.api import api_request

    corner = (slice(0, 40), slice(0, 40))
    named = dict(zip(API_PARAMETERS, api_values(tmp_path), strict=True))
    named.update(mask_file=None, editor=painted((BOX, ADD)))
    assert np.array_equal(api_request(named).regions[0][0], box(BOX))
    half = painted(((slice(24, 72), slice(32, 96)), ADD), size=(H // 2, W // 2))
    assert np.array_equal(api_request({**named, "editor": half}).regions[0][0], box(BOX))
    with_file = {**named, "mask_file": write_mask(tmp_path, corner, "corner.png")}
    assert np.array_equal(api_request(with_file).regions[0][0], box(corner))  # the file wins
    grown = api_request({**named, "grow": 3}).regions[0][0]
    assert np.array_equal(grown, images.dilate(box(BOX), 3))
    region2 = api_request(
        {**named, "region2_editor": painted((corner, REMOVE)), "region2_words": "wooden",
         "region2_weight": 2.0}
    ).regions[1]  # fmt: skip
    assert np.array_equal(region2[0], box(corner)) and region2[1:] == ("wooden", 2.0)
    assert api_request(named).regions[1][0] is None  # nothing painted: no second region
    with pytest.raises(events.ControlErrors) as refused:
        api_request({**named, "editor": painted()})
    assert [e.field for e in refused.value.errors] == ["mask"]


def test_a_good_api_request_passes_the_validator(demo, tmp_path, monkeypatch, tiny_pipe):
    def no_unet(*args):
        raise AssertionError("the validator ran the UNet")

    monkeypatch.setattr(tiny_pipe, "_eps", no_unet)
    edit = next(f for f in demo.fns.values() if f.api_name == "edit")
    checks = edit.validator(*api_values(tmp_path), request("api-good"))
    assert len(checks) == len(API_PARAMETERS) and all(c["is_valid"] for c in checks)


def test_the_page_shows_a_missing_mask_and_a_second_region_error_next_to_their_controls(
    demo, tmp_path
):
    from magedit.web import masks

    edit = function(demo, "edit_on_page")
    state, _ = masks.new_photo(write_photo(tmp_path))
    values = [
        state.photo, SOURCE2, TARGET2, "", "", "color", 1, 2.5, 6, 7.5, "direct", 256, "",
        1.0, False, state, frozenset(), [],
    ]  # fmt: skip
    checks = edit.validator(*values, request("page-1"))
    refused = [(i, c["message"]) for i, c in enumerate(checks) if not c["is_valid"]]
    assert refused == [(0, "no region is marked; click the object on the photo (or paint it)")]
    mask = box(BOX)
    state = masks.with_base(state, mask, "file")
    table = masks.Packed.of(box((slice(150, 190), slice(10, 60))))
    values[15] = masks.MaskState(**{**state.__dict__, "region2": table})
    checks = edit.validator(*values, request("page-2"))
    refused = [(i, c["message"]) for i, c in enumerate(checks) if not c["is_valid"]]
    assert len(refused) == 1 and refused[0][0] == 12  # region2_words
    assert refused[0][1].startswith("the second region has no edit words")
    # Without the validator (its prepared edit dropped) the job says the same in the status.
    updates = list(edit.fn(*values, request("page-3")))
    assert len(updates) == 1 and "the second region has no edit words" in html.unescape(
        updates[0][0]
    )


# ------------------------------------------------------------------------------ the job
@pytest.fixture(scope="module")
def finished(tiny_pipe, tmp_path_factory):
    """One edit of a 384x512 photo at resolution 256, run to the end: (updates, services,
    prepared)."""
    folder = tmp_path_factory.mktemp("job")
    svc = services(pipe=tiny_pipe, output_dir=folder / "out")
    path = write_photo(folder, image=photo(*BIG))
    tiny_pipe.cache.clear()
    prepared = events.prepare(svc, edit_request(path, box(BIG_BOX, BIG), words="green"))
    return run(svc, prepared), svc, prepared


def test_the_job_streams_status_previews_attention_and_charts(finished):
    updates, _, prepared = finished
    streamed, final = updates[:-1], updates[-1]
    statuses = [text(u) for u in streamed]
    assert statuses[0].startswith("Inverting the photo (direct) 1/6")
    assert any(s.startswith("Inverted in ") and s.endswith("Editing…") for s in statuses)
    assert statuses[-1].startswith("Step 6/6 · loss ")
    done = [u["status"].done for u in streamed]
    assert done == sorted(done) and done[0] < 0.3 and done[-1] == pytest.approx(1.0)
    previews = [u["preview"] for u in streamed if "preview" in u]
    heat = [u["attention"] for u in streamed if "attention" in u]
    assert len(previews) == len(heat) == 6  # one per denoising step
    for image in previews + heat:
        assert image.shape == (H, W, 3) and image.dtype == np.uint8  # at processing size
    charted = [charts.progress_charts(*u["charts"]) for u in streamed if "preview" in u]
    for step, svg in enumerate(charted, 1):
        assert svg.count("<circle") == 2 * step  # each chart: one dot per step so far
    assert charts.progress_charts(*final["charts"]).count("<circle") == 12
    assert final["preview"].shape == (H, W, 3)
    before, after = final["result"]
    assert np.array_equal(before, photo(*BIG)) and after.shape == (*BIG, 3)
    outside = ~images.dilate(prepared.mask, 16)
    assert np.array_equal(after[outside], before[outside])  # only the region changes
    assert text(final).startswith("Done in ") and final["status"].kind == "done"
    assert final["made"] == frozenset({tiny_pipe_key(finished)})


def tiny_pipe_key(finished) -> tuple:
    _, svc, prepared = finished
    return svc.pipeline().inversion_key(prepared)


def test_the_result_is_written_in_its_own_folder_named_after_the_edit(finished):
    updates, svc, _ = finished
    final = updates[-1]
    path = Path(final["download"])
    assert path.parent.parent == svc.output_dir
    assert re.fullmatch(r"[0-9a-f]{16}", path.parent.name)
    assert re.fullmatch(r"green-sofa-[0-9a-f]{4}\.png", path.name)
    assert np.array_equal(np.asarray(Image.open(path)), final["result"][1])


def keys(value) -> set[str]:
    if isinstance(value, dict):
        return set(value) | {k for v in value.values() for k in keys(v)}
    if isinstance(value, list):
        return {k for v in value for k in keys(v)}
    return set()


def test_the_settings_report_the_model_the_regions_and_the_curve(finished):
    updates, _, prepared = finished
    settings = updates[-1]["settings"]
    assert settings["model"] == "tiny-0"
    assert not [k for k in keys(settings) if "seed" in k.lower()]  # the edit is deterministic
    assert settings["source prompt"] == SOURCE and settings["target prompt"] == TARGET
    assert settings["edit words"] == ["green"] and settings["negative word"] is None
    assert settings["regions"] == [{"words": ["green"], "weight": 1.0, "pixels": 192 * 256}]
    assert settings["inversion"] == "direct" and settings["config"]["steps"] == 6
    assert set(settings["timings (s)"]) == {"inversion", "editing", "decode", "total"}
    curve = settings["curve"]
    assert [point["step"] for point in curve] == [1, 2, 3, 4, 5, 6]
    assert all(np.isfinite([p["loss"], p["in_mask_ratio"]]).all() for p in curve)
    assert updates[-1]["curve"] == curve
    assert settings["file"] == Path(updates[-1]["download"]).name
    json.dumps(settings)  # the page shows it as JSON


def test_the_session_gallery_is_newest_first_and_bounded(finished):
    updates, svc, prepared = finished
    first = updates[-1]
    history = first["history"]
    assert history == [(first["download"], history[0][1])]
    assert re.fullmatch(r"green sofa · \d\d:\d\d", history[0][1])
    second = run(svc, prepared, first["made"], history)[-1]
    assert [p for p, _ in second["history"]] == [second["download"], first["download"]]
    many = [(first["download"], f"old {i}") for i in range(GALLERY_SIZE)]
    third = run(svc, prepared, first["made"], many)[-1]["history"]
    assert len(third) == GALLERY_SIZE and not third[0][1].startswith("old")
    assert third[-1] == (first["download"], f"old {GALLERY_SIZE - 2}")
    # Shown without the files pruned since.
    Path(first["download"]).unlink()
    assert job.show_history(second["history"]) == [second["history"][0]]


def test_reused_is_said_only_for_this_sessions_own_inversion(svc, path):
    svc.pipeline().cache.clear()
    prepared = events.prepare(svc, edit_request(path, steps=7))
    first = run(svc, prepared)  # session A inverts the photo
    assert "Reused" not in text(first[-1]) and first[-1]["settings"]["inversion"] == "direct"
    other = run(svc, prepared)  # session B: the same photo, cached by A
    assert not any("Reused" in text(u) for u in other)
    assert other[-1]["settings"]["inversion"] == "direct"
    assert other[-1]["settings"]["timings (s)"]["inversion"] == 0  # not made by this edit
    again = run(svc, prepared, first[-1]["made"])  # session A again
    assert any(text(u) == "Reused this session's inversion of the photo. Editing…" for u in again)
    assert "Reused this session's inversion." in text(again[-1])
    assert again[-1]["settings"]["inversion"] == "reused this session's inversion"


def test_the_progress_bar_never_goes_back_when_the_inversion_is_cached(svc, path):
    prepared = events.prepare(svc, edit_request(path, steps=8))
    for made in (frozenset(), run(svc, prepared)[-1]["made"]):  # cached: another's, then its own
        updates = run(svc, prepared, made)
        done = [u["status"].done for u in updates[:-1]]
        assert done == sorted(done), done


@pytest.mark.parametrize(
    ("model", "shown"),
    [
        ("CompVis/stable-diffusion-v1-4", "CompVis/stable-diffusion-v1-4"),
        ("/srv/secret/models/sd14", "local model 'sd14'"),
        ("./models/sd14", "local model 'sd14'"),
        ("../sd14", "local model 'sd14'"),
        ("~/models/sd14", "local model 'sd14'"),
    ],
)
def test_a_local_model_folder_is_not_shown(model, shown):
    assert public_name(model) == shown


def test_a_local_model_folder_stays_out_of_the_settings(svc, path, monkeypatch, tiny_pipe):
    monkeypatch.setattr(tiny_pipe, "model_id", "/srv/secret/models/sd14")
    final = run(svc, events.prepare(svc, edit_request(path, steps=5)))[-1]
    assert final["settings"]["model"] == "local model 'sd14'"
    assert "/srv/secret" not in json.dumps(final["settings"]) + final["status"].text


# ------------------------------------------------------------------------------ failures
def finishes(svc, prepared) -> dict:
    final = run(svc, prepared)[-1]
    assert text(final).startswith("Done in ") and Path(final["download"]).is_file()
    return final


def test_nan_at_step_k_stops_the_job_in_words_and_the_next_job_runs(
    page, tiny_pipe, tmp_path, monkeypatch
):
    from magedit.web import masks

    def nan_from_step_3(calls, latents, t, emb, real):
        out = real(latents, t, emb)
        # DDIM inversion, no guidance: each denoising step is one UNet call of batch 4 (both
        # branches, both halves of classifier-free guidance); the inversion's are smaller.
        return out * float("nan") if calls.count(4) >= 3 and latents.shape[0] == 4 else out

    edit = function(page.demo, "edit_on_page")
    state, _ = masks.new_photo(write_photo(tmp_path))
    state = masks.with_base(state, box(BOX), "file")
    values = [
        state.photo, SOURCE, TARGET, "green", "", "color", 0, 2.5, 8, 7.5, "ddim", 256, "",
        1.0, False, state, frozenset(), [],
    ]  # fmt: skip
    out = page.out
    written = set(out.rglob("*.png")) if out.exists() else set()
    unet_double(tiny_pipe, monkeypatch, nan_from_step_3)
    who = request("page-nan")
    assert all(c["is_valid"] for c in edit.validator(*values, who))
    updates = list(edit.fn(*values, who))
    button = {c.elem_id: i for i, c in enumerate(edit.outputs)}
    starting = updates[0]
    assert html_text(starting[0]) == "Starting…"
    assert starting[button["magedit-edit"]]["interactive"] is False  # no second press
    assert starting[button["magedit-cancel"]]["interactive"] is True
    last = updates[-1]
    status = html.unescape(last[0])
    assert "magedit-error" in status
    assert "Cannot edit: the edited latents became NaN or infinite at step 3" in status
    assert "lower the granularity" in status
    assert set(out.rglob("*.png")) == written  # nothing written
    monkeypatch.undo()
    assert all(c["is_valid"] for c in edit.validator(*values, who))
    updates = list(edit.fn(*values, who))
    assert "Done in " in updates[-1][0]
    gallery = next(i for i, c in enumerate(edit.outputs) if c.elem_id == "magedit-gallery")
    assert len(updates[-1][gallery]) == 1  # the page's gallery shows the new result


def test_cuda_out_of_memory_once_gives_a_hint_and_the_next_job_runs(
    svc, path, tiny_pipe, monkeypatch
):
    def out_of_memory_once(calls, latents, t, emb, real):
        if len(calls) == 1:
            raise torch.cuda.OutOfMemoryError(
                "CUDA out of memory. Tried to allocate 2.00 GiB (/srv/secret/cache)"
            )
        return real(latents, t, emb)

    calls = unet_double(tiny_pipe, monkeypatch, out_of_memory_once)
    prepared = events.prepare(svc, edit_request(path, inversion="ddim", steps=7))
    svc.pipeline().cache.clear()
    with pytest.raises(torch.cuda.OutOfMemoryError) as error:
        run(svc, prepared)
    message = job.failure_message(error.value)
    assert message == job.OUT_OF_MEMORY and "/srv/secret" not in message
    assert message.startswith("out of GPU memory; use fewer iterations or steps, a smaller")
    assert len(calls) == 1 and not svc.output_dir.exists()
    finishes(svc, prepared)  # the same double: it failed once only
    assert len(calls) > 1


def test_failure_messages_are_words_and_bugs_stay_bugs():
    assert job.failure_message(FloatingPointError("NaN at step 3")) == "NaN at step 3"
    assert job.failure_message(ValueError("bad\n  input")) == "bad input"
    assert job.failure_message(JobTimeout("too long")) == "too long"
    assert job.failure_message(RuntimeError("CUDA error: out of memory")) == job.OUT_OF_MEMORY
    assert job.failure_message(RuntimeError("some other failure")) is None
    assert job.failure_message(KeyError("a bug")) is None


@pytest.fixture
def clock(monkeypatch):
    """The job's clock, moved by hand."""
    now = [1000.0]
    monkeypatch.setattr(job.time, "monotonic", lambda: now[0])
    return now


def test_the_time_limit_trips_while_a_step_hangs_and_the_next_job_runs(
    svc, path, tiny_pipe, clock, monkeypatch
):
    hanging, release, ended = threading.Event(), threading.Event(), threading.Event()
    workers = []

    def hang_at_third_call(calls, latents, t, emb, real):
        if len(calls) == 3:
            workers.append(threading.current_thread())
            clock[0] += TIME_LIMIT + 1  # the step takes longer than the job's limit
            hanging.set()
            release.wait(timeout=120)  # (a guard: a broken limit fails, it does not hang)
            ended.set()
        return real(latents, t, emb)

    calls = unet_double(tiny_pipe, monkeypatch, hang_at_third_call)
    prepared = events.prepare(svc, edit_request(path, inversion="ddim", steps=9))
    svc.pipeline().cache.clear()
    updates = job.run(svc, prepared, frozenset(), [])
    assert text(next(updates)).startswith("Inverting the photo (ddim) 1/9")
    assert hanging.wait(timeout=120)
    with pytest.raises(JobTimeout) as error:
        list(updates)
    assert str(error.value) == (
        "the edit ran longer than this page's limit of 600 s per job and was stopped; use "
        "fewer steps or iterations, a smaller resolution, or the direct or DDIM inversion"
    )
    assert not ended.is_set() and len(calls) == 3  # stopped while the step still hangs
    (worker,) = workers
    assert worker.cancelled.is_set()
    release.set()  # the slow step ends; the worker stops before the next one
    worker.join(timeout=120)
    assert not worker.is_alive() and len(calls) == 3
    assert job.pipeline_lock(tiny_pipe).acquire(blocking=False)
    job.pipeline_lock(tiny_pipe).release()
    assert not svc.output_dir.exists()
    monkeypatch.undo()
    finishes(svc, prepared)


def test_the_worker_stops_at_its_next_step_once_past_the_time_limit(
    svc, path, tiny_pipe, clock, monkeypatch
):
    def late_after_third_call(calls, latents, t, emb, real):
        if len(calls) == 3:
            clock[0] += TIME_LIMIT + 1
        return real(latents, t, emb)

    calls = unet_double(tiny_pipe, monkeypatch, late_after_third_call)
    prepared = events.prepare(svc, edit_request(path, inversion="ddim", steps=11))
    svc.pipeline().cache.clear()
    with pytest.raises(JobTimeout, match="ran longer than this page's limit of 600 s"):
        run(svc, prepared)
    assert len(calls) == 3  # not one UNet call past the limit


@pytest.fixture
def paused(tiny_pipe, monkeypatch):
    """The UNet stops before its third call until ``go`` is set: (reached, go, calls,
    workers)."""
    reached, go = threading.Event(), threading.Event()
    workers = []

    def pause_at_third_call(calls, latents, t, emb, real):
        if len(calls) == 3:
            workers.append(threading.current_thread())
            reached.set()
            go.wait(timeout=120)  # (a guard: a broken cancel fails, it does not hang)
        return real(latents, t, emb)

    calls = unet_double(tiny_pipe, monkeypatch, pause_at_third_call)
    yield reached, go, calls, workers
    go.set()


def test_cancel_stops_the_worker_at_its_next_step_and_frees_the_pipeline(
    svc, path, tiny_pipe, paused
):
    reached, go, calls, _ = paused
    prepared = events.prepare(svc, edit_request(path, inversion="ddim", steps=12))
    svc.pipeline().cache.clear()
    worker = job.Worker(tiny_pipe, prepared, TIME_LIMIT)
    worker.start()
    assert reached.wait(timeout=120)
    worker.cancel()
    go.set()
    worker.join(timeout=120)
    assert not worker.is_alive() and len(calls) == 3
    reported = list(worker)  # what it reported before it stopped, and no error
    assert [(r.done, r.total) for r in reported] == [(1, 12), (2, 12)]
    assert job.pipeline_lock(tiny_pipe).acquire(blocking=False)
    job.pipeline_lock(tiny_pipe).release()


def test_closing_the_stream_cancels_its_worker(svc, path, paused):
    """Gradio's Cancel closes the event's generator."""
    reached, go, calls, workers = paused
    prepared = events.prepare(svc, edit_request(path, inversion="ddim", steps=13))
    svc.pipeline().cache.clear()
    updates = job.run(svc, prepared, frozenset(), [])
    next(updates)
    assert reached.wait(timeout=120)
    updates.close()
    (worker,) = workers
    assert worker.cancelled.is_set()
    go.set()
    worker.join(timeout=120)
    assert not worker.is_alive() and len(calls) == 3
    assert not svc.output_dir.exists()


def test_a_model_that_cannot_load_is_reported_without_server_paths(path, tmp_path, capsys):
    def fail():
        raise OSError(f"no file named config.json in {tmp_path}/models/sd14")

    svc = services(output_dir=tmp_path / "out")
    svc.pipeline = Lazy(fail)
    with pytest.raises(ModelUnavailable) as error:
        events.prepare(svc, edit_request(path))
    assert str(error.value) == "the model could not be loaded; see the server's log"
    assert job.failure_message(error.value) == str(error.value)
    status = events.check_text(svc, SOURCE, TARGET, "", "", 1, "")["status"]
    assert "the model could not be loaded" in status.text and status.kind == "error"
    assert events.suggest_words(svc, SOURCE, TARGET, "", "", {}) == {}
    status = status.text
    problems = events.admit_and_prepare(svc, request(), lambda: edit_request(path))
    assert [(e.field, str(e)) for e in problems] == [
        ("image", "the model could not be loaded; see the server's log")
    ]
    assert str(tmp_path) not in status + str(problems)
    assert f"{tmp_path}/models/sd14" in capsys.readouterr().err  # in the server's log


# ------------------------------------------------------------------------------ charts
SVG = "{http://www.w3.org/2000/svg}"


def parse_charts(markup: str) -> list[ET.Element]:
    root = ET.fromstring(markup)
    assert root.get("class") == "magedit-charts"
    return list(root)


def test_the_charts_draw_two_series_with_a_dot_per_step():
    steps = [(1, 2.4, 0.010), (2, 2.3, 0.030), (3, 2.35, 0.020)]
    loss, ratio = parse_charts(charts.progress_charts(steps, 6))
    assert [c.get("id") for c in (loss, ratio)] == ["magedit-chart-loss", "magedit-chart-ratio"]
    colours = []
    for chart, values in ((loss, [2.4, 2.3, 2.35]), (ratio, [0.010, 0.030, 0.020])):
        (line,) = chart.iter(f"{SVG}polyline")
        assert line.get("stroke") not in (None, "none") and line.get("fill") == "none"
        colours.append(line.get("stroke"))
        points = [tuple(map(float, p.split(","))) for p in line.get("points").split()]
        dots = list(chart.iter(f"{SVG}circle"))
        assert len(points) == len(dots) == 3
        assert {d.get("fill") for d in dots} == {line.get("stroke")}
        xs, ys = zip(*points, strict=True)
        assert xs == tuple(sorted(xs))  # left to right by step
        order = np.argsort(values)[::-1]  # the largest value is drawn highest (smallest y)
        assert list(np.argsort(ys)) == list(order)
    assert colours[0] != colours[1]


def test_the_empty_chart_says_when_it_appears():
    for chart in parse_charts(charts.progress_charts([], 1)):
        assert not list(chart.iter(f"{SVG}polyline")) and not list(chart.iter(f"{SVG}circle"))
        said = [t.text for t in chart.iter(f"{SVG}text")]
        assert "appears when an edit runs" in said


# ------------------------------------------------------------------------------ several GPUs
def test_two_pipelines_run_two_edits_at_once_and_a_cancel_stops_only_its_own(
    tmp_path, path, monkeypatch
):
    # Two CPU pipelines stand for two GPUs. Each edit's first UNet call waits until both edits
    # have reached theirs: they can finish only if they run at the same time, each on its own
    # pipeline. Then the first is cancelled (its generator closed, as Gradio's Cancel does)
    # while the second finishes and writes its result.
    from magedit import MagEditPipeline

    pipes = [MagEditPipeline.tiny(seed=0), MagEditPipeline.tiny(seed=0)]
    svc = services(pipe=pipes[0], output_dir=tmp_path / "out", more_pipelines=[lambda: pipes[1]])
    assert svc.line.slots == 2
    reached = [threading.Event(), threading.Event()]
    cancel_seen = threading.Event()
    for number, pipe in enumerate(pipes):

        def fault(calls, latents, t, emb, real, number=number):
            reached[number].set()
            assert all(event.wait(timeout=120) for event in reached)  # both run at once
            if number == 0 and len(calls) == 3:
                cancel_seen.wait(timeout=120)  # the first is cancelled in the middle
            return real(latents, t, emb)

        unet_double(pipe, monkeypatch, fault)
    prepared = events.prepare(svc, edit_request(path, inversion="ddim", steps=6))
    jobs = [job.edit_job(svc, prepared, request(f"s{n}")) for n in range(2)]
    first_update, second = [], {}
    starts = threading.Thread(target=lambda: first_update.append(next(jobs[0])))
    finishes = threading.Thread(target=lambda: second.update(updates=list(jobs[1])))
    starts.start()
    finishes.start()
    starts.join(timeout=300)  # its first step is done: both edits had reached their UNet
    assert first_update and all(event.is_set() for event in reached)
    jobs[0].close()  # Cancel, while its worker waits in its third UNet call
    cancel_seen.set()
    finishes.join(timeout=300)
    assert not finishes.is_alive()
    final = second["updates"][-1]
    assert "Done in" in final["status"].text and Path(final["download"]).is_file()
    written = list((tmp_path / "out").rglob("*.png"))
    assert len(written) == 1  # the cancelled edit wrote nothing
    for pipe in pipes:  # both pipelines are free again
        assert job.pipeline_lock(pipe).acquire(timeout=120)
        job.pipeline_lock(pipe).release()
    with svc.line.ticket() as ticket:
        assert svc.line.take(ticket, 0) and svc.line.slot(ticket) == 0


def test_with_two_gpus_a_third_edit_waits_and_is_told_so(tmp_path):
    from magedit.web.job import Line

    line = Line(slots=2)
    svc = types.SimpleNamespace(line=line, admission=Admission())
    with line.ticket() as first, line.ticket() as second, line.ticket() as third:
        assert line.take(first, 0) and line.take(second, 0)
        assert (line.slot(first), line.slot(second), line.slot(third)) == (0, 1, None)
        assert not line.take(third, 0) and line.ahead(third) == 2
        waiting = job.wait_turn(svc, third, request("c"), seconds=0)
        said = next(waiting)["status"].text
        assert "Waiting for one of the 2 GPUs: 2 edits ahead of yours" in said
        waiting.close()
    with line.ticket() as a, line.ticket() as b:
        assert line.take(a, 0) and line.take(b, 0) and {line.slot(a), line.slot(b)} == {0, 1}
    with pytest.raises(ValueError, match="at least one slot"):
        Line(slots=0)


def test_the_next_in_line_takes_a_free_slot_as_soon_as_the_first_has_taken_its_own():
    # Two slots, two waiting edits: the second must not wait out its timeout once the first
    # has taken slot 0 while slot 1 is free.
    from magedit.web.job import Line

    line = Line(slots=2)
    with line.ticket() as first, line.ticket() as second:
        took = []
        waiter = threading.Thread(target=lambda: took.append(line.take(second, 60)))
        waiter.start()
        assert line.take(first, 0)
        waiter.join(timeout=30)  # far less than its 60 s timeout
        assert not waiter.is_alive() and took == [True]
        assert (line.slot(first), line.slot(second)) == (0, 1)


def test_a_re_edit_goes_to_the_gpu_that_holds_its_inversion(tmp_path, path):
    from magedit import MagEditPipeline
    from magedit.web.job import Line

    line = Line(slots=3)
    with line.ticket() as ticket:
        assert line.take(ticket, 0, prefer=[2, 1]) and line.slot(ticket) == 2
    pipes = [MagEditPipeline.tiny(seed=0), MagEditPipeline.tiny(seed=0)]
    svc = services(pipe=pipes[0], output_dir=tmp_path / "out", more_pipelines=[lambda: pipes[1]])
    prepared = events.prepare(svc, edit_request(path, inversion="ddim", steps=5))
    assert job.holding(svc, prepared) == []
    list(job.run(svc, prepared, frozenset(), [], slot=1))  # inverted on the second GPU
    assert job.holding(svc, prepared) == [1]
    updates = list(job.edit_job(svc, prepared, request("again")))
    assert "Reused" in updates[-1]["status"].text or updates[-1]["made"]
    assert (
        len(pipes[0].cache) == 0
    )  # the re-edit ran on the second GPU: nothing inverted on the first


def test_an_api_edit_that_fails_midway_says_why_in_words(demo, tiny_pipe, tmp_path, monkeypatch):
    # The API shares the page's job (events.job_updates): a failure the client can act on
    # ends the call with a gr.Error in words, after the updates that came before it.
    def nan_from_step_3(calls, latents, t, emb, real):
        out = real(latents, t, emb)
        return out * float("nan") if calls.count(4) >= 3 and latents.shape[0] == 4 else out

    edit = next(f for f in demo.fns.values() if f.api_name == "edit")
    values = api_values(tmp_path, inversion="ddim", iterations=0, steps=8)
    who = request("api-nan")
    assert all(c["is_valid"] for c in edit.validator(*values, who))
    unet_double(tiny_pipe, monkeypatch, nan_from_step_3)
    updates = []
    with pytest.raises(gr.Error) as error:
        for update in edit.fn(*values, who):
            updates.append(update)
    assert updates  # the inversion's and the first steps' progress came first
    assert error.value.title == "Cannot edit"
    assert error.value.message.startswith("the edited latents became NaN or infinite at step 3")


def test_the_time_left_comes_from_the_measured_steps_and_the_plan(svc, path):
    """Newcomer item 6: "about 12 s left" at step 1 when 7 s remained: the guided first steps
    cost many times the last ones, so the time spent per step so far overstated the rest. The
    estimate weighs each step by the pipeline's plan of its UNet calls at the pace measured."""
    from magedit.pipeline import EditEvent

    prepared = events.prepare(svc, edit_request(path, steps=20, iterations=15, inversion="direct"))
    inversion = svc.pipeline().invert(prepared)
    stream = job.Stream(prepared)
    stream.add(inversion)
    plan = stream.plan
    guided = [i for i in range(20) if prepared.config.guide_at(i)]
    assert guided == list(range(10)) and plan.editing[0] > 5 * plan.editing[-1]
    # A run whose steps take the plan's shares of 1 s per guided step: the truth after step 1.
    pace = 1.0 / plan.editing[0]
    truth = pace * sum(plan.editing[1:])
    shape = inversion.image.shape[:2]
    event = EditEvent(
        phase="denoise", step=1, total=20, loss=1.0, in_mask_ratio=0.1,
        preview=np.zeros((*shape, 3), np.uint8), attention=np.zeros((6, 8), np.float32),
        elapsed=1.0,
    )  # fmt: skip
    said = stream.add(event)["status"].note
    seconds = float(re.fullmatch(r"about (\d+) s left", said).group(1))
    assert seconds == pytest.approx(truth, abs=1)
    naive = 1.0 * (20 - 1)  # elapsed * steps left / steps done: what the page said before
    assert abs(naive - truth) > 5


# ------------------------------------------------------------------------------ evidence
def test_a_compare_job_runs_each_method_on_one_inversion(svc, path, tiny_pipe):
    """Issue 23: Compare runs MAG-Edit and the baselines one after another in one job, on one
    inversion; the status says which runs; the panels are labelled with method and time."""
    from magedit.config import METHODS

    prepared = events.prepare(svc, edit_request(path, steps=6, inversion="ddim"))
    svc.pipeline().cache.clear()
    updates = list(job.run(svc, prepared, frozenset(), [], methods=list(METHODS)))
    statuses = [text(u) for u in updates if "status" in u]
    assert sum(s.startswith("Inverting the photo") for s in statuses) >= 1  # inverted once
    for label in ("MAG-Edit (1/3)", "P2P + latent blend (2/3)", "P2P (3/3)"):
        assert any(s.startswith(label) for s in statuses), (label, statuses)
    done = [u["status"].done for u in updates[:-1] if u["status"].done is not None]
    assert done == sorted(done) and done[-1] == pytest.approx(1.0)
    final = updates[-1]
    labels = [caption for _, caption in final["compare"]]
    assert labels[0] == "Photo" and len(labels) == 4
    assert [re.sub(r" · [\d.]+ s$", "", c) for c in labels[1:]] == [
        "MAG-Edit", "P2P + latent blend", "P2P"
    ]  # fmt: skip
    assert set(final["report"]) == set(METHODS)
    assert final["result"][1] is final["compare"][1][0]  # the result is MAG-Edit's
    assert final["settings"]["report"]["magedit"]["changed_outside"] == 0


def test_cancel_stops_a_compare_between_or_within_methods(svc, path, tiny_pipe, paused):
    from magedit.config import METHODS

    reached, go, calls, _ = paused
    prepared = events.prepare(svc, edit_request(path, inversion="ddim", steps=9))
    svc.pipeline().cache.clear()
    worker = job.Worker(tiny_pipe, prepared, TIME_LIMIT, list(METHODS))
    worker.start()
    assert reached.wait(timeout=120)
    worker.cancel()
    go.set()
    worker.join(timeout=120)
    assert not worker.is_alive() and len(calls) == 3
    assert not any(isinstance(r, job.MethodStart) and r.number > 1 for r in worker)
    assert job.pipeline_lock(tiny_pipe).acquire(blocking=False)
    job.pipeline_lock(tiny_pipe).release()


def test_every_result_has_its_report_leakage_and_recipe(finished):
    updates, _, prepared = finished
    final = updates[-1]
    said = final["report"]["magedit"]
    assert said.psnr_outside == math.inf and said.changed_outside == 0
    assert final["leakage"].shape == (*BIG, 3)
    recipe = json.loads(Path(final["recipe"]).read_text())
    assert Path(final["recipe"]).parent == Path(final["download"]).parent
    assert recipe["source_prompt"] == SOURCE and recipe["model"] == "tiny-0"
    shown = layout.report_html(final["report"])
    assert "∞ (identical)" not in shown or "Outside" in shown
    assert "0.0 / " not in shown and "CLIP not measured" in shown
    assert final["settings"]["report"]["magedit"]["psnr_outside"] == "inf"
    assert final["compare"] is None


def test_a_recipe_loads_onto_its_photo_only(svc, path, tmp_path, finished):
    from magedit.recipe import Recipe

    updates, fin_svc, prepared = finished
    recipe_path = updates[-1]["recipe"]
    state, _ = masks.new_photo(path)
    # Not this photo: refused in words, nothing changes.
    refused = events.load_recipe(fin_svc, state, recipe_path)
    assert refused["status"].kind == "error" and "the photo is not the recipe's" in text(refused)
    assert "state" not in refused
    # Its own photo: the mask, the prompts, the words and the settings fill the page.
    big = write_photo(tmp_path, "big.png", photo(*BIG))
    state, _ = masks.new_photo(big)
    loaded = events.load_recipe(fin_svc, state, recipe_path)
    assert loaded["state"].source == "recipe"
    assert np.array_equal(loaded["state"].mask, prepared.mask)
    assert (loaded["source"], loaded["target"], loaded["words"]) == (SOURCE, TARGET, "green")
    assert loaded["steps"] == 6 and loaded["preset"] == "color" and loaded["resolution"] == 256
    assert text(loaded).startswith("Recipe loaded")
    # A recipe with settings the page does not offer is refused with the way to replay it.
    odd = Recipe.from_json(Path(recipe_path).read_text())
    odd_path = tmp_path / "odd.json"
    odd_path.write_text(dataclasses.replace(odd, config=odd.config.replace(tau1=3)).to_json())
    said = text(events.load_recipe(fin_svc, state, str(odd_path)))
    assert "settings are not ones this page offers (tau1 differ)" in said
    assert "from the command line" in said


def test_the_gpu_reservation_covers_every_method_of_a_compare():
    from magedit.config import METHODS, config_from

    svc = types.SimpleNamespace(time_limit=TIME_LIMIT)
    prepared = types.SimpleNamespace(config=config_from("color"), negative_word=None)
    one = job.gpu_duration(svc, prepared)
    three = job.gpu_duration(svc, prepared, None, None, 0, list(METHODS))
    assert three > one
    per_call = job.reservation_seconds(prepared.config)
    baselines = job.reservation_seconds(prepared.config, methods=["p2p"]) - sum(
        job.Plan.of(prepared.config, False).inversion
    )
    assert three >= one + 2 * baselines - 1 and per_call > 0


def test_a_visitors_braces_are_text_not_a_setting(svc):
    """A prompt with "{steps}" in it is quoted as typed, never with the page's word for the
    setting (messages name settings as {field})."""
    target = "a photo of a {steps} sofa"
    said = text(events.check_text(svc, SOURCE, target, "blue", "", 1, ""))
    assert f"edit word 'blue' is not in the target prompt '{target}'" in said, said


def test_a_loaded_recipe_keeps_its_words_while_its_prompts_stay(svc, finished):
    updates, fin_svc, prepared = finished
    suggested = {"words": "green", "negative_word": "", "prompts": [SOURCE, TARGET]}
    assert events.suggest_words(fin_svc, SOURCE, TARGET, "green", "", suggested) == {}
    # Once the visitor changes a prompt, the filled-in fields follow it again.
    changed = events.suggest_words(fin_svc, SOURCE, TARGET2, "green", "", suggested)
    fresh = events.suggest_words(fin_svc, SOURCE, TARGET2, "", "", None)
    assert fresh["words"] == "green, wooden, table" and fresh["negative_word"] == "red"
    assert changed["words"] == fresh["words"] and changed["negative_word"] == "red"


def test_a_recipe_the_page_cannot_hold_is_refused_with_the_way_to_replay_it(
    svc, tmp_path, finished
):
    from magedit.recipe import Recipe

    updates, fin_svc, prepared = finished
    recipe = Recipe.from_json(Path(updates[-1]["recipe"]).read_text())
    big = write_photo(tmp_path, "big.png", photo(*BIG))
    state, _ = masks.new_photo(big)
    odd = tmp_path / "negative-prompt.json"
    odd.write_text(dataclasses.replace(recipe, negative_word="sofa",
                                       negative_prompt="a sofa").to_json())  # fmt: skip
    said = text(events.load_recipe(fin_svc, state, str(odd)))
    assert "a negative prompt of its own" in said and "from the command line" in said
    assert events.words_text(["ice cream"]) == "ice cream,"
    assert events.parse_words(events.words_text(["ice cream"])) == ["ice cream"]
