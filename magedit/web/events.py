"""What each control of the page does: plain functions from the controls' values (and the
session's ``MaskState``) to update dicts, output name -> new value; names a dict leaves out are
left as they are. ``layout`` wires them to the components; the tests call them directly.

Errors a visitor can fix are shown where they happen (the mask's line under the photo, the
status line, the validator's message next to a control), never as a traceback.

Over 700 lines on purpose: it is every control's behaviour, each a small function the tests call
without a browser; split by control, the handlers would share the session's mask state and the
page's services across files for no reader's gain.
"""

from __future__ import annotations

import dataclasses
import functools
import html
import json
import math
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from magedit import images, prompts
from magedit.config import PRESETS, TINY_QUICK, config_from
from magedit.errors import InputError, is_out_of_memory, one_line
from magedit.web import masks
from magedit.web.admission import Admission
from magedit.web.components import log
from magedit.web.job import OUT_OF_MEMORY, JobTimeout, Line, Stream, Worker, status_html
from magedit.web.limits import RANGES, RESOLUTIONS, SEGMENT_CONCURRENCY
from magedit.web.numbers import short

if TYPE_CHECKING:
    from magedit.pipeline import MagEditPipeline, PreparedEdit, Region
    from magedit.segment import Segmenter

T = TypeVar("T")

INVERSION_CHOICES = [
    ("null-text (the paper's; slower)", "null_text"),
    ("direct (fast, exact reconstruction)", "direct"),
    ("DDIM (fastest; the background may drift)", "ddim"),
]
try:  # Hugging Face's ZeroGPU decorator; outside a ZeroGPU Space it returns the function as is
    import spaces

    _gpu = spaces.GPU
except ImportError:  # spaces is optional off Hugging Face: the same no-op

    def _gpu(task=None, **_: Any):
        return task if callable(task) else (lambda fn: fn)


# All Segment Anything work of the page (clicks, the /segment API) passes through here.
SEGMENTING = threading.BoundedSemaphore(SEGMENT_CONCURRENCY)


@dataclasses.dataclass(frozen=True)
class Defaults:
    """Initial values of the controls (paper defaults for real weights; quick ones for --tiny)."""

    steps: int = 50
    iterations: int = 15
    inversion: str = "null_text"
    resolution: int = 512

    @classmethod
    def for_model(cls, tiny: bool) -> Defaults:
        if not tiny:
            return cls()
        quick = TINY_QUICK
        return cls(quick["steps"], quick["max_iter"], quick["inversion"], quick["resolution"])


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


@dataclasses.dataclass
class Services:
    """What the handlers share: the models (loaded on first use), where results go, each edit's
    time limit, the edit queue's admission, and the examples. ``pipeline`` checks and prepares
    every edit and runs those on slot 0 of the line; ``more_pipelines`` (one per further GPU, the
    same model) run those on slots 1, 2, ..."""

    pipeline: Callable[[], MagEditPipeline]
    segmenter: Callable[[], Segmenter]
    output_dir: Path
    time_limit: float
    admission: Admission
    examples: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    more_pipelines: Sequence[Callable[[], MagEditPipeline]] = ()
    line: Line | None = None

    def __post_init__(self):
        if self.line is None:
            self.line = Line(slots=1 + len(self.more_pipelines))

    def pipeline_of(self, slot: int) -> Callable[[], MagEditPipeline]:
        """The pipeline that runs the edits of the line's ``slot``."""
        return (self.pipeline, *self.more_pipelines)[slot]


class ModelUnavailable(Exception):
    """A model could not be loaded; the reason went to the server's log."""


def _model(get: Callable[[], T], what: str) -> T:
    try:
        return get()
    except (ValueError, OSError) as error:
        # The reason names the server's folders: it goes to the server's log, not to the page.
        print(f"magedit: error: {what}: {one_line(error)}", file=sys.stderr)
        raise ModelUnavailable(f"{what} could not be loaded; see the server's log") from None


def escape(text: object) -> str:
    return html.escape(one_line(text), quote=False)


