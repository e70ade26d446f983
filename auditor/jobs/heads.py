"""The heads jobs: build the default heads, evaluate a head on a test split, list and show
installed heads.

:func:`run_heads_build` is what ``scripts/build_heads.py`` runs. Three stages under
``out``, each resumable from its own markers (``out/_stages/<stage>-<task>.json``, which
record the settings the stage ran with, so a stage is redone only when they change):

``data``     each task's labelled corpus from the package registries (via
             :mod:`auditor.corpora`), or from the directories given as ``input``, written to
             ``out/<task>/{train,test}.jsonl`` with ``data.json``: the source's own held-out
             split is the test split, never seen by the head (nor by the SAE, which was
             trained on train splits only). Large splits are subsampled, stratified by
             label, to bound CPU extraction time; the counts go in the card.
``extract``  one feature store per task and split with the settings every head shares
             (:data:`auditor.heads.HEAD_EXTRACT`): max and mean pooled SAE features plus
             mean raw activations, so the representation can be chosen per head.
``train``    per task: cross-validate the candidate representations on the train split
             against the TF-IDF baseline, keep the winner (best mean macro-F1 leaving one
             ``source`` out, :mod:`auditor.heads.transfer`, when two or more sources can
             be scored; else best CV macro-F1), fit it on all
             training data with calibration and a decision threshold, evaluate everything
             on the test split at full data and at 200 labels (:func:`evaluate_head`, the
             work of :func:`run_heads_eval` too), and write the head with its card to
             ``out/heads/<task>``. :func:`install_heads` copies them to ``models/heads``.

:func:`run_heads_list` and :func:`run_heads_show` only read heads (found by name along the
heads search path, :mod:`auditor.heads.search`): no ``out``.
"""

from __future__ import annotations

import collections
import json
import random
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from auditor._files import atomic_directory, read_json, sha256_file, write_json
from auditor.cancel import CancelToken, check_cancel
from auditor.errors import AuditorError, ConfigError
from auditor.jobs._contract import (
    JOB_FILE,
    JobOptions,
    JobResult,
    Record,
    fingerprint,
    json_values,
    run_recorded,
)
from auditor.progress import Progress, ProgressCallback

__all__ = [
    "DEFAULT_TASKS",
    "V1_TASKS",
    "V2_TASKS",
    "HeadTask",
    "HeadsBuildOptions",
    "HeadsBuildResult",
    "HeadsEvalOptions",
    "HeadsEvalResult",
    "HeadsListResult",
    "HeadsShowOptions",
    "HeadsShowResult",
    "evaluate_head",
    "head_for_worker",
    "heads_table",
    "install_heads",
    "run_heads_build",
    "run_heads_eval",
    "run_heads_list",
    "run_heads_show",
    "stratified_sample",
    "where_is_head",
]

STAGES = ("data", "extract", "train")


# ----------------------------------------------------------------------------- tasks


@dataclass(frozen=True)
class HeadTask(Record):
    """One default head: where its labelled data comes from and how it is trained.

    Parameters
    ----------
    name
        The head's name (``safety``, ``topic``, ``quality``).
    source
        The :data:`auditor.corpora.SOURCES` key of its corpus (unused when the build is
        given the data).
    label
        The corpus field holding the label.
    train_cap, test_cap
        At most this many documents per split (stratified); None keeps the whole split.
        Caps bound the extraction cost on a 2-core CPU (~1,300 tokens/s).
    description
        One line for ``heads list``.
    positive_class
        Binary heads: the flagged class (None: the minority class, or a multiclass head).
    candidates
        The representations cross-validated (None: the linear default pool).
    group_column
        The passthrough column naming each document's group (its corpus source) for the
        transfer evaluation (None: none).
    select_by
        ``transfer``: choose the representation and regularisation by leave-one-group-out
        transfer when at least two groups can be scored, else (and with ``cv``) by
        cross-validated macro-F1; the card says which.
    transfer_candidates, transfer_scales
        What the transfer evaluation compares (None: ``candidates`` at the regularisation
        factors of :data:`auditor.heads.transfer.C_SCALES`); fewer bound its cost.
    mix
        A key of :data:`auditor.corpora.mixes.MIXES`: the labelled corpus is mixed from
        several sources (``source`` unused; every document carries its ``source``, the
        group of a leave-one-source-out transfer evaluation). The mix's own caps apply;
        ``train_cap``/``test_cap`` then bound the total.
    gaps
        Categories the head should cover but has no real labelled data for (for the card;
        empty: the mix's own ``gaps``).
    """

    name: str
    source: str = ""
    label: str = "label"
    train_cap: int | None = None
    test_cap: int | None = None
    description: str = ""
    positive_class: str | None = None
    candidates: tuple[str, ...] | None = None
    group_column: str | None = "source"
    select_by: Literal["cv", "transfer"] = "transfer"
    transfer_candidates: tuple[str, ...] | None = None
    transfer_scales: tuple[float, ...] | None = None
    mix: str | None = None
    gaps: str = ""


