"""Filter steps: each one reads a batch of documents and says, per row, keep or why not.

A step sees only the rows every step before it kept, in input order, as a
:class:`Batch`: the rows' original columns, the text, and the score columns the step
asked for (``<head>.p.<class>``, ``<head>.label``, ``<head>.explain``,
``feature.<index>.<pooling>``). :meth:`Step.decide` returns one entry per row: ``None``
to keep it, or the *reason* to drop it — a JSON object naming the step, the rule, the
value that broke it and, for a head, its label, probability and the top contributing
features behind it.

Thresholds are half-open ranges, like Python's: a row is kept when
``min <= value < max`` (either bound may be left out). So ``HeadThreshold("safety",
"insult", max=0.5)`` keeps ``safety.p.insult < 0.5``, the same as the keep expression
``safety.p.insult < 0.5``.

Steps are dataclasses: :meth:`Step.to_dict` gives the config a pipeline file holds, and
:func:`auditor.filter.spec.build_steps` makes them back.
"""

from __future__ import annotations

import importlib
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import Any, ClassVar

import numpy as np
import polars as pl

from auditor.errors import ConfigError
from auditor.filter.expression import feature_column
from auditor.pooling import POOLINGS

__all__ = [
    "STEP_TYPES",
    "Batch",
    "CustomStep",
    "Dedup",
    "FeatureRule",
    "HeadThreshold",
    "Keep",
    "LabelSet",
    "Length",
    "Reason",
    "Step",
    "head_evidence",
    "step_config",
]

#: A drop reason: JSON values only (it is written beside the row).
Reason = dict[str, Any]


@dataclass
class Batch:
    """Rows a step decides on: original columns plus the score columns the steps read.

    Parameters
    ----------
    frame
        One row per document, in input order.
    ids
        Each row's document id.
    rows
        Each row's 0-based position in the input.
    text_column
        Which column of ``frame`` holds the text.
    """

    frame: pl.DataFrame
    ids: list[str]
    rows: list[int]
    text_column: str = "text"

    def __len__(self) -> int:
        return self.frame.height

    @property
    def texts(self) -> list[str]:
        """The texts (a missing text is ``""``)."""
        return [t if isinstance(t, str) else ""
                for t in self.frame.get_column(self.text_column).to_list()]

    def column(self, name: str) -> list[Any]:
        """Values of one column, with an error naming what is there when it is missing."""
        if name not in self.frame.columns:
            raise ConfigError(f"no column {name!r} to filter on; the rows have: "
                              f"{', '.join(self.frame.columns)}", field=name)
        return self.frame.get_column(name).to_list()


def head_evidence(batch: Batch, i: int, head: str, *, top: int = 5) -> dict[str, Any]:
    """What a head said about row ``i``: its label and the top contributing features
    (when the scores carry explanations)."""
    out: dict[str, Any] = {"head": head}
    columns = batch.frame.columns
    if f"{head}.label" in columns:
        out["label"] = batch.frame[f"{head}.label"][i]
    if f"{head}.explain" in columns:
        explain = batch.frame[f"{head}.explain"][i]
        items = explain.to_list() if isinstance(explain, pl.Series) else list(explain or [])
        out["features"] = [_feature_item(x) for x in items[:top]]
    return out


def _feature_item(item: Mapping[str, Any]) -> dict[str, Any]:
    return {k: (float(v) if isinstance(v, float | np.floating) else v)
            for k, v in dict(item).items()}


def _number(value: Any) -> float | None:
    if value is None or isinstance(value, bool):
        return None
    try:
        x = float(value)
    except (TypeError, ValueError):
        return None
    return None if np.isnan(x) else x


def _check_range(min_: float | None, max_: float | None, *, what: str) -> None:
    if min_ is None and max_ is None:
        raise ConfigError(f"{what}: give min, max or both", field="min")
    if min_ is not None and max_ is not None and not min_ < max_:
        raise ConfigError(f"{what}: min ({min_}) must be below max ({max_})", field="min")


def _range_rule(name: str, min_: float | None, max_: float | None) -> str:
    if min_ is not None and max_ is not None:
        return f"{min_:g} <= {name} < {max_:g}"
    return f"{name} >= {min_:g}" if min_ is not None else f"{name} < {max_:g}"


def _outside(value: float, min_: float | None, max_: float | None) -> bool:
    return (min_ is not None and value < min_) or (max_ is not None and value >= max_)


