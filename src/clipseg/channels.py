"""Which input channels become red, green and blue: indices, channel names, or dye presets.

``--channels`` (``clipseg segment``/``batch``/``calibrate``) takes one of

- ``R G B``: three entries, each a 0-based channel index, a channel **name** read from the
  file (OME-TIFF ``Channel Name``, ImageJ ``Labels``, OME-Zarr ``omero.channels[].label``;
  :func:`clipseg.formats.ome.read_spatial`), or ``none``/``-`` for a black slot:
  ``--channels 2 1 0``, ``--channels mCherry GFP DAPI``, ``--channels - GFP DAPI``;
- ``r=X g=Y b=Z``: any of the three slots by name (``red=``, ``green=``, ``blue=`` too), the
  others black: ``--channels g=GFP b=DAPI``;
- ``dyes``: every channel whose name is a known dye or fluorescent protein goes to that dye's
  display colour (:data:`DYES`): DAPI to blue, GFP to green, mCherry to red...

Names match case-insensitively, ignoring spaces and punctuation (``Alexa Fluor 488`` =
``alexa-fluor-488``). A name the file does not have is an error that lists the names it has.
"""
from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass

from .errors import InvalidConfigError, InvalidInputError

__all__ = ["ChannelChoice", "DYES", "DYE_TABLE", "dye_slot", "SLOTS"]

SLOTS = ("r", "g", "b")
_SLOT_WORDS = {"r": "r", "red": "r", "g": "g", "green": "g", "b": "b", "blue": "b"}
_EMPTY = ("none", "-", "null", "")
_COLOUR = {"r": "red", "g": "green", "b": "blue", "far-red": "far red"}

#: The dye presets: display colour -> dye / fluorescent-protein names (as users write them).
#: Far-red dyes go to red when the file has no red dye, else they are left out (a person
#: cannot tell far red from red in an RGB image anyway).
DYE_TABLE: dict[str, tuple[str, ...]] = {
    "b": ("DAPI", "Hoechst", "Hoechst 33342", "Hoechst 33258", "BFP", "EBFP", "mTagBFP",
          "Alexa Fluor 405", "AF405", "Pacific Blue"),
    "g": ("GFP", "EGFP", "mEGFP", "sfGFP", "FITC", "Alexa Fluor 488", "Alexa 488", "AF488",
          "Cy2", "mNeonGreen", "YFP", "EYFP", "Venus", "Citrine", "Fluo-4", "Calcein"),
    "r": ("mCherry", "RFP", "tdTomato", "mScarlet", "DsRed", "TRITC", "Cy3",
          "Alexa Fluor 546", "Alexa Fluor 555", "Alexa Fluor 568", "Alexa Fluor 594",
          "Alexa 568", "AF555", "AF568", "AF594", "Texas Red", "Rhodamine",
          "Propidium iodide", "PI"),
    "far-red": ("Cy5", "Alexa Fluor 647", "Alexa 647", "AF647", "Alexa Fluor 633", "DRAQ5",
                "APC", "iRFP", "Cy7"),
}


def _key(name: str) -> str:
    return "".join(c for c in str(name).lower().replace("µ", "u") if c.isalnum())


#: Normalised dye name -> slot (``"r"``, ``"g"``, ``"b"`` or ``"far-red"``).
DYES: dict[str, str] = {_key(n): slot for slot, names in DYE_TABLE.items() for n in names}


def dye_slot(name: str) -> str | None:
    """The display slot of a channel name (``"r"``, ``"g"``, ``"b"``, ``"far-red"``), or None.

    The whole name must be a dye (``EGFP``, ``Alexa Fluor 488``) or start with one followed by
    digits or words (``DAPI 405nm``, ``GFP-channel``); two-letter names (``PI``) only whole.
    """
    key = _key(name)
    if key in DYES:
        return DYES[key]
    best = max((k for k in DYES if len(k) >= 3 and key.startswith(k)), key=len, default=None)
    return DYES[best] if best is not None else None


def _entry(word: str) -> int | str | None:
    text = word.strip()
    if text.lower() in _EMPTY:
        return None
    try:
        return int(text)
    except ValueError:
        return text


