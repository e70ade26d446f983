"""``auditor sae``: inspect, convert, collect for, train and evaluate SAEs.

A thin face over :mod:`auditor.jobs.sae`: every command parses its options, calls the job
and prints its result.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

import click

from auditor.cli._progress import progress_bars
from auditor.errors import ConfigError

__all__ = ["sae"]

# ----------------------------------------------------------------------------- sae


@click.group()
def sae() -> None:
    """SAEs: info, convert, collect (activations), train, eval.

    Inspect or convert an SAE of any supported format, cache a corpus's activations, train
    a TopK or BatchTopK SAE on them, and evaluate one (FVU, L0, dead latents, ΔCE)."""


@sae.command("convert")
@click.argument("src", type=click.Path(path_type=Path))
@click.argument("dst", type=click.Path(path_type=Path))
@click.option("--format", "fmt", default=None, help="Source format (default: detect).")
@click.option("--k", type=int, default=None, help="TopK k when the source does not say.")
@click.option("--layer", type=int, default=None, help="Layer when the source does not say.")
@click.option("--overwrite", is_flag=True, help="Convert into a folder that is not empty.")
def sae_convert(src: Path, dst: Path, fmt: str | None, k: int | None, layer: int | None,
                overwrite: bool) -> None:
    """Convert an SAE in any supported format into auditor's own format (DST must be a
    new or empty folder)."""
    from auditor.jobs import sae as jobs

    done = jobs.sae_convert(src, dst, format=fmt, k=k, layer=layer, overwrite=overwrite)
    click.echo(f"wrote {done['path']} ({done['activation']}, d_in {done['d_in']}, "
               f"d_sae {done['d_sae']}, sha256 {done['sha256']})")


@sae.command("info")
@click.argument("path", type=click.Path(path_type=Path))
@click.option("--format", "fmt", default=None)
@click.option("--k", type=int, default=None)
@click.option("--layer", type=int, default=None)
def sae_info(path: Path, fmt: str | None, k: int | None, layer: int | None) -> None:
    """Print an SAE's detected format, configuration and hash as JSON."""
    from auditor.jobs import sae as jobs

    click.echo(json.dumps(jobs.sae_info(path, format=fmt, k=k, layer=layer), indent=2))


@sae.command("collect")
@click.argument("corpus", type=click.Path(path_type=Path))
@click.option("--out", required=True, type=click.Path(path_type=Path),
              help="Cache directory (a rerun with the same options returns the recorded result; an "
                   "unfinished one resumes; other options are refused, see --overwrite).")
@click.option("--layer", "layers", type=int, multiple=True, required=True,
              help="Decoder layer whose output is kept; repeat for several (one forward pass).")
@click.option("--model", default=None, help="Model directory (default: the embedded model).")
@click.option("--max-tokens", type=int, default=None,
              help="Stop after this many tokens (default: the whole corpus).")
@click.option("--max-length", type=int, default=512, show_default=True)
@click.option("--device", default=None, help="cpu, cuda, cuda:1 … (default: cuda if available).")
@click.option("--overwrite", is_flag=True,
              help="Replace a cache at --out collected with other options.")
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
    from auditor.jobs import sae as jobs

    options = jobs.SAECollectOptions(
        layers=layers, model=model, max_length=max_length, max_tokens=max_tokens,
        heldout_only=heldout_fraction if heldout_only else None, device=device,
        overwrite=overwrite)
    result = jobs.run_sae_collect(corpus, out=out, options=options,
                                  progress=progress_bars(progress))
    click.echo(json.dumps(_shown(result.to_dict(), directory=str(out)), indent=2))


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
@click.option("--resume/--restart", default=True, show_default=True,
              help="Go on from the last checkpoint, or start the run over (removing all "
                   "but the collected activations from --out).")
