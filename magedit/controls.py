"""Every setting a person can give an edit, in one table, and every input's name on each face.

A :class:`Control` holds one setting: the :class:`~magedit.config.EditConfig` field it sets (or
the request's own: ``preset``, ``grow``, ``region2_weight``), its public name (the API's parameter
and the recipe's key), its command-line flag, its page label, its range and its help. The default
is never typed here: it comes from ``EditConfig`` (or ``config.TINY_QUICK`` with ``--tiny``).
The command line's flags, the page's inputs, the API's inputs and the one conversion from given
values to an ``EditConfig`` (:func:`config_from_values`) are made from this table.

The ranges are what the interfaces offer (the page, the API and ``magedit edit``); the library's
``EditConfig`` accepts any valid value (tests run 2-step edits at 64 pixels).

Messages name settings and inputs by their field in braces (``"{max_iter} is 300"``);
:func:`say` writes each face's word in their place: a flag on the command line, a label on the
page, a parameter name in the API, the field itself in the library (``errors.InputError``).
Nothing heavy is imported: ``magedit --help`` builds its parser from this table at once.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from collections.abc import Mapping, Sequence
from typing import Any

from magedit.config import (
    CONSTRAINTS,
    PRESETS,
    TINY_QUICK,
    EditConfig,
    config_from,
)
from magedit.errors import InputError, InputErrors, Says, escape_braces, fill, one_line

FACES = ("library", "cli", "page", "api")


@dataclasses.dataclass(frozen=True)
class Control:
    """One setting of an edit, as every face shows it."""

    field: str  # the EditConfig field it sets, or the request's own ("preset", "grow", ...)
    name: str  # public name: the API's parameter, the recipe's key
    flag: str | None  # `magedit edit`'s flag (None: not on the command line)
    label: str | None  # the page's label (None: not on the page)
    help: str  # one line: --help, the page's info, the API's description
    kind: str = "float"  # "int", "float", "choice" or "bool"
    low: float = 0.0
    high: float = 0.0
    step: float = 1.0  # the page slider's step
    choices: tuple[tuple[str, Any], ...] = ()  # (label, value) of a "choice"
    api: bool = False  # a parameter of the /edit API
    aliases: tuple[str, ...] = ()  # older flags that still work

    @property
    def values(self) -> list[Any]:
        return [value for _, value in self.choices]

    def default(self, tiny: bool = False) -> Any:
        """The value used when none is given: EditConfig's (the paper's), or --tiny's quick one."""
        if tiny and self.field in TINY_QUICK:
            return TINY_QUICK[self.field]
        if self.field in _CONFIG_FIELDS:
            return getattr(EditConfig(), self.field)
        return _REQUEST_DEFAULTS[self.field]

    def text(self) -> str:
        """What the setting accepts, in words ("a whole number from 0 to 30")."""
        if self.kind == "choice":
            return "one of " + ", ".join(str(v) for v in self.values)
        if self.kind == "bool":
            return "true or false"
        kind = "a whole number" if self.kind == "int" else "a number"
        return f"{kind} from {self.low:.10g} to {self.high:.10g}"

    def check(self, value: Any) -> Any:
        """``value`` as the setting's type, or InputError naming the setting and what it accepts
        (None, text, lists, NaN, infinity, a fraction for a whole number, out of range)."""
        if self.kind == "choice":
            # The value as the table has it (a JSON 256.0 is the choice 256); never a bool
            # (True == 1) and never text for a number ("256" is not 256).
            for choice in self.values:
                same_kind = isinstance(value, str) == isinstance(choice, str)
                if same_kind and not isinstance(value, bool) and value == choice:
                    return choice
            raise self._refuse(value)
        if self.kind == "bool":
            if isinstance(value, bool):
                return value
            raise self._refuse(value)
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            shown = "empty" if value is None or value == "" else f"{short(value)}, not a number"
            raise InputError(self.field, f"{{{self.field}}} is {shown}; give {self.text()}")
        try:
            number = float(value)
        except OverflowError:  # an integer past float's range (10**400 from the API)
            number = math.inf if value > 0 else -math.inf
        if not math.isfinite(number):
            raise self._refuse(number)
        if self.kind == "int" and not number.is_integer():
            raise InputError(self.field, f"{{{self.field}}} is {number:g}; give {self.text()}")
        if not self.low <= number <= self.high:
            raise InputError(
                self.field, f"{{{self.field}}} is {number:.10g}, out of range; give {self.text()}"
            )
        return int(number) if self.kind == "int" else number

    def _refuse(self, value: Any) -> InputError:
        verb = "choose" if self.kind == "choice" else "give"
        return InputError(self.field, f"{{{self.field}}} is {short(value)}; {verb} {self.text()}")


