"""One page edit checks each input once (issue: each prompt was checked up to four times), and
the edit queue's door: one edit per session, two per address, a job whose client stopped
listening is dropped before it starts."""

import collections
import types

import numpy as np
import pytest
from PIL import Image

from magedit import images, prompts
from magedit.web import admission as admission_module
from magedit.web import build_demo, job, masks
from magedit.web.admission import Admission, address

SOURCE = "a photo of a red sofa in a living room"
TARGET = "a photo of a green sofa in a living room"
H, W = 192, 256
BOX = (slice(48, 144), slice(64, 192))


def photo() -> np.ndarray:
    y, x = np.mgrid[0:H, 0:W]
    image = np.stack([x * 255 / W, y * 255 / H, 128 + 0 * x], -1).round().astype(np.uint8)
    image[BOX] = (150, 30, 30)
    return image


def request(session: str = "s1", host: str = "10.0.0.1", forwarded: str = ""):
    headers = {"x-forwarded-for": forwarded} if forwarded else {}
    return types.SimpleNamespace(
        session_hash=session, headers=headers, client=types.SimpleNamespace(host=host)
    )


@pytest.fixture
def demo(tiny_pipe, tmp_path):
    return build_demo(lambda: tiny_pipe, tiny=True, output_dir=tmp_path / "out")


def page_function(demo, name: str):
    return next(f for f in demo.fns.values() if getattr(f.fn, "__name__", "") == name)


def page_values(tmp_path, negative: str = "red") -> list:
    path = tmp_path / "photo.png"
    Image.fromarray(photo()).save(path)
    state, _ = masks.new_photo(str(path))
    mask = np.zeros((H, W), bool)
    mask[BOX] = True
    state = masks.with_base(state, mask, "clicks")
    return [
        str(path), SOURCE, TARGET, "green", negative, "color", 2, 2.5, 6, 7.5, "direct", 256,
        "", 1.0, False, state, frozenset(), [],
    ]  # fmt: skip


def test_one_page_edit_checks_each_input_once(demo, tmp_path, monkeypatch):
    calls = collections.Counter()

    def spy(module, name):
        real = getattr(module, name)

        def counted(*args, **kwargs):
            calls[name] += 1
            return real(*args, **kwargs)

        monkeypatch.setattr(module, name, counted)

    for module, name in [
        (prompts, "check_prompt"),
        (prompts, "edit_word_positions"),
        (prompts, "require_word"),
        (images, "load_image"),
        (images, "load_mask"),
    ]:
        spy(module, name)
    edit = page_function(demo, "edit_on_page")
    values = page_values(tmp_path)
    calls.clear()
    who = request()
    checks = edit.validator(*values, who)
    assert all(check["is_valid"] for check in checks), checks
    checked = dict(calls)
    updates = list(edit.fn(*values, who))
    assert any("Done" in str(update[0]) for update in updates)
    # The source and target prompts once each (the negative word is read under the source,
    # checked already), the photo once, the mask once, the edit word and the negative word
    # once each; the job itself checks nothing again.
    assert checked == {
        "check_prompt": 2,
        "edit_word_positions": 1,
        "require_word": 2,
        "load_image": 1,
        "load_mask": 1,
    }
    assert dict(calls) == checked


def test_a_bad_word_is_refused_by_the_validator_next_to_its_control(demo, tmp_path):
    edit = page_function(demo, "edit_on_page")
    values = page_values(tmp_path)
    values[3] = "purple"
    checks = edit.validator(*values, request())
    bad = [(i, c["message"]) for i, c in enumerate(checks) if not c["is_valid"]]
    # Next to the Edit words box, without quoting the prompt the visitor sees just above it.
    assert bad == [
        (3, "edit word 'purple' is not in the target prompt; type a word that appears in it")
    ]
    values[3], values[4] = "green", "blue"
    checks = edit.validator(*values, request("s2"))
    bad = [(i, c["message"]) for i, c in enumerate(checks) if not c["is_valid"]]
    assert len(bad) == 1 and bad[0][0] == 4
    assert bad[0][1].startswith("negative word 'blue' is not in the source prompt")


class FakeQueue:
    """The parts of Gradio's queue that Admission reads."""

    def __init__(self):
        self.waiting = []
        self.event_queue_per_concurrency_id = {"gpu": types.SimpleNamespace(queue=self.waiting)}
        self.active_jobs = [None]
        self.pending_messages_per_session = {}

    def join(self, who):
        self.waiting.append(
            types.SimpleNamespace(session_hash=who.session_hash, request=who, concurrency_id="gpu")
        )


def test_one_edit_per_session_and_two_per_address():
    queue = FakeQueue()
    door = Admission(types.SimpleNamespace(_queue=queue))
    first = request("a", "1.2.3.4")
    assert door.admit(first) is None
    queue.join(first)
    assert "already have an edit" in door.admit(first)  # the same session again
    second = request("b", "1.2.3.4")
    assert door.admit(second) is None
    queue.join(second)
    assert "2 edits from your network" in door.admit(request("c", "1.2.3.4"))
    assert door.admit(request("d", "5.6.7.8")) is None  # another address
    # A job that started and ended frees its place.
    queue.waiting.clear()
    door.release(first)
    door.release(second)
    door.release(request("d", "5.6.7.8"))
    assert door.admit(first) is None


