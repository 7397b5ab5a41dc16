"""Dataset review: walk a folder of drafts written by ``clipseg batch``, correct, save, move on.

:mod:`~napari_clipseg.review.series` is the folder model (no Qt: listing, review states, the
merged class table, reading and atomic saving); :mod:`~napari_clipseg.review.panel` is the dock
widget "Review a dataset" (:class:`~napari_clipseg.review.panel.ReviewWidget`).
"""
from __future__ import annotations
