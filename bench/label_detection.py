"""Label quality by detection score: the issue-25 labels against the old ones and chance.

For every feature of a dictionary, each labeller sees only the even-ranked top contexts
(ranks 0, 2, 4, …) and the odd-ranked ones are held out as positives against twice as many
other features' contexts (:mod:`auditor.features.detection`, seed 0). Compared, in one
process and on the same draws:

* ``new``: :func:`auditor.features.labels.auto_label` (top tokens with case variants
  merged, a context phrase, the logit lens only when coherent);
* ``new, no lens`` and ``tokens only``: the same without the lens / without the phrase;
* ``old``: :func:`auditor.features.labels.legacy_label` (two tokens, the lens always);
* ``random``: the new label of another feature (a seeded permutation of features), i.e.
  real-looking labels that belong elsewhere: the chance level.

Printed: per labeller the AUROC and balanced-accuracy distributions (mean, quartiles,
share >= 0.7) and the ratios of mean AUROC above chance (``(AUROC - 0.5)``) of ``new`` to
``old`` and to ``random``.

Modes:

* default: the embedded default model and SAE on the bundled ``samples/audit-sample.jsonl``
  (offline), built into ``--dictionary`` (default ``out/label-detection/dictionary``) with
  the demo's settings unless a dictionary is already there (``--rebuild`` replaces it), or
  ``--dictionary DIR`` of any existing dictionary;
* ``--synthetic``: planted features in seconds (see :func:`synthetic`: each fires on a few
  words of its own in three spellings, often after a recurring word; a fifth have a
  coherent logit lens, the rest a lens of unrelated tokens).

Usage::

    .venv/bin/python bench/label_detection.py [--synthetic] [--dictionary DIR] [--rebuild]
        [--top 10] [--seed 0] [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from auditor.features.detection import DetectionReport, auto_labeller, score_labels
from auditor.features.labels import auto_label

REPO = Path(__file__).resolve().parent.parent
SAMPLE = REPO / "samples" / "audit-sample.jsonl"


def synthetic(n_features: int = 300, n_contexts: int = 20, *,
              seed: int = 0) -> tuple[dict[int, list[str]], dict[int, list[str]]]:
    """Planted contexts and promoted tokens.

    Feature ``f`` fires on eight words of its own (``f<f>w0`` … ``f<f>w7``, Zipf-frequent,
    each spelled three ways: lower, Capitalised, with a leading space), inside contexts of
    random filler words; 60 % of its contexts put ``pre<f>`` before the firing word (a
    recurring phrase). Every fifth feature has a coherent logit lens (``end<f>``,
    ``End<f>``, ``ending<f>``, …), the others five random filler words.
    """
    rng = np.random.default_rng(seed)
    filler = [f"v{i}" for i in range(3000)]
    zipf = 1.0 / np.arange(1, 9)
    zipf /= zipf.sum()
    contexts: dict[int, list[str]] = {}
    promoted: dict[int, list[str]] = {}
    for f in range(n_features):
        rows = []
        for _ in range(n_contexts):
            words = [str(w) for w in rng.choice(filler, size=12)]
            at = int(rng.integers(2, 10))
            word = f"f{f}w{int(rng.choice(8, p=zipf))}"
            spelling = [word, word.capitalize(), " " + word][int(rng.integers(0, 3))]
            words[at] = f"«{spelling}»"
            if rng.random() < 0.6:
                words[at - 1] = f"pre{f}"
            rows.append("… " + " ".join(words) + " …")
        contexts[f] = rows
        if f % 5 == 0:
            promoted[f] = [f" end{f}", f" End{f}", f" ending{f}", " the", " of"]
        else:
            promoted[f] = [str(t) for t in rng.choice(filler, size=5)]
    return contexts, promoted


def from_dictionary(root: Path) -> tuple[dict[int, list[str]], dict[int, list[str]], int]:
    """Contexts (by rank) and promoted tokens of a built dictionary, and its size."""
    from auditor.features.files import load_contexts, load_feature_table

    frame = load_feature_table(root)
    ctx = load_contexts(root).sort("feature", "rank")
    contexts: dict[int, list[str]] = {}
    for f, text in zip(ctx["feature"].to_list(), ctx["text"].to_list(), strict=True):
        contexts.setdefault(int(f), []).append(str(text))
    promoted = {int(f): list(p or []) for f, p in
                zip(frame["feature"].to_list(), frame["promoted"].to_list(), strict=True)}
    return contexts, promoted, frame.height


def build(root: Path, *, top: int, rebuild: bool) -> float:
    """Build the default model + SAE's dictionary over the bundled sample into ``root``."""
    from auditor.jobs.dictionary import DictionaryBuildOptions, run_dictionary_build

    if (root / "dictionary.json").is_file() and not rebuild:
        return 0.0
    started = time.perf_counter()
    options = DictionaryBuildOptions(id_column="id", max_length=128, max_windows=2,
                                     top_contexts=top, overwrite=True, device="cpu")
    run_dictionary_build(SAMPLE, out=root, options=options)
    return time.perf_counter() - started