def mask_line(state: masks.MaskState, problem: str = "") -> str:
    """The line under the photo: the mask in use, or what went wrong (escaped here)."""
    if problem:
        return f'<div class="magedit-mask-line magedit-error">⚠ {escape(problem)}</div>'
    return f'<div class="magedit-mask-line">{escape(state.label())}</div>'


# ------------------------------------------------------------------------------ the photo
PHOTO_GONE = (
    "this photo is no longer on the server (uploads are kept for two hours); upload it again"
)


def explained(handler: Callable[..., dict[str, Any]]) -> Callable[..., dict[str, Any]]:
    """A mask handler that says so under the canvas, instead of failing, when the session's
    photo can no longer be read (Gradio deleted the upload; the tab stayed open)."""

    @functools.wraps(handler)
    def run(*args: Any, **kwargs: Any) -> dict[str, Any]:
        try:
            return handler(*args, **kwargs)
        except PhotoGone:
            state = next(a for a in args if isinstance(a, masks.MaskState))
            return {"mask_line": mask_line(state, PHOTO_GONE)}

    return run


class PhotoGone(Exception):
    """The session's photo file is gone and its display is not cached."""


def _display(state: masks.MaskState) -> Any:
    try:
        return masks.DISPLAYS.get(state)
    except ValueError:
        raise PhotoGone from None


def _canvas(state: masks.MaskState) -> Any:
    return masks.render(state, _display(state)) if state.photo else None


def _shown(state: masks.MaskState) -> dict[str, Any]:
    """The updates every mask change makes: canvas, mask line, state."""
    return {"canvas": _canvas(state), "mask_line": mask_line(state), "state": state}


def upload(path: str | None, example: str | None = None) -> dict[str, Any]:
    """A photo arrives (upload, paste, example, "Use as input"): a fresh state, no mask; the
    brushes start over on it. A file that is not a usable photo says why under the canvas."""
    if path is None:
        return clear_photo()
    try:
        state, shown = masks.new_photo(path, example)
    except ValueError as error:
        state = masks.MaskState()
        return {
            "canvas": None,
            "state": state,
            "mask_line": mask_line(state, f"Cannot use this file: {error}"),
            "editor": None,
            "region2_editor": None,
            "status": status_html(f"Cannot use this file: {one_line(error)}", kind="error"),
        }
    height, width = state.size
    brush = masks.brush_background(state, shown)
    return {
        "canvas": shown,
        "state": state,
        "mask_line": mask_line(state),
        "grow": 0,  # a new photo starts ungrown, as its state does
        "editor": brush,
        "region2_editor": dict(brush),
        "status": status_html(
            f"Photo {width}x{height}. Click the object to edit, then describe the change."
        ),
    }


def clear_photo() -> dict[str, Any]:
    state = masks.MaskState()
    return {
        "canvas": None,
        "state": state,
        "mask_line": mask_line(state),
        "editor": None,
        "region2_editor": None,
        "status": status_html("Upload a photo or pick an example to start."),
    }


def embed(services: Services, state: masks.MaskState) -> dict[str, Any]:
    """Right after a photo arrives: Segment Anything encodes it, so the first click is fast."""
    if state.photo is None:
        return {}
    try:
        segmenter = _model(services.segmenter, "Segment Anything")
        with SEGMENTING:
            segmenter.embed(images.load_image(state.photo))
    except ModelUnavailable as error:
        return {
            "mask_line": mask_line(
                state, f"{error}; mark the region with the brush or a mask file instead"
            )
        }
    except ValueError as error:
        return {"mask_line": mask_line(state, str(error))}
    return {"mask_line": mask_line(state)}


def example(services: Services, index: int) -> dict[str, Any]:
    """An example chosen: its photo, its mask in use, its prompts, words and preset. Nothing
    runs."""
    chosen = services.examples[index]
    update = upload(chosen["image"], example=chosen["name"])
    state = update["state"]
    if state.photo is None:
        return update
    mask = images.load_mask(chosen["mask"], size=state.size)
    state = masks.with_base(state, mask, "example")
    return {
        **update,
        **_shown(state),
        "source": chosen["source"],
        "target": chosen["target"],
        "words": ", ".join(chosen["words"]),
        "negative_word": chosen["negative_word"] or "",
        "preset": chosen["preset"],
        "status": status_html(
            f"Example “{chosen['name']}”: its mask and prompts are filled in. Press Edit, or click "
            "the photo to mark another region."
        ),
    }


