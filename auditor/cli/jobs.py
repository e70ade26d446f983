"""``auditor jobs``: queued jobs on the workers (submit, status, wait, cancel, resume, list)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from auditor.errors import JobCancelled, error_from_dict

__all__ = ["jobs"]

#: flag value name -> the ExtractOptions field it sets
_EXTRACT_FLAGS = {"model": "model", "sae_paths": "saes", "shard_size": "shard_size",
                  "text_column": "text_column", "id_column": "id_column",
                  "skip_bad_rows": "skip_bad_rows", "max_length": "max_length",
                  "poolings": "poolings", "passthrough": "passthrough"}


@click.group()
def jobs() -> None:
    """Queued jobs: submit, status, wait, cancel, resume, list.

    Run a verb on the workers and follow it (AUDITOR_BROKER_URL)."""


def _parse_value(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return text


def _set(record: dict[str, Any], dotted: str, value: Any) -> None:
    *path, last = dotted.split(".")
    for key in path:
        record = record.setdefault(key, {})
    record[last] = value


def _options(verb: str, flags: dict[str, Any], settings: tuple[str, ...]) -> Any:
    """The verb's options from its defaults, the flags given and ``--set KEY=VALUE``."""
    from auditor import queue

    cls = queue.options_class(verb)
    record = cls().to_dict()
    nested = "extract" in record and verb != "extract"
    for flag, name in _EXTRACT_FLAGS.items():
        value = flags.get(flag)
        if value is None or value == () or value is False:
            continue
        if verb == "report":
            if name in record:
                record[name] = value
            continue
        _set(record, f"extract.{name}" if nested else name, value)
    if flags.get("heads") and "heads" in record:
        from auditor.jobs.heads import head_for_worker

        record["heads"] = [head_for_worker(h) for h in flags["heads"]]
    for item in settings:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"expected KEY=VALUE, got {item!r}", param_hint="--set")
        _set(record, key, _parse_value(value))
    return cls.from_dict(record)


def _summary(status: dict[str, Any]) -> str:
    lines = [f"job {status['id']}  {status['verb']}  {status['state']}"]
    shards, docs = status["shards"], status["documents"]
    if shards["total"] is not None or status["world_size"]:
        part = f"shards {shards['done']}/{shards['total'] or '?'} done"
        if shards["running"]:
            part += f" ({shards['running']} running)"
        part += f"   documents {docs['done']}/{docs['total'] or '?'}"
        if status["tokens_per_s"]:
            part += f"   {status['tokens_per_s']:.1f} tokens/s"
        if status["eta_s"] is not None:
            part += f"   ETA {status['eta_s']:.0f} s"
        lines.append(part)
    for failed in status["failed"]:
        error = error_from_dict(failed["error"]) if failed["error"] else "unknown error"
        lines.append(f"failed {failed['unit']} after {failed['attempts']} attempt(s): {error}")
    store = status["outputs"]["store"]
    lines.append(f"outputs: {status['out']}" + (f" (store: {store})" if store else ""))
    return "\n".join(lines)


def _print(status: dict[str, Any], as_json: bool) -> None:
    click.echo(json.dumps(status, indent=2) if as_json else _summary(status))


def _ended(status: dict[str, Any]) -> None:
    """A failed or cancelled job ends the command with its error's exit code."""
    if status["state"] == "failed" and status["error"]:
        raise error_from_dict(status["error"])
    if status["state"] == "cancelled":
        raise JobCancelled(f"job {status['id']} was cancelled; resume it with "
                           f"`auditor jobs resume {status['id']}`")


@jobs.command("submit")
@click.argument("verb", type=click.Choice(["extract", "classify", "audit", "report",
                                           "explain", "filter"]))
@click.argument("input_path", metavar="INPUT")
@click.option("--out", required=True, type=click.Path(path_type=Path),
              help="Output directory (every worker must reach it).")
