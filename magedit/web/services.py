"""What the page's handlers share: the models (loaded on first use), where results go, each
edit's time limit, the line of edits and its admission, and the examples."""

from __future__ import annotations

import dataclasses
import sys
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from magedit.errors import one_line

if TYPE_CHECKING:
    from magedit.pipeline import MagEditPipeline
    from magedit.segment import Segmenter
    from magedit.web.admission import Admission
    from magedit.web.job import Line

T = TypeVar("T")


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
    """``pipeline`` checks and prepares every edit and runs those on slot 0 of the line;
    ``more_pipelines`` (one per further GPU, the same model) run those on slots 1, 2, ..."""

    pipeline: Callable[[], MagEditPipeline]
    segmenter: Callable[[], Segmenter]
    output_dir: Path
    time_limit: float
    admission: Admission
    line: Line  # one slot per pipeline
    examples: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    more_pipelines: Sequence[Callable[[], MagEditPipeline]] = ()
    # The reports' CLIP scorer and, without one, why (loading.report_clip), on first use.
    clip: Callable[[], tuple[Any, str]] = lambda: (None, "no CLIP model was given to the page")

    def pipeline_of(self, slot: int) -> Callable[[], MagEditPipeline]:
        """The pipeline that runs the edits of the line's ``slot``."""
        return (self.pipeline, *self.more_pipelines)[slot]


class ModelUnavailable(Exception):
    """A model could not be loaded; the reason went to the server's log."""


def model(get: Callable[[], T], what: str) -> T:
    """``get()``; a model that cannot be loaded raises ModelUnavailable (the reason, which names
    the server's folders, goes to the server's log, not to the page)."""
    try:
        return get()
    except (ValueError, OSError) as error:
        print(f"magedit: error: {what}: {one_line(error)}", file=sys.stderr)
        raise ModelUnavailable(f"{what} could not be loaded; see the server's log") from None


def log(message: str) -> None:
    """One line in the server's log for a refused input (no traceback: it is not a bug)."""
    print(f"magedit: refused: {one_line(message)}", file=sys.stderr, flush=True)
