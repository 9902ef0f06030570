"""MAG-Edit Studio, the web page: upload a photo, click the object, type the edit, watch it run.

    python app.py            # SD v1.4 and SAM vit_b ($MAGEDIT_MODEL / --model, --sam-checkpoint)
    python app.py --tiny     # offline demo on random weights: the results are noise

This file lays out the page and wires its events; the ``magedit`` library does the work. The
event handlers are module-level functions (the model getters and the output folder bound with
``functools.partial``), so the tests call them without a browser. What one visitor clicked lives
in that visitor's ``gr.State`` (``Clicks``); the models are shared.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import functools
import html
import inspect
import json
import math
import numbers
import os
import queue
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Generic, TypeVar

import gradio as gr
import numpy as np
import pandas as pd

from magedit import files, images, preview, prompts
from magedit.config import (
    DEFAULT_SAM_MODEL,
    PRESETS,
    SAM_MODEL_TYPES,
    SD14_MODEL,
    EditConfig,
    config_from,
    default_model,
)
from magedit.errors import is_out_of_memory, one_line

try:  # Hugging Face's ZeroGPU decorator; outside a ZeroGPU Space it returns the function as is
    import spaces

    _gpu = spaces.GPU
except ImportError:  # spaces is optional off Hugging Face: the same no-op

    def _gpu(task=None, **_: Any):
        return task if callable(task) else (lambda fn: fn)


if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

    from magedit.inversion import Inversion
    from magedit.pipeline import EditEvent, EditResult, MagEditPipeline, PreparedEdit, Region
    from magedit.segment import MaskCandidate, Segmenter

T = TypeVar("T")

# Results are written here under generated names and pruned to the newest MAX_OUTPUTS files.
# Gradio copies what a handler returns into its own cache and serves it from there, so this folder
# is not among launch's allowed_paths; it must lie under the working folder or the temp folder,
# where Gradio accepts files returned by handlers (main() checks).
OUTPUT_DIR = Path(
    os.environ.get("MAGEDIT_OUTPUT_DIR") or Path(__file__).resolve().parent / "outputs"
)
ASSETS_DIR = Path(__file__).resolve().parent / "assets"  # examples; the only folder served as is
MAX_OUTPUTS = 200
QUEUE_SIZE = 16  # edits waiting beyond this are refused with "queue full" rather than piling up
TIME_LIMIT = 600.0  # seconds of wall clock per edit job (--time-limit); stopped with an error
MAX_FILE_SIZE = "25mb"  # uploads above this are refused by Gradio before our code sees them
# Gradio's cache (uploads, returned images): every 30 minutes, delete what is older than 2 hours.
DELETE_CACHE = (1800, 7200)
GALLERY_SIZE = 12  # this session's newest results kept in its gallery
# Guidance iterations and inversion steps can come many per second; the page is refreshed at most
# this often for them (every denoising step is always shown).
REFRESH_SECONDS = 0.25

INVERSION_CHOICES = [
    ("null-text (the paper's; slower)", "null_text"),
    ("direct (fast, exact reconstruction)", "direct"),
    ("DDIM (fastest; the background may drift)", "ddim"),
]
PRESET_INFO = (
    "color / texture: change what the region looks like, keep its shape. "
    "object: replace the object (its shape may change)."
)
# The values each handler's update holds, in the order of the edit event's outputs (the API
# returns all but "history", the session's gallery state).
EDIT_OUTPUTS = (
    "status",
    "preview",
    "attention",
    "curve",
    "result",
    "download",
    "settings",
    "history",
)


@dataclasses.dataclass(frozen=True)
class Range:
    """The values a numeric control accepts, on the page (its slider) and through the API."""

    label: str  # how error messages name the control
    low: float
    high: float
    integer: bool = False

    def text(self) -> str:
        kind = "a whole number" if self.integer else "a number"
        return f"{kind} from {self.low:.10g} to {self.high:.10g}"


# Every number the edit takes. The sliders are built from these, and run_edit checks each value
# against them, because the API lets a client send anything (outside the range, 2.5 for an integer
# field, NaN).
RANGES = {
    "iterations": Range("iterations", 0, 30, integer=True),
    "granularity": Range("granularity", 0, 10),
    "steps": Range("steps", 5, 100, integer=True),  # 5: a quick, rough look
    "guidance": Range("guidance scale", 1, 15),
    "grow": Range("grow (pixels)", 0, 50, integer=True),
    "region2_weight": Range("the second region's weight", 0.1, 10),
}
RESOLUTIONS = [256, 384, 512]
CURVE_COLUMNS = ["step", "value", "series"]
CURVE_TYPES = {"step": float, "value": float, "series": str}
# Click to segment.
CLICK_MODES = ["object", "background"]  # what a click on the photo adds: label 1 or label 0
POINT_COLORS = {1: (0, 200, 0), 0: (230, 0, 0)}  # by label: green on the object, red off it
DISPLAY_SIDE = 1024  # the photo to click on is sent at most this long (after every click)
SEGMENT_TITLE = "Cannot segment"
TINY_BANNER = (
    "⚠️ **Offline demo (`--tiny`)**: the model has random, untrained weights, so the results are "
    "noise. Use it to try the page; run `python app.py` (or `--model /local/folder`) for real "
    "edits. Defaults are lowered here (fewer steps and iterations, 256 pixels) so runs are quick."
)
CSS = """
#magedit-banner { background: #fff4ce; border: 1px solid #e0b400; border-radius: 8px;
                  padding: 4px 12px; }
