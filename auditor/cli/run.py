"""``auditor classify``, ``audit`` and ``explain``: the model and the heads on a dataset."""

from __future__ import annotations

import json
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import click

from auditor._files import check_writable
from auditor.cli._common import job_dir
from auditor.cli._progress import progress_bars

_TEXT = click.option("--text", "as_text", is_flag=True,
                     help="Take TEXT as a text even if it names a file.")

__all__ = ["audit", "classify", "explain"]

_RUN_OPTIONS = [
    click.option("--head", "head_refs", multiple=True,
                 help="Head name (see `auditor heads list`) or directory; repeat "
                      "(default: the shipped heads)."),
    click.option("--model", default=None, help="Model directory (default: the embedded one)."),
    click.option("--sae", "sae_paths", multiple=True, help="SAE (default: the shipped one)."),
    click.option("--text-column", default="text", show_default=True),
]


_LABELS = click.option(
    "--labels", "labels_dir", type=click.Path(path_type=Path), default=None,
    help="Feature dictionary directory to label features from (default: found by the SAE's "
         "sha256 beside the SAE, in the models dir, the data home or "
         "$AUDITOR_DICTIONARY_PATH).")


def _str(path: Path | None) -> str | None:
    return None if path is None else str(path)


def _dictionary_note(info: Mapping[str, Any] | None) -> None:
    """Print how to get feature labels when no dictionary was found."""
    if info and info.get("note"):
        click.echo(f"note: {info['note']}")


def _run_options(f: Any) -> Any:
    """The options every command that runs the model and heads on a dataset shares."""
    for opt in reversed(_RUN_OPTIONS):
        f = opt(f)
    return f


def _extract_options(model: str | None, sae_paths: tuple[str, ...], text_column: str,
                     id_column: str | None, **kw: Any) -> Any:
    from auditor.jobs import ExtractOptions

    return ExtractOptions(model=model, saes=sae_paths, text_column=text_column,
                          id_column=id_column, **kw)


@click.command()
@click.argument("source", metavar="TEXT|FILE")
@click.option("--out", type=click.Path(path_type=Path), default=None,
              help="Write predictions to .parquet or .jsonl (default: print them).")
@_run_options
@click.option("--explain", "explain", type=int, default=0, is_flag=False, flag_value=5,
              help="Top contributing SAE features per head, of each kind: fired and did not "
                   "fire (--explain alone: 5).")
@click.option("--store", type=click.Path(path_type=Path), default=None,
              help="Keep the extracted features in this store.")
@click.option("--id-column", default=None,
              help="Column with document ids (default: 'id' when the input has it, else the "
                   "row number; '#row': the row number).")
@click.option("--skip-bad-rows", is_flag=True)
@click.option("--device", default=None)
@click.option("--progress/--no-progress", default=None)
@_LABELS
@_TEXT
def classify(source: str, out: Path | None, head_refs: tuple[str, ...], explain: int,
             store: Path | None, model: str | None, sae_paths: tuple[str, ...],
             text_column: str, id_column: str | None, skip_bad_rows: bool,
             device: str | None, progress: bool | None, labels_dir: Path | None,
             as_text: bool) -> None:
    """Label TEXT or FILE with the heads.

    An existing file or directory, or a name ending .jsonl/.parquet/.csv/.txt/.gz (which
    must exist), is a dataset; anything else is one text (--text forces that)."""
    from auditor.jobs import classify as jobs
    from auditor.jobs import text_or_dataset

    if out is not None and out.suffix not in (".parquet", ".jsonl"):
        raise click.BadParameter("predictions are written as .parquet or .jsonl",
                                 param_hint="--out")
    if out is not None:  # before the extraction, which a failing copy would lose
        check_writable(out.parent)
    with job_dir(None) as where:
        path, literal = text_or_dataset(source, out=where / "input", text=as_text)
        options = jobs.ClassifyOptions(
            heads=head_refs or None, explain=explain,
            store=str(store.resolve()) if store is not None else "store",
            predictions="predictions" + (out.suffix if out is not None else ".parquet"),
            extract=_extract_options(model, sae_paths, text_column,
                                     "id" if literal else id_column,
                                     skip_bad_rows=skip_bad_rows, device=device),
            inline_rows=0 if out is not None else 1_000_000, labels=_str(labels_dir))
        result = jobs.run_classify(path, out=where / "run", options=options,
                                   progress=progress_bars(progress))
        if out is not None:
            out.parent.mkdir(parents=True, exist_ok=True)
            # the predictions and their sidecars (a JSONL file's provenance)
            for written in (where / "run").glob(result.predictions + "*"):
                shutil.copyfile(written, f"{out}{written.name[len(result.predictions):]}")
            click.echo(f"wrote {result.documents:,} rows to {out}"
                       + (f" (ids: {result.ids})" if result.ids and not literal else ""))
            _dictionary_note(result.dictionary)
            return
    _print_predictions(result.rows or ())
    _dictionary_note(result.dictionary)


@click.command()
@click.argument("input_path", metavar="INPUT", type=click.Path(path_type=Path))
@click.option("--out", required=True, type=click.Path(path_type=Path),
              help="Output directory: store/, predictions.parquet, report.html/json/md.")
@_run_options
@click.option("--explain", type=int, default=5, show_default=True,
              help="Top contributing SAE features kept per document and head.")
@click.option("--previous", type=click.Path(path_type=Path), default=None,
              help="report.json of an earlier audit of the same pipeline (drift).")
