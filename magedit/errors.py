"""What the interfaces say when something fails: one line of text, and out-of-memory detection.

The library raises ``ValueError`` for bad input (its message names the value and the fix),
``FloatingPointError`` when the latents diverge, and torch's errors when memory runs out; the
page and the command line turn these into one line each, with the same rules.
"""

from __future__ import annotations

import re
import sys


def one_line(text: object) -> str:
    """``text`` as one line: every run of whitespace (newlines included) becomes one space."""
    return " ".join(str(text).split())


def is_out_of_memory(error: BaseException) -> bool:
    """torch.cuda.OutOfMemoryError, or a RuntimeError saying "out of memory" (cuDNN, cuBLAS and
    MPS raise plain RuntimeErrors for it). Does not import torch."""
    torch = sys.modules.get("torch")
    if torch is not None and isinstance(error, torch.cuda.OutOfMemoryError):
        return True
    return isinstance(error, RuntimeError) and "out of memory" in str(error).lower()


# A setting or input named in a message: {field}. Text a visitor gave is put in with its braces
# doubled (escape_braces), and {{ and }} read back as single braces.
PLACEHOLDER = re.compile(r"\{\{|\}\}|\{([a-z][a-z0-9_]*)\}")


def escape_braces(text: str) -> str:
    """``text`` to put in a message as it is: its braces are not placeholders."""
    return text.replace("{", "{{").replace("}", "}}")


def fill(template: str, word) -> str:
    """``template`` with each ``{field}`` as ``word(field)`` (None: left as it is) and doubled
    braces as single ones."""

    def one(match: re.Match) -> str:
        if match.group(1) is None:
            return match.group(0)[0]
        said = word(match.group(1))
        return match.group(0) if said is None else said

    return PLACEHOLDER.sub(one, template)


class Says:
    """An error whose message names inputs and settings as ``{field}`` placeholders. ``str()``
    writes the library's word for them (the field itself); ``controls.say(error, face)`` each
    face's own (a flag on the command line, a label on the page, a parameter in the API)."""

    template: str

    def __str__(self) -> str:
        return fill(self.template, lambda field: field)


class InputError(Says, ValueError):
    """Bad input to an edit, naming the input or setting at fault so that an interface can show
    the message next to it. ``field``: an input ("image", "source_prompt", "target_prompt",
    "words", "mask", "negative_word", "negative_prompt", a model option such as "dtype") or a
    setting of ``magedit.controls`` ("max_iter", "preset", ...); ``region``: the 1-based region
    for "words" and "mask". A ValueError: code that catches ValueError catches it."""

    def __init__(self, field: str, message: str, region: int | None = None):
        super().__init__(message)
        self.field = field
        self.region = region
        self.template = message


class MissingFile(Says, FileNotFoundError):
    """A file named by input ``field`` (a model folder, a checkpoint) is not there."""

    def __init__(self, field: str, message: str):
        super().__init__(message)
        self.field = field
        self.template = message


class InputErrors(ValueError):
    """Several refused inputs at once (e.g. every setting out of range): ``errors``, each an
    InputError. ``str()`` joins their messages."""

    def __init__(self, errors: list[InputError]):
        super().__init__("; ".join(e.template for e in errors))
        self.errors = list(errors)

    def __str__(self) -> str:
        return "; ".join(str(e) for e in self.errors)


class blame:  # noqa: N801 (used as ``with blame("target_prompt"):``)
    """Re-raise a ValueError raised in the block as an InputError naming ``field`` (an
    InputError raised inside keeps its own field). The ValueError's text is taken as a template:
    the package's messages put a visitor's text in through ``prompts.quoted`` (braces doubled)."""

    def __init__(self, field: str, region: int | None = None):
        self.field, self.region = field, region

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind, error, traceback) -> bool:
        if error is None or isinstance(error, InputError) or not isinstance(error, ValueError):
            return False
        raise InputError(self.field, str(error), self.region) from None
