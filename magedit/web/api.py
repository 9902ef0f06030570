"""The page's API for gradio_client: ``/edit`` (a photo, its prompts and a mask file or brush
painting) and ``/segment`` (a photo and points -> Segment Anything's mask), through the same
checks, queue and job as the page.

Numbers and choices come in as JSON, so that any value a client sends ("10", [10], None) reaches
the checks and is answered in words (a slider or radio would refuse it first with a bare HTTP
400). A refused input is a ``ValidationError`` for the client, naming the parameter.
"""

from __future__ import annotations

import html
import json
import re
from collections.abc import Sequence
from typing import Any

import gradio as gr

from magedit.errors import one_line
from magedit.web import events, masks
from magedit.web.admission import GPU, SEGMENT
from magedit.web.components import BrushEditor, PhotoInput, converter, log
from magedit.web.events import Defaults, Services
from magedit.web.limits import RANGES, SEGMENT_CONCURRENCY


def add_api(
    services: Services, defaults: Defaults, text: dict[str, Any], outputs: dict[str, Any]
) -> None:
    """Add the API's hidden inputs and its two endpoints to the page being built. ``text``: the
    page's text boxes the API shares (source, target, words, negative_word, region2_words);
    ``outputs``: the page's result components it answers through (preview, attention, result,
    download, settings)."""
    # The API's own inputs (gradio_client): the photo, mask files and brush values as files;
    # the numbers and choices as JSON, so that any value a client sends ("10", [10], NaN)
    # reaches our checks and is answered in words (a slider or radio would refuse it first
    # with a bare HTTP 400); the text fields shared with the page's controls.
    with gr.Group(visible=False):
        api_settings = {  # a str value is read as JSON text: strings are given quoted
            name: gr.JSON(value=json.dumps(value), label=name)
            for name, value in (
                ("preset", "color"),
                ("iterations", defaults.iterations),
                ("granularity", 2.5),
                ("steps", defaults.steps),
                ("guidance", 7.5),
                ("inversion", defaults.inversion),
                ("resolution", defaults.resolution),
                ("grow", 0),
                ("region2_weight", 1.0),
            )
        }
        api_image = PhotoInput(type="filepath", image_mode=None, label="image")
        api_mask_file = PhotoInput(type="filepath", image_mode=None, label="mask_file")
        api_editor = BrushEditor(type="numpy", image_mode="RGBA", label="editor")
        api_region2_mask_file = PhotoInput(
            type="filepath", image_mode=None, label="region2_mask_file"
        )
        api_region2_editor = BrushEditor(type="numpy", image_mode="RGBA", label="region2_editor")
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

    def edit_api_request(values: Sequence[Any]) -> events.Request:
        named = dict(zip(API_PARAMETERS, values, strict=True))
        return api_request(named)

    def validate_api(
        image, source, target, words, negative_word, preset, iterations, granularity,
        steps, guidance, inversion, resolution, grow, mask_file, editor,
        region2_mask_file, region2_editor, region2_words, region2_weight,
        request: gr.Request,
    ):  # fmt: skip
        values = [
            image, source, target, words, negative_word, preset, iterations, granularity,
            steps, guidance, inversion, resolution, grow, mask_file, editor,
            region2_mask_file, region2_editor, region2_words, region2_weight,
        ]  # fmt: skip
        problems = events.admit_and_prepare(services, request, lambda: edit_api_request(values))
        where = {"photo": "image", "mask": "mask_file", "region2": "region2_mask_file"}
        messages = {where.get(k, k): v for k, v in problems.items()}
        return [gr.validate(n not in messages, messages.get(n, "")) for n in API_PARAMETERS]

    def edit(
        image,
        source,
        target,
        words="",
        negative_word="",
        preset="color",
        iterations=defaults.iterations,
        granularity=2.5,
        steps=defaults.steps,
        guidance=7.5,
        inversion=defaults.inversion,
        resolution=defaults.resolution,
        grow=0,
        mask_file=None,
        editor=None,
        region2_mask_file=None,
        region2_editor=None,
        region2_words="",
        region2_weight=1.0,
        request: gr.Request = None,
    ):
        values = [
            image, source, target, words, negative_word, preset, iterations, granularity,
            steps, guidance, inversion, resolution, grow, mask_file, editor,
            region2_mask_file, region2_editor, region2_words, region2_weight,
        ]  # fmt: skip
        prepared = events.take_prepared(services, request, lambda: edit_api_request(values))
        if isinstance(prepared, str):
            raise gr.Error(prepared, title="Cannot edit", print_exception=False)
        if prepared is None:
            return
        convert = converter(api_names)
        for update in events.job_updates(services, prepared, request):
            if "failure" in update:
                raise gr.Error(update["failure"], title="Cannot edit", print_exception=False)
            if "status" in update:
                update = {**update, "status": _plain(update)}
            yield convert(update)

    api_edit_button.click(
        edit,
        [
            api_image,
            text["source"],
            text["target"],
            text["words"],
            text["negative_word"],
            api_settings["preset"],
            api_settings["iterations"],
            api_settings["granularity"],
            api_settings["steps"],
            api_settings["guidance"],
            api_settings["inversion"],
            api_settings["resolution"],
            api_settings["grow"],
            api_mask_file,
            api_editor,
            api_region2_mask_file,
            api_region2_editor,
            text["region2_words"],
            api_settings["region2_weight"],
        ],  # fmt: skip
        api_components,
        validator=validate_api,
        api_name="edit",
        concurrency_limit=None,  # edits wait in the page's own line (events.edit_job)
        concurrency_id=GPU,
    )

    def segment(image, points, labels, request: gr.Request = None):
        """The photo, points [[x, y], ...] in pixels and labels [1 or 0, ...] (default all
        1) -> (Segment Anything's best mask as a black-and-white PNG of the photo's size,
        its score)."""
        try:
            path, score = events.segment_api(services, image, points, labels)
        except (ValueError, events.ModelUnavailable) as error:
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
        [api_image, api_points, api_labels],
        [api_mask, api_score],
        validator=validate_segment,
        api_name="segment",
        concurrency_limit=SEGMENT_CONCURRENCY,
        concurrency_id=SEGMENT,
    )


