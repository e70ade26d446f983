"""``auditor probe``: probes on pooled SAE features, measured against baselines.

Each command parses its options, calls its job in :mod:`auditor.jobs.probe` and prints the
result. ``compare``, ``curve`` and ``eval`` record their run in ``--out`` when given (a
temporary directory otherwise).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from auditor.cli._common import job_dir
from auditor.cli._progress import progress_bars

__all__ = ["probe"]


_LABEL_OPTIONS = [
    click.option("--features", "store_path", required=True, type=click.Path(path_type=Path),
                 help="Feature store of the labelled documents."),
    click.option("--labels", "labels_path", default=None, type=click.Path(path_type=Path),
                 help="Dataset with ids, texts and a label column (JSONL, Parquet, CSV); "
                      "default: the label column the store kept (extract --keep label)."),
    click.option("--label-column", default="label", show_default=True),
    click.option("--id-column", default=None,
                 help="Id column of --labels (default: 'id' when the file has it, else the "
                      "row number, as extract does; '#row': the row number)."),
    click.option("--text-column", default="text", show_default=True,
                 help="Text for the TF-IDF baseline."),
    click.option("--multilabel-sep", default=None,
                 help="Multilabel: each label value is a list of labels, or a string of "
                      "labels joined by this separator (e.g. '|'); an empty value is a "
                      "document without labels."),
]

_PROGRESS = click.option("--progress/--no-progress", default=None,
                         help="Progress bars (default: when stderr is a terminal).")
_RECORD = click.option("--out", type=click.Path(path_type=Path), default=None,
                       help="Directory to record the run in (metrics file and _job.json); "
                            "a temporary one by default.")
_OVERWRITE = click.option("--overwrite", is_flag=True,
                          help="Replace a run recorded in --out with other options or input.")


def _label_options(f: Any) -> Any:
    for opt in reversed(_LABEL_OPTIONS):
        f = opt(f)
    return f


def _str(path: Path | None) -> str | None:
    return None if path is None else str(path)


def _labels(label_column: str, id_column: str | None, text_column: str,
            multilabel_sep: str | None) -> dict[str, Any]:
    return {"label_column": label_column, "id_column": id_column,
            "text_column": text_column, "multilabel_sep": multilabel_sep}


@click.group()
def probe() -> None:
    """Heads from your labels: train, eval, predict, compare, curve.

    Probes on pooled SAE features (or raw activations), measured against plain baselines
    (TF-IDF) on the same folds."""


#: Every representation (auditor.heads.CANDIDATES; a test keeps this in step), the
#: linear ones first: they are what ``auto`` cross-validates unless told otherwise.
_REPRESENTATIONS = "sae-max-log1p, sae-max-binary, sae-mean-log1p, raw, sae-max-lgbm"


def _candidates(value: str | None) -> tuple[str, ...] | None:
    return None if value is None else tuple(v.strip() for v in value.split(",") if v.strip())


_CANDIDATES = click.option(
    "--candidates", default=None, metavar="LIST",
    help="Representations cross-validated, comma-separated, or 'all' (adds LightGBM, "
         "sae-max-lgbm: 3-4x the fit time). Default: the linear ones, sae-max-log1p, "
         "sae-max-binary, sae-mean-log1p, raw.")


@probe.command("compare")
@_label_options
@click.option("--sae", default=None, help="SAE key in the store (default: the only one).")
@_CANDIDATES
@click.option("--folds", type=int, default=5, show_default=True)
@click.option("--json", "as_json", is_flag=True)
@_RECORD
@_OVERWRITE
@_PROGRESS
def probe_compare(store_path: Path, labels_path: Path | None, label_column: str,
                  id_column: str | None, text_column: str, multilabel_sep: str | None,
                  sae: str | None, candidates: str | None, folds: int, as_json: bool,
                  out: Path | None, overwrite: bool, progress: bool | None) -> None:
    """Cross-validate the representations (--candidates) against raw-activation and TF-IDF
    baselines on the same folds."""
    from auditor.jobs import probe as jobs

    options = jobs.ProbeCompareOptions(
        **_labels(label_column, id_column, text_column, multilabel_sep), sae=sae, folds=folds,
        candidates=_candidates(candidates), overwrite=overwrite)
    with job_dir(out) as where:
        result = jobs.run_probe_compare({"features": str(store_path),
                                         "labels": _str(labels_path)},
                                        out=where, options=options,
                                        progress=progress_bars(progress))
    click.echo(json.dumps(result.metrics, indent=2) if as_json else result.table)


@probe.command("curve")
@_label_options
@click.option("--sizes", default="50,200,1000,all", show_default=True,
              help="Training-set sizes (comma-separated; 'all' = every training document).")
@click.option("--folds", type=int, default=5, show_default=True)
@click.option("--json", "as_json", is_flag=True)
@_RECORD
@_OVERWRITE
@_PROGRESS
def probe_curve(store_path: Path, labels_path: Path | None, label_column: str,
                id_column: str | None,
                text_column: str, multilabel_sep: str | None, sizes: str, folds: int,
                as_json: bool, out: Path | None, overwrite: bool,
                progress: bool | None) -> None:
    """Learning curve: macro-F1 of every representation and TF-IDF by number of labels
    (stratified subsamples of each training fold, scored on the held-out fold)."""
    from auditor.jobs import probe as jobs

    try:
        wanted = tuple(None if v.strip() == "all" else int(v)
                       for v in sizes.split(",") if v.strip())
    except ValueError as e:
        raise click.BadParameter(f"{sizes!r}: sizes are integers or 'all'",
                                 param_hint="--sizes") from e
    options = jobs.ProbeCurveOptions(
        **_labels(label_column, id_column, text_column, multilabel_sep), sizes=wanted,
        folds=folds, overwrite=overwrite)
    with job_dir(out) as where:
        result = jobs.run_probe_curve({"features": str(store_path),
                                       "labels": _str(labels_path)},
                                      out=where, options=options,
                                      progress=progress_bars(progress))
    click.echo(json.dumps(result.curves, indent=2) if as_json else result.table)


@probe.command("train")
@_label_options
@click.option("--head", "name", required=True, help="Name of the head to train.")
@click.option("--out", type=click.Path(path_type=Path), default=None,
              help="Head directory to write (default: heads/NAME).")
@click.option("--representation", default="auto", show_default=True,
              help=f"auto (the best cross-validated of --candidates) or one of: "
                   f"{_REPRESENTATIONS} (LightGBM).")
@_CANDIDATES
@click.option("--positive-class", default=None, help="Binary: the flagged class.")
@click.option("--target-precision", type=float, default=None,
              help="Binary: threshold for this precision (default: max F1).")
@click.option("--target-recall", type=float, default=None)
@click.option("--folds", type=int, default=5, show_default=True)
@click.option("--overwrite", is_flag=True)
@_PROGRESS
def probe_train(store_path: Path, labels_path: Path | None, label_column: str,
                id_column: str | None,
                text_column: str, multilabel_sep: str | None, name: str, out: Path | None,
                representation: str, candidates: str | None, positive_class: str | None,
                target_precision: float | None, target_recall: float | None, folds: int,
                overwrite: bool, progress: bool | None) -> None:
    """Train a head: choose the representation by CV against TF-IDF, calibrate, save.

    With --multilabel-sep, a multilabel head: one probe per label, each label's threshold
    at its max out-of-fold F1, no calibration."""
    from auditor.jobs import probe as jobs
    from auditor.jobs.heads import where_is_head

    target = out if out is not None else Path("heads") / name
    options = jobs.ProbeTrainOptions(
        **_labels(label_column, id_column, text_column, multilabel_sep), head=name,
        representation=representation, candidates=_candidates(candidates),
        positive_class=positive_class,
        target_precision=target_precision, target_recall=target_recall, folds=folds,
        overwrite=overwrite)
    result = jobs.run_probe_train({"features": str(store_path), "labels": _str(labels_path)},
                                  out=target, options=options,
                                  progress=progress_bars(progress))
    click.echo(result.table)
    if result.task == "multilabel":
        click.echo("\nthresholds: " + ", ".join(
            f"{c} {t:.3f}" for c, t in result.thresholds.items()))
    click.echo(f"\nwrote head {result.head!r} to {target}")
    found = where_is_head(name)
    if found is not None and Path(found).resolve() == target.resolve():
        click.echo(f"name it as: --head {name}")
    elif found is not None:
        click.echo(f"note: the name {name!r} finds {found} first (see 'auditor heads list'); "
                   f"name this head by its directory: --head {target}")
    else:
        click.echo(f"note: {target.parent} is not on the heads search path; name this head "
                   f"by its directory (--head {target}) or add {target.parent} to "
                   f"$AUDITOR_HEADS_PATH")


@probe.command("eval")
@click.argument("head_ref", metavar="HEAD")
@_label_options
@click.option("--json", "as_json", is_flag=True)
@_RECORD
@_OVERWRITE
@_PROGRESS
def probe_eval(head_ref: str, store_path: Path, labels_path: Path | None,
               label_column: str, id_column: str | None, text_column: str,
               multilabel_sep: str | None,
               as_json: bool, out: Path | None, overwrite: bool,
               progress: bool | None) -> None:
    """Metrics of a trained head (name or directory) on labelled features.

    Multilabel heads: label values are lists or strings split on --multilabel-sep (by
    default the separator the head was trained with, else '|')."""
    from auditor.jobs import probe as jobs

    options = jobs.ProbeEvalOptions(
        **_labels(label_column, id_column, text_column, multilabel_sep), overwrite=overwrite)
    with job_dir(out) as where:
        result = jobs.run_probe_eval({"head": head_ref, "features": str(store_path),
                                      "labels": _str(labels_path)},
                                     out=where, options=options,
                                     progress=progress_bars(progress))
    metrics = result.metrics
    if as_json:
        click.echo(json.dumps(metrics, indent=2))
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


@probe.command("predict")
@click.argument("head_refs", metavar="HEAD...", nargs=-1, required=True)
@click.option("--features", "store_path", required=True, type=click.Path(path_type=Path))
@click.option("--out", required=True, type=click.Path(path_type=Path),
              help="Predictions file (.parquet or .jsonl), or a directory (no suffix) to "
                   "record the run in (predictions.parquet and _job.json).")
@click.option("--explain", type=int, default=0, show_default=True,
              help="Top contributing SAE features per document, of each kind: fired and "
                   "did not fire (0: none).")
@click.option("--partial", is_flag=True,
              help="Label what an unfinished store holds (refused otherwise).")
@click.option("--labels", "labels_dir", type=click.Path(path_type=Path), default=None,
              help="Feature dictionary directory to label --explain features from "
                   "(default: found by the SAE's sha256).")
@_OVERWRITE
@_PROGRESS
def probe_predict(head_refs: tuple[str, ...], store_path: Path, out: Path,
                  explain: int, partial: bool, labels_dir: Path | None, overwrite: bool,
                  progress: bool | None) -> None:
    """Apply heads to an existing feature store."""
    from auditor.jobs import probe as jobs

    data = {"features": str(store_path), "heads": list(head_refs)}
    options = jobs.ProbePredictOptions(explain=explain, allow_partial=partial,
                                       labels=_str(labels_dir), overwrite=overwrite)
    if out.suffix:  # a file (its suffix says the format)
        result = jobs.predict_to_file(data, out, options=options,
                                      progress=progress_bars(progress))
        written = out
    else:
        result = jobs.run_probe_predict(data, out=out, options=options,
                                        progress=progress_bars(progress))
        written = out / result.predictions
    click.echo(f"wrote {result.documents:,} predictions to {written}")
    if result.dictionary and result.dictionary.get("note"):
        click.echo(f"note: {result.dictionary['note']}")
    elif result.dictionary:
        click.echo(f"feature labels from {result.dictionary['path']} "
                   f"({result.dictionary['origin']})")
