"""``auditor extract``: pooled SAE features of a dataset into a feature store."""

from __future__ import annotations

import json
from pathlib import Path

import click

from auditor.cli._progress import progress_bars
from auditor.errors import format_error

__all__ = ["extract"]

#: command-line parameter -> the extraction setting it states
_SETTINGS = {"poolings": "poolings", "max_length": "max_length", "max_windows": "max_windows",
             "shard_size": "shard_size", "keep_outliers": "exclude_outliers",
             "outlier_factor": "outlier_factor", "save_tokens": "save_tokens",
             "raw_mean": "raw_mean"}


def _given_settings() -> set[str]:
    """The extraction settings stated on the command line (not left to their default)."""
    from click.core import ParameterSource

    ctx = click.get_current_context()
    return {setting for param, setting in _SETTINGS.items()
            if ctx.get_parameter_source(param) is ParameterSource.COMMANDLINE}

@click.command()
@click.argument("input_path", metavar="INPUT", type=click.Path(path_type=Path))
@click.option("--out", "out", required=True, type=click.Path(path_type=Path),
              help="Feature store directory to write (resumed if it exists).")
@click.option("--model", "model", default=None,
              help="Local Hugging Face model directory (default: the embedded Gemma 3 270M).")
@click.option("--sae", "sae_paths", multiple=True,
              help="SAE file or directory (any supported format); repeat for several, "
                   "optionally named as NAME=PATH (default: the shipped SAE).")
@click.option("--layer", type=int, default=None,
              help="Decoder layer the SAE reads, when its files do not say.")
@click.option("--sae-format", default=None, help="Force an SAE format instead of detecting it.")
@click.option("--k", "k", type=int, default=None, help="TopK k, when the SAE files do not say.")
@click.option("--pool", "poolings", multiple=True, default=("max",), show_default=True,
              type=click.Choice(["max", "mean", "sum", "count", "last"]),
              help="Pooling over tokens; repeat for several (default model and SAE: the "
                   "shipped heads' max and mean).")
@click.option("--text-column", default="text", show_default=True)
@click.option("--id-column", default=None,
              help="Column with document ids (default: 'id' when the input has it, else the "
                   "row number; '#row': the row number).")
@click.option("--keep", "passthrough", multiple=True, help="Input column to copy into the store.")
@click.option("--max-length", type=int, default=512, show_default=True,
              help="Window length in tokens; longer documents are split and pooled across "
                   "(default model and SAE: the shipped heads' 128).")
@click.option("--max-windows", type=int, default=None,
              help="Keep only each document's first N windows (default: all; default "
                   "model and SAE: the shipped heads' 2).")
@click.option("--max-chars", type=int, default=1_000_000, show_default=True,
              help="Reject (or skip) texts longer than this many characters.")
@click.option("--token-budget", type=int, default=8192, show_default=True,
              help="Padded tokens per batch.")
@click.option("--batch-size", type=int, default=64, show_default=True,
              help="Maximum windows per batch.")
@click.option("--shard-size", type=int, default=1000, show_default=True,
              help="Documents per Parquet shard.")
@click.option("--save-tokens", is_flag=True, help="Also write per-token sparse codes.")
@click.option("--raw-mean", is_flag=True,
              help="Also store mean raw activations per document (raw-activation baseline).")
@click.option("--keep-outliers", is_flag=True,
              help="Pool massive-activation tokens too (excluded by default).")
@click.option("--outlier-factor", type=float, default=5.0, show_default=True,
              help="Outlier = norm above this × median token norm.")
@click.option("--skip-bad-rows", is_flag=True,
              help="Skip unusable rows (reported at the end) instead of stopping.")
@click.option("--overwrite", is_flag=True, help="Replace a store made with other settings.")
@click.option("--device", default=None, help="cpu, cuda, cuda:1 … (default: cuda if available).")
@click.option("--dtype", default=None, help="float32, bfloat16, float16 (default by device).")
@click.option("--rank", type=int, default=0, show_default=True,
              help="With --world-size: fill only the shards i with i %% WORLD_SIZE == RANK "
                   "(several processes fill one store).")