#: The fields of a :class:`HeadTask` that say how its head is chosen, not what data it has.
_SELECTION_FIELDS = ("group_column", "select_by", "transfer_candidates", "transfer_scales")

#: The first heads, each trained on one data set. LightGBM is cross-validated for the
#: binary safety head (measured: test macro-F1 0.840 vs 0.824 for the linear head, 2.2x
#: the cross-validation time); for topic (one tree set per class) and quality (linear
#: already at 0.98) the CPU budget of a build on 2 cores is not spent on it.
V1_TASKS: tuple[HeadTask, ...] = (
    HeadTask("safety", source="insults",
             description="Flags insulting or abusive comments (insult vs benign).",
             positive_class="insult",
             candidates=("sae-max-log1p", "sae-max-binary", "sae-mean-log1p", "raw",
                         "sae-max-lgbm")),
    HeadTask("topic", source="newsgroups", train_cap=2400, test_cap=1200,
             description="Coarse topic of a post: computing, science, politics, religion, "
                         "sports, autos, forsale."),
    HeadTask("quality", source="spamassassin", train_cap=1600,
             description="Flags spam / junk e-mail (spam vs ham).", positive_class="spam"),
)

#: Heads trained on corpora mixed from several sources (:mod:`auditor.corpora.mixes`), so
#: they hold up outside one data set; each document's ``source`` is kept for transfer.
V2_TASKS: tuple[HeadTask, ...] = (
    HeadTask("safety", mix="safety_v2",
             description="Safety screening: insult, dangerous (requests for dangerous or "
                         "illegal help), jailbreak, or benign."),
    # multiclass saga fits on ~3,000 documents: transfer compares the max-pooled SAE head
    # with raw activations at two strengths (a full grid took ~11 min per held-out source)
    HeadTask("topic", mix="topic_v2",
             description="Coarse topic of natural text: business, computing, politics, "
                         "religion, science, sports, or other.",
             transfer_candidates=("sae-max-log1p", "raw"), transfer_scales=(0.25, 1.0)),
    HeadTask("quality", mix="quality_v2",
             description="Text quality: ok, spam, boilerplate, keyword_stuffing, garbage "
                         "or low_information (the four junk classes are weak labels).",
             transfer_candidates=("sae-max-log1p", "raw"), transfer_scales=(0.25, 1.0)),
)

#: The heads ``scripts/build_heads.py`` builds by default.
DEFAULT_TASKS: tuple[HeadTask, ...] = V2_TASKS


def stratified_sample(docs: list[dict[str, Any]], cap: int | None, *, seed: int,
                      key: str) -> list[dict[str, Any]]:
    """Up to ``cap`` documents with the label shares of ``docs`` (each label rounded)."""
    if cap is None or len(docs) <= cap:
        return list(docs)
    rng = random.Random(seed)
    by_label: dict[str, list[dict[str, Any]]] = collections.defaultdict(list)
    for d in docs:
        by_label[d[key]].append(d)
    out: list[dict[str, Any]] = []
    for label in sorted(by_label):
        group = by_label[label]
        rng.shuffle(group)
        out.extend(group[: max(1, round(cap * len(group) / len(docs)))])
    rng.shuffle(out)
    return out


# ----------------------------------------------------------------------------- records


@dataclass(frozen=True)
class HeadsBuildOptions(JobOptions):
    """Options of :func:`run_heads_build`.

    Parameters
    ----------
    tasks
        The heads to build (default: :data:`DEFAULT_TASKS`).
    seed
        Seeds the subsamples, folds and probes.
    until
        The last stage to run (``data``, ``extract`` or ``train``).
    model, saes
        As for :func:`auditor.jobs.run_extract` (default: the embedded model and SAE).
    extract
        Extraction settings (:class:`~auditor.extract.ExtractConfig` as a dict; default
        :data:`auditor.heads.HEAD_EXTRACT`).
    n_labels, seeds
        The small-data test table: heads trained on ``n_labels`` documents, one
        subsample per seed.
    """

    tasks: tuple[HeadTask, ...] = DEFAULT_TASKS
    seed: int = 0
    until: Literal["data", "extract", "train"] = "train"
    model: str | None = None
    saes: tuple[str, ...] = ()
    extract: dict[str, Any] | None = None
    n_labels: int = 200
    seeds: tuple[int, ...] = (0, 1, 2)

    def validate(self) -> None:
        names = [t.name for t in self.tasks]
        if not names:
            raise ConfigError("give at least one task", field="tasks")
        if len(set(names)) != len(names):
            raise ConfigError(f"task names must be distinct, got {names}", field="tasks")
        if self.n_labels < 2 or not self.seeds:
            raise ConfigError("n_labels must be >= 2 with at least one seed",
                              field="n_labels")


