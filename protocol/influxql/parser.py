"""InfluxQL text -> statements (:mod:`.ast`), by recursive descent.

Covers what Grafana's InfluxDB data source and the 1.x client libraries send:
``SELECT`` (fields, ``*``, calls, arithmetic, ``AS``; ``WHERE``; ``GROUP BY
time(i[, offset])``, tags, ``*``; ``fill``; ``ORDER BY time``; ``LIMIT``,
``OFFSET``, ``SLIMIT``, ``SOFFSET``), the ``SHOW`` statements of a schema
explorer and ``CREATE DATABASE``. Anything else is refused with an error
naming it (``... is not supported``), never guessed at. Operator precedence is
InfluxQL's: ``OR`` < ``AND`` < comparisons < ``+ -`` < ``* / %``.
"""

from __future__ import annotations

from xtsdb.protocol.errors import InvalidInput

from . import ast
from .lexer import Token, error, tokenize

_PRECEDENCE = {
    "or": 1,
    "and": 2,
    "=": 3,
    "!=": 3,
    "<": 3,
    "<=": 3,
    ">": 3,
    ">=": 3,
    "=~": 3,
    "!~": 3,
    "+": 4,
    "-": 4,
    "*": 5,
    "/": 5,
    "%": 5,
}
_SHOW = ("DATABASES", "MEASUREMENTS", "TAG", "FIELD", "RETENTION", "SERIES")
_OTHER_STATEMENTS = ("DELETE", "DROP", "CREATE", "ALTER", "GRANT", "REVOKE", "KILL", "EXPLAIN")
_SHOW_KINDS = (
    (("TAG", "KEYS"), "tag_keys"),
    (("TAG", "VALUES"), "tag_values"),
    (("FIELD", "KEYS"), "field_keys"),
    (("SERIES",), "series"),
)
_CASTS = ("field", "tag", "float", "integer")
_FILLS = ("null", "none", "previous", "linear")
_MAX_INT = (1 << 63) - 1


def unsupported(what: str) -> InvalidInput:
    return InvalidInput(f"{what} is not supported by xtsdb's InfluxQL (see docs/influxql.md)")


def parse(query: str) -> list[ast.Statement]:
    """Every statement of ``query`` (separated by ``;``); InvalidInput on an error."""
    p = _Parser(query)
    out: list[ast.Statement] = []
    while True:
        while p.accept_punct(";"):
            pass
        if p.peek().kind == "eof":
            break
        out.append(p.statement())
        if p.peek().kind != "eof":
            p.expect_punct(";")
    if not out:
        raise InvalidInput("error parsing query: empty query")
    return out