@dataclass
class Step(ABC):
    """One filter step. Subclasses are dataclasses whose fields are their config.

    Attributes
    ----------
    kind
        The step's type in a pipeline file (``type: <kind>``).
    name
        A name unique in the pipeline, shown in reasons and counts (default: derived
        from the config).
    """

    kind: ClassVar[str] = ""

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:  # noqa: B027 - a hook: most steps check their config
        """Check the config; raise :class:`ConfigError` naming the field."""

    @property
    def title(self) -> str:
        """The step's name in reasons and counts."""
        given = getattr(self, "name", None)
        return str(given) if given else self.describe()

    def describe(self) -> str:
        """A one-line description of the rule."""
        return self.kind

    def columns(self) -> tuple[str, ...]:
        """Score columns the step reads (beyond the original ones)."""
        return ()

    def reset(self) -> None:  # noqa: B027 - a hook: only stateful steps have state
        """Forget what was seen (a stateful step starts over)."""

    @abstractmethod
    def decide(self, batch: Batch) -> list[Reason | None]:
        """Per row of ``batch``: ``None`` to keep it, or why it is dropped."""

    def to_dict(self) -> dict[str, Any]:
        """The step's config, as a pipeline file holds it."""
        data = {f.name: getattr(self, f.name) for f in fields(self) if f.init}
        return {"type": self.kind, **{k: v for k, v in data.items() if v is not None}}

    def _reason(self, rule: str, **details: Any) -> Reason:
        return {"step": self.title, "kind": self.kind, "rule": rule, **details}


@dataclass
class Length(Step):
    """Keep texts with ``min_chars <= characters < max_chars`` (and the same for words:
    runs of non-space characters).

    Examples
    --------
    >>> b = Batch(pl.DataFrame({"text": ["hi", "hello there"]}), ["a", "b"], [0, 1])
    >>> Length(min_chars=3).decide(b)[0]["rule"]
    'chars >= 3'
    """

    kind: ClassVar[str] = "length"
    min_chars: int | None = None
    max_chars: int | None = None
    min_words: int | None = None
    max_words: int | None = None
    name: str | None = None

    def validate(self) -> None:
        bounds = (self.min_chars, self.max_chars, self.min_words, self.max_words)
        if all(b is None for b in bounds):
            raise ConfigError("length: give min_chars, max_chars, min_words or max_words",
                              field="min_chars")
        for key, value in zip(("min_chars", "max_chars", "min_words", "max_words"), bounds,
                              strict=True):
            if value is not None and (isinstance(value, bool) or not isinstance(value, int)
                                      or value < 0):
                raise ConfigError(f"length: {key} must be an integer >= 0, got {value!r}",
                                  field=key)

    def describe(self) -> str:
        parts = []
        if self.min_chars is not None or self.max_chars is not None:
            parts.append(_range_rule("chars", self.min_chars, self.max_chars))
        if self.min_words is not None or self.max_words is not None:
            parts.append(_range_rule("words", self.min_words, self.max_words))
        return "length " + " and ".join(parts)

    def decide(self, batch: Batch) -> list[Reason | None]:
        out: list[Reason | None] = []
        for text in batch.texts:
            chars = len(text)
            reason = None
            if _outside(chars, self.min_chars, self.max_chars):
                reason = self._reason(_range_rule("chars", self.min_chars, self.max_chars),
                                      value=chars)
            elif self.min_words is not None or self.max_words is not None:
                words = len(text.split())
                if _outside(words, self.min_words, self.max_words):
                    reason = self._reason(_range_rule("words", self.min_words,
                                                      self.max_words), value=words)
            out.append(reason)
        return out


@dataclass
class HeadThreshold(Step):
    """Keep rows whose head probability for ``cls`` is in ``[min, max)``.

    The reason of a drop carries the probability, the head's label and its top
    contributing features.
    """

    kind: ClassVar[str] = "head"
    head: str = ""
    cls: str = ""
    min: float | None = None
    max: float | None = None
    name: str | None = None

    def validate(self) -> None:
        if not self.head or not self.cls:
            raise ConfigError("head: give the head's name and a class (head: safety, "
                              "class: insult)", field="head" if not self.head else "class")
        _check_range(self.min, self.max, what=f"head {self.head}")

    def describe(self) -> str:
        return _range_rule(f"{self.head}.p.{self.cls}", self.min, self.max)

    def columns(self) -> tuple[str, ...]:
        return (f"{self.head}.p.{self.cls}",)

    def to_dict(self) -> dict[str, Any]:
        d = super().to_dict()
        d["class"] = d.pop("cls")
        return d

    def decide(self, batch: Batch) -> list[Reason | None]:
        column = f"{self.head}.p.{self.cls}"
        out: list[Reason | None] = []
        for i, value in enumerate(batch.column(column)):
            p = _number(value)
            if p is None:
                out.append(self._reason(f"{column} is missing", value=None,
                                        **head_evidence(batch, i, self.head)))
            elif _outside(p, self.min, self.max):
                out.append(self._reason(self.describe(), value=p,
                                        **head_evidence(batch, i, self.head)))
            else:
                out.append(None)
        return out