@dataclass(frozen=True)
class HeadsBuildResult(JobResult):
    """What :func:`run_heads_build` did: the stages run (``until``), per task the head
    directory relative to ``out`` (once trained) and its data counts, and the README
    table of the built heads."""

    stages: list[str]
    heads: dict[str, str]
    data: dict[str, dict[str, Any]]
    table: str


@dataclass(frozen=True)
class HeadsEvalOptions(JobOptions):
    """Options of :func:`run_heads_eval`: the label column of both stores, the
    representations compared (None: the head's own pool from its card, else the linear
    default) and the small-data table's ``n_labels`` and ``seeds``."""

    label_column: str = "label"
    candidates: tuple[str, ...] | None = None
    n_labels: int = 200
    seeds: tuple[int, ...] = (0, 1, 2)


@dataclass(frozen=True)
class HeadsEvalResult(JobResult):
    """A head's test-split tables: every representation trained on all training documents
    (``test``) and on ``n_labels`` (``test_200``), the shipped head itself (``test_head``);
    ``written`` is ``eval.json``."""

    head: str
    test: dict[str, dict[str, Any]]
    test_200: dict[str, dict[str, Any]]
    test_head: dict[str, Any]
    written: str


@dataclass(frozen=True)
class HeadsListResult(JobResult):
    """Heads found: name, task, classes, representation, test macro-F1, description,
    ``path``, ``origin`` (which search-path entry), ``shadowed_by`` (the head of the same
    name found first, else None) and ``error`` (why it cannot be loaded, else None); and the
    ``search_path`` looked at, in order (``path``, ``origin``, ``exists``)."""

    heads: list[dict[str, Any]]
    search_path: list[dict[str, Any]]


@dataclass(frozen=True)
class HeadsShowOptions(JobOptions):
    """Options of :func:`run_heads_show`: features listed per class (0: none), and the
    feature dictionary they are labelled from (``labels``: a dictionary directory of the
    head's SAE; None: found by the SAE's sha256, see
    :func:`auditor.features.locate.find_dictionary`)."""

    features: int = 10
    labels: str | None = None


@dataclass(frozen=True)
class HeadsShowResult(JobResult):
    """A head's Markdown ``card`` and the SAE features that separate its classes
    (``weights``: class → ``[{feature, weight, label, example}]``), or why there are none
    (``no_weights``); ``dictionary``: where the labels came from (``path``, ``origin``) or
    the ``note`` on building a dictionary."""

    head: str
    card: str
    weights: dict[str, list[dict[str, Any]]] | None
    no_weights: str | None
    dictionary: dict[str, Any] | None = None


# ----------------------------------------------------------------------------- evaluation


def _texts(path: Path) -> dict[str, str]:
    with path.open(encoding="utf-8") as f:
        return {row["id"]: row["text"] for row in map(json.loads, f)}


def _head_on_test(head: Any, store: Path, test: Any) -> dict[str, Any]:
    """The shipped head (calibrated, thresholded) on the test store."""
    import numpy as np
    from sklearn.metrics import f1_score, precision_score, recall_score

    from auditor.probes import evaluate_probe

    inputs = head.read(store)
    pos = {d: i for i, d in enumerate(inputs.doc_ids)}
    rows = [pos[d] for d in test.doc_ids]
    proba = head.predict_proba(inputs)[rows]
    labels = head.labels(proba).astype(str)
    y = test.y.astype(str)
    m = {k: v for k, v in evaluate_probe(y, proba, head.config.classes).items()
         if isinstance(v, float)}
    m["macro_f1_at_threshold"] = float(f1_score(y, labels, average="macro"))
    if head.config.positive_class is not None:
        p = head.config.positive_class
        m[f"precision[{p}]"] = float(precision_score(y, labels, pos_label=p))
        m[f"recall[{p}]"] = float(recall_score(y, labels, pos_label=p))
    cov = head.contributions(inputs).coverage()
    m["explained_share_median"] = float(np.median(cov))
    return m


def evaluate_head(head: Any, train: Any, test: Any, test_store: str | Path, *,
                  candidates: Sequence[str], n_labels: int = 200,
                  seeds: Sequence[int] = (0, 1, 2),
                  cancel: CancelToken | None = None) -> dict[str, Any]:
    """A head's test tables: ``test`` and ``test_200`` (every representation and TF-IDF
    trained on the training split, all of it or ``n_labels`` documents) and
    ``test_head`` (the head itself, calibrated and thresholded, on ``test_store``)."""
    from auditor.heads import evaluate_candidates

    check_cancel(cancel, "test split, all labels")
    out: dict[str, Any] = {"test": evaluate_candidates(train, test, candidates=candidates)}
    check_cancel(cancel, f"test split, {n_labels} labels")
    out["test_200"] = evaluate_candidates(train, test, candidates=candidates,
                                          n_labels=n_labels, seeds=tuple(seeds))
    check_cancel(cancel, "the head on the test split")
    out["test_head"] = _head_on_test(head, Path(test_store), test)
    return out


