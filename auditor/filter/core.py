"""The filter: an ordered list of steps applied to a stream of documents.

Each step sees the rows every step before it kept; the first step that drops a row
gives its reason. A row without a usable text (missing, not a string, empty) is dropped
before any step, and a row the scorer could not score is dropped before the first step
that reads scores — both with reasons, so every input row is either kept or dropped with
a reason.

Examples
--------
>>> f = Filter([{"type": "length", "min_chars": 4}, {"type": "dedup"}])
>>> docs = [{"text": "hello there", "src": "a"}, {"text": "hi"},
...         {"text": "Hello, there!", "src": "b"}]
>>> [d["src"] for d in f.run(docs)]
['a']
>>> [(r["step"], r["rule"]) for _, r in f.dropped]
[('length chars >= 4', 'chars >= 4'), ('exact duplicates', 'exact duplicate')]
>>> f.stats.to_dict()["dropped_by_step"]
{'length chars >= 4': 1, 'exact duplicates': 1}
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import polars as pl

from auditor.errors import ConfigError
from auditor.filter.spec import build_steps, load_pipeline_file
from auditor.filter.steps import Batch, Keep, Reason, Step

__all__ = ["INPUT_STEP", "SCORES_STEP", "Decision", "Filter", "FilterStats"]

#: Step names of the two checks every filter runs first.
INPUT_STEP = "input"
SCORES_STEP = "scores"


@dataclass
class FilterStats:
    """Counts of one filter run: documents in, kept, dropped per step (in step order)."""

    documents: int = 0
    kept: int = 0
    dropped_by_step: dict[str, int] = field(default_factory=dict)

    @property
    def dropped(self) -> int:
        return sum(self.dropped_by_step.values())

    def add(self, other: FilterStats) -> None:
        self.documents += other.documents
        self.kept += other.kept
        for k, v in other.dropped_by_step.items():
            self.dropped_by_step[k] = self.dropped_by_step.get(k, 0) + v

    def to_dict(self) -> dict[str, Any]:
        return {"documents": self.documents, "kept": self.kept, "dropped": self.dropped,
                "dropped_by_step": {k: v for k, v in self.dropped_by_step.items() if v}}


@dataclass
class Decision:
    """A batch's outcome: positions kept, positions dropped with their reasons."""

    kept: list[int]
    dropped: list[int]
    reasons: list[Reason]


