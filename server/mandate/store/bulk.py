"""Writing many rows at once, inside a write transaction (an import).

New rows go in by the fastest path of each engine: `COPY ... FROM STDIN` on PostgreSQL (psycopg
3's copy), one prepared INSERT run over every row on SQLite. Rows that replace existing ones
(an import with on_conflict "touch") are upserted by their primary key.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence

from sqlalchemy import JSON, Boolean, Table
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session


def _converters(table: Table, names: Sequence[str], postgres: bool):
    """Per column: how a Python value is written by the raw driver (JSON as text; booleans as
    0/1 on SQLite)."""
    out = []
    for name in names:
        column_type = table.c[name].type
        if isinstance(column_type, JSON):
            out.append(lambda v: None if v is None else json.dumps(v))
        elif isinstance(column_type, Boolean) and not postgres:
            out.append(lambda v: None if v is None else int(v))
        else:
            out.append(None)
    return out


def insert_new(session: Session, table: Table, names: Sequence[str], rows: Iterable[Sequence]) -> int:
    """Insert `rows` (tuples of the values of the columns `names`, in that order) that are all new."""
    connection = session.connection()
    postgres = connection.dialect.name == "postgresql"
    converters = _converters(table, names, postgres)
    convert = [(i, c) for i, c in enumerate(converters) if c is not None]

    def prepared():
        for row in rows:
            if convert:
                row = list(row)
                for i, c in convert:
                    row[i] = c(row[i])
            yield row

    raw = connection.connection.driver_connection
    columns = ", ".join(f'"{n}"' for n in names)
    count = 0
    if postgres:
        with raw.cursor() as cursor, cursor.copy(f'COPY "{table.name}" ({columns}) FROM STDIN') as copy:
            for row in prepared():
                copy.write_row(row)
                count += 1
        return count
    cursor = raw.cursor()
    try:
        placeholders = ", ".join("?" for _ in names)
        batch = []
        for row in prepared():
            batch.append(row)
            if len(batch) == 10_000:
                cursor.executemany(f'INSERT INTO "{table.name}" ({columns}) VALUES ({placeholders})', batch)
                count += len(batch)
                batch = []
        if batch:
            cursor.executemany(f'INSERT INTO "{table.name}" ({columns}) VALUES ({placeholders})', batch)
            count += len(batch)
    finally:
        cursor.close()
    return count


def upsert(session: Session, table: Table, rows: list[dict]) -> None:
    """Insert `rows` (dicts of column values), replacing the rows with the same primary key."""
    if not rows:
        return
    connection = session.connection()
    dialect = postgresql if connection.dialect.name == "postgresql" else sqlite
    statement = dialect.insert(table)
    keys = [c.name for c in table.primary_key]
    changed = {name: statement.excluded[name] for name in rows[0] if name not in keys}
    connection.execute(statement.on_conflict_do_update(index_elements=keys, set_=changed), rows)
