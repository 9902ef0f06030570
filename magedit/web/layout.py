"""The page: its components and the wiring of their events to ``events``.

One canvas: the photo a visitor uploads is the image they click; the mask in use is drawn on it
and named under it. The first screen at 1366 x 768 holds the examples, the canvas, the prompts,
the preset, Edit and the status line; the results stream into the column beside them.
"""

from __future__ import annotations

import html
import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import gradio as gr

from magedit import controls
from magedit.config import METHODS
from magedit.loading import report_clip
from magedit.web import events, masks
from magedit.web.admission import GPU, Admission
from magedit.web.api import add_api
from magedit.web.charts import progress_charts
from magedit.web.components import BrushEditor, PhotoInput, converter, named_handler
from magedit.web.job import Line, Status, job_updates, show_history
from magedit.web.limits import DELETE_CACHE, GRADIO_QUEUE_SIZE, TIME_LIMIT
from magedit.web.services import Lazy, Services

if TYPE_CHECKING:
    from magedit.pipeline import MagEditPipeline
    from magedit.segment import Segmenter

ASSETS_DIR = Path(__file__).resolve().parents[2] / "assets"
# The presets as the radio shows them: colour and texture keep the shape, object replaces it.
TINY_BANNER = (
    "⚠️ Offline demo (<code>--tiny</code>): random, untrained weights, so results are noise. "
    "Run <code>python app.py</code> or <code>--model /local/folder</code> for real edits."
)
HOW_TO = (
    "<ol class='magedit-howto'><li>Upload a photo or pick an example</li>"
    "<li>Click the object to change</li><li>Describe the photo, then the edit</li>"
    "<li>Press <b>Edit</b>: only the marked region changes</li></ol>"
    # On a phone the four steps in one line (the list would take four).
    "<p class='magedit-howto-short'>Photo → click the object → describe → <b>Edit</b></p>"
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
/* A refused input's message: one line of small text above it, not a bold paragraph that pushes
   the controls below it off the screen (the status line says it in full). */
.validation-error:not(textarea):not(input) { font-size: .78rem !important;
    font-weight: 500 !important; line-height: 1.25 !important; }
.magedit-howto-short { display: none; margin: 0; font-size: .9rem; }
.magedit-report table { width: 100%; border-collapse: collapse; font-size: .82rem; }
.magedit-report th, .magedit-report td { padding: 2px 6px; text-align: left;
    border-bottom: 1px solid var(--border-color-primary); }
.magedit-report p { margin: 2px 0 0; font-size: .78rem; }
@media (max-width: 640px) {
  .magedit-howto { display: none; }
  .magedit-howto-short { display: block; }
  #magedit-header h1 { font-size: 1.15rem; }
  #magedit-banner { font-size: .78rem; }
  /* The examples' captions whole, on two lines if need be. */
  #magedit-examples .caption-label { white-space: normal !important; overflow: visible;
      text-overflow: clip; font-size: .7rem; line-height: 1.15; }
  #magedit-examples { height: 118px !important; }
  #magedit-examples .grid-wrap { height: 112px !important; }
  #magedit-examples .thumbnail-item { height: 96px; }
  /* The canvas a little lower, so Edit comes up sooner. */
  #magedit-canvas { height: auto !important; }
  #magedit-canvas .image-container { height: 270px !important; }
  /* Compare: two panels a row, their labels whole. */
  #magedit-compare-results .grid-container { grid-template-columns: repeat(2, 1fr) !important; }
  #magedit-compare-results .caption-label { white-space: normal !important; font-size: .72rem; }
  #magedit-compare-results, #magedit-compare-results .grid-wrap { height: auto !important; }
  /* Each chart across the screen: their labels at a readable size. */
  .magedit-charts { flex-direction: column; }
  .magedit-chart { font-size: 11px; max-width: 260px; align-self: center; width: 100%; }
  /* Edit, Cancel and the status line stay at the bottom of the screen. */
  #magedit-actions { position: fixed; left: 0; right: 0; bottom: 0; z-index: 50;
      margin: 0 !important; padding: 6px 10px; gap: 4px;
      background: var(--background-fill-primary); box-shadow: 0 -2px 8px rgba(0,0,0,.18); }
  #magedit-actions .magedit-status { font-size: .85rem; }
  .gradio-container { padding-bottom: 110px !important; }
}

