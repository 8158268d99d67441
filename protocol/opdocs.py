"""The op reference of docs/protocol.md, generated from the declarations.

Each op's section holds a block between ``<!-- op: NAME -->`` and
``<!-- /op -->``: its role, whether it is retried, the errors it answers and
its field tables, rendered by :func:`render`. ``python -m xtsdb.protocol.opdocs
docs/protocol.md`` rewrites those blocks in place; tests/test_docs.py checks
that the file matches.
"""

from __future__ import annotations

import re
import sys
from typing import Any

from .declare import Op, Role, specs
from .optable import OPERATIONS

_BLOCK = re.compile(r"<!-- op: (\w+) -->\n.*?<!-- /op -->", re.S)
_ROLE = {
    Role.OPEN: "none (answered before authentication)",
    Role.READ: "`read`",
    Role.WRITE: "`write`",
}


def _table(title: str, message: type[Any]) -> list[str]:
    rows = [
        row
        for s in specs(message)
        for row in s.kind.doc_rows(s.name, s.doc, s.optional and not s.always)
    ]
    if not rows:
        return [f"No {title} fields."]
    lines = [f"| {title} field | type | meaning |", "|---|---|---|"]
    lines += [f"| `{key}` | {type_doc} | {doc} |" for key, type_doc, doc in rows]
    return lines


def render(op: Op[Any, Any]) -> str:
    """The generated block of one op, markers included."""
    errors = ", ".join(f"`{e.name}` ({e.code})" for e in op.errors) or "none of its own"
    lines = [
        f"<!-- op: {op.name} -->",
        f"{op.summary}",
        "",
        f"Role: {_ROLE[op.role]}. Retried by the client after a lost connection: "
        f"{'yes' if op.idempotent else 'no'}. Errors: {errors}.",
        "",
        *_table("request", op.request),
        "",
        *_table("response", op.response),
        "<!-- /op -->",
    ]
    return "\n".join(lines)


def rewrite(text: str) -> str:
    """``text`` with every op block replaced by its rendering; every op must have one."""
    found = set(_BLOCK.findall(text))
    missing = sorted(set(OPERATIONS) - found)
    if missing:
        raise ValueError(
            f"docs have no block for {missing}: add '<!-- op: NAME -->...<!-- /op -->'"
        )
    return _BLOCK.sub(lambda m: render(OPERATIONS[m.group(1)]), text)


if __name__ == "__main__":  # pragma: no cover - a maintainer's command
    path = sys.argv[1]
    with open(path, encoding="utf-8") as f:
        new = rewrite(f.read())
    with open(path, "w", encoding="utf-8") as f:
        f.write(new)
