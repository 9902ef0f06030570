"""The edit job: a prepared edit runs on a worker thread (invert, then edit) while the event's
handler streams what it reports as page updates, stops it when the visitor cancels or its time
limit passes, and writes the result. No gradio here: ``layout`` turns the updates into events.
"""

from __future__ import annotations

import contextlib
import dataclasses
import html
import queue
import sys
import threading
import time
import weakref
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from magedit import files, images, preview
from magedit.errors import is_out_of_memory
from magedit.web.charts import progress_charts
from magedit.web.limits import GALLERY_SIZE, MAX_OUTPUTS

if TYPE_CHECKING:
    from magedit.inversion import Inversion
    from magedit.pipeline import EditEvent, EditResult, MagEditPipeline, PreparedEdit

# Guidance iterations and inversion steps can come many per second; the page is refreshed at most
# this often for them (every denoising step is always shown).
REFRESH_SECONDS = 0.25
OUT_OF_MEMORY = (
    "out of GPU memory; use fewer iterations or steps, a smaller resolution (Advanced), or try "
    "again when other edits have finished"
)

# A MagEditPipeline is not re-entrant. Each runs one edit at a time (the line gives each of the
# page's pipelines one edit), but a cancelled edit's thread may still be finishing its step when
# the next edit on that pipeline starts: the next one waits for it here, per pipeline.
_PIPELINE_LOCKS: weakref.WeakKeyDictionary[Any, threading.Lock] = weakref.WeakKeyDictionary()
_LOCKS_LOCK = threading.Lock()


def pipeline_lock(pipe: Any) -> threading.Lock:
    """The lock an edit holds while it runs on ``pipe``."""
    with _LOCKS_LOCK:
        return _PIPELINE_LOCKS.setdefault(pipe, threading.Lock())


class Line:
    """The edits waiting for a GPU, first come first served. An edit joins when its job starts
    (``ticket``), is told its place while it waits, runs when it is first and one of the
    ``slots`` (one per pipeline: one per GPU) is free, and leaves when it ends, is cancelled or
    its client stops listening. The page shows the place on the status line and Cancel works
    while waiting: Gradio's own queue, which the edits do not wait in, could do neither."""

    def __init__(self, slots: int = 1):
        if slots < 1:
            raise ValueError(f"a line needs at least one slot (GPU), got {slots}")
        self._changed = threading.Condition()
        self._waiting: list[object] = []  # tickets, first in line first
        self._running: list[object | None] = [None] * slots  # the ticket on each slot

    @property
    def slots(self) -> int:
        return len(self._running)

    @contextlib.contextmanager
    def ticket(self) -> Iterator[object]:
        """A place in line for the block; left (and its slot freed if it held one) at its end."""
        ticket = object()
        with self._changed:
            self._waiting.append(ticket)
        try:
            yield ticket
        finally:
            with self._changed:
                if ticket in self._waiting:
                    self._waiting.remove(ticket)
                self._running = [None if t is ticket else t for t in self._running]
                self._changed.notify_all()

    def ahead(self, ticket: object) -> int:
        """How many edits run or wait ahead of this one."""
        with self._changed:
            if ticket not in self._waiting:
                return 0
            running = sum(t is not None for t in self._running)
            return self._waiting.index(ticket) + running

    def take(self, ticket: object, timeout: float, prefer: Sequence[int] = ()) -> bool:
        """Wait up to ``timeout`` seconds for this ticket's turn; True once it holds a slot
        (which: ``slot``): the first free one of ``prefer`` (e.g. the GPUs holding its photo's
        inversion), else the first free one."""
        with self._changed:

            def turn() -> bool:
                return None in self._running and self._waiting[:1] == [ticket]

            if not self._changed.wait_for(turn, timeout):
                return False
            self._waiting.pop(0)
            free = [i for i, t in enumerate(self._running) if t is None]
            slot = next((i for i in prefer if i in free), free[0])
            self._running[slot] = ticket
            self._changed.notify_all()  # the next in line may take another free slot now
            return True

    def slot(self, ticket: object) -> int | None:
        """The slot (pipeline) this ticket holds, or None while it waits."""
        with self._changed:
            return next((i for i, t in enumerate(self._running) if t is ticket), None)


class Cancelled(Exception):
    """Raised inside the worker when the visitor cancelled the edit."""


class JobTimeout(Exception):
    """An edit ran past its wall-clock limit (``--time-limit``) and was stopped."""


def time_limit_message(limit: float) -> str:
    return (
        f"the edit ran longer than this page's limit of {limit:g} s per job and was stopped; "
        "use fewer steps or iterations, a smaller resolution, or the direct or DDIM inversion"
    )


@dataclasses.dataclass
class InversionProgress:
    done: int
    total: int
    elapsed: float


_DONE = object()


