"""Counting the SQL statements an engine runs (a ``before_cursor_execute`` listener), for the tests that bound the
queries of one request and for ``tests/benchmarks/read_cost.py``."""
from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Iterator

from sqlalchemy import Engine, event


@contextmanager
def counted_queries(engine: Engine) -> Iterator[list[str]]:
    """Yield a list that collects the text of every statement ``engine`` runs inside the block."""
    statements: list[str] = []

    def record(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        statements.append(statement)

    event.listen(engine, "before_cursor_execute", record)
    try:
        yield statements
    finally:
        event.remove(engine, "before_cursor_execute", record)
