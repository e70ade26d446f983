"""Charts of a corpus report, drawn with matplotlib and returned as inline SVG strings.

Every chart is drawn on a bare :class:`matplotlib.figure.Figure` attached to the Agg canvas
(pyplot is never imported, so no GUI backend and no global figure state are involved) and
saved as SVG with text kept as text (``svg.fonttype='none'``), no date stamp and a fixed
hash salt, so the same data gives the same bytes. :func:`clean_svg` then makes the SVG fit
for inlining into an HTML page next to others: it drops the XML prolog and the RDF
metadata, removes unreferenced element ids and prefixes the referenced ones (clip paths,
markers) so that two charts on one page never share an id.

Nothing here touches the network; labels are drawn verbatim (mathtext is disabled, so a
``$`` in a feature label is just a dollar sign).
"""

from __future__ import annotations

import io
import re
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = [
    "PALETTE",
    "Chart",
    "bar_chart",
    "chart_slug",
    "chart_titles",
    "clean_svg",
    "grouped_bar_chart",
    "histogram_chart",
    "line_chart",
    "report_charts",
    "step_histogram_chart",
]

#: Colour cycle (colour-blind safe, Okabe–Ito order).
PALETTE: tuple[str, ...] = (
    "#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#F0E442", "#000000",
)
_RC: dict[Any, Any] = {
    "svg.fonttype": "none",
    "svg.hashsalt": "auditor-report",
    "text.parse_math": False,
    "font.family": "sans-serif",
    "font.sans-serif": ["DejaVu Sans", "Liberation Sans", "Arial", "Helvetica"],
    "font.size": 9.0,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.titlesize": 10.0,
    "axes.titleweight": "bold",
    "axes.grid": True,
    "grid.color": "#dddddd",
    "grid.linewidth": 0.6,
    "axes.axisbelow": True,
    "legend.frameon": False,
}
_ID_RE = re.compile(r'\sid="([^"]+)"')
_REF_RE = re.compile(r'(url\(#|href="#)([^)"]+)')
_MAX_LABEL = 48


@dataclass(frozen=True)
class Chart:
    """One chart of a report.

    Parameters
    ----------
    name : str
        Stable identifier (``'tokens'``, ``'labels-safety'``, …), usable as a file name.
    title : str
        Human-readable title (also drawn on the chart).
    svg : str
        The chart as an inline-ready ``<svg>`` element (see :func:`clean_svg`).
    """

    name: str
    title: str
    svg: str


def _short(label: object, limit: int = _MAX_LABEL) -> str:
    text = " ".join(str(label).split())
    if text.startswith("_"):  # matplotlib hides legend entries starting with "_"
        text = "\u200b" + text
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _figure(width: float, height: float) -> Any:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _int_locator() -> Any:
    from matplotlib.ticker import MaxNLocator

    return MaxNLocator(integer=True)


def _to_svg(fig: Any, *, prefix: str) -> str:
    buf = io.StringIO()
    fig.savefig(buf, format="svg", metadata={"Date": None})
    return clean_svg(buf.getvalue(), prefix=prefix)


def clean_svg(svg: str, *, prefix: str) -> str:
    """Make a matplotlib SVG document fit for inlining into HTML.

    Parameters
    ----------
    svg : str
        A complete SVG document as written by matplotlib.
    prefix : str
        Prefix for the ids the SVG references (e.g. ``'c3-'``); must be unique per page.

    Returns
    -------
    str
        The ``<svg>…</svg>`` element without XML prolog, DOCTYPE or RDF metadata; ids that
        nothing references are removed, the others (and their references) prefixed.
    """
    start = svg.find("<svg")
    body = svg[start:] if start >= 0 else svg
    body = re.sub(r"\s*<metadata>.*?</metadata>", "", body, flags=re.S)
    referenced = {m.group(2) for m in _REF_RE.finditer(body)}

    def _id(m: re.Match[str]) -> str:
        return f' id="{prefix}{m.group(1)}"' if m.group(1) in referenced else ""

    body = _ID_RE.sub(_id, body)
    body = _REF_RE.sub(lambda m: f"{m.group(1)}{prefix}{m.group(2)}", body)
    return body.strip()


def _render(draw: Any, *, width: float, height: float, prefix: str) -> str:
    import matplotlib

    with warnings.catch_warnings():
        # Missing glyphs (emoji in a label) and layout hints must not fail a report.
        warnings.filterwarnings("ignore", category=UserWarning, module=r"matplotlib\..*")
        warnings.filterwarnings("ignore", category=RuntimeWarning, module=r"matplotlib\..*")
        with matplotlib.rc_context(_RC):
            fig = _figure(width, height)
            draw(fig)
            return _to_svg(fig, prefix=prefix)