class Worker(threading.Thread):
    """Runs invert + edit of a prepared edit off the event's thread, so the inversion's progress
    can be streamed and the work stops at its next step (inversion step, guidance iteration or
    denoising step) when cancelled (``cancel``) or past its time limit."""

    def __init__(self, pipe: MagEditPipeline, prepared: PreparedEdit, time_limit: float):
        super().__init__(name="magedit-edit", daemon=True)
        self.pipe, self.prepared, self.time_limit = pipe, prepared, time_limit
        self.items: queue.Queue[Any] = queue.Queue()
        self.cancelled = threading.Event()
        self.deadline = time.monotonic() + time_limit

    def cancel(self) -> None:
        self.cancelled.set()

    def __iter__(self) -> Iterator[Any]:
        """What the work reports, in order: InversionProgress, the Inversion, EditEvents, the
        EditResult. Raises the work's exception where it happened in that order, and JobTimeout
        (cancelling the work) when the time limit passes, even in the middle of a slow step."""
        while True:
            try:
                item = self.items.get(timeout=max(0.0, self.deadline - time.monotonic()))
            except queue.Empty:
                self.cancel()
                raise JobTimeout(time_limit_message(self.time_limit)) from None
            if item is _DONE:
                return
            if isinstance(item, BaseException):
                raise item
            yield item

    def _check(self) -> None:
        """Called between steps: stop when cancelled or past the time limit."""
        if self.cancelled.is_set():
            raise Cancelled
        if time.monotonic() > self.deadline:
            raise JobTimeout(time_limit_message(self.time_limit))

    def run(self) -> None:
        try:
            lock = pipeline_lock(self.pipe)
            while not lock.acquire(timeout=0.1):
                self._check()  # a previous, cancelled job is finishing its step
            try:
                self._work()
            finally:
                lock.release()
        except Cancelled:
            pass
        except BaseException as error:  # handed to the event's thread, which reports it
            if is_out_of_memory(error):
                _release_cached_memory()
            self.items.put(error)
        finally:
            self.items.put(_DONE)

    def _work(self) -> None:
        start = time.perf_counter()

        def progress(done: int, total: int) -> None:
            self._check()
            self.items.put(InversionProgress(done, total, time.perf_counter() - start))

        inversion = self.pipe.invert(self.prepared, progress=progress)
        self.items.put(inversion)
        events = self.pipe.edit(self.prepared, inversion)
        try:
            for item in events:
                self._check()
                self.items.put(item)
        finally:
            events.close()


def _release_cached_memory() -> None:
    """After CUDA ran out of memory: hand the failed job's cached blocks back to the driver, so
    that the next job starts from a clean allocator (once per failure, not in a loop)."""
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available():
        torch.cuda.empty_cache()


# ------------------------------------------------------------------------------ the stream
def eta(elapsed: float, done: float) -> str:
    """ "about N s left" from the time spent on the share ``done`` (0..1) of the work."""
    if done <= 0 or done >= 1:
        return ""
    left = elapsed * (1 - done) / done
    if left >= 90:
        return f"about {left / 60:.0f} min left"
    return f"about {max(left, 1):.0f} s left"


def status_html(text: str, *, done: float | None = None, note: str = "", kind: str = "") -> str:
    """The status line: ``text`` (plain text; escaped here), a progress bar when ``done``
    (0..1) is given, and a quieter ``note`` (an ETA). ``kind``: "" or "error" or "done"."""
    bar = ""
    if done is not None:
        bar = f'<progress value="{min(max(done, 0.0), 1.0):.3f}" max="1"></progress>'
    note = f' <span class="magedit-note">{html.escape(note)}</span>' if note else ""
    kind = f" magedit-{kind}" if kind else ""
    return f'<div class="magedit-status{kind}">{bar}<span>{html.escape(text)}</span>{note}</div>'