class Filter:
    """Apply filter steps to documents, keeping the reason of every drop.

    Parameters
    ----------
    steps
        :class:`~auditor.filter.steps.Step` objects, their configs (dicts), or a pipeline
        file (YAML / JSON, see :mod:`auditor.filter.spec`).
    keep
        A keep expression, run as a last step (see :mod:`auditor.filter.expression`).
    scorer
        Gives the score columns steps read (heads' probabilities and labels, SAE
        features); required when a step reads one (see :mod:`auditor.filter.scores`).
    text_column, id_column
        Where documents (mappings) hold their text and id (default: the position).
    batch_size
        Documents scored and decided at once by :meth:`run`.

    Raises
    ------
    ConfigError
        No step, a bad step, or score columns without a scorer that gives them.
    """

    def __init__(self, steps: Sequence[Step | Mapping[str, Any]] | str | Path = (), *,
                 keep: str | None = None, scorer: Any = None, text_column: str = "text",
                 id_column: str | None = None, batch_size: int = 256) -> None:
        items = load_pipeline_file(steps) if isinstance(steps, str | Path) else list(steps)
        self.steps = build_steps(items)
        if keep is not None:
            self.steps.append(Keep(expression=keep))
            build_steps(self.steps)  # names stay unique
        if not self.steps:
            raise ConfigError("a filter needs at least one step or a keep expression",
                              field="steps")
        if batch_size < 1:
            raise ConfigError("batch_size must be >= 1", field="batch_size")
        self.scorer = scorer
        self.text_column = text_column
        self.id_column = id_column
        self.batch_size = batch_size
        self.stats = FilterStats()
        self.dropped: list[tuple[Any, Reason]] = []
        self._first_scored = next((i for i, s in enumerate(self.steps) if s.columns()), None)

    def score_columns(self, available: Iterable[str] = ()) -> list[str]:
        """The columns the steps read that are not among ``available`` (the documents'
        own columns): what the scorer must give."""
        have = set(available) | {self.text_column}
        return list(dict.fromkeys(c for s in self.steps for c in s.columns() if c not in have))

    def check_scores(self, available: Iterable[str], scorer_columns: Iterable[str]) -> None:
        """Refuse, before any row is read, columns that neither the documents nor the
        scorer have, naming the close matches."""
        import difflib

        have = set(available) | set(scorer_columns) | {self.text_column}
        for step in self.steps:
            if isinstance(step, Keep):
                step._parsed.check(have)
                continue
            for c in step.columns():
                if c not in have:
                    close = difflib.get_close_matches(c, sorted(have), n=3)
                    hint = f"; did you mean {', '.join(close)}?" if close else ""
                    raise ConfigError(f"step {step.title!r} reads {c!r}, which neither the "
                                      f"input nor the scores have{hint}", field=c)

    def reset(self) -> None:
        """Start over: counts, drops and the state of stateful steps (deduplication)."""
        self.stats = FilterStats()
        self.dropped = []
        for step in self.steps:
            step.reset()

    def decide(self, frame: pl.DataFrame, ids: Sequence[str], rows: Sequence[int], *,
               unscored: Mapping[int, str] | None = None) -> Decision:
        """Decide a batch: ``frame`` holds the text, the original columns the steps read
        and the score columns; ``unscored`` maps positions the scorer missed to why."""
        batch = Batch(frame, list(ids), list(rows), self.text_column)
        reasons: dict[int, Reason] = {}
        stats = FilterStats(documents=frame.height)
        texts = frame.get_column(self.text_column).to_list() \
            if self.text_column in frame.columns else [None] * frame.height
        alive = []
        for i, t in enumerate(texts):
            if not isinstance(t, str) or not t.strip():
                what = "missing" if t is None else \
                    ("empty" if isinstance(t, str) else f"a {type(t).__name__}, not a string")
                reasons[i] = {"step": INPUT_STEP, "kind": INPUT_STEP,
                              "rule": f"a non-empty text in column {self.text_column!r}",
                              "value": what}
            else:
                alive.append(i)
        for n, step in enumerate(self.steps):
            if n == self._first_scored and unscored:
                still = []
                for i in alive:
                    if i in unscored:
                        reasons[i] = {"step": SCORES_STEP, "kind": SCORES_STEP,
                                      "rule": "scores for every step", "value": unscored[i]}
                    else:
                        still.append(i)
                alive = still
            if not alive:
                break
            sub = batch if len(alive) == frame.height else \
                Batch(frame[alive], [batch.ids[i] for i in alive],
                      [batch.rows[i] for i in alive], self.text_column)
            decided = step.decide(sub)
            if len(decided) != len(alive):
                raise ConfigError(f"step {step.title!r} decided {len(decided)} of "
                                  f"{len(alive)} rows", field="steps")
            still = []
            for i, reason in zip(alive, decided, strict=True):
                if reason is None:
                    still.append(i)
                else:
                    reasons[i] = reason
            alive = still
        for r in reasons.values():
            stats.dropped_by_step[r["step"]] = stats.dropped_by_step.get(r["step"], 0) + 1
        stats.kept = len(alive)
        self.stats.add(stats)
        dropped = sorted(reasons)
        return Decision(kept=alive, dropped=dropped, reasons=[reasons[i] for i in dropped])

    def run(self, docs: Iterable[Any], *,
            on_drop: Callable[[Any, Reason], None] | None = None) -> Iterator[Any]:
        """Yield the documents kept, in order; record each drop.

        Parameters
        ----------
        docs
            Mappings (with ``text_column``), plain strings, or
            :class:`auditor.io.Document` objects; each kept one is yielded as given.
        on_drop
            Called with each dropped document and its reason; by default they are
            appended to :attr:`dropped`.

        Raises
        ------
        ConfigError
            A step reads scores and no scorer gives them.
        """
        record = on_drop or (lambda doc, reason: self.dropped.append((doc, reason)))
        batch: list[Any] = []
        position = 0
        for doc in docs:
            batch.append(doc)
            if len(batch) == self.batch_size:
                yield from self._run_batch(batch, position, record)
                position += len(batch)
                batch = []
        if batch:
            yield from self._run_batch(batch, position, record)

    def _run_batch(self, docs: list[Any], position: int,
                   record: Callable[[Any, Reason], None]) -> Iterator[Any]:
        rows = [_as_mapping(d, self.text_column) for d in docs]
        keys = list(dict.fromkeys(k for r in rows for k in r))
        frame = pl.DataFrame({k: pl.Series(k, [r.get(k) for r in rows], strict=False)
                              for k in keys}) if keys else pl.DataFrame({self.text_column: []})
        if self.text_column not in frame.columns:
            frame = frame.with_columns(pl.lit(None, dtype=pl.String).alias(self.text_column))
        ids = [str(r[self.id_column]) if self.id_column and r.get(self.id_column) is not None
               else str(position + j) for j, r in enumerate(rows)]
        numbers = list(range(position, position + len(rows)))
        needed = self.score_columns(frame.columns)
        unscored: dict[int, str] = {}
        if needed:
            if self.scorer is None and any("." not in c for c in needed):
                self.check_scores(frame.columns, ())  # a plain name: a column typo
            if self.scorer is None:
                raise ConfigError(f"steps read {', '.join(needed)}: pass a scorer (e.g. "
                                  f"auditor.filter.ModelScorer(heads, lm=..., saes=...))",
                                  field="scorer")
            self.check_scores(frame.columns, self.scorer.columns())
            texts = [t if isinstance(t, str) else "" for t in frame[self.text_column]]
            scores, unscored = self.scorer.score(ids, texts, needed)
            frame = frame.hstack(scores.select(needed))
        else:
            self.check_scores(frame.columns, ())
        decision = self.decide(frame, ids, numbers, unscored=unscored)
        for i, reason in zip(decision.dropped, decision.reasons, strict=True):
            record(docs[i], reason)
        for i in decision.kept:
            yield docs[i]


def _as_mapping(doc: Any, text_column: str) -> Mapping[str, Any]:
    if isinstance(doc, Mapping):
        return doc
    if isinstance(doc, str):
        return {text_column: doc}
    text = getattr(doc, "text", None)
    if isinstance(text, str):  # auditor.io.Document and look-alikes
        return {**(getattr(doc, "extra", None) or {}), text_column: text,
                **({"id": doc.doc_id} if hasattr(doc, "doc_id") else {})}
    raise ConfigError(f"a document must be a mapping, a string or have .text, got "
                      f"{type(doc).__name__}", field="docs")
