"""Line-protocol inputs for the differential test against influxd: an adversarial
corpus, precision cases and a seeded generator of random, nearly valid lines."""

from __future__ import annotations

import random

ADVERSARIAL: list[bytes] = [
    # blanks
    b"ws1  v=1 1",
    b"ws2 v=2  2",
    b"\t ws3 \t v=3 \t 3  ",
    b"m v=1 ",
    b"m v=1 1\t",
    b"m v=1\t1",
    b"m v=1\t 1",
    b"m\tv=1 1",
    b"m v=1 \t1",
    b"\x00m v=1 1",
    b"m v=1 1\x00",
    b"m v=1 1 2",
    b"   ",
    b"# a comment v=1 1",
    b"  # indented comment",
    # escapes in the series key
    rb"my\=meas v=1 1",
    rb"m\"x v=1 1",
    rb"m\ x v=1 1",
    rb"m\,x,t=1 v=1 1",
    rb"m\x v=1 1",
    rb"m\ v=1 1",
    rb"m.b\\ c=1 1",
    rb"m b\.c=2 1",
    rb"m,t=a\ v=1 1",
    rb"m,t=a\\ v=1 1",
    rb"m,t=a\ b v=1 1",
    rb"m,t\ k=v v=1 1",
    rb"m,t\=k=v\=w v=1 1",
    rb"m,t\,k=v\,w v=1 1",
    rb"m,t\"k=v\"x v=1 1",
    rb"m,t==x v=1 1",
    rb"m,t=a=b v=1 1",
    rb"m,t=== v=1 1",
    b"m,=a v=1 1",
    b"m,a v=1 1",
    b"m, v=1 1",
    b"m,a= v=1 1",
    b",t=1 v=1 1",
    b"m",
    b"m ",
    b"m,t=1",
    # escapes in the field set
    rb"m f\"k=1 1",
    rb"m f\ k=1 1",
    rb"m f\,k=1 1",
    rb"m f\=k=1 1",
    rb"m f\.k=1 1",
    rb"m a\\=1 1",
    rb"m \=1 1",
    rb"m v=1\ 1",
    rb"m v=1 \1",
    b"m v=1,=2 1",
    b"m =1 1",
    b"m v 1",
    b"m v= 1",
    b"m v=1, 1",
    b"m v=1,,w=2 1",
    b"m v=1,w 1",
    # strings
    b'm s="a b",v=1 1',
    b'm s="a,b=c",v=1 1',
    rb'm s="x\"y",v=1 1',
    b'm s="unterminated,v=1 1',
    b'm v=1,s="a"x 1',
    b'm s="only" 1',
    # numbers and booleans
    b"m v=+1.5 1",
    b"m v=-1.5 1",
    b"m v=.5 1",
    b"m v=-.5e-3 1",
    b"m v=1. 1",
    b"m v=1.e5 1",
    b"m v=1E+5 1",
    b"m v=1e 1",
    b"m v=1e5e5 1",
    b"m v=1.1.1 1",
    b"m v=. 1",
    b"m v=- 1",
    b"m v=-0 1",
    b"m v=01 1",
    b"m v=1_000 1",
    b"m v=0x10 1",
    b"m v=1e400 1",
    b"m v=1e-400 1",
    b"m v=" + b"9" * 400 + b" 1",
    b"m v=nan 1",
    b"m v=NaN 1",
    b"m v=-nan 1",
    b"m v=inf 1",
    b"m v=-inf 1",
    b"m v=12i 1",
    b"m v=-12i 1",
    b"m v=01i 1",
    b"m v=+1i 1",
    b"m v=-i 1",
    b"m v=1.5i 1",
    b"m v=1e5i 1",
    b"m v=1i5 1",
    b"m v=9223372036854775807i 1",
    b"m v=9223372036854775808i 1",
    b"m v=-9223372036854775808i 1",
    b"m v=9007199254740993i 1",
    b"m a=t,b=T,c=true,d=True,e=TRUE 1",
    b"m a=f,b=F,c=false,d=False,e=FALSE 1",
    b"m v=tRUE 1",
    b"m v=yes 1",
    b"m v=1,v2=nan 1",
    # duplicates and 'time'
    b"m,a=1,a=2 v=1 1",
    b"m,b=1,a=2,b=3 v=1 1",
    b"m v=1,v=2 1",
    b"m,t=v f=1,t=2 1",
    b"m,time=1 v=1 1",
    b"m time=1 1",
    b"m time=1,v=2 1",
    b"m time=nan,v=2 1",
    b"m v=2,time=+1 1",
    b'm time="x",v=2 1',
    rb"m tim\e=1 1",
    # timestamps
    b"m v=1 -5",
    b"m v=1 -1500",
    b"m v=1 +5",
    b"m v=1 -",
    b"m v=1 1_0",
    b"m v=1 12ab",
    b"m v=1 0",
    b"m v=1 9223372036854775806",
    b"m v=1 9223372036854775807",
    b"m v=1 -9223372036854775806",
    b"m v=1 -9223372036854775807",
    b"m v=1 99999999999999999999",
    b"m v=1",
    # newlines inside a string, or escaped by a backslash, do not end a line
    b's s="a\nb",v=1 1',
    b'm s="a\n\nb",v=1 1\nm v=2 2',
    rb'm s="a\"' + b'\nb",v=1 1',
    b'm v=1 "x\nm v=2 2"',
    b'm,t="x v=1 1\nm v=2 2',
    b"m v=1 1\\\nm v=2 2",
    b"m v=1 1\\\\\nm v=2 2",
    b"m v=1 1\\\n",
    b"m v=1 1\\\nx",
    b"m v=1\n\n\nm v=2 2\n",
    # unicode
    "mé,tâg=vàl fïeld=1 1".encode(),
    "m v=1,ü=2 1".encode(),
]

