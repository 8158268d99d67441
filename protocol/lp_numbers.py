"""Vectorised pieces of the columnar line-protocol path (:mod:`.lp_columnar`), sans I/O.

Every function works on many byte strings of one body at once, each given by
its start and length in the body, and gathered into a zero-padded matrix (one
row per string): a row can be compared, hashed and read as digits with numpy,
with no Python loop per string. They only say *yes* for text they are sure of;
a row they are not sure of is flagged and its line goes to the exact parser
(:mod:`.line_protocol`), so what they accept must parse to the same bits
there.

Numbers are read as InfluxDB 1.x writes them (:mod:`.lp_grammar`) in the forms
Telegraf and client libraries send: ``-?digits[.digits]`` (``.5`` and ``1.``
too), ``-?digits i``, ``digits u``, and the ten spellings of a boolean. A float
is ``mantissa / 10**fraction_digits`` when the mantissa is at most 2**53: both
operands are then exact doubles and IEEE division rounds once, correctly, which
is what ``float(text)`` gives (Clinger's fast path, the one fast_float and
Go's strconv take first). A float with a longer mantissa is read by
``float()`` itself (flagged ``slow``). Exponents, ``+``, ``_`` or anything
else are not taken here.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
from numpy.lib.stride_tricks import sliding_window_view

__all__ = ["MAX_WIDTH", "group", "integers", "pad", "padded", "values"]

U8 = npt.NDArray[np.uint8]
I64 = npt.NDArray[np.int64]
B = npt.NDArray[np.bool_]

MAX_WIDTH = 256
"""Longest string (bytes) these functions take: a longer one is left to the exact parser."""
_P10F = np.array([float(10**k) for k in range(19)])  # exact: 10**k (k <= 22) is a double
_MAX_EXACT = 1 << 53
_MAX_DIGITS = 18  # below 10**18: an int64 sum of digits cannot overflow
# Booleans as 8 bytes (zero padded) read as one little-endian uint64.
_TRUE = ("t", "T", "true", "True", "TRUE")
_FALSE = ("f", "F", "false", "False", "FALSE")
_BOOL_WORDS = np.frombuffer(b"".join(w.encode().ljust(8, b"\0") for w in _TRUE + _FALSE), "<u8")
_N_TRUE = len(_TRUE)
# Odd multipliers for a row hash over 8-byte words (any collision is then checked).
_MIX = np.array(
    [(0x9E3779B97F4A7C15 ^ (k * 0x632BE59BD9B4E019)) % (1 << 64) | 1 for k in range(32)], np.uint64
)


def padded(data: bytes) -> U8:
    """The body's bytes followed by zeros, so a row read at any position stays inside."""
    out = np.zeros(len(data) + MAX_WIDTH + 8, np.uint8)
    out[: len(data)] = np.frombuffer(data, np.uint8)
    return out


def pad(buf: U8, starts: I64, lengths: I64, width: int) -> U8:
    """Rows ``buf[start : start + length]`` zero padded to ``width`` bytes; ``buf`` from
    :func:`padded` (a row is one copy out of a strided view, no index matrix)."""
    rows: U8 = sliding_window_view(buf, width)[starts]
    rows *= np.arange(width) < lengths[:, None]
    return rows


def group(buf: U8, starts: I64, lengths: I64, period: int = 0) -> tuple[I64, I64]:
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
    words = pad(buf, starts, lengths, width).view("<u8")
    if 0 < period < n and n % period == 0:
        head = words[:period]
        if (words.reshape(n // period, period, -1) == head).all():
            ids, first = _group_words(head, lengths[:period])
            return np.tile(ids, n // period), first
    return _group_words(words, lengths)


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


def integers(buf: U8, starts: I64, lengths: I64) -> tuple[I64, B]:
    """``-?digits`` within int64 as (values, ok); at most 19 digits."""
    cols = np.ascontiguousarray(pad(buf, starts, lengths, 24).T)
    neg = cols[0] == 45
    mag = np.zeros(starts.shape[0], np.uint64)
    nd = np.zeros(starts.shape[0], np.int64)
    for c in cols:  # Horner, one column (the w-th byte of every string) at a time
        d = c - np.uint8(48)
        digit = d < 10
        mag = np.where(digit, mag * np.uint64(10) + d, mag)
        nd += digit
    ok = (nd == lengths - neg) & (nd >= 1) & (nd <= 19)
    ok &= mag < np.uint64(1 << 63)  # -2**63 itself is left to the exact parser
    signed = mag.astype(np.int64)
    return np.where(neg, -signed, signed), ok


def values(buf: U8, starts: I64, lengths: I64) -> tuple[npt.NDArray[np.float64], U8, B, B]:
    """Field values as (float64, kind, ok, slow); kinds as ``line_protocol.KINDS``.

    ``ok`` is False where the text is not one of this module's forms (the
    line then goes to the exact parser); ``slow`` marks valid floats whose
    value must still be read by ``float()`` (a mantissa above 2**53).
    """
    n = starts.shape[0]
    width = max(8, -(-int(lengths.max()) // 8) * 8) if n else 8
    rows = pad(buf, starts, lengths, width)
    cols = np.ascontiguousarray(rows.T)
    last = rows[np.arange(n), lengths - 1]
    is_i, is_u = last == 105, last == 117
    suffix = is_i | is_u
    neg = cols[0] == 45
    mant = np.zeros(n, np.int64)
    nd, ndot, frac = (np.zeros(n, np.int64) for _ in range(3))
    seen = np.zeros(n, bool)
    for c in cols:  # Horner, one column (the w-th byte of every value) at a time
        d = c - np.uint8(48)
        digit = d < 10
        mant = np.where(digit, mant * 10 + d, mant)  # wraps past 18 digits: see short
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
        word = rows[maybe, :8].copy().view("<u8")[:, 0]
        which = np.searchsorted(_BOOL_WORDS, word, sorter=_BOOL_ORDER)
        which = _BOOL_ORDER[np.minimum(which, _BOOL_WORDS.shape[0] - 1)]
        hit = _BOOL_WORDS[which] == word
        x[maybe[hit]] = (which[hit] < _N_TRUE).astype(np.float64)
        kinds[maybe[hit]] = 3
        ok[maybe[hit]] = True
    return x, kinds, ok, slow


_BOOL_ORDER = np.argsort(_BOOL_WORDS)
