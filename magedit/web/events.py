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
import json
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from magedit import controls, images, prompts
from magedit.errors import InputError, InputErrors, one_line
from magedit.web import masks
from magedit.web.job import Status
from magedit.web.limits import SEGMENT_CONCURRENCY
from magedit.web.services import ModelUnavailable, Services, log, model

if TYPE_CHECKING:
    from magedit.pipeline import PreparedEdit, Region

# All Segment Anything work of the page (clicks, the /segment API) passes through here.
SEGMENTING = threading.BoundedSemaphore(SEGMENT_CONCURRENCY)


def mask_line(state: masks.MaskState, problem: str = "") -> Status:
    """The line under the photo: the mask in use, or what went wrong."""
    if problem:
        return Status(one_line(problem), kind="error")
    return Status(state.label())


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
        log(f"a photo upload: {error}")
        state = masks.MaskState()
        return {
            "canvas": None,
            "state": state,
            "mask_line": mask_line(state, f"Cannot use this file: {error}"),
            "editor": None,
            "region2_editor": None,
            "status": Status(f"Cannot use this file: {one_line(error)}", kind="error"),
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
        "status": Status(
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
        "status": Status("Upload a photo or pick an example to start."),
    }


def embed(services: Services, state: masks.MaskState) -> dict[str, Any]:
    """Right after a photo arrives: Segment Anything encodes it, so the first click is fast."""
    if state.photo is None:
        return {}
    try:
        segmenter = model(services.segmenter, "Segment Anything")
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
        # What the example filled in follows the prompts until the visitor types there.
        "suggested": {
            "words": ", ".join(chosen["words"]),
            "negative_word": chosen["negative_word"] or "",
            "prompts": [chosen["source"], chosen["target"]],
        },
        "status": Status(
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
    segmenter = model(services.segmenter, "Segment Anything")
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
        pixels = controls.BY_FIELD["grow"].check(grow)
    except InputError as error:
        return {"mask_line": mask_line(state, controls.say(error, "page"))}
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
        log(f"a mask file: {error}")
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
        log(f"a second region: {error}")
        return {"mask_line": mask_line(state, f"Second region: {error}")}
    packed = None if mask is None else masks.Packed.of(mask)
    return _shown(dataclasses.replace(state, region2=packed))


def use_as_input(result: Any) -> dict[str, Any]:
    """ "Use as input": the last result (its full-resolution PNG) becomes the photo."""
    path = getattr(result, "path", result)  # gr.File gives a path (or a FileData)
    if not path:
        return {"status": Status("No result yet: run an edit first.", kind="error")}
    update = upload(str(path))
    if update["state"].photo is not None:
        update["status"] = Status("The result is the new photo. Mark the region to edit next.")
    return update


def load_recipe(services: Services, state: masks.MaskState, path: str | None) -> dict[str, Any]:
    """A recipe uploaded: when it is this photo's and this model's, its mask, prompts, words and
    settings fill the page (press Edit to replay it: the same PNG). Refused in words otherwise,
    and when its settings are not ones the page offers (then from the command line)."""
    from magedit.recipe import MAX_BYTES, Recipe

    if path is None:
        return {}
    if state.photo is None:
        return {"status": Status("Upload the recipe's photo first, then the recipe.", kind="error")}
    try:
        if Path(path).stat().st_size > MAX_BYTES:
            raise InputError("recipe", f"the file is over {MAX_BYTES} bytes: not a recipe")
        recipe = Recipe.from_json(Path(path).read_bytes(), photo_hash=state.key)
        pipe = model(services.pipeline, "the model")
        recipe.check(images.load_image(state.photo), pipe.model_id)
        values = page_settings(recipe.config)
        page_regions(recipe)
    except (ValueError, OSError) as error:  # an InputError, or the photo's upload gone
        log(f"a recipe: {error}")
        return {
            "status": Status(f"Cannot use this recipe: {controls.say(error, 'page')}", kind="error")
        }
    except ModelUnavailable as error:
        return {"status": Status(str(error), kind="error")}
    first, *others = recipe.regions
    region2 = others[0] if others else None
    state = masks.with_base(
        state,
        first.mask,
        "recipe",
        points=(),
        labels=(),
        candidates=(),
        scores=(),
        grow=0,
        region2=None if region2 is None else masks.Packed.of(region2.mask),
    )
    return {
        **_shown(state),
        "editor": _brush(state),
        "grow": 0,
        "source": recipe.source_prompt,
        "target": recipe.target_prompt,
        "words": words_text(first.words),
        "negative_word": recipe.negative_word or "",
        "region2_words": words_text(region2.words) if region2 else "",
        "region2_weight": region2.weight if region2 else 1.0,
        **values,
        # The recipe's words are not the prompts' suggestion: they stay while the prompts do.
        "suggested": {
            "words": words_text(first.words),
            "negative_word": recipe.negative_word or "",
            "prompts": [recipe.source_prompt, recipe.target_prompt],
        },
        "status": Status(
            "Recipe loaded: its mask, prompts and settings are in. Press Edit to replay it."
        ),
    }


def words_text(words: Sequence[str]) -> str:
    """Edit words as the words box reads them back (``parse_words``): comma separated, and a
    lone word of several ("ice cream") with a comma after it."""
    if len(words) == 1 and " " in words[0]:
        return f"{words[0]},"
    return ", ".join(words)


def page_regions(recipe: Any) -> None:
    """InputError("recipe") when the page cannot hold the recipe's regions and negative prompt
    (one region of weight 1 and a second of the page's range; the source as the negative
    prompt): such a recipe replays from the command line."""
    cannot = []
    if len(recipe.regions) > 2:
        cannot.append(f"{len(recipe.regions)} regions (the page holds 2)")
    if recipe.regions[0].weight != 1.0:
        cannot.append("a first region's weight other than 1")
    if len(recipe.regions) == 2:
        try:
            controls.BY_FIELD["region2_weight"].check(recipe.regions[1].weight)
        except InputError:
            cannot.append("a second region's weight outside the page's range")
    if recipe.negative_prompt not in (None, recipe.source_prompt):
        cannot.append("a negative prompt of its own")
    if cannot:
        raise InputError(
            "recipe",
            f"it has {', '.join(cannot)}; replay it from the command line (magedit edit, given "
            "the recipe)",
        )


def page_settings(config: Any) -> dict[str, Any]:
    """The page's settings that make ``config`` (a preset, then the page's numbers), or
    InputError("recipe") naming what the page cannot set (a custom tau, a constraint of its own):
    such a recipe replays from the command line."""
    numbers = {
        c.name: getattr(config, c.field) for c in controls.PAGE_SETTINGS if c.field != "preset"
    }
    for name in controls.BY_NAME["preset"].values:
        try:
            if controls.config_from_values({"preset": name, **numbers}) == config:
                return {"preset": name, **numbers}
        except InputErrors:
            break  # a number out of the page's range: said below
    made = (
        controls.config_from_values({"preset": "color", **numbers}) if _in_range(numbers) else None
    )
    differ = sorted(k for k, v in config.to_dict().items() if made is None or getattr(made, k) != v)
    raise InputError(
        "recipe",
        f"its settings are not ones this page offers ({', '.join(differ[:4])} differ); replay it "
        "from the command line (magedit edit, given the recipe)",
    )


def _in_range(numbers: dict[str, Any]) -> bool:
    try:
        controls.config_from_values(numbers)
    except InputErrors:
        return False
    return True


# ------------------------------------------------------------------------------ the text
def parse_words(text: str | None) -> list[str]:
    """Edit words typed in the page: comma separated ("ice cream, green"), or space separated
    when there is no comma ("green velvet")."""
    text = (text or "").strip() if isinstance(text, str) else ""
    if not text:
        return []
    parts = text.split(",") if "," in text else text.split()
    return [part.strip() for part in parts if part.strip()]


def without_prompts(message: str, *texts: Any) -> str:
    """A message shown next to a control on the page, without the quoted prompts the visitor
    sees just above it ("... is not in the target prompt 'a long prompt ...'; ...")."""
    for text in texts:
        if isinstance(text, str) and text.strip():
            message = message.replace(f" '{prompts.shortened(text.strip())}'", "")
    return message


def field_message(error: InputError) -> str:
    """An InputError as the status line says it: "Edit words: ..."."""
    name = "Second region" if error.region == 2 else controls.word(error.field, "page")
    return f"{name}: {controls.say(error, 'page')}"


FILLED = ("words", "negative_word")  # the fields filled in from the prompts


def suggest_words(
    services: Services,
    source: str,
    target: str,
    words: str,
    negative: str,
    suggested: dict[str, str] | None,
) -> dict[str, Any]:
    """A prompt changed: the words the target adds, and the negative word (the source's word the
    target replaced: "green" replaced "red"), each filled in while the visitor has not typed in
    its field (it is empty or holds what was filled in last: ``suggested``). Nothing while a
    prompt is empty or wrong."""
    if not (source or "").strip() or not (target or "").strip():
        return {}
    try:
        tokenizer = model(services.pipeline, "the model").tokenizer
        text = prompts.check_edit_text(tokenizer, source, target, [None], guided=False)
    except (InputError, ModelUnavailable):
        return {}
    replaced = prompts.replaced_words(tokenizer, text.source, text.target)
    fresh = {"words": ", ".join(text.words[0]), "negative_word": replaced[0] if replaced else ""}
    suggested = dict(suggested or {})
    if suggested.get("prompts") == [source, target]:
        return {}  # the prompts an example or a recipe filled in, with its own words
    current = {"words": words, "negative_word": negative}
    update: dict[str, Any] = {}
    for name in FILLED:
        value = (current[name] or "").strip() if isinstance(current[name], str) else ""
        if not value or value == suggested.get(name, ""):
            update[name] = fresh[name]
            suggested[name] = fresh[name]
    return {**update, "suggested": suggested}


def check_text(
    services: Services,
    source: str,
    target: str,
    words: str,
    negative: str,
    iterations: Any,
    region2_words: str,
    state: masks.MaskState | None = None,
) -> dict[str, Any]:
    """Any prompt, word or the mask changed: the status line says what is wrong, what is still
    missing (a photo, a region), or that the edit is ready."""
    if not (source or "").strip() or not (target or "").strip():
        return {"status": Status("Describe the photo and the edit: two prompts.")}
    try:
        tokenizer = model(services.pipeline, "the model").tokenizer
        per_region = [parse_words(words) or None]
        if parse_words(region2_words):
            per_region.append(parse_words(region2_words))
        guided = not isinstance(iterations, int | float) or iterations > 0
        text = prompts.check_edit_text(
            tokenizer, source, target, per_region, negative, guided=guided
        )
    except InputError as error:
        return {"status": Status(field_message(error), kind="error")}
    except ModelUnavailable as error:
        return {"status": Status(str(error), kind="error")}
    chosen = ", ".join(w for region in text.words for w in region)
    if state is not None and state.photo is None:
        return {
            "status": Status(f"The text is ready (“{chosen}”). Upload a photo or pick an example.")
        }
    if state is not None and state.mask is None:
        return {
            "status": Status(
                f"The text is ready (“{chosen}”). Now click the object to edit on the photo."
            )
        }
    return {"status": Status(f"Ready: the edit guides “{chosen}”. Press Edit.")}


# ------------------------------------------------------------------------------ the edit
# The edit's inputs that are not settings, as the API names them (the page's are the same but
# for the photo, which is the canvas, and the mask, which is the session's).
TEXT_INPUTS = ("image", "source", "target", "words", "negative_word")


@dataclasses.dataclass
class Request:
    """One edit as the page or the API gives it, before any check."""

    photo: Any  # a path (or array)
    source: Any
    target: Any
    words: Any
    negative_word: Any
    settings: dict[str, Any]  # control name -> value, for controls.API_SETTINGS
    regions: list[tuple[Any, Any, Any]]  # (mask, words, weight) per region; mask None: none
    region2_words: Any = ""


class ControlErrors(ValueError):
    """Refused inputs of a request: ``errors``, each an InputError naming its field (and region);
    each face shows them next to its own control (``where``)."""

    def __init__(self, errors: Sequence[InputError]):
        super().__init__("; ".join(controls.say(e, "library") for e in errors))
        self.errors = list(errors)

    def where(self, face: str) -> dict[str, str]:
        """Input name -> message, in ``face``'s names and words ("page" or "api")."""
        return {input_of(e, face): controls.say(e, face) for e in self.errors}

    def say(self, face: str) -> str:
        return "; ".join(controls.say(e, face) for e in self.errors)


def input_of(error: InputError, face: str) -> str:
    """The page's or the API's input an InputError is about."""
    if error.region == 2:
        if face == "api" and error.field == "mask":
            return "region2_mask_file"
        return "region2_words"
    name = controls.word(error.field, "api")
    if face == "page" and name in ("image", "mask_file"):
        return "image"  # the canvas: the photo and the mask in use on it
    return name


def prepare(services: Services, request: Request) -> PreparedEdit:
    """Check a request once: settings, regions, photo, prompts, words. ControlErrors names the
    inputs at fault."""
    from magedit.pipeline import Region

    try:
        config = controls.config_from_values(request.settings)
    except InputErrors as error:
        raise ControlErrors(error.errors) from None
    if request.photo is None:
        raise ControlErrors([InputError("image", "upload a photo first (or pick an example)")])
    regions: list[Region] = []
    for number, (mask, words, weight) in enumerate(request.regions, 1):
        if number == 2:  # checked even when unused: any value may come through the API
            try:
                weight = controls.BY_FIELD["region2_weight"].check(weight)
            except InputError as error:
                raise ControlErrors([error]) from None
        if mask is None:
            if number == 1:
                raise ControlErrors(
                    [
                        InputError(
                            "mask",
                            "no region is marked; click the object on the photo (or paint it)",
                        )
                    ]
                )
            if parse_words(words):
                raise ControlErrors(
                    [InputError("mask", "the second region has edit words but no mask; paint it "
                     "or upload its mask (Advanced > Second region), or clear its words", 2)]
                )  # fmt: skip
            continue
        try:
            regions.append(Region(mask=mask, words=parse_words(words) or None, weight=weight))
        except ValueError as error:
            raise ControlErrors([InputError("mask", str(error), number)]) from None
    if len(regions) == 2 and not regions[1].words:
        raise ControlErrors(
            [InputError("words", "the second region has no edit words; type the target "
             "prompt's words that belong to it, or remove its mask", 2)]
        )  # fmt: skip
    pipe = model(services.pipeline, "the model")
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
        raise ControlErrors([error]) from None


def admit_and_prepare(
    services: Services, request: Any, make: Callable[[], Request]
) -> list[InputError]:
    """The validator's work: refuse an edit the line must not take (before reading any file: a
    refused flood costs no decoding), else check it once and keep the prepared edit for its
    job. Returns the refused inputs ([] when all is well)."""
    refused = services.admission.admit(request)
    if refused is not None:
        log(refused)
        return [InputError("image", refused)]
    try:
        prepared = prepare(services, make())
    except ControlErrors as error:
        services.admission.release(request)
        log(f"an edit: {'; '.join(f'{e.field}: {e}' for e in error.errors)}")
        return error.errors
    except ModelUnavailable as error:
        services.admission.release(request)
        return [InputError("image", str(error))]
    services.admission.keep(request, prepared)
    return []


def take_prepared(
    services: Services, request: Any, make: Callable[[], Request], face: str = "page"
) -> Any:
    """The job's prepared edit: the validator's (each input checked once), or prepared now if
    the validator's was dropped. A message (str, in ``face``'s words) when the inputs are
    refused; None when the job's client stopped listening (the job is dropped)."""
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
        return one_line(error.say(face))
    except ModelUnavailable as error:
        return one_line(error)


def segment_api(services: Services, image: Any, points: Any, labels: Any) -> tuple[str, float]:
    """The ``segment`` API: photo, points [[x, y], ...] in pixels and labels [1 or 0, ...]
    (default all 1) -> (the path of Segment Anything's best mask as a black-and-white PNG of the
    photo's size, its score). ValueError says what is wrong."""
    from magedit import files
    from magedit.web.limits import MAX_OUTPUTS

    if image is None:
        raise ValueError("no photo; pass the photo to segment")
    segmenter = model(services.segmenter, "Segment Anything")
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
