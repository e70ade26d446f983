"""A head's card as Markdown: data, representation choice, metrics against the baselines."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from auditor._versions import libraries_text

__all__ = ["domain_section", "metrics_table", "mix_data_section", "render_card",
           "transfer_section"]

_METRICS = ("accuracy", "macro_f1", "auroc", "pr_auc", "ece")
_MULTILABEL_METRICS = ("micro_f1", "macro_f1", "auroc", "pr_auc", "subset_accuracy")


def _cell(m: Mapping[str, Any], k: str) -> str:
    v = m.get(k)
    if v is None:
        return "–"
    std = m.get(f"{k}_std")
    return f"{v:.3f}" + (f" ± {std:.3f}" if std is not None else "")


def metrics_table(results: Mapping[str, Mapping[str, Any]], *, chosen: str | None = None,
                  metrics: tuple[str, ...] = _METRICS) -> str:
    """A Markdown table, one row per representation; the best macro-F1 is marked and a
    winning baseline is named under the table.

    Parameters
    ----------
    results
        ``name -> metrics`` (e.g. from :func:`auditor.heads.evaluate_candidates`).
    chosen
        The representation the head uses (marked "head").
    """
    if not results:
        return "(no results)"
    best = max(results, key=lambda r: results[r].get("macro_f1") or 0.0)
    lines = ["| representation | " + " | ".join(metrics) + " |",
             "|---" * (len(metrics) + 1) + "|"]
    for name, m in results.items():
        tags = [t for t, on in (("head", name == chosen), ("best", name == best)) if on]
        label = name + (f" ({', '.join(tags)})" if tags else "")
        lines.append(f"| {label} | " + " | ".join(_cell(m, k) for k in metrics) + " |")
    if chosen is not None and best != chosen:
        gap = (results[best].get("macro_f1") or 0.0) - (results[chosen].get("macro_f1") or 0.0)
        lines.append(f"\n**{best} beats the head's representation ({chosen}) here by "
                     f"{gap:.3f} macro-F1.**")
    return "\n".join(lines)


def _task(config: Mapping[str, Any]) -> str:
    if config.get("multilabel"):
        return "multilabel"
    return "binary" if len(config["classes"]) == 2 else "multiclass"


def render_card(config: Mapping[str, Any], card: Mapping[str, Any]) -> str:
    """The Markdown card of a head from its config (``HeadConfig.to_dict()``) and card."""
    prov = card.get("provenance") or {}
    saes = prov.get("saes") or {}
    sae: Mapping[str, Any] = next(iter(saes.values()), {})
    rep = card.get("representation") or {}
    chosen = rep.get("candidate")
    metrics = _MULTILABEL_METRICS if config.get("multilabel") else _METRICS
    out = [f"# Head `{config['name']}`", "", config.get("description") or "", ""]
    out += ["| | |", "|---|---|",
            f"| task | {_task(config)}: "
            f"{', '.join(config['classes'])} |",
            f"| representation | {chosen}: {rep.get('description', '')} "
            f"({rep.get('chosen_by', '')}) |"]
    if config.get("threshold") is not None:
        out.append(f"| decision | `{config['positive_class']}` when p ≥ "
                   f"{config['threshold']:.3f} ({config.get('threshold_rule')}) |")
    cal = card.get("calibration")
    if cal:
        how = ("Platt-calibrated on a held-out 20 % of the training data"
               if cal.get("method") == "sigmoid" else "the probe's own")
        ece = ", ".join(f"{k} {v:.3f}" for k, v in (cal.get("oof_ece") or {}).items())
        out.append(f"| probabilities | {how} (chosen by {cal.get('chosen_by', '?')}"
                   + (f"; out-of-fold ECE {ece}" if ece else "") + ") |")
    out += [f"| model | {prov.get('model', {}).get('weights_sha256', '?')[:16]}… (weights "
            f"sha256), layer {sae.get('layer')} {sae.get('hook_point')} |",
            f"| SAE | sha256 {str(sae.get('sha256', '?'))[:16]}…, d_sae {sae.get('d_sae')}, "
            f"k {sae.get('k')} |",
            f"| extraction | {config.get('extract')} |",
            f"| auditor | {prov.get('auditor_version')} |",
            f"| libraries (extraction) | {libraries_text(prov.get('libraries'))} |", ""]
    data = card.get("data")
    if data and data.get("sources"):
        out += mix_data_section(data)
    elif data:
        out += ["## Data", "", f"{data.get('description', '')}", "",
                f"Source: `{data.get('source')}` from {data.get('registry')} "
                f"{data.get('packages')}; licence: {data.get('licence')}.", ""]
        for split, s in (data.get("splits") or {}).items():
            out.append(f"- {split}: {s['used']:,} of {s['available']:,} documents used; "
                       f"labels {s['labels']}")
        out += ["", "The test split is the source's own held-out split: neither the head "
                "nor the SAE was trained on it.", ""]
    cv = card.get("cross_validation")
    if cv:
        tr = card.get("training") or {}
        out += [f"## Choice: {tr.get('folds', 5)}-fold cross-validation on the training split",
                "", metrics_table(cv, chosen=chosen, metrics=metrics), ""]
    out += transfer_section(card)
    for key, title in (("test", "Test split, trained on all training documents"),
                       ("test_200", "Test split, trained on 200 labelled documents "
                                    "(mean ± std over subsamples)")):
        if card.get(key):
            out += [f"## {title}", "", metrics_table(card[key], chosen=chosen,
                                                      metrics=metrics), ""]
    if card.get("test_head"):
        h = card["test_head"]
        out += ["## The shipped head on the test split (its probabilities and threshold)", "",
                "| | |", "|---|---|"]
        out += [f"| {k} | {v:.3f} |" if isinstance(v, float) else f"| {k} | {v} |"
                for k, v in h.items()]
        out.append("")
    out += domain_section(card)
    if card.get("notes"):
        out += ["## Notes", "", *[f"- {n}" for n in card["notes"]], ""]
    return "\n".join(out)


def domain_section(card: Mapping[str, Any]) -> list[str]:
    """The card's "Domain" section (no lines for a head without a domain model).

    Parameters
    ----------
    card
        The head's card; its ``domain`` is :meth:`auditor.heads.domain.DomainModel.summary`.

    Returns
    -------
    list of str
        Markdown lines.
    """
    d = card.get("domain")
    if not d:
        return []
    held = d.get("heldout") or {}
    share = held.get("in_domain_share")
    return ["## Domain", "",
            f"`domain_score`: mean cosine similarity of {d.get('transform')} "
            f"{d.get('pooling')}-pooled SAE features to the k = {d.get('k')} nearest of "
            f"{d.get('n_ref')} training documents (seeded, stratified by label). "
            f"`in_domain` when the score is at least {d.get('threshold', 0.0):.4f}, the "
            f"{d.get('quantile')} quantile of {d.get('folds')}-fold out-of-fold scores of "
            f"the {held.get('documents')} training documents; "
            + (f"{share:.1%} of those held-out in-domain documents are at or above it."
               if share is not None else ""), ""]


def _score(v: float | None) -> str:
    return "–" if v is None else f"{v:.3f}"


def transfer_section(card: Mapping[str, Any]) -> list[str]:
    """The card's "Transfer (leave one source out)" section (no lines without one).

    Per regime (all labels, at most ``n_labels`` per class) a table: one row per held-out
    group (documents, classes, the metric: macro-F1 over the classes it has, or accuracy
    for a one-class group), one column per representation at its own regularisation and
    the TF-IDF baseline, plus the chosen variant when its regularisation differs; then
    the mean held-out score of every regularisation tried, the skipped groups with their
    reasons, and the choice (or why cross-validation decided).

    Parameters
    ----------
    card
        A head's card; its ``transfer`` entry is
        :attr:`auditor.heads.transfer.TransferSelection.card`.
    """
    tr = card.get("transfer")
    if not tr:
        return []
    column = tr.get("group_column") or "group"
    out = [f"## Transfer (leave one {column} out)", ""]
    chosen = tr.get("chosen")
    groups: Mapping[str, Any] = tr.get("groups") or {}
    variants: Mapping[str, Any] = tr.get("variants") or {}
    if groups and tr.get("scored"):
        out += [f"Each row: every representation trained on the other {column}s' documents "
                f"and scored on this {column}'s (macro-F1 over the classes it has; "
                f"accuracy when it has one class; documents of classes no other {column} "
                f"has are left out). Regularisation ×1 unless named.", ""]
        shown = [k for k, v in variants.items() if v["C_scale"] == 1.0]
        if chosen and chosen["variant"] not in shown:
            shown.append(chosen["variant"])
        for regime, title in (("all", "all labels"),
                              ("few", f"≤ {tr.get('n_labels')} labels per class")):
            if not (tr.get("mean") or {}).get(regime):
                continue
            if regime == "few" and all(groups[n]["n_train_few"] == groups[n]["n_train"]
                                       for n in tr["scored"]):
                out += [f"{title}: the same as all labels (no class of the training "
                        f"{column}s has more).", ""]
                continue
            heads = [variants[k]["candidate"] if variants[k]["C_scale"] == 1.0 else k
                     for k in shown]
            heads = [h + (" (head)" if chosen and k == chosen["variant"] else "")
                     for h, k in zip(heads, shown, strict=True)]
            out += [f"**{title}**", "",
                    f"| held-out {column} | docs | classes | metric | " + " | ".join(heads)
                    + " |", "|---" * (len(shown) + 4) + "|"]
            for name in tr["scored"]:
                g = groups[name]
                classes = ", ".join(f"{c} {n}" for c, n in g["classes"].items())
                if g.get("unseen"):
                    classes += " (unseen: " + ", ".join(g["unseen"]) + ")"
                out.append(f"| {name} | {g['n']} | {classes} | {g['metric']} | "
                           + " | ".join(_score(g[regime].get(k)) for k in shown) + " |")
            mean = tr["mean"][regime]
            out += ["| mean | | | | " + " | ".join(_score(mean.get(k)) for k in shown)
                    + " |", ""]
        scales = tr.get("C_scales") or []
        mean_all = (tr.get("mean") or {}).get("all") or {}
        reps = list(dict.fromkeys(v["candidate"] for v in variants.values()
                                  if v["candidate"] != "tfidf"))
        if len(scales) > 1 and reps:
            from auditor.heads.transfer import variant_name

            out += ["Mean held-out score (all labels) per regularisation factor "
                    "(C × factor; LightGBM: min_child_samples ÷ factor):", "",
                    "| representation | " + " | ".join(f"×{s:g}" for s in scales) + " |",
                    "|---" * (len(scales) + 1) + "|"]
            for r in reps:
                out.append(f"| {r} | " + " | ".join(
                    _score(mean_all.get(variant_name(r, s))) for s in scales) + " |")
            out.append("")
    skipped = tr.get("skipped") or {}
    if skipped:
        out += [f"Skipped {column}s:", "",
                *[f"- {name}: {why}" for name, why in skipped.items()], ""]
    if chosen:
        out.append(f"Chosen by transfer: **{chosen['candidate']}** at regularisation "
                   f"C×{chosen['C_scale']:g} (mean held-out score {chosen['mean']:.3f}; "
                   f"ties broken by cross-validated macro-F1). The chosen variant's mean is "
                   f"measured on the groups it was chosen on, so it is optimistic.")
    else:
        out.append(f"Chosen by cross-validation, not by transfer: {tr.get('fallback')}.")
    out.append("")
    return out


def mix_data_section(data: Mapping[str, Any]) -> list[str]:
    """The card's "Data" section for a corpus mixed from several sources.

    Every source with its registry, package versions, licence and document counts per
    split; the documents per class and source; languages; the categories the head has no
    real labelled data for (``gaps``); weak labels and the rules-only baseline they are
    measured against.

    Parameters
    ----------
    data
        The build's data record (``sources``, ``splits`` with ``labels`` / ``sources`` /
        ``label_source`` / ``lang``, ``gaps``, ``weak_labels``, ``rules_baseline``).

    Returns
    -------
    list of str
        Markdown lines.
    """
    splits: Mapping[str, Any] = data.get("splits") or {}
    names = list(splits)
    out = ["## Data", "", str(data.get("description") or ""), "",
           "| source | registry | packages | licence | "
           + " | ".join(f"{n} docs" for n in names) + " |",
           "|---" * (4 + len(names)) + "|"]
    for src, info in (data.get("sources") or {}).items():
        packages = ", ".join(f"{p} {v}" for p, v in (info.get("packages") or {}).items())
        counts = [f"{(splits[n].get('sources') or {}).get(src, 0):,}" for n in names]
        out.append(f"| `{src}` | {info.get('registry')} | {packages} | "
                   f"{info.get('licence')} | " + " | ".join(counts) + " |")
    out.append("")
    for n in names:
        sp = splits[n]
        out.append(f"- {n}: {sp['used']:,} of {sp['available']:,} documents used; "
                   f"labels {sp['labels']}")
        if sp.get("lang"):
            out.append(f"  - languages: {sp['lang']}")
    out.append("")
    by_class = (splits.get("train") or {}).get("label_source") or {}
    if by_class:
        out += ["Training documents per class and source:", "",
                "| class | sources |", "|---|---|"]
        out += [f"| {c} | " + ", ".join(f"{s} {k}" for s, k in per.items()) + " |"
                for c, per in by_class.items()]
        out.append("")
    out += ["Each source is split into train and test by a hash of the document's text "
            "(the source's own split where it has one): neither the head nor the SAE was "
            "trained on the test documents. The `source` of every document is kept for the "
            "transfer evaluation.", ""]
    if data.get("gaps"):
        out += [f"**Gaps.** {data['gaps']}", ""]
    weak = data.get("weak_labels") or []
    rules = data.get("rules_baseline")
    if weak:
        out.append(f"**Weak labels.** {', '.join(weak)} are generated or rule-based labels, "
                   "not human judgements.")
        if rules:
            out.append(f"The rules alone (`auditor.corpora.weak_quality`) reach macro-F1 "
                       f"{rules['macro_f1']:.3f} on the test split ({rules['n']:,} documents; "
                       "per class " + ", ".join(f"{c} {v:.2f}" for c, v in
                                                (rules.get('f1') or {}).items())
                       + "); the head is compared with that below.")
        out.append("")
    return out
