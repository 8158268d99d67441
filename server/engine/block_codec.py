"""Columnar codec for the body of one block: the points of a single tag.

Body layout (codec ``CODEC_ZSTD_V1``), all integers little-endian::

    offset size  field
    0      1     magic/version byte, 0xB1
    1      1     flags: bits 0-2 timestamp width code, bits 3-5 value width code,
                 bit 6 value mode (0 = decimal integers, 1 = XOR of float bits),
                 bit 7 qualities constant
    2      1     k: decimal exponent 0..6 (values = integers / 10**k; 0 in XOR mode);
                 bit 7 set: a trailer lists the positions of -0.0 values
    3      1     the constant quality byte (0 when qualities vary)
    4      4     u32 count of points
    8      8     i64 first timestamp
    16     8     i64 first timestamp delta (0 when count < 2)
    24     8     i64 first value: scaled integer (decimal) or raw float64 bits (XOR)
    32     4     u32 length of the timestamp section
    36     4     u32 length of the value section
    40     4     u32 length of the quality section
    44     ...   timestamp section, value section, quality section, back to back

Width codes 0..4 mean 0/1/2/4/8 bytes per element; width 0 means "every element
is zero" and its section is empty (a perfectly regular series costs no stream).

* timestamp section: zstd of the byte-shuffled, zigzagged delta-of-deltas
  ``ts[2:] - 2*ts[1:-1] + ts[:-2]`` (count-2 elements) at the narrowest width.
* value section: count-1 elements at the narrowest width, byte-shuffled, zstd.
  Decimal mode: zigzagged deltas of ``rint(v * 10**k)``; XOR mode: ``bits[i] ^ bits[i-1]``.
* quality section: zstd of the raw bytes, or empty when the constant flag is set.
* trailer (only with bit 7 of k): E u32 positions of -0.0 values, then u32 E.
  Decimal integers cannot carry the sign of zero, and a value rounded to zero
  from below is common near zero; listing those few positions keeps the block
  in decimal mode instead of falling back to XOR of float bits (~7 B/point).

Byte-shuffling stores byte 0 of every element, then byte 1, ...: the high bytes
of small deltas are runs of zeros that zstd squeezes to almost nothing. Every
zstd frame records its content size; it must equal the size the header implies
before anything is decompressed, so a hostile body cannot make us allocate.
"""

from __future__ import annotations

import struct
import threading
from typing import Any

import numpy as np
import numpy.typing as npt
import zstandard

from xtsdb.protocol.errors import CorruptionError, InvalidInput, XtsdbError

from .points import TS_LIMIT, Float64Array, Int64Array, UInt8Array

CODEC_ZSTD_V1: int = 1

_MAGIC = 0xB1
_HEADER = struct.Struct("<BBBBIqqqIII")
_WIDTHS = (0, 1, 2, 4, 8)
_UINT: dict[int, np.dtype[Any]] = {w: np.dtype(f"<u{w}") for w in _WIDTHS[1:]}
_SINT: dict[int, np.dtype[Any]] = {w: np.dtype(f"<i{w}") for w in _WIDTHS[1:]}
_F_VALUE_XOR = 0x40
_F_QUAL_CONST = 0x80
_MAX_K = 6
_K_NEG_ZERO = 0x80  # in the k byte: a trailer lists the positions of -0.0 values
_U32 = struct.Struct("<I")
_SCALES = tuple(10.0**k for k in range(_MAX_K + 1))
_SCALE_COL = np.array(_SCALES).reshape(-1, 1)
_INT_LIMIT = float(2**52)  # scaled values below this convert to int64 and back exactly
_NEG_ZERO_BITS = np.uint64(0x8000000000000000)
_PROBE = 64  # a prefix that rejects most wrong exponents before a full pass

# What numpy, struct and zstandard raise on malformed input; all become CorruptionError.
_MALFORMED = (zstandard.ZstdError, struct.error, ValueError, TypeError, IndexError, OverflowError)

_tls = threading.local()


def _compressor(level: int) -> zstandard.ZstdCompressor:
    # Contexts are not thread-safe and costly to build, so each thread keeps its own.
    cache: dict[int, zstandard.ZstdCompressor] | None = getattr(_tls, "cctx", None)
    if cache is None:
        cache = _tls.cctx = {}
    cctx = cache.get(level)
    if cctx is None:
        cctx = cache[level] = zstandard.ZstdCompressor(level=level, write_content_size=True)
    return cctx


