"""``auditor models``: the embedded default model and the shipped artifacts."""

from __future__ import annotations

import json

import click

__all__ = ["models"]

# ----------------------------------------------------------------------------- models


@click.group()
def models() -> None:
    """The embedded default model and the shipped artifacts."""


@models.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print the records as JSON.")
def models_list(as_json: bool) -> None:
    """Show what is installed, with sizes and hashes."""
    from auditor.defaults import list_models

    records = list_models()
    if as_json:
        click.echo(json.dumps(records, indent=2, default=str))
        return
    for r in records:
        size = f"{r['size'] / 1e6:,.1f} MB" if r.get("size") else "-"
        sha = r.get("sha256") or r.get("source_sha256") or ""
        detail = r.get("status") or r.get("error") or (
            f"{r.get('format')}, d_sae {r.get('d_sae')}, layer {r.get('layer')}"
            if r["kind"] == "sae" else "")
        click.echo(f"{r['kind']:<10} {r.get('name', ''):<32} {size:>11}  {sha[:16]:<16}  "
                   f"{detail}")
        click.echo(f"{'':<10} {r['path']}")
