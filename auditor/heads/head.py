"""A head: a fitted probe plus its representation, classes, threshold, provenance and card.

Saved as a directory (no pickle anywhere)::

    head.json              HeadConfig (round-trips through JSON)
    probe/                 the probe, saved by auditor.probes.save_probe (its card.json
                           holds the training data, metrics and provenance)
    decoder.safetensors    raw-representation heads: the probe's weights projected on the
                           SAE decoder (auditor.explain.decoder_projection), so decisions
                           are explained in SAE features without loading the SAE
    CARD.md                the human-readable card
    domain.safetensors     the out-of-domain model (:mod:`auditor.heads.domain`): heads
    domain.json            trained before it have none, and then no domain scores
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp

from auditor._files import atomic_directory
from auditor.errors import ConfigError, ProvenanceMismatch
from auditor.explain import Contributions, feature_contributions, raw_contributions
from auditor.extract import ExtractConfig
from auditor.heads.domain import DOMAIN_FILE, DOMAIN_JSON, DomainModel, load_domain, save_domain

__all__ = [
    "GUARDED_EXTRACT",
    "HEAD_EXTRACT",
    "REPRESENTATIONS",
    "Head",
    "HeadConfig",
    "HeadInputs",
    "guarded_settings",
    "load_head",
    "portable_provenance",
    "resolve_sae",
    "save_head",
    "write_head",
]

FORMAT = "auditor-head"
VERSION = 1
CONFIG_FILE = "head.json"
PROBE_DIR = "probe"
DECODER_FILE = "decoder.safetensors"
CARD_MD = "CARD.md"

#: What a head can read: pooled SAE features, or mean raw activations of the SAE's layer.
REPRESENTATIONS = ("sae", "raw")

# The one source of truth of a head's extraction settings: what the default heads are
# extracted with, and which of a store's settings a head records and guards.

#: Extraction settings that change feature values: a head records them from its training
#: store (:func:`guarded_settings`) and refuses stores that differ.
GUARDED_EXTRACT = ("max_length", "max_windows", "exclude_outliers", "outlier_factor",
                   "outlier_threshold")

#: Extraction settings shared by the default heads, so one pass over a corpus feeds all of
#: them: 128-token windows, at most two per document, max- and mean-pooled SAE features
#: and mean raw activations (for heads where the raw-activation representation wins).
HEAD_EXTRACT = ExtractConfig(poolings=("max", "mean"), max_length=128, max_windows=2,
                             raw_mean=True)


def guarded_settings(metadata: Mapping[str, Any]) -> dict[str, Any]:
    """The :data:`GUARDED_EXTRACT` settings a store's provenance records (its ``extract``).

    Examples
    --------
    >>> guarded_settings({"extract": {"max_length": 128, "poolings": ["max"]}})
    {'max_length': 128}
    """
    extract = metadata.get("extract") or {}
    return {k: extract.get(k) for k in GUARDED_EXTRACT if k in extract}


@dataclass
class HeadConfig:
    """How a head reads a feature store and turns probabilities into labels.

    Parameters
    ----------
    name
        Head name, used as the output column prefix (``<name>.label``, ``<name>.p.<cls>``).
    classes
        Class labels, in the probe's ``classes_`` order (multilabel heads: the label
        names, in the probe's ``labels_`` order).
    representation : {'sae', 'raw'}
        Pooled SAE features (``sae``) or mean raw activations at the SAE's hook (``raw``).
    sae
        SAE key of the store (its only SAE when None).
    pooling
        SAE pooling read by ``sae`` heads; ``raw`` heads read ``mean`` SAE codes to explain.
    feature_transform
        Recorded for the card (the probe applies it).
    positive_class
        Binary heads: the class that is flagged (e.g. ``insult``, ``spam``).
    threshold
        Binary heads: predict ``positive_class`` when its probability is at least this.
    threshold_rule
        How the threshold was chosen (e.g. ``max F1 on out-of-fold predictions``).
    extract
        The training features' extraction settings (see :data:`GUARDED_EXTRACT`).
    description
        One line for ``auditor heads list``.
    multilabel
        Each document carries any subset of ``classes`` (one binary probe per label,
        :class:`~auditor.probes.MultiLabelProbe`) instead of exactly one class.
    thresholds
        Multilabel heads: per label (in ``classes`` order), the label is present when its
        probability is at least this; 0.5 for every label when None.
    """

    name: str
    classes: list[str]
    representation: str = "sae"
    sae: str | None = None
    pooling: str = "max"
    feature_transform: str = "none"
    positive_class: str | None = None
    threshold: float | None = None
    threshold_rule: str | None = None
    extract: dict[str, Any] = field(default_factory=dict)
    description: str = ""
    multilabel: bool = False
    thresholds: list[float] | None = None

    def __post_init__(self) -> None:
        if not self.name or any(c in self.name for c in "./\\ "):
            raise ConfigError(f"head name must be non-empty without '.', '/', spaces: "
                              f"{self.name!r}", field="name")
        if self.representation not in REPRESENTATIONS:
            raise ConfigError(f"representation must be one of {REPRESENTATIONS}, got "
                              f"{self.representation!r}", field="representation")
        self.classes = [str(c) for c in self.classes]
        if len(self.classes) < 2:
            raise ConfigError("a head needs at least two classes", field="classes")
        if self.positive_class is not None and self.positive_class not in self.classes:
            raise ConfigError(f"positive_class {self.positive_class!r} is not a class "
                              f"({self.classes})", field="positive_class")
        if self.threshold is not None:
            if len(self.classes) != 2 or self.positive_class is None:
                raise ConfigError("a threshold needs a binary head with a positive_class",
                                  field="threshold")
            if not 0.0 <= self.threshold <= 1.0:
                raise ConfigError(f"threshold must be in [0, 1], got {self.threshold}",
                                  field="threshold")
        self.multilabel = bool(self.multilabel)
        if self.multilabel:
            self._check_multilabel()
        elif self.thresholds is not None:
            raise ConfigError("per-label thresholds are for multilabel heads (a binary "
                              "head has one threshold)", field="thresholds")

    def _check_multilabel(self) -> None:
        if len(set(self.classes)) != len(self.classes):
            raise ConfigError(f"multilabel head labels must be distinct, got {self.classes}",
                              field="classes")
        if self.positive_class is not None or self.threshold is not None:
            raise ConfigError("a multilabel head has per-label thresholds, not a "
                              "positive_class and threshold",
                              field="positive_class" if self.positive_class is not None
                              else "threshold")
        if self.thresholds is None:
            return
        self.thresholds = [float(t) for t in self.thresholds]
        if len(self.thresholds) != len(self.classes):
            raise ConfigError(f"{len(self.thresholds)} thresholds for {len(self.classes)} "
                              f"labels (give one per label)", field="thresholds")
        bad = [(c, t) for c, t in zip(self.classes, self.thresholds, strict=True)
               if not 0.0 <= t <= 1.0]
        if bad:
            raise ConfigError(f"thresholds must be in [0, 1], got {bad[0][1]} for label "
                              f"{bad[0][0]!r}", field="thresholds")

    @property
    def task(self) -> str:
        """``binary``, ``multiclass`` or ``multilabel``."""
        if self.multilabel:
            return "multilabel"
        return "binary" if len(self.classes) == 2 else "multiclass"

    def label_thresholds(self) -> np.ndarray:
        """Multilabel heads: each label's threshold, in ``classes`` order (0.5 if unset).

        Raises
        ------
        ConfigError
            Not a multilabel head.
        """
        if not self.multilabel:
            raise ConfigError(f"head {self.name!r} is {self.task}, not multilabel",
                              field="thresholds")
        if self.thresholds is None:
            return np.full(len(self.classes), 0.5)
        return np.asarray(self.thresholds, dtype=np.float64)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able dict; :meth:`from_dict` inverts it."""
        return {"format": FORMAT, "version": VERSION, **asdict(self)}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> HeadConfig:
        """Build from :meth:`to_dict` output.

        Raises
        ------
        ConfigError
            Wrong format or version, unknown or missing keys.
        """
        d = dict(d)
        if d.pop("format", FORMAT) != FORMAT or d.pop("version", VERSION) != VERSION:
            raise ConfigError(f"not an {FORMAT} version {VERSION} config", field="format")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ConfigError(f"unknown head settings: {', '.join(unknown)}")
        try:
            return cls(**d)
        except TypeError as e:
            raise ConfigError(f"incomplete head config: {e}") from e


