"""The ``--keep`` expression of ``auditor filter``: a small, safe subset of Python
expressions, translated into a Polars expression.

The text is user input. It is parsed with :func:`ast.parse` and the tree is walked
against a whitelist of node types; it is never evaluated, executed or compiled to code.
Anything outside the language below is refused with a
:class:`~auditor.errors.ConfigError` (``field="keep"``) naming the construct and where it
is (line and column, counted from 1). Text longer than :data:`MAX_LENGTH` (10,000)
characters or nested deeper than :data:`MAX_DEPTH` (100) levels is refused too.

The language
------------
Columns
    A name is a column: ``text``. A dotted name is one column whose name holds the
    dots: ``safety.p.insult`` reads the column ``"safety.p.insult"``. Any other column
    name (spaces, dashes, a leading ``_``) is written ``col("my column")``. Names (and
    their dotted parts) starting with ``_`` are refused.
SAE features
    ``feature(7434)`` reads :func:`feature_column` ``(7434)``, i.e. the column
    ``"feature.7434.max"``; ``feature(7434, "mean")`` picks the pooling (one of
    :data:`auditor.pooling.POOLINGS`) and ``feature(7434, "max", sae="layer9")`` the SAE
    (``"feature.layer9.7434.max"``).
Literals
    Integers, floats, strings, ``True``, ``False``, ``None``; lists, tuples or sets of
    those on the right of ``in`` / ``not in`` only.
Conditions
    Comparisons ``<  <=  >  >=  ==  !=``, chained as in Python (``0.2 < x <= 0.8`` is
    both comparisons); ``x in [...]`` and ``x not in [...]``; ``x is None`` and
    ``x is not None`` (``x == None`` means the same); ``contains(x, "sub")`` (a literal
    substring, not a regex), ``startswith(x, "..")``, ``endswith(x, "..")``,
    ``True``/``False``; and ``and``, ``or``, ``not`` and parentheses over those.
Values
    Arithmetic ``+ - * /`` and unary ``-`` on numbers; ``len(x)`` (characters of a
    string, items of a list), ``lower(x)``, ``upper(x)``, ``abs(x)``.

The whole expression, and each operand of ``and``/``or``/``not``, must be a condition: a
bare column (``safety.p.insult``) or number is refused rather than guessed at.

Missing values follow SQL: a comparison with a null is null, ``and``/``or``/``not``
propagate it (``null or True`` is true), and a clause that ends up null counts as false,
so the row is dropped. Test for nulls with ``x is None``.

The top-level ``and`` splits the expression into clauses (parenthesised ``and``\\ s
included): :meth:`KeepExpression.failed` says which clauses dropped each row.

Examples
--------
>>> import polars as pl
>>> frame = pl.DataFrame({
...     "text": ["Hello there", "you idiot", "Buy now!!", "fine"],
...     "safety.p.insult": [0.01, 0.97, 0.20, None],
...     "quality.label": ["ham", "ham", "spam", "ham"],
... })
>>> keep = parse_keep("safety.p.insult < 0.5 and quality.label == 'ham'")
>>> keep.columns
('safety.p.insult', 'quality.label')
>>> [clause.source for clause in keep.clauses]
['safety.p.insult < 0.5', "quality.label == 'ham'"]
>>> frame.filter(keep.expr())["text"].to_list()
['Hello there']
>>> keep.failed(frame)  # the null score fails clause 0
[[], [0], [1], [0]]
>>> parse_keep("len(text) > 5 and not contains(lower(text), 'buy')").failed(frame)
[[], [], [1], [0]]
>>> feature_column(7434), feature_column(7434, "mean", sae="layer9")
('feature.7434.max', 'feature.layer9.7434.mean')
>>> from auditor.errors import ConfigError
>>> for text in ("x.__class__ == 1", "score", "open('f')"):
...     try:
...         parse_keep(text)
...     except ConfigError as err:
...         print(err.message)
names starting with '_' are not allowed at column 1: 'x.__class__'
the expression must be a condition at column 1: 'score'; compare it, e.g. score < 0.5
unknown function 'open' at column 1: "open('f')"; the functions are abs, col, contains, ...
"""

from __future__ import annotations