@click.option("--id-column", default=None,
              help="Column with document ids (default: 'id' when the input has it, else the "
                   "row number; '#row': the row number).")
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
    from auditor.jobs import audit as jobs

    options = jobs.AuditOptions(
        heads=head_refs or None, explain=explain,
        previous=str(previous) if previous is not None else None,
        formats=tuple(f.strip() for f in formats.split(",") if f.strip()),
        extract=_extract_options(model, sae_paths, text_column, id_column,
                                 skip_bad_rows=skip_bad_rows, device=device),
        overwrite=overwrite)
    result = jobs.run_audit(str(input_path), out=str(out), options=options,
                            progress=progress_bars(progress))
    click.echo(f"audited {result.documents:,} documents with heads "
               f"{', '.join(result.heads) or '(none installed)'}")
    if result.ids is not None:
        click.echo(f"  ids          {result.ids}")
    click.echo(f"  features     {out / result.store}")
    if result.predictions is not None:
        click.echo(f"  predictions  {out / result.predictions}")
    for fmt, path in result.reports.items():
        click.echo(f"  {fmt:<12} {out / path}")


@click.command()
@click.argument("source", metavar="TEXT|FILE")
@_run_options
@click.option("--top", type=int, default=5, show_default=True,
              help="Contributing features shown per document and head, of each kind "
                   "(fired / did not fire).")
@click.option("--check", is_flag=True,
              help="Faithfulness: zero each decision's top-k present features / make its "
                   "top-k absent ones fire and re-score, vs k random same-kind features.")
@click.option("--k", "k", type=int, default=5, show_default=True,
              help="Features changed per kind.")
@click.option("--random", "n_random", type=int, default=10, show_default=True,
              help="Random draws per document for the control.")
@click.option("--no-tokens", is_flag=True, help="Skip token-level evidence.")
@click.option("--id-column", default=None)
@click.option("--json", "as_json", is_flag=True)
@_LABELS
@_TEXT
def explain(source: str, head_refs: tuple[str, ...], top: int, check: bool, k: int,
            n_random: int, no_tokens: bool, model: str | None, sae_paths: tuple[str, ...],
            text_column: str, id_column: str | None, as_json: bool, labels_dir: Path | None,
            as_text: bool) -> None:
    """Why each head labelled TEXT (or each document of FILE) as it did (TEXT or FILE as
    for classify)."""
    from auditor.jobs import explain as jobs
    from auditor.jobs import text_or_dataset

    with job_dir(None) as where:
        path, literal = text_or_dataset(source, out=where / "input", text=as_text)
        options = jobs.ExplainOptions(
            heads=head_refs or None, top=top, check=check, k=k, n_random=n_random,
            tokens=not no_tokens, labels=_str(labels_dir),
            extract=_extract_options(model, sae_paths, text_column,
                                     "id" if literal else id_column))
        result = jobs.run_explain(path, out=where / "run", options=options,
                                  progress=progress_bars(None)).to_dict()
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
            click.echo("    present (fired):" if e["present"] else
                       "    present (fired): none")
            for f in e["present"]:
                label = f" {f['label']}" if f["label"] else ""
                click.echo(f"      f{f['feature']:<6} {f['contribution']:+.3f}  act "
                           f"{f['activation']:.2f}{label}")
                if f["evidence"]:
                    click.echo(f"             {f['evidence']}")
                if f.get("example"):
                    click.echo(f"             e.g. {f['example']}")
            if e["absent"]:
                click.echo("    absent (did not fire):")
            for f in e["absent"]:
                label = f" ({f['label']})" if f["label"] else ""
                click.echo(f"      f{f['feature']:<6} {f['contribution']:+.3f}  did not "
                           f"fire{label}")
                if f.get("example"):
                    click.echo(f"             e.g. {f['example']}")
    for name, c in result["faithfulness"].items():
        click.echo(f"faithfulness {name} (k={c['k']}, {c['documents']} documents; drop of "
                   f"p(label), {c['confidence']:.0%} bootstrap CI; typical firing value: "
                   f"{c['typical_value']})")
        for kind, what in (("present", "present (fired), zeroed"),
                           ("absent", "absent (did not fire), made to fire")):
            click.echo(f"  {what}: {_faithfulness_line(c[kind])}")
    _dictionary_note(result.get("dictionary"))


def _ci(d: Mapping[str, Any]) -> str:
    return "–" if d.get("mean") is None else \
        f"{d['mean']:+.4f} [{d['low']:+.4f}, {d['high']:+.4f}]"


def _faithfulness_line(part: Mapping[str, Any]) -> str:
    """One kind of evidence's faithfulness result in one line."""
    if not part["documents"]:
        skipped = part.get("untestable") or 0
        return (f"untested: in {skipped} document(s) the named features never fire in the "
                f"explained documents and no dictionary gives a typical value (auditor "
                f"features build)") if skipped else "no document has such evidence"
    return (f"{part['documents']} docs, drop {_ci(part['drop'])}, flips "
            f"{part['flip_rate']:.0%}; random same-kind {_ci(part['control_drop'])}, flips "
            f"{part['control_flip_rate']:.0%}; difference {_ci(part['difference'])}")


def _print_predictions(rows: Sequence[Mapping[str, Any]]) -> None:
    heads = [c[: -len(".label")] for c in (rows[0] if rows else {}) if c.endswith(".label")]
    for row in rows:
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
                fired = f"(act {e['activation']:.2f})" if e.get("present", True) else \
                    "(did not fire)"
                click.echo(f"      f{e['feature']:<6} {e['contribution']:+.3f} "
                           f"{fired}{name}")
                if e.get("example"):
                    click.echo(f"             e.g. {e['example']}")