"""


def status_html(status: Status) -> str:
    """The status line's HTML: the text (escaped), a progress bar when ``done`` is given, and
    the quieter note (the time left)."""
    bar = ""
    if status.done is not None:
        done = min(max(status.done, 0.0), 1.0)
        bar = f'<progress value="{done:.3f}" max="1"></progress>'
    note = f' <span class="magedit-note">{html.escape(status.note)}</span>' if status.note else ""
    kind = f" magedit-{status.kind}" if status.kind else ""
    text = html.escape(status.text)
    return f'<div class="magedit-status{kind}">{bar}<span>{text}</span>{note}</div>'


def mask_line_html(line: Status) -> str:
    """The line under the photo: the mask in use, or (kind "error") what went wrong."""
    if line.kind == "error":
        return f'<div class="magedit-mask-line magedit-error">⚠ {html.escape(line.text)}</div>'
    return f'<div class="magedit-mask-line">{html.escape(line.text)}</div>'


def shown(update: dict[str, Any]) -> dict[str, Any]:
    """An update of the handlers as the page shows it: statuses and the mask line as HTML, the
    charts' data as SVG."""
    update = dict(update)
    if isinstance(update.get("status"), Status):
        update["status"] = status_html(update["status"])
    if isinstance(update.get("mask_line"), Status):
        update["mask_line"] = mask_line_html(update["mask_line"])
    if "charts" in update:
        update["charts"] = progress_charts(*update["charts"])
    return update


def report_html(reports: dict[str, Any]) -> str:
    """The edit's report (``report.EditReport`` per method) as a small table under the result:
    one column per method (compare mode), the CLIP scores or why they are missing."""
    from magedit.config import METHOD_LABELS

    def number(value: float, unit: str = "", digits: int = 1) -> str:
        if math.isinf(value):
            return "∞ (identical)"
        return "–" if math.isnan(value) else f"{value:.{digits}f}{unit}"

    first = next(iter(reports.values()))
    rows = [
        ("Outside the mask: pixels changed (result)", lambda r: f"{r.changed_outside:,}"),
        (
            "Outside: raw decode PSNR / SSIM",
            lambda r: f"{number(r.raw_psnr_outside, ' dB')} / {number(r.raw_ssim_outside, '', 3)}",
        ),
        (
            "Outside: raw decode pixels changed",
            lambda r: f"{r.raw_changed_outside:,} of {r.outside_pixels:,}",
        ),
        (
            f"In the mask: {first.ratio_name}, before → after guidance",
            lambda r: f"{r.ratio_before:.4f} → {r.ratio_after:.4f}",
        ),
    ]
    if first.clip_local is not None:
        rows.append(
            (
                f"CLIP, “{first.phrase}” in the mask / the target prompt",
                lambda r: f"{r.clip_local:.1f} / {r.clip_whole:.1f}",
            )
        )
    head = "".join(f"<th>{html.escape(METHOD_LABELS[m])}</th>" for m in reports)
    body = "".join(
        f"<tr><td>{html.escape(label)}</td>"
        + "".join(f"<td>{html.escape(cell(r))}</td>" for r in reports.values())
        + "</tr>"
        for label, cell in rows
    )
    note = ""
    if first.clip_local is None:
        note = f"<p class='magedit-note'>CLIP not measured: {html.escape(first.clip_note)}.</p>"
    return (
        f"<div class='magedit-report'><table><tr><th>Report</th>{head}</tr>{body}</table>"
        f"{note}</div>"
    )