def histogram_chart(
    edges: Sequence[float],
    counts: Sequence[int],
    *,
    title: str,
    xlabel: str,
    ylabel: str = "documents",
    prefix: str = "h-",
    color: str = PALETTE[0],
    integer_x: bool = False,
    width: float = 6.4,
    height: float = 2.6,
) -> str:
    """A histogram from precomputed bin edges and counts, as an SVG string.

    Parameters
    ----------
    edges : sequence of float
        ``len(counts) + 1`` bin edges, ascending.
    counts : sequence of int
        Count per bin.
    title, xlabel, ylabel : str
        Chart texts.
    prefix : str, default 'h-'
        Id prefix, unique per page (see :func:`clean_svg`).
    color : str
        Bar colour.
    integer_x : bool, default False
        Put x ticks on integers only (for counts).
    width, height : float
        Figure size in inches.

    Returns
    -------
    str
        An ``<svg>`` element.
    """

    def draw(fig: Any) -> None:
        ax = fig.add_subplot()
        e = [float(x) for x in edges]
        c = [float(x) for x in counts]
        if c:
            ax.stairs(c, e, fill=True, color=color, alpha=0.85)
        ax.set_title(_short(title, 90), loc="left")
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        ax.set_ylim(bottom=0)
        ax.yaxis.set_major_locator(_int_locator())
        if integer_x:
            ax.xaxis.set_major_locator(_int_locator())

    return _render(draw, width=width, height=height, prefix=prefix)


def step_histogram_chart(
    edges: Sequence[float],
    series: Mapping[str, Sequence[int]],
    *,
    title: str,
    xlabel: str,
    ylabel: str = "documents",
    prefix: str = "s-",
    width: float = 6.4,
    height: float = 2.6,
) -> str:
    """Several histograms over the same bins, drawn as overlaid step lines.

    Parameters
    ----------
    edges : sequence of float
        Shared bin edges.
    series : mapping of str to sequence of int
        Legend label → counts per bin.
    title, xlabel, ylabel : str
        Chart texts.
    prefix : str, default 's-'
        Id prefix, unique per page.
    width, height : float
        Figure size in inches.

    Returns
    -------
    str
        An ``<svg>`` element.
    """

    def draw(fig: Any) -> None:
        ax = fig.add_subplot()
        e = [float(x) for x in edges]
        for i, (name, counts) in enumerate(series.items()):
            ax.stairs([float(x) for x in counts], e, color=PALETTE[i % len(PALETTE)],
                      linewidth=1.6, label=_short(name, 32))
        ax.set_title(_short(title, 90), loc="left")
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        ax.set_ylim(bottom=0)
        ax.yaxis.set_major_locator(_int_locator())
        if series:
            ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8)

    return _render(draw, width=width, height=height, prefix=prefix)


def bar_chart(
    labels: Sequence[str],
    values: Sequence[float],
    *,
    title: str,
    xlabel: str,
    prefix: str = "b-",
    colors: Sequence[str] | None = None,
    annotate: Sequence[str] | None = None,
    width: float = 6.4,
) -> str:
    """A horizontal bar chart (first label at the top); negative values extend left.

    Parameters
    ----------
    labels : sequence of str
        Bar labels (long labels are shortened with an ellipsis).
    values : sequence of float
        Bar lengths.
    title, xlabel : str
        Chart texts.
    prefix : str, default 'b-'
        Id prefix, unique per page.
    colors : sequence of str or None
        Per-bar colours; default: the first palette colour, or by sign when values are
        of both signs.
    annotate : sequence of str or None
        Text drawn at the end of each bar (e.g. counts and shares).
    width : float
        Figure width in inches; the height grows with the number of bars.

    Returns
    -------
    str
        An ``<svg>`` element.
    """
    n = len(labels)
    height = 0.9 + 0.28 * max(n, 1)

    def draw(fig: Any) -> None:
        ax = fig.add_subplot()
        vals = [float(v) for v in values]
        if colors is not None:
            cols = list(colors)
        elif any(v < 0 for v in vals):
            cols = [PALETTE[3] if v < 0 else PALETTE[0] for v in vals]
        else:
            cols = [PALETTE[0]] * n
        ys = list(range(n))[::-1]
        ax.barh(ys, vals, color=cols, height=0.7)
        ax.set_yticks(ys, [_short(x) for x in labels])
        ax.grid(axis="y", visible=False)
        if any(v < 0 for v in vals):
            ax.axvline(0, color="#555555", linewidth=0.8)
        if annotate is not None:
            # Text right of the bar's end, or right of zero for a negative bar (its row is
            # empty there), so it never runs into the tick labels.
            span = max((abs(v) for v in vals), default=0.0) or 1.0
            for y, v, text in zip(ys, vals, annotate, strict=False):
                ax.text(max(v, 0.0) + 0.01 * span, y, f" {text}", va="center", ha="left",
                        fontsize=8, color="#333333")
            lo = min(0.0, *vals) if vals else 0.0
            hi = max(0.0, *vals) if vals else 1.0
            ax.set_xlim(lo - (0.05 * span if lo < 0 else 0), hi + 0.45 * span)
        ax.set_title(_short(title, 90), loc="left")
        ax.set_xlabel(xlabel)

    return _render(draw, width=width, height=height, prefix=prefix)


