"""Load and abuse tests of the page's API: ``gradio_client`` users and plain-HTTP scripts against
``app.py --tiny --behind-proxy``.

    python benchmarks/load.py                          # 8 users, 3 rounds, the caps' burst
    python benchmarks/load.py --users 8 --rounds 2 --burst 3 --time-limit 300
    python benchmarks/load.py --abuse                  # every flood below, one server each
    python benchmarks/load.py --abuse --floods session_flood,png_bomb

The server runs with ``--behind-proxy`` and every simulated visitor sends its own
``X-Forwarded-For`` (gradio_client's ``headers=``): without it they would all be 127.0.0.1, one
address, and the per-address cap (``magedit.web.limits.EDITS_PER_ADDRESS``) would refuse most.

**Load mode.** Users 2k and 2k+1 share an address (a household). Each has its own ``Client``
(its own session) and runs: ``/segment`` (one click), then ``--rounds`` edits of the same photo
and mask, cancelling every ``--cancel-every``-th after its first streamed update. Then the caps'
burst, while a blocker (an edit at the maximum legal settings from an address of its own) keeps
the one edit slot busy, so that every accepted edit stays waiting:

1. each user submits ``--burst`` edits at once from its session: one is accepted, the others
   are refused ("you already have an edit running or waiting");
2. each user opens a second session at its address and submits one: refused, its household
   already has two edits waiting;
3. ``--crowd`` visitors, each from an address of its own, join one after the other: the page
   holds ``QUEUE_SIZE`` waiting edits, the rest are refused ("the page is busy");
4. every accepted burst edit is cancelled, then the crowd's and the blocker.

Every job must end as one of: completed (the full-resolution PNG has the photo's shape, every
pixel outside the grown mask is the photo's, and all completed edits with the same prompts are
byte-identical), refused (by the queue, the session cap or the address cap: ``Job.reason``), or
cancelled. Anything else is counted as an error, a wrong result or a lost job (no answer within
``--time-limit``).

Server-side figures come from a tracer: the server is started by this file's ``serve`` command,
which is ``app.main([...])`` with ``magedit.web.job.run`` (an edit job's work, from the
moment the queue starts it) and ``MagEditPipeline.invert`` / ``MagEditPipeline.edit`` wrapped to
append a JSON line at every start and end with the number running at that moment, and
``Segmenter.predict`` / ``Segmenter.embed`` likewise. So "one edit at a time" and "at most
``SEGMENT_CONCURRENCY`` Segment Anything calls at once" are checked where they happen:
``server.pipeline.max_running`` must be 1 and ``server.segment.max_running`` at most 2.
``--no-trace`` starts plain ``python app.py``.

**Abuse mode** (``--abuse``) runs each flood of the public-page issue against a fresh
``app.py --tiny --behind-proxy`` while an honest visitor (an address of its own) edits, and
prints one JSON object: per flood, what the abuser was told (answers counted), the honest
visitor's attempts (outcome and seconds, submit to answer) and the server's memory (RSS before,
peak during: ``VmHWM`` after resetting it through ``/proc/PID/clear_refs``, and the sampled
maximum; RSS after). The floods (``FLOODS``): twenty queue joins of ``/edit`` at the maximum
legal settings from one session, never reading the results (and again with a 16 MP photo and
mask), and the same from 20 sessions of one address; 100 x 5 MB brush uploads
(``accept_blobs``) and one with layer index 50,000,000; a 12 KB PNG claiming 100 megapixels as
a brush layer; ``/segment`` with 12,000 and 100,000 points; 30 parallel ``/segment`` calls on a
16 MP photo (and 70: more than Gradio's queue holds), and 30 parallel page clicks (the click
event, reached as a script reaches it); 10,000 copies of one edit word; a flood of 20 MB
uploads; a 50 MB JSON body. Figures to read: nothing is asserted here;
``tests/test_load.py`` runs small versions and asserts.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import dataclasses
import datetime
import functools
import io
import json
import os
import platform
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SOURCE = "a photo of a red sofa in a living room"
TARGETS = ("a photo of a green sofa in a living room", "a photo of a blue sofa in a living room")
# What each refusal says (lower case), by reason: Gradio's full queue (gradio_client's
# QueueError), and the page's caps (magedit.web.admission.Admission.admit, as a ValidationError):
# its line of waiting edits is full, the session or the address has its edits.
REFUSALS = {
    "queue_full": "queue is full",
    "busy": "the page is busy",
    "session": "already have an edit running or waiting",
    "address": "edits from your network are already running or waiting",
}
# Lines in the server's output that mean a request failed on the server (an uncaught exception
# in a handler is printed with its traceback; a 500 by uvicorn as "Exception in ASGI").
FAILURE_MARKERS = (
    "Traceback (most recent call last)",
    "Exception in ASGI",
    "Internal Server Error",
)
# Lines the page logs (magedit.web.services.log) that the abuse mode counts.
LOG_MARKERS = {
    "refused": "magedit: refused:",
    "dropped": "client stopped listening was dropped",  # before its job started
    "left_line": "client stopped listening left the line",  # while it waited for the GPU
    "time_limit": "ran longer than this page's limit",
}
MIB = 2**20


# ----------------------------------------------------------------------------------------------
# The server


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class AppServer:
    """``python app.py --tiny`` on a free loopback port, its output in ``workdir/server.log``.

    ``behind_proxy`` adds ``--behind-proxy``: the page then takes a visitor's address from
    X-Forwarded-For, which is how the simulated visitors get addresses of their own. ``trace``
    starts it through this file's ``serve`` command (the same ``app.main``, with ``Tracer``),
    writing ``workdir/trace.jsonl``. Results and Gradio's cache go under ``workdir``
    (``MAGEDIT_OUTPUT_DIR``, ``GRADIO_TEMP_DIR``) so that runs do not share files. Use as a
    context manager, or ``start()`` / ``stop()``.
    """

    def __init__(
        self,
        workdir: Path | str,
        *,
        trace: bool = False,
        behind_proxy: bool = False,
        args: Sequence[str] = (),
    ):
        self.workdir = Path(workdir)
        self.trace_path = self.workdir / "trace.jsonl" if trace else None
        self.log_path = self.workdir / "server.log"
        self.cache_dir = self.workdir / "gradio"
        self.args = ["--tiny", *(["--behind-proxy"] if behind_proxy else []), *args]
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

    def start(self, timeout: float = 240.0) -> AppServer:
        """Start the server and wait until its page answers 200 (``timeout`` in seconds)."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        env = {
            **os.environ,
            "HF_HUB_OFFLINE": "1",
            "TRANSFORMERS_OFFLINE": "1",
            "GRADIO_ANALYTICS_ENABLED": "False",
            "PYTHONUNBUFFERED": "1",
            "MAGEDIT_OUTPUT_DIR": str(self.workdir / "outputs"),
            "GRADIO_TEMP_DIR": str(self.cache_dir),
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
        """Resident memory of the server process in bytes (psutil, else ``VmRSS`` in /proc)."""
        try:
            import psutil
        except ImportError:
            return self._status("VmRSS")
        return psutil.Process(self.pid).memory_info().rss

    def peak_bytes(self) -> int | None:
        """The most resident memory since the start or the last ``reset_peak`` (``VmHWM``), in
        bytes; None where /proc does not say (not Linux)."""
        try:
            return self._status("VmHWM")
        except (OSError, RuntimeError):
            return None

    def reset_peak(self) -> bool:
        """Reset ``VmHWM`` to the current RSS (Linux: write 5 to /proc/PID/clear_refs); False
        where that is not allowed."""
        try:
            Path(f"/proc/{self.pid}/clear_refs").write_text("5")
        except OSError:
            return False
        return True

    def _status(self, field: str) -> int:
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith(f"{field}:"):
                return int(line.split()[1]) * 1024
        raise RuntimeError(f"no {field} for process {self.pid}")

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