SEGMENT_PARAMETERS = ["image", "points", "labels"]
API_PARAMETERS = [
    "image", "source", "target", "words", "negative_word", "preset", "iterations",
    "granularity", "steps", "guidance", "inversion", "resolution", "grow", "mask_file",
    "editor", "region2_mask_file", "region2_editor", "region2_words", "region2_weight",
]  # fmt: skip


def api_request(named: dict[str, Any]) -> events.Request:
    """The /edit API's parameters as a request: the region is the mask file, else the brush's
    painting; the second region likewise. ControlErrors names the parameter a file or number
    came from. The photo is decoded once, here."""
    from magedit import images

    def read(field: str, load: Any) -> Any:
        try:
            return load()
        except ValueError as error:
            raise events.ControlErrors({field: one_line(error)}) from None

    photo = named["image"]
    size = None
    if photo is not None:
        photo = read("photo", lambda: images.load_image(named["image"]))
        size = photo.shape[:2]
    grow = read("grow", lambda: RANGES["grow"].check(named["grow"]))
    regions = []
    for field, mask_file, editor, words, weight in (
        ("mask", named["mask_file"], named["editor"], named["words"], 1.0),
        ("region2", named["region2_mask_file"], named["region2_editor"],
         named["region2_words"], named["region2_weight"]),
    ):  # fmt: skip
        mask = None
        if size is not None:
            if mask_file is not None:
                mask = read(field, lambda f=mask_file: images.load_mask(f, size=size))
            else:
                mask = read(field, lambda e=editor: masks.painted_mask(e, size))
        regions.append((mask, words, weight))
    if size is not None and regions[0][0] is None:
        raise events.ControlErrors(
            {"mask": "no region to edit; pass mask_file (a mask image: non-black pixels are "
             "inside) or editor (a brush painting)"}
        )  # fmt: skip
    if grow and regions[0][0] is not None:
        regions[0] = (images.dilate(regions[0][0], grow), *regions[0][1:])
    return events.Request(
        photo=photo,
        regions=regions,
        **{
            k: named[k]
            for k in (
                "source", "target", "words", "negative_word", "preset", "iterations",
                "granularity", "steps", "guidance", "inversion", "resolution", "region2_words",
            )
        },
    )  # fmt: skip


def _plain(update: dict[str, Any]) -> str:
    """The status line for API clients as Markdown text ("**Done** in 3.1 s." at the end)."""
    if "download" in update:
        return f"**Done** in {update['settings']['timings (s)']['total']:.1f} s."
    return html.unescape(re.sub(r"<[^>]+>", " ", update["status"])).strip()
