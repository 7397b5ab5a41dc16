"""Progress-generator helpers: results come back, conversion applies, cancelling propagates."""
from __future__ import annotations

from clipseg.generators import drain, relay


def _job(log: list[str]):
    try:
        yield from range(3)
        return "done"
    finally:
        log.append("closed")


def test_drain_returns_the_value_and_reports_each_step():
    seen: list[int] = []
    assert drain(_job([]), seen.append) == "done"
    assert seen == [0, 1, 2]


def test_relay_converts_steps_and_passes_the_return_value_through():
    def outer():
        value = yield from relay(_job([]), lambda i: f"step {i}")
        return value.upper()

    seen: list[str] = []
    assert drain(outer(), seen.append) == "DONE"
    assert seen == ["step 0", "step 1", "step 2"]


def test_closing_the_relay_closes_the_job_it_wraps():
    log: list[str] = []
    gen = relay(_job(log), str)
    assert next(gen) == "0"
    gen.close()  # a caller that cancels
    assert log == ["closed"]
