"""Saving and loading fitted probes without pickle, and the provenance guard.

A saved probe is a directory::

    probe.json            format, version, kind, params, classes, learned scalars
    arrays.safetensors    learned arrays (weights, scales, selected columns, calibrators)
    booster.txt           LightGBM model, text format (kind 'boosted')
    base/                 the base probe, same layout without a card (kind 'calibrated')
    labels/<k>/           the probe of label k, same layout without a card (kind 'multilabel')
    card.json             the model card: data, metrics, provenance, …

Nothing is unpickled on load: JSON, safetensors and LightGBM's text format only.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from safetensors.numpy import load_file, save_file
from sklearn.base import clone

from auditor._files import atomic_directory
from auditor.errors import ConfigError, ProvenanceMismatch
from auditor.probes.boosted import BoostedProbe
from auditor.probes.calibration import CalibratedProbe
from auditor.probes.linear import LinearProbe
from auditor.probes.multilabel import MultiLabelProbe
from auditor.probes.rules import RuleProbe

__all__ = [
    "ARRAYS_FILE",
    "BOOSTER_FILE",
    "CARD_FILE",
    "CONFIG_FILE",
    "FORMAT",
    "GUARDED_PROVENANCE_KEYS",
    "KINDS",
    "VERSION",
    "check_provenance",
    "load_card",
    "load_probe",
    "save_probe",
]

FORMAT = "auditor-probe"
VERSION = 1
CONFIG_FILE = "probe.json"
ARRAYS_FILE = "arrays.safetensors"
BOOSTER_FILE = "booster.txt"
CARD_FILE = "card.json"
BASE_DIR = "base"
LABELS_DIR = "labels"

#: kind name → probe class.
KINDS: dict[str, type] = {
    "linear": LinearProbe,
    "boosted": BoostedProbe,
    "rules": RuleProbe,
    "calibrated": CalibratedProbe,
    "multilabel": MultiLabelProbe,
}

#: Provenance keys compared by :func:`check_provenance` (``K`` is each SAE key).
GUARDED_PROVENANCE_KEYS: tuple[str, ...] = (
    "model.id",
    "model.weights_sha256",
    "saes.K.sha256",
    "saes.K.layer",
    "saes.K.hook_point",
    "pooling",
)


# --------------------------------------------------------------------------- JSON helpers


def _to_json(value: Any, *, what: str) -> Any:
    if isinstance(value, np.generic):
        value = value.item()
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, list | tuple):
        return [_to_json(v, what=what) for v in value]
    if isinstance(value, Mapping) and all(isinstance(k, str) for k in value) and (
        "__items__" not in value
    ):
        return {k: _to_json(v, what=what) for k, v in value.items()}
    if isinstance(value, Mapping):  # non-string keys (e.g. class_weight={0: 1.0}) as pairs
        items = [[_to_json(k, what=what), _to_json(v, what=what)] for k, v in value.items()]
        return {"__items__": items}
    raise ConfigError(f"{what} cannot be saved without pickle: {value!r}", field=what)


def _from_json(value: Any) -> Any:
    if isinstance(value, list):
        return [_from_json(v) for v in value]
    if isinstance(value, dict) and set(value) == {"__items__"}:
        return {_from_json(k): _from_json(v) for k, v in value["__items__"]}
    if isinstance(value, dict):
        return {k: _from_json(v) for k, v in value.items()}
    return value


def _encode_classes(classes: np.ndarray) -> dict[str, Any]:
    arr = np.asarray(classes)
    if arr.dtype.kind in "biuf":
        return {"values": arr.tolist(), "dtype": arr.dtype.str}
    if arr.dtype.kind == "U":
        return {"values": arr.tolist(), "dtype": arr.dtype.str}
    if arr.dtype.kind == "O" and all(isinstance(v, str) for v in arr.tolist()):
        return {"values": arr.tolist(), "dtype": "object"}
    raise ConfigError(f"class labels of dtype {arr.dtype} cannot be saved", field="classes")


def _decode_classes(enc: Mapping[str, Any]) -> np.ndarray:
    dtype = object if enc["dtype"] == "object" else np.dtype(enc["dtype"])
    return np.array(enc["values"], dtype=dtype)


def _kind_of(probe: Any) -> str:
    for kind, cls in KINDS.items():
        if type(probe) is cls:
            return kind
    raise ConfigError(
        f"cannot save a {type(probe).__name__}; known probe kinds: {', '.join(KINDS)}",
        field="probe",
    )


# --------------------------------------------------------------------------- save / load


def _write(probe: Any, directory: Path) -> None:
    kind = _kind_of(probe)
    meta, arrays = probe._get_state()  # raises NotFittedError when unfitted
    params = probe.get_params(deep=False)
    if kind == "calibrated":
        params.pop("estimator")
        _write(probe.estimator_, directory / BASE_DIR)
    if kind == "multilabel":
        if params["estimator"] is not None:  # None (the default LinearProbe) is kept
            params.pop("estimator")
        for key in ("thresholds", "labels"):
            if isinstance(params[key], np.ndarray):
                params[key] = params[key].tolist()
        for k, est in enumerate(probe.estimators_):
            _write(est, directory / LABELS_DIR / str(k))
    config = {
        "format": FORMAT,
        "version": VERSION,
        "kind": kind,
        "params": _to_json(params, what="params"),
        "classes": _encode_classes(probe.classes_),
        "n_features_in": int(probe.n_features_in_),
        "state": _to_json(meta, what="state"),
        "arrays": sorted(arrays),
    }
    directory.mkdir(parents=True, exist_ok=True)
    if arrays:
        save_file({k: np.ascontiguousarray(v) for k, v in arrays.items()},
                  str(directory / ARRAYS_FILE))
    if kind == "boosted":
        probe.booster_.save_model(str(directory / BOOSTER_FILE))
    (directory / CONFIG_FILE).write_text(json.dumps(config, indent=2, allow_nan=False))


def save_probe(
    probe: Any, directory: str | Path, *, card: Mapping[str, Any], overwrite: bool = False
) -> Path:
    """Save a fitted probe and its card to ``directory``, without pickle.

    Parameters
    ----------
    probe : LinearProbe, BoostedProbe, RuleProbe, CalibratedProbe or MultiLabelProbe
        A fitted probe.
    directory : str or Path
        Target directory; written to a temporary sibling and renamed into place.
    card : mapping
        Model card (JSON-serialisable), saved as ``card.json``; record the training
        features' provenance under ``card['provenance']`` for :func:`check_provenance`.
    overwrite : bool, default False
        Replace an existing non-empty ``directory``.

    Returns
    -------
    Path
        ``directory``.

    Raises
    ------
    ConfigError
        Unknown probe type, a parameter or card value is not JSON-serialisable, or
        ``directory`` exists and ``overwrite`` is False.
    sklearn.exceptions.NotFittedError
        The probe is not fitted.
    """
    try:
        card_text = json.dumps(dict(card), indent=2, sort_keys=True, allow_nan=False)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"the card must be JSON-serialisable: {e}", field="card") from e
    out = Path(directory)
    with atomic_directory(out, overwrite=overwrite) as tmp:
        _write(probe, tmp)
        (tmp / CARD_FILE).write_text(card_text)
    return out


def _read(directory: Path) -> Any:
    path = directory / CONFIG_FILE
    try:
        config = json.loads(path.read_text())
    except FileNotFoundError as e:
        raise ConfigError("not a saved probe: no probe.json", path=directory) from e
    except (OSError, ValueError) as e:
        raise ConfigError(f"unreadable probe config: {e}", path=path) from e
    if not isinstance(config, dict) or config.get("format") != FORMAT:
        raise ConfigError(f"not an {FORMAT!r} file (format={config.get('format')!r})"
                          if isinstance(config, dict) else "probe config is not an object",
                          path=path, field="format")
    if config.get("version") != VERSION:
        raise ConfigError(
            f"unsupported probe format version {config.get('version')!r} (this auditor "
            f"reads version {VERSION})", path=path, field="version")
    kind = config.get("kind")
    if kind not in KINDS:
        raise ConfigError(f"unknown probe kind {kind!r}; known: {', '.join(KINDS)}",
                          path=path, field="kind")
    params = _from_json(config["params"])
    meta = _from_json(config["state"])
    arrays: dict[str, np.ndarray] = {}
    if config.get("arrays"):
        arrays = load_file(str(directory / ARRAYS_FILE))
        missing = set(config["arrays"]) - set(arrays)
        if missing:
            raise ConfigError(f"missing arrays: {', '.join(sorted(missing))}",
                              path=directory / ARRAYS_FILE)
    if kind == "calibrated":
        base = _read(directory / BASE_DIR)
        probe = CalibratedProbe(clone(base), **params)
        meta["estimator"] = base
    elif kind == "multilabel":
        subs = [_read(directory / LABELS_DIR / str(k)) for k in range(int(meta["n_labels"]))]
        estimator = params.pop("estimator") if "estimator" in params else clone(subs[0])
        probe = MultiLabelProbe(estimator, **params)
        meta["estimators"] = subs
    else:
        probe = KINDS[kind](**params)
        if kind == "boosted":
            meta["booster_file"] = directory / BOOSTER_FILE
    probe.classes_ = _decode_classes(config["classes"])
    probe.n_features_in_ = int(config["n_features_in"])
    probe._set_state(meta, arrays)
    return probe


def load_probe(directory: str | Path) -> Any:
    """Load a probe saved by :func:`save_probe`.

    Parameters
    ----------
    directory : str or Path
        The probe directory.

    Returns
    -------
    LinearProbe, BoostedProbe, RuleProbe, CalibratedProbe or MultiLabelProbe
        The fitted probe; ``predict_proba`` gives the same values as before saving.

    Raises
    ------
    ConfigError
        No ``probe.json``, wrong ``format``, unsupported ``version``, unknown ``kind`` or
        missing arrays.
    """
    return _read(Path(directory))


def load_card(directory: str | Path) -> dict[str, Any]:
    """Return the ``card.json`` saved beside a probe.

    Parameters
    ----------
    directory : str or Path
        The probe directory.

    Returns
    -------
    dict
    """
    path = Path(directory) / CARD_FILE
    try:
        return dict(json.loads(path.read_text()))
    except (OSError, ValueError) as e:
        raise ConfigError(f"unreadable probe card: {e}", path=path) from e


# --------------------------------------------------------------------------- provenance

_MISSING = object()


def _get(d: Any, *keys: str) -> Any:
    for k in keys:
        if not isinstance(d, Mapping) or k not in d:
            return _MISSING
        d = d[k]
    return d


def _show(v: Any) -> str:
    return "missing" if v is _MISSING else repr(v)


def check_provenance(
    card_provenance: Mapping[str, Any], features_metadata: Mapping[str, Any]
) -> None:
    """Refuse features extracted differently from those a probe was trained on.

    Compares only :data:`GUARDED_PROVENANCE_KEYS`: ``model.weights_sha256`` (``model.id``
    only when a side lacks the hash: a local cache path is not an identity),
    and for every SAE in ``card_provenance['saes']`` (only ``card_provenance['sae']`` when
    that names the one SAE used) its ``sha256``, ``layer`` and ``hook_point``; and the
    pooling: each pooling in the card (a name or a list) must be among the features'.
    A key absent from both sides is not compared.

    Parameters
    ----------
    card_provenance : mapping
        The provenance saved in the probe card (the store provenance it was trained on,
        as returned by :func:`auditor.store.read_metadata`).
    features_metadata : mapping
        The provenance of the features to score (``FeatureMatrix.metadata``).

    Raises
    ------
    ProvenanceMismatch
        Naming every differing key with both values; ``field`` holds the keys.
    """
    diffs: list[tuple[str, Any, Any]] = []
    hints: list[str] = []

    def compare(*keys: str) -> None:
        a, b = _get(card_provenance, *keys), _get(features_metadata, *keys)
        if a is _MISSING and b is _MISSING:
            return
        if a is _MISSING or b is _MISSING or a != b:
            diffs.append((".".join(keys), a, b))

    # The weights hash is the model's identity; its id (often a local cache path) is
    # compared only when a side has no hash.
    if (_get(card_provenance, "model", "weights_sha256") in (_MISSING, None)
            or _get(features_metadata, "model", "weights_sha256") in (_MISSING, None)):
        compare("model", "id")
    compare("model", "weights_sha256")
    saes = _get(card_provenance, "saes")
    only = card_provenance.get("sae")
    keys = [only] if isinstance(only, str) else (list(saes) if isinstance(saes, Mapping) else [])
    for key in keys:
        if _get(features_metadata, "saes", key) is _MISSING:
            diffs.append((f"saes.{key}", _get(card_provenance, "saes", key), _MISSING))
            hints.append(_sae_key_hint(key, _get(card_provenance, "saes", key, "sha256"),
                                       _get(features_metadata, "saes")))
            continue
        for field in ("sha256", "layer", "hook_point"):
            compare("saes", key, field)
    want, have = _get(card_provenance, "pooling"), _get(features_metadata, "pooling")
    if want is not _MISSING or have is not _MISSING:
        want_set = {want} if isinstance(want, str) else set(want or [])
        have_set = {have} if isinstance(have, str) else set(have or [])
        if want is _MISSING or have is _MISSING or not want_set <= have_set:
            diffs.append(("pooling", want, have))
    if diffs:
        detail = "; ".join(f"{k}: probe {_show(a)} vs features {_show(b)}" for k, a, b in diffs)
        hint = "".join(f"; {h}" for h in hints)
        raise ProvenanceMismatch(
            f"the features were not extracted like the probe's training data ({detail}){hint}",
            field=", ".join(k for k, _, _ in diffs),
        )


def _sae_key_hint(key: str, sha256: Any, saes: Any) -> str:
    """Why an SAE key is missing from a store: the same SAE under another name (name it
    ``key`` when extracting), or which SAEs the store has.

    >>> _sae_key_hint("layer9", "ab", {"mine": {"sha256": "ab"}})
    "the store holds this SAE under the name 'mine': extract with --sae layer9=PATH"
    >>> _sae_key_hint("layer9", "ab", {"other": {"sha256": "cd"}})
    "the store has no SAE named 'layer9' (it has: other)"
    """
    have = dict(saes) if isinstance(saes, Mapping) else {}
    same = [k for k, v in have.items() if isinstance(v, Mapping) and sha256 is not _MISSING
            and sha256 is not None and v.get("sha256") == sha256]
    if same:
        return (f"the store holds this SAE under the name {same[0]!r}: extract with "
                f"--sae {key}=PATH")
    return f"the store has no SAE named {key!r} (it has: {', '.join(have) or 'none'})"
