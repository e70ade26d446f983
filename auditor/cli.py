"""The ``auditor`` command line.

Every command calls the same library functions the workers and the API call. Errors from
the :mod:`auditor.errors` tree are printed as one line naming the file/row/tensor and end
the process with that branch's exit code (see :data:`auditor.errors.EXIT_CODES`).
"""

from __future__ import annotations

import contextlib
import json
import sys
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Literal

import click

from auditor import __version__
from auditor.errors import AuditorError, exit_code_for

__all__ = ["cli", "main"]


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; return (and, as a script, exit with) the process exit code."""
    try:
        cli.main(args=list(argv) if argv is not None else None, prog_name="auditor",
                 standalone_mode=False)
    except AuditorError as err:
        click.echo(f"error: {err}", err=True)
        return exit_code_for(err)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        return 130
    except click.ClickException as err:
        err.show()
        return err.exit_code
    except click.exceptions.Exit as err:
        return err.exit_code
    return 0


def _run() -> None:  # console-script entry point
    sys.exit(main())


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="auditor")
def cli() -> None:
    """auditor: classify and audit datasets with sparse-autoencoder features."""


# ----------------------------------------------------------------------------- extract


@cli.command()
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
              help="Pooling over tokens; repeat for several.")
@click.option("--text-column", default="text", show_default=True)
@click.option("--id-column", default=None, help="Column with document ids (default: row number).")
@click.option("--keep", "passthrough", multiple=True, help="Input column to copy into the store.")
@click.option("--max-length", type=int, default=512, show_default=True,
              help="Window length in tokens; longer documents are split and pooled across.")
@click.option("--max-windows", type=int, default=None,
              help="Keep only each document's first N windows (default: all).")
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
    progress: bool | None,
    as_json: bool,
) -> None:
    """Extract pooled sparse SAE features of INPUT (JSONL, Parquet, CSV or a .txt dir)."""
    from auditor.extract import ExtractConfig
    from auditor.jobs import run_extract

    config = ExtractConfig(
        poolings=poolings, max_length=max_length, max_windows=max_windows,
        shard_size=shard_size, exclude_outliers=not keep_outliers, outlier_factor=outlier_factor,
        save_tokens=save_tokens, raw_mean=raw_mean, token_budget=token_budget,
        max_batch_size=batch_size,
    )
    summary, bad = run_extract(
        input_path, out=out, model=model, saes=sae_paths, layer=layer, sae_format=sae_format,
        k=k, config=config, text_column=text_column, id_column=id_column,
        passthrough=passthrough, max_chars=max_chars, skip_bad_rows=skip_bad_rows,
        overwrite=overwrite, device=device, dtype=dtype,
        progress=sys.stderr.isatty() if progress is None else progress,
    )
    if as_json:
        click.echo(json.dumps(summary.to_dict(), indent=2))
        return
    click.echo(f"wrote {out}")
    click.echo(f"  documents   {summary.docs:,} new, {summary.docs_skipped_done:,} already done"
               f" ({summary.shards_written} shards written, {summary.shards_skipped} skipped)")
    click.echo(f"  tokens      {summary.tokens:,} in {summary.windows:,} windows, "
               f"{summary.seconds:.1f} s, {summary.tokens_per_s:,.0f} tokens/s")
    if summary.truncated_docs:
        click.echo(f"  truncated   {summary.truncated_docs:,} documents cut to their first "
                   f"{max_windows} window(s)")
    for key, mean in summary.mean_active.items():
        click.echo(f"  {key:<11} {mean:,.1f} active features per document, "
                   f"{summary.excluded_tokens.get(key, 0):,} outlier tokens excluded")
    click.echo(f"  size        {summary.bytes_written / 1e6:,.2f} MB")
    for err in bad:
        click.echo(f"  skipped: {err}", err=True)


# ----------------------------------------------------------------------------- models


@cli.group()
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


# ----------------------------------------------------------------------------- sae


@cli.group()
def sae() -> None:
    """Inspect and convert sparse autoencoders."""


@sae.command("convert")
@click.argument("src", type=click.Path(path_type=Path))
@click.argument("dst", type=click.Path(path_type=Path))
@click.option("--format", "fmt", default=None, help="Source format (default: detect).")
@click.option("--k", type=int, default=None, help="TopK k when the source does not say.")
@click.option("--layer", type=int, default=None, help="Layer when the source does not say.")
def sae_convert(src: Path, dst: Path, fmt: str | None, k: int | None, layer: int | None) -> None:
    """Convert an SAE in any supported format into auditor's own format."""
    from auditor.sae import convert_sae, load_sae

    path = convert_sae(src, dst, format=fmt, k=k, layer=layer)
    loaded = load_sae(path)
    click.echo(f"wrote {path} ({loaded.cfg.activation}, d_in {loaded.cfg.d_in}, "
               f"d_sae {loaded.cfg.d_sae}, sha256 {loaded.sha256})")


