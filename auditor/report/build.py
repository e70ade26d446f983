"""Assemble the data of a corpus report from a feature store and optional side inputs.

:func:`build_report` returns one JSON-serialisable dict, which *is* the JSON format of the
report; the HTML and Markdown renderers (:mod:`auditor.report.render`) only format it.

Inputs
------
* the feature store (required): corpus size, token counts, active features, feature
  density and the provenance (model, layer, SAE hash, pooling, auditor version, input
  fingerprint);
* predictions of ``auditor classify`` (optional, Parquet or JSONL, one row per document):
  column ``id`` (the store's doc id) and per head ``H``: ``H.label``, ``H.p.<class>`` and
  optionally ``H.explain`` (a list of ``{feature, contribution, activation, label,
  present}``; ``present`` false marks a feature whose *not firing* contributed).
  Heads are discovered from the column names;
* the input texts (optional): empty / overlong rows, near duplicates, text snippets;
* feature labels and example contexts (optional mappings or callables);
* a previous report (optional): drift (see :mod:`auditor.report.drift`).
"""

from __future__ import annotations

import datetime as _dt
import json
import math
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import polars as pl
import scipy.sparse as sp

from auditor import __version__
from auditor._files import read_json
from auditor.cancel import CancelToken, check_cancel
from auditor.errors import ColumnError, ConfigError, InputError, InputFileError, RowError
from auditor.report.dedup import NearDuplicateFinder
from auditor.report.drift import REPORT_FORMAT, REPORT_VERSION, compare_reports, load_report

if TYPE_CHECKING:
    from auditor.progress import Stage

__all__ = [
    "DEFAULT_FLAGS",
    "FeatureExamples",
    "FeatureLabels",
    "Predictions",
    "add_drift",
    "add_texts",
    "build_report",
    "build_statistics",
    "domain_section",
    "load_feature_labels",
    "read_predictions",
    "store_doc_ids",
]

FeatureLabels = Mapping[int, str] | Callable[[int], "str | None"]
FeatureExamples = Mapping[int, Sequence[str]] | Callable[[int], "Sequence[str] | None"]

#: Labels flagged by default, per head; only the heads and labels that the predictions have
#: (as a ``H.p.<class>`` column or a predicted label) are used. The shipped safety head
#: predicts ``insult`` / ``benign``, the quality head ``spam`` / ``ham``.
DEFAULT_FLAGS: dict[str, tuple[str, ...]] = {
    "safety": ("unsafe", "insult", "toxic"),
    "quality": ("spam",),
}
_SNIPPET = 240
_EXAMPLE = 160
_SCORE_BINS = 20
_BATCH = 256  # texts read between two cancel checks / progress updates
_NONE_LABEL = "(none)"
_P_RE = re.compile(r"^(?P<head>.+?)\.p\.(?P<cls>.+)$")


# --------------------------------------------------------------------------- small helpers


def _jsonable(value: Any) -> Any:
    """Plain JSON types only: numpy scalars unwrapped, non-finite floats to None."""
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return [_jsonable(v) for v in value.tolist()]
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        f = float(value)
        return f if math.isfinite(f) else None
    if value is None or isinstance(value, str):
        return value
    return str(value)


def _snippet(text: str, limit: int = _SNIPPET) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 1].rstrip() + "…"


def _describe(values: np.ndarray) -> dict[str, Any]:
    if values.size == 0:
        return {"total": 0, "mean": None, "median": None, "p05": None, "p95": None,
                "min": None, "max": None}
    v = values.astype(np.float64)
    return {
        "total": int(values.sum()),
        "mean": float(v.mean()),
        "median": float(np.median(v)),
        "p05": float(np.percentile(v, 5)),
        "p95": float(np.percentile(v, 95)),
        "min": int(values.min()),
        "max": int(values.max()),
    }


def _int_histogram(values: np.ndarray, *, max_bins: int = 30) -> dict[str, list[Any]]:
    """Histogram of integers: at most ``max_bins`` equal integer-width bins whose edges lie
    half-way between integers (a bin of width 1 is centred on its value)."""
    if values.size == 0:
        return {"edges": [], "counts": []}
    lo, hi = int(values.min()), int(values.max())
    width = max(1, math.ceil((hi - lo + 1) / max_bins))
    n_bins = math.ceil((hi - lo + 1) / width)
    edges = lo - 0.5 + width * np.arange(n_bins + 1, dtype=np.float64)
    counts, _ = np.histogram(values, bins=edges)
    return {"edges": edges.tolist(), "counts": counts.astype(int).tolist()}


def _label_fn(labels: FeatureLabels | None) -> Callable[[int], str | None]:
    if labels is None:
        return lambda _f: None
    if isinstance(labels, Mapping):
        table = labels

        def from_map(f: int) -> str | None:
            value = table.get(f)
            if value is None:
                value = table.get(str(f))  # type: ignore[call-overload]
            return None if value is None else str(value)

        return from_map
    fn = labels

    def from_fn(f: int) -> str | None:
        value = fn(f)
        return None if value is None else str(value)

    return from_fn


def _examples_fn(examples: FeatureExamples | None) -> Callable[[int], list[str]]:
    if examples is None:
        return lambda _f: []
    get: Callable[[int], Sequence[str] | None]
    if isinstance(examples, Mapping):
        table = examples

        def from_map(f: int) -> Sequence[str] | None:
            value = table.get(f)
            return table.get(str(f)) if value is None else value  # type: ignore[call-overload]

        get = from_map
    else:
        get = examples

    def fn(f: int) -> list[str]:
        value = get(f) or []
        return [_snippet(str(x), _EXAMPLE) for x in list(value)[:3]]

    return fn


