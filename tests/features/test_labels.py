"""Automatic feature labels: merged token variants, the context phrase, a coherent lens."""

from __future__ import annotations

from auditor.features.labels import (
    auto_label,
    coherent_promoted,
    context_phrase,
    legacy_label,
    token_key,
    top_tokens,
)

MONEY = ["… he had to pay the «money» back to …", "… pay the «Money» back …",
         "… asked for «cash» now …", "… pay the « money» back soon …"]


def test_case_and_whitespace_variants_count_once() -> None:
    assert token_key(" Money") == token_key("money ") == token_key("▁MONEY") == \
        token_key("Ġmoney") == "money"
    tokens = [" money", "Money", " cash", "money ", " cash", "▁money"]
    assert top_tokens(tokens) == ["money", "cash"]
    # the group is ranked by its total count (4 vs 2), shown in its most frequent spelling
    assert top_tokens(["Cash", " cash", " Money", " money", " money"]) == ["money", "Cash"]
    label = auto_label([" money", "Money", " cash", " money"], [])
    assert label == "money, cash"
    assert "Money" not in label
    # the old label kept both spellings: the noise issue 25 reports
    assert legacy_label([" money", "Money"], [" isotopes"]) == \
        "'money' / 'Money' → promotes 'isotopes'"


def test_unreadable_and_blank_tokens_come_last_and_show() -> None:
    assert top_tokens(["\ufffd", "\ufffd", " a", "\n"]) == ["a", "⏎", "\ufffd"]
    assert auto_label([], [" pay", " paid", " payment"]) == "never fired"


def test_context_phrase_is_the_most_shared_window() -> None:
    assert context_phrase(MONEY) == "pay the money back"
    label = auto_label([" money", "Money", " cash", " money"], [" isotopes"], contexts=MONEY)
    assert label == "money, cash — 'pay the money back'"
    # no window recurs: the first (most activating) context's window around the token
    assert context_phrase(["… one two «three» four five six …", "«seven» eight nine"]) == \
        "two three four five"
    # a token glued to its neighbours is read as part of their word
    assert context_phrase(["we were pay«ing» them", "they were pay«ing» us"]) == "were paying"
    # words at a cut end may be fragments: left out
    assert context_phrase(["…ctly «the» end of th…", "…ally «the» end of wo…"]) == "the end of"
    # the phrase reads as the text does: punctuation kept, words split at it
    assert context_phrase(["see https://«www».debian.org for", "at https://«www».gnu.org"]) \
        == "https://www"
    assert context_phrase(["and «it»'s a dog", "so «it»'s a cat"]) == "it's a"
    assert context_phrase(["no marks here"]) == ""
    assert context_phrase(["«,»"]) == ""


def test_logit_lens_kept_only_when_coherent() -> None:
    coherent = [" pay", "Pay", " payment", " isotopes", " payday"]
    noisy = [" isotopes", " Kaz", "rical", " money", "</s>"]
    assert coherent_promoted(coherent) == ["pay", "payment", "payday"]
    assert coherent_promoted(noisy) == []
    # two of five agreeing is not enough; tokens beyond the top five do not count
    assert coherent_promoted([" pay", " payday", " a", " b", " c", " payment"]) == []
    assert coherent_promoted([" pay", " paid", " payment", " b", " c"]) == []  # 'pai' ≠ 'pay'
    # short or letterless tokens never agree
    assert coherent_promoted([" 123", " 1234", " 12345", " x", " y"]) == []
    assert coherent_promoted(["<unused1>", "<unused2>", "<unused3>", " x", " y"]) == []
    label = auto_label([" money", " money"], coherent, contexts=MONEY[:2])
    assert label == "money — 'pay the money back' → promotes pay, payment"
    assert auto_label([" money"], noisy) == "money"
    # the old behaviour on request
    assert auto_label([" money"], noisy, lens="always") == "money → promotes isotopes, Kaz"
    assert auto_label([" money"], coherent, lens="never") == "money"