"""


# ----------------------------------------------------------------------------------------------
# Defaults of the controls


@dataclasses.dataclass(frozen=True)
class Defaults:
    """Initial values of the controls (paper defaults for real weights; quick ones for --tiny)."""

    steps: int = 50
    iterations: int = 15
    inversion: str = "null_text"
    resolution: int = 512

    @classmethod
    def for_model(cls, tiny: bool) -> Defaults:
        return cls(steps=20, iterations=3, inversion="direct", resolution=256) if tiny else cls()


# ----------------------------------------------------------------------------------------------
# Errors


class _Cancelled(Exception):
    """Raised inside the worker thread when the page cancelled the edit."""


class JobTimeout(Exception):
    """An edit ran past its wall-clock limit (``--time-limit``) and was stopped."""


OUT_OF_MEMORY = (
    "out of GPU memory; use fewer iterations or steps, a smaller resolution (Advanced), or try "
    "again when other edits have finished"
)


def user_error(message: str, title: str = "Cannot edit") -> gr.Error:
    """A gr.Error showing ``message`` as text (the modal renders HTML; prompts are user text)."""
    return gr.Error(html.escape(one_line(message), quote=False), title=title, print_exception=False)


@contextlib.contextmanager
def gradio_errors(title: str = "Cannot edit") -> Iterator[None]:
    """Turn the library's expected failures into gr.Error with its message: bad input
    (ValueError), diverged latents (FloatingPointError), a job past its time limit (JobTimeout)
    and out of GPU memory. Anything else is a bug: it propagates, and the page shows a generic
    error (launch(show_error=False)) without its traceback."""
    try:
        yield
    except gr.Error:
        raise
    except (ValueError, FloatingPointError, JobTimeout) as error:
        raise user_error(str(error), title) from None
    except RuntimeError as error:
        if is_out_of_memory(error):
            raise user_error(OUT_OF_MEMORY, title) from None
        raise


# ----------------------------------------------------------------------------------------------
# The models: built once; the pipeline used by one edit at a time, the segmenter by any number of
# clicks at once (its embedding cache is thread-safe)


class Lazy(Generic[T]):
    """Calls ``load`` on first use, once, even when two events ask at the same time."""

    def __init__(self, load: Callable[[], T]):
        self._load = load
        self._value: T | None = None
        self._lock = threading.Lock()

    def __call__(self) -> T:
        with self._lock:
            if self._value is None:
                self._value = self._load()
            return self._value


# MagEditPipeline is not re-entrant. The edit event runs one at a time (concurrency_limit=1), but
# a cancelled edit's thread may still be finishing its step when the next edit starts: it waits.
_PIPELINE_LOCK = threading.Lock()


def _pipeline(get_pipeline: Callable[[], MagEditPipeline]) -> MagEditPipeline:
    try:
        return get_pipeline()
    except (ValueError, OSError) as error:
        # The reason names the server's folders: it goes to the server's log, not to the page.
        print(f"app.py: error: {one_line(str(error))}", file=sys.stderr)
        raise user_error("the model could not be loaded; see the server's log") from None


# ----------------------------------------------------------------------------------------------
# Inputs: image, mask, prompts, settings


def load_upload(
    image: Any,
) -> tuple[dict[str, Any] | None, str, Clicks, np.ndarray | None, str, dict[str, Any] | None]:
    """Image upload -> (the brush editor's value with the photo as background, status line, this
    session's new ``Clicks``, the photo to click on, the mask's status line, the second region's
    brush editor's value).

    ``image`` is what gr.Image gives (a file path) or None when the image was cleared. The
    clicks and the painting of the previous photo are dropped; ``embed_photo`` runs next.
    """
    if image is None:
        return None, "", Clicks(), None, "", None
    with gradio_errors():
        photo = images.load_image(image)
    height, width = photo.shape[:2]
    clicks = Clicks(key=images.image_hash(photo), size=(height, width), display=_display(photo))
    # The brushes paint over the photo as shown for clicking (at most DISPLAY_SIDE long): their
    # layers are scaled to the photo's size when read.
    value = {"background": clicks.display, "layers": [], "composite": clicks.display}
    return (
        value,
        f"Photo {width}x{height}. Click the object to edit (or paint the region, or upload a "
        "mask file).",
        clicks,
        clicks.display,
        "Preparing Segment Anything for this photo…",
        dict(value),
    )


def read_mask(
    editor: dict[str, Any] | None,
    mask_file: Any,
    size: tuple[int, int],
    clicked: np.ndarray | None = None,
) -> np.ndarray:
    """The region to edit as an HxW bool mask at ``size`` = (height, width) of the photo.

    ``mask_file`` (a path or array), when given, is used instead of anything else. Otherwise it
    is ``clicked`` (the clicked mask, grown; ``clicked_mask``) refined with the brush: ``editor``
    is a gr.ImageEditor value {"background", "layers", "composite"} with RGBA layers, scaled to
    ``size``; its painted pixels (alpha above 0) are added to the region, except those painted
    in the "remove" colour (bluer than red, ``REMOVE_RGBA``), which are taken out of it.
    """
    with gradio_errors():
        if mask_file is not None:
            return images.load_mask(mask_file, size=size)
        if clicked is not None and clicked.shape != tuple(size):
            raise ValueError(
                f"the clicked mask is {clicked.shape[1]}x{clicked.shape[0]} pixels but the photo "
                f"is {size[1]}x{size[0]}; clear the points and click the object again"
            )
        mask = np.zeros(size, dtype=bool) if clicked is None else clicked.copy()
        add, remove = _brush_strokes(editor, size)
        mask = (mask | add) & ~remove
        if not mask.any():
            raise ValueError(
                "no region is marked; click the object on the photo, paint the region to edit on "
                "it with the brush, or upload a mask file"
            )
        return mask


def _brush_strokes(
    editor: dict[str, Any] | None, size: tuple[int, int]
) -> tuple[np.ndarray, np.ndarray]:
    """(added, removed): the pixels an editor value's layers paint in the "add" colour (or any
    colour at least as red as it is blue) and in the "remove" colour, (H, W) bool at ``size``."""
    add = np.zeros(size, dtype=bool)
    remove = np.zeros(size, dtype=bool)
    for layer in (editor or {}).get("layers") or []:
        if layer is None:
            continue
        array = np.asarray(layer)
        painted = _painted(array)
        if not painted.any():
            continue
        bluer = painted & _bluer(array)
        for target, pixels in ((add, painted & ~bluer), (remove, bluer)):
            if pixels.any():  # layers are the canvas's size: the shown photo's, scaled here
                target |= images.load_mask(pixels, size=size)
    return add, remove


def _bluer(array: np.ndarray) -> np.ndarray:
    """Pixels of an RGB(A) layer more blue than red (the "remove" brush); False for masks."""
    if array.ndim == 3 and array.shape[2] >= 3:
        return array[..., 2].astype(int) > array[..., 0].astype(int)
    return np.zeros(array.shape[:2], dtype=bool)


def _editor_mask(editor: dict[str, Any] | None, size: tuple[int, int]) -> np.ndarray | None:
    """The union of an editor value's painted layers at ``size`` (any colour), or None when
    nothing is painted. Used for the second region, which has one brush."""
    layers = [layer for layer in (editor or {}).get("layers") or [] if layer is not None]
    masks = [images.load_mask(p, size=size) for p in map(_painted, layers) if p.any()]
    return images.mask_union(*masks) if masks else None


ADD_RGBA = (255, 45, 85, 153)  # the brush's "add" colour, #ff2d55 at 60%
REMOVE_RGBA = (45, 140, 255, 153)  # its "remove" colour, #2d8cff at 60%; the second region's


def brush_view(clicks: Clicks, grow: float) -> Any:
    """After a click, undo, clear, next candidate or grow: the brush editor's value, the photo
    as shown for clicking with the clicked mask (grown by ``grow`` pixels) tinted on it and no
    paint, so the brush refines what Segment Anything found (``read_mask`` adds the red strokes
    to that mask and takes the blue ones out). gr.skip() before a photo is uploaded.

    The mask is drawn on the background rather than given as a layer: Gradio 6.31's editor
    places layers sent by the server off the photo (centred on its 800x800 default canvas) and
    crops them away as soon as the user paints.
    """
    if clicks.display is None or clicks.size is None:
        return gr.skip()
    shown = clicks.display
    mask = clicked_mask(clicks, check_number("grow", grow))
    if mask is not None:
        (height, width), (h, w) = clicks.size, shown.shape[:2]
        rows = np.arange(h) * height // h  # nearest, as render_clicks
        cols = np.arange(w) * width // w
        shown = images.mask_overlay(shown, mask[np.ix_(rows, cols)], color=ADD_RGBA[:3])
    return {"background": shown, "layers": [], "composite": shown}


def _painted(layer: Any) -> np.ndarray:
    """An editor layer's painted pixels: alpha > 0 for RGBA, non-zero for masks without alpha."""
    array = np.asarray(layer)
    if array.ndim == 3 and array.shape[2] in (2, 4):
        return array[..., -1] > 0
    if array.ndim == 3:
        return (array != 0).any(axis=2)
    return array != 0


def parse_words(text: str | None) -> list[str]:
    """Edit words typed in the page: comma separated ("ice cream, green"), or space separated
    when there is no comma ("green velvet")."""
    text = (text or "").strip()
    if not text:
        return []
    parts = text.split(",") if "," in text else text.split()
    return [part.strip() for part in parts if part.strip()]


@dataclasses.dataclass(frozen=True)
class Prompts:
    source: str
    target: str
    words: list[str]
    negative_word: str | None


def check_prompts(
    tokenizer: PreTrainedTokenizerBase,
    source: str,
    target: str,
    words: str | None,
    negative_word: str | None,
    *,
    guided: bool = True,
    exclude: Sequence[str] = (),
) -> Prompts:
    """Check the prompts and words with the model's tokenizer; raise ValueError with the fix.

    Empty ``words`` picks the words the target adds (``prompts.edit_words``) except those in
    ``exclude`` (the second region's). ``guided``: MAG runs (iterations > 0), so every edit word
    must hold a token that is new in the target.
    """
    source = prompts.check_prompt(tokenizer, source, what="source prompt")
    target = prompts.check_prompt(tokenizer, target, what="target prompt")
    typed = parse_words(words)
    if not typed and exclude:
        typed = [w for w in prompts.edit_words(tokenizer, source, target) if w not in exclude]
        if not typed:
            raise ValueError(
                "the target prompt adds no word for the first region besides the second "
                "region's; type the first region's edit words"
            )
    chosen, _ = prompts.edit_word_positions(tokenizer, source, target, typed, guided=guided)
    negative = (negative_word or "").strip() or None
    if negative:
        # The negative word's attention is read under the source prompt (Eq. 7).
        prompts.require_word(tokenizer, source, negative, what="source prompt")
    return Prompts(source, target, chosen, negative)


def check_number(name: str, value: Any) -> int | float:
    """A control's value checked against ``RANGES[name]``: an int for integer controls, a float
    otherwise. Raises ValueError naming the control and what it accepts for None, text, NaN,
    infinity, a fraction where a whole number is needed, or a value outside the range."""
    limits = RANGES[name]
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        shown = "empty" if value is None or value == "" else f"{_short(value)}, not a number"
        raise ValueError(f"{limits.label} is {shown}; give {limits.text()}")
    number = float(value)
    if not math.isfinite(number):
        raise ValueError(f"{limits.label} is {number}; give {limits.text()}")
    if limits.integer and not number.is_integer():
        raise ValueError(f"{limits.label} is {number:g}; give {limits.text()}")
    if not limits.low <= number <= limits.high:
        raise ValueError(f"{limits.label} is {number:.10g}, out of range; give {limits.text()}")
    return int(number) if limits.integer else number


