"""Power loss from a syscall trace (the ALICE approach, simplified), and the fsync rule.

    .venv/bin/python -m bench.powerloss                 # every crash point of the trace
    .venv/bin/python -m bench.powerloss --every 10      # every 10th

A ``kill -9`` keeps what the process wrote into the page cache; a power cut keeps
only what an fsync made durable. Following "All File Systems Are Not Created
Equal" (Pillai et al., OSDI 2014), the workload of :mod:`bench.crashload` runs
once under ``strace -f -yy -xx`` (every file operation with its bytes, every fd
with its path, the acknowledgements as the server's writes on the client's TCP
socket). :class:`FsModel` replays that trace, keeping for every file its live
bytes and its durable bytes (as of its last fsync/fdatasync) and for every
directory its live and durable entries (as of its last fsync). Two things are
then checked:

* the fsync rule (:func:`ordering_violations`): at every acknowledgement the
  WAL segments hold no byte that is not durable, and the name of every live WAL
  segment, the ``wal`` directory, the data directory, and ``xtsdb.meta`` are
  durable entries of their parents;
* crash states (:func:`crash_state`): after any prefix of the trace, a
  directory tree is built from the durable state only: ``drop`` loses every
  unsynced write and directory change; ``torn`` also lands the first half of
  each file's unsynced 4 KiB pages, ``torn-late`` the second half (the disk
  wrote later pages first). Each state is opened with the engine and must hold
  every point acknowledged before the crash point, and no deleted point.

What this does not do (ALICE does more): it does not try every subset and
order of unsynced operations, nor reorder directory operations among
themselves, nor model a file system's own guarantees (ext4 persists a rename
with its data in some modes); it assumes the strictest POSIX rule.
SQLite's ``-shm`` files are left out of every state (SQLite rebuilds them; they
change through mmap, which a syscall trace cannot see).
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.crashload import N_WRITES, Outcome, Verdict, check, plan, traced_run
from bench.strace_parse import Acks, Call, fd_path, iov_bytes, parse_trace, string_arg

TRACED = (
    "openat,mkdir,write,writev,sendto,pwrite64,pwritev,pwritev2,ftruncate,truncate,fallocate,"
    "fsync,fdatasync,rename,unlink,close"
)
PAGE = 4096
VARIANTS = ("drop", "torn", "torn-late")


@dataclass
class Inode:
    is_dir: bool
    live: bytearray = field(default_factory=bytearray)
    durable: bytes = b""
    entries: dict[str, Inode] = field(default_factory=dict)  # directories: live
    durable_entries: dict[str, Inode] = field(default_factory=dict)

    def dirty(self) -> bool:
        if self.is_dir:
            return self.entries != self.durable_entries
        return bytes(self.live) != self.durable


class FsModel:
    """Live and durable state of the files under ``root`` (the data directory's parent)."""

    def __init__(self, root: Path, ignore_sync: str = "") -> None:
        self.root_path = str(root)
        # Files whose name starts with this are treated as never fsynced: a broken
        # engine, to show that the check finds what such a bug would lose.
        self.ignore_sync = ignore_sync
        self.root = Inode(True)
        self.pos: dict[int, int] = {}  # write position of fds opened for plain write()

    def lookup(self, path: str) -> tuple[Inode, str] | None:
        """(parent directory, name) of a path under the root, None if outside or missing."""
        if not path.startswith(self.root_path + "/"):
            return None
        parts = path[len(self.root_path) + 1 :].split("/")
        node = self.root
        for p in parts[:-1]:
            nxt = node.entries.get(p)
            if nxt is None or not nxt.is_dir:
                return None
            node = nxt
        return node, parts[-1]

    def node(self, path: str) -> Inode | None:
        if path == self.root_path:
            return self.root
        found = self.lookup(path)
        return found[0].entries.get(found[1]) if found else None

    def apply(self, c: Call) -> None:
        if c.ret < 0:
            return
        a = c.args
        if c.name == "openat":
            path = string_arg(a[1]).decode(errors="replace")
            found = self.lookup(path)
            if found is None:
                return
            parent, name = found
            if name not in parent.entries and "O_CREAT" in a[2]:
                parent.entries[name] = Inode(False)
            ino = parent.entries.get(name)
            if ino is not None and "O_TRUNC" in a[2]:
                del ino.live[:]
            self.pos[c.ret] = 0
        elif c.name == "mkdir":
            found = self.lookup(string_arg(a[0]).decode(errors="replace"))
            if found is not None:
                found[0].entries.setdefault(found[1], Inode(True))
        elif c.name in ("write", "pwrite64", "pwritev", "pwritev2"):
            ino = self._fd_node(a[0])
            if ino is None or ino.is_dir:
                return
            fd = int(a[0].split("<", 1)[0])
            if c.name == "pwritev" or c.name == "pwritev2":
                data = iov_bytes(a[1])
                off = int(a[3])
            else:
                data = string_arg(a[1])
                off = int(a[3]) if c.name == "pwrite64" else self.pos.get(fd, 0)
            data = data[: c.ret]
            _put(ino.live, off, data)
            if c.name == "write":
                self.pos[fd] = off + len(data)
        elif c.name in ("ftruncate", "truncate"):
            ino = (
                self._fd_node(a[0])
                if c.name == "ftruncate"
                else self.node(string_arg(a[0]).decode(errors="replace"))
            )
            if ino is not None and not ino.is_dir:
                size = int(a[1])
                del ino.live[size:]
                ino.live.extend(bytes(size - len(ino.live)))
        elif c.name == "fallocate":
            ino = self._fd_node(a[0])
            if ino is not None and a[1] == "0":
                end = int(a[2]) + int(a[3])
                ino.live.extend(bytes(max(0, end - len(ino.live))))
        elif c.name in ("fsync", "fdatasync"):
            ino = self._fd_node(a[0])
            path = fd_path(a[0]) or ""
            if ino is None or (
                self.ignore_sync and path.rsplit("/", 1)[-1].startswith(self.ignore_sync)
            ):
                return
            if ino.is_dir:
                ino.durable_entries = dict(ino.entries)
            else:
                ino.durable = bytes(ino.live)
        elif c.name == "rename":
            src = self.lookup(string_arg(a[0]).decode(errors="replace"))
            dst = self.lookup(string_arg(a[1]).decode(errors="replace"))
            if src is not None and dst is not None and src[1] in src[0].entries:
                dst[0].entries[dst[1]] = src[0].entries.pop(src[1])
        elif c.name == "unlink":
            found = self.lookup(string_arg(a[0]).decode(errors="replace"))
            if found is not None:
                found[0].entries.pop(found[1], None)

    def _fd_node(self, arg: str) -> Inode | None:
        path = fd_path(arg)
        return self.node(path) if path else None


def _put(buf: bytearray, off: int, data: bytes) -> None:
    if len(buf) < off:
        buf.extend(bytes(off - len(buf)))
    buf[off : off + len(data)] = data


def _torn(ino: Inode, late: bool) -> bytes:
    """Durable bytes plus half of the 4 KiB pages that differ from the live bytes."""
    live, old = bytes(ino.live), ino.durable
    n = max(len(live), len(old))
    pages = [p for p in range(0, n, PAGE) if live[p : p + PAGE] != old[p : p + PAGE]]
    half = len(pages) // 2
    chosen = pages[half:] if late else pages[: max(1, half)] if pages else []
    out = bytearray(old)
    for p in chosen:
        _put(out, p, live[p : p + PAGE])
        if p + PAGE >= len(live):
            del out[len(live) :]
    return bytes(out)


def materialize(model: FsModel, dest: Path, variant: str) -> None:
    """Write the state a power cut would leave into ``dest`` (the root's stand-in)."""

    def walk(ino: Inode, path: Path) -> None:
        for name, child in ino.durable_entries.items():
            if name.endswith("-shm"):
                continue
            target = path / name
            if child.is_dir:
                target.mkdir()
                walk(child, target)
            elif variant == "drop" or not child.dirty():
                target.write_bytes(child.durable)
            else:
                target.write_bytes(_torn(child, late=variant == "torn-late"))

    walk(model.root, dest)


def ordering_violations(model: FsModel, data_name: str) -> list[str]:
    """What an acknowledgement right now would rely on that is not durable."""
    bad: list[str] = []
    data = model.root.entries.get(data_name)
    if data is None or model.root.durable_entries.get(data_name) is not data:
        return ["the data directory is not a durable entry of its parent"]
    for name in ("wal", "xtsdb.meta"):
        if name in data.entries and data.durable_entries.get(name) is not data.entries[name]:
            bad.append(f"{name} is not a durable entry of the data directory")
    meta = data.entries.get("xtsdb.meta")
    if meta is None or meta.dirty():
        bad.append("xtsdb.meta is missing or not durable")
    wal = data.entries.get("wal")
    for name, seg in wal.entries.items() if wal else []:
        if not name.startswith("wal-"):
            continue
        if wal is not None and wal.durable_entries.get(name) is not seg:
            bad.append(f"wal/{name} is not a durable entry of wal/")
        if seg.dirty():
            bad.append(f"wal/{name} holds bytes not yet fsynced")
    return bad


def record(workdir: Path, n_writes: int = N_WRITES) -> tuple[list[Call], Outcome, Path]:
    """Run the workload under strace once; returns the calls, the outcome, the data dir."""
    workdir.mkdir(parents=True, exist_ok=True)
    data_dir, trace = workdir / "data", workdir / "trace"
    strace = ["-yy", "-xx", "-s", str(1 << 22), "-o", str(trace), "-e", f"trace={TRACED}"]
    out = Outcome(plan(n_writes))
    traced_run(data_dir, workdir, strace, out)
    if not out.finished:
        raise RuntimeError(f"the traced workload failed: {out.error or 'no start'}")
    calls = parse_trace(trace)
    counter = Acks()
    seen = sum(counter.feed(c) for c in calls)
    if seen != len(out.ops) + 1:  # + the hello
        names = sorted({c.name for c in calls})
        socks = sorted({c.args[0][:60] for c in calls if c.name in ("write", "writev")})[:8]
        raise RuntimeError(
            f"the trace shows {seen} responses for {len(out.ops)} ops "
            f"in {len(calls)} calls ({names}); written fds: {socks}"
        )
    return calls, out, data_dir


@dataclass
class Step:
    index: int  # calls applied so far
    acked: int  # operations acknowledged so far (responses minus the hello)
    violations: list[str]
    ack: bool = False  # the call was an acknowledgement (violations are checked there)


def replay(
    calls: list[Call], root: Path, data_name: str, ignore_sync: str = ""
) -> Iterator[tuple[Step, FsModel]]:
    """Apply the calls one by one; yield after each call that changed durable state or acked."""
    model = FsModel(root, ignore_sync)
    responses = 0
    counter = Acks()
    for i, c in enumerate(calls):
        n = counter.feed(c)
        if n:
            before = responses
            responses += n
            if before > 0:  # the first response answers the hello
                yield Step(i, responses - 1, ordering_violations(model, data_name), True), model
            continue
        model.apply(c)
        if c.name in (
            "fsync",
            "fdatasync",
            "rename",
            "unlink",
            "write",
            "pwrite64",
            "pwritev",
            "pwritev2",
            "ftruncate",
            "openat",
            "mkdir",
        ):
            yield Step(i + 1, max(0, responses - 1), []), model


def crash_state(model: FsModel, step: Step, out: Outcome, variant: str, base: Path) -> Verdict:
    """Build one crash state in a fresh directory and check it with the engine."""
    root = Path(tempfile.mkdtemp(prefix=f"pl-{step.index}-{variant}-", dir=base))
    materialize(model, root, variant)
    cut = Outcome(out.ops, acked=step.acked)
    cut.pending = out.ops[step.acked] if step.acked < len(out.ops) else None
    verdict = check(root / "data", cut, via="engine")
    if verdict.ok:
        shutil.rmtree(root, ignore_errors=True)
    return verdict


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="bench.powerloss", description=__doc__.split("\n\n")[0])
    p.add_argument("--every", type=int, default=1, help="check every Nth crash point")
    p.add_argument("--workdir", type=Path, default=None)
    args = p.parse_args(argv)

    base = Path(tempfile.mkdtemp(prefix="xtsdb-powerloss-", dir=args.workdir))
    calls, out, data_dir = record(base / "rec")
    violations: set[str] = set()
    states = failed = 0
    for k, (step, model) in enumerate(replay(calls, base / "rec", data_dir.name)):
        violations.update(step.violations)
        if k % args.every:
            continue
        for variant in VARIANTS:
            states += 1
            v = crash_state(model, step, out, variant, base)
            if not v.ok:
                failed += 1
                print(f"call {step.index} ({step.acked} acked) {variant}: {'; '.join(v.problems)}")
    for line in sorted(violations):
        print(f"fsync rule broken: {line}")
    print(
        f"{len(calls)} calls traced, {states} crash states checked, {failed} failed, "
        f"{len(violations)} fsync-rule violations"
    )
    if not failed and not violations:
        shutil.rmtree(base, ignore_errors=True)
    else:
        print(f"kept {base}")
    return 1 if failed or violations else 0


if __name__ == "__main__":
    sys.exit(main())