@sae.command("info")
@click.argument("path", type=click.Path(path_type=Path))
@click.option("--format", "fmt", default=None)
@click.option("--k", type=int, default=None)
@click.option("--layer", type=int, default=None)
def sae_info(path: Path, fmt: str | None, k: int | None, layer: int | None) -> None:
    """Print an SAE's detected format, configuration and hash as JSON."""
    from auditor.sae import detect_format, load_sae

    loaded = load_sae(path, format=fmt, k=k, layer=layer)
    info: dict[str, Any] = {"path": str(path), "format": fmt or detect_format(path),
                            "sha256": loaded.sha256, "config": loaded.cfg.to_dict()}
    click.echo(json.dumps(info, indent=2))


@sae.command("collect")
@click.argument("corpus", type=click.Path(path_type=Path))
@click.option("--out", required=True, type=click.Path(path_type=Path),
              help="Cache directory (refused if it holds a finished cache; see --overwrite).")
@click.option("--layer", "layers", type=int, multiple=True, required=True,
              help="Decoder layer whose output is kept; repeat for several (one forward pass).")
@click.option("--model", default=None, help="Model directory (default: the embedded model).")
@click.option("--max-tokens", type=int, default=None,
              help="Stop after this many tokens (default: the whole corpus).")
@click.option("--max-length", type=int, default=512, show_default=True)
@click.option("--device", default=None, help="cpu, cuda, cuda:1 … (default: cuda if available).")
@click.option("--overwrite", is_flag=True, help="Replace a finished cache at --out.")
@click.option("--heldout-only", is_flag=True,
              help="Compute only the held-out documents (those a training run with "
                   "--heldout-fraction never reads): an evaluation cache.")
@click.option("--heldout-fraction", type=float, default=0.05, show_default=True,
              help="With --heldout-only: the training runs' held-out fraction.")
@click.option("--progress/--no-progress", default=None)
def sae_collect(corpus: Path, out: Path, layers: tuple[int, ...], model: str | None,
                max_tokens: int | None, max_length: int, device: str | None, overwrite: bool,
                heldout_only: bool, heldout_fraction: float, progress: bool | None) -> None:
    """Cache a corpus's activations (fp16) for training and evaluating SAEs."""
    from auditor.jobs.sae import run_sae_collect

    cache = run_sae_collect(corpus, out=out, layers=list(layers), model=model,
                            max_length=max_length, max_tokens=max_tokens, device=device,
                            overwrite=overwrite,
                            heldout_only=heldout_fraction if heldout_only else None,
                            progress=sys.stderr.isatty() if progress is None else progress)
    click.echo(json.dumps(cache.info(), indent=2, default=str))


@sae.command("train")
@click.option("--out", required=True, type=click.Path(path_type=Path),
              help="Run directory: the SAE, training.json, checkpoints (resumed if present).")
@click.option("--layer", type=int, required=True, help="Decoder layer whose output it reads.")
@click.option("--width", "d_sae", type=int, required=True, help="Number of latents.")
@click.option("--k", type=int, required=True,
              help="Active latents per token (BatchTopK: on average).")
@click.option("--cache", type=click.Path(path_type=Path), default=None,
              help="Activation cache to train on (see --corpus).")
@click.option("--corpus", type=click.Path(path_type=Path), default=None,
              help="Texts to collect activations from (cached in OUT/activations).")
@click.option("--model", default=None, help="Model directory (default: the embedded model).")
@click.option("--tokens", "n_tokens", type=int, default=10_000_000, show_default=True,
              help="Training tokens (epochs over the cache included).")
@click.option("--collect-tokens", type=int, default=None,
              help="Stop collecting from --corpus after this many tokens.")
@click.option("--max-length", type=int, default=512, show_default=True)
@click.option("--batch-size", type=int, default=4096, show_default=True,
              help="Tokens per step.")
@click.option("--lr", type=float, default=None, help="Learning rate (default: by width).")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--init", "init", type=click.Path(path_type=Path), default=None,
              help="Continue training from this SAE (same width and hook).")
@click.option("--warmup-steps", type=int, default=1000, show_default=True,
              help="Linear learning-rate warm-up (capped at a tenth of the steps).")
@click.option("--auxk-alpha", type=float, default=1 / 32, show_default=True,
              help="Weight of the AuxK loss that revives dead latents (0: off).")
@click.option("--checkpoint-every", type=int, default=1000, show_default=True,
              help="Steps between resumable checkpoints (0: none).")
