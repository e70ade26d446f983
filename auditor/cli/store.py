"""``auditor store``: inspect feature stores."""

from __future__ import annotations

import json
from pathlib import Path

import click

__all__ = ["store"]

@click.group()
def store() -> None:
    """Inspect feature stores."""


@store.command("info")
@click.argument("path", type=click.Path(path_type=Path))
def store_info(path: Path) -> None:
    """Print a store's provenance, row count and columns as JSON."""
    from auditor.jobs import inspect as jobs

    click.echo(json.dumps(jobs.store_info(str(path)), indent=2))

