"""Look features up in a dictionary: one feature's card, and search by word."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import polars as pl

from auditor.errors import ConfigError
from auditor.features.dictionary import load_contexts, load_dictionary, load_manifest
from auditor.features.stats import QUANTILES

__all__ = ["FeatureReport", "describe_feature", "format_feature", "search_features"]


@dataclass
class FeatureReport:
    """Everything the dictionary knows about one feature.

    Attributes
    ----------
    feature : int
    label, auto_label : str
        The label shown (override or automatic) and the automatic one.
    n_tokens_fired, n_docs_fired : int
    density, doc_density : float
        Fractions of tokens / documents where it fires.
    max, mean : float or None
        Of the nonzero activations (``None`` for ``mean`` if it never fired).
    quantiles : dict of str to float or None
        ``{'p50': ..., 'p90': ..., 'p99': ...}``, approximate.
    promoted, suppressed : list of (str, float)
        Logit-lens tokens and their logit contributions.
    contexts : list of dict
        Top contexts: ``activation``, ``doc_id``, ``position``, ``token``, ``text``,
        ``source``.
    totals : dict
        ``documents`` and ``tokens`` seen by the dictionary.
    """

    feature: int
    label: str
    auto_label: str
    n_tokens_fired: int
    n_docs_fired: int
    density: float
    doc_density: float
    max: float
    mean: float | None
    quantiles: dict[str, float | None]
    promoted: list[tuple[str, float]]
    suppressed: list[tuple[str, float]]
    contexts: list[dict[str, Any]] = field(default_factory=list)
    totals: dict[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able dict."""
        return asdict(self)


def _quantile_names() -> list[str]:
    return [f"p{round(q * 100)}" for q in QUANTILES]


def describe_feature(
    dictionary_dir: str | Path,
    feature: int,
    *,
    overrides: str | Path | Mapping[int, str] | None = None,
    n_contexts: int | None = None,
) -> FeatureReport:
    """Collect one feature's statistics, logit-lens tokens and top contexts.

    Parameters
    ----------
    dictionary_dir : str or Path
        The dictionary directory.
    feature : int
        Feature number, ``0 … d_sae - 1``.
    overrides : path or mapping, optional
        Label overrides (default: the dictionary's own label files).
    n_contexts : int, optional
        Keep at most this many contexts (default: all stored).

    Returns
    -------
    FeatureReport

    Raises
    ------
    ConfigError
        ``feature`` is not an integer in range, or ``n_contexts`` is negative.
    StoreError
        No dictionary at ``dictionary_dir``.
    """
    frame = load_dictionary(dictionary_dir, overrides=overrides)
    n = frame.height
    if isinstance(feature, bool) or not isinstance(feature, int) or not 0 <= feature < n:
        raise ConfigError(f"feature {feature!r} is out of range: this dictionary has {n} "
                          f"features (0 … {n - 1})", field="feature")
    if n_contexts is not None and n_contexts < 0:
        raise ConfigError("n_contexts must be >= 0", field="n_contexts")
    row = frame.row(feature, named=True)
    ctx = load_contexts(dictionary_dir, feature=feature)
    if n_contexts is not None:
        ctx = ctx.head(n_contexts)
    totals = load_manifest(dictionary_dir)["totals"]
    return FeatureReport(
        feature=feature, label=row["label"], auto_label=row["auto_label"],
        n_tokens_fired=int(row["n_tokens_fired"]), n_docs_fired=int(row["n_docs_fired"]),
        density=float(row["density"]), doc_density=float(row["doc_density"]),
        max=float(row["max"]), mean=None if row["mean"] is None else float(row["mean"]),
        quantiles={name: (None if row[name] is None else float(row[name]))
                   for name in _quantile_names()},
        promoted=[(str(t), float(v)) for t, v in
                  zip(row["promoted"] or [], row["promoted_logits"] or [], strict=True)],
        suppressed=[(str(t), float(v)) for t, v in
                    zip(row["suppressed"] or [], row["suppressed_logits"] or [], strict=True)],
        contexts=[{k: r[k] for k in ("activation", "doc_id", "position", "token", "text",
                                     "source")} for r in ctx.iter_rows(named=True)],
        totals={"documents": int(totals["documents"]), "tokens": int(totals["tokens"])},
    )


def _visible(text: str) -> str:
    """One line of text: newlines and tabs made visible."""
    return text.replace("\r", "").replace("\n", "⏎").replace("\t", "⇥")


def _num(x: float | None) -> str:
    return "–" if x is None else f"{x:.4g}"