@dataclass(frozen=True)
class ChannelChoice:
    """A ``--channels`` value before it is matched against a file.

    Attributes
    ----------
    slots : (r, g, b) of int, str or None
        Index, channel name or None (black) per display slot; ``()`` for the ``dyes`` preset.
    preset : str or None
        ``"dyes"``, or None.
    """

    slots: tuple[int | str | None, ...] = ()
    preset: str | None = None

    @classmethod
    def parse(cls, words: Sequence[str]) -> ChannelChoice:
        """Parse the words after ``--channels`` (see the module docstring)."""
        words = [str(w) for w in words]
        usage = ("expected R G B (channel indices or names, 'none' or '-' for a black slot), "
                 "r=NAME g=NAME b=NAME, or 'dyes'")
        if len(words) == 1 and words[0].strip().lower() in ("dyes", "dye"):
            return cls(preset="dyes")
        if words and all("=" in w for w in words):
            slots: dict[str, int | str | None] = {}
            for word in words:
                slot, _, value = word.partition("=")
                key = _SLOT_WORDS.get(slot.strip().lower())
                if key is None or not value.strip():
                    raise InvalidConfigError(f"--channels: {usage}, got {word!r}")
                if key in slots:
                    raise InvalidConfigError(f"--channels: expected each of r, g, b once, got "
                                             f"{_COLOUR[key]} twice")
                slots[key] = _entry(value)
            choice = cls(slots=tuple(slots.get(s) for s in SLOTS))
        elif len(words) == 3 and not any("=" in w for w in words):
            choice = cls(slots=tuple(_entry(w) for w in words))
        else:
            raise InvalidConfigError(f"--channels: {usage}, got {' '.join(words) or 'nothing'}")
        if all(s is None for s in choice.slots):
            raise InvalidConfigError(f"--channels: expected at least one channel index or "
                                     f"name, got {' '.join(words)}")
        return choice

    @property
    def indices(self) -> tuple[int | None, ...] | None:
        """The ``(r, g, b)`` indices when no name has to be looked up, else None."""
        if self.preset is None and all(s is None or isinstance(s, int) for s in self.slots):
            return tuple(self.slots)  # type: ignore[arg-type]
        return None

    def text(self) -> str:
        """The choice as typed on the command line."""
        if self.preset:
            return self.preset
        return " ".join("none" if s is None else str(s) for s in self.slots)

    def resolve(self, names: Sequence[str], count: int, where: str | os.PathLike = "image"
                ) -> tuple[int | None, int | None, int | None]:
        """The ``(r, g, b)`` channel indices for an image of ``count`` channels named
        ``names`` (``()`` when the file names none).

        Raises
        ------
        InvalidInputError
            An index out of range, a name the image does not have (the message lists the
            names it has), names for an image that names no channels, or ``dyes`` with no
            known dye among the names.
        """
        names = list(names) if len(names) == count else []
        listed = (f"{where} has channels {', '.join(repr(n) for n in names)}" if names else
                  f"{where} names none of its {count} channel{'s' if count != 1 else ''} "
                  f"(OME-TIFF, ImageJ TIFF and OME-Zarr files can); give indices 0..{count - 1}")
        if self.preset == "dyes":
            return self._dyes(names, listed, where)
        out: list[int | None] = []
        for entry in self.slots:
            if entry is None:
                out.append(None)
            elif isinstance(entry, int):
                if not -count <= entry < count:
                    raise InvalidInputError(
                        f"--channels: expected indices in {-count}..{count - 1} ({where} has "
                        f"{count} channel{'s' if count != 1 else ''}), got {self.text()}; "
                        "count channels from 0")
                out.append(entry % count)
            else:
                out.append(self._find(entry, names, listed))
        return out[0], out[1], out[2]

    @staticmethod
    def _find(name: str, names: Sequence[str], listed: str) -> int:
        exact = [i for i, n in enumerate(names) if n == name]
        loose = [i for i, n in enumerate(names) if _key(n) == _key(name)]
        found = exact or loose
        if len(found) != 1:
            what = "is ambiguous" if found else "not found"
            raise InvalidInputError(f"--channels: expected a channel name, index or 'none'; "
                                    f"{name!r} {what}: {listed}")
        return found[0]

    @staticmethod
    def _dyes(names: Sequence[str], listed: str, where: object
              ) -> tuple[int | None, int | None, int | None]:
        chosen: dict[str, int] = {}
        far: list[int] = []
        for i, name in enumerate(names):
            slot = dye_slot(name)
            if slot == "far-red":
                far.append(i)
            elif slot is not None:
                if slot in chosen:
                    raise InvalidInputError(
                        f"--channels dyes: expected one dye per colour, got "
                        f"{names[chosen[slot]]!r} and {name!r} both {_COLOUR[slot]} in "
                        f"{where}; choose one, e.g. --channels {slot}={name}")
                chosen[slot] = i
        if far and "r" not in chosen:
            chosen["r"] = far[0]
        if not chosen:
            known = ", ".join(DYE_TABLE["b"][:2] + DYE_TABLE["g"][:3] + DYE_TABLE["r"][:3])
            raise InvalidInputError(f"--channels dyes: expected channel names that are dyes "
                                    f"({known}, ...), but {listed}; give R G B or r=NAME")
        r, g, b = (chosen.get(s) for s in SLOTS)
        return r, g, b