def _notes(card: Mapping[str, Any]) -> list[str]:
    """What a reader of the card should not miss: where a baseline wins, calibration."""
    chosen = card["representation"]["candidate"]
    cv, test = card["cross_validation"], card["test"]
    best_test = max(test, key=lambda r: test[r]["macro_f1"])
    transfer = card.get("transfer") or {}
    how = (f"by transfer (leave one {transfer.get('group_column') or 'group'} out)"
           if transfer.get("chosen") else "on cross-validation only")
    notes = [f"Representation chosen {how}; on the test split the best "
             f"macro-F1 is {best_test}" + (" (the head's)." if best_test == chosen else
                                           " — reported, not hidden.")]
    if cv.get("tfidf", {}).get("macro_f1", 0.0) > cv[chosen]["macro_f1"]:
        gap = cv["tfidf"]["macro_f1"] - cv[chosen]["macro_f1"]
        notes.append(f"TF-IDF leads cross-validation by {gap:.3f} macro-F1. It is a text "
                     f"baseline whose decisions cannot be explained in model features, so "
                     f"the head uses the best model representation; the gap is stated here.")
    cal = card.get("calibration") or {}
    ece = cal.get("oof_ece") or {}
    if cal.get("method") == "sigmoid":
        notes.append(f"Probabilities are Platt-calibrated on a 20 % held-out part of the "
                     f"training data (out-of-fold ECE {ece.get('sigmoid', 0):.3f} vs "
                     f"{ece.get('none', 0):.3f} without); explanations attribute the "
                     f"uncalibrated score.")
    else:
        notes.append(f"Probabilities are the probe's own (out-of-fold ECE "
                     f"{ece.get('none', 0):.3f}; held-out Platt scaling gave "
                     f"{ece.get('sigmoid', 0):.3f}, so it is not used).")
    return notes


def run_heads_eval(input: Mapping[str, Any], *, out: str | Path, options: HeadsEvalOptions,
                   progress: ProgressCallback | None = None,
                   cancel: CancelToken | None = None) -> HeadsEvalResult:
    """A head's test tables (see :func:`evaluate_head`); writes ``out/eval.json``.

    Parameters
    ----------
    input
        ``{"head": <directory>, "train": <store>, "test": <store>}`` (stores with the
        label as a passthrough column), optionally ``"train_texts"`` / ``"test_texts"``:
        JSONL files of ``{"id", "text"}`` for the TF-IDF baseline.
    """
    if not isinstance(input, Mapping) or any(input.get(k) is None
                                             for k in ("head", "train", "test")):
        raise ConfigError("input needs head, train and test", field="input")
    paths = {k: Path(v) for k, v in input.items() if v is not None}

    def work(root: Path) -> HeadsEvalResult:
        from auditor.heads import DEFAULT_CANDIDATES, load_head, load_split

        head = load_head(paths["head"])
        splits = {s: load_split(paths[s], options.label_column,
                                texts=_texts(paths[f"{s}_texts"])
                                if f"{s}_texts" in paths else None)
                  for s in ("train", "test")}
        pool = options.candidates or DEFAULT_CANDIDATES
        with Progress(progress, job="heads-eval").stage("evaluate", total=1) as stage:
            tables = json_values(evaluate_head(head, splits["train"], splits["test"],
                                         paths["test"], candidates=pool,
                                         n_labels=options.n_labels, seeds=options.seeds,
                                         cancel=cancel))
            write_json(root / "eval.json", tables)
            stage.advance(1)
        return HeadsEvalResult(head=head.name, **tables, written="eval.json")

    return run_recorded("heads-eval", out=out, options=options, input=paths,
                        result_type=HeadsEvalResult, work=work)


# ----------------------------------------------------------------------------- build


def _marker(root: Path, name: str) -> Path:
    return root / "_stages" / f"{name}.json"


def _stage_done(root: Path, name: str, settings: Mapping[str, Any]) -> bool:
    path = _marker(root, name)
    if not path.is_file():
        return False
    try:
        return read_json(path, what="stage marker").get("settings") == json_values(settings)
    except AuditorError:
        return False


def _mark(root: Path, name: str, settings: Mapping[str, Any]) -> None:
    write_json(_marker(root, name), {"stage": name, "settings": json_values(settings)})


def _keep_artefacts(root: Path) -> None:
    """``clear`` of a build run with other options: only the record goes; each stage's
    markers say whether its outputs still hold for the new options."""
    (root / JOB_FILE).unlink(missing_ok=True)


