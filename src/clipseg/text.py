"""Class names to text embeddings.

A class list is written as text: classes separated by commas or new lines, synonyms of one class
separated by ``;``::

    road; street, building, tree
    water

gives four classes, the first with two synonyms. Each synonym is put into every prompt template
(80 OpenAI ImageNet templates by default), encoded, L2-normalised, averaged and renormalised; a
class scores the best of its synonyms (:func:`class_logits`).
"""
from __future__ import annotations

from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import open_clip
import torch
import torch.nn.functional as F

from .errors import InvalidInputError, describe
from .generators import drain
from .models.text_tower import pooled_positions, text_tower, text_weights_digest, truncated_encode
from .text_cache import TextCache

if TYPE_CHECKING:
    from .models.loading import LoadedModel

__all__ = ["ClassSpec", "parse_classes", "class_file_text", "TextEncoder", "class_logits"]

Template = Callable[[str], str] | str

#: Prompts per truncated pass: sorted by length, chunks of 64 run about 1.4 times faster than
#: one pass of 320 padded to the longest (benchmarks/README.md).
TRUNCATED_CHUNK = 64


@dataclass(frozen=True)
class ClassSpec:
    """One class: its display name and the prompts (synonyms) that describe it.

    Parameters
    ----------
    name : str
        Display name; always equal to ``synonyms[0]``.
    synonyms : tuple of str
        Non-empty, stripped, distinct (case-insensitively) phrases; empty (the default) means
        ``(name,)``.
    """

    name: str
    synonyms: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        syn = self.synonyms
        if isinstance(syn, (tuple, list)) and len(syn) == 0:
            syn = (self.name,)
        if isinstance(syn, str) or not isinstance(syn, (tuple, list)) or not syn:
            raise InvalidInputError(f"ClassSpec.synonyms: expected a non-empty tuple of strings, "
                                    f"got {syn!r}")
        if not all(isinstance(s, str) and s.strip() and s == s.strip() for s in syn):
            raise InvalidInputError(f"ClassSpec.synonyms: expected non-blank stripped strings, "
                                    f"got {syn!r}")
        if len({s.lower() for s in syn}) != len(syn):
            raise InvalidInputError(f"ClassSpec.synonyms: expected distinct synonyms, got {syn!r}")
        if not isinstance(self.name, str) or self.name != syn[0]:
            raise InvalidInputError(f"ClassSpec.name: expected the first synonym {syn[0]!r}, "
                                    f"got {self.name!r}")
        object.__setattr__(self, "synonyms", tuple(syn))

    @classmethod
    def of(cls, *synonyms: str) -> ClassSpec:
        """``ClassSpec.of("road", "street")``: the name is the first synonym."""
        return cls(name=synonyms[0] if synonyms else "", synonyms=tuple(synonyms))


def _split_synonyms(item: str, where: str) -> tuple[str, ...]:
    parts = [p.strip() for p in item.split(";")]
    for i, part in enumerate(parts, 1):
        if not part:
            raise InvalidInputError(f"class list {where}: synonym {i} of {item.strip()!r} is "
                                    "empty; expected a name between the ';' separators")
    return tuple(parts)


def _check_unique(classes: list[ClassSpec]) -> None:
    owner: dict[str, int] = {}
    for index, spec in enumerate(classes):  # a ClassSpec's own synonyms are distinct already
        for syn in spec.synonyms:
            other = owner.setdefault(syn.lower(), index)
            if other != index:
                raise InvalidInputError(
                    f"class list: expected distinct names (case-insensitive); {syn!r} is used by "
                    f"both class {other + 1} ({classes[other].name!r}) and class {index + 1} "
                    f"({spec.name!r})")


def class_file_text(text: str) -> str:
    """A class-list file's text without its comment lines (first character ``#``, after
    spaces) and blank lines: what ``--classes-file`` and the widget's *Load…* hand to
    :func:`parse_classes`."""
    lines = (ln.strip() for ln in text.splitlines())
    return "\n".join(ln for ln in lines if ln and not ln.startswith("#"))


