"""SAE jobs: collect activations, train, evaluate, and write the SAE's card."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from auditor import __version__
from auditor._versions import libraries_text, library_versions
from auditor.errors import ConfigError

if TYPE_CHECKING:
    from auditor.sae import ActivationCache

__all__ = ["EVALUATION_FILENAME", "read_corpus_groups", "read_corpus_texts", "run_sae_collect",
           "run_sae_eval", "run_sae_train", "write_card"]

EVALUATION_FILENAME = "evaluation.json"
CARD_FILENAME = "CARD.md"


def read_corpus_texts(path: str | Path, *, text_column: str = "text",
                      limit: int | None = None) -> Iterator[str]:
    """Texts of a corpus file in any input format :func:`auditor.io.read_documents` reads."""
    from auditor.io import read_documents

    for i, doc in enumerate(read_documents(path, text_column=text_column, skip_bad_rows=True)):
        if limit is not None and i >= limit:
            return
        yield doc.text


def read_corpus_groups(path: str | Path, *, group_column: str = "source",
                       text_column: str = "text") -> list[str]:
    """Each document's ``group_column`` value, for the documents :func:`read_corpus_texts`
    yields (same rows skipped), i.e. indexed like an activation cache collected from it."""
    from auditor.io import read_documents

    return [str(doc.extra[group_column])
            for doc in read_documents(path, text_column=text_column,
                                      passthrough=(group_column,), skip_bad_rows=True)]


def run_sae_train(
    *,
    out: str | Path,
    layer: int,
    d_sae: int,
    k: int,
    cache: str | Path | None = None,
    corpus: str | Path | None = None,
    model: str | Path | None = None,
    n_tokens: int = 10_000_000,
    collect_tokens: int | None = None,
    max_length: int = 512,
    batch_size: int = 4096,
    lr: float | None = None,
    seed: int = 0,
    resume: bool = True,
    device: str | None = None,
    progress: bool = False,
    init: str | Path | None = None,
    warmup_steps: int = 1000,
    auxk_alpha: float = 1 / 32,
    checkpoint_every: int = 1000,
    decay_start: float = 0.8,
    resample_every: int = 0,
    dead_tokens: int | None = None,
    encoder_dtype: str = "float32",
    activation: str = "topk",
    batchtopk_max_k: int | None = None,
    stream: bool = False,
    chunk_tokens: int = 524_288,
) -> dict[str, Any]:
    """Train a TopK or BatchTopK SAE on a hook's activations: from a cache, from a corpus
    collected into a cache first, or streamed from the model as training goes.

    Parameters
    ----------
    out
        Run directory: the trained SAE (auditor format), ``training.json``, checkpoints.
    layer
        Decoder layer whose output (``resid_post``) the SAE reads.
    d_sae, k
        Width and number of active latents.
    cache
        An activation cache (:func:`auditor.sae.collect_activations`) to train on.
    corpus
        A text file (JSONL/Parquet/CSV/txt) to collect activations from when ``cache`` is
        not given; they are cached in ``out/activations`` and reused on a rerun, or, with
        ``stream``, computed chunk by chunk as training goes and never written.
    model
        Model directory (default: the embedded default model).
    n_tokens
        Training tokens, epochs over the cache included.
    collect_tokens
        Cap on the tokens collected from ``corpus``.
    max_length, batch_size, lr, seed, resume, device, progress
        Collection window, training batch (tokens), learning rate (None: scaled by width),
        seed, resume from the last checkpoint, the device for collection and training
        (None: CUDA when available), progress bars.
    init
        An SAE (any format :func:`auditor.sae.load_sae` reads) to continue training from,
        e.g. a shipped SAE trained on the same hook; its ``input_scale`` is kept and its
        sha256 is recorded in ``training.json``.
    warmup_steps, auxk_alpha, checkpoint_every, decay_start, resample_every, dead_tokens,
    encoder_dtype, activation, batchtopk_max_k
        See :class:`auditor.sae.TrainConfig`.
    stream, chunk_tokens
        Train from the model without a disk cache (:class:`auditor.sae.ModelStream`),
        holding ``chunk_tokens`` shuffled tokens in memory at a time.

    Returns
    -------
    dict
        The training result (``TrainResult.to_dict()``).
    """
    from auditor.lm import HookPoint, load_model
    from auditor.sae import TrainConfig, open_cache, train_sae

    if (cache is None) == (corpus is None):
        raise ConfigError("give exactly one of --cache or --corpus", field="cache")
    if stream and corpus is None:
        raise ConfigError("--stream computes activations from a corpus: give --corpus, "
                          "not --cache", field="stream")
    if stream and collect_tokens is not None:
        raise ConfigError("--collect-tokens caps a cache; a stream reads the corpus as "
                          "training needs it (set --tokens)", field="collect_tokens")
    from auditor.sae import ModelStream, StreamSettings, load_sae

    config = TrainConfig(layer=layer, d_sae=d_sae, k=k, n_tokens=n_tokens,
                         batch_size=batch_size, lr=lr, seed=seed, warmup_steps=warmup_steps,
                         auxk_alpha=auxk_alpha, checkpoint_every=checkpoint_every,
                         decay_start=decay_start, resample_every=resample_every,
                         dead_tokens=dead_tokens, encoder_dtype=encoder_dtype,
                         activation=activation, batchtopk_max_k=batchtopk_max_k)
    start = None if init is None else load_sae(init)
    acts: Any
    if stream:
        assert corpus is not None
        settings = StreamSettings(chunk_tokens=chunk_tokens, max_length=max_length)
        lm = load_model(_model_dir(model, progress=progress), device=device)
        source_file = corpus
        acts = ModelStream(lambda: read_corpus_texts(source_file), lm=lm,
                           hook=HookPoint(layer), settings=settings,
                           heldout_fraction=config.heldout_fraction, seed=seed,
                           source=_corpus_source(corpus), progress=progress)
    elif cache is None:
        assert corpus is not None
        cache_dir = Path(out) / "activations"
        try:
            acts = open_cache(cache_dir)
        except Exception:  # absent or unfinished: collect (again)
            acts = run_sae_collect(corpus, out=cache_dir, layers=[layer], model=model,
                                   max_length=max_length, max_tokens=collect_tokens,
                                   device=device, overwrite=True, progress=progress)
    else:
        acts = open_cache(cache)
    result = train_sae(acts, config=config, out=out, resume=resume, init=start,
                       progress=progress, device=device)
    if init is not None:
        _record_init_training(Path(out), Path(init))
    return dict(result.to_dict())


def run_sae_collect(
    corpus: str | Path,
    *,
    out: str | Path,
    layers: Sequence[int],
    model: str | Path | None = None,
    max_length: int = 512,
    max_tokens: int | None = None,
    device: str | None = None,
    overwrite: bool = False,
    progress: bool = False,
    heldout_only: float | None = None,
) -> ActivationCache:
    """Run the model over a corpus once and cache its layers' activations for SAE training
    and evaluation (:func:`auditor.sae.collect_activations`).

    Parameters
    ----------
    corpus
        A text file (JSONL/Parquet/CSV/txt); bad rows are skipped, as for training.
    out
        The cache directory.
    layers
        Decoder layers whose output (``resid_post``) is kept, all from one forward pass.
    model
        Model directory (default: the embedded default model).
    max_length, max_tokens, device, overwrite, progress
        Window length, a cap on the tokens kept, the device, whether to replace a
        finished cache at ``out``, a progress bar.
    heldout_only
        Compute only the documents held out at this fraction (what a training run with
        that ``heldout_fraction`` never reads): an evaluation cache.

    Returns
    -------
    ActivationCache
        The finished cache; its manifest names the corpus file and its fingerprint.
    """
    from auditor.lm import HookPoint, load_model
    from auditor.sae import collect_activations

    if not layers:
        raise ConfigError("give at least one layer", field="layer")
    source = _corpus_source(corpus)  # before the model: a missing corpus fails at once
    lm = load_model(_model_dir(model, progress=progress), device=device)
    return collect_activations(read_corpus_texts(corpus), lm=lm,
                               hooks=[HookPoint(layer) for layer in layers], out=out,
                               max_length=max_length, max_tokens=max_tokens,
                               overwrite=overwrite, progress=progress, source=source,
                               heldout_only=heldout_only)


def _corpus_source(corpus: str | Path) -> dict[str, str]:
    """What a cache or a stream records of the corpus file it read."""
    from auditor.io import input_fingerprint

    return {"path": str(corpus), "fingerprint": input_fingerprint(corpus)}


def _record_init_training(out: Path, init: Path) -> None:
    """Copy the init SAE's own training summary (if it has one) into ``out/training.json``,
    so the card can give the whole history of a continued run.

    The init may be a finished run (its ``training.json``) or a checkpoint of one
    (``state.json``: steps, tokens, settings and the SAE that run started from).
    """
    root = init if init.is_dir() else init.parent
    previous = _read_json(root / "training.json")
    state = _read_json(root / "state.json")
    if not previous and state:
        identity = state.get("identity") or {}
        previous = {"checkpoint": str(root), "steps": state.get("step"),
                    "tokens": state.get("tokens"), "seconds": state.get("seconds"),
                    "config": identity.get("config") or {},
                    "cache_texts": identity.get("cache_texts")}
        if identity.get("init_sha256"):
            run = _read_json(root.parent.parent / "training.json")  # finished since?
            previous["init"] = (run["init"] if isinstance(run.get("init"), dict)
                                else {"sha256": identity["init_sha256"]})
    record = _read_json(out / "training.json")
    if not previous or not record or not isinstance(record.get("init"), dict):
        return
    summary = {k: v for k, v in previous.items() if k != "history"}
    record["init"]["training"] = summary
    _write_json(out / "training.json", record)


def run_sae_eval(
    sae_path: str | Path,
    *,
    cache: str | Path,
    layer: int | None = None,
    corpus: str | Path | None = None,
    model: str | Path | None = None,
    ce_docs: int = 200,
    max_length: int = 512,
    split: Literal["train", "heldout", "all"] = "heldout",
    device: str | None = None,
    write: bool = True,
    groups_from: str | Path | None = None,
    group_column: str = "source",
    whole_cache_density: bool = False,
) -> dict[str, Any]:
    """Evaluate an SAE on held-out cached activations and, with a corpus, by ΔCE.

    Writes ``evaluation.json`` beside the SAE (when ``write``) and returns it.

    Parameters
    ----------
    sae_path
        The SAE (any supported format).
    cache
        Activation cache with the SAE's hook.
    layer
        Layer for SAEs whose files do not say.
    corpus
        Texts for the next-token loss comparison (the first ``ce_docs`` documents).
    model
        Model directory for ΔCE (default: the embedded default model).
    ce_docs, max_length
        How much text ΔCE uses.
    split
        Which cache split to score: ``'heldout'`` (the default, never trained on), or
        ``'all'`` for a cache collected from text no run of this SAE trained on (e.g. the
        held-out documents of an earlier corpus, collected on their own), or ``'train'``.
    device
        Device for ΔCE.
    write
        Save the result as ``evaluation.json`` in the SAE directory.
    groups_from, group_column
        The corpus the cache was collected from and its column naming each document's
        group (genre): adds FVU per group.
    whole_cache_density
        Also count firing over every cached token (training split included): a latent
        that fires once in 10^5 tokens looks dead on a small held-out split, so this is
        the fairer dead-latent count (the held-out one is kept too).

    Raises
    ------
    ConfigError
        ``split='all'`` on a cache of text that a run of this SAE's training chain (its
        ``training.json`` and the runs it continued) read.
    """
    from auditor.lm import HookPoint, resolve_device_dtype
    from auditor.sae import delta_ce, evaluate_sae, load_sae, open_cache

    # Checked first: an unusable device is refused before minutes of FVU scoring.
    dev, dtype = resolve_device_dtype(device, None)
    sae = load_sae(sae_path, layer=layer)
    if sae.cfg.hook_layer is None:
        raise ConfigError("the SAE does not say which layer it reads; pass --layer",
                          path=sae_path)
    hook = HookPoint(sae.cfg.hook_layer, sae.cfg.hook_point)
    acts = open_cache(cache)
    if split == "all":
        _refuse_training_text(sae_path, acts.manifest.get("texts"), cache=cache)
    doc_groups = (read_corpus_groups(groups_from, group_column=group_column)
                  if groups_from is not None else None)
    metrics = evaluate_sae(sae, acts, hook=hook, split=split, doc_groups=doc_groups)
    record: dict[str, Any] = {
        "auditor_version": __version__,
        "libraries": library_versions(),
        "sae_sha256": sae.sha256,
        "cache": {"path": str(cache), "model": acts.manifest.get("model"), "split": split,
                  "input": acts.manifest.get("input"), "texts": acts.manifest.get("texts")},
        "metrics": metrics.to_dict(),
    }
    if groups_from is not None:
        record["groups"] = {"corpus": str(groups_from), "column": group_column}
    if whole_cache_density:
        whole = evaluate_sae(sae, acts, hook=hook, split="all")
        record["whole_cache"] = {key: getattr(whole, key) for key in
                                 ("n_tokens", "dead_frac", "dense_frac", "density_hist", "fvu")}
    if corpus is not None:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        model_dir = _model_dir(model, progress=False)
        full = AutoModelForCausalLM.from_pretrained(model_dir, dtype=dtype)
        full = full.to(dev).eval()  # type: ignore[arg-type]
        tokenizer = AutoTokenizer.from_pretrained(model_dir)
        texts = list(read_corpus_texts(corpus, limit=ce_docs))
        with torch.inference_mode():
            ce = delta_ce(sae.to(dev), full, tokenizer, texts, hook=hook, max_length=max_length)
        record["ce"] = {**ce.to_dict(), "corpus": str(corpus), "docs": len(texts)}
    if write and Path(sae_path).is_dir():
        _write_json(Path(sae_path) / EVALUATION_FILENAME, record)
    return record


def _refuse_training_text(sae_path: str | Path, texts: Any, *, cache: str | Path) -> None:
    """Refuse to score a whole cache as unseen when the SAE's training chain read its text.

    The texts fingerprint of the cache is compared with that of every run in the chain
    (``training.json`` and the ``init`` records inside it); runs too old to record one
    cannot be checked.
    """
    wanted = texts.get("sha256") if isinstance(texts, Mapping) else None
    if not wanted or not Path(sae_path).is_dir():
        return
    run: Any = _read_json(Path(sae_path) / "training.json")
    depth = 0
    while isinstance(run, Mapping):
        seen = run.get("cache_texts")
        if isinstance(seen, Mapping) and seen.get("sha256") == wanted:
            which = "its last run" if depth == 0 else f"run -{depth} of its training chain"
            raise ConfigError(
                f"the cache holds the text {which} trained on, so its tokens are not "
                "unseen; score its held-out split (--split heldout) or a cache of other "
                "text", path=cache, field="split")
        init = run.get("init")
        run = init.get("training") if isinstance(init, Mapping) else None
        depth += 1


def _evaluation_heading(cache: Mapping[str, Any]) -> str:
    """The card's evaluation heading: which tokens were scored."""
    split = cache.get("split", "heldout")
    if split == "heldout":
        return "## Evaluation (held-out documents)"
    if split == "train":
        return "## Evaluation (training documents: not unseen text)"
    source: Mapping[str, Any] = cache.get("input") or {}
    texts: Mapping[str, Any] = cache.get("texts") or {}
    named = (f" of `{Path(str(source['path'])).name}`" if source.get("path") else "")
    if source.get("fingerprint"):
        named += f" ({str(source['fingerprint'])[:19]}…)"
    if texts.get("docs") is not None:
        named += f", {int(texts['docs']):,} documents"
    return (f"## Evaluation (every token of a cache{named}: text no run of this SAE "
            "trained on)")


