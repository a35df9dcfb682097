"""`--store postgres`: the cached SQLite dataset copied into a throwaway PostgreSQL server (the
same one the tests start: mandate.store.localpg), and the replica convergence lag."""

from __future__ import annotations

import time
from pathlib import Path

from mandate.store import models
from mandate.store.localpg import LocalPostgres
from mandate.store.migrate import upgrade
from sqlalchemy import create_engine, func, select, text

BATCH = 20_000


def copy_to_postgres(sqlite_path: Path, server: LocalPostgres, name: str) -> str:
    """A migrated PostgreSQL database holding every row of the SQLite file; returns its URL."""
    server.drop_database(name)
    url = server.create_database(name)
    upgrade(url)
    source = create_engine(f"sqlite:///{sqlite_path}")
    target = create_engine(url)
    try:
        with source.connect() as reader, target.begin() as writer:
            for table in models.Base.metadata.sorted_tables:
                writer.execute(table.delete())
                rows = [dict(row._mapping) for row in reader.execute(select(table))]
                for start in range(0, len(rows), BATCH):
                    writer.execute(table.insert(), rows[start: start + BATCH])
            newest = writer.execute(select(func.max(models.Event.id))).scalar() or 0
            writer.execute(text("SELECT setval(pg_get_serial_sequence('events', 'id'), :n)"), {"n": max(newest, 1)})
        with target.connect() as connection:
            connection.execution_options(isolation_level="AUTOCOMMIT").execute(text("VACUUM ANALYZE"))
    finally:
        source.dispose()
        target.dispose()
    return url


def convergence_lag(writer_target: str, reader_target: str, spec: dict, rounds: int = 200) -> list[float]:
    """Seconds from a write's reply on one replica to its effect on a plain Check (no revision
    token) on another: pause and resume a member, polling the other replica after each."""
    from mandate.client import MandateClient
    from mandate.v1 import authorization_pb2, common_pb2, membership_pb2

    from bench.load import TOKEN

    lags = []
    member = membership_pb2.MemberRequest(actor_id=spec["actor_id"], organization_id=spec["organization_id"],
                                          user_id=spec["user_id"])
    check = authorization_pb2.CheckRequest(actor=common_pb2.ObjectRef(type="User", id=spec["user_id"]),
                                           action=spec["action"],
                                           resource=common_pb2.ObjectRef(type="Project", id=spec["project_id"]))
    with MandateClient(writer_target, TOKEN) as writer, MandateClient(reader_target, TOKEN) as reader:
        paused = False
        for _ in range(rounds):
            (writer.membership.ResumeMember if paused else writer.membership.PauseMember)(member)
            paused = not paused
            written = time.monotonic()
            deadline = written + 5
            while time.monotonic() < deadline:
                if reader.authorization.Check(check).allowed == (not paused):
                    lags.append(time.monotonic() - written)
                    break
        if paused:
            writer.membership.ResumeMember(member)
    return lags
