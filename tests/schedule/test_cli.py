"""``auditor schedule add/list/remove/run-now`` and ``auditor beat`` parse their options,
call the job functions and print what they did."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from auditor.cli import main
from tests.schedule.conftest import write_watched


def test_add_list_remove(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    file = str(tmp_path / "schedules.json")
    assert main(["schedule", "add", "nightly", "--every", "0 2 * * *", "--watch",
                 str(tmp_path / "in"), "--out", str(tmp_path / "out"), "--head", "safety",
                 "--alert-drift", "0.2", "--alert-flagged", "0.05", "--webhook",
                 "http://127.0.0.1:9/hook", "--schedules", file]) == 0
    captured = capsys.readouterr()
    assert "added schedule nightly (every 0 2 * * *)" in captured.out
    assert "matches no data file yet" in captured.err
    assert main(["schedule", "add", "nightly", "--every", "1h", "--watch", "x", "--out",
                 "o", "--schedules", file]) == 2
    assert "exists" in capsys.readouterr().err
    assert main(["schedule", "add", "bad", "--every", "61 * * * *", "--watch", "x", "--out",
                 "o", "--schedules", file]) == 2
    assert "(--every)" in capsys.readouterr().err

    assert main(["schedule", "list", "--schedules", file]) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0].split()[:3] == ["NAME", "EVERY", "WATCH"] and "nightly" in table[1]
    assert main(["schedule", "list", "--json", "--schedules", file]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert listed[0]["spec"]["alert_drift"] == 0.2 and listed[0]["spec"]["heads"] == ["safety"]

    assert main(["schedule", "remove", "nightli", "--schedules", file]) == 2
    assert "did you mean nightly" in capsys.readouterr().err
    assert main(["schedule", "remove", "nightly", "--schedules", file]) == 0
    assert "removed schedule nightly" in capsys.readouterr().out
    assert main(["schedule", "list", "--schedules", file]) == 0
    assert capsys.readouterr().out.strip() == "no schedules"


def test_run_now_in_process(make_spec: Any, tmp_path: Path,
                            capsys: pytest.CaptureFixture[str]) -> None:
    from auditor.jobs.schedule import schedule_add

    file = str(tmp_path / "schedules.json")
    schedule_add(make_spec(), schedules=file)
    write_watched(tmp_path / "in" / "a.jsonl", 5, unsafe=0.4, seed=7)
    assert main(["schedule", "run-now", "nightly", "--no-progress", "--schedules", file]) == 0
    out = capsys.readouterr().out
    assert "audited 5 documents from 1 new file(s) into snapshots/" in out
    assert "index.html" in out
    assert main(["schedule", "run-now", "nightly", "--no-progress", "--schedules", file]) == 0
    assert "were all audited before" in capsys.readouterr().out


def test_beat_and_run_now_queue_call_the_queue_layer(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    from auditor.queue import beat

    calls: list[Any] = []
    monkeypatch.setattr(beat, "run_beat", lambda **kw: calls.append(kw))
    monkeypatch.setattr(beat, "send_schedule_run", lambda name, **kw: f"task-{name}")
    assert main(["beat", "--schedule-state", "/tmp/s", "--max-interval", "2",
                 "--schedules", "/tmp/f.json"]) == 0
    assert calls[0]["state"] == "/tmp/s" and calls[0]["max_interval"] == 2
    assert calls[0]["schedules"] == "/tmp/f.json"
    assert main(["schedule", "run-now", "n", "--queue"]) == 0
    assert "task-n" in capsys.readouterr().out
