"""The load generator: a server in its own process, and client worker processes that run
closed loops against it for a fixed time.

Python's gRPC client is the slow end, so the load comes from several processes (each with a
few threads sharing one channel), requests are serialized once up front, and the hot loops
send bytes and skip decoding the replies. Each phase starts on every worker at the same
moment, runs a short warm-up, then records only calls that start and end inside the
measured window.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TOKEN = "bench-token-not-secret"
METADATA = (("authorization", f"Bearer {TOKEN}"),)
PAST_TOKEN = "bench-past-token-not-secret"  # another caller: the one that asks about the past
HEALTH_CHECK = "/grpc.health.v1.Health/Check"
CHECK = "/mandate.v1.AuthorizationService/Check"
BATCH_CHECK = "/mandate.v1.AuthorizationService/BatchCheck"
AUTHZEN_EVALUATION = "/access/v1/evaluation"
CHANNEL_OPTIONS = [("grpc.enable_retries", 0)]
WATCH = "/mandate.v1.EventService/Watch"
WATCH_STREAMS = 500


# -- the server ---------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class Server:
    """`mandate serve` on a free port, as a separate process (`processes` > 1: a parent and its
    server processes, all on that port)."""

    def __init__(self, database_url: str, log_path: Path, processes: int = 1):
        from bench.dataset import policy_dir  # the shipped policy and the bench's Page and Post

        self.processes = processes
        self.port = free_port()
        self.target = f"127.0.0.1:{self.port}"
        self.authzen = f"127.0.0.1:{free_port()}"  # the AuthZEN endpoints, beside gRPC
        # One token opens every stream of the bench: let it hold the 500 Watch streams of its phase.
        env = dict(os.environ, MANDATE_API_TOKENS=f"{TOKEN},{PAST_TOKEN}", MANDATE_LOG_LEVEL="WARNING",
                   MANDATE_MAX_STREAMS_PER_CALLER=str(WATCH_STREAMS + 100), MANDATE_PROCESSES=str(processes))
        self.log = open(log_path, "w")  # noqa: SIM115 - closed in stop()
        self.started = time.monotonic()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "mandate.cli", "serve", "--listen", self.target, "--authzen-listen", self.authzen,
             "--database-url", database_url, "--policy-dir", str(policy_dir())],
            cwd=ROOT, env=env, stdout=self.log, stderr=subprocess.STDOUT,
        )
        self.ready_seconds = 0.0

    @property
    def pid(self) -> int:
        return self.process.pid

    def wait_ready(self, timeout: float = 600) -> float:
        """Wait for the health check to answer SERVING; returns the seconds since start. With
        several processes, until 8 per process fresh connections in a row (the kernel spreads
        them over the processes) all answered SERVING: a process still loading is missed with
        a chance of ((N - 1) / N) ** 8N, under 0.4%."""
        import grpc
        from grpc_health.v1 import health_pb2, health_pb2_grpc

        deadline = time.monotonic() + timeout
        wanted = 1 if self.processes == 1 else 8 * self.processes
        serving = 0
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"the server exited with {self.process.returncode}; see {self.log.name}")
            with grpc.insecure_channel(self.target, options=[("grpc.use_local_subchannel_pool", 1)]) as channel:
                try:
                    reply = health_pb2_grpc.HealthStub(channel).Check(
                        health_pb2.HealthCheckRequest(service="mandate.v1.AuthorizationService"), timeout=1)
                    serving = serving + 1 if reply.status == health_pb2.HealthCheckResponse.SERVING else 0
                except grpc.RpcError:
                    serving = 0
            if serving >= wanted:
                self.ready_seconds = time.monotonic() - self.started
                return self.ready_seconds
            if not serving:
                time.sleep(0.1)
        raise TimeoutError(f"the server was not SERVING after {timeout} s")

    def pids(self) -> list[int]:
        """The server process and its children (the server processes of --processes N)."""
        found = [self.pid]
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                try:
                    parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
                except (OSError, IndexError, ValueError):
                    continue
                if parent == self.pid:
                    found.append(int(entry.name))
        return found

    def status(self, key: str) -> int:
        """A value in kB from /proc/<pid>/status (VmHWM: peak resident set size), summed over
        the server's processes."""
        total = 0
        for pid in self.pids():
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith(key + ":"):
                    total += int(line.split()[1])
        return total

    def memory_by_process(self) -> list[tuple[str, int, int]]:
        """(process, Pss, private) in kB of each of the server's processes ("parent", then its
        server processes; "server" when it is one process), from /proc/<pid>/smaps_rollup; VmRSS
        as both where the kernel gives none. Pss counts a page shared by k processes 1/k in each,
        so the sum over the processes counts the pages they share once."""
        found = []
        pids = self.pids()
        for pid in pids:
            role = "server" if len(pids) == 1 else ("parent" if pid == self.pid else f"pid {pid}")
            try:
                values = {key: int(value.split()[0]) for key, _, value in
                          (line.partition(":") for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines())
                          if value.strip().endswith("kB")}
                found.append((role, values["Pss"], values["Private_Clean"] + values["Private_Dirty"]))
            except OSError:
                rss = next(int(line.split()[1]) for line in Path(f"/proc/{pid}/status").read_text().splitlines()
                           if line.startswith("VmRSS:"))
                found.append((role, rss, rss))
        return found

    def cpu_seconds(self) -> float:
        """User plus system CPU seconds of the server's processes so far."""
        total = 0.0
        for pid in self.pids():
            try:
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        return total

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.log.close()


