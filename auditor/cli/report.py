"""The ``auditor report`` command: corpus reports in HTML, JSON and Markdown.

A thin face of :func:`auditor.jobs.report.run_report`: it parses the options, builds
:class:`~auditor.jobs.report.ReportOptions`, calls the job and prints its result. Register
it on the main group with ``cli.add_command(report)``. Errors of the :mod:`auditor.errors`
tree propagate to the caller (``auditor.cli.main`` prints them as one line and exits with the
branch's code); bad option values are click usage errors.
"""

from __future__ import annotations

import json
from pathlib import Path

import click

from auditor.cli._progress import progress_bars

__all__ = ["report"]

#: Option field → the flag that sets it, for usage errors.
_FLAG_OF = {"formats": "--format", "flags": "--flag", "max_chars": "--max-chars",
            "max_flagged": "--max-flagged", "top_features": "--top-features",
            "dup_threshold": "--dup-threshold", "text_column": "--text-column",
            "id_column": "--id-column", "labels": "--labels", "predictions": "--predictions",
            "texts": "--texts", "previous": "--previous", "sae": "--sae", "pooling": "--pool"}


def _parse_formats(value: str) -> tuple[str, ...]:
    return tuple(f.strip().lower() for f in value.split(",") if f.strip())


def _parse_flags(values: tuple[str, ...]) -> dict[str, list[str]] | None:
    if not values:
        return None
    flags: dict[str, list[str]] = {}
    for spec in values:
        head, sep, label = spec.partition("=")
        if not sep or not head.strip() or not label.strip():
            raise click.BadParameter(f"expected HEAD=LABEL, got {spec!r}", param_hint="--flag")
        flags.setdefault(head.strip(), []).append(label.strip())
    return flags


def _str(path: Path | None) -> str | None:
    return None if path is None else str(path)


@click.command("report")
@click.argument("store", metavar="STORE", type=click.Path(path_type=Path))
@click.option("--out", "out", required=True, type=click.Path(path_type=Path),
              help="Directory to write report.html / report.json / report.md into.")
@click.option("--predictions", type=click.Path(path_type=Path), default=None,
              help="Output of 'auditor classify' (Parquet or JSONL, one row per document).")
@click.option("--texts", type=click.Path(path_type=Path), default=None,
              help="The input texts (for empty/overlong counts, near duplicates, snippets).")
@click.option("--previous", type=click.Path(path_type=Path), default=None,
              help="A previous report.json of the same pipeline, for drift.")
@click.option("--labels", "labels_path", type=click.Path(path_type=Path), default=None,
              help="Feature labels: a feature dictionary directory (default: the store SAE's, "
                   "found by its sha256), or a JSON file ({\"12\": \"label\"} or records "
                   "with examples).")
@click.option("--format", "formats", default="html,json,md", show_default=True,
              help="Comma-separated formats: html, json, md.")
@click.option("--title", default=None, help="Report title.")
@click.option("--sae", default=None, help="SAE key in the store (default: the only one).")
@click.option("--pool", "pooling", default=None,
              help="Pooling used for feature statistics (default: max when stored).")
@click.option("--text-column", default="text", show_default=True)
@click.option("--id-column", default=None,
              help="Id column of --texts (default: 'id' when they have it, else the row "
                   "number, as extract does; '#row': the row number).")
@click.option("--max-chars", type=click.IntRange(min=1), default=1_000_000, show_default=True,
              help="Texts longer than this count as overlong.")
@click.option("--flag", "flags", multiple=True, metavar="HEAD=LABEL",
              help="Flag documents predicted LABEL by HEAD; repeat (default: safety=unsafe/"
                   "insult/toxic and quality=spam, those present).")
@click.option("--max-flagged", type=click.IntRange(min=0), default=50, show_default=True,
              help="Flagged documents listed (all are counted).")
@click.option("--top-features", type=click.IntRange(min=0), default=10, show_default=True,
              help="Features listed per head and label.")
@click.option("--dup-threshold", type=click.FloatRange(0.0, 1.0, min_open=True), default=0.8,
              show_default=True, help="Estimated Jaccard similarity of near duplicates.")
@click.option("--near-duplicates/--no-near-duplicates", default=True, show_default=True,
              help="Look for near duplicates among --texts.")
@click.option("--partial", is_flag=True,
              help="Report on what an unfinished store holds (refused otherwise).")
@click.option("--overwrite", is_flag=True,
              help="Replace a report in --out made with other options or inputs.")
@click.option("--progress/--no-progress", default=None,
              help="Progress bars on stderr (default: when stderr is a terminal).")
@click.option("--json", "as_json", is_flag=True, help="Print the written paths as JSON.")
def report(
    store: Path,
    out: Path,
    predictions: Path | None,
    texts: Path | None,
    previous: Path | None,
    labels_path: Path | None,
    formats: str,
    title: str | None,
    sae: str | None,
    pooling: str | None,
    text_column: str,
    id_column: str | None,
    max_chars: int,
    flags: tuple[str, ...],
    max_flagged: int,
    top_features: int,
    dup_threshold: float,
    near_duplicates: bool,
    partial: bool,
    overwrite: bool,
    progress: bool | None,
    as_json: bool,
) -> None:
    """Write a corpus report of the feature store STORE (HTML, JSON, Markdown).

    Corpus size and token counts, label and probability distributions per prediction head,
    top features per label, flagged documents with explanations, empty / overlong / near-
    duplicate counts, and drift against --previous, with the store's provenance.
    """
    from auditor.errors import ConfigError
    from auditor.jobs import report as jobs

    flag_rules = _parse_flags(flags)
    try:
        options = jobs.ReportOptions(
            predictions=_str(predictions), texts=_str(texts), previous=_str(previous),
            labels=_str(labels_path), formats=_parse_formats(formats), title=title, sae=sae,
            pooling=pooling, text_column=text_column, id_column=id_column,
            max_chars=max_chars, flags=flag_rules, max_flagged=max_flagged,
            top_features=top_features, dup_threshold=dup_threshold,
            near_duplicates=near_duplicates, allow_partial=partial, overwrite=overwrite)
    except ConfigError as err:
        raise click.BadParameter(err.message, param_hint=_FLAG_OF.get(err.field or "")) from err
    result = jobs.run_report(str(store), out=str(out), options=options,
                             progress=progress_bars(progress))
    written = {k: out / v for k, v in result.written.items()}
    if as_json:
        click.echo(json.dumps({k: str(v) for k, v in written.items()}, indent=2))
        return
    for fmt in options.formats:
        click.echo(f"wrote {written[fmt]}")
    line = f"  {result.documents:,} documents, {result.tokens:,} tokens"
    if result.flagged is not None:
        line += f", {result.flagged:,} flagged"
    if result.near_duplicates is not None:
        line += f", {result.near_duplicates:,} near duplicates"
    if result.feature_drift is not None:
        line += f", feature JSD {result.feature_drift:.4f} bits"
    click.echo(line)
    if result.dictionary and result.dictionary.get("note"):
        click.echo(f"note: {result.dictionary['note']}")
    elif result.dictionary:
        click.echo(f"  feature labels from {result.dictionary['path']} "
                   f"({result.dictionary['origin']})")
