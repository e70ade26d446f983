"""The Celery tasks: thin wrappers that parse a job's options, call the job, return its
result as JSON. Claims, attempts, cancel and progress are :func:`auditor.queue.execute`'s.

Queue ``extract`` (the model and SAEs): a shard task (``rank`` of ``world_size``), the
finish of a store, ``explain``, one run of a scheduled report (``schedule_run``, sent by
beat). Queue ``cpu``: the CPU stages (``run_audit`` / ``run_classify`` on a finished
store, ``run_report``). No task waits on another (no
``.get()``); the fan-out is a chord built by :func:`auditor.queue.submit`.
"""

from __future__ import annotations

from typing import Any

from auditor import queue
from auditor.progress import ProgressEvent
from auditor.settings import QueueSettings
from workers.celery_app import app

__all__ = ["cpu_stage", "explain", "extract_finish", "extract_rank", "pipeline_for",
           "schedule_run"]

#: This process's loaded model and SAEs, by PipelineSpec.key(): loaded on the first task
#: after the fork (a parent never initialises CUDA), kept warm for the next ones.
_PIPELINES: dict[tuple[object, ...], Any] = {}


def _settings() -> QueueSettings:
    return QueueSettings.from_env()


def pipeline_for(spec: Any) -> Any:
    """The warm pipeline of ``spec`` (one kept per process: a new spec replaces it)."""
    from auditor.jobs import load_pipeline

    key = spec.key()
    if key not in _PIPELINES:
        _PIPELINES.clear()
        _PIPELINES[key] = load_pipeline(spec)
    return _PIPELINES[key]


def _on_device(options: Any, settings: QueueSettings) -> Any:
    """``options`` (ExtractOptions) on this worker's device, when it was started with one
    (a runtime field: not part of the job's options hash)."""
    if settings.device is None:
        return options
    return type(options).from_dict({**options.to_dict(), "device": settings.device})


def _run(task: Any, out: str, job_id: str, generation: int, unit: str, body: Any) -> Any:
    settings = _settings()

    def report(event: ProgressEvent) -> None:
        task.update_state(state="PROGRESS", meta={"unit": unit, **event.to_dict()})

    outcome = queue.execute(out, job_id, generation, unit, body, settings=settings,
                            worker=task.request.hostname, report=report)
    if outcome.retry_in is not None:
        raise task.retry(countdown=outcome.retry_in, max_retries=None)
    return outcome.value


@app.task(bind=True, name=queue.TASKS["rank"])
def extract_rank(self: Any, out: str, job_id: str, generation: int, rank: int) -> Any:
    """Fill the store shards ``i % world_size == rank`` of a queued job."""
    from auditor.jobs.extract import ExtractOptions, run_extract

    def body(ctx: queue.Context) -> dict[str, Any]:
        options = _on_device(ExtractOptions.from_dict(
            {**ctx.manifest["extract"], "rank": rank,
             "world_size": ctx.manifest["world_size"],
             "total_shards": ctx.manifest["shards"]["total"]}), ctx.settings)
        result = run_extract(ctx.manifest["input"], out=ctx.store, options=options,
                             progress=ctx.progress, cancel=ctx.cancel,
                             pipeline=pipeline_for(options.pipeline_spec()))
        return result.to_dict()

    return _run(self, out, job_id, generation, f"rank-{rank}", body)


@app.task(bind=True, name=queue.TASKS["finish"])
def extract_finish(self: Any, out: str, job_id: str, generation: int) -> Any:
    """Make the store whole once every shard task is done: its own ``_job.json`` (every
    shard is skipped by its marker), temporary files swept."""
    from auditor.jobs.extract import ExtractOptions, run_extract

    def body(ctx: queue.Context) -> dict[str, Any]:
        options = _on_device(ExtractOptions.from_dict(ctx.manifest["extract"]), ctx.settings)
        result = run_extract(ctx.manifest["input"], out=ctx.store, options=options,
                             progress=ctx.progress, cancel=ctx.cancel,
                             pipeline=pipeline_for(options.pipeline_spec()))
        return queue.finish_store(ctx, result.to_dict())

    return _run(self, out, job_id, generation, "finish", body)


@app.task(bind=True, name=queue.TASKS["explain"])
def explain(self: Any, out: str, job_id: str, generation: int) -> Any:
    """``run_explain`` with this worker's warm model."""
    from auditor.jobs.explain import ExplainOptions, run_explain

    def body(ctx: queue.Context) -> dict[str, Any]:
        options = ExplainOptions.from_dict(ctx.manifest["options"])
        extract = _on_device(options.extract, ctx.settings)
        options = ExplainOptions.from_dict({**options.to_dict(), "extract": extract.to_dict()})
        result = run_explain(ctx.manifest["input"], out=ctx.out, options=options,
                             progress=ctx.progress, cancel=ctx.cancel,
                             pipeline=pipeline_for(extract.pipeline_spec()))
        return {"result": result.to_dict()}

    return _run(self, out, job_id, generation, "explain", body)


@app.task(bind=True, name=queue.TASKS["cpu"])
def cpu_stage(self: Any, out: str, job_id: str, generation: int) -> Any:
    """The verb's CPU stages: ``run_audit`` / ``run_classify`` (their store is done, so
    they go straight to the heads and the report) or ``run_report``."""
    import importlib

    def body(ctx: queue.Context) -> dict[str, Any]:
        verb = queue.VERBS[ctx.manifest["verb"]]
        module = importlib.import_module(verb.module)
        options = getattr(module, verb.options).from_dict(ctx.manifest["options"])
        run = getattr(module, f"run_{ctx.manifest['verb']}")
        result = run(ctx.manifest["input"], out=ctx.out, options=options,
                     progress=ctx.progress, cancel=ctx.cancel)
        return {"result": result.to_dict()}

    return _run(self, out, job_id, generation, "cpu", body)


@app.task(bind=True, name=queue.TASKS["schedule"])
def schedule_run(self: Any, name: str) -> Any:
    """One run of schedule ``name`` (sent by beat): its new files audited into a snapshot
    with this worker's warm model (loaded only when there are new files)."""
    from auditor.jobs.schedule import ScheduleRunOptions, run_schedule

    settings = _settings()
    result = run_schedule(name, options=ScheduleRunOptions(device=settings.device),
                          load_pipeline=pipeline_for)
    return result.to_dict()