@click.option("--world-size", type=int, default=1, show_default=True,
              help="Number of processes filling the store together.")
@click.option("--progress/--no-progress", default=None,
              help="Progress bar (default: when stderr is a terminal).")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
def extract(
    input_path: Path,
    out: Path,
    model: str | None,
    sae_paths: tuple[str, ...],
    layer: int | None,
    sae_format: str | None,
    k: int | None,
    poolings: tuple[str, ...],
    text_column: str,
    id_column: str | None,
    passthrough: tuple[str, ...],
    max_length: int,
    max_windows: int | None,
    max_chars: int,
    token_budget: int,
    batch_size: int,
    shard_size: int,
    save_tokens: bool,
    raw_mean: bool,
    keep_outliers: bool,
    outlier_factor: float,
    skip_bad_rows: bool,
    overwrite: bool,
    device: str | None,
    dtype: str | None,
    rank: int,
    world_size: int,
    progress: bool | None,
    as_json: bool,
) -> None:
    """Extract pooled sparse SAE features of INPUT (JSONL, Parquet, CSV or a .txt dir).

    With the default model and SAE, the settings not given on the command line are the
    shipped heads' (so the store serves them); the output says which heads it serves."""
    from auditor.jobs import extract as jobs
    from auditor.jobs.heads import heads_serving

    options = jobs.ExtractOptions(
        model=model, saes=sae_paths, layer=layer, sae_format=sae_format, k=k, device=device,
        dtype=dtype, poolings=poolings, max_length=max_length, max_windows=max_windows,
        shard_size=shard_size, exclude_outliers=not keep_outliers,
        outlier_factor=outlier_factor, save_tokens=save_tokens, raw_mean=raw_mean,
        token_budget=token_budget, max_batch_size=batch_size, text_column=text_column,
        id_column=id_column, passthrough=passthrough, max_chars=max_chars,
        skip_bad_rows=skip_bad_rows, overwrite=overwrite, rank=rank, world_size=world_size)
    options = jobs.with_heads_defaults(options, given=_given_settings())
    result = jobs.run_extract(str(input_path), out=str(out), options=options,
                              progress=progress_bars(progress))
    summary = result.summary
    if as_json:
        click.echo(json.dumps(summary, indent=2))
        return
    click.echo(f"wrote {out}")
    if result.ids is not None:
        click.echo(f"  ids         {result.ids}")
    click.echo(f"  documents   {summary['docs']:,} new, {summary['docs_skipped_done']:,} "
               f"already done ({summary['shards_written']} shards written, "
               f"{summary['shards_skipped']} skipped)")
    click.echo(f"  tokens      {summary['tokens']:,} in {summary['windows']:,} windows, "
               f"{summary['seconds']:.1f} s, {summary['tokens_per_s']:,.0f} tokens/s")
    if summary["truncated_docs"]:
        click.echo(f"  truncated   {summary['truncated_docs']:,} documents cut to their first "
                   f"{options.max_windows} window(s)")
    for key, mean in summary["mean_active"].items():
        click.echo(f"  {key:<11} {mean:,.1f} active features per document, "
                   f"{summary['excluded_tokens'].get(key, 0):,} outlier tokens excluded")
    click.echo(f"  size        {summary['bytes_written'] / 1e6:,.2f} MB")
    if rank == 0 and world_size == 1:
        serving = heads_serving(out)
        served = [h for h, why in serving.items() if why is None]
        click.echo(f"  serves      heads {', '.join(served) or '(none of the installed)'}")
        for name, why in serving.items():
            if why is not None:
                click.echo(f"  not {name:<7} {why}")
    for err in result.skipped:
        click.echo(f"  skipped: {format_error(err)}", err=True)