def _decompressor() -> zstandard.ZstdDecompressor:
    dctx: zstandard.ZstdDecompressor | None = getattr(_tls, "dctx", None)
    if dctx is None:
        dctx = _tls.dctx = zstandard.ZstdDecompressor()
    return dctx


def _zigzag(x: Int64Array) -> npt.NDArray[np.uint64]:
    # Inputs lie within +-2**62 (timestamps within 2**60, scaled values within 2**52),
    # so the shift loses no bits.
    return ((x << 1) ^ (x >> 63)).view(np.uint64)


def _pack(z: npt.NDArray[np.uint64], level: int) -> tuple[int, bytes]:
    """Width code and zstd section of ``z`` narrowed and byte-shuffled."""
    if z.size == 0:
        return 0, b""
    top = int(z.max())
    if top == 0:
        return 0, b""
    code = 1 if top < 1 << 8 else 2 if top < 1 << 16 else 3 if top < 1 << 32 else 4
    width = _WIDTHS[code]
    narrow = z.astype(_UINT[width])
    if width > 1:
        narrow = np.ascontiguousarray(narrow.view(np.uint8).reshape(-1, width).T)
    return code, _compressor(level).compress(narrow.data)


def _as(arr: object, dtype: type[np.generic], name: str) -> npt.NDArray[np.generic]:
    a = np.asarray(arr)
    if a.ndim != 1 or not np.can_cast(a.dtype, dtype, "safe"):
        raise InvalidInput(f"{name} must be a 1-D array castable to {np.dtype(dtype)}")
    return np.ascontiguousarray(a, dtype=dtype)


def _decimal(v: Float64Array) -> tuple[int, Int64Array] | None:
    """Smallest k with ``rint(v * 10**k) / 10**k == v`` (``==``: -0.0 passes), and the ints."""
    # Test every k on a short prefix at once: it rejects most exponents for a few calls.
    probe = v[:_PROBE]
    scaled = probe * _SCALE_COL
    good = (np.rint(scaled) / _SCALE_COL == probe).all(axis=1)
    for k in np.flatnonzero(good).tolist():
        scale = _SCALES[k]
        ints = np.rint(v * scale)
        # NaN fails ``==``; inf passes it but fails the bound, so both reject every k.
        if (ints / scale == v).all() and float(np.abs(ints).max()) < _INT_LIMIT:
            return k, ints.astype(np.int64)
    return None


def encode_block(
    timestamps: Int64Array,
    values: Float64Array,
    qualities: UInt8Array,
    level: int = 3,
) -> bytes:
    """Encode one tag's points into a block body (see the module docstring).

    Any order and duplicates round-trip; dtypes must cast safely (no float timestamps).
    """
    ts = _as(timestamps, np.int64, "timestamps").view(np.int64)
    vals = _as(values, np.float64, "values").view(np.float64)
    qual = _as(qualities, np.uint8, "qualities").view(np.uint8)
    n = ts.shape[0]
    if vals.shape[0] != n or qual.shape[0] != n:
        raise InvalidInput("timestamps, values and qualities differ in length")
    if n >= 1 << 32:
        raise InvalidInput("a block holds fewer than 2**32 points")
    if n and (int(ts.min()) <= -TS_LIMIT or int(ts.max()) >= TS_LIMIT):
        raise InvalidInput("timestamps must lie strictly within +-2**60")

    ts0 = int(ts[0]) if n else 0
    d0 = int(ts[1] - ts[0]) if n > 1 else 0
    ts_code, ts_sec = _pack(_zigzag(np.diff(ts, 2)), level)

    flags = ts_code
    with np.errstate(over="ignore", invalid="ignore"):  # huge values overflow to inf: rejected
        dec = _decimal(vals) if n else (0, np.zeros(0, np.int64))
    trailer = b""
    if dec is not None:
        k, ints = dec
        v0 = int(ints[0]) if n else 0
        val_code, val_sec = _pack(_zigzag(np.diff(ints)), level)
        # Integer zero has no sign: the places of -0.0 (a value rounded to zero from
        # below, common near zero) travel in a trailer instead of costing XOR mode.
        neg_zero = np.flatnonzero(vals.view(np.uint64) == _NEG_ZERO_BITS)
        if neg_zero.shape[0]:
            k |= _K_NEG_ZERO
            trailer = neg_zero.astype("<u4").tobytes() + _U32.pack(neg_zero.shape[0])
    else:
        k = 0
        bits = vals.view(np.uint64)
        v0 = int(bits.view(np.int64)[0])
        val_code, val_sec = _pack(bits[1:] ^ bits[:-1], level)
        flags |= _F_VALUE_XOR
    flags |= val_code << 3

    q0 = int(qual[0]) if n else 0
    if n == 0 or bool((qual == q0).all()):
        flags |= _F_QUAL_CONST
        q_sec = b""
    else:
        q0 = 0
        q_sec = _compressor(level).compress(qual.data)

    header = _HEADER.pack(
        _MAGIC, flags, k, q0, n, ts0, d0, v0, len(ts_sec), len(val_sec), len(q_sec)
    )
    return b"".join((header, ts_sec, val_sec, q_sec, trailer))