@dataclass
class HeadInputs:
    """What a head reads from a store, aligned by document.

    Parameters
    ----------
    doc_ids
        Document ids, in store order.
    X
        The probe's input: CSR SAE features or dense raw means.
    activations
        Pooled SAE features reported beside each contribution (the head's pooling for
        ``sae`` heads, ``mean`` for ``raw`` heads, whose explanation uses them).
    metadata
        The store's provenance.
    """

    doc_ids: list[str]
    X: Any
    activations: sp.csr_matrix
    metadata: dict[str, Any]


class Head:
    """A trained head: use it with :meth:`read`, :meth:`predict_proba`, :meth:`explain`.

    Parameters
    ----------
    config : HeadConfig
    probe
        A fitted probe (see :mod:`auditor.probes`).
    card : mapping
        Training data, metrics and ``provenance`` (the training store's).
    decoder : (per_feature, bias) or None
        For ``raw`` heads: :func:`auditor.explain.decoder_projection` of the probe weights.
    path : Path or None
        Where it was loaded from.
    domain : DomainModel or None
        Its out-of-domain model (:mod:`auditor.heads.domain`); None for a head loaded
        from ``path`` reads it from there on first use (:attr:`domain`).
    """

    def __init__(self, config: HeadConfig, probe: Any, *, card: Mapping[str, Any],
                 decoder: tuple[np.ndarray, np.ndarray] | None = None,
                 path: Path | None = None, domain: DomainModel | None = None) -> None:
        self.config = config
        self.probe = probe
        self.card = dict(card)
        self.decoder = decoder
        self.path = path
        self._domain = domain
        self._domain_read = domain is not None or path is None

    def __repr__(self) -> str:
        c = self.config
        return (f"Head({c.name!r}, {c.task}, classes={c.classes}, "
                f"representation={c.representation!r})")

    @property
    def name(self) -> str:
        """The head's name."""
        return self.config.name

    @property
    def domain(self) -> DomainModel | None:
        """The out-of-domain model, read from the head's directory on first use (None
        for heads saved without one).

        Raises
        ------
        ConfigError
            The domain files are incomplete, unreadable or inconsistent (naming the file).
        """
        if not self._domain_read:
            assert self.path is not None
            self._domain = load_domain(self.path)
            self._domain_read = True
        return self._domain

    def domain_scores(self, inputs: HeadInputs) -> np.ndarray | None:
        """Each document's domain score (see :mod:`auditor.heads.domain`), or None when
        the head has no domain model; compare with ``head.domain.threshold``."""
        model = self.domain
        if model is None:
            return None
        c = self.config
        read = c.pooling if c.representation == "sae" else "mean"
        if model.pooling != read:
            raise ConfigError(f"head {self.name!r}: its domain model reads {model.pooling!r} "
                              f"pooling, the head reads {read!r}",
                              path=None if self.path is None else self.path / DOMAIN_JSON,
                              field="pooling")
        return model.score(inputs.activations)

    # ------------------------------------------------------------------ reading a store

    def check(self, metadata: Mapping[str, Any]) -> None:
        """Refuse a store extracted differently from the head's training data.

        Raises
        ------
        ProvenanceMismatch
            Another model, SAE, layer or hook; a pooling or raw-mean hook it needs is
            missing; or a guarded extraction setting differs (naming each key).
        """
        from auditor.probes import check_provenance

        prov = dict(self.card.get("provenance") or {})
        needed = dict(prov)
        if self.config.sae is not None:
            needed["sae"] = self.config.sae
        needed["pooling"] = [self.config.pooling if self.config.representation == "sae"
                             else "mean"]
        try:
            check_provenance(needed, metadata)
        except ProvenanceMismatch as e:
            raise ProvenanceMismatch(f"head {self.name!r}: {e.message}", field=e.field) from e
        diffs = [k for k in GUARDED_EXTRACT if k in self.config.extract and
                 (metadata.get("extract") or {}).get(k) != self.config.extract[k]]
        if diffs:
            have = metadata.get("extract") or {}
            detail = "; ".join(f"{k}: head {self.config.extract[k]!r} vs features "
                               f"{have.get(k)!r}" for k in diffs)
            raise ProvenanceMismatch(
                f"head {self.name!r}: the features were extracted with other settings "
                f"({detail})", field=", ".join(f"extract.{k}" for k in diffs))
        if self.config.representation == "raw" and not metadata.get("raw_mean"):
            raise ProvenanceMismatch(
                f"head {self.name!r} reads mean raw activations; extract with raw_mean",
                field="raw_mean")

    def read(self, store: str | Path, *, allow_partial: bool = False) -> HeadInputs:
        """Read this head's input from a feature store (after :meth:`check`).

        Raises
        ------
        ProvenanceMismatch
            See :meth:`check`.
        """
        from auditor.store import read_features, read_metadata, read_raw_means

        metadata = read_metadata(store)
        self.check(metadata)
        c = self.config
        pooling = c.pooling if c.representation == "sae" else "mean"
        fm = read_features(store, sae=c.sae, pooling=pooling, columns=[],
                           allow_partial=allow_partial)
        X: Any = fm.X
        if c.representation == "raw":
            hook = _raw_hook(metadata, c.sae)
            raw, raw_ids = read_raw_means(store, hook=hook, allow_partial=allow_partial)
            if raw_ids != fm.doc_ids:
                raise ProvenanceMismatch("raw means and SAE features are not aligned",
                                         path=Path(store))
            X = raw
        return HeadInputs(doc_ids=fm.doc_ids, X=X, activations=fm.X, metadata=metadata)

    # ------------------------------------------------------------------ scoring

    def predict_proba(self, inputs: HeadInputs) -> np.ndarray:
        """Calibrated class probabilities ``[n_docs, n_classes]``, columns in ``classes``.

        For multilabel heads, each label's probability of being present (rows need not
        sum to 1).
        """
        return np.asarray(self.probe.predict_proba(inputs.X), dtype=np.float64)

    def labels(self, proba: np.ndarray) -> np.ndarray:
        """Labels from probabilities: the threshold for binary heads, else the argmax.

        Multilabel heads: an object array holding, per document, the list of labels whose
        probability is at least their threshold (see :meth:`label_sets`).
        """
        classes = np.asarray(self.config.classes, dtype=object)
        c = self.config
        if c.multilabel:
            out = np.empty(len(proba), dtype=object)
            for i, present in enumerate(self.label_sets(proba)):
                out[i] = present
            return out
        if c.threshold is not None and c.positive_class is not None:
            pos = c.classes.index(c.positive_class)
            neg = 1 - pos
            return np.where(proba[:, pos] >= c.threshold, classes[pos], classes[neg])
        return classes[np.argmax(proba, axis=1)]

    def label_sets(self, proba: np.ndarray) -> list[list[str]]:
        """The labels of each document, most probable first.

        Parameters
        ----------
        proba : ndarray of shape (n_docs, n_classes)
            From :meth:`predict_proba`.

        Returns
        -------
        list of list of str
            Multilabel heads: the labels with ``p >= threshold``, by decreasing
            probability (ties in ``classes`` order), possibly empty. Binary and multiclass
            heads: the one label of :meth:`labels`.
        """
        if not self.config.multilabel:
            return [[str(label)] for label in self.labels(proba).tolist()]
        p = np.asarray(proba, dtype=np.float64)
        present = p >= self.config.label_thresholds()[None, :]
        order = np.argsort(-p, axis=1, kind="stable")
        classes = self.config.classes
        return [[classes[j] for j in order[i] if present[i, j]] for i in range(len(p))]

    def explained_labels(self, proba: np.ndarray) -> list[str]:
        """The label each document's explanation is about.

        Binary and multiclass heads: the predicted label (:meth:`labels`). Multilabel
        heads: the most probable present label, or the most probable label when none is
        present.

        Parameters
        ----------
        proba : ndarray of shape (n_docs, n_classes)
            From :meth:`predict_proba`.

        Returns
        -------
        list of str
        """
        if not self.config.multilabel:
            return [str(label) for label in self.labels(proba).tolist()]
        top = np.argmax(proba, axis=1).tolist()
        return [s[0] if s else self.config.classes[j]
                for s, j in zip(self.label_sets(proba), top, strict=True)]

    def predict(self, inputs: HeadInputs) -> np.ndarray:
        """Labels of the documents."""
        return self.labels(self.predict_proba(inputs))

    def contributions(self, inputs: HeadInputs) -> Contributions:
        """Per-SAE-feature contributions to the head's score(s) on these documents."""
        if self.config.representation == "raw":
            if self.decoder is None:
                raise ConfigError(f"head {self.name!r} reads raw activations but has no "
                                  f"decoder projection to explain them", field="decoder")
            if self.config.multilabel:
                return self._multilabel_raw_contributions(inputs)
            return raw_contributions(self.probe, inputs.X, inputs.activations,
                                     per_feature=self.decoder[0], decoder_bias=self.decoder[1])
        return feature_contributions(self.probe, inputs.X)

    def _multilabel_raw_contributions(self, inputs: HeadInputs) -> Contributions:
        """Each label's binary raw probe explained through its column of the decoder
        projection, gathered into one output per label."""
        assert self.decoder is not None
        per_feature, bias = self.decoder
        parts = [raw_contributions(est, inputs.X, inputs.activations,
                                   per_feature=per_feature[:, [k]], decoder_bias=bias[[k]])
                 for k, est in enumerate(self.probe.estimators_)]
        residuals = [p.residual for p in parts]
        return Contributions(
            outputs=list(self.config.classes), values=[p.values[0] for p in parts],
            bias=np.column_stack([p.bias[:, 0] for p in parts]),
            residual=None if any(r is None for r in residuals)
            else np.column_stack([r[:, 0] for r in residuals if r is not None]))

    def feature_weights(self, *, k: int = 10) -> dict[str, list[tuple[int, float]]]:
        """The SAE features that separate the classes most, by the head's own weights.

        For ``sae`` heads the linear probe's per-feature weights (on the transformed
        feature); for ``raw`` heads each feature's decoder direction projected on the
        weights (score per unit of mean activation). Binary heads list the features
        pushing towards each class (negative weights argue for the other class);
        multilabel heads, per label, the features pushing its own probe towards it.

        Returns
        -------
        dict
            ``class -> [(feature, weight), …]``, strongest first.

        Raises
        ------
        ConfigError
            The probe has no per-feature weights (e.g. LightGBM or rules).
        """
        from auditor.explain import base_probe

        if self.config.representation == "raw":
            if self.decoder is None:
                raise ConfigError("raw head without a decoder projection", field="decoder")
            W = self.decoder[0].T
        else:
            bases = ([base_probe(e) for e in self.probe.estimators_] if self.config.multilabel
                     else [base_probe(self.probe)])
            for base in bases:
                if not hasattr(base, "feature_weights_"):
                    raise ConfigError(f"{type(base).__name__} has no per-feature weights",
                                      field="probe")
            # a multilabel head: each label's binary probe, towards that label
            W = np.vstack([np.asarray(b.feature_weights_)[:1] for b in bases]) \
                if self.config.multilabel else np.asarray(bases[0].feature_weights_)
        classes = self.config.classes
        rows = [(classes[1], W[0]), (classes[0], -W[0])] \
            if W.shape[0] == 1 and not self.config.multilabel else \
            list(zip(classes, W, strict=True))
        out: dict[str, list[tuple[int, float]]] = {}
        for cls, w in rows:
            top = np.argsort(-w, kind="stable")[:k]
            out[cls] = [(int(f), float(w[f])) for f in top if w[f] > 0]
        return out


