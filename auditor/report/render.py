"""Render a report (the dict of :func:`auditor.report.build_report`) as HTML, Markdown, JSON.

* HTML is one self-contained page: inline CSS, charts as inline SVG, no JavaScript and no
  external resource (a Content-Security-Policy forbids loading any).
* Markdown has the same tables; charts are linked as SVG files when a chart directory is
  given (:func:`write_report` writes them next to the Markdown file).
* JSON is the report dict itself.

:func:`write_report` writes the chosen formats into a directory, each file atomically
(:func:`auditor._files.atomic_write_text`: temporary file, fsync, ``os.replace``).
"""

from __future__ import annotations

import html
import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from auditor._files import atomic_write_text
from auditor._versions import libraries_text
from auditor.errors import ConfigError
from auditor.report.charts import Chart, chart_slug, chart_titles, report_charts

if TYPE_CHECKING:
    from auditor.progress import Stage

__all__ = ["FORMATS", "domain_lines", "render_html", "render_json", "render_markdown",
           "write_report"]

#: Output formats of :func:`write_report`, with their file names.
FORMATS: dict[str, str] = {"html": "report.html", "json": "report.json", "md": "report.md"}
_CHART_DIR = "charts"

_CSS = """
:root{--fg:#1d2430;--muted:#5b6576;--line:#d9dee7;--bg:#f6f7f9;--card:#fff;--accent:#0072B2;
--warn:#b3261e;--ok:#1e7b34}
*{box-sizing:border-box}
body{margin:0;font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,"DejaVu Sans",sans-serif;
color:var(--fg);background:var(--bg)}
header{background:#1d2430;color:#fff;padding:20px 32px}
header h1{margin:0 0 4px;font-size:22px}
header .sub{color:#c5cbd6;font-size:13px}
nav{padding:8px 32px;background:#fff;border-bottom:1px solid var(--line);font-size:13px}
nav a{color:var(--accent);margin-right:14px;text-decoration:none}
main{max-width:1180px;margin:0 auto;padding:16px 32px 40px}
section{background:var(--card);border:1px solid var(--line);border-radius:8px;padding:16px 20px;
margin:16px 0}
h2{font-size:18px;margin:0 0 12px}
h3{font-size:15px;margin:18px 0 8px}
h4{font-size:13px;margin:14px 0 6px;color:var(--muted)}
.cards{display:flex;flex-wrap:wrap;gap:10px;margin:4px 0 0}
.card{flex:1 1 130px;background:#fff;color:var(--fg);border:1px solid var(--line);
border-radius:8px;padding:10px 12px}
.card .v{font-size:20px;font-weight:600}
.card .k{color:var(--muted);font-size:12px}
.card.warn .v{color:var(--warn)}
table{border-collapse:collapse;width:100%;margin:6px 0 10px;font-size:13px}
th,td{border-bottom:1px solid var(--line);padding:5px 8px;text-align:left;vertical-align:top}
th{background:#f0f2f5;font-weight:600}
td.n,th.n{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
table.kv th{width:230px}
code,.mono{font-family:ui-monospace,"DejaVu Sans Mono",Menlo,monospace;font-size:12px;
word-break:break-all}
.muted{color:var(--muted)}
.snip{color:#333;font-size:12.5px;max-width:520px}
.ex{color:var(--muted);font-size:12px;display:block}
.charts{display:flex;flex-wrap:wrap;gap:12px}
figure.chart{margin:6px 0;flex:1 1 480px;min-width:320px;max-width:760px}
figure.chart svg{width:100%;height:auto;display:block}
.note{background:#fff8e1;border-left:3px solid #e6a700;padding:6px 10px;margin:6px 0;
font-size:13px}
.pos{color:var(--ok)}.neg{color:var(--warn)}
footer{color:var(--muted);font-size:12px;text-align:center;padding:16px}
"""


# --------------------------------------------------------------------------- formatting


def _e(value: Any) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def _int(value: Any) -> str:
    return "–" if value is None else f"{int(value):,}"


def _num(value: Any, digits: int = 3) -> str:
    if value is None:
        return "–"
    v = float(value)
    if v != 0 and (abs(v) >= 1e5 or abs(v) < 10 ** (-digits)):
        return f"{v:.{digits}g}"
    return f"{v:,.{digits}f}"


def _pct(value: Any, digits: int = 1) -> str:
    return "–" if value is None else f"{float(value) * 100:.{digits}f}%"


def _signed_pct(value: Any) -> str:
    return "–" if value is None else f"{float(value) * 100:+.1f} pp"


def _short_hash(value: Any, n: int = 16) -> str:
    return "–" if not value else str(value)[:n]


def _feature(item: Mapping[str, Any]) -> str:
    label = item.get("label")
    return f"f{item['feature']}" + (f" · {label}" if label else "")


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


def _drift_cells(name: str, values: Mapping[str, Any]) -> list[str]:
    if name.startswith("mean"):
        return [_num(values.get(k), 1) for k in ("previous", "current", "change")]
    cells = [_int(values.get("previous")), _int(values.get("current"))]
    change = values.get("change")
    return [*cells, "–" if change is None else f"{int(change):+,}"]


def _p_value(value: Any) -> str:
    if value is None:
        return "–"
    v = float(value)
    return "< 1e-12" if v < 1e-12 else f"{v:.3g}"