class MemorySampler:
    """The server's RSS every ``interval`` seconds on a thread, while in a ``with`` block."""

    def __init__(self, server: AppServer, interval: float = 0.1):
        self.server, self.interval = server, interval
        self.samples: list[int] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            with contextlib.suppress(OSError, RuntimeError, ImportError):
                self.samples.append(self.server.rss_bytes())

    def __enter__(self) -> MemorySampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


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
    """``python app.py APP_ARGS`` with the edit jobs, the pipeline and Segment Anything traced."""
    import app
    from magedit.pipeline import MagEditPipeline
    from magedit.segment import Segmenter
    from magedit.web import job

    tracer = Tracer(trace_path)
    # The page's jobs call job.run through the module when they start, so they run the traced
    # one: "edit" counts the jobs the queue started and did not drop.
    job.run = tracer.generator("edit", job.run)
    MagEditPipeline.invert = tracer.function("pipeline", MagEditPipeline.invert)
    MagEditPipeline.edit = tracer.generator("pipeline", MagEditPipeline.edit)
    Segmenter.predict = tracer.function("segment", Segmenter.predict)
    Segmenter.embed = tracer.function("segment", Segmenter.embed)
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


def big_photo(path: Path, side: int = 4000) -> Path:
    """A ``side`` x ``side`` JPEG (16 MP at 4000: ``magedit.images.MAX_PIXELS``), about 1 MB."""
    from PIL import Image

    y, x = np.mgrid[0:side, 0:side]
    pixels = np.stack([x % 256, y % 256, (x + y) // 32 % 256], -1).astype(np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path, quality=90)
    return path


def big_mask(path: Path, side: int = 4000) -> Path:
    """A ``side`` x ``side`` mask PNG: a white square in the middle half of each side."""
    from PIL import Image

    mask = np.zeros((side, side), np.uint8)
    mask[side // 4 : 3 * side // 4, side // 4 : 3 * side // 4] = 255
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(mask).save(path)
    return path


def png_bomb(side: int = 10_000) -> bytes:
    """A 1-bit PNG of ``side`` x ``side`` black pixels: 12 KB that decode to 100 megapixels
    (400 MB as RGBA)."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("1", (side, side)).save(buffer, "PNG", optimize=True)
    return buffer.getvalue()


def max_settings() -> dict[str, Any]:
    """The /edit settings that cost the most and are still accepted: every number at the top of
    its range (``magedit.controls``), the largest resolution, null-text inversion (the slowest
    of the three)."""
    from magedit.controls import BY_NAME

    top = {name: BY_NAME[name].high for name in ("iterations", "granularity", "steps", "guidance")}
    top = {k: int(v) if BY_NAME[k].kind == "int" else v for k, v in top.items()}
    return {**top, "resolution": max(BY_NAME["resolution"].values), "inversion": "null_text"}


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
# A script: what a client does without gradio_client, in plain HTTP


def forwarded(address: str) -> dict[str, str]:
    """The header that gives a visitor ``address`` on a server started with --behind-proxy."""
    return {"X-Forwarded-For": address}


def told(response: Any) -> str:
    """What an HTTP answer of Gradio told the client, in one line: "200 queued", "422 - image:
    ...", "429 too many uploads ...", "413 File size exceeded ..."."""
    try:
        body = response.json()
    except ValueError:
        return f"{response.status_code} {response.text.strip()[:160]}"
    detail = body.get("detail") if isinstance(body, dict) else None
    if isinstance(body, dict) and "event_id" in body:
        text = "queued"
    elif isinstance(body, dict) and "data" in body:  # a direct call's outputs
        text = "answered"
    elif isinstance(detail, list):  # the validator's answer: one entry per parameter
        text = "; ".join(
            f"- {d.get('parameter_name')}: {d.get('message')}"
            for d in detail
            if isinstance(d, dict) and d.get("is_valid") is False
        )
    elif detail is not None:
        text = str(detail)
    else:
        text = json.dumps(body)
    return f"{response.status_code} {text[:200]}"


def told_by_exception(error: BaseException) -> str:
    """What gradio_client raised, in one line: "ValidationError: - words: ..."."""
    text = " ".join(str(error).split())
    return f"{type(error).__name__}: {text[:200]}"


class Script:
    """Plain HTTP to Gradio's routes from one network address (X-Forwarded-For; the server runs
    with --behind-proxy). Thread-safe: one connection pool shared by every call."""

    def __init__(self, url: str, address: str, timeout: float = 900.0):
        import httpx

        self.url = url.rstrip("/")
        self.address = address
        self.http = httpx.Client(headers=forwarded(address), timeout=timeout)
        self._config: dict[str, Any] | None = None
        self._info: dict[str, Any] | None = None

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> Script:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ what the page offers
    def config(self) -> dict[str, Any]:
        if self._config is None:
            self._config = self.http.get(f"{self.url}/config").raise_for_status().json()
        return self._config

    def fn_index(self, api_name: str) -> int:
        """The event whose API name is ``api_name`` ("edit", or a private one: "on_click")."""
        for dependency in self.config()["dependencies"]:
            if dependency.get("api_name") == api_name:
                return dependency["id"]
        raise KeyError(f"the page has no event named {api_name!r}")

    def component_id(self, kind: str, *, label: str = "", elem_id: str = "") -> int:
        """The id of the ``kind`` component with this label (the API's hidden inputs) or this
        elem_id (the page's controls)."""
        for component in self.config()["components"]:
            props = component["props"]
            if component.get("type") == kind and (
                (label and props.get("label") == label)
                or (elem_id and props.get("elem_id") == elem_id)
            ):
                return component["id"]
        raise KeyError(f"the page has no {kind} labelled {label!r} or with elem_id {elem_id!r}")

    def parameters(self, api_name: str, **values: Any) -> list[Any]:
        """The data of a queue join of ``/api_name``: ``values`` by parameter name, the API's
        defaults for the rest (in the API's order, from /gradio_api/info)."""
        if self._info is None:
            self._info = self.http.get(f"{self.url}/gradio_api/info").raise_for_status().json()
        parameters = self._info["named_endpoints"][f"/{api_name}"]["parameters"]
        names = [p["parameter_name"] for p in parameters]
        unknown = set(values) - set(names)
        if unknown:
            raise KeyError(f"/{api_name} has no parameter {sorted(unknown)}; it has {names}")
        return [values.get(p["parameter_name"], p.get("parameter_default")) for p in parameters]

    # ------------------------------------------------------------------------------- calls
    def upload(self, content: bytes, name: str) -> Any:
        """POST /gradio_api/upload: the response (200: a list with the server's path)."""
        return self.http.post(f"{self.url}/gradio_api/upload", files={"files": (name, content)})

    def uploaded(self, content: bytes, name: str) -> dict[str, Any]:
        """Upload ``content`` and return it as the FileData a parameter takes."""
        response = self.upload(content, name).raise_for_status()
        return {"path": response.json()[0], "orig_name": name, "meta": {"_type": "gradio.FileData"}}

    def join(self, api_name: str, data: list[Any], session: str) -> Any:
        """POST /gradio_api/queue/join and nothing more: the results are never read."""
        body = {"data": data, "fn_index": self.fn_index(api_name), "session_hash": session}
        return self.http.post(f"{self.url}/gradio_api/queue/join", json=body)

    def cancel(self, api_name: str, session: str, event_id: str) -> None:
        """POST /gradio_api/cancel: stops the event if it runs, removes it if it waits."""
        body = {"session_hash": session, "fn_index": self.fn_index(api_name), "event_id": event_id}
        self.http.post(f"{self.url}/gradio_api/cancel", json=body)

    def call(self, api_name: str, data: list[Any], session: str, event_data: Any = None) -> Any:
        """POST /gradio_api/run/predict: an event that does not use the queue, called directly
        (as the page's own clicks are)."""
        body = {
            "data": data,
            "fn_index": self.fn_index(api_name),
            "session_hash": session,
            "event_data": event_data,
        }
        return self.http.post(f"{self.url}/gradio_api/run/predict", json=body)

    def blob(
        self, component: int, session: str, blob_id: str, kind: str, index: int, content: bytes
    ) -> Any:
        """One brush upload as the image editor sends it: POST /gradio_api/component_server/
        calling its ``accept_blobs`` (``kind``: "layer", "background" or "composite")."""
        form = {
            "component_id": str(component),
            "session_hash": session,
            "fn_name": "accept_blobs",
            "type": kind,
            "index": str(index),
            "id": blob_id,
        }
        files = {"blob": ("blob", content, "image/png")}
        return self.http.post(f"{self.url}/gradio_api/component_server/", data=form, files=files)


# ----------------------------------------------------------------------------------------------
# The users


@dataclasses.dataclass
class Job:
    user: int
    kind: str  # "segment" or "edit"
    plan: str  # "complete", "cancel" (after its first update), "burst", "second", "crowd", ...
    target: str = ""
    outcome: str = "pending"  # completed | refused | cancelled | error | wrong | lost
    reason: str = ""  # refused: a key of REFUSALS
    message: str = ""
    seconds: float | None = None  # submit -> answer, for completed jobs
    result: np.ndarray | None = dataclasses.field(default=None, repr=False)


@dataclasses.dataclass
class Settings:
    users: int = 8
    rounds: int = 3
    cancel_every: int = 3
    burst: int = 3
    crowd: int | None = None  # None: enough to overflow the queue by 2 (QUEUE_SIZE - users + 2)
    steps: int = 10
    iterations: int = 1
    time_limit: float = 600.0

    def crowd_size(self) -> int:
        from magedit.web.limits import QUEUE_SIZE

        return self.crowd if self.crowd is not None else max(0, QUEUE_SIZE - self.users) + 2


def user_address(index: int) -> str:
    """Users 2k and 2k+1 share an address: a household behind one router."""
    return f"10.0.{index // 2}.1"


BLOCKER_ADDRESS = "10.255.0.1"


def crowd_address(index: int) -> str:
    return f"10.1.{index // 250}.{index % 250 + 1}"


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
        self.blocker: tuple[Any, Job, Any, float] | None = None  # (client, job, handle, start)
        self.crowd: list[tuple[Any, Job, Any, float]] = []

    def client(self, address: str, name: str) -> Any:
        from gradio_client import Client

        return Client(
            self.url,
            verbose=False,
            headers=forwarded(address),
            download_files=str(self.downloads(name)),
        )

    def edit_kwargs(self, target: str, **settings: Any) -> dict[str, Any]:
        return {
            "image": self.photo_file,
            "source": SOURCE,
            "target": target,
            "mask_file": self.mask_file,
            "steps": self.settings.steps,
            "iterations": self.settings.iterations,
            **settings,
            "api_name": "/edit",
        }

    def _new(self, job: Job) -> Job:
        with self.lock:
            self.jobs.append(job)
        return job

    def _left(self) -> float:
        return max(0.0, self.deadline - time.monotonic())

    def downloads(self, name: Any) -> Path:
        """Where client ``name`` puts the files it receives."""
        return self.workdir / f"downloads-{name}"

    def user(self, index: int) -> None:
        """One user's session: segment, the rounds of edits, the caps' burst."""
        try:
            client = self.client(user_address(index), index)
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
            if refusal(error) is None:
                job.outcome, job.message = "wrong", str(error)
            else:
                _classify(job, error)
        except Exception as error:  # noqa: BLE001 - every failure is a figure of the run
            _classify(job, error)

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

    def _wait(self) -> None:
        with contextlib.suppress(threading.BrokenBarrierError):
            self.barrier.wait(timeout=self._left())

    def _burst(self, client: Any, index: int) -> None:
        """The caps' burst (steps 1 to 4 of the module's docstring)."""
        self._wait()  # every user has finished its rounds
        if index == 0:
            self._start_blocker()
        self._wait()
        target = TARGETS[index % len(TARGETS)]
        # 1. Several edits at once from this session: one is accepted.
        handles = []
        for _ in range(self.settings.burst):
            job = self._new(Job(index, "edit", "burst", target))
            handles.append((job, client.submit(**self.edit_kwargs(target)), time.monotonic()))
        for _, handle, _ in handles:
            self._until_answered(handle)
        self._wait()
        # 2. A second session at this address: the household has its two edits waiting.
        second = self.client(user_address(index), f"{index}-second")
        try:
            job = self._new(Job(index, "edit", "second", target))
            handles.append((job, second.submit(**self.edit_kwargs(target)), time.monotonic()))
            self._until_answered(handles[-1][1])
            self._wait()
            # 3. Visitors from addresses of their own fill the queue.
            if index == 0:
                self._join_crowd()
            self._wait()
            # 4. Cancel what was accepted (refused jobs have their answer already).
            for _, handle, _ in handles:
                handle.cancel()
            for job, handle, start in handles:
                self._finish(job, handle, start)
            self._wait()
            if index == 0:
                self._cancel_crowd_and_blocker()
        finally:
            second.close()

    def _until_answered(self, handle: Any) -> None:
        """Wait until a submitted job is queued, running or refused."""
        from gradio_client.utils import Status

        unanswered = (Status.STARTING, Status.JOINING_QUEUE)
        while (
            not handle.done()
            and handle.status().code in unanswered
            and time.monotonic() < self.deadline
        ):
            time.sleep(0.02)

    def _start_blocker(self) -> None:
        """An edit at the maximum legal settings (at 256 pixels) from an address of its own,
        running before the burst: every accepted burst edit then waits in the queue."""
        from gradio_client.utils import Status

        client = self.client(BLOCKER_ADDRESS, "blocker")
        job = self._new(Job(-1, "edit", "blocker", TARGETS[0]))
        settings = {**max_settings(), "resolution": 256}
        handle = client.submit(**self.edit_kwargs(TARGETS[0], **settings))
        self.blocker = (client, job, handle, time.monotonic())
        running = (Status.PROCESSING, Status.ITERATING, Status.PROGRESS)
        while (
            not handle.done()
            and handle.status().code not in running
            and time.monotonic() < self.deadline
        ):
            time.sleep(0.05)

    def _join_crowd(self) -> None:
        for k in range(self.settings.crowd_size()):
            client = self.client(crowd_address(k), f"crowd-{k}")
            job = self._new(Job(100 + k, "edit", "crowd", TARGETS[0]))
            handle = client.submit(**self.edit_kwargs(TARGETS[0]))
            self.crowd.append((client, job, handle, time.monotonic()))
            self._until_answered(handle)

    def _cancel_crowd_and_blocker(self) -> None:
        last = [self.blocker] if self.blocker is not None else []
        for entries in (self.crowd, last):
            for _, _, handle, _ in entries:
                handle.cancel()
            for client, job, handle, start in entries:
                self._finish(job, handle, start)
                client.close()

    def _finish(self, job: Job, handle: Any, start: float) -> None:
        """Wait for the job's answer and classify it."""
        try:
            outputs = handle.result(timeout=self._left() + 30)
        except concurrent.futures.TimeoutError:
            job.outcome, job.message = "lost", f"no answer within {self.settings.time_limit} s"
            handle.cancel()
            return
        except Exception as error:  # noqa: BLE001 - every failure is a figure of the run
            if refusal(error) is None and handle.status().code.value == "CANCELLED":
                # gradio_client ends a cancelled job with a KeyError or CancelledError; its
                # status is what says "cancelled".
                job.outcome, job.message = "cancelled", "cancelled"
            else:
                _classify(job, error)
            return
        try:
            job.result = check_edit(outputs, self.photo, self.mask, job.target)
            job.outcome, job.seconds = "completed", time.monotonic() - start
        except ValueError as error:
            job.outcome, job.message = "wrong", str(error)


def refusal(error: BaseException) -> str | None:
    """The key of REFUSALS whose words the error says, or None."""
    text = str(error).lower()
    return next((reason for reason, words in REFUSALS.items() if words in text), None)


def _classify(job: Job, error: BaseException) -> None:
    reason = refusal(error)
    if reason is not None:
        job.outcome, job.reason, job.message = "refused", reason, str(error)
    else:
        job.outcome, job.message = "error", f"{type(error).__name__}: {error}"


def percentile(values: Sequence[float], q: float) -> float | None:
    return round(float(np.percentile(values, q)), 3) if values else None


def run_load(
    settings: Settings, workdir: Path | str, *, url: str | None = None, trace: bool = True
) -> dict[str, Any]:
    """Start ``app.py --tiny --behind-proxy`` (unless ``url`` is given: a server that trusts
    X-Forwarded-For), run the users, return the figures."""
    workdir = Path(workdir)
    server = None
    if url is None:
        server = AppServer(workdir / "server", trace=trace, behind_proxy=True).start()
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
    client = run.client("10.254.0.1", "warm-up")
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
    figures: dict[str, Any] = {
        "settings": {**dataclasses.asdict(run.settings), "crowd": run.settings.crowd_size()},
        "jobs": len(jobs),
        "edits": len(edits),
        "segments": len(segments),
        "plans": dict(Counter(job.plan for job in edits)),
        "completed": outcomes["completed"],
        "completed_edits": sum(job.outcome == "completed" for job in edits),
        "refused": outcomes["refused"],
        "refusals": {reason: sum(job.reason == reason for job in jobs) for reason in REFUSALS},
        "refusals_by_plan": {
            plan: dict(Counter(job.reason for job in edits if job.plan == plan and job.reason))
            for plan in ("burst", "second", "crowd")
        },
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
        "messages": sorted(
            {f"{j.outcome}: {' '.join(j.message.split())}" for j in jobs if j.message}
        )[:20],
    }
    if server is not None:
        figures["rss_mib"] = {
            "after_warm_up": round(rss[0] / MIB, 1),
            "peak": round(max(rss) / MIB, 1),
            "end": round(rss[-1] / MIB, 1),
        }
        figures["warm_up_edits"] = 1  # run by the harness before the users: in the server's counts
        figures["server"] = read_trace(server.trace_path)
        figures["server_failures"] = server.failures()[:20]
    return figures


# ----------------------------------------------------------------------------------------------
# Abuse mode


HONEST_ADDRESS = "10.9.9.9"
ABUSER_ADDRESS = "10.6.6.6"
SECOND_ABUSER_ADDRESS = "10.6.6.7"  # a fresh upload budget, for the floods' last request


@dataclasses.dataclass
class AbuseSettings:
    floods: tuple[str, ...] = ()  # names in FLOODS; empty: all
    steps: int = 10  # the honest visitor's edit (seconds on a CPU with the tiny model)
    iterations: int = 1
    time_limit: float | None = None  # app.py's --time-limit; None: the page's own (600 s)
    honest_timeout: float = 1200.0  # seconds the honest visitor waits for one edit
    # The honest visitor's first edit starts when the flood has been sent, or this many seconds
    # after it began (the longer floods then run while it edits).
    lead: float = 5.0


class Abuse:
    """One flood's context: the server, the abuser's script, the inputs."""

    def __init__(self, server: AppServer, workdir: Path):
        self.server = server
        self.workdir = workdir
        self.script = Script(server.url, ABUSER_ADDRESS)
        self.photo_path, self.mask_path = write_inputs(workdir / "inputs")

    def close(self) -> None:
        self.script.close()

    def photo_and_mask(self, script: Script | None = None) -> tuple[dict, dict]:
        script = script or self.script
        return (
            script.uploaded(self.photo_path.read_bytes(), "photo.png"),
            script.uploaded(self.mask_path.read_bytes(), "mask.png"),
        )

    def client(self, address: str = ABUSER_ADDRESS) -> Any:
        from gradio_client import Client

        return Client(
            self.server.url,
            verbose=False,
            headers=forwarded(address),
            download_files=str(self.workdir / "downloads"),
        )


def _in_parallel(count: int, work: Callable[[int], str], threads: int = 20) -> dict[str, int]:
    """``work(i)`` for i < count on ``threads`` threads; its answers counted."""
    with concurrent.futures.ThreadPoolExecutor(threads) as pool:
        return dict(Counter(pool.map(work, range(count))))


def _safely(work: Callable[[int], str]) -> Callable[[int], str]:
    def run(i: int) -> str:
        try:
            return work(i)
        except Exception as error:  # noqa: BLE001 - what the abuser was told is the figure
            return told_by_exception(error)

    return run


def flood_session(abuse: Abuse) -> dict[str, Any]:
    """(a) Twenty queue joins of /edit from one session at the maximum legal settings, all at
    once, never reading the results."""
    photo, mask = abuse.photo_and_mask()
    data = abuse.script.parameters(
        "edit", image=photo, source=SOURCE, target=TARGETS[0], mask_file=mask, **max_settings()
    )
    session = uuid.uuid4().hex
    answers = _in_parallel(20, _safely(lambda i: told(abuse.script.join("edit", data, session))))
    return {"told": answers}


def flood_session_16mp(abuse: Abuse) -> dict[str, Any]:
    """(a') The same with the largest photo and mask the page accepts (16 MP each); the one
    accepted edit is cancelled at once: the figure is what the refused joins cost."""
    photo_path = big_photo(abuse.workdir / "inputs" / "big.jpg")
    mask_path = big_mask(abuse.workdir / "inputs" / "big-mask.png")
    photo = abuse.script.uploaded(photo_path.read_bytes(), "big.jpg")
    mask = abuse.script.uploaded(mask_path.read_bytes(), "big-mask.png")
    data = abuse.script.parameters(
        "edit", image=photo, source=SOURCE, target=TARGETS[0], mask_file=mask, **max_settings()
    )
    session = uuid.uuid4().hex
    start = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(20) as pool:
        answers = list(pool.map(lambda _: abuse.script.join("edit", data, session), range(20)))
    seconds = time.monotonic() - start
    for answer in answers:
        if answer.status_code == 200:
            abuse.script.cancel("edit", session, answer.json()["event_id"])
    return {"told": dict(Counter(told(a) for a in answers)), "answered_in_s": round(seconds, 1)}


def flood_address(abuse: Abuse) -> dict[str, Any]:
    """(b) The same from 20 sessions of one address."""
    photo, mask = abuse.photo_and_mask()
    data = abuse.script.parameters(
        "edit", image=photo, source=SOURCE, target=TARGETS[0], mask_file=mask, **max_settings()
    )
    answers = _in_parallel(
        20, _safely(lambda i: told(abuse.script.join("edit", data, uuid.uuid4().hex)))
    )
    return {"told": answers}


def flood_blobs(abuse: Abuse) -> dict[str, Any]:
    """(c) 100 x 5 MB brush uploads through the editor's component server route (8 at a time),
    then a one-byte layer with index 50,000,000 (from a second address: the first one's upload
    budget is spent by then)."""
    editor = abuse.script.component_id("imageeditor", elem_id="magedit-brush")  # the page's brush
    five = os.urandom(5 * MIB)
    session = uuid.uuid4().hex

    def send(i: int) -> str:
        return told(abuse.script.blob(editor, session, f"blob-{i}", "layer", 0, five))

    answers = _in_parallel(100, _safely(send), threads=8)
    with Script(abuse.server.url, SECOND_ABUSER_ADDRESS) as second:
        far = told(second.blob(editor, session, "far", "layer", 50_000_000, b"\0"))
    return {"told": answers, "told_layer_50_000_000": far}


def flood_png_bomb(abuse: Abuse) -> dict[str, Any]:
    """(d) A 12 KB PNG claiming 100 megapixels as the brush layer of an /edit: through the
    editor's upload store (as the page's brush sends it), and as a file in the /edit API's
    ``editor`` parameter."""
    bomb = png_bomb()
    editor = abuse.script.component_id("imageeditor", label="editor")  # /edit's editor parameter
    photo, _ = abuse.photo_and_mask()
    common = {"image": photo, "source": SOURCE, "target": TARGETS[0], "mask_file": None}
    session = uuid.uuid4().hex
    server = abuse.server
    peaks = {}
    server.reset_peak()
    stored = told(abuse.script.blob(editor, session, "bomb", "layer", 0, bomb))
    painted = {"id": "bomb", "background": None, "layers": [], "composite": None}
    data = abuse.script.parameters("edit", editor=painted, **common)
    through_store = told(abuse.script.join("edit", data, session))
    peaks["stored layer"] = server.peak_bytes()
    layer = abuse.script.uploaded(bomb, "layer.png")
    painted = {"background": None, "layers": [layer], "composite": None}
    data = abuse.script.parameters("edit", editor=painted, **common)
    server.reset_peak()
    as_file = told(abuse.script.join("edit", data, uuid.uuid4().hex))
    peaks["layer as a file"] = server.peak_bytes()
    return {
        "bomb_bytes": len(bomb),
        "told": {
            "upload store (accept_blobs)": stored,
            "/edit with the stored layer": through_store,
            "/edit with the layer as a file": as_file,
        },
        "peak_mib": {k: round(v / MIB, 1) if v else None for k, v in peaks.items()},
    }


def flood_points(abuse: Abuse) -> dict[str, Any]:
    """(e) /segment with 12,000 points, then with 100,000."""
    from gradio_client import handle_file

    client = abuse.client()
    answers = {}
    try:
        for count in (12_000, 100_000):
            start = time.monotonic()
            try:
                client.predict(
                    image=handle_file(str(abuse.photo_path)),
                    points=[[10, 10]] * count,
                    labels=[1] * count,
                    api_name="/segment",
                )
                answer = "a mask"
            except Exception as error:  # noqa: BLE001 - what the abuser was told is the figure
                answer = told_by_exception(error)
            answers[f"{count} points"] = f"{answer} ({time.monotonic() - start:.1f} s)"
    finally:
        client.close()
    return {"told": answers}


def flood_segment_parallel(abuse: Abuse) -> dict[str, Any]:
    """(f) 30 /segment calls at once on a 16 MP photo."""
    return _segment_parallel(abuse, 30)


def flood_segment_queue(abuse: Abuse) -> dict[str, Any]:
    """(f'') 70 queue joins of /segment at once on a 16 MP photo, never reading the results (a
    gradio_client sends at most 40 at a time): more than Gradio's queue holds
    (``magedit.web.limits.GRADIO_QUEUE_SIZE``), which the edits share. Ends when the queue is
    empty."""
    photo_path = big_photo(abuse.workdir / "inputs" / "big.jpg")
    photo = abuse.script.uploaded(photo_path.read_bytes(), "big.jpg")
    data = abuse.script.parameters("segment", image=photo, points=[[2000, 2000]], labels=[1])

    def join(i: int) -> str:
        return told(abuse.script.join("segment", data, uuid.uuid4().hex))

    answers = _in_parallel(70, _safely(join), threads=70)
    deadline = time.monotonic() + 900
    while time.monotonic() < deadline:
        status = abuse.script.http.get(f"{abuse.script.url}/gradio_api/queue/status").json()
        if not status.get("queue_size"):
            break
        time.sleep(0.5)
    return {"told": answers}


def _segment_parallel(abuse: Abuse, count: int) -> dict[str, Any]:
    from gradio_client import handle_file

    photo = big_photo(abuse.workdir / "inputs" / "big.jpg")
    client = abuse.client()
    try:
        jobs = [
            client.submit(
                image=handle_file(str(photo)),
                points=[[2000, 2000]],
                labels=[1],
                api_name="/segment",
            )
            for _ in range(count)
        ]
        answers: Counter[str] = Counter()
        for job in jobs:
            try:
                job.result(timeout=900)
                answers["a mask"] += 1
            except Exception as error:  # noqa: BLE001 - what the abuser was told is the figure
                answers[told_by_exception(error)] += 1
    finally:
        client.close()
    return {"told": dict(answers)}


def flood_clicks(abuse: Abuse) -> dict[str, Any]:
    """(f') 30 page clicks at once on a 16 MP photo, as a script reaches the click event: the
    page's own events (upload, click) through POST /gradio_api/run/predict, one session."""
    photo = big_photo(abuse.workdir / "inputs" / "big.jpg")
    script = abuse.script
    session = uuid.uuid4().hex
    uploaded = script.uploaded(photo.read_bytes(), "big.jpg")
    loaded = told(script.call("on_upload", [uploaded], session))

    def click(i: int) -> str:
        event = {"index": [100 + i, 100 + i], "value": None}
        return told(script.call("on_click", [None, "object"], session, event))

    answers = _in_parallel(30, _safely(click), threads=30)
    return {"told_upload": loaded, "told": answers}


def flood_words(abuse: Abuse) -> dict[str, Any]:
    """(g) /edit with 10,000 copies of one edit word."""
    from gradio_client import handle_file

    client = abuse.client()
    start = time.monotonic()
    try:
        client.predict(
            image=handle_file(str(abuse.photo_path)),
            source=SOURCE,
            target=TARGETS[1],
            words=", ".join(["blue"] * 10_000),
            mask_file=handle_file(str(abuse.mask_path)),
            api_name="/edit",
        )
        answer = "an edit"
    except Exception as error:  # noqa: BLE001 - what the abuser was told is the figure
        answer = told_by_exception(error)
    finally:
        client.close()
    return {"told": {answer: 1}, "answered_in_s": round(time.monotonic() - start, 2)}


def flood_uploads(abuse: Abuse) -> dict[str, Any]:
    """(h) 60 uploads of 20 MB to /gradio_api/upload, 4 at a time; the bytes Gradio kept."""
    content = os.urandom(20 * MIB)
    before = _folder_bytes(abuse.server.cache_dir)
    start = time.monotonic()
    answers = _in_parallel(
        60, _safely(lambda i: told(abuse.script.upload(content, f"f{i}.bin"))[:60]), threads=4
    )
    seconds = time.monotonic() - start
    kept = _folder_bytes(abuse.server.cache_dir) - before
    return {
        "told": answers,
        "kept_mib": round(kept / MIB, 1),
        "kept_mib_per_s": round(kept / MIB / seconds, 1),
    }


def flood_json(abuse: Abuse) -> dict[str, Any]:
    """(extra) One /edit queue join whose JSON body is 50 MB (a 50 MB source prompt): no upload
    route, so no upload budget."""
    photo, mask = abuse.photo_and_mask()
    data = abuse.script.parameters(
        "edit", image=photo, source="a " * (25 * MIB), target=TARGETS[0], mask_file=mask
    )
    start = time.monotonic()
    answer = told(abuse.script.join("edit", data, uuid.uuid4().hex))
    return {"told": {answer[:160]: 1}, "answered_in_s": round(time.monotonic() - start, 1)}


def _folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


# name -> (the item, the flood)
FLOODS: dict[str, tuple[str, Callable[[Abuse], dict[str, Any]]]] = {
    "session_flood": ("a", flood_session),
    "session_flood_16mp": ("a'", flood_session_16mp),
    "address_flood": ("b", flood_address),
    "brush_blobs": ("c", flood_blobs),
    "png_bomb": ("d", flood_png_bomb),
    "segment_points": ("e", flood_points),
    "segment_parallel": ("f", flood_segment_parallel),
    "segment_queue": ("f''", flood_segment_queue),
    "page_clicks": ("f'", flood_clicks),
    "edit_words": ("g", flood_words),
    "upload_flood": ("h", flood_uploads),
    "json_body": ("extra", flood_json),
}


class Honest:
    """The honest visitor: gradio_client from an address of its own, small edits."""

    def __init__(self, server: AppServer, workdir: Path, settings: AbuseSettings):
        from gradio_client import Client, handle_file

        self.settings = settings
        self.photo, self.mask = scene()
        photo_path, mask_path = write_inputs(workdir / "honest")
        self.files = {
            "image": handle_file(str(photo_path)),
            "mask_file": handle_file(str(mask_path)),
        }
        self.client = Client(
            server.url,
            verbose=False,
            headers=forwarded(HONEST_ADDRESS),
            download_files=str(workdir / "honest-downloads"),
        )

    def edit(self) -> dict[str, Any]:
        """One edit: {"outcome": completed | refused | error | lost, "seconds", "message"}."""
        start = time.monotonic()
        job = self.client.submit(
            **self.files,
            source=SOURCE,
            target=TARGETS[0],
            steps=self.settings.steps,
            iterations=self.settings.iterations,
            api_name="/edit",
        )
        attempt: dict[str, Any] = {"outcome": "completed", "message": ""}
        try:
            check_edit(
                job.result(timeout=self.settings.honest_timeout),
                self.photo,
                self.mask,
                TARGETS[0],
            )
        except concurrent.futures.TimeoutError:
            job.cancel()
            attempt = {
                "outcome": "lost",
                "message": f"no answer in {self.settings.honest_timeout} s",
            }
        except Exception as error:  # noqa: BLE001 - every failure is a figure of the run
            outcome = "refused" if refusal(error) else "error"
            attempt = {"outcome": outcome, "message": told_by_exception(error)}
        attempt["seconds"] = round(time.monotonic() - start, 2)
        return attempt

    def close(self) -> None:
        self.client.close()


def run_flood(name: str, settings: AbuseSettings, workdir: Path | str) -> dict[str, Any]:
    """One flood against a fresh server while the honest visitor edits: the figures."""
    item, flood = FLOODS[name]
    workdir = Path(workdir) / name
    args = [] if settings.time_limit is None else ["--time-limit", f"{settings.time_limit:g}"]
    server = AppServer(workdir / "server", behind_proxy=True, args=args).start()
    honest = abuse = None
    try:
        honest = Honest(server, workdir, settings)
        honest.edit()  # warm-up: the first edit loads and allocates what every later one reuses
        baseline = honest.edit()
        abuse = Abuse(server, workdir)
        time.sleep(1.0)  # let the baseline's memory settle
        before = server.rss_bytes()
        peak_known = server.reset_peak()
        result: dict[str, Any] = {}
        finished = threading.Event()

        def attack() -> None:
            try:
                result.update(flood(abuse))
            except Exception as error:  # noqa: BLE001 - a broken flood is a figure too
                result["flood_error"] = told_by_exception(error)
            finally:
                finished.set()

        attempts = []
        with MemorySampler(server) as sampler:
            started = time.monotonic()
            attacker = threading.Thread(target=attack, daemon=True)
            attacker.start()
            finished.wait(settings.lead)
            # The honest visitor edits until one edit completes after the flood is over (a
            # refused one retries a second later), or for honest_timeout in all.
            while time.monotonic() - started < settings.honest_timeout:
                attempt = honest.edit()
                attempt["flood_over"] = finished.is_set()
                attempts.append(attempt)
                if attempt["outcome"] == "completed" and finished.is_set():
                    break
                if attempt["outcome"] == "lost":
                    break
                if attempt["outcome"] != "completed":
                    time.sleep(1.0)
            finished.wait(timeout=max(1.0, settings.honest_timeout - (time.monotonic() - started)))
            wall = time.monotonic() - started
        time.sleep(2.0)
        after = server.rss_bytes()
        peak = server.peak_bytes() if peak_known else None
        log = server.log()
        return {
            "issue_item": item,
            "what": " ".join((flood.__doc__ or "").split()),
            **result,
            "honest": {"baseline": baseline, "during": attempts},
            "rss_mib": {
                "before": round(before / MIB, 1),
                "peak": round(peak / MIB, 1) if peak is not None else None,
                "peak_sampled": round(max(sampler.samples, default=before) / MIB, 1),
                "after": round(after / MIB, 1),
            },
            "server_log": {key: log.count(marker) for key, marker in LOG_MARKERS.items()},
            "server_failures": server.failures()[:10],
            "wall_s": round(wall, 1),
        }
    finally:
        for closable in (abuse, honest):
            if closable is not None:
                with contextlib.suppress(Exception):
                    closable.close()
        server.stop()


def machine() -> dict[str, Any]:
    """The machine the figures were measured on."""
    import gradio

    model = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    memory = None
    with contextlib.suppress(OSError, ValueError, IndexError):
        first = Path("/proc/meminfo").read_text().splitlines()[0]  # MemTotal: N kB
        memory = round(int(first.split()[1]) / 2**20, 1)
    return {
        "cpu": model,
        "cores": os.cpu_count(),
        "memory_gib": memory,
        "python": platform.python_version(),
        "gradio": gradio.__version__,
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
    }


def run_abuse(settings: AbuseSettings, workdir: Path | str) -> dict[str, Any]:
    """Every flood of ``settings.floods`` (all when empty), one fresh server each."""
    names = settings.floods or tuple(FLOODS)
    unknown = [name for name in names if name not in FLOODS]
    if unknown:
        raise ValueError(f"no flood named {unknown}; choose from {', '.join(FLOODS)}")
    figures: dict[str, Any] = {"machine": machine(), "settings": dataclasses.asdict(settings)}
    figures["floods"] = {}
    for name in names:
        figures["floods"][name] = run_flood(name, settings, workdir)
        print(f"load.py: {name} done", file=sys.stderr, flush=True)
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
        help="edits per user submitted at once in the caps' burst (0: no burst)",
    )
    parser.add_argument(
        "--crowd", type=int, help="visitors who fill the queue (default: enough to overflow it)"
    )
    parser.add_argument("--steps", type=int, default=defaults.steps)
    parser.add_argument("--iterations", type=int, default=defaults.iterations)
    parser.add_argument(
        "--time-limit", type=float, default=defaults.time_limit, help="seconds for the whole run"
    )
    parser.add_argument("--url", help="a running server (with --behind-proxy) instead of app.py")
    parser.add_argument("--no-trace", action="store_true", help="plain python app.py (no tracer)")
    parser.add_argument(
        "--abuse", action="store_true", help="run the floods instead (see the module's docstring)"
    )
    parser.add_argument(
        "--floods", default="", help=f"with --abuse, a comma-separated subset of {list(FLOODS)}"
    )
    parser.add_argument(
        "--job-time-limit",
        type=float,
        help="with --abuse, app.py's --time-limit per edit (default: the page's own)",
    )
    args = parser.parse_args(argv)
    if args.abuse:
        settings = AbuseSettings(
            floods=tuple(name for name in args.floods.split(",") if name),
            steps=args.steps,
            iterations=args.iterations,
            time_limit=args.job_time_limit,
        )
        with tempfile.TemporaryDirectory(prefix="magedit-abuse-") as workdir:
            try:
                figures = run_abuse(settings, workdir)
            except ValueError as error:
                parser.error(str(error))
        print(json.dumps(figures, indent=1))
        return 0
    for name in ("users", "rounds", "cancel_every", "steps"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} is {getattr(args, name)}; give 1 or more")
    settings = Settings(
        users=args.users,
        rounds=args.rounds,
        cancel_every=args.cancel_every,
        burst=args.burst,
        crowd=args.crowd,
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