# ------------------------------------------------------------------------------ clicks
def _segment(services: Services, state: masks.MaskState, points, labels) -> dict[str, Any]:
    """Segment Anything's candidates for these clicks: the new state and what to show."""
    if not points:
        state = dataclasses.replace(masks.cleared(state))
        return {**_shown(state), "editor": _brush(state)}
    segmenter = _model(services.segmenter, "Segment Anything")
    with SEGMENTING:
        try:
            segmenter.embedding(state.key)
            source: Any = state.key
        except RuntimeError:  # other photos pushed it out of the cache: embed it again
            source = images.load_image(state.photo)
        try:
            # SAM's advice: three masks for a single, ambiguous click; one for several.
            candidates = segmenter.predict(
                source, points=points, labels=labels, multimask=len(points) == 1,
                image_size=state.size,
            )  # fmt: skip
        except ValueError as error:
            state = dataclasses.replace(
                masks.cleared(state), points=tuple(points), labels=tuple(labels)
            )
            return {
                "canvas": _canvas(state),
                "state": state,
                "mask_line": mask_line(state, str(error)),
                "editor": _brush(state),
            }
    state = masks.with_candidates(state, candidates, points, labels)
    return {**_shown(state), "editor": _brush(state)}


def _brush(state: masks.MaskState) -> Any:
    return masks.brush_background(state, _display(state)) if state.photo else None


@explained
def click(services: Services, state: masks.MaskState, mode: str, index: Sequence) -> dict:
    """A click on the photo at ``index`` = (x, y) in the shown canvas's pixels: a point on the
    object ("object") or off it ("background"), and Segment Anything's mask for all points."""
    if state.photo is None:
        return {"mask_line": mask_line(state, "Upload a photo first, then click the object.")}
    from magedit.segment import MAX_POINTS, check_prompts

    try:
        x, y = (float(v) for v in index)
    except (TypeError, ValueError):
        return {"mask_line": mask_line(state, "a click must be an (x, y) pair of numbers")}
    if mode not in masks.CLICK_MODES:
        mode = "object"
    shown = _display(state)
    point = masks.to_photo(state, x, y, shown.shape[:2])
    if len(state.points) >= MAX_POINTS:
        return {
            "mask_line": mask_line(
                state, f"at most {MAX_POINTS} points per mask; undo some, or clear and start over"
            )
        }
    try:
        check_prompts([point], [1], None, state.size)
    except ValueError as error:
        return {"mask_line": mask_line(state, str(error))}
    points = (*state.points, point)
    labels = (*state.labels, int(mode == "object"))
    try:
        return _segment(services, state, points, labels)
    except ModelUnavailable as error:
        return {"mask_line": mask_line(state, f"{error}; mark the region with the brush instead")}


@explained
def undo(services: Services, state: masks.MaskState) -> dict[str, Any]:
    if not state.points:
        return {"mask_line": mask_line(state, "No point to undo.")}
    try:
        return _segment(services, state, state.points[:-1], state.labels[:-1])
    except ModelUnavailable as error:
        return {"mask_line": mask_line(state, str(error))}


@explained
def clear_points(state: masks.MaskState) -> dict[str, Any]:
    state = masks.cleared(state)
    return {**_shown(state), "editor": _brush(state)}


@explained
def next_candidate(state: masks.MaskState) -> dict[str, Any]:
    if len(state.candidates) < 2:
        problem = (
            "Segment Anything gave one mask for these points; add a point to change it"
            if state.candidates
            else "No mask yet: click the object first."
        )
        return {"mask_line": mask_line(state, problem)}
    state = masks.next_candidate(state)
    return {**_shown(state), "editor": _brush(state)}


@explained
def set_grow(state: masks.MaskState, grow: Any) -> dict[str, Any]:
    try:
        pixels = RANGES["grow"].check(grow)
    except ValueError as error:
        return {"mask_line": mask_line(state, str(error))}
    return _shown(dataclasses.replace(state, grow=pixels))