def _model_name(model: Mapping[str, Any]) -> str:
    # A converted GGUF lives under a cache path; name the file it came from first.
    origin = model.get("converted_from") or {}
    where = f"{model.get('id') or '–'}"
    if not origin.get("sha256"):
        return where
    return (f"{origin.get('name') or 'GGUF'} (GGUF sha256 {_short_hash(origin['sha256'], 12)}…), "
            f"converted at {where}")


def _provenance_rows(report: Mapping[str, Any]) -> list[tuple[str, str]]:
    prov = report.get("provenance") or {}
    model = prov.get("model") or {}
    sae = prov.get("sae") or {}
    inp = prov.get("input") or {}
    store = prov.get("store") or {}
    return [
        ("Model", _model_name(model)),
        ("Model weights SHA-256", _short_hash(model.get("weights_sha256"), 64)),
        ("SAE", f"{sae.get('key')} — layer {sae.get('layer')} {sae.get('hook_point') or ''}, "
                f"d_sae {sae.get('d_sae')}, {sae.get('activation') or ''}"
                + (f" k={sae['k']}" if sae.get("k") else "")),
        ("SAE SHA-256", _short_hash(sae.get("sha256"), 64)),
        ("Layer", str(prov.get("layer"))),
        ("Pooling", f"{prov.get('pooling')} (stored: "
                    f"{', '.join(prov.get('poolings_stored') or [])})"),
        ("Max length (tokens / window)", str(prov.get("max_length"))),
        ("Auditor version (extraction)", str(prov.get("auditor_version"))),
        ("Auditor version (report)", str(prov.get("report_auditor_version"))),
        ("Libraries (extraction)", libraries_text(prov.get("libraries"))),
        ("Input", str(inp.get("path") or "–")),
        ("Input fingerprint", str(inp.get("fingerprint") or "–")),
        ("Feature store", str(store.get("path") or "–")),
    ]


def _cards(report: Mapping[str, Any]) -> list[tuple[str, str, bool]]:
    corpus = report.get("corpus") or {}
    tokens = corpus.get("tokens") or {}
    quality = report.get("quality") or {}
    cards = [
        ("documents", _int(corpus.get("documents")), False),
        ("tokens", _int(tokens.get("total")), False),
        ("mean tokens / doc", _num(tokens.get("mean"), 1), False),
    ]
    flagged = report.get("flagged")
    if flagged is not None:
        cards.append(("flagged documents", _int(flagged.get("total")), bool(flagged["total"])))
    dom = report.get("domain")
    if dom:
        cards.append(("outside every head's domain", _int(dom.get("outside_every")),
                      bool(dom.get("outside_every"))))
    dup = report.get("near_duplicates")
    if dup is not None:
        cards.append(("near-duplicate docs", _int(dup.get("near_duplicates")),
                      bool(dup.get("near_duplicates"))))
    if quality.get("empty_texts") is not None:
        cards.append(("empty texts", _int(quality["empty_texts"]), bool(quality["empty_texts"])))
    if quality.get("overlong_texts") is not None:
        cards.append(("overlong texts", _int(quality["overlong_texts"]),
                      bool(quality["overlong_texts"])))
    drift = report.get("drift")
    if drift and drift.get("features") and drift["features"].get("value") is not None:
        cards.append(("feature JSD (bits)", _num(drift["features"]["value"], 4), False))
    return cards


def _quality_rows(report: Mapping[str, Any]) -> list[tuple[str, str]]:
    q = report.get("quality") or {}
    rows = [
        ("Documents with 0 tokens (after exclusions)", _int(q.get("zero_token_docs"))),
        (f"Documents over {q.get('max_length')} tokens (split into windows)",
         _int(q.get("long_docs"))),
        ("Documents cut to their first windows", _int(q.get("truncated_docs"))),
        ("Rows skipped at extraction", _int(q.get("bad_rows_at_extraction"))),
    ]
    t = report.get("texts")
    if t:
        rows += [
            ("Empty texts (null / whitespace-only)", _int(t.get("empty"))),
            (f"Overlong texts (> {t.get('max_chars'):,} characters)", _int(t.get("overlong"))),
            ("Other unusable rows", _int(t.get("other_bad_rows"))),
            ("Texts matched to the store", f"{_int(t.get('matched_store'))} of "
                                           f"{_int(t.get('documents'))}"),
            ("Store documents without a text", _int(t.get("store_docs_without_text"))),
            ("Texts fingerprint = store input", {True: "yes", False: "NO (different file?)",
                                                 None: "–"}[t.get("fingerprint_matches_store")]),
        ]
    return rows


def _stat_rows(stats: Mapping[str, Any]) -> list[str]:
    return [_int(stats.get("total")), _num(stats.get("mean"), 1), _num(stats.get("median"), 1),
            _num(stats.get("p05"), 1), _num(stats.get("p95"), 1), _int(stats.get("min")),
            _int(stats.get("max"))]


_STAT_HEAD = ["total", "mean", "median", "p5", "p95", "min", "max"]


# --------------------------------------------------------------------------- HTML


