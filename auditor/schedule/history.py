"""A schedule's history: ``OUT/index.html`` linking every snapshot's report, with its
headline counts and alert flag, and a trend chart of each head's label shares over
snapshots (also written as ``OUT/trends/<head>.svg``). Rebuilt from the snapshots'
``summary.json`` files after each run, so it never drifts from what is on disk.
"""

from __future__ import annotations

import html
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from auditor._files import atomic_write_text, read_json
from auditor.errors import AuditorError

__all__ = ["SNAPSHOTS_DIR", "SUMMARY_FILE", "completed_snapshots", "write_index"]

SNAPSHOTS_DIR = "snapshots"
#: Written last into a snapshot: a snapshot without it did not finish.
SUMMARY_FILE = "summary.json"

_CSS = """body{margin:0;font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;
color:#1d2430;background:#f6f7f9}header{background:#1d2430;color:#fff;padding:18px 32px}
h1{margin:0;font-size:21px}main{max-width:1180px;margin:0 auto;padding:16px 32px 40px}
section{background:#fff;border:1px solid #d9dee7;border-radius:8px;padding:14px 18px;margin:14px 0}
table{border-collapse:collapse;width:100%;font-size:13px}th,td{border-bottom:1px solid #d9dee7;
padding:5px 8px;text-align:left}th{background:#f0f2f5}td.n{text-align:right;
font-variant-numeric:tabular-nums}.alert{color:#b3261e;font-weight:600}a{color:#0072B2}
figure{margin:6px 0;max-width:760px}figure svg{width:100%;height:auto}.muted{color:#5b6576}"""


def completed_snapshots(out: str | Path) -> list[tuple[str, dict[str, Any]]]:
    """``(name, summary)`` of every finished snapshot in ``out``, oldest first."""
    root = Path(out) / SNAPSHOTS_DIR
    if not root.is_dir():
        return []
    found = []
    for d in sorted(p for p in root.iterdir() if p.is_dir()):
        if not (d / SUMMARY_FILE).is_file():
            continue
        try:
            found.append((d.name, read_json(d / SUMMARY_FILE, what="snapshot summary")))
        except AuditorError:
            continue  # unreadable: left out of the index rather than failing the run
    return found


_Trend = dict[str, dict[str, list[float | None]]]


def _trend(snapshots: Sequence[tuple[str, Mapping[str, Any]]]) -> _Trend:
    """head → label → share per snapshot (``None`` where the head did not run)."""
    heads: _Trend = {}
    for i, (_, summary) in enumerate(snapshots):
        for head, shares in (summary.get("label_shares") or {}).items():
            labels = heads.setdefault(head, {})
            for label, share in shares.items():
                labels.setdefault(label, [None] * len(snapshots))[i] = share
    for labels in heads.values():
        for values in labels.values():
            values.extend([None] * (len(snapshots) - len(values)))
    return heads


def _pct(value: Any) -> str:
    return "–" if value is None else f"{100 * float(value):.1f}%"


def write_index(out: str | Path, *, title: str | None = None) -> Path:
    """Write ``out/index.html`` (and ``out/trends/<head>.svg``) from the finished snapshots.

    Returns
    -------
    Path
        The index file.
    """
    from auditor.report.charts import chart_slug, line_chart

    root = Path(out)
    snapshots = completed_snapshots(root)
    e = html.escape
    name = title or (snapshots[-1][1].get("schedule") if snapshots else None) or root.name
    rows = []
    for snap, s in reversed(snapshots):  # newest first
        drift = [v for v in (s.get("label_drift") or {}).values() if v is not None]
        report = f"{SNAPSHOTS_DIR}/{snap}/report.html"
        rows.append(
            f'<tr><td><a href="{e(report)}">{e(snap)}</a></td>'
            f'<td>{e(str(s.get("generated_at") or ""))}</td>'
            f'<td class="n">{int(s.get("documents") or 0):,}</td>'
            f'<td class="n">{len(s.get("new_sources") or [])}</td>'
            f'<td class="n">{_pct((s.get("flagged") or {}).get("share"))}</td>'
            f'<td class="n">{"–" if not drift else f"{max(drift):.3f}"}</td>'
            f'<td class="n">{len(s.get("label_shifts") or [])}</td>'
            + ('<td class="alert">alert</td>' if s.get("alert") else "<td>ok</td>") + "</tr>")
    charts = []
    trends = _trend(snapshots)
    (root / "trends").mkdir(exist_ok=True)
    for i, (head, labels) in enumerate(sorted(trends.items())):
        svg = line_chart([snap for snap, _ in snapshots], labels,
                         title=f"{head}: label shares over snapshots", ylabel="share",
                         prefix=f"t{i}-")
        atomic_write_text(root / "trends" / f"{chart_slug(head)}.svg",
                          '<?xml version="1.0" encoding="utf-8"?>\n' + svg + "\n")
        charts.append(f'<figure class="trend" id="trend-{e(chart_slug(head))}">{svg}</figure>')
    page = [
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">',
        '<meta http-equiv="Content-Security-Policy" content="default-src \'none\'; '
        'style-src \'unsafe-inline\'; img-src data:">',
        f"<title>Schedule {e(str(name))}: snapshots</title><style>{_CSS}</style></head><body>",
        f"<header><h1>Schedule {e(str(name))}</h1><div>{len(snapshots)} snapshot(s)"
        "</div></header><main>",
        '<section id="snapshots"><h2>Snapshots</h2>',
        "<table><tr><th>snapshot</th><th>generated</th><th>documents</th>"
        "<th>new sources</th><th>flagged</th><th>max label drift (TV)</th>"
        "<th>label shifts</th><th>status</th></tr>" + "".join(rows) + "</table>"
        if rows else '<p class="muted">No snapshot yet.</p>',
        "</section>",
        '<section id="trends"><h2>Label shares over snapshots</h2>',
        "".join(charts) if charts else '<p class="muted">No head has run yet.</p>',
        "</section></main></body></html>",
    ]
    return atomic_write_text(root / "index.html", "\n".join(page) + "\n")
