"""The edit job's whole life: it waits in the line for a GPU (saying its place), runs on a
worker thread (invert, then edit) while the handler streams what it reports as updates, stops
when the visitor cancels or its time limit passes, and writes the result. The statuses are plain
text (:class:`Status`); ``layout`` makes the page's HTML of them and ``api`` the API's text.
No gradio here.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import queue
import sys
import threading
import time
import weakref
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from magedit import files, images, preview, report
from magedit.config import METHOD_LABELS
from magedit.errors import is_out_of_memory, one_line
from magedit.hub import public_name
from magedit.web.limits import GALLERY_SIZE, MAX_OUTPUTS
from magedit.web.services import ModelUnavailable, Services, log, model

if TYPE_CHECKING:
    from magedit.config import EditConfig
    from magedit.inversion import Inversion
    from magedit.pipeline import EditEvent, EditResult, MagEditPipeline, PreparedEdit

try:  # Hugging Face's ZeroGPU decorator; outside a ZeroGPU Space it returns the function as is
    import spaces

    _gpu = spaces.GPU
except ImportError:  # spaces is optional off Hugging Face: the same no-op

    def _gpu(task=None, **_: Any):
        return task if callable(task) else (lambda fn: fn)


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


@dataclasses.dataclass
class MethodStart:
    """The worker starts ``method`` (compare mode: number ``number`` of ``total``)."""

    method: str
    number: int
    total: int


_DONE = object()


class Worker(threading.Thread):
    """Runs invert + edit of a prepared edit off the event's thread, so the inversion's progress
    can be streamed and the work stops at its next step (inversion step, guidance iteration or
    denoising step) when cancelled (``cancel``) or past its time limit."""

    def __init__(
        self,
        pipe: MagEditPipeline,
        prepared: PreparedEdit,
        time_limit: float,
        methods: Sequence[str] = ("magedit",),
    ):
        super().__init__(name="magedit-edit", daemon=True)
        self.pipe, self.prepared, self.time_limit = pipe, prepared, time_limit
        self.methods = tuple(methods)
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
        # Compare mode: each method in turn on the one inversion (a cancel stops between methods
        # or within one, at its next step).
        for number, method in enumerate(self.methods, 1):
            self._check()
            self.items.put(MethodStart(method, number, len(self.methods)))
            events = self.pipe.edit(self.prepared.as_method(method), inversion)
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
@dataclasses.dataclass(frozen=True)
class Status:
    """The status line, in plain text: ``text``, the share of the job ``done`` (0..1, None: no
    bar), a quieter ``note`` (the time left) and ``kind`` ("", "error" or "done")."""

    text: str
    done: float | None = None
    note: str = ""
    kind: str = ""


def time_left(seconds: float) -> str:
    """ "about N s left" ("about N min left" from 90 s)."""
    if seconds >= 90:
        return f"about {seconds / 60:.0f} min left"
    return f"about {max(seconds, 1):.0f} s left"


# One UNet call at 512 px, seconds: H100, bf16, channels_last, CUDA graphs, measured with
# benchmarks/unet_calls.py (benchmarks/README.md, 2026-11-27): a batched denoising step (fwd4),
# a no-grad batch-1 forward (fwd1), a MAG iteration (forward to the 16x16 layers and back) and a
# null-text inner step (forward and backward to the embedding). A forward of 2 or 3 rows is taken
# between fwd1 and fwd4.
CALL_SECONDS = {"fwd1": 0.0075, "fwd4": 0.0169, "mag": 0.0094, "null_text": 0.0163}
# What the calls leave out, measured as whole edits against the calls' sum: captures, decoding and
# host work (a direct edit: 6.19 s measured, 4.9 s of calls; null-text 20.7 s against 13.8 s) and
# a ZeroGPU worker's first edit (+3.0 s in a fresh process on an H200, issue 15). Hence the
# reservation: twice the calls' sum (the worst ratio measured, 26.2 s against 13.8 s, is 1.9),
# plus these seconds.
RESERVE_FIXED_SECONDS = 10.0


def call_seconds(calls: Sequence[Any]) -> float:
    """Seconds of a list of ``pipeline.UNetCall``s at 512 px (CALL_SECONDS)."""
    total = 0.0
    for call in calls:
        if call.kind == "forward":
            share = (min(call.batch, 4) - 1) / 3
            total += CALL_SECONDS["fwd1"] + share * (CALL_SECONDS["fwd4"] - CALL_SECONDS["fwd1"])
        else:
            total += CALL_SECONDS[call.kind]
    return total


@dataclasses.dataclass
class Plan:
    """The job's work as the pipeline plans it: the weight of each inversion step and each
    denoising step (seconds of its UNet calls on an H100, ``call_seconds``). The progress bar
    and the time left are read from it: the share done is the weight done, and the time left is
    the weight left at the pace measured so far."""

    inversion: list[float]
    editing: list[float]

    @classmethod
    def of(cls, config: EditConfig, negative: bool, methods: Sequence[str] = ("magedit",)) -> Plan:
        """The plan of one inversion, then an edit per method of ``methods`` (compare mode)."""
        from magedit.config import method_variant
        from magedit.pipeline import inversion_calls, step_calls

        inversion = config.inversion
        editing = []
        for method in methods:
            variant = method_variant(config, method)
            editing += [
                call_seconds(step_calls(variant, i, inversion, negative))
                for i in range(variant.steps)
            ]
        return cls(
            inversion=[call_seconds(calls) for calls in inversion_calls(config)],
            editing=editing,
        )

    def edited(self, step: float) -> float:
        """The editing's weight done after ``step`` steps (a fraction: part of the next one)."""
        whole = math.floor(step)
        done = sum(self.editing[:whole])
        if whole < len(self.editing):
            done += (step - whole) * self.editing[whole]
        return done

    def inverted(self, done: int, total: int) -> float:
        """The inversion's weight done after ``done`` of its ``total`` reported steps."""
        return sum(self.inversion[: round(done * len(self.inversion) / max(total, 1))])