@click.option("--model", default=None, help="Model directory (default: the embedded one).")
@click.option("--sae", "sae_paths", multiple=True, help="SAE (default: the shipped one).")
@click.option("--head", "heads", multiple=True, help="Head name or directory; repeat.")
@click.option("--shard-size", type=int, default=None, help="Documents per store shard.")
@click.option("--max-length", type=int, default=None, help="Window length in tokens.")
@click.option("--pool", "poolings", multiple=True, help="Pooling over tokens; repeat.")
@click.option("--text-column", default=None)
@click.option("--id-column", default=None)
@click.option("--keep", "passthrough", multiple=True, help="Input column to copy.")
@click.option("--skip-bad-rows", is_flag=True, help="Skip unusable rows instead of failing.")
@click.option("--pipeline", "pipeline_file", type=click.Path(path_type=Path), default=None,
              help="filter: the pipeline file of steps (its content is queued).")
@click.option("--set", "settings", multiple=True, metavar="KEY=VALUE",
              help="Any option of the verb (dotted for nested: extract.max_windows=2; "
                   "values are JSON, else text).")
@click.option("--wait", "wait_", is_flag=True, help="Wait until the job ends.")
@click.option("--timeout", type=float, default=None, help="With --wait: give up after S s.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def jobs_submit(verb: str, input_path: str, out: Path, settings: tuple[str, ...],
                pipeline_file: Path | None, wait_: bool, timeout: float | None,
                as_json: bool, **flags: Any) -> None:
    """Queue VERB on INPUT (a dataset; for classify and explain also a literal text; a
    store for report) and print the job id. A filter takes --pipeline FILE and/or
    --set keep="EXPR"."""
    from auditor import queue

    if pipeline_file is not None:
        if verb != "filter":
            raise click.BadParameter("only a filter job takes a pipeline",
                                     param_hint="--pipeline")
        from auditor.filter import load_pipeline_file

        steps = json.dumps(load_pipeline_file(pipeline_file))
        settings = (f"steps={steps}", *settings)
    options = _options(verb, flags, settings)
    source = input_path
    if verb in ("classify", "explain"):
        from auditor.jobs import text_or_dataset

        source, _ = text_or_dataset(input_path, out=out)
    job_id = queue.submit(verb, source, out=out, options=options)
    if not wait_:
        click.echo(json.dumps({"id": job_id}) if as_json else job_id)
        return
    status = queue.wait(job_id, timeout=timeout)
    _print(status, as_json)
    _ended(status)


@jobs.command("status")
@click.argument("job")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def jobs_status(job: str, as_json: bool) -> None:
    """Where JOB (an id, or its out directory) is: shards done/total, documents, tokens/s,
    ETA, failed shards with their errors, outputs."""
    from auditor import queue

    _print(queue.status(job), as_json)


@jobs.command("wait")
@click.argument("job")
@click.option("--timeout", type=float, default=None, help="Give up after S seconds.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def jobs_wait(job: str, timeout: float | None, as_json: bool) -> None:
    """Wait until JOB is done (exit 0), failed (its error's exit code) or cancelled (130)."""
    from auditor import queue

    status = queue.wait(job, timeout=timeout)
    _print(status, as_json)
    _ended(status)


@jobs.command("cancel")
@click.argument("job")
def jobs_cancel(job: str) -> None:
    """Stop JOB: workers stop at their next batch; finished shards stay for a resume."""
    from auditor import queue

    status = queue.cancel(job)
    click.echo(f"job {status['id']} {status['state']}")


@jobs.command("resume")
@click.argument("job")
def jobs_resume(job: str) -> None:
    """Send JOB's unfinished shards and stages again (done shards are skipped)."""
    from auditor import queue

    status = queue.resume(job)
    click.echo(f"job {status['id']} {status['state']} (generation {status['generation']})")


@jobs.command("list")
@click.option("--state", default=None,
              type=click.Choice(["queued", "running", "done", "failed", "cancelled"]))
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def jobs_list(state: str | None, as_json: bool) -> None:
    """The queue's jobs, newest first."""
    from auditor import queue

    found = queue.list_jobs(state=state)
    if as_json:
        click.echo(json.dumps(found, indent=2))
        return
    for job in found:
        click.echo(f"{job['id']}  {job['verb']:<8} {job['state']:<9} {job['out']}")
