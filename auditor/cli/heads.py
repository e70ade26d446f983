"""``auditor heads``: installed heads and their cards.

The commands read through :func:`auditor.jobs.heads.run_heads_list` and
:func:`auditor.jobs.heads.run_heads_show` and print their results.
"""

from __future__ import annotations

import json
from pathlib import Path

import click

__all__ = ["heads"]


@click.group()
def heads() -> None:
    """Installed heads (default: models/heads)."""


@heads.command("list")
@click.option("--dir", "directory", type=click.Path(path_type=Path), default=None)
@click.option("--json", "as_json", is_flag=True)
def heads_list(directory: Path | None, as_json: bool) -> None:
    """List heads with their classes, representation and test macro-F1."""
    from auditor.jobs import heads as jobs

    rows = jobs.run_heads_list(None if directory is None else str(directory)).heads
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    if not rows:
        click.echo("no heads installed")
    for r in rows:
        f1 = "–" if r["test_macro_f1"] is None else f"{r['test_macro_f1']:.3f}"
        click.echo(f"{r['name']:<10} {r['task']:<10} {r['representation']:<15} "
                   f"test macro-F1 {f1:<6} {', '.join(r['classes'])}")
        click.echo(f"{'':<10} {r['description']}")


@heads.command("show")
@click.argument("head_ref", metavar="HEAD")
@click.option("--features", "n_features", type=int, default=10, show_default=True,
              help="Features with the largest weights listed per class (0: none).")
def heads_show(head_ref: str, n_features: int) -> None:
    """Print a head's card and the SAE features that separate its classes."""
    from auditor.jobs import heads as jobs

    result = jobs.run_heads_show(head_ref, options=jobs.HeadsShowOptions(features=n_features))
    click.echo(result.card)
    if n_features <= 0:
        return
    click.echo("## Features that separate the classes (by the head's weights)\n")
    if result.weights is None:
        click.echo(f"(no per-feature weights: {result.no_weights}; 'auditor explain' shows "
                   f"each decision's contributions)")
        return
    for cls, feats in result.weights.items():
        click.echo(f"towards `{cls}`:")
        for f in feats:
            label = f["label"]
            click.echo(f"  f{f['feature']:<6} {f['weight']:+.3f}" + (f"  {label}" if label else ""))