def short(value: Any, limit: int = 40) -> str:
    """repr of a given value, cut short, braces doubled (it is put in a message template)."""
    text = repr(value)
    return escape_braces(text if len(text) <= limit else text[: limit - 1] + "…")


_CONFIG_FIELDS = {f.name for f in dataclasses.fields(EditConfig)}
_REQUEST_DEFAULTS = {"preset": "color", "grow": 0, "region2_weight": 1.0}

INVERSION_CHOICES = (
    ("null-text (the paper's; slower)", "null_text"),
    ("direct (fast, exact reconstruction)", "direct"),
    ("DDIM (fastest; the background may drift)", "ddim"),
)

# The table. Order: the API's parameters keep this order (clients may pass them by position).
CONTROLS: tuple[Control, ...] = (
    Control(
        "preset", "preset", "--preset", "Preset (object may change the shape)",
        "named settings: color and texture keep the shape (token ratio, tau1 10), object may "
        "change it (spatial ratio, tau1 40); other settings override it",
        kind="choice", choices=tuple((name, name) for name in PRESETS), api=True,
    ),
    Control(
        "max_iter", "iterations", "--iterations", "Iterations per step (MAX_IT)",
        "MAG updates of the latent per guided step (paper: 15)",
        kind="int", low=0, high=30, api=True,
    ),
    Control(
        "scale", "granularity", "--granularity", "Granularity (λp)",
        "weight lambda_p of the edit words' constraint: higher follows the words more strongly "
        "(paper: 2.5)",
        low=0, high=10, step=0.1, api=True, aliases=("--scale",),
    ),
    Control(
        "steps", "steps", "--steps", "Steps",
        "denoising steps T (paper: 50); the schedule's taus are scaled with it",
        kind="int", low=5, high=100, api=True,
    ),
    Control(
        "guidance_scale", "guidance", "--guidance", "Guidance scale",
        "classifier-free guidance scale (paper: 7.5)",
        low=1, high=15, step=0.5, api=True,
    ),
    Control(
        "inversion", "inversion", "--inversion", "Inversion",
        "how the photo is inverted: null-text (the paper's), direct (fast, exact "
        "reconstruction) or DDIM (fastest; the background may drift)",
        kind="choice", choices=INVERSION_CHOICES, api=True,
    ),
    Control(
        "resolution", "resolution", "--resolution", "Resolution (long side, pixels)",
        "long side of the processing size in pixels (paper: 512; smaller is faster and coarser)",
        kind="choice", choices=tuple((str(px), px) for px in (128, 256, 384, 512)), api=True,
    ),
    # The paper's schedule and weights: the command line only (the presets set them per edit).
    Control(
        "constraint", "constraint", "--constraint", None,
        "what MAG maximises: the token ratio (Eq. 5) or the spatial ratio (Eq. 6) "
        "(default: the preset's)",
        kind="choice", choices=tuple((c, c) for c in CONSTRAINTS),
    ),
    Control(
        "tau1", "tau1", "--tau1", None,
        "common-token cross-attention injection until tau1 steps remain (paper: 10; object: 40)",
        kind="int", low=0, high=100,
    ),
    Control(
        "tau2", "tau2", "--tau2", None,
        "MAG guidance until tau2 steps remain (paper: 25 of 50)",
        kind="int", low=0, high=100,
    ),
    Control(
        "tau_self", "tau_self", "--tau-self", None,
        "self-attention injection until tau_self steps remain (paper: 25 of 50)",
        kind="int", low=0, high=100,
    ),
    Control(
        "blend_steps", "blend_steps", "--blend-steps", None,
        "latent blend in the last N steps (paper: 15 of 50)",
        kind="int", low=0, high=100,
    ),
    Control(
        "negative_scale", "negative_scale", "--negative-scale", None,
        "weight lambda_ng of the negative word (Eq. 7; paper: 5.5)",
        low=0, high=20,
    ),
    Control(
        "spatial_lambda", "spatial_lambda", "--spatial-lambda", None,
        "lambda of the spatial-ratio loss (Eq. 6; paper: 3)",
        low=0, high=20,
    ),
    Control(
        "attention_res", "attention_res", "--attention-res", None,
        "side in pixels of the attention maps the loss reads (default: latent / 4, 16 at 512)",
        kind="int", low=1, high=64,
    ),
    Control(
        "null_inner_steps", "null_inner_steps", "--null-steps", None,
        "inner optimisation steps per timestep of null-text inversion (paper: 10)",
        kind="int", low=0, high=50,
    ),
    Control(
        "early_stop", "early_stop", "--early-stop", None,
        "end a step's guidance once an iteration improves the loss by less than this fraction "
        "(0: all iterations, as the paper)",
        low=0, high=0.99,
    ),
    # How the edit runs (the same numbers up to float rounding): the command line only.
    Control(
        "reference", "reference", "--reference", None,
        "run Algorithm 1 literally (slower; for checking the fast path)", kind="bool",
    ),
    Control(
        "channels_last", "channels_last", "--channels-last", None,
        "run the UNet in channels-last memory format (default: on a GPU yes, on a CPU no)",
        kind="bool",
    ),
    Control(
        "compile", "compile", "--compile", None,
        "torch.compile the UNet (the first edit pays the compilation)", kind="bool",
    ),
    Control(
        "cuda_graphs", "cuda_graphs", "--cuda-graphs", None,
        "on a GPU, replay CUDA graphs of the repeated UNet calls (--no-cuda-graphs: run them "
        "eagerly)",
        kind="bool",
    ),
    # The region: the page and the API (the command line takes a mask file or clicks).
    Control(
        "grow", "grow", None, "Grow the mask (pixels)",
        "widen the mask by this many pixels", kind="int", low=0, high=50, api=True,
    ),
    Control(
        "region2_weight", "region2_weight", None, "Its weight",
        "the second region's weight lambda_2 of Eq. 9 (the first region's is 1)",
        low=0.1, high=10, step=0.1, api=True,
    ),
)  # fmt: skip