def parse_classes(text_or_list: str | Sequence[str | ClassSpec]) -> list[ClassSpec]:
    """Parse a class list.

    Parameters
    ----------
    text_or_list : str or sequence of str / ClassSpec
        Text: classes separated by new lines or commas, synonyms by ``;``; blank lines are
        ignored and so is one trailing comma at the end of a line. A sequence: one class per
        item (``"road; street"`` is one class with two synonyms; commas and new lines inside an
        item are refused), :class:`ClassSpec` items are taken as they are.

    Returns
    -------
    list of ClassSpec
        In the order given; class ``k`` gets label ``k + 1``.

    Raises
    ------
    InvalidInputError
        No classes; an empty name (``"a,,b"``, ``"a;;b"``); a name used twice
        (case-insensitive); a text of a single line holding only ``;``-separated names
        (``"cat; dog"``), which almost always means separate classes. Write ``"cat, dog"``;
        for one class with synonyms end the line with a comma or pass a one-item list.
    """
    classes: list[ClassSpec] = []
    if isinstance(text_or_list, str):
        lines = [(n, line) for n, line in enumerate(text_or_list.splitlines(), 1) if line.strip()]
        has_comma = False
        for number, line in lines:
            items = line.split(",")
            if len(items) > 1:
                has_comma = True
                if not items[-1].strip():
                    items = items[:-1]
            for position, item in enumerate(items, 1):
                where = f"line {number}, item {position}"
                if not item.strip():
                    raise InvalidInputError(f"class list {where} is empty (in {line.strip()!r});"
                                            " expected a class name between the commas")
                classes.append(ClassSpec.of(*_split_synonyms(item, where)))
        if len(lines) == 1 and not has_comma and len(classes[0].synonyms) > 1:
            raise InvalidInputError(
                f"class list {text_or_list.strip()!r}: expected several classes or one class "
                "with synonyms, got one line of ';'-separated names. ';' separates synonyms of "
                "one class; separate classes with commas or new lines (e.g. "
                f"{', '.join(classes[0].synonyms)!r}). For a single class with synonyms end the "
                "line with a comma or pass a one-item list.")
    elif isinstance(text_or_list, Sequence):
        for position, item in enumerate(text_or_list, 1):
            if isinstance(item, ClassSpec):
                classes.append(item)
                continue
            if not isinstance(item, str):
                raise InvalidInputError(f"class list item {position}: expected a string or a "
                                        f"ClassSpec, got {describe(item)}")
            if "," in item or "\n" in item or "\r" in item:
                raise InvalidInputError(
                    f"class list item {position} ({item!r}): expected one class per item, got a "
                    "comma or new line inside it; pass the classes as separate items")
            if not item.strip():
                raise InvalidInputError(f"class list item {position}: expected a class name, "
                                        "got an empty string")
            classes.append(ClassSpec.of(*_split_synonyms(item, f"item {position}")))
    else:
        raise InvalidInputError(f"classes: expected a string or a list of class names, got "
                                f"{describe(text_or_list)}")
    if not classes:
        raise InvalidInputError("class list: expected at least one class name, got none")
    _check_unique(classes)
    return classes


def _as_templates(templates: Sequence[Template] | str) -> tuple[Callable[[str], str], ...]:
    if isinstance(templates, str):
        templates = (templates,)
    if not isinstance(templates, Sequence) or len(templates) == 0:
        raise InvalidInputError(f"templates: expected a non-empty list of '{{}}' strings or "
                                f"callables, got {describe(templates)}")
    out: list[Callable[[str], str]] = []
    for i, template in enumerate(templates):
        if isinstance(template, str):
            try:
                probe = template.format("x")
            except (IndexError, KeyError, ValueError) as exc:
                raise InvalidInputError(f"templates[{i}]: expected a format string with one "
                                        f"'{{}}', got {template!r} ({exc})") from exc
            if probe == template:
                raise InvalidInputError(f"templates[{i}]: expected a '{{}}' where the class name"
                                        f" goes, got {template!r}")
            out.append(template.format)
        elif callable(template):
            out.append(template)
        else:
            raise InvalidInputError(f"templates[{i}]: expected a '{{}}' string or a callable, "
                                    f"got {describe(template)}")
    return tuple(out)


