"""What the interfaces say when something fails: one line of text, and out-of-memory detection.

The library raises ``ValueError`` for bad input (its message names the value and the fix),
``FloatingPointError`` when the latents diverge, and torch's errors when memory runs out; the
page and the command line turn these into one line each, with the same rules.
"""

from __future__ import annotations

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


class InputError(ValueError):
    """Bad input to an edit, naming the input at fault so an interface can show the message
    next to it. ``field`` is one of FIELDS; ``region`` the 1-based region for "words" and "mask".
    A ValueError: code that catches ValueError catches it."""

    FIELDS = (
        "image",
        "source_prompt",
        "target_prompt",
        "words",
        "mask",
        "negative_word",
        "negative_prompt",
        "settings",
    )

    def __init__(self, field: str, message: str, region: int | None = None):
        if field not in self.FIELDS:
            raise ValueError(f"unknown input field {field!r}; use one of {self.FIELDS}")
        super().__init__(message)
        self.field = field
        self.region = region


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
