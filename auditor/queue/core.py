"""Queued jobs: submit, status, wait, cancel, resume, list, and the task side (execute).

A job that extracts (``extract``, ``audit``, ``classify``) is split into ``world_size``
shard tasks on the ``extract`` queue, fanned out as a Celery chord whose body makes the
store whole (``finish``, on ``extract``: the store's own record, with the warm model) and
then runs the verb's CPU stages (``cpu``, on the ``cpu`` queue: ``run_audit`` /
``run_classify`` find the store done and go on). ``report`` is one ``cpu`` task,
``explain`` one ``extract`` task. Tasks are thin: they call :func:`execute` with the job
call; everything about claims, attempts, cancel and progress is here, shared by every face.
"""

from __future__ import annotations

import math
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from auditor.cancel import CancelToken
from auditor.errors import (
    AuditorError,
    ConfigError,
    JobCancelled,
    JobConflict,
    JobError,
)
from auditor.progress import ProgressEvent
from auditor.queue import manifest as manifests
from auditor.queue.state import RedisState, worker_name
from auditor.queue.storage import JobStorage, storage_for
from auditor.settings import QueueSettings

__all__ = [
    "QUEUES",
    "TASKS",
    "VERBS",
    "Context",
    "Outcome",
    "cancel",
    "execute",
    "finish_store",
    "list_jobs",
    "options_class",
    "resume",
    "status",
    "submit",
    "wait",
]

#: unit kind -> Celery task name
TASKS = {"rank": "auditor.extract_rank", "finish": "auditor.extract_finish",
         "explain": "auditor.explain", "cpu": "auditor.cpu_stage",
         "schedule": "auditor.schedule_run"}
#: Celery task name -> queue (a scheduled run needs the model: ``extract``)
QUEUES = {TASKS["rank"]: "extract", TASKS["finish"]: "extract", TASKS["explain"]: "extract",
          TASKS["cpu"]: "cpu", TASKS["schedule"]: "extract"}


@dataclass(frozen=True)
class Verb:
    """How a verb runs queued: its options class, whether it fans out shard tasks, and
    which unit finishes it."""

    module: str
    options: str
    sharded: bool
    final: str


VERBS: dict[str, Verb] = {
    "extract": Verb("auditor.jobs.extract", "ExtractOptions", True, "finish"),
    "audit": Verb("auditor.jobs.audit", "AuditOptions", True, "cpu"),
    "classify": Verb("auditor.jobs.classify", "ClassifyOptions", True, "cpu"),
    "report": Verb("auditor.jobs.report", "ReportOptions", False, "cpu"),
    "explain": Verb("auditor.jobs.explain", "ExplainOptions", False, "explain"),
    # sharded only when a step reads scores (see _extract_of): then the store is filled
    # first, by shard tasks with the warm model
    "filter": Verb("auditor.jobs.filter", "FilterOptions", True, "cpu"),
}


def options_class(verb: str) -> Any:
    """The ``<Verb>Options`` class of ``verb``.

    Raises
    ------
    ConfigError
        ``verb`` cannot be queued.
    """
    import importlib

    if verb not in VERBS:
        raise ConfigError(f"cannot queue {verb!r}; verbs: {', '.join(VERBS)}", field="verb")
    return getattr(importlib.import_module(VERBS[verb].module), VERBS[verb].options)


def _settings(settings: QueueSettings | None) -> QueueSettings:
    return settings if settings is not None else QueueSettings.from_env()


@cache
def _state(settings: QueueSettings) -> RedisState:
    return RedisState(settings)


@cache
def _celery(settings: QueueSettings) -> Any:
    """A Celery client app (sends tasks by name; the workers' app has the tasks)."""
    from celery import Celery

    app = Celery("auditor-client", broker=settings.broker_url,
                 backend=settings.result_backend)
    app.conf.update(task_serializer="json", result_serializer="json",
                    accept_content=["json"], result_accept_content=["json"],
                    broker_transport_options={
                        "visibility_timeout": settings.visibility_timeout},
                    broker_connection_retry_on_startup=True)
    return app