def setting_input(control: controls.Control, tiny: bool) -> gr.components.Component:
    """The page's input of a setting of the table: a radio for a choice, else a slider."""
    options = {
        "label": control.label,
        "value": control.default(tiny),
        "elem_id": f"magedit-{control.name.replace('_', '-')}",
    }
    if control.kind == "choice":
        return gr.Radio(choices=list(control.choices), **options)
    return gr.Slider(control.low, control.high, step=control.step, **options)


def region_inputs(
    brush_label: str, colors: list[tuple[str, float]], file_label: str, brush_id: str, file_id: str
) -> tuple[BrushEditor, PhotoInput]:
    """A region's brush (painting on the photo, which is its background; the layer's alpha is
    the mask, so lossless) and its mask-file upload."""
    brush = BrushEditor(
        label=brush_label,
        type="numpy",
        image_mode="RGBA",
        sources=[],  # the background is the photo
        transforms=[],  # keep the canvas the photo's size
        layers=False,
        brush=gr.Brush(colors=colors, default_color=colors[0], color_mode="fixed"),
        eraser=gr.Eraser(),
        format="png",
        height=340,
        elem_id=brush_id,
    )
    mask_file = PhotoInput(
        label=file_label,
        type="filepath",
        image_mode=None,
        sources=["upload"],
        height=170,
        elem_id=file_id,
    )
    return brush, mask_file


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
    load_clip: Callable[[], tuple[Any, str]] | None = None,
) -> gr.Blocks:
    """The page. ``load_pipeline`` and ``load_segmenter`` are each called once, on first need
    (app.py loads both before launch, so a model that cannot load is reported at once); without
    ``load_segmenter`` clicking says that Segment Anything is not available. ``tiny`` shows the
    random-weights banner and picks quick defaults; ``time_limit`` is each edit's wall-clock
    limit in seconds; the examples come from ``assets_dir`` (shown as thumbnails, never run);
    ``trust_forwarded``: the page runs behind a proxy that sets X-Forwarded-For (a Space).
    ``more_pipelines``: one more pipeline of the same model per further GPU; edits then run on
    as many GPUs at once, each on a free one. ``load_clip``: the reports' CLIP scorer and, without
    one, why (default: ``loading.report_clip``, which never downloads)."""
    if not time_limit > 0:
        raise ValueError(f"time_limit is {time_limit}; give a number of seconds above 0")
    admission = Admission(trust_forwarded=trust_forwarded)
    services = Services(
        pipeline=Lazy(load_pipeline),
        segmenter=Lazy(load_segmenter or _no_segmenter),
        output_dir=Path(output_dir),
        time_limit=float(time_limit),
        admission=admission,
        line=Line(slots=1 + len(more_pipelines)),
        examples=events.load_examples(Path(assets_dir)),
        more_pipelines=[Lazy(load) for load in more_pipelines],
        clip=Lazy(load_clip or (lambda: report_clip(tiny))),
    )

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
        # What was last filled in from the prompts (the edit words, the negative word): a field
        # that still holds it follows the prompts; once the visitor types there, it is theirs.
        suggested = gr.State({})
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
                mask_line = gr.HTML(
                    mask_line_html(events.mask_line(masks.MaskState())), elem_id="magedit-mask"
                )
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
                # Grow, brush and mask file: one fold, so that the prompts and Edit come up
                # sooner (a phone showed Edit 1.5 screens down).
                with gr.Accordion(
                    "Refine the mask: grow it, paint it, or use a mask file",
                    open=False,
                    elem_id="magedit-refine",
                ):
                    grow = setting_input(controls.BY_NAME["grow"], tiny)
                    editor, mask_file = region_inputs(
                        "Paint red to add to the mask, blue to take away",
                        [("#ff2d55", 0.6), ("#2d8cff", 0.6)],  # add, remove
                        "Or a mask file: non-black pixels are inside; it replaces the clicks",
                        "magedit-brush",
                        "magedit-mask-file",
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
                # Edit, Cancel and the status line: a bar fixed to the bottom of a phone's
                # screen (CSS), so that Edit is at hand wherever the visitor has scrolled.
                with gr.Column(elem_id="magedit-actions"):
                    with gr.Row():
                        edit_button = gr.Button(
                            "Edit", variant="primary", scale=3, elem_id="magedit-edit"
                        )
                        cancel_button = gr.Button(
                            "Cancel",
                            size="sm",
                            scale=1,
                            interactive=False,
                            elem_id="magedit-cancel",
                        )
                    status = gr.HTML(
                        status_html(Status("Upload a photo or pick an example to start.")),
                        elem_id="magedit-status",
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
                # Below the words: an error on a word must stay on the first screen (1366x768).
                compare = gr.Checkbox(
                    value=False,
                    label="Compare with prompt-to-prompt (P2P and P2P + blend, same inversion)",
                    elem_id="magedit-compare",
                )
                settings_inputs = {"preset": setting_input(controls.BY_NAME["preset"], tiny)}
                with gr.Accordion("Advanced", open=False, elem_id="magedit-advanced"):
                    recipe_upload = gr.File(
                        label="Load a recipe (JSON; upload its photo first), then press Edit",
                        file_types=[".json"],
                        height=130,
                        elem_id="magedit-recipe-load",
                    )
                    for control in controls.PAGE_SETTINGS[1:]:  # the preset is above
                        settings_inputs[control.name] = setting_input(control, tiny)
                    with gr.Accordion(
                        "Second region (multi-region edit)", open=False, elem_id="magedit-region2"
                    ):
                        gr.Markdown(
                            "Edit a second region with its own words in the same run (Eq. 9): "
                            "paint it (it shows in blue on the photo) or upload its mask."
                        )
                        region2_editor, region2_mask_file = region_inputs(
                            "Paint the second region",
                            [("#2d8cff", 0.6)],
                            "Or its mask file (non-black pixels are inside)",
                            "magedit-region2-brush",
                            "magedit-region2-mask-file",
                        )
                        with gr.Row():
                            region2_words = gr.Textbox(
                                value="",
                                label="Its edit words",
                                info="Words of the target prompt for this region only.",
                                elem_id="magedit-region2-words",
                            )
                            region2_weight = setting_input(controls.BY_NAME["region2_weight"], tiny)
            # ---------------------------------------------------------------- the results
            # The result on top once there is one (hidden until then, and again while the next
            # edit streams); the live preview, the attention and the charts under it.
            with gr.Column(scale=5, min_width=300):
                result = gr.ImageSlider(
                    label="Before / after",
                    interactive=False,
                    format="png",
                    max_height=360,
                    visible=False,
                    elem_id="magedit-result",
                )
                with gr.Row(equal_height=False):
                    download = gr.File(
                        label="Result (full resolution PNG)",
                        interactive=False,
                        visible=False,  # shown with a result: an empty file box says nothing
                        scale=3,
                        min_width=160,
                        elem_id="magedit-download",
                    )
                    use_button = gr.Button(
                        "Use as input",
                        size="sm",
                        scale=1,
                        min_width=100,
                        visible=False,
                        elem_id="magedit-use-as-input",
                    )
                report_box = gr.HTML(visible=False, elem_id="magedit-report")
                with gr.Row(equal_height=False):
                    leakage = gr.Image(
                        label="Leakage: where the raw decode differs from the photo outside the "
                        "mask (red)",
                        interactive=False,
                        visible=False,
                        height=170,
                        buttons=["fullscreen"],
                        scale=1,
                        min_width=200,
                        elem_id="magedit-leakage",
                    )
                    recipe_file = gr.File(
                        label="Recipe (replays this edit)",
                        interactive=False,
                        visible=False,
                        scale=1,
                        min_width=200,
                        elem_id="magedit-recipe",
                    )
                with gr.Row():
                    live = gr.Image(
                        label="Preview",
                        interactive=False,
                        height=190,
                        buttons=["fullscreen"],  # a toolbar of three would cover the label
                        elem_id="magedit-preview",
                    )
                    attention = gr.Image(
                        label="Edit words' attention",
                        interactive=False,
                        height=190,
                        buttons=["fullscreen"],
                        elem_id="magedit-attention",
                    )
                charts = gr.HTML(progress_charts([], 1), elem_id="magedit-charts")
        # ------------------------------------------------------------------- compare mode
        compare_gallery = gr.Gallery(
            label="Compare: the photo and each method on the same inversion and mask",
            columns=4,
            height=300,
            object_fit="contain",
            allow_preview=True,
            preview=False,
            interactive=False,
            format="png",
            visible=False,
            elem_id="magedit-compare-results",
        )
        # ------------------------------------------------------------------- the session
        with gr.Row(equal_height=False):
            gallery = gr.Gallery(
                label="This session's results (newest first)",
                columns=6,
                height=170,
                interactive=False,
                allow_preview=True,
                preview=False,
                fit_columns=False,  # one result is one thumbnail, not a page-wide picture
                object_fit="cover",
                format="png",
                scale=3,
                elem_id="magedit-gallery",
            )
            with (
                gr.Column(scale=2, min_width=280),
                gr.Accordion("Settings and timings", open=False),
            ):
                settings = gr.JSON(label="Used for this result", elem_id="magedit-settings")

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
            **settings_inputs,
            "grow": grow,
            "suggested": suggested,
            "region2_words": region2_words,
            "region2_weight": region2_weight,
        }

        def outputs(*names: str) -> tuple[list, Callable[[dict[str, Any]], tuple]]:
            convert = converter(names)
            return [components[name] for name in names], lambda update: convert(shown(update))

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
            "source", "target", "words", "negative_word", "preset", "suggested",
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
        suggest_outputs, suggest_convert = outputs("words", "negative_word", "suggested")
        for box in (source, target):
            box.change(
                lambda *values: suggest_convert(events.suggest_words(services, *values)),
                [source, target, words, negative_word, suggested],
                suggest_outputs,
                **cheap,
            )
        check_outputs, check_convert = outputs("status")
        iterations = settings_inputs["iterations"]
        text_inputs = [source, target, words, negative_word, iterations, region2_words, state]
        for control in (*text_inputs[:-1], state):
            control.change(
                lambda *values: check_convert(events.check_text(services, *values)),
                text_inputs,
                check_outputs,
                **cheap,
            )

        # ------------------------------------------------------------------- the edit
        # The edit's inputs by name (the API's names; the canvas is the image), then the
        # session's states.
        page_inputs = {
            "image": canvas, "source": source, "target": target, "words": words,
            "negative_word": negative_word, **settings_inputs, "region2_words": region2_words,
            "region2_weight": region2_weight, "compare": compare, "state": state, "made": made,
            "history": history,
        }  # fmt: skip
        page_names = list(page_inputs)

        def page_request(values: dict[str, Any]) -> events.Request:
            mask_state = values["state"]
            region2 = None if mask_state.region2 is None else mask_state.region2.unpack()
            return events.Request(
                photo=mask_state.photo,
                source=values["source"],
                target=values["target"],
                words=values["words"],
                negative_word=values["negative_word"],
                settings={name: values[name] for name in settings_inputs},
                regions=[
                    (mask_state.mask, values["words"], 1.0),
                    (region2, values["region2_words"], values["region2_weight"]),
                ],
                region2_words=values["region2_words"],
            )

        def validate_page(values: dict[str, Any], request: gr.Request):
            problems = events.admit_and_prepare(services, request, lambda: page_request(values))
            where = events.ControlErrors(problems).where("page")
            messages = {
                name: events.without_prompts(message, values["source"], values["target"])
                for name, message in where.items()
            }
            return [gr.validate(n not in messages, messages.get(n, "")) for n in page_names]

        run_names = [
            "status", "preview", "attention", "charts", "result", "download", "settings",
            "history", "made", "gallery", "edit_button", "cancel_button", "use_button",
            "report", "leakage", "recipe", "compare",
        ]  # fmt: skip
        run_components = {
            "status": status, "preview": live, "attention": attention, "charts": charts,
            "result": result, "download": download, "settings": settings, "history": history,
            "made": made, "gallery": gallery, "edit_button": edit_button,
            "cancel_button": cancel_button, "use_button": use_button, "report": report_box,
            "leakage": leakage, "recipe": recipe_file, "compare": compare_gallery,
        }  # fmt: skip
        run_update = converter(run_names)

        def run_convert(update: dict[str, Any]) -> tuple:
            update = shown(update)
            if "history" in update:  # the gallery shows the session's results that still exist
                update = {**update, "gallery": show_history(update["history"])}
            if "download" in update and isinstance(update["download"], str):
                # The result, its file and "Use as input" are shown once there is a result.
                compared = update.get("compare")
                # The recipe is a file to download here; its mask runs would crowd the JSON.
                shown_settings = {k: v for k, v in update["settings"].items() if k != "recipe"}
                update = {
                    **update,
                    "settings": shown_settings,
                    "download": gr.update(value=update["download"], visible=True),
                    "result": gr.update(value=update["result"], visible=True),
                    "use_button": gr.update(visible=True),
                    "report": gr.update(value=report_html(update["report"]), visible=True),
                    "leakage": gr.update(value=update["leakage"], visible=True),
                    "recipe": gr.update(value=update["recipe"], visible=True),
                    "compare": gr.update(value=compared, visible=compared is not None),
                }
            return run_update(update)

        def edit_on_page(values: dict[str, Any], request: gr.Request):
            prepared = events.take_prepared(services, request, lambda: page_request(values))
            if isinstance(prepared, str):
                yield run_convert({"status": Status(prepared, kind="error")})
                return
            if prepared is None:
                return
            yield run_convert(
                {  # the previous result leaves the screen while the new edit streams
                    "status": Status("Starting…", done=0.0),
                    "preview": None,
                    "attention": None,
                    "result": gr.update(value=None, visible=False),
                    "download": gr.update(value=None, visible=False),
                    "use_button": gr.update(visible=False),
                    "report": gr.update(visible=False),
                    "leakage": gr.update(value=None, visible=False),
                    "recipe": gr.update(value=None, visible=False),
                    "compare": gr.update(value=None, visible=False),
                    "settings": None,
                    "charts": ([], prepared.config.steps),
                    "edit_button": gr.update(interactive=False),
                    "cancel_button": gr.update(interactive=True),
                }
            )
            methods = list(METHODS) if values["compare"] else ["magedit"]
            for update in job_updates(
                services, prepared, request, values["made"], values["history"], methods
            ):
                if "failure" in update:
                    update = {"status": Status(f"Cannot edit: {update['failure']}", kind="error")}
                yield run_convert(update)

        edit_event = edit_button.click(
            named_handler(edit_on_page, page_names),
            list(page_inputs.values()),
            [run_components[name] for name in run_names],
            validator=named_handler(validate_page, page_names),
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
            note = Status("Cancelled. Press Edit to run it again.")
            return (
                status_html(note) if was_stopped else gr.skip(),
                gr.update(interactive=True),
                gr.update(interactive=False),
                False,
            )

        edit_event.then(
            after_edit, stopped, [status, edit_button, cancel_button, stopped], **direct
        )
        cancel_button.click(
            lambda: (status_html(Status("Cancelling…")), gr.update(interactive=False), True),
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
        recipe_outputs, recipe_convert = outputs(
            "canvas", "state", "mask_line", "editor", "grow", "source", "target", "words",
            "negative_word", "region2_words", "region2_weight", *settings_inputs, "suggested",
            "status",
        )  # fmt: skip
        recipe_upload.upload(
            lambda s, p: recipe_convert(events.load_recipe(services, s, p)),
            [state, recipe_upload],
            recipe_outputs,
            **direct,
        )

        # ------------------------------------------------------------------- the API
        add_api(
            services,
            tiny,
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
