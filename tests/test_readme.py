"""The README's set-up commands are the ones CI runs, and its SDK example is real code."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _ci_test_command() -> str:
    lines = (ROOT / ".ci" / "run").read_text().splitlines()
    marker = next(i for i, line in enumerate(lines) if "README test command" in line)
    return lines[marker + 1].strip()


def test_ci_runs_the_readme_test_command() -> None:
    readme = (ROOT / "README.md").read_text()
    assert _ci_test_command() in readme


def test_readme_server_command_uses_the_console_script() -> None:
    readme = (ROOT / "README.md").read_text()
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert re.search(r"^xtsdb-server = \"xtsdb\.server\.main:main\"$", pyproject, re.M)
    assert ".venv/bin/xtsdb-server" in readme


def test_readme_sdk_example_compiles() -> None:
    readme = (ROOT / "README.md").read_text()
    block = readme.split("### Ten lines of SDK", 1)[1].split("```python", 1)[1].split("```", 1)[0]
    compile(block, "README.md", "exec")


def test_readme_sdk_example_runs_against_a_real_server(server, capsys) -> None:  # type: ignore[no-untyped-def]
    readme = (ROOT / "README.md").read_text()
    block = readme.split("### Ten lines of SDK", 1)[1].split("```python", 1)[1].split("```", 1)[0]
    assert "xtsdb://127.0.0.1:7878" in block
    exec(compile(block.replace("xtsdb://127.0.0.1:7878", server.url), "README.md", "exec"), {})
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("1000000 ")  # all points came back
    assert "102" in out[-1] and "42." in out[-1]  # the batched single point is durable