def _decompress(section: memoryview, size: int) -> bytes:
    """Exactly ``size`` bytes from one zstd frame, or CorruptionError."""
    # Check the frame's declared size first: zstandard allocates whatever a frame claims.
    if zstandard.frame_content_size(section) != size:
        raise CorruptionError("block section size does not match its header")
    raw = _decompressor().decompress(section, max_output_size=size, allow_extra_data=False)
    if len(raw) != size:
        raise CorruptionError("block section decompressed to the wrong size")
    return raw


def _unpack(
    section: memoryview, code: int, m: int, dest: npt.NDArray[np.generic], zz: bool
) -> None:
    """Decode ``m`` elements of a packed section into ``dest`` (int64 or uint64 view)."""
    width = _WIDTHS[code] if m else 0
    if width == 0:
        if len(section) or (code and not m):
            raise CorruptionError("block section present where none is expected")
        dest[...] = 0
        return
    raw = _decompress(section, m * width)
    shuffled = np.frombuffer(raw, np.uint8).reshape(width, m)
    # Column-by-column beats one transposed copy (numpy's 2-D transpose copy of bytes is slow).
    gathered = np.empty((m, width), np.uint8)
    for j in range(width):
        gathered[:, j] = shuffled[j]
    narrow = gathered.view(_UINT[width]).reshape(m)
    if zz:
        # Undo zigzag in the narrow width: the result is the width-bit two's complement
        # of the delta, so the signed view sign-extends correctly when widened.
        half = narrow >> 1
        np.bitwise_and(narrow, 1, out=narrow)
        np.negative(narrow, out=narrow)
        np.bitwise_xor(half, narrow, out=half)
        dest[...] = half.view(_SINT[width])
    else:
        dest[...] = narrow


def _neg_zero_trailer(mv: memoryview, at: int, n: int) -> npt.NDArray[np.uint32]:
    """Positions of -0.0 values, from the trailer after the sections."""
    if len(mv) < at + 4:
        raise CorruptionError("block trailer missing")
    (e,) = _U32.unpack_from(mv, len(mv) - 4)
    if e == 0 or e > n or len(mv) != at + 4 + 4 * e:
        raise CorruptionError("block trailer has a wrong length")
    idx = np.frombuffer(mv, "<u4", e, at)
    if int(idx.max()) >= n:
        raise CorruptionError("block trailer points outside the block")
    return idx


def decode_block(
    body: bytes | bytearray | memoryview,
    count: int,
    codec: int = CODEC_ZSTD_V1,
    out: tuple[Int64Array, Float64Array, UInt8Array] | None = None,
) -> tuple[Int64Array, Float64Array, UInt8Array]:
    """Decode a block body of ``count`` points, into ``out`` when given.

    Any malformed body raises CorruptionError; a misshapen ``out`` raises InvalidInput.
    """
    if out is None:
        if count < 0:
            raise CorruptionError(f"negative block count {count}")
        out = (np.empty(count, np.int64), np.empty(count, np.float64), np.empty(count, np.uint8))
    else:
        ts_o, val_o, q_o = out
        ok = ts_o.dtype == np.int64 and val_o.dtype == np.float64 and q_o.dtype == np.uint8
        if not ok or any(a.shape != (count,) or not a.flags.writeable for a in out):
            raise InvalidInput(f"out arrays must be writable 1-D {count}-long int64/f64/u8")
    try:
        _decode_into(memoryview(body).cast("B"), count, codec, out)
    except XtsdbError:
        raise
    except _MALFORMED as exc:
        raise CorruptionError(f"malformed block body: {exc}") from exc
    return out


