"""The text of ``clipseg models``: registered models grouped by domain, with their cache state."""
from __future__ import annotations

import textwrap

from .hub import cache_status
from .registry import DOMAINS, ModelEntry, aliases_of, get_entry, list_models

__all__ = ["model_listing"]


def _wrap(text: str, first: str, rest: str) -> list[str]:
    return textwrap.wrap(text, 96, initial_indent=first, subsequent_indent=rest,
                         break_long_words=False, break_on_hyphens=False)


def _line(name: str, entry: ModelEntry, status: str) -> list[str]:
    aliases = [a for a in aliases_of(entry.key) if a != name.lower()]
    head = name + (f"  (alias: {', '.join(aliases)})" if aliases else "")
    arch = "" if entry.arch == name else f" arch={entry.arch}"
    lines = [f"  {head}",
             f"      M={entry.middle_layer} crop={entry.crop} stride={entry.stride}{arch}  "
             f"[{status}]",
             *_wrap(entry.description, "      ", "      ")]
    for label, text in (("note", entry.note), ("source", entry.source),
                        ("weights", entry.download)):
        if text:
            lines += _wrap(f"{label}: {text}", "      ", "        ")
    return lines


def model_listing(cache_dir: str | None = None) -> str:
    """Every registered model and saved profile, grouped by :data:`~.registry.DOMAINS`.

    Each model shows its defaults (middle layer ``M``, window ``crop``/``stride``), its
    architecture and where its weights are (:func:`~.hub.cache_status`: ``cached`` loads
    offline). Nothing is downloaded.
    """
    groups: dict[str, list[str]] = {domain: [] for domain in DOMAINS}
    for name in list_models():
        entry = get_entry(name)
        groups[entry.domain] += _line(name, entry, cache_status(entry, cache_dir))
    out: list[str] = []
    for domain, lines in groups.items():
        if lines:
            out += [f"{domain}:", *lines, ""]
    out += _wrap("[cached] loads offline; [not cached] is downloaded into the Hugging Face cache "
                 "on first use; [manual download]: pass the file as --checkpoint. Any other "
                 "open_clip ARCH/TAG works too, with defaults synthesised.", "", "")
    return "\n".join(out)
