"""The ``auditor report`` command: corpus reports in HTML, JSON and Markdown.

Register it on the main group with ``cli.add_command(report)``. Errors of the
:mod:`auditor.errors` tree propagate to the caller (``auditor.cli.main`` prints them as one
line and exits with the branch's code); bad option values are click usage errors.
"""

from __future__ import annotations

import json
from pathlib import Path

import click

__all__ = ["report"]


def _parse_formats(value: str) -> list[str]:
    from auditor.report import FORMATS

    formats = [f.strip().lower() for f in value.split(",") if f.strip()]
    unknown = [f for f in formats if f not in FORMATS]
    if unknown or not formats:
        raise click.BadParameter(
            f"unknown format(s) {', '.join(unknown) or '(none)'}; choose from "
            f"{', '.join(FORMATS)} (comma-separated)", param_hint="--format")
    return formats


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
              help="Feature labels JSON ({\"12\": \"label\"} or records with examples).")
@click.option("--format", "formats", default="html,json,md", show_default=True,
              help="Comma-separated formats: html, json, md.")
@click.option("--title", default=None, help="Report title.")
@click.option("--sae", default=None, help="SAE key in the store (default: the only one).")
@click.option("--pool", "pooling", default=None,
              help="Pooling used for feature statistics (default: max when stored).")
@click.option("--text-column", default="text", show_default=True)
@click.option("--id-column", default=None,
              help="Id column of --texts (use the one given to extract; default: row number).")
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
    as_json: bool,
) -> None:
    """Write a corpus report of the feature store STORE (HTML, JSON, Markdown).

    Corpus size and token counts, label and probability distributions per prediction head,
    top features per label, flagged documents with explanations, empty / overlong / near-
    duplicate counts, and drift against --previous, with the store's provenance.
    """
    from auditor.report import build_report, load_feature_labels, write_report

    chosen = _parse_formats(formats)
    flag_rules = _parse_flags(flags)
    labels, examples = (load_feature_labels(labels_path) if labels_path is not None
                        else (None, None))
    data = build_report(
        store, predictions=predictions, texts=texts, previous=previous,
        feature_labels=labels, feature_examples=examples, sae=sae, pooling=pooling,
        title=title, text_column=text_column, id_column=id_column, max_chars=max_chars,
        flags=flag_rules, max_flagged=max_flagged, top_features=top_features,
        near_duplicates=near_duplicates, duplicate_threshold=dup_threshold,
    )
    written = write_report(data, out, formats=chosen)
    if as_json:
        click.echo(json.dumps({k: str(v) for k, v in written.items()}, indent=2))
        return
    for fmt in chosen:
        click.echo(f"wrote {written[fmt]}")
    corpus = data["corpus"]
    line = f"  {corpus['documents']:,} documents, {corpus['tokens']['total']:,} tokens"
    if data.get("flagged") is not None:
        line += f", {data['flagged']['total']:,} flagged"
    if data.get("near_duplicates") is not None:
        line += f", {data['near_duplicates']['near_duplicates']:,} near duplicates"
    drift = data.get("drift")
    if drift and drift.get("features") and drift["features"].get("value") is not None:
        line += f", feature JSD {drift['features']['value']:.4f} bits"
    click.echo(line)