# -- the worker processes -------------------------------------------------------------------


@dataclass
class Result:
    """What the workers of one phase measured, merged."""

    seconds: float
    calls: int = 0
    errors: int = 0
    first_error: str = ""
    latencies: list[float] = field(default_factory=list)  # seconds, calls inside the window
    client_cpu: float = 0.0  # CPU seconds of the client processes over warm-up and window
    client_wall: float = 0.0  # seconds of warm-up and window
    server_cpu: float = 0.0  # CPU seconds of the server over the window
    machine_busy: float = 0.0  # share of all the machine's CPU time that was busy over the window
    other: list[float] = field(default_factory=list)  # latencies of the first method (alternating loops)
    extra: dict = field(default_factory=dict)

    @property
    def rate(self) -> float:
        return self.calls / self.seconds

    def percentile(self, q: float) -> float:
        return percentile(self.latencies, q)


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


class Workers:
    """Client processes, started once; each runs one task per phase on its own channel."""

    def __init__(self, processes: int, threads: int, target: str):
        self.threads = threads
        context = multiprocessing.get_context("spawn")  # never fork a process that has used gRPC
        self.pipes = []
        self.processes = []
        for number in range(processes):
            parent, child = context.Pipe()
            process = context.Process(target=worker_main, args=(child, target, number), daemon=True,
                                      name=f"bench-worker-{number}")
            process.start()
            self.pipes.append(parent)
            self.processes.append(process)

    def ready(self) -> None:
        for pipe in self.pipes:
            pipe.send({"kind": "ping"})
        for pipe in self.pipes:
            pipe.recv()

    def run(self, task: dict, duration: float, *, processes: int | None = None, threads: int | None = None,
            warmup: float = 0.5, server: Server | None = None) -> Result:
        """Run `task` on `processes` workers with `threads` streams each, all starting together."""
        pipes = self.pipes[: processes or len(self.pipes)]
        start = time.monotonic() + 0.2
        window = (start + warmup, start + warmup + duration)
        for number, pipe in enumerate(pipes):
            pipe.send(dict(task, threads=threads or self.threads, start=start, window=window, worker=number,
                           workers=len(pipes)))
        server_cpu = machine_busy = 0.0
        if server is not None:
            time.sleep(max(0.0, window[0] - time.monotonic()))
            before, machine_before = server.cpu_seconds(), machine_cpu()
            time.sleep(max(0.0, window[1] - time.monotonic()))
            server_cpu = server.cpu_seconds() - before
            busy, total = (b - a for a, b in zip(machine_before, machine_cpu(), strict=True))
            machine_busy = busy / total if total else 0.0
        result = Result(seconds=duration, server_cpu=server_cpu, machine_busy=machine_busy,
                        client_wall=warmup + duration)
        for pipe in pipes:
            part = pipe.recv()
            if "crash" in part:
                raise RuntimeError(f"a load worker failed: {part['crash']}")
            result.calls += part["calls"]
            result.errors += part["errors"]
            result.first_error = result.first_error or part["first_error"]
            result.latencies += part["latencies"]
            result.other += part["other"]
            result.client_cpu += part["cpu"]
            for key, value in part["extra"].items():
                result.extra[key] = result.extra.get(key, 0) + value
        return result

    def close(self) -> None:
        for pipe in self.pipes:
            try:
                pipe.send(None)
            except OSError:
                pass
        for process in self.processes:
            process.join(timeout=5)
            if process.is_alive():
                process.terminate()


