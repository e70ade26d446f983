"""The ``--keep`` expression language: exact kept rows per construct on a small frame,
clause splitting, ``failed()``, ``check()`` and every refused construct."""

from __future__ import annotations

import ast
import builtins
from typing import Any

import polars as pl
import pytest

from auditor.errors import ConfigError
from auditor.filter.expression import (
    Clause,
    KeepExpression,
    feature_column,
    parse_keep,
)

FRAME = pl.DataFrame({
    "text": ["Hello there", "you IDIOT", "Buy now!!", "fine", None, "ok"],
    "safety.p.insult": [0.01, 0.97, 0.20, None, 0.5, 0.8],
    "quality.label": ["ham", "ham", "spam", "ham", None, "spam"],
    "my score": [1, 2, 3, 4, 5, None],
    "tags": [["a"], [], ["a", "b"], None, ["c"], ["a", "b", "c"]],
    "n": [1, -2, 3, -4, 5, 0],
    "flag": [True, False, None, True, False, True],
    "feature.7434.max": [0.0, 1.5, 0.3, 2.0, None, 0.0],
    "feature.7434.mean": [0.0, 0.2, 0.1, 0.9, None, 0.0],
    "feature.layer9.7434.max": [3.0, 0.0, 0.0, 0.0, 1.0, 0.0],
    "feature.layer9.12.count": [0, 0, 7, 0, 0, 1],
})
ALL = list(range(FRAME.height))


def kept(text: str, frame: pl.DataFrame = FRAME) -> list[int]:
    """Rows kept by ``text``, through both ``expr()`` and ``failed()`` (which must agree)."""
    keep = parse_keep(text)
    rows: list[int] = frame.with_row_index("_row").filter(keep.expr())["_row"].to_list()
    assert [i for i, failed in enumerate(keep.failed(frame)) if not failed] == rows
    return rows


@pytest.mark.parametrize(("text", "rows"), [
    # comparisons (the null score, row 3, is never kept)
    ("safety.p.insult < 0.5", [0, 2]),
    ("safety.p.insult <= 0.5", [0, 2, 4]),
    ("safety.p.insult > 0.5", [1, 5]),
    ("safety.p.insult >= 0.5", [1, 4, 5]),
    ("safety.p.insult == 0.5", [4]),
    ("safety.p.insult != 0.5", [0, 1, 2, 5]),
    ("0.5 > safety.p.insult", [0, 2]),
    ("quality.label == 'ham'", [0, 1, 3]),
    ("'ham' == quality.label", [0, 1, 3]),
    ("quality.label != 'ham'", [2, 5]),
    ("flag == True", [0, 3, 5]),
    ("flag != True", [1, 4]),
    # chained
    ("0.2 <= safety.p.insult < 0.8", [2, 4]),
    ("0.2 < safety.p.insult <= 0.8", [4, 5]),
    ("-3 < n < 3 != n", [0, 1, 5]),
    # in / not in
    ("quality.label in ['spam', 'x']", [2, 5]),
    ("quality.label not in ['spam']", [0, 1, 3]),
    ("quality.label in ['spam', None]", [2, 4, 5]),
    ("quality.label not in ('ham', None)", [2, 5]),
    ("n in [1, 3.0, -4]", [0, 2, 3]),
    ("n in (1, 2)", [0]),
    ("n in {5}", [4]),
    ("safety.p.insult in [0.5, 0.01]", [0, 4]),
    ("n in []", []),
    ("n not in []", ALL),
    ("flag in [False]", [1, 4]),
    # null tests
    ("quality.label is None", [4]),
    ("quality.label is not None", [0, 1, 2, 3, 5]),
    ("quality.label == None", [4]),
    ("None != quality.label", [0, 1, 2, 3, 5]),
    ("col('my score') is None", [5]),
    # and / or / not, with SQL nulls
    ("safety.p.insult < 0.5 or quality.label == 'spam'", [0, 2, 5]),
    ("safety.p.insult < 0.5 or safety.p.insult is None", [0, 2, 3]),
    ("not safety.p.insult < 0.5", [1, 4, 5]),
    ("not (quality.label == 'ham')", [2, 5]),
    ("not (quality.label == 'ham' or n < 0)", [2, 5]),
    ("(safety.p.insult < 0.9 and n > 0) and quality.label == 'ham'", [0]),
    # arithmetic
    ("n * 2 + 1 > 3", [2, 4]),
    ("n - 1 < 0", [1, 3, 5]),
    ("n / 2 == 1.5", [2]),
    ("-n > 0", [1, 3]),
    ("+n > 4", [4]),
    ("-(n) == 4", [3]),
    ("abs(n) >= 4", [3, 4]),
    ("abs(n - 3) < 1", [2]),
    # functions
    ("len(text) > 5", [0, 1, 2]),
    ("len(text) == 2", [5]),
    ("len(tags) == 2", [2]),
    ("len(tags) == 0", [1]),
    ("len(lower(text)) == 4", [3]),
    ("len('abc') == 3", ALL),
    ("lower(text) == 'you idiot'", [1]),
    ("upper(text) == 'OK'", [5]),
    ("contains(text, '!!')", [2]),
    ("contains(text, '.')", []),  # a literal dot, not the regex "any character"
    ("contains(lower(text), 'idiot')", [1]),
    ("startswith(text, 'Buy')", [2]),
    ("endswith(text, 'there')", [0]),
    ("not contains(text, 'o')", [3]),
    # columns by col() and feature()
    ("col('my score') >= 4", [3, 4]),
    ("col('safety.p.insult') < 0.1", [0]),
    ("feature(7434) > 1", [1, 3]),
    ("feature(7434, 'mean') > 0.15", [1, 3]),
    ("feature(7434, 'max', sae='layer9') > 0.5", [0, 4]),
    ("feature(12, 'count', sae='layer9') >= 1", [2, 5]),
    # literals only
    ("True", ALL),
    ("False", []),
    ("1 < 2", ALL),
    ("2 < 1", []),
])
def test_kept_rows(text: str, rows: list[int]) -> None:
    assert kept(text) == rows