@click.option("--decay-start", type=float, default=0.8, show_default=True,
              help="Share of the steps after which the learning rate decays to zero.")
@click.option("--resample-every", type=int, default=0, show_default=True,
              help="Steps between dead-latent resamples before the decay (0: AuxK alone).")
@click.option("--dead-tokens", type=int, default=None,
              help="A latent is dead after this many tokens without firing "
                   "(default: a twentieth of --tokens, at most 10M).")
@click.option("--encoder-dtype", type=click.Choice(["float32", "bfloat16"]),
              default="float32", show_default=True,
              help="Precision of the dense encoder product that picks the top k "
                   "(bfloat16: 1.6x faster steps measured on a 2-core AVX512-BF16 CPU, "
                   "bench/train_step.py; gradients stay float32; several times slower "
                   "where the CPU lacks native bfloat16, which training warns about).")
@click.option("--activation", type=click.Choice(["topk", "batchtopk"]), default="topk",
              show_default=True,
              help="topk: k latents per token; batchtopk: the batch's batch-size × k largest, "
                   "saved with a global threshold for inference.")
@click.option("--batchtopk-max-k", type=int, default=None,
              help="BatchTopK: most latents one token may use in training (default 4 × k).")
@click.option("--stream", is_flag=True,
              help="With --corpus: compute activations as training goes, a shuffled chunk "
                   "at a time, instead of collecting a cache on disk first.")
@click.option("--chunk-tokens", type=int, default=524_288, show_default=True,
              help="--stream: tokens computed, held in memory and shuffled together.")
@click.option("--resume/--restart", default=True, show_default=True)
@click.option("--device", default=None,
              help="cpu, cuda, cuda:1 … for collection and training (default: cuda if "
                   "available); a checkpoint resumes on any device.")
@click.option("--progress/--no-progress", default=None)
@click.option("--json", "as_json", is_flag=True)
def sae_train(out: Path, layer: int, d_sae: int, k: int, cache: Path | None,
              corpus: Path | None, model: str | None, n_tokens: int,
              collect_tokens: int | None, max_length: int, batch_size: int, lr: float | None,
              seed: int, init: Path | None, warmup_steps: int, auxk_alpha: float,
              checkpoint_every: int, decay_start: float, resample_every: int,
              dead_tokens: int | None, encoder_dtype: str, activation: str,
              batchtopk_max_k: int | None, stream: bool, chunk_tokens: int, resume: bool,
              device: str | None, progress: bool | None, as_json: bool) -> None:
    """Train a TopK or BatchTopK SAE (AuxK, unit-norm decoder, resumable checkpoints)."""
    from auditor.jobs.sae import run_sae_train

    result = run_sae_train(
        out=out, layer=layer, d_sae=d_sae, k=k, cache=cache, corpus=corpus, model=model,
        n_tokens=n_tokens, collect_tokens=collect_tokens, max_length=max_length,
        batch_size=batch_size, lr=lr, seed=seed, resume=resume, device=device,
        progress=sys.stderr.isatty() if progress is None else progress, init=init,
        warmup_steps=warmup_steps, auxk_alpha=auxk_alpha, checkpoint_every=checkpoint_every,
        decay_start=decay_start, resample_every=resample_every, dead_tokens=dead_tokens,
        encoder_dtype=encoder_dtype, activation=activation, batchtopk_max_k=batchtopk_max_k,
        stream=stream, chunk_tokens=chunk_tokens,
    )
    if as_json:
        click.echo(json.dumps({k_: v for k_, v in result.items() if k_ != "history"},
                              indent=2, default=str))
        return
    click.echo(f"wrote {out}: {result['tokens']:,} tokens in {result['steps']} steps, "
               f"FVU {result['fvu']:.4f}, dead {result['dead_frac']:.2%}")


@sae.command("eval")
@click.argument("path", type=click.Path(path_type=Path))
@click.option("--cache", type=click.Path(path_type=Path), required=True,
              help="Activation cache with the SAE's hook (its held-out split is scored).")
@click.option("--corpus", type=click.Path(path_type=Path), default=None,
              help="Texts for the next-token loss (ΔCE) comparison.")
@click.option("--model", default=None, help="Model for ΔCE (default: the embedded model).")
@click.option("--ce-docs", type=int, default=200, show_default=True)
@click.option("--max-length", type=int, default=512, show_default=True)
@click.option("--layer", type=int, default=None)
@click.option("--card/--no-card", default=True, show_default=True,
              help="Write evaluation.json and CARD.md into the SAE directory.")
@click.option("--groups-from", type=click.Path(path_type=Path), default=None,
              help="The corpus the cache was collected from: adds FVU per genre.")