@explained
def brush(state: masks.MaskState, editor: dict | None) -> dict[str, Any]:
    """The brush painted: red adds to the mask in use, blue takes away."""
    if state.photo is None:
        return {}
    state = masks.brushed(state, editor)
    return _shown(state)


@explained
def mask_file(state: masks.MaskState, path: str | None) -> dict[str, Any]:
    """A mask file uploaded (non-black pixels are inside): it becomes the mask in use."""
    if state.photo is None:
        return {"mask_line": mask_line(state, "Upload the photo first, then its mask.")}
    if path is None:
        return clear_points(state)
    try:
        mask = images.load_mask(path, size=state.size)
    except ValueError as error:
        return {"mask_line": mask_line(state, f"Cannot use this mask: {error}")}
    state = masks.with_base(masks.cleared(state), mask, "file")
    return {**_shown(state), "editor": _brush(state)}


@explained
def region2(state: masks.MaskState, editor: dict | None, path: str | None) -> dict[str, Any]:
    """The second region: a mask file, else what is painted on its brush."""
    if state.photo is None:
        return {}
    try:
        if path is not None:
            mask = images.load_mask(path, size=state.size)
        else:
            mask = masks.painted_mask(editor, state.size)
    except ValueError as error:
        return {"mask_line": mask_line(state, f"Second region: {error}")}
    packed = None if mask is None else masks.Packed.of(mask)
    return _shown(dataclasses.replace(state, region2=packed))


def use_as_input(result: Any) -> dict[str, Any]:
    """ "Use as input": the last result (its full-resolution PNG) becomes the photo."""
    path = getattr(result, "path", result)  # gr.File gives a path (or a FileData)
    if not path:
        return {"status": status_html("No result yet: run an edit first.", kind="error")}
    update = upload(str(path))
    if update["state"].photo is not None:
        update["status"] = status_html("The result is the new photo. Mark the region to edit next.")
    return update


# ------------------------------------------------------------------------------ the text
def parse_words(text: str | None) -> list[str]:
    """Edit words typed in the page: comma separated ("ice cream, green"), or space separated
    when there is no comma ("green velvet")."""
    text = (text or "").strip() if isinstance(text, str) else ""
    if not text:
        return []
    parts = text.split(",") if "," in text else text.split()
    return [part.strip() for part in parts if part.strip()]


FIELD_NAMES = {
    "source_prompt": "Source prompt",
    "target_prompt": "Target prompt",
    "words": "Edit words",
    "negative_word": "Negative word",
    "negative_prompt": "Negative word",
    "mask": "Mask",
    "image": "Photo",
    "settings": "Settings",
}


def without_prompts(message: str, *texts: Any) -> str:
    """A message shown next to a control on the page, without the quoted prompts the visitor
    sees just above it ("... is not in the target prompt 'a long prompt ...'; ...")."""
    for text in texts:
        if isinstance(text, str) and text.strip():
            message = message.replace(f" '{prompts.quoted(text.strip())}'", "")
    return message


def field_message(error: InputError) -> str:
    """An InputError as the status line says it: "Edit words: ..."."""
    name = FIELD_NAMES[error.field]
    if error.region == 2:
        name = "Second region"
    return f"{name}: {one_line(error)}"


def suggest_words(services: Services, source: str, target: str, negative: str) -> dict:
    """A prompt changed: the words the target adds (and, when the source had a word there, the
    negative word: "green" replaced "red"), or nothing while a prompt is empty or wrong."""
    if not (source or "").strip() or not (target or "").strip():
        return {}
    try:
        tokenizer = _model(services.pipeline, "the model").tokenizer
        text = prompts.check_edit_text(tokenizer, source, target, [None], guided=False)
    except (InputError, ModelUnavailable):
        return {}
    update: dict[str, Any] = {"words": ", ".join(text.words[0])}
    replaced = prompts.replaced_words(tokenizer, text.source, text.target)
    if replaced and not (negative or "").strip():
        update["negative_word"] = replaced[0]
    return update


