"""Load test of the page's API: concurrent ``gradio_client`` users against ``app.py --tiny``.

    python benchmarks/load.py                         # 8 users x 3 rounds + a burst; JSON out
    python benchmarks/load.py --users 8 --rounds 2 --burst 3 --time-limit 300

Each user has its own ``Client`` (its own session) and runs, one after the other: ``/segment``
(one click), then ``--rounds`` edits through ``/edit`` of the same photo and mask, cancelling
every ``--cancel-every``-th of them after its first streamed update. With ``--burst N`` the
users then wait for each other and submit N edits each at the same moment (more than the queue
holds: some are refused with "queue full"), and cancel the accepted ones once every burst job
has its answer.

Every job must end as one of: completed (the full-resolution PNG has the photo's shape, every
pixel outside the grown mask is the photo's, and all completed edits with the same prompts are
byte-identical), refused ("Queue is full"), or cancelled. Anything else is counted as an error,
a wrong result or a lost job (no answer within ``--time-limit``).

Server-side figures come from a tracer: the server is started by this file's ``serve`` command,
which is ``app.main(["--tiny", ...])`` with ``app.run_edit`` (the Edit handler) and
``MagEditPipeline.invert`` / ``MagEditPipeline.edit`` wrapped to append a JSON line at every start
and end with the number running at that moment. So "at most one edit at a time" is checked where
it happens, not inferred from client timestamps: ``server.pipeline.max_running`` (invert / edit
calls running at once: the GPU work) must be 1. ``server.edit.max_running`` counts Edit handlers
not yet closed: Gradio closes a cancelled handler at its next streamed update (within a step)
and may start the next job's handler before that; its worker then waits for the pipeline.
``--no-trace`` starts plain ``python app.py`` (no server-side figures).

Prints one JSON object: jobs, completed, refused, cancelled, errors, wrong, lost, latency p50/p95
(seconds, submit -> answer, completed edits), server RSS (MiB: after warm-up, peak, end), the
server-side maxima and the server's log lines that look like failures. Nothing is timed against a
limit here; ``tests/test_load.py`` runs a small version and asserts the counts.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import functools
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SOURCE = "a photo of a red sofa in a living room"
TARGETS = ("a photo of a green sofa in a living room", "a photo of a blue sofa in a living room")
QUEUE_FULL = "queue is full"  # what Gradio's refusal says (gradio_client's QueueError), lower case
# Lines in the server's output that mean a request failed on the server (an uncaught exception
# in a handler is printed with its traceback; a 500 by uvicorn as "Exception in ASGI").
FAILURE_MARKERS = (
    "Traceback (most recent call last)",
    "Exception in ASGI",
    "Internal Server Error",
)


# ----------------------------------------------------------------------------------------------
# The server


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class AppServer:
    """``python app.py --tiny`` on a free loopback port, its output in ``workdir/server.log``.

    ``trace=True`` starts it through this file's ``serve`` command (the same ``app.main`` with
    the edit handler and the pipeline wrapped by ``Tracer``), writing ``workdir/trace.jsonl``.
    Results and Gradio's cache go under ``workdir`` (``MAGEDIT_OUTPUT_DIR``, ``GRADIO_TEMP_DIR``)
    so that runs do not share files. Use as a context manager, or ``start()`` / ``stop()``.
    """

    def __init__(self, workdir: Path | str, *, trace: bool = False, args: Sequence[str] = ()):
        self.workdir = Path(workdir)
        self.trace_path = self.workdir / "trace.jsonl" if trace else None
        self.log_path = self.workdir / "server.log"
        self.args = ["--tiny", *args]
        self.port = 0
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    @property
    def pid(self) -> int:
        if self.process is None:
            raise RuntimeError("the server is not running; call start() first")
        return self.process.pid

    def start(self, timeout: float = 180.0) -> AppServer:
        """Start the server and wait until its page answers 200 (``timeout`` in seconds)."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        env = {
            **os.environ,
            "HF_HUB_OFFLINE": "1",
            "TRANSFORMERS_OFFLINE": "1",
            "GRADIO_ANALYTICS_ENABLED": "False",
            "PYTHONUNBUFFERED": "1",
            "MAGEDIT_OUTPUT_DIR": str(self.workdir / "outputs"),
            "GRADIO_TEMP_DIR": str(self.workdir / "gradio"),
        }
        for _attempt in range(3):  # another process may take the free port before we bind it
            self.port = free_port()
            args = [*self.args, "--port", str(self.port)]
            if self.trace_path is None:
                command = [sys.executable, "app.py", *args]
            else:
                command = [sys.executable, __file__, "serve", "--trace", str(self.trace_path)]
                command += ["--", *args]
            with open(self.log_path, "wb") as log:
                self.process = subprocess.Popen(
                    command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT
                )
            if self._wait_until_up(timeout):
                return self
            if "address already in use" not in self.log().lower():
                break
        tail = "\n".join(self.log().splitlines()[-20:])
        self.stop()
        raise RuntimeError(f"app.py did not start within {timeout:.0f} s; its output:\n{tail}")

    def _wait_until_up(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process is None or self.process.poll() is not None:
                return False
            with contextlib.suppress(OSError), urllib.request.urlopen(self.url, timeout=5) as page:
                if page.status == 200:
                    return True
            time.sleep(0.25)
        return False

    def log(self) -> str:
        """Everything the server printed so far."""
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def failures(self) -> list[str]:
        """The server's output lines that mean a request failed on the server."""
        return [line for line in self.log().splitlines() if any(m in line for m in FAILURE_MARKERS)]

    def rss_bytes(self) -> int:
        """Resident memory of the server process (``VmRSS`` in /proc), in bytes."""
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        raise RuntimeError(f"no VmRSS for process {self.pid}")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def __enter__(self) -> AppServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


# ----------------------------------------------------------------------------------------------
# Server-side tracing (runs inside the server process)


class Tracer:
    """Counts how many calls of each kind run at once; appends a JSON line at each start and end:
    {"kind", "event": "start" | "end", "active": running after this event, "outcome" (ends)}."""

    def __init__(self, path: Path | str):
        self.path = Path(path)
        self.lock = threading.Lock()
        self.active: Counter[str] = Counter()

    def _record(self, kind: str, event: str, outcome: str | None = None) -> None:
        with self.lock:
            self.active[kind] += 1 if event == "start" else -1
            line = {"kind": kind, "event": event, "active": self.active[kind], "t": time.time()}
            if outcome is not None:
                line["outcome"] = outcome
            with open(self.path, "a") as file:
                file.write(json.dumps(line) + "\n")

    def function(self, kind: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(fn)
        def traced(*args: Any, **kwargs: Any) -> Any:
            self._record(kind, "start")
            outcome = "error"
            try:
                result = fn(*args, **kwargs)
                outcome = "done"
                return result
            finally:
                self._record(kind, "end", outcome)

        return traced

    def generator(self, kind: str, fn: Callable[..., Iterator[Any]]) -> Callable[..., Any]:
        @functools.wraps(fn)
        def traced(*args: Any, **kwargs: Any) -> Iterator[Any]:
            self._record(kind, "start")
            outcome = "error"
            try:
                yield from fn(*args, **kwargs)
                outcome = "done"
            except GeneratorExit:  # closed before its end: the job was cancelled
                outcome = "closed"
                raise
            finally:
                self._record(kind, "end", outcome)

        return traced


def serve(trace_path: str, app_args: Sequence[str]) -> None:
    """``python app.py APP_ARGS`` with the edit handler and the pipeline traced (``Tracer``)."""
    import app
    from magedit.pipeline import MagEditPipeline

    tracer = Tracer(trace_path)
    # build_demo looks run_edit up when main() calls it, so the page wires the traced handler.
    app.run_edit = tracer.generator("edit", app.run_edit)
    MagEditPipeline.invert = tracer.function("pipeline", MagEditPipeline.invert)
    MagEditPipeline.edit = tracer.generator("pipeline", MagEditPipeline.edit)
    app.main(list(app_args))


def read_trace(path: Path | None) -> dict[str, Any] | None:
    """Per kind: the most running at once, starts, ends and the ends' outcomes."""
    if path is None or not path.exists():
        return None
    lines = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    summary: dict[str, Any] = {}
    for kind in sorted({line["kind"] for line in lines}):
        mine = [line for line in lines if line["kind"] == kind]
        summary[kind] = {
            "max_running": max(line["active"] for line in mine),
            "starts": sum(line["event"] == "start" for line in mine),
            "ends": sum(line["event"] == "end" for line in mine),
            "outcomes": dict(Counter(line["outcome"] for line in mine if "outcome" in line)),
        }
    return summary


# ----------------------------------------------------------------------------------------------
# The inputs and the check of a result


def scene(height: int = 192, width: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """A test photo (HWC uint8: a colour gradient with a dark red 'sofa') and its sofa mask."""
    y, x = np.mgrid[0:height, 0:width]
    photo = np.stack([x * 255 / width, y * 255 / height, 128 + 0 * x], -1).round()
    mask = np.zeros((height, width), bool)
    mask[height // 3 : 2 * height // 3, width // 4 : 3 * width // 4] = True
    photo[mask] = (150, 30, 30)
    return photo.astype(np.uint8), mask


def write_inputs(folder: Path) -> tuple[Path, Path]:
    """The scene's photo and mask as PNGs in ``folder``: (photo path, mask path)."""
    from PIL import Image

    photo, mask = scene()
    folder.mkdir(parents=True, exist_ok=True)
    Image.fromarray(photo).save(folder / "photo.png")
    Image.fromarray(mask.astype(np.uint8) * 255).save(folder / "mask.png")
    return folder / "photo.png", folder / "mask.png"


def find_result(outputs: Sequence[Any]) -> tuple[str, dict[str, Any], str]:
    """The edit's (status line, settings, full-resolution PNG path) among its outputs, found by
    what they are rather than where they are, so that added outputs do not break the check."""
    status = next((o for o in outputs if isinstance(o, str) and o.startswith("**Done**")), None)
    settings = next((o for o in outputs if isinstance(o, dict) and "source prompt" in o), None)
    path = None
    if settings is not None:
        path = next(
            (o for o in outputs if isinstance(o, str) and Path(o).name == settings.get("file")),
            None,
        )
    if status is None or settings is None or path is None:
        raise ValueError(f"no finished result among the outputs {str(outputs)[:300]}")
    return status, settings, path


def check_edit(
    outputs: Sequence[Any], photo: np.ndarray, mask: np.ndarray, target: str
) -> np.ndarray:
    """The edit's full-resolution result, after checking it: the photo's shape; every pixel
    outside the mask grown by 1% of the long side (+ 2 px) is the photo's; some pixel inside
    changed; the settings name the target prompt. Raises ValueError saying what is wrong."""
    from PIL import Image

    from magedit import images

    _, settings, path = find_result(outputs)
    result = np.asarray(Image.open(path).convert("RGB"))
    if result.shape != photo.shape:
        raise ValueError(f"result is {result.shape}, the photo {photo.shape}")
    # images.composite keeps every pixel outside dilate(mask, composite_band(mask.shape)).
    outside = ~images.dilate(mask, images.composite_band(mask.shape) + 2)
    changed_outside = int((result[outside] != photo[outside]).any(-1).sum())
    if changed_outside:
        raise ValueError(f"{changed_outside} pixels outside the mask differ from the photo")
    if not (result[mask] != photo[mask]).any():
        raise ValueError("no pixel inside the mask changed")
    if settings.get("target prompt") != target:
        raise ValueError(f"settings name {settings.get('target prompt')!r}, not {target!r}")
    return result


# ----------------------------------------------------------------------------------------------
# The users


@dataclasses.dataclass
class Job:
    user: int
    kind: str  # "segment" or "edit"
    plan: str  # "complete", "cancel" (after its first update) or "burst"
    target: str = ""
    outcome: str = "pending"  # completed | refused | cancelled | error | wrong | lost
    message: str = ""
    seconds: float | None = None  # submit -> answer, for completed jobs
    result: np.ndarray | None = dataclasses.field(default=None, repr=False)


@dataclasses.dataclass
class Settings:
    users: int = 8
    rounds: int = 3
    cancel_every: int = 3
    burst: int = 3
    steps: int = 10
    iterations: int = 1
    time_limit: float = 600.0


class LoadRun:
    """One load run against ``url``: the users' threads, their jobs, the figures."""

    def __init__(self, url: str, workdir: Path, settings: Settings):
        from gradio_client import handle_file

        self.url = url
        self.settings = settings
        self.workdir = workdir
        self.photo, self.mask = scene()
        photo_path, mask_path = write_inputs(workdir)
        self.photo_file = handle_file(str(photo_path))
        self.mask_file = handle_file(str(mask_path))
        self.jobs: list[Job] = []
        self.lock = threading.Lock()
        self.deadline = time.monotonic() + settings.time_limit
        self.barrier = threading.Barrier(settings.users)

    def edit_kwargs(self, target: str) -> dict[str, Any]:
        return {
            "image": self.photo_file,
            "source": SOURCE,
            "target": target,
            "mask_file": self.mask_file,
            "steps": self.settings.steps,
            "iterations": self.settings.iterations,
            "api_name": "/edit",
        }

    def _new(self, job: Job) -> Job:
        with self.lock:
            self.jobs.append(job)
        return job

    def _left(self) -> float:
        return max(0.0, self.deadline - time.monotonic())

    def user(self, index: int) -> None:
        """One user's session: segment, the rounds of edits, the burst."""
        from gradio_client import Client

        try:
            client = Client(self.url, verbose=False, download_files=str(self.downloads(index)))
        except Exception as error:  # noqa: BLE001 - every failure is a figure of the run
            self.barrier.abort()  # the others must not wait for this user at the burst
            self._new(Job(index, "connect", "complete", outcome="error", message=repr(error)))
            return
        try:
            self._segment(client, index)
            for round_ in range(self.settings.rounds):
                if self._left() <= 0:
                    break
                cancel = (index + round_) % self.settings.cancel_every == 0
                self._edit(client, index, "cancel" if cancel else "complete")
            if self.settings.burst:
                self._burst(client, index)
        except BaseException:
            self.barrier.abort()  # this user's jobs stay "pending" (counted as lost)
            raise
        finally:
            client.close()

    def downloads(self, index: int) -> Path:
        """Where user ``index``'s client puts the files it receives."""
        return self.workdir / f"downloads-{index}"

    def _segment(self, client: Any, index: int) -> None:
        from PIL import Image

        job = self._new(Job(index, "segment", "complete"))
        height, width = self.photo.shape[:2]
        point = [width // 2 + 8 * (index % 4) - 12, height // 2]
        start = time.monotonic()
        try:
            path, score = client.predict(
                image=self.photo_file, points=[point], labels=[1], api_name="/segment"
            )
            mask = np.asarray(Image.open(path))
            if mask.shape[:2] != (height, width) or not set(np.unique(mask)) <= {0, 255}:
                raise ValueError(f"mask {mask.shape} with values {np.unique(mask)[:5]}")
            if not isinstance(score, float):
                raise ValueError(f"score {score!r} is not a number")
            job.outcome, job.seconds = "completed", time.monotonic() - start
        except ValueError as error:
            job.outcome, job.message = "wrong", str(error)
        except Exception as error:  # noqa: BLE001 - every failure is a figure of the run
            job.outcome, job.message = _classify(error)

    def _edit(self, client: Any, index: int, plan: str) -> None:
        target = TARGETS[index % len(TARGETS)]
        job = self._new(Job(index, "edit", plan, target))
        start = time.monotonic()
        handle = client.submit(**self.edit_kwargs(target))
        if plan == "cancel":
            while not handle.done() and not handle.outputs() and time.monotonic() < self.deadline:
                time.sleep(0.02)
            handle.cancel()
        self._finish(job, handle, start)

    def _burst(self, client: Any, index: int) -> None:
        """Every user submits ``burst`` edits at once; the accepted ones are cancelled after all
        have been answered (queued, running or refused)."""
        from gradio_client.utils import Status

        with contextlib.suppress(threading.BrokenBarrierError):
            self.barrier.wait(timeout=self._left())
        target = TARGETS[index % len(TARGETS)]
        handles = []
        for _ in range(self.settings.burst):
            job = self._new(Job(index, "edit", "burst", target))
            handles.append((job, client.submit(**self.edit_kwargs(target)), time.monotonic()))
        unanswered = (Status.STARTING, Status.JOINING_QUEUE)
        for _, handle, _ in handles:
            while (
                not handle.done()
                and handle.status().code in unanswered
                and time.monotonic() < self.deadline
            ):
                time.sleep(0.02)
        with contextlib.suppress(threading.BrokenBarrierError):
            self.barrier.wait(timeout=self._left())
        for _, handle, _ in handles:
            handle.cancel()
        for job, handle, start in handles:
            self._finish(job, handle, start)

    def _finish(self, job: Job, handle: Any, start: float) -> None:
        """Wait for the job's answer and classify it."""
        import concurrent.futures

        try:
            outputs = handle.result(timeout=self._left() + 30)
        except concurrent.futures.TimeoutError:
            job.outcome, job.message = "lost", f"no answer within {self.settings.time_limit} s"
            handle.cancel()
            return
        except Exception as error:  # noqa: BLE001 - every failure is a figure of the run
            if handle.status().code.value == "CANCELLED" and not _is_queue_full(error):
                # gradio_client ends a cancelled job with a KeyError or CancelledError; its
                # status is what says "cancelled".
                job.outcome, job.message = "cancelled", "cancelled"
            else:
                job.outcome, job.message = _classify(error)
            return
        try:
            job.result = check_edit(outputs, self.photo, self.mask, job.target)
            job.outcome, job.seconds = "completed", time.monotonic() - start
        except ValueError as error:
            job.outcome, job.message = "wrong", str(error)


def _is_queue_full(error: BaseException) -> bool:
    return QUEUE_FULL in str(error).lower()


def _classify(error: BaseException) -> tuple[str, str]:
    if _is_queue_full(error):
        return "refused", str(error)
    return "error", f"{type(error).__name__}: {error}"


def percentile(values: Sequence[float], q: float) -> float | None:
    return round(float(np.percentile(values, q)), 3) if values else None


def run_load(
    settings: Settings, workdir: Path | str, *, url: str | None = None, trace: bool = True
) -> dict[str, Any]:
    """Start ``app.py --tiny`` (unless ``url`` is given), run the users, return the figures."""
    workdir = Path(workdir)
    server = None if url else AppServer(workdir / "server", trace=trace).start()
    try:
        run = LoadRun(url or server.url, workdir / "inputs", settings)
        rss: list[int] = []
        if server is not None:
            _warm_up(run)  # the first edit loads and allocates what every later one reuses
            rss.append(server.rss_bytes())
        stop = threading.Event()
        sampler = threading.Thread(target=_sample_rss, args=(server, rss, stop), daemon=True)
        sampler.start()
        started = time.monotonic()
        threads = [
            threading.Thread(target=run.user, args=(i,), name=f"user{i}", daemon=True)
            for i in range(settings.users)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=max(1.0, run._left() + 60))
        wall = time.monotonic() - started
        stop.set()
        sampler.join()
        if server is not None:
            _wait_until_settled(server.trace_path)
            rss.append(server.rss_bytes())
        return _figures(run, server, rss, wall)
    finally:
        if server is not None:
            server.stop()


def _wait_until_settled(trace_path: Path | None, timeout: float = 90.0) -> None:
    """Wait until every traced call that started has ended (a cancelled handler ends at its next
    update, after its client got the answer: Gradio retries closing it for up to 60 s), at most
    ``timeout`` seconds; the figures then show what never ended."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        trace = read_trace(trace_path)
        if trace is None or all(kind["starts"] == kind["ends"] for kind in trace.values()):
            return
        time.sleep(0.25)


def _warm_up(run: LoadRun) -> None:
    from gradio_client import Client

    client = Client(run.url, verbose=False, download_files=str(run.downloads(-1)))
    try:
        outputs = client.predict(**run.edit_kwargs(TARGETS[0]))
        check_edit(outputs, run.photo, run.mask, TARGETS[0])
    finally:
        client.close()


def _sample_rss(server: AppServer | None, rss: list[int], stop: threading.Event) -> None:
    while server is not None and not stop.wait(0.25):
        with contextlib.suppress(OSError, RuntimeError):
            rss.append(server.rss_bytes())


def _figures(run: LoadRun, server: AppServer | None, rss: list[int], wall: float) -> dict[str, Any]:
    jobs = run.jobs
    outcomes = Counter(job.outcome for job in jobs)
    edits = [job for job in jobs if job.kind == "edit"]
    segments = [job for job in jobs if job.kind == "segment"]
    # Completed edits of the same prompts must be identical, whoever asked for them.
    distinct = {
        target: len(
            {
                job.result.tobytes()
                for job in edits
                if job.result is not None and job.target == target
            }
        )
        for target in TARGETS
    }
    mib = 1024 * 1024
    figures: dict[str, Any] = {
        "settings": dataclasses.asdict(run.settings),
        "jobs": len(jobs),
        "edits": len(edits),
        "segments": len(segments),
        "completed": outcomes["completed"],
        "completed_edits": sum(job.outcome == "completed" for job in edits),
        "refused": outcomes["refused"],
        "cancelled": outcomes["cancelled"],
        "errors": outcomes["error"],
        "wrong": outcomes["wrong"],
        "lost": outcomes["lost"] + outcomes["pending"],
        "distinct_results_per_target": distinct,
        "edit_latency_s": {
            "p50": percentile([j.seconds for j in edits if j.seconds is not None], 50),
            "p95": percentile([j.seconds for j in edits if j.seconds is not None], 95),
        },
        "segment_latency_s": {
            "p50": percentile([j.seconds for j in segments if j.seconds is not None], 50),
            "p95": percentile([j.seconds for j in segments if j.seconds is not None], 95),
        },
        "wall_s": round(wall, 1),
        "messages": sorted({f"{j.outcome}: {j.message}" for j in jobs if j.message})[:20],
    }
    if server is not None:
        figures["rss_mib"] = {
            "after_warm_up": round(rss[0] / mib, 1),
            "peak": round(max(rss) / mib, 1),
            "end": round(rss[-1] / mib, 1),
        }
        figures["warm_up_edits"] = 1  # run by the harness before the users: in the server's counts
        figures["server"] = read_trace(server.trace_path)
        figures["server_failures"] = server.failures()[:20]
    return figures


# ----------------------------------------------------------------------------------------------
# Command line


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if str(ROOT) not in sys.path:  # run as a script: magedit and app.py live at the repo root
        sys.path.insert(0, str(ROOT))
    if argv[:1] == ["serve"]:
        parser = argparse.ArgumentParser(prog="load.py serve")
        parser.add_argument("--trace", required=True, help="the JSON-lines file to append to")
        parser.add_argument("app_args", nargs=argparse.REMAINDER, help="-- then app.py's options")
        args = parser.parse_args(argv[1:])
        app_args = args.app_args[1:] if args.app_args[:1] == ["--"] else args.app_args
        serve(args.trace, app_args)
        return 0
    parser = argparse.ArgumentParser(
        prog="load.py", description="Concurrent gradio_client users against app.py --tiny."
    )
    defaults = Settings()
    parser.add_argument("--users", type=int, default=defaults.users)
    parser.add_argument("--rounds", type=int, default=defaults.rounds, help="edits per user")
    parser.add_argument(
        "--cancel-every",
        type=int,
        default=defaults.cancel_every,
        help="cancel edit k of user u when (u + k) %% N == 0 (after its first update)",
    )
    parser.add_argument(
        "--burst",
        type=int,
        default=defaults.burst,
        help="edits per user submitted at once (0: no burst)",
    )
    parser.add_argument("--steps", type=int, default=defaults.steps)
    parser.add_argument("--iterations", type=int, default=defaults.iterations)
    parser.add_argument(
        "--time-limit", type=float, default=defaults.time_limit, help="seconds for the whole run"
    )
    parser.add_argument("--url", help="a running server instead of starting app.py --tiny")
    parser.add_argument("--no-trace", action="store_true", help="plain python app.py (no tracer)")
    args = parser.parse_args(argv)
    for name in ("users", "rounds", "cancel_every", "steps"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} is {getattr(args, name)}; give 1 or more")
    settings = Settings(
        users=args.users,
        rounds=args.rounds,
        cancel_every=args.cancel_every,
        burst=args.burst,
        steps=args.steps,
        iterations=args.iterations,
        time_limit=args.time_limit,
    )
    with tempfile.TemporaryDirectory(prefix="magedit-load-") as workdir:
        figures = run_load(settings, workdir, url=args.url, trace=not args.no_trace)
    print(json.dumps(figures, indent=1))
    bad = figures["errors"] + figures["wrong"] + figures["lost"]
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
