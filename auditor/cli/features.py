"""``auditor features``: build, show, search and label the feature dictionary.

The group is registered in :mod:`auditor.cli` with ``cli.add_command(features)``. Each
command parses its options and calls a job of :mod:`auditor.jobs.dictionary`; errors from
:mod:`auditor.errors` propagate to the top-level CLI, which prints them on one line and
exits with the branch's code.
"""

from __future__ import annotations

import json
from pathlib import Path

import click

from auditor.cli._progress import progress_bars

__all__ = ["features"]


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def features() -> None:
    """Feature dictionary: build, show, search and label SAE features.

    What each SAE feature fires on (top contexts) and what it promotes (logit lens)."""


@features.command("build")
@click.option("--corpus", required=True, type=click.Path(path_type=Path),
              help="Corpus: JSONL, Parquet, CSV, .txt or a directory of .txt files.")
@click.option("--model", default=None,
              help="Local Hugging Face model directory (default: the embedded model).")
@click.option("--sae", default=None,
              help="SAE file or directory (default: the shipped SAE).")
@click.option("--out", type=click.Path(path_type=Path), default=None,
              help="Dictionary directory (default: 'dictionary/' beside the SAE weights).")
@click.option("--max-length", type=int, default=512, show_default=True,
              help="Window length in tokens.")
@click.option("--max-windows", type=int, default=None,
              help="Keep only each document's first N windows (default: all).")
@click.option("--top", "top", type=int, default=20, show_default=True,
              help="Top-activating contexts kept per feature.")
@click.option("--context", "context_tokens", type=int, default=8, show_default=True,
              help="Tokens of context either side of the firing token.")
@click.option("--logit-tokens", type=int, default=10, show_default=True,
              help="Promoted / suppressed logit-lens tokens kept per feature.")
@click.option("--chunk-docs", type=int, default=256, show_default=True,
              help="Documents extracted per chunk (bounds memory and temporary disk).")
@click.option("--text-column", default="text", show_default=True)
@click.option("--id-column", default=None,
              help="Column with document ids (default: 'id' when the corpus has it, else "
                   "the row number; '#row': the row number).")
@click.option("--layer", type=int, default=None,
              help="Layer the SAE reads, if its files do not say.")
@click.option("--k", "k", type=int, default=None, help="TopK k, when the SAE files do not say.")
@click.option("--sae-format", default=None, help="Force an SAE format instead of detecting it.")
@click.option("--keep-outliers", is_flag=True,
              help="Count massive-activation tokens too (excluded by default, as in pooling).")
@click.option("--rebuild", "--overwrite", "rebuild", is_flag=True,
              help="Replace an existing dictionary instead of merging into it (keeps "
                   "labels.tsv / labels.json).")
@click.option("--device", default=None, help="cpu, cuda, cuda:1 … (default: cuda if available).")
@click.option("--dtype", default=None, help="float32, bfloat16, float16 (default by device).")
@click.option("--progress/--no-progress", default=None,
              help="Progress bar (default: when stderr is a terminal).")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
def build(
    corpus: Path,
    model: str | None,
    sae: str | None,
    out: Path | None,
    max_length: int,
    max_windows: int | None,
    top: int,
    context_tokens: int,
    logit_tokens: int,
    chunk_docs: int,
    text_column: str,
    id_column: str | None,
    layer: int | None,
    k: int | None,
    sae_format: str | None,
    keep_outliers: bool,
    rebuild: bool,
    device: str | None,
    dtype: str | None,
    progress: bool | None,
    as_json: bool,
) -> None:
    """Build the feature dictionary over --corpus, merging into an existing one."""
    from auditor.jobs import dictionary as jobs

    options = jobs.DictionaryBuildOptions(
        model=model, sae=sae, layer=layer, k=k, sae_format=sae_format,
        text_column=text_column, id_column=id_column, max_length=max_length,
        max_windows=max_windows, top_contexts=top, context_tokens=context_tokens,
        logit_tokens=logit_tokens, exclude_outliers=not keep_outliers, dtype=dtype,
        merge=not rebuild, overwrite=rebuild, chunk_docs=chunk_docs, device=device)
    target = str(out) if out is not None else jobs.default_dictionary_out(model, sae)
    result = jobs.run_dictionary_build(str(corpus), out=target, options=options,
                                       progress=progress_bars(progress))
    if as_json:
        click.echo(json.dumps({"out": target, **result.to_dict()}, indent=2))
        return
    verb = "merged into" if result.merged else "built"
    click.echo(f"dictionary {verb} {target}")
    click.echo(f"  documents: {result.documents:,} (+{result.new_documents:,})")
    click.echo(f"  tokens:    {result.tokens:,} (+{result.new_tokens:,})")
    click.echo(f"  features:  {result.alive:,} of {result.features:,} fired")
    if result.resumed_chunks:
        click.echo(f"  resumed:   {result.resumed_chunks:,} of {result.chunks:,} chunks were "
                   "done")
    auroc = (result.label_quality or {}).get("auroc") or {}
    if auroc.get("n"):
        click.echo(f"  labels:    detection AUROC mean {auroc['mean']:.2f}, median "
                   f"{auroc['p50']:.2f}, {auroc['share_ge_0.7']:.0%} >= 0.7 "
                   f"({auroc['n']:,} features scored)")
    click.echo(f"  time:      {result.seconds:.1f} s")


