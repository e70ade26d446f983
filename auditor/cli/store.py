"""``auditor store``: inspect feature stores."""

from __future__ import annotations

import json
from pathlib import Path

import click

__all__ = ["store"]

# ----------------------------------------------------------------------------- store


@click.group()
def store() -> None:
    """Inspect feature stores."""


@store.command("info")
@click.argument("path", type=click.Path(path_type=Path))
def store_info(path: Path) -> None:
    """Print a store's provenance, row count and columns as JSON."""
    from auditor.store import read_metadata, scan_features

    lf = scan_features(path)
    n_rows = int(lf.select("doc_id").collect().height)
    info = {"path": str(path), "documents": n_rows,
            "columns": list(lf.collect_schema().names()), "provenance": read_metadata(path)}
    click.echo(json.dumps(info, indent=2, default=str))