def _short(value: Any, limit: int = 40) -> str:
    """repr of a value from the API, cut short (it is shown in an error message)."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def build_config(
    preset: str,
    iterations: float,
    granularity: float,
    steps: float,
    guidance: float,
    inversion: str,
    resolution: float,
) -> EditConfig:
    """The named preset on ``steps`` steps (its taus scaled) with the page's settings applied.
    Every value is checked first (``check_number``, the choices of the radios): ValueError."""
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {_short(preset)}; choose one of {sorted(PRESETS)}")
    methods = [value for _, value in INVERSION_CHOICES]
    if inversion not in methods:
        raise ValueError(f"unknown inversion {_short(inversion)}; choose one of {methods}")
    if isinstance(resolution, bool) or resolution not in RESOLUTIONS:
        raise ValueError(f"resolution is {_short(resolution)}; choose one of {RESOLUTIONS}")
    return config_from(
        preset,
        check_number("steps", steps),
        max_iter=check_number("iterations", iterations),
        scale=check_number("granularity", granularity),
        guidance_scale=check_number("guidance", guidance),
        inversion=inversion,
        resolution=int(resolution),
    )


def suggest_words(
    get_pipeline: Callable[[], MagEditPipeline], source: str, target: str
) -> tuple[Any, str]:
    """Prompt change -> (the edit words the target adds, inline status line).

    Leaves the words as they are while a prompt is empty or when they cannot be found; the
    status line then says why.
    """
    if not (source or "").strip() or not (target or "").strip():
        return gr.skip(), ""
    tokenizer = _pipeline(get_pipeline).tokenizer
    try:
        source = prompts.check_prompt(tokenizer, source, what="source prompt")
        target = prompts.check_prompt(tokenizer, target, what="target prompt")
        words = prompts.edit_words(tokenizer, source, target)
    except ValueError as error:
        return gr.skip(), _warning(error)
    return ", ".join(words), ""


def check_inputs(
    get_pipeline: Callable[[], MagEditPipeline],
    source: str,
    target: str,
    words: str,
    negative_word: str,
    iterations: float,
) -> str:
    """Words, negative word or iterations changed -> inline status line ("" when all is well)."""
    if not (source or "").strip() or not (target or "").strip():
        return ""
    tokenizer = _pipeline(get_pipeline).tokenizer
    try:
        check_prompts(tokenizer, source, target, words, negative_word, guided=bool(iterations))
    except ValueError as error:
        return _warning(error)
    return ""


def _warning(error: BaseException) -> str:
    """An inline warning for a gr.Markdown: the message may quote the user's words, so it is
    escaped (Markdown passes HTML through)."""
    return f"⚠️ {html.escape(one_line(str(error)), quote=False)}"


# ----------------------------------------------------------------------------------------------
# Click to segment: each session's clicks in its gr.State, one shared Segmenter


@dataclasses.dataclass(frozen=True, eq=False)
class Clicks:
    """One session's clicks on its photo. Held in a gr.State, so no session sees another's; every
    handler returns a new value instead of changing this one.

    key:        the photo's hash, which is also the key of its Segment Anything embedding.
    size:       (H, W) of the photo.
    display:    the photo as shown for clicking, (h, w, 3) uint8 with its long side at most
                DISPLAY_SIDE; clicks on it are mapped back to the photo's pixels.
    points:     (x, y) in pixels of the photo; labels: 1 on the object, 0 on the background.
    candidates: Segment Anything's masks for these points, best first; ``index`` is the one
                shown and used.
    """

    key: str | None = None
    size: tuple[int, int] | None = None
    display: np.ndarray | None = None
    points: tuple[tuple[float, float], ...] = ()
    labels: tuple[int, ...] = ()
    candidates: tuple[MaskCandidate, ...] = ()
    index: int = 0

    @property
    def candidate(self) -> MaskCandidate | None:
        return self.candidates[self.index] if self.candidates else None


def _display(photo: np.ndarray) -> np.ndarray:
    """The photo at most DISPLAY_SIDE pixels long: sent to the browser after every click."""
    height, width = photo.shape[:2]
    scale = DISPLAY_SIDE / max(height, width)
    if scale >= 1:
        return photo
    return images.resize_image(photo, (max(1, round(height * scale)), max(1, round(width * scale))))


def _segmenter(get_segmenter: Callable[[], Segmenter]) -> Segmenter:
    try:
        return get_segmenter()
    except (ValueError, OSError) as error:
        # The reason names the server's folders: it goes to the server's log, not to the page.
        print(f"app.py: error: {one_line(str(error))}", file=sys.stderr)
        raise user_error(
            "Segment Anything could not be loaded (see the server's log); paint the region with "
            "the brush or upload a mask file instead",
            SEGMENT_TITLE,
        ) from None


def embed_photo(get_segmenter: Callable[[], Segmenter], image: Any) -> str:
    """Right after an upload: compute the photo's embedding, so the first click is fast.
    Returns the mask's status line."""
    if image is None:
        return ""
    start = time.perf_counter()
    try:
        segmenter = _segmenter(get_segmenter)
    except gr.Error as error:
        return f"⚠️ {error.message}"
    with gradio_errors(SEGMENT_TITLE):
        segmenter.embed(images.load_image(image))
    return (
        f"Ready ({time.perf_counter() - start:.1f} s): click the object to edit. Set *Add* to "
        "*background* to mark what is not part of it."
    )


def add_point(
    get_segmenter: Callable[[], Segmenter],
    image: Any,
    clicks: Clicks,
    mode: str,
    grow: float,
    index: Sequence[float],
) -> tuple[np.ndarray, Clicks, str]:
    """A click on the photo -> (the photo with the mask and the points, new Clicks, status line).

    ``index`` is (x, y) in pixels of the shown photo (gr.SelectData.index); ``mode`` is
    "object" (a positive point) or "background" (a negative one). A click outside the photo is a
    gr.Error and is not kept; when Segment Anything finds no usable mask for the points, the point
    is kept and the status line says why (the next click may fix it).
    """
    if clicks.size is None or clicks.display is None or image is None:
        raise user_error("no photo; upload a photo, then click the object on it", SEGMENT_TITLE)
    if mode not in CLICK_MODES:
        raise user_error(f"unknown click mode {mode!r}; choose {CLICK_MODES}", SEGMENT_TITLE)
    from magedit.segment import check_prompts

    (height, width), shown = clicks.size, clicks.display.shape[:2]
    with gradio_errors(SEGMENT_TITLE):
        try:
            x, y = (float(v) for v in index)
        except (TypeError, ValueError):
            raise ValueError(
                f"a click is an (x, y) pair of numbers in pixels, got {str(index)[:40]!r}"
            ) from None
        point = (x * width / shown[1], y * height / shown[0])  # in the photo's pixels
        check_prompts([point], [1], None, clicks.size)
    clicks = dataclasses.replace(
        clicks,
        points=(*clicks.points, point),
        labels=(*clicks.labels, int(mode == "object")),
    )
    return _segment(get_segmenter, image, clicks, grow)


def next_candidate(clicks: Clicks, grow: float) -> tuple[Any, Clicks, str]:
    """ "Next candidate": show and use Segment Anything's next mask (best first, wrapping)."""
    if not clicks.candidates:
        return gr.skip(), clicks, "No mask yet: click the object first."
    clicks = dataclasses.replace(clicks, index=(clicks.index + 1) % len(clicks.candidates))
    return render_clicks(clicks, grow), clicks, _mask_status(clicks)


def undo_point(
    get_segmenter: Callable[[], Segmenter], image: Any, clicks: Clicks, grow: float
) -> tuple[np.ndarray | None, Clicks, str]:
    """ "Undo point": forget the last click and segment the others again."""
    if not clicks.points:
        return render_clicks(clicks, grow), clicks, "No point to undo."
    clicks = dataclasses.replace(clicks, points=clicks.points[:-1], labels=clicks.labels[:-1])
    return _segment(get_segmenter, image, clicks, grow)


def clear_points(clicks: Clicks) -> tuple[np.ndarray | None, Clicks, str]:
    """ "Clear": forget every click on this photo."""
    clicks = Clicks(key=clicks.key, size=clicks.size, display=clicks.display)
    return clicks.display, clicks, "Cleared. Click the object to edit." if clicks.size else ""