@features.command("show")
@click.argument("feature", type=int)
@click.option("--dictionary", type=click.Path(path_type=Path), default=None,
              help="Dictionary directory (default: the default SAE's).")
@click.option("--labels", type=click.Path(path_type=Path), default=None,
              help="Label override file (default: the dictionary's labels.tsv/json).")
@click.option("--contexts", "n_contexts", type=int, default=10, show_default=True,
              help="Contexts shown.")
@click.option("--width", type=int, default=100, show_default=True,
              help="Shorten contexts to about this many characters.")
@click.option("--json", "as_json", is_flag=True, help="Print the feature as JSON.")
def show(feature: int, dictionary: Path | None, labels: Path | None, n_contexts: int,
         width: int, as_json: bool) -> None:
    """Show FEATURE: label, density, activations, logit-lens tokens and top contexts."""
    from auditor.jobs import dictionary as jobs

    result = jobs.run_feature_show(
        None if dictionary is None else str(dictionary),
        options=jobs.FeatureShowOptions(feature=feature,
                                        labels=None if labels is None else str(labels),
                                        contexts=n_contexts, width=width))
    if as_json:
        click.echo(json.dumps(result.report, indent=2, ensure_ascii=False))
    else:
        click.echo(result.text)


@features.command("search")
@click.argument("word")
@click.option("--dictionary", type=click.Path(path_type=Path), default=None,
              help="Dictionary directory (default: the default SAE's).")
@click.option("--labels", type=click.Path(path_type=Path), default=None,
              help="Label override file (default: the dictionary's labels.tsv/json).")
@click.option("--limit", type=int, default=20, show_default=True, help="Results shown.")
@click.option("--json", "as_json", is_flag=True, help="Print the results as JSON.")
def search(word: str, dictionary: Path | None, labels: Path | None, limit: int,
           as_json: bool) -> None:
    """Find features whose label, contexts or logit-lens tokens contain WORD.

    Columns: the feature's index, its match score, its density (share of tokens it fires
    on), its label, and where WORD matched."""
    from auditor.jobs import dictionary as jobs

    result = jobs.run_feature_search(
        None if dictionary is None else str(dictionary),
        options=jobs.FeatureSearchOptions(word=word,
                                          labels=None if labels is None else str(labels),
                                          limit=limit))
    if as_json:
        click.echo(json.dumps(result.hits, indent=2, ensure_ascii=False))
        return
    if not result.hits:
        click.echo(f"no feature matches {word!r}")
        return
    click.echo(f"{'feature':>7}  {'score':>6}  {'density':>8}  label   [matched in]")
    for row in result.hits:
        click.echo(f"{row['feature']:>7}  {row['score']:6.2f}  {row['density']:8.3%}  "
                   f"{row['label']}   [{', '.join(row['matched'])}]")


@features.command("label")
@click.argument("feature", type=int)
@click.argument("text", required=False)
@click.option("--dictionary", type=click.Path(path_type=Path), default=None,
              help="Dictionary directory (default: the default SAE's).")
@click.option("--remove", is_flag=True, help="Remove FEATURE's override.")
def label(feature: int, text: str | None, dictionary: Path | None, remove: bool) -> None:
    """Set FEATURE's label to TEXT (an override in the dictionary's labels.tsv)."""
    from auditor.jobs import dictionary as jobs

    result = jobs.run_feature_label(
        None if dictionary is None else str(dictionary),
        options=jobs.FeatureLabelOptions(feature=feature, label=text, remove=remove))
    click.echo(f"{'removed' if result.removed else 'set'} label of feature {result.feature} "
               f"in {result.path}")