@click.option("--overwrite", is_flag=True,
              help="Replace a run at --out made with other settings or data.")
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
              overwrite: bool, device: str | None, progress: bool | None,
              as_json: bool) -> None:
    """Train a TopK or BatchTopK SAE (AuxK, unit-norm decoder, resumable checkpoints)."""
    from auditor.jobs import sae as jobs

    if (cache is None) == (corpus is None):
        raise ConfigError("give exactly one of --cache or --corpus", field="cache")
    if stream and corpus is None:
        raise ConfigError("--stream computes activations from a corpus: give --corpus, "
                          "not --cache", field="stream")
    if stream and collect_tokens is not None:
        raise ConfigError("--collect-tokens caps a cache; a stream reads the corpus as "
                          "training needs it (set --tokens)", field="collect_tokens")
    config = {"layer": layer, "d_sae": d_sae, "k": k, "n_tokens": n_tokens,
              "batch_size": batch_size, "lr": lr, "seed": seed, "warmup_steps": warmup_steps,
              "auxk_alpha": auxk_alpha, "checkpoint_every": checkpoint_every,
              "decay_start": decay_start, "resample_every": resample_every,
              "dead_tokens": dead_tokens, "encoder_dtype": encoder_dtype,
              "activation": activation, "batchtopk_max_k": batchtopk_max_k}
    options = jobs.SAETrainOptions(
        config=config, source="stream" if stream else "cache" if cache else "corpus",
        model=model, init=None if init is None else str(init),
        collect_tokens=collect_tokens, max_length=max_length, chunk_tokens=chunk_tokens,
        resume=resume, device=device, overwrite=overwrite)
    data = cache if cache is not None else corpus
    assert data is not None
    result = jobs.run_sae_train(data, out=out, options=options,
                                progress=progress_bars(progress)).to_dict()
    if as_json:
        click.echo(json.dumps(_shown(result, out=str(out)), indent=2))
        return
    fvu = "–" if result["fvu"] is None else f"{result['fvu']:.4f}"
    dead = "–" if result["dead_frac"] is None else f"{result['dead_frac']:.2%}"
    click.echo(f"wrote {out}: {result['tokens']:,} tokens in {result['steps']} steps, "
               f"FVU {fvu}, dead {dead}")


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
@click.option("--out", type=click.Path(path_type=Path), default=None,
              help="Where evaluation.json and the job record go (default: PATH/evaluation, "
                   "or PATH.evaluation beside an SAE file; replaced by each evaluation).")
@click.option("--overwrite", is_flag=True,
              help="Replace an evaluation at --out made with other options or inputs.")
@click.option("--card/--no-card", default=True, show_default=True,
              help="Also write evaluation.json and CARD.md into the SAE directory.")
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
             max_length: int, layer: int | None, out: Path | None, overwrite: bool, card: bool,
             groups_from: Path | None, group_column: str, whole_cache: bool,
             split: Literal["heldout", "all", "train"], device: str | None) -> None:
    """FVU, L0, dead/dense latents, density and ΔCE of an SAE; written into its card."""
    from auditor.jobs import sae as jobs

    if out is None:  # the SAE's own evaluation: each run replaces the last
        out = path / "evaluation" if path.is_dir() else path.with_name(f"{path.name}.evaluation")
        overwrite = True
    options = jobs.SAEEvalOptions(
        cache=str(cache), layer=layer, corpus=None if corpus is None else str(corpus),
        model=model, ce_docs=ce_docs, max_length=max_length, split=split,
        groups_from=None if groups_from is None else str(groups_from),
        group_column=group_column, whole_cache=whole_cache, card=card, device=device,
        overwrite=overwrite)
    try:
        result = jobs.run_sae_eval(path, out=out, options=options)
    except ConfigError as err:
        if err.field != "split":
            raise
        raise ConfigError(f"{err.message} (on the command line: --split heldout)",
                          path=err.path, field=err.field) from err
    click.echo(json.dumps(_shown(result.to_dict()), indent=2))


def _shown(record: dict[str, Any], **replace: Any) -> dict[str, Any]:
    """A job result as the command prints it: without the schema version, with paths as
    the user gave them."""
    return {**{k: v for k, v in record.items() if k != "schema_version"}, **replace}