BY_FIELD: dict[str, Control] = {c.field: c for c in CONTROLS}
BY_NAME: dict[str, Control] = {c.name: c for c in CONTROLS}
# The settings of an edit the page shows (in this order), and the API's (the page's).
PAGE_SETTINGS: tuple[Control, ...] = tuple(
    c for c in CONTROLS if c.label and c.field not in ("grow", "region2_weight")
)
API_SETTINGS: tuple[Control, ...] = tuple(
    c for c in CONTROLS if c.api and c.field not in ("grow", "region2_weight")
)
CLI_SETTINGS: tuple[Control, ...] = tuple(c for c in CONTROLS if c.flag)


@dataclasses.dataclass(frozen=True)
class Input:
    """An input of an edit that is not a setting (the photo, the prompts, the words, the mask,
    the models), as each face names it; None where a face lacks it."""

    field: str
    name: str | None  # the API's parameter
    flag: str | None  # the command line's flag (`magedit edit`, `app.py`, `magedit bench`)
    label: str | None  # the page's label


INPUTS: tuple[Input, ...] = (
    Input("image", "image", "--image", "Photo"),
    Input("source_prompt", "source", "--source", "Source prompt"),
    Input("target_prompt", "target", "--target", "Target prompt"),
    Input("words", "words", "--words", "Edit words"),
    Input("mask", "mask_file", "--mask", "Mask"),
    Input("negative_word", "negative_word", "--negative-word", "Negative word"),
    Input("negative_prompt", "negative_word", "--negative-prompt", "Negative word"),
    Input("model", None, "--model", None),
    Input("tiny", None, "--tiny", None),
    Input("device", None, "--device", None),
    Input("dtype", None, "--dtype", None),
    Input("sam_model", None, "--sam-model", None),
    Input("sam_checkpoint", None, "--sam-checkpoint", None),
    Input("clip_model", None, "--clip-model", None),
    Input("dino_model", None, "--dino-model", None),
    Input("recipe", "recipe", "--recipe", "Recipe"),
    Input("dataset", None, "DATASET", None),
    Input("make_sample", None, "--make-sample", None),
    Input("out", None, "--out", None),
)
INPUT_BY_FIELD: dict[str, Input] = {i.field: i for i in INPUTS}


