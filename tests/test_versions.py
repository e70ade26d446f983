"""auditor._versions: the library versions written into provenance."""

from __future__ import annotations

from importlib.metadata import version

from auditor._versions import NUMERIC_LIBRARIES, libraries_text, library_versions


def test_library_versions_match_the_installed_distributions() -> None:
    got = library_versions()
    assert list(got) == list(NUMERIC_LIBRARIES)
    assert got["torch"] == version("torch") and got["numpy"] == version("numpy")
    assert library_versions(["numpy", "no-such-distribution-xyz"]) == {
        "numpy": version("numpy"), "no-such-distribution-xyz": None}


def test_libraries_text_lists_installed_ones_and_marks_old_stores() -> None:
    assert libraries_text({"torch": "2.13.0", "gguf": None, "numpy": "2.1"}) == (
        "numpy 2.1, torch 2.13.0")
    assert libraries_text(None) == "–" and libraries_text({"gguf": None}) == "–"
    assert libraries_text("torch 2") == "–"