@click.option("--group-column", default="source", show_default=True,
              help="Column of --groups-from naming each document's genre.")
@click.option("--whole-cache/--heldout-only", default=False, show_default=True,
              help="Also count dead latents over every cached token (training split too).")
@click.option("--split", type=click.Choice(["heldout", "all", "train"]), default="heldout",
              show_default=True,
              help="Cache split to score; 'all' for a cache of text the SAE never trained "
                   "on (refused when its training chain read that text).")
@click.option("--device", default=None,
              help="cpu, cuda, cuda:1 … for the ΔCE forward passes (default: cuda if available).")
def sae_eval(path: Path, cache: Path, corpus: Path | None, model: str | None, ce_docs: int,
             max_length: int, layer: int | None, card: bool, groups_from: Path | None,
             group_column: str, whole_cache: bool,
             split: Literal["heldout", "all", "train"], device: str | None) -> None:
    """FVU, L0, dead/dense latents, density and ΔCE of an SAE; written into its card."""
    from auditor.jobs.sae import run_sae_eval, write_card

    record = run_sae_eval(path, cache=cache, layer=layer, corpus=corpus, model=model,
                          ce_docs=ce_docs, max_length=max_length, write=card, split=split,
                          groups_from=groups_from, group_column=group_column,
                          whole_cache_density=whole_cache, device=device)
    if card and path.is_dir():
        write_card(path)
    click.echo(json.dumps(record, indent=2, default=str))


# ----------------------------------------------------------------------------- probe


def _labelled(path: Path, *, label_column: str, id_column: str | None, text_column: str,
              keep_empty: bool = False) -> tuple[dict[str, Any], dict[str, str]]:
    """``doc_id -> label`` and ``doc_id -> text`` from a dataset file with a label column.

    Documents whose label is missing are left out, and so are empty strings unless
    ``keep_empty`` (multilabel: an empty label set).
    """
    from auditor.io import read_documents

    labels: dict[str, Any] = {}
    texts: dict[str, str] = {}
    for doc in read_documents(path, text_column=text_column, id_column=id_column,
                              passthrough=[label_column]):
        value = doc.extra.get(label_column)
        if value is not None and (keep_empty or not (isinstance(value, str) and value == "")):
            labels[doc.doc_id] = doc.extra[label_column]
            texts[doc.doc_id] = doc.text
    return labels, texts


_LABEL_OPTIONS = [
    click.option("--features", "store_path", required=True, type=click.Path(path_type=Path),
                 help="Feature store of the labelled documents."),
    click.option("--labels", "labels_path", required=True, type=click.Path(path_type=Path),
                 help="Dataset with ids, texts and a label column (JSONL, Parquet, CSV)."),
    click.option("--label-column", default="label", show_default=True),
    click.option("--id-column", default="id", show_default=True),
    click.option("--text-column", default="text", show_default=True,
                 help="Text for the TF-IDF baseline."),
    click.option("--multilabel-sep", default=None,
                 help="Multilabel: each label value is a list of labels, or a string of "
                      "labels joined by this separator (e.g. '|'); an empty value is a "
                      "document without labels."),
]


def _label_options(f: Any) -> Any:
    for opt in reversed(_LABEL_OPTIONS):
        f = opt(f)
    return f


@cli.group()
def probe() -> None:
    """Probes on pooled SAE features, measured against plain baselines."""


@probe.command("compare")
@_label_options
@click.option("--sae", default=None, help="SAE key in the store (default: the only one).")
@click.option("--folds", type=int, default=5, show_default=True)
@click.option("--json", "as_json", is_flag=True)
def probe_compare(store_path: Path, labels_path: Path, label_column: str, id_column: str,
                  text_column: str, multilabel_sep: str | None, sae: str | None, folds: int,
                  as_json: bool) -> None:
    """Cross-validate every SAE-feature representation against raw-activation and TF-IDF
    baselines on the same folds."""
    from auditor.heads import cross_validate_candidates, load_split
    from auditor.heads.card import metrics_table

    labels, texts = _labelled(labels_path, label_column=label_column, id_column=id_column,
                              text_column=text_column, keep_empty=multilabel_sep is not None)
    split = load_split(store_path, labels, texts=texts, sae=sae, multilabel_sep=multilabel_sep)
    results = cross_validate_candidates(split, folds=folds)
    for r in results.values():
        r.pop("oof_proba")
    click.echo(json.dumps(results, indent=2, default=str) if as_json
               else metrics_table(results, **_table_metrics(split.multilabel)))


