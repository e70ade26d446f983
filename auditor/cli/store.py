"""``auditor store``: inspect feature stores."""

from __future__ import annotations

import json
from pathlib import Path

import click

from auditor.errors import EXIT_CODES, StoreError

__all__ = ["store"]

@click.group()
def store() -> None:
    """Feature stores: info (provenance, columns), verify (checksums)."""


@store.command("info")
@click.argument("path", type=click.Path(path_type=Path))
def store_info(path: Path) -> None:
    """Print a store's provenance, row count and columns as JSON."""
    from auditor.jobs import inspect as jobs

    click.echo(json.dumps(jobs.store_info(str(path)), indent=2))


@store.command("verify")
@click.argument("path", type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def store_verify(path: Path, as_json: bool) -> None:
    """Check every shard's bytes against its checksum; exit 6 when any is corrupt or missing."""
    from auditor.jobs import inspect as jobs

    report = jobs.store_verify(str(path))
    if as_json:
        click.echo(json.dumps(report, indent=2))
    else:
        state = "ok" if report["ok"] else f"{len(report['problems'])} bad"
        click.echo(f"{report['path']}: {report['shards']:,} shards, "
                   f"{report['documents']:,} documents, {state}")
        for problem in report["problems"]:
            click.echo(f"  {problem['kind']} shard {problem['shard']} ({problem['file']}): "
                       f"{problem['error']}", err=True)
    if not report["ok"]:
        raise click.exceptions.Exit(EXIT_CODES[StoreError])