def load_feature_labels(path: str | Path) -> tuple[dict[int, str], dict[int, list[str]]]:
    """Read feature labels (and example contexts) from a JSON file.

    Accepted shapes: ``{"12": "label"}``; ``{"12": {"label": …, "examples": […]}}``;
    a list of ``{"feature": 12, "label": …, "examples": […]}``; or any of these under a
    top-level ``"features"`` or ``"labels"`` key. ``"contexts"`` is accepted for
    ``"examples"``.

    Parameters
    ----------
    path : str or Path
        The JSON file.

    Returns
    -------
    labels, examples
        Feature index → label, feature index → example contexts.

    Raises
    ------
    InputFileError
        The file is missing, not JSON, or of none of the accepted shapes.
    """
    src = Path(path)
    try:
        data = json.loads(src.read_text(encoding="utf-8"))
    except FileNotFoundError as e:
        raise InputFileError("no such feature-label file", path=src) from e
    except (OSError, ValueError) as e:
        raise InputFileError(f"cannot read the feature-label JSON: {e}", path=src) from e
    if isinstance(data, dict):
        for key in ("features", "labels"):
            if key in data and isinstance(data[key], (dict, list)):
                data = data[key]
                break
    items: Iterable[tuple[Any, Any]]
    if isinstance(data, dict):
        items = data.items()
    elif isinstance(data, list):
        try:
            items = [(d["feature"], d) for d in data]
        except (TypeError, KeyError) as e:
            raise InputFileError("a list of feature labels needs a 'feature' in every entry",
                                 path=src, field="feature") from e
    else:
        raise InputFileError("feature labels must be a JSON object or list", path=src)
    labels: dict[int, str] = {}
    examples: dict[int, list[str]] = {}
    for key, value in items:
        try:
            feature = int(key)
        except (TypeError, ValueError) as e:
            raise InputFileError(f"feature {key!r} is not an integer", path=src) from e
        if isinstance(value, str):
            labels[feature] = value
        elif isinstance(value, dict):
            if value.get("label") is not None:
                labels[feature] = str(value["label"])
            ex = value.get("examples", value.get("contexts"))
            if isinstance(ex, list):
                examples[feature] = [str(x.get("text", x)) if isinstance(x, dict) else str(x)
                                     for x in ex]
        elif value is not None:
            raise InputFileError(f"feature {feature}: expected a label string or an object",
                                 path=src)
    return labels, examples


# --------------------------------------------------------------------------- predictions


@dataclass
class Predictions:
    """A predictions table of ``auditor classify``.

    Parameters
    ----------
    frame : polars.DataFrame
        The rows, ``id`` cast to string.
    heads : dict of str to list of str
        Head → its classes (from the ``H.p.<class>`` columns, in column order).
    explain : set of str
        Heads that have an ``H.explain`` column.
    source : str or None
        The file it was read from.
    domain : set of str
        Heads that have an ``H.in_domain`` column (an out-of-domain model).
    """

    frame: pl.DataFrame
    heads: dict[str, list[str]]
    explain: set[str]
    source: str | None
    domain: set[str] = field(default_factory=set)


def _read_table(src: Path) -> pl.DataFrame:
    if not src.is_file():
        raise InputFileError("no such predictions file", path=src)
    name = src.name.lower()
    try:
        with open(src, "rb") as f:
            magic = f.read(4)
        if name.endswith(".parquet") or magic == b"PAR1":
            return pl.read_parquet(src)
        if name.endswith((".jsonl", ".ndjson", ".json")):
            if src.stat().st_size == 0:
                return pl.DataFrame()
            return pl.read_ndjson(src, infer_schema_length=None)
    except (OSError, pl.exceptions.PolarsError, ValueError) as e:
        raise InputFileError(f"cannot read predictions: {e}", path=src) from e
    raise InputFileError("predictions must be a .parquet or .jsonl file", path=src)


