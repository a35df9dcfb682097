"""A throwaway PostgreSQL server in a temporary directory, for the tests and the bench.

The binaries come from the PyPI package `pgserver` (PostgreSQL 16, in the dev extra), else from
the machine's own `pg_ctl` on PATH. Only initdb and pg_ctl are used: this class starts, stops,
restarts and kills the server itself, so the fault tests can take PostgreSQL away and bring
it back on the same port and data directory.

PostgreSQL refuses to run as root: under root, the server runs as an unprivileged system user
(created with `useradd` on first use, as pgserver does).
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import socket
import stat
import subprocess
import tempfile
from pathlib import Path

SYSTEM_USER = "pgserver"

# Durability of the data directory against a machine crash is not what a throwaway server is for:
# without fsync it starts and writes several times faster. A committed transaction still survives
# the server being killed (the WAL is in the operating system's cache), which the fault tests need.
SETTINGS = {
    "fsync": "off",
    "full_page_writes": "off",
    "max_connections": "400",
    "shared_buffers": "64MB",
    "log_min_messages": "warning",
    "log_min_error_statement": "panic",
}


class PostgresUnavailable(RuntimeError):
    """No PostgreSQL binaries, or the server did not start (the message has its log)."""


def binaries() -> Path:
    spec = importlib.util.find_spec("pgserver")
    if spec is not None and spec.submodule_search_locations:
        path = Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"
        if (path / "pg_ctl").exists():
            return path
    found = shutil.which("pg_ctl")
    if found:
        return Path(found).resolve().parent
    raise PostgresUnavailable("no PostgreSQL binaries: install the dev extra (pgserver) or PostgreSQL's pg_ctl")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class LocalPostgres:
    def __init__(self, directory: Path | str | None = None, port: int | None = None):
        self.bin = binaries()
        self._owned = directory is None
        self.root = Path(directory or tempfile.mkdtemp(prefix="mandate-pg-"))
        self.data = self.root / "data"
        self.log = self.root / "postgres.log"
        self.port = port or free_port()
        self.user = None
        if os.geteuid() == 0:
            self.user = _system_user()
            _open_path(self.bin)
            _open_path(self.root)
            shutil.chown(self.root, self.user, self.user)
        self._initdb()

    # -- the server ------------------------------------------------------------------------

    def _run(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
        return subprocess.run([str(self.bin / args[0]), *args[1:]], user=self.user, capture_output=True,
                              text=True, timeout=timeout, cwd=self.root, check=False)

    def _initdb(self) -> None:
        if (self.data / "PG_VERSION").exists():
            return
        # C.UTF-8: ids sort by code point as in Python, and lower() folds every letter, not ASCII only.
        result = self._run("initdb", "-D", str(self.data), "--auth=trust", "--username=postgres",
                           "--encoding=UTF8", "--locale=C.UTF-8", "--no-sync")
        if result.returncode != 0:
            raise PostgresUnavailable(f"initdb failed: {result.stderr or result.stdout}")

    def start(self) -> None:
        options = f"-p {self.port} -h 127.0.0.1 -k {self.root} " + " ".join(
            f"-c {key}={value}" for key, value in SETTINGS.items())
        result = self._run("pg_ctl", "-D", str(self.data), "-l", str(self.log), "-w", "-t", "60",
                           "-o", options, "start", timeout=90)
        if result.returncode != 0:
            log = self.log.read_text() if self.log.exists() else ""
            raise PostgresUnavailable(f"PostgreSQL did not start: {result.stderr or result.stdout}\n{log[-3000:]}")

    def stop(self, mode: str = "fast") -> None:
        """`fast`: a clean shutdown; `immediate`: every server process quits at once, as in a crash."""
        self._run("pg_ctl", "-D", str(self.data), "-w", "-t", "60", "-m", mode, "stop", timeout=90)

    def running(self) -> bool:
        return self._run("pg_ctl", "-D", str(self.data), "status").returncode == 0

    def close(self) -> None:
        if self.running():
            self.stop("immediate")
        if self._owned:
            shutil.rmtree(self.root, ignore_errors=True)

    # -- databases -------------------------------------------------------------------------

    def url(self, database: str = "postgres") -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{database}"

    def execute(self, *statements: str) -> None:
        """Statements run one by one outside a transaction (CREATE DATABASE needs that)."""
        import psycopg

        with psycopg.connect(host="127.0.0.1", port=self.port, user="postgres", dbname="postgres",
                             autocommit=True, connect_timeout=10) as connection:
            for statement in statements:
                connection.execute(statement)

    def create_database(self, name: str, template: str | None = None) -> str:
        suffix = f' TEMPLATE "{template}"' if template else ""
        self.execute(f'CREATE DATABASE "{name}"{suffix}')
        return self.url(name)

    def drop_database(self, name: str) -> None:
        self.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def __enter__(self) -> LocalPostgres:
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _system_user() -> str:
    import pwd

    try:
        pwd.getpwnam(SYSTEM_USER)
    except KeyError:
        subprocess.run(["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", SYSTEM_USER],
                       check=True, capture_output=True)
    return SYSTEM_USER


def _open_path(path: Path) -> None:
    """Let the server's user reach `path` (traverse every parent) and run the binaries in it."""
    traverse = stat.S_IXGRP | stat.S_IXOTH
    for parent in [path, *path.parents]:
        mode = parent.stat().st_mode
        if mode & traverse != traverse:
            parent.chmod(mode | traverse)
