"""Faithfulness of the shipped heads' explanations, on a sample of each head's test split.

For every shipped head (``models/heads/{safety,topic,quality}``) this rebuilds the head's
test split exactly as the heads build does (the source's own test split from the package
registries' cache, or for a mixed corpus every source's test split mixed as the build
mixes it, stratified to the task's ``test_cap`` with the build's seed 0), draws a
stratified sample of ``--n`` documents from it, extracts them with the embedded model and
SAE under the heads' extraction settings, and runs :func:`auditor.explain.faithfulness`:

* present evidence: zero each decision's top-``k`` features that fired;
* absent evidence: make its top-``k`` features whose not firing supported it fire at a
  typical value (dictionary ``p50`` when a dictionary is installed beside the SAE, else
  the median nonzero pooled activation in the sample; the JSON says which);
* controls: ``k`` random features of the same kind and similar density (``n_random`` draws).

Prints, per head and kind, the mean drop of p(label) with a 95 % bootstrap interval, the
flip rate, the same for the control and the paired difference, and writes everything to
``--out`` (JSON). ``--data FILE`` runs on a given JSONL (``label`` field) instead of the
test splits, e.g. ``samples/audit-sample.jsonl`` (documents are then matched to a head by
their ``source``, see :data:`SOURCES`).

Usage::

    .venv/bin/python bench/faithfulness.py [--n 200] [--k 5] [--out runs/faithfulness.json]
        [--head safety ...] [--data samples/audit-sample.jsonl] [--cards]
    .venv/bin/python bench/faithfulness.py --from-json runs/faithfulness.json --cards
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

from auditor.jobs.heads import DEFAULT_TASKS, V1_TASKS, stratified_sample

REPO = Path(__file__).resolve().parent.parent
#: The shipped heads' tasks (v2: each head's corpus mixed from several sources).
TASKS = {t.name: t for t in DEFAULT_TASKS}
#: The corpus each v1 head was trained on (its ``source`` in a given JSONL).
SOURCES = {t.name: t.source for t in V1_TASKS}


def test_sample(head: str, n: int, *, seed: int = 0) -> list[dict[str, Any]]:
    """``n`` documents of the head's test split (as the heads build made it), stratified."""
    from auditor.corpora import load
    from auditor.corpora.mixes import MIXES, build_mix

    task = TASKS[head]
    if task.mix is not None:  # the build's: every source's test split, mixed with seed 0
        docs = build_mix(MIXES[task.mix], split="test", seed=0)
    else:
        docs = list(load(task.source, split="test"))
    test = stratified_sample(docs, task.test_cap, seed=0, key=task.label)  # the build's
    return [{"id": d["id"], "text": d["text"], "label": d[task.label]}
            for d in stratified_sample(test, n, seed=seed, key=task.label)]


def given_sample(path: Path, head: str) -> list[dict[str, Any]]:
    """The rows of a JSONL from the head's source corpus."""
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()
            if line.strip()]
    return [{"id": r["id"], "text": r["text"], "label": r.get("label")} for r in rows
            if r.get("source") == SOURCES[head]]


def run_head(head_name: str, rows: list[dict[str, Any]], work: Path, *, k: int,
             n_random: int, seed: int) -> dict[str, Any]:
    """Extract ``rows`` and test the head's explanations on them."""
    import numpy as np

    from auditor.explain import faithfulness
    from auditor.features.locate import load_annotations, sae_of
    from auditor.heads import HEAD_EXTRACT, load_head
    from auditor.jobs.explain import _dictionary_typical
    from auditor.jobs.extract import ExtractOptions, run_extract
    from auditor.store import read_metadata

    data = work / f"{head_name}.jsonl"
    data.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows),
                    encoding="utf-8")
    store = work / f"{head_name}.store"
    t0 = time.perf_counter()
    options = ExtractOptions(id_column="id", passthrough=("label",), overwrite=True)
    run_extract(str(data), out=store, options=options.with_config(HEAD_EXTRACT.to_dict()))
    t_extract = time.perf_counter() - t0
    head = load_head(REPO / "models" / "heads" / head_name)
    inputs = head.read(store)
    sha, sae_file = sae_of(read_metadata(store))
    notes = load_annotations(sha, sae_path=sae_file)
    typical = _dictionary_typical(notes, inputs.activations.shape[1])
    t0 = time.perf_counter()
    result = faithfulness(head, inputs, k=k, n_random=n_random, random_state=seed,
                          typical=typical)
    proba = head.predict_proba(inputs)
    truth = {r["id"]: r["label"] for r in rows}
    pred = head.labels(proba)
    result["accuracy"] = float(np.mean([str(p) == str(truth.get(d))
                                        for p, d in zip(pred, inputs.doc_ids, strict=True)]))
    result["probe"] = type(head.probe).__name__
    result["seconds"] = {"extract": round(t_extract, 1),
                         "faithfulness": round(time.perf_counter() - t0, 1)}
    for kind in ("present", "absent"):
        for key in ("doc_ids", "per_document", "control_per_document"):
            result[kind].pop(key, None)
    return result


def _ci(d: dict[str, Any]) -> str:
    return "–" if d.get("mean") is None else \
        f"{d['mean']:+.3f} [{d['low']:+.3f}, {d['high']:+.3f}]"


