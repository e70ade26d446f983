"""Label every document of a feature store with every head, optionally with explanations.

One output row per document, keyed by ``id``; for each head ``H``: ``H.label`` and
``H.p.<class>`` (calibrated probability) per class, and with ``explain > 0`` the list
``H.explain`` of the top contributing SAE features ``{feature, contribution, activation,
label, present, example}`` (``label`` and ``example``, one top context, from the SAE's
feature dictionary when there is one): first up to ``explain`` features that fired
(``present`` true), then up to ``explain`` features whose *not* firing contributed
(``present`` false, activation 0: absent evidence, see
:mod:`auditor.explain.contributions`), each kind largest ``|contribution|`` first. For a
binary head the contributions are to the positive class's score (negative values argue
against it); for a multiclass head to the predicted class's score. ``H.explained`` is the
share of the score's feature part the features cover (1.0 except for raw-activation heads,
see :mod:`auditor.explain.decompose`).

A head with an out-of-domain model (:mod:`auditor.heads.domain`; heads trained before it
have none) also writes, after its probabilities, ``H.domain_score`` (mean cosine similarity
to its nearest training documents) and ``H.in_domain`` (the score is at least the head's
domain threshold, so the document looks like the head's training data).

A multilabel head ``H`` writes ``H.labels`` (the labels present, i.e. with ``p`` at least
their threshold, most probable first; possibly empty) before ``H.label`` (the most
probable present label, null when none is present) and ``H.p.<label>`` (each label's
probability of being present); ``H.explain`` and ``H.explained`` are about the score of
``H.label``, or of the most probable label when none is present.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from auditor.errors import ConfigError

__all__ = ["EXPLAIN_DTYPE", "classify_store", "write_predictions"]

#: The struct of one ``H.explain`` entry.
EXPLAIN_DTYPE = pl.List(pl.Struct({"feature": pl.UInt32, "contribution": pl.Float64,
                                   "activation": pl.Float64, "label": pl.String,
                                   "present": pl.Boolean, "example": pl.String}))


def classify_store(
    store: str | Path, heads: Sequence[Any], *, explain: int = 0,
    feature_labels: Mapping[int, str] | Callable[[int], str | None] | None = None,
    allow_partial: bool = False,
    feature_examples: Mapping[int, str] | Callable[[int], str | None] | None = None,
) -> pl.DataFrame:
    """Apply heads to a feature store.

    Parameters
    ----------
    store
        Feature store extracted with settings every head accepts.
    heads
        :class:`~auditor.heads.Head` objects.
    explain
        Number of top contributing features of each kind (fired / did not fire) per
        document and head (0: none).
    feature_labels
        Feature index → short label (a mapping or a callable), shown in explanations.
    feature_examples
        Feature index → one example context (a mapping or a callable), the entries'
        ``example``.
    allow_partial
        Label an incomplete store's done shards instead of refusing it.

    Returns
    -------
    polars.DataFrame
        ``id`` then each head's columns (see the module docstring; multilabel heads add
        ``H.labels``, heads with a domain model ``H.domain_score`` and ``H.in_domain``).

    Raises
    ------
    ProvenanceMismatch
        A head refuses the store (other model / SAE / layer / settings).
    ConfigError
        No heads, or two heads with the same name.
    """
    if not heads:
        raise ConfigError("no heads to apply", field="heads")
    names = [h.name for h in heads]
    if len(set(names)) != len(names):
        raise ConfigError(f"head names must be unique, got {names}", field="heads")
    label_of = _labeller(feature_labels)
    example_of = _labeller(feature_examples)
    columns: dict[str, Any] = {}
    ids: list[str] | None = None
    for head in heads:
        inputs = head.read(store, allow_partial=allow_partial)
        if ids is None:
            ids = inputs.doc_ids
            columns["id"] = pl.Series("id", ids, dtype=pl.String)
        elif inputs.doc_ids != ids:
            raise ConfigError("heads read differently ordered documents", field="heads")
        # no document (an empty input, every row skipped): an empty answer, not a probe
        # asked to score zero rows
        proba = head.predict_proba(inputs) if inputs.doc_ids else \
            np.zeros((0, len(head.config.classes)))
        if head.config.multilabel:
            sets = head.label_sets(proba)
            columns[f"{head.name}.labels"] = pl.Series(sets, dtype=pl.List(pl.String))
            columns[f"{head.name}.label"] = pl.Series([s[0] if s else None for s in sets],
                                                      dtype=pl.String)
        else:
            columns[f"{head.name}.label"] = pl.Series(head.labels(proba).astype(str).tolist(),
                                                      dtype=pl.String)
        for j, cls in enumerate(head.config.classes):
            columns[f"{head.name}.p.{cls}"] = pl.Series(proba[:, j], dtype=pl.Float64)
        domain = head.domain_scores(inputs)
        if domain is not None:
            columns[f"{head.name}.domain_score"] = pl.Series(domain, dtype=pl.Float64)
            columns[f"{head.name}.in_domain"] = pl.Series(head.domain.in_domain(domain),
                                                          dtype=pl.Boolean)
        if explain > 0 and not inputs.doc_ids:
            columns[f"{head.name}.explain"] = pl.Series([], dtype=EXPLAIN_DTYPE)
            columns[f"{head.name}.explained"] = pl.Series([], dtype=pl.Float64)
        elif explain > 0:
            contrib = head.contributions(inputs)
            predicted = head.explained_labels(proba)
            rows = []
            for i, label in enumerate(predicted):
                ev = contrib.evidence(i, output=contrib.output_index(label), k=explain,
                                      activations=inputs.activations)
                rows.append([{"feature": f.feature, "contribution": f.contribution,
                              "activation": f.activation, "label": label_of(f.feature),
                              "present": f.present, "example": example_of(f.feature)}
                             for f in [*ev.present, *ev.absent]])
            columns[f"{head.name}.explain"] = pl.Series(rows, dtype=EXPLAIN_DTYPE)
            cov = contrib.coverage()
            out_idx = [contrib.output_index(lab) for lab in predicted]
            columns[f"{head.name}.explained"] = pl.Series(
                cov[np.arange(len(predicted)), out_idx], dtype=pl.Float64)
    return pl.DataFrame(columns)


def _labeller(labels: Mapping[int, str] | Callable[[int], str | None] | None
              ) -> Callable[[int], str | None]:
    if labels is None:
        return lambda f: None
    if callable(labels):
        return labels
    return lambda f: labels.get(f)


def write_predictions(frame: pl.DataFrame, out: str | Path, *,
                      provenance: Mapping[str, Any]) -> Path:
    """Write predictions as Parquet (provenance in the file metadata) or JSONL (plus a
    ``.provenance.json`` sidecar), atomically.

    Raises
    ------
    ConfigError
        The extension is neither ``.parquet`` nor ``.jsonl``.
    """
    import json
    import os
    import tempfile

    from auditor._files import apply_umask, atomic_write_text

    path = Path(out)
    suffix = path.suffix.lower()
    if suffix not in (".parquet", ".jsonl"):
        raise ConfigError(f"a predictions file must end in .parquet or .jsonl, got "
                          f"{path.name!r}", path=path, field="out")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    os.close(fd)
    apply_umask(tmp)
    try:
        meta = json.dumps(dict(provenance), default=str)
        if suffix == ".parquet":
            import pyarrow.parquet as pq

            from auditor.store import METADATA_KEY

            table = frame.to_arrow()
            table = table.replace_schema_metadata({**(table.schema.metadata or {}),
                                                   METADATA_KEY.encode(): meta.encode()})
            pq.write_table(table, tmp, compression="zstd")
        else:
            frame.write_ndjson(tmp)
            side = path.with_name(path.name + ".provenance.json")
            atomic_write_text(side, json.dumps(dict(provenance), indent=2, default=str))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path
