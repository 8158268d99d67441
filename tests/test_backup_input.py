"""The backup op refuses a destination it cannot use as bad input, and changes nothing."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest

from xtsdb.client import connect
from xtsdb.protocol.errors import InvalidInput
from xtsdb.server.app import ServerThread


@pytest.mark.parametrize(
    ("dest", "says"),
    [
        ("a" * 300, "too long"),  # one name over NAME_MAX (255)
        ("a/" * 2100 + "b", "too long"),  # a path over PATH_MAX (4096)
        ("x\0y", "NUL"),
        ("file/sub", "not a directory"),  # a part of it is a file
    ],
)
def test_unusable_backup_destination_is_invalid_input(
    tmp_path: Path, server_factory: Callable[..., ServerThread], dest: str, says: str
) -> None:
    backups = tmp_path / "backups"
    backups.mkdir()
    (backups / "file").write_bytes(b"x")
    srv = server_factory(backup_dir=backups)
    with connect(srv.url) as client:
        with pytest.raises(InvalidInput, match=says):
            client.backup(dest)
        errors = client.stats()["server"]["errors"]
        assert "internal" not in errors
        client.backup("fine")  # the server is unharmed and backs up as before
    assert sorted(os.listdir(backups)) == ["file", "fine"]