def _raw_hook(metadata: Mapping[str, Any], sae: str | None) -> str | None:
    """The raw-mean hook of the head's SAE (``layer9.resid_post`` style names)."""
    hooks = list(metadata.get("raw_mean") or [])
    saes = metadata.get("saes") or {}
    key = sae if sae is not None else (next(iter(saes)) if len(saes) == 1 else None)
    info = saes.get(key) if key is not None else None
    if info is not None:
        name = f"layer{info.get('layer')}.{info.get('hook_point')}"
        if name in hooks:
            return name
    return hooks[0] if len(hooks) == 1 else None


# --------------------------------------------------------------------------- artifacts
#
# A card records the artifacts a head was trained with (model, SAEs, training data) by
# sha256 and by a path relative to the models dir (``relative_to: "models"``), never by an
# absolute path of the machine that built it: a path outside the models dir is kept as its
# bare file name (``relative_to: null``), and the artifact is then found by its hash.

#: (section, key) of the provenance paths made portable; ``saes`` applies to each SAE.
_ARTIFACT_PATHS = (("model", "id"), ("model", "tokenizer"), ("input", "path"),
                   ("saes", "path"))


def _portable_path(value: Any, models: Path) -> tuple[Any, str | None]:
    """``value`` relative to ``models`` (``'models'``), else its bare name (``None``)."""
    if not isinstance(value, str) or not value or not Path(value).is_absolute():
        return value, None
    path = Path(value)
    for base in {models, models.resolve()}:
        try:
            return path.relative_to(base).as_posix(), "models"
        except ValueError:
            continue
    return path.name, None


