"""Where a filter's score columns come from: heads' predictions and a feature store.

A step that reads ``<head>.p.<class>``, ``<head>.label`` or ``feature.<i>.<pooling>`` gets
them from a :class:`Scorer`: :class:`StoredScores` reads what a classify or audit run wrote
(predictions and store, for the rows of one input), :class:`ModelScorer` runs a loaded
model, its SAEs and the heads on each batch (for :meth:`Filter.run` over documents in
Python). Either answers, per batch, a frame aligned with the batch's rows, and the rows it
could not score (the extraction refused their text) with why.
"""

from __future__ import annotations

import re
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

import polars as pl

from auditor.errors import ConfigError

__all__ = ["ModelScorer", "Scorer", "StoredScores", "feature_frame", "parse_feature_column"]

_FEATURE = re.compile(r"^feature\.(?:(?P<sae>[^.]+)\.)?(?P<index>\d+)\.(?P<pooling>[a-z]+)$")


def parse_feature_column(name: str) -> tuple[str | None, int, str] | None:
    """``feature.7434.max`` → ``(None, 7434, 'max')``; ``None`` for another column.

    Examples
    --------
    >>> parse_feature_column("feature.l9.12.mean")
    ('l9', 12, 'mean')
    >>> parse_feature_column("safety.p.insult") is None
    True
    """
    m = _FEATURE.match(name)
    return None if m is None else (m["sae"], int(m["index"]), m["pooling"])


class Scorer(Protocol):
    """Gives score columns for batches of documents."""

    def columns(self) -> set[str]:
        """The score columns it can give."""
        ...

    def score(self, ids: Sequence[str], texts: Sequence[str], columns: Sequence[str]
              ) -> tuple[pl.DataFrame, dict[int, str]]:
        """``columns`` for the documents, one row each in order (null where unscored),
        and ``{position: why}`` for the documents it could not score."""
        ...


def feature_frame(store: str | Path, features: Sequence[str], *,
                  allow_partial: bool = False) -> pl.DataFrame:
    """``doc_id`` plus one column per ``feature.<i>.<pooling>`` name: the document's pooled
    activation (0 where the feature did not fire), in store order.

    Raises
    ------
    ConfigError
        A name is not a feature column, or names an SAE or pooling the store lacks.
    """
    from auditor.store import read_metadata, scan_features

    meta = read_metadata(store)
    keys = list((meta.get("saes") or {}).keys())
    poolings = list(meta.get("pooling") or meta.get("poolings") or [])
    lf = scan_features(store, allow_partial=allow_partial)
    schema = lf.collect_schema()
    columns: dict[str, pl.Expr] = {}
    for name in features:
        parsed = parse_feature_column(name)
        if parsed is None:
            raise ConfigError(f"{name!r} is not a feature column (feature.<index>.<pooling>)",
                              field=name)
        sae, index, pooling = parsed
        if sae is None:
            if len(keys) != 1:
                raise ConfigError(f"the store holds SAEs {keys}: name one, as "
                                  f"feature.<sae>.{index}.{pooling}", field=name)
            sae = keys[0]
        if f"{sae}.indices" not in schema:
            raise ConfigError(f"{name}: the store holds no SAE {sae!r} (it has "
                              f"{', '.join(keys)})", field=name)
        if f"{sae}.{pooling}" not in schema:
            have = [p for p in ("max", "mean", "sum", "count") if f"{sae}.{p}" in schema]
            raise ConfigError(f"{name}: the store was extracted with pooling "
                              f"{', '.join(have or poolings)}, not {pooling}", field=name)
        hit = pl.col(f"{sae}.indices").list.eval(pl.element() == index)
        values = pl.col(f"{sae}.{pooling}")
        # the activation at the feature's position, 0.0 when absent
        columns[name] = (values.list.get(hit.list.arg_max(), null_on_oob=True)
                         .cast(pl.Float64).fill_null(0.0)
                         * hit.list.any().cast(pl.Float64).fill_null(0.0))
    return lf.select(pl.col("doc_id"), *[e.alias(n) for n, e in columns.items()]).collect()