def test_arithmetic_with_a_null_operand_is_dropped() -> None:
    # 10 * score = 0.1, 9.7, 2.0, null, 5.0, 8.0 against 1, 2, 3, 4, 5, null:
    # rows 3 and 5 compare with a null, which is false
    assert kept("safety.p.insult * 10 >= col('my score')") == [1, 4]


def test_clauses_split_on_the_top_level_and() -> None:
    keep = parse_keep("  safety.p.insult < 0.5 and (quality.label == 'ham' or n > 0)"
                      " and ((len(text) > 3 and text != 'x'))  ")
    assert keep.source == ("safety.p.insult < 0.5 and (quality.label == 'ham' or n > 0)"
                           " and ((len(text) > 3 and text != 'x'))")
    assert [c.source for c in keep.clauses] == [
        "safety.p.insult < 0.5", "quality.label == 'ham' or n > 0", "len(text) > 3",
        "text != 'x'"]
    assert [c.columns for c in keep.clauses] == [
        ("safety.p.insult",), ("quality.label", "n"), ("text",), ("text",)]
    assert keep.columns == ("safety.p.insult", "quality.label", "n", "text")
    # c0 drops rows 1, 3 (null), 4, 5; c1 drops row 5 (row 4: null or True is True);
    # c2 and c3 drop row 4 (null text), c2 also row 5 ("ok")
    assert keep.failed(FRAME) == [[], [0], [], [0], [0, 2, 3], [0, 1, 2]]
    result = keep.evaluate(FRAME)
    assert result.columns == ["0", "1", "2", "3"]
    assert result.height == FRAME.height
    assert all(dtype == pl.Boolean for dtype in result.dtypes)
    assert result.null_count().row(0) == (0, 0, 0, 0)
    assert result["1"].to_list() == [True, True, True, True, True, False]


def test_one_clause_when_the_top_is_not_an_and() -> None:
    keep = parse_keep("(a < 1 and b < 1) or c < 1")
    assert len(keep.clauses) == 1
    assert keep.clauses[0].source == "(a < 1 and b < 1) or c < 1"
    assert keep.columns == ("a", "b", "c")


def test_multiline_clause_sources() -> None:
    keep = parse_keep("(x < 1 and\n   y > 2)")
    assert [c.source for c in keep.clauses] == ["x < 1", "y > 2"]


def test_columns_in_first_use_order() -> None:
    keep = parse_keep("n > 0 and safety.p.insult < n and feature(3) > n and col('a b') == 1")
    assert keep.columns == ("n", "safety.p.insult", "feature.3.max", "a b")
    assert keep.clauses[1].columns == ("safety.p.insult", "n")


def test_null_results_are_false_not_null() -> None:
    keep = parse_keep("safety.p.insult < 0.5 and not safety.p.insult < 0.5 and flag == True")
    result = keep.evaluate(FRAME)
    assert result.null_count().row(0) == (0, 0, 0)
    assert result["0"].to_list()[3] is False
    assert result["1"].to_list()[3] is False  # not null is still null, so false
    assert result["2"].to_list() == [True, False, False, True, False, True]


