"""A small bounded run of the load test (benchmarks/load.py) against ``app.py --tiny``: 8 users,
one segment and one edit each (three of them cancel theirs), then a burst of 24 edits submitted
at once into a queue of 16."""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/ lives at the repo root

from benchmarks.load import Settings, run_load  # noqa: E402


@pytest.fixture(scope="module")
def figures(tmp_path_factory):
    settings = Settings(
        users=8, rounds=1, cancel_every=3, burst=3, steps=10, iterations=1, time_limit=240
    )
    figures = run_load(settings, tmp_path_factory.mktemp("load"))
    print(figures)
    return figures


def test_every_job_is_answered_correctly_or_refused_or_cancelled(figures):
    assert figures["errors"] == 0, figures["messages"]
    assert figures["wrong"] == 0, figures["messages"]
    assert figures["lost"] == 0, figures["messages"]
    assert figures["jobs"] == figures["completed"] + figures["refused"] + figures["cancelled"]
    assert figures["segments"] == 8 and figures["edits"] == 8 + 8 * 3
    # Every user's segment, and the edits of the five users who did not cancel.
    assert figures["completed"] >= 8 + 5
    assert figures["cancelled"] >= 3
    # 24 edits at once into a queue of 16 (app.QUEUE_SIZE): some are refused, politely.
    assert figures["refused"] >= 1
    for message in figures["messages"]:
        assert message in ("cancelled: cancelled", "refused: Queue is full! Please try again.")
    # Same photo, mask and prompts: the same bytes, whichever session asked.
    assert set(figures["distinct_results_per_target"].values()) <= {0, 1}


def test_the_server_runs_one_edit_at_a_time_and_loses_none(figures):
    server = figures["server"]
    assert server["pipeline"]["max_running"] == 1
    assert server["pipeline"]["starts"] == server["pipeline"]["ends"]
    edit = server["edit"]
    # Every handler the queue started ended or was closed, except ones Gradio abandoned when
    # their client cancelled (seen: 1 of 12, suspended before its worker took the pipeline, and
    # still open 90 s later). They hold no pipeline work: the pipeline's calls all ended above.
    assert edit["ends"] <= edit["starts"] <= edit["ends"] + figures["cancelled"]
    # The server finished every edit the clients received (and the harness's warm-up). One more
    # is possible: a burst edit that finished just as its client cancelled it.
    surplus = (
        edit["outcomes"].get("done", 0) - figures["completed_edits"] - figures["warm_up_edits"]
    )
    assert 0 <= surplus <= 1
    assert figures["server_failures"] == []


def test_server_memory_stays_flat(figures):
    rss = figures["rss_mib"]
    assert rss["end"] <= 1.25 * rss["after_warm_up"], rss
    assert rss["peak"] <= 1.25 * rss["after_warm_up"], rss
