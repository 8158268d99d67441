"""Documents generated from code stay generated: the configuration reference.

``python tests/test_docs.py`` rewrites the table in docs/configuration.md from
ServerConfig; the test fails (showing the fresh table) when the two disagree.
"""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

from xtsdb.server.config import ENV_PREFIX, ServerConfig, format_size

DOC = Path(__file__).resolve().parents[1] / "docs" / "configuration.md"
BEGIN, END = "<!-- settings:begin -->", "<!-- settings:end -->"


def _default(f: dataclasses.Field) -> str:  # type: ignore[type-arg]
    value = getattr(ServerConfig(), f.name)
    if value is None or value == ():
        return "unset"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int) and value >= 1 << 16 and "port" not in f.name:
        return format_size(value)
    if isinstance(value, Path):
        return f"./{value}" if not value.is_absolute() else str(value)
    return str(value)


def settings_table() -> str:
    rows = [
        "| setting (TOML key) | flag | environment | default | meaning |",
        "|---|---|---|---|---|",
    ]
    for f in dataclasses.fields(ServerConfig):
        text = " ".join(str(f.metadata.get("help", "")).split()).replace("|", "\\|")
        flag = "--" + f.name.replace("_", "-")
        env = ENV_PREFIX + f.name.upper()
        rows.append(f"| `{f.name}` | `{flag}` | `{env}` | {_default(f)} | {text} |")
    return "\n".join(rows)


def _current() -> str:
    doc = DOC.read_text()
    return doc.split(BEGIN, 1)[1].split(END, 1)[0].strip()


def test_configuration_doc_lists_every_setting_as_the_code_defines_it() -> None:
    fresh = settings_table()
    assert _current() == fresh, (
        "docs/configuration.md is stale; run `python tests/test_docs.py`. Fresh table:\n" + fresh
    )


if __name__ == "__main__":
    doc = DOC.read_text()
    head, rest = doc.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    DOC.write_text(f"{head}{BEGIN}\n{settings_table()}\n{END}{tail}")
    sys.exit(0)