def format_feature(report: FeatureReport, *, width: int = 100) -> str:
    """Render a :class:`FeatureReport` for the terminal.

    Parameters
    ----------
    report : FeatureReport
        From :func:`describe_feature`.
    width : int, default 100
        Contexts longer than this are shortened around the marked token.

    Returns
    -------
    str
        Several lines, no trailing newline.
    """
    r = report
    lines = [
        f"feature {r.feature}: {r.label}",
    ]
    if r.label != r.auto_label:
        lines.append(f"  auto label: {r.auto_label}")
    lines += [
        f"  density: {r.density:.3%} of {r.totals.get('tokens', 0):,} tokens "
        f"({r.n_tokens_fired:,}), {r.doc_density:.1%} of {r.totals.get('documents', 0):,} "
        f"documents ({r.n_docs_fired:,})",
        f"  activation: max {_num(r.max)}, mean {_num(r.mean)}, "
        + ", ".join(f"{k} ≈ {_num(v)}" for k, v in r.quantiles.items()),
        "  promotes:   " + ", ".join(f"{_visible(t)!r} {v:+.3g}" for t, v in r.promoted),
        "  suppresses: " + ", ".join(f"{_visible(t)!r} {v:+.3g}" for t, v in r.suppressed),
    ]
    if r.contexts:
        lines.append(f"  top contexts ({len(r.contexts)}):")
        for c in r.contexts:
            text = _visible(str(c["text"]))
            if len(text) > width:
                mark = max(text.find("«"), 0)
                start = max(0, min(mark - width // 2, len(text) - width))
                text = ("…" if start else "") + text[start : start + width] + \
                    ("…" if start + width < len(text) else "")
            where = f"{c['source']}:{c['doc_id']}" if c.get("source") else str(c["doc_id"])
            lines.append(f"    {float(c['activation']):8.3g}  {text}   [{where}@{c['position']}]")
    else:
        lines.append("  top contexts: none (the feature never fired)")
    return "\n".join(lines)


def search_features(
    dictionary_dir: str | Path,
    word: str,
    *,
    limit: int = 20,
    overrides: str | Path | Mapping[int, str] | None = None,
) -> pl.DataFrame:
    """Find features whose label, contexts or logit-lens tokens contain ``word``.

    Matching is case-insensitive substring matching. Each feature gets a score:

    * label contains the word: 10;
    * promoted logit-lens token equal to the word (stripped): 4 down to 2 by rank;
      containing it: 1 each; suppressed token equal: 1, containing: 0.5 each;
    * per top context: firing token equal to the word 2, firing token containing it 1,
      only the surrounding text containing it 0.25.

    Ties are broken by higher max activation, then lower feature number.

    Parameters
    ----------
    dictionary_dir : str or Path
        The dictionary directory.
    word : str
        What to look for (non-empty).
    limit : int, default 20
        Results returned.
    overrides : path or mapping, optional
        Label overrides (default: the dictionary's own label files).

    Returns
    -------
    polars.DataFrame
        ``feature``, ``score``, ``label``, ``density``, ``max``, ``matched`` (where it
        matched: ``label``, ``promoted``, ``suppressed``, ``firing tokens``, ``contexts``),
        best first; empty if nothing matched.

    Raises
    ------
    ConfigError
        Empty ``word`` or ``limit`` < 1.
    StoreError
        No dictionary at ``dictionary_dir``.
    """
    needle = word.strip().lower()
    if not needle:
        raise ConfigError("the search word is empty", field="word")
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
        raise ConfigError(f"limit must be a positive integer, got {limit!r}", field="limit")
    frame = load_dictionary(dictionary_dir, overrides=overrides)
    scores: dict[int, float] = {}
    matched: dict[int, list[str]] = {}

    def add(f: int, points: float, where: str) -> None:
        scores[f] = scores.get(f, 0.0) + points
        if where not in matched.setdefault(f, []):
            matched[f].append(where)

    for f, label in enumerate(frame["label"].to_list()):
        if needle in str(label).lower():
            add(f, 10.0, "label")
    for col, exact, partial in (("promoted", 4.0, 1.0), ("suppressed", 1.0, 0.5)):
        for f, tokens in enumerate(frame[col].to_list()):
            top = max(len(tokens or []), 1)
            for rank, tok in enumerate(tokens or []):
                low = str(tok).lower()
                if low.strip() == needle:
                    add(f, exact - (exact / 2) * rank / top if col == "promoted" else exact, col)
                elif needle in low:
                    add(f, partial, col)

    ctx = load_contexts(dictionary_dir)
    if ctx.height:
        token = pl.col("token").str.to_lowercase()
        hits = (ctx.lazy()
                .with_columns(
                    tok_eq=token.str.strip_chars() == needle,
                    tok_has=token.str.contains(needle, literal=True),
                    text_has=pl.col("text").str.to_lowercase().str.contains(needle, literal=True))
                .filter(pl.col("text_has") | pl.col("tok_has"))
                .group_by("feature")
                .agg(pl.col("tok_eq").sum().alias("eq"),
                     (pl.col("tok_has") & ~pl.col("tok_eq")).sum().alias("has"),
                     (pl.col("text_has") & ~pl.col("tok_has")).sum().alias("text"))
                .collect())
        for f, eq, has, text in hits.iter_rows():
            if eq or has:
                add(int(f), 2.0 * eq + 1.0 * has, "firing tokens")
            if text:
                add(int(f), 0.25 * text, "contexts")

    maxima = frame["max"].to_list()
    ranked = sorted(scores, key=lambda f: (-scores[f], -float(maxima[f] or 0.0), f))[:limit]
    return pl.DataFrame(
        {
            "feature": ranked,
            "score": [scores[f] for f in ranked],
            "label": [frame["label"][f] for f in ranked],
            "density": [frame["density"][f] for f in ranked],
            "max": [frame["max"][f] for f in ranked],
            "matched": [matched[f] for f in ranked],
        },
        schema={"feature": pl.UInt32, "score": pl.Float64, "label": pl.String,
                "density": pl.Float64, "max": pl.Float32, "matched": pl.List(pl.String)},
    )
