"""Helpers for the engine's progress generators.

Long jobs in the engine are generators that yield progress and *return* their result (PEP 380),
so any caller can show progress and cancel between steps by no longer iterating.
"""
from __future__ import annotations

from collections.abc import Callable, Generator
from typing import Any, TypeVar

S = TypeVar("S")
U = TypeVar("U")
R = TypeVar("R")


def drain(gen: Generator[S, Any, R], on_step: Callable[[S], None] | None = None) -> R:
    """Run ``gen`` to its end, calling ``on_step`` with each yielded item; return its value."""
    while True:
        try:
            step = next(gen)
        except StopIteration as stop:
            return stop.value
        if on_step is not None:
            on_step(step)


def relay(gen: Generator[S, Any, R], convert: Callable[[S], U]) -> Generator[U, None, R]:
    """Yield ``convert(step)`` for each step of ``gen``; return ``gen``'s value.

    Closing the relay (a caller that stops iterating) closes ``gen`` too.
    """
    try:
        while True:
            try:
                step = next(gen)
            except StopIteration as stop:
                return stop.value
            yield convert(step)
    finally:
        gen.close()