def word(field: str, face: str) -> str:
    """How ``face`` ("library", "cli", "page" or "api") names the setting or input ``field``:
    its flag, its label or its parameter; the field itself in the library and where the face
    has no word of its own."""
    if face not in FACES:
        raise ValueError(f"unknown face {face!r}; use one of {FACES}")
    entry: Any = BY_FIELD.get(field) or INPUT_BY_FIELD.get(field)
    if entry is None or face == "library":
        return field
    found = {"cli": entry.flag, "page": entry.label, "api": entry.name}[face]
    return found or field


def say(message: str | BaseException, face: str = "library") -> str:
    """A message (or an error) in one line, with each ``{field}`` of a known setting or input in
    ``face``'s words (``errors.Says``); other errors as they are."""
    if isinstance(message, InputErrors):
        return "; ".join(say(error, face) for error in message.errors)
    if isinstance(message, BaseException):
        if not isinstance(message, Says):
            return one_line(message)
        message = message.template

    def name(field: str) -> str | None:
        known = field in BY_FIELD or field in INPUT_BY_FIELD
        return word(field, face) if known else None

    return one_line(fill(message, name))


def config_from_values(values: Mapping[str, Any], tiny: bool = False) -> EditConfig:
    """The one conversion of given settings to an EditConfig, for every face.

    ``values``: control name -> value; a name left out is not given: its preset's value (the
    paper's defaults without a preset), or with ``tiny`` the quick one (config.TINY_QUICK). A
    value given as None is refused ("steps is empty"), as the page and the API need.
    Each value is checked against its control's range; then the preset, rescaled to ``steps``,
    takes the given values (``config.config_from``). Raises InputErrors with every refused
    setting (each an InputError naming its field).
    """
    unknown = sorted(set(values) - set(BY_NAME))
    if unknown:
        raise ValueError(f"unknown settings {unknown}; known: {sorted(BY_NAME)}")
    problems: list[InputError] = []
    given: dict[str, Any] = {}
    for name, value in values.items():
        control = BY_NAME[name]
        if control.field in ("grow", "region2_weight"):
            continue
        try:
            given[control.field] = control.check(value)
        except InputError as error:
            problems.append(error)
    if problems:
        raise InputErrors(problems)
    if tiny:
        given = {**{k: v for k, v in TINY_QUICK.items() if k not in given}, **given}
    preset_name = given.pop("preset", None)
    steps = given.pop("steps", None)
    try:
        return config_from(preset_name, steps, **given)
    except InputError as error:
        raise InputErrors([error]) from None


def defaults(controls: Sequence[Control], tiny: bool = False) -> dict[str, Any]:
    """Control name -> its default value."""
    return {c.name: c.default(tiny) for c in controls}