def check_text(
    services: Services,
    source: str,
    target: str,
    words: str,
    negative: str,
    iterations: Any,
    region2_words: str,
) -> dict[str, Any]:
    """Any prompt or word changed: the status line says what is wrong, or that all is well."""
    if not (source or "").strip() or not (target or "").strip():
        return {"status": status_html("Describe the photo and the edit: two prompts.")}
    try:
        tokenizer = _model(services.pipeline, "the model").tokenizer
        per_region = [parse_words(words) or None]
        if parse_words(region2_words):
            per_region.append(parse_words(region2_words))
        guided = not isinstance(iterations, int | float) or iterations > 0
        text = prompts.check_edit_text(
            tokenizer, source, target, per_region, negative, guided=guided
        )
    except InputError as error:
        return {"status": status_html(field_message(error), kind="error")}
    except ModelUnavailable as error:
        return {"status": status_html(str(error), kind="error")}
    chosen = ", ".join(w for region in text.words for w in region)
    return {"status": status_html(f"Ready: the edit guides “{chosen}”. Press Edit.")}


# ------------------------------------------------------------------------------ the edit
@dataclasses.dataclass
class Request:
    """One edit as the page or the API gives it, before any check."""

    photo: Any  # a path (or array)
    source: Any
    target: Any
    words: Any
    negative_word: Any
    preset: Any
    iterations: Any
    granularity: Any
    steps: Any
    guidance: Any
    inversion: Any
    resolution: Any
    regions: list[tuple[Any, Any, Any]]  # (mask, words, weight) per region; mask None: none
    region2_words: Any = ""


def build_config(request: Request):
    """The settings of a request as an EditConfig. ControlErrors names every control whose
    value is refused (a number out of its range, an unknown preset, inversion or resolution)."""
    errors: dict[str, str] = {}
    values = {}
    for name in ("iterations", "granularity", "steps", "guidance"):
        try:
            values[name] = RANGES[name].check(getattr(request, name))
        except ValueError as error:
            errors[name] = str(error)
    if not isinstance(request.preset, str) or request.preset not in PRESETS:
        errors["preset"] = f"preset is {short(request.preset)}; choose one of {', '.join(PRESETS)}"
    methods = [value for _, value in INVERSION_CHOICES]
    if not isinstance(request.inversion, str) or request.inversion not in methods:
        errors["inversion"] = (
            f"inversion is {short(request.inversion)}; choose one of {', '.join(methods)}"
        )
    if isinstance(request.resolution, bool) or request.resolution not in RESOLUTIONS:
        errors["resolution"] = (
            f"resolution is {short(request.resolution)}; choose one of "
            f"{', '.join(map(str, RESOLUTIONS))}"
        )
    if errors:
        raise ControlErrors(errors)
    return config_from(
        request.preset,
        values["steps"],
        max_iter=values["iterations"],
        scale=values["granularity"],
        guidance_scale=values["guidance"],
        inversion=request.inversion,
        resolution=int(request.resolution),
    )


class ControlErrors(ValueError):
    """Errors of several controls at once: control name -> message."""

    def __init__(self, errors: dict[str, str]):
        super().__init__("; ".join(errors.values()))
        self.errors = errors


def prepare(services: Services, request: Request) -> PreparedEdit:
    """Check a request once: settings, regions, photo, prompts, words. ControlErrors names the
    controls at fault (keys: the request's field names, "photo", "mask", "region2")."""
    from magedit.pipeline import Region

    config = build_config(request)
    if request.photo is None:
        raise ControlErrors({"photo": "upload a photo first (or pick an example)"})
    regions: list[Region] = []
    for number, (mask, words, weight) in enumerate(request.regions, 1):
        field = "mask" if number == 1 else "region2"
        if number == 2:  # checked even when unused: any value may come through the API
            try:
                weight = RANGES["region2_weight"].check(weight)
            except ValueError as error:
                raise ControlErrors({"region2_weight": str(error)}) from None
        if mask is None:
            if number == 1:
                raise ControlErrors(
                    {"mask": "no region is marked; click the object on the photo (or paint it)"}
                )
            if parse_words(words):
                raise ControlErrors(
                    {"region2": "the second region has edit words but no mask; paint it or "
                     "upload its mask (Advanced > Second region), or clear its words"}
                )  # fmt: skip
            continue
        try:
            regions.append(Region(mask=mask, words=parse_words(words) or None, weight=weight))
        except ValueError as error:
            raise ControlErrors({field: str(error)}) from None
    if len(regions) == 2 and not regions[1].words:
        raise ControlErrors(
            {"region2": "the second region has no edit words; type the target prompt's words "
             "that belong to it, or remove its mask"}
        )  # fmt: skip
    pipe = _model(services.pipeline, "the model")
    try:
        return pipe.prepare(
            request.photo,
            request.source,
            request.target,
            regions=regions,
            negative_word=request.negative_word if isinstance(request.negative_word, str) else "",
            config=config,
        )
    except InputError as error:
        raise ControlErrors({_control(error): one_line(error)}) from None