def clicked_mask(clicks: Clicks | None, grow: float) -> np.ndarray | None:
    """The chosen candidate grown by ``grow`` pixels, (H, W) bool at the photo's size; None when
    nothing was clicked."""
    candidate = clicks.candidate if clicks is not None else None
    if candidate is None:
        return None
    return images.dilate(candidate.mask, int(grow or 0))


def render_clicks(clicks: Clicks, grow: float) -> np.ndarray | None:
    """The photo to click on: the chosen mask (grown as for the edit) tinted and outlined, the
    points as green (object) and red (background) dots. (h, w, 3) uint8 at the display size."""
    shown = clicks.display
    if shown is None:
        return None
    (height, width), (h, w) = clicks.size, shown.shape[:2]
    candidate = clicks.candidate
    if candidate is not None:
        # Nearest-neighbour to the display size (a sliver may vanish there: it is only shown).
        rows = np.arange(h) * height // h
        cols = np.arange(w) * width // w
        mask = candidate.mask[np.ix_(rows, cols)]
        shown = images.mask_overlay(shown, images.dilate(mask, round((grow or 0) * w / width)))
    else:
        shown = shown.copy()
    radius = max(3, round(max(h, w) / 150))
    rows, cols = np.ogrid[:h, :w]
    for (x, y), label in zip(clicks.points, clicks.labels, strict=True):
        cx, cy = x * w / width, y * h / height
        distance = (cols - cx) ** 2 + (rows - cy) ** 2
        shown[distance <= (radius + 1.5) ** 2] = (255, 255, 255)  # a white ring on any colour
        shown[distance <= radius**2] = POINT_COLORS[label]
    return shown


def _segment(
    get_segmenter: Callable[[], Segmenter], image: Any, clicks: Clicks, grow: float
) -> tuple[np.ndarray | None, Clicks, str]:
    """Segment Anything's candidates for ``clicks.points``: the new Clicks and what to show."""
    clicks = dataclasses.replace(clicks, candidates=(), index=0)
    if not clicks.points:
        return render_clicks(clicks, grow), clicks, "Click the object to edit."
    segmenter = _segmenter(get_segmenter)
    try:
        segmenter.embedding(clicks.key)
        source: np.ndarray | str = clicks.key
    except RuntimeError:  # other photos pushed it out of the cache: predict embeds it again
        with gradio_errors(SEGMENT_TITLE):
            source = images.load_image(image)
    try:
        # SAM's advice: three masks for a single, ambiguous click; one for several clicks.
        candidates = segmenter.predict(
            source,
            points=clicks.points,
            labels=clicks.labels,
            multimask=len(clicks.points) == 1,
            image_size=clicks.size,
        )
    except ValueError as error:
        return render_clicks(clicks, grow), clicks, _warning(error)
    clicks = dataclasses.replace(clicks, candidates=tuple(candidates))
    return render_clicks(clicks, grow), clicks, _mask_status(clicks)


def _mask_status(clicks: Clicks) -> str:
    candidate = clicks.candidate
    if candidate is None:
        return ""
    count = len(clicks.candidates)
    more = " *Next candidate* shows the others." if count > 1 else ""
    objects = sum(clicks.labels)
    return (
        f"Mask {clicks.index + 1} of {count} (score {candidate.score:.2f}, "
        f"{candidate.coverage:.0%} of the photo) from {objects} object and "
        f"{len(clicks.labels) - objects} background point(s).{more}"
    )


def segment_api(
    get_segmenter: Callable[[], Segmenter],
    output_dir: Path,
    image: Any,
    points: Any,
    labels: Any,
) -> tuple[str, float]:
    """The ``segment`` API endpoint: photo, points [[x, y], ...] in pixels and labels [1 or 0,
    ...] (default all 1) -> (the path of Segment Anything's best mask as a black-and-white PNG of
    the photo's size, its score)."""
    if image is None:
        raise user_error("no photo; pass the photo to segment", SEGMENT_TITLE)
    segmenter = _segmenter(get_segmenter)
    with gradio_errors(SEGMENT_TITLE):
        photo = images.load_image(image)
        best = segmenter.predict(
            photo, points=points, labels=labels, multimask=len(points or ()) == 1
        )[0]
    path = save_result(best.mask.astype(np.uint8) * 255, output_dir, "mask")
    return str(path), best.score


# ----------------------------------------------------------------------------------------------
# The edit: a worker thread inverts and edits; the handler streams what it reports


@dataclasses.dataclass
class _Request:
    prepared: PreparedEdit  # checked once; the photo, prompts, regions and config
    time_limit: float  # seconds of wall clock for the whole job

    @property
    def image(self) -> np.ndarray:
        return self.prepared.original

    @property
    def config(self) -> EditConfig:
        return self.prepared.config

    @property
    def mask(self) -> np.ndarray:
        """The union of the regions' masks, (H, W) bool: what the edit may change."""
        return self.prepared.mask


@dataclasses.dataclass
class _InversionProgress:
    done: int
    total: int
    elapsed: float


_DONE = object()


def _time_limit_message(limit: float) -> str:
    return (
        f"the edit ran longer than this page's limit of {limit:g} s per job and was stopped; "
        "use fewer steps or iterations, a smaller resolution, or the direct or DDIM inversion"
    )


class _EditWorker(threading.Thread):
    """Runs invert + edit off the event's thread, so that the inversion's progress can be
    streamed and the work stops at its next step (inversion step, guidance iteration or
    denoising step) when the page cancels it (``cancel``) or its time limit passes."""

    def __init__(self, pipe: MagEditPipeline, request: _Request):
        super().__init__(name="magedit-edit", daemon=True)
        self.pipe = pipe
        self.request = request
        self.items: queue.Queue[Any] = queue.Queue()
        self.cancelled = threading.Event()
        self.deadline = time.monotonic() + request.time_limit

    def cancel(self) -> None:
        self.cancelled.set()

    def __iter__(self) -> Iterator[Any]:
        """What the work reports, in order: progress, the Inversion, EditEvents, EditResult.
        Raises the work's exception, if any, where it happened in that order, and JobTimeout
        (cancelling the work) when the time limit passes, even in the middle of a slow step."""
        while True:
            try:
                item = self.items.get(timeout=max(0.0, self.deadline - time.monotonic()))
            except queue.Empty:
                self.cancel()
                raise JobTimeout(_time_limit_message(self.request.time_limit)) from None
            if item is _DONE:
                return
            if isinstance(item, BaseException):
                raise item
            yield item

    def _check(self) -> None:
        """Called between steps: stop when cancelled or past the time limit."""
        if self.cancelled.is_set():
            raise _Cancelled
        if time.monotonic() > self.deadline:
            raise JobTimeout(_time_limit_message(self.request.time_limit))

    def run(self) -> None:
        try:
            while not _PIPELINE_LOCK.acquire(timeout=0.1):
                self._check()  # a previous, cancelled job is finishing its step
            try:
                self._work()
            finally:
                _PIPELINE_LOCK.release()
        except _Cancelled:
            pass
        except BaseException as error:  # handed to the page's thread, which reports it
            if is_out_of_memory(error):
                _release_cached_memory()
            self.items.put(error)
        finally:
            self.items.put(_DONE)

    def _work(self) -> None:
        request, pipe = self.request, self.pipe
        start = time.perf_counter()

        def progress(done: int, total: int) -> None:
            self._check()
            self.items.put(_InversionProgress(done, total, time.perf_counter() - start))

        inversion = pipe.invert(request.prepared, progress=progress)
        self.items.put(inversion)
        events = pipe.edit(request.prepared, inversion)
        try:
            for item in events:
                self._check()
                self.items.put(item)
        finally:
            events.close()  # a stopped edit restores the attention processors now


def _release_cached_memory() -> None:
    """After CUDA ran out of memory: hand the failed job's cached blocks back to the driver, so
    that the next job starts from a clean allocator (once per failure, not in a loop)."""
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available():
        torch.cuda.empty_cache()