@contextmanager
def _reaching(settings: QueueSettings) -> Iterator[None]:
    """Redis or the broker out of reach: a :class:`JobError` saying so, not a traceback."""
    import redis
    from kombu.exceptions import OperationalError

    try:
        yield
    except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError,
            OperationalError) as e:
        raise JobError(f"cannot reach the queue at {_redact(str(settings.state_url))} "
                       f"or the broker at {_redact(settings.broker_url)}: {e}") from e


def _redact(url: str) -> str:
    """``url`` without a password."""
    head, sep, tail = url.rpartition("@")
    if not sep:
        return url
    scheme, _, _ = head.partition("://")
    return f"{scheme}://***@{tail}"


# --------------------------------------------------------------------------- submit


def _store_of(verb: str, options: Any) -> str | None:
    if verb == "extract":
        return "."
    if verb == "audit":
        return "store"
    if verb == "classify":
        return str(options.store)
    if verb == "filter":
        return "store"
    return None


def _extract_of(verb: str, options: Any, input: str) -> Any:
    """The extraction a sharded verb fans out, or ``None`` when this job needs none."""
    if verb == "extract":
        return options
    if verb == "filter":
        from auditor.jobs.filter import plan_filter

        return plan_filter(input, options).extract
    if verb == "audit":
        from auditor.jobs.audit import audit_extract_options

        return audit_extract_options(options)
    from auditor.jobs.classify import classify_extract_options

    return classify_extract_options(options)


def _units(verb: str, world_size: int) -> dict[str, dict[str, Any]]:
    names = [f"rank-{r}" for r in range(world_size)]
    if world_size:
        names.append("finish")
    if VERBS[verb].final in ("cpu", "explain"):
        names.append(VERBS[verb].final)
    return {n: {"state": "pending", "attempts": 0, "worker": None, "error": None}
            for n in names}


def submit(verb: str, input: str | Path, *, out: str | Path, options: Any,
           settings: QueueSettings | None = None) -> str:
    """Queue ``verb`` on ``input`` with ``options`` (its ``<Verb>Options``); return the
    job id. The manifest is written to ``out/_job/manifest.json`` before any task is sent.

    Raises
    ------
    ConfigError
        An unknown verb, options of another verb, or ``overwrite`` on a sharded job (clear
        the output first: shard tasks never delete each other's shards).
    JobConflict
        ``out`` holds a queued job that has not ended; resume or cancel that one.
    """
    settings = _settings(settings)
    cls = options_class(verb)
    if not isinstance(options, cls):
        raise ConfigError(f"{verb} takes {cls.__name__}, got {type(options).__name__}",
                          field="options")
    storage = storage_for(out)
    previous = manifests.read(storage)
    if previous is not None and previous.get("state") not in manifests.TERMINAL:
        raise JobConflict(f"holds queued job {previous.get('id')} ({previous.get('state')}); "
                          "resume or cancel it", path=storage.url)
    src = str(Path(input).resolve())
    record: dict[str, Any] = {"id": uuid.uuid4().hex[:16], "verb": verb, "input": src,
                              "out": storage.url, "options": options.to_dict(),
                              "state": "queued", "generation": 1,
                              "submitted_at": time.time(), "result": None, "error": None,
                              "extract": None, "store": None, "world_size": 0,
                              "shards": {"total": None, "documents": None},
                              "provenance": None}
    from auditor.jobs import fingerprint

    record["input_fingerprint"] = fingerprint(src)
    extract = _extract_of(verb, options, src) if VERBS[verb].sharded else None
    if extract is not None:
        if options.overwrite:
            raise ConfigError("a queued job never deletes outputs; clear the output "
                              "directory first", field="overwrite")
        from auditor.io import count_documents

        documents = count_documents(src)
        n_shards = None if documents is None else math.ceil(documents / extract.shard_size)
        world = max(1, min(n_shards or 1, settings.max_shard_tasks))
        record.update(extract=extract.to_dict(), store=_store_of(verb, options),
                      world_size=world, shards={"total": n_shards, "documents": documents})
    record["units"] = _units(verb, record["world_size"])
    with _reaching(settings):
        _state(settings).client.ping()  # before anything is written
    storage.local_path().mkdir(parents=True, exist_ok=True)
    manifests.create(storage, record)
    try:
        with _reaching(settings):
            state = _state(settings)
            state.register(record["id"], storage.url)
            state.uncancel(record["id"])
            _send(settings, record, list(record["units"]))
    except JobError as e:
        error = {**e.to_dict(), "unit": None}

        def unsent(m: dict[str, Any]) -> None:
            m["state"] = "failed"
            m["error"] = error

        manifests.update(storage, unsent)  # `jobs resume OUT` sends it once Redis is back
        raise
    return str(record["id"])


