import datetime as dt

import pytest

from clipseg.errors import InvalidInputError
from clipseg.formats.io import make_sidecar
from clipseg.formats.review import review_state, with_review_state


def test_a_sidecar_without_a_review_entry_is_a_draft():
    assert review_state(make_sidecar(["a", "b"])) == "draft"


def test_states_round_trip_with_their_time_and_leave_the_input_alone():
    side = make_sidecar(["a"])
    when = dt.datetime(2026, 12, 2, 10, 31, 7, tzinfo=dt.UTC)
    out = with_review_state(side, "reviewed", now=when)
    assert review_state(out) == "reviewed"
    assert out["review"]["updated"] == "2026-12-02T10:31:07Z"
    assert "review" not in side
    assert review_state(with_review_state(out, "skipped")) == "skipped"


@pytest.mark.parametrize("entry", [{"state": "done"}, "reviewed", {"when": 1}])
def test_an_unknown_state_is_reported_not_guessed(entry):
    with pytest.raises(InvalidInputError, match="expected .*draft, reviewed, skipped"):
        review_state({"review": entry})
    with pytest.raises(InvalidInputError, match="review state"):
        with_review_state({}, "accepted")