def test_evaluate_broadcasts_literal_clauses_and_handles_empty_frames() -> None:
    keep = parse_keep("1 < 2 and n > 0")
    assert keep.evaluate(FRAME)["0"].to_list() == [True] * FRAME.height
    empty = keep.evaluate(FRAME.head(0))
    assert empty.columns == ["0", "1"]
    assert empty.height == 0
    assert keep.failed(FRAME.head(0)) == []


def test_expr_works_in_a_lazy_query() -> None:
    keep = parse_keep("len(tags) >= 1 and len(text) > 2")
    assert FRAME.lazy().filter(keep.expr()).collect()["n"].to_list() == [1, 3]


def test_check_lists_unknown_columns_with_close_matches() -> None:
    keep = parse_keep("safety.p.insul < 0.5 and quality.lable == 'ham' and zzz > 1 and n > 0")
    keep.check([*FRAME.columns, "zzz", "safety.p.insul", "quality.lable"])
    with pytest.raises(ConfigError) as caught:
        keep.check(FRAME.columns)
    err = caught.value
    assert err.field == "keep"
    assert err.message.startswith(
        "unknown columns 'safety.p.insul' (did you mean 'safety.p.insult'?), "
        "'quality.lable' (did you mean 'quality.label'?), 'zzz'; the columns are: 'text', ")
    assert "'feature.layer9.12.count'" in err.message
    assert "more" not in err.message
    with pytest.raises(ConfigError, match=r"unknown columns 'safety\.p\.insul'"):
        keep.evaluate(FRAME)


def test_check_truncates_a_long_column_list() -> None:
    available = [f"c{i}" for i in range(50)]
    with pytest.raises(ConfigError) as caught:
        parse_keep("c100 > 1").check(available)
    message = caught.value.message
    assert message.startswith("unknown column 'c100' (did you mean ")
    assert "'c19'" in message.split("the columns are: ")[1]
    assert "'c20'" not in message.split("the columns are: ")[1]
    assert message.endswith(" and 30 more")
    with pytest.raises(ConfigError, match="the data has no columns"):
        parse_keep("c > 1").check([])


