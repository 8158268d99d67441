"""The common case of line protocol read as columns: a whole body at once, in numpy.

A *plain* line is ``key fields[ timestamp]`` with exactly one or two spaces,
no quote, backslash or control byte, and fields ``k=v,k=v`` (one ``=`` each)
whose values are plain numbers or booleans (:mod:`.lp_numbers`). Such lines
are cut with vectorised searches over the body's bytes (newlines, spaces,
commas, equals signs): every field's key and value is a (start, length) pair,
series keys and field keys are numbered by :func:`.lp_numbers.group`, values
and timestamps are read as digit matrices. Python runs once per distinct
(series key, field key) pair, to name it with the exact parser's own
function, never once per line.

Every other line is handed back in ``rest`` for the exact parser, with its
number: blank pieces, comments, lines with escapes or strings, runs of
spaces, numbers in forms the scan does not read, a name the exact parser
would refuse, and every line that may not end at its newline (one holding a
quote or ending in a backslash, joined with what follows as
:func:`.lp_grammar.lines` does). So the scan only takes lines the exact
parser reads without an error, and reads them to the same points: the
property tests in ``tests/test_lp_columnar.py`` hold the two to that.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, fields

import numpy as np
import numpy.typing as npt

from .lp_batch import Part
from .lp_grammar import joined
from .lp_numbers import MAX_WIDTH, Body, group, integers, values

__all__ = ["Columns", "scan"]

I64 = npt.NDArray[np.int64]
_EMPTY = np.zeros(0, np.int64)
_MAX_VALUE = 32  # bytes of a value the scan reads (a longer one: the exact parser)
_MAX_STAMP = 24
Namer = Callable[[bytes], str]


@dataclass
class Columns:
    """What :func:`scan` read, as columns, and the lines it left (``rest``)."""

    names: list[str] = field(default_factory=list)  # per distinct (series key, field key)
    name_pos: list[tuple[int, int]] = field(default_factory=list)  # first met: (line, field)
    pair: I64 = field(default_factory=lambda: _EMPTY)  # per point: index into names
    values: npt.NDArray[np.float64] = field(default_factory=lambda: np.zeros(0))
    kinds: npt.NDArray[np.uint8] = field(default_factory=lambda: np.zeros(0, np.uint8))
    line_nos: I64 = field(default_factory=lambda: _EMPTY)  # per line read here
    stamps: I64 = field(default_factory=lambda: _EMPTY)
    stamped: npt.NDArray[np.bool_] = field(default_factory=lambda: np.zeros(0, bool))
    counts: I64 = field(default_factory=lambda: _EMPTY)
    rest: list[tuple[int, bytes]] = field(default_factory=list)  # (line number, line)
    lines: int = 0

    def part(self, at: I64) -> Part:
        """The points, with ``at[i]`` the final index of ``self.names[i]``."""
        series = at[self.pair] if self.pair.shape[0] else _EMPTY
        return Part(
            series, self.values, self.kinds, self.line_nos, self.stamps, self.stamped, self.counts
        )


@dataclass
class _Lines:
    """Candidate plain lines: their piece of the body, where their sections are, and the
    range of the body's comma and equals positions inside their field set."""

    piece: I64
    start: I64
    key_end: I64  # the first space
    fields_end: I64  # the second space, or the line's end
    end: I64
    c0: I64
    c1: I64
    e0: I64
    e1: I64

    def keep(self, ok: npt.NDArray[np.bool_]) -> _Lines:
        return _Lines(*(getattr(self, f.name)[ok] for f in fields(self)))