def gpu_duration(*args: Any, **kwargs: Any) -> int:
    """Seconds of GPU that ZeroGPU reserves for one ``run_edit`` call with these arguments: an
    estimate from the steps, iterations and inversion method on an A100-class GPU at 512 px,
    with a margin, capped by the job's time limit. Any value it cannot read counts as the page's
    default (run_edit refuses it a moment later)."""
    try:
        bound = inspect.signature(run_edit).bind_partial(*args, **kwargs).arguments
    except TypeError:
        bound = {}
    limit = bound.get("time_limit", TIME_LIMIT)
    try:
        config = build_config(
            bound.get("preset", "color"),
            bound.get("iterations", Defaults.iterations),
            bound.get("granularity", 2.5),
            bound.get("steps", Defaults.steps),
            bound.get("guidance", 7.5),
            bound.get("inversion", Defaults.inversion),
            bound.get("resolution", Defaults.resolution),
        )
    except ValueError:
        config = EditConfig()
    # Seconds per UNet pass at 512 px (fp16): a batched denoising step, a MAG iteration
    # (forward to the 16x16 layers and back), a null-text inner step (forward and backward).
    step, iteration, null_text = 0.08, 0.15, 0.1
    guided = sum(config.guide_at(i) for i in range(config.steps)) if config.max_iter else 0
    seconds = config.steps * step + guided * config.max_iter * iteration
    seconds += config.steps * step  # the inversion's own pass per step
    if config.inversion == "null_text":
        seconds += config.steps * config.null_inner_steps * null_text
    seconds *= (config.resolution / 512) ** 2
    return int(min(max(30.0, 20.0 + 1.5 * seconds), max(float(limit), 1.0)))


@_gpu(duration=gpu_duration)
def run_edit(
    get_pipeline: Callable[[], MagEditPipeline],
    output_dir: Path,
    time_limit: float,
    image: Any,
    source: str,
    target: str,
    words: str,
    negative_word: str,
    preset: str,
    iterations: float,
    granularity: float,
    steps: float,
    guidance: float,
    inversion: str,
    resolution: float,
    grow: float = 0,
    mask_file: Any = None,
    editor: dict[str, Any] | None = None,
    region2_mask_file: Any = None,
    region2_editor: dict[str, Any] | None = None,
    region2_words: str = "",
    region2_weight: float = 1.0,
    clicks: Clicks | None = None,
    history: Sequence[tuple[str, str]] | None = None,
) -> Iterator[tuple[Any, ...]]:
    """The Edit button: check everything, then stream the inversion and the edit.

    The region is the brush editor's painting (which starts as the clicked mask) or the clicked
    mask grown by ``grow`` pixels, or the mask file when one is given (``read_mask``). A second
    region (Eq. 9) comes from ``region2_mask_file`` or ``region2_editor`` with its own
    ``region2_words`` and ``region2_weight`` (the first region's weight is 1). Yields tuples in
    the order of ``EDIT_OUTPUTS`` (gr.skip() for what did not change); the last one holds the
    before/after pair, the path of the full-resolution PNG under ``output_dir``, the settings
    used and this session's gallery ``history`` with the new result first. Bad input raises
    gr.Error before any model work; the job stops with a gr.Error after ``time_limit`` seconds.
    """
    from magedit.pipeline import Region

    # 1. Check every input once, before any model work.
    if image is None:
        raise user_error("no photo; upload the photo to edit first")
    pipe = _pipeline(get_pipeline)
    with gradio_errors():
        photo = images.load_image(image)
        config = build_config(
            preset, iterations, granularity, steps, guidance, inversion, resolution
        )
        grow = check_number("grow", grow)
        second = read_second_region(
            region2_editor, region2_mask_file, region2_words, region2_weight, photo.shape[:2]
        )
    # Clicks made on another photo (this session's previous one) do not count.
    on_photo = clicks is not None and clicks.key == images.image_hash(photo)
    mask = read_mask(
        editor, mask_file, photo.shape[:2], clicked_mask(clicks, grow) if on_photo else None
    )
    regions = [Region(mask=mask, words=parse_words(words) or None)]
    if second is not None:
        regions.append(second)
    with gradio_errors():
        prepared = pipe.prepare(
            photo, source, target, regions=regions, negative_word=negative_word, config=config
        )
    request = _Request(prepared, float(time_limit))

    # 2. Invert and edit on a worker thread; show what it reports as it comes.
    stream = _Stream(request)
    yield stream.update(status="Starting…", clear=True)
    worker = _EditWorker(pipe, request)
    worker.start()
    try:
        with gradio_errors():
            for item in worker:
                update = stream.add(item)
                if update is not None:
                    yield update
            result = stream.result
            if result is None:
                raise RuntimeError("the edit ended without a result")
            path = save_result(result.composited, output_dir, " ".join(result.words[0]))
            yield stream.finish(path, pipe.model_id, history)
    finally:
        worker.cancel()


def read_second_region(
    editor: dict[str, Any] | None,
    mask_file: Any,
    words: str | None,
    weight: float,
    size: tuple[int, int],
) -> Region | None:
    """The second region of a multi-region edit (Eq. 9), or None when none is given.

    Its mask is ``mask_file`` or what is painted in ``editor`` (at ``size`` = (H, W) of the
    photo); its ``words`` (typed, comma separated) must be given with it, and ``weight`` is
    checked against ``RANGES["region2_weight"]`` (the first region's weight is 1). ValueError
    when only one of mask and words is given.
    """
    from magedit.pipeline import Region

    weight = check_number("region2_weight", weight)  # checked even when unused: API input
    chosen = parse_words(words)
    if mask_file is not None:
        mask = images.load_mask(mask_file, size=size)
    else:
        mask = _editor_mask(editor, size)
    if mask is None and not chosen:
        return None
    if mask is None:
        raise ValueError(
            "the second region has edit words but no mask; paint it or upload its mask file "
            "(Advanced > Second region), or clear its words"
        )
    if not chosen:
        raise ValueError(
            "the second region has a mask but no edit words; type the words of the target "
            "prompt that belong to it, or clear its mask"
        )
    return Region(mask=mask, words=chosen, weight=weight)


class _Stream:
    """Turns the worker's reports into page updates (tuples in the order of EDIT_OUTPUTS)."""

    def __init__(self, request: _Request):
        self.request = request
        self.inversion: Inversion | None = None
        self.inversion_seconds = 0.0
        self.result: EditResult | None = None
        self.curve: list[dict[str, Any]] = []
        self.last_refresh = 0.0
        self.start = time.perf_counter()

    def update(self, *, clear: bool = False, **values: Any) -> tuple[Any, ...]:
        default = None if clear else gr.skip()
        if clear:
            values.setdefault("curve", pd.DataFrame(columns=CURVE_COLUMNS).astype(CURVE_TYPES))
        return tuple(values.get(name, default) for name in EDIT_OUTPUTS)

    def _due(self) -> bool:
        now = time.perf_counter()
        if now - self.last_refresh < REFRESH_SECONDS:
            return False
        self.last_refresh = now
        return True

    def add(self, item: Any) -> tuple[Any, ...] | None:
        """The update for one report, or None when the page need not be refreshed for it."""
        from magedit.inversion import Inversion
        from magedit.pipeline import EditEvent, EditResult

        if isinstance(item, _InversionProgress):
            if item.done < item.total and not self._due():
                return None
            method = self.request.config.inversion.replace("_", "-")
            eta = _eta(item.elapsed, item.done / item.total)
            return self.update(
                status=f"**Inverting** the photo ({method}) {item.done}/{item.total}{eta}"
            )
        if isinstance(item, Inversion):
            self.inversion = item
            self.inversion_seconds = time.perf_counter() - self.start
            if item.cached:
                return self.update(status="Reused the cached inversion. **Editing**…")
            return self.update(status=f"Inverted in {self.inversion_seconds:.1f} s. **Editing**…")
        if isinstance(item, EditEvent):
            return self._event(item)
        if isinstance(item, EditResult):
            self.result = item
            return None
        raise TypeError(f"unexpected report {type(item).__name__}")

    def _event(self, event: EditEvent) -> tuple[Any, ...] | None:
        if event.phase == "guidance":
            x = event.step - 1 + (event.iteration - 1) / event.max_iter
            self.curve.append({"step": x, "value": event.loss, "series": "MAG loss"})
            if not self._due():
                return None
            done = (event.step - 1 + event.iteration / event.max_iter) / event.total
            return self.update(
                status=f"**Step {event.step}/{event.total}** · guidance "
                f"{event.iteration}/{event.max_iter} · loss {event.loss:.3f} · in-mask "
                f"{event.in_mask_ratio:.2f}{_eta(event.elapsed, done)}",
                curve=self._curve(),
            )
        self.curve.append({"step": event.step, "value": event.loss, "series": "loss"})
        self.curve.append(
            {"step": event.step, "value": event.in_mask_ratio, "series": "in-mask ratio"}
        )
        self.last_refresh = time.perf_counter()
        shown = self.inversion.image  # (h, w, 3) at processing size
        return self.update(
            status=f"**Step {event.step}/{event.total}** · loss {event.loss:.3f} · in-mask "
            f"{event.in_mask_ratio:.2f}{_eta(event.elapsed, event.step / event.total)}",
            preview=images.resize_image(event.preview, shown.shape[:2]),
            attention=preview.heatmap_overlay(shown, event.attention, self.request.mask),
            curve=self._curve(),
        )

    def _curve(self) -> pd.DataFrame:
        # Float columns: with object columns the plot draws a categorical y axis.
        return pd.DataFrame(self.curve, columns=CURVE_COLUMNS).astype(CURVE_TYPES)

    def finish(
        self, path: Path, model: str, history: Sequence[tuple[str, str]] | None
    ) -> tuple[Any, ...]:
        """The last update: the result, its file, the settings and the session's gallery."""
        result, request = self.result, self.request
        cached = result.inversion_cached
        # This run's wall times; a cached inversion cost nothing now (the result's timings give
        # the seconds it took when it was made).
        timings = {name: round(seconds, 2) for name, seconds in result.timings.items()}
        if cached:
            timings["inversion when made"] = timings["inversion"]
        timings["inversion"] = 0.0 if cached else round(self.inversion_seconds, 2)
        timings["total"] = round(time.perf_counter() - self.start, 2)
        note = " Reused the cached inversion." if cached else ""
        settings = {
            "model": model,
            "source prompt": result.source_prompt,
            "target prompt": result.target_prompt,
            "edit words": [w for words in result.words for w in words],
            "regions": [
                {
                    "words": list(region.words),
                    "weight": region.weight,
                    "pixels": int(region.mask.sum()),
                }
                for region in request.prepared.regions
            ],
            "negative word": result.negative_word,
            "inversion": "reused the cached inversion" if cached else result.config.inversion,
            "config": result.config.to_dict(),
            "timings (s)": timings,
            "file": path.name,
        }
        # Captions hold no user text: the gallery shows them as they are.
        entries = [tuple(entry) for entry in history or () if len(entry) == 2]
        caption = time.strftime("%H:%M:%S")
        history = [(str(path), caption), *entries][:GALLERY_SIZE]
        return self.update(
            status=f"**Done** in {timings['total']:.1f} s.{note} *Use as "
            "input* edits the result further.",
            preview=result.image,
            result=(request.image, result.composited),
            download=str(path),
            settings=settings,
            history=history,
        )