@dataclasses.dataclass
class Stream:
    """Turns the worker's reports into update dicts (output name -> value; names missing from
    a dict are left as they are): status, preview, attention, charts, curve."""

    prepared: PreparedEdit
    # Keys of the inversions this session made: a cached inversion is called "reused" only when
    # it is one of them (another visitor's upload of the same photo is not this visitor's news).
    made: frozenset = frozenset()
    reused: bool = False
    start: float = dataclasses.field(default_factory=time.perf_counter)
    inversion: Inversion | None = None
    inversion_seconds: float = 0.0
    result: EditResult | None = None
    steps: list[tuple[int, float, float]] = dataclasses.field(default_factory=list)
    last_refresh: float = 0.0

    def _due(self) -> bool:
        now = time.perf_counter()
        if now - self.last_refresh < REFRESH_SECONDS:
            return False
        self.last_refresh = now
        return True

    def add(self, item: Any) -> dict[str, Any] | None:
        """The update for one report, or None when the page need not be refreshed for it."""
        from magedit.inversion import Inversion
        from magedit.pipeline import EditEvent, EditResult

        config = self.prepared.config
        if isinstance(item, InversionProgress):
            if item.done < item.total and not self._due():
                return None
            method = config.inversion.replace("_", "-")
            share = item.done / item.total
            text = f"Inverting the photo ({method}) {item.done}/{item.total}"
            return {"status": status_html(text, done=0.3 * share, note=eta(item.elapsed, share))}
        if isinstance(item, Inversion):
            self.inversion = item
            self.inversion_seconds = time.perf_counter() - self.start
            self.reused = item.cached and item.key in self.made
            if item.cached and self.reused:
                text = "Reused this session's inversion of the photo. Editing…"
            elif item.cached:
                text = "Editing…"
            else:
                text = f"Inverted in {self.inversion_seconds:.1f} s. Editing…"
            return {"status": status_html(text, done=self._done(0, self.prepared.config.steps))}
        if isinstance(item, EditEvent):
            return self._event(item)
        if isinstance(item, EditResult):
            self.result = item
            return None
        raise TypeError(f"unexpected report {type(item).__name__}")

    def _done(self, step: float, total: int) -> float:
        """Share of the whole job done: the inversion counts for 30% unless it was cached."""
        share = step / total
        return share if self.inversion is not None and self.inversion.cached else 0.3 + 0.7 * share

    def _event(self, event: EditEvent) -> dict[str, Any] | None:
        if event.phase == "guidance":
            x = event.step - 1 + event.iteration / event.max_iter
            if not self._due():
                return None
            text = (
                f"Step {event.step}/{event.total} · guidance {event.iteration}/{event.max_iter}"
                f" · loss {event.loss:.3f} · in-mask {event.in_mask_ratio:.3f}"
            )
            share = (event.step - 1 + event.iteration / event.max_iter) / event.total
            return {
                "status": status_html(
                    text, done=self._done(x, event.total), note=eta(event.elapsed, share)
                ),
                "charts": self.charts(),
            }
        self.steps.append((event.step, event.loss, event.in_mask_ratio))
        self.last_refresh = time.perf_counter()
        shown = self.inversion.image  # (h, w, 3) at processing size
        text = (
            f"Step {event.step}/{event.total} · loss {event.loss:.3f} · in-mask "
            f"{event.in_mask_ratio:.3f}"
        )
        return {
            "status": status_html(
                text,
                done=self._done(event.step, event.total),
                note=eta(event.elapsed, event.step / event.total),
            ),
            "preview": images.resize_image(event.preview, shown.shape[:2]),
            "attention": preview.heatmap_overlay(shown, event.attention, self.prepared.mask),
            "charts": self.charts(),
        }

    def charts(self) -> str:
        return progress_charts(self.steps, self.prepared.config.steps)

    def curve(self) -> list[dict[str, float]]:
        """The per-step numbers, for the API and the settings."""
        return [
            {"step": step, "loss": round(loss, 6), "in_mask_ratio": round(ratio, 6)}
            for step, loss, ratio in self.steps
        ]

    def finish(
        self, output_dir: Path, model: str, history: Sequence[tuple[str, str]] | None
    ) -> dict[str, Any]:
        """The last update: the result, its file (named after the edit), the settings used and
        the session's gallery with the new result first."""
        result, prepared = self.result, self.prepared
        if result is None:
            raise RuntimeError("the edit ended without a result")
        path = files.save_result(
            result.composited, output_dir, files.edit_phrase(prepared), keep=MAX_OUTPUTS
        )
        timings = {name: round(seconds, 2) for name, seconds in result.timings.items()}
        cached = result.inversion_cached
        if cached:
            timings.pop("inversion")  # made by an earlier edit, not this one
        else:
            timings["inversion"] = round(self.inversion_seconds, 2)
        timings["total"] = round(time.perf_counter() - self.start, 2)
        settings = {
            "model": public_model_name(model),
            "source prompt": result.source_prompt,
            "target prompt": result.target_prompt,
            "edit words": [w for words in result.words for w in words],
            "regions": [
                {"words": list(r.words), "weight": r.weight, "pixels": int(r.mask.sum())}
                for r in prepared.regions
            ],
            "negative word": result.negative_word,
            "inversion": (
                "reused this session's inversion"
                if cached and self.reused
                else result.config.inversion
            ),
            "config": result.config.to_dict(),
            "timings (s)": timings,
            "curve": self.curve(),
            "file": path.name,
        }
        entries = [tuple(entry) for entry in history or () if len(entry) == 2]
        caption = f"{files.edit_phrase(prepared)} · {time.strftime('%H:%M')}"
        history = [(str(path), caption), *entries][:GALLERY_SIZE]
        note = " Reused this session's inversion." if cached and self.reused else ""
        return {
            "status": status_html(f"Done in {timings['total']:.1f} s.{note}", kind="done"),
            "preview": result.image,
            "result": (prepared.original, result.composited),
            "download": str(path),
            "settings": settings,
            "history": history,
            "charts": self.charts(),
            "curve": self.curve(),
            "made": self.made | {self.inversion.key},
        }


def public_model_name(model: str) -> str:
    """The model as a visitor may see it: a Hub id as it is, a local folder by its name only
    (its path would tell every visitor about the server's disk)."""
    if model.startswith(("/", "./", "../", "~")) or "\\" in model or Path(model).is_absolute():
        return f"local model '{Path(model).name}'"
    return model


def show_history(history: Sequence[tuple[str, str]] | None) -> list[tuple[str, str]]:
    """The session's gallery: its results newest first, without files pruned since."""
    return [(path, caption) for path, caption in history or () if Path(path).is_file()]
