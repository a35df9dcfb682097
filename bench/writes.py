"""`python -m bench.writes [--store sqlite|postgres|both]`: only the mutation phase of the bench
(invite, pause, resume, assign, unassign; 8 writers), on each store asked for, printing
mutations/s, the server's CPU milliseconds per mutation, the latency, and the no-op's calls/s on
the same 8 streams (the ceiling). Quicker than the whole bench when working on the write path;
`python -m bench.floor` measures the floor beside it."""

from __future__ import annotations

import argparse
import time

from bench import dataset
from bench.load import HEALTH_CHECK, Server, Workers
from bench.run import say, sqlite_copy


def measure(url: str, log_name: str, meta: dict, duration: float, clients: int) -> dict:
    slots = meta["samples"]["mutation_slots"]
    writers = min(clients, len(slots))
    server = Server(url, dataset.CACHE_DIR / log_name)
    workers = Workers(writers, max(1, len(slots) // writers), server.target)
    try:
        server.wait_ready()
        workers.ready()
        task = {"kind": "mutations", "slots": slots, "nonce": time.time_ns()}
        workers.run(task, min(1.0, duration), server=server)  # warms the server's code paths
        result = workers.run(dict(task, nonce=time.time_ns()), duration, server=server)
        # The ceiling: the no-op on the same streams (what the clients and the transport allow).
        ceiling = workers.run({"kind": "closed_loop", "method": HEALTH_CHECK, "requests": [b""]}, duration / 2,
                              server=server)
    finally:
        workers.close()
        server.stop()
    calls = max(1, result.calls)
    return {"writers": len(slots), "rate_per_s": round(result.rate, 1), "errors": result.errors,
            "first_error": result.first_error,
            "server_cpu_ms_per_mutation": round(result.server_cpu * 1000 / calls, 2),
            "server_cpu_cores": round(result.server_cpu / result.seconds, 2),
            "p50_ms": round(result.percentile(0.5) * 1000, 2), "p99_ms": round(result.percentile(0.99) * 1000, 2),
            "noop_rate_per_s": round(ceiling.rate, 1)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.writes", description=__doc__)
    parser.add_argument("--dataset", choices=sorted(dataset.SHAPES), default="small")
    parser.add_argument("--store", choices=("sqlite", "postgres", "both"), default="both")
    parser.add_argument("--duration", type=float, default=5.0, help="seconds measured per store (default 5)")
    parser.add_argument("--clients", type=int, default=4, help="client processes (default 4)")
    args = parser.parse_args(argv)
    database, meta = dataset.ensure(args.dataset, log=say)
    stores = ("sqlite", "postgres") if args.store == "both" else (args.store,)
    for store in stores:
        if store == "sqlite":
            figures = measure(sqlite_copy(database, args.dataset, "writes"), f"server-{args.dataset}-writes.log",
                              meta, args.duration, args.clients)
        else:
            from mandate.store.localpg import LocalPostgres

            from bench import stores as copies

            postgres = LocalPostgres()
            postgres.start()
            try:
                url = copies.copy_to_postgres(database, postgres, f"bench_{args.dataset}_writes")
                figures = measure(url, f"server-{args.dataset}-writes-pg.log", meta, args.duration, args.clients)
            finally:
                postgres.close()
        print(f"{store:>8}: {figures['rate_per_s']:,.0f} mutations/s with {figures['writers']} writers, "
              f"{figures['server_cpu_ms_per_mutation']:.2f} ms server CPU per mutation "
              f"({figures['server_cpu_cores']} cores), p50 {figures['p50_ms']} ms, p99 {figures['p99_ms']} ms, "
              f"{figures['errors']} errors {figures['first_error'][:200]}; the no-op on the same streams "
              f"{figures['noop_rate_per_s']:,.0f}/s", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