class TextEncoder:
    """Encode class synonyms into unit text embeddings, cached in memory and on disk.

    Parameters
    ----------
    loaded : LoadedModel
        Model, tokenizer and device.
    templates : sequence of callables or ``"{}"`` strings
        Prompt templates; default the 80 ``open_clip.OPENAI_IMAGENET_TEMPLATES``.
    batch_size : int
        Prompts per text-tower pass; the prompts of several synonyms (whole synonyms) share a
        pass, so with 80 templates three synonyms go together.
    disk_cache : TextCache or None
        Persistent cache shared between runs and processes (:func:`clipseg.text_cache.
        open_text_cache`); None keeps embeddings in memory only.
    truncate : bool
        Run only the first T tokens of each pass where that is exact
        (:mod:`clipseg.models.text_tower`); False always calls ``model.encode_text``.

    Notes
    -----
    Embedding of one synonym ``c``: ``t_j = normalise(encode_text(tokenize(template_j(c))))``
    for every template, then ``normalise(mean_j t_j)``. The memory cache is keyed by the synonym
    string, so re-encoding an edited class list only encodes the names that are new; the disk
    cache by the text weights' digest, the compute dtype and the prompts' token ids.
    """

    def __init__(self, loaded: LoadedModel,
                 templates: Sequence[Template] | str = open_clip.OPENAI_IMAGENET_TEMPLATES,
                 batch_size: int = 256, *, disk_cache: TextCache | None = None,
                 truncate: bool = True) -> None:
        if not hasattr(loaded, "model") or not hasattr(loaded, "tokenizer"):
            raise InvalidInputError(f"TextEncoder: expected a LoadedModel (clipseg.models."
                                    f"load_model / wrap_model), got {describe(loaded)}")
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise InvalidInputError(f"batch_size: expected an integer >= 1, got {batch_size!r}")
        if disk_cache is not None and not isinstance(disk_cache, TextCache):
            raise InvalidInputError(f"disk_cache: expected a TextCache or None, got "
                                    f"{describe(disk_cache)}")
        self.loaded = loaded
        self.templates = _as_templates(templates)
        self.batch_size = batch_size
        self.disk_cache = disk_cache
        self._cache: dict[str, torch.Tensor] = {}
        tower, reason = text_tower(loaded.model) if truncate else (None, "truncate=False")
        self._tower = tower
        #: Why ``model.encode_text`` runs instead of the truncated forward ("" if it does not).
        self.fallback_reason = reason

    @property
    def text_path(self) -> str:
        """``"truncated"`` (the exact short forward) or ``"encode_text"``."""
        return "truncated" if self._tower is not None else "encode_text"

    @property
    def cache_size(self) -> int:
        """Number of synonyms whose embedding is cached in memory."""
        return len(self._cache)

    def clear_cache(self) -> None:
        """Forget every embedding cached in memory (the disk cache stays)."""
        self._cache.clear()

    @torch.no_grad()
    def _forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """``(N, D)`` unit float32 embeddings of ``(N, C)`` tokens, in ``batch_size`` passes.

        On the truncated path the rows are sorted by length first and run in chunks of at
        most :data:`TRUNCATED_CHUNK`, so each chunk is only as long as its longest prompt.
        """
        loaded = self.loaded
        device = loaded.device
        dtype = getattr(loaded, "compute_dtype", torch.float32)
        tokens = tokens.to(device)
        order = None
        if self._tower is not None:
            order = torch.argsort(pooled_positions(self._tower, tokens), stable=True)
            tokens = tokens[order]
        chunks = []
        step = self.batch_size if order is None else min(self.batch_size, TRUNCATED_CHUNK)
        with torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32):
            for start in range(0, tokens.shape[0], step):
                part = tokens[start:start + step]
                feats = (truncated_encode(self._tower, part) if self._tower is not None
                         else loaded.model.encode_text(part))
                chunks.append(F.normalize(feats.float(), dim=-1))
        out = torch.cat(chunks)
        if order is not None:
            out = torch.empty_like(out).index_copy_(0, order, out)
        return out

    def _disk_key(self, tokens: torch.Tensor) -> str:
        loaded = self.loaded
        return TextCache.key(text_weights_digest(loaded.model),
                             getattr(loaded, "compute_dtype", torch.float32), tokens)

    def iter_embed(self, synonyms: Sequence[str]
                   ) -> Generator[tuple[int, int], None, torch.Tensor]:
        """Like :meth:`embed`, yielding ``(done, total)`` after each newly encoded synonym.

        With 80 templates a synonym is 80 prompts (about a second on a CPU for a ViT-B text
        tower), so callers can show progress and stop between passes; what was encoded before
        they stopped stays cached. Synonyms cached in memory or on disk cost nothing and are not
        counted in ``total``. A pass holds the prompts of as many whole synonyms as fit in
        ``batch_size``; its synonyms are then reported one step each.
        """
        if len(synonyms) == 0:
            raise InvalidInputError("embed: expected at least one synonym, got none")
        todo: list[tuple[str, torch.Tensor, str | None]] = []
        for synonym in dict.fromkeys(synonyms):
            if synonym in self._cache:
                continue
            tokens = self.loaded.tokenizer([template(synonym) for template in self.templates])
            key = self._disk_key(tokens) if self.disk_cache is not None else None
            hit = self.disk_cache.get(key) if key is not None else None
            if hit is not None:
                self._cache[synonym] = hit.to(self.loaded.device)
            else:
                todo.append((synonym, tokens, key))
        done = 0
        while done < len(todo):
            group = [todo[done]]
            count = todo[done][1].shape[0]
            while done + len(group) < len(todo) and \
                    count + todo[done + len(group)][1].shape[0] <= self.batch_size:
                count += todo[done + len(group)][1].shape[0]
                group.append(todo[done + len(group)])
            feats = self._forward(torch.cat([tokens for _, tokens, _ in group]))
            start = 0
            for synonym, tokens, key in group:
                part = feats[start:start + tokens.shape[0]]
                start += tokens.shape[0]
                emb = F.normalize(part.mean(dim=0), dim=-1)
                self._cache[synonym] = emb
                if key is not None:
                    self.disk_cache.put(key, emb)
                done += 1
                yield done, len(todo)
        return torch.stack([self._cache[s] for s in synonyms])

    def embed(self, synonyms: Sequence[str]) -> torch.Tensor:
        """Embeddings of ``synonyms``: ``(len(synonyms), D)`` unit float32 on the model device."""
        return drain(self.iter_embed(synonyms))

    def iter_encode(self, classes: Sequence[ClassSpec] | str
                    ) -> Generator[tuple[int, int], None, tuple[torch.Tensor, torch.Tensor]]:
        """:meth:`encode` as a generator yielding ``(done, total)`` per new synonym."""
        if isinstance(classes, str) or not all(isinstance(c, ClassSpec) for c in classes):
            classes = parse_classes(classes)
        if len(classes) == 0:
            raise InvalidInputError("encode: expected at least one class, got none")
        synonyms = [s for spec in classes for s in spec.synonyms]
        owner = torch.tensor([k for k, spec in enumerate(classes) for _ in spec.synonyms],
                             dtype=torch.long, device=self.loaded.device)
        embeddings = yield from self.iter_embed(synonyms)
        return embeddings, owner

    def encode(self, classes: Sequence[ClassSpec] | str) -> tuple[torch.Tensor, torch.Tensor]:
        """Text embeddings of every synonym of every class.

        Parameters
        ----------
        classes : list of ClassSpec, or text / list of str for :func:`parse_classes`

        Returns
        -------
        embeddings : torch.Tensor
            ``(S, D)`` float32, unit rows, on the model's device; S = total synonyms.
        owner : torch.LongTensor
            ``(S,)`` on the same device; ``owner[s]`` is the class index (0-based) of row s.
        """
        return drain(self.iter_encode(classes))


