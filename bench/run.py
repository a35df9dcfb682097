"""`python -m bench.run --dataset small|large [--duration S]`: build or reuse the dataset,
start a server on a copy of it, run every phase, print one table and write it as JSON to
bench/results/latest.json (and bench/results/<dataset>.json, from which growth is computed
once both datasets have been run). A missed target is printed, not an error."""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import platform
import shutil
import sys
import time
from pathlib import Path

from bench import dataset
from bench.load import (
    AUTHZEN_EVALUATION,
    BATCH_CHECK,
    CHECK,
    HEALTH_CHECK,
    TOKEN,
    WATCH_STREAMS,
    PastAsker,
    Result,
    Server,
    Watchers,
    Workers,
    percentile,
)

RESULTS = Path(__file__).resolve().parent / "results"
BATCH = 100
GIB = 1024 * 1024  # kB


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__)
    parser.add_argument("--dataset", choices=sorted(dataset.SHAPES), default="small")
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per throughput phase (default 5)")
    parser.add_argument("--processes", type=int, default=2,
                        help="also measure Check throughput of a `mandate serve --processes N` against one process "
                             "(default 2; 1 skips it)")
    parser.add_argument("--clients", type=int, default=4, help="client processes (default 4)")
    parser.add_argument("--threads", type=int, default=8, help="streams per client process (default 8)")
    parser.add_argument("--store", choices=("sqlite", "postgres"), default="sqlite",
                        help="the store of the measured server (default sqlite); postgres also measures Check "
                             "and mutations on SQLite in the same run, and the convergence lag of two replicas")
    args = parser.parse_args(argv)

    database, meta = dataset.ensure(args.dataset, log=say)
    say(f"dataset {args.dataset}: {meta['rows']} rows ({', '.join(f'{k} {v}' for k, v in meta['counts'].items())})")
    postgres = None
    try:
        if args.store == "postgres":
            from mandate.store.localpg import LocalPostgres

            from bench import stores

            say("starting a throwaway PostgreSQL server and copying the dataset into it ...")
            postgres = LocalPostgres()
            postgres.start()
            url = stores.copy_to_postgres(database, postgres, f"bench_{args.dataset}")
        else:
            url = sqlite_copy(database, args.dataset)
        server, workers, ready = start(url, database.with_name(f"server-{args.dataset}.log"), args)
        try:
            rss_at_start = server.status("VmRSS")
            report = measure(args, server, workers, meta)
            report["info"]["store"] = args.store
            report["info"]["server_ready_seconds"] = round(ready, 2)
            report["info"]["server_rss_at_start_kib"] = rss_at_start
            if postgres is not None:
                report["figures"] += replica_figures(args, url, server, meta, database)
            server.stop()  # the fleet comparison starts servers of its own
            report["figures"].append(index_figure(url, report["info"]))
            if args.processes > 1:
                report["figures"] += scaling(args, url, workers, meta, database, report["info"])
            report["figures"].append(figure("start-up to SERVING (policy and fact index loaded)", f"{ready:.1f} s",
                                            "< 20 s (large)", ready / 20, ready < 20, value_number=ready))
        finally:
            workers.close()
            server.stop()
    finally:
        if postgres is not None:
            postgres.close()
    finish(report, args.dataset)
    return 0


def sqlite_copy(database: Path, name: str, suffix: str = "run") -> str:
    copy = database.with_name(f"{name}.{suffix}.db")  # the bench writes: keep the cached file pristine
    for leftover in (copy, Path(f"{copy}-wal"), Path(f"{copy}-shm")):
        leftover.unlink(missing_ok=True)
    shutil.copyfile(database, copy)
    return f"sqlite:///{copy}"


def start(url: str, log_path: Path, args) -> tuple[Server, Workers, float]:
    server = Server(url, log_path)
    workers = Workers(args.clients, args.threads, server.target)
    ready = server.wait_ready()
    say(f"server pid {server.pid} on {url.split(':', 1)[0]} SERVING after {ready:.1f} s (fact index loaded)")
    workers.ready()
    return server, workers, ready