@dataclass
class LabelSet(Step):
    """Keep rows whose head label is in ``keep`` (when given) and not in ``drop``.

    A multilabel head's row (column ``<head>.labels``) matches when any of its present
    labels does.
    """

    kind: ClassVar[str] = "label"
    head: str = ""
    keep: tuple[str, ...] | None = None
    drop: tuple[str, ...] | None = None
    name: str | None = None

    def validate(self) -> None:
        if not self.head:
            raise ConfigError("label: give the head's name", field="head")
        if self.keep is None and self.drop is None:
            raise ConfigError(f"label {self.head}: give keep (labels kept) or drop "
                              f"(labels dropped)", field="keep")
        for key in ("keep", "drop"):
            value = getattr(self, key)
            if value is not None:
                if isinstance(value, str) or not all(isinstance(x, str) for x in value):
                    raise ConfigError(f"label {self.head}: {key} must be a list of labels, "
                                      f"got {value!r}", field=key)
                setattr(self, key, tuple(value))

    def describe(self) -> str:
        parts = []
        if self.keep is not None:
            parts.append(f"{self.head}.label in {list(self.keep)}")
        if self.drop is not None:
            parts.append(f"{self.head}.label not in {list(self.drop)}")
        return " and ".join(parts)

    def columns(self) -> tuple[str, ...]:
        return (f"{self.head}.label",)

    def to_dict(self) -> dict[str, Any]:
        d = super().to_dict()
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in d.items()}

    def decide(self, batch: Batch) -> list[Reason | None]:
        multi = f"{self.head}.labels" in batch.frame.columns
        values = batch.column(f"{self.head}.labels" if multi else f"{self.head}.label")
        out: list[Reason | None] = []
        for i, value in enumerate(values):
            present = [str(x) for x in (value or [])] if multi else \
                ([] if value is None else [str(value)])
            bad = [x for x in present if self.drop is not None and x in self.drop]
            if bad:
                out.append(self._reason(f"{self.head}.label not in {list(self.drop or ())}",
                                        value=bad[0], **head_evidence(batch, i, self.head)))
            elif self.keep is not None and not any(x in self.keep for x in present):
                out.append(self._reason(f"{self.head}.label in {list(self.keep)}",
                                        value=present[0] if present else None,
                                        **head_evidence(batch, i, self.head)))
            else:
                out.append(None)
        return out


@dataclass
class FeatureRule(Step):
    """Keep rows whose pooled activation of SAE feature ``index`` is in ``[min, max)``
    (a document where the feature did not fire has activation 0).

    ``label`` is shown in reasons (default: the feature dictionary's label, when known).
    """

    kind: ClassVar[str] = "feature"
    index: int = -1
    pooling: str = "max"
    sae: str | None = None
    min: float | None = None
    max: float | None = None
    label: str | None = None
    name: str | None = None

    def validate(self) -> None:
        if isinstance(self.index, bool) or not isinstance(self.index, int) or self.index < 0:
            raise ConfigError(f"feature: index must be an integer >= 0, got {self.index!r}",
                              field="index")
        if self.pooling not in POOLINGS:
            raise ConfigError(f"feature {self.index}: pooling must be one of "
                              f"{', '.join(POOLINGS)}, got {self.pooling!r}", field="pooling")
        _check_range(self.min, self.max, what=f"feature {self.index}")

    @property
    def column(self) -> str:
        return feature_column(self.index, self.pooling, self.sae)

    def describe(self) -> str:
        return _range_rule(f"feature {self.index} {self.pooling}", self.min, self.max)

    def columns(self) -> tuple[str, ...]:
        return (self.column,)

    def decide(self, batch: Batch) -> list[Reason | None]:
        out: list[Reason | None] = []
        for value in batch.column(self.column):
            x = _number(value)
            x = 0.0 if x is None else x
            if _outside(x, self.min, self.max):
                feature = {"feature": self.index, "pooling": self.pooling,
                           "activation": x, "label": self.label}
                out.append(self._reason(self.describe(), value=x, features=[feature]))
            else:
                out.append(None)
        return out