def _control(error: InputError) -> str:
    """The request field an InputError is about."""
    if error.region == 2:
        return "region2"
    return {
        "image": "photo",
        "source_prompt": "source",
        "target_prompt": "target",
        "words": "words",
        "mask": "mask",
        "negative_word": "negative_word",
        "negative_prompt": "negative_word",
        "settings": "resolution",
    }[error.field]


def run(
    services: Services,
    prepared: PreparedEdit,
    made: frozenset,
    history: Sequence[tuple[str, str]] | None,
    slot: int = 0,
) -> Iterator[dict[str, Any]]:
    """Invert and edit ``prepared`` on a worker thread, with the pipeline of the line's ``slot``;
    yield update dicts as it reports. Ends with the result's update. Raises ValueError,
    FloatingPointError, JobTimeout or an out-of-memory RuntimeError as they happen."""
    pipe = _model(services.pipeline_of(slot), "the model")
    stream = Stream(prepared, made=made)
    worker = Worker(pipe, prepared, services.time_limit)
    worker.start()
    try:
        for item in worker:
            update = stream.add(item)
            if update is not None:
                yield update
        yield stream.finish(services.output_dir, pipe.model_id, history)
    finally:
        worker.cancel()


def admit_and_prepare(
    services: Services, request: Any, make: Callable[[], Request]
) -> dict[str, str]:
    """The validator's work: refuse an edit the line must not take (before reading any file: a
    refused flood costs no decoding), else check it once and keep the prepared edit for its
    job. Returns {control: message} ({} when all is well)."""
    refused = services.admission.admit(request)
    if refused is not None:
        log(refused)
        return {"photo": refused}
    try:
        prepared = prepare(services, make())
    except ControlErrors as error:
        services.admission.release(request)
        log(f"an edit: {'; '.join(f'{k}: {v}' for k, v in error.errors.items())}")
        return error.errors
    except ModelUnavailable as error:
        services.admission.release(request)
        return {"photo": str(error)}
    services.admission.keep(request, prepared)
    return {}


def take_prepared(services: Services, request: Any, make: Callable[[], Request]) -> Any:
    """The job's prepared edit: the validator's (each input checked once), or prepared now if
    the validator's was dropped. A message (str) when the inputs are refused; None when the
    job's client stopped listening (the job is dropped)."""
    services.admission.release(request)
    if not services.admission.listening(request):
        log("an edit whose client stopped listening was dropped before it started")
        return None
    prepared = services.admission.take(request)
    if prepared is not None:
        return prepared
    try:
        return prepare(services, make())
    except ControlErrors as error:
        return "; ".join(error.errors.values())
    except ModelUnavailable as error:
        return one_line(error)


def gpu_duration(services: Services, prepared: Any, *_: Any) -> int:
    """Seconds of GPU that ZeroGPU reserves for one edit: twice the estimated UNet calls plus
    RESERVE_FIXED_SECONDS, rounded up, capped by the job's time limit. (A paper-default edit
    without a negative word: 20 s with direct inversion, 37 s with null-text, against 6.2 s and
    20.7 to 26.2 s measured warm on an H100.)"""
    negative = getattr(prepared, "negative_word", None) is not None
    seconds = RESERVE_FIXED_SECONDS + 2 * estimate_seconds(prepared.config, negative)
    return math.ceil(min(seconds, services.time_limit))