class _Parser:
    def __init__(self, query: str) -> None:
        self.query = query
        self.tokens = tokenize(query)
        self.i = 0

    # -- token helpers -------------------------------------------------------

    def peek(self, ahead: int = 0) -> Token:
        return self.tokens[min(self.i + ahead, len(self.tokens) - 1)]

    def next(self) -> Token:
        tok = self.peek()
        self.i += 1  # may pass the end: peek() clamps, and a caller may step back
        return tok

    def fail(self, expected: str) -> InvalidInput:
        tok = self.peek()
        return error(self.query, tok.pos, tok.text, expected)

    def accept(self, *words: str) -> bool:
        """Consume the keywords ``words`` if they come next."""
        if all(self.peek(k).upper == w for k, w in enumerate(words)):
            self.i += len(words)
            return True
        return False

    def expect(self, word: str) -> None:
        if not self.accept(word):
            raise self.fail(word)

    def _accept_token(self, kind: str, value: str) -> bool:
        tok = self.peek()
        if tok.kind == kind and tok.value == value:
            self.i += 1
            return True
        return False

    def accept_punct(self, c: str) -> bool:
        return self._accept_token("punct", c)

    def expect_punct(self, c: str) -> None:
        if not self.accept_punct(c):
            raise self.fail(c)

    def accept_op(self, op: str) -> bool:
        return self._accept_token("op", op)

    def ident(self) -> str:
        tok = self.peek()
        if tok.kind in ("ident", "qident"):
            self.i += 1
            return str(tok.value)
        raise self.fail("identifier")

    def integer(self) -> int:
        tok = self.next()
        if tok.kind != "integer" or not isinstance(tok.value, int) or tok.value > _MAX_INT:
            self.i -= 1
            raise self.fail("integer")
        return tok.value

    def regex(self) -> str:
        tok = self.next()
        if tok.kind != "regex":
            self.i -= 1
            raise self.fail("regex")
        return str(tok.value)

    # -- statements ----------------------------------------------------------

    def statement(self) -> ast.Statement:
        tok = self.peek()
        if self.accept("SELECT"):
            return self.select()
        if self.accept("SHOW"):
            return self.show()
        if self.accept("CREATE", "DATABASE"):
            name = self.ident()
            if self.peek().kind not in ("eof",) and not (
                self.peek().kind == "punct" and self.peek().value == ";"
            ):
                raise unsupported("CREATE DATABASE with options")
            return ast.CreateDatabase(name)
        if tok.upper in _OTHER_STATEMENTS:
            raise unsupported(f"the {tok.upper} statement")
        raise self.fail("SELECT, SHOW, CREATE")

    def sources(self) -> list[ast.Source]:
        out = [self.source()]
        while self.accept_punct(","):
            out.append(self.source())
        return out

    def source(self) -> ast.Source:
        if self.peek().value == "(" and self.peek().kind == "punct":
            raise unsupported("subqueries")
        if self.peek().kind == "regex":
            return ast.Source(regex=self.regex())
        name = self.ident()
        # "db"."rp"."m", "db".."m", "rp"."m": the measurement is the last part
        while self.accept_punct("."):
            if self.accept_punct("."):
                pass
            if self.peek().kind == "regex":
                return ast.Source(regex=self.regex())
            name = self.ident()
        return ast.Source(name=name)

    def select(self) -> ast.Select:
        fields = [self.field()]
        while self.accept_punct(","):
            fields.append(self.field())
        if self.accept("INTO"):
            raise unsupported("SELECT ... INTO")
        self.expect("FROM")
        stmt = ast.Select(fields, self.sources())
        if self.accept("WHERE"):
            stmt.condition = self.expr()
        if self.accept("GROUP", "BY"):
            self.dimensions(stmt)
        if self.accept("FILL"):
            self.fill(stmt)
        if self.accept("ORDER", "BY"):
            self.order(stmt)
        for word in ("LIMIT", "OFFSET", "SLIMIT", "SOFFSET"):
            if self.accept(word):
                setattr(stmt, word.lower(), self.integer())
        if self.peek().upper == "TZ":
            raise unsupported("tz()")
        return stmt

    def field(self) -> ast.Field:
        if self.accept_op("*"):
            expr: ast.Expr = ast.VarRef("*")
        else:
            expr = self.expr()
        alias = self.ident() if self.accept("AS") else ""
        return ast.Field(expr, alias)

    def dimensions(self, stmt: ast.Select) -> None:
        while True:
            if self.accept_op("*"):
                stmt.group_all = True
            elif self.peek().upper == "TIME" and self.peek(1).value == "(":
                self.i += 2
                stmt.interval_ns = self.duration()
                if self.accept_punct(","):
                    neg = self.accept_op("-")
                    offset = self.duration(zero=True)
                    stmt.offset_ns = -offset if neg else offset
                self.expect_punct(")")
            elif self.peek().kind == "regex":
                raise unsupported("GROUP BY /regex/")
            else:
                stmt.group_tags.append(self.ident())
            if not self.accept_punct(","):
                return

    def duration(self, zero: bool = False) -> int:
        tok = self.next()
        if not (tok.kind == "duration" and isinstance(tok.value, int) and tok.value >= 1 - zero):
            self.i -= 1
            raise self.fail("duration")
        return tok.value

    def fill(self, stmt: ast.Select) -> None:
        self.expect_punct("(")
        tok = self.next()
        neg = tok.kind == "op" and tok.value == "-"
        if neg:
            tok = self.next()
        if tok.kind in ("integer", "number") and isinstance(tok.value, int | float):
            stmt.fill, stmt.fill_value = "value", -float(tok.value) if neg else float(tok.value)
        elif tok.kind == "ident" and tok.text.lower() in _FILLS and not neg:
            stmt.fill = tok.text.lower()
        else:
            self.i -= 1
            raise self.fail("null, none, previous, linear or a number")
        self.expect_punct(")")

    def order(self, stmt: ast.Select) -> None:
        if self.peek().upper != "TIME":
            raise unsupported("ORDER BY a column other than time")
        self.i += 1
        if self.accept("DESC"):
            stmt.descending = True
        else:
            self.accept("ASC")

    def show(self) -> ast.Show:
        if self.accept("DATABASES"):
            return ast.Show("databases")
        if self.accept("RETENTION", "POLICIES"):
            self.on_database()
            return ast.Show("retention_policies")
        if self.accept("MEASUREMENTS"):
            stmt = ast.Show("measurements")
            self.on_database()
            if self.accept("WITH", "MEASUREMENT"):
                if self.accept_op("=~"):
                    stmt.regex = self.regex()
                elif self.accept_op("="):
                    stmt.name = self.ident()
                else:
                    raise self.fail("=~ or =")
            return self.show_tail(stmt)
        for words, what in _SHOW_KINDS:
            if self.accept(*words):
                if self.peek().upper in ("CARDINALITY", "EXACT"):
                    raise unsupported(f"SHOW {' '.join(words)} CARDINALITY")
                stmt = ast.Show(what)
                self.on_database()
                if self.accept("FROM"):
                    stmt.sources = self.sources()
                if what == "tag_values":
                    self.with_key(stmt)
                return self.show_tail(stmt)
        tok = self.peek()
        if tok.kind == "ident":
            raise unsupported(f"SHOW {tok.upper}")
        raise self.fail(", ".join(_SHOW))

    def on_database(self) -> None:
        if self.accept("ON"):
            self.ident()  # one server, one database: any name is this one

    def with_key(self, stmt: ast.Show) -> None:
        self.expect("WITH")
        self.expect("KEY")
        if self.accept("IN"):
            stmt.key_op = "in"
            self.expect_punct("(")
            stmt.keys.append(self.ident())
            while self.accept_punct(","):
                stmt.keys.append(self.ident())
            self.expect_punct(")")
            return
        for op in ("=~", "!~", "=", "!="):
            if self.accept_op(op):
                stmt.key_op = op
                if op in ("=~", "!~"):
                    stmt.key_regex = self.regex()
                else:
                    stmt.keys.append(self.ident())
                return
        raise self.fail("=, !=, =~, !~ or IN")

    def show_tail(self, stmt: ast.Show) -> ast.Show:
        if self.accept("WHERE"):
            stmt.condition = self.expr()
        if self.accept("ORDER", "BY"):
            raise unsupported("ORDER BY in SHOW")
        if self.accept("LIMIT"):
            stmt.limit = self.integer()
        if self.accept("OFFSET"):
            stmt.offset = self.integer()
        return stmt

    # -- expressions ---------------------------------------------------------

    def expr(self, min_prec: int = 1) -> ast.Expr:
        lhs = self.unary()
        while True:
            tok = self.peek()
            op = tok.text.lower() if tok.upper in ("AND", "OR") else tok.value
            if tok.kind not in ("op", "ident") or not isinstance(op, str):
                return lhs
            prec = _PRECEDENCE.get(op, 0)
            if prec < min_prec or prec == 0:
                return lhs
            self.i += 1
            rhs = self.expr(prec + 1)
            lhs = ast.Binary(op, lhs, rhs)

    def unary(self) -> ast.Expr:
        if self.accept_op("-"):
            tok = self.next()
            if tok.kind in ("integer", "number") and isinstance(tok.value, int | float):
                return ast.Number(-tok.value, tok.kind == "integer")
            if tok.kind == "duration" and isinstance(tok.value, int):
                return ast.Duration(-tok.value)
            self.i -= 1
            raise self.fail("number or duration")
        return self.primary()

    def primary(self) -> ast.Expr:
        tok = self.next()
        if tok.kind == "punct" and tok.value == "(":
            inner = self.expr()
            self.expect_punct(")")
            return inner
        if tok.kind in ("integer", "number") and isinstance(tok.value, int | float):
            return ast.Number(tok.value, tok.kind == "integer")
        if tok.kind == "duration" and isinstance(tok.value, int):
            return ast.Duration(tok.value)
        if tok.kind == "string":
            return ast.String(str(tok.value))
        if tok.kind == "regex":
            return ast.Regex(str(tok.value))
        if tok.kind == "ident" and self.peek().kind == "punct" and self.peek().value == "(":
            return self.call(tok.text.lower())
        if tok.kind == "ident" and tok.upper in ("TRUE", "FALSE"):
            return ast.Boolean(tok.upper == "TRUE")
        if tok.kind in ("ident", "qident"):
            if self.peek().kind == "punct" and self.peek().value == ".":
                raise unsupported("qualified field names")
            hint = ""
            if self.accept_op("::"):  # a type hint (Grafana writes ::field, ::tag) or cast
                hint = self.ident().lower()
                if hint not in _CASTS:
                    raise unsupported(f"the cast ::{hint}")
            return ast.VarRef(str(tok.value), hint if hint in ("float", "integer") else "")
        self.i -= 1
        raise self.fail("identifier, string, number, bool")

    def call(self, name: str) -> ast.Expr:
        self.expect_punct("(")
        if name == "now":
            self.expect_punct(")")
            return ast.Now()
        args: list[ast.Expr] = []
        if not self.accept_punct(")"):
            while True:
                if self.accept_op("*"):
                    args.append(ast.VarRef("*"))
                else:
                    args.append(self.expr())
                if self.accept_punct(")"):
                    break
                self.expect_punct(",")
        return ast.Call(name, tuple(args))
