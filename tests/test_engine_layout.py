"""The engine's module graph: parts get what they need passed in, tools use public names.

Read as source (ast), so a regression is named by file and line.
"""

from __future__ import annotations

import ast
from pathlib import Path

import xtsdb.server.engine as engine_package

ROOT = Path(__file__).resolve().parents[1]
ENGINE = ROOT / "server" / "engine"


def imports(path: Path) -> list[tuple[int, str, list[str]]]:
    """(line, module, names) of every import in ``path``; relative modules keep their dots."""
    out = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom):
            module = "." * node.level + (node.module or "")
            out.append((node.lineno, module, [a.name for a in node.names]))
        elif isinstance(node, ast.Import):
            out += [(node.lineno, a.name, []) for a in node.names]
    return out


def test_no_engine_module_reaches_back_into_engine_py() -> None:
    # Engine composes the parts; a part importing Engine (even for type checking)
    # would be reading its private attributes again.
    bad = [
        f"{p.name}:{line}"
        for p in sorted(ENGINE.glob("*.py"))
        if p.name not in ("__init__.py", "engine.py")
        for line, module, names in imports(p)
        if module == ".engine" or (module == "." and "engine" in names)
    ]
    assert bad == []


def test_the_engine_imports_no_asyncio() -> None:
    bad = [
        f"{p.name}:{line}"
        for p in sorted(ENGINE.glob("*.py"))
        for line, module, _ in imports(p)
        if module.split(".")[0] == "asyncio"
    ]
    assert bad == []


def test_offline_tools_use_only_the_engine_package_names() -> None:
    public = set(engine_package.__all__)
    for name in ("check.py", "backup.py"):
        for line, module, names in imports(ROOT / "server" / name):
            if module.startswith("xtsdb.server.engine"):
                where = f"{name}:{line}"
                assert module == "xtsdb.server.engine", f"{where} imports {module}"
                assert set(names) <= public, f"{where}: {sorted(set(names) - public)}"