@dataclass
class Keep(Step):
    """Keep rows for which a ``--keep`` expression holds (see
    :mod:`auditor.filter.expression`); a drop's reason names the clauses that failed
    and the values they read, with the top features of every head they name."""

    kind: ClassVar[str] = "keep"
    expression: str = ""
    name: str | None = None

    def validate(self) -> None:
        from auditor.filter.expression import parse_keep

        self._parsed = parse_keep(self.expression)

    def describe(self) -> str:
        return f"keep {self.expression}"

    def columns(self) -> tuple[str, ...]:
        return self._parsed.columns

    def decide(self, batch: Batch) -> list[Reason | None]:
        parsed = self._parsed
        failed = parsed.failed(batch.frame)
        heads = _heads_named(parsed.columns, batch.frame.columns)
        values = {c: batch.frame[c].to_list() for c in parsed.columns
                  if c in batch.frame.columns}
        out: list[Reason | None] = []
        for i, bad in enumerate(failed):
            if not bad:
                out.append(None)
                continue
            clauses = [parsed.clauses[j] for j in bad]
            read = {c: _shown(values[c][i]) for cl in clauses for c in cl.columns
                    if c in values}
            evidence = [head_evidence(batch, i, h) for h in heads
                        if any(c.startswith(h + ".") for cl in clauses for c in cl.columns)]
            out.append(self._reason(" and ".join(c.source for c in clauses), value=read,
                                    **({"heads": evidence} if evidence else {})))
        return out


def _heads_named(columns: Sequence[str], available: Sequence[str]) -> list[str]:
    """Heads whose score columns ``columns`` read (``<head>.label`` / ``<head>.p.*``)."""
    heads = []
    for c in columns:
        head = c.split(".", 1)[0]
        if "." in c and f"{head}.label" in available and head not in heads:
            heads.append(head)
    return heads


#: Longest string value quoted in a reason (a text column is quoted, not copied).
_QUOTE = 80


def _shown(value: Any) -> Any:
    """A value as a reason quotes it: JSON, long strings cut."""
    value = _jsonable(value)
    if isinstance(value, str) and len(value) > _QUOTE:
        return value[:_QUOTE] + f"… ({len(value)} chars)"
    return value


def _jsonable(value: Any) -> Any:
    if isinstance(value, pl.Series):
        return [_jsonable(v) for v in value.to_list()]
    if isinstance(value, float | np.floating):
        return float(value)
    if isinstance(value, int | str | bool) or value is None:
        return value
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    return str(value)