def reservation_seconds(
    config: EditConfig, negative: bool = False, methods: Sequence[str] = ("magedit",)
) -> float:
    """Seconds of UNet calls in an edit of ``config`` at its resolution, its inversion always
    included (on ZeroGPU the inversion cache of a GPU worker may not outlive the call, so a
    re-edit may invert again); from the pipeline's own plan of calls (``Plan``)."""
    plan = Plan.of(config, negative, methods)
    return (sum(plan.inversion) + sum(plan.editing)) * (config.resolution / 512) ** 2


def gpu_duration(
    services: Services,
    prepared: Any,
    made: Any = None,
    history: Any = None,
    slot: int = 0,
    methods: Sequence[str] = ("magedit",),
) -> int:
    """Seconds of GPU that ZeroGPU reserves for one job (``run_on_gpu``'s arguments): twice its
    planned UNet calls (every method of a compare job) plus RESERVE_FIXED_SECONDS, rounded up,
    capped by the job's time limit."""
    negative = getattr(prepared, "negative_word", None) is not None
    planned = reservation_seconds(prepared.config, negative, methods)
    seconds = RESERVE_FIXED_SECONDS + 2 * planned
    return math.ceil(min(seconds, services.time_limit))


@dataclasses.dataclass
class Stream:
    """Turns the worker's reports into update dicts (output name -> value; names missing from
    a dict are left as they are): status (a Status), preview, attention, charts (the steps so
    far and the total), curve."""

    prepared: PreparedEdit
    # Keys of the inversions this session made: a cached inversion is called "reused" only when
    # it is one of them (another visitor's upload of the same photo is not this visitor's news).
    made: frozenset = frozenset()
    reused: bool = False
    start: float = dataclasses.field(default_factory=time.perf_counter)
    inversion: Inversion | None = None
    result: EditResult | None = None
    steps: list[tuple[int, float, float]] = dataclasses.field(default_factory=list)
    last_refresh: float = 0.0
    plan: Plan | None = None
    inverting: bool = False  # the inversion reported progress: it runs in this job
    # Compare mode: the methods run one after another on the inversion, and their results.
    methods: tuple[str, ...] = ("magedit",)
    method: MethodStart | None = None
    results: dict[str, EditResult] = dataclasses.field(default_factory=dict)
    curves: dict[str, list[tuple[int, float, float]]] = dataclasses.field(default_factory=dict)
    edited_before: float = 0.0  # seconds the methods finished so far took (compare mode)

    def __post_init__(self) -> None:
        if self.plan is None:
            negative = self.prepared.negative_word is not None
            self.plan = Plan.of(self.prepared.config, negative, self.methods)

    def _due(self) -> bool:
        now = time.perf_counter()
        if now - self.last_refresh < REFRESH_SECONDS:
            return False
        self.last_refresh = now
        return True

    def _progress(self, inverted: float, edited: float, elapsed: float) -> tuple[float, str]:
        """(share of the job done, time left) when ``inverted`` of the inversion's weight and
        ``edited`` of the editing's are done, ``elapsed`` seconds into the current phase: the
        weight left at the pace measured in that phase (none yet: no estimate)."""
        plan = self.plan
        inversion = sum(plan.inversion) if self.inverting else 0.0
        total = inversion + sum(plan.editing)
        done = (inverted + edited) / total
        weight_done = edited if edited > 0 else inverted
        if weight_done <= 0 or elapsed <= 0:
            return done, ""
        return done, time_left(elapsed / weight_done * (total - inverted - edited))

    def add(self, item: Any) -> dict[str, Any] | None:
        """The update for one report, or None when the page need not be refreshed for it."""
        from magedit.inversion import Inversion
        from magedit.pipeline import EditEvent, EditResult

        config = self.prepared.config
        if isinstance(item, InversionProgress):
            self.inverting = True
            if item.done < item.total and not self._due():
                return None
            method = config.inversion.replace("_", "-")
            text = f"Inverting the photo ({method}) {item.done}/{item.total}"
            inverted = self.plan.inverted(item.done, item.total)
            done, left = self._progress(inverted, 0.0, item.elapsed)
            return {"status": Status(text, done=done, note=left)}
        if isinstance(item, Inversion):
            self.inversion = item
            self.inverting = not item.cached
            self.reused = item.cached and item.key in self.made
            if item.cached and self.reused:
                text = "Reused this session's inversion of the photo. Editing…"
            elif item.cached:
                text = "Editing…"
            else:
                text = f"Inverted in {item.seconds:.1f} s. Editing…"
            done, _ = self._progress(sum(self.plan.inversion) if self.inverting else 0, 0, 0)
            return {"status": Status(text, done=done)}
        if isinstance(item, MethodStart):
            self.method = item
            self.steps = self.curves[item.method] = []
            if len(self.methods) == 1:
                return None
            label = METHOD_LABELS[item.method]
            done, _ = self._progress(self._inverted(), self._edited(0), 0)
            return {"status": Status(f"{label} ({item.number}/{item.total})…", done=done)}
        if isinstance(item, EditEvent):
            return self._event(item)
        if isinstance(item, EditResult):
            self.results[self.method.method if self.method else "magedit"] = item
            self.result = self.results.get("magedit")
            self.edited_before += item.timings["editing"]
            return None
        raise TypeError(f"unexpected report {type(item).__name__}")

    def _inverted(self) -> float:
        return sum(self.plan.inversion) if self.inverting else 0.0

    def _edited(self, step: float) -> float:
        """The editing weight done at ``step`` of the method running."""
        before = (self.method.number - 1) if self.method else 0
        return self.plan.edited(before * self.prepared.config.steps + step)

    def _prefix(self) -> str:
        if len(self.methods) == 1 or self.method is None:
            return ""
        return f"{METHOD_LABELS[self.method.method]} ({self.method.number}/{self.method.total}) · "

    def _event(self, event: EditEvent) -> dict[str, Any] | None:
        inverted = self._inverted()
        elapsed = self.edited_before + event.elapsed  # the methods before, then this one's
        if event.phase == "guidance":
            if not self._due():
                return None
            # A MAG iteration is about one share of its step's weight (the step's two
            # forwards are the last share).
            edited = self._edited(event.step - 1 + event.iteration / (event.max_iter + 1))
            done, left = self._progress(inverted, edited, elapsed)
            text = (
                f"{self._prefix()}Step {event.step}/{event.total} · guidance "
                f"{event.iteration}/{event.max_iter} · loss {event.loss:.3f} · in-mask "
                f"{event.in_mask_ratio:.3f}"
            )
            return {"status": Status(text, done=done, note=left), "charts": self.charts()}
        self.steps.append((event.step, event.loss, event.in_mask_ratio))
        self.last_refresh = time.perf_counter()
        shown = self.inversion.image  # (h, w, 3) at processing size
        done, left = self._progress(inverted, self._edited(event.step), elapsed)
        text = (
            f"{self._prefix()}Step {event.step}/{event.total} · loss {event.loss:.3f} · in-mask "
            f"{event.in_mask_ratio:.3f}"
        )
        last = event.step == event.total and (
            self.method is None or self.method.number == len(self.methods)
        )
        return {
            "status": Status(text, done=done, note="" if last else left),
            "preview": images.resize_image(event.preview, shown.shape[:2]),
            "attention": preview.heatmap_overlay(shown, event.attention, self.prepared.mask),
            "charts": self.charts(),
        }

    def charts(self) -> tuple[list[tuple[int, float, float]], int]:
        """The charts' data: (step, loss, in-mask ratio) per step so far, and the edit's steps."""
        return list(self.steps), self.prepared.config.steps

    def curve(self, steps: Sequence[tuple[int, float, float]] | None = None) -> list[dict]:
        """The per-step numbers (default: the method running's), for the API and the settings."""
        return [
            {"step": step, "loss": round(loss, 6), "in_mask_ratio": round(ratio, 6)}
            for step, loss, ratio in (self.steps if steps is None else steps)
        ]

    def finish(
        self,
        output_dir: Path,
        model: str,
        history: Sequence[tuple[str, str]] | None,
        clip: tuple[Any, str] = (None, "no CLIP model was given to the page"),
    ) -> dict[str, Any]:
        """The last update: the result, its file (named after the edit) and recipe, the report
        of each method (``report.measure``), the leakage map, the settings used, the compare
        panels (compare mode) and the session's gallery with the new result first. ``clip``:
        the CLIP scorer of the reports and, without one, why (``loading.report_clip``)."""
        from magedit.recipe import Recipe

        result, prepared = self.result, self.prepared
        if result is None:
            raise RuntimeError("the edit ended without a result")
        path = files.save_result(
            result.composited, output_dir, files.edit_phrase(prepared), keep=MAX_OUTPUTS
        )
        recipe = Recipe.of(prepared, model)
        recipe_path = path.with_suffix(".recipe.json")
        files.write_bytes(recipe_path, recipe.to_json().encode())
        reports = {m: report.measure(r, prepared.original, *clip) for m, r in self.results.items()}
        timings = {name: round(seconds, 2) for name, seconds in result.timings.items()}
        timings["total"] = round(time.perf_counter() - self.start, 2)
        cached = result.inversion_cached
        curve = self.curve(self.curves.get("magedit", self.steps))
        settings = {
            "model": public_name(model),
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
            "curve": curve,
            "file": path.name,
            "report": {m: r.to_dict() for m, r in reports.items()},
            "recipe": recipe.to_dict(),
        }
        compare = None
        if len(self.results) > 1:
            compare = [(prepared.original, "Photo")] + [
                (edited.composited, f"{METHOD_LABELS[m]} · {edited.timings['editing']:.1f} s")
                for m, edited in self.results.items()
            ]
        entries = [tuple(entry) for entry in history or () if len(entry) == 2]
        caption = f"{files.edit_phrase(prepared)} · {time.strftime('%H:%M')}"
        history = [(str(path), caption), *entries][:GALLERY_SIZE]
        note = " Reused this session's inversion." if cached and self.reused else ""
        if compare is not None:
            note += " The comparison is under the columns."
        return {
            "status": Status(f"Done in {timings['total']:.1f} s.{note}", kind="done"),
            "preview": result.image,
            "result": (prepared.original, result.composited),
            "download": str(path),
            "recipe": str(recipe_path),
            "report": reports,
            "leakage": report.leakage_map(result, prepared.original),
            "compare": compare,
            "settings": settings,
            "history": history,
            "charts": (list(self.curves.get("magedit", self.steps)), prepared.config.steps),
            "curve": curve,
            "made": self.made | {self.inversion.key},
        }