@pytest.mark.parametrize(("text", "message"), [
    ("text < 0.5", "cannot compare string with numeric"),
    ("len(n) > 1", "len() needs text or a list, but column 'n' holds Int64"),
    ("lower(n) == 'a'", "clause 0 \"lower(n) == 'a'\" cannot be evaluated"),
    ("n in ['a']", "cannot be evaluated"),
])
def test_evaluate_names_a_clause_that_does_not_fit_the_data(text: str, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_keep(text).evaluate(FRAME)
    assert caught.value.field == "keep"
    assert message in caught.value.message


@pytest.mark.parametrize(("text", "message"), [
    ("__import__('os')", "names starting with '_' are not allowed at column 1: "
                         "\"__import__('os')\""),
    ("__import__('os').system('ls') == 0", "method calls are not allowed"),
    ("x.__class__", "names starting with '_' are not allowed at column 1: 'x.__class__'"),
    ("x.y.__dict__ == 1", "names starting with '_' are not allowed"),
    ("_private > 1", "names starting with '_' are not allowed at column 1: '_private'"),
    ("x[0] > 1", "subscripts (x[...]) are not allowed at column 1: 'x[0]'"),
    ("x[1:2] == 'a'", "subscripts"),
    ("lambda: 1", "lambdas are not allowed at column 1: 'lambda: 1'"),
    ("(lambda: 0)() == 0", "only the named functions can be called"),
    ("[a for a in b]", "comprehensions are not allowed"),
    ("{a for a in b}", "comprehensions are not allowed"),
    ("{a: 1 for a in b}", "comprehensions are not allowed"),
    ("any(a for a in b)", "unknown function 'any'"),
    ("len(a for a in b) > 0", "generator expressions are not allowed"),
    ('f"{x}" == "a"', "f-strings are not allowed at column 1: 'f\"{x}\"'"),
    ('f"{x}"', "f-strings are not allowed"),
    ("open('f')", "unknown function 'open' at column 1"),
    ("eval('1') == 1", "unknown function 'eval'"),
    ("getattr(x, 'y') == 1", "unknown function 'getattr'"),
    ("(y := 1)", "assignment expressions (:=) are not allowed"),
    ("x.lower() == 'a'", "method calls are not allowed at column 1: 'x.lower()'"),
    ("'abc'.upper() == 'A'", "method calls are not allowed"),
    ("lower(x).y == 1", "attribute access is only allowed in dotted column names"),
    ("b'x' == x", "bytes literals are not allowed at column 1: \"b'x'\""),
    ("1j == x", "complex literals are not allowed"),
    ("... == x", "ellipsis literals are not allowed"),
    ("x > 99999999999999999999", "integers must fit in 64 bits"),
    ("(1 if x else 2) > 0", "conditional expressions (a if c else b) are not allowed"),
    ("{'a': 1} == x", "dicts are not allowed"),
    ("len(*x) > 1", "starred arguments (*x) are not allowed"),
    ("len(**x) > 1", "keyword unpacking (**x) is not allowed"),
    ("len(x=1) > 1", "len() takes no keyword argument 'x'"),
    ("feature(1, pooling='max') > 0", "feature() takes no keyword argument 'pooling'"),
    ("feature(-1) > 0", "a feature index must be a non-negative integer literal"),
    ("feature(1.5) > 0", "a feature index must be a non-negative integer literal"),
    ("feature(True) > 0", "a feature index must be a non-negative integer literal"),
    ("feature(n) > 0", "a feature index must be a non-negative integer literal"),
    ("feature() > 0", "feature() takes 1 or 2 arguments"),
    ("feature(1, 'median') > 0", "unknown pooling at column 12: \"'median'\"; choose from max"),
    ("feature(1, sae='') > 0", "sae= needs an SAE key"),
    ("feature(1, sae=x) > 0", "sae= needs an SAE key"),
    ("col(x) > 1", "col() needs a column name as a non-empty string literal"),
    ("col('') > 1", "col() needs a column name"),
    ("contains(x, y)", "the second argument of contains() must be a string literal"),
    ("contains(x)", "contains() takes 2 arguments, not 1"),
    ("len(x, y) > 1", "len() takes 1 argument, not 2"),
    ("contains(1, 'a')", "contains() needs text, not a number"),
    ("abs('a') > 1", "abs() needs a number, not a string"),
    ("len(1) > 1", "len() needs text or a list, not a number"),
    ("safety.p.insult", "the expression must be a condition at column 1: 'safety.p.insult'; "
                        "compare it, e.g. safety.p.insult < 0.5"),
    ("1", "the expression must be a condition"),
    ("'abc'", "the expression must be a condition"),
    ("None", "the expression must be a condition"),
    ("x + 1", "the expression must be a condition"),
    ("lower(x)", "the expression must be a condition"),
    ("x < 1 and y", "each clause of the top-level `and` must be a condition at column 11: 'y'"),
    ("x < 1 or y", "each side of `or` must be a condition at column 10: 'y'"),
    ("not x", "the operand of `not` must be a condition"),
    ("x | y", "the operator '|' is not allowed at column 1: 'x | y'; use `or`"),
    ("x & y", "use `and`"),
    ("x ** 2 > 1", "the operator '**' is not allowed"),
    ("x // 2 > 1", "the operator '//' is not allowed"),
    ("x % 2 == 1", "the operator '%' is not allowed"),
    ("~x", "the operator '~' is not allowed"),
    ("x is 1", "`is` only tests for None"),
    ("x is not y", "`is` only tests for None"),
    ("x in y", "`in` needs a list of literals on its right"),
    ("x in 'abc'", "`in` needs a list of literals on its right"),
    ("x in [y]", "lists for `in` may hold only literals"),
    ("x in [-y]", "lists for `in` may hold only literals"),
    ("x in [b'a']", "bytes literals are not allowed"),
    ("x in [1, 'a']", "a list for `in` must not mix types"),
    ("1 in ['a']", "cannot look for a number in a list of strings"),
    ("x == [1]", "lists are only allowed on the right of `in` / `not in`"),
    ("[1] == x", "lists are only allowed"),
    ("x < None", "None cannot be compared with <"),
    ("(x < 1) < 2", "conditions cannot be compared with <"),
    ("'a' + 1 > 0", "arithmetic needs numbers, not a string"),
    ("(x < 1) + 1 > 0", "arithmetic needs numbers, not a condition"),
    ("-'a' == x", "unary minus needs a number, not a string"),
    ("1 == 'a'", "cannot compare a number with a string"),
    ("True == 1", "cannot compare a condition with a number"),
    ("", "the expression is empty"),
    ("  \n\t ", "the expression is empty"),
    ("x < < 1", "syntax error: invalid syntax at column 5"),
    ("x <", "syntax error: "),
    ("x < 1)", "syntax error: unmatched ')'"),
    ("x = 1", "syntax error: "),
    ("x < 1\x00", "syntax error: "),
    ("x" * 10_001, "the expression is 10,001 characters long; the limit is 10,000"),
    ("not " * 150 + "x < 1", "the expression is nested too deeply (more than 100 levels)"),
    ("-" * 9990 + "1 > 0", "nested too deeply"),
    ("(" * 250 + "x" + ")" * 250, "too many nested parentheses"),
    ("a.b" + ".c" * 120 + " == 1", "nested too deeply"),
])
def test_refused(text: str, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_keep(text)
    err = caught.value
    assert err.field == "keep"
    assert message in err.message, err.message
    assert err.__cause__ is None and err.__context__ is None  # no parser traceback chain


def test_depth_limit_is_exactly_100() -> None:
    # `not` applied k times over a Compare(Name, Constant) is k + 2 levels deep
    parse_keep("not " * 98 + "x < 1")
    with pytest.raises(ConfigError, match="nested too deeply"):
        parse_keep("not " * 99 + "x < 1")
    parse_keep("x" * 9_994 + " < 1.0")  # exactly 10,000 characters


@pytest.mark.parametrize(("text", "where"), [
    ("safety.p.insult < 0.5 and x.__class__ == 1", "at column 27: 'x.__class__'"),
    ("café < 1 and x[0] > 1", "at column 14: 'x[0]'"),  # characters, not UTF-8 bytes
    ("   x[0] > 1", "at column 4: 'x[0]'"),
    ("(x < 1 and\n  y[0] > 1)", "at line 2, column 3: 'y[0]'"),
    ("\n  x[0] > 1", "at line 2, column 3: 'x[0]'"),
    ("  x < < 1", "syntax error: invalid syntax at column 7"),
    ("(x < 1 and\n y < < 1)", "syntax error: invalid syntax at line 2, column 6"),
])
def test_error_positions(text: str, where: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_keep(text)
    assert where in caught.value.message, caught.value.message


def test_long_segments_are_shortened_in_messages() -> None:
    with pytest.raises(ConfigError) as caught:
        parse_keep("lower(" + " + ".join(["aaaa"] * 30) + ")[0] == 'a'")
    segment = caught.value.message.split(": ", 1)[1]
    assert segment.endswith("...'")
    assert len(segment) <= 62


def test_parse_and_evaluate_never_run_code(monkeypatch: pytest.MonkeyPatch) -> None:
    """Neither eval nor exec is called, and compile only ever builds a syntax tree."""
    real_compile = builtins.compile

    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("user text reached eval/exec")

    def ast_only(source: Any, filename: Any, mode: str, flags: int = 0,
                 *args: Any, **kwargs: Any) -> Any:
        assert flags & ast.PyCF_ONLY_AST, "user text compiled to code"
        return real_compile(source, filename, mode, flags, *args, **kwargs)

    monkeypatch.setattr(builtins, "eval", refuse)
    monkeypatch.setattr(builtins, "exec", refuse)
    monkeypatch.setattr(builtins, "compile", ast_only)
    keep = parse_keep("len(text) > 3 and n in [1, 3] and feature(7434) >= 0")
    assert keep.failed(FRAME) == [[], [1], [], [1], [0, 1, 2], [0, 1]]
    with pytest.raises(ConfigError):
        parse_keep("__import__('os').system('echo hacked') == 0")


def test_clauses_compare_by_source_and_columns() -> None:
    first, second = parse_keep("n > 0 and x < 1"), parse_keep("n > 0 and x < 1")
    assert first == second
    assert hash(first) == hash(second)
    assert first.clauses[0] != first.clauses[1]
    assert isinstance(first, KeepExpression)
    assert isinstance(first.clauses[0], Clause)
    assert isinstance(first.expr(), pl.Expr)


def test_feature_column() -> None:
    assert feature_column(7434) == "feature.7434.max"
    assert feature_column(0, "mean") == "feature.0.mean"
    assert feature_column(7434, "max", sae="layer9") == "feature.layer9.7434.max"
    for bad in (-1, 1.0, True):
        with pytest.raises(ConfigError, match="non-negative integer"):
            feature_column(bad)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="unknown pooling 'median'"):
        feature_column(1, "median")
    with pytest.raises(ConfigError, match="SAE key must not be empty"):
        feature_column(1, sae="")


def test_len_counts_characters_not_bytes() -> None:
    frame = pl.DataFrame({"t": ["café", "naïve!"],
                          "c": pl.Series(["café", "ab"], dtype=pl.Categorical)})
    assert kept("len(t) == 4", frame) == [0]
    assert kept("len(lower(t)) == 6", frame) == [1]
    assert kept("len(c) == 4", frame) == [0]
