"""``auditor heads``: installed heads and their cards."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from auditor.errors import AuditorError

__all__ = ["heads"]

# ----------------------------------------------------------------------------- heads


@click.group()
def heads() -> None:
    """Installed heads (default: models/heads)."""


@heads.command("list")
@click.option("--dir", "directory", type=click.Path(path_type=Path), default=None)
@click.option("--json", "as_json", is_flag=True)
def heads_list(directory: Path | None, as_json: bool) -> None:
    """List heads with their classes, representation and test macro-F1."""
    from auditor.heads import list_heads, load_head

    rows = []
    for path in list_heads(directory):
        head = load_head(path)
        test = (head.card.get("test_head") or {})
        rows.append({"name": head.name, "task": head.config.task,
                     "classes": head.config.classes,
                     "representation": head.card.get("representation", {}).get(
                         "candidate", head.config.representation),
                     "test_macro_f1": test.get("macro_f1_at_threshold", test.get("macro_f1")),
                     "path": str(path), "description": head.config.description})
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
    from auditor.features import dictionary_annotations
    from auditor.heads import load_heads
    from auditor.heads.card import render_card

    head = load_heads([head_ref])[0]
    click.echo(render_card(head.config.to_dict(), head.card))
    if n_features <= 0:
        return
    saes: dict[str, Any] = (head.card.get("provenance") or {}).get("saes") or {}
    path = next(iter(saes.values())).get("path") if len(saes) == 1 else None
    labels, _ = dictionary_annotations(path)
    click.echo("## Features that separate the classes (by the head's weights)\n")
    try:
        weights = head.feature_weights(k=n_features)
    except AuditorError as e:
        click.echo(f"(no per-feature weights: {e.message}; 'auditor explain' shows each "
                   f"decision's contributions)")
        return
    for cls, feats in weights.items():
        click.echo(f"towards `{cls}`:")
        for f, w in feats:
            label = (labels or {}).get(f)
            click.echo(f"  f{f:<6} {w:+.3f}" + (f"  {label}" if label else ""))