def _pct(x: float | None) -> str:
    return "–" if x is None else f"{x:.0%}"


def markdown(results: dict[str, Any]) -> str:
    """The table of the README and the cards."""
    lines = ["| head | evidence | docs | drop of p(label) [95% CI] | flips | control drop | "
             "control flips | difference [95% CI] |",
             "|---|---|---:|---|---:|---|---:|---|"]
    for name, r in results.items():
        for kind in ("present", "absent"):
            p = r[kind]
            lines.append(f"| {name} | {kind} | {p['documents']} | {_ci(p['drop'])} | "
                         f"{_pct(p['flip_rate'])} | {_ci(p['control_drop'])} | "
                         f"{_pct(p['control_flip_rate'])} | {_ci(p['difference'])} |")
    return "\n".join(lines)


CARD_SECTION = "## Faithfulness"


def card_section(name: str, r: dict[str, Any]) -> str:
    """The ``## Faithfulness`` section of a head's CARD.md."""
    def line(kind: str, what: str) -> str:
        q = r[kind]
        if not q["documents"]:
            why = ("a linear probe on SAE features gives a feature that did not fire a "
                   "contribution of exactly 0, so its explanations name no absent evidence"
                   if r["probe"] != "BoostedProbe" else "no document has such evidence")
            return f"- {what}: none ({why})."
        return (f"- {what} ({q['documents']} documents): p(label) drops by "
                f"{_ci(q['drop'])}, {_pct(q['flip_rate'])} of decisions flip; k random "
                f"same-kind features of similar density: {_ci(q['control_drop'])}, "
                f"{_pct(q['control_flip_rate'])} flip; difference {_ci(q['difference'])}.")

    return "\n".join([
        CARD_SECTION, "",
        f"Measured by `bench/faithfulness.py` on {r['data']} (k = {r['k']}, "
        f"{r['n_random']} control draws per document, 95 % bootstrap intervals over "
        f"documents, {r['n_boot']} resamples; typical firing value: {r['typical_value']}). "
        f"Head accuracy on these documents: {r['accuracy']:.3f}.", "",
        line("present", "Present evidence (zero the top-k features that fired)"),
        line("absent", "Absent evidence (make the top-k features whose not firing "
                       "counted fire at a typical value)"),
        ""])


def write_card_section(card: Path, section: str) -> None:
    """Replace (or append) the card's Faithfulness section."""
    text = card.read_text(encoding="utf-8")
    if CARD_SECTION in text:
        start = text.index(CARD_SECTION)
        nxt = text.find("\n## ", start + len(CARD_SECTION))
        text = text[:start] + section + ("\n" + text[nxt + 1:] if nxt >= 0 else "")
    else:
        text = text.rstrip("\n") + "\n\n" + section
    card.write_text(text, encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--head", action="append", choices=sorted(TASKS))
    p.add_argument("--n", type=int, default=200, help="Documents per head.")
    p.add_argument("--k", type=int, default=5)
    p.add_argument("--random", dest="n_random", type=int, default=10)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--data", type=Path, default=None,
                   help="A JSONL (with source and label) instead of the test splits.")
    p.add_argument("--work", type=Path, default=REPO / "runs" / "faithfulness")
    p.add_argument("--out", type=Path, default=None)
    p.add_argument("--cards", action="store_true",
                   help="Write each head's '## Faithfulness' section into its CARD.md.")
    p.add_argument("--from-json", type=Path, default=None,
                   help="Print (and with --cards write) the results of an earlier run.")
    args = p.parse_args(argv)
    if args.from_json is not None:
        recorded: dict[str, Any] = json.loads(args.from_json.read_text(encoding="utf-8"))
        print(markdown(recorded))
        for name, r in recorded.items():
            if args.cards:
                write_card_section(REPO / "models" / "heads" / name / "CARD.md",
                                   card_section(name, r))
        return 0
    args.work.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {}
    for name in args.head or list(TASKS):
        rows = (given_sample(args.data, name) if args.data is not None
                else test_sample(name, args.n, seed=args.seed))
        r = run_head(name, rows, args.work, k=args.k, n_random=args.n_random,
                     seed=args.seed)
        r["data"] = (f"{args.data} (rows from {SOURCES[name]})" if args.data is not None
                     else f"{TASKS[name].mix or TASKS[name].source} test split, "
                          f"stratified sample of {len(rows)}")
        results[name] = r
        print(f"{name} ({r['probe']}, {r['documents']} docs, accuracy {r['accuracy']:.3f}; "
              f"typical value: {r['typical_value']}; {r['seconds']})", flush=True)
        for kind in ("present", "absent"):
            q = r[kind]
            print(f"  {kind:<8} {q['documents']:>4} docs  drop {_ci(q['drop'])} flips "
                  f"{_pct(q['flip_rate'])}  control {_ci(q['control_drop'])} flips "
                  f"{_pct(q['control_flip_rate'])}  difference {_ci(q['difference'])}",
                  flush=True)
    print(markdown(results))
    if args.cards:
        for name, r in results.items():
            write_card_section(REPO / "models" / "heads" / name / "CARD.md",
                               card_section(name, r))
    out = args.out or args.work / "faithfulness.json"
    out.write_text(json.dumps(results, indent=2), encoding="utf-8")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