def _init_lines(training: Mapping[str, Any]) -> list[str]:
    """Card lines for a run continued from another SAE (``--init``): the chain of runs
    back to the random start, and the totals over all of them."""
    lines: list[str] = []
    tokens, seconds = int(training.get("tokens", 0)), float(training.get("seconds", 0.0))
    timed = True
    init = training.get("init")
    while isinstance(init, dict):
        lines.append(f"- continued from SAE `{str(init.get('sha256'))[:12]}…`")
        previous = init.get("training")
        if not isinstance(previous, dict):
            lines[-1] += " (its training record is not available)"
            break
        tokens += int(previous.get("tokens") or 0)
        took = previous.get("seconds")
        timed = timed and took is not None
        seconds += float(took or 0.0)
        n = f"{int(previous.get('tokens') or 0):,} tokens"
        where = (f"the checkpoint at step {previous.get('steps')} ({n}) of a run"
                 if previous.get("checkpoint") else f"a run of {n}")
        text = _training_text(previous)
        lines[-1] += (f", {where}"
                      + (f" in {float(took) / 60:.1f} min" if took is not None else "")
                      + f" (lr {_run_lr(previous.get('config') or {})})"
                      + (f" on {text}" if text else ""))
        init = previous.get("init")
    if lines:
        lines.append(f"- in total: {tokens:,} training tokens"
                     + (f", {seconds / 60:.1f} min" if timed else ""))
    return lines


