"""Vectorised pieces of the columnar line-protocol path (:mod:`.lp_columnar`), sans I/O.

Every function works on many byte strings of one body at once, each given by
its start and length in the body, with no Python loop per string: strings are
copied out as zero-padded rows (:meth:`Body.rows`) or read as 8-byte words
(:meth:`Body.words`, two aligned loads and shifts per word, every string at
once), so they can be compared, hashed and read as digits with whole-array
operations. They only say *yes* for text they are sure of; a string they are
not sure of is flagged and its line goes to the exact parser
(:mod:`.line_protocol`), so what they accept must parse to the same bits
there.

Numbers are read as InfluxDB 1.x writes them (:mod:`.lp_grammar`) in the forms
Telegraf and client libraries send: ``-?digits[.digits]`` (``.5`` and ``1.``
too), ``-?digits i``, ``digits u``, and the ten spellings of a boolean. Values
are read column by column (Horner's rule over the rows' w-th bytes: on this
machine that beat reading them as words, which timestamps are: eight ASCII
digits in a word become their value with three multiplications, the SWAR
method of Lemire's fast_float). A float is ``mantissa /
10**fraction_digits`` when the mantissa is at most 2**53: both operands are
then exact doubles and IEEE division rounds once, correctly, which is what
``float(text)`` gives (Clinger's fast path, the one fast_float and Go's
strconv take first). A float with a longer mantissa is read by ``float()``
itself (flagged ``slow``). Exponents, ``+``, ``_`` or anything else are not
taken here.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
from numpy.lib.stride_tricks import sliding_window_view

__all__ = ["MAX_WIDTH", "Body", "group", "integers", "values"]

U8 = npt.NDArray[np.uint8]
U64 = npt.NDArray[np.uint64]
I64 = npt.NDArray[np.int64]
B = npt.NDArray[np.bool_]

MAX_WIDTH = 256
"""Longest string (bytes) :func:`group` takes: a longer one is left to the exact parser."""
_FRONT = 24  # zero bytes before the body, so a word read just before it stays inside
_U = np.uint64
_P10F = np.array([float(10**k) for k in range(19)])  # exact: 10**k (k <= 22) is a double
_P10U = np.array([10**k for k in range(19)], np.uint64)
_MAX_EXACT = 1 << 53
_MAX_DIGITS = 18  # below 10**18: an int64 Horner sum cannot overflow
_ZEROS = _U(0x3030303030303030)  # '00000000'
# _KEEP_HI[k]: the last k bytes of a word (its high bytes).
_KEEP_HI = np.array([((1 << 64) - 1) ^ ((1 << (8 * (8 - k))) - 1) for k in range(9)], np.uint64)
# Booleans as 8 bytes (zero padded) read as one little-endian uint64.
_TRUE = ("t", "T", "true", "True", "TRUE")
_FALSE = ("f", "F", "false", "False", "FALSE")
_BOOL_WORDS = np.frombuffer(b"".join(w.encode().ljust(8, b"\0") for w in _TRUE + _FALSE), "<u8")
_BOOL_ORDER = np.argsort(_BOOL_WORDS)
# Odd multipliers for a row hash over 8-byte words (any collision is then checked).
_MIX = np.array(
    [(0x9E3779B97F4A7C15 ^ (k * 0x632BE59BD9B4E019)) % (1 << 64) | 1 for k in range(32)], np.uint64
)


class Body:
    """A body's bytes (``buf``) and the same bytes as words, zero padded at both ends."""

    def __init__(self, data: bytes) -> None:
        self.buf: U8 = np.frombuffer(data, np.uint8)
        size = -(-(len(data) + _FRONT + MAX_WIDTH + 16) // 8) * 8
        raw = np.zeros(size, np.uint8)
        raw[_FRONT : _FRONT + len(data)] = self.buf
        self._raw = raw
        self._words: U64 = raw.view("<u8")

    def rows(self, starts: I64, lengths: I64, width: int) -> U8:
        """Rows ``[start, start + length)`` zero padded to ``width`` (<= MAX_WIDTH) bytes: one
        copy out of a strided view, no index matrix."""
        rows: U8 = sliding_window_view(self._raw[_FRONT:], width)[starts]
        rows *= np.arange(width) < lengths[:, None]
        return rows

    def columns(self, starts: I64, lengths: I64, width: int) -> U8:
        """:meth:`rows` transposed: row w holds the w-th byte of every string (0 past its end)."""
        out = np.empty((width, starts.shape[0]), np.uint8)
        at = starts + _FRONT
        for w in range(width):
            np.take(self._raw, at + w, out=out[w])
            out[w] *= lengths > w
        return out

    def words(self, at: I64) -> U64:
        """The 8 bytes at each position ``at`` (any, even unaligned), as little-endian words."""
        q = at + _FRONT
        i = q >> 3
        shift = ((q & 7) << 3).astype(np.uint64)
        lo = self._words[i] >> shift
        hi = (self._words[i + 1] << (_U(63) - shift)) << _U(1)  # a shift by 64 would be undefined
        out: U64 = lo | hi
        return out


def _digits8(w: U64) -> tuple[U64, B]:
    """Eight ASCII digits (first in the low byte) -> (their value, whether all are digits)."""
    high = _U(0xF0F0F0F0F0F0F0F0)
    ok = ((w & high) | (((w + _U(0x0606060606060606)) & high) >> _U(4))) == _U(0x3333333333333333)
    v = w - _ZEROS
    v = v * _U(10) + (v >> _U(8))
    m = _U(0x000000FF000000FF)
    v = ((v & m) * _U(0x000F424000000064) + ((v >> _U(16)) & m) * _U(0x0000271000000001)) >> _U(32)
    return v, ok


def _right(body: Body, end: I64, n: I64, skip: int) -> tuple[U64, B]:
    """The digits ``[end - skip - k, end - skip)`` with ``k = clip(n - skip, 0, 8)``."""
    k = np.clip(n - skip, 0, 8)
    keep = _KEEP_HI[k]
    return _digits8((body.words(end - skip - 8) & keep) | (_ZEROS & ~keep))


def _unsigned(body: Body, end: I64, n: I64, most: int) -> tuple[U64, B]:
    """The ``n <= most`` digits ending at ``end`` as one integer (``most`` <= 19)."""
    value, ok = _right(body, end, n, 0)
    for skip in range(8, most, 8):
        if (n > skip).any():
            more, more_ok = _right(body, end, n, skip)
            value = value + more * _P10U[skip]
            ok &= more_ok
    return value, ok


def group(body: Body, starts: I64, lengths: I64, period: int = 0) -> tuple[I64, I64]:
    """Equal strings numbered: (each string's group, the first string of each group).

    Groups are numbered in the order of their first string. The strings hold no
    NUL (the caller sends such lines to the exact parser), so zero padding
    cannot make two different strings equal. ``period``: a hint that the
    strings may repeat with that period (the field keys of lines that all have
    the same fields), checked, then only one period is grouped.
    """
    n = starts.shape[0]
    if n == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    width = -(-int(lengths.max()) // 8) * 8
    cols = body.columns(starts, lengths, width)
    if 0 < period < n and n % period == 0:
        head = cols[:, :period]
        if (cols.reshape(width, n // period, period) == head[:, None, :]).all():
            ids, first = _group_words(_words(head), lengths[:period])
            return np.tile(ids, n // period), first
    return _group_words(_words(cols), lengths)


def _words(cols: U8) -> U64:
    """Columns of bytes (width a multiple of 8) -> one row of 8-byte words per string."""
    out: U64 = np.ascontiguousarray(cols.T).view("<u8")
    return out


def _group_words(words: npt.NDArray[np.uint64], lengths: I64) -> tuple[I64, I64]:
    if words.shape[1] == 1:
        key = words[:, 0]
    else:  # a hash, checked below against the rows themselves
        key = (words * _MIX[: words.shape[1]]).sum(axis=1, dtype=np.uint64)
        key ^= lengths.astype(np.uint64)
    _, first, inverse = np.unique(key, return_index=True, return_inverse=True)
    if words.shape[1] > 1 and not (words == words[first[inverse]]).all():
        # Two strings share a hash: number the rows exactly (slower, never wrong).
        _, first, inverse = np.unique(words, axis=0, return_index=True, return_inverse=True)
    # np.unique numbers by sorted key; renumber by first appearance.
    order = np.argsort(first, kind="stable")
    rank = np.empty_like(order)
    rank[order] = np.arange(order.shape[0])
    return rank[inverse.ravel()].astype(np.int64), first[order].astype(np.int64)


def integers(body: Body, starts: I64, lengths: I64) -> tuple[I64, B]:
    """``-?digits`` within int64 as (values, ok); at most 19 digits."""
    neg = body.buf[np.minimum(starts, body.buf.shape[0] - 1)] == 45
    n = lengths - neg
    mag, ok = _unsigned(body, starts + lengths, n, 19)
    ok &= (n >= 1) & (n <= 19) & (mag < _U(1 << 63))  # -2**63 is left to the exact parser
    signed = mag.astype(np.int64)
    return np.where(neg, -signed, signed), ok


def values(body: Body, starts: I64, lengths: I64) -> tuple[npt.NDArray[np.float64], U8, B, B]:
    """Field values as (float64, kind, ok, slow); kinds as ``line_protocol.KINDS``.

    ``ok`` is False where the text is not one of this module's forms (the
    line then goes to the exact parser); ``slow`` marks valid floats whose
    value must still be read by ``float()`` (a mantissa above 2**53).
    """
    n = starts.shape[0]
    cols = body.columns(starts, lengths, int(lengths.max()) if n else 0)
    last = body.buf[starts + lengths - 1]
    is_i, is_u = last == 105, last == 117
    suffix = is_i | is_u
    neg = cols[0] == 45
    mant, step = np.zeros(n, np.int64), np.empty(n, np.int64)
    nd, ndot, frac = (np.zeros(n, np.uint8) for _ in range(3))  # small: cheap to add up
    seen = np.zeros(n, bool)
    for c in cols:  # Horner, the w-th byte of every value at a time
        d = c - np.uint8(48)
        digit = d < 10
        np.multiply(mant, 10, out=step)
        step += d
        np.copyto(mant, step, where=digit)  # wraps past 18 digits: see short
        nd += digit
        frac += digit & seen
        dot = c == 46
        seen |= dot
        ndot += dot
    ok = (nd >= 1) & (nd + ndot + neg + suffix == lengths)
    ok &= np.where(suffix, (ndot == 0) & ~(is_u & neg) & (nd <= _MAX_DIGITS), ndot <= 1)
    short = nd <= _MAX_DIGITS
    x = mant.astype(np.float64) / _P10F[np.minimum(frac, 18)]
    x = np.where(neg, -x, x)  # float('-0.0') is -0.0 ...
    ints = np.where(neg, -mant, mant).astype(np.float64)  # ... and float(int('-0')) is 0.0
    x = np.where(suffix, ints, x)
    kinds = np.where(is_i, 1, np.where(is_u, 2, 0)).astype(np.uint8)
    slow = ok & ~suffix & (~short | (mant > _MAX_EXACT))
    maybe = np.flatnonzero(~ok & ~suffix & (lengths <= 5))
    if maybe.shape[0]:  # booleans (rare in bulk): their first 8 bytes as one word
        word = body.rows(starts[maybe], lengths[maybe], 8).view("<u8")[:, 0]
        which = np.searchsorted(_BOOL_WORDS, word, sorter=_BOOL_ORDER)
        which = _BOOL_ORDER[np.minimum(which, _BOOL_WORDS.shape[0] - 1)]
        hit = _BOOL_WORDS[which] == word
        x[maybe[hit]] = (which[hit] < len(_TRUE)).astype(np.float64)
        kinds[maybe[hit]] = 3
        ok[maybe[hit]] = True
    return x, kinds, ok, slow