@dataclass
class Dedup(Step):
    """Drop a document that duplicates one this step kept before it.

    ``method="exact"``: equal normalised text (case, punctuation and spacing ignored);
    ``method="near"``: also an estimated Jaccard similarity of word shingles at least
    ``threshold`` (MinHash LSH, the report's method, run online). The first of a group
    is kept; a drop names the document it duplicates and the similarity. Memory grows
    with the documents kept (a key, and for ``near`` a signature of ``4 · num_perm``
    bytes plus one bucket entry per band, per document).
    """

    kind: ClassVar[str] = "dedup"
    method: str = "exact"
    threshold: float = 0.8
    shingle_size: int = 5
    num_perm: int = 128
    bands: int = 32
    name: str | None = None
    _exact: dict[bytes, str] = field(default_factory=dict, init=False, repr=False)
    _buckets: list[dict[bytes, list[int]]] = field(default_factory=list, init=False,
                                                   repr=False)
    _sigs: list[np.ndarray] = field(default_factory=list, init=False, repr=False)
    _sig_ids: list[str] = field(default_factory=list, init=False, repr=False)

    def validate(self) -> None:
        from auditor.report.dedup import NearDuplicateFinder

        if self.method not in ("exact", "near"):
            raise ConfigError(f"dedup: method must be 'exact' or 'near', got {self.method!r}",
                              field="method")
        self._finder = NearDuplicateFinder(threshold=self.threshold,
                                           shingle_size=self.shingle_size,
                                           num_perm=self.num_perm, bands=self.bands)
        self.reset()

    def describe(self) -> str:
        return "exact duplicates" if self.method == "exact" else \
            f"near duplicates (Jaccard >= {self.threshold:g})"

    def to_dict(self) -> dict[str, Any]:
        d = super().to_dict()
        if self.method == "exact":
            for key in ("threshold", "shingle_size", "num_perm", "bands"):
                d.pop(key, None)
        return d

    def reset(self) -> None:
        self._exact = {}
        self._buckets = [{} for _ in range(self.bands)]
        self._sigs = []
        self._sig_ids = []

    def decide(self, batch: Batch) -> list[Reason | None]:
        from auditor.report.dedup import normalize_text

        out: list[Reason | None] = []
        for doc_id, text in zip(batch.ids, batch.texts, strict=True):
            words = normalize_text(text)
            if not words:  # nothing to compare: never a duplicate
                out.append(None)
                continue
            key = self._finder.key(words)
            first = self._exact.get(key)
            if first is not None:
                out.append(self._reason("exact duplicate", duplicate_of=first,
                                        similarity=1.0))
                continue
            self._exact[key] = doc_id
            if self.method == "near":
                out.append(self._near(doc_id, words))
            else:
                out.append(None)
        return out

    def _near(self, doc_id: str, words: list[str]) -> Reason | None:
        sig = self._finder.signature(words)
        rows = self.num_perm // self.bands
        keys = [sig[b * rows:(b + 1) * rows].tobytes() for b in range(self.bands)]
        seen: set[int] = set()
        for band, k in enumerate(keys):
            for j in self._buckets[band].get(k, ()):
                if j in seen:
                    continue
                seen.add(j)
                sim = float((self._sigs[j] == sig).mean())
                if sim >= self.threshold:
                    return self._reason(f"near duplicate (Jaccard >= {self.threshold:g})",
                                        duplicate_of=self._sig_ids[j], similarity=sim)
        index = len(self._sigs)
        self._sigs.append(sig)
        self._sig_ids.append(doc_id)
        for band, k in enumerate(keys):
            self._buckets[band].setdefault(k, []).append(index)
        return None


@dataclass
class CustomStep(Step):
    """A step from your own code, by import path ``package.module:Name``.

    ``Name`` is a :class:`Step` subclass (made with ``args`` as keyword arguments) or a
    function ``(batch, **args) -> list[reason or None]``. It runs your code: name only
    modules you trust, as with any import.
    """

    kind: ClassVar[str] = "custom"
    path: str = ""
    args: dict[str, Any] = field(default_factory=dict)
    name: str | None = None

    def validate(self) -> None:
        module, _, attr = self.path.partition(":")
        if not module or not attr:
            raise ConfigError(f"custom: path must be 'package.module:Name', got "
                              f"{self.path!r}", field="path")
        try:
            target = getattr(importlib.import_module(module), attr)
        except (ImportError, AttributeError) as err:
            raise ConfigError(f"custom: cannot import {self.path!r}: {err}",
                              field="path") from err
        if isinstance(target, type) and issubclass(target, Step):
            try:
                self._step: Step | None = target(**self.args)
            except TypeError as err:
                raise ConfigError(f"custom {self.path}: {err}", field="args") from err
            self._call = None
        elif callable(target):
            self._step, self._call = None, target
        else:
            raise ConfigError(f"custom: {self.path} is neither a Step class nor a function",
                              field="path")

    def describe(self) -> str:
        return self._step.title if self._step is not None else self.path

    def columns(self) -> tuple[str, ...]:
        return self._step.columns() if self._step is not None else ()

    def reset(self) -> None:
        if self._step is not None:
            self._step.reset()

    def decide(self, batch: Batch) -> list[Reason | None]:
        if self._step is not None:
            raw = self._step.decide(batch)
        else:
            assert self._call is not None
            raw = self._call(batch, **self.args)
        raw = list(raw)
        if len(raw) != len(batch):
            raise ConfigError(f"custom step {self.path} returned {len(raw)} decisions for "
                              f"{len(batch)} rows", field="path")
        out: list[Reason | None] = []
        for r in raw:
            if r is None or r is False:
                out.append(None)
            elif isinstance(r, Mapping):
                out.append({"step": self.title, "kind": self.kind, **_jsonable(dict(r))})
            else:
                out.append(self._reason(str(r) if r is not True else self.path))
        return out


#: pipeline ``type`` -> step class
STEP_TYPES: dict[str, type[Step]] = {cls.kind: cls for cls in (
    Length, HeadThreshold, LabelSet, FeatureRule, Keep, Dedup, CustomStep)}


def step_config(step: Step) -> dict[str, Any]:
    """JSON config of a step (for provenance and a saved pipeline)."""
    return _jsonable(step.to_dict())

