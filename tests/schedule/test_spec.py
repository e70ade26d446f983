"""The schedules file: add / list / remove round-trip through the job functions, clear
errors, atomic writes; the beat entries built from it."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import pytest

from auditor.errors import ConfigError
from auditor.jobs.schedule import schedule_add, schedule_list, schedule_remove
from auditor.schedule import ScheduleSpec, read_schedules
from auditor.schedule.files import watched_files


def _spec(tmp_path: Path, name: str = "nightly", **kw: object) -> ScheduleSpec:
    base: dict[str, object] = dict(name=name, every="0 2 * * *", watch=str(tmp_path / "in"),
                                   out=str(tmp_path / "out"))
    base.update(kw)
    return ScheduleSpec(**base)  # type: ignore[arg-type]


def test_add_list_remove_round_trip(tmp_path: Path) -> None:
    file = str(tmp_path / "conf" / "schedules.json")
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "a.jsonl").write_text('{"text": "x"}\n')
    spec = _spec(tmp_path, heads=("safety",), alert_drift=0.2, alert_flagged=0.05,
                 webhook="http://127.0.0.1:9/hook")
    entry = schedule_add(spec, schedules=file)
    assert entry.watched_files == 1 and entry.snapshots == 0
    schedule_add(_spec(tmp_path, "hourly", every="1h", watch=str(tmp_path / "none" / "*.csv")),
                 schedules=file)
    listed = schedule_list(schedules=file)
    assert [e.name for e in listed] == ["hourly", "nightly"]
    assert listed[0].watched_files == 0  # nothing there yet: allowed, reported
    assert ScheduleSpec.from_dict(listed[1].spec) == spec
    assert read_schedules(file)["nightly"] == spec
    raw = json.loads(Path(file).read_text())
    assert raw["format"] == "auditor-schedules" and set(raw["schedules"]) == {"hourly",
                                                                             "nightly"}
    removed = schedule_remove("hourly", schedules=file)
    assert removed.name == "hourly"
    assert [e.name for e in schedule_list(schedules=file)] == ["nightly"]


def test_relative_paths_are_stored_absolute(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                            ) -> None:
    monkeypatch.chdir(tmp_path)
    entry = schedule_add(ScheduleSpec(name="rel", every="10m", watch="in/*.jsonl", out="out"),
                         schedules=str(tmp_path / "s.json"))
    assert entry.spec["watch"] == str(tmp_path / "in" / "*.jsonl")
    assert entry.spec["out"] == str(tmp_path / "out")


def test_errors_name_the_problem(tmp_path: Path) -> None:
    file = str(tmp_path / "schedules.json")
    schedule_add(_spec(tmp_path), schedules=file)
    with pytest.raises(ConfigError, match="exists") as e:
        schedule_add(_spec(tmp_path, every="1h"), schedules=file)
    assert e.value.field == "name"
    schedule_add(_spec(tmp_path, every="1h"), schedules=file, replace=True)
    assert read_schedules(file)["nightly"].every == "1h"
    with pytest.raises(ConfigError, match="did you mean nightly"):
        schedule_remove("nighty", schedules=file)
    with pytest.raises(ConfigError, match="no schedule named 'x'"):
        schedule_remove("x", schedules=str(tmp_path / "missing" / "s.json"))
    for every in ("61 * * * *", "0 2 * *", "10x", "0s", "every day"):
        with pytest.raises(ConfigError) as e:
            _spec(tmp_path, every=every)
        assert e.value.field == "every", every
    with pytest.raises(ConfigError, match="between 0 and 1"):
        _spec(tmp_path, alert_drift=1.5)
    with pytest.raises(ConfigError, match="not an http"):
        _spec(tmp_path, webhook="ftp://x")
    with pytest.raises(ConfigError, match="schedule name"):
        _spec(tmp_path, name="../evil")
    with pytest.raises(ConfigError, match="unknown schedule keys: colour"):
        ScheduleSpec.from_dict({**_spec(tmp_path).to_dict(), "colour": "red"})


def test_schedules_file_is_written_atomically(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                              ) -> None:
    import auditor._files as files

    file = tmp_path / "schedules.json"
    schedule_add(_spec(tmp_path), schedules=str(file))
    before = file.read_bytes()

    def fail(*a: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(files.os, "replace", fail)
    with pytest.raises(OSError, match="disk full"):
        schedule_add(_spec(tmp_path, "second"), schedules=str(file))
    assert file.read_bytes() == before  # the old file, whole
    assert sorted(p.name for p in tmp_path.iterdir()) == [".schedules.json.lock",
                                                          "schedules.json"]


def test_watch_finds_data_files_in_a_directory_or_a_glob(tmp_path: Path) -> None:
    for name in ("a.jsonl", "b.csv", "sub/c.parquet", "notes.md", ".d.jsonl.tmp",
                 ".hidden/e.jsonl"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("x")
    rel = [p.relative_to(tmp_path).as_posix() for p in watched_files(str(tmp_path))]
    assert rel == ["a.jsonl", "b.csv", "sub/c.parquet"]
    assert [p.name for p in watched_files(str(tmp_path / "**" / "*.parquet"))] == ["c.parquet"]
    assert watched_files(str(tmp_path / "nothing" / "*")) == []


def test_beat_entries_interval_and_cron(tmp_path: Path) -> None:
    from celery.schedules import crontab, schedule

    from workers.beat import beat_entries

    entries = beat_entries({"a": _spec(tmp_path, "a", every="30s"),
                            "b": _spec(tmp_path, "b", every="15 3 * * 1")})
    a, b = entries["auditor-schedule:a"], entries["auditor-schedule:b"]
    assert isinstance(a["schedule"], schedule) and a["schedule"].run_every == timedelta(
        seconds=30)
    assert isinstance(b["schedule"], crontab) and b["schedule"].hour == {3}
    assert a["task"] == "auditor.schedule_run" and a["args"] == ("a",)
    assert a["options"] == {"queue": "extract"}
