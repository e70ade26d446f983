"""Drift between two corpus reports of the same pipeline.

Two kinds of shift are measured, each with a clearly named statistic:

* **Label shares** per prediction head: the share of documents per predicted label before
  and after, the *total variation distance* ``TV = ½ Σ_c |p_c − q_c|`` (0 = same shares,
  1 = disjoint) and *Pearson's chi-square test of homogeneity* on the 2 × K table of label
  counts (previous, current), with its degrees of freedom ``K − 1`` and p-value. Labels
  with no document in either report are left out of the test.
* **Feature density**: each SAE feature's *firing rate* (share of documents in which its
  pooled activation is non-zero). The single-number statistic is the *Jensen–Shannon
  divergence, base 2* (in bits, between 0 and 1) between the two normalised firing-count
  distributions over features (``p_i = count_i / Σ_j count_j``); the most shifted features
  are those with the largest absolute firing-rate change. Only computed when both reports
  used the same SAE (same hash and width).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from auditor.errors import InputFileError

__all__ = [
    "REPORT_FORMAT",
    "REPORT_VERSION",
    "chi_square_homogeneity",
    "compare_reports",
    "feature_density_shift",
    "firing_rates",
    "jensen_shannon_divergence",
    "label_shift",
    "load_report",
    "total_variation",
]

#: ``report["format"]`` of a report JSON.
REPORT_FORMAT = "auditor-report"
#: ``report["version"]`` written by this auditor.
REPORT_VERSION = 1

LabelFn = Callable[[int], "str | None"]


def total_variation(p: Sequence[float] | np.ndarray, q: Sequence[float] | np.ndarray) -> float:
    """Total variation distance ``½ Σ |p_i − q_i|`` between two distributions.

    Parameters
    ----------
    p, q : sequence of float
        Probability vectors of equal length (each summing to 1).

    Returns
    -------
    float
        Between 0 (identical) and 1 (disjoint supports).

    Examples
    --------
    >>> total_variation([0.3, 0.7], [0.5, 0.5])
    0.2
    """
    a = np.asarray(p, dtype=np.float64)
    b = np.asarray(q, dtype=np.float64)
    return round(float(0.5 * np.abs(a - b).sum()), 12)


def jensen_shannon_divergence(
    p: Sequence[float] | np.ndarray, q: Sequence[float] | np.ndarray, *, base: float = 2.0
) -> float:
    """Jensen–Shannon divergence ``½ KL(p‖m) + ½ KL(q‖m)`` with ``m = ½ (p + q)``.

    Inputs are normalised to sum to 1 first (so raw counts may be passed); ``0 log 0 = 0``.

    Parameters
    ----------
    p, q : sequence of float
        Non-negative weights of equal length, each with a positive sum.
    base : float, default 2.0
        Logarithm base; base 2 gives bits, bounded by 1.

    Returns
    -------
    float
        The divergence (0 for identical distributions).

    Raises
    ------
    ValueError
        Lengths differ, a weight is negative, or a vector sums to zero.

    Examples
    --------
    >>> jensen_shannon_divergence([1, 1, 0], [0, 1, 1])
    0.5
    """
    a = np.asarray(p, dtype=np.float64)
    b = np.asarray(q, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"shapes differ: {a.shape} vs {b.shape}")
    if (a < 0).any() or (b < 0).any() or a.sum() <= 0 or b.sum() <= 0:
        raise ValueError("weights must be non-negative with a positive sum")
    a = a / a.sum()
    b = b / b.sum()
    m = 0.5 * (a + b)

    def kl(x: np.ndarray) -> float:
        nz = x > 0
        return float((x[nz] * np.log(x[nz] / m[nz])).sum())

    value = 0.5 * (kl(a) + kl(b)) / math.log(base)
    return round(max(value, 0.0), 12)


def chi_square_homogeneity(
    previous: Mapping[str, int], current: Mapping[str, int]
) -> dict[str, Any]:
    """Pearson's chi-square test of homogeneity on a 2 × K table of label counts.

    Parameters
    ----------
    previous, current : mapping of str to int
        Label → document count in each report. Labels missing from one count as 0;
        labels with 0 documents in both are left out.

    Returns
    -------
    dict
        ``statistic`` (χ² = Σ (O − E)² / E with E from the row and column totals),
        ``dof`` (K − 1) and ``p_value`` (upper tail of χ²(dof)); all None when the test
        is undefined (a report with no document, or fewer than 2 labels in use).

    Examples
    --------
    >>> r = chi_square_homogeneity({"a": 30, "b": 70}, {"a": 50, "b": 50})
    >>> round(r["statistic"], 4), r["dof"]
    (8.3333, 1)
    """
    from scipy.stats import chi2

    classes = [c for c in dict.fromkeys([*previous, *current])
               if previous.get(c, 0) + current.get(c, 0) > 0]
    table = np.array([[previous.get(c, 0) for c in classes],
                      [current.get(c, 0) for c in classes]], dtype=np.float64)
    rows = table.sum(axis=1)
    if len(classes) < 2 or (rows == 0).any():
        return {"statistic": None, "dof": None, "p_value": None}
    expected = np.outer(rows, table.sum(axis=0)) / table.sum()
    stat = float(((table - expected) ** 2 / expected).sum())
    dof = len(classes) - 1
    return {"statistic": stat, "dof": dof, "p_value": float(chi2.sf(stat, dof))}


def label_shift(previous: Mapping[str, int], current: Mapping[str, int]) -> dict[str, Any]:
    """Label-share change of one head between two reports.

    Parameters
    ----------
    previous, current : mapping of str to int
        Label → document count.

    Returns
    -------
    dict
        ``classes`` (union, previous order first), ``previous_counts``,
        ``current_counts``, ``previous_shares``, ``current_shares``, ``share_change``
        (current − previous share per label), ``total_variation`` and ``chi_square``
        (see :func:`chi_square_homogeneity`).
    """
    classes = list(dict.fromkeys([*previous, *current]))
    prev = {c: int(previous.get(c, 0)) for c in classes}
    cur = {c: int(current.get(c, 0)) for c in classes}
    np_, nc = sum(prev.values()), sum(cur.values())
    ps = {c: (prev[c] / np_ if np_ else 0.0) for c in classes}
    cs = {c: (cur[c] / nc if nc else 0.0) for c in classes}
    return {
        "classes": classes,
        "previous_counts": prev,
        "current_counts": cur,
        "previous_shares": ps,
        "current_shares": cs,
        "share_change": {c: cs[c] - ps[c] for c in classes},
        "total_variation": (total_variation([ps[c] for c in classes], [cs[c] for c in classes])
                            if np_ and nc else None),
        "chi_square": chi_square_homogeneity(prev, cur),
    }


def firing_rates(density: Mapping[str, Any]) -> tuple[np.ndarray, np.ndarray, int]:
    """Dense firing counts and rates from a report's ``feature_density`` section.

    Parameters
    ----------
    density : mapping
        ``{"d_sae", "documents", "fired_features", "fired_counts", …}``.

    Returns
    -------
    counts, rates, documents
        ``int64 [d_sae]`` documents per feature, ``float64 [d_sae]`` their share, and the
        document count.
    """
    d_sae = int(density["d_sae"])
    docs = int(density["documents"])
    counts = np.zeros(d_sae, dtype=np.int64)
    idx = np.asarray(density.get("fired_features") or [], dtype=np.int64)
    counts[idx] = np.asarray(density.get("fired_counts") or [], dtype=np.int64)
    rates = counts / docs if docs else np.zeros(d_sae)
    return counts, rates, docs


def feature_density_shift(
    previous: Mapping[str, Any],
    current: Mapping[str, Any],
    *,
    top: int = 10,
    label_of: LabelFn | None = None,
) -> dict[str, Any]:
    """Shift of per-feature firing rates between two reports' ``feature_density``.

    Parameters
    ----------
    previous, current : mapping
        ``feature_density`` sections of the same width.
    top : int, default 10
        How many most-shifted features to list.
    label_of : callable or None
        Feature index → label (None when unknown).

    Returns
    -------
    dict
        ``statistic`` (``'jensen_shannon_divergence_bits'``), ``description``, ``value``
        (None when a report has no firing at all), ``mean_fire_rate`` (previous and
        current, averaged over features), ``top_shifted`` (``feature``, ``label``,
        ``previous_rate``, ``current_rate``, ``change``), sorted by ``|change|``.

    Raises
    ------
    ValueError
        The widths differ.
    """
    pc, pr, _ = firing_rates(previous)
    cc, cr, _ = firing_rates(current)
    if pc.shape != cc.shape:
        raise ValueError(f"feature widths differ: {pc.size} vs {cc.size}")
    value = (jensen_shannon_divergence(pc, cc) if pc.sum() > 0 and cc.sum() > 0 else None)
    change = cr - pr
    order = np.lexsort((np.arange(change.size), -np.abs(change)))
    shifted = []
    for f in order[: max(top, 0)]:
        if change[f] == 0:
            break
        shifted.append({
            "feature": int(f),
            "label": label_of(int(f)) if label_of is not None else None,
            "previous_rate": float(pr[f]),
            "current_rate": float(cr[f]),
            "change": float(change[f]),
        })
    return {
        "statistic": "jensen_shannon_divergence_bits",
        "description": "Jensen–Shannon divergence (base 2, bits; 0 = same, 1 = disjoint) "
                       "between the normalised per-feature firing-count distributions",
        "value": value,
        "mean_fire_rate": {"previous": float(pr.mean()) if pr.size else 0.0,
                           "current": float(cr.mean()) if cr.size else 0.0},
        "top_shifted": shifted,
    }


def _sae_identity(report: Mapping[str, Any]) -> tuple[Any, Any]:
    sae = (report.get("provenance") or {}).get("sae") or {}
    return sae.get("sha256"), sae.get("d_sae")


def compare_reports(
    previous: Mapping[str, Any],
    current: Mapping[str, Any],
    *,
    top_features: int = 10,
    label_of: LabelFn | None = None,
    source: str | None = None,
) -> dict[str, Any]:
    """Drift section of ``current`` against a ``previous`` report.

    Parameters
    ----------
    previous, current : mapping
        Reports (see :func:`auditor.report.build_report`); ``current`` needs no drift.
    top_features : int, default 10
        Most-shifted features to list.
    label_of : callable or None
        Feature index → label, for the shifted features.
    source : str or None
        Where the previous report was read from (recorded).

    Returns
    -------
    dict
        ``previous`` (source, generated_at, title, documents, provenance),
        ``notes`` (why a part was skipped, differing provenance), ``corpus`` (documents
        and mean tokens, previous/current/change), ``labels`` (per head in both, see
        :func:`label_shift`), ``features`` (see :func:`feature_density_shift`, or None).
    """
    notes: list[str] = []
    prev_prov = previous.get("provenance") or {}
    cur_prov = current.get("provenance") or {}
    for key in ("model", "sae"):
        a, b = prev_prov.get(key) or {}, cur_prov.get(key) or {}
        ident = ("weights_sha256", "id") if key == "model" else ("sha256", "d_sae", "layer")
        differing = [k for k in ident if a.get(k) != b.get(k)]
        if differing:
            notes.append(f"{key} differs from the previous report ({', '.join(differing)})")
    if prev_prov.get("pooling") != cur_prov.get("pooling"):
        notes.append(f"pooling differs: previous {prev_prov.get('pooling')!r}, current "
                     f"{cur_prov.get('pooling')!r}")

    def num(report: Mapping[str, Any], *path: str) -> float | None:
        node: Any = report
        for p in path:
            if not isinstance(node, Mapping):
                return None
            node = node.get(p)
        return float(node) if isinstance(node, (int, float)) else None

    corpus: dict[str, Any] = {}
    for name, path in (("documents", ("corpus", "documents")),
                       ("tokens", ("corpus", "tokens", "total")),
                       ("mean_tokens", ("corpus", "tokens", "mean"))):
        a, b = num(previous, *path), num(current, *path)
        corpus[name] = {"previous": a, "current": b,
                        "change": (b - a) if a is not None and b is not None else None}

    labels: dict[str, Any] = {}
    prev_heads = previous.get("heads") or {}
    cur_heads = current.get("heads") or {}
    for head in cur_heads:
        if head not in prev_heads:
            notes.append(f"head {head!r} is not in the previous report")
            continue
        labels[head] = label_shift(prev_heads[head].get("label_counts") or {},
                                   cur_heads[head].get("label_counts") or {})
    for head in prev_heads:
        if head not in cur_heads:
            notes.append(f"head {head!r} of the previous report is not in this one")

    features = None
    pd_, cd_ = previous.get("feature_density"), current.get("feature_density")
    if not pd_ or not cd_:
        notes.append("feature drift skipped: a report has no feature density")
    elif _sae_identity(previous) != _sae_identity(current) or pd_.get("d_sae") != cd_.get(
            "d_sae"):
        notes.append("feature drift skipped: the reports used different SAEs")
    else:
        features = feature_density_shift(pd_, cd_, top=top_features, label_of=label_of)

    return {
        "previous": {
            "source": source,
            "generated_at": previous.get("generated_at"),
            "title": previous.get("title"),
            "documents": (previous.get("corpus") or {}).get("documents"),
            "provenance": prev_prov,
        },
        "notes": notes,
        "corpus": corpus,
        "labels": labels,
        "features": features,
    }


def load_report(path: str | Path) -> dict[str, Any]:
    """Read a report JSON written by :func:`auditor.report.write_report`.

    Parameters
    ----------
    path : str or Path
        The ``report.json`` file.

    Returns
    -------
    dict
        The report.

    Raises
    ------
    InputFileError
        The file is missing, not JSON, or not an auditor report of a known version.
    """
    src = Path(path)
    try:
        data = json.loads(src.read_text(encoding="utf-8"))
    except FileNotFoundError as e:
        raise InputFileError("no such report file", path=src) from e
    except (OSError, ValueError) as e:
        raise InputFileError(f"cannot read the report JSON: {e}", path=src) from e
    if not isinstance(data, dict) or data.get("format") != REPORT_FORMAT:
        raise InputFileError(f"not an {REPORT_FORMAT} JSON (no format={REPORT_FORMAT!r})",
                             path=src, field="format")
    if data.get("version") != REPORT_VERSION:
        raise InputFileError(f"unsupported report version {data.get('version')!r} (this "
                             f"auditor reads version {REPORT_VERSION})", path=src,
                             field="version")
    return data