def _table_metrics(multilabel: bool) -> dict[str, Any]:
    """``metrics=`` of :func:`auditor.heads.card.metrics_table` for a head's task."""
    return {"metrics": ("micro_f1", "macro_f1", "auroc", "pr_auc", "subset_accuracy")} \
        if multilabel else {}


@probe.command("curve")
@_label_options
@click.option("--sizes", default="50,200,1000,all", show_default=True,
              help="Training-set sizes (comma-separated; 'all' = every training document).")
@click.option("--folds", type=int, default=5, show_default=True)
@click.option("--json", "as_json", is_flag=True)
def probe_curve(store_path: Path, labels_path: Path, label_column: str, id_column: str,
                text_column: str, multilabel_sep: str | None, sizes: str, folds: int,
                as_json: bool) -> None:
    """Learning curve: macro-F1 of every representation and TF-IDF by number of labels
    (stratified subsamples of each training fold, scored on the held-out fold)."""
    import functools

    import numpy as np

    from auditor.heads import DEFAULT_CANDIDATES, load_split
    from auditor.heads.build import _available, _make, _tfidf
    from auditor.probes import learning_curve

    if multilabel_sep is not None:
        raise click.UsageError("learning curves are for single-label data")
    labels, texts = _labelled(labels_path, label_column=label_column, id_column=id_column,
                              text_column=text_column)
    split = load_split(store_path, labels, texts=texts)
    wanted = [None if v.strip() == "all" else int(v) for v in sizes.split(",") if v.strip()]
    y = split.y.astype(str)
    models: list[tuple[str, Any, Any]] = [
        (c.name, functools.partial(_make, c, 0), split.X(c))
        for c in _available(split, list(DEFAULT_CANDIDATES))]
    if split.texts is not None:
        models.append(("tfidf", _tfidf, np.array(split.texts, dtype=object)))
    curves = {name: learning_curve(make, X, y, sizes=wanted, folds=folds)
              for name, make, X in models}
    if as_json:
        click.echo(json.dumps(curves, indent=2))
        return
    ns = [row["n_train"] for row in next(iter(curves.values()))]
    click.echo("| representation | " + " | ".join(f"{n:,} labels" for n in ns) + " |")
    click.echo("|---" * (len(ns) + 1) + "|")
    for name, rows in curves.items():
        click.echo(f"| {name} | " + " | ".join(
            f"{r['macro_f1']:.3f} ± {r['macro_f1_std']:.3f}" for r in rows) + " |")


@probe.command("train")
@_label_options
@click.option("--head", "name", required=True, help="Name of the head to train.")
@click.option("--out", type=click.Path(path_type=Path), default=None,
              help="Head directory to write (default: heads/NAME).")
@click.option("--representation", default="auto", show_default=True,
              help="auto (best cross-validated) or one of: sae-max-log1p, sae-max-binary, "
                   "sae-mean-log1p, raw.")
@click.option("--positive-class", default=None, help="Binary: the flagged class.")
@click.option("--target-precision", type=float, default=None,
              help="Binary: threshold for this precision (default: max F1).")
@click.option("--target-recall", type=float, default=None)
@click.option("--folds", type=int, default=5, show_default=True)
@click.option("--overwrite", is_flag=True)
def probe_train(store_path: Path, labels_path: Path, label_column: str, id_column: str,
                text_column: str, multilabel_sep: str | None, name: str, out: Path | None,
                representation: str, positive_class: str | None,
                target_precision: float | None, target_recall: float | None, folds: int,
                overwrite: bool) -> None:
    """Train a head: choose the representation by CV against TF-IDF, calibrate, save.

    With --multilabel-sep, a multilabel head: one probe per label, each label's threshold
    at its max out-of-fold F1, no calibration."""
    from auditor.heads import load_split, save_head, train_head
    from auditor.heads.card import metrics_table, render_card

    labels, texts = _labelled(labels_path, label_column=label_column, id_column=id_column,
                              text_column=text_column, keep_empty=multilabel_sep is not None)
    split = load_split(store_path, labels, texts=texts, multilabel_sep=multilabel_sep)
    head = train_head(name, split, candidate=representation, positive_class=positive_class,
                      target_precision=target_precision, target_recall=target_recall,
                      folds=folds)
    target = out if out is not None else Path("heads") / name
    save_head(head, target, card_markdown=render_card(head.config.to_dict(), head.card),
              overwrite=overwrite)
    click.echo(metrics_table(head.card["cross_validation"],
                             chosen=head.card["representation"]["candidate"],
                             **_table_metrics(split.multilabel)))
    if split.multilabel:
        click.echo("\nthresholds: " + ", ".join(
            f"{c} {t:.3f}" for c, t in head.card["threshold"]["values"].items()))
    click.echo(f"\nwrote head {name!r} to {target}")