@_gpu(duration=gpu_duration)
def run_on_gpu(services: Services, prepared: Any, made: frozenset, history: Any, slot: int = 0):
    """The edit's GPU work (under ZeroGPU on a ZeroGPU Space, a plain call elsewhere)."""
    yield from run(services, prepared, made, history, slot)


class StoppedListening(Exception):
    """The job's client no longer reads its updates: the job leaves the line."""


def wait_turn(
    services: Services,
    ticket: object,
    request: Any,
    seconds: float = 0.5,
    prefer: Sequence[int] = (),
) -> Iterator[dict[str, Any]]:
    """Wait in ``services.line`` until this ticket holds a GPU (one of ``prefer`` if free),
    saying every ``seconds`` how many edits are ahead. Raises StoppedListening when the client
    stopped reading."""
    while not services.line.take(ticket, seconds, prefer):
        if not services.admission.listening(request):
            raise StoppedListening
        ahead, slots = services.line.ahead(ticket), services.line.slots
        gpus = "the GPU" if slots == 1 else f"one of the {slots} GPUs"
        yield {
            "status": status_html(
                f"Waiting for {gpus}: {ahead} edit{'s' * (ahead != 1)} ahead of yours. "
                "Cancel leaves the line."
            )
        }


def edit_job(
    services: Services,
    prepared: PreparedEdit,
    request: Any,
    made: frozenset = frozenset(),
    history: Sequence[tuple[str, str]] | None = None,
) -> Iterator[dict[str, Any]]:
    """An edit's whole job: wait in line for the GPU (saying the place), then invert and edit
    (``run_on_gpu``). Closing the generator (Cancel) leaves the line or stops the work."""
    with services.line.ticket() as ticket:
        yield from wait_turn(services, ticket, request, prefer=holding(services, prepared))
        slot = services.line.slot(ticket)
        for update in run_on_gpu(services, prepared, made, history, slot):
            if not services.admission.listening(request):
                raise StoppedListening  # closing run_on_gpu stops the worker at its next step
            yield update


def job_updates(
    services: Services,
    prepared: PreparedEdit,
    request: Any,
    made: frozenset = frozenset(),
    history: Sequence[tuple[str, str]] | None = None,
) -> Iterator[dict[str, Any]]:
    """``edit_job``'s updates as the page and the API serve them: a client that stopped
    listening ends the job quietly (a line in the log); a failure the visitor can act on ends it
    with a last update ``{"failure": message}``; any other exception (a bug) propagates."""
    try:
        yield from edit_job(services, prepared, request, made, history)
    except StoppedListening:
        log("an edit whose client stopped listening left the line")
    except Exception as error:
        message = failure_message(error)
        if message is None:
            raise
        log(f"an edit stopped: {message}")
        yield {"failure": message}


def holding(services: Services, prepared: PreparedEdit) -> list[int]:
    """The line's slots whose pipeline holds this edit's inversion (a re-edit of the same photo
    and source prompt runs there without inverting again); [] with one GPU."""
    if services.line.slots == 1:
        return []
    found = []
    for slot in range(services.line.slots):
        try:
            pipe = services.pipeline_of(slot)()
        except (ValueError, OSError):  # not loadable: the job reports it when it runs there
            continue
        if pipe.cache.get(pipe.inversion_key(prepared)) is not None:
            found.append(slot)
    return found


def failure_message(error: BaseException) -> str | None:
    """What to tell the visitor about a job's failure, or None for a bug (re-raised)."""
    if isinstance(error, ValueError | FloatingPointError | JobTimeout | ModelUnavailable):
        return one_line(error)
    if is_out_of_memory(error):
        return OUT_OF_MEMORY
    return None


