"""The per-layer features ``clipseg calibrate`` can measure (no torch: the command line's
``--kinds`` choices come from here, and :mod:`clipseg.apps.calibrate` checks against them)."""
from __future__ import annotations

__all__ = ["KINDS"]

#: Per-layer features measured: block keys, queries, values (of ``ln_1(x_{i-1})``) and the
#: block output ``x_i``.
KINDS: tuple[str, ...] = ("key", "query", "value", "output")
