"""The page's API for gradio_client: ``/edit`` (a photo, its prompts and a mask file or brush
painting) and ``/segment`` (a photo and points -> Segment Anything's mask), through the same
checks, queue and job as the page.

Numbers and choices come in as JSON, so that any value a client sends ("10", [10], None) reaches
the checks and is answered in words (a slider or radio would refuse it first with a bare HTTP
400). A refused input is a ``ValidationError`` for the client, naming the parameter.
"""

from __future__ import annotations

import json
from typing import Any

import gradio as gr

from magedit import controls
from magedit.errors import InputError, one_line
from magedit.web import events, masks
from magedit.web.admission import GPU, SEGMENT
from magedit.web.components import BrushEditor, PhotoInput, converter, named_handler
from magedit.web.job import job_updates
from magedit.web.limits import SEGMENT_CONCURRENCY
from magedit.web.services import ModelUnavailable, Services, log

# The /edit API's parameters, in their order (clients may pass them by position): the text, the
# settings of the table (magedit.controls), then the region.
REGION_PARAMETERS = [
    "grow", "mask_file", "editor", "region2_mask_file", "region2_editor", "region2_words",
    "region2_weight",
]  # fmt: skip
API_PARAMETERS = [
    *events.TEXT_INPUTS,
    *(c.name for c in controls.API_SETTINGS),
    *REGION_PARAMETERS,
]
SEGMENT_PARAMETERS = ["image", "points", "labels"]


def api_defaults(tiny: bool) -> dict[str, Any]:
    """What an /edit call leaves out: no words (picked from the prompts), the settings'
    defaults (--tiny's quick ones with ``tiny``), the mask file or brush given."""
    return {
        "words": "",
        "negative_word": "",
        **controls.defaults(controls.API_SETTINGS, tiny),
        "grow": controls.BY_NAME["grow"].default(),
        "mask_file": None,
        "editor": None,
        "region2_mask_file": None,
        "region2_editor": None,
        "region2_words": "",
        "region2_weight": controls.BY_NAME["region2_weight"].default(),
    }


def add_api(services: Services, tiny: bool, text: dict[str, Any], outputs: dict[str, Any]) -> None:
    """Add the API's hidden inputs and its two endpoints to the page being built. ``text``: the
    page's text boxes the API shares (source, target, words, negative_word, region2_words);
    ``outputs``: the page's result components it answers through (preview, attention, result,
    download, settings)."""
    defaults = api_defaults(tiny)
    # The API's own inputs (gradio_client): the photo, mask files and brush values as files;
    # the numbers and choices as JSON, so that any value a client sends ("10", [10], NaN)
    # reaches our checks and is answered in words (a slider or radio would refuse it first
    # with a bare HTTP 400); the text fields shared with the page's controls.
    with gr.Group(visible=False):
        numbers = [c.name for c in controls.API_SETTINGS] + ["grow", "region2_weight"]
        inputs = {  # a str value is read as JSON text: strings are given quoted
            name: gr.JSON(value=json.dumps(defaults[name]), label=name) for name in numbers
        }
        inputs["image"] = PhotoInput(type="filepath", image_mode=None, label="image")
        for name in ("mask_file", "region2_mask_file"):
            inputs[name] = PhotoInput(type="filepath", image_mode=None, label=name)
        for name in ("editor", "region2_editor"):
            inputs[name] = BrushEditor(type="numpy", image_mode="RGBA", label=name)
        inputs.update(text)
        api_points = gr.JSON(label="points [[x, y], ...] in pixels")
        api_labels = gr.JSON(label="labels [1 or 0, ...]")
        api_mask = gr.File(label="mask PNG")
        api_score = gr.Number(label="score")
        api_status = gr.Markdown()
        api_curve = gr.JSON(label="per-step loss and in-mask ratio")
        api_segment_button = gr.Button("segment")
        api_edit_button = gr.Button("edit")

    api_names = ["status", "preview", "attention", "curve", "result", "download", "settings"]
    api_components = [
        api_status,
        outputs["preview"],
        outputs["attention"],
        api_curve,
        outputs["result"],
        outputs["download"],
        outputs["settings"],
    ]
    convert = converter(api_names)

    def validate_api(values: dict[str, Any], request: gr.Request):
        problems = events.admit_and_prepare(services, request, lambda: api_request(values))
        messages = events.ControlErrors(problems).where("api")
        return [gr.validate(n not in messages, messages.get(n, "")) for n in API_PARAMETERS]

    def edit(values: dict[str, Any], request: gr.Request):
        """Edit the photo's region: the text, the settings and the region as the page takes
        them; streams the status, the preview, the attention, the curve, then the result."""
        prepared = events.take_prepared(services, request, lambda: api_request(values), "api")
        if isinstance(prepared, str):
            raise gr.Error(prepared, title="Cannot edit", print_exception=False)
        if prepared is None:
            return
        for update in job_updates(services, prepared, request):
            if "failure" in update:
                raise gr.Error(update["failure"], title="Cannot edit", print_exception=False)
            if "status" in update:
                update = {**update, "status": status_text(update["status"])}
            yield convert(update)

    api_edit_button.click(
        named_handler(edit, API_PARAMETERS, defaults),
        [inputs[name] for name in API_PARAMETERS],
        api_components,
        validator=named_handler(validate_api, API_PARAMETERS, defaults),
        api_name="edit",
        concurrency_limit=None,  # edits wait in the page's own line (job.edit_job)
        concurrency_id=GPU,
    )

    def segment(image, points, labels, request: gr.Request = None):
        """The photo, points [[x, y], ...] in pixels and labels [1 or 0, ...] (default all
        1) -> (Segment Anything's best mask as a black-and-white PNG of the photo's size,
        its score)."""
        try:
            path, score = events.segment_api(services, image, points, labels)
        except (ValueError, ModelUnavailable) as error:
            log(str(error))
            raise gr.Error(one_line(error), title="Cannot segment", print_exception=False) from None
        finally:
            services.admission.segment_done(request)
        return path, score

    def validate_segment(image, points, labels, request: gr.Request):
        """Before the call joins the queue: the address's share of it, and the points' form and
        number (their place in the photo is checked once it is read)."""
        from magedit.segment import check_prompts

        refused = services.admission.admit_segment(request)
        problems: dict[str, str] = {}
        if refused is not None:
            log(refused)
            problems["image"] = refused
        elif image is None:
            problems["image"] = "no photo; pass the photo to segment"
        else:
            try:  # any size: only the form, the number and the labels are checked here
                check_prompts(points, labels, None, (2**31, 2**31))
            except ValueError as error:
                where = "labels" if "label" in str(error) else "points"
                problems[where] = one_line(error)
            except TypeError:
                problems["points"] = (
                    "points must be a list of [x, y] pairs in pixels and labels a list of 1 "
                    "(on the object) or 0 (off it), one per point"
                )
            for message in problems.values():
                log(f"a segment call: {message}")
            if problems:  # refused: the place it took is free again
                services.admission.segment_done(request)
        return [gr.validate(n not in problems, problems.get(n, "")) for n in SEGMENT_PARAMETERS]

    api_segment_button.click(
        segment,
        [inputs["image"], api_points, api_labels],
        [api_mask, api_score],
        validator=validate_segment,
        api_name="segment",
        concurrency_limit=SEGMENT_CONCURRENCY,
        concurrency_id=SEGMENT,
    )