def _eta(elapsed: float, done: float) -> str:
    """ " · about N s left" from the time spent on the share ``done`` (0..1) of the work."""
    if done <= 0 or done >= 1:
        return ""
    left = elapsed * (1 - done) / done
    if left >= 90:
        return f" · about {left / 60:.0f} min left"
    return f" · about {max(left, 1):.0f} s left"


def save_result(image: np.ndarray, output_dir: Path, description: str = "") -> Path:
    """Write ``image`` (HWC or HW uint8) as a PNG under ``output_dir`` with a generated name
    (``files.save_result``), keeping the newest MAX_OUTPUTS results there."""
    return files.save_result(image, output_dir, description, keep=MAX_OUTPUTS)


def cancelled_status() -> str:
    """The Cancel button: the status line once the edit is stopped (the worker stops at its next
    step and frees the pipeline for the next edit)."""
    return "**Cancelled.** The edit was stopped; press *Edit* to run it again."


def use_as_input(result_file: Any) -> tuple[Any, None, None, str]:
    """ "Use as input": the last result (the full-resolution PNG shown for download) becomes the
    photo, for the next edit. Returns (photo, mask file, second region's mask file, status); the
    upload handler then drops the clicks and painting, and Segment Anything embeds the new photo.
    """
    if result_file is None:
        raise user_error("no result yet; run an edit first", "Cannot use the result")
    path = getattr(result_file, "path", result_file)  # gr.File gives a path (or a FileData)
    return str(path), None, None, "The result is the new photo. Mark the region to edit next."


def show_history(history: Sequence[tuple[str, str]] | None) -> list[tuple[str, str]]:
    """The session's gallery: its results newest first, without files pruned since."""
    return [(path, caption) for path, caption in history or () if Path(path).is_file()]


def load_examples(folder: Path = ASSETS_DIR) -> list[dict[str, Any]]:
    """The examples of ``folder``/examples.json with their image and mask as paths inside
    ``folder`` ([] when there is none). Nothing is decoded here: the page starts fast."""
    index = Path(folder) / "examples.json"
    if not index.is_file():
        return []
    examples = json.loads(index.read_text(encoding="utf-8"))
    root = Path(folder).resolve()
    for example in examples:
        for key in ("image", "mask"):
            path = (root / example[key]).resolve()
            if not path.is_relative_to(root) or not path.is_file():
                raise ValueError(f"example {example['name']!r}: no file {example[key]!r} in {root}")
            example[key] = str(path)
    return examples


# ----------------------------------------------------------------------------------------------
# The page