def test_an_admission_counts_until_its_job_is_seen_in_the_queue(monkeypatch):
    clock = [100.0]
    monkeypatch.setattr(admission_module.time, "monotonic", lambda: clock[0])
    door = Admission(types.SimpleNamespace(_queue=FakeQueue()))
    assert door.admit(request("a")) is None
    assert door.admit(request("a")) is not None  # two quick presses of Edit
    clock[0] += admission_module.RESERVE_SECONDS + 1  # its job never joined (the tab closed)
    assert door.admit(request("a")) is None


def test_the_address_is_the_connections_unless_behind_a_trusted_proxy():
    forged = request(host="9.9.9.9", forwarded="1.1.1.1, 2.2.2.2")
    assert address(forged, trust_forwarded=False) == "9.9.9.9"
    assert address(forged, trust_forwarded=True) == "1.1.1.1"
    assert address(request(host="9.9.9.9"), trust_forwarded=True) == "9.9.9.9"


def test_a_client_that_never_reads_its_messages_is_not_listening():
    queue = FakeQueue()
    door = Admission(types.SimpleNamespace(_queue=queue))
    who = request("a")
    assert door.listening(who)
    messages = __import__("queue").Queue()
    queue.pending_messages_per_session["a"] = messages
    for _ in range(admission_module.UNREAD_MESSAGES - 1):
        messages.put("estimation")
    assert door.listening(who)
    messages.put("estimation")
    assert not door.listening(who)


def test_prepared_edits_in_transit_are_bounded():
    door = Admission()
    for number in range(100):
        door.keep(request(f"s{number}"), number)
    assert len(door._prepared) == 2 * admission_module.EDITS_PER_ADDRESS
    assert door.take(request("s99")) == 99 and door.take(request("s99")) is None
    assert door.take(request("s0")) is None  # the oldest were dropped


def test_edits_wait_in_line_and_are_told_their_place():
    from magedit.web.job import Line

    line = Line()
    services = types.SimpleNamespace(line=line, admission=Admission())
    with line.ticket() as first:
        assert line.take(first, 0) and line.ahead(first) == 0
        with line.ticket() as second, line.ticket() as third:
            assert (line.ahead(second), line.ahead(third)) == (1, 2)
            assert not line.take(third, 0)  # not its turn: the second is ahead
            waiting = job.wait_turn(services, second, request("b"), seconds=0)
            assert "1 edit ahead of yours" in next(waiting)["status"].text
            waiting.close()  # Cancel while waiting: the second is still in line until it leaves
        # The second and third left (their blocks ended): a newcomer is next after the first.
        with line.ticket() as fourth:
            assert line.ahead(fourth) == 1 and not line.take(fourth, 0)
    with line.ticket() as fifth:
        assert line.take(fifth, 0)  # the first finished: the GPU is free


def test_a_waiting_edit_whose_client_stopped_reading_leaves_the_line():
    from magedit.web.job import Line

    queue = FakeQueue()
    door = Admission(types.SimpleNamespace(_queue=queue))
    line = Line()
    services = types.SimpleNamespace(line=line, admission=door)
    messages = __import__("queue").Queue()
    queue.pending_messages_per_session["b"] = messages
    with line.ticket() as first:
        assert line.take(first, 0)
        with line.ticket() as second:
            waiting = job.wait_turn(services, second, request("b"), seconds=0)
            assert "ahead" in next(waiting)["status"].text
            for _ in range(admission_module.UNREAD_MESSAGES):
                messages.put("unread")
            with pytest.raises(job.StoppedListening):
                next(waiting)


def test_the_line_is_full_at_its_size():
    queue = FakeQueue()
    door = Admission(types.SimpleNamespace(_queue=queue))
    for number in range(admission_module.QUEUE_SIZE + 1):
        who = request(f"s{number}", f"10.0.{number}.1")
        assert door.admit(who) is None
        queue.join(who)
    refused = door.admit(request("late", "10.9.9.9"))
    assert refused.startswith(f"the page is busy: {admission_module.QUEUE_SIZE} edits are waiting")


def test_a_cancelled_edit_no_longer_holds_its_sessions_place():
    queue = FakeQueue()
    door = Admission(types.SimpleNamespace(_queue=queue))
    who = request("a")
    assert door.admit(who) is None
    queue.join(who)
    door.release(who)
    assert door.admit(who) is not None
    queue.waiting[0].alive = False  # Gradio marks a cancelled event so
    assert door.admit(who) is None


def test_an_address_has_four_segment_places_given_back_when_a_call_ends(monkeypatch):
    clock = [0.0]
    monkeypatch.setattr(admission_module.time, "monotonic", lambda: clock[0])
    door = Admission()
    calls = [request(f"s{n}", "3.3.3.3") for n in range(5)]
    assert [door.admit_segment(c) for c in calls[:4]] == [None] * 4
    assert door.admit_segment(calls[4]).startswith("4 segment calls from your network")
    assert door.admit_segment(request("x", "4.4.4.4")) is None  # another address
    door.segment_done(calls[0])
    assert door.admit_segment(calls[4]) is None
    clock[0] += admission_module.SEGMENT_HOLD + 1  # calls that never ran free their places
    assert [door.admit_segment(c) for c in calls[:4]] == [None] * 4