import ast
import difflib
import operator
import re
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass, field
from typing import Any, Final, NoReturn

import polars as pl

from auditor.errors import ConfigError
from auditor.pooling import POOLINGS

__all__ = ["Clause", "KeepExpression", "feature_column", "parse_keep"]

MAX_LENGTH: Final = 10_000
"""Longest expression text accepted, in characters."""
MAX_DEPTH: Final = 100
"""Deepest syntax-tree nesting accepted (each operator, call or dotted part is a level)."""

_FIELD: Final = "keep"
_INT64: Final = 2**63
_SHOWN_AVAILABLE: Final = 20  # columns listed in an unknown-column error

# Static kinds of a translated value: "bool" (a condition), "num", "str", "null" (the
# literal None) and "any" (a column, whose dtype is known only when the data is).
_KIND_NAMES: Final = {"bool": "a condition", "num": "a number", "str": "a string",
                      "null": "None", "any": "a column"}

_COMPARE: Final[dict[type[ast.cmpop], tuple[str, Callable[[Any, Any], Any]]]] = {
    ast.Lt: ("<", operator.lt),
    ast.LtE: ("<=", operator.le),
    ast.Gt: (">", operator.gt),
    ast.GtE: (">=", operator.ge),
    ast.Eq: ("==", operator.eq),
    ast.NotEq: ("!=", operator.ne),
}
_ARITHMETIC: Final[dict[type[ast.operator], Callable[[Any, Any], Any]]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
}
_OPERATOR_SYMBOLS: Final[dict[type[ast.operator], str]] = {
    ast.FloorDiv: "//", ast.Mod: "%", ast.Pow: "**", ast.MatMult: "@", ast.LShift: "<<",
    ast.RShift: ">>", ast.BitOr: "|", ast.BitAnd: "&", ast.BitXor: "^",
}
_OPERATOR_HINTS: Final[dict[type[ast.operator], str]] = {
    ast.BitOr: "use `or` to combine conditions",
    ast.BitAnd: "use `and` to combine conditions",
}
_REFUSED: Final[dict[type[ast.AST], str]] = {
    ast.Subscript: "subscripts (x[...]) are not allowed",
    ast.Slice: "slices are not allowed",
    ast.Lambda: "lambdas are not allowed",
    ast.ListComp: "comprehensions are not allowed",
    ast.SetComp: "comprehensions are not allowed",
    ast.DictComp: "comprehensions are not allowed",
    ast.GeneratorExp: "generator expressions are not allowed",
    ast.JoinedStr: "f-strings are not allowed",
    ast.FormattedValue: "f-strings are not allowed",
    ast.Starred: "starred expressions (*x) are not allowed",
    ast.NamedExpr: "assignment expressions (:=) are not allowed",
    ast.IfExp: "conditional expressions (a if c else b) are not allowed",
    ast.Dict: "dicts are not allowed",
    ast.Await: "await is not allowed",
    ast.Yield: "yield is not allowed",
    ast.YieldFrom: "yield is not allowed",
}
_FUNCTIONS: Final = ("abs", "col", "contains", "endswith", "feature", "len", "lower",
                     "startswith", "upper")
# Node types below an expression that are not nesting (contexts and operator tokens).
_NOT_NESTING: Final = (ast.expr_context, ast.operator, ast.boolop, ast.unaryop, ast.cmpop)


def feature_column(index: int, pooling: str = "max", sae: str | None = None) -> str:
    """Return the column name of an SAE feature's pooled activation.

    Parameters
    ----------
    index
        The feature's index in the SAE dictionary, ``>= 0``.
    pooling
        How token activations were pooled into one value per document, one of
        :data:`auditor.pooling.POOLINGS`.
    sae
        The SAE's key when a dataset holds features of several SAEs; ``None`` for one.

    Returns
    -------
    str
        ``"feature.<index>.<pooling>"``, or ``"feature.<sae>.<index>.<pooling>"``.

    Raises
    ------
    ConfigError
        If ``index`` is not a non-negative integer, ``pooling`` is unknown or ``sae`` is
        empty.

    Examples
    --------
    >>> feature_column(7434)
    'feature.7434.max'
    >>> feature_column(12, "count", sae="layer9")
    'feature.layer9.12.count'
    """
    if isinstance(index, bool) or not isinstance(index, int) or index < 0:
        raise ConfigError(f"a feature index must be a non-negative integer, not {index!r}",
                          field=_FIELD)
    if pooling not in POOLINGS:
        raise ConfigError(f"unknown pooling {pooling!r}; choose from {', '.join(POOLINGS)}",
                          field=_FIELD)
    if sae is None:
        return f"feature.{index}.{pooling}"
    if not sae:
        raise ConfigError("an SAE key must not be empty", field=_FIELD)
    return f"feature.{sae}.{index}.{pooling}"