def build_demo(
    load_pipeline: Callable[[], MagEditPipeline],
    load_segmenter: Callable[[], Segmenter] | None = None,
    *,
    tiny: bool,
    output_dir: Path | str = OUTPUT_DIR,
    time_limit: float = TIME_LIMIT,
    assets_dir: Path | str = ASSETS_DIR,
) -> gr.Blocks:
    """The page. ``load_pipeline`` and ``load_segmenter`` are each called once, on first need
    (main() loads both before launch so a model that cannot load is reported at once); without
    ``load_segmenter`` clicking says that Segment Anything is not available. ``tiny`` shows the
    random-weights banner and picks quick defaults; ``time_limit`` is each edit's wall-clock limit
    in seconds; the examples come from ``assets_dir`` (loaded when clicked, never run)."""
    get_pipeline = Lazy(load_pipeline)
    get_segmenter = Lazy(load_segmenter or _no_segmenter)
    output_dir = Path(output_dir)
    if not time_limit > 0:
        raise ValueError(f"time_limit is {time_limit}; give a number of seconds above 0")
    defaults = Defaults.for_model(tiny)
    examples = load_examples(Path(assets_dir))

    def slider(name: str, value: float, step: float, label: str, **kwargs: Any) -> gr.Slider:
        limits = RANGES[name]
        return gr.Slider(limits.low, limits.high, value=value, step=step, label=label, **kwargs)

    with gr.Blocks(title="MAG-Edit Studio", delete_cache=DELETE_CACHE) as demo:
        if tiny:
            gr.Markdown(TINY_BANNER, elem_id="magedit-banner")
        gr.Markdown(
            "# MAG-Edit Studio\n"
            "Localized text-guided editing: mark a region, describe the edit, and only that "
            "region changes (MAG-Edit on Stable Diffusion v1.4)."
        )
        with gr.Row():
            with gr.Column(scale=1):
                image = gr.Image(
                    label="Photo",
                    type="filepath",  # read by magedit.images.load_image (EXIF, size checks)
                    image_mode=None,
                    sources=["upload", "clipboard"],
                    height=320,
                    elem_id="magedit-image",
                )
                with gr.Tabs():
                    with gr.Tab("Click the object"):
                        clickable = gr.Image(
                            label="Click the object to edit",
                            type="numpy",
                            interactive=False,
                            format="jpeg",  # sent after every click: small beats lossless here
                            height=420,
                            elem_id="magedit-clickable",
                        )
                        mask_status = gr.Markdown(elem_id="magedit-mask-status")
                        with gr.Row():
                            click_mode = gr.Radio(
                                choices=CLICK_MODES,
                                value="object",
                                label="Add",
                                scale=2,
                                elem_id="magedit-click-mode",
                            )
                            grow = slider(
                                "grow",
                                0,
                                1,
                                "Grow the mask (pixels)",
                                scale=3,
                                elem_id="magedit-grow",
                            )
                        with gr.Row():
                            next_button = gr.Button(
                                "Next candidate", size="sm", elem_id="magedit-next-candidate"
                            )
                            undo_button = gr.Button(
                                "Undo point", size="sm", elem_id="magedit-undo-point"
                            )
                            clear_button = gr.Button("Clear", size="sm", elem_id="magedit-clear")
                    with gr.Tab("Refine with the brush"):
                        editor = gr.ImageEditor(
                            label="Refine the clicked mask: paint in red what it missed, in blue "
                            "what it took too much (the eraser removes paint)",
                            type="numpy",
                            image_mode="RGBA",
                            sources=[],  # the background is the photo above
                            transforms=[],  # keep the canvas the photo's size
                            layers=False,
                            brush=gr.Brush(
                                colors=[("#ff2d55", 0.6), ("#2d8cff", 0.6)],  # add, remove
                                default_color=("#ff2d55", 0.6),
                                color_mode="fixed",
                            ),
                            eraser=gr.Eraser(),
                            format="png",  # lossless: the layer's alpha is the mask
                            height=420,
                            elem_id="magedit-brush",
                        )
                    with gr.Tab("Mask file"):
                        mask_file = gr.Image(
                            label="Mask (non-black pixels are inside; used instead of clicks and "
                            "painting)",
                            type="filepath",
                            image_mode=None,
                            sources=["upload"],
                            height=320,
                            elem_id="magedit-mask-file",
                        )
                clicks = gr.State(Clicks())
                source = gr.Textbox(
                    label="Source prompt (describes the photo)",
                    placeholder="a living room with a red sofa and a wooden table",
                    elem_id="magedit-source",
                )
                target = gr.Textbox(
                    label="Target prompt (the same, with the edit)",
                    placeholder="a living room with a green sofa and a wooden table",
                    elem_id="magedit-target",
                )
                with gr.Row():
                    words = gr.Textbox(
                        value="",  # a default for the API: picked from the prompts
                        label="Edit words",
                        info="Words of the target whose attention fills the region; filled in "
                        "from the prompts. Separate with commas.",
                        elem_id="magedit-words",
                    )
                    negative_word = gr.Textbox(
                        value="",
                        label="Negative word (optional)",
                        info="A source word whose attention is pushed out of the region.",
                        elem_id="magedit-negative-word",
                    )
                prompt_status = gr.Markdown(elem_id="magedit-prompt-status")
                preset = gr.Radio(
                    choices=list(PRESETS),
                    value="color",
                    label="Preset",
                    info=PRESET_INFO,
                    elem_id="magedit-preset",
                )
                iterations = slider(
                    "iterations",
                    defaults.iterations,
                    1,
                    "Iterations (MAX_IT)",
                    elem_id="magedit-iterations",
                )
                granularity = slider(
                    "granularity", 2.5, 0.1, "Granularity (scale λp)", elem_id="magedit-granularity"
                )
                with gr.Accordion("Advanced", open=False, elem_id="magedit-advanced"):
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
                        choices=RESOLUTIONS,
                        value=defaults.resolution,
                        label="Resolution (long side, pixels)",
                        elem_id="magedit-resolution",
                    )
                    with gr.Accordion(
                        "Second region (multi-region edit)", open=False, elem_id="magedit-region2"
                    ):
                        gr.Markdown(
                            "Edit a second region with its own words in the same run (Eq. 9 of "
                            "the paper): paint it or upload its mask, and type the target "
                            "prompt's words that belong to it."
                        )
                        with gr.Tabs():
                            with gr.Tab("Paint the second region"):
                                region2_editor = gr.ImageEditor(
                                    label="Second region",
                                    type="numpy",
                                    image_mode="RGBA",
                                    sources=[],
                                    transforms=[],
                                    layers=False,
                                    brush=gr.Brush(colors=[("#2d8cff", 0.6)], color_mode="fixed"),
                                    eraser=gr.Eraser(),
                                    format="png",
                                    height=320,
                                    elem_id="magedit-region2-brush",
                                )
                            with gr.Tab("Second region's mask file"):
                                region2_mask_file = gr.Image(
                                    label="Second region's mask (non-black pixels are inside)",
                                    type="filepath",
                                    image_mode=None,
                                    sources=["upload"],
                                    height=240,
                                    elem_id="magedit-region2-mask-file",
                                )
                        with gr.Row():
                            region2_words = gr.Textbox(
                                value="",
                                label="Second region's edit words",
                                info="Words of the target prompt for this region; the first "
                                "region's words must be other words.",
                                elem_id="magedit-region2-words",
                            )
                            region2_weight = slider(
                                "region2_weight",
                                1.0,
                                0.1,
                                "Second region's weight (the first region's is 1)",
                                elem_id="magedit-region2-weight",
                            )
                with gr.Row():
                    edit_button = gr.Button("Edit", variant="primary", elem_id="magedit-edit")
                    cancel_button = gr.Button("Cancel", variant="stop", elem_id="magedit-cancel")
                if examples:
                    gr.Examples(
                        examples=[
                            [
                                e["image"],
                                e["mask"],
                                e["source"],
                                e["target"],
                                ", ".join(e["words"]),
                                e["preset"],
                                e["negative_word"] or "",
                            ]
                            for e in examples
                        ],
                        inputs=[image, mask_file, source, target, words, preset, negative_word],
                        example_labels=[e["name"] for e in examples],
                        cache_examples=False,  # clicking fills the inputs; nothing runs at start
                        label="Examples (the mask comes as a mask file)",
                        elem_id="magedit-examples",
                        api_visibility="private",
                    )
            with gr.Column(scale=1):
                status = gr.Markdown("Upload a photo to start.", elem_id="magedit-status")
                with gr.Row():
                    live = gr.Image(
                        label="Preview", interactive=False, height=256, elem_id="magedit-preview"
                    )
                    attention = gr.Image(
                        label="Attention of the edit words (mask outlined)",
                        interactive=False,
                        height=256,
                        elem_id="magedit-attention",
                    )
                curve = gr.LinePlot(
                    pd.DataFrame(columns=CURVE_COLUMNS).astype(CURVE_TYPES),
                    x="step",
                    y="value",
                    color="series",
                    label="Loss and in-mask attention ratio",
                    height=220,
                    elem_id="magedit-curve",
                )
                result = gr.ImageSlider(
                    label="Before / after",
                    interactive=False,
                    format="png",
                    max_height=600,
                    elem_id="magedit-result",
                )
                with gr.Row():
                    download = gr.File(
                        label="Full-resolution PNG",
                        interactive=False,
                        elem_id="magedit-download",
                        scale=3,
                    )
                    use_button = gr.Button(
                        "Use as input", size="sm", elem_id="magedit-use-as-input", scale=1
                    )
                with gr.Accordion("Settings and timings", open=False):
                    settings = gr.JSON(label="Used for this result", elem_id="magedit-settings")
                history = gr.State([])
                gallery = gr.Gallery(
                    label="This session's results (newest first)",
                    columns=4,
                    height=220,
                    interactive=False,
                    format="png",
                    elem_id="magedit-gallery",
                )

        # Events. Cheap checks run without a concurrency limit; the edit runs one at a time.
        # Uploads and clicks skip the queue (queue=False): they never wait behind edits, nor are
        # they refused when the queue is full of them.
        cheap = {"concurrency_limit": None, "show_progress": "hidden"}
        direct = {"queue": False, "api_visibility": "private"}
        image.change(
            load_upload,
            inputs=image,
            outputs=[editor, status, clicks, clickable, mask_status, region2_editor],
            show_progress="hidden",
            **direct,
        ).then(
            functools.partial(embed_photo, get_segmenter),
            inputs=image,
            outputs=mask_status,
            show_progress="minimal",
            **direct,
        )

        def on_click(image, clicks, mode, grow, evt: gr.SelectData):
            return add_point(get_segmenter, image, clicks, mode, grow, evt.index)

        # After each change of the clicks, the brush shows the clicked mask, unpainted.
        to_brush = {
            "fn": brush_view,
            "inputs": [clicks, grow],
            "outputs": editor,
            "show_progress": "hidden",
            **direct,
        }
        shown = [clickable, clicks, mask_status]
        clickable.select(
            on_click,
            inputs=[image, clicks, click_mode, grow],
            outputs=shown,
            show_progress="minimal",
            **direct,
        ).success(**to_brush)
        next_button.click(next_candidate, inputs=[clicks, grow], outputs=shown, **direct).success(
            **to_brush
        )
        undo_button.click(
            functools.partial(undo_point, get_segmenter),
            inputs=[image, clicks, grow],
            outputs=shown,
            **direct,
        ).success(**to_brush)
        clear_button.click(clear_points, inputs=clicks, outputs=shown, **direct).success(**to_brush)
        grow.change(
            render_clicks,
            inputs=[clicks, grow],
            outputs=clickable,
            trigger_mode="always_last",
            show_progress="hidden",
            **direct,
        ).success(**to_brush)
        # The API's way to segment (the page's clicks need a session): photo, points, labels.
        with gr.Group(visible=False):
            api_points = gr.JSON(label="points [[x, y], ...] in pixels")
            api_labels = gr.JSON(label="labels [1 or 0, ...]")
            api_mask = gr.File(label="mask PNG")
            api_score = gr.Number(label="score")
            api_button = gr.Button("segment")
        api_button.click(
            functools.partial(segment_api, get_segmenter, output_dir),
            inputs=[image, api_points, api_labels],
            outputs=[api_mask, api_score],
            api_name="segment",
            concurrency_limit=None,
            concurrency_id="segment",
        )
        suggest = functools.partial(suggest_words, get_pipeline)
        check = functools.partial(check_inputs, get_pipeline)
        for box in (source, target):
            box.change(
                suggest,
                inputs=[source, target],
                outputs=[words, prompt_status],
                trigger_mode="always_last",
                api_visibility="private",
                **cheap,
            )
        for control in (words, negative_word, iterations):
            control.change(
                check,
                inputs=[source, target, words, negative_word, iterations],
                outputs=prompt_status,
                trigger_mode="always_last",
                api_visibility="private",
                **cheap,
            )
        edit_event = edit_button.click(
            functools.partial(run_edit, get_pipeline, output_dir, float(time_limit)),
            inputs=[
                # In the API's order: what it must be given first; None defaults last; the
                # session's states (not part of the API) at the end.
                image,
                source,
                target,
                words,
                negative_word,
                preset,
                iterations,
                granularity,
                steps,
                guidance,
                inversion,
                resolution,
                grow,
                mask_file,
                editor,
                region2_mask_file,
                region2_editor,
                region2_words,
                region2_weight,
                clicks,
                history,
            ],
            outputs=[status, live, attention, curve, result, download, settings, history],
            api_name="edit",
            concurrency_limit=1,  # one GPU: one edit at a time; the others wait in the queue
            concurrency_id="gpu",
            # The queue position and progress show on the (still empty) result, so the status
            # line stays readable.
            show_progress="full",
            show_progress_on=[result],
        )
        edit_event.then(show_history, inputs=history, outputs=gallery, **direct)
        cancel_button.click(
            cancelled_status,
            outputs=status,
            cancels=[edit_event],
            show_progress="hidden",
            **direct,
        )
        use_button.click(
            use_as_input,
            inputs=download,
            outputs=[image, mask_file, region2_mask_file, status],
            show_progress="hidden",
            **direct,
        )
    # api_open=False: the queued endpoints (edit, segment) are reached through the queue only,
    # never by a direct POST that would skip it and its concurrency limit. max_size: a full queue
    # refuses new edits with Gradio's "Queue is full" message instead of growing without bound.
    demo.queue(max_size=QUEUE_SIZE, api_open=False)
    return demo