@probe.command("eval")
@click.argument("head_ref", metavar="HEAD")
@_label_options
@click.option("--json", "as_json", is_flag=True)
def probe_eval(head_ref: str, store_path: Path, labels_path: Path, label_column: str,
               id_column: str, text_column: str, multilabel_sep: str | None,
               as_json: bool) -> None:
    """Metrics of a trained head (name or directory) on labelled features.

    Multilabel heads: label values are lists or strings split on --multilabel-sep (by
    default the separator the head was trained with, else '|')."""
    from auditor.heads import load_heads
    from auditor.probes import evaluate_probe

    head = load_heads([head_ref])[0]
    multilabel = head.config.multilabel
    if multilabel_sep is not None and not multilabel:
        raise click.UsageError(f"--multilabel-sep is for multilabel heads; {head.name!r} is "
                               f"{head.config.task}")
    labels, _ = _labelled(labels_path, label_column=label_column, id_column=id_column,
                          text_column=text_column, keep_empty=multilabel)
    inputs = head.read(store_path)
    rows = [i for i, d in enumerate(inputs.doc_ids) if d in labels]
    if not rows:
        raise click.UsageError("no document of the store has a label in --labels")
    proba = head.predict_proba(inputs)[rows]
    if multilabel:
        sep = multilabel_sep or (head.card.get("training") or {}).get("multilabel_sep") or "|"
        metrics = _multilabel_eval(head, [labels[inputs.doc_ids[i]] for i in rows], proba,
                                   sep)
    else:
        y = [str(labels[inputs.doc_ids[i]]) for i in rows]
        metrics = evaluate_probe(y, proba, head.config.classes)
        predicted = head.labels(proba).astype(str)
        metrics["accuracy_at_threshold"] = float(
            sum(p == t for p, t in zip(predicted, y, strict=True)) / len(y))
    metrics["documents"] = len(rows)
    if as_json:
        click.echo(json.dumps(metrics, indent=2, default=str))
        return
    for k, v in metrics.items():
        w = max(24, len(k) + 1)
        if isinstance(v, float | int) and not isinstance(v, bool):
            click.echo(f"{k:<{w}}{v:.4f}" if isinstance(v, float) else f"{k:<{w}}{v}")
        elif isinstance(v, dict) and k.startswith("per_label"):
            for label, x in v.items():
                name = f"{k[len('per_label_'):]}.{label}"
                w = max(24, len(name) + 1)
                click.echo(f"{name:<{w}}{'–' if x is None else f'{x:.4f}'}")


def _multilabel_eval(head: Any, values: list[Any], proba: Any, sep: str) -> dict[str, Any]:
    """Multilabel metrics of a head: at 0.5 and at the head's per-label thresholds."""
    from auditor.heads import label_indicator, label_set, multilabel_metrics

    names = head.config.classes
    Y = label_indicator([label_set(v, sep) for v in values], names)
    metrics = multilabel_metrics(Y, proba, names)
    at = multilabel_metrics(Y, proba, names, thresholds=head.config.label_thresholds())
    for key in ("micro_f1", "macro_f1", "subset_accuracy", "per_label_f1"):
        metrics[f"{key}_at_threshold"] = at[key]
    return metrics


@probe.command("predict")
@click.argument("head_refs", metavar="HEAD...", nargs=-1, required=True)
@click.option("--features", "store_path", required=True, type=click.Path(path_type=Path))
@click.option("--out", required=True, type=click.Path(path_type=Path),
              help="Predictions file (.parquet or .jsonl).")
@click.option("--explain", type=int, default=0, show_default=True,
              help="Top contributing SAE features per document (0: none).")
def probe_predict(head_refs: tuple[str, ...], store_path: Path, out: Path,
                  explain: int) -> None:
    """Apply heads to an existing feature store."""
    from auditor.heads import load_heads
    from auditor.heads.classify import classify_store, write_predictions
    from auditor.store import read_metadata

    heads = load_heads(list(head_refs))
    frame = classify_store(store_path, heads, explain=explain)
    write_predictions(frame, out, provenance=read_metadata(store_path))
    click.echo(f"wrote {frame.height:,} predictions to {out}")


# ----------------------------------------------------------------------------- heads


@cli.group()
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
    from auditor.heads import load_heads
    from auditor.heads.card import render_card
    from auditor.jobs.audit import dictionary_annotations

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


# ----------------------------------------------------------------------------- classify


_RUN_OPTIONS = [
    click.option("--head", "head_refs", multiple=True,
                 help="Head name or directory; repeat (default: every installed head)."),
    click.option("--model", default=None, help="Model directory (default: the embedded one)."),
    click.option("--sae", "sae_paths", multiple=True, help="SAE (default: the shipped one)."),
    click.option("--text-column", default="text", show_default=True),
]