def show_history(history: Sequence[tuple[str, str]] | None) -> list[tuple[str, str]]:
    """The session's gallery: its results newest first, without files pruned since."""
    return [(path, caption) for path, caption in history or () if Path(path).is_file()]


# ------------------------------------------------------------------------------ the job
def run(
    services: Services,
    prepared: PreparedEdit,
    made: frozenset,
    history: Sequence[tuple[str, str]] | None,
    slot: int = 0,
    methods: Sequence[str] = ("magedit",),
) -> Iterator[dict[str, Any]]:
    """Invert ``prepared`` and edit it with each of ``methods`` (compare mode: MAG-Edit and the
    baselines, one after another on the one inversion) on a worker thread, with the pipeline of
    the line's ``slot``; yield update dicts as it reports. Ends with the result's update. Raises
    ValueError, FloatingPointError, JobTimeout or an out-of-memory RuntimeError as they happen."""
    pipe = model(services.pipeline_of(slot), "the model")
    stream = Stream(prepared, made=made, methods=tuple(methods))
    worker = Worker(pipe, prepared, services.time_limit, methods)
    worker.start()
    try:
        for item in worker:
            update = stream.add(item)
            if update is not None:
                yield update
        yield stream.finish(services.output_dir, pipe.model_id, history, services.clip())
    finally:
        worker.cancel()


