"""The "what changed" summary of a scheduled run, its alert decision and the webhook.

The summary is built from the snapshot's report (its ``drift`` section against the
previous snapshot, computed by :mod:`auditor.report.drift`) and the new files: new sources,
label-share changes of at least ``label_shift_threshold``, the features whose firing rate
moved most (with their dictionary labels), the flagged share. A run **alerts** when a head's
label-share total variation reaches ``alert_drift`` or the share of flagged documents
reaches ``alert_flagged``; an alerting run with a webhook POSTs the summary as JSON
(``Content-Type: application/json``, 10 s timeout, no retry). A failed post is recorded in
the summary's ``webhook`` entry; it never fails the run.

Examples
--------
>>> decide_alert({"label_drift": {"safety": 0.3}, "flagged": {"share": 0.01}},
...              alert_drift=0.2, alert_flagged=0.05)
['safety label shares moved by 0.300 (total variation) >= 0.2']
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from auditor import __version__

__all__ = ["decide_alert", "flagged_documents", "post_webhook", "what_changed"]

WEBHOOK_TIMEOUT = 10.0


def flagged_documents(predictions: str | Path | None, rules: Mapping[str, Sequence[str]]
                      ) -> int:
    """Documents with at least one flagged label (``rules``: head → flagged labels, as in
    the report's ``flagged`` section), counted once however many heads flag them."""
    if predictions is None or not rules or not Path(predictions).is_file():
        return 0
    import polars as pl

    frame = pl.read_parquet(predictions)
    hit = pl.lit(False)
    for head, labels in rules.items():
        column = f"{head}.label"
        if column in frame.columns:
            hit = hit | pl.col(column).is_in(list(labels)).fill_null(False)
    return int(frame.select(hit.sum()).item() or 0)


def decide_alert(summary: Mapping[str, Any], *, alert_drift: float | None,
                 alert_flagged: float | None) -> list[str]:
    """Why a run alerts (empty: it does not)."""
    reasons = []
    if alert_drift is not None:
        for head, tv in sorted((summary.get("label_drift") or {}).items()):
            if tv is not None and tv >= alert_drift:
                reasons.append(f"{head} label shares moved by {tv:.3f} (total variation) "
                               f">= {alert_drift}")
    share = (summary.get("flagged") or {}).get("share")
    if alert_flagged is not None and share is not None and share >= alert_flagged:
        reasons.append(f"flagged share {share:.3f} >= {alert_flagged}")
    return reasons


def what_changed(report: Mapping[str, Any], *, schedule: str, snapshot: str,
                 previous: str | None, sources: Sequence[Mapping[str, Any]],
                 flagged: int, label_shift_threshold: float, top_features: int,
                 alert_drift: float | None, alert_flagged: float | None) -> dict[str, Any]:
    """The summary of one snapshot (see the module docstring).

    Parameters
    ----------
    report
        The snapshot's report (with a ``drift`` section when there is a previous one).
    schedule, snapshot, previous
        The schedule's name, this snapshot's and the previous snapshot's (or ``None``).
    sources
        The new files (``source``, ``fingerprint``, ``documents``, ``skipped_rows``).
    flagged
        Documents with a flagged label (:func:`flagged_documents`).
    label_shift_threshold, top_features, alert_drift, alert_flagged
        See :class:`auditor.schedule.ScheduleSpec`.

    Returns
    -------
    dict
        ``schedule``, ``snapshot``, ``previous_snapshot``, ``generated_at``, ``documents``,
        ``new_sources``, ``skipped_rows``, ``label_shares`` (head → label → share),
        ``label_drift`` (head → total variation), ``label_shifts`` (``head``, ``label``,
        ``previous_share``, ``current_share``, ``change``; largest first),
        ``feature_drift`` (Jensen–Shannon, bits), ``top_features`` (``feature``,
        ``label``, ``previous_rate``, ``current_rate``, ``change``), ``flagged``
        (``documents``, ``share``), ``thresholds``, ``alert``, ``alert_reasons``,
        ``webhook`` (filled by the caller), ``notes`` (from the drift section).
    """
    documents = int((report.get("corpus") or {}).get("documents") or 0)
    drift = report.get("drift") or {}
    shifts = []
    label_drift = {}
    for head, shift in (drift.get("labels") or {}).items():
        label_drift[head] = shift.get("total_variation")
        for label, change in (shift.get("share_change") or {}).items():
            if abs(change) >= label_shift_threshold and change != 0:
                shifts.append({"head": head, "label": label,
                               "previous_share": shift["previous_shares"].get(label),
                               "current_share": shift["current_shares"].get(label),
                               "change": change})
    shifts.sort(key=lambda s: (-abs(s["change"]), s["head"], s["label"]))
    features = drift.get("features") or {}
    summary: dict[str, Any] = {
        "schedule": schedule,
        "snapshot": snapshot,
        "previous_snapshot": previous,
        "generated_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "documents": documents,
        "new_sources": [dict(s) for s in sources],
        "skipped_rows": sum(int(s.get("skipped_rows", 0)) for s in sources),
        "label_shares": {h: dict(v.get("label_shares") or {})
                         for h, v in (report.get("heads") or {}).items()},
        "label_drift": label_drift,
        "label_shifts": shifts,
        "feature_drift": features.get("value"),
        "top_features": list(features.get("top_shifted") or [])[:top_features],
        "flagged": {"documents": flagged,
                    "share": flagged / documents if documents else 0.0},
        "thresholds": {"alert_drift": alert_drift, "alert_flagged": alert_flagged,
                       "label_shift_threshold": label_shift_threshold},
        "notes": list(drift.get("notes") or []),
    }
    reasons = decide_alert(summary, alert_drift=alert_drift, alert_flagged=alert_flagged)
    summary["alert"] = bool(reasons)
    summary["alert_reasons"] = reasons
    summary["webhook"] = None
    return summary


def post_webhook(url: str, payload: Mapping[str, Any], *, timeout: float = WEBHOOK_TIMEOUT
                 ) -> dict[str, Any]:
    """POST ``payload`` as JSON to ``url``; never raises.

    Returns
    -------
    dict
        ``url``, ``posted`` (a 2xx answer), ``status`` (the HTTP status or ``None``),
        ``error`` (why it failed, or ``None``), ``at`` (UTC time).
    """
    record: dict[str, Any] = {"url": url, "posted": False, "status": None, "error": None,
                              "at": datetime.now(UTC).isoformat(timespec="seconds")}
    body = json.dumps(payload, allow_nan=False, ensure_ascii=False).encode("utf-8")
    request = urllib.request.Request(url, data=body, method="POST", headers={
        "Content-Type": "application/json", "User-Agent": f"auditor/{__version__}"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as answer:
            record["status"] = int(answer.status)
            record["posted"] = 200 <= answer.status < 300
    except urllib.error.HTTPError as e:
        record["status"], record["error"] = e.code, f"HTTP {e.code} {e.reason}"
    except (urllib.error.URLError, OSError, ValueError) as e:
        record["error"] = str(getattr(e, "reason", None) or e)
    return record
