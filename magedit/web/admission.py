"""Fair use of the one GPU: who may join the edit queue, and the edits checked on the way in.

An edit is checked (``MagEditPipeline.prepare``) by the event's validator, before it joins the
queue, so a visitor hears about a bad input at once rather than after waiting; the validator
keeps the prepared edit here and the job takes it when its turn comes: each input is checked
once. The validator also refuses a session that already has an edit running or waiting, and an
address that has ``EDITS_PER_ADDRESS`` (sessions are cheap to make). A job whose client stopped
reading the queue's messages is dropped before it starts.

Gradio offers no hook for these counts, so they are read from its queue (``Blocks._queue``,
read-only), which ``tests/test_web_server.py`` checks against the pinned Gradio version.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from typing import TYPE_CHECKING, Any

from magedit.web.limits import (
    EDITS_PER_ADDRESS,
    QUEUE_SIZE,
    SEGMENTS_PER_ADDRESS,
    UNREAD_MESSAGES,
)

if TYPE_CHECKING:
    from magedit.pipeline import PreparedEdit

GPU = "gpu"  # the edit events' concurrency id
SEGMENT = "segment"  # the /segment API's
# A validated edit joins the queue a moment after its validator admits it; until it is seen
# there, the admission itself counts for this long.
RESERVE_SECONDS = 10.0
# A /segment place not given back (the call never ran: its client left) is free after this.
SEGMENT_HOLD = 60.0


def address(request: Any, trust_forwarded: bool) -> str:
    """The visitor's network address. Behind a proxy that sets X-Forwarded-For (a Hugging Face
    Space), its first entry; otherwise the connection's (a forged header is ignored)."""
    if request is None:
        return "unknown"
    if trust_forwarded:
        forwarded = (request.headers or {}).get("x-forwarded-for", "")
        first = forwarded.split(",")[0].strip()
        if first:
            return first
    client = getattr(request, "client", None)
    return getattr(client, "host", None) or "unknown"


class Admission:
    """The edit queue's door. ``blocks`` is the page (its ``_queue`` is read once launched)."""

    def __init__(self, blocks: Any = None, *, trust_forwarded: bool = False):
        self.blocks = blocks
        self.trust_forwarded = trust_forwarded
        self._lock = threading.Lock()
        self._reserved: dict[str, tuple[str, float]] = {}  # session -> (address, when)
        self._prepared: OrderedDict[str, PreparedEdit] = OrderedDict()
        self._segments: dict[str, list[float]] = {}  # address -> when each place was taken

    # -------------------------------------------------------------------- the queue's events
    def _events(self, kind: str = GPU) -> list[Any]:
        """The events of concurrency id ``kind`` queued or running now (a cancelled one no
        longer counts)."""
        queue = getattr(self.blocks, "_queue", None)
        if queue is None:
            return []
        waiting = getattr(queue.event_queue_per_concurrency_id.get(kind), "queue", [])
        running = [e for job in queue.active_jobs if job for e in job if e.concurrency_id == kind]
        return [e for e in (*waiting, *running) if getattr(e, "alive", True)]

    def _holders(self) -> dict[str, str]:
        """session -> address of every edit queued, running or just admitted."""
        holders = {
            event.session_hash: address(event.request, self.trust_forwarded)
            for event in self._events()
        }
        now = time.monotonic()
        for session, (where, when) in list(self._reserved.items()):
            if now - when > RESERVE_SECONDS:
                del self._reserved[session]
            else:
                holders.setdefault(session, where)
        return holders

    def admit(self, request: Any) -> str | None:
        """Reserve a place for this request's edit, or say why not (a message for the page)."""
        session = getattr(request, "session_hash", None) or "unknown"
        where = address(request, self.trust_forwarded)
        with self._lock:
            holders = self._holders()
            if len(holders) > QUEUE_SIZE:
                return (
                    f"the page is busy: {len(holders) - 1} edits are waiting for the GPU; try "
                    "again in a few minutes"
                )
            if session in holders:
                return (
                    "you already have an edit running or waiting; wait for it to finish or "
                    "press Cancel, then edit again"
                )
            if sum(1 for a in holders.values() if a == where) >= EDITS_PER_ADDRESS:
                return (
                    f"{EDITS_PER_ADDRESS} edits from your network are already running or "
                    "waiting; try again when one has finished"
                )
            self._reserved[session] = (where, time.monotonic())
        return None

    def admit_segment(self, request: Any) -> str | None:
        """Take one of this address's /segment places, or say why not: a call takes a second,
        and one address holding the queue would make everyone's edits "Queue is full". A place
        is given back when the call ends (``segment_done``), or after SEGMENT_HOLD seconds if
        the call never ran."""
        where = address(request, self.trust_forwarded)
        now = time.monotonic()
        with self._lock:
            held = [t for t in self._segments.get(where, []) if now - t < SEGMENT_HOLD]
            if len(held) >= SEGMENTS_PER_ADDRESS:
                self._segments[where] = held
                return (
                    f"{len(held)} segment calls from your network are already queued or "
                    "running; send the next when one has answered"
                )
            self._segments[where] = [*held, now]
        return None

    def segment_done(self, request: Any) -> None:
        """A /segment call of this request's address ended: its place is free."""
        where = address(request, self.trust_forwarded)
        with self._lock:
            held = self._segments.get(where)
            if held:
                held.pop(0)
            if not held:
                self._segments.pop(where, None)

    def release(self, request: Any) -> None:
        """The job started (or ended): its reservation is no longer needed."""
        with self._lock:
            self._reserved.pop(getattr(request, "session_hash", None) or "unknown", None)

    # ---------------------------------------------------------------- prepared edits in transit
    def keep(self, request: Any, prepared: PreparedEdit) -> None:
        """The validator's prepared edit, for the job of this session. At most the queue's
        size plus the running ones are kept (the oldest dropped: its job prepares again)."""
        session = getattr(request, "session_hash", None) or "unknown"
        with self._lock:
            self._prepared[session] = prepared
            self._prepared.move_to_end(session)
            # The job takes it a moment later (edits start at once and wait in the page's own
            # line); what is left here belongs to a join that failed after its validation.
            while len(self._prepared) > 2 * EDITS_PER_ADDRESS:
                self._prepared.popitem(last=False)

    def take(self, request: Any) -> PreparedEdit | None:
        """This session's prepared edit, once (None when the validator's was dropped)."""
        with self._lock:
            return self._prepared.pop(getattr(request, "session_hash", None) or "unknown", None)

    # ----------------------------------------------------------------------------- listening
    def listening(self, request: Any) -> bool:
        """Whether this session's client reads the queue's messages: a browser or gradio_client
        takes each as it comes; one that joined and never listened leaves them piling up."""
        queue = getattr(self.blocks, "_queue", None)
        session = getattr(request, "session_hash", None)
        if queue is None or session is None:
            return True
        messages = queue.pending_messages_per_session.get(session)
        return messages is None or messages.qsize() < UNREAD_MESSAGES
