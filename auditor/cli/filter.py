"""``auditor filter``: split a dataset into kept and dropped rows, with reasons."""

from __future__ import annotations

from pathlib import Path

import click

from auditor.cli._progress import progress_bars

__all__ = ["filter_"]


@click.command("filter")
@click.argument("input_path", metavar="INPUT", type=click.Path(path_type=Path))
@click.option("--out", required=True, type=click.Path(path_type=Path),
              help="Output directory: kept/, dropped/, filter.json, report.html/json/md.")
@click.option("--keep", "keep", default=None, metavar="EXPR",
              help="Keep rows where EXPR holds, e.g. \"safety.p.insult < 0.5 and "
                   "quality.label == 'ham'\" (run after --pipeline's steps).")
@click.option("--pipeline", "pipeline_file", type=click.Path(path_type=Path), default=None,
              help="YAML or JSON file of ordered steps (length, head, label, feature, keep, "
                   "dedup, custom).")
@click.option("--store", type=click.Path(path_type=Path), default=None,
              help="Reuse this feature store of INPUT instead of extracting.")
@click.option("--predictions", type=click.Path(path_type=Path), default=None,
              help="Reuse these predictions of INPUT (a classify or audit run's).")
@click.option("--head", "head_refs", multiple=True,
              help="Head to score with; repeat (default: the heads the steps read).")
@click.option("--explain", type=int, default=5, show_default=True,
              help="Top contributing features kept in each head's reasons.")
@click.option("--shard-rows", type=int, default=100_000, show_default=True,
              help="Input rows per output part (and per resume point).")
@click.option("--batch-rows", type=int, default=1000, show_default=True,
              help="Rows held in memory at once.")
@click.option("--reason-column", default="reason", show_default=True)
@click.option("--format", "formats", default="html,json,md", show_default=True,
              help="Report formats.")
@click.option("--model", default=None, help="Model directory (default: the embedded one).")
@click.option("--sae", "sae_paths", multiple=True, help="SAE (default: the shipped one).")
@click.option("--text-column", default="text", show_default=True)
@click.option("--id-column", default=None,
              help="Column with document ids (default: 'id' when the input has it, else the "
                   "row number; '#row': the row number).")
@click.option("--device", default=None)
@click.option("--overwrite", is_flag=True,
              help="Replace what OUT holds from a run with other options or input.")
@click.option("--progress/--no-progress", default=None)
def filter_(input_path: Path, out: Path, keep: str | None, pipeline_file: Path | None,
            store: Path | None, predictions: Path | None, head_refs: tuple[str, ...],
            explain: int, shard_rows: int, batch_rows: int, reason_column: str,
            formats: str, model: str | None, sae_paths: tuple[str, ...], text_column: str,
            id_column: str | None, device: str | None, overwrite: bool,
            progress: bool | None) -> None:
    """Filter INPUT (JSONL, CSV or Parquet) into OUT/kept and OUT/dropped, in its format,
    every column kept, each dropped row with its reason."""
    from auditor.filter import load_pipeline_file
    from auditor.jobs import ExtractOptions
    from auditor.jobs import filter as jobs

    if keep is None and pipeline_file is None:
        raise click.UsageError("give --keep EXPR or --pipeline FILE (or both)")
    options = jobs.FilterOptions(
        keep=keep,
        steps=tuple(load_pipeline_file(pipeline_file)) if pipeline_file is not None else (),
        heads=head_refs or None,
        store=str(store.resolve()) if store is not None else None,
        predictions=str(predictions.resolve()) if predictions is not None else None,
        explain=explain, shard_rows=shard_rows, batch_rows=batch_rows,
        reason_column=reason_column,
        formats=tuple(f.strip() for f in formats.split(",") if f.strip()),
        extract=ExtractOptions(model=model, saes=sae_paths, text_column=text_column,
                               id_column=id_column, device=device),
        overwrite=overwrite)
    result = jobs.run_filter(str(input_path), out=str(out), options=options,
                             progress=progress_bars(progress))
    share = result.kept_documents / result.documents if result.documents else 0.0
    click.echo(f"kept {result.kept_documents:,} of {result.documents:,} rows ({share:.1%}), "
               f"dropped {result.dropped_documents:,}")
    for step, n in result.dropped_by_step.items():
        click.echo(f"  {n:>8,}  {step}")
    click.echo(f"  kept         {out / 'kept'} ({len(result.kept)} part(s))")
    click.echo(f"  dropped      {out / 'dropped'}")
    click.echo(f"  summary      {out / result.summary}")
    for fmt, path in result.reports.items():
        click.echo(f"  {fmt:<12} {out / path}")
