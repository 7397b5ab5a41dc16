"""The review state of a draft, kept in its ``NAME.clipseg.json`` sidecar.

A result written by ``clipseg segment``/``batch`` or by the widget is a *draft*; a person
reviewing a folder marks each image *reviewed* (accepted, possibly after corrections) or
*skipped*. The state lives under the sidecar key ``"review"``::

    "review": {"state": "reviewed", "updated": "2026-12-02T10:31:07Z"}

A sidecar without the key (every file written before 0.2) is a draft. ``clipseg export``
takes only reviewed images unless told otherwise; the review widget resumes at the first
image that is neither reviewed nor skipped.
"""
from __future__ import annotations

import datetime as _dt
from collections.abc import Mapping
from typing import Any

from ..errors import InvalidInputError, describe

__all__ = ["DRAFT", "REVIEWED", "SKIPPED", "REVIEW_STATES", "review_state", "with_review_state",
           "touched_by_a_person"]

DRAFT = "draft"
REVIEWED = "reviewed"
SKIPPED = "skipped"
#: Every state a sidecar may record, in the order a review moves through them.
REVIEW_STATES = (DRAFT, REVIEWED, SKIPPED)


def review_state(sidecar: Mapping[str, Any]) -> str:
    """The review state recorded in ``sidecar`` (``"draft"`` when it records none).

    Raises :class:`~clipseg.errors.InvalidInputError` for a ``"review"`` entry that is not one
    of :data:`REVIEW_STATES`, so a hand-edited sidecar is reported, not silently re-reviewed.
    """
    entry = sidecar.get("review")
    if entry is None:
        return DRAFT
    state = entry.get("state") if isinstance(entry, Mapping) else None
    if state not in REVIEW_STATES:
        raise InvalidInputError(
            f"sidecar 'review': expected {{'state': one of {', '.join(REVIEW_STATES)}}}, got "
            f"{describe(entry)}; fix or delete the entry to treat the image as a draft")
    return state


def with_review_state(sidecar: Mapping[str, Any], state: str,
                      now: _dt.datetime | None = None) -> dict[str, Any]:
    """A copy of ``sidecar`` that records ``state`` (and when, in UTC)."""
    if state not in REVIEW_STATES:
        raise InvalidInputError(f"review state: expected one of {', '.join(REVIEW_STATES)}, "
                                f"got {describe(state)}")
    when = (now or _dt.datetime.now(_dt.UTC)).astimezone(_dt.UTC)
    out = dict(sidecar)
    out["review"] = {"state": state, "updated": when.strftime("%Y-%m-%dT%H:%M:%SZ")}
    return out


def touched_by_a_person(sidecar: Mapping[str, Any]) -> bool:
    """True for a sidecar that records a review (reviewed/skipped) or human edits: a run
    never replaces that result. An unreadable ``"review"`` entry counts as touched (a person
    edited the file by hand: leave the result alone)."""
    try:
        state = review_state(sidecar)
    except InvalidInputError:
        return True
    return state != DRAFT or bool(sidecar.get("edits"))