@_gpu(duration=gpu_duration)
def run_on_gpu(
    services: Services,
    prepared: Any,
    made: frozenset,
    history: Any,
    slot: int = 0,
    methods: Sequence[str] = ("magedit",),
):
    """The job's GPU work (under ZeroGPU on a ZeroGPU Space, a plain call elsewhere)."""
    yield from run(services, prepared, made, history, slot, methods)


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
            "status": Status(
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
    methods: Sequence[str] = ("magedit",),
) -> Iterator[dict[str, Any]]:
    """An edit's whole job (one place in the line, whatever the methods): wait in line for the
    GPU (saying the place), then invert and edit (``run_on_gpu``). Closing the generator
    (Cancel) leaves the line or stops the work."""
    with services.line.ticket() as ticket:
        yield from wait_turn(services, ticket, request, prefer=holding(services, prepared))
        slot = services.line.slot(ticket)
        for update in run_on_gpu(services, prepared, made, history, slot, methods):
            if not services.admission.listening(request):
                raise StoppedListening  # closing run_on_gpu stops the worker at its next step
            yield update


def job_updates(
    services: Services,
    prepared: PreparedEdit,
    request: Any,
    made: frozenset = frozenset(),
    history: Sequence[tuple[str, str]] | None = None,
    methods: Sequence[str] = ("magedit",),
) -> Iterator[dict[str, Any]]:
    """``edit_job``'s updates as the page and the API serve them: a client that stopped
    listening ends the job quietly (a line in the log); a failure the visitor can act on ends it
    with a last update ``{"failure": message}``; any other exception (a bug) propagates."""
    try:
        yield from edit_job(services, prepared, request, made, history, methods)
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
