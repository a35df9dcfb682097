"""`python -m bench.memory DATABASE_URL`: the fact index's memory over its fact rows.

In a fresh process: the resident set after importing the service and opening the store, then
after loading the fact index (what `mandate serve` loads before it serves), garbage collected
both times. Prints one JSON object: the index's bytes, its fact rows (every row the index
holds: users, organizations, memberships, resources, connections, assignments, links, roles on
one resource), the
seconds the load took and its CPU seconds (on a shared machine the wall time also holds the
waits for a core). The resident set also holds what the load freed but the allocator
kept, as a server's does.
"""

from __future__ import annotations

import gc
import json
import subprocess
import sys
import time
from pathlib import Path

# The tables whose rows the fact index holds (not invitations, events or history).
FACT_TABLES = ("users", "organizations", "memberships", "resources", "connections", "assignments",
               "organization_links", "resource_roles")


def rss_bytes() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def measure(database_url: str) -> dict:
    from mandate.engine.index import FactIndex
    from mandate.runtime.config import DatabaseSettings
    from mandate.store.db import Store
    from sqlalchemy import inspect, text

    store = Store(database_url, DatabaseSettings())
    with store.engine.connect() as connection:
        present = set(inspect(connection).get_table_names())
        rows = sum(connection.execute(text(f"SELECT count(*) FROM {table}")).scalar_one()
                   for table in FACT_TABLES if table in present)
    gc.collect()
    before = rss_bytes()
    started, cpu = time.monotonic(), time.process_time()
    index = FactIndex(store)
    index.catch_up()
    seconds, cpu = time.monotonic() - started, time.process_time() - cpu
    gc.collect()
    after = rss_bytes()
    return {"index_bytes": after - before, "fact_rows": rows, "load_seconds": round(seconds, 2),
            "load_cpu_seconds": round(cpu, 2),
            "revision": index.revision}


def index_memory(database_url: str) -> dict:
    """`measure` in a process of its own (the bench's own process holds other things)."""
    out = subprocess.run([sys.executable, "-m", "bench.memory", database_url], check=True, capture_output=True,
                         text=True, cwd=Path(__file__).resolve().parent.parent)
    return json.loads(out.stdout.strip().splitlines()[-1])


if __name__ == "__main__":
    print(json.dumps(measure(sys.argv[1])))