@dataclass(frozen=True)
class Clause:
    """One top-level conjunct of a keep expression.

    Attributes
    ----------
    source
        The clause's text as the user wrote it, stripped (without the parentheses around
        it, if any).
    expr
        A Boolean Polars expression, never null: a null result is already false.
        Not part of equality, which the source and columns decide.
    columns
        The columns the clause reads, in order of first use.
    """

    source: str
    expr: pl.Expr = field(compare=False)
    columns: tuple[str, ...]


@dataclass(frozen=True)
class KeepExpression:
    """A parsed ``--keep`` expression: the and of its :attr:`clauses` (true = keep).

    Attributes
    ----------
    source
        The expression's text, stripped.
    clauses
        The top-level ``and`` conjuncts; one clause when the top is not an ``and``.
    """

    source: str
    clauses: tuple[Clause, ...]

    @property
    def columns(self) -> tuple[str, ...]:
        """The columns the expression reads, in order of first use."""
        return _unique(name for clause in self.clauses for name in clause.columns)

    def expr(self) -> pl.Expr:
        """Return one Boolean, never-null Polars expression: true for a row to keep.

        Returns
        -------
        polars.Expr
            The clauses and-ed, named ``"keep"``.
        """
        if len(self.clauses) == 1:
            return self.clauses[0].expr.alias("keep")
        return pl.all_horizontal([clause.expr for clause in self.clauses]).alias("keep")

    def check(self, available: Collection[str]) -> None:
        """Raise unless every column the expression reads is in ``available``.

        Parameters
        ----------
        available
            The column names of the data to filter.

        Raises
        ------
        ConfigError
            Naming every unknown column with its close matches among ``available``, and
            listing (the first of) the available columns.

        Examples
        --------
        >>> from auditor.errors import ConfigError
        >>> try:
        ...     parse_keep("p.insul < 0.5").check(["p.insult", "text"])
        ... except ConfigError as err:
        ...     print(err.message)
        unknown column 'p.insul' (did you mean 'p.insult'?); the columns are: 'p.insult', 'text'
        """
        present = set(available)
        unknown = [name for name in self.columns if name not in present]
        if not unknown:
            return
        choices = list(available)
        described = []
        for name in unknown:
            close = difflib.get_close_matches(name, choices, n=3, cutoff=0.6)
            hint = f" (did you mean {' or '.join(map(repr, close))}?)" if close else ""
            described.append(f"{name!r}{hint}")
        noun = "column" if len(unknown) == 1 else "columns"
        if not choices:
            listing = "the data has no columns"
        else:
            shown = ", ".join(map(repr, choices[:_SHOWN_AVAILABLE]))
            more = len(choices) - _SHOWN_AVAILABLE
            listing = f"the columns are: {shown}" + (f" and {more} more" if more > 0 else "")
        raise ConfigError(f"unknown {noun} {', '.join(described)}; {listing}", field=_FIELD)

    def evaluate(self, frame: pl.DataFrame) -> pl.DataFrame:
        """Evaluate every clause on ``frame``.

        Parameters
        ----------
        frame
            The rows to filter; must hold every column in :attr:`columns`.

        Returns
        -------
        polars.DataFrame
            One Boolean column per clause, named ``"0"``, ``"1"``, ... in clause order,
            ``frame.height`` rows, never null (a null result is false).

        Raises
        ------
        ConfigError
            If a column is missing (see :meth:`check`) or a clause does not fit the
            data's types (say, a string column compared with a number).
        """
        self.check(frame.columns)
        results = []
        for i, clause in enumerate(self.clauses):
            try:
                result = frame.select(clause.expr.alias(str(i))).to_series()
            except _LengthTypeError as err:
                raise ConfigError(f"clause {i} {clause.source!r} cannot be evaluated: "
                                  f"{err.detail}", field=_FIELD) from None
            except pl.exceptions.PolarsError as err:
                detail = str(err).strip().splitlines()[0] if str(err).strip() else repr(err)
                raise ConfigError(f"clause {i} {clause.source!r} cannot be evaluated: "
                                  f"{detail}", field=_FIELD) from err
            if result.len() != frame.height:  # a clause of literals only is one value
                result = result.new_from_index(0, frame.height)
            results.append(result.cast(pl.Boolean))
        return pl.DataFrame(results)

    def failed(self, frame: pl.DataFrame) -> list[list[int]]:
        """Return, per row of ``frame``, the indices of the clauses that are false.

        Parameters
        ----------
        frame
            As for :meth:`evaluate`.

        Returns
        -------
        list of list of int
            One list per row, ascending; an empty list means the row is kept.

        Raises
        ------
        ConfigError
            As for :meth:`evaluate`.
        """
        passed = [column.to_list() for column in self.evaluate(frame).iter_columns()]
        return [[i for i, ok in enumerate(row) if not ok] for row in zip(*passed, strict=True)]


