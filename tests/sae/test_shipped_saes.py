"""Every SAE shipped in models/sae/ loads, fits the default model and has a card that names it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from auditor.defaults import DEFAULT_SAE_NAME, models_dir
from auditor.sae import load_sae

SHIPPED = sorted(p for p in (models_dir() / "sae").glob("*") if (p / "config.json").is_file())


def test_the_default_is_among_them() -> None:
    assert DEFAULT_SAE_NAME in [p.name for p in SHIPPED]


@pytest.mark.parametrize("sae_dir", SHIPPED, ids=[p.name for p in SHIPPED])
def test_shipped_sae_loads_and_its_card_describes_it(sae_dir: Path) -> None:
    sae = load_sae(sae_dir)
    assert (sae.cfg.d_in, sae.cfg.hook_layer) == (640, 9)
    # TopK, or BatchTopK that encodes token by token with its learned threshold
    assert sae.cfg.activation == "topk" or (sae.cfg.activation == "batchtopk"
                                           and sae.cfg.batchtopk_threshold is not None)
    weights = sae_dir / "sae.safetensors"
    assert weights.stat().st_size < 30e6  # fp16 on disk
    card = (sae_dir / "CARD.md").read_text(encoding="utf-8")
    assert sae.sha256 in card
    evaluation = json.loads((sae_dir / "evaluation.json").read_text())
    assert evaluation["sae_sha256"] == sae.sha256  # the numbers are this SAE's own
    assert f"| FVU | {evaluation['metrics']['fvu']:.4f} |" in card
    training = json.loads((sae_dir / "training.json").read_text())
    assert training["config"]["d_sae"] == sae.cfg.d_sae and training["config"]["k"] == sae.cfg.k
    assert training["config"].get("activation", "topk") == sae.cfg.activation