class StoredScores:
    """Scores a classify or audit run already wrote for one input.

    Parameters
    ----------
    predictions
        ``predictions.parquet`` (or ``.jsonl``), or ``None`` when no head is read.
    store
        The feature store, for ``feature.*`` columns (``None`` when none is read).
    features
        The feature columns the steps read.

    The rows are matched by document id; the predictions and store must be of the same
    input (the job checks their input fingerprint). Memory: the score columns of every
    document (a few numbers each), never their text.
    """

    def __init__(self, predictions: str | Path | None, store: str | Path | None = None, *,
                 features: Sequence[str] = ()) -> None:
        frame: pl.DataFrame | None = None
        if predictions is not None:
            from auditor.report.build import read_predictions

            frame = read_predictions(predictions).frame
        if features:
            if store is None:
                raise ConfigError("feature rules need a feature store", field="store")
            feats = feature_frame(store, features).rename({"doc_id": "id"})
            frame = feats if frame is None else frame.join(feats, on="id", how="left")
        if frame is None:
            raise ConfigError("no scores: give predictions or a store", field="predictions")
        self.frame = frame
        self._index = {doc_id: i for i, doc_id in enumerate(frame["id"].to_list())}

    def columns(self) -> set[str]:
        return set(self.frame.columns) - {"id"}

    def score(self, ids: Sequence[str], texts: Sequence[str], columns: Sequence[str]
              ) -> tuple[pl.DataFrame, dict[int, str]]:
        take = [self._index.get(i) for i in ids]
        missing = {j: "not scored: the extraction skipped this row (see the store's "
                      "bad rows)" for j, t in enumerate(take) if t is None}
        index = pl.Series([-1 if t is None else t for t in take], dtype=pl.Int64)
        sub = self.frame.select(columns)
        out = sub[index.clip(0, max(self.frame.height - 1, 0)).to_list()] if \
            self.frame.height else sub.clear(len(ids))
        if missing:
            mask = pl.Series([t is None for t in take])
            out = out.with_columns(pl.when(mask).then(None).otherwise(pl.col(c)).alias(c)
                                   for c in columns)
        return out, missing


class ModelScorer:
    """Score batches of texts with a loaded model, its SAEs and heads, in process.

    Parameters
    ----------
    heads
        :class:`~auditor.heads.Head` objects.
    lm, saes
        The loaded model and ``key -> SAE`` (e.g. ``auditor.jobs.load_pipeline(spec)``'s
        ``lm`` and ``saes``).
    explain
        Top contributing features kept per document and head (reasons show them).
    poolings
        Extra poolings to extract for feature rules (the heads' own are always there).

    Each batch is extracted into a temporary store with the heads' extraction settings,
    then classified: the same code a classify job runs, so a document scores the same
    here as in ``auditor classify``.
    """

    def __init__(self, heads: Sequence[Any], *, lm: Any, saes: Mapping[str, Any],
                 explain: int = 5, poolings: Sequence[str] = ()) -> None:
        from auditor.heads.settings import heads_extract_settings

        self.heads = list(heads)
        self.lm = lm
        self.saes = dict(saes)
        self.explain = explain
        settings = heads_extract_settings(self.heads) if self.heads else {}
        settings["poolings"] = sorted({*settings.get("poolings", ["max"]), *poolings})
        self.settings = settings
        names = [f"{h.name}.label" for h in self.heads]
        for h in self.heads:
            names += [f"{h.name}.p.{c}" for c in h.config.classes]
            names += [f"{h.name}.explain"] if explain else []
        self._columns = set(names)

    def columns(self) -> set[str]:
        return set(self._columns)

    def score(self, ids: Sequence[str], texts: Sequence[str], columns: Sequence[str]
              ) -> tuple[pl.DataFrame, dict[int, str]]:
        from auditor.errors import RowError
        from auditor.extract import ExtractConfig, extract_features
        from auditor.heads.classify import classify_store
        from auditor.io import Document

        docs, missing = [], {}
        for j, (doc_id, text) in enumerate(zip(ids, texts, strict=True)):
            if not text.strip():
                missing[j] = "not scored: the text is empty"
            else:
                docs.append(Document(row=j, doc_id=doc_id, text=text, extra={}))
        frame = pl.DataFrame({"id": list(ids)})
        if docs:
            config = ExtractConfig.from_dict({**ExtractConfig().to_dict(), **self.settings})
            with tempfile.TemporaryDirectory(prefix="auditor-filter-") as tmp:
                store = Path(tmp) / "store"
                try:
                    extract_features(docs, lm=self.lm, saes=self.saes, out=store,
                                     config=config, total=len(docs))
                except RowError as err:  # pragma: no cover - texts were checked above
                    raise ConfigError(str(err), field="text") from err
                scores: pl.DataFrame | None = None
                if self.heads:
                    scores = classify_store(store, self.heads, explain=self.explain)
                feats = [c for c in columns if parse_feature_column(c) is not None]
                if feats:
                    f = feature_frame(store, feats).rename({"doc_id": "id"})
                    scores = f if scores is None else scores.join(f, on="id", how="left")
            if scores is not None:
                frame = frame.join(scores, on="id", how="left", maintain_order="left")
        out = pl.DataFrame({c: frame[c] if c in frame.columns else
                            pl.Series(c, [None] * len(ids)) for c in columns})
        return out, missing