def scan(data: bytes, prefix_of: Namer, field_of: Namer) -> Columns:
    """Read the plain lines of ``data``. A series is named ``prefix_of(series key) + "." +
    field_of(field key)``; either raises ``ValueError`` where the exact parser would not
    store the field (the line is then left to it). A plain line has no control byte, so
    neither has the name: the catalog's rule against them needs no check here."""
    if not data:
        return Columns()
    body = Body(data)
    buf = body.buf
    low = np.flatnonzero(buf < 32)
    newline = buf[low] == 10
    nl = low[newline]
    starts = np.concatenate(([0], nl + 1))
    ends = np.append(nl, buf.shape[0])
    count = starts.shape[0]
    filled = ends > starts
    plain = filled & (buf[np.minimum(starts, buf.shape[0] - 1)] != 35)  # '#': a comment
    odd = [low[~newline]] + [np.flatnonzero(buf == c) for c in (34, 92, 127) if c in data]
    plain[np.searchsorted(starts, np.concatenate(odd), "right") - 1] = False
    absorbed = np.zeros(count, bool)
    whole: dict[int, bytes] = {}  # lines that may go on past a newline, joined
    if 34 in data or 92 in data:
        at = np.concatenate([np.flatnonzero(buf == 34), np.flatnonzero(buf == 92)])
        s_list, e_list = starts.tolist(), ends.tolist()

        def piece(i: int) -> bytes:
            return data[s_list[i] : e_list[i]]

        after = 0
        for i in np.unique(np.searchsorted(starts, at, "right") - 1).tolist():
            if i >= after:
                whole[i], after = joined(piece, i, count)
                absorbed[i + 1 : after] = True
        plain &= ~absorbed
    out = Columns()
    lines, cm, eq = _candidates(buf, starts, ends, plain)
    plain[:] = False
    while lines.piece.shape[0]:  # at most once per check that can refuse a line
        ok = _read(data, body, lines, cm, eq, (prefix_of, field_of), out)
        if ok is None:
            plain[lines.piece] = True
            break
        lines = lines.keep(ok)
    rest = np.flatnonzero(filled & ~plain & ~absorbed)
    a, b = starts[rest].tolist(), ends[rest].tolist()
    out.rest = [
        (i + 1, whole.get(i) or data[j:k]) for i, j, k in zip(rest.tolist(), a, b, strict=True)
    ]
    return out


def _candidates(
    buf: npt.NDArray[np.uint8], starts: I64, ends: I64, plain: npt.NDArray[np.bool_]
) -> tuple[_Lines, I64, I64]:
    """Plain-looking pieces (one or two single spaces, one '=' per field), and the
    positions of every comma and equals sign of the body."""
    sp = np.flatnonzero(buf == 32)
    cm, eq = np.flatnonzero(buf == 44), np.flatnonzero(buf == 61)
    first = np.searchsorted(sp, starts)
    spaces = np.searchsorted(sp, ends) - first
    cand = np.flatnonzero(plain & ((spaces == 1) | (spaces == 2)))
    s, e = starts[cand], ends[cand]
    k = sp[first[cand]] if cand.shape[0] else _EMPTY
    two = spaces[cand] == 2
    f = np.where(two, sp[np.minimum(first[cand] + 1, sp.shape[0] - 1)], e) if cand.shape[0] else e
    c0, c1 = np.searchsorted(cm, k), np.searchsorted(cm, f)
    e0, e1 = np.searchsorted(eq, k), np.searchsorted(eq, f)
    ok = (k > s) & (f > k + 1) & (~two | (e > f + 1)) & (e1 - e0 == c1 - c0 + 1)
    return _Lines(cand, s, k, f, e, c0, c1, e0, e1).keep(ok), cm, eq


def _ranges(lo: I64, hi: I64) -> I64:
    """``concatenate([arange(a, b) for a, b in zip(lo, hi)])`` without the loop."""
    n = hi - lo
    total = int(n.sum())
    out: I64 = np.arange(total, dtype=np.int64) + np.repeat(lo - (np.cumsum(n) - n), n)
    return out


