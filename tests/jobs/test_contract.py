"""The job contract: JSON records, ``_job.json``, idempotent reruns, stage markers,
progress events and cancel tokens."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import pytest

from auditor.cancel import CancelToken, check_cancel
from auditor.errors import (
    ColumnError,
    ConfigError,
    JobCancelled,
    JobConflict,
    error_from_dict,
    exit_code_for,
    http_status_for,
)
from auditor.jobs._contract import (
    JOB_FILE,
    JobOptions,
    JobResult,
    StageMarkers,
    fingerprint,
    read_job,
    relative_to,
    run_recorded,
    runtime_field,
)
from auditor.progress import Progress, ProgressEvent, stage_of


@dataclass(frozen=True)
class _Options(JobOptions):
    word: str = "hi"
    times: int = 1
    ratio: float = 0.5
    tags: tuple[str, ...] = ()
    mode: Literal["a", "b"] = "a"
    limit: int | None = None
    batch: int = runtime_field(8)

    def validate(self) -> None:
        if self.times < 1:
            raise ConfigError("times must be positive", field="times")


@dataclass(frozen=True)
class _Result(JobResult):
    written: str
    count: int
    extra: dict[str, float]


def test_options_round_trip_and_types() -> None:
    opts = _Options(word="yo", times=3, ratio=1, tags=["x", "y"], mode="b", limit=None)
    assert opts.tags == ("x", "y") and isinstance(opts.ratio, float)
    d = opts.to_dict()
    assert d["schema_version"] == 1
    assert json.loads(json.dumps(d)) == d
    assert _Options.from_dict(d) == opts


@pytest.mark.parametrize(("record", "field"), [
    ({"word": 3}, "word"),
    ({"times": True}, "times"),
    ({"times": 0}, "times"),
    ({"mode": "c"}, "mode"),
    ({"nope": 1}, "nope"),
    ({"schema_version": 99}, "schema_version"),
    ({"tags": "xy"}, "tags"),
])
def test_options_refuse_bad_records_by_field(record: dict, field: str) -> None:
    with pytest.raises(ConfigError) as err:
        _Options.from_dict(record)
    assert err.value.field == field


def test_result_refuses_values_json_cannot_hold() -> None:
    with pytest.raises(ConfigError, match="expected str") as err:
        _Result(written=Path("x"), count=1, extra={})  # type: ignore[arg-type]
    assert err.value.field == "written"
    with pytest.raises(ConfigError, match="not JSON"):
        _Result(written="x", count=1, extra={"a": float("nan")}).to_dict()


def test_runtime_fields_do_not_change_the_hash() -> None:
    assert _Options(batch=1).options_hash() == _Options(batch=64).options_hash()
    assert _Options(overwrite=True).options_hash() == _Options().options_hash()
    assert _Options(times=2).options_hash() != _Options().options_hash()


def test_run_recorded_rerun_returns_the_record(tmp_path: Path) -> None:
    data = tmp_path / "in.txt"
    data.write_text("hello")
    calls = []

    def work(out: Path) -> _Result:
        calls.append(out)
        (out / "a.txt").write_text("a")
        return _Result(written="a.txt", count=len(calls), extra={"x": 1.0})

    out = tmp_path / "out"
    first = run_recorded("echo", out=out, options=_Options(), input=data,
                         result_type=_Result, work=work)
    again = run_recorded("echo", out=out, options=_Options(batch=99), input=data,
                         result_type=_Result, work=work)
    assert first == again and len(calls) == 1
    record = read_job(out)
    assert record is not None and record["state"] == "done"
    assert record["result"] == first.to_dict()
    assert record["options_hash"] == _Options().options_hash()
    assert record["input_fingerprint"].startswith("sha256:")
    assert "numpy" in record["libraries"]


def test_run_recorded_refuses_other_options_or_input_unless_overwrite(tmp_path: Path) -> None:
    data = tmp_path / "in.txt"
    data.write_text("hello")
    out = tmp_path / "out"

    def work(o: Path) -> _Result:
        (o / "a.txt").write_text("a")
        return _Result(written="a.txt", count=1, extra={})

    run_recorded("echo", out=out, options=_Options(), input=data, result_type=_Result,
                 work=work)
    with pytest.raises(JobConflict, match=r"options \(times\)"):
        run_recorded("echo", out=out, options=_Options(times=2), input=data,
                     result_type=_Result, work=work)
    data.write_text("changed")
    with pytest.raises(JobConflict, match="input"):
        run_recorded("echo", out=out, options=_Options(), input=data, result_type=_Result,
                     work=work)
    (out / "stale.txt").write_text("old")
    run_recorded("echo", out=out, options=_Options(times=2, overwrite=True), input=data,
                 result_type=_Result, work=work)
    assert not (out / "stale.txt").exists() and (out / "a.txt").exists()


def test_an_unfinished_run_is_resumed_not_refused(tmp_path: Path) -> None:
    out = tmp_path / "out"

    def boom(o: Path) -> _Result:
        (o / "part").write_text("1")
        raise RuntimeError("killed")

    with pytest.raises(RuntimeError):
        run_recorded("echo", out=out, options=_Options(), input=None, result_type=_Result,
                     work=boom)
    assert read_job(out)["state"] == "running"  # type: ignore[index]
    result = run_recorded("echo", out=out, options=_Options(), input=None,
                          result_type=_Result,
                          work=lambda o: _Result(written=(o / "part").read_text(), count=1,
                                                 extra={}))
    assert result.written == "1"
    assert read_job(out)["state"] == "done"  # type: ignore[index]


def test_an_unfinished_run_with_other_options_is_refused(tmp_path: Path) -> None:
    out = tmp_path / "out"

    def boom(o: Path) -> _Result:
        raise RuntimeError("killed")

    with pytest.raises(RuntimeError):
        run_recorded("echo", out=out, options=_Options(), input=None, result_type=_Result,
                     work=boom)
    with pytest.raises(JobConflict, match="verb"):
        run_recorded("other", out=out, options=_Options(), input=None, result_type=_Result,
                     work=boom)
    with pytest.raises(JobConflict, match="times"):
        run_recorded("echo", out=out, options=_Options(times=4), input=None,
                     result_type=_Result, work=boom)
    assert (out / JOB_FILE).is_file()


def test_a_record_of_another_auditor_version_is_not_this_job(tmp_path: Path) -> None:
    out = tmp_path / "out"
    run_recorded("echo", out=out, options=_Options(), input=None, result_type=_Result,
                 work=lambda o: _Result(written="", count=1, extra={}))
    record = json.loads((out / JOB_FILE).read_text())
    record["auditor_version"] = "0.0.1"
    (out / JOB_FILE).write_text(json.dumps(record))
    with pytest.raises(JobConflict, match=r"auditor version \(0\.0\.1\)"):
        run_recorded("echo", out=out, options=_Options(), input=None, result_type=_Result,
                     work=lambda o: _Result(written="", count=2, extra={}))
    again = run_recorded("echo", out=out, options=_Options(overwrite=True), input=None,
                         result_type=_Result, work=lambda o: _Result(written="", count=2,
                                                                     extra={}))
    assert again.count == 2


def test_stage_markers_only_count_for_the_same_options(tmp_path: Path) -> None:
    markers = StageMarkers(tmp_path, _Options())
    assert markers.done("classify") is None
    markers.mark("classify", {"rows": 3})
    assert markers.done("classify") == {"rows": 3}
    assert StageMarkers(tmp_path, _Options(batch=2)).done("classify") == {"rows": 3}
    assert StageMarkers(tmp_path, _Options(times=5)).done("classify") is None


def test_fingerprint_of_files_stores_and_mappings(tmp_path: Path) -> None:
    a = tmp_path / "a.jsonl"
    a.write_text('{"text": "x"}\n')
    store = tmp_path / "store"
    (store / "_done").mkdir(parents=True)
    (store / "store.json").write_text("{}")
    fp = fingerprint(store)
    (store / "_done" / "features-00000.json").write_text("{}")
    assert fingerprint(store) != fp
    assert fingerprint({"a": a, "b": None}) != fingerprint({"a": a})
    assert fingerprint(None) is None
    assert relative_to(store / "x", tmp_path) == "store/x"
    assert relative_to("/elsewhere/y", tmp_path) == "/elsewhere/y"


def test_progress_is_throttled_ordered_and_ends_done_equals_total() -> None:
    now = [0.0]
    events: list[ProgressEvent] = []
    progress = Progress(events.append, job="extract", interval=1.0, clock=lambda: now[0])
    with progress.stage("shards", total=None) as stage:
        for i in range(10):
            now[0] += 0.3
            stage.advance(1, tokens=100 * (i + 1))
    dones = [e.done for e in events]
    assert dones == sorted(dones)
    assert len(events) < 10  # throttled
    assert events[-1].final and events[-1].done == events[-1].total == 10
    assert events[-1].counters["tokens_per_s"] == pytest.approx(1000 / 3.0, rel=0.01)
    assert ProgressEvent.from_dict(events[-1].to_dict()) == events[-1]
    quiet = stage_of(None, job="x", name="y", total=2)
    quiet.advance(5)
    quiet.close()
    assert quiet.done == 5 and quiet.total == 5


def test_cancel_token_and_errors_serialise() -> None:
    check_cancel(None, "anywhere")
    polls = iter([False, True])
    token = CancelToken(lambda: next(polls), poll_interval=0.0)
    token.check("batch 1")
    with pytest.raises(JobCancelled, match="cancelled at batch 2") as err:
        token.check("batch 2")
    assert exit_code_for(err.value) == 130 and http_status_for(err.value) == 499
    back = error_from_dict(ColumnError("no column", path="a.csv", field="text").to_dict())
    assert isinstance(back, ColumnError) and str(back) == "a.csv, field 'text': no column"
    assert http_status_for(JobConflict("x")) == 409


def test_a_run_refused_by_what_out_holds_leaves_no_record(tmp_path: Path) -> None:
    from auditor.errors import ProvenanceMismatch

    out = tmp_path / "out"

    def refused(o: Path) -> _Result:
        raise ProvenanceMismatch("holds another store")

    with pytest.raises(ProvenanceMismatch):
        run_recorded("echo", out=out, options=_Options(), input=None, result_type=_Result,
                     work=refused)
    assert read_job(out) is None
    # a cancelled or failed run keeps its record: what it wrote belongs to its options
    with pytest.raises(JobCancelled):
        run_recorded("echo", out=out, options=_Options(), input=None, result_type=_Result,
                     work=lambda o: (_ for _ in ()).throw(JobCancelled("stop")))
    assert read_job(out)["state"] == "running"  # type: ignore[index]


def test_an_unwritable_out_is_refused_before_any_work(tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    # the tests run as root, who may write anywhere: a read-only folder is what the
    # system says of write access, so that answer is what is replaced here
    locked = tmp_path / "locked"
    locked.mkdir()
    monkeypatch.setattr(os, "access", lambda path, mode: Path(path) != locked)
    with pytest.raises(ConfigError, match="is not writable") as err:
        run_recorded("echo", out=locked, options=_Options(), input=None,
                     result_type=_Result, work=lambda o: pytest.fail("ran"))
    assert err.value.path == str(locked) and not any(locked.iterdir())


def test_an_out_that_is_a_file_is_refused_before_any_work(tmp_path: Path) -> None:
    afile = tmp_path / "file"
    afile.write_text("x")
    with pytest.raises(ConfigError, match="exists and is not a directory") as err:
        run_recorded("echo", out=afile, options=_Options(), input=None, result_type=_Result,
                     work=lambda o: pytest.fail("ran"))
    assert err.value.field == "out" and err.value.path == str(afile)
    with pytest.raises(ConfigError, match="cannot be created"):
        run_recorded("echo", out=afile / "sub", options=_Options(), input=None,
                     result_type=_Result, work=lambda o: pytest.fail("ran"))


def test_two_runs_into_one_out_at_once_are_refused(tmp_path: Path) -> None:
    """A run holds its record's lock while it works: a second run into the same out
    (another process, or here another thread) is refused instead of writing beside it."""
    import threading

    out = tmp_path / "out"
    started, release = threading.Event(), threading.Event()
    results: list[Any] = []

    def slow(o: Path) -> _Result:
        started.set()
        assert release.wait(30)
        return _Result(written="", count=1, extra={})

    first = threading.Thread(target=lambda: results.append(run_recorded(
        "echo", out=out, options=_Options(), input=None, result_type=_Result, work=slow)))
    first.start()
    assert started.wait(30)
    try:
        with pytest.raises(JobConflict, match="another run of a job is writing"):
            run_recorded("echo", out=out, options=_Options(), input=None,
                         result_type=_Result, work=slow)
    finally:
        release.set()
        first.join(30)
    assert results and results[0].count == 1
    # the lock went with the run: the same job now returns its record
    assert run_recorded("echo", out=out, options=_Options(), input=None,
                        result_type=_Result, work=slow) == results[0]