def _table(head: Sequence[str], rows: Iterable[Sequence[str]], *, numeric: Sequence[int] = (),
           raw: bool = False, cls: str = "") -> str:
    """An HTML table; cells are escaped unless ``raw`` (then they are trusted HTML)."""
    num = set(numeric)
    out = [f'<table class="{cls}">' if cls else "<table>", "<thead><tr>"]
    out += [f'<th class="n">{_e(h)}</th>' if i in num else f"<th>{_e(h)}</th>"
            for i, h in enumerate(head)]
    out.append("</tr></thead><tbody>")
    for row in rows:
        out.append("<tr>")
        for i, cell in enumerate(row):
            text = cell if raw else _e(cell)
            out.append(f'<td class="n">{text}</td>' if i in num else f"<td>{text}</td>")
        out.append("</tr>")
    out.append("</tbody></table>")
    return "".join(out)


def _kv(rows: Iterable[tuple[str, str]]) -> str:
    body = "".join(f"<tr><th>{_e(k)}</th><td>{_e(v)}</td></tr>" for k, v in rows)
    return f'<table class="kv"><tbody>{body}</tbody></table>'


def _figure(charts: dict[str, Chart], *names: str) -> str:
    parts = []
    for name in names:
        chart = charts.pop(name, None)
        if chart is not None:
            parts.append(f'<figure class="chart" aria-label="{_e(chart.title)}">{chart.svg}'
                         "</figure>")
    return f'<div class="charts">{"".join(parts)}</div>' if parts else ""


def _features_html(items: Sequence[Mapping[str, Any]]) -> str:
    rows = []
    for it in items:
        ex = "".join(f'<span class="ex">“{_e(x)}”</span>' for x in it.get("examples") or [])
        top_docs = list(it.get("top_docs") or [])
        docs = ", ".join(f"<code>{_e(d['doc_id'])}</code>" for d in top_docs)
        if top_docs and top_docs[0].get("snippet"):
            docs += f'<span class="ex">{_e(_clip(top_docs[0]["snippet"], 110))}</span>'

        rows.append([f"<code>f{_e(it['feature'])}</code>", _e(it.get("label") or "–") + ex,
                     _num(it["mean_diff"]), _num(it["mean_in"]), _num(it["mean_out"]),
                     _pct(it["fire_in"]), _pct(it["fire_out"]), _num(it["fire_ratio"], 2),
                     docs or '<span class="muted">–</span>'])
    return _table(["feature", "label / example contexts", "Δ mean", "mean in", "mean out",
                   "fires in", "fires out", "fire ratio", "top documents (first: text)"], rows,
                  numeric=(2, 3, 4, 5, 6, 7), raw=True)


def _explain_html(expl: Sequence[Mapping[str, Any]]) -> str:
    if not expl:
        return '<span class="muted">–</span>'
    parts = []
    for present, title in ((True, "fired"), (False, "did not fire")):
        items = [e for e in expl if (e.get("present") is not False) == present]
        if items:
            parts.append(f'<span class="ex"><b>{title}:</b></span>')
        for e in items:
            c = e.get("contribution")
            cls = "pos" if (c or 0) >= 0 else "neg"
            parts.append(f'<span class="ex"><span class="{cls}">{_num(c, 2)}</span> '
                         f"<code>f{_e(e['feature'])}</code> {_e(e.get('label') or '')}</span>")
    return "".join(parts)


def _explain_md(expl: Sequence[Mapping[str, Any]]) -> str:
    parts = []
    for present, title in ((True, "fired"), (False, "did not fire")):
        items = [f"{_num(e.get('contribution'), 2)} {_feature(e)}" for e in expl
                 if (e.get("present") is not False) == present]
        if items:
            parts.append(f"{title}: " + "; ".join(items))
    return " — ".join(parts) or "–"


def domain_lines(report: Mapping[str, Any]) -> list[str]:
    """The report's out-of-domain counts as sentences (none without domain columns).

    Examples
    --------
    >>> domain_lines({"domain": {"documents": 10, "heads": ["safety"],
    ...               "outside": {"safety": 3}, "outside_every": 3, "unknown": 0}})
    ["Outside every head's domain: 3 of 10 documents", "outside safety's domain: 3 of 10"]
    """
    dom = report.get("domain")
    if not dom:
        return []
    m = _int(dom.get("documents"))
    lines = [f"Outside every head's domain: {_int(dom.get('outside_every'))} of {m} documents"]
    lines += [f"outside {h}'s domain: {_int(n)} of {m}"
              for h, n in (dom.get("outside") or {}).items()]
    if dom.get("unknown"):
        lines.append(f"documents without a domain score for some head: "
                     f"{_int(dom['unknown'])}")
    return lines


