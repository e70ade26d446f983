"""The SAE card's header line: width as a multiple of d_model, also below 1."""

from __future__ import annotations

from pathlib import Path

import pytest

from auditor.sae.card import write_card
from auditor.testing import make_random_sae


@pytest.mark.parametrize(("d_in", "d_sae", "ratio"),
                         [(640, 512, "0.8×"), (32, 512, "16×"), (64, 100, "1.56×")])
def test_card_gives_the_width_ratio(d_in: int, d_sae: int, ratio: str, tmp_path: Path) -> None:
    directory = make_random_sae(d_in=d_in, d_sae=d_sae, k=4).save(tmp_path / "s")
    card = write_card(directory).read_text(encoding="utf-8")
    assert f"width {d_sae:,} ({ratio} d_model {d_in})" in card