def read_predictions(
    source: str | Path | pl.DataFrame, *, store_ids: Sequence[str] | None = None
) -> Predictions:
    """Read and check a predictions table.

    Parameters
    ----------
    source : str, Path or polars.DataFrame
        A Parquet or JSONL file (or a frame) with ``id``, ``H.label``, ``H.p.<class>`` and
        optionally ``H.explain`` per head ``H``.
    store_ids : sequence of str or None
        The feature store's doc ids; every prediction id must be one of them.

    Returns
    -------
    Predictions

    Raises
    ------
    InputFileError
        The file is missing, unreadable or of an unknown type.
    ColumnError
        ``id`` is missing, there is no head, a head lacks ``H.label`` or any ``H.p.<class>``,
        or a probability column is not numeric.
    InputError
        An id is null or repeated, a probability is NaN or outside [0, 1], the table is
        empty while the store is not, or ids are not in the store (the message names the
        file and the count).
    """
    path = None if isinstance(source, pl.DataFrame) else Path(source)
    frame = source if isinstance(source, pl.DataFrame) else _read_table(Path(source))
    where = path if path is not None else "<predictions>"
    if "id" not in frame.columns:
        raise ColumnError(f"no 'id' column; columns: {', '.join(frame.columns) or '(none)'}",
                          path=where, field="id")
    if frame.height == 0 and (store_ids is None or len(store_ids) > 0):
        # (an empty store's predictions are rightly empty)
        raise InputError("the predictions table has no rows", path=where)
    label_heads = [c[: -len(".label")] for c in frame.columns if c.endswith(".label")]
    p_cols: dict[str, list[str]] = {}
    for c in frame.columns:
        m = _P_RE.match(c)
        if m is None:
            continue
        head = next((h for h in label_heads if c.startswith(f"{h}.p.")), m.group("head"))
        p_cols.setdefault(head, []).append(c)
    if not label_heads and not p_cols:
        raise ColumnError("no prediction heads: expected columns such as 'safety.label' and "
                          f"'safety.p.<class>'; columns: {', '.join(frame.columns)}",
                          path=where, field="label")
    for head in p_cols:
        if head not in label_heads:
            raise ColumnError(f"head {head!r} has probability columns but no {head}.label",
                              path=where, field=f"{head}.label")
    heads: dict[str, list[str]] = {}
    for head in label_heads:
        cols = p_cols.get(head, [])
        if not cols:
            raise ColumnError(f"head {head!r} has no probability columns '{head}.p.<class>'",
                              path=where, field=f"{head}.p")
        for c in cols:
            if not frame.schema[c].is_numeric():
                raise ColumnError(f"probability column is {frame.schema[c]}, not numeric",
                                  path=where, field=c)
            values = frame[c].cast(pl.Float64)
            bad = int((values.is_nan() | (values < -1e-6) | (values > 1 + 1e-6)).sum())
            if bad:
                raise InputError(f"{bad} probabilities are NaN or outside [0, 1]",
                                 path=where, field=c)
        heads[head] = [c[len(head) + 3:] for c in cols]
    frame = frame.with_columns(pl.col("id").cast(pl.String))
    nulls = frame["id"].null_count()
    if nulls:
        raise InputError(f"{nulls} rows have a null id", path=where, field="id")
    dupes = frame.height - frame["id"].n_unique()
    if dupes:
        example = frame["id"].filter(frame["id"].is_duplicated()).unique().head(3).to_list()
        raise InputError(f"{dupes} repeated ids (e.g. {', '.join(map(repr, example))})",
                         path=where, field="id")
    frame = frame.with_columns(pl.col(f"{h}.label").cast(pl.String) for h in heads)
    if store_ids is not None:
        known = pl.Series("id", list(store_ids), dtype=pl.String)
        unknown = frame["id"].filter(~frame["id"].is_in(known.implode()))
        if unknown.len():
            shown = ", ".join(map(repr, unknown.head(3).to_list()))
            raise InputError(
                f"{unknown.len()} of {frame.height} prediction ids are not in the feature "
                f"store (e.g. {shown}); were they made from another store?",
                path=where, field="id")
    explain = {h for h in heads if f"{h}.explain" in frame.columns}
    domain = {h for h in heads if f"{h}.in_domain" in frame.columns}
    for h in sorted(domain):
        if frame.schema[f"{h}.in_domain"] != pl.Boolean:
            raise ColumnError(f"in-domain column is {frame.schema[f'{h}.in_domain']}, not "
                              f"boolean", path=where, field=f"{h}.in_domain")
    return Predictions(frame=frame, heads=heads, explain=explain,
                       source=None if path is None else str(path), domain=domain)


def domain_section(preds: Predictions) -> dict[str, Any] | None:
    """How many documents lie outside each head's domain and outside every head's.

    Parameters
    ----------
    preds : Predictions
        With ``H.in_domain`` columns for the heads that have a domain model.

    Returns
    -------
    dict or None
        None when no head has domain columns; else ``documents`` (M), ``heads`` (those
        with domain columns), ``outside`` (head → documents with ``in_domain`` false),
        ``outside_every`` (documents outside every one of those heads' domains) and
        ``unknown`` (documents with a missing ``in_domain`` for some head: not counted
        as outside that head's domain).
    """
    heads = [h for h in preds.heads if h in preds.domain]
    if not heads:
        return None
    frame = preds.frame
    outside = {}
    every = np.ones(frame.height, dtype=bool)
    unknown = np.zeros(frame.height, dtype=bool)
    for h in heads:
        col = frame[f"{h}.in_domain"]
        known = col.is_not_null().to_numpy()
        out = known & ~col.fill_null(True).to_numpy().astype(bool)
        outside[h] = int(out.sum())
        every &= out
        unknown |= ~known
    return {"documents": int(frame.height), "heads": heads, "outside": outside,
            "outside_every": int(every.sum()), "unknown": int(unknown.sum())}


def _explanation(raw: Any, label_of: Callable[[int], str | None], *, top: int = 5
                 ) -> list[dict[str, Any]]:
    """The top ``top`` features that fired, then the top ``top`` whose not firing
    contributed (``present`` false), each kind by ``|contribution|``; an entry without
    ``present`` (older predictions) counts as fired."""
    out: list[dict[str, Any]] = []
    if not isinstance(raw, list):
        return out
    for item in raw:
        if not isinstance(item, Mapping) or item.get("feature") is None:
            continue
        try:
            feature = int(item["feature"])
        except (TypeError, ValueError):
            continue
        label = item.get("label") or label_of(feature)
        out.append({"feature": feature,
                    "contribution": _jsonable(item.get("contribution")),
                    "activation": _jsonable(item.get("activation")),
                    "label": label, "present": item.get("present") is not False})
    out.sort(key=lambda e: -abs(e["contribution"] or 0.0))
    return ([e for e in out if e["present"]][:top]
            + [e for e in out if not e["present"]][:top])


# --------------------------------------------------------------------------- sections


def _provenance(meta: Mapping[str, Any], *, store: Path, sae: str, pooling: str,
                summary: Mapping[str, Any]) -> dict[str, Any]:
    model = meta.get("model") or {}
    sae_info = (meta.get("saes") or {}).get(sae) or {}
    return {
        "model": {k: model.get(k) for k in ("id", "weights_sha256", "dtype", "n_layers",
                                            "d_model", "converted_from")},
        "sae": {"key": sae, **{k: sae_info.get(k) for k in (
            "layer", "hook_point", "d_sae", "k", "activation", "sha256", "format", "path")}},
        "layer": sae_info.get("layer"),
        "pooling": pooling,
        "poolings_stored": list(meta.get("pooling") or []),
        "max_length": meta.get("max_length"),
        "auditor_version": meta.get("auditor_version"),
        "libraries": meta.get("libraries"),
        "report_auditor_version": __version__,
        "input": {"path": (meta.get("input") or {}).get("path"),
                  "fingerprint": (meta.get("input") or {}).get("fingerprint")},
        "store": {"path": str(store), "documents_extracted": summary.get("docs"),
                  "truncated_docs": summary.get("truncated_docs"),
                  "bad_rows": summary.get("bad_rows")},
    }