def render_html(report: Mapping[str, Any], *, charts: Sequence[Chart] | None = None) -> str:
    """Render a report as one self-contained HTML page.

    Parameters
    ----------
    report : mapping
        As built by :func:`auditor.report.build_report`.
    charts : sequence of Chart or None
        Charts already drawn by :func:`auditor.report.charts.report_charts` (to reuse
        them); None draws them.

    Returns
    -------
    str
        The HTML document: inline CSS, inline SVG charts (one per entry of
        :func:`auditor.report.charts.report_charts`), no script, no external resource.
    """
    by_name = {c.name: c for c in (report_charts(report) if charts is None else charts)}
    title = str(report.get("title") or "Corpus report")
    s: list[str] = []
    nav: list[tuple[str, str]] = [("provenance", "Provenance"), ("corpus", "Corpus"),
                                  ("quality", "Data quality")]
    heads = report.get("heads") or {}
    if heads:
        nav.append(("predictions", "Predictions"))
    if report.get("flagged") is not None:
        nav.append(("flagged", "Flagged"))
    nav.append(("features", "Features"))
    if report.get("drift"):
        nav.append(("drift", "Drift"))
    if report.get("changes"):  # a scheduled snapshot's summary goes first
        nav.insert(0, ("changes", "What changed"))

    s.append('<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">')
    s.append('<meta http-equiv="Content-Security-Policy" content="default-src \'none\'; '
             'style-src \'unsafe-inline\'; img-src data:">')
    s.append('<meta name="viewport" content="width=device-width, initial-scale=1">')
    s.append(f'<meta name="generator" content="auditor '
             f'{_e((report.get("provenance") or {}).get("report_auditor_version"))}">')
    s.append(f"<title>{_e(title)}</title><style>{_CSS}</style></head><body>")
    prov = report.get("provenance") or {}
    s.append(f"<header><h1>{_e(title)}</h1><div class=\"sub\">generated "
             f"{_e(report.get('generated_at'))} · model {_e((prov.get('model') or {}).get('id'))}"
             f" · SAE {_e((prov.get('sae') or {}).get('key'))} "
             f"(<span class=\"mono\">{_e(_short_hash((prov.get('sae') or {}).get('sha256'), 12))}"
             f"</span>) · pooling {_e(prov.get('pooling'))}</div>")
    s.append('<div class="cards" style="margin-top:12px">')
    for key, value, warn in _cards(report):
        s.append(f'<div class="card{" warn" if warn else ""}"><div class="v">{_e(value)}</div>'
                 f'<div class="k">{_e(key)}</div></div>')
    s.append("</div></header>")
    s.append("<nav>" + "".join(f'<a href="#{a}">{_e(t)}</a>' for a, t in nav) + "</nav><main>")
    if report.get("changes"):
        s.append(_changes_html(report["changes"]))

    # provenance
    s.append('<section id="provenance"><h2>Provenance</h2>')
    s.append(_kv(_provenance_rows(report)))
    src = report.get("sources") or {}
    s.append(_kv([(f"Source: {k}", v or "–") for k, v in src.items()]))
    s.append("</section>")

    # corpus
    corpus = report.get("corpus") or {}
    s.append(f'<section id="corpus"><h2>Corpus</h2><p>{_int(corpus.get("documents"))} '
             "documents.</p>")
    s.append(_table(["per document", *_STAT_HEAD], [
        ["tokens", *_stat_rows(corpus.get("tokens") or {})],
        ["active SAE features", *_stat_rows(corpus.get("active_features") or {})],
    ], numeric=range(1, 8)))
    s.append(_figure(by_name, "tokens", "active-features"))
    s.append("</section>")

    # quality
    s.append('<section id="quality"><h2>Data quality</h2>')
    s.append(_kv(_quality_rows(report)))
    t = report.get("texts")
    if t and t.get("bad_row_examples"):
        s.append("<h4>Examples of unusable rows</h4><ul>" + "".join(
            f"<li><code>{_e(x)}</code></li>" for x in t["bad_row_examples"]) + "</ul>")
    dup = report.get("near_duplicates")
    if dup is not None:
        s.append("<h3>Near duplicates</h3>")
        s.append(_kv([
            ("Documents checked", _int(dup.get("documents"))),
            ("Exact duplicates (normalised text)", _int(dup.get("exact_duplicates"))),
            ("Near-duplicate documents (beyond the first of each group)",
             _int(dup.get("near_duplicates"))),
            ("Groups", _int(dup.get("groups"))),
            ("Largest group", _int(dup.get("largest_group"))),
            ("Method", str(dup.get("method"))),
        ]))
        if dup.get("top_groups"):
            s.append(_table(["size", "min. similarity", "exact", "documents", "first text"], [
                [_int(g["size"]), _num(g["min_similarity"], 3), "yes" if g["exact"] else "no",
                 ", ".join(g["doc_ids"]) + (" …" if g["size"] > len(g["doc_ids"]) else ""),
                 g.get("snippet") or "–"] for g in dup["top_groups"]], numeric=(0, 1)))
    elif not t:
        s.append('<p class="muted">Give the report the input texts (<code>texts</code>) for '
                 "empty, overlong and near-duplicate counts.</p>")
    s.append("</section>")

    # predictions
    if heads:
        s.append('<section id="predictions"><h2>Predictions</h2>')
        dom = domain_lines(report)
        if dom:
            s.append(f"<p><strong>{_e(dom[0])}</strong></p>")
            if dom[1:]:
                s.append("<ul>" + "".join(f"<li>{_e(x)}</li>" for x in dom[1:]) + "</ul>")
        for head, info in heads.items():
            s.append(f"<h3>Head: {_e(head)}</h3>")
            counts = info.get("label_counts") or {}
            shares = info.get("label_shares") or {}
            means = {c: v.get("mean") for c, v in (info.get("scores") or {}).items()}
            s.append(_table(["label", "documents", "share", "mean probability"], [
                [c, _int(n), _pct(shares.get(c)), _num(means.get(c))]
                for c, n in counts.items()], numeric=(1, 2, 3)))
            s.append(_figure(by_name, f"labels-{chart_slug(head)}", f"scores-{chart_slug(head)}"))
            for label, items in (info.get("top_features") or {}).items():
                s.append(f"<h4>Top features for {_e(head)} = {_e(label)}</h4>")
                s.append(_features_html(items) if items else
                         '<p class="muted">No over-represented feature (or no contrast '
                         "group).</p>")
        s.append("</section>")

    # flagged
    flagged = report.get("flagged")
    if flagged is not None:
        s.append('<section id="flagged"><h2>Flagged documents</h2>')
        rules = "; ".join(f"{h} = {' / '.join(v)}" for h, v in flagged["rules"].items())
        counts = ", ".join(f"{h} {lab}: {n:,}" for h, d in flagged["counts"].items()
                           for lab, n in d.items())
        s.append(f"<p>Rules: {_e(rules or 'none')}. {_e(counts)}. Showing "
                 f"{_int(flagged['shown'])} of {_int(flagged['total'])}, highest probability "
                 "first.</p>")
        if flagged["documents"]:
            s.append(_table(["document", "head", "label", "probability", "explanation "
                             "(contribution, feature)", "text"], [
                [f"<code>{_e(d['doc_id'])}</code>", _e(d["head"]), _e(d["label"]),
                 _num(d.get("probability")), _explain_html(d.get("explanation") or []),
                 f'<span class="snip">{_e(d.get("snippet") or "–")}</span>']
                for d in flagged["documents"]], numeric=(3,), raw=True))
        s.append("</section>")

    # feature density
    dens = report.get("feature_density") or {}
    s.append('<section id="features"><h2>Feature density</h2>')
    s.append(_kv([("SAE", str(dens.get("sae"))), ("Features (d_sae)", _int(dens.get("d_sae"))),
                  ("Features that fire in ≥ 1 document", _int(dens.get("features_fired"))),
                  ("Features that never fire", _int(dens.get("dead_features"))),
                  ("Mean firing rate (share of documents, over features)",
                   _pct(dens.get("mean_fire_rate"), 2))]))
    s.append("</section>")

    # drift
    drift = report.get("drift")
    if drift:
        s.append('<section id="drift"><h2>Drift against the previous report</h2>')
        prev = drift.get("previous") or {}
        s.append(f"<p>Previous: {_e(prev.get('title'))} ({_e(prev.get('generated_at'))}"
                 f"{', ' + _e(prev.get('source')) if prev.get('source') else ''}).</p>")
        for note in drift.get("notes") or []:
            s.append(f'<div class="note">{_e(note)}</div>')
        corp = drift.get("corpus") or {}
        s.append(_table(["", "previous", "current", "change"], [
            [k.replace("_", " "), *_drift_cells(k, v)] for k, v in corp.items()],
            numeric=(1, 2, 3)))
        for head, info in (drift.get("labels") or {}).items():
            chi = info.get("chi_square") or {}
            s.append(f"<h3>Label shares: {_e(head)}</h3>")
            s.append(f"<p>Total variation distance <b>{_num(info.get('total_variation'), 4)}"
                     f"</b> · Pearson χ² = <b>{_num(chi.get('statistic'), 3)}</b> (dof "
                     f"{_e(chi.get('dof') if chi.get('dof') is not None else '–')}, p = "
                     f"{_e(_p_value(chi.get('p_value')))})</p>")
            s.append(_table(["label", "previous", "current", "change"], [
                [c, f"{_pct(info['previous_shares'][c])} ({info['previous_counts'][c]:,})",
                 f"{_pct(info['current_shares'][c])} ({info['current_counts'][c]:,})",
                 _signed_pct(info["share_change"][c])] for c in info["classes"]],
                numeric=(1, 2, 3)))
            s.append(_figure(by_name, f"drift-labels-{chart_slug(head)}"))
        feats = drift.get("features")
        if feats:
            s.append("<h3>Feature density shift</h3>")
            mf = feats.get("mean_fire_rate") or {}
            s.append(f"<p>{_e(feats.get('description'))}: <b>{_num(feats.get('value'), 4)}</b>"
                     f" (<code>{_e(feats.get('statistic'))}</code>). Mean firing rate "
                     f"{_pct(mf.get('previous'), 2)} → {_pct(mf.get('current'), 2)}.</p>")
            if feats.get("top_shifted"):
                s.append(_table(["feature", "previous rate", "current rate", "change"], [
                    [_feature(t), _pct(t["previous_rate"]), _pct(t["current_rate"]),
                     _signed_pct(t["change"])] for t in feats["top_shifted"]],
                    numeric=(1, 2, 3)))
                s.append(_figure(by_name, "drift-features"))
        s.append("</section>")

    if by_name:  # never expected: every chart has its place above
        s.append('<section><h2>Other charts</h2>' + _figure(by_name, *list(by_name)) +
                 "</section>")
    methods = report.get("methods") or {}
    if methods:
        s.append('<section id="methods"><h2>Methods</h2>')
        s.append(_kv([(k.replace("_", " "), v) for k, v in methods.items()]))
        s.append("</section>")
    s.append(f"</main><footer>auditor {_e(prov.get('report_auditor_version'))} · report "
             f"format {_e(report.get('format'))} v{_e(report.get('version'))}</footer>")
    s.append("</body></html>\n")
    return "\n".join(s)