def _run_lr(config: Mapping[str, Any]) -> str:
    """A run's learning rate as the card gives it: the default's value when none was set."""
    from auditor.sae import TrainConfig

    if config.get("lr") is not None:
        return f"{float(config['lr']):g}"
    try:
        return f"{TrainConfig.from_dict(config).learning_rate:.3g}, the default"
    except ConfigError:
        return "?"


def _training_text(training: Mapping[str, Any]) -> str:
    """What a run trained on, for the card: the corpus file and its fingerprint, else the
    texts' fingerprint; "" when the record predates either."""
    source = training.get("cache_input")
    texts = training.get("cache_texts")
    docs = (f", {int(texts['docs']):,} documents"
            if isinstance(texts, dict) and texts.get("docs") is not None else "")
    if isinstance(source, dict) and source.get("path"):
        fingerprint = str(source.get("fingerprint") or "")
        return (f"`{Path(str(source['path'])).name}`"
                + (f" ({fingerprint[:19]}…{docs})" if fingerprint else
                   (f" ({docs.removeprefix(', ')})" if docs else "")))
    if isinstance(texts, dict) and texts.get("sha256"):
        return f"texts {str(texts['sha256'])[:19]}…{docs}"
    return ""


def write_card(sae_dir: str | Path, *, extra: Mapping[str, Any] | None = None) -> Path:
    """Render ``CARD.md`` for an SAE directory from its config, training and evaluation.

    ``extra`` adds sections: ``{"title": markdown}`` in order (e.g. the corpus recipe and
    the layer comparison).
    """
    from auditor.sae import load_sae

    root = Path(sae_dir)
    sae = load_sae(root)
    training = _read_json(root / "training.json")
    evaluation = _read_json(root / EVALUATION_FILENAME)
    weights = next((p for p in root.iterdir() if p.suffix == ".safetensors"), None)
    lines = [f"# SAE card: {root.name}", ""]
    cfg = sae.cfg
    sparsity = f"k = {cfg.k}"
    if cfg.activation == "batchtopk":
        sparsity = (f"k = {cfg.k} on average over a training batch" if
                    cfg.batchtopk_threshold is None else f"trained at k = {cfg.k} on average "
                    f"per batch, inference threshold {cfg.batchtopk_threshold:.6g}")
    lines += [
        "| | |", "|---|---|",
        f"| architecture | {cfg.activation}, {sparsity}, width {cfg.d_sae:,} "
        f"({cfg.d_sae // cfg.d_in}× d_model {cfg.d_in}) |",
        f"| hook | {cfg.hook_point} of decoder layer {cfg.hook_layer} |",
        f"| model | {cfg.model_name} |",
        f"| input scale | ×{cfg.input_scale} (mean norm → √d_model) |",
        f"| weights | `{weights.name if weights else '?'}`, "
        f"{(weights.stat().st_size / 1e6) if weights else 0:.1f} MB, sha256 `{sae.sha256}` |",
        f"| auditor | {__version__} |",
        "",
    ]
    if training:
        cfg_t = training.get("config", {})
        text = _training_text(training)
        lines += ["## Training", "",
                  f"- tokens: {training.get('tokens', 0):,} ({training.get('steps')} steps of "
                  f"{cfg_t.get('batch_size')}), {training.get('seconds', 0) / 60:.1f} min",
                  *([f"- text: {text}"] if text else []),
                  f"- final train FVU {training.get('fvu', float('nan')):.4f}, dead fraction "
                  f"{training.get('dead_frac', float('nan')):.4f}",
                  f"- config: `{json.dumps(cfg_t, sort_keys=True)}`"]
        resamples = training.get("resamples") or []
        if resamples:
            lines.append(f"- dead latents resampled {len(resamples)} times "
                         f"({sum(int(r['latents']) for r in resamples):,} latents in all, "
                         f"steps {resamples[0]['step']}–{resamples[-1]['step']})")
        if training.get("libraries"):
            lines.append(f"- libraries: {libraries_text(training['libraries'])}")
        lines += [*_init_lines(training), ""]
    if evaluation:
        m = evaluation["metrics"]
        lines += [_evaluation_heading(evaluation.get("cache") or {}), "",
                  "| metric | value |", "|---|---|",
                  f"| FVU | {m['fvu']:.4f} |",
                  f"| FVU without the top principal direction "
                  f"(it carries {m['top_direction_variance']:.1%} of the variance) | "
                  f"{m['fvu_without_top_direction']:.4f} |",
                  f"| L0 | {m['l0']:.1f} |",
                  f"| dead latents (never fire on these tokens) | {m['dead_frac']:.2%} |",
                  f"| dense latents (> 10 % of tokens) | {m['dense_frac']:.2%} |",
                  f"| tokens | {m['n_tokens']:,} |"]
        whole = evaluation.get("whole_cache")
        if whole:
            lines += [f"| dead latents over all {whole['n_tokens']:,} cached tokens "
                      f"(training split included) | {whole['dead_frac']:.2%} |"]
        ce = evaluation.get("ce")
        if ce:
            lines += [f"| CE clean / SAE / zero-ablated | {ce['ce_clean']:.4f} / "
                      f"{ce['ce_sae']:.4f} / {ce['ce_zero']:.4f} |",
                      f"| ΔCE | {ce['delta_ce']:.4f} |",
                      f"| next-token loss recovered | {ce['loss_recovered']:.1%} |"]
        if evaluation.get("libraries"):
            lines += [f"| libraries | {libraries_text(evaluation['libraries'])} |"]
        lines += ["", "FVU by position in the document:", "",
                  "| positions | tokens | FVU |", "|---|---|---|"]
        by_pos = m.get("fvu_by_position", {})
        for bucket in sorted(by_pos, key=lambda name: int(name.split("-")[0].rstrip("+"))):
            b = by_pos[bucket]
            fvu = f"{b['fvu']:.4f}" if b["fvu"] == b["fvu"] else "–"
            lines.append(f"| {bucket} | {b['n_tokens']:,} | {fvu} |")
        by_group = m.get("fvu_by_group") or {}
        if by_group:
            lines += ["", "FVU by genre (each genre's error over its variance around its own "
                      "mean):", "", "| genre | tokens | FVU |", "|---|---|---|"]
            for name, g in by_group.items():
                fvu = f"{g['fvu']:.4f}" if g["fvu"] == g["fvu"] else "–"
                lines.append(f"| {name} | {g['n_tokens']:,} | {fvu} |")
        hist = (whole or m).get("density_hist") or {}
        where = f"all {whole['n_tokens']:,} cached tokens" if whole else "held-out tokens"
        lines += ["", f"Feature density over {where} (latents per log10 firing-frequency "
                  "bin):", "",
                  "| log10 frequency from | latents |", "|---|---|"]
        for edge, count in zip(hist.get("edges", []), hist.get("counts", []), strict=False):
            lines.append(f"| {edge} | {count:,} |")
        lines.append("")
    for title, body in (extra or {}).items():
        lines += [f"## {title}", "", str(body).rstrip(), ""]
    path = root / CARD_FILENAME
    path.write_text("\n".join(lines), encoding="utf-8")
    return path


def _model_dir(model: str | Path | None, *, progress: bool) -> str | Path:
    if model is not None:
        return model
    from auditor.defaults import default_model_dir

    return default_model_dir(progress=progress)


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return dict(json.loads(path.read_text("utf-8")))
    except (OSError, ValueError):
        return {}


def _write_json(path: Path, record: Mapping[str, Any]) -> None:
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps(record, indent=2, sort_keys=True, default=float) + "\n", "utf-8")
    os.replace(tmp, path)
