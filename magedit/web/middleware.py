"""Guards in front of the whole page (ASGI middleware, given to Gradio's FastAPI app through
``launch(app_kwargs={"middleware": ...})``):

- every response says ``X-Content-Type-Options: nosniff``, so an uploaded HTML file renamed
  .png is never run as a page by a browser that sniffs content;
- uploads (files, and the brush's layers) are limited per network address: at most
  ``UPLOAD_BYTES`` in any ``UPLOAD_WINDOW`` seconds; beyond, a 429 answer says to wait;
- any other request body is at most ``MAX_BODY_BYTES`` (a queue join carries file references,
  not files), so a 50 MB JSON body is refused unread (413);
- the page's direct calls (clicks, uploads, checks: ``/run/``) run at most
  ``DIRECT_PER_ADDRESS`` at once per address, so a script cannot tie up the server's threads.
"""

from __future__ import annotations

import collections
import json
import threading
import time
from typing import Any

from magedit.web.admission import address
from magedit.web.limits import DIRECT_PER_ADDRESS, MAX_BODY_BYTES, UPLOAD_BYTES, UPLOAD_WINDOW
from magedit.web.services import log

# Requests whose body is an upload: Gradio's file upload and its component server (the brush).
UPLOAD_PATHS = ("/upload", "/component_server")
DIRECT_PATH = "/run/"  # the events outside the queue (clicks, uploads, checks)


class UploadBudget:
    """Bytes uploaded per address in a sliding window. Thread-safe."""

    def __init__(self, limit: int = UPLOAD_BYTES, window: float = UPLOAD_WINDOW, clock=None):
        self.limit, self.window = limit, window
        self.clock = clock or time.monotonic
        self._sent: dict[str, collections.deque] = {}
        self._lock = threading.Lock()

    def take(self, who: str, size: int) -> bool:
        """Count ``size`` bytes for ``who`` if the window allows them; False if not."""
        now = self.clock()
        with self._lock:
            sent = self._sent.setdefault(who, collections.deque())
            while sent and now - sent[0][0] > self.window:
                sent.popleft()
            if sum(n for _, n in sent) + size > self.limit:
                return False
            sent.append((now, size))
            if len(self._sent) > 10_000:  # forget idle addresses
                for key in [k for k, v in self._sent.items() if not v]:
                    del self._sent[key]
            return True


class Guard:
    """The ASGI middleware: nosniff on every response, the upload budget on uploads."""

    def __init__(self, app: Any, budget: UploadBudget | None = None, trust_forwarded=False):
        self.app = app
        self.budget = budget or UploadBudget()
        self.trust_forwarded = trust_forwarded
        self._direct: collections.Counter[str] = collections.Counter()  # in flight per address
        self._lock = threading.Lock()

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope["path"]
        direct = None
        if scope["method"] == "POST":
            headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
            size = int(headers.get("content-length") or 0)
            who = address(_Request(scope, headers), self.trust_forwarded)
            if path.rstrip("/").endswith(UPLOAD_PATHS):
                if not size:
                    await _refuse(send, 411, "send the upload with a Content-Length")
                    return
                if not self.budget.take(who, size):
                    mb = self.budget.limit / 2**20
                    await _refuse(
                        send,
                        429,
                        f"too many uploads from your network (at most {mb:g} MB per "
                        f"{self.budget.window:g} s); wait a minute and try again",
                    )
                    return
            elif size > MAX_BODY_BYTES:
                await _refuse(
                    send, 413, f"the request is {size} bytes; at most {MAX_BODY_BYTES} are read"
                )
                return
            if DIRECT_PATH in path:
                with self._lock:
                    if self._direct[who] >= DIRECT_PER_ADDRESS:
                        direct = "refused"
                    else:
                        self._direct[who] += 1
                        direct = who
                if direct == "refused":
                    await _refuse(
                        send, 429, "too many requests at once from your network; try again"
                    )
                    return

        async def nosniff(message: dict) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                headers.append((b"x-content-type-options", b"nosniff"))
                message = {**message, "headers": headers}
            await send(message)

        try:
            await self.app(scope, receive, nosniff)
        finally:
            if direct is not None:
                with self._lock:
                    self._direct[direct] -= 1
                    if not self._direct[direct]:
                        del self._direct[direct]


class _Request:
    """What ``admission.address`` reads of a request, from an ASGI scope."""

    def __init__(self, scope: dict, headers: dict[str, str]):
        self.headers = headers
        client = scope.get("client") or (None, None)
        self.client = type("Client", (), {"host": client[0]})()


async def _refuse(send: Any, status: int, message: str) -> None:
    log(f"HTTP {status}: {message}")
    body = json.dumps({"detail": message}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"x-content-type-options", b"nosniff"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
