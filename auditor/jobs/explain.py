"""The explain job: why did each head label these documents as it did, and is that true?

Re-extracts the documents with per-token codes, then per head and document: the label and
probability, the top contributing SAE features (with dictionary labels when installed), the
tokens each of them fired on, and — with ``check`` — the faithfulness test of
:func:`auditor.explain.faithfulness`.
"""

from __future__ import annotations

import dataclasses
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = ["run_explain"]


def run_explain(
    input_path: str | Path, *, heads: Sequence[str] | None = None, top: int = 5,
    check: bool = False, k: int = 5, n_random: int = 10, tokens: bool = True,
    model: str | Path | None = None, saes: Sequence[str] = (), text_column: str = "text",
    id_column: str | None = None, max_docs: int = 1000, device: str | None = None,
    progress: bool = False,
) -> dict[str, Any]:
    """Explain every head's decision on each document of a (small) dataset.

    Parameters
    ----------
    input_path
        The documents (JSONL, Parquet, CSV, text).
    heads
        Head names or directories (default: every installed head).
    top
        Contributing features shown per document and head.
    check
        Run the faithfulness test (top-``k`` vs ``n_random`` random ``k`` removals).
    tokens
        Include token-level evidence for the top features.
    max_docs
        Refuse larger inputs: explanations are for inspecting documents, not corpora
        (``auditor audit`` explains corpora).

    Returns
    -------
    dict
        ``{"documents": [...], "faithfulness": {head: …}, "provenance": …}``; each document
        has ``id`` and per head ``label``, ``p`` and ``features`` (``feature``, ``label``,
        ``contribution``, ``activation``, ``tokens`` and ``evidence``). For multilabel
        heads ``label`` is the explained label (see :meth:`Head.explained_labels`) and
        ``labels`` the labels present.

    Raises
    ------
    ConfigError
        More than ``max_docs`` documents, or no heads.
    """
    from auditor.errors import ConfigError
    from auditor.explain import faithfulness
    from auditor.explain.tokens import render_evidence, token_evidence
    from auditor.heads import load_heads
    from auditor.io import count_documents
    from auditor.jobs.audit import dictionary_annotations
    from auditor.jobs.classify import heads_extract_config
    from auditor.jobs.extract import resolve_defaults, run_extract
    from auditor.store import read_metadata

    n = count_documents(input_path)
    if n is not None and n > max_docs:
        raise ConfigError(f"{n:,} documents: explain inspects at most {max_docs:,} (use "
                          f"'auditor audit' for corpora)", field="max_docs")
    loaded = load_heads(heads)
    if not loaded:
        raise ConfigError("no heads are installed", field="heads")
    config = dataclasses.replace(heads_extract_config(loaded), save_tokens=tokens)
    model, saes = resolve_defaults(model, saes, progress=progress)
    tokenizer = None
    if tokens:
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(str(model))
    with tempfile.TemporaryDirectory(prefix="auditor-explain-") as tmp:
        store = Path(tmp) / "store"
        run_extract(input_path, out=store, model=model, saes=saes, config=config,
                    text_column=text_column, id_column=id_column, device=device,
                    progress=progress)
        meta = read_metadata(store)
        sae_info = list((meta.get("saes") or {}).values())
        labels, _ = dictionary_annotations(sae_info[0].get("path") if len(sae_info) == 1
                                           else None)
        docs: dict[str, dict[str, Any]] = {}
        checks: dict[str, Any] = {}
        for head in loaded:
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
                feats = contrib.top(i, output=out, k=top, activations=inputs.activations)
                evidence: dict[int, Any] = {}
                toks: list[tuple[int, int, str | None]] = []
                if tokens:
                    toks, evidence = token_evidence(store, doc_id, [f.feature for f in feats],
                                                    sae=head.config.sae, tokenizer=tokenizer)
                entry = {
                    "label": label, "p": float(proba[i, classes.index(label)]),
                    **({"labels": sets[i]} if sets is not None else {}),
                    "explains": str(contrib.outputs[out]),
                    "explained_share": float(coverage[i, out]),
                    "features": [{
                        "feature": f.feature, "label": (labels or {}).get(f.feature),
                        "contribution": f.contribution, "activation": f.activation,
                        "tokens": [h._asdict() for h in evidence.get(f.feature, [])[:5]],
                        "evidence": (render_evidence(toks, evidence[f.feature])
                                     if f.feature in evidence else None),
                    } for f in feats],
                }
                docs.setdefault(doc_id, {"id": doc_id})[head.name] = entry
            if check:
                checks[head.name] = faithfulness(head, inputs, k=k, n_random=n_random)
    return {"documents": list(docs.values()), "faithfulness": checks,
            "heads": [h.name for h in loaded], "provenance": meta}