def prompt_templates(name: str) -> tuple[Template, ...]:
    """The templates of a named prompt set (``LabelConfig.prompts``).

    ``imagenet80`` and ``imagenet7`` are open_clip's ``OPENAI_IMAGENET_TEMPLATES`` and
    ``SIMPLE_IMAGENET_TEMPLATES``; ``name`` is the bare class name.
    """
    sets = {
        "imagenet80": tuple(open_clip.OPENAI_IMAGENET_TEMPLATES),
        "imagenet7": tuple(open_clip.SIMPLE_IMAGENET_TEMPLATES),
        "name": ("{}".format,),
    }
    if name not in sets:
        raise InvalidInputError(f"prompts: expected one of {', '.join(sets)}, got {name!r}")
    return sets[name]


def class_logits(emb: torch.Tensor, text: torch.Tensor, owner: torch.Tensor,
                 num_classes: int,
                 *, normalize: bool = False) -> torch.Tensor:
    """Per-class cosine scores: the best synonym of each class.

    Parameters
    ----------
    emb : torch.Tensor
        ``(..., D)`` image embeddings, unit length (set ``normalize=True`` otherwise).
    text : torch.Tensor
        ``(S, D)`` unit text embeddings from :meth:`TextEncoder.encode`.
    owner : torch.LongTensor
        ``(S,)`` class index of each text row, every class in ``0..K-1`` present.
    num_classes : int
        Number of classes, ``K``.
    normalize : bool
        L2-normalise ``emb`` first.

    Returns
    -------
    torch.Tensor
        ``(..., K)`` float32, ``out[..., k] = max_{s: owner[s] = k} <emb, text[s]>``.
    """
    if text.ndim != 2 or emb.ndim < 1 or emb.shape[-1] != text.shape[-1]:
        raise InvalidInputError(f"class_logits: expected emb (..., D) and text (S, D) with the "
                                f"same D, got emb {tuple(emb.shape)} and text {tuple(text.shape)}")
    if owner.ndim != 1 or owner.shape[0] != text.shape[0] or owner.dtype != torch.long:
        raise InvalidInputError(f"class_logits: expected owner LongTensor ({text.shape[0]},), got "
                                f"{describe(owner)}")
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise InvalidInputError(f"class_logits: expected K >= 1 classes, got {num_classes!r}")
    K = num_classes  # noqa: N806 (the paper's symbol)
    counts = owner.cpu()
    if counts.numel() == 0 or int(counts.min()) < 0 or int(counts.max()) >= K \
            or bool((torch.bincount(counts, minlength=K) == 0).any()):
        raise InvalidInputError(f"class_logits: expected every class 0..{K - 1} to own at least "
                                f"one text row, got owner {owner.tolist()}")
    emb = emb.float()
    if normalize:
        emb = F.normalize(emb, dim=-1)
    cos = emb @ text.to(device=emb.device, dtype=torch.float32).T  # (..., S)
    index = owner.to(emb.device).expand(cos.shape)
    out = torch.full((*cos.shape[:-1], K), float("-inf"), device=emb.device)
    return out.scatter_reduce(-1, index, cos, reduce="amax", include_self=True)