def _no_segmenter() -> Segmenter:
    raise ValueError("no Segment Anything model was given to build_demo (load_segmenter)")


# ----------------------------------------------------------------------------------------------
# Command line


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="app.py", description="MAG-Edit Studio: the web page for localized image editing."
    )
    model = parser.add_mutually_exclusive_group()
    model.add_argument(
        "--model",
        default=default_model(),
        metavar="ID_OR_FOLDER",
        help="Hub id or local diffusers folder of an SD v1.x model "
        f"(default: $MAGEDIT_MODEL or {SD14_MODEL})",
    )
    model.add_argument(
        "--tiny", action="store_true", help="random-weight offline demo: the results are noise"
    )
    parser.add_argument(
        "--sam-model",
        choices=SAM_MODEL_TYPES,
        default=DEFAULT_SAM_MODEL,
        help="Segment Anything model for click-to-segment (default: vit_b)",
    )
    parser.add_argument(
        "--sam-checkpoint",
        metavar="PATH",
        help="a local SAM checkpoint, Meta's .pth for --sam-model (default: "
        "$MAGEDIT_SAM_CHECKPOINT, else downloaded once from the Hugging Face Hub)",
    )
    parser.add_argument(
        "--device", metavar="DEVICE", help="torch device (default: cuda if available, else cpu)"
    )
    parser.add_argument(
        "--host",
        # Hugging Face Spaces sets GRADIO_SERVER_NAME=0.0.0.0; an explicit --host wins.
        default=os.environ.get("GRADIO_SERVER_NAME") or "127.0.0.1",
        help="address to listen on (default: 127.0.0.1, this machine only)",
    )
    parser.add_argument(
        "--port",
        type=int,
        default=int(os.environ.get("GRADIO_SERVER_PORT") or 7860),
        help="port to listen on (default: 7860)",
    )
    parser.add_argument(
        "--share", action="store_true", help="also serve the page on a public gradio.live link"
    )
    parser.add_argument(
        "--time-limit",
        type=_seconds,
        default=TIME_LIMIT,
        metavar="SECONDS",
        help=f"wall-clock limit of one edit; a longer one is stopped (default: {TIME_LIMIT:g})",
    )
    return parser


def _seconds(text: str) -> float:
    """argparse type of --time-limit: a finite number of seconds above 0."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds above 0")
    return value


def main(argv: Sequence[str] | None = None) -> None:
    """Load the models (a failure ends in one line naming the way out, exit status 2), then
    serve the page until Ctrl-C."""
    from magedit.loading import load_pipeline, load_segmenter

    parser = build_parser()
    args = parser.parse_args(argv)
    if args.tiny and args.sam_checkpoint:
        parser.error("--sam-checkpoint does not go with --tiny (random weights for every model)")
    try:
        pipe = load_pipeline(args.model, args.device, "auto", args.tiny)
    except (ValueError, OSError) as error:
        # magedit.cli's messages name the way out (--model /local/folder, --tiny).
        print(f"app.py: error: {one_line(str(error))}", file=sys.stderr)
        raise SystemExit(2) from None
    try:
        segmenter = load_segmenter(
            args.sam_model, args.sam_checkpoint, args.device, "auto", args.tiny
        )
    except (ValueError, OSError) as error:
        message = one_line(str(error))
        if "--sam-checkpoint" not in message:
            message += "; pass --sam-checkpoint /path/to/the/checkpoint.pth, or --tiny"
        print(f"app.py: error: Segment Anything: {message}", file=sys.stderr)
        raise SystemExit(2) from None
    if args.tiny:
        print("app.py: --tiny: random, untrained weights; the results are noise", file=sys.stderr)
    if pipe.device.type == "cpu":
        leave_a_core_for_the_server()
    try:
        check_output_dir(OUTPUT_DIR)
    except ValueError as error:
        print(f"app.py: error: {error}", file=sys.stderr)
        raise SystemExit(2) from None
    OUTPUT_DIR.mkdir(parents=True, exist_ok=True)
    demo = build_demo(
        lambda: pipe,
        lambda: segmenter,
        tiny=args.tiny,
        output_dir=OUTPUT_DIR,
        time_limit=args.time_limit,
    )
    demo.launch(**launch_options(args))


def leave_a_core_for_the_server() -> int:
    """When the models run on the CPU, give torch one core fewer than the machine has, so that
    the server's own thread answers clicks, cancels and page loads while an edit computes (on 2
    cores with torch on both, a cancel request went unanswered for over 5 s). Returns the count."""
    import torch

    threads = max(1, min(torch.get_num_threads(), (os.cpu_count() or 1) - 1))
    torch.set_num_threads(threads)
    return threads


def check_output_dir(folder: Path) -> None:
    """Gradio accepts the files a handler returns only from the working folder, the temp folder
    or launch's allowed_paths (which serve a folder to anyone: only assets/ is). ValueError
    naming the fix when ``folder`` is elsewhere."""
    folder = Path(folder).resolve()
    for root in (Path.cwd().resolve(), Path(tempfile.gettempdir()).resolve()):
        if folder.is_relative_to(root):
            return
    raise ValueError(
        f"the output folder {folder} is outside the working folder and the temp folder; set "
        "MAGEDIT_OUTPUT_DIR to a folder inside one of them, or start app.py from a folder above it"
    )


def launch_options(args: argparse.Namespace) -> dict[str, Any]:
    """Keyword arguments of demo.launch for the parsed command line."""
    return {
        "server_name": args.host,
        "server_port": args.port,
        "share": args.share,
        # Expected failures are gr.Error with a readable message (shown whatever this says);
        # anything else shows a generic error, never the exception's text or traceback.
        "show_error": False,
        # Only the examples are served as files; results reach the page through Gradio's cache.
        "allowed_paths": [str(ASSETS_DIR)],
        "max_file_size": MAX_FILE_SIZE,
        # /monitoring would tell anyone each endpoint's timings and success rate.
        "enable_monitoring": False,
        "css": CSS,
    }


if __name__ == "__main__":
    main()