def portable_provenance(provenance: Mapping[str, Any], *,
                        models_dir: str | Path | None = None) -> dict[str, Any]:
    """A copy of ``provenance`` without absolute machine paths.

    Parameters
    ----------
    provenance
        A store's metadata as a head card records it.
    models_dir
        The models dir paths are made relative to (default
        :func:`auditor.defaults.models_dir`).

    Returns
    -------
    dict
        The model's ``id`` / ``tokenizer``, the training ``input.path`` and each SAE's
        ``path`` relative to the models dir with ``relative_to: "models"``, or their bare
        file name with ``relative_to: null``; hashes and everything else as they were. A
        model recorded without ``weights_sha256`` keeps its id (its identity then).

    Examples
    --------
    >>> prov = {"saes": {"l9": {"path": "/m/sae/x/sae.safetensors", "sha256": "ab"}},
    ...         "input": {"path": "/home/me/train.jsonl"}}
    >>> out = portable_provenance(prov, models_dir="/m")
    >>> out["saes"]["l9"], out["input"]
    ({'path': 'sae/x/sae.safetensors', 'sha256': 'ab', 'relative_to': 'models'}, \
{'path': 'train.jsonl', 'relative_to': None})
    """
    from auditor.defaults import models_dir as default_models

    models = Path(models_dir) if models_dir is not None else default_models()
    out = json.loads(json.dumps(dict(provenance)))  # a deep copy of JSON values
    for section, key in _ARTIFACT_PATHS:
        value = out.get(section)
        if not isinstance(value, dict) or (section == "model"
                                           and not value.get("weights_sha256")):
            continue  # without its weights hash, a model's id is its identity: kept
        entries = [v for v in value.values() if isinstance(v, dict)] if section == "saes" \
            else [value]
        for entry in entries:
            if key in entry and isinstance(entry[key], str) and Path(entry[key]).is_absolute():
                entry[key], entry["relative_to"] = _portable_path(entry[key], models)
            if section == "saes" and entry.get("relative_to") is None and entry.get("sha256"):
                # built from another checkout: the same SAE (by hash) in this models dir
                found = resolve_sae({"path": None, "sha256": entry["sha256"]},
                                    models_dir=models)
                if found is not None and found.resolve().is_relative_to(models.resolve()):
                    entry[key] = found.resolve().relative_to(models.resolve()).as_posix()
                    entry["relative_to"] = "models"
    return out