# --------------------------------------------------------------------------- Markdown


def _md(value: Any) -> str:
    text = "" if value is None else " ".join(str(value).split())
    return (text.replace("\\", "\\\\").replace("|", "\\|").replace("<", "&lt;")
            .replace(">", "&gt;").replace("*", "\\*").replace("_", "\\_")) or " "


def _md_table(head: Sequence[str], rows: Iterable[Sequence[Any]],
              numeric: Sequence[int] = ()) -> list[str]:
    num = set(numeric)
    out = ["| " + " | ".join(_md(h) for h in head) + " |",
           "|" + "|".join("---:" if i in num else "---" for i in range(len(head))) + "|"]
    out += ["| " + " | ".join(_md(c) for c in row) + " |" for row in rows]
    out.append("")
    return out


def render_markdown(report: Mapping[str, Any], *, chart_dir: str | None = None) -> str:
    """Render a report as Markdown.

    Parameters
    ----------
    report : mapping
        As built by :func:`auditor.report.build_report`.
    chart_dir : str or None
        Relative directory holding the charts as ``<name>.svg``; when given, each chart is
        linked as an image (``![title](chart_dir/name.svg)``). :func:`write_report` writes
        them. None omits charts (the tables carry the same numbers).

    Returns
    -------
    str
        The Markdown text.
    """
    names = chart_titles(report) if chart_dir is not None else {}

    def img(*keys: str) -> list[str]:
        return [f"![{_md(names[k])}]({chart_dir}/{k}.svg)\n" for k in keys if k in names]

    title = str(report.get("title") or "Corpus report")
    prov = report.get("provenance") or {}
    out = [f"# {_md(title)}", "",
           f"Generated {report.get('generated_at')} by auditor "
           f"{prov.get('report_auditor_version')}.", ""]
    out += [" · ".join(f"**{v}** {k}" for k, v, _ in _cards(report)), ""]
    if report.get("changes"):
        out += _changes_md(report["changes"])
    out += ["## Provenance", ""]
    out += _md_table(["", ""], _provenance_rows(report))
    out += _md_table(["source", "path"], [(k, v or "–") for k, v in
                                          (report.get("sources") or {}).items()])

    corpus = report.get("corpus") or {}
    out += ["## Corpus", "", f"{_int(corpus.get('documents'))} documents.", ""]
    out += _md_table(["per document", *_STAT_HEAD], [
        ["tokens", *_stat_rows(corpus.get("tokens") or {})],
        ["active SAE features", *_stat_rows(corpus.get("active_features") or {})],
    ], numeric=range(1, 8))
    out += img("tokens", "active-features")

    out += ["## Data quality", ""]
    out += _md_table(["check", "count"], _quality_rows(report), numeric=(1,))
    dup = report.get("near_duplicates")
    if dup is not None:
        out += ["### Near duplicates", "", f"Method: {_md(dup.get('method'))}.", "",
                f"{_int(dup.get('exact_duplicates'))} exact duplicates, "
                f"{_int(dup.get('near_duplicates'))} near-duplicate documents in "
                f"{_int(dup.get('groups'))} groups (largest {_int(dup.get('largest_group'))}).",
                ""]
        if dup.get("top_groups"):
            out += _md_table(["size", "min. similarity", "exact", "documents", "first text"], [
                [g["size"], _num(g["min_similarity"], 3), "yes" if g["exact"] else "no",
                 ", ".join(g["doc_ids"]), g.get("snippet") or "–"] for g in dup["top_groups"]],
                numeric=(0, 1))

    heads = report.get("heads") or {}
    if heads:
        out += ["## Predictions", ""]
        dom = domain_lines(report)
        if dom:
            out += [f"**{dom[0]}**", "", *[f"- {x}" for x in dom[1:]], ""]
        for head, info in heads.items():
            shares = info.get("label_shares") or {}
            means = {c: v.get("mean") for c, v in (info.get("scores") or {}).items()}
            out += [f"### Head: {_md(head)}", ""]
            out += _md_table(["label", "documents", "share", "mean probability"], [
                [c, _int(n), _pct(shares.get(c)), _num(means.get(c))]
                for c, n in (info.get("label_counts") or {}).items()], numeric=(1, 2, 3))
            out += img(f"labels-{chart_slug(head)}", f"scores-{chart_slug(head)}")
            for label, items in (info.get("top_features") or {}).items():
                out += [f"#### Top features for {_md(head)} = {_md(label)}", ""]
                if not items:
                    out += ["No over-represented feature (or no contrast group).", ""]
                    continue
                out += _md_table(
                    ["feature", "label", "Δ mean", "fires in", "fires out", "fire ratio",
                     "examples", "top documents"],
                    [[f"f{it['feature']}", it.get("label") or "–", _num(it["mean_diff"]),
                      _pct(it["fire_in"]), _pct(it["fire_out"]), _num(it["fire_ratio"], 2),
                      " / ".join(f"“{x}”" for x in it.get("examples") or []) or "–",
                      ", ".join(d["doc_id"] for d in it.get("top_docs") or []) or "–"]
                     for it in items], numeric=(2, 3, 4, 5))

    flagged = report.get("flagged")
    if flagged is not None:
        out += ["## Flagged documents", "",
                f"Showing {_int(flagged['shown'])} of {_int(flagged['total'])}, highest "
                "probability first. Rules: " + ("; ".join(
                    f"{h} = {' / '.join(v)}" for h, v in flagged["rules"].items()) or "none")
                + ".", ""]
        if flagged["documents"]:
            out += _md_table(["document", "head", "label", "probability", "explanation",
                              "text"], [
                [d["doc_id"], d["head"], d["label"], _num(d.get("probability")),
                 _explain_md(d.get("explanation") or []),
                 d.get("snippet") or "–"] for d in flagged["documents"]], numeric=(3,))

    dens = report.get("feature_density") or {}
    out += ["## Feature density", "",
            f"{_int(dens.get('features_fired'))} of {_int(dens.get('d_sae'))} features fire in "
            f"at least one document ({_int(dens.get('dead_features'))} never); mean firing "
            f"rate {_pct(dens.get('mean_fire_rate'), 2)}.", ""]

    drift = report.get("drift")
    if drift:
        prev = drift.get("previous") or {}
        out += ["## Drift against the previous report", "",
                f"Previous: {_md(prev.get('title'))} ({prev.get('generated_at')}).", ""]
        out += [f"> Note: {_md(n)}" for n in drift.get("notes") or []]
        out += [""] if drift.get("notes") else []
        out += _md_table(["", "previous", "current", "change"], [
            [k.replace("_", " "), *_drift_cells(k, v)]
            for k, v in (drift.get("corpus") or {}).items()],
            numeric=(1, 2, 3))
        for head, info in (drift.get("labels") or {}).items():
            chi = info.get("chi_square") or {}
            out += [f"### Label shares: {_md(head)}", "",
                    f"Total variation distance **{_num(info.get('total_variation'), 4)}**; "
                    f"Pearson chi-square **{_num(chi.get('statistic'), 3)}** (dof "
                    f"{chi.get('dof') if chi.get('dof') is not None else '–'}, p = "
                    f"{_p_value(chi.get('p_value'))}).", ""]
            out += _md_table(["label", "previous", "current", "change"], [
                [c, f"{_pct(info['previous_shares'][c])} ({info['previous_counts'][c]:,})",
                 f"{_pct(info['current_shares'][c])} ({info['current_counts'][c]:,})",
                 _signed_pct(info["share_change"][c])] for c in info["classes"]],
                numeric=(1, 2, 3))
            out += img(f"drift-labels-{chart_slug(head)}")
        feats = drift.get("features")
        if feats:
            out += ["### Feature density shift", "",
                    f"{_md(feats.get('description'))}: **{_num(feats.get('value'), 4)}** "
                    f"(`{feats.get('statistic')}`).", ""]
            if feats.get("top_shifted"):
                out += _md_table(["feature", "previous rate", "current rate", "change"], [
                    [_feature(t), _pct(t["previous_rate"]), _pct(t["current_rate"]),
                     _signed_pct(t["change"])] for t in feats["top_shifted"]],
                    numeric=(1, 2, 3))
                out += img("drift-features")
    methods = report.get("methods") or {}
    if methods:
        out += ["## Methods", ""]
        out += [f"- **{_md(k.replace('_', ' '))}**: {_md(v)}" for k, v in methods.items()]
        out.append("")
    return "\n".join(out).rstrip() + "\n"


