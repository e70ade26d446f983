"""A head's in-domain and transfer tables, and what the transfer evaluation costs.

For one task of a heads work directory (``scripts/build_heads.py --out DIR``: the train
store ``DIR/<task>/train.store`` with ``label`` and a group column, texts in
``DIR/<task>/train.jsonl``), or for a synthetic store (``--synthetic``: random SAE
features with a signal shared by every group and a spurious feature per group, written to a
temporary store in seconds), prints:

* in-domain: 5-fold cross-validation of every candidate and TF-IDF (the baseline run);
* transfer: leave one group out, every candidate at each regularisation factor and TF-IDF,
  all labels and at most ``--n-labels`` per class (:mod:`auditor.heads.transfer`);
* the choice by CV and by transfer;
* seconds of each, and the transfer run's time as a ratio of the CV run measured in the
  same process (machines are noisy: compare ratios, not seconds).

Usage::

    .venv/bin/python bench/heads.py --work runs/heads --task safety
    .venv/bin/python bench/heads.py --synthetic [--docs 300 --groups 3 --d-sae 2000]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from auditor.heads import DEFAULT_CANDIDATES, best_candidate, cross_validate_candidates, load_split
from auditor.heads.card import metrics_table, transfer_section
from auditor.heads.transfer import read_groups, select_by_transfer


def synthetic_store(root: Path, *, docs: int, groups: int, d_sae: int, active: int,
                    seed: int = 0) -> tuple[Path, dict[str, str]]:
    """A store of ``docs`` two-class documents in ``groups`` sources (``label``,
    ``source`` passthrough; max and mean pooling) and their texts.

    Feature 0 fires for ``pos`` in every source but only 80 % of the time (the signal that
    transfers); feature ``1 + g`` fires for every ``pos`` of source ``g`` (perfect within a
    source, useless outside it); ``active`` random features per document are noise.
    """
    from auditor.store import FeatureStoreWriter

    rng = np.random.default_rng(seed)
    rows: dict[str, list[Any]] = {k: [] for k in ("doc_id", "row", "n_tokens", "s.indices",
                                                  "s.max", "s.mean", "s.n_excluded",
                                                  "label", "source")}
    texts = {}
    for i in range(docs):
        g, pos = i % groups, bool(rng.random() < 0.5)
        idx = set(rng.choice(np.arange(1 + groups, d_sae), size=active, replace=False).tolist())
        if pos and rng.random() < 0.8:
            idx.add(0)
        if pos:
            idx.add(1 + g)
        ind = sorted(idx)
        vals = np.abs(rng.normal(1.0, 0.5, size=len(ind))).round(3).tolist()
        doc = f"d{i}"
        for k, v in (("doc_id", doc), ("row", i), ("n_tokens", 50), ("s.indices", ind),
                     ("s.max", vals), ("s.mean", [v / 4 for v in vals]), ("s.n_excluded", 0),
                     ("label", "pos" if pos else "neg"), ("source", f"src{g}")):
            rows[k].append(v)
        texts[doc] = f"w{g}{'pos' if pos else 'neg'} " + " ".join(
            f"t{j}" for j in rng.integers(0, 500, size=20))
    store = root / "train.store"
    w = FeatureStoreWriter(store, provenance={"saes": {"s": {"d_sae": d_sae}},
                                              "pooling": ["max", "mean"]})
    w.write_shard(0, pl.DataFrame(rows))
    w.finalize(summary={}, n_shards=1)
    return store, texts


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--work", type=Path, help="heads work directory (scripts/build_heads.py)")
    ap.add_argument("--task", help="task name (a subdirectory of --work)")
    ap.add_argument("--synthetic", action="store_true", help="tiny random store instead")
    ap.add_argument("--docs", type=int, default=300)
    ap.add_argument("--groups", type=int, default=3)
    ap.add_argument("--d-sae", type=int, default=2000)
    ap.add_argument("--active", type=int, default=30, help="synthetic: features per document")
    ap.add_argument("--raw-dim", type=int, default=0,
                    help="synthetic: also dense raw activations of this width")
    ap.add_argument("--group-column", default="source")
    ap.add_argument("--candidates", nargs="*", default=list(DEFAULT_CANDIDATES))
    ap.add_argument("--n-labels", type=int, default=200)
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--json", type=Path, help="also write the results here")
    args = ap.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        if args.synthetic:
            store, texts = synthetic_store(Path(tmp), docs=args.docs, groups=args.groups,
                                           d_sae=args.d_sae, active=args.active)
            what = (f"synthetic: {args.docs} docs, {args.groups} sources, d_sae {args.d_sae}, "
                    f"{args.active} active")
        else:
            if args.work is None or args.task is None:
                ap.error("give --work and --task, or --synthetic")
            store = args.work / args.task / "train.store"
            with (args.work / args.task / "train.jsonl").open(encoding="utf-8") as f:
                texts = {r["id"]: r["text"] for r in map(json.loads, f)}
            what = f"{args.work}/{args.task}"
        split = load_split(store, "label", texts=texts)
        groups = read_groups(store, split.doc_ids, args.group_column)
    if args.synthetic and args.raw_dim > 0:
        # dense "raw activations" for the raw candidate: a noisy shared signal in column 0
        rng = np.random.default_rng(1)
        split.raw = rng.normal(0, 1, size=(len(split.y), args.raw_dim))
        split.raw[:, 0] += 2.0 * (split.y.astype(str) == "pos")

    classes, counts = np.unique(split.y.astype(str), return_counts=True)
    print(f"# {what}: {len(split.y)} labelled documents, "
          f"{split.sae[next(iter(split.sae))].shape[1]} features, classes "
          f"{dict(zip(classes.tolist(), counts.tolist(), strict=True))}")
    t = time.perf_counter()
    cv = cross_validate_candidates(split, candidates=args.candidates, folds=args.folds)
    cv_s = time.perf_counter() - t
    print(f"\n## In-domain: {args.folds}-fold cross-validation ({cv_s:.1f} s)\n")
    print(metrics_table({k: {m: v for m, v in r.items() if m != "oof_proba"}
                         for k, r in cv.items()}, chosen=best_candidate(cv)))
    t = time.perf_counter()
    sel = select_by_transfer(split, groups, candidates=args.candidates, cv=cv,
                             group_column=args.group_column, n_labels=args.n_labels)
    tr_s = time.perf_counter() - t
    print()
    print("\n".join(transfer_section({"transfer": sel.card})))
    print(f"choice by CV: {best_candidate(cv)}; by transfer: "
          f"{sel.candidate.name if sel.candidate else '(fallback)'} C×{sel.C_scale:g}")
    print(f"seconds: cross-validation {cv_s:.1f} (baseline), transfer {tr_s:.1f} "
          f"= {tr_s / max(cv_s, 1e-9):.1f}x the cross-validation; per held-out group: "
          + ", ".join(f"{g} {i['seconds']}" for g, i in (sel.card.get("groups") or {}).items()
                      if "seconds" in i))
    if args.json:
        args.json.write_text(json.dumps({"cv": {k: {m: v for m, v in r.items()
                                                    if m != "oof_proba"}
                                                for k, r in cv.items()},
                                         "transfer": sel.card, "seconds": {
                                             "cv": cv_s, "transfer": tr_s}}, indent=1))


if __name__ == "__main__":
    main()