def _stage_data(root: Path, task: HeadTask, given: Path | None, seed: int) -> dict[str, Any]:
    """``<task>/{train,test}.jsonl`` and ``data.json``; returns the data record."""
    target = root / task.name
    target.mkdir(parents=True, exist_ok=True)
    if given is not None:
        info: dict[str, Any] = {"source": "given", "registry": "local files",
                                "packages": {}, "licence": "unknown",
                                "description": task.description, "splits": {}}
        for split in ("train", "test"):
            rows = [json.loads(line) for line in
                    (given / f"{split}.jsonl").read_text(encoding="utf-8").splitlines()
                    if line.strip()]
            shutil.copyfile(given / f"{split}.jsonl", target / f"{split}.jsonl")
            info["splits"][split] = {
                "available": len(rows), "used": len(rows),
                "labels": dict(sorted(collections.Counter(str(r["label"]) for r in rows)
                                      .items()))}
        write_json(target / "data.json", info)
        return info
    if task.mix is not None:
        return _stage_mix_data(target, task, seed)
    from auditor.corpora import SOURCES, load
    from auditor.corpora.sources import archive_versions

    source = SOURCES[task.source]
    info = {"source": source.name, "registry": source.registry,
            "packages": archive_versions(source, source.archives(None)),
            "licence": source.licence, "description": source.description, "splits": {}}
    for split, cap in (("train", task.train_cap), ("test", task.test_cap)):
        docs = list(load(task.source, split=split))
        kept = stratified_sample(docs, cap, seed=seed, key=task.label)
        lines = []
        for d in kept:
            row = {"id": d["id"], "text": d["text"], "label": d[task.label]}
            if "fine_label" in d:
                row["fine_label"] = d["fine_label"]
            lines.append(json.dumps(row, ensure_ascii=False) + "\n")
        (target / f"{split}.jsonl").write_text("".join(lines), encoding="utf-8")
        info["splits"][split] = {
            "available": len(docs), "used": len(kept),
            "labels": dict(sorted(collections.Counter(d[task.label] for d in kept).items())),
        }
    write_json(target / "data.json", info)
    return info


#: Columns every mixed corpus row carries besides ``id`` and ``text`` (passed through to
#: the feature stores: ``source`` is the group of a leave-one-source-out evaluation).
MIX_COLUMNS: tuple[str, ...] = ("label", "source", "lang")


def _mix_of(task: HeadTask) -> Any:
    from auditor.corpora.mixes import MIXES

    try:
        return MIXES[str(task.mix)]
    except KeyError:
        raise ConfigError(f"task {task.name!r}: unknown mix {task.mix!r}; choose from "
                          f"{sorted(MIXES)}", field="mix") from None


def _stage_mix_data(target: Path, task: HeadTask, seed: int) -> dict[str, Any]:
    """The data stage of a task with a ``mix``: every source's archive read, the mix built
    per split (then capped by the task's caps, stratified by label), rows written with
    :data:`MIX_COLUMNS` (``lang`` ``unknown`` where the source does not say)."""
    from auditor.corpora import SOURCES
    from auditor.corpora.mixes import build_mix, mix_counts
    from auditor.corpora.sources import archive_versions
    from auditor.corpora.weak_quality import rules_baseline

    mix = _mix_of(task)
    names = sorted({p.source for p in mix.parts})
    sources: dict[str, dict[str, Any]] = {}
    for name in names:
        src = SOURCES[name]
        sources[name] = {"registry": src.registry,
                         "packages": archive_versions(src, src.archives(None)),
                         "licence": src.licence, "description": src.description}
    info: dict[str, Any] = {
        "source": f"mix {mix.name}: {', '.join(names)}",
        "registry": ", ".join(sorted({s['registry'] for s in sources.values()})),
        "packages": {p: v for s in sources.values() for p, v in s["packages"].items()},
        "licence": "; ".join(f"{n}: {s['licence']}" for n, s in sources.items()),
        "description": f"{task.description} {mix.description}".strip(),
        "mix": mix.to_dict(), "sources": sources, "gaps": task.gaps or mix.gaps,
        "weak_labels": list(mix.weak_labels), "group_column": "source", "splits": {}}
    for split, cap in (("train", task.train_cap), ("test", task.test_cap)):
        docs = build_mix(mix, split=split, seed=seed)
        kept = stratified_sample(docs, cap, seed=seed, key="label")
        lines = []
        for d in kept:
            row = {"id": d["id"], "text": d["text"], "label": d["label"],
                   "source": d["source"], "lang": d.get("lang") or "unknown"}
            for extra in ("fine_label", "generator"):
                if extra in d:
                    row[extra] = d[extra]
            lines.append(json.dumps(row, ensure_ascii=False) + "\n")
        (target / f"{split}.jsonl").write_text("".join(lines), encoding="utf-8")
        counts = mix_counts(kept)
        info["splits"][split] = {"available": len(docs), "used": len(kept),
                                 "labels": counts["labels"], "sources": counts["sources"],
                                 "label_source": counts["label_source"],
                                 "lang": counts["lang"]}
        if mix.weak_labels and split == "test":
            info["rules_baseline"] = rules_baseline([d["text"] for d in kept],
                                                    [d["label"] for d in kept])
    write_json(target / "data.json", info)
    return info


