"""``python -m xtsdb.server``: the same as the ``xtsdb-server`` script."""

from __future__ import annotations

import sys

from xtsdb.server.main import main

if __name__ == "__main__":
    sys.exit(main())
