"""The explain job: why did each head label these documents as it did, and is that true?

Extracts the documents with per-token codes into ``out/store``, then per head and
document: the label and probability, and the evidence in two kinds (see
:mod:`auditor.explain.contributions`): the top contributing SAE features that *fired*
(``present``, with the tokens each fired on) and the top features whose *not firing*
contributed (``absent``), with dictionary labels when installed; with ``check``, the
faithfulness test of :func:`auditor.explain.faithfulness` (typical firing values from the
dictionary's ``p50`` when there is one, else from the explained documents). Everything is
written to ``out/explanations.json`` and returned.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from auditor.cancel import CancelToken, check_cancel
from auditor.errors import ConfigError
from auditor.jobs._contract import JobOptions, JobResult, json_values, run_recorded
from auditor.jobs._pipeline import Pipeline, resolve_defaults
from auditor.jobs.extract import ExtractOptions
from auditor.progress import Progress, ProgressCallback

if TYPE_CHECKING:
    from auditor.features.locate import Annotations

__all__ = ["ExplainOptions", "ExplainResult", "run_explain"]

EXPLANATIONS_FILE = "explanations.json"


@dataclass(frozen=True)
class ExplainOptions(JobOptions):
    """Settings of one explain job.

    Parameters
    ----------
    heads
        Head names or directories (default: every installed head).
    top
        Contributing features shown per document and head, of each kind (present and
        absent).
    check
        Run the faithfulness test: zero the top-``k`` present features, make the top-``k``
        absent ones fire, each against ``n_random`` draws of ``k`` same-kind features.
    k, n_random
        Features changed per kind, and random draws per document for the controls.
    tokens
        Include token-level evidence for the top features.
    max_docs
        Refuse larger inputs: explanations are for inspecting documents, not corpora (the
        audit job explains corpora).
    extract
        How the documents are read and which model and SAEs run.
    labels
        The feature dictionary labels and example contexts come from: a dictionary
        directory (or a directory of dictionaries) that must be of the SAE; None finds it
        by the SAE's sha256 (see :func:`auditor.features.locate.find_dictionary`).
    """

    heads: tuple[str, ...] | None = None
    top: int = 5
    check: bool = False
    k: int = 5
    n_random: int = 10
    tokens: bool = True
    max_docs: int = 1000
    extract: ExtractOptions = field(default_factory=ExtractOptions)
    labels: str | None = None

    def validate(self) -> None:
        for name in ("top", "k", "n_random", "max_docs"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be positive", field=name)


@dataclass(frozen=True)
class ExplainResult(JobResult):
    """Each document's explanations per head, the faithfulness checks and provenance.

    ``documents``: each has ``id`` and per head ``label``, ``p``, ``present`` (features
    that fired: ``feature``, ``label``, ``contribution``, ``activation``, ``tokens`` and
    ``evidence``) and ``absent`` (features whose not firing contributed: the same with
    activation 0 and no tokens). For multilabel heads ``label`` is the explained label (see
    :meth:`Head.explained_labels`) and ``labels`` the labels present. ``faithfulness``:
    per head, :func:`auditor.explain.faithfulness` without its per-document lists. Each
    feature entry has ``label`` and ``example`` (its top context) from the SAE's feature
    dictionary, None without one; ``dictionary`` says where the labels came from
    (``path``, ``origin``) or, without a dictionary, gives the ``note`` on building one.
    """

    documents: tuple[dict[str, Any], ...]
    faithfulness: dict[str, Any]
    heads: tuple[str, ...]
    provenance: dict[str, Any]
    written: str = EXPLANATIONS_FILE
    dictionary: dict[str, Any] | None = None


def run_explain(
    input: str | Path,
    *,
    out: str | Path,
    options: ExplainOptions,
    progress: ProgressCallback | None = None,
    cancel: CancelToken | None = None,
    pipeline: Pipeline | None = None,
) -> ExplainResult:
    """Explain every head's decision on each document of a (small) dataset.

    Parameters
    ----------
    input
        The documents (JSONL, Parquet, CSV, text).
    out
        Output directory: ``store/`` (with per-token codes) and ``explanations.json``.
    options
        See :class:`ExplainOptions`.
    progress
        The extraction's ``docs`` stage, then an ``explain`` stage (one unit per head).
    cancel
        Checked at every extraction batch and between heads.
    pipeline
        A model and SAEs already loaded; must match ``options.extract``.

    Returns
    -------
    ExplainResult

    Raises
    ------
    ConfigError
        More than ``max_docs`` documents, or no heads.
    """
    from auditor.heads import load_heads
    from auditor.io import count_documents
    from auditor.jobs.classify import _head_inputs, heads_extract_settings

    n = count_documents(input)
    if n is not None and n > options.max_docs:
        raise ConfigError(f"{n:,} documents: explain inspects at most {options.max_docs:,} "
                          f"(audit explains corpora)", field="max_docs")
    loaded = load_heads(list(options.heads) if options.heads is not None else None)
    if not loaded:
        raise ConfigError("no heads are installed", field="heads")
    extract = options.extract.with_config({**heads_extract_settings(loaded),
                                           "save_tokens": options.tokens})

    def work(root: Path) -> ExplainResult:
        from auditor._files import write_json
        from auditor.explain import faithfulness
        from auditor.features.locate import load_annotations, sae_of
        from auditor.jobs.extract import run_extract
        from auditor.store import read_metadata

        store = root / "store"
        run_extract(input, out=store, options=extract, progress=progress, cancel=cancel,
                    pipeline=pipeline)
        tokenizer = None
        if options.tokens:
            from transformers import AutoTokenizer

            model_dir = pipeline.model_dir if pipeline is not None else \
                resolve_defaults(extract.model, extract.saes)[0]
            tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
        meta = read_metadata(store)
        sha, sae_file = sae_of(meta)
        notes = load_annotations(sha, labels_dir=options.labels, sae_path=sae_file)
        docs: dict[str, dict[str, Any]] = {}
        checks: dict[str, Any] = {}
        with Progress(progress, job="explain").stage("explain", total=len(loaded)) as stage:
            for head in loaded:
                check_cancel(cancel, f"head {head.name}")
                if not head.read(store).doc_ids:
                    stage.advance(1)
                    continue  # no document: nothing to explain or to check
                _explain_head(head, store, options, notes, tokenizer, docs)
                if options.check:
                    inputs = head.read(store)
                    typical = _dictionary_typical(notes, inputs.activations.shape[1])
                    check = faithfulness(head, inputs, k=options.k, n_random=options.n_random,
                                         typical=typical)
                    for kind in ("present", "absent"):
                        for key in ("doc_ids", "per_document", "control_per_document"):
                            check[kind].pop(key, None)
                    checks[head.name] = check
                stage.advance(1)
        result = ExplainResult(documents=tuple(json_values(list(docs.values()))),
                               faithfulness=json_values(checks),
                               heads=tuple(h.name for h in loaded),
                               provenance=json_values(meta), dictionary=notes.info())
        write_json(root / EXPLANATIONS_FILE, result.to_dict())
        return result

    return run_recorded("explain", out=out, options=options,
                        input={"data": input, **_head_inputs(options.heads),
                               **({"labels": options.labels} if options.labels else {})},
                        result_type=ExplainResult, work=work)


def _explain_head(head: Any, store: Path, options: ExplainOptions,
                  notes: Annotations, tokenizer: Any,
                  docs: dict[str, dict[str, Any]]) -> None:
    """Add one head's explanation of every document of ``store`` to ``docs``."""
    from auditor.explain.tokens import render_evidence, token_evidence

    inputs = head.read(store)
    proba = head.predict_proba(inputs)
    predicted = head.explained_labels(proba)
    sets = head.label_sets(proba) if head.config.multilabel else None
    contrib = head.contributions(inputs)
    coverage = contrib.coverage()
    classes = head.config.classes
    for i, doc_id in enumerate(inputs.doc_ids):
        label = predicted[i]
        out = contrib.output_index(label)
        ev = contrib.evidence(i, output=out, k=options.top, activations=inputs.activations)
        evidence: dict[int, Any] = {}
        toks: list[tuple[int, int, str | None]] = []
        if options.tokens and ev.present:
            toks, evidence = token_evidence(store, doc_id, [f.feature for f in ev.present],
                                            sae=head.config.sae, tokenizer=tokenizer)
        entry = {
            "label": label, "p": float(proba[i, classes.index(label)]),
            **({"labels": list(sets[i])} if sets is not None else {}),
            "explains": str(contrib.outputs[out]),
            "explained_share": float(coverage[i, out]),
            "present": [{
                "feature": int(f.feature), "label": notes.label(f.feature),
                "example": notes.example(f.feature),
                "contribution": float(f.contribution), "activation": float(f.activation),
                "tokens": [h._asdict() for h in evidence.get(f.feature, [])[:5]],
                "evidence": (render_evidence(toks, evidence[f.feature])
                             if f.feature in evidence else None),
            } for f in ev.present],
            "absent": [{
                "feature": int(f.feature), "label": notes.label(f.feature),
                "example": notes.example(f.feature),
                "contribution": float(f.contribution), "activation": 0.0,
                "tokens": [], "evidence": None,
            } for f in ev.absent],
        }
        docs.setdefault(str(doc_id), {"id": str(doc_id)})[head.name] = entry


def _dictionary_typical(notes: Annotations, n_features: int) -> Any:
    """Each feature's typical firing value (``p50``) from the SAE's dictionary, or None
    (the faithfulness test then uses the explained documents)."""
    import numpy as np

    from auditor.errors import AuditorError
    from auditor.features.files import load_feature_table

    if notes.located is None:
        return None
    try:
        table = load_feature_table(notes.located.path, verify=False)
    except AuditorError:
        return None
    values = np.full(n_features, np.nan)
    feats = table["feature"].to_numpy()
    p50 = table["p50"].cast(float).fill_null(float("nan")).to_numpy()
    keep = feats < n_features
    values[feats[keep]] = p50[keep]
    return values