def parse_keep(text: str) -> KeepExpression:
    """Parse a ``--keep`` expression (the language is in the module docstring).

    Parameters
    ----------
    text
        The expression as the user wrote it.

    Returns
    -------
    KeepExpression
        Its clauses, each with a Polars expression and the columns it reads.

    Raises
    ------
    ConfigError
        ``field="keep"``, for empty or too long text, a syntax error, nesting deeper than
        :data:`MAX_DEPTH`, or any construct outside the language; the message names it and
        its line and column.

    Examples
    --------
    >>> keep = parse_keep("0.2 < feature(7434) <= 0.8 and col('my score') in [1, 2]")
    >>> for clause in keep.clauses:
    ...     print(clause.source, clause.columns)
    0.2 < feature(7434) <= 0.8 ('feature.7434.max',)
    col('my score') in [1, 2] ('my score',)
    """
    if not isinstance(text, str):
        raise ConfigError(f"the expression must be text, not {type(text).__name__}",
                          field=_FIELD)
    if len(text) > MAX_LENGTH:
        raise ConfigError(f"the expression is {len(text):,} characters long; the limit is "
                          f"{MAX_LENGTH:,}", field=_FIELD)
    source = text.strip()
    if not source:
        raise ConfigError("the expression is empty", field=_FIELD)
    translator = _Translator(text, source)
    tree = translator.parse()
    translator.check_depth(tree)
    nodes = _conjuncts(tree.body)
    message = ("the expression must be a condition" if len(nodes) == 1
               else "each clause of the top-level `and` must be a condition")
    return KeepExpression(source=source, clauses=tuple(
        translator.clause(node, message) for node in nodes))


def _conjuncts(node: ast.expr) -> list[ast.expr]:
    """The operands of a top-level ``and``, nested (parenthesised) ``and``\\ s flattened."""
    if isinstance(node, ast.BoolOp) and isinstance(node.op, ast.And):
        return [part for value in node.values for part in _conjuncts(value)]
    return [node]


def _unique(names: Iterable[str]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(names))


@dataclass(frozen=True)
class _Value:
    """A translated sub-expression and its static kind (see ``_KIND_NAMES``)."""

    expr: pl.Expr
    kind: str


class _LengthTypeError(TypeError):
    """``len()`` met a column that is neither text nor a list (raised inside Polars)."""

    def __init__(self, detail: str) -> None:
        self.detail = detail
        super().__init__(detail)


