"""Mergeable per-feature statistics: firing counts, maxima, log histograms, top contexts.

Everything in :class:`FeatureStats` adds up exactly across builds, so a dictionary built
over two halves of a corpus equals one built over the whole (up to float summation order
in ``sum``): token and document counts add, maxima take the max, histograms add bin by
bin, and top contexts are re-ranked and cut (see :func:`merge_contexts`).

Quantiles are *approximate*: they are read off a fixed histogram of ``log(activation)``
with :data:`HIST_BINS` bins between :data:`HIST_LO` and :data:`HIST_HI` (plus an underflow
and an overflow bin), interpolated log-linearly inside a bin and capped at the exact
maximum. A bin spans a factor ``(HIST_HI / HIST_LO) ** (1 / HIST_BINS)`` ≈ 1.075, so a
quantile is within about ±4 % of the exact one. The fixed bins are what makes the
histogram mergeable.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import numpy as np
import polars as pl

from auditor.errors import CorruptShard
from auditor.store import _list_parts

__all__ = [
    "CONTEXT_CLOSE",
    "CONTEXT_OPEN",
    "ELLIPSIS",
    "HIST_BINS",
    "HIST_HI",
    "HIST_LO",
    "QUANTILES",
    "Context",
    "FeatureStats",
    "histogram_bins",
    "histogram_quantiles",
    "merge_contexts",
]

#: Lower edge of the first interior histogram bin (smaller activations: underflow bin).
HIST_LO = 1e-6
#: Upper edge of the last interior bin (larger activations: overflow bin).
HIST_HI = 1e6
#: Interior bins, equally wide in ``log(activation)``; the histogram has ``HIST_BINS + 2``.
HIST_BINS = 384
#: Quantiles of the nonzero activations recorded per feature.
QUANTILES: tuple[float, ...] = (0.5, 0.9, 0.99)
#: Markers around the firing token in a context's text.
CONTEXT_OPEN, CONTEXT_CLOSE = "«", "»"
#: Marks text cut off at either end of a context window.
ELLIPSIS = "…"

_LOG_LO, _LOG_HI = math.log(HIST_LO), math.log(HIST_HI)
_BIN_WIDTH = (_LOG_HI - _LOG_LO) / HIST_BINS


class Context(NamedTuple):
    """One top-activating token occurrence with the text around it.

    Attributes
    ----------
    activation : float
        The feature's activation at the token.
    doc_id : str
        Document id in its corpus.
    position : int
        The token's position in the document (``window * max_length + index``, as in the
        feature store's token shards).
    token_id : int
        The firing token.
    token : str
        The firing token as text (with its leading space, if any).
    text : str
        ``context_tokens`` tokens either side, the firing token wrapped in ``«…»``, ``…``
        where the document goes on.
    source : str
        The corpus the document came from (file name), ``''`` if unknown.
    """

    activation: float
    doc_id: str
    position: int
    token_id: int
    token: str
    text: str
    source: str


def _context_key(c: Context) -> tuple[float, str, int, str]:
    return (-c.activation, c.doc_id, c.position, c.source)


def merge_contexts(contexts: Iterable[Context], top: int) -> list[Context]:
    """Rank contexts by activation, drop repeated texts, keep the best ``top``.

    Parameters
    ----------
    contexts : iterable of Context
        Candidates, in any order (e.g. the union of two dictionaries' lists).
    top : int
        How many to keep.

    Returns
    -------
    list of Context
        Sorted by activation (descending), then doc id, position and source; of several
        contexts with the same text only the first is kept.

    Notes
    -----
    Merging per-part top lists gives the same result as ranking everything at once: a
    text in the overall top ``top`` is also in its own part's top ``top``.
    """
    seen: set[str] = set()
    out: list[Context] = []
    for c in sorted(contexts, key=_context_key):
        if c.text in seen:
            continue
        seen.add(c.text)
        out.append(c)
        if len(out) >= top:
            break
    return out


def histogram_bins(values: np.ndarray) -> np.ndarray:
    """Histogram bin of each (positive) activation.

    Parameters
    ----------
    values : numpy.ndarray
        Positive activations.

    Returns
    -------
    numpy.ndarray
        ``int64`` bin numbers: 0 below :data:`HIST_LO`, ``HIST_BINS + 1`` at or above
        :data:`HIST_HI`, else ``1 + floor((log v - log HIST_LO) / width)``.
    """
    v = np.asarray(values, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        pos = (np.log(np.maximum(v, 1e-300)) - _LOG_LO) / _BIN_WIDTH
    bins = np.floor(pos).astype(np.int64) + 1
    bins[v < HIST_LO] = 0
    return np.clip(bins, 0, HIST_BINS + 1)


def histogram_quantiles(
    hist: np.ndarray, quantiles: Sequence[float] = QUANTILES, *, maximum: float | None = None
) -> list[float | None]:
    """Approximate quantiles of the activations counted in a log histogram.

    Parameters
    ----------
    hist : numpy.ndarray
        Counts per bin, ``HIST_BINS + 2`` long.
    quantiles : sequence of float
        In ``[0, 1]``.
    maximum : float, optional
        The exact maximum; results are capped at it (and the overflow bin maps to it).

    Returns
    -------
    list of float or None
        One value per quantile; ``None`` when the histogram is empty.
    """
    counts = np.asarray(hist, dtype=np.float64)
    total = counts.sum()
    if total <= 0:
        return [None for _ in quantiles]
    cum = np.cumsum(counts)
    out: list[float | None] = []
    for q in quantiles:
        target = q * total
        b = int(np.searchsorted(cum, max(target, 1e-12), side="left"))
        b = min(b, len(counts) - 1)
        before = cum[b - 1] if b > 0 else 0.0
        frac = (target - before) / counts[b] if counts[b] > 0 else 0.0
        frac = min(max(frac, 0.0), 1.0)
        if b == 0:
            value = HIST_LO
        elif b > HIST_BINS:
            value = maximum if maximum is not None else HIST_HI
        else:
            value = math.exp(_LOG_LO + (b - 1 + frac) * _BIN_WIDTH)
        if maximum is not None:
            value = min(value, maximum)
        out.append(float(value))
    return out


Decoder = Callable[[Sequence[int]], str]


@dataclass
class FeatureStats:
    """Running per-feature statistics of one SAE over the tokens seen so far.

    Parameters
    ----------
    n_features : int
        The SAE's ``d_sae``.

    Attributes
    ----------
    documents, tokens, excluded_tokens : int
        Documents seen, tokens counted (content tokens that were not excluded as outliers)
        and tokens excluded as massive-activation outliers.
    n_tokens_fired, n_docs_fired : numpy.ndarray
        ``int64 [n_features]``: tokens / documents where the feature is nonzero.
    sum : numpy.ndarray
        ``float64 [n_features]``: sum of the nonzero activations.
    max : numpy.ndarray
        ``float32 [n_features]``: largest activation (0 if it never fired).
    hist : numpy.ndarray
        ``int64 [n_features, HIST_BINS + 2]``: counts of nonzero activations per log bin.
    contexts : dict of int to list of Context
        Top contexts per feature that fired, best first.
    """

    n_features: int
    documents: int = 0
    tokens: int = 0
    excluded_tokens: int = 0
    n_tokens_fired: np.ndarray = field(init=False)
    n_docs_fired: np.ndarray = field(init=False)
    sum: np.ndarray = field(init=False)
    max: np.ndarray = field(init=False)
    hist: np.ndarray = field(init=False)
    contexts: dict[int, list[Context]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        f = self.n_features
        self.n_tokens_fired = np.zeros(f, dtype=np.int64)
        self.n_docs_fired = np.zeros(f, dtype=np.int64)
        self.sum = np.zeros(f, dtype=np.float64)
        self.max = np.zeros(f, dtype=np.float32)
        self.hist = np.zeros((f, HIST_BINS + 2), dtype=np.int64)

    # ------------------------------------------------------------------ update
    def add_tokens(
        self,
        tokens: pl.DataFrame,
        *,
        key: str,
        n_documents: int,
        decode: Decoder,
        top: int,
        context_tokens: int,
        source: str = "",
    ) -> None:
        """Add one token shard of the feature store (all tokens of ``n_documents`` docs).

        Parameters
        ----------
        tokens : polars.DataFrame
            Rows sorted by document then position, with ``doc_id``, ``position``,
            ``token_id``, ``<key>.indices``, ``<key>.values`` and optionally
            ``<key>.pooled`` (``False`` for excluded outlier tokens, which are not counted).
        key : str
            The SAE's column prefix.
        n_documents : int
            Documents in the shard, including those without content tokens.
        decode : callable
            ``decode(token_ids) -> str`` (the tokenizer's decode).
        top : int
            Contexts kept per feature.
        context_tokens : int
            Tokens of context either side of the firing token.
        source : str, default ''
            Recorded with every context.

        Raises
        ------
        CorruptShard
            A column is missing or a feature index is out of range.
        """
        need = ["doc_id", "position", "token_id", f"{key}.indices", f"{key}.values"]
        missing = [c for c in need if c not in tokens.columns]
        if missing:
            raise CorruptShard(f"token table lacks {', '.join(missing)}", field=missing[0])
        F = self.n_features
        n_rows = tokens.height
        self.documents += int(n_documents)
        pooled = (tokens[f"{key}.pooled"].fill_null(True).to_numpy().astype(bool)
                  if f"{key}.pooled" in tokens.columns else np.ones(n_rows, dtype=bool))
        self.tokens += int(pooled.sum())
        self.excluded_tokens += int((~pooled).sum())
        if n_rows == 0:
            return
        offsets, feats = _list_parts(tokens[f"{key}.indices"])
        _, vals = _list_parts(tokens[f"{key}.values"])
        feats = feats.astype(np.int64, copy=False)
        vals = vals.astype(np.float32, copy=False)
        if feats.size and (feats.min() < 0 or feats.max() >= F):
            raise CorruptShard(f"feature index out of range for d_sae={F}",
                               field=f"{key}.indices")
        rows = np.repeat(np.arange(n_rows), np.diff(offsets))
        keep = pooled[rows] & (vals > 0)
        feats, vals, rows = feats[keep], vals[keep], rows[keep]

        doc_ids = np.asarray(tokens["doc_id"].to_list(), dtype=object)
        change = np.ones(n_rows, dtype=bool)
        change[1:] = doc_ids[1:] != doc_ids[:-1]
        doc_code = np.cumsum(change) - 1
        seg_start = np.flatnonzero(change)
        seg_end = np.append(seg_start[1:], n_rows)

        self.n_tokens_fired += np.bincount(feats, minlength=F)
        self.sum += np.bincount(feats, weights=vals.astype(np.float64), minlength=F)
        pairs = np.unique(doc_code[rows] * F + feats)
        self.n_docs_fired += np.bincount(pairs % F, minlength=F)
        self.hist += np.bincount(feats * (HIST_BINS + 2) + histogram_bins(vals),
                                 minlength=F * (HIST_BINS + 2)).reshape(F, HIST_BINS + 2)
        if feats.size == 0:
            return

        order = np.lexsort((rows, -vals, feats))
        feats, vals, rows = feats[order], vals[order], rows[order]
        starts = np.flatnonzero(np.r_[True, feats[1:] != feats[:-1]])
        ends = np.append(starts[1:], feats.size)
        np.maximum.at(self.max, feats[starts], vals[starts])

        token_ids = tokens["token_id"].to_numpy().astype(np.int64)
        positions = tokens["position"].to_numpy().astype(np.int64)
        window = _ContextWindow(token_ids, seg_start[doc_code], seg_end[doc_code], decode,
                                context_tokens)
        for s, e in zip(starts.tolist(), ends.tolist(), strict=True):
            f = int(feats[s])
            current = self.contexts.get(f, [])
            floor = current[top - 1].activation if len(current) >= top else -math.inf
            fresh: list[Context] = []
            texts: set[str] = set()
            for i in range(s, e):
                act = float(vals[i])
                if act < floor:
                    break
                r = int(rows[i])
                token, text = window.render(r)
                fresh.append(Context(act, str(doc_ids[r]), int(positions[r]), int(token_ids[r]),
                                     token, text, source))
                texts.add(text)
                if len(texts) >= top:
                    break
            if fresh:
                self.contexts[f] = merge_contexts([*current, *fresh], top)

    # ------------------------------------------------------------------ results
    def quantiles(self) -> np.ndarray:
        """``float64 [n_features, len(QUANTILES)]`` approximate quantiles (NaN if dead)."""
        out = np.full((self.n_features, len(QUANTILES)), np.nan)
        for f in np.flatnonzero(self.n_tokens_fired).tolist():
            out[f] = histogram_quantiles(self.hist[f], maximum=float(self.max[f]))
        return out

    def contexts_frame(self) -> pl.DataFrame:
        """The top contexts as a table: ``feature``, ``rank`` and the :class:`Context` fields.

        Returns
        -------
        polars.DataFrame
            Sorted by feature then rank.
        """
        rows: list[dict[str, Any]] = []
        for f in sorted(self.contexts):
            for rank, c in enumerate(self.contexts[f]):
                rows.append({"feature": f, "rank": rank, **c._asdict()})
        return pl.DataFrame(rows, schema=CONTEXT_SCHEMA)

    def restore(self, features: pl.DataFrame, contexts: pl.DataFrame,
                totals: Mapping[str, Any]) -> None:
        """Load the state saved in a dictionary (its two tables and manifest totals).

        Raises
        ------
        CorruptShard
            The tables do not have ``n_features`` rows or the expected columns.
        """
        try:
            if features.height != self.n_features or \
                    features["feature"].to_list() != list(range(self.n_features)):
                raise CorruptShard(f"features table does not have {self.n_features} rows in "
                                   "order", field="feature")
            self.documents = int(totals["documents"])
            self.tokens = int(totals["tokens"])
            self.excluded_tokens = int(totals.get("excluded_tokens", 0))
            self.n_tokens_fired = features["n_tokens_fired"].to_numpy().astype(np.int64)
            self.n_docs_fired = features["n_docs_fired"].to_numpy().astype(np.int64)
            self.sum = features["sum"].to_numpy().astype(np.float64)
            self.max = features["max"].to_numpy().astype(np.float32)
            _, flat = _list_parts(features["hist"])
            self.hist = flat.astype(np.int64).reshape(self.n_features, HIST_BINS + 2)
            self._restore_contexts(contexts)
        except (KeyError, ValueError, pl.exceptions.PolarsError) as exc:
            raise CorruptShard(f"cannot restore the dictionary's statistics: {exc}") from exc

    def _restore_contexts(self, contexts: pl.DataFrame) -> None:
        self.contexts = {}
        for row in contexts.sort("feature", "rank").iter_rows(named=True):
            self.contexts.setdefault(int(row["feature"]), []).append(Context(
                float(row["activation"]), str(row["doc_id"]), int(row["position"]),
                int(row["token_id"]), str(row["token"]), str(row["text"]),
                str(row["source"] or "")))

    # ------------------------------------------------------------------ state
    def state_arrays(self) -> dict[str, np.ndarray]:
        """The running counts as arrays, exactly (see :meth:`from_state`)."""
        return {"n_tokens_fired": self.n_tokens_fired, "n_docs_fired": self.n_docs_fired,
                "sum": self.sum, "max": self.max, "hist": self.hist,
                "totals": np.array([self.documents, self.tokens, self.excluded_tokens],
                                   dtype=np.int64)}

    @classmethod
    def from_state(cls, n_features: int, arrays: Mapping[str, np.ndarray],
                   contexts: pl.DataFrame) -> FeatureStats:
        """Rebuild statistics saved with :meth:`state_arrays` and :meth:`contexts_frame`;
        the result equals the statistics that were saved, bit for bit.

        Raises
        ------
        CorruptShard
            Missing arrays or arrays of the wrong shape.
        """
        stats = cls(n_features)
        try:
            documents, tokens, excluded = (int(v) for v in arrays["totals"])
            stats.documents, stats.tokens, stats.excluded_tokens = documents, tokens, excluded
            for name, dtype in (("n_tokens_fired", np.int64), ("n_docs_fired", np.int64),
                                ("sum", np.float64), ("max", np.float32), ("hist", np.int64)):
                value = np.asarray(arrays[name], dtype=dtype)
                if value.shape != getattr(stats, name).shape:
                    raise ValueError(f"{name} has shape {value.shape}")
                setattr(stats, name, value.copy())
            stats._restore_contexts(contexts)
        except (KeyError, ValueError, pl.exceptions.PolarsError) as exc:
            raise CorruptShard(f"cannot restore saved statistics: {exc}") from exc
        return stats


#: Column types of the contexts table.
CONTEXT_SCHEMA: dict[str, pl.DataType] = {
    "feature": pl.UInt32(),
    "rank": pl.UInt32(),
    "activation": pl.Float32(),
    "doc_id": pl.String(),
    "position": pl.UInt32(),
    "token_id": pl.UInt32(),
    "token": pl.String(),
    "text": pl.String(),
    "source": pl.String(),
}


class _ContextWindow:
    """Renders the text around a token row of a document-sorted token table."""

    def __init__(self, token_ids: np.ndarray, doc_start: np.ndarray, doc_end: np.ndarray,
                 decode: Decoder, width: int) -> None:
        self.ids = token_ids
        self.start = doc_start
        self.end = doc_end
        self.decode = decode
        self.width = width

    def render(self, r: int) -> tuple[str, str]:
        """``(token text, marked context text)`` of token row ``r``."""
        s, e = int(self.start[r]), int(self.end[r])
        lo, hi = max(s, r - self.width), min(e, r + self.width + 1)
        ids = [int(i) for i in self.ids[lo:hi]]
        j = r - lo
        left = self.decode(ids[:j])
        upto = self.decode(ids[: j + 1])
        full = self.decode(ids)
        if upto.startswith(left) and full.startswith(upto):
            token, right = upto[len(left):], full[len(upto):]
        else:  # a tokenizer whose pieces do not concatenate: decode the parts alone
            token, right = self.decode(ids[j : j + 1]), self.decode(ids[j + 1 :])
        head = ELLIPSIS if lo > s else ""
        tail = ELLIPSIS if hi < e else ""
        return token, f"{head}{left}{CONTEXT_OPEN}{token}{CONTEXT_CLOSE}{right}{tail}"
