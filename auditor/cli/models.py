"""``auditor models``: the embedded default model and the shipped artifacts."""

from __future__ import annotations

import json

import click

from auditor.cli._progress import progress_bars

__all__ = ["models"]

@click.group()
def models() -> None:
    """Default model and shipped SAEs: list, warmup (convert once)."""


@models.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print the records as JSON.")
def models_list(as_json: bool) -> None:
    """Show what is installed, with sizes and hashes."""
    from auditor.jobs import inspect as jobs

    records = jobs.models_list()
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


@models.command("warmup")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def models_warmup(as_json: bool) -> None:
    """Convert the embedded default model once (so no later job pays for it)."""
    from auditor.jobs import warmup as jobs

    result = jobs.run_warmup(options=jobs.WarmupOptions(), progress=progress_bars(None))
    if as_json:
        click.echo(json.dumps(result.to_dict(), indent=2))
        return
    click.echo(f"default model ready: {result.model_dir}")