def run_heads_build(input: Mapping[str, Any] | None, *, out: str | Path,
                    options: HeadsBuildOptions, progress: ProgressCallback | None = None,
                    cancel: CancelToken | None = None) -> HeadsBuildResult:
    """Build the default heads (see the module docstring); every file under ``out``.

    Parameters
    ----------
    input
        None: each task's corpus comes from the package registries. Else
        ``{task: <directory with train.jsonl and test.jsonl>}`` (rows ``id``, ``text``,
        ``label``) for every task.
    out
        The work directory: ``<task>/`` data and stores, ``heads/<task>`` the heads.

    Raises
    ------
    JobConflict
        ``out`` holds a build with other options or input, and ``options.overwrite`` is
        false (with it, the stages whose settings did not change are kept).
    JobCancelled
        The token was set; finished stages are kept.
    """
    given: dict[str, Path] = {}
    if input is not None:
        if not isinstance(input, Mapping):
            raise ConfigError("input must map each task to a data directory",
                              field="input")
        missing = [t.name for t in options.tasks if t.name not in input]
        if missing:
            raise ConfigError(f"no data directory for tasks {missing}", field="input")
        given = {t.name: Path(input[t.name]) for t in options.tasks}
    run = STAGES[: STAGES.index(options.until) + 1]

    def work(root: Path) -> HeadsBuildResult:
        steps = Progress(progress, job="heads-build")
        data: dict[str, dict[str, Any]] = {}
        with steps.stage("data", total=len(options.tasks)) as stage:
            for task in options.tasks:
                check_cancel(cancel, f"data of {task.name}")
                source = given.get(task.name)
                # how the head is chosen does not change its data
                settings = {"task": {k: v for k, v in task.to_dict().items()
                                     if k not in _SELECTION_FIELDS},
                            "seed": options.seed,
                            "given": None if source is None else
                            {s: fingerprint(source / f"{s}.jsonl") for s in ("train", "test")}}
                if task.mix is not None and source is None:  # a changed mix is rebuilt
                    settings["mix"] = _mix_of(task).to_dict()
                if _stage_done(root, f"data-{task.name}", settings):
                    data[task.name] = read_json(root / task.name / "data.json",
                                                what="data record")
                else:
                    data[task.name] = _stage_data(root, task, source, options.seed)
                    _mark(root, f"data-{task.name}", settings)
                stage.advance(1)
        if "extract" in run:
            _build_extract(root, options, steps, cancel)
        heads: dict[str, str] = {}
        if "train" in run:
            heads = _build_train(root, options, steps, cancel, data)
        return HeadsBuildResult(stages=list(run), heads=heads, data=json_values(data),
                                table=heads_table(root / "heads") if heads else "")

    return run_recorded("heads-build", out=out, options=options,
                        input=None if not given else {k: str(v) for k, v in given.items()},
                        result_type=HeadsBuildResult, work=work, clear=_keep_artefacts)


def _build_extract(root: Path, options: HeadsBuildOptions, steps: Progress,
                   cancel: CancelToken | None) -> None:
    from auditor.heads import HEAD_EXTRACT
    from auditor.jobs.extract import ExtractOptions, run_extract

    config = dict(options.extract) if options.extract else HEAD_EXTRACT.to_dict()
    with steps.stage("extract", total=2 * len(options.tasks)) as stage:
        for task in options.tasks:
            # a mixed corpus's stores carry the source (the transfer group) and language
            passthrough = MIX_COLUMNS if task.mix is not None else ("label",)
            extract = ExtractOptions(model=options.model, saes=options.saes, id_column="id",
                                     passthrough=passthrough,
                                     overwrite=True).with_config(config)
            for split in ("train", "test"):
                check_cancel(cancel, f"extraction of {task.name}/{split}")
                data = root / task.name / f"{split}.jsonl"
                settings = {"extract": extract.to_dict(), "data": sha256_file(data)}
                name = f"extract-{task.name}-{split}"
                if not _stage_done(root, name, settings):
                    # a store of other settings is replaced; an unfinished one resumes
                    run_extract(str(data), out=root / task.name / f"{split}.store",
                                options=extract, cancel=cancel)
                    _mark(root, name, settings)
                stage.advance(1)