def _read_summary(store: Path) -> dict[str, Any]:
    try:
        manifest = read_json(store / "store.json", what="store manifest")
    except InputFileError:
        return {}
    summary = manifest.get("summary")
    return summary if isinstance(summary, dict) else {}


def _top_features(
    X: sp.csr_matrix,
    labels: np.ndarray,
    doc_ids: Sequence[str],
    *,
    top: int,
    label_of: Callable[[int], str | None],
    examples_of: Callable[[int], list[str]],
) -> tuple[dict[str, list[dict[str, Any]]], set[str]]:
    """Per label, the features most over-represented in its documents (vs the rest)."""
    n, d = X.shape
    classes = [c for c in dict.fromkeys(labels.tolist()) if c != _NONE_LABEL]
    out: dict[str, list[dict[str, Any]]] = {}
    wanted_docs: set[str] = set()
    if n == 0 or not classes:
        return out, wanted_docs
    code = {c: i for i, c in enumerate(classes)}
    rows = np.array([code.get(x, -1) for x in labels.tolist()])
    keep = rows >= 0
    G = sp.csr_matrix((np.ones(int(keep.sum())), (rows[keep], np.flatnonzero(keep))),
                      shape=(len(classes), n))
    Xf = X.astype(np.float64)
    fired = Xf.copy()
    fired.data = (fired.data > 0).astype(np.float64)
    sums = np.asarray((G @ Xf).todense())
    fires = np.asarray((G @ fired).todense())
    total_sum = np.asarray(Xf.sum(axis=0)).ravel()
    total_fire = np.asarray(fired.sum(axis=0)).ravel()
    sizes = np.asarray(G.sum(axis=1)).ravel()
    Xc = X.tocsc()
    for c, i in code.items():
        n_in = int(sizes[i])
        n_out = n - n_in
        if n_in == 0 or n_out == 0:
            out[c] = []
            continue
        mean_in = sums[i] / n_in
        mean_out = (total_sum - sums[i]) / n_out
        c_in = fires[i]
        c_out = total_fire - fires[i]
        diff = mean_in - mean_out
        order = np.lexsort((np.arange(d), -diff))
        items = []
        in_rows = rows == i
        for f in order[:top]:
            if diff[f] <= 0:
                break
            col = Xc.getcol(int(f))
            docs = [(float(v), int(r)) for r, v in zip(col.indices, col.data, strict=True)
                    if in_rows[r] and v > 0]
            docs.sort(key=lambda t: (-t[0], t[1]))
            top_docs = [doc_ids[r] for _, r in docs[:3]]
            wanted_docs.update(top_docs)
            items.append({
                "feature": int(f),
                "label": label_of(int(f)),
                "mean_in": float(mean_in[f]),
                "mean_out": float(mean_out[f]),
                "mean_diff": float(diff[f]),
                "fire_in": float(c_in[f] / n_in),
                "fire_out": float(c_out[f] / n_out),
                "fire_ratio": float(((c_in[f] + 1) / (n_in + 2)) / ((c_out[f] + 1) / (n_out + 2))),
                "examples": examples_of(int(f)),
                "top_docs": [{"doc_id": t, "snippet": None} for t in top_docs],
            })
        out[c] = items
    return out, wanted_docs


def _heads_section(
    preds: Predictions,
    *,
    X: sp.csr_matrix,
    doc_ids: Sequence[str],
    store_index: Mapping[str, int],
    top_features: int,
    label_of: Callable[[int], str | None],
    examples_of: Callable[[int], list[str]],
) -> tuple[dict[str, Any], set[str]]:
    frame = preds.frame
    rows = np.array([store_index[i] for i in frame["id"].to_list()], dtype=np.int64)
    Xp = X[rows]
    pred_ids = frame["id"].to_list()
    wanted: set[str] = set()
    heads: dict[str, Any] = {}
    for head, classes in preds.heads.items():
        labels = np.array(frame[f"{head}.label"].fill_null(_NONE_LABEL).to_list(), dtype=object)
        # a multilabel head also writes H.labels: count (and profile) every present label
        sets = (frame[f"{head}.labels"].to_list() if f"{head}.labels" in frame.columns
                else None)
        counted: dict[str, int] = {}
        for present in (sets if sets is not None else [[lab] for lab in labels.tolist()]):
            for lab in (present or [_NONE_LABEL]):
                counted[lab] = counted.get(lab, 0) + 1
        order = [c for c in classes if c in counted]
        order += sorted((c for c in counted if c not in order), key=lambda c: -counted[c])
        label_counts = {c: counted[c] for c in order}
        scores = {}
        edges = np.linspace(0.0, 1.0, _SCORE_BINS + 1)
        for cls in classes:
            p = frame[f"{head}.p.{cls}"].cast(pl.Float64).drop_nulls().to_numpy()
            counts, _ = np.histogram(np.clip(p, 0.0, 1.0), bins=edges)
            scores[cls] = {"edges": edges.round(6).tolist(), "counts": counts.tolist(),
                           "mean": float(p.mean()) if p.size else None}
        if sets is None:
            feats, docs = _top_features(Xp, labels, pred_ids, top=top_features,
                                        label_of=label_of, examples_of=examples_of)
        else:
            feats, docs = {}, set()
            for cls in classes:  # each label against the documents without it
                has = np.array([cls in (p or []) for p in sets], dtype=bool)
                one, got = _top_features(Xp, np.where(has, cls, _NONE_LABEL).astype(object),
                                         pred_ids, top=top_features, label_of=label_of,
                                         examples_of=examples_of)
                feats.update(one)
                docs |= got
        wanted |= docs
        heads[head] = {
            "classes": classes,
            "documents": int(frame.height),
            "multilabel": sets is not None,
            "label_counts": label_counts,
            "label_shares": {c: v / frame.height for c, v in label_counts.items()},
            "scores": scores,
            "top_features": feats,
        }
    return heads, wanted


