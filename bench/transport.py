"""`python -m bench.transport [--seconds S] [--rounds R]`: what grpcio itself costs per call, on
the bench's load, with grpcio's sync server, its asyncio (aio) server, the aio server on uvloop
when uvloop is installed, and the aio server with what it loaded frozen out of the garbage
collector's rounds (`gc.freeze()`).

Each server is a bare one in its own process: two methods, no authentication, no limits, no
log line, no metrics. `/grpc.health.v1.Health/Check` is a no-op (bytes in, empty bytes out);
`/mandate.v1.AuthorizationService/Check` parses the request, asks the real check plane
(`AuthorizationService.Check` on the `small` dataset: validation, the fact index, the decision
memo) and serializes the reply. The load is the bench's (4 client processes x 8 streams, the
Check mix half allowed, half denied); the servers take turns (A B C C B A ...) so the noise of
a shared machine weighs on each alike. Printed: calls per server CPU-second of each method on
each server. Mandate's own server is the aio one with its plumbing (runtime/interceptors.py) on top:
the difference between these figures and `make bench`'s is what the plumbing costs.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
from pathlib import Path

from bench import dataset
from bench.load import CHECK, HEALTH_CHECK, ROOT, Workers, free_port
from bench.run import check_request, interleave, say, sqlite_copy

KINDS = ("sync", "aio", "aio+uvloop", "aio+frozen")


class Bare:
    """One bare server process (`--serve KIND`), measured like bench.load.Server."""

    def __init__(self, kind: str, database_url: str):
        self.port = free_port()
        self.target = f"127.0.0.1:{self.port}"
        self.kind = kind
        self.process = subprocess.Popen(
            [sys.executable, "-m", "bench.transport", "--serve", kind, "--port", str(self.port),
             "--database-url", database_url], cwd=ROOT, stdout=subprocess.PIPE)
        line = self.process.stdout.readline()  # "ready" once it serves
        if line.strip() != b"ready":
            raise RuntimeError(f"the {kind} server did not start")

    @property
    def pid(self) -> int:
        return self.process.pid

    def cpu_seconds(self) -> float:
        fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def stop(self) -> None:
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def serve(kind: str, port: int, database_url: str) -> None:
    """Serve the two methods until SIGTERM."""
    import grpc
    from mandate.runtime.app import App
    from mandate.runtime.server import authorization_service
    from mandate.v1 import authorization_pb2

    service = authorization_service(App(database_url, ROOT / "policies"))
    if kind.endswith("+frozen"):  # what was loaded stays out of the garbage collector's rounds
        import gc

        gc.collect()
        gc.freeze()

    def noop(_raw, _context):
        return b""

    def check(raw, context):
        return service.Check(authorization_pb2.CheckRequest.FromString(raw), context).SerializeToString()

    if kind == "sync":
        from concurrent.futures import ThreadPoolExecutor

        handlers = {HEALTH_CHECK: grpc.unary_unary_rpc_method_handler(noop),
                    CHECK: grpc.unary_unary_rpc_method_handler(check)}
        server = grpc.server(ThreadPoolExecutor(max_workers=16), handlers=[Handlers(handlers)])
        server.add_insecure_port(f"127.0.0.1:{port}")
        server.start()
        print("ready", flush=True)
        signal.sigwait({signal.SIGTERM})
        server.stop(0)
        return

    import asyncio

    async def aio_noop(raw, context):
        return noop(raw, context)

    async def aio_check(raw, context):
        return check(raw, context)

    served = serve_aio({HEALTH_CHECK: grpc.unary_unary_rpc_method_handler(aio_noop),
                        CHECK: grpc.unary_unary_rpc_method_handler(aio_check)}, port)
    if kind == "aio+uvloop":
        import uvloop

        uvloop.run(served)
    else:
        asyncio.run(served)


async def serve_aio(handlers: dict, port: int) -> None:
    """A bare grpc.aio server of `handlers` (method -> handler) on the port: prints "ready"
    once it serves, and stops at SIGTERM."""
    import asyncio

    import grpc

    server = grpc.aio.server(handlers=[Handlers(handlers)])
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    print("ready", flush=True)
    await stop.wait()
    await server.stop(0)


class Handlers:
    """A generic handler over a dict of method handlers (grpc.GenericRpcHandler's protocol)."""

    def __init__(self, handlers: dict):
        self.handlers = handlers

    def service(self, details):
        return self.handlers.get(details.method)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.transport", description=__doc__)
    parser.add_argument("--seconds", type=float, default=3.0, help="seconds per phase (default 3)")
    parser.add_argument("--rounds", type=int, default=2, help="rounds of every server (default 2)")
    parser.add_argument("--serve", choices=KINDS, help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--database-url", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve:
        serve(args.serve, args.port, args.database_url)
        return 0

    kinds = [kind for kind in KINDS if kind != "aio+uvloop" or uvloop_installed()]
    database, meta = dataset.ensure("small", log=say)
    url = sqlite_copy(database, "small", "transport")
    servers = {kind: Bare(kind, url) for kind in kinds}
    workers = Workers(4, 8, servers[kinds[0]].target)
    totals = {(kind, method): [0, 0.0, 0.0] for kind in kinds for method in ("noop", "check")}  # calls, CPU, s
    try:
        workers.ready()
        pairs = meta["samples"]["checks"]  # with the decision the dataset's reference model predicts
        allowed, denied = [p for p in pairs if p[3]], [p for p in pairs if not p[3]]
        checks = [check_request(*pair).SerializeToString() for pair in interleave(allowed, denied)]
        tasks = {"noop": {"kind": "closed_loop", "method": HEALTH_CHECK, "requests": [b""]},
                 "check": {"kind": "closed_loop", "method": CHECK, "requests": checks}}
        order = kinds + kinds[::-1]
        for number in range(args.rounds):
            for kind in order if number % 2 == 0 else order[::-1]:
                server = servers[kind]
                for method in ("noop", "check"):
                    say(f"{kind} {method} ({args.seconds:g} s) ...")
                    result = workers.run(dict(tasks[method], target=server.target), args.seconds, warmup=1.0,
                                         server=server)
                    if result.errors:
                        say(f"  {result.errors} errors, first: {result.first_error}")
                    totals[(kind, method)][0] += result.calls
                    totals[(kind, method)][1] += result.server_cpu
                    totals[(kind, method)][2] += result.seconds
    finally:
        workers.close()
        for server in servers.values():
            server.stop()
    print(f"{'server':<12} {'no-op/s':>8} {'Check/s':>8} {'no-op per CPU-s':>16} {'Check per CPU-s':>16} "
          f"{'CPU µs per no-op':>17} {'per Check':>10}")
    for kind in kinds:
        (noops, noop_cpu, noop_s), (done, check_cpu, check_s) = totals[(kind, "noop")], totals[(kind, "check")]
        print(f"{kind:<12} {noops / noop_s:>8,.0f} {done / check_s:>8,.0f} {noops / noop_cpu:>16,.0f} "
              f"{done / check_cpu:>16,.0f} {noop_cpu / noops * 1e6:>17.0f} {check_cpu / done * 1e6:>10.0f}")
    return 0


def uvloop_installed() -> bool:
    try:
        import uvloop  # noqa: F401
    except ImportError:
        return False
    return True


if __name__ == "__main__":
    sys.exit(main())