def segment_api(services: Services, image: Any, points: Any, labels: Any) -> tuple[str, float]:
    """The ``segment`` API: photo, points [[x, y], ...] in pixels and labels [1 or 0, ...]
    (default all 1) -> (the path of Segment Anything's best mask as a black-and-white PNG of the
    photo's size, its score). ValueError says what is wrong."""
    from magedit import files
    from magedit.web.limits import MAX_OUTPUTS

    if image is None:
        raise ValueError("no photo; pass the photo to segment")
    segmenter = _model(services.segmenter, "Segment Anything")
    with SEGMENTING:
        photo = images.load_image(image)
        count = len(points) if isinstance(points, list | tuple) else 0
        best = segmenter.predict(photo, points=points, labels=labels, multimask=count == 1)[0]
    mask = best.mask.astype("uint8") * 255
    path = files.save_result(mask, services.output_dir, "mask", keep=MAX_OUTPUTS)
    return str(path), best.score


def example_thumbnail(entry: dict[str, Any], side: int = 240) -> Any:
    """An example's photo with its mask tinted, ``side`` pixels long: two examples of one photo
    differ by what they change."""
    photo = images.load_image(entry["image"])
    height, width = photo.shape[:2]
    scale = side / max(height, width)
    size = (max(1, round(height * scale)), max(1, round(width * scale)))
    small = images.resize_image(photo, size)
    mask = images.load_mask(entry["mask"], size=size)
    return images.mask_overlay(small, mask, color=masks.REGION_COLORS[0])


def load_examples(folder: Path) -> list[dict[str, Any]]:
    """The examples of ``folder``/examples.json with their image and mask as paths inside
    ``folder``, and a caption ("cat eyes: green → blue"); [] when there is none."""
    index = Path(folder) / "examples.json"
    if not index.is_file():
        return []
    examples = json.loads(index.read_text(encoding="utf-8"))
    root = Path(folder).resolve()
    for entry in examples:
        for key in ("image", "mask"):
            path = (root / entry[key]).resolve()
            if not path.is_relative_to(root) or not path.is_file():
                raise ValueError(f"example {entry['name']!r}: no file {entry[key]!r} in {root}")
            entry[key] = str(path)
        change = ", ".join(entry["words"])
        if entry.get("negative_word"):
            change = f"{entry['negative_word']} → {change}"
        entry["caption"] = f"{entry['name'].replace('-', ' ')}: {change}"
    return examples


# One UNet call at 512 px, seconds: H100, bf16, channels_last, CUDA graphs, measured with
# benchmarks/unet_calls.py (benchmarks/README.md, 2026-11-27): a batched denoising step (fwd4),
# a no-grad batch-1 forward (fwd1: inversion steps, recording a step's reconstruction maps, the
# negative word's pass), a MAG iteration (forward to the 16x16 layers and back) and a null-text
# inner step (forward and backward to the embedding).
CALL_SECONDS = {"fwd4": 0.0169, "fwd1": 0.0075, "mag": 0.0094, "null_text": 0.0163}
# What the calls leave out, measured as whole edits against the calls' sum: captures, decoding and
# host work (a direct edit: 6.19 s measured, 4.9 s of calls; null-text 20.7 s against 13.8 s) and
# a ZeroGPU worker's first edit (+3.0 s in a fresh process on an H200, issue 15). Hence the
# reservation: twice the calls' sum (the worst ratio measured, 26.2 s against 13.8 s, is 1.9),
# plus these seconds.
RESERVE_FIXED_SECONDS = 10.0


def estimate_seconds(config: Any, negative: bool = False) -> float:
    """Seconds of UNet calls in an edit of ``config`` at its resolution (``negative``: with a
    negative word, one more forward per MAG iteration), from CALL_SECONDS (an H100's; ZeroGPU's
    H200 is at least as fast), its inversion always included: on ZeroGPU the inversion cache of a
    GPU worker may not outlive the call, so a re-edit may invert again."""
    calls = CALL_SECONDS
    guided = sum(config.guide_at(i) for i in range(config.steps)) if config.max_iter else 0
    iteration = calls["mag"] + (calls["fwd1"] if negative else 0.0)
    seconds = config.steps * calls["fwd4"] + guided * (calls["fwd1"] + config.max_iter * iteration)
    if config.inversion == "null_text":
        seconds += config.steps * (config.null_inner_steps * calls["null_text"] + 2 * calls["fwd1"])
    else:
        seconds += config.steps * calls["fwd1"]
    return seconds * (config.resolution / 512) ** 2