def _resolve_flags(preds: Predictions, flags: Mapping[str, Sequence[str]] | None
                   ) -> dict[str, list[str]]:
    if flags is None:
        rules: dict[str, list[str]] = {}
        for head, labels in DEFAULT_FLAGS.items():
            if head not in preds.heads:
                continue
            seen = set(preds.heads[head]) | set(
                preds.frame[f"{head}.label"].drop_nulls().unique().to_list())
            kept = [lab for lab in labels if lab in seen]
            if kept:
                rules[head] = kept
        return rules
    unknown = [h for h in flags if h not in preds.heads]
    if unknown:
        raise ConfigError(f"flag rules name unknown heads: {', '.join(unknown)}; the "
                          f"predictions have: {', '.join(preds.heads)}", field="flags")
    return {h: list(v) for h, v in flags.items()}


def _flagged_section(
    preds: Predictions,
    *,
    rules: Mapping[str, Sequence[str]],
    max_flagged: int,
    label_of: Callable[[int], str | None],
) -> dict[str, Any]:
    frame = preds.frame
    entries: list[dict[str, Any]] = []
    counts: dict[str, dict[str, int]] = {}
    for head, flagged_labels in rules.items():
        labels = frame[f"{head}.label"].to_list()
        ids = frame["id"].to_list()
        explain = (frame[f"{head}.explain"].to_list() if head in preds.explain
                   else [None] * frame.height)
        counts[head] = {}
        for lab in flagged_labels:
            pcol = f"{head}.p.{lab}"
            probs = (frame[pcol].cast(pl.Float64).to_list() if pcol in frame.columns
                     else [None] * frame.height)
            hits = [i for i, x in enumerate(labels) if x == lab]
            counts[head][lab] = len(hits)
            for i in hits:
                entries.append({"doc_id": ids[i], "head": head, "label": lab,
                                "probability": probs[i],
                                "explanation": _explanation(explain[i], label_of),
                                "snippet": None})
    entries.sort(key=lambda e: (-(e["probability"] if e["probability"] is not None else -1.0),
                                e["head"], e["doc_id"]))
    return {"rules": {h: list(v) for h, v in rules.items()}, "counts": counts,
            "total": len(entries), "shown": min(len(entries), max_flagged),
            "documents": entries[:max_flagged]}


def _classify_row_error(err: RowError) -> str:
    msg = err.message
    if "empty or whitespace-only" in msg or msg == "text is null":
        return "empty"
    if "more than max_chars" in msg:
        return "overlong"
    return "other"


def _texts_section(
    path: Path,
    *,
    store_index: Mapping[str, int],
    wanted: set[str],
    text_column: str,
    id_column: str | None,
    max_chars: int,
    finder: NearDuplicateFinder | None,
    fingerprint: str | None,
    stage: Stage | None = None,
    cancel: CancelToken | None = None,
) -> tuple[dict[str, Any], dict[str, str]]:
    from auditor.io import (
        ROW_NUMBERS,
        describe_ids,
        input_fingerprint,
        read_documents,
        resolve_id_column,
    )

    errors: list[RowError] = []
    snippets: dict[str, str] = {}
    chars: list[int] = []
    read = not_in_store = 0
    seen: set[str] = set()
    first_id: str | None = None
    for doc in read_documents(path, text_column=text_column, id_column=id_column,
                              max_chars=max_chars, skip_bad_rows=True, errors=errors):
        read += 1
        first_id = doc.doc_id if first_id is None else first_id
        if read % _BATCH == 0:
            check_cancel(cancel, f"text {read}")
            if stage is not None:
                stage.update(read, docs=read, bad_rows=len(errors))
        if doc.doc_id not in store_index:
            not_in_store += 1
            continue
        seen.add(doc.doc_id)
        chars.append(len(doc.text))
        if doc.doc_id in wanted:
            snippets[doc.doc_id] = _snippet(doc.text)
        if finder is not None:
            finder.add(doc.doc_id, doc.text)
    if store_index and read and not seen:
        used = resolve_id_column(path, id_column)
        raise InputError(
            f"none of the {read} texts is a document of the feature store: the texts are "
            f"keyed by {describe_ids(used)} (e.g. {first_id!r}), the store's documents "
            f"otherwise (e.g. {next(iter(store_index))!r}); set id_column to the ids the "
            f"extraction used ({ROW_NUMBERS!r} for row numbers)",
            path=path, field=used or "row number")
    if stage is not None:
        stage.update(read, docs=read, bad_rows=len(errors))
    kinds = {"empty": 0, "overlong": 0, "other": 0}
    for err in errors:
        kinds[_classify_row_error(err)] += 1
    here = input_fingerprint(path)
    section = {
        "path": str(path),
        "fingerprint": here,
        "fingerprint_matches_store": (here == fingerprint) if fingerprint else None,
        "rows_read": read + len(errors),
        "documents": read,
        "matched_store": len(seen),
        "not_in_store": not_in_store,
        "store_docs_without_text": len(store_index) - len(seen),
        "empty": kinds["empty"],
        "overlong": kinds["overlong"],
        "max_chars": max_chars,
        "other_bad_rows": kinds["other"],
        "bad_row_examples": [str(e) for e in errors[:5]],
        "chars": _describe(np.asarray(chars, dtype=np.int64)),
    }
    return section, snippets


