"""Reading ``strace -f -yy -xx`` output: finished calls with their arguments as text.

``-xx`` prints every string and every fd's path as ``\\xNN`` escapes, so no
quoting rules are needed beyond splitting arguments at top-level commas; calls
cut by another thread's (``<unfinished ...>`` / ``<... resumed>``) are joined
and ordered by when they finished.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import msgpack

# strace pads the pid column: "6705  openat(" once pids wrap to fewer digits.
_LINE = re.compile(r"^(\d+) +(\w+)\((.*)\) += (-?\d+|\?)(.*)$")
_RESUMED = re.compile(r"^(\d+) +<\.\.\. \w+ resumed>(.*)$")
_HEX = re.compile(r'"((?:\\x[0-9a-f]{2})*)"')
_FD = re.compile(r"^(-?\d+)<(.*)>$")


def unhex(s: str) -> bytes:
    return bytes.fromhex(s.replace("\\x", ""))


@dataclass
class Call:
    """One finished syscall: its name, raw argument text, return value, thread."""

    tid: int
    name: str
    args: list[str]
    ret: int


def split_args(text: str) -> list[str]:
    """Top-level comma-separated arguments (quotes, brackets and <fd paths> kept whole)."""
    out, depth, quoted, start = [], 0, False, 0
    for i, ch in enumerate(text):
        if ch == '"':
            quoted = not quoted
        elif quoted:
            continue
        elif ch in "[{<":
            depth += 1
        elif ch in "]}>" and text[i - 1 : i + 1] != "->":  # "->" inside TCP:[a->b]
            depth -= 1
        elif ch == "," and depth == 0:
            out.append(text[start:i].strip())
            start = i + 1
    out.append(text[start:].strip())
    return out


def parse_trace(path: Path) -> list[Call]:
    """The trace's calls in completion order; ``<unfinished ...>`` halves are joined."""
    pending: dict[str, str] = {}
    calls: list[Call] = []
    with path.open(errors="replace") as f:
        for raw in f:
            line = raw.rstrip("\n")
            if line.endswith(" <unfinished ...>"):
                pid = line.split(" ", 1)[0]
                pending[pid] = line[: -len(" <unfinished ...>")]
                continue
            m = _RESUMED.match(line)
            if m:
                head = pending.pop(m.group(1), None)
                if head is None:
                    continue
                line = head + m.group(2)
            m = _LINE.match(line)
            if m is None or m.group(4) == "?":
                continue
            calls.append(Call(int(m.group(1)), m.group(2), split_args(m.group(3)), int(m.group(4))))
    return calls


def fd_path(arg: str) -> str | None:
    m = _FD.match(arg)
    if m is None:
        return None
    inner = m.group(2)
    # Escaped bytes, with any plain text strace appends (" (deleted)") kept as it is.
    return re.sub(
        r"(?:\\x[0-9a-f]{2})+", lambda m: unhex(m.group(0)).decode(errors="replace"), inner
    )


def string_arg(arg: str) -> bytes:
    m = _HEX.match(arg)
    return unhex(m.group(1)) if m else b""


class Acks:
    """Counts the successful responses the server sends, from its writes on TCP sockets.

    The event loop may send a frame with ``write`` or ``writev``; a frame may be
    split across calls, so bytes are kept per socket.
    """

    def __init__(self) -> None:
        self.pending: dict[str, bytes] = {}

    def feed(self, c: Call) -> int:
        if c.name not in ("write", "writev", "sendto") or c.ret <= 0 or not _socket(c.args[0]):
            return 0
        data = iov_bytes(c.args[1]) if c.name == "writev" else string_arg(c.args[1])
        sock = c.args[0].split("<", 1)[1]
        buf, n = self.pending.get(sock, b"") + data[: c.ret], 0
        while len(buf) >= 4 and len(buf) >= 4 + (size := int.from_bytes(buf[:4], "big")):
            try:
                msg = msgpack.unpackb(buf[4 : 4 + size], raw=False)
            except ValueError:
                msg = None
            n += 1 if isinstance(msg, dict) and msg.get("ok") else 0
            buf = buf[4 + size :]
        self.pending[sock] = buf
        return n


def _socket(arg: str) -> bool:
    """An fd strace shows as a TCP socket; ``socket:[inode]`` when its netlink query
    for the details failed (seen on a busy machine): the frame check below decides."""
    path = fd_path(arg) or ""
    return path.startswith(("TCP", "socket:["))


def iov_bytes(arg: str) -> bytes:
    return b"".join(unhex(x) for x in re.findall(r'iov_base="((?:\\x[0-9a-f]{2})*)"', arg))