def machine_cpu() -> tuple[int, int]:
    """(busy, total) jiffies of all CPUs, from /proc/stat."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = values[3] + values[4]  # idle + iowait
    return sum(values) - idle, sum(values)


def worker_main(pipe, target: str, number: int) -> None:
    import grpc

    channel = grpc.insecure_channel(target, options=CHANNEL_OPTIONS)
    while True:
        task = pipe.recv()
        if task is None:
            break
        if task["kind"] == "ping":
            pipe.send({})
            continue
        try:
            pipe.send(run_task(channel, task))
        except Exception as error:  # noqa: BLE001 - reported to the parent, which stops the bench
            pipe.send({"crash": f"{type(error).__name__}: {error}"})
    channel.close()


class Stream:
    """What one thread measured."""

    def __init__(self):
        self.calls = 0
        self.errors = 0
        self.first_error = ""
        self.latencies: list[float] = []
        self.other: list[float] = []
        self.extra: dict[str, int] = {}

    def error(self, error: Exception) -> None:
        self.errors += 1
        if not self.first_error:
            code = error.code() if hasattr(error, "code") else ""
            details = error.details() if hasattr(error, "details") else str(error)
            self.first_error = f"{code} {details}"

    def count(self, key: str, amount: int = 1) -> None:
        self.extra[key] = self.extra.get(key, 0) + amount


def run_task(channel, task: dict) -> dict:
    import grpc

    threads = task["threads"]
    streams = [Stream() for _ in range(threads)]
    loop = LOOPS[task["kind"]]
    started_cpu = time.process_time()
    # With a target of its own, every thread has its own connection: a server of several processes
    # on one port (SO_REUSEPORT) gets connections, not calls, spread over its processes.
    channels = [grpc.insecure_channel(task["target"], options=CHANNEL_OPTIONS + [("grpc.use_local_subchannel_pool", 1)])
                for _ in range(threads)] if task.get("target") else [channel] * threads
    time.sleep(max(0.0, task["start"] - time.monotonic()))
    runners = [
        threading.Thread(target=loop, args=(channels[n], task, task["worker"] * threads + n, stream))
        for n, stream in enumerate(streams)
    ]
    for runner in runners:
        runner.start()
    for runner in runners:
        runner.join()
    if task.get("target"):
        for own in channels:
            own.close()
    extra: dict[str, int] = {}
    for stream in streams:
        for key, value in stream.extra.items():
            extra[key] = extra.get(key, 0) + value
    return {
        "calls": sum(s.calls for s in streams),
        "errors": sum(s.errors for s in streams),
        "first_error": next((s.first_error for s in streams if s.first_error), ""),
        "latencies": [x for s in streams for x in s.latencies],
        "other": [x for s in streams for x in s.other],
        "cpu": time.process_time() - started_cpu,
        "extra": extra,
    }


def closed_loop(channel, task: dict, stream_number: int, stream: Stream) -> None:
    """Send pre-serialized requests back to back; the reply is not decoded."""
    import grpc

    call = channel.unary_unary(task["method"])  # no serializers: bytes in, bytes out
    requests = task["requests"]
    count = len(requests)
    # Streams start far apart in the request list, so they ask about different pairs.
    index = stream_number * max(1, count // (task["workers"] * task["threads"]))
    measure_from, end = task["window"]
    clock = time.monotonic
    latencies = stream.latencies
    while True:
        started = clock()
        if started >= end:
            break
        try:
            call(requests[index % count], metadata=METADATA)
        except grpc.RpcError as error:
            stream.error(error)
            index += 1
            continue
        finished = clock()
        index += 1
        if started >= measure_from and finished <= end:
            latencies.append(finished - started)
            stream.calls += 1


def authzen_loop(_channel, task: dict, stream_number: int, stream: Stream) -> None:
    """As closed_loop, over HTTP: pre-serialized AuthZEN evaluations POSTed back to back on one
    keep-alive connection per stream; the reply is read, not decoded."""
    import http.client

    host, port = task["authzen"].rsplit(":", 1)
    connection = http.client.HTTPConnection(host, int(port), timeout=10)
    headers = {"Content-Type": "application/json", "Authorization": f"Bearer {TOKEN}"}
    requests = task["requests"]
    count = len(requests)
    index = stream_number * max(1, count // (task["workers"] * task["threads"]))
    measure_from, end = task["window"]
    clock = time.monotonic
    latencies = stream.latencies
    try:
        while True:
            started = clock()
            if started >= end:
                break
            try:
                connection.request("POST", task["path"], requests[index % count], headers)
                reply = connection.getresponse()
                reply.read()
                if reply.status != 200:
                    raise RuntimeError(f"HTTP {reply.status}")
            except (OSError, RuntimeError, http.client.HTTPException) as error:
                stream.error(error)
                connection.close()
                index += 1
                continue
            finished = clock()
            index += 1
            if started >= measure_from and finished <= end:
                latencies.append(finished - started)
                stream.calls += 1
    finally:
        connection.close()


def alternating(channel, task: dict, stream_number: int, stream: Stream) -> None:
    """Two methods in turn on one stream (a no-op, then a check, ...), so both see the same
    machine: their latencies are comparable even when the machine's noise comes and goes.
    The first method's latencies go to `other`, the second's to `latencies`."""
    import grpc

    first, second = (channel.unary_unary(method) for method in task["methods"])
    first_request = task["first_request"]
    requests = task["requests"]
    count = len(requests)
    index = stream_number * max(1, count // (task["workers"] * task["threads"]))
    measure_from, end = task["window"]
    clock = time.monotonic
    while True:
        started = clock()
        if started >= end:
            break
        try:
            first(first_request, metadata=METADATA)
            middle = clock()
            second(requests[index % count], metadata=METADATA)
        except grpc.RpcError as error:
            stream.error(error)
            index += 1
            continue
        finished = clock()
        index += 1
        if started >= measure_from and finished <= end:
            stream.other.append(middle - started)
            stream.latencies.append(finished - middle)
            stream.calls += 1


def list_pages(channel, task: dict, stream_number: int, stream: Stream) -> None:
    """Page through ListResources, 100 at a time, starting over after the last page. Before each
    pass a write (pause and resume the reserved freshness member) moves the revision, so the
    first page is answered cold: its latencies also go to `other`."""
    import grpc
    from mandate.v1 import authorization_pb2, authorization_pb2_grpc, common_pb2, membership_pb2, membership_pb2_grpc

    stub = authorization_pb2_grpc.AuthorizationServiceStub(channel)
    membership = membership_pb2_grpc.MembershipServiceStub(channel)
    spec = task["freshness"]
    member = membership_pb2.MemberRequest(actor_id=spec["actor_id"], organization_id=spec["organization_id"],
                                          user_id=spec["user_id"])
    actor = common_pb2.ObjectRef(type="User", id=task["actor_id"])
    token = ""
    measure_from, end = task["window"]
    while True:
        first = not token
        try:
            if first:
                membership.PauseMember(member, metadata=METADATA)
                membership.ResumeMember(member, metadata=METADATA)
            started = time.monotonic()
            if started >= end:
                break
            reply = stub.ListResources(authorization_pb2.ListResourcesRequest(
                actor=actor, action=task["action"], resource_type=task["resource_type"], page_size=100,
                page_token=token), metadata=METADATA)
        except grpc.RpcError as error:
            stream.error(error)
            token = ""
            if time.monotonic() >= end:
                break
            continue
        finished = time.monotonic()
        token = reply.next_page_token
        if started >= measure_from and finished <= end:
            stream.latencies.append(finished - started)
            stream.calls += 1
            stream.count("ids", len(reply.resource_ids))
            if first:
                stream.other.append(finished - started)


def freshness(channel, task: dict, stream_number: int, stream: Stream) -> None:
    """Pause then resume a member; right after each, a Check with at_least_revision must see
    the change. A plain Check of the same pair follows, for comparison. Latencies are stored
    as pairs: even entries fresh, odd entries plain."""
    import grpc
    from mandate.v1 import authorization_pb2, authorization_pb2_grpc, common_pb2, membership_pb2, membership_pb2_grpc

    spec = task["freshness"]
    membership = membership_pb2_grpc.MembershipServiceStub(channel)
    authorization = authorization_pb2_grpc.AuthorizationServiceStub(channel)
    member = membership_pb2.MemberRequest(actor_id=spec["actor_id"], organization_id=spec["organization_id"],
                                          user_id=spec["user_id"])
    check = authorization_pb2.CheckRequest(actor=common_pb2.ObjectRef(type="User", id=spec["user_id"]),
                                           action=spec["action"],
                                           resource=common_pb2.ObjectRef(type="Project", id=spec["project_id"]))
    measure_from, end = task["window"]
    paused = False
    while time.monotonic() < end:
        try:
            change = (membership.ResumeMember if paused else membership.PauseMember)(member, metadata=METADATA)
            paused = not paused
            fresh = authorization_pb2.CheckRequest()
            fresh.CopyFrom(check)
            fresh.at_least_revision = change.revision
            started = time.monotonic()
            answer = authorization.Check(fresh, metadata=METADATA)
            middle = time.monotonic()
            authorization.Check(check, metadata=METADATA)
            finished = time.monotonic()
        except grpc.RpcError as error:
            stream.error(error)
            continue
        if started >= measure_from and finished <= end:
            stream.calls += 1
            stream.latencies += [middle - started, finished - middle]
            stream.count("correct", int(answer.allowed == (not paused)))
    if paused:  # leave the member as found
        membership.ResumeMember(member, metadata=METADATA)


def mutations(channel, task: dict, stream_number: int, stream: Stream) -> None:
    """Invite, pause, resume, assign, unassign, over and over, each stream on its own people."""
    import grpc
    from mandate.v1 import membership_pb2, membership_pb2_grpc, partner_pb2, partner_pb2_grpc

    slot = task["slots"][stream_number % len(task["slots"])]
    membership = membership_pb2_grpc.MembershipServiceStub(channel)
    partner = partner_pb2_grpc.PartnerServiceStub(channel)
    member = membership_pb2.MemberRequest(actor_id=slot["actor_id"], organization_id=slot["partner_id"],
                                          user_id=slot["pause_user_id"])
    assignment = partner_pb2.AssignmentRequest(actor_id=slot["actor_id"], partner_id=slot["partner_id"],
                                               client_id=slot["client_id"], user_id=slot["employee_id"])
    steps = [
        ("invite", lambda n: membership.InviteMember(membership_pb2.InviteMemberRequest(
            actor_id=slot["actor_id"], organization_id=slot["partner_id"],
            email=f"bench-{task['nonce']}-{stream_number}-{n}@example.com", role="colleague"), metadata=METADATA)),
        ("pause", lambda n: membership.PauseMember(member, metadata=METADATA)),
        ("resume", lambda n: membership.ResumeMember(member, metadata=METADATA)),
        ("assign", lambda n: partner.AssignClient(assignment, metadata=METADATA)),
        ("unassign", lambda n: partner.UnassignClient(assignment, metadata=METADATA)),
    ]
    measure_from, end = task["window"]
    cycle = 0
    while time.monotonic() < end:
        # A cycle started is finished (unrecorded after the window), leaving everyone as found.
        for name, step in steps:
            started = time.monotonic()
            try:
                step(cycle)
            except grpc.RpcError as error:
                stream.error(error)
                continue
            finished = time.monotonic()
            if started >= measure_from and finished <= end:
                stream.calls += 1
                stream.latencies.append(finished - started)
                stream.count(name)
        cycle += 1


LOOPS = {"closed_loop": closed_loop, "alternating": alternating, "pages": list_pages, "freshness": freshness,
         "mutations": mutations, "authzen": authzen_loop}


# -- open Watch streams ----------------------------------------------------------------------------


class Watchers:
    """A process that holds `count` EventService.Watch streams open (reading what they get)."""

    def __init__(self, target: str, count: int, since_revision: str):
        context = multiprocessing.get_context("spawn")
        self.pipe, child = context.Pipe()
        self.process = context.Process(target=hold_watches, args=(child, target, count, since_revision), daemon=True,
                                       name="bench-watchers")
        self.process.start()
        self.report = self.pipe.recv()  # once every stream has delivered its first event, or failed

    def close(self) -> dict:
        self.pipe.send(None)
        final = self.pipe.recv()
        self.process.join(timeout=10)
        if self.process.is_alive():
            self.process.terminate()
        return final


def hold_watches(pipe, target: str, count: int, since_revision: str) -> None:
    import asyncio

    import grpc
    from mandate.v1 import events_pb2

    request = events_pb2.WatchRequest(since_revision=since_revision).SerializeToString()

    async def main() -> None:
        channels = [grpc.aio.insecure_channel(target, options=[("grpc.use_local_subchannel_pool", 1)])
                    for _ in range(max(1, count // 100))]
        state = {"open": 0, "events": 0, "errors": 0, "first_error": ""}
        everyone = asyncio.Event()

        async def watch(channel) -> None:
            call = channel.unary_stream(WATCH)(request, metadata=METADATA)
            first = True
            try:
                async for _ in call:
                    state["events"] += 1
                    if first:
                        first = False
                        state["open"] += 1
                        if state["open"] == count:
                            everyone.set()
            except grpc.RpcError as error:
                if error.code() != grpc.StatusCode.CANCELLED:
                    state["errors"] += 1
                    state["first_error"] = state["first_error"] or f"{error.code()} {error.details()}"
                    everyone.set()

        tasks = [asyncio.create_task(watch(channels[n % len(channels)])) for n in range(count)]
        try:
            await asyncio.wait_for(everyone.wait(), 120)
        except TimeoutError:
            pass
        pipe.send(dict(state))
        await asyncio.get_running_loop().run_in_executor(None, pipe.recv)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for channel in channels:
            await channel.close()
        pipe.send(dict(state))

    asyncio.run(main())


# -- questions about the past --------------------------------------------------------------------


class PastAsker:
    """A process that, as a caller of its own, asks about a new past revision again and again:
    a BatchCheck at revision R, then R - 1, ... (each one's facts are built anew from the history)."""

    def __init__(self, target: str, newest: int, pair):
        context = multiprocessing.get_context("spawn")
        self.pipe, child = context.Pipe()
        self.process = context.Process(target=ask_about_the_past, args=(child, target, newest, pair), daemon=True,
                                       name="bench-past")
        self.process.start()
        self.report = self.pipe.recv()  # once the first question was answered

    def close(self) -> dict:
        self.pipe.send(None)
        final = self.pipe.recv()
        self.process.join(timeout=30)
        if self.process.is_alive():
            self.process.terminate()
        return final


def ask_about_the_past(pipe, target: str, newest: int, pair) -> None:
    import grpc
    from mandate.v1 import authorization_pb2, authorization_pb2_grpc, common_pb2

    actor, action, project, *_ = pair
    metadata = (("authorization", f"Bearer {PAST_TOKEN}"),)
    state = {"answered": 0, "errors": 0, "first_error": "", "seconds": []}
    stop = threading.Event()

    def loop() -> None:
        with grpc.insecure_channel(target, options=CHANNEL_OPTIONS) as channel:
            stub = authorization_pb2_grpc.AuthorizationServiceStub(channel)
            revision = newest
            while not stop.is_set() and revision > 1:
                started = time.monotonic()
                try:
                    stub.BatchCheck(authorization_pb2.BatchCheckRequest(checks=[authorization_pb2.CheckRequest(
                        actor=common_pb2.ObjectRef(type="User", id=actor), action=action,
                        resource=common_pb2.ObjectRef(type="Project", id=project), at_revision=str(revision))]),
                        metadata=metadata, timeout=600)
                    state["answered"] += 1
                    state["seconds"].append(time.monotonic() - started)
                except grpc.RpcError as error:
                    state["errors"] += 1
                    state["first_error"] = state["first_error"] or f"{error.code()} {error.details()}"
                if state["answered"] + state["errors"] == 1:
                    pipe.send(dict(state))
                revision -= 1

    asker = threading.Thread(target=loop)
    asker.start()
    pipe.recv()
    stop.set()
    asker.join()
    pipe.send(dict(state))