def _send(settings: QueueSettings, record: Mapping[str, Any], units: list[str]) -> None:
    """Send the tasks of ``units``: shard tasks in a chord whose body chains the rest."""
    from celery import chain, chord, group

    app = _celery(settings)
    base = (record["out"], record["id"], record["generation"])

    def sig(kind: str, *args: Any) -> Any:
        return app.signature(TASKS[kind], args=(*base, *args), immutable=True,
                             queue=QUEUES[TASKS[kind]])

    ranks = [sig("rank", int(u.split("-")[1])) for u in units if u.startswith("rank-")]
    tail = [sig(kind) for kind in ("finish", "cpu", "explain") if kind in units]
    body = None if not tail else tail[0] if len(tail) == 1 else chain(*tail)
    if ranks and body is not None:
        chord(ranks, body).apply_async()
    elif ranks:
        group(ranks).apply_async()
    elif body is not None:
        body.apply_async()


# --------------------------------------------------------------------------- control


def _locate(job: str, settings: QueueSettings) -> JobStorage:
    """A job by id (the Redis index) or by its out directory."""
    if Path(job).is_dir():
        return storage_for(job)
    with _reaching(settings):
        out = _state(settings).out_of(job)
    if out is None:
        raise JobError(f"no job {job!r} in the queue's index (name its out directory)",
                       field="job")
    return storage_for(out)


def cancel(job: str, *, settings: QueueSettings | None = None) -> dict[str, Any]:
    """Ask every task of ``job`` to stop at its next batch; the manifest says
    ``cancelled`` at once (finished shards stay; :func:`resume` goes on from them)."""
    settings = _settings(settings)
    storage = _locate(job, settings)
    record = manifests.require(storage)
    with _reaching(settings):
        _state(settings).cancel(record["id"])

    def change(m: dict[str, Any]) -> None:
        if m["state"] not in manifests.TERMINAL:
            m["state"] = "cancelled"

    manifests.update(storage, change)
    return status(job, settings=settings)


def resume(job: str, *, settings: QueueSettings | None = None) -> dict[str, Any]:
    """Send the unfinished units of a cancelled, failed or stalled job again (a new
    generation: tasks of the old one do nothing). Done shards are skipped by the store's
    markers; a failed unit gets its attempts back."""
    settings = _settings(settings)
    storage = _locate(job, settings)
    state = _state(settings)

    def change(m: dict[str, Any]) -> list[str]:
        if m["state"] == "done":
            return []
        m["generation"] += 1
        m["state"] = "queued"
        m["error"] = None
        todo = []
        for name, unit in m["units"].items():
            if unit["state"] != "done":
                unit.update(state="pending", attempts=0)
                todo.append(name)
        return todo

    record = manifests.require(storage)
    with _reaching(settings):
        state.register(record["id"], storage.url)
        state.uncancel(record["id"])
    todo = manifests.update(storage, change)
    if todo:
        with _reaching(settings):
            _send(settings, manifests.require(storage), todo)
    return status(job, settings=settings)


def _marker_rows(storage: JobStorage, store: str) -> dict[int, dict[str, Any]]:
    import re

    found = {}
    for name in storage.list_files(f"{store}/_done"):
        m = re.fullmatch(r"(\d{5,})\.json", name)
        if m is None:
            continue
        marker = storage.read_json(f"{store}/_done/{name}")
        if marker is not None:
            found[int(m.group(1))] = marker
    return found