# --------------------------------------------------------------------------- what changed


def _changes_parts(changes: Mapping[str, Any]) -> dict[str, Any]:
    """The "what changed" summary of a scheduled snapshot (see
    :func:`auditor.schedule.changes.what_changed`) as headline, notes and table rows."""
    previous = changes.get("previous_snapshot")
    flagged = changes.get("flagged") or {}
    head = (f"{_int(changes.get('documents'))} new documents from "
            f"{len(changes.get('new_sources') or [])} new source(s); "
            f"{_int(flagged.get('documents'))} flagged ({_pct(flagged.get('share'))}); "
            + (f"compared with snapshot {previous}." if previous else
               "the first snapshot (no drift)."))
    notes = [f"ALERT: {r}" for r in changes.get("alert_reasons") or []]
    hook = changes.get("webhook")
    if hook:
        notes.append(f"webhook {hook.get('url')}: " + ("posted" if hook.get("posted") else
                     f"not posted ({hook.get('error') or hook.get('status')})"))
    threshold = (changes.get("thresholds") or {}).get("label_shift_threshold")
    return {
        "headline": head, "notes": notes, "threshold": threshold,
        "sources": [[s.get("source"), _int(s.get("documents")), _int(s.get("skipped_rows"))]
                    for s in changes.get("new_sources") or []],
        "drift": [[h, _num(v)] for h, v in (changes.get("label_drift") or {}).items()],
        "shifts": [[s["head"], s["label"], _pct(s.get("previous_share")),
                    _pct(s.get("current_share")), _signed_pct(s.get("change"))]
                   for s in changes.get("label_shifts") or []],
        "features": [[_feature(f), _pct(f.get("previous_rate")), _pct(f.get("current_rate")),
                      _signed_pct(f.get("change"))] for f in changes.get("top_features") or []],
    }


