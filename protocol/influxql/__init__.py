"""InfluxQL (the InfluxDB 1.x query language), sans I/O: text -> statements, and answers.

- ``lexer``  -- tokens, with InfluxDB's error wording.
- ``parser`` -- :func:`parse`: a query string -> a list of :mod:`.ast` statements;
  what xtsdb does not support is refused with an error naming it.
- ``ast``    -- the statements and expressions.
- ``answer`` -- the ``/query`` JSON shapes: results, series, errors, times
  (RFC3339 or ``epoch=``).

The server executes statements against the engine (``server/influxql_*.py``).
"""

from .parser import parse, unsupported

__all__ = ["parse", "unsupported"]