def grouped_bar_chart(
    categories: Sequence[str],
    series: Mapping[str, Sequence[float]],
    *,
    title: str,
    xlabel: str,
    prefix: str = "g-",
    width: float = 6.4,
) -> str:
    """Horizontal bars per category, one bar per series side by side (e.g. before/after).

    Parameters
    ----------
    categories : sequence of str
        Category labels (top to bottom).
    series : mapping of str to sequence of float
        Legend label → one value per category.
    title, xlabel : str
        Chart texts.
    prefix : str, default 'g-'
        Id prefix, unique per page.
    width : float
        Figure width in inches; the height grows with the number of categories.

    Returns
    -------
    str
        An ``<svg>`` element.
    """
    n = len(categories)
    k = max(len(series), 1)
    height = 1.1 + 0.22 * max(n, 1) * k

    def draw(fig: Any) -> None:
        ax = fig.add_subplot()
        bar = 0.8 / k
        for i, (name, vals) in enumerate(series.items()):
            ys = [n - 1 - j + 0.4 - bar * (i + 0.5) for j in range(n)]
            ax.barh(ys, [float(v) for v in vals], height=bar * 0.92,
                    color=PALETTE[i % len(PALETTE)], label=_short(name, 32))
        ax.set_yticks(list(range(n))[::-1], [_short(c) for c in categories])
        ax.grid(axis="y", visible=False)
        ax.set_title(_short(title, 90), loc="left")
        ax.set_xlabel(xlabel)
        if series:
            ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8)

    return _render(draw, width=width, height=height, prefix=prefix)


def line_chart(
    xlabels: Sequence[str],
    series: Mapping[str, Sequence[float | None]],
    *,
    title: str,
    ylabel: str,
    prefix: str = "l-",
    width: float = 6.4,
) -> str:
    """Lines over ordered points (e.g. label shares over snapshots), one per series.

    Parameters
    ----------
    xlabels : sequence of str
        The points, left to right.
    series : mapping of str to sequence of float or None
        Legend label → one value per point (``None``: no value there, a gap).
    title, ylabel : str
        Chart texts.
    prefix : str, default 'l-'
        Id prefix, unique per page.
    width : float
        Figure width in inches.

    Returns
    -------
    str
        An ``<svg>`` element.
    """
    xs = list(range(len(xlabels)))

    def draw(fig: Any) -> None:
        ax = fig.add_subplot()
        for i, (name, vals) in enumerate(series.items()):
            ys = [float("nan") if v is None else float(v) for v in vals]
            ax.plot(xs, ys, marker="o", markersize=3.5, linewidth=1.6,
                    color=PALETTE[i % len(PALETTE)], label=_short(name, 32))
        step = max(1, len(xs) // 12)  # at most ~12 tick labels
        ax.set_xticks(xs[::step], [_short(x, 20) for x in list(xlabels)[::step]],
                      rotation=30, ha="right")
        ax.set_title(_short(title, 90), loc="left")
        ax.set_ylabel(ylabel)
        if series:
            ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8)

    return _render(draw, width=width, height=3.2, prefix=prefix)


# --------------------------------------------------------------------------- report charts


def chart_slug(text: str) -> str:
    """An injective, file-name-safe form of ``text`` (e.g. a head name) for chart names.

    Letters, digits, ``.`` and ``-`` are kept; every other byte of the UTF-8 encoding
    (``_`` included) becomes ``_xx`` (hex), so different texts never give the same slug.

    Examples
    --------
    >>> chart_slug("safety"), chart_slug("a b"), chart_slug("a_b")
    ('safety', 'a_20b', 'a_5fb')
    """
    return "".join(chr(b) if chr(b).isascii() and (chr(b).isalnum() or chr(b) in ".-")
                   else f"_{b:02x}" for b in text.encode("utf-8")) or "_"


def _feature_name(item: Mapping[str, Any]) -> str:
    label = item.get("label")
    return f"f{item['feature']}" + (f" {label}" if label else "")