def status(job: str, *, settings: QueueSettings | None = None) -> dict[str, Any]:
    """The job as its manifest and Redis see it now: state, shards done/total, documents,
    tokens/s, ETA, failed units with their errors, where the outputs are."""
    settings = _settings(settings)
    storage = _locate(job, settings)
    m = manifests.require(storage)
    try:
        progress = _state(settings).progress_of(m["id"])
    except Exception:  # Redis away: the manifest alone still answers
        progress = {}
    units = m["units"]
    shards: dict[str, Any] = {"total": m["shards"]["total"], "done": 0, "running": 0}
    documents: dict[str, Any] = {"total": m["shards"]["documents"], "done": 0}
    if m["store"] is not None:
        markers = _marker_rows(storage, m["store"])
        shards["done"] = len(markers)
        documents["done"] = sum(int(v.get("rows", 0)) for v in markers.values())
        shards["checksums"] = {str(k): v.get("sha256") for k, v in sorted(markers.items())}
    shards["running"] = sum(1 for n, u in units.items()
                            if n.startswith("rank-") and u["state"] == "running")
    running = [p for n, p in progress.items() if units.get(n, {}).get("state") == "running"]
    tokens = sum(float(p.get("counters", {}).get("tokens", 0)) for p in progress.values())
    rate = sum(float(p.get("counters", {}).get("tokens_per_s", 0)) for p in running)
    eta = None
    elapsed = time.time() - float(m.get("started_at") or m["submitted_at"])
    if documents["total"] and documents["done"] and m["state"] == "running" and elapsed > 0:
        eta = round((documents["total"] - documents["done"]) * elapsed / documents["done"], 1)
    failed = [{"unit": n, "error": u["error"], "attempts": u["attempts"]}
              for n, u in units.items() if u["state"] == "failed"]
    return {"id": m["id"], "verb": m["verb"], "state": m["state"], "out": m["out"],
            "input": m["input"], "generation": m["generation"], "world_size": m["world_size"],
            "shards": shards, "documents": documents, "tokens": int(tokens),
            "tokens_per_s": round(rate, 1), "eta_s": eta,
            "units": {n: dict(u) for n, u in units.items()}, "failed": failed,
            "error": m["error"], "result": m["result"],
            "outputs": {"out": m["out"], "store": m["store"]}}


def wait(job: str, *, timeout: float | None = None, poll: float = 0.5,
         settings: QueueSettings | None = None) -> dict[str, Any]:
    """Poll :func:`status` until the job is done, failed or cancelled.

    Raises
    ------
    JobError
        ``timeout`` seconds passed first.
    """
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        current = status(job, settings=settings)
        if current["state"] in manifests.TERMINAL:
            return current
        if deadline is not None and time.monotonic() >= deadline:
            raise JobError(f"job {current['id']} still {current['state']} after {timeout} s",
                           field="timeout")
        time.sleep(poll)


def list_jobs(*, state: str | None = None, settings: QueueSettings | None = None
              ) -> list[dict[str, Any]]:
    """Every job in the queue's index (optionally only those in ``state``), newest first,
    with their state, verb, out and shards done/total."""
    settings = _settings(settings)
    found = []
    with _reaching(settings):
        index = _state(settings).jobs()
    for job_id, out in index.items():
        m = manifests.read(storage_for(out))
        if m is None or m.get("id") != job_id:
            continue
        if state is not None and m["state"] != state:
            continue
        found.append({"id": job_id, "verb": m["verb"], "state": m["state"], "out": out,
                      "input": m["input"], "submitted_at": m["submitted_at"]})
    return sorted(found, key=lambda j: -float(j["submitted_at"]))


# --------------------------------------------------------------------------- task side


@dataclass
class Context:
    """What a task's job call gets: the manifest, where to write, a cancel token that
    polls the job's flag, and a progress callback (Redis + the task's state)."""

    manifest: dict[str, Any]
    storage: JobStorage
    cancel: CancelToken
    progress: Callable[[ProgressEvent], None]
    settings: QueueSettings

    @property
    def out(self) -> Path:
        return self.storage.local_path()

    @property
    def store(self) -> Path:
        return self.storage.local_path(self.manifest["store"] or "")


@dataclass(frozen=True)
class Outcome:
    """What a task returns (``value``), or that it should be retried in ``retry_in`` s."""

    value: dict[str, Any]
    retry_in: float | None = None


