"""Queued jobs: the overhead of the queued path, and what a second extract worker buys.

On the same input and the same extraction options:

* **in-process** — ``run_extract`` in this process with the pipeline already loaded (a
  warm model, as a worker has it);
* **queued, 1 worker** — ``auditor.queue.submit`` + ``wait`` with one warm ``auditor
  worker`` process (after a warm-up job): the cost of the shard tasks, the manifest,
  claims, Redis round trips and the finish task, over the same work;
* **queued, 2 workers** — the same job with two warm workers.

It prints the overhead ratio (queued 1 worker / in-process) and the speed-up of two
workers over one (1 worker / 2 workers). Both are ratios of wall times on this machine:
on a machine with fewer free cores than workers the speed-up cannot reach 2.

Usage::

    .venv/bin/python bench/jobs.py                     # tiny random model, 400 documents
    .venv/bin/python bench/jobs.py --docs 2000 --shard-size 100 --model DIR --sae PATH

It needs Redis (``--broker``, default database 13 of the local one, flushed before and
after).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


def _docs(path: Path, n: int, words_per_doc: int) -> Path:
    import numpy as np

    rng = np.random.default_rng(0)
    words = ["alpha", "beta", "gamma", "delta", "goal", "match", "vote", "law", "code",
             "river", "market", "engine", "poem", "court", "virus", "planet"]
    path.write_text("".join(json.dumps({"id": f"d{i}", "text": " ".join(
        rng.choice(words, words_per_doc))}) + "\n" for i in range(n)))
    return path


def _start_worker(name: str, env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "auditor", "worker", "--queues", "extract,cpu",
             "--name", name, "--without-mingle", "--without-gossip", "--without-heartbeat"],
            cwd=ROOT, env={**os.environ, **env, "PYTHONPATH": str(ROOT)}, stdout=out,
            stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + 120
    while " ready." not in log.read_text(errors="replace"):
        if proc.poll() is not None or time.monotonic() > deadline:
            raise SystemExit(f"worker {name} did not start:\n{log.read_text()[-2000:]}")
        time.sleep(0.1)
    return proc


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def _queued(options: Any, data: Path, out: Path, settings: Any) -> float:
    from auditor import queue

    started = time.perf_counter()
    job = queue.submit("extract", data, out=out, options=options, settings=settings)
    status = queue.wait(job, timeout=3600, poll=0.05, settings=settings)
    elapsed = time.perf_counter() - started
    if status["state"] != "done":
        raise SystemExit(f"queued job {job} ended {status['state']}: {status['error']}")
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--docs", type=int, default=400)
    parser.add_argument("--words", type=int, default=60, help="words per document")
    parser.add_argument("--shard-size", type=int, default=50)
    parser.add_argument("--max-length", type=int, default=64)
    parser.add_argument("--model", default=None, help="model directory (default: tiny random)")
    parser.add_argument("--sae", default=None, help="SAE path (with --model)")
    parser.add_argument("--broker", default="redis://127.0.0.1:6379/13")
    parser.add_argument("--repeats", type=int, default=2, help="runs per setting (best kept)")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads of each process (in-process and every worker), "
                             "so that two workers are two equal devices, as two GPUs are")
    args = parser.parse_args()

    import redis
    import torch

    from auditor.jobs import load_pipeline
    from auditor.jobs.extract import ExtractOptions, run_extract
    from auditor.settings import QueueSettings

    torch.set_num_threads(args.threads)
    tmp = Path(tempfile.mkdtemp(prefix="bench-jobs-"))
    env = {"AUDITOR_BROKER_URL": args.broker, "AUDITOR_RETRY_DELAY": "0.5",
           "AUDITOR_CANCEL_POLL": "0.5", "OMP_NUM_THREADS": str(args.threads),
           "MKL_NUM_THREADS": str(args.threads)}
    settings = QueueSettings.from_env(env)
    client = redis.Redis.from_url(args.broker)
    client.flushdb()
    workers: list[subprocess.Popen[bytes]] = []
    try:
        model, sae = args.model, args.sae
        if model is None:
            from auditor.testing import make_random_sae, make_tiny_model

            model = str(make_tiny_model(tmp / "model", arch="llama", n_layers=4, d_model=64,
                                        seed=0))
            sae = str(make_random_sae(d_in=64, layer=2, d_sae=256, k=8, seed=1)
                      .save(tmp / "sae"))
        data = _docs(tmp / "docs.jsonl", args.docs, args.words)
        options = ExtractOptions(model=model, saes=(sae,) if sae else (), id_column="id",
                                 max_length=args.max_length, shard_size=args.shard_size)
        pipeline = load_pipeline(options.pipeline_spec())
        runs = iter(range(10_000))

        def fresh() -> Path:
            return tmp / f"out-{next(runs)}"

        in_process = []
        for _ in range(args.repeats):
            started = time.perf_counter()
            run_extract(data, out=fresh(), options=options, pipeline=pipeline)
            in_process.append(time.perf_counter() - started)

        workers.append(_start_worker("bench-1", env, tmp / "w1.log"))
        _queued(options, data, fresh(), settings)  # warm-up: the worker loads the model
        one = [_queued(options, data, fresh(), settings) for _ in range(args.repeats)]

        workers.append(_start_worker("bench-2", env, tmp / "w2.log"))
        warm = ExtractOptions.from_dict({**options.to_dict(), "shard_size": 1})
        small = _docs(tmp / "warm.jsonl", 4, 5)
        _queued(warm, small, fresh(), settings)  # both workers take a task and warm up
        two = [_queued(options, data, fresh(), settings) for _ in range(args.repeats)]

        best_in, best_one, best_two = min(in_process), min(one), min(two)
        shards = -(-args.docs // args.shard_size)
        print(json.dumps({
            "docs": args.docs, "shards": shards, "cpus": os.cpu_count(),
            "threads_per_process": args.threads,
            "in_process_s": round(best_in, 3), "queued_1_worker_s": round(best_one, 3),
            "queued_2_workers_s": round(best_two, 3),
            "overhead_ratio": round(best_one / best_in, 3),
            "speedup_2_over_1": round(best_one / best_two, 3),
        }, indent=2))
    finally:
        for proc in workers:
            _stop(proc)
        client.flushdb()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
