"""A queued job survives a worker killed with ``kill -9`` in the middle of a shard, and a
Redis restarted in the middle of a job: every document once, as in-process, no temporary
file left."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from auditor import queue
from auditor.jobs.extract import ExtractOptions, run_extract
from auditor.queue.state import RedisState
from auditor.settings import QueueSettings
from tests.queue.conftest import ENV, store_frame, wait_for

N_DOCS = 30


@pytest.fixture(scope="module")
def long_docs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Documents long enough that one shard takes about a second on the tiny model."""
    rng = np.random.default_rng(1)
    words = ["alpha", "beta", "gamma", "delta", "goal", "match", "vote", "law", "code"]
    path = tmp_path_factory.mktemp("crash-data") / "long.jsonl"
    path.write_text("".join(json.dumps({"id": f"d{i}", "text": " ".join(rng.choice(words, 400))})
                            + "\n" for i in range(N_DOCS)))
    return path


def _options(model: Path, sae: Path) -> ExtractOptions:
    return ExtractOptions(model=str(model), saes=(str(sae),), id_column="id", max_length=16,
                          shard_size=10, poolings=("max", "mean"), max_batch_size=8,
                          token_budget=128)


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory, tiny_llama_dir: Path, sae_path: Path,
              long_docs: Path) -> Any:
    out = tmp_path_factory.mktemp("crash-reference") / "store"
    run_extract(long_docs, out=out, options=_options(tiny_llama_dir, sae_path))
    return store_frame(out)


def _mid_shard(job: str, settings: QueueSettings, store: Path) -> str | None:
    """A shard task that is computing (tokens reported) and has not written its shard."""
    status = queue.status(job, settings=settings)
    progress = RedisState(settings).progress_of(status["id"])
    for name, unit in status["units"].items():
        if not name.startswith("rank-") or unit["state"] != "running":
            continue
        shard = int(name.split("-")[1])
        if progress.get(name, {}).get("counters", {}).get("tokens", 0) > 0 and \
                not (store / "_done" / f"{shard:05d}.json").exists():
            return name
    return None


def _check(store: Path, reference: Any) -> None:
    frame = store_frame(store)
    ids = frame["doc_id"].to_list()
    assert sorted(ids) == sorted(f"d{i}" for i in range(N_DOCS)) and len(set(ids)) == N_DOCS
    assert frame.equals(reference)
    assert not [p for p in store.rglob("*.tmp")], "temporary files left behind"


def test_kill_9_mid_shard_then_a_new_worker_completes_the_job(
        start_worker: Any, settings: QueueSettings, tiny_llama_dir: Path, sae_path: Path,
        long_docs: Path, reference: Any, tmp_path: Path) -> None:
    first = start_worker("crash-a").wait_ready()
    store = tmp_path / "store"
    job = queue.submit("extract", long_docs, out=store,
                       options=_options(tiny_llama_dir, sae_path), settings=settings)
    unit = wait_for(lambda: _mid_shard(job, settings, store), timeout=90, interval=0.02,
                    what="a shard task computing")
    first.kill()
    shard = int(unit.split("-")[1])
    assert not (store / "_done" / f"{shard:05d}.json").exists()  # killed mid-shard
    start_worker("crash-b").wait_ready()
    status = queue.wait(job, timeout=120, poll=0.1, settings=settings)
    assert status["state"] == "done", status
    killed = status["units"][unit]
    assert killed["attempts"] == 2 and killed["worker"].startswith("crash-b@")
    _check(store, reference)


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[dict[str, Any]]:
    """A redis-server of the test's own (a free port, AOF on, in a temp dir), to restart;
    the machine's Redis is never touched."""
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip("redis-server is not installed: the Redis restart test starts its own")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    directory = tmp_path / "redis"
    directory.mkdir()
    argv = [binary, "--port", str(port), "--bind", "127.0.0.1", "--dir", str(directory),
            "--appendonly", "yes", "--appendfsync", "always", "--save", ""]

    def start() -> subprocess.Popen[bytes]:
        proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        import redis

        client = redis.Redis(port=port)

        def up() -> bool:
            try:
                return bool(client.ping())
            except redis.ConnectionError:
                return False

        wait_for(up, timeout=30, what="redis-server to start")
        return proc

    server = {"proc": start(), "start": start, "url": f"redis://127.0.0.1:{port}/0"}
    yield server
    proc = server["proc"]
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)


def test_redis_restarted_mid_job_then_resume_completes_it(
        start_worker: Any, own_redis: dict[str, Any], tiny_llama_dir: Path, sae_path: Path,
        long_docs: Path, reference: Any, tmp_path: Path) -> None:
    env = {"AUDITOR_BROKER_URL": own_redis["url"]}
    settings = QueueSettings.from_env({**ENV, **env})
    start_worker("restart-a", env=env).wait_ready()
    store = tmp_path / "store"
    job = queue.submit("extract", long_docs, out=store,
                       options=_options(tiny_llama_dir, sae_path), settings=settings)
    wait_for(lambda: _mid_shard(job, settings, store), timeout=90, interval=0.02,
             what="a shard task computing")
    proc = own_redis["proc"]
    os.kill(proc.pid, signal.SIGTERM)  # stop it (it writes its AOF) ...
    proc.wait(timeout=30)
    own_redis["proc"] = own_redis["start"]()  # ... and start it again

    def settled() -> dict[str, Any] | None:
        current = queue.status(job, settings=settings)
        if current["state"] == "done":
            return current
        ranks = [u for n, u in current["units"].items() if n.startswith("rank-")]
        if all(u["state"] == "done" for u in ranks) and not any(
                u["state"] == "running" for u in current["units"].values()):
            return current
        return None

    # the shard tasks finish (the one running reconnects; the queued ones were in the AOF)
    current = wait_for(settled, timeout=120, interval=0.1, what="every shard task to finish")
    if current["state"] != "done":
        queue.resume(job, settings=settings)  # the chord's count may have been lost
    status = queue.wait(job, timeout=120, poll=0.1, settings=settings)
    assert status["state"] == "done", status
    assert all(u["attempts"] <= 2 for u in status["units"].values())
    _check(store, reference)