_CHANGE_TABLES = (
    ("sources", "New sources", ["source", "documents", "skipped rows"], (1, 2)),
    ("drift", "Label drift per head (total variation)", ["head", "TV"], (1,)),
    ("shifts", "Label shifts", ["head", "label", "previous", "now", "change"], (2, 3, 4)),
    ("features", "Features whose firing rate moved most",
     ["feature", "previous", "now", "change"], (1, 2, 3)),
)


def _changes_html(changes: Mapping[str, Any]) -> str:
    parts = _changes_parts(changes)
    status = ('<span class="neg">alert</span>' if changes.get("alert") else
              '<span class="pos">ok</span>')
    s = [f'<section id="changes"><h2>What changed ({status})</h2>',
         f"<p>{_e(parts['headline'])}</p>"]
    s += [f'<div class="note">{_e(n)}</div>' for n in parts["notes"]]
    for key, title, head, numeric in _CHANGE_TABLES:
        if key == "shifts" and not parts[key] and changes.get("previous_snapshot"):
            s.append(f"<p>No label share moved by {_pct(parts['threshold'])} or more.</p>")
        if parts[key]:
            s.append(f"<h3>{_e(title)}</h3>" + _table(head, parts[key], numeric=numeric))
    s.append("</section>")
    return "".join(s)


