"""Prometheus label matchers (``=``, ``!=``, ``=~``, ``!~``) over label sets, with bounded cost.

Semantics are Prometheus': a label a series does not have has the value
``""``; a regex is anchored at both ends and ``.`` matches a newline.

Prometheus compiles regexes with RE2 (linear time); Python's ``re``
backtracks, so a pattern like ``(a+)+b`` could take exponential time on a
256-character label value. Before a regex is used, its parse tree is checked
and refused (InvalidInput) when it could backtrack badly:

* no repeat inside a repeat where either can match a variable number of times
  (``(a+)+``, ``(a*)*``, ``(a|aa)+``): the exponential cases;
* at most :data:`MAX_VARIABLE_REPEATS` variable repeats in the whole pattern
  (``.*a.*b.*`` is 3): each one multiplies the worst case by the value's length;
* no backreferences or lookarounds (RE2 has none: Prometheus refuses them too),
  counted repeats up to 1000 (RE2's limit), patterns up to 1024 characters.

Label values are at most 256 characters (the catalog's name limit), so a
refused pattern is the only way to a long match. Each distinct value is
matched once per matcher (a cache), since many series share values.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Callable, Iterable
from typing import Any

from xtsdb.protocol import prom_messages as pm
from xtsdb.protocol.errors import InvalidInput
from xtsdb.protocol.prom_remote import Matcher

# The parser ``re`` itself uses (no typing stubs; sre_parse is its deprecated alias).
sre_parse: Any = importlib.import_module("re._parser")
sre_c: Any = importlib.import_module("re._constants")

MAX_PATTERN = 1024
MAX_VARIABLE_REPEATS = 3
MAX_COUNT = 1000
_REPEATS = (sre_c.MAX_REPEAT, sre_c.MIN_REPEAT, sre_c.POSSESSIVE_REPEAT)
_REFUSED = {
    sre_c.GROUPREF: "a backreference",
    sre_c.GROUPREF_EXISTS: "a conditional group",
    sre_c.ASSERT: "a lookahead or lookbehind",
    sre_c.ASSERT_NOT: "a negative lookahead or lookbehind",
}

Predicate = Callable[[dict[str, str]], bool]


def compile_regex(pattern: str) -> re.Pattern[str]:
    """The anchored regex of a matcher value, or InvalidInput if it is invalid or could be slow."""
    if len(pattern) > MAX_PATTERN:
        raise InvalidInput(f"a regex matcher of {len(pattern)} characters, at most {MAX_PATTERN}")
    try:
        tree = sre_parse.parse(pattern)
    except re.error as exc:
        raise InvalidInput(f"invalid regex {pattern!r}: {exc}") from exc
    variable = _check(list(tree), pattern, nested=False)
    if variable > MAX_VARIABLE_REPEATS:
        raise InvalidInput(
            f"regex {pattern!r} has {variable} variable repeats, at most {MAX_VARIABLE_REPEATS} "
            "(a bound on its matching time)"
        )
    return re.compile(f"(?:{pattern})", re.DOTALL)


def _check(items: list[tuple[Any, Any]], pattern: str, nested: bool) -> int:
    """Variable repeats in ``items``; raises for a refused construct."""
    count = 0
    for op, av in items:
        if op in _REFUSED:
            raise InvalidInput(f"regex {pattern!r} uses {_REFUSED[op]}, which RE2 does not have")
        if op in _REPEATS:
            lo, hi, sub = av
            if hi != sre_c.MAXREPEAT and hi > MAX_COUNT:
                raise InvalidInput(f"regex {pattern!r} repeats up to {hi} times, at most 1000")
            inner_variable = _variable(list(sub))
            is_variable = lo != hi
            if (nested and (is_variable or inner_variable)) or (is_variable and inner_variable):
                raise InvalidInput(
                    f"regex {pattern!r} nests a repeat inside a repeat, "
                    "which can take exponential time here"
                )
            times = 1 if is_variable or hi == sre_c.MAXREPEAT else max(hi, 1)  # (a+){3}: 3 of them
            count += int(is_variable) + times * _check(list(sub), pattern, nested or is_variable)
        elif op == sre_c.SUBPATTERN:
            count += _check(list(av[-1]), pattern, nested)
        elif op == sre_c.BRANCH:
            count += sum(_check(list(b), pattern, nested) for b in av[1])
        elif op == sre_c.ATOMIC_GROUP:
            count += _check(list(av), pattern, nested)
    return count


def _variable(items: list[tuple[Any, Any]]) -> bool:
    """Whether ``items`` can match texts of different lengths (an alternation or a repeat)."""
    lo, hi = sre_parse.SubPattern(sre_parse.State(), items).getwidth()
    return bool(lo != hi)


def predicate(m: Matcher) -> Predicate:
    """A function telling whether a label set (with ``__name__``) matches ``m``."""
    name, want = m.name, m.value
    if m.type == pm.EQ:
        return lambda labels: labels.get(name, "") == want
    if m.type == pm.NEQ:
        return lambda labels: labels.get(name, "") != want
    rx = compile_regex(want)
    cache: dict[str, bool] = {}

    def hit(value: str) -> bool:
        got = cache.get(value)
        if got is None:
            got = cache[value] = rx.fullmatch(value) is not None
        return got

    if m.type == pm.RE:
        return lambda labels: hit(labels.get(name, ""))
    return lambda labels: not hit(labels.get(name, ""))


def select(
    series: Iterable[tuple[int, dict[str, str]]], matchers: Iterable[Matcher]
) -> list[tuple[int, dict[str, str]]]:
    """The ``(tag id, labels)`` pairs whose labels match every matcher."""
    preds = [predicate(m) for m in matchers]
    return [(tid, labels) for tid, labels in series if all(p(labels) for p in preds)]