def _decode_into(
    mv: memoryview, n: int, codec: int, out: tuple[Int64Array, Float64Array, UInt8Array]
) -> None:
    if codec != CODEC_ZSTD_V1:
        raise CorruptionError(f"unknown block codec {codec}")
    magic, flags, k, q0, hn, ts0, d0, v0, ts_len, val_len, q_len = _HEADER.unpack_from(mv)
    ts_code, val_code = flags & 7, (flags >> 3) & 7
    neg_zero, k = bool(k & _K_NEG_ZERO), k & ~_K_NEG_ZERO
    if magic != _MAGIC or ts_code > 4 or val_code > 4 or k > _MAX_K:
        raise CorruptionError("bad block header")
    if hn != n:
        raise CorruptionError(f"block holds {hn} points, directory says {n}")
    sections = _HEADER.size + ts_len + val_len + q_len
    zeros = _neg_zero_trailer(mv, sections, n) if neg_zero else None
    if len(mv) != sections + (0 if zeros is None else 4 + 4 * zeros.shape[0]):
        raise CorruptionError("block body length does not match its header")
    xor = bool(flags & _F_VALUE_XOR)
    bad = (xor and (k or neg_zero)) or (n < 2 and d0) or (n == 0 and (ts0 or v0))
    if bad or (q_len if flags & _F_QUAL_CONST else q0):
        raise CorruptionError("inconsistent block header")
    off = _HEADER.size
    ts_sec, val_sec = mv[off : off + ts_len], mv[off + ts_len : off + ts_len + val_len]
    q_sec = mv[off + ts_len + val_len : sections]
    ts_out, val_out, q_out = out

    if ts_code == 0 and n > 2:
        # A perfectly regular series (every delta-of-delta zero, the sensor case):
        # one multiply-add instead of unpacking and two running sums.
        if ts_len:
            raise CorruptionError("block section present where none is expected")
        last = ts0 + d0 * (n - 1)
        if not (-TS_LIMIT < ts0 < TS_LIMIT and -TS_LIMIT < last < TS_LIMIT):
            raise CorruptionError("decoded timestamps out of range")
        np.multiply(np.arange(n, dtype=np.int64), d0, out=ts_out)
        ts_out += ts0
    else:
        if n:
            ts_out[0] = ts0
        if n > 1:
            ts_out[1] = d0
        _unpack(ts_sec, ts_code, max(n - 2, 0), ts_out[2:], zz=True)
        # Two running sums turn delta-of-deltas back into timestamps, in place.
        np.cumsum(ts_out[1:], out=ts_out[1:])
        np.cumsum(ts_out, out=ts_out)
        # A damaged stream usually sums (or wraps) outside the range the encoder accepts.
        if n and (int(ts_out.min()) <= -TS_LIMIT or int(ts_out.max()) >= TS_LIMIT):
            raise CorruptionError("decoded timestamps out of range")

    # The float output doubles as the integer scratch space: same size, no temporary.
    if xor:
        bits = val_out.view(np.uint64)
        if n:
            bits[0] = np.int64(v0).view(np.uint64)
        _unpack(val_sec, val_code, max(n - 1, 0), bits[1:], zz=False)
        np.bitwise_xor.accumulate(bits, out=bits)
    else:
        ints = val_out.view(np.int64)
        if n:
            ints[0] = v0
        _unpack(val_sec, val_code, max(n - 1, 0), ints[1:], zz=True)
        np.cumsum(ints, out=ints)
        np.divide(ints, _SCALES[k], out=val_out)
        if zeros is not None:
            if zeros.shape[0] and bool((val_out[zeros] != 0.0).any()):
                raise CorruptionError("a -0.0 position holds a non-zero value")
            val_out.view(np.uint64)[zeros] = _NEG_ZERO_BITS

    if flags & _F_QUAL_CONST:
        q_out[...] = q0
    elif n:
        q_out[...] = np.frombuffer(_decompress(q_sec, n), np.uint8)
    else:
        raise CorruptionError("varying qualities in an empty block")
