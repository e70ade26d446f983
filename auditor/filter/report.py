"""The report of a filter run: kept vs dropped, per step, per head label, with examples.

Built from ``filter.json`` (:func:`auditor.jobs.filter.run_filter` writes it) and written
as ``report.html`` (self-contained, inline SVG charts), ``report.md`` and ``report.json``
(the summary itself, with a ``kind``).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from auditor._files import atomic_write_text
from auditor.errors import ConfigError

__all__ = ["render_filter_html", "render_filter_markdown", "write_filter_report"]

FORMATS = ("html", "json", "md")


def _pct(n: int, total: int) -> str:
    return f"{100 * n / total:.1f}%" if total else "–"


def _reason_text(reason: Mapping[str, Any]) -> str:
    """A reason in one line: the rule, the value, the head's label and top features."""
    parts = [str(reason.get("rule", ""))]
    value = reason.get("value")
    if value is not None and not isinstance(value, dict):
        parts.append(f"value {value:.3g}" if isinstance(value, float) else f"value {value}")
    elif isinstance(value, dict):
        parts.append(", ".join(f"{k} = {v:.3g}" if isinstance(v, float) else f"{k} = {v}"
                               for k, v in value.items()))
    if reason.get("duplicate_of") is not None:
        parts.append(f"duplicate of {reason['duplicate_of']} "
                     f"(similarity {float(reason.get('similarity') or 1):.2f})")
    heads = [reason] if reason.get("head") else list(reason.get("heads") or [])
    for h in heads:
        if h.get("label") is not None:
            parts.append(f"{h['head']}: {h['label']}")
    feats = list(reason.get("features") or [])
    for h in reason.get("heads") or []:
        feats += list(h.get("features") or [])
    if feats:
        parts.append("features " + ", ".join(_feature(f) for f in feats[:3]))
    return "; ".join(p for p in parts if p)


def _feature(f: Mapping[str, Any]) -> str:
    name = f"f{f.get('feature')}"
    if f.get("label"):
        name += f" “{f['label']}”"
    if f.get("contribution") is not None:
        name += f" {float(f['contribution']):+.2f}"
    return name


def _charts(summary: Mapping[str, Any]) -> list[tuple[str, str]]:
    from auditor.report.charts import bar_chart, grouped_bar_chart

    charts = []
    steps = summary.get("dropped_by_step") or {}
    if steps:
        charts.append(("Dropped rows per step", bar_chart(
            list(steps), [float(v) for v in steps.values()], title="Dropped rows per step",
            xlabel="rows", prefix="fs-")))
    for n, (head, per) in enumerate((summary.get("labels") or {}).items()):
        labels = sorted(per, key=lambda lab: -(per[lab]["kept"] + per[lab]["dropped"]))[:12]
        charts.append((f"{head}: kept vs dropped", grouped_bar_chart(
            labels, {"kept": [float(per[lab]["kept"]) for lab in labels],
                     "dropped": [float(per[lab]["dropped"]) for lab in labels]},
            title=f"{head} labels: kept vs dropped", xlabel="rows", prefix=f"fl{n}-")))
    return charts


