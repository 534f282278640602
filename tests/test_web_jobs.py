"""The console's job board: elapsed time stops with the run, each step's rate counts from its start."""

from __future__ import annotations

import time
from typing import Any

from engine.web.jobs import Job, JobBoard


def _finish(board: JobBoard, tenant: str) -> Job:
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        job = board.current(tenant)
        if job is not None and job.finished:
            return job
        time.sleep(0.01)
    raise AssertionError("job did not finish")


class _Outcome:
    outcome, run_id, error = "ok", 1, None


def test_elapsed_stops_when_the_run_ends() -> None:
    board = JobBoard()

    def work(job: Job) -> Any:
        time.sleep(0.05)
        return _Outcome()

    board.start("t", "manual", "test", work)
    job = _finish(board, "t")
    first = job.snapshot()["elapsed"]
    time.sleep(0.3)
    assert job.snapshot()["elapsed"] == first < 0.3


def test_an_extract_reported_once_at_its_end_has_a_rate() -> None:
    board = JobBoard()

    def work(job: Job) -> Any:
        time.sleep(0.05)  # fetching the page: the engine reports the count only afterwards
        job.progress("extract", "properties", 10, 10)
        time.sleep(0.05)
        job.progress("extract", "units", 20, 20)
        return _Outcome()

    board.start("t", "manual", "test", work)
    steps = _finish(board, "t").snapshot()["steps"]
    assert [s["kind"] for s in steps] == ["properties", "units"]
    for step in steps:
        assert 0 < step["rate"] < 1000, step  # ~200/s and ~400/s, never 0,0/s