def _build_train(root: Path, options: HeadsBuildOptions, steps: Progress,
                 cancel: CancelToken | None,
                 data: Mapping[str, Any]) -> dict[str, str]:
    from auditor.heads import DEFAULT_CANDIDATES, load_split, train_head, write_head
    from auditor.heads.card import render_card
    from auditor.heads.transfer import read_groups

    heads: dict[str, str] = {}
    with steps.stage("train", total=len(options.tasks)) as stage:
        for task in options.tasks:
            check_cancel(cancel, f"training {task.name}")
            d = root / task.name
            where = root / "heads" / task.name
            settings = {"task": task.to_dict(), "seed": options.seed,
                        "n_labels": options.n_labels, "seeds": list(options.seeds),
                        "stores": {s: fingerprint(d / f"{s}.store") for s in ("train", "test")}}
            name = f"train-{task.name}"
            if not _stage_done(root, name, settings):
                train = load_split(d / "train.store", "label", texts=_texts(d / "train.jsonl"))
                test = load_split(d / "test.store", "label", texts=_texts(d / "test.jsonl"))
                pool = task.candidates or DEFAULT_CANDIDATES
                groups = (None if task.group_column is None else
                          read_groups(d / "train.store", train.doc_ids, task.group_column))
                head = train_head(task.name, train, random_state=options.seed,
                                  description=task.description,
                                  positive_class=task.positive_class, candidates=pool,
                                  cancel=cancel, groups=groups, select_by=task.select_by,
                                  group_column=task.group_column,
                                  transfer_labels=options.n_labels,
                                  transfer_candidates=task.transfer_candidates,
                                  transfer_scales=task.transfer_scales)
                head.card["data"] = dict(data[task.name])
                head.card.update(json_values(evaluate_head(head, train, test, d / "test.store",
                                                     candidates=pool,
                                                     n_labels=options.n_labels,
                                                     seeds=options.seeds, cancel=cancel)))
                head.card["notes"] = _notes(head.card)
                write_head(head, where, card_markdown=render_card(head.config.to_dict(),
                                                                   head.card))
                _mark(root, name, settings)
            heads[task.name] = where.relative_to(root).as_posix()
            stage.advance(1)
    return heads


def install_heads(out: str | Path, result: HeadsBuildResult, target: str | Path) -> list[Path]:
    """Copy the heads a build wrote (``result.heads``, under ``out``) to ``target/<task>``
    (e.g. ``models/heads``), each replaced whole."""
    from auditor.heads.head import HEAD_FILES

    written = []
    for task, rel in result.heads.items():
        source = Path(out) / rel
        dest = Path(target) / task
        with atomic_directory(dest, overwrite=True) as tmp:
            for name in HEAD_FILES:
                if (source / name).is_dir():
                    shutil.copytree(source / name, tmp / name)
                elif (source / name).exists():
                    shutil.copy2(source / name, tmp / name)
        written.append(dest)
    return written