def _run_options(f: Any) -> Any:
    """The options every command that runs the model and heads on a dataset shares."""
    for opt in reversed(_RUN_OPTIONS):
        f = opt(f)
    return f


@contextlib.contextmanager
def _text_or_file(source: str, id_column: str | None
                  ) -> Iterator[tuple[Path, str | None]]:
    """A dataset path as given, or a one-row JSONL (id ``text``) holding a literal text."""
    if Path(source).exists():
        yield Path(source), id_column
        return
    with tempfile.TemporaryDirectory(prefix="auditor-text-") as tmp:
        path = Path(tmp) / "input.jsonl"
        path.write_text(json.dumps({"id": "text", "text": source}) + "\n")
        yield path, "id"


@cli.command()
@click.argument("source", metavar="TEXT|FILE")
@click.option("--out", type=click.Path(path_type=Path), default=None,
              help="Write predictions to .parquet or .jsonl (default: print them).")
@_run_options
@click.option("--explain", "explain", type=int, default=0, is_flag=False, flag_value=5,
              help="Top contributing SAE features per head (--explain alone: 5).")
@click.option("--store", type=click.Path(path_type=Path), default=None,
              help="Keep the extracted features in this store.")
@click.option("--id-column", default=None, help="Column with document ids (default: row).")
@click.option("--skip-bad-rows", is_flag=True)
@click.option("--device", default=None)
@click.option("--progress/--no-progress", default=None)
def classify(source: str, out: Path | None, head_refs: tuple[str, ...], explain: int,
             store: Path | None, model: str | None, sae_paths: tuple[str, ...],
             text_column: str, id_column: str | None, skip_bad_rows: bool,
             device: str | None, progress: bool | None) -> None:
    """Label TEXT (a literal string) or FILE (a dataset) with the heads."""
    from auditor.heads.classify import write_predictions
    from auditor.jobs import run_classify

    with _text_or_file(source, id_column) as (path, id_column):
        frame, provenance = run_classify(
            path, heads=list(head_refs) or None, explain=explain, store=store, model=model,
            saes=sae_paths, text_column=text_column, id_column=id_column,
            skip_bad_rows=skip_bad_rows, device=device,
            progress=sys.stderr.isatty() if progress is None else progress)
    if out is not None:
        write_predictions(frame, out, provenance=provenance)
        click.echo(f"wrote {frame.height:,} rows to {out}")
        return
    _print_predictions(frame)


@cli.command()
@click.argument("input_path", metavar="INPUT", type=click.Path(path_type=Path))
@click.option("--out", required=True, type=click.Path(path_type=Path),
              help="Output directory: store/, predictions.parquet, report.html/json/md.")
@_run_options
@click.option("--explain", type=int, default=5, show_default=True,
              help="Top contributing SAE features kept per document and head.")
@click.option("--previous", type=click.Path(path_type=Path), default=None,
              help="report.json of an earlier audit of the same pipeline (drift).")
@click.option("--id-column", default=None, help="Column with document ids (default: row).")
@click.option("--format", "formats", default="html,json,md", show_default=True)
@click.option("--skip-bad-rows", is_flag=True)
@click.option("--device", default=None)
@click.option("--overwrite", is_flag=True,
              help="Start OUT's store afresh (a rerun resumes it; one made with other "
                   "settings, e.g. by another auditor version, is refused without this).")
@click.option("--progress/--no-progress", default=None)
def audit(input_path: Path, out: Path, head_refs: tuple[str, ...], explain: int,
          previous: Path | None, model: str | None, sae_paths: tuple[str, ...],
          text_column: str, id_column: str | None, formats: str, skip_bad_rows: bool,
          device: str | None, overwrite: bool, progress: bool | None) -> None:
    """Audit INPUT: SAE features, every head's labels with explanations, and a report."""
    from auditor.jobs import run_audit

    result = run_audit(
        input_path, out=out, heads=list(head_refs) or None, model=model, saes=sae_paths,
        explain=explain, previous=previous, text_column=text_column, id_column=id_column,
        skip_bad_rows=skip_bad_rows, device=device, formats=formats.split(","),
        overwrite=overwrite, progress=sys.stderr.isatty() if progress is None else progress)
    click.echo(f"audited {result.documents:,} documents with heads "
               f"{', '.join(result.heads) or '(none installed)'}")
    click.echo(f"  features     {result.store}")
    if result.predictions is not None:
        click.echo(f"  predictions  {result.predictions}")
    for fmt, path in result.reports.items():
        click.echo(f"  {fmt:<12} {path}")


