"""``auditor heads``: the heads on the heads search path and their cards.

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
    """Heads found by name: list them, show a head's card.

    A head is named by its directory or by its name, looked up along the search path
    `auditor heads list` prints: the shipped heads (models/heads), the user's
    (~/.local/share/auditor/heads), each directory of $AUDITOR_HEADS_PATH, then the
    working directory's heads/ (where `probe train --head NAME` writes). The first head of
    a name wins. Commands given no --head apply the shipped heads."""


@heads.command("list")
@click.option("--dir", "directory", type=click.Path(path_type=Path), default=None,
              help="List the heads of this directory only, not the search path.")
@click.option("--json", "as_json", is_flag=True)
def heads_list(directory: Path | None, as_json: bool) -> None:
    """List heads with their classes, representation, test macro-F1 and where each was
    found (and which a head of the same name found first shadows)."""
    from auditor.jobs import heads as jobs

    result = jobs.run_heads_list(None if directory is None else str(directory))
    rows = result.heads
    if as_json:
        click.echo(json.dumps(rows, indent=2))  # each row names its path and origin
        return
    click.echo("search path (the first head of a name wins):")
    for i, d in enumerate(result.search_path, 1):
        missing = "" if d.get("exists", True) else ", not present"
        click.echo(f"  {i}. {d['path']} ({d['origin']}{missing})")
    click.echo("")
    if not rows:
        click.echo("no heads found")
    for r in rows:
        if r.get("error"):
            click.echo(f"{r['name']:<10} cannot be loaded: {r['error']}")
        else:
            f1 = "–" if r["test_macro_f1"] is None else f"{r['test_macro_f1']:.3f}"
            click.echo(f"{r['name']:<10} {r['task']:<10} {r['representation']:<15} "
                       f"test macro-F1 {f1:<6} {', '.join(r['classes'])}")
            click.echo(f"{'':<10} {r['description']}")
        click.echo(f"{'':<10} {r['path']} ({r['origin']})")
        if r.get("shadowed_by"):
            click.echo(f"{'':<10} shadowed by {r['shadowed_by']}: name this one by its "
                       f"directory")


@heads.command("show")
@click.argument("head_ref", metavar="HEAD")
@click.option("--features", "n_features", type=int, default=10, show_default=True,
              help="Features with the largest weights listed per class (0: none).")
@click.option("--labels", "labels_dir", type=click.Path(path_type=Path), default=None,
              help="Feature dictionary directory to label the features from (default: found "
                   "by the SAE's sha256).")
def heads_show(head_ref: str, n_features: int, labels_dir: Path | None) -> None:
    """Print a head's card and the SAE features that separate its classes, with their
    labels and an example context from the SAE's feature dictionary."""
    from auditor.jobs import heads as jobs

    result = jobs.run_heads_show(head_ref, options=jobs.HeadsShowOptions(
        features=n_features, labels=None if labels_dir is None else str(labels_dir)))
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
            if f.get("example"):
                click.echo(f"{'':<17}e.g. {f['example']}")
    note = (result.dictionary or {}).get("note")
    if note:
        click.echo(f"\nnote: {note}")
