"""Tag search through the name index answers as the plain scan of the catalog did.

The reference is the former ``Catalog.search`` (every tag, sorted by name,
``text.casefold()`` in the casefolded name or description), run on the
catalog's tags; the index must give the same page and the same ``more`` for
random texts, limits and ``after`` cursors, and stay in step with creates,
updates, renames and removes.
"""

from __future__ import annotations

import random
from pathlib import Path

from xtsdb.server.engine.catalog import Catalog, TagInfo
from xtsdb.server.engine.name_index import NameIndex

PARTS = ["boiler", "Pump", "ß", "SS", "ΣΑΣ", "temp", ".", "-", "ﬁ", "İ", "a", "<b>", " "]


def reference(
    tags: list[TagInfo], text: str, limit: int, after: str | None
) -> tuple[list[str], bool]:
    needle = text.casefold()
    rows = sorted((i for i in tags if after is None or i.name > after), key=lambda i: i.name)
    hits = [i for i in rows if needle in i.name.casefold() or needle in i.description.casefold()]
    return [i.name for i in hits[:limit]], len(hits) > limit


def word(rng: random.Random, k: int) -> str:
    return "".join(rng.choice(PARTS) for _ in range(rng.randint(1, k)))


def check(cat: Catalog, rng: random.Random, rounds: int) -> None:
    tags = cat.all()
    names = sorted(i.name for i in tags)
    for _ in range(rounds):
        text = rng.choice(["", word(rng, 2), word(rng, 1), "pump.b", "boilerx", "s" * 3])
        limit = rng.choice([1, 2, 5, 50])
        after = rng.choice([None, None, rng.choice(names) if names else None, word(rng, 2)])
        got, more = cat.search(text, limit, after)
        assert ([i.name for i in got], more) == reference(tags, text, limit, after), (
            text,
            limit,
            after,
        )


def test_search_pages_as_the_scan_did_and_follows_every_change(tmp_path: Path) -> None:
    rng = random.Random(15)
    cat = Catalog(tmp_path / "catalog.sqlite3", lambda: 0)
    try:
        for k in range(300):
            cat.create(word(rng, 4) + str(k), description=word(rng, 5))
        check(cat, rng, 300)
        for step in range(60):  # every kind of write, each followed by searches
            tags = cat.all()
            victim = rng.choice(tags)
            kind = step % 4
            if kind == 0:
                cat.create(f"new{step}" + word(rng, 3), description=word(rng, 3))
            elif kind == 1:
                cat.update(victim.id, description=word(rng, 4))
            elif kind == 2 and f"ren{step}" not in {t.name for t in tags}:
                cat.rename(victim.id, f"ren{step}" + word(rng, 2))
            else:
                cat.remove(victim.id)
            check(cat, rng, 10)
    finally:
        cat.close()


def test_a_needle_across_two_fields_is_no_match() -> None:
    a = TagInfo(1, "abc", description="def")
    b = TagInfo(2, "ghi", description="")
    index = NameIndex([a, b])
    for text in ("cd", "c\nd", "fg", "f\ng", "i\n"):
        assert index.search(text, 10, None) == ([], False), text
    assert index.search("ab", 10, None) == ([a], False)
    assert index.search("", 1, None) == ([a], True)
    assert index.search("", 5, "abc") == ([b], False)
    assert index.current([a, b]) and not index.current([a, TagInfo(2, "ghi", description="x")])
