"""The page: its components and the wiring of their events to ``events``.

One canvas: the photo a visitor uploads is the image they click; the mask in use is drawn on it
and named under it. The first screen at 1366 x 768 holds the examples, the canvas, the prompts,
the preset, Edit and the status line; the results stream into the column beside them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import gradio as gr

from magedit.web import events, masks
from magedit.web.admission import GPU, Admission
from magedit.web.api import add_api
from magedit.web.charts import progress_charts
from magedit.web.components import BrushEditor, PhotoInput, converter
from magedit.web.events import INVERSION_CHOICES, Defaults, Lazy, Services
from magedit.web.job import show_history, status_html
from magedit.web.limits import (
    DELETE_CACHE,
    GRADIO_QUEUE_SIZE,
    RANGES,
    RESOLUTIONS,
    TIME_LIMIT,
)

if TYPE_CHECKING:
    from magedit.pipeline import MagEditPipeline
    from magedit.segment import Segmenter

ASSETS_DIR = Path(__file__).resolve().parents[2] / "assets"
# The presets as the radio shows them: colour and texture keep the shape, object replaces it.
PRESET_CHOICES = [("color", "color"), ("texture", "texture"), ("object", "object")]
TINY_BANNER = (
    "⚠️ Offline demo (<code>--tiny</code>): random, untrained weights, so results are noise. "
    "Run <code>python app.py</code> or <code>--model /local/folder</code> for real edits."
)
HOW_TO = (
    "<ol class='magedit-howto'><li>Upload a photo or pick an example</li>"
    "<li>Click the object to change</li><li>Describe the photo, then the edit</li>"
    "<li>Press <b>Edit</b>: only the marked region changes</li></ol>"
)
CSS = """
.gradio-container { padding-top: 4px !important; }
.gradio-container > .main > .wrap > .contain { padding-top: 0 !important; }
#magedit-header { margin: 0; }
/* Gradio's web font can lack glyphs offline (the title's A rendered as a small capital). */
#magedit-header h1 { font-size: 1.3rem; margin: 0; display: inline;
                     font-family: ui-sans-serif, system-ui, "DejaVu Sans", sans-serif; }
.magedit-top { display: flex; flex-wrap: wrap; align-items: baseline; gap: .2em 1.5em; }
.magedit-howto { display: flex; flex-wrap: wrap; gap: .2em 1.6em; margin: 0 0 0 1.2em;
                 padding: 0; font-size: .92rem; }
#magedit-banner { background: #fff4ce; border: 1px solid #e0b400; border-radius: 6px;
                  padding: 0 10px; margin-top: 4px; font-size: .85rem; }
/* Examples as a strip of small thumbnails with their captions, not square tiles. */
#magedit-examples .thumbnail-item { aspect-ratio: auto !important; height: 72px; }
#magedit-examples .caption-label { font-size: .75rem; max-width: 100%; }
.magedit-mask-line { font-size: .9rem; padding: 2px 4px; }
.magedit-status { display: flex; align-items: center; gap: .2em .6em; flex-wrap: wrap;
                  min-height: 1.8em; padding: 2px 8px; border-radius: 6px;
                  background: var(--block-background-fill); font-size: .95rem; }
