"""Runs of a schedule in-process on the tiny model, SAE and ``safety`` head: only new
files are audited, each into a dated snapshot with drift against the previous one and a
"what changed" summary; a crashed run re-audits its files; the index links every snapshot
and charts the label shares."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from auditor.jobs.schedule import ScheduleRunResult, run_schedule
from auditor.schedule.files import read_seen
from tests.schedule.conftest import write_watched


def _inputs(out: Path, snapshot: str) -> list[dict[str, Any]]:
    text = (out / snapshot / "input.jsonl").read_text()
    return [json.loads(line) for line in text.splitlines()]


def test_runs_audit_only_new_files_with_drift_and_history(make_spec: Any, tmp_path: Path
                                                           ) -> None:
    spec = make_spec()
    watch, out = tmp_path / "in", tmp_path / "out"
    empty = run_schedule(spec)
    assert empty.state == "no-new-files" and "matches no data file" in empty.message
    write_watched(watch / "a.jsonl", 8, unsafe=0.0, seed=1)
    write_watched(watch / "day2" / "b.jsonl", 8, unsafe=0.0, seed=2)

    first = run_schedule(spec)
    assert first.state == "done" and first.previous is None
    assert ScheduleRunResult.from_dict(json.loads(json.dumps(first.to_dict()))) == first
    assert first.new_files == ("a.jsonl", "day2/b.jsonl") and first.documents == 16
    rows = _inputs(out, first.snapshot)
    assert {r["source"] for r in rows} == {"a.jsonl", "day2/b.jsonl"}
    assert rows[0]["id"] == "a.jsonl:r0"  # the id column, by the one id rule
    summary1 = json.loads((out / first.snapshot / "summary.json").read_text())
    assert summary1["previous_snapshot"] is None and summary1["label_shifts"] == []
    assert summary1["label_shares"]["safety"].get("safe", 0) > 0.7

    again = run_schedule(spec)
    assert again.state == "no-new-files" and "2 watched file(s)" in again.message
    assert sorted(p.name for p in (out / "snapshots").iterdir()) == [
        first.snapshot.split("/")[1]]  # no snapshot for a run without new files

    # a copy of an audited file is not new; a file with a shifted label mix is
    (watch / "copy-of-a.jsonl").write_bytes((watch / "a.jsonl").read_bytes())
    write_watched(watch / "day3" / "c.jsonl", 10, unsafe=1.0, seed=3)
    second = run_schedule(spec)
    assert second.state == "done" and second.new_files == ("day3/c.jsonl",)
    assert second.previous == first.snapshot.split("/")[1]
    assert {r["source"] for r in _inputs(out, second.snapshot)} == {"day3/c.jsonl"}
    assert second.documents == 10

    report = json.loads((out / second.snapshot / "report.json").read_text())
    drift = report["drift"]
    assert drift["previous"]["source"] == str(out / first.snapshot / "report.json")
    assert drift["corpus"]["documents"] == {"previous": 16.0, "current": 10.0,
                                            "change": -6.0}
    shift = drift["labels"]["safety"]
    assert shift["share_change"]["unsafe"] > 0.5 and shift["total_variation"] > 0.5
    summary = report["changes"]
    assert summary["new_sources"][0]["source"] == "day3/c.jsonl"
    assert summary["new_sources"][0]["documents"] == 10
    shifts = {(s["head"], s["label"]): s["change"] for s in summary["label_shifts"]}
    assert shifts[("safety", "unsafe")] > 0.5 and shifts[("safety", "safe")] < -0.5
    assert summary["top_features"] and all("label" in f for f in summary["top_features"])
    assert summary["flagged"]["share"] > 0.5 and summary["alert"] is False  # no threshold
    assert summary == json.loads((out / second.snapshot / "summary.json").read_text())
    html = (out / second.snapshot / "report.html").read_text()
    assert html.index('id="changes"') < html.index('id="provenance"')
    assert "day3/c.jsonl" in html and "What changed" in html
    md = (out / second.snapshot / "report.md").read_text()
    assert md.index("## What changed") < md.index("## Provenance")

    # a third snapshot compares with the second, not the first
    write_watched(watch / "d.jsonl", 6, unsafe=1.0, seed=4)
    third = run_schedule(spec)
    assert third.new_files == ("d.jsonl",) and third.previous == second.snapshot.split("/")[1]
    report3 = json.loads((out / third.snapshot / "report.json").read_text())
    assert report3["drift"]["previous"]["source"] == str(out / second.snapshot / "report.json")

    seen = read_seen(out)
    assert sorted(v["path"] for v in seen.values()) == sorted(
        ["a.jsonl", "day2/b.jsonl", "day3/c.jsonl", "d.jsonl"])
    index = (out / "index.html").read_text()
    for result in (first, second, third):
        assert f'href="{result.snapshot}/report.html"' in index
    assert index.count("<svg") == 1 and 'id="trend-safety"' in index
    assert (out / "trends" / "safety.svg").is_file()


def test_a_crash_before_marking_seen_re_audits_next_time(
        make_spec: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import auditor.jobs.audit as audit_module

    spec = make_spec()
    write_watched(tmp_path / "in" / "a.jsonl", 6, unsafe=0.5, seed=4)
    write_watched(tmp_path / "in" / "b.jsonl", 6, unsafe=0.5, seed=5)
    real = audit_module.run_audit

    def crash(*a: Any, **k: Any) -> Any:
        real(*a, **k)
        raise KeyboardInterrupt("killed after the audit, before the summary")

    monkeypatch.setattr(audit_module, "run_audit", crash)
    with pytest.raises(KeyboardInterrupt):
        run_schedule(spec)
    out = tmp_path / "out"
    assert read_seen(out) == {}
    assert not (out / "index.html").exists()
    monkeypatch.setattr(audit_module, "run_audit", real)
    resumed = run_schedule(spec)
    assert resumed.state == "done" and resumed.new_files == ("a.jsonl", "b.jsonl")
    assert resumed.documents == 12
    assert len(list((out / "snapshots").iterdir())) == 1  # the unfinished one, resumed
    assert len(read_seen(out)) == 2


def test_a_second_concurrent_run_is_refused(make_spec: Any, tmp_path: Path) -> None:
    from auditor._files import file_lock

    spec = make_spec()
    out = tmp_path / "out"
    out.mkdir()
    with file_lock(out / ".schedule.lock"):
        busy = run_schedule(spec)
    assert busy.state == "busy" and "another run" in busy.message