def _fill_snippets(report: dict[str, Any], snippets: Mapping[str, str]) -> None:
    for doc in report["flagged"]["documents"] if report.get("flagged") else []:
        doc["snippet"] = snippets.get(doc["doc_id"])
    for head in (report.get("heads") or {}).values():
        for items in head["top_features"].values():
            for item in items:
                for d in item["top_docs"]:
                    d["snippet"] = snippets.get(d["doc_id"])
    dup = report.get("near_duplicates")
    if dup:
        for g in dup["top_groups"]:
            g["snippet"] = snippets.get(g["doc_ids"][0])


def _second_pass_snippets(path: Path, ids: set[str], *, text_column: str,
                          id_column: str | None, max_chars: int) -> dict[str, str]:
    from auditor.io import read_documents

    out: dict[str, str] = {}
    if not ids:
        return out
    for doc in read_documents(path, text_column=text_column, id_column=id_column,
                              max_chars=max_chars, skip_bad_rows=True):
        if doc.doc_id in ids:
            out[doc.doc_id] = _snippet(doc.text)
            if len(out) == len(ids):
                break
    return out


# --------------------------------------------------------------------------- the report


def _check_counts(**counts: int) -> None:
    for name, value in counts.items():
        if value < 0:
            raise ConfigError(f"{name} must be >= 0, got {value}", field=name)


def store_doc_ids(store: str | Path, *, allow_partial: bool = False) -> list[str]:
    """The doc ids of a feature store, in store order, without reading its features.

    Parameters
    ----------
    store : str or Path
        Feature store directory (or one Parquet shard).

    Returns
    -------
    list of str

    Raises
    ------
    StoreError
        See :func:`auditor.store.scan_features`.
    """
    from auditor.store import scan_features

    ids = scan_features(Path(store), allow_partial=allow_partial).select("doc_id").collect(
    )["doc_id"]
    return [str(d) for d in ids.to_list()]


def build_statistics(
    store: str | Path,
    *,
    predictions: str | Path | pl.DataFrame | None = None,
    feature_labels: FeatureLabels | None = None,
    feature_examples: FeatureExamples | None = None,
    sae: str | None = None,
    pooling: str | None = None,
    title: str | None = None,
    flags: Mapping[str, Sequence[str]] | None = None,
    max_flagged: int = 50,
    top_features: int = 10,
    generated_at: str | None = None,
    stage: Stage | None = None,
    allow_partial: bool = False,
) -> dict[str, Any]:
    """The first stage of :func:`build_report`: everything the store and the predictions
    give (provenance, corpus, quality, feature density, heads, flagged documents).

    The ``texts``, ``near_duplicates`` and ``drift`` sections are None; :func:`add_texts`
    and :func:`add_drift` fill them. Parameters are those of :func:`build_report`;
    ``stage`` (optional) is advanced once the store is read and once per predictions step.

    Returns
    -------
    dict
        A JSON-serialisable report without texts and drift.

    Raises
    ------
    See :func:`build_report`.
    """
    return _statistics(
        store, predictions=predictions, feature_labels=feature_labels,
        feature_examples=feature_examples, sae=sae, pooling=pooling, title=title, flags=flags,
        max_flagged=max_flagged, top_features=top_features, generated_at=generated_at,
        stage=stage, allow_partial=allow_partial)[0]