.magedit-status progress { width: 9em; height: .7em; accent-color: #2563eb; }
.magedit-note { color: var(--body-text-color-subdued); }
.magedit-error { color: #b91c1c; }
.magedit-status.magedit-error { background: #fef2f2; border: 1px solid #fca5a5; }
.magedit-status.magedit-done { background: #f0fdf4; border: 1px solid #86efac; }
.magedit-charts { display: flex; gap: 6px; }
.magedit-chart { flex: 1; min-width: 0; height: auto; font-size: 12px;
                 fill: var(--body-text-color); }
.magedit-chart .magedit-chart-title { font-weight: 600; font-size: 13px; }
.magedit-chart .magedit-axis { stroke: #9ca3af; stroke-width: 1; }
.magedit-chart .magedit-chart-empty { fill: #9ca3af; }

"""


def build_demo(
    load_pipeline: Callable[[], MagEditPipeline],
    load_segmenter: Callable[[], Segmenter] | None = None,
    *,
    tiny: bool,
    output_dir: Path | str,
    time_limit: float = TIME_LIMIT,
    assets_dir: Path | str = ASSETS_DIR,
    trust_forwarded: bool = False,
    more_pipelines: Sequence[Callable[[], MagEditPipeline]] = (),
) -> gr.Blocks:
    """The page. ``load_pipeline`` and ``load_segmenter`` are each called once, on first need
    (app.py loads both before launch, so a model that cannot load is reported at once); without
    ``load_segmenter`` clicking says that Segment Anything is not available. ``tiny`` shows the
    random-weights banner and picks quick defaults; ``time_limit`` is each edit's wall-clock
    limit in seconds; the examples come from ``assets_dir`` (shown as thumbnails, never run);
    ``trust_forwarded``: the page runs behind a proxy that sets X-Forwarded-For (a Space).
    ``more_pipelines``: one more pipeline of the same model per further GPU; edits then run on
    as many GPUs at once, each on a free one."""
    if not time_limit > 0:
        raise ValueError(f"time_limit is {time_limit}; give a number of seconds above 0")
    admission = Admission(trust_forwarded=trust_forwarded)
    services = Services(
        pipeline=Lazy(load_pipeline),
        segmenter=Lazy(load_segmenter or _no_segmenter),
        output_dir=Path(output_dir),
        time_limit=float(time_limit),
        admission=admission,
        examples=events.load_examples(Path(assets_dir)),
        more_pipelines=[Lazy(load) for load in more_pipelines],
    )
    defaults = Defaults.for_model(tiny)

    def slider(name: str, value: float, step: float, label: str, **kwargs: Any) -> gr.Slider:
        limits = RANGES[name]
        return gr.Slider(limits.low, limits.high, value=value, step=step, label=label, **kwargs)

    with gr.Blocks(title="MAG-Edit Studio", delete_cache=DELETE_CACHE) as demo:
        admission.blocks = demo
        banner = f"<div id='magedit-banner'>{TINY_BANNER}</div>" if tiny else ""
        gr.HTML(
            f"<div class='magedit-top'><h1 title='MAG-Edit on Stable Diffusion v1.4'>MAG-Edit "
            f"Studio</h1>{HOW_TO}</div>{banner}",
            elem_id="magedit-header",
            padding=False,
        )
        examples = gr.Gallery(
            value=[(events.example_thumbnail(e), e["caption"]) for e in services.examples],
            label="Examples (a click fills everything in)",
            columns=max(7, len(services.examples)),
            height=96,
            allow_preview=False,
            object_fit="contain",
            show_label=True,
            elem_id="magedit-examples",
            visible=bool(services.examples),
        )
        state = gr.State(masks.MaskState())
        made = gr.State(frozenset())
        history = gr.State([])
        with gr.Row(equal_height=False):
            # ---------------------------------------------------------------- the canvas
            with gr.Column(scale=5, min_width=300):
                canvas = PhotoInput(
                    label="Photo: click the object to edit",
                    type="filepath",
                    image_mode=None,
                    sources=["upload", "clipboard"],
                    format="jpeg",  # the canvas is re-sent after every click: small beats lossless
                    height=330,
                    elem_id="magedit-canvas",
                )
                mask_line = gr.HTML(events.mask_line(masks.MaskState()), elem_id="magedit-mask")
                with gr.Row():
                    click_mode = gr.Radio(
                        choices=list(masks.CLICK_MODES),
                        value="object",
                        label="A click marks",
                        show_label=False,
                        container=False,
                        scale=3,
                        min_width=180,
                        elem_id="magedit-click-mode",
                    )
                    next_button = gr.Button(
                        "Next mask", size="sm", scale=1, min_width=48, elem_id="magedit-next"
                    )
                    undo_button = gr.Button(
                        "Undo", size="sm", scale=1, min_width=48, elem_id="magedit-undo"
                    )
                    clear_button = gr.Button(
                        "Clear", size="sm", scale=1, min_width=48, elem_id="magedit-clear"
                    )
                grow = slider("grow", 0, 1, "Grow the mask (pixels)", elem_id="magedit-grow")
                with gr.Accordion("Refine with the brush", open=False, elem_id="magedit-refine"):
                    editor = BrushEditor(
                        label="Paint red to add to the mask, blue to take away",
                        type="numpy",
                        image_mode="RGBA",
                        sources=[],  # the background is the photo
                        transforms=[],  # keep the canvas the photo's size
                        layers=False,
                        brush=gr.Brush(
                            colors=[("#ff2d55", 0.6), ("#2d8cff", 0.6)],  # add, remove
                            default_color=("#ff2d55", 0.6),
                            color_mode="fixed",
                        ),
                        eraser=gr.Eraser(),
                        format="png",  # lossless: the layer's alpha is the mask
                        height=360,
                        elem_id="magedit-brush",
                    )
                with gr.Accordion("Use a mask file", open=False, elem_id="magedit-mask-files"):
                    mask_file = PhotoInput(
                        label="Mask: non-black pixels are inside; it replaces the clicks",
                        type="filepath",
                        image_mode=None,
                        sources=["upload"],
                        height=180,
                        elem_id="magedit-mask-file",
                    )
            # ---------------------------------------------------------------- the edit
            with gr.Column(scale=4, min_width=280):
                source = gr.Textbox(
                    label="Source prompt: describe the photo",
                    placeholder="a living room with a red sofa and a wooden table",
                    elem_id="magedit-source",
                )
                target = gr.Textbox(
                    label="Target prompt: the same, with the change",
                    placeholder="a living room with a green sofa and a wooden table",
                    elem_id="magedit-target",
                )
                with gr.Row():
                    words = gr.Textbox(
                        value="",  # the API's default: picked from the prompts
                        label="Edit words",
                        placeholder="from the prompts",
                        min_width=120,
                        elem_id="magedit-words",
                    )
                    negative_word = gr.Textbox(
                        value="",
                        label="Negative word",
                        placeholder="a source word to push out",
                        min_width=120,
                        elem_id="magedit-negative-word",
                    )
                preset = gr.Radio(
                    choices=PRESET_CHOICES,
                    value="color",
                    label="Preset (object may change the shape)",
                    elem_id="magedit-preset",
                )
                with gr.Row():
                    edit_button = gr.Button(
                        "Edit", variant="primary", scale=3, elem_id="magedit-edit"
                    )
                    cancel_button = gr.Button(
                        "Cancel", size="sm", scale=1, interactive=False, elem_id="magedit-cancel"
                    )
                status = gr.HTML(
                    status_html("Upload a photo or pick an example to start."),
                    elem_id="magedit-status",
                )
                with gr.Accordion("Advanced", open=False, elem_id="magedit-advanced"):
                    iterations = slider(
                        "iterations", defaults.iterations, 1, "Iterations per step (MAX_IT)",
                        elem_id="magedit-iterations",
                    )  # fmt: skip
                    granularity = slider(
                        "granularity", 2.5, 0.1, "Granularity (λp)", elem_id="magedit-granularity"
                    )
                    steps = slider("steps", defaults.steps, 1, "Steps", elem_id="magedit-steps")
                    guidance = slider(
                        "guidance", 7.5, 0.5, "Guidance scale", elem_id="magedit-guidance"
                    )
                    inversion = gr.Radio(
                        choices=INVERSION_CHOICES,
                        value=defaults.inversion,
                        label="Inversion",
                        elem_id="magedit-inversion",
                    )
                    resolution = gr.Radio(
                        choices=list(RESOLUTIONS),
                        value=defaults.resolution,
                        label="Resolution (long side, pixels)",
                        elem_id="magedit-resolution",
                    )
                    with gr.Accordion(
                        "Second region (multi-region edit)", open=False, elem_id="magedit-region2"
                    ):
                        gr.Markdown(
                            "Edit a second region with its own words in the same run (Eq. 9): "
                            "paint it (it shows in blue on the photo) or upload its mask."
                        )
                        region2_editor = BrushEditor(
                            label="Paint the second region",
                            type="numpy",
                            image_mode="RGBA",
                            sources=[],
                            transforms=[],
                            layers=False,
                            brush=gr.Brush(colors=[("#2d8cff", 0.6)], color_mode="fixed"),
                            eraser=gr.Eraser(),
                            format="png",
                            height=300,
                            elem_id="magedit-region2-brush",
                        )
                        region2_mask_file = PhotoInput(
                            label="Or its mask file (non-black pixels are inside)",
                            type="filepath",
                            image_mode=None,
                            sources=["upload"],
                            height=160,
                            elem_id="magedit-region2-mask-file",
                        )
                        with gr.Row():
                            region2_words = gr.Textbox(
                                value="",
                                label="Its edit words",
                                info="Words of the target prompt for this region only.",
                                elem_id="magedit-region2-words",
                            )
                            region2_weight = slider(
                                "region2_weight", 1.0, 0.1, "Its weight (the first region's is 1)",
                                elem_id="magedit-region2-weight",
                            )  # fmt: skip
            # ---------------------------------------------------------------- the results
            with gr.Column(scale=5, min_width=300):
                with gr.Row():
                    live = gr.Image(
                        label="Preview",
                        interactive=False,
                        height=200,
                        buttons=["fullscreen"],  # a toolbar of three would cover the label
                        elem_id="magedit-preview",
                    )
                    attention = gr.Image(
                        label="Edit words' attention",
                        interactive=False,
                        height=200,
                        buttons=["fullscreen"],
                        elem_id="magedit-attention",
                    )
                charts = gr.HTML(progress_charts([], 1), elem_id="magedit-charts")
                result = gr.ImageSlider(
                    label="Before / after",
                    interactive=False,
                    format="png",
                    max_height=480,
                    elem_id="magedit-result",
                )
                download = gr.File(
                    label="Result (full resolution PNG)",
                    interactive=False,
                    visible=False,  # shown with the first result: an empty file box says nothing
                    elem_id="magedit-download",
                )
                use_button = gr.Button("Use as input", size="sm", elem_id="magedit-use-as-input")
                with gr.Accordion("Settings and timings", open=False):
                    settings = gr.JSON(label="Used for this result", elem_id="magedit-settings")
                gallery = gr.Gallery(
                    label="This session's results (newest first)",
                    columns=4,
                    height=160,
                    interactive=False,
                    allow_preview=True,
                    object_fit="cover",
                    format="png",
                    elem_id="magedit-gallery",
                )

        # ------------------------------------------------------------------- photo and mask
        components = {
            "canvas": canvas,
            "state": state,
            "mask_line": mask_line,
            "editor": editor,
            "region2_editor": region2_editor,
            "status": status,
            "source": source,
            "target": target,
            "words": words,
            "negative_word": negative_word,
            "preset": preset,
            "grow": grow,
        }

        def outputs(*names: str) -> tuple[list, Callable[[dict[str, Any]], tuple]]:
            return [components[name] for name in names], converter(names)

        direct = {"queue": False, "api_visibility": "private", "show_progress": "hidden"}
        photo_outputs, photo_convert = outputs(
            "canvas", "state", "mask_line", "grow", "editor", "region2_editor", "status"
        )

        def on_upload(path):
            with events.SEGMENTING:
                return photo_convert(events.upload(path))

        embed_outputs, embed_convert = outputs("mask_line")

        def on_embed(mask_state):
            return embed_convert(events.embed(services, mask_state))

        canvas.upload(on_upload, canvas, photo_outputs, **direct).then(
            on_embed, state, embed_outputs, **direct
        )
        canvas.clear(lambda: photo_convert(events.clear_photo()), None, photo_outputs, **direct)

        mask_outputs, mask_convert = outputs("canvas", "state", "mask_line", "editor")

        def on_click(mask_state, mode, evt: gr.SelectData):
            return mask_convert(events.click(services, mask_state, mode, evt.index))

        canvas.select(on_click, [state, click_mode], mask_outputs, **direct)
        next_button.click(
            lambda s: mask_convert(events.next_candidate(s)), state, mask_outputs, **direct
        )
        undo_button.click(
            lambda s: mask_convert(events.undo(services, s)), state, mask_outputs, **direct
        )
        clear_button.click(
            lambda s: mask_convert(events.clear_points(s)), state, mask_outputs, **direct
        )
        grow.release(
            lambda s, g: mask_convert(events.set_grow(s, g)), [state, grow], mask_outputs, **direct
        )
        editor.input(
            lambda s, e: mask_convert(events.brush(s, e)),
            [state, editor],
            mask_outputs,
            trigger_mode="always_last",
            **direct,
        )
        mask_file.upload(
            lambda s, p: mask_convert(events.mask_file(s, p)),
            [state, mask_file],
            mask_outputs,
            **direct,
        )
        mask_file.clear(
            lambda s: mask_convert(events.mask_file(s, None)), state, mask_outputs, **direct
        )
        for trigger in (region2_editor.input, region2_mask_file.upload, region2_mask_file.clear):
            trigger(
                lambda s, e, p: mask_convert(events.region2(s, e, p)),
                [state, region2_editor, region2_mask_file],
                mask_outputs,
                **direct,
            )
        example_outputs, example_convert = outputs(
            "canvas", "state", "mask_line", "grow", "editor", "region2_editor", "status",
            "source", "target", "words", "negative_word", "preset",
        )  # fmt: skip

        def on_example(evt: gr.SelectData):
            with events.SEGMENTING:
                return example_convert(events.example(services, evt.index))

        examples.select(on_example, None, example_outputs, **direct).then(
            on_embed, state, embed_outputs, **direct
        )

        # ------------------------------------------------------------------- text checks
        # Outside the queue (a full queue of edits must not refuse a keystroke's check with
        # "busy" toasts); microseconds of tokenizing, safe beside an edit (the tokenizer is
        # locked).
        cheap = {**direct, "trigger_mode": "always_last"}
        suggest_outputs, suggest_convert = outputs("words", "negative_word")
        for box in (source, target):
            box.change(
                lambda s, t, n: suggest_convert(events.suggest_words(services, s, t, n)),
                [source, target, negative_word],
                suggest_outputs,
                **cheap,
            )
        check_outputs, check_convert = outputs("status")
        text_inputs = [source, target, words, negative_word, iterations, region2_words]
        for control in text_inputs:
            control.change(
                lambda *values: check_convert(events.check_text(services, *values)),
                text_inputs,
                check_outputs,
                **cheap,
            )

        # ------------------------------------------------------------------- the edit
        page_inputs = [
            canvas, source, target, words, negative_word, preset, iterations, granularity,
            steps, guidance, inversion, resolution, region2_words, region2_weight,
        ]  # fmt: skip
        page_names = [
            "photo", "source", "target", "words", "negative_word", "preset", "iterations",
            "granularity", "steps", "guidance", "inversion", "resolution", "region2_words",
            "region2_weight",
        ]  # fmt: skip

        def page_request(values: Sequence[Any], mask_state: masks.MaskState) -> events.Request:
            named = dict(zip(page_names, values, strict=True))
            region2 = None if mask_state.region2 is None else mask_state.region2.unpack()
            return events.Request(
                photo=mask_state.photo,
                regions=[
                    (mask_state.mask, named["words"], 1.0),
                    (region2, named["region2_words"], named["region2_weight"]),
                ],
                **{k: named[k] for k in page_names if k not in ("photo", "region2_weight")},
            )

        # The validator and the handler spell their parameters out: Gradio passes gr.Request
        # only to a named positional parameter (not to *args).
        def validate_page(
            photo, source_text, target_text, words_text, negative, preset_name, iterations_n,
            granularity_x, steps_n, guidance_x, inversion_name, resolution_px, region2_text,
            region2_w, mask_state, made_here, history_here, request: gr.Request,
        ):  # fmt: skip
            controls = [
                photo, source_text, target_text, words_text, negative, preset_name,
                iterations_n, granularity_x, steps_n, guidance_x, inversion_name, resolution_px,
                region2_text, region2_w,
            ]  # fmt: skip
            problems = events.admit_and_prepare(
                services, request, lambda: page_request(controls, mask_state)
            )
            where = {
                "photo": "photo", "mask": "photo", "region2": "region2_words",
            }  # fmt: skip
            messages = {
                where.get(k, k): events.without_prompts(v, source_text, target_text)
                for k, v in problems.items()
            }
            return [
                *(gr.validate(n not in messages, messages.get(n, "")) for n in page_names),
                *(gr.validate(True, "") for _ in range(3)),  # the session's states
            ]

        run_names = [
            "status", "preview", "attention", "charts", "result", "download", "settings",
            "history", "made", "gallery", "edit_button", "cancel_button",
        ]  # fmt: skip
        run_components = {
            "status": status, "preview": live, "attention": attention, "charts": charts,
            "result": result, "download": download, "settings": settings, "history": history,
            "made": made, "gallery": gallery, "edit_button": edit_button,
            "cancel_button": cancel_button,
        }  # fmt: skip
        run_update = converter(run_names)

        def run_convert(update: dict[str, Any]) -> tuple:
            if "history" in update:  # the gallery shows the session's results that still exist
                update = {**update, "gallery": show_history(update["history"])}
            if "download" in update:  # the file box is hidden until there is a result
                update = {**update, "download": gr.update(value=update["download"], visible=True)}
            return run_update(update)

        def edit_on_page(
            photo, source_text, target_text, words_text, negative, preset_name, iterations_n,
            granularity_x, steps_n, guidance_x, inversion_name, resolution_px, region2_text,
            region2_w, mask_state, made_here, history_here, request: gr.Request,
        ):  # fmt: skip
            controls = [
                photo, source_text, target_text, words_text, negative, preset_name,
                iterations_n, granularity_x, steps_n, guidance_x, inversion_name, resolution_px,
                region2_text, region2_w,
            ]  # fmt: skip
            prepared = events.take_prepared(
                services, request, lambda: page_request(controls, mask_state)
            )
            if isinstance(prepared, str):
                yield run_convert({"status": status_html(prepared, kind="error")})
                return
            if prepared is None:
                return
            yield run_convert(
                {
                    "status": status_html("Starting…", done=0.0),
                    "preview": None,
                    "attention": None,
                    "charts": progress_charts([], prepared.config.steps),
                    "edit_button": gr.update(interactive=False),
                    "cancel_button": gr.update(interactive=True),
                }
            )
            for update in events.job_updates(services, prepared, request, made_here, history_here):
                if "failure" in update:
                    update = {
                        "status": status_html(f"Cannot edit: {update['failure']}", kind="error")
                    }
                yield run_convert(update)

        edit_event = edit_button.click(
            edit_on_page,
            [*page_inputs, state, made, history],
            [run_components[name] for name in run_names],
            validator=validate_page,
            api_visibility="private",
            # The edits do not wait in Gradio's queue: they wait in the page's own line
            # (services.line), which says each one's place on its status line and lets Cancel
            # leave it; one edit runs at a time there.
            concurrency_limit=None,
            concurrency_id=GPU,
            show_progress="hidden",
        )
        # Edit comes back when the edit's event has ended, done or cancelled (Gradio drops a
        # press of a button whose event it still runs); after a Cancel the status line says
        # "Cancelled" last, after any update the stopped job had already sent.
        stopped = gr.State(False)

        def after_edit(was_stopped: bool):
            note = status_html("Cancelled. Press Edit to run it again.") if was_stopped else None
            return (
                note if was_stopped else gr.skip(),
                gr.update(interactive=True),
                gr.update(interactive=False),
                False,
            )

        edit_event.then(
            after_edit, stopped, [status, edit_button, cancel_button, stopped], **direct
        )
        cancel_button.click(
            lambda: (status_html("Cancelling…"), gr.update(interactive=False), True),
            None,
            [status, cancel_button, stopped],
            cancels=[edit_event],
            **direct,
        )
        use_outputs, use_convert = outputs(
            "canvas", "state", "mask_line", "grow", "editor", "region2_editor", "status"
        )
        use_button.click(
            lambda d: use_convert(events.use_as_input(d)), download, use_outputs, **direct
        ).then(on_embed, state, embed_outputs, **direct)

        # ------------------------------------------------------------------- the API
        add_api(
            services,
            defaults,
            text={"source": source, "target": target, "words": words,
                  "negative_word": negative_word, "region2_words": region2_words},
            outputs={"preview": live, "attention": attention, "result": result,
                     "download": download, "settings": settings},
        )  # fmt: skip

    # api_open=False: the queued endpoints (edit, segment) are reached through the queue only,
    # never by a direct POST that would skip it and its limits. max_size: a full queue refuses
    # new edits with Gradio's "Queue is full" message instead of growing without bound.
    demo.queue(max_size=GRADIO_QUEUE_SIZE, api_open=False)
    return demo


def _no_segmenter() -> Segmenter:
    raise ValueError("no Segment Anything model was given to build_demo (load_segmenter)")
