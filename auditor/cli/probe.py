"""``auditor probe``: probes on pooled SAE features, measured against baselines."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

__all__ = ["probe"]

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


@click.group()
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
