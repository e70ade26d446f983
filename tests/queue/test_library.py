"""The queue library without workers: settings, storage, a broker out of reach, a job
named by its out directory, the manifest a submit writes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from auditor import queue
from auditor.errors import ConfigError, JobConflict, JobError
from auditor.jobs.extract import ExtractOptions
from auditor.settings import QueueSettings
from tests.queue.conftest import write_docs


def test_settings_come_from_the_environment_and_are_checked() -> None:
    s = QueueSettings.from_env({"AUDITOR_BROKER_URL": "redis://h:1/2",
                                "AUDITOR_VISIBILITY_TIMEOUT": "100",
                                "AUDITOR_TIME_LIMIT": "90", "AUDITOR_SOFT_TIME_LIMIT": "80",
                                "AUDITOR_CLAIM_TTL": "5", "AUDITOR_DEVICE": "cuda:1"})
    assert (s.broker_url, s.result_backend, s.visibility_timeout, s.device) == (
        "redis://h:1/2", "redis://h:1/2", 100.0, "cuda:1")
    assert QueueSettings.from_env(s.to_env()) == s
    with pytest.raises(ConfigError) as err:
        QueueSettings.from_env({"AUDITOR_VISIBILITY_TIMEOUT": "60"})  # below the time limit
    assert err.value.field == "time_limit"
    with pytest.raises(ConfigError) as err:
        QueueSettings.from_env({"AUDITOR_MAX_ATTEMPTS": "three"})
    assert err.value.field == "max_attempts"


def test_storage_is_local_until_another_backend_exists(tmp_path: Path) -> None:
    storage = queue.storage_for(tmp_path / "job")
    storage.write_json("store/_done/00000.json", {"rows": 3})
    (tmp_path / "job" / "store" / ".features-00001.parquet.x.tmp").write_bytes(b"")
    (tmp_path / "job" / "_job").mkdir()
    (tmp_path / "job" / "_job" / ".manifest.json.y.tmp").write_bytes(b"")
    assert storage.list_files("store/_done") == ["00000.json"]
    assert storage.remove_temporary(".") == ["store/.features-00001.parquet.x.tmp"]
    assert (tmp_path / "job" / "_job" / ".manifest.json.y.tmp").exists()  # the manifest's
    with pytest.raises(ConfigError):
        queue.storage_for("s3://bucket/job")


def test_a_broker_out_of_reach_is_a_job_error_and_writes_nothing(tmp_path: Path) -> None:
    settings = QueueSettings.from_env({"AUDITOR_BROKER_URL": "redis://127.0.0.1:1/0"})
    data = write_docs(tmp_path / "docs.jsonl", 3)
    with pytest.raises(JobError, match="cannot reach"):
        queue.submit("extract", data, out=tmp_path / "out", options=ExtractOptions(),
                     settings=settings)
    assert not (tmp_path / "out" / "_job").exists()
    with pytest.raises(JobError, match="cannot reach"):
        queue.status("some-id", settings=settings)


def test_submit_writes_the_manifest_and_a_job_is_found_by_its_out_directory(
        redis_db: Any, settings: QueueSettings, tmp_path: Path) -> None:
    data = write_docs(tmp_path / "docs.jsonl", 23)
    out = tmp_path / "out"
    options = ExtractOptions(shard_size=5, saes=("s",))
    job = queue.submit("extract", data, out=out, options=options, settings=settings)
    status = queue.status(str(out), settings=QueueSettings.from_env(
        {"AUDITOR_BROKER_URL": "redis://127.0.0.1:1/0"}))  # the manifest alone answers
    assert status["id"] == job and status["state"] == "queued"
    assert status["shards"] == {"total": 5, "done": 0, "running": 0, "checksums": {}}
    assert list(status["units"]) == [f"rank-{r}" for r in range(5)] + ["finish"]
    assert status["documents"] == {"total": 23, "done": 0}
    with pytest.raises(JobConflict):
        queue.submit("extract", data, out=out, options=options, settings=settings)
    with pytest.raises(ConfigError) as err:
        queue.submit("extract", data, out=tmp_path / "o2",
                     options=ExtractOptions(overwrite=True), settings=settings)
    assert err.value.field == "overwrite"
    with pytest.raises(ConfigError):
        queue.submit("nope", data, out=tmp_path / "o3", options=options, settings=settings)
    assert queue.cancel(job, settings=settings)["state"] == "cancelled"
    assert [j["id"] for j in queue.list_jobs(state="cancelled", settings=settings)] == [job]


def test_a_rank_that_knows_the_shard_count_stops_reading_after_its_last_shard(
        tiny_llama_dir: Path, sae_path: Path, tmp_path: Path) -> None:
    from auditor.errors import RowError
    from auditor.jobs.extract import run_extract

    data = write_docs(tmp_path / "docs.jsonl", 20, bad=12)  # shard 2 of 4 is poisoned
    # rank 1's last shard is shard 1: the bad row is in the very next one, never read
    base = {"model": str(tiny_llama_dir), "saes": (str(sae_path),), "id_column": "id",
            "max_length": 16, "shard_size": 5, "rank": 1, "world_size": 4}
    result = run_extract(data, out=tmp_path / "a", options=ExtractOptions(
        **base, total_shards=4))
    assert result.summary["docs"] == 5 and result.summary["shards_written"] == 1
    with pytest.raises(RowError) as err:  # without the count it reads on into the bad row
        run_extract(data, out=tmp_path / "b", options=ExtractOptions(**base))
    assert err.value.row == 12


def test_live_state_in_redis_expires(redis_db: Any, settings: QueueSettings) -> None:
    """Progress and cancel flags are a live view (the manifest is the record): they
    expire a week after their last update instead of piling up in Redis."""
    from auditor.queue.state import LIVE_TTL, RedisState

    state = RedisState(settings)
    state.progress("job1", "rank-0", {"done": 1, "total": 2})
    state.cancel("job1")
    for part in ("progress", "cancel"):
        ttl = redis_db.ttl(f"{RedisState._key('job1', part)}")
        assert 0 < ttl <= LIVE_TTL, part
    assert state.progress_of("job1")["rank-0"]["done"] == 1 and state.cancelled("job1")
