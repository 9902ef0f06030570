"""A benchmark dataset's item and where the repository's examples live: shared by the runner
(``bench``) and the PIE-Bench reader (``piebench``), which import this and never each other's
internals (bench uses piebench; piebench needs only these)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np


@dataclass(frozen=True)
class Item:
    """One dataset entry; ``image`` an absolute path, ``mask`` one or the mask itself (PIE-Bench's
    are run-length encoded), ``line`` its place in the dataset's file. A PIE-Bench item also has
    its ``category`` (editing_type_id) and ``eval_mask``, the mask its metrics use."""

    id: str
    image: Path
    mask: Path | np.ndarray
    source: str
    target: str
    words: tuple[str, ...]
    type: str
    negative_word: str | None
    phrase: str | None
    line: int
    category: str = ""
    eval_mask: np.ndarray | None = field(default=None, compare=False, repr=False)


def default_assets() -> Path:
    """The repository's ``assets/`` folder (next to the ``magedit`` package)."""
    return Path(__file__).resolve().parent.parent / "assets"
