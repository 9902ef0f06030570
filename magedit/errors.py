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


PLACEHOLDER = re.compile(r"\{([a-z][a-z0-9_]*)\}")


class Says:
    """An error whose message names inputs and settings as ``{field}`` placeholders. ``str()``
    writes the library's word for them (the field itself); ``controls.say(error, face)`` each
    face's own (a flag on the command line, a label on the page, a parameter in the API)."""

    template: str

    def __str__(self) -> str:
        return PLACEHOLDER.sub(lambda match: match.group(1), self.template)


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
    InputError raised inside keeps its own field)."""

    def __init__(self, field: str, region: int | None = None):
        self.field, self.region = field, region

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind, error, traceback) -> bool:
        if error is None or isinstance(error, InputError) or not isinstance(error, ValueError):
            return False
        raise InputError(self.field, str(error), self.region) from None