def random_labeller(contexts: Mapping[int, Sequence[str]], promoted: Mapping[int, list[str]],
                    *, seed: int) -> dict[int, str]:
    """The new label of another feature, by a seeded permutation of the features."""
    features = sorted(f for f in contexts if contexts[f])
    other = np.random.default_rng(seed).permutation(features)
    out = {}
    for f, g in zip(features, other.tolist(), strict=True):
        texts = list(contexts[g])[0::2]
        tokens = [t[t.find("«") + 1:t.find("»")] for t in texts]
        out[f] = auto_label(tokens, promoted.get(g, []), contexts=texts)
    return out


def run(contexts: Mapping[int, Sequence[str]], promoted: Mapping[int, list[str]], *,
        seed: int, n_features: int | None) -> dict[str, DetectionReport]:
    """Score every labeller on the same draws."""

    def tokens_only(f: int, texts: Sequence[str]) -> str:
        return auto_label([t[t.find("«") + 1:t.find("»")] for t in texts], [], lens="never")

    labellers: dict[str, Any] = {
        "new": auto_labeller(promoted),
        "new, no lens": auto_labeller(promoted, lens="never"),
        "tokens only": tokens_only,
        "old": auto_labeller(promoted, legacy=True),
        "random": random_labeller(contexts, promoted, seed=seed),
    }
    return {name: score_labels(contexts, lab, seed=seed, n_features=n_features)
            for name, lab in labellers.items()}


def show(reports: Mapping[str, DetectionReport], *, seconds: float) -> dict[str, Any]:
    """Print the table and ratios; return them JSON-able."""
    rows: dict[str, Any] = {}
    print(f"{'labeller':<14} {'AUROC mean':>10} {'p25':>6} {'p50':>6} {'p75':>6} "
          f"{'>=0.7':>6} {'bal.acc':>8} {'scored':>7}")
    for name, report in reports.items():
        s = report.summary()
        a, b = s["auroc"], s["balanced_accuracy"]
        rows[name] = s
        print(f"{name:<14} {a['mean']:>10.3f} {a['p25']:>6.3f} {a['p50']:>6.3f} "
              f"{a['p75']:>6.3f} {a['share_ge_0.7']:>6.1%} {b['mean']:>8.3f} {s['scored']:>7}")
    skipped = next(iter(reports.values())).summary()["skipped"]
    print(f"skipped: {skipped}")

    def lift(name: str) -> float:
        return float(rows[name]["auroc"]["mean"]) - 0.5

    ratios = {
        "new/old AUROC mean": rows["new"]["auroc"]["mean"] / rows["old"]["auroc"]["mean"],
        "new/random AUROC mean": rows["new"]["auroc"]["mean"] / rows["random"]["auroc"]["mean"],
        "new/old lift above 0.5": lift("new") / lift("old") if lift("old") else None,
        "new/old share >= 0.7": (rows["new"]["auroc"]["share_ge_0.7"]
                                 / max(rows["old"]["auroc"]["share_ge_0.7"], 1e-9)),
    }
    for key, value in ratios.items():
        print(f"{key}: {'n/a' if value is None else f'{value:.2f}x'}")
    print(f"scoring time: {seconds:.1f} s")
    return {"labellers": rows, "ratios": ratios}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--synthetic", action="store_true")
    parser.add_argument("--dictionary", type=Path,
                        default=REPO / "out" / "label-detection" / "dictionary")
    parser.add_argument("--rebuild", action="store_true")
    parser.add_argument("--top", type=int, default=10,
                        help="top contexts per feature when building (default 10)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    meta: dict[str, Any] = {"seed": args.seed}
    if args.synthetic:
        contexts, promoted = synthetic(seed=args.seed)
        n_features: int | None = len(contexts)
        meta["mode"] = "synthetic"
    else:
        took = build(args.dictionary, top=args.top, rebuild=args.rebuild)
        if took:
            print(f"built {args.dictionary} in {took:.0f} s")
        contexts, promoted, n_features = from_dictionary(args.dictionary)
        meta.update(mode="dictionary", dictionary=str(args.dictionary))
    started = time.perf_counter()
    reports = run(contexts, promoted, seed=args.seed, n_features=n_features)
    result = {**meta, **show(reports, seconds=time.perf_counter() - started)}
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2, allow_nan=False) + "\n")


if __name__ == "__main__":
    main()