def _statistics(
    store: str | Path,
    *,
    predictions: str | Path | pl.DataFrame | None = None,
    feature_labels: FeatureLabels | None = None,
    feature_examples: FeatureExamples | None = None,
    sae: str | None = None,
    pooling: str | None = None,
    title: str | None = None,
    flags: Mapping[str, Sequence[str]] | None = None,
    max_flagged: int = 50,
    top_features: int = 10,
    generated_at: str | None = None,
    stage: Stage | None = None,
    allow_partial: bool = False,
) -> tuple[dict[str, Any], list[str]]:
    """:func:`build_statistics` and the store's doc ids."""
    from auditor.store import read_features, read_metadata

    _check_counts(max_flagged=max_flagged, top_features=top_features)
    if stage is not None:
        stage.set_total(3 if predictions is not None else 1)
    src = Path(store)
    meta = read_metadata(src)
    stored = list(meta.get("pooling") or [])
    if pooling is None:
        pooling = "max" if "max" in stored or not stored else stored[0]
    fm = read_features(src, sae=sae, pooling=pooling, columns=["n_tokens"],
                       allow_partial=allow_partial)
    # read_features checked the key (or that the store holds exactly one SAE).
    sae_key = sae if sae is not None else str(next(iter(meta.get("saes") or {"?": None})))
    X = fm.X.tocsr()
    doc_ids = fm.doc_ids
    n_docs = len(doc_ids)
    store_index = {d: i for i, d in enumerate(doc_ids)}
    n_tokens = (fm.extra["n_tokens"].to_numpy().astype(np.int64) if fm.extra is not None
                else np.zeros(n_docs, dtype=np.int64))
    active = np.diff(X.indptr).astype(np.int64)
    summary = _read_summary(src) if src.is_dir() else {}
    label_of = _label_fn(feature_labels)
    examples_of = _examples_fn(feature_examples)
    provenance = _provenance(meta, store=src, sae=sae_key, pooling=pooling, summary=summary)
    input_path = provenance["input"]["path"]

    max_length = meta.get("max_length")
    fired = np.bincount(X.indices[X.data > 0], minlength=X.shape[1])
    fired_idx = np.flatnonzero(fired)
    report: dict[str, Any] = {
        "format": REPORT_FORMAT,
        "version": REPORT_VERSION,
        "title": title or (f"Corpus report: {Path(input_path).name}" if input_path
                           else f"Corpus report: {src.name}"),
        "generated_at": generated_at or _dt.datetime.now(_dt.UTC).isoformat(
            timespec="seconds"),
        "provenance": provenance,
        "sources": {"store": str(src), "predictions": None, "texts": None, "previous": None},
        "methods": {
            "top_features": (
                f"per head and predicted label: features ranked by mean_diff = mean pooled "
                f"({pooling}) activation in the label's documents minus the mean over the "
                "other predicted documents; fire_in / fire_out = share of documents where the "
                "feature fires; fire_ratio = (c_in + 1)/(n_in + 2) ÷ (c_out + 1)/(n_out + 2)"),
            "label_drift": "total variation distance ½Σ|p−q| of label shares and Pearson's "
                           "chi-square test of homogeneity on the 2×K count table",
            "feature_drift": "Jensen–Shannon divergence (base 2) between the normalised "
                             "per-feature firing-count distributions; top features by "
                             "absolute firing-rate change",
        },
        "corpus": {
            "documents": n_docs,
            "tokens": {**_describe(n_tokens), "histogram": _int_histogram(n_tokens)},
            "active_features": {**_describe(active), "histogram": _int_histogram(active)},
        },
        "quality": {
            "zero_token_docs": int((n_tokens == 0).sum()),
            "long_docs": int((n_tokens > int(max_length)).sum()) if max_length else None,
            "max_length": max_length,
            "truncated_docs": summary.get("truncated_docs"),
            "bad_rows_at_extraction": summary.get("bad_rows"),
            "empty_texts": None,
            "overlong_texts": None,
        },
        "texts": None,
        "near_duplicates": None,
        "feature_density": {
            "sae": sae_key,
            "sae_sha256": provenance["sae"]["sha256"],
            "d_sae": int(X.shape[1]),
            "documents": n_docs,
            "fired_features": fired_idx.tolist(),
            "fired_counts": fired[fired_idx].tolist(),
            "features_fired": int(fired_idx.size),
            "dead_features": int(X.shape[1] - fired_idx.size),
            "mean_fire_rate": float(fired.sum() / (n_docs * X.shape[1])) if n_docs else None,
        },
        "heads": None,
        "domain": None,
        "flagged": None,
        "drift": None,
    }
    if stage is not None:
        stage.advance(1, docs=n_docs)

    if predictions is not None:
        preds = read_predictions(predictions, store_ids=doc_ids)
        report["sources"]["predictions"] = preds.source or "<DataFrame>"
        heads, _ = _heads_section(preds, X=X, doc_ids=doc_ids, store_index=store_index,
                                  top_features=top_features, label_of=label_of,
                                  examples_of=examples_of)
        report["heads"] = heads
        report["domain"] = domain_section(preds)
        if stage is not None:
            stage.advance(1)
        report["flagged"] = _flagged_section(preds, rules=_resolve_flags(preds, flags),
                                             max_flagged=max_flagged, label_of=label_of)
        if stage is not None:
            stage.advance(1)
    elif flags:
        raise ConfigError("flag rules need predictions", field="flags")
    out: dict[str, Any] = _jsonable(report)
    return out, doc_ids


def _snippet_ids(report: Mapping[str, Any]) -> set[str]:
    """The documents whose snippets a report shows: each head's top documents per feature
    and the flagged documents listed."""
    wanted: set[str] = set()
    for head in (report.get("heads") or {}).values():
        for items in head["top_features"].values():
            for item in items:
                wanted.update(d["doc_id"] for d in item["top_docs"])
    if report.get("flagged"):
        wanted.update(d["doc_id"] for d in report["flagged"]["documents"])
    return wanted


def add_texts(
    report: Mapping[str, Any],
    texts: str | Path,
    *,
    store_ids: Sequence[str],
    text_column: str = "text",
    id_column: str | None = None,
    max_chars: int = 1_000_000,
    near_duplicates: bool = True,
    duplicate_threshold: float = 0.8,
    stage: Stage | None = None,
    cancel: CancelToken | None = None,
) -> dict[str, Any]:
    """The second stage of :func:`build_report`: read the input texts.

    Fills ``texts``, the empty / overlong counts of ``quality``, ``near_duplicates`` (when
    asked) and the snippets of the documents the report lists.

    Parameters
    ----------
    report : mapping
        A report from :func:`build_statistics` (not changed; a new dict is returned).
    texts : str or Path
        The input the store was extracted from.
    store_ids : sequence of str
        The store's doc ids (:func:`store_doc_ids`).
    stage : Stage or None
        Advanced with the documents read (counter ``docs``).
    cancel : CancelToken or None
        Checked every few hundred documents and between the near-duplicate LSH bands.

    Other parameters are those of :func:`build_report`.

    Returns
    -------
    dict
        The report with its text sections.

    Raises
    ------
    InputError
        None of the text ids is in the store.
    JobCancelled
        ``cancel`` was set.
    """
    out: dict[str, Any] = json.loads(json.dumps(report))
    store_index = {d: i for i, d in enumerate(store_ids)}
    tpath = Path(texts)
    finder = NearDuplicateFinder(threshold=duplicate_threshold) if near_duplicates else None
    section, snippets = _texts_section(
        tpath, store_index=store_index, wanted=_snippet_ids(out), text_column=text_column,
        id_column=id_column, max_chars=max_chars, finder=finder,
        fingerprint=out["provenance"]["input"]["fingerprint"], stage=stage, cancel=cancel)
    out["sources"]["texts"] = str(tpath)
    out["texts"] = section
    out["quality"]["empty_texts"] = section["empty"]
    out["quality"]["overlong_texts"] = section["overlong"]
    if finder is not None:
        out["near_duplicates"] = finder.summary(cancel=cancel)
        firsts = {g["doc_ids"][0] for g in out["near_duplicates"]["top_groups"]}
        missing = firsts - snippets.keys()
        snippets.update(_second_pass_snippets(tpath, missing, text_column=text_column,
                                              id_column=id_column, max_chars=max_chars))
    _fill_snippets(out, snippets)
    result: dict[str, Any] = _jsonable(out)
    return result