def heads_table(directory: str | Path) -> str:
    """The README's table of heads, read from their cards (``*/probe/card.json``)."""
    lines = ["| head | classes | representation (chosen by) | test macro-F1: head | SAE max | "
             "raw | TF-IDF | at 200 labels: SAE max | raw | TF-IDF |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    transfer = []
    for card_path in sorted(Path(directory).glob("*/probe/card.json")):
        card = json.loads(card_path.read_text())
        classes = ", ".join(sorted(card["training"]["labels"]))
        cells = [f"{card['test_head']['macro_f1_at_threshold']:.3f}"]
        for table in ("test", "test_200"):
            cells += [f"{card[table][name]['macro_f1']:.3f}"
                      if name in card[table] else "–"
                      for name in ("sae-max-log1p", "raw", "tfidf")]
        tr = card.get("transfer") or {}
        how = "transfer" if tr.get("chosen") else "CV"
        lines.append(f"| {card['head']} | {classes} | "
                     f"{card['representation']['candidate']} ({how}) | {' | '.join(cells)} |")
        if tr.get("scored"):
            transfer.append(_transfer_row(card["head"], tr))
    if transfer:
        lines += ["", "| head | held-out sources scored | mean held-out macro-F1: head's choice "
                  "| SAE max | raw | TF-IDF | at ≤ 200 labels per class: SAE max | raw | "
                  "TF-IDF |", "|---|---|---|---|---|---|---|---|---|", *transfer]
    return "\n".join(lines)


def _transfer_row(head: str, tr: Mapping[str, Any]) -> str:
    """One head's row of the README's transfer table (leave one source out)."""
    from auditor.heads.transfer import variant_name

    chosen = tr.get("chosen") or {}
    mean = tr.get("mean") or {}

    def cell(regime: str, key: str | None) -> str:
        value = (mean.get(regime) or {}).get(key) if key else None
        return "–" if value is None else f"{value:.3f}"

    keys = [variant_name("sae-max-log1p", 1.0), variant_name("raw", 1.0), "tfidf"]
    choice = (f"{cell('all', chosen.get('variant'))} ({chosen.get('variant')})"
              if chosen else "–")
    return (f"| {head} | {len(tr['scored'])} ({', '.join(tr['scored'])}) | {choice} | "
            + " | ".join(cell("all", k) for k in keys) + " | "
            + " | ".join(cell("few", k) for k in keys) + " |")


# ----------------------------------------------------------------------------- list, show


def run_heads_list(directory: str | Path | None = None) -> HeadsListResult:
    """The heads on the heads search path (:func:`auditor.defaults.heads_search_path`), or
    in ``directory`` only; reads only. A head that cannot be loaded is listed with its
    ``error``."""
    from auditor.defaults import HeadsDir, heads_search_path
    from auditor.heads import find_heads, load_head

    dirs = ([HeadsDir(Path(directory), "given")] if directory is not None
            else heads_search_path())
    rows = []
    for found in find_heads(dirs):
        row: dict[str, Any] = {"name": found.name, "path": str(found.path),
                               "origin": found.origin,
                               "shadowed_by": None if found.shadowed_by is None
                               else str(found.shadowed_by)}
        try:
            head = load_head(found.path)
        except AuditorError as e:
            rows.append({**row, "task": None, "classes": [], "representation": None,
                         "test_macro_f1": None, "description": "", "error": e.message})
            continue
        test = (head.card.get("test_head") or {})
        rows.append({**row, "task": head.config.task, "classes": head.config.classes,
                     "representation": head.card.get("representation", {}).get(
                         "candidate", head.config.representation),
                     "test_macro_f1": test.get("macro_f1_at_threshold", test.get("macro_f1")),
                     "description": head.config.description, "error": None})
    return HeadsListResult(heads=json_values(rows),
                           search_path=[{"path": str(d.path), "origin": d.origin,
                                         "exists": d.path.is_dir()} for d in dirs])


def head_for_worker(ref: str) -> str:
    """How to name a head to a queued job, whose worker runs in another directory: a head
    directory, or a name found in this working directory's ``heads/``, as an absolute path;
    any other name as it is (the worker looks it up along its own search path)."""
    from auditor.heads import resolve_head
    from auditor.heads.search import is_head_path

    if is_head_path(ref):
        return str(Path(ref).expanduser().resolve())
    try:
        found = resolve_head(ref)
    except ConfigError:
        return ref
    here = (Path.cwd() / "heads").resolve()
    return str(found.resolve()) if found.resolve().parent == here else ref


def where_is_head(name: str) -> str | None:
    """The directory the head name ``name`` finds along the search path (None: none);
    reads only, loads nothing."""
    from auditor.heads import resolve_head

    try:
        return str(resolve_head(name))
    except ConfigError:
        return None


def heads_serving(store: str | Path) -> dict[str, str | None]:
    """Which installed heads accept a feature store: head name → ``None`` when it does,
    else why not (reads only: the store's provenance and the heads' cards)."""
    from auditor.errors import ProvenanceMismatch
    from auditor.heads import list_heads, load_head
    from auditor.store import read_metadata

    metadata = read_metadata(store)
    out: dict[str, str | None] = {}
    for path in list_heads():
        head = load_head(path)
        try:
            head.check(metadata)
        except ProvenanceMismatch as e:
            out[head.name] = e.message
        else:
            out[head.name] = None
    return out


def run_heads_show(head: str | Path, *, options: HeadsShowOptions) -> HeadsShowResult:
    """A head's card and the SAE features with the largest weights per class (labelled
    from the SAE's feature dictionary when there is one); reads only."""
    from auditor.features.locate import load_annotations, sae_of
    from auditor.heads import load_heads
    from auditor.heads.card import render_card
    from auditor.heads.head import resolve_sae

    loaded = load_heads([str(head)])[0]
    card = render_card(loaded.config.to_dict(), loaded.card)
    if options.features <= 0:
        return HeadsShowResult(head=loaded.name, card=card, weights=None, no_weights=None)
    provenance = loaded.card.get("provenance") or {}
    saes = provenance.get("saes") or {}
    key = loaded.config.sae if loaded.config.sae in saes else None
    sha, _ = sae_of(provenance, sae=key)
    info = saes.get(key) if key is not None else next(iter(saes.values()), None)
    # the card records the SAE relative to the models dir; else it is found by its hash
    sae_path = resolve_sae(info) if sha is not None and info else None
    notes = load_annotations(sha, labels_dir=options.labels, sae_path=sae_path)
    try:
        weights = loaded.feature_weights(k=options.features)
    except AuditorError as e:
        return HeadsShowResult(head=loaded.name, card=card, weights=None,
                               no_weights=e.message, dictionary=notes.info())
    return HeadsShowResult(
        head=loaded.name, card=card, no_weights=None, dictionary=notes.info(),
        weights={cls: [{"feature": int(f), "weight": float(w), "label": notes.label(f),
                        "example": notes.example(f)} for f, w in feats]
                 for cls, feats in weights.items()})
