"""Fixtures of the queued-job tests: the real Redis (its own database, flushed), real
Celery worker processes started with ``auditor worker``, a tiny model and SAE."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pytest

from auditor.settings import QueueSettings
from auditor.testing import make_random_sae

ROOT = Path(__file__).resolve().parents[2]
REDIS_URL = "redis://127.0.0.1:6379/11"

#: Short limits so a killed worker's task comes back within seconds (a test's shard task
#: takes well under a second once the model is loaded, a few seconds to load it).
ENV = {
    "AUDITOR_BROKER_URL": REDIS_URL,
    "AUDITOR_VISIBILITY_TIMEOUT": "12",
    "AUDITOR_TIME_LIMIT": "11",
    "AUDITOR_SOFT_TIME_LIMIT": "10",
    "AUDITOR_CLAIM_TTL": "3",
    "AUDITOR_RETRY_DELAY": "0.5",
    "AUDITOR_CANCEL_POLL": "0.1",
    "AUDITOR_RESTORE_INTERVAL": "1",
    "AUDITOR_MAX_ATTEMPTS": "2",
}


@pytest.fixture(scope="session")
def settings() -> QueueSettings:
    return QueueSettings.from_env(ENV)


@pytest.fixture(scope="module")
def redis_db() -> Iterator[Any]:
    """The machine's Redis, database 11, empty before and after the module."""
    yield from flushed_redis(REDIS_URL)


def flushed_redis(url: str) -> Iterator[Any]:
    """A client of the Redis database at ``url``, emptied before and after (a fixture's
    body); skips the test when no Redis answers."""
    import redis

    client = redis.Redis.from_url(url)
    try:
        client.ping()
    except redis.ConnectionError:
        pytest.skip(f"no Redis at {url}: these tests run real workers on it")
    client.flushdb()
    yield client
    client.flushdb()


@pytest.fixture
def queue_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """The test process's own environment names the test broker (for the CLI)."""
    for key, value in ENV.items():
        monkeypatch.setenv(key, value)


class Worker:
    """A real ``auditor worker`` process (its own process group, killed by its pid)."""

    def __init__(self, name: str, logs: Path, queues: str = "extract,cpu",
                 env: dict[str, str] | None = None) -> None:
        self.name = name
        self.log = logs / f"{name}.log"
        env = {**os.environ, **ENV, **(env or {}), "PYTHONPATH": str(ROOT)}
        with open(self.log, "wb") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "auditor", "worker", "--queues", queues,
                 "--name", name, "--loglevel", "INFO", "--without-mingle",
                 "--without-gossip", "--without-heartbeat"],
                cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT,
                start_new_session=True)

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_ready(self, timeout: float = 90) -> Worker:
        def ready() -> bool:
            if self.proc.poll() is not None:
                raise AssertionError(f"worker {self.name} exited:\n{self.text()[-3000:]}")
            return " ready." in self.text()

        wait_for(ready, timeout=timeout, what=f"worker {self.name} to be ready")
        return self

    def kill(self) -> None:
        """``kill -9`` the worker and its pool processes (a lost machine)."""
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=30)

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.kill()


@pytest.fixture(scope="module")
def start_worker(tmp_path_factory: pytest.TempPathFactory, redis_db: Any
                 ) -> Iterator[Callable[..., Worker]]:
    """Factory of workers, all stopped when the module ends."""
    logs = tmp_path_factory.mktemp("worker-logs")
    started: list[Worker] = []

    def start(name: str, queues: str = "extract,cpu", env: dict[str, str] | None = None
              ) -> Worker:
        worker = Worker(name, logs, queues, env)
        started.append(worker)
        return worker

    yield start
    for worker in started:
        worker.stop()


@pytest.fixture(scope="session")
def sae_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_random_sae(layer=1, d_sae=64, k=4, seed=3).save(
        tmp_path_factory.mktemp("queue-sae") / "sae")


def write_docs(path: Path, n: int, *, bad: int | None = None) -> Path:
    """``n`` short JSONL documents (``bad``: that row's text is empty, a RowError)."""
    rng = np.random.default_rng(0)
    words = ["alpha", "beta", "gamma", "delta", "goal", "match", "vote", "law", "code"]
    rows = []
    for i in range(n):
        text = "" if i == bad else " ".join(rng.choice(words, 4 + i % 7))
        rows.append(json.dumps({"id": f"d{i}", "text": text}) + "\n")
    path.write_text("".join(rows))
    return path


def store_frame(store: Path, *, allow_partial: bool = False) -> pl.DataFrame:
    from auditor.store import scan_features

    return scan_features(store, allow_partial=allow_partial).collect().sort("row")


def wait_for(condition: Callable[[], Any], *, timeout: float, what: str,
             interval: float = 0.05) -> Any:
    """Poll ``condition`` until it returns something truthy; fail after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)