def resolve_sae(info: Mapping[str, Any], *, models_dir: str | Path | None = None
                ) -> Path | None:
    """The SAE file a card's (or a store's) SAE entry names, on this machine.

    A path relative to the models dir is resolved against it, an absolute one is taken as
    it is; when neither exists the SAE files under ``<models dir>/sae`` are searched for
    one with the recorded ``sha256``.

    Parameters
    ----------
    info
        ``{"path": ..., "sha256": ..., "relative_to": ...}``.
    models_dir
        Default :func:`auditor.defaults.models_dir`.

    Returns
    -------
    Path or None
        None when no file is found.
    """
    from auditor._files import sha256_file
    from auditor.defaults import models_dir as default_models

    models = Path(models_dir) if models_dir is not None else default_models()
    raw = info.get("path")
    if isinstance(raw, str) and raw:
        path = Path(raw).expanduser()
        if not path.is_absolute() and info.get("relative_to") == "models":
            path = models / path
        if path.is_absolute() and path.exists():
            return path
    sha = info.get("sha256")
    root = models / "sae"
    if not sha or not root.is_dir():
        return None
    for candidate in sorted(root.glob("*/*.safetensors")):
        if sha256_file(candidate) == sha:
            return candidate
    return None


# --------------------------------------------------------------------------- persistence