def render_filter_html(summary: Mapping[str, Any]) -> str:
    """The filter report as one self-contained HTML page."""
    from auditor.report.render import _CSS, _e, _table

    total = int(summary.get("documents") or 0)
    s: list[str] = ["<!doctype html><html lang='en'><head><meta charset='utf-8'>",
                    "<title>Filter report</title>", f"<style>{_CSS}</style></head><body>",
                    "<h1>Filter report</h1>"]
    prov = summary.get("provenance") or {}
    src = (prov.get("input") or {}).get("path", "")
    s.append(f"<p>{_e(src)}: <b>{total}</b> rows, <b>{summary.get('kept', 0)}</b> kept "
             f"({_pct(int(summary.get('kept') or 0), total)}), "
             f"<b>{summary.get('dropped', 0)}</b> dropped "
             f"({_pct(int(summary.get('dropped') or 0), total)}).</p>")
    s.append("<h2>Steps</h2>")
    by_step = summary.get("dropped_by_step") or {}
    s.append(_table(["step", "dropped", "share of rows"],
                    [[_e(k), str(v), _pct(v, total)] for k, v in by_step.items()],
                    numeric=(1, 2)))
    s.append("<h3>Pipeline</h3><pre>" + _e(json.dumps(summary.get("pipeline"), indent=1))
             + "</pre>")
    for title, svg in _charts(summary):
        s.append(f"<figure>{svg}<figcaption>{_e(title)}</figcaption></figure>")
    labels = summary.get("labels") or {}
    if labels:
        s.append("<h2>Head labels, kept vs dropped</h2>")
        for head, per in labels.items():
            s.append(f"<h3>{_e(head)}</h3>")
            s.append(_table(["label", "kept", "dropped"],
                            [[_e(k), str(v["kept"]), str(v["dropped"])]
                             for k, v in per.items()], numeric=(1, 2)))
    feats = summary.get("top_features") or {}
    if any(feats.values()):
        s.append("<h2>Features behind the drops</h2>")
        for step, items in feats.items():
            if items:
                s.append(f"<h3>{_e(step)}</h3>")
                s.append(_table(["feature", "label", "drops citing it"],
                                [[f"f{f['feature']}", _e(f.get("label") or "–"),
                                  str(f["count"])] for f in items], numeric=(2,)))
    examples = summary.get("examples") or {}
    if examples:
        s.append("<h2>Dropped rows, first of each step</h2>")
        for step, items in examples.items():
            s.append(f"<h3>{_e(step)}</h3>")
            s.append(_table(["row", "id", "text", "reason"],
                            [[str(x["row"]), _e(x["id"]), _e(x["text"][:160]),
                              _e(_reason_text(x["reason"]))] for x in items], numeric=(0,)))
    s.append("<h2>Provenance</h2><pre>" + _e(json.dumps(prov, indent=1, default=str))
             + "</pre></body></html>")
    return "\n".join(s)


def _md_cell(value: Any) -> str:
    return str(value).replace("|", "\\|").replace("\n", " ")


def _md_table(head: Sequence[str], rows: Sequence[Sequence[Any]]) -> list[str]:
    out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    out += ["| " + " | ".join(_md_cell(c) for c in r) + " |" for r in rows]
    return [*out, ""]


def render_filter_markdown(summary: Mapping[str, Any]) -> str:
    """The filter report as Markdown."""
    total = int(summary.get("documents") or 0)
    src = ((summary.get("provenance") or {}).get("input") or {}).get("path", "")
    lines = ["# Filter report", "",
             f"{src}: **{total}** rows, **{summary.get('kept', 0)}** kept "
             f"({_pct(int(summary.get('kept') or 0), total)}), **{summary.get('dropped', 0)}** "
             f"dropped ({_pct(int(summary.get('dropped') or 0), total)}).", "", "## Steps", ""]
    lines += _md_table(["step", "dropped", "share of rows"],
                       [[k, v, _pct(v, total)] for k, v in
                        (summary.get("dropped_by_step") or {}).items()])
    for head, per in (summary.get("labels") or {}).items():
        lines += [f"## {head} labels, kept vs dropped", ""]
        lines += _md_table(["label", "kept", "dropped"],
                           [[k, v["kept"], v["dropped"]] for k, v in per.items()])
    for step, items in (summary.get("top_features") or {}).items():
        if items:
            lines += [f"## Features behind “{step}”", ""]
            lines += _md_table(["feature", "label", "drops citing it"],
                               [[f"f{f['feature']}", f.get("label") or "–", f["count"]]
                                for f in items])
    for step, items in (summary.get("examples") or {}).items():
        lines += [f"## Dropped by “{step}”", ""]
        lines += _md_table(["row", "id", "text", "reason"],
                           [[x["row"], x["id"], x["text"][:120], _reason_text(x["reason"])]
                            for x in items])
    return "\n".join(lines)


def write_filter_report(summary: Mapping[str, Any], out_dir: str | Path, *,
                        formats: Sequence[str] = FORMATS) -> dict[str, Path]:
    """Write ``report.{html,json,md}`` of a filter run into ``out_dir``, each atomically.

    Raises
    ------
    ConfigError
        An unknown format.
    """
    unknown = [f for f in formats if f not in FORMATS]
    if unknown or not formats:
        raise ConfigError(f"unknown report format(s) {', '.join(unknown) or '(none)'}; "
                          f"choose from {', '.join(FORMATS)}", field="formats")
    out = Path(out_dir)
    written: dict[str, Path] = {}
    render = {"html": render_filter_html, "md": render_filter_markdown,
              "json": lambda s: json.dumps({"kind": "filter", **s}, indent=1, default=str)}
    for fmt in formats:
        path = out / f"report.{fmt}"
        atomic_write_text(path, render[fmt](summary))
        written[fmt] = path
    return written
