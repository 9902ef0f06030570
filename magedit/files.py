"""Results on disk: atomic writes (a crash leaves the old file or the new one, never half of one)
and generated names (user text never reaches a path unfiltered)."""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np

    from magedit.pipeline import PreparedEdit

# Output formats by extension. WebP is written lossless so that, as with PNG, the pixels outside
# the mask stay the original's; JPEG cannot promise that.
IMAGE_FORMATS = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".webp": "WEBP"}
SAVE_OPTIONS: dict[str, dict[str, Any]] = {
    "PNG": {},
    "JPEG": {"quality": 95},
    "WEBP": {"lossless": True},
}
# A generated name: at most this many words of the description, then a random suffix.
NAME_WORDS = 3
NAME_CHARS = 40
_RESULT_FOLDER = re.compile(r"[0-9a-f]{16}")  # the folder save_result makes for each result


def write_image(path: Path, image: np.ndarray) -> None:
    """Write an HWC (or HW) uint8 image atomically; the format follows the extension."""
    from PIL import Image

    fmt = IMAGE_FORMATS[Path(path).suffix.lower()]
    write_atomic(path, lambda f: Image.fromarray(image).save(f, format=fmt, **SAVE_OPTIONS[fmt]))


def write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` atomically."""
    write_atomic(path, lambda f: f.write(data))


def write_atomic(path: Path, write: Callable[[IO[bytes]], Any]) -> None:
    """Write through a temp file in the same folder, then ``os.replace`` it onto ``path``: a crash
    or Ctrl-C leaves either the old file or the new one, never half of one. Creates the folder."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(temp, 0o666 & ~_umask())  # mkstemp makes 0600; give the usual permissions
        os.replace(temp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temp)
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def edit_phrase(prepared: PreparedEdit) -> str:
    """A few words naming an edit (its edit words and the word after the first in the target
    prompt: "green sofa"), for file names and captions. Letters and digits only reach a file
    name (``result_name``)."""
    words = [w for r in prepared.regions for w in r.words]
    lowered = [t.strip(".,;:!?()'\"").lower() for t in prepared.target_prompt.split()]
    first = words[0].lower() if words else ""
    follow = ""
    if first in lowered:
        at = lowered.index(first) + 1
        follow = lowered[at] if at < len(lowered) else ""
    return " ".join(dict.fromkeys(w for w in (*words, follow) if w))


def result_name(description: str = "", suffix: str = ".png") -> str:
    """A file name for a result: the first words of ``description`` in lowercase ASCII letters
    and digits joined by "-", then 4 random hex digits ("green sofa" -> "green-sofa-3f2a.png").
    Only [a-z0-9-] come from the description, so no path, dot or control character can; an
    empty description gives "magedit-<hex>"."""
    words = re.findall(r"[a-z0-9]+", description.lower())[:NAME_WORDS]
    stem = "-".join(words)[:NAME_CHARS].strip("-") or "magedit"
    return f"{stem}-{secrets.token_hex(2)}{suffix}"


def save_result(
    image: np.ndarray, folder: Path, description: str = "", keep: int | None = None
) -> Path:
    """Write ``image`` as ``folder/<16 hex>/<result_name(description)>``: a folder of its own,
    so the download keeps its readable name and pruning never touches a file it did not write.
    With ``keep``, the oldest such folders beyond the newest ``keep`` are deleted (a public
    page's output stays bounded). Returns the path."""
    if keep is not None and (isinstance(keep, bool) or not isinstance(keep, int) or keep < 1):
        raise ValueError(f"keep is {keep!r}; keep at least 1 result (or None: keep all)")
    folder = Path(folder)
    path = folder / secrets.token_hex(8) / result_name(description)
    write_image(path, image)
    if keep is not None:
        made = [d for d in folder.iterdir() if _RESULT_FOLDER.fullmatch(d.name) and d.is_dir()]
        made.sort(key=lambda d: d.stat().st_mtime)
        for stale in made[:-keep]:
            shutil.rmtree(stale, ignore_errors=True)
    return path