def _labels_drawer(title: str, counts: Mapping[str, int]) -> Callable[[str], str]:
    labels = list(counts)
    total = sum(counts.values()) or 1

    def draw(prefix: str) -> str:
        return bar_chart(labels, [counts[x] for x in labels], title=title, xlabel="documents",
                         prefix=prefix,
                         annotate=[f"{counts[x]:,} ({counts[x] / total:.1%})" for x in labels])

    return draw


def _scores_drawer(title: str, scores: Mapping[str, Any]) -> Callable[[str], str]:
    edges = next(iter(scores.values()))["edges"]

    def draw(prefix: str) -> str:
        return step_histogram_chart(edges, {k: v["counts"] for k, v in scores.items()},
                                    title=title, xlabel="probability", prefix=prefix)

    return draw


def _shares_drawer(title: str, info: Mapping[str, Any]) -> Callable[[str], str]:
    classes = list(info["classes"])

    def draw(prefix: str) -> str:
        return grouped_bar_chart(
            classes, {"previous": [info["previous_shares"][c] for c in classes],
                      "current": [info["current_shares"][c] for c in classes]},
            title=title, xlabel="share of documents", prefix=prefix)

    return draw


def _shift_drawer(title: str, top: Sequence[Mapping[str, Any]]) -> Callable[[str], str]:
    def draw(prefix: str) -> str:
        return bar_chart(
            [_feature_name(t) for t in top], [t["change"] for t in top], title=title,
            xlabel="current − previous firing rate", prefix=prefix,
            annotate=[f"{t['previous_rate']:.1%} → {t['current_rate']:.1%}" for t in top])

    return draw


def _plan(report: Mapping[str, Any]) -> list[tuple[str, str, Callable[[str], str]]]:
    """(name, title, draw) per chart, in page order; draw(prefix) returns the SVG."""
    plan: list[tuple[str, str, Callable[[str], str]]] = []

    def add(name: str, title: str, draw: Callable[[str], str]) -> None:
        plan.append((name, title, draw))

    corpus = report.get("corpus") or {}
    tokens = corpus.get("tokens") or {}
    hist = tokens.get("histogram")
    if hist and hist.get("counts"):
        add("tokens", "Tokens per document", lambda p: histogram_chart(
            hist["edges"], hist["counts"], title="Tokens per document",
            xlabel="tokens (after exclusions)", prefix=p, integer_x=True))
    active = corpus.get("active_features") or {}
    ahist = active.get("histogram")
    if ahist and ahist.get("counts"):
        add("active-features", "Active SAE features per document", lambda p: histogram_chart(
            ahist["edges"], ahist["counts"], title="Active SAE features per document",
            xlabel="features with a non-zero pooled activation", prefix=p, color=PALETTE[2],
            integer_x=True))

    for head, info in (report.get("heads") or {}).items():
        counts: Mapping[str, int] = info.get("label_counts") or {}
        add(f"labels-{chart_slug(head)}", f"{head}: predicted labels",
            _labels_drawer(f"{head}: predicted labels", counts))
        scores = info.get("scores") or {}
        if scores:
            add(f"scores-{chart_slug(head)}", f"{head}: class probabilities",
                _scores_drawer(f"{head}: class probabilities", scores))

    drift = report.get("drift") or {}
    for head, info in (drift.get("labels") or {}).items():
        title = f"{head}: label shares, previous vs current"
        add(f"drift-labels-{chart_slug(head)}", title, _shares_drawer(title, info))
    feats = drift.get("features") or {}
    top = feats.get("top_shifted") or []
    if top:
        title = "Most shifted features (firing-rate change)"
        add("drift-features", title, _shift_drawer(title, top))
    return plan


def report_charts(report: Mapping[str, Any]) -> list[Chart]:
    """All charts of a report, in page order.

    Parameters
    ----------
    report : mapping
        A report as built by :func:`auditor.report.build_report`.

    Returns
    -------
    list of Chart
        The token-count and active-feature histograms; per prediction head, its label
        distribution and its probability histograms; with drift, per compared head the
        label shares before and after, and the most shifted features' firing rates.
    """
    return [Chart(name=name, title=title, svg=draw(f"c{i}-"))
            for i, (name, title, draw) in enumerate(_plan(report))]


def chart_titles(report: Mapping[str, Any]) -> dict[str, str]:
    """Name → title of the charts :func:`report_charts` would draw, without drawing them.

    Parameters
    ----------
    report : mapping
        A report as built by :func:`auditor.report.build_report`.

    Returns
    -------
    dict of str to str
        In page order.
    """
    return {name: title for name, title, _ in _plan(report)}
