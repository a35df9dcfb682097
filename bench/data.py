"""`python -m bench.data [--records N] [--store sqlite|postgres|both]` (`make bench-import`):
import and export rates of a generated world, through gRPC, on each store.

For each store: a fresh migrated database and an in-process server with an admin caller; the
world (JSON Lines, generated once into var/bench/) is sent to AdminService.Import in batches
of 1000 records, as `mandate import` sends it, and the clock stops at the reply (the commit).
Then a second application on the same database (a replica) catches up, and the whole world is
read back with AdminService.Export. Prints records/s for each, and the replica's catch-up time.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
POLICY_DIR = ROOT / "policies"
TOKEN = "bench-admin-token"
EMPLOYEES, CLIENTS, PROJECTS, ASSIGNED = 10, 20, 5, 2


def generate(records: int, path: Path) -> int:
    """A world of partners, each with tagged employees and connected clients (their projects,
    two approved assignments each); about `records` records. Returns the count written."""
    per_group = 1 + EMPLOYEES + CLIENTS + 1 + CLIENTS + EMPLOYEES + CLIENTS + CLIENTS * ASSIGNED + CLIENTS * PROJECTS
    groups = max(1, records // per_group)
    count = 0
    with open(path, "w") as out:
        def put(record: dict) -> None:
            nonlocal count
            out.write(json.dumps(record, separators=(",", ":")) + "\n")
            count += 1

        for g in range(groups):
            partner, owner = f"p{g}", f"u{g}-o"
            put({"kind": "user", "id": owner, "email": f"{owner}@bench.test", "display_name": f"Owner {g}"})
            for e in range(EMPLOYEES):
                put({"kind": "user", "id": f"u{g}-e{e}", "email": f"u{g}-e{e}@bench.test", "display_name": f"E {e}"})
            for c in range(CLIENTS):
                put({"kind": "user", "id": f"u{g}-c{c}", "email": f"u{g}-c{c}@bench.test", "display_name": f"C {c}"})
            put({"kind": "organization", "id": partner, "owner": owner, "currency": "EUR", "seat_limit": 0})
            for c in range(CLIENTS):
                put({"kind": "organization", "id": f"p{g}c{c}", "owner": f"u{g}-c{c}", "currency": "EUR"})
            for e in range(EMPLOYEES):
                put({"kind": "member", "organization": partner, "user": f"u{g}-e{e}", "role": "colleague",
                     "partner_employee": True})
            for c in range(CLIENTS):
                put({"kind": "connection", "partner": partner, "client": f"p{g}c{c}", "granted": ["edit", "read"],
                     "employee_approval": "client"})
            for c in range(CLIENTS):
                for a in range(ASSIGNED):
                    put({"kind": "assignment", "partner": partner, "client": f"p{g}c{c}",
                         "user": f"u{g}-e{(c + a) % EMPLOYEES}", "approved": True})
            for c in range(CLIENTS):
                for p in range(PROJECTS):
                    put({"kind": "resource", "type": "Project", "id": f"p{g}c{c}-{p}", "organization": f"p{g}c{c}"})
    return count


def ordered(lines: list[str]) -> list[str]:
    """The world in kind order (every reference before it is used), as the importer accepts any."""
    from mandate.admin.worldfile import KINDS

    rank = {kind: n for n, kind in enumerate(KINDS)}
    return sorted(lines, key=lambda line: rank[json.loads(line)["kind"]])


def measure(store: str, lines: list[str], postgres) -> dict:
    from mandate.client import MandateClient
    from mandate.runtime.app import App
    from mandate.runtime.config import Config
    from mandate.runtime.server import build_server
    from mandate.store.migrate import upgrade
    from mandate.v1 import admin_pb2

    directory = tempfile.mkdtemp(prefix="mandate-bench-data-")
    if store == "sqlite":
        url = f"sqlite:///{directory}/bench.db"
    else:
        postgres.drop_database("bench_import")
        url = postgres.create_database("bench_import")
    upgrade(url)
    callers = Path(directory) / "callers.toml"
    callers.write_text(f'[callers.bench]\ntoken_sha256 = "{hashlib.sha256(TOKEN.encode()).hexdigest()}"\n'
                       "admin = true\n")
    app = App(url, POLICY_DIR)
    server, port = build_server(app, Config(listen="127.0.0.1:0", database_url=url, policy_dir=POLICY_DIR,
                                            callers_file=callers, max_message_bytes=16 << 20))
    server.start()
    try:
        with MandateClient(f"127.0.0.1:{port}", TOKEN, timeout=3600) as client:
            def requests():
                for start in range(0, len(lines), 1000):
                    yield admin_pb2.ImportRequest(records=[admin_pb2.WorldRecord(json=line, line=start + n + 1)
                                                           for n, line in enumerate(lines[start:start + 1000])])

            replica = App(url, POLICY_DIR)  # a second replica, running before the import
            try:
                started = time.perf_counter()
                summary = client.admin.Import(requests())
                imported = time.perf_counter() - started
                started = time.perf_counter()
                replica.index.catch_up()  # what its follower does when woken
                caught_up = time.perf_counter() - started
            finally:
                replica.close()
            started = time.perf_counter()
            exported = sum(len(chunk.records) for chunk in client.admin.Export(admin_pb2.ExportRequest()))
            export_seconds = time.perf_counter() - started
    finally:
        server.stop(grace=None)
        app.close()
    return {"store": store, "records": summary.records, "import_seconds": imported,
            "import_rate": summary.records / imported, "exported": exported, "export_seconds": export_seconds,
            "export_rate": exported / export_seconds, "replica_load_seconds": caught_up}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.data", description=__doc__)
    parser.add_argument("--records", type=int, default=200_000, help="records in the world (default 200000)")
    parser.add_argument("--store", choices=("sqlite", "postgres", "both"), default="both")
    args = parser.parse_args(argv)
    path = ROOT / "var" / "bench" / f"world-{args.records}.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists():
        generate(args.records, path)
    lines = ordered(path.read_text().splitlines())
    print(f"world: {len(lines)} records ({path})")
    postgres = None
    results = []
    try:
        if args.store in ("postgres", "both"):
            from mandate.store.localpg import LocalPostgres

            postgres = LocalPostgres()
            postgres.start()
        for store in (("sqlite", "postgres") if args.store == "both" else (args.store,)):
            result = measure(store, lines, postgres)
            results.append(result)
            print(f"{store:9} import {result['records']:>9,} records in {result['import_seconds']:6.1f} s: "
                  f"{result['import_rate']:>8,.0f} records/s | export {result['export_rate']:>8,.0f} records/s | "
                  f"a running replica catches up in {result['replica_load_seconds']:.1f} s")
    finally:
        if postgres is not None:
            postgres.close()
    targets = {"sqlite": 30_000, "postgres": 50_000}
    for result in results:
        met = "met" if result["import_rate"] >= targets[result["store"]] else "MISSED"
        print(f"target {result['store']} import {targets[result['store']]:,}/s at 1M records: {met} at "
              f"{result['records']:,}; export target 100,000/s: "
              f"{'met' if result['export_rate'] >= 100_000 else 'MISSED'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
