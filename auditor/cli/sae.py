"""``auditor sae``: inspect, convert, collect for, train and evaluate SAEs."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, Literal

import click

__all__ = ["sae"]

# ----------------------------------------------------------------------------- sae


@click.group()
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