def add_drift(
    report: Mapping[str, Any],
    previous: str | Path | Mapping[str, Any],
    *,
    feature_labels: FeatureLabels | None = None,
    top_features: int = 10,
) -> dict[str, Any]:
    """The last stage of :func:`build_report`: the drift section against ``previous``.

    Parameters
    ----------
    report : mapping
        A report from :func:`build_statistics` (and :func:`add_texts`); not changed.
    previous : str, Path or mapping
        A previous report (its JSON file or dict).
    feature_labels : mapping or callable or None
        Feature index → label, for the shifted features.
    top_features : int, default 10
        Most shifted features listed.

    Returns
    -------
    dict
        The report with its ``drift`` section.

    Raises
    ------
    InputFileError
        ``previous`` is not a readable report (see :func:`auditor.report.drift.load_report`).
    """
    _check_counts(drift_top_features=top_features)
    out: dict[str, Any] = json.loads(json.dumps(report))
    if isinstance(previous, Mapping):
        prev, prev_src = dict(previous), None
    else:
        prev, prev_src = load_report(previous), str(previous)
    out["sources"]["previous"] = prev_src
    out["drift"] = compare_reports(prev, out, top_features=top_features,
                                   label_of=_label_fn(feature_labels), source=prev_src)
    result: dict[str, Any] = _jsonable(out)
    return result


def build_report(
    store: str | Path,
    *,
    predictions: str | Path | pl.DataFrame | None = None,
    texts: str | Path | None = None,
    previous: str | Path | Mapping[str, Any] | None = None,
    feature_labels: FeatureLabels | None = None,
    feature_examples: FeatureExamples | None = None,
    sae: str | None = None,
    pooling: str | None = None,
    title: str | None = None,
    text_column: str = "text",
    id_column: str | None = None,
    max_chars: int = 1_000_000,
    flags: Mapping[str, Sequence[str]] | None = None,
    max_flagged: int = 50,
    top_features: int = 10,
    near_duplicates: bool = True,
    duplicate_threshold: float = 0.8,
    drift_top_features: int = 10,
    generated_at: str | None = None,
    allow_partial: bool = False,
) -> dict[str, Any]:
    """Build the data of a corpus report (this dict is the report's JSON format).

    The three stages (:func:`build_statistics`, :func:`add_texts`, :func:`add_drift`) in
    one call; the report job (:mod:`auditor.jobs.report`) runs them with stage markers.

    Parameters
    ----------
    store : str or Path
        Feature store directory written by extraction.
    predictions : str, Path, polars.DataFrame or None
        Output of ``auditor classify`` (Parquet or JSONL): ``id``, and per head ``H``:
        ``H.label``, ``H.p.<class>``, optionally ``H.explain``.
    texts : str, Path or None
        The input the store was extracted from (for empty / overlong counts, near
        duplicates and snippets); read with ``text_column`` / ``id_column``.
    previous : str, Path, mapping or None
        A previous report (its JSON file or dict) for the drift section.
    feature_labels : mapping or callable or None
        Feature index → short label.
    feature_examples : mapping or callable or None
        Feature index → example contexts (the first three are shown).
    sae : str or None
        SAE key in the store; None selects the only one.
    pooling : str or None
        Pooled value used for feature statistics; None: ``'max'`` when stored, else the
        first stored pooling.
    title : str or None
        Report title (default: ``"Corpus report: <input file name>"``).
    text_column, id_column : str, str or None
        Columns of ``texts`` (use the same as for extraction).
    max_chars : int, default 1_000_000
        Texts longer than this count as overlong.
    flags : mapping of str to sequence of str, or None
        Head → labels whose documents are flagged (default :data:`DEFAULT_FLAGS`, for
        the heads and labels present).
    max_flagged : int, default 50
        Flagged documents listed (highest probability first); all are counted.
    top_features : int, default 10
        Features listed per head and label.
    near_duplicates : bool, default True
        Look for near duplicates among ``texts``.
    duplicate_threshold : float, default 0.8
        Estimated Jaccard similarity of near duplicates.
    drift_top_features : int, default 10
        Most shifted features listed in the drift section.
    generated_at : str or None
        Timestamp to record (default: now, UTC, ISO 8601).

    Returns
    -------
    dict
        JSON-serialisable: ``format``, ``version``, ``title``, ``generated_at``,
        ``provenance``, ``sources``, ``methods``, ``corpus``, ``quality``, ``texts``,
        ``near_duplicates``, ``feature_density``, ``heads``, ``domain`` (documents
        outside each head's and every head's domain, see :func:`domain_section`),
        ``flagged``, ``drift`` (sections without their input are None).

    Raises
    ------
    StoreError, ConfigError
        From reading the store (see :func:`auditor.store.read_features`).
    InputError, InputFileError, ColumnError
        From the predictions (see :func:`read_predictions`), the texts (none of their
        ids in the store) or the previous report (see
        :func:`auditor.report.drift.load_report`).
    ConfigError
        ``flags`` name a head the predictions do not have, or a count is negative.
    """
    _check_counts(max_flagged=max_flagged, top_features=top_features,
                  drift_top_features=drift_top_features)
    report, doc_ids = _statistics(
        store, predictions=predictions, feature_labels=feature_labels,
        feature_examples=feature_examples, sae=sae, pooling=pooling, title=title, flags=flags,
        max_flagged=max_flagged, top_features=top_features, generated_at=generated_at,
        allow_partial=allow_partial)
    if texts is not None:
        report = add_texts(report, texts, store_ids=doc_ids,
                           text_column=text_column, id_column=id_column, max_chars=max_chars,
                           near_duplicates=near_duplicates,
                           duplicate_threshold=duplicate_threshold)
    if previous is not None:
        report = add_drift(report, previous, feature_labels=feature_labels,
                           top_features=drift_top_features)
    return report