@cli.command()
@click.argument("source", metavar="TEXT|FILE")
@_run_options
@click.option("--top", type=int, default=5, show_default=True,
              help="Contributing features shown per document and head.")
@click.option("--check", is_flag=True,
              help="Faithfulness: zero each decision's top-k features and re-score, vs k "
                   "random active features.")
@click.option("--k", "k", type=int, default=5, show_default=True, help="Features zeroed.")
@click.option("--random", "n_random", type=int, default=10, show_default=True,
              help="Random draws per document for the control.")
@click.option("--no-tokens", is_flag=True, help="Skip token-level evidence.")
@click.option("--id-column", default=None)
@click.option("--json", "as_json", is_flag=True)
def explain(source: str, head_refs: tuple[str, ...], top: int, check: bool, k: int,
            n_random: int, no_tokens: bool, model: str | None, sae_paths: tuple[str, ...],
            text_column: str, id_column: str | None, as_json: bool) -> None:
    """Why each head labelled TEXT (or each document of FILE) as it did."""
    from auditor.jobs import run_explain

    with _text_or_file(source, id_column) as (path, id_column):
        result = run_explain(path, heads=list(head_refs) or None, top=top, check=check, k=k,
                             n_random=n_random, tokens=not no_tokens, model=model,
                             saes=sae_paths, text_column=text_column, id_column=id_column,
                             progress=sys.stderr.isatty())
    if as_json:
        click.echo(json.dumps(result, indent=2, default=str))
        return
    for doc in result["documents"]:
        click.echo(doc["id"])
        for name in result["heads"]:
            e = doc[name]
            cover = "" if e["explained_share"] >= 0.999 else \
                f", features cover {e['explained_share']:.0%} of the score"
            shown = f"[{', '.join(e['labels'])}]" if "labels" in e else e["label"]
            click.echo(f"  {name}: {shown} (p={e['p']:.3f}; contributions to the "
                       f"'{e['explains']}' score{cover})")
            for f in e["features"]:
                label = f" {f['label']}" if f["label"] else ""
                click.echo(f"    f{f['feature']:<6} {f['contribution']:+.3f}  act "
                           f"{f['activation']:.2f}{label}")
                if f["evidence"]:
                    click.echo(f"           {f['evidence']}")
    for name, c in result["faithfulness"].items():
        ratio = "–" if c["ratio"] is None else f"{c['ratio']:.1f}×"
        click.echo(f"faithfulness {name} (k={c['k']}, {c['documents']} documents): top-k "
                   f"removal drops p(label) by {c['top_k']['mean_drop']:.3f} and flips "
                   f"{c['top_k']['flip_rate']:.0%}; random-k by "
                   f"{c['random_k']['mean_drop']:.3f} / {c['random_k']['flip_rate']:.0%} "
                   f"(ratio {ratio})")


def _print_predictions(frame: Any) -> None:
    heads = [c[: -len(".label")] for c in frame.columns if c.endswith(".label")]
    for row in frame.iter_rows(named=True):
        click.echo(f"{row['id']}")
        for h in heads:
            label = row[f"{h}.label"]
            if f"{h}.labels" in row:  # multilabel: every present label, or none
                present = ", ".join(f"{lab} p={row[f'{h}.p.{lab}']:.3f}"
                                    for lab in row[f"{h}.labels"])
                click.echo(f"  {h:<9} {present or '(no label)'}")
            else:
                click.echo(f"  {h:<9} {label:<12} p={row[f'{h}.p.{label}']:.3f}")
            for e in row.get(f"{h}.explain") or []:
                name = f" {e['label']}" if e.get("label") else ""
                click.echo(f"      f{e['feature']:<6} {e['contribution']:+.3f} "
                           f"(act {e['activation']:.2f}){name}")


def _register_plugins() -> None:
    from auditor.cli_features import features
    from auditor.cli_report import report

    cli.add_command(features)
    cli.add_command(report)


_register_plugins()

# ----------------------------------------------------------------------------- store


@cli.group()
def store() -> None:
    """Inspect feature stores."""


@store.command("info")
@click.argument("path", type=click.Path(path_type=Path))
def store_info(path: Path) -> None:
    """Print a store's provenance, row count and columns as JSON."""
    from auditor.store import read_metadata, scan_features

    lf = scan_features(path)
    n_rows = int(lf.select("doc_id").collect().height)
    info = {"path": str(path), "documents": n_rows,
            "columns": list(lf.collect_schema().names()), "provenance": read_metadata(path)}
    click.echo(json.dumps(info, indent=2, default=str))


if __name__ == "__main__":  # pragma: no cover
    _run()