def _error_record(error: BaseException) -> dict[str, Any]:
    if isinstance(error, AuditorError):
        return error.to_dict()
    return {"type": type(error).__name__, "message": str(error) or repr(error),
            "path": None, "row": None, "field": None, "tensor": None, "exit_code": 1,
            "http_status": 500}


def execute(out: str, job_id: str, generation: int, unit: str,
            body: Callable[[Context], dict[str, Any]], *,
            settings: QueueSettings | None = None, worker: str | None = None,
            report: Callable[[ProgressEvent], None] | None = None) -> Outcome:
    """Run one unit of a queued job in this worker: the guard (a stale generation, an
    ended or cancelled job, a unit already done: nothing to do), the claim (a unit a live
    worker holds: retry later), the attempt counter (more than ``max_attempts`` starts:
    the unit and the job fail, naming the last error), then ``body`` with a cancel token
    and progress, and the unit's new state in the manifest.
    """
    settings = _settings(settings)
    worker = worker or worker_name()
    storage = storage_for(out)
    state = _state(settings)
    record = manifests.read(storage)
    if record is None or record["id"] != job_id:
        return Outcome({"state": "missing"})
    if record["generation"] != generation:
        return Outcome({"state": "stale"})
    if record["state"] in manifests.TERMINAL:
        return Outcome({"state": record["state"], "skipped": True})
    if record["units"].get(unit, {}).get("state") == "done":
        return Outcome({"state": "done", "skipped": True})
    if state.cancelled(job_id):
        manifests.update(storage, lambda m: _set_unit(m, unit, state="cancelled"))
        return Outcome({"state": "cancelled"})
    claim = state.claim(job_id, unit, worker)
    if claim is None:
        return Outcome({"state": "busy"}, retry_in=settings.retry_delay)
    try:
        return _run_claimed(storage, state, record, unit, body, settings, worker, report)
    finally:
        claim.release()


def _set_unit(m: dict[str, Any], unit: str, **changes: Any) -> dict[str, Any]:
    m["units"][unit].update(changes)
    return dict(m["units"][unit])


def _fail_job(m: dict[str, Any], unit: str, error: dict[str, Any]) -> None:
    _set_unit(m, unit, state="failed", error=error, finished_at=time.time())
    if m["state"] not in manifests.TERMINAL:
        m["state"] = "failed"
        m["error"] = {**error, "unit": unit}