PRECISION_CASES: list[tuple[str, bytes]] = [
    (p, b"m v=1 " + stamp)
    for p in ("n", "u", "ms", "s", "m", "h")
    for stamp in (
        b"1",
        b"-1",
        b"1700000000",
        b"9223372036",
        b"9223372037",
        b"2562047",
        b"153722868",
    )
]


ATOMS = [
    "a",
    "b",
    "cpu",
    "é",
    ".",
    "-",
    "_",
    "#",
    "0",
    "time",
    r"\,",
    r"\ ",
    r"\=",
    r"\"",
    "\\",
    ",",
    "=",
    " ",
    '"',
    "\t",
]
VALUES = [
    "1",
    "-1.5",
    ".5",
    "1.",
    "1e3",
    "1E-3",
    "-0",
    "+1",
    "1_0",
    "nan",
    "inf",
    "12i",
    "-7i",
    "1.5i",
    "9223372036854775808i",
    "3u",
    "t",
    "True",
    "FALSE",
    "tRUE",
    '"s"',
    '"a,b c"',
    r'"x\"y"',
    "",
    "1e400",
    "0x10",
    "1\t",
    "01",
    "--1",
    "2.5e+3",
]
STAMPS = [
    "",
    " 1700000000000000000",
    " -5000",
    " +5",
    " 1_0",
    " 12ab",
    "  17000000000001",
    " \t1000",
    " 2000 ",
    " 1 2",
    " 1\t",
    " 9223372036854775807",
]


def _name(rng: random.Random, plain: float) -> str:
    if rng.random() < plain:
        return rng.choice(["a", "b", "host", "cpu", "x.y", "é"])
    return "".join(rng.choice(ATOMS) for _ in range(rng.randint(1, 3)))


def random_line(rng: random.Random, values: list[str] = VALUES) -> bytes:
    """A line of line protocol, valid or nearly so: each piece sometimes wrong."""
    key = _name(rng, 0.5)
    for _ in range(rng.choice([0, 0, 1, 2, 3])):
        key += f",{_name(rng, 0.6)}={_name(rng, 0.6)}"
    fields = ",".join(
        f"{_name(rng, 0.7)}={rng.choice(values) if rng.random() < 0.5 else '2.25'}"
        for _ in range(rng.randint(1, 3))
    )
    lead = rng.choice(["", "", "", " ", "\t"])
    sep = rng.choice([" ", " ", " ", "  ", " \t"])
    return f"{lead}{key}{sep}{fields}{rng.choice(STAMPS)}".encode()