def status_text(status: Any) -> str:
    """The status line for API clients (Markdown): its text and the time left; the last one
    "**Done** in 3.1 s." as before."""
    text = f"{status.text} {status.note}".strip()
    if status.kind == "done" and text.startswith("Done"):
        return f"**Done**{text[4:]}"
    return text


def api_request(named: dict[str, Any]) -> events.Request:
    """The /edit API's parameters as a request: the region is the mask file, else the brush's
    painting; the second region likewise. ControlErrors names the parameter a file or number
    came from. The photo is decoded once, here."""
    from magedit import images

    def read(field: str, load: Any, region: int | None = None) -> Any:
        try:
            return load()
        except InputError as error:
            raise events.ControlErrors([error]) from None
        except ValueError as error:
            raise events.ControlErrors([InputError(field, one_line(error), region)]) from None

    photo = named["image"]
    size = None
    if photo is not None:
        photo = read("image", lambda: images.load_image(named["image"]))
        size = photo.shape[:2]
    grow = read("grow", lambda: controls.BY_NAME["grow"].check(named["grow"]))
    regions = []
    for number, mask_file, editor, words, weight in (
        (1, named["mask_file"], named["editor"], named["words"], 1.0),
        (2, named["region2_mask_file"], named["region2_editor"],
         named["region2_words"], named["region2_weight"]),
    ):  # fmt: skip
        mask = None
        if size is not None:
            if mask_file is not None:
                load = lambda f=mask_file: images.load_mask(f, size=size)  # noqa: E731
            else:
                load = lambda e=editor: masks.painted_mask(e, size)  # noqa: E731
            mask = read("mask", load, number if number == 2 else None)
        regions.append((mask, words, weight))
    if size is not None and regions[0][0] is None:
        raise events.ControlErrors(
            [InputError("mask", "no region to edit; pass mask_file (a mask image: non-black "
             "pixels are inside) or editor (a brush painting)")]
        )  # fmt: skip
    if grow and regions[0][0] is not None:
        regions[0] = (images.dilate(regions[0][0], grow), *regions[0][1:])
    return events.Request(
        photo=photo,
        source=named["source"],
        target=named["target"],
        words=named["words"],
        negative_word=named["negative_word"],
        settings={c.name: named[c.name] for c in controls.API_SETTINGS},
        regions=regions,
        region2_words=named["region2_words"],
    )