def _run_claimed(storage: JobStorage, state: RedisState, record: dict[str, Any], unit: str,
                 body: Callable[[Context], dict[str, Any]], settings: QueueSettings,
                 worker: str, report: Callable[[ProgressEvent], None] | None) -> Outcome:
    job_id = record["id"]

    def start(m: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        u = m["units"][unit]
        if u["state"] == "done" or m["state"] in manifests.TERMINAL:
            return -1, m
        u["attempts"] += 1
        if u["attempts"] > settings.max_attempts:
            last = u.get("error") or {
                "type": "WorkerLost", "path": None, "row": None, "field": None,
                "tensor": None, "exit_code": 8, "http_status": 500,
                "message": f"{unit} was started {u['attempts'] - 1} times and its worker "
                           f"died every time (last {u.get('worker')})"}
            _fail_job(m, unit, last)
            return 0, m
        u.update(state="running", worker=worker, started_at=time.time())
        if m["state"] == "queued":
            m["state"] = "running"
            m.setdefault("started_at", time.time())
        return u["attempts"], m

    attempt, current = manifests.update(storage, start)
    if attempt < 0:
        return Outcome({"state": "done", "skipped": True})
    if attempt == 0:
        return Outcome({"state": "failed", "error": current["units"][unit]["error"]})

    lock = threading.Lock()
    last_write = [0.0]

    def progress(event: ProgressEvent) -> None:
        record_ = event.to_dict()
        now = time.monotonic()
        with lock:
            if event.final or now - last_write[0] >= 0.2:
                last_write[0] = now
                try:
                    state.progress(job_id, unit, record_)
                except Exception:  # progress is best effort
                    pass
        if report is not None:
            report(event)

    token = CancelToken(poll=lambda: state.cancelled(job_id),
                        poll_interval=settings.cancel_poll)
    context = Context(manifest=current, storage=storage, cancel=token, progress=progress,
                      settings=settings)
    try:
        value = body(context)
    except JobCancelled as e:
        def cancelled(m: dict[str, Any]) -> None:
            _set_unit(m, unit, state="cancelled", attempts=m["units"][unit]["attempts"] - 1,
                      error=None)
            if m["state"] not in manifests.TERMINAL:
                m["state"] = "cancelled"
        manifests.update(storage, cancelled)
        return Outcome({"state": "cancelled", "error": _error_record(e)})
    except Exception as e:
        error = _error_record(e)

        def failed(m: dict[str, Any]) -> bool:
            if attempt < settings.max_attempts:
                _set_unit(m, unit, state="retrying", error=error)
                return True
            _fail_job(m, unit, error)
            return False

        retry = manifests.update(storage, failed)
        return Outcome({"state": "retrying" if retry else "failed", "error": error},
                       retry_in=settings.retry_delay if retry else None)

    final = unit == VERBS[record["verb"]].final

    def finished(m: dict[str, Any]) -> None:
        extra: dict[str, Any] = {}
        if unit.startswith("rank-") and m["store"] is not None:
            world, rank = m["world_size"], int(unit.split("-")[1])
            markers = _marker_rows(storage, m["store"])
            extra["outputs"] = {str(i): mk.get("sha256") for i, mk in markers.items()
                                if i % world == rank}
        if unit.startswith("rank-"):
            extra["result"] = value
        _set_unit(m, unit, state="done", error=None, finished_at=time.time(), **extra)
        if unit == "finish" and isinstance(value.get("provenance"), Mapping):
            m["provenance"] = value["provenance"]
        if final and m["state"] not in manifests.TERMINAL:
            m["state"] = "done"
            m["result"] = value.get("result", value)

    manifests.update(storage, finished)
    return Outcome(value)


def finish_store(context: Context, result: Mapping[str, Any]) -> dict[str, Any]:
    """After the shard tasks: sweep temporary files a killed writer left in the store;
    return the job's result (``result``, the store's own extract result, with the shard
    tasks' counts summed into its summary), and the model and SAE part of the store's
    provenance (for the manifest)."""
    removed = context.storage.remove_temporary(context.manifest["store"] or ".")
    provenance = context.storage.read_json(f"{context.manifest['store']}/store.json") or {}
    prov = provenance.get("provenance") or {}
    keep = {k: prov[k] for k in ("model", "saes", "input", "auditor_version") if k in prov}
    ranks = [u.get("result") or {} for n, u in context.manifest["units"].items()
             if n.startswith("rank-")]
    merged = dict(result)
    merged["summary"] = _merge_summaries(
        [r.get("summary") or {} for r in ranks], dict(result.get("summary") or {}),
        seconds=time.time() - float(context.manifest.get("started_at")
                                    or context.manifest["submitted_at"]))
    merged["skipped"] = [s for r in ranks for s in r.get("skipped") or []]
    return {"result": merged, "removed_temporary": removed, "provenance": keep}


def _merge_summaries(parts: list[dict[str, Any]], base: dict[str, Any], *, seconds: float
                     ) -> dict[str, Any]:
    """One extract summary from the shard tasks' (counts summed, ``mean_active``
    weighted by documents, the job's wall time)."""
    out = dict(base)
    for key in ("docs", "windows", "tokens", "shards_written", "bytes_written", "bad_rows",
                "truncated_docs"):
        out[key] = sum(int(p.get(key, 0) or 0) for p in parts)
    out["docs_skipped_done"] = 0
    out["shards_skipped"] = 0
    excluded: dict[str, int] = {}
    active: dict[str, float] = {}
    for p in parts:
        for k, v in (p.get("excluded_tokens") or {}).items():
            excluded[k] = excluded.get(k, 0) + int(v)
        for k, v in (p.get("mean_active") or {}).items():
            active[k] = active.get(k, 0.0) + float(v) * int(p.get("docs", 0) or 0)
    out["excluded_tokens"] = excluded
    out["mean_active"] = {k: v / out["docs"] if out["docs"] else 0.0 for k, v in active.items()}
    out["seconds"] = seconds
    out["tokens_per_s"] = round(out["tokens"] / seconds, 2) if seconds > 0 else 0.0
    return out