def _length(series: pl.Series) -> pl.Series:
    """``len()`` of a column whose dtype was unknown at parse time: characters of a
    string, items of a list or array."""
    dtype = series.dtype
    if isinstance(dtype, pl.Categorical | pl.Enum):
        series, dtype = series.cast(pl.String), pl.String()
    if dtype == pl.String:
        return series.str.len_chars().cast(pl.UInt32)
    if isinstance(dtype, pl.List):
        return series.list.len().cast(pl.UInt32)
    if isinstance(dtype, pl.Array):
        return series.arr.len().cast(pl.UInt32)
    if dtype == pl.Null:
        return pl.Series(series.name, [None] * series.len(), dtype=pl.UInt32)
    raise _LengthTypeError(f"len() needs text or a list, but column {series.name!r} "
                           f"holds {dtype}")


class _Translator:
    """Walks the syntax tree of one expression against the whitelist."""

    def __init__(self, text: str, source: str) -> None:
        self.source = source
        # Positions are reported in the user's text, which may have leading blanks.
        lead = text[: len(text) - len(text.lstrip())]
        self.line_shift = lead.count("\n")
        self.column_shift = len(lead) - (lead.rfind("\n") + 1)
        self.lines = re.split(r"\r\n|\r|\n", source)
        self.multiline = len(self.lines) > 1 or self.line_shift > 0
        self.columns: list[str] = []

    # -- errors -------------------------------------------------------------------------

    def where(self, line: int, column: int) -> str:
        """``column C`` (or ``line L, column C``) in the user's text, counted from 1."""
        if line == 1:
            column += self.column_shift
        line += self.line_shift
        return f"line {line}, column {column}" if self.multiline else f"column {column}"

    def fail(self, node: ast.AST, message: str, hint: str | None = None) -> NoReturn:
        line = getattr(node, "lineno", 1)
        offset = getattr(node, "col_offset", 0)
        # ast offsets count UTF-8 bytes; users count characters.
        text = self.lines[line - 1] if 0 < line <= len(self.lines) else ""
        column = len(text.encode("utf-8")[:offset].decode("utf-8", errors="ignore")) + 1
        segment = ast.get_source_segment(self.source, node) or ""
        segment = " ".join(segment.split())
        if len(segment) > 60:
            segment = segment[:57] + "..."
        tail = f"; {hint}" if hint else ""
        raise ConfigError(f"{message} at {self.where(line, column)}: {segment!r}{tail}",
                          field=_FIELD)

    # -- parsing ------------------------------------------------------------------------

    def parse(self) -> ast.Expression:
        try:
            return ast.parse(self.source, mode="eval")
        except SyntaxError as err:
            message = err.msg or "invalid syntax"
            if err.lineno and err.offset:
                message = f"{message} at {self.where(err.lineno, err.offset)}"
            error = ConfigError(f"syntax error: {message}", field=_FIELD)
        except (RecursionError, MemoryError):
            error = ConfigError(f"the expression is nested too deeply (more than "
                                f"{MAX_DEPTH} levels)", field=_FIELD)
        except ValueError as err:  # e.g. a NUL character, before Python 3.12
            error = ConfigError(f"syntax error: {err}", field=_FIELD)
        raise error  # outside the except blocks: no chained parser traceback

    def check_depth(self, tree: ast.Expression) -> None:
        """Refuse nesting deeper than MAX_DEPTH, without recursing (the tree may be deep)."""
        todo: list[tuple[ast.AST, int]] = [(tree.body, 1)]
        while todo:
            node, depth = todo.pop()
            if depth > MAX_DEPTH:
                self.fail(node, f"the expression is nested too deeply (more than {MAX_DEPTH} "
                                "levels)")
            todo.extend((child, depth + 1) for child in ast.iter_child_nodes(node)
                        if not isinstance(child, _NOT_NESTING))

    def clause(self, node: ast.expr, message: str) -> Clause:
        self.columns = []
        value = self.condition(node, message)
        source = (ast.get_source_segment(self.source, node) or "").strip()
        return Clause(source=source, expr=value.fill_null(False), columns=_unique(self.columns))

    # -- translation --------------------------------------------------------------------

    def condition(self, node: ast.expr, message: str) -> pl.Expr:
        value = self.value(node)
        if value.kind != "bool":
            example = ast.get_source_segment(self.source, node) or "x"
            if value.kind not in ("any", "num") or len(example) > 30:
                example = "x"
            self.fail(node, message, hint=f"compare it, e.g. {' '.join(example.split())} < 0.5")
        return value.expr

    def value(self, node: ast.expr) -> _Value:
        if isinstance(node, ast.Constant):
            return self.constant(node)
        if isinstance(node, ast.Name | ast.Attribute):
            return _Value(pl.col(self.column(self.dotted_name(node))), "any")
        if isinstance(node, ast.Call):
            return self.call(node)
        if isinstance(node, ast.Compare):
            return _Value(self.compare(node), "bool")
        if isinstance(node, ast.BoolOp):
            word = "and" if isinstance(node.op, ast.And) else "or"
            parts = [self.condition(v, f"each side of `{word}` must be a condition")
                     for v in node.values]
            combine = pl.all_horizontal if word == "and" else pl.any_horizontal
            return _Value(combine(parts), "bool")  # Kleene logic, like & and |
        if isinstance(node, ast.UnaryOp):
            return self.unary(node)
        if isinstance(node, ast.BinOp):
            return self.arithmetic(node)
        if isinstance(node, ast.List | ast.Tuple | ast.Set):
            self.fail(node, "lists are only allowed on the right of `in` / `not in`")
        refused = _REFUSED.get(type(node), f"{type(node).__name__} expressions are not allowed")
        self.fail(node, refused)

    def constant(self, node: ast.Constant) -> _Value:
        value = node.value
        if value is None:
            return _Value(pl.lit(None), "null")
        if isinstance(value, bool):
            return _Value(pl.lit(value), "bool")
        if isinstance(value, int):
            if not -_INT64 <= value < _INT64:
                self.fail(node, "integers must fit in 64 bits")
            return _Value(pl.lit(value), "num")
        if isinstance(value, float):
            return _Value(pl.lit(value), "num")
        if isinstance(value, str):
            return _Value(pl.lit(value), "str")
        if isinstance(value, bytes):
            self.fail(node, "bytes literals are not allowed")
        self.fail(node, f"{type(value).__name__} literals are not allowed")

    def dotted_name(self, node: ast.Name | ast.Attribute) -> str:
        parts: list[str] = []
        current: ast.expr = node
        while isinstance(current, ast.Attribute):
            parts.append(current.attr)
            current = current.value
        if not isinstance(current, ast.Name):
            self.fail(node, "attribute access is only allowed in dotted column names",
                      hint="use a function, e.g. lower(x) rather than x.lower()")
        parts.append(current.id)
        if any(part.startswith("_") for part in parts):
            self.fail(node, "names starting with '_' are not allowed",
                      hint="write such a column as col('_name')"
                      if isinstance(node, ast.Name) else None)
        return ".".join(reversed(parts))

    def column(self, name: str) -> str:
        self.columns.append(name)
        return name

    def expect(self, node: ast.expr, kinds: tuple[str, ...], what: str) -> pl.Expr:
        value = self.value(node)
        if value.kind not in kinds:
            self.fail(node, f"{what}, not {_KIND_NAMES[value.kind]}")
        return value.expr

    # -- comparisons --------------------------------------------------------------------

    def compare(self, node: ast.Compare) -> pl.Expr:
        parts = []
        left = node.left
        for op, right in zip(node.ops, node.comparators, strict=True):
            parts.append(self.compare_one(left, op, right, node))
            left = right
        return parts[0] if len(parts) == 1 else pl.all_horizontal(parts)

    def compare_one(self, left: ast.expr, op: ast.cmpop, right: ast.expr,
                    node: ast.Compare) -> pl.Expr:
        if isinstance(op, ast.In | ast.NotIn):
            return self.membership(left, right, negate=isinstance(op, ast.NotIn))
        if isinstance(op, ast.Is | ast.IsNot):
            if not (isinstance(right, ast.Constant) and right.value is None):
                self.fail(node, "`is` only tests for None",
                          hint="compare values with == or !=")
            tested = self.value(left)
            if tested.kind == "null":
                return pl.lit(isinstance(op, ast.Is))
            return tested.expr.is_null() if isinstance(op, ast.Is) else tested.expr.is_not_null()
        symbol, apply = _COMPARE[type(op)]
        a, b = self.value(left), self.value(right)
        if symbol in ("==", "!=") and "null" in (a.kind, b.kind):
            # Polars' col == None is always null; Python's is a null test.
            if a.kind == b.kind:
                return pl.lit(symbol == "==")
            tested = b if a.kind == "null" else a
            return tested.expr.is_null() if symbol == "==" else tested.expr.is_not_null()
        if "null" in (a.kind, b.kind):
            self.fail(node, f"None cannot be compared with {symbol}",
                      hint="test for it with `x is None`")
        if symbol not in ("==", "!=") and "bool" in (a.kind, b.kind):
            self.fail(node, f"conditions cannot be compared with {symbol}")
        if "any" not in (a.kind, b.kind) and a.kind != b.kind:
            self.fail(node, f"cannot compare {_KIND_NAMES[a.kind]} with {_KIND_NAMES[b.kind]}")
        result: pl.Expr = apply(a.expr, b.expr)
        return result

    def membership(self, left: ast.expr, right: ast.expr, *, negate: bool) -> pl.Expr:
        if not isinstance(right, ast.List | ast.Tuple | ast.Set):
            self.fail(right, "`in` needs a list of literals on its right",
                      hint="e.g. x in ['a', 'b']; for a substring use contains(x, '...')")
        items = [self.literal(element) for element in right.elts]
        values = [item for item in items if item is not None]
        kinds = {_literal_kind(item) for item in values}
        if len(kinds) > 1:
            self.fail(right, "a list for `in` must not mix types")
        tested = self.value(left)
        if tested.kind not in ("any", "num", "str", "bool"):
            self.fail(left, f"`in` cannot test {_KIND_NAMES[tested.kind]}")
        kind = kinds.pop() if kinds else None
        if kind is not None and tested.kind != "any" and tested.kind != kind:
            self.fail(left, f"cannot look for {_KIND_NAMES[tested.kind]} in a list of "
                            f"{ {'num': 'numbers', 'str': 'strings', 'bool': 'booleans'}[kind] }")
        member: pl.Expr
        if kind == "num":
            # Equalities rather than is_in, which refuses an int column with float values.
            member = pl.any_horizontal([tested.expr == pl.lit(item) for item in values])
        else:
            member = tested.expr.is_in(values)
        if len(values) < len(items):  # None in the list: a null matches it
            return (~member & tested.expr.is_not_null()) if negate \
                else (member | tested.expr.is_null())
        return ~member if negate else member

    def literal(self, node: ast.expr) -> Any:
        """A literal element of an `in` list: a constant, or a signed number."""
        sign = 1
        target = node
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub | ast.UAdd):
            sign = -1 if isinstance(node.op, ast.USub) else 1
            target = node.operand
            if not (isinstance(target, ast.Constant) and _literal_kind(target.value) == "num"):
                self.fail(node, "lists for `in` may hold only literals")
        if not isinstance(target, ast.Constant):
            self.fail(node, "lists for `in` may hold only literals")
        self.constant(target)  # refuses bytes, huge integers, ...
        value: Any = target.value
        return -value if sign == -1 else value

    # -- values -------------------------------------------------------------------------

    def unary(self, node: ast.UnaryOp) -> _Value:
        if isinstance(node.op, ast.Not):
            return _Value(~self.condition(node.operand, "the operand of `not` must be a "
                                                        "condition"), "bool")
        if isinstance(node.op, ast.Invert):
            self.fail(node, "the operator '~' is not allowed", hint="use `not`")
        operand = self.expect(node.operand, ("num", "any"), "unary minus needs a number")
        return _Value(-operand if isinstance(node.op, ast.USub) else operand, "num")

    def arithmetic(self, node: ast.BinOp) -> _Value:
        apply = _ARITHMETIC.get(type(node.op))
        if apply is None:
            symbol = _OPERATOR_SYMBOLS.get(type(node.op), type(node.op).__name__)
            self.fail(node, f"the operator {symbol!r} is not allowed",
                      hint=_OPERATOR_HINTS.get(type(node.op)))
        left = self.expect(node.left, ("num", "any"), "arithmetic needs numbers")
        right = self.expect(node.right, ("num", "any"), "arithmetic needs numbers")
        result: pl.Expr = apply(left, right)
        return _Value(result, "num")

    def call(self, node: ast.Call) -> _Value:
        func = node.func
        if isinstance(func, ast.Attribute):
            self.fail(node, "method calls are not allowed",
                      hint="call a function instead, e.g. lower(x) rather than x.lower()")
        if not isinstance(func, ast.Name):
            self.fail(node, "only the named functions can be called",
                      hint=f"they are {', '.join(_FUNCTIONS)}")
        name = func.id
        if name.startswith("_"):
            self.fail(node, "names starting with '_' are not allowed")
        if name not in _FUNCTIONS:
            self.fail(node, f"unknown function {name!r}",
                      hint=f"the functions are {', '.join(_FUNCTIONS)}")
        for arg in node.args:
            if isinstance(arg, ast.Starred):
                self.fail(arg, "starred arguments (*x) are not allowed")
        for keyword in node.keywords:
            if keyword.arg is None:
                self.fail(keyword, "keyword unpacking (**x) is not allowed")
            if not (name == "feature" and keyword.arg == "sae"):
                self.fail(keyword, f"{name}() takes no keyword argument {keyword.arg!r}",
                          hint="the one keyword argument is feature()'s sae=")
        if name == "feature":
            return self.feature(node)
        arity = 2 if name in ("contains", "startswith", "endswith") else 1
        if len(node.args) != arity:
            self.fail(node, f"{name}() takes {arity} argument{'s' if arity > 1 else ''}, "
                            f"not {len(node.args)}")
        arg = node.args[0]
        if name == "col":
            if not (isinstance(arg, ast.Constant) and isinstance(arg.value, str) and arg.value):
                self.fail(arg, "col() needs a column name as a non-empty string literal")
            return _Value(pl.col(self.column(arg.value)), "any")
        if name == "len":
            value = self.value(arg)
            if value.kind == "str":
                return _Value(value.expr.str.len_chars(), "num")
            if value.kind != "any":
                self.fail(arg, f"len() needs text or a list, not {_KIND_NAMES[value.kind]}")
            return _Value(value.expr.map_batches(_length, return_dtype=pl.UInt32,
                                                 is_elementwise=True), "num")
        if name == "abs":
            return _Value(self.expect(arg, ("num", "any"), "abs() needs a number").abs(), "num")
        text = self.expect(arg, ("str", "any"), f"{name}() needs text")
        if name == "lower":
            return _Value(text.str.to_lowercase(), "str")
        if name == "upper":
            return _Value(text.str.to_uppercase(), "str")
        pattern = node.args[1]
        if not (isinstance(pattern, ast.Constant) and isinstance(pattern.value, str)):
            self.fail(pattern, f"the second argument of {name}() must be a string literal")
        if name == "contains":
            return _Value(text.str.contains(pattern.value, literal=True), "bool")
        if name == "startswith":
            return _Value(text.str.starts_with(pattern.value), "bool")
        return _Value(text.str.ends_with(pattern.value), "bool")

    def feature(self, node: ast.Call) -> _Value:
        if not 1 <= len(node.args) <= 2:
            self.fail(node, f"feature() takes 1 or 2 arguments (index, pooling), not "
                            f"{len(node.args)}")
        index = node.args[0]
        if not (isinstance(index, ast.Constant) and isinstance(index.value, int)
                and not isinstance(index.value, bool) and 0 <= index.value < _INT64):
            self.fail(index, "a feature index must be a non-negative integer literal")
        pooling = "max"
        if len(node.args) == 2:
            arg = node.args[1]
            if not (isinstance(arg, ast.Constant) and arg.value in POOLINGS):
                self.fail(arg, "unknown pooling", hint=f"choose from {', '.join(POOLINGS)}")
            pooling = arg.value
        sae = None
        for keyword in node.keywords:  # only sae= is left
            arg = keyword.value
            if not (isinstance(arg, ast.Constant) and isinstance(arg.value, str) and arg.value):
                self.fail(arg, "sae= needs an SAE key as a non-empty string literal")
            sae = arg.value
        name = feature_column(index.value, pooling, sae)
        return _Value(pl.col(self.column(name)), "num")


def _literal_kind(value: Any) -> str:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int | float):
        return "num"
    if isinstance(value, str):
        return "str"
    return "null" if value is None else type(value).__name__