def _changes_md(changes: Mapping[str, Any]) -> list[str]:
    parts = _changes_parts(changes)
    out = [f"## What changed ({'ALERT' if changes.get('alert') else 'ok'})", "",
           _md(parts["headline"]), ""]
    out += [f"> {_md(n)}" for n in parts["notes"]]
    out += [""] if parts["notes"] else []
    for key, title, head, numeric in _CHANGE_TABLES:
        if key == "shifts" and not parts[key] and changes.get("previous_snapshot"):
            out += [f"No label share moved by {_pct(parts['threshold'])} or more.", ""]
        if parts[key]:
            out += [f"### {title}", "", *_md_table(head, parts[key], numeric=numeric)]
    return out


# --------------------------------------------------------------------------- JSON & files


def render_json(report: Mapping[str, Any]) -> str:
    """The report as indented JSON (strict: no NaN or infinity).

    Parameters
    ----------
    report : mapping
        As built by :func:`auditor.report.build_report`.

    Returns
    -------
    str
        JSON text ending in a newline.
    """
    return json.dumps(report, indent=2, ensure_ascii=False, allow_nan=False) + "\n"


def write_report(
    report: Mapping[str, Any],
    out_dir: str | Path,
    *,
    formats: Sequence[str] = ("html", "json", "md"),
    stage: Stage | None = None,
) -> dict[str, Path]:
    """Write a report into a directory, each file atomically.

    Parameters
    ----------
    report : mapping
        As built by :func:`auditor.report.build_report`.
    out_dir : str or Path
        Output directory (created if missing).
    formats : sequence of {'html', 'json', 'md'}
        Formats to write: ``report.html``, ``report.json``, ``report.md`` (the Markdown
        file's charts go to ``charts/<name>.svg``; other ``.svg`` files there, left by an
        earlier report, are removed).
    stage : Stage or None
        Advanced by one per file written (its total set to the number of files).

    Returns
    -------
    dict of str to Path
        Format → written file (``'charts'`` → the chart directory when written).

    Raises
    ------
    ConfigError
        An unknown format, no format, or ``out_dir`` is a file.
    """
    wanted = list(dict.fromkeys(f.strip().lower() for f in formats if f.strip()))
    unknown = [f for f in wanted if f not in FORMATS]
    if unknown or not wanted:
        raise ConfigError(f"unknown report format(s): {', '.join(unknown) or '(none given)'}; "
                          f"choose from {', '.join(FORMATS)}", field="formats")
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise ConfigError("the output path exists and is not a directory", path=out,
                          field="out")
    out.mkdir(parents=True, exist_ok=True)
    written: dict[str, Path] = {}
    drawn = report_charts(report) if {"md", "html"} & set(wanted) else []
    renderers: dict[str, Callable[[], str]] = {
        "json": lambda: render_json(report),
        "html": lambda: render_html(report, charts=drawn),
        "md": lambda: render_markdown(report, chart_dir=_CHART_DIR),
    }
    if stage is not None:
        stage.set_total(len(wanted) + (len(drawn) if "md" in wanted else 0))
    if "md" in wanted:
        charts_dir = out / _CHART_DIR
        charts_dir.mkdir(exist_ok=True)
        for chart in drawn:
            atomic_write_text(charts_dir / f"{chart.name}.svg",
                              '<?xml version="1.0" encoding="utf-8"?>\n' + chart.svg + "\n")
            if stage is not None:
                stage.advance(1)
        current = {f"{c.name}.svg" for c in drawn}
        for stale in charts_dir.glob("*.svg"):  # charts of an earlier report in this directory
            if stale.name not in current:
                stale.unlink(missing_ok=True)
        written["charts"] = charts_dir
    for fmt in wanted:
        target = out / FORMATS[fmt]
        atomic_write_text(target, renderers[fmt]())
        written[fmt] = target
        if stage is not None:
            stage.advance(1)
    return written