def replica_figures(args, url: str, server: Server, meta: dict, database: Path) -> list[dict]:
    """On PostgreSQL: a second replica's convergence lag, then Check and mutations on SQLite."""
    from bench import stores

    slots = meta["samples"]["mutation_slots"]
    mutations = {"kind": "mutations", "slots": slots, "nonce": time.time_ns()}
    writers = min(args.clients, len(slots))

    replica = Server(url, database.with_name(f"server-{args.dataset}-replica.log"))
    try:
        replica.wait_ready()
        say("replica convergence lag (write on one replica, plain Check on the other) ...")
        lags = stores.convergence_lag(server.target, replica.target, meta["samples"]["freshness"])
    finally:
        replica.stop()
    say("the same Check and mutation phases on SQLite, for comparison ...")
    sqlite_server, workers, _ = start(sqlite_copy(database, args.dataset, "compare"),
                                      database.with_name(f"server-{args.dataset}-sqlite.log"), args)
    try:
        allowed, denied, _ = verify_checks(sqlite_server.target, meta["samples"]["checks"])  # warms it, as above
        check = {"kind": "closed_loop", "method": CHECK,
                 "requests": [check_request(*pair).SerializeToString() for pair in interleave(allowed, denied)]}
        noop = {"kind": "closed_loop", "method": HEALTH_CHECK, "requests": [b""]}
        noop_rate = workers.run(noop, args.duration / 2, server=sqlite_server).rate
        check_rate = workers.run(check, args.duration, server=sqlite_server).rate
        sqlite_mutations = workers.run(mutations, args.duration, server=sqlite_server, processes=writers,
                                       threads=max(1, len(slots) // writers))
        mutation_rate = sqlite_mutations.rate
    finally:
        workers.close()
        sqlite_server.stop()
    pg_check, pg_mutations = last_rates["check@32"], last_rates["mutations"]
    # The machine is shared and noisy: each store's Check rate is also taken against the no-op
    # ceiling of its own server in the same stretch of time, and those two ratios are compared.
    relative = (pg_check / last_rates["noop@32"]) / (check_rate / noop_rate)
    p50, p99 = percentile(lags, 0.5) * 1000, percentile(lags, 0.99) * 1000
    return [
        figure("PostgreSQL: Check throughput next to SQLite (32 streams)",
               f"{pg_check:,.0f} vs {check_rate:,.0f} req/s ({pg_check / last_rates['noop@32']:.2f} vs "
               f"{check_rate / noop_rate:.2f} of each one's no-op ceiling)", ">= 0.9 x SQLite (of the ceiling)",
               relative, relative >= 0.9, value_number=pg_check, sqlite=check_rate),
        figure("PostgreSQL: mutations next to SQLite (8 writers)",
               f"{pg_mutations:,.0f} vs {mutation_rate:,.0f} /s; server CPU {last_rates['mutation_cpu_ms']:.2f} vs "
               f"{cpu_ms_per_call(sqlite_mutations):.2f} ms per mutation", ">= 1,000 /s (SQLite >= 1,500 /s)",
               pg_mutations / 1000, pg_mutations >= 1000, value_number=pg_mutations, sqlite=mutation_rate,
               cpu_ms=last_rates["mutation_cpu_ms"], sqlite_cpu_ms=cpu_ms_per_call(sqlite_mutations)),
        figure("replica convergence lag, no token (PostgreSQL, 2 replicas)",
               f"p50 {p50:.1f} ms, p99 {p99:.1f} ms ({len(lags)} writes)", "p99 < 50 ms", p99 / 50, p99 < 50,
               value_number=p99),
    ]


def cpu_ms_per_call(result: Result) -> float:
    """The server's CPU milliseconds per call of a phase (all its threads, over the window)."""
    return result.server_cpu * 1000 / max(1, result.calls)


def say(message: str) -> None:
    print(f"[bench] {message}", file=sys.stderr, flush=True)


# -- the phases -------------------------------------------------------------------------------


def measure(args, server: Server, workers: Workers, meta: dict) -> dict:
    samples = meta["samples"]
    duration = args.duration
    short = max(1.0, duration / 2)
    streams = args.clients * args.threads
    info: dict = {"dataset_rows": meta["rows"], "client_streams": streams, "duration_seconds": duration}

    say("verifying the sample decisions against the reference model (one BatchCheck pass) ...")
    allowed, denied, mismatches = verify_checks(server.target, samples["checks"])
    info["reference_mismatches"] = len(mismatches)
    if mismatches:
        say(f"WARNING: {len(mismatches)} decisions differ from the dataset's reference model, e.g. {mismatches[:3]}")
    listed = count_listed(server.target, samples["list_resources"])
    info["list_resources_ids"] = listed
    info["list_resources_expected"] = samples["list_resources"]["expected_count"]
    info["list_resources_partner_clients"] = samples["list_resources"]["clients"]
    if listed != samples["list_resources"]["expected_count"]:
        say(f"WARNING: ListResources listed {listed} ids, the reference model expects "
            f"{samples['list_resources']['expected_count']}")
    grants = samples.get("role_grants")
    if grants:
        listed = count_listed(server.target, grants)
        info["role_grants_listed"] = listed
        if listed != grants["expected_count"]:
            say(f"WARNING: ListResources over roles listed {listed} posts, the dataset holds "
                f"{grants['expected_count']}")
    nested = samples.get("nested")
    if nested:
        for which in ("top", "deep"):
            if not client_check(server.target, (nested["actor_id"], nested["action"], nested[which])).allowed:
                say(f"WARNING: the {which} resource of the nesting sample is denied to its colleague")
    mix = interleave(allowed, denied)
    info["check_pairs"] = {"allowed": len(allowed), "denied": len(denied),
                           "actors": len({r[0] for r in allowed + denied}),
                           "resources": len({r[2] for r in allowed + denied})}
    checks = [check_request(*pair).SerializeToString() for pair in mix]
    batches = [batch_request(mix[i: i + BATCH]).SerializeToString() for i in range(0, len(mix) - BATCH + 1, BATCH)]
    noop = {"kind": "closed_loop", "method": HEALTH_CHECK, "requests": [b""]}
    check = {"kind": "closed_loop", "method": CHECK, "requests": checks}

    phases: dict[str, Result] = {}

    def phase(name: str, task: dict, seconds: float, **options) -> Result:
        say(f"phase {name} ({seconds:g} s) ...")
        result = workers.run(task, seconds, server=server, **options)
        phases[name] = result
        if result.errors:
            say(f"  {result.errors} errors, first: {result.first_error}")
        return result

    # No-op and Check in the order A B B A, each half the time: noise that drifts over the run
    # (the machine is shared) weighs on both alike.
    runs = [phase(name, task, short) for name, task in
            (("noop@32 (1)", noop), ("check@32 (1)", check), ("check@32 (2)", check), ("noop@32 (2)", noop))]
    phases["noop@32"] = combine(runs[0], runs[3])
    phases["check@32"] = combine(runs[1], runs[2])
    # The same decisions as AuthZEN evaluations over HTTP, in the order A B B A with gRPC Check:
    # compared per server CPU-second (the clients' HTTP costs them more than gRPC does).
    evaluations = {"kind": "authzen", "authzen": server.authzen, "path": AUTHZEN_EVALUATION,
                   "requests": [evaluation_body(*pair) for pair in mix]}
    runs = [phase(name, task, short) for name, task in
            (("check@32 (3)", check), ("authzen@32 (1)", evaluations), ("authzen@32 (2)", evaluations),
             ("check@32 (4)", check))]
    phases["authzen@32"] = combine(runs[1], runs[2])
    phases["check@32 (beside authzen)"] = combine(runs[0], runs[3])
    phase("latency@1", {"kind": "alternating", "methods": (HEALTH_CHECK, CHECK), "first_request": b"",
                        "requests": checks}, duration, processes=1, threads=1)
    phase("batch@32", {"kind": "closed_loop", "method": BATCH_CHECK, "requests": batches}, duration)
    phase("list_resources@1", {"kind": "pages", **samples["list_resources"], "freshness": samples["freshness"]},
          duration, processes=1, threads=1)
    if grants:
        phase("list_roles@1", {"kind": "pages", **grants, "freshness": samples["freshness"]}, short,
              processes=1, threads=1)
    if nested:  # a top page and a post four levels under it, in turns on one stream
        top, deep = (check_request(nested["actor_id"], nested["action"], nested[which]).SerializeToString()
                     for which in ("top", "deep"))
        phase("nested@1", {"kind": "alternating", "methods": (CHECK, CHECK), "first_request": top,
                           "requests": [deep]}, short, processes=1, threads=1)
    phase("freshness@1", {"kind": "freshness", "freshness": samples["freshness"]}, short, processes=1, threads=1)
    writers = len(samples["mutation_slots"])
    streams = {"processes": min(args.clients, writers), "threads": max(1, writers // min(args.clients, writers))}
    # The ceiling of the mutation phase: the no-op on the same 8 streams (what the clients and the
    # transport allow at all before a mutation does any work).
    phase("noop@8", noop, short, **streams)
    phase("mutations", {"kind": "mutations", "slots": samples["mutation_slots"], "nonce": time.time_ns()}, duration,
          **streams)
    last_rates.update({"check@32": phases["check@32"].rate, "noop@32": phases["noop@32"].rate,
                       "mutations": phases["mutations"].rate,
                       "mutation_cpu_ms": cpu_ms_per_call(phases["mutations"])})
    peak_kib = server.status("VmHWM")
    # Check latency with 500 open Watch streams, next to the same load without them.
    alternating = {"kind": "alternating", "methods": (HEALTH_CHECK, CHECK), "first_request": b"", "requests": checks}
    phase("latency@1 (no streams)", alternating, duration, processes=1, threads=1)
    revision = int(client_check(server.target, mix[0]).revision)
    watchers = Watchers(server.target, WATCH_STREAMS, str(max(0, revision - 1)))
    try:
        info["watch_streams"] = watchers.report
        if watchers.report["open"] < WATCH_STREAMS:
            say(f"WARNING: only {watchers.report['open']} of {WATCH_STREAMS} Watch streams opened: "
                f"{watchers.report['first_error']}")
        phase(f"latency@1 ({WATCH_STREAMS} streams)", alternating, duration, processes=1, threads=1)
        phase(f"check@32 ({WATCH_STREAMS} streams)", check, short)
    finally:
        info["watch_streams_at_end"] = watchers.close()
    # Check latency while another caller asks about a new past revision again and again, next
    # to the same load without it (issue 18: the past must not cost the present).
    phase("latency@1 (no past)", alternating, duration, processes=1, threads=1)
    asker = PastAsker(server.target, int(client_check(server.target, mix[0]).revision) - 1, mix[0])
    try:
        phase("latency@1 (past questions)", alternating, duration, processes=1, threads=1)
    finally:
        info["past_questions"] = past = asker.close()
        past["build_p50_s"] = round(percentile(past.pop("seconds"), 0.5), 3) if past["answered"] else None
        if past["errors"]:
            say(f"WARNING: {past['errors']} questions about the past failed: {past['first_error']}")
    info["server_rss_kib"] = server.status("VmRSS")
    info["phases"] = {
        name: {"calls": r.calls, "rate_per_s": round(r.rate, 1), "errors": r.errors,
               "p50_ms": ms(r.percentile(0.5)), "p99_ms": ms(r.percentile(0.99)),
               "server_cpu_cores": round(r.server_cpu / r.seconds, 2),
               "client_cpu_cores": round(r.client_cpu / r.client_wall, 2),
               "machine_busy": round(r.machine_busy, 2), **r.extra}
        for name, r in phases.items()}
    return {"figures": figures(phases, peak_kib, args.store), "info": info,
            "raw": {"check_p50_1_ms": ms(phases["latency@1"].percentile(0.5))}}


last_rates: dict[str, float] = {}  # of the main server, for the figures that compare stores


def combine(*results: Result) -> Result:
    """Several runs of one load as one."""
    total = Result(seconds=sum(r.seconds for r in results))
    for r in results:
        total.calls += r.calls
        total.errors += r.errors
        total.first_error = total.first_error or r.first_error
        total.latencies += r.latencies
        total.other += r.other
        total.client_cpu += r.client_cpu
        total.client_wall += r.client_wall
        total.server_cpu += r.server_cpu
        total.machine_busy += r.machine_busy * r.seconds / total.seconds
    return total


def verify_checks(target: str, pairs: list) -> tuple[list, list, list]:
    """Ask the server about every sample once (this also warms the decision cache); split them
    by the server's answer and collect those the dataset's reference model predicts otherwise."""
    from mandate.client import MandateClient

    allowed, denied, mismatches = [], [], []
    with MandateClient(target, TOKEN) as client:
        for start in range(0, len(pairs), 1000):
            chunk = pairs[start: start + 1000]
            reply = client.authorization.BatchCheck(batch_request(chunk))
            for pair, result in zip(chunk, reply.results, strict=True):
                (allowed if result.allowed else denied).append(pair)
                if result.allowed != pair[3]:
                    mismatches.append(pair)
    return allowed, denied, mismatches


def count_listed(target: str, spec: dict) -> int:
    from mandate.client import MandateClient
    from mandate.v1 import authorization_pb2, common_pb2

    total, token = 0, ""
    with MandateClient(target, TOKEN) as client:
        while True:
            reply = client.authorization.ListResources(authorization_pb2.ListResourcesRequest(
                actor=common_pb2.ObjectRef(type="User", id=spec["actor_id"]), action=spec["action"],
                resource_type=spec["resource_type"], page_size=1000, page_token=token))
            total += len(reply.resource_ids)
            token = reply.next_page_token
            if not token:
                return total


def interleave(allowed: list, denied: list) -> list:
    """Allowed and denied in turn, so every stretch of the load is half and half."""
    count = min(len(allowed), len(denied))
    return [pair for two in zip(allowed[:count], denied[:count], strict=True) for pair in two]


def check_request(actor: str, action: str, project, _expected=None):
    """A Check on a project (its id), or on any resource (["Type", "id"])."""
    from mandate.v1 import authorization_pb2, common_pb2

    resource_type, resource_id = project if isinstance(project, list | tuple) else ("Project", project)
    return authorization_pb2.CheckRequest(actor=common_pb2.ObjectRef(type="User", id=actor), action=action,
                                          resource=common_pb2.ObjectRef(type=resource_type, id=resource_id))


def evaluation_body(actor: str, action: str, project: str, _expected=None) -> bytes:
    return json.dumps({"subject": {"type": "user", "id": actor}, "action": {"name": action},
                       "resource": {"type": "project", "id": project}}).encode()


def batch_request(pairs: list):
    from mandate.v1 import authorization_pb2

    return authorization_pb2.BatchCheckRequest(checks=[check_request(*pair) for pair in pairs])


# -- the table --------------------------------------------------------------------------------


def ms(seconds: float) -> float | None:
    return None if math.isnan(seconds) else round(seconds * 1000, 3)


def figure(name: str, value: str, target: str, ratio: float | None, met: bool | None, **data) -> dict:
    return {"figure": name, "value": value, "target": target,
            "ratio": None if ratio is None else round(ratio, 3),
            "met": None if met is None else bool(met), **data}


def figures(phases: dict[str, Result], peak_kib: int, store: str = "sqlite") -> list[dict]:
    noop = phases["noop@32"].rate
    check32 = phases["check@32"]
    check1 = phases["latency@1"]
    noop1_p50, noop1_p99 = percentile(check1.other, 0.5), percentile(check1.other, 0.99)
    batch = phases["batch@32"].rate * BATCH
    pages = phases["list_resources@1"]
    fresh = phases["freshness@1"]
    fresh_ms, plain_ms = fresh.latencies[0::2], fresh.latencies[1::2]
    fresh_p50 = median(fresh_ms)
    plain_p50 = median(plain_ms)
    correct = fresh.extra.get("correct", 0)
    mutation = phases["mutations"]
    writes_target = 1000 if store == "postgres" else 1500  # 8 writers, 2 cores
    list_p50 = pages.percentile(0.5) * 1000
    rows = [
        figure("transport ceiling (Health/Check no-op, 32 streams)", f"{noop:,.0f} req/s", "reported", None, None,
               value_number=noop, runs=[round(phases["noop@32 (1)"].rate), round(phases["noop@32 (2)"].rate)]),
        figure("Check throughput (32 streams, 50/50 allowed/denied)", f"{check32.rate:,.0f} req/s",
               ">= 0.7 x ceiling", check32.rate / noop, check32.rate / noop >= 0.7, value_number=check32.rate),
        per_cpu_figure(phases),
        figure("Check latency, 1 caller", f"p50 {check1.percentile(.5) * 1e3:.2f} ms, p99 "
               f"{check1.percentile(.99) * 1e3:.2f} ms", f"p99 <= 2 x no-op p99 ({noop1_p99 * 1e3:.2f} ms)",
               check1.percentile(.99) / noop1_p99, check1.percentile(.99) <= 2 * noop1_p99),
        figure("Check latency, 32 callers", f"p50 {check32.percentile(.5) * 1e3:.2f} ms, p99 "
               f"{check32.percentile(.99) * 1e3:.2f} ms", "reported", None, None),
        figure("no-op latency, 1 caller (alternating with Check)", f"p50 {noop1_p50 * 1e3:.2f} ms, p99 "
               f"{noop1_p99 * 1e3:.2f} ms", "reported", None, None),
        authzen_figure(phases),
        figure(f"BatchCheck ({BATCH} per batch, 32 streams)", f"{batch:,.0f} decisions/s", ">= 20 x ceiling",
               batch / noop, batch / noop >= 20, value_number=batch),
        figure("ListResources (biggest partner's legal rep, pages of 100)",
               f"p50 {list_p50:.1f} ms, p99 {pages.percentile(.99) * 1e3:.1f} ms; first page after a write "
               f"p50 {percentile(pages.other, 0.5) * 1e3:.1f} ms ({len(pages.other)})", "p50 < 20 ms (large)",
               list_p50 / 20, list_p50 < 20, value_number=list_p50),
        figure("freshness (Check at_least_revision after Pause/Resume)",
               f"{correct}/{fresh.calls} correct, p50 {fresh_p50 * 1e3:.2f} ms vs plain {plain_p50 * 1e3:.2f} ms",
               "all correct, <= 2 x plain", fresh_p50 / plain_p50 if plain_p50 else None,
               fresh.calls > 0 and correct == fresh.calls and fresh_p50 <= 2 * plain_p50),
        figure("mutations (invite, pause, resume, assign, unassign; 8 writers)",
               f"{mutation.rate:,.0f} mutations/s (p50 {mutation.percentile(.5) * 1e3:.1f} ms), server CPU "
               f"{cpu_ms_per_call(mutation):.2f} ms per mutation; the no-op on the same 8 streams "
               f"{phases['noop@8'].rate:,.0f} /s", f">= {writes_target:,} /s",
               mutation.rate / writes_target, mutation.rate >= writes_target and not mutation.errors,
               value_number=mutation.rate,
               errors=mutation.errors, cpu_ms=cpu_ms_per_call(mutation), noop_8_streams=phases["noop@8"].rate),
        streams_figure(phases),
        past_figure(phases),
        *nested_figures(phases),
        figure("server peak RSS (VmHWM)", f"{peak_kib / 1024:,.0f} MiB", "< 1.5 GiB (large)", peak_kib / (1.5 * GIB),
               peak_kib < 1.5 * GIB, value_number=peak_kib),
    ]
    return rows


def nested_figures(phases: dict[str, Result]) -> list[dict]:
    """Resources with parents (issue 20): ListResources for a user holding roles on many posts, and
    a Check on a post four levels deep next to one on a top-level page (same stream, in turns)."""
    found = []
    if "list_roles@1" in phases:
        pages = phases["list_roles@1"]
        p50 = pages.percentile(0.5) * 1000
        found.append(figure("ListResources over roles on one resource (a user with many editor grants on posts, "
                            "pages of 100)", f"p50 {p50:.1f} ms, p99 {pages.percentile(.99) * 1e3:.1f} ms",
                            "p50 < 20 ms (large: 1,000 grants)", p50 / 20, p50 < 20, value_number=p50))
    if "nested@1" in phases:
        nested = phases["nested@1"]
        top, deep = percentile(nested.other, 0.5), nested.percentile(0.5)
        ratio = deep / top if top else None
        found.append(figure("Check 4 levels deep (Page, Page, Page, Post) vs a top-level Page, 1 caller",
                            f"p50 {deep * 1e3:.2f} ms vs {top * 1e3:.2f} ms", "<= 1.2 x top-level",
                            ratio, ratio is not None and ratio <= 1.2, value_number=ratio))
    return found


def per_cpu_figure(phases: dict[str, Result]) -> dict:
    """Checks per server CPU-second at 32 streams, next to the no-op's in the same run."""
    check, noop = phases["check@32"], phases["noop@32"]
    checks = check.calls / check.server_cpu if check.server_cpu else float("nan")
    noops = noop.calls / noop.server_cpu if noop.server_cpu else float("nan")
    return figure("checks per server CPU-second (32 streams)",
                  f"{checks:,.0f} ({1e6 / checks:.0f} µs each); no-op {noops:,.0f} ({1e6 / noops:.0f} µs), "
                  f"{checks / noops:.2f} of it", ">= 5,500 (small), >= 0.85 x no-op", checks / 5500,
                  checks >= 5500 and checks >= 0.85 * noops, value_number=checks, noop=noops)


def index_figure(url: str, info: dict) -> dict:
    """The fact index's memory over its fact rows (bench/memory.py, in a fresh process)."""
    from bench.memory import index_memory

    say("the fact index's memory (loaded in a fresh process) ...")
    found = index_memory(url)
    info["index_memory"] = found
    per_row = found["index_bytes"] / max(1, found["fact_rows"])
    return figure("fact index memory per fact row", f"{per_row:,.0f} bytes ({found['index_bytes'] / 2**20:,.0f} MiB "
                  f"for {found['fact_rows']:,} rows, loaded in {found['load_seconds']:.1f} s)", "<= 250 (large)",
                  per_row / 250, per_row <= 250, value_number=per_row)


def authzen_figure(phases: dict[str, Result]) -> dict:
    """AuthZEN evaluations (HTTP, JSON) next to gRPC Check on the same decisions, per server
    CPU-second (the two cores are shared with the clients, whose HTTP costs more than gRPC)."""
    authzen, check = phases["authzen@32"], phases["check@32 (beside authzen)"]
    per_cpu = authzen.calls / authzen.server_cpu if authzen.server_cpu else 0.0
    check_per_cpu = check.calls / check.server_cpu if check.server_cpu else 0.0
    return figure("AuthZEN evaluation next to gRPC Check (32 streams)",
                  f"{per_cpu:,.0f} vs {check_per_cpu:,.0f} calls per server CPU-second ({authzen.rate:,.0f} vs "
                  f"{check.rate:,.0f} req/s; AuthZEN p50 {authzen.percentile(.5) * 1e3:.2f} ms)", "reported",
                  per_cpu / check_per_cpu if check_per_cpu else None, None, value_number=per_cpu,
                  check_per_cpu=check_per_cpu, errors=authzen.errors)


def streams_figure(phases: dict[str, Result]) -> dict:
    quiet, busy = phases["latency@1 (no streams)"], phases[f"latency@1 ({WATCH_STREAMS} streams)"]
    quiet_p99, busy_p99 = quiet.percentile(0.99), busy.percentile(0.99)
    check32 = phases[f"check@32 ({WATCH_STREAMS} streams)"]
    return figure(f"Check p99 at 1 caller with {WATCH_STREAMS} open Watch streams",
                  f"p99 {busy_p99 * 1e3:.2f} ms vs {quiet_p99 * 1e3:.2f} ms without (p50 "
                  f"{busy.percentile(.5) * 1e3:.2f} vs {quiet.percentile(.5) * 1e3:.2f} ms); at 32 callers "
                  f"{check32.rate:,.0f} req/s, p99 "
                  f"{check32.percentile(.99) * 1e3:.1f} ms", "p99 <= 2 x without", busy_p99 / quiet_p99,
                  busy_p99 <= 2 * quiet_p99, value_number=busy_p99)


def past_figure(phases: dict[str, Result]) -> dict:
    quiet, busy = phases["latency@1 (no past)"], phases["latency@1 (past questions)"]
    quiet_p99, busy_p99 = quiet.percentile(0.99), busy.percentile(0.99)
    return figure("Check p99 at 1 caller while another caller asks about new past revisions",
                  f"p99 {busy_p99 * 1e3:.2f} ms vs {quiet_p99 * 1e3:.2f} ms without (p50 "
                  f"{busy.percentile(.5) * 1e3:.2f} vs {quiet.percentile(.5) * 1e3:.2f} ms)", "p99 <= 2 x without",
                  busy_p99 / quiet_p99, busy_p99 <= 2 * quiet_p99, value_number=busy_p99)


def scaling(args, url: str, workers: Workers, meta: dict, database: Path, info: dict) -> dict:
    """Check throughput at 32 streams against a fresh server of N processes and one of 1 process
    (same database, every client thread on its own connection), in the order 1 N N 1."""
    pairs = meta["samples"]["checks"]  # with the decision the reference model predicts
    allowed = [p for p in pairs if p[3]]
    denied = [p for p in pairs if not p[3]]
    checks = [check_request(*pair).SerializeToString() for pair in interleave(allowed, denied)]
    rates: dict[int, list[float]] = {1: [], args.processes: []}
    cpu: dict[int, list[float]] = {1: [], args.processes: []}
    memory: dict[int, list[int]] = {1: [], args.processes: []}  # kB, after the phase
    by_process: dict[int, list[list]] = {1: [], args.processes: []}  # (process, Pss, private) kB, after it
    at_start: dict[int, list[int]] = {1: [], args.processes: []}  # kB, once SERVING, before any call
    for processes in (1, args.processes, args.processes, 1):
        server = Server(url, database.with_name(f"server-processes-{processes}.log"), processes=processes)
        try:
            server.wait_ready()
            at_start[processes].append(sum(pss for _, pss, _ in server.memory_by_process()))
            say(f"phase check@32 on --processes {processes} ({args.duration / 2:g} s) ...")
            result = workers.run({"kind": "closed_loop", "method": CHECK, "requests": checks,
                                  "target": server.target}, max(1.0, args.duration / 2), warmup=2.0, server=server)
            if result.errors:
                say(f"  {result.errors} errors, first: {result.first_error}")
            rates[processes].append(result.rate)
            cpu[processes].append(result.server_cpu / result.seconds)
            by_process[processes].append(server.memory_by_process())
            memory[processes].append(sum(pss for _, pss, _ in by_process[processes][-1]))
        finally:
            server.stop()
    one, many = sum(rates[1]) / 2, sum(rates[args.processes]) / 2
    info["scaling"] = {"processes": args.processes, "rates": {str(k): [round(r) for r in v] for k, v in rates.items()},
                       "server_cpu_cores": {str(k): [round(c, 2) for c in v] for k, v in cpu.items()},
                       "memory_kib": memory, "memory_at_start_kib": at_start,
                       "processes_memory_kib": by_process, "cpus": os.cpu_count()}
    one_kib, many_kib = max(memory[1]), max(memory[args.processes])
    return [
        figure(f"Check throughput, --processes {args.processes} over 1 (32 streams)",
               f"{many:,.0f} vs {one:,.0f} req/s on {os.cpu_count()} cores", "grows with N (cores permitting)",
               many / one, many > one, value_number=many / one),
        figure(f"memory of --processes {args.processes} over 1 process (Pss of all its processes)",
               f"{many_kib / 1024:,.0f} vs {one_kib / 1024:,.0f} MiB", "<= 1.5 x (--processes 4, large)",
               many_kib / one_kib, many_kib <= 1.5 * one_kib, value_number=many_kib / one_kib),
    ]


def client_check(target: str, pair):
    from mandate.client import MandateClient

    with MandateClient(target, TOKEN) as client:
        return client.authorization.Check(check_request(*pair))


def median(values: list[float]) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[len(ordered) // 2]


def finish(report: dict, name: str) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    other = "large" if name == "small" else "small"
    growth = None
    other_path = RESULTS / f"{other}.json"
    if other_path.exists():
        previous = json.loads(other_path.read_text())
        p50 = {name: report["raw"]["check_p50_1_ms"], other: previous["raw"]["check_p50_1_ms"]}
        if p50["small"] and p50["large"]:
            growth = p50["large"] / p50["small"]
            report["info"]["growth_from"] = {other: previous["timestamp"]}
    report["figures"].append(figure(
        "growth (Check p50 at 1 caller, large / small)",
        f"{growth:.2f}" if growth is not None else f"n/a (run the {other} dataset too)", "<= 1.3",
        growth, None if growth is None else growth <= 1.3))
    report.update({
        "dataset": name,
        "timestamp": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "host": {"cpus": os.cpu_count(), "python": platform.python_version()},
    })
    text = json.dumps(report, indent=2)
    (RESULTS / f"{name}.json").write_text(text)
    (RESULTS / "latest.json").write_text(text)
    print(table(report))
    print(f"\nwritten to {RESULTS / 'latest.json'}")


def table(report: dict) -> str:
    head = ("figure", "value", "target", "ratio", "met")
    body = [(f["figure"], f["value"], f["target"], "-" if f["ratio"] is None else f"{f['ratio']:.2f}",
             "-" if f["met"] is None else ("yes" if f["met"] else "NO")) for f in report["figures"]]
    widths = [max(len(row[i]) for row in (head, *body)) for i in range(len(head))]
    line = "  ".join(f"{{:<{w}}}" for w in widths)
    out = [f"Mandate bench, dataset {report['dataset']} ({report['info']['dataset_rows']:,} rows), "
           f"{report['timestamp']}", line.format(*head), line.format(*("-" * w for w in widths))]
    out += [line.format(*row) for row in body]
    phases = report["info"]["phases"]
    out.append("")
    out.append("CPU (cores) during each phase: " + "; ".join(
        f"{name} server {p['server_cpu_cores']}, clients {p['client_cpu_cores']}, machine busy "
        f"{p['machine_busy']:.0%}" for name, p in phases.items()
        if name in ("noop@32", "check@32", "batch@32", "mutations")))
    return "\n".join(out)


if __name__ == "__main__":
    started = time.monotonic()
    code = main()
    say(f"done in {time.monotonic() - started:.0f} s")
    sys.exit(code)
