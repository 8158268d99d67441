"""Columnar machinery behind the aggregates: sorted points cut into segments.

Internal to ``aggregate``. A segment is a run of consecutive points (a bucket,
a plot column); every function here costs a few streaming passes over the
points plus work per segment, with no Python step per point or per segment.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from .points import Float64Array, Int64Array

# Points per chunk of the fused reductions: 2 MB of float64, small enough that
# the second and later passes over a chunk hit the CPU cache, large enough
# that numpy's per-call overhead stays negligible.
CHUNK = 1 << 18
PIECE = 64  # arg_extremes: the exact position is searched among this many points
LOCATE_MIN_KEYS = 256  # below this, plain np.searchsorted is as fast as the guess
_WINDOW = 8  # locate: a guess is checked and corrected within this many points
_IDENTITY: dict[np.ufunc, float] = {np.add: 0.0, np.minimum: np.inf, np.maximum: -np.inf}


def sorted_unique(a: Int64Array) -> Int64Array:
    """``np.unique`` for integers, by sort (numpy >= 2.3's hashing unique is slower here)."""
    s = np.sort(a, kind="stable")  # stable = timsort: linear on a few sorted runs
    return s[np.concatenate(([True], s[1:] != s[:-1]))] if s.shape[0] else s


def locate(t: Int64Array, keys: Int64Array) -> Int64Array:
    """``np.searchsorted(t, keys)`` (side left), faster for many keys on long series.

    Binary search costs a cache miss per level and key (~25 per key on a year
    of 1 s data). Historian series are close to regular, so each position is
    first guessed by proportion, then checked against the 2, then the
    ``_WINDOW``, points around the guess (gathers at nearly sorted positions
    are cheap); only keys whose answer is in neither window (irregular data,
    gaps) get a binary search.
    """
    n, m = t.shape[0], keys.shape[0]
    if m < LOCATE_MIN_KEYS or n < max(4 * m, _WINDOW) or t[-1] == t[0]:
        return np.searchsorted(t, keys)
    t0 = int(t[0])
    guess = np.ceil((keys.astype(np.float64) - t0) * ((n - 1) / float(int(t[-1]) - t0)))
    guess = np.clip(guess, 0, n).astype(np.int64)
    out = np.empty(m, np.int64)
    todo = np.arange(m)
    for width in (2, _WINDOW):
        k = keys[todo]
        base = np.clip(guess[todo] - width // 2, 0, n - width)
        first, last = t[base] < k, t[base + width - 1] < k
        ans = base + first + last
        for j in range(1, width - 1):
            ans += t[base + j] < k
        # Exact when the window brackets the answer: it starts below the key
        # (or at 0) and ends at or above it (or at n).
        ok = ((base == 0) | first) & ((base == n - width) | ~last)
        out[todo[ok]] = ans[ok]
        todo = todo[~ok]
        if not todo.shape[0]:
            return out
    out[todo] = np.searchsorted(t, keys[todo])
    return out


def reduce_segments(
    n: int, seg: Int64Array, ufuncs: Sequence[np.ufunc], chunk: Callable[[int, int], Float64Array]
) -> list[Float64Array]:
    """Reduce ``chunk``'s values over the segments ``[seg[i], seg[i+1])`` (the last to n).

    ``seg`` is sorted with ``seg[0] == 0`` and no empty segment; ``chunk(c0, c1)``
    returns the values of points ``c0..c1-1``. The points are processed in
    cache-sized chunks, all ufuncs on one chunk before the next, so main memory
    is read once however many reductions are asked for; a segment cut by a
    chunk boundary combines its partial results. (numpy's reduceat would
    return an element, not the identity, for an empty segment: none are passed.)
    """
    out = [np.full(seg.shape[0], _IDENTITY[u]) for u in ufuncs]
    c0 = 0
    while c0 < n:
        c1 = _chunk_end(seg, c0, n)
        k0 = int(np.searchsorted(seg, c0, "right")) - 1
        k1 = int(np.searchsorted(seg, c1, "left"))
        offs = seg[k0:k1] - c0
        offs[0] = 0
        x = chunk(c0, c1)
        for u, acc in zip(ufuncs, out, strict=True):
            part = acc[k0:k1]
            u(part, u.reduceat(x, offs), out=part)
        c0 = c1
    return out


def _chunk_end(seg: Int64Array, c0: int, n: int) -> int:
    """Where the chunk from ``c0`` ends: at the last segment start within ``CHUNK``
    points, or, inside a segment longer than that, ``CHUNK`` points past its start
    (or its previous cut). Cuts thus depend on the segments alone, never on where
    the array began: a bucket sums to the same bits whatever range was asked (and
    a range split at a bucket edge adds up exactly to the whole)."""
    if c0 + CHUNK >= n:
        return n
    k = int(np.searchsorted(seg, c0 + CHUNK, "right")) - 1
    start = int(seg[k])
    if start > c0:
        return start
    return start + ((c0 - start) // CHUNK + 1) * CHUNK


class Segments:
    """Points ``t``/``v`` cut by the sorted edges ``b``: segment k is ``[b[k], b[k+1])``.

    The points must lie in ``[b[0], b[-1])``.
    """

    def __init__(self, t: Int64Array, v: Float64Array, b: Int64Array) -> None:
        self.t, self.v, self.b = t, v, b
        self.n = t.shape[0]
        self.idx = locate(t, b)  # idx[k]: first point at or after b[k]
        self.counts = np.diff(self.idx)
        self.ne = np.flatnonzero(self.counts)  # non-empty segments
        self.seg = self.idx[self.ne]  # first point of each non-empty segment
        self.lastp = self.idx[self.ne + 1] - 1  # last point of each non-empty segment

    def full(self, nonempty: Float64Array) -> Float64Array:
        """Per-segment array from per-non-empty-segment values, NaN for empty ones."""
        out = np.full(self.counts.shape[0], np.nan)
        out[self.ne] = nonempty
        return out

    def reduce(self, ufuncs: Sequence[np.ufunc]) -> list[Float64Array]:
        """The values reduced per non-empty segment (NaN-propagating for min/max/add)."""
        return reduce_segments(self.n, self.seg, ufuncs, lambda c0, c1: self.v[c0:c1])

    def weighted(self, last_dt: Int64Array, pair: bool) -> Float64Array:
        """Per non-empty segment: sum of ``w_i * dt_i`` with ``dt_i = t[i+1] - t[i]``.

        ``w_i`` is ``v[i]`` (step) or ``v[i] + v[i+1]`` (``pair``: twice the
        trapezoid height). The last point of a segment uses ``last_dt`` instead,
        so no term crosses an edge. Built chunk by chunk in reused buffers: the
        per-point products never exist at full size.
        """
        t, v, n, lastp = self.t, self.v, self.n, self.lastp
        dt, w = np.empty(min(n, CHUNK)), np.empty(min(n, CHUNK))

        def chunk(c0: int, c1: int) -> Float64Array:
            size, m = c1 - c0, min(c1, n - 1) - c0  # m: points with a successor
            d, x = dt[:size], w[:size]
            # The int64 loop subtracts exactly; only the result is stored as float.
            np.subtract(t[c0 + 1 : c0 + 1 + m], t[c0 : c0 + m], out=d[:m], casting="unsafe")
            r0, r1 = np.searchsorted(lastp, (c0, c1))
            d[lastp[r0:r1] - c0] = last_dt[r0:r1]
            if pair:
                np.add(v[c0 : c0 + m], v[c0 + 1 : c0 + 1 + m], out=x[:m])
                x[m:] = v[c0 + m : c1]
                x *= d
            else:
                np.multiply(v[c0:c1], d, out=x)
            return x

        return reduce_segments(n, self.seg, (np.add,), chunk)[0]


def arg_extremes(v: Float64Array, seg: Int64Array) -> tuple[Int64Array, Int64Array] | None:
    """Index of the first min and of the first max of each segment; None if v has NaN.

    Two levels: min/max of pieces of at most ``PIECE`` points (segments cut
    into pieces, one fused pass), the first piece reaching its segment's
    extreme, then the first point in that piece equal to it. A NaN shows up
    in the piece minima (np.minimum propagates it), hence the None.
    """
    n = v.shape[0]
    pieces = sorted_unique(np.concatenate((seg, np.arange(0, n, PIECE, dtype=np.int64))))
    pmin, pmax = reduce_segments(n, pieces, (np.minimum, np.maximum), lambda c0, c1: v[c0:c1])
    if np.isnan(pmin).any():
        return None
    first_piece = np.searchsorted(pieces, seg)
    piece_seg = np.searchsorted(seg, pieces, "right") - 1
    piece_end = np.append(pieces[1:], n)
    res = []
    for u, pext in ((np.minimum, pmin), (np.maximum, pmax)):
        sext = u.reduceat(pext, first_piece)
        hit = np.flatnonzero(pext == sext[piece_seg])
        p = hit[np.searchsorted(piece_seg[hit], np.arange(seg.shape[0]))]
        win = pieces[p][:, None] + np.arange(PIECE)
        inside = win < piece_end[p][:, None]
        eq = (v[np.minimum(win, n - 1)] == sext[:, None]) & inside
        res.append(pieces[p] + eq.argmax(axis=1))
    return res[0], res[1]