def _read(
    data: bytes,
    body: Body,
    ln: _Lines,
    cm: I64,
    eq: I64,
    namers: tuple[Namer, Namer],
    out: Columns,
) -> npt.NDArray[np.bool_] | None:
    """Read ``ln`` into ``out`` and return None, or return which lines to keep and try again
    (the others go to the exact parser)."""
    nf = ln.c1 - ln.c0 + 1
    first = np.cumsum(nf) - nf  # each line's first field
    fline = np.repeat(np.arange(nf.shape[0]), nf)
    commas = cm[_ranges(ln.c0, ln.c1)]
    eqs = eq[_ranges(ln.e0, ln.e1)]
    opens = np.ones(fline.shape[0], bool)  # a field's left edge is the key's space ...
    opens[first] = False
    lo = np.repeat(ln.key_end, nf)
    lo[opens] = commas  # ... or the comma before it
    closes = np.ones(fline.shape[0], bool)
    closes[first + nf - 1] = False
    hi = np.repeat(ln.fields_end, nf)
    hi[closes] = commas
    klen, vlen = eqs - lo - 1, hi - eqs - 1
    stamped = ln.fields_end < ln.end
    slen = ln.end - ln.fields_end - 1
    bad = (klen < 1) | (vlen < 1) | (klen > MAX_WIDTH) | (vlen > _MAX_VALUE)
    ok = np.ones(nf.shape[0], bool)
    ok[fline[bad]] = False
    ok &= (ln.key_end - ln.start <= MAX_WIDTH) & (~stamped | (slen <= _MAX_STAMP))
    if not ok.all():
        return ok
    x, kinds, good, slow = values(body, eqs + 1, vlen)
    ts, ts_ok = integers(body, ln.fields_end + 1, np.where(stamped, slen, 1))
    ok[fline[~good]] = False
    ok &= ~stamped | ts_ok
    if not ok.all():
        return ok
    keys, key_first = group(body, ln.start, ln.key_end - ln.start)
    fks, fk_first = group(body, lo + 1, klen, int(nf[0]) if (nf == nf[0]).all() else 0)
    a, b = ln.start[key_first].tolist(), ln.key_end[key_first].tolist()
    prefixes = _names(namers[0], [data[i:j] for i, j in zip(a, b, strict=True)])
    a, b = (lo[fk_first] + 1).tolist(), eqs[fk_first].tolist()
    parts = _names(namers[1], [data[i:j] for i, j in zip(a, b, strict=True)])
    bad_key = np.array([p is None for p in prefixes], bool)
    bad_fk = np.array([p is None for p in parts], bool)
    if bad_key.any() or bad_fk.any():
        ok[bad_key[keys]] = False
        ok[fline[bad_fk[fks]]] = False
        return ok
    ids, pair_first, pair = _pairs(keys[fline] * fk_first.shape[0] + fks)
    width = fk_first.shape[0]
    names = [f"{prefixes[i // width]}.{parts[i % width]}" for i in ids.tolist()]
    for i in np.flatnonzero(slow).tolist():  # mantissas above 2**53: rare
        x[i] = float(data[int(eqs[i]) + 1 : int(hi[i])])
    line_nos = ln.piece + 1
    out.names = names
    at = fline[pair_first]
    out.name_pos = list(zip(line_nos[at].tolist(), (pair_first - first[at]).tolist(), strict=True))
    out.pair = pair.ravel().astype(np.int64)
    out.values, out.kinds = x, kinds
    out.line_nos, out.stamps, out.stamped, out.counts = line_nos, ts, stamped, nf
    out.lines = int(nf.shape[0])
    return None


def _names(namer: Namer, raw: list[bytes]) -> list[str | None]:
    out: list[str | None] = []
    for r in raw:
        try:
            out.append(namer(r))
        except ValueError:  # the exact parser refuses (or skips) it: it says how
            out.append(None)
    return out


def _pairs(pair_id: I64) -> tuple[I64, I64, I64]:
    """(distinct ids in order of first appearance, the first index of each, each one's rank)."""
    size = int(pair_id.max()) + 1 if pair_id.shape[0] else 0
    if size > 1 << 22:  # a sparse space: sort
        ids, first, inverse = np.unique(pair_id, return_index=True, return_inverse=True)
        order = np.argsort(first, kind="stable")
        rank = np.empty_like(order)
        rank[order] = np.arange(order.shape[0])
        return ids[order], first[order], rank[inverse.ravel()]
    n = pair_id.shape[0]  # dense ids: a table of first indices, no sort
    first_at = np.full(size, n, np.int64)
    np.minimum.at(first_at, pair_id, np.arange(n))
    ids = np.flatnonzero(first_at < n)
    ids = ids[np.argsort(first_at[ids], kind="stable")]
    rank = np.empty(size, np.int64)
    rank[ids] = np.arange(ids.shape[0])
    return ids, first_at[ids], rank[pair_id]