def _write_files(head: Head, directory: Path, card_markdown: str | None) -> None:
    """Write a head's files into the (empty) ``directory``."""
    from safetensors.numpy import save_file

    from auditor.probes import save_probe

    card = dict(head.card)
    if isinstance(card.get("provenance"), Mapping):
        card["provenance"] = portable_provenance(card["provenance"])
    save_probe(head.probe, directory / PROBE_DIR, card=card)
    if head.decoder is not None:
        save_file({"per_feature": np.ascontiguousarray(head.decoder[0]),
                   "bias": np.ascontiguousarray(head.decoder[1])},
                  str(directory / DECODER_FILE))
    (directory / CONFIG_FILE).write_text(json.dumps(head.config.to_dict(), indent=2,
                                                    allow_nan=False))
    if card_markdown is not None:
        (directory / CARD_MD).write_text(card_markdown)
    if head.domain is not None:
        save_domain(head.domain, directory)


def save_head(head: Head, directory: str | Path, *, card_markdown: str | None = None,
              overwrite: bool = False) -> Path:
    """Save a head without pickle (written beside, then renamed into place).

    Raises
    ------
    ConfigError
        ``directory`` exists and is not empty and ``overwrite`` is False, or the probe or
        card cannot be saved.
    """
    out = Path(directory)
    with atomic_directory(out, overwrite=overwrite) as tmp:
        _write_files(head, tmp, card_markdown)
    return out


