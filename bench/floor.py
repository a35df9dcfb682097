"""`python -m bench.floor [--store sqlite|postgres|both] [--seconds S]`: the write floor of this
machine: how many mutations a second the leanest Python gRPC service could acknowledge, next to
which Mandate's own figure (`python -m bench.writes`) is read.

The floor is a bare grpc.aio server (no authentication, limits, log line, metrics, policy or
ORM) whose one method does the least an exact, durable mutation needs: read the row it changes,
change it, take the next revision from the counter, write the event and the history row, commit.
Every statement goes through the plain database driver (sqlite3, psycopg), and the writes are
group-committed as generously as possible: one writer thread takes every mutation waiting and
commits them in one transaction, so the commit and the counter's round trip are paid once a group.
The load is `bench.writes`'s: 8 writers, closed loop, requests pre-serialized. Printed: mutations
a second, the server's CPU milliseconds per mutation, the mean group, and the same server's
no-op calls a second (the cost of the gRPC call alone).

On the shared 2 cores the server, the 8 writers and (for PostgreSQL) the database share the
machine, as they do in `make bench`.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import threading
from concurrent.futures import Future
from pathlib import Path

from bench.load import HEALTH_CHECK, ROOT, Workers, free_port
from bench.run import say
from bench.transport import serve_aio

WRITE = "/bench.Floor/Write"
ROWS = 64  # rows the writers change in turn (the bench's writers change a few rows each)
SCHEMA = (
    "CREATE TABLE counter (value BIGINT NOT NULL)",
    "INSERT INTO counter VALUES (1)",
    "CREATE TABLE members (id VARCHAR(40) PRIMARY KEY, status VARCHAR(8) NOT NULL, revision BIGINT NOT NULL)",
    "CREATE TABLE events (id {serial}, revision BIGINT NOT NULL, type VARCHAR(40) NOT NULL, "
    "attributes TEXT NOT NULL, occurred_at VARCHAR(40) NOT NULL)",
    "CREATE TABLE history (revision BIGINT NOT NULL, member_id VARCHAR(40) NOT NULL, status VARCHAR(8) NOT NULL)",
)


class Database:
    """A driver connection and its parameter style."""

    def __init__(self, url: str):
        self.postgres = url.startswith("postgresql")
        if self.postgres:
            import psycopg

            self.connection = psycopg.connect(url.replace("postgresql+psycopg://", "postgresql://"), autocommit=True)
            self.mark = "%s"
        else:
            import sqlite3

            self.connection = sqlite3.connect(url.split("///", 1)[1], isolation_level=None, check_same_thread=False)
            for pragma in ("journal_mode=WAL", "synchronous=FULL"):  # as Mandate's store
                self.connection.execute(f"PRAGMA {pragma}")
            self.mark = "?"

    def run(self, statement: str, parameters: tuple = ()):
        return self.connection.execute(statement.replace("?", self.mark), parameters)

    def create(self) -> None:
        serial = "BIGSERIAL PRIMARY KEY" if self.postgres else "INTEGER PRIMARY KEY"
        for statement in SCHEMA:
            self.run(statement.format(serial=serial))
        for number in range(ROWS):
            self.run("INSERT INTO members VALUES (?, 'active', 1)", (f"m{number}",))


class GroupWriter:
    """One thread commits every mutation that waits, in one transaction a group."""

    def __init__(self, database: Database):
        self.database = database
        self.waiting: list[tuple[bytes, Future]] = []
        self.ready = threading.Condition()
        self.groups = self.kept = 0
        threading.Thread(target=self._loop, daemon=True).start()

    def submit(self, member: bytes) -> Future:
        done: Future = Future()
        with self.ready:
            self.waiting.append((member, done))
            self.ready.notify()
        return done

    def _loop(self) -> None:
        run = self.database.run
        begin = "BEGIN" if self.database.postgres else "BEGIN IMMEDIATE"
        while True:
            with self.ready:
                while not self.waiting:
                    self.ready.wait()
                group, self.waiting = self.waiting, []
            run(begin)
            revision = run("UPDATE counter SET value = value + ? RETURNING value", (len(group),)).fetchone()[0]
            revision -= len(group)
            for member, _done in group:
                revision += 1
                member_id = member.decode()
                (status,) = run("SELECT status FROM members WHERE id = ?", (member_id,)).fetchone()
                changed = "paused" if status == "active" else "active"
                run("UPDATE members SET status = ?, revision = ? WHERE id = ?", (changed, revision, member_id))
                run("INSERT INTO events (revision, type, attributes, occurred_at) VALUES (?, ?, ?, ?)",
                    (revision, "member.status_changed", f'{{"user_id": "{member_id}", "status": "{changed}"}}',
                     "2026-12-07T00:00:00Z"))
                run("INSERT INTO history VALUES (?, ?, ?)", (revision, member_id, changed))
            run("COMMIT")
            self.groups += 1
            self.kept += len(group)
            for _member, done in group:
                done.set_result(b"")


def serve(port: int, url: str) -> None:
    """Serve the no-op and the write until SIGTERM; print the mean group on the way out."""
    import asyncio

    import grpc

    database = Database(url)
    database.create()
    writer = GroupWriter(database)

    async def noop(_raw, _context):
        return b""

    async def write(raw, _context):
        return await asyncio.wrap_future(writer.submit(raw))

    async def main() -> None:
        await serve_aio({HEALTH_CHECK: grpc.unary_unary_rpc_method_handler(noop),
                         WRITE: grpc.unary_unary_rpc_method_handler(write)}, port)
        print(f"groups {writer.groups} kept {writer.kept}", flush=True)

    asyncio.run(main())


class Bare:
    """The floor server in a process of its own, measured like bench.load.Server."""

    def __init__(self, url: str):
        self.port = free_port()
        self.target = f"127.0.0.1:{self.port}"
        self.process = subprocess.Popen([sys.executable, "-m", "bench.floor", "--serve", "--port", str(self.port),
                                         "--database-url", url], cwd=ROOT, stdout=subprocess.PIPE)
        if self.process.stdout.readline().strip() != b"ready":
            raise RuntimeError("the floor server did not start")

    def cpu_seconds(self) -> float:
        fields = Path(f"/proc/{self.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def stop(self) -> float:
        """Stop it; returns the mean group it committed."""
        self.process.send_signal(signal.SIGTERM)
        out, _ = self.process.communicate(timeout=30)
        words = out.decode().split()
        groups, kept = int(words[words.index("groups") + 1]), int(words[words.index("kept") + 1])
        return kept / groups if groups else 0.0


def measure(url: str, seconds: float) -> dict:
    server = Bare(url)
    workers = Workers(4, 2, server.target)  # 8 writers, as bench.writes
    try:
        workers.ready()
        members = [f"m{number}".encode() for number in range(ROWS)]
        write = {"kind": "closed_loop", "method": WRITE, "requests": members}
        noop = {"kind": "closed_loop", "method": HEALTH_CHECK, "requests": [b""]}
        workers.run(write, 1.0, server=server)  # warm-up
        writes = workers.run(write, seconds, server=server)
        noops = workers.run(noop, seconds, server=server)
    finally:
        workers.close()
        group = server.stop()
    if writes.errors or noops.errors:
        say(f"  errors: {writes.first_error or noops.first_error}")
    return {"rate": writes.rate, "cpu_ms": writes.server_cpu * 1000 / max(1, writes.calls), "group": group,
            "noop_rate": noops.rate, "noop_cpu_ms": noops.server_cpu * 1000 / max(1, noops.calls)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.floor", description=__doc__)
    parser.add_argument("--store", choices=("sqlite", "postgres", "both"), default="both")
    parser.add_argument("--seconds", type=float, default=5.0, help="seconds measured per phase (default 5)")
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--database-url", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve:
        serve(args.port, args.database_url)
        return 0
    for store in ("sqlite", "postgres") if args.store == "both" else (args.store,):
        with tempfile.TemporaryDirectory(prefix="mandate-floor-") as folder:
            if store == "sqlite":
                figures = measure(f"sqlite:///{folder}/floor.db", args.seconds)
            else:
                from mandate.store.localpg import LocalPostgres

                with LocalPostgres() as postgres:
                    figures = measure(postgres.create_database("floor"), args.seconds)
        print(f"{store:>8}: floor {figures['rate']:,.0f} mutations/s with 8 writers, "
              f"{figures['cpu_ms']:.2f} ms server CPU per mutation, mean group {figures['group']:.1f}; "
              f"the same server's no-op {figures['noop_rate']:,.0f}/s at {figures['noop_cpu_ms']:.2f} ms CPU",
              flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
