"""An SAE's card: ``CARD.md`` rendered from its config, training record and evaluation.

The card says what the SAE is (architecture, hook, model, input scale, weights and their
hash), how it was trained (tokens, text, settings, the chain of runs it continued) and how
well it reconstructs (FVU, L0, dead and dense latents, ΔCE, FVU by position and genre,
feature density), from the files training and evaluation leave.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from auditor import __version__
from auditor._files import atomic_write_text, read_json_optional
from auditor._versions import libraries_text
from auditor.errors import ConfigError
from auditor.sae.train import TRAINING_FILENAME
from auditor.sae.train_config import TrainConfig

__all__ = ["CARD_FILENAME", "EVALUATION_FILENAME", "width_ratio", "write_card"]

#: The evaluation record ``auditor sae eval`` writes.
EVALUATION_FILENAME = "evaluation.json"
#: The card.
CARD_FILENAME = "CARD.md"


def width_ratio(d_sae: int, d_model: int) -> str:
    """An SAE's width as a multiple of ``d_model``: whole when it is, else 3 significant
    digits (an SAE narrower than the model is not "0×").

    Examples
    --------
    >>> [width_ratio(w, 640) for w in (10240, 512, 1000, 8000, 32)]
    ['16', '0.8', '1.56', '12.5', '0.05']
    """
    ratio = d_sae / d_model
    return str(int(ratio)) if ratio.is_integer() else f"{ratio:.3g}"


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


def write_card(sae_dir: str | Path, *, extra: Mapping[str, Any] | None = None,
               evaluation: str | Path | None = None, out: str | Path | None = None) -> Path:
    """Render ``CARD.md`` for an SAE directory from its config, training and evaluation.

    Parameters
    ----------
    sae_dir
        The SAE directory (auditor format), with its ``training.json`` when it was
        trained by auditor.
    extra
        Added sections: ``{"title": markdown}`` in order (e.g. the corpus recipe and the
        layer comparison).
    evaluation
        The evaluation record to render (``evaluation.json`` of ``auditor sae eval``);
        default ``sae_dir/evaluation.json``. A missing or unreadable record leaves the
        evaluation section out.
    out
        Where the card is written; default ``sae_dir/CARD.md``.

    Returns
    -------
    Path
        The card's path.
    """
    from auditor.sae.formats import load_sae

    root = Path(sae_dir)
    sae = load_sae(root)
    training = read_json_optional(root / TRAINING_FILENAME)
    evaluation_path = Path(evaluation) if evaluation is not None else root / EVALUATION_FILENAME
    record = read_json_optional(evaluation_path)
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
        f"({width_ratio(cfg.d_sae, cfg.d_in)}× d_model {cfg.d_in}) |",
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
    if record:
        m = record["metrics"]
        lines += [_evaluation_heading(record.get("cache") or {}), "",
                  "| metric | value |", "|---|---|",
                  f"| FVU | {m['fvu']:.4f} |",
                  f"| FVU without the top principal direction "
                  f"(it carries {m['top_direction_variance']:.1%} of the variance) | "
                  f"{m['fvu_without_top_direction']:.4f} |",
                  f"| L0 | {m['l0']:.1f} |",
                  f"| dead latents (never fire on these tokens) | {m['dead_frac']:.2%} |",
                  f"| dense latents (> 10 % of tokens) | {m['dense_frac']:.2%} |",
                  f"| tokens | {m['n_tokens']:,} |"]
        whole = record.get("whole_cache")
        if whole:
            lines += [f"| dead latents over all {whole['n_tokens']:,} cached tokens "
                      f"(training split included) | {whole['dead_frac']:.2%} |"]
        ce = record.get("ce")
        if ce:
            lines += [f"| CE clean / SAE / zero-ablated | {ce['ce_clean']:.4f} / "
                      f"{ce['ce_sae']:.4f} / {ce['ce_zero']:.4f} |",
                      f"| ΔCE | {ce['delta_ce']:.4f} |",
                      f"| next-token loss recovered | {ce['loss_recovered']:.1%} |"]
        if record.get("libraries"):
            lines += [f"| libraries | {libraries_text(record['libraries'])} |"]
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
    path = Path(out) if out is not None else root / CARD_FILENAME
    atomic_write_text(path, "\n".join(lines))
    return path