#: The files and folders a saved head consists of (head.json last: it makes a head).
HEAD_FILES = (PROBE_DIR, DECODER_FILE, CARD_MD, DOMAIN_FILE, DOMAIN_JSON, CONFIG_FILE)


def write_head(head: Head, directory: str | Path, *,
               card_markdown: str | None = None) -> Path:
    """Write a head into ``directory``, which may hold other files (a job's ``_job.json``).

    The files are written whole into ``directory/.head.partial`` and then moved in place,
    ``head.json`` last (a directory is a head once it has ``head.json``); the files of a
    head already there are replaced, other files are left alone. Nothing is written
    outside ``directory``.

    Raises
    ------
    ConfigError
        The probe or card cannot be saved.
    """
    import shutil

    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    partial = out / ".head.partial"
    if partial.exists():
        shutil.rmtree(partial)
    partial.mkdir()
    try:
        _write_files(head, partial, card_markdown)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    for name in reversed(HEAD_FILES):  # head.json first: no half-replaced head loads
        old = out / name
        if old.is_dir() and not old.is_symlink():
            shutil.rmtree(old)
        elif old.exists() or old.is_symlink():
            old.unlink()
    for name in HEAD_FILES:
        if (partial / name).exists():
            (partial / name).replace(out / name)
    partial.rmdir()
    return out


def load_head(directory: str | Path) -> Head:
    """Load a head saved by :func:`save_head`.

    Raises
    ------
    ConfigError
        Not a head directory, or its config, probe or decoder file is unreadable.
    """
    from safetensors import SafetensorError
    from safetensors.numpy import load_file

    from auditor.probes import load_card, load_probe

    path = Path(directory)
    try:
        config = HeadConfig.from_dict(json.loads((path / CONFIG_FILE).read_text()))
    except FileNotFoundError as e:
        raise ConfigError("not a saved head: no head.json", path=path) from e
    except ValueError as e:
        raise ConfigError(f"unreadable head config: {e}", path=path / CONFIG_FILE) from e
    probe = load_probe(path / PROBE_DIR)
    # a multilabel probe names its labels in labels_ (its classes_ are column indices)
    names = getattr(probe, "labels_", None) if config.multilabel else probe.classes_
    if names is None:
        raise ConfigError(f"a multilabel head needs a multilabel probe, got "
                          f"{type(probe).__name__}", path=path, field="probe")
    if [str(c) for c in names] != config.classes:
        raise ConfigError(f"the probe's classes {list(names)} differ from the "
                          f"head's {config.classes}", path=path, field="classes")
    decoder = None
    if (path / DECODER_FILE).exists():
        try:
            arrays = load_file(str(path / DECODER_FILE))
            decoder = (arrays["per_feature"], arrays["bias"])
        except (SafetensorError, KeyError, OSError) as e:
            raise ConfigError(f"unreadable decoder projection: {e}",
                              path=path / DECODER_FILE) from e
    return Head(config, probe, card=load_card(path / PROBE_DIR), decoder=decoder, path=path)
