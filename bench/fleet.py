"""`python -m bench.fleet [--dataset large] [--processes 4] [--duration S]`: only the fleet
comparison of the bench (Check throughput and memory of a fresh `mandate serve --processes N`
over a fresh one-process server, in the order 1 N N 1), printing its two figures, the memory
once SERVING (before any call: it does not depend on how many Checks the machine let through)
and each server process's memory after its Check phase. Quicker than the whole bench when working on
the memory or the throughput of `--processes`."""

from __future__ import annotations

import argparse

from bench import dataset
from bench.load import Workers, free_port
from bench.run import say, scaling, sqlite_copy


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.fleet", description=__doc__)
    parser.add_argument("--dataset", choices=sorted(dataset.SHAPES), default="large")
    parser.add_argument("--processes", type=int, default=4, help="server processes of the fleet (default 4)")
    parser.add_argument("--duration", type=float, default=5.0,
                        help="twice the seconds measured per server (default 5, as the bench)")
    parser.add_argument("--clients", type=int, default=4, help="client processes (default 4)")
    parser.add_argument("--threads", type=int, default=8, help="streams per client process (default 8)")
    args = parser.parse_args(argv)
    if args.processes < 2:
        parser.error("--processes: at least 2")
    database, meta = dataset.ensure(args.dataset, log=say)
    url = sqlite_copy(database, args.dataset, "fleet")
    workers = Workers(args.clients, args.threads, f"127.0.0.1:{free_port()}")  # each phase names its server
    info: dict = {}
    try:
        workers.ready()
        figures = scaling(args, url, workers, meta, database, info)
    finally:
        workers.close()
    for figure in figures:
        print(f"{figure['figure']}: {figure['value']} (ratio {figure['ratio']:.2f}, target {figure['target']})")
    scaled = info["scaling"]
    print(f"Check req/s {scaled['rates']}; server CPU cores {scaled['server_cpu_cores']}")
    start = {processes: max(runs) for processes, runs in scaled["memory_at_start_kib"].items()}
    print(f"once SERVING, before any call: {start[args.processes] / 1024:,.0f} vs {start[1] / 1024:,.0f} MiB "
          f"(ratio {start[args.processes] / start[1]:.2f})")
    for processes, runs in scaled["processes_memory_kib"].items():
        for number, pids in enumerate(runs, 1):
            print(f"--processes {processes}, run {number}: " + "; ".join(
                f"{role} Pss {pss / 1024:,.0f} MiB (private {private / 1024:,.0f})" for role, pss, private in pids))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
