"""The gRPC server (grpc.aio): one function registers every service, plus health checking and
reflection; the server around it starts, reports its health, reloads and drains.

Life of a server process:
- It listens at once, with health NOT_SERVING and every Mandate method UNAVAILABLE, while
  it loads the policy and the fact index (retrying while the database does not answer).
- Then it serves: health SERVING. While the database is unavailable (`App.database_available`),
  the overall service ("") and the services that write or read the store are NOT_SERVING; the
  check plane (AuthorizationService) answers from memory and stays SERVING.
- SIGHUP reloads the policy, the callers file and the TLS certificates (whatever does not load
  is refused and logged, and what was in force stays).
- SIGTERM (or SIGINT) drains: health NOT_SERVING, no new calls, open streams end with
  UNAVAILABLE, calls in flight get the grace period (10 s by default) to finish; then it exits.

`mandate serve --processes N` runs N such processes on one port (see `serve_processes`).
"""

from __future__ import annotations

import asyncio
import ctypes
import errno
import gc
import logging
import multiprocessing
import multiprocessing.connection
import os
import signal
import socket
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection, reflection_pb2_grpc
from sqlalchemy.exc import DBAPIError

from mandate import tracing
from mandate.admin.rpc import AdminService
from mandate.checks.authzen import AuthZen
from mandate.checks.http import AuthZenServer
from mandate.checks.rpc import AuthorizationService
from mandate.clock import SystemClock
from mandate.directory.rpc import DirectoryService
from mandate.engine.index import FactIndex
from mandate.engine.policy import Policy, PolicyError, policy_files
from mandate.errors import DatabaseUnavailable, Unavailable
from mandate.events.rpc import ChangeFeed, EventService
from mandate.membership.rpc import MembershipService
from mandate.partner.rpc import PartnerService
from mandate.runtime import logs, metrics
from mandate.runtime.app import App
from mandate.runtime.callers import Callers
from mandate.runtime.config import Config
from mandate.runtime.interceptors import Plumbing
from mandate.runtime.limits import RequestLimits, StreamLimits
from mandate.runtime.observe import Observer
from mandate.runtime.statuses import abort
from mandate.runtime.tls import Certificates
from mandate.store.db import Store
from mandate.v1 import (
    admin_pb2,
    admin_pb2_grpc,
    authorization_pb2,
    authorization_pb2_grpc,
    directory_pb2,
    directory_pb2_grpc,
    events_pb2,
    events_pb2_grpc,
    membership_pb2,
    membership_pb2_grpc,
    partner_pb2,
    partner_pb2_grpc,
)

log = logging.getLogger("mandate.server")

SERVICES = (
    (authorization_pb2, "AuthorizationService", authorization_pb2_grpc, AuthorizationService),
    (directory_pb2, "DirectoryService", directory_pb2_grpc, DirectoryService),
    (membership_pb2, "MembershipService", membership_pb2_grpc, MembershipService),
    (partner_pb2, "PartnerService", partner_pb2_grpc, PartnerService),
    (events_pb2, "EventService", events_pb2_grpc, EventService),
    (admin_pb2, "AdminService", admin_pb2_grpc, AdminService),
)
SERVICE_NAMES = [module.DESCRIPTOR.services_by_name[name].full_name for module, name, _, _ in SERVICES]
# Answered from memory: SERVING while the database is away.
CHECK_PLANE = {authorization_pb2.DESCRIPTOR.services_by_name["AuthorizationService"].full_name,
               health.SERVICE_NAME, reflection.SERVICE_NAME}
OPEN_SERVICES = [health.SERVICE_NAME, reflection.SERVICE_NAME]
# Checks about the present that need no catch-up are a few dictionary look-ups and a memoized
# decision: they run on the event loop; everything else (SQL, writes, batches, lists, and every
# question about the past, which reads the history and may wait for a build) runs in the worker pool.
INLINE = ("/mandate.v1.AuthorizationService/Check",)

HEALTH_SECONDS = 1.0  # how often health follows the database's availability
RETRY_SECONDS = 1.0  # how often start-up retries a database that does not answer
DRAIN_NOTICE_SECONDS = 0.1  # health watchers hear NOT_SERVING before their streams end


class _Collector:
    """Takes what the generated add_*Servicer_to_server functions register."""

    def __init__(self):
        self.handlers: dict[str, grpc.RpcMethodHandler] = {}

    def add_generic_rpc_handlers(self, _handlers) -> None:
        pass  # the same handlers also come as registered method handlers

    def add_registered_method_handlers(self, service: str, handlers: dict) -> None:
        self.handlers.update({f"/{service}/{method}": handler for method, handler in handlers.items()})


class Router(grpc.GenericRpcHandler):
    """The wrapped handler of each method. Until the application is ready, Mandate's methods
    answer UNAVAILABLE."""

    def __init__(self):
        self.handlers: dict[str, grpc.RpcMethodHandler] = {}

    def service(self, handler_call_details):
        return self.handlers.get(handler_call_details.method)


def answered_from_memory(app: App):
    """True when a Check is about the present and needs no catch-up: no at_least_revision, or
    one the index has reached. A question about the past (at_revision, as_of) never is."""
    index = app.index

    def fresh(request) -> bool:
        if request.at_revision or request.as_of:
            return False
        wanted = request.at_least_revision
        return not wanted or (wanted.isascii() and wanted.isdigit() and len(wanted) <= 18
                              and int(wanted) <= index.revision)

    return fresh


def register_open_services(router: Router, plumbing: Plumbing, health_servicer) -> None:
    """Health checking and reflection: open to every caller, async, and capped like any stream."""
    collector = _Collector()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, collector)
    reflection_pb2_grpc.add_ServerReflectionServicer_to_server(
        reflection.aio.ReflectionServicer(OPEN_SERVICES + SERVICE_NAMES), collector)
    router.handlers.update({m: plumbing.wrap(m, h) for m, h in collector.handlers.items()})


def register_unavailable(router: Router) -> None:
    """Until the application is ready, every Mandate method answers UNAVAILABLE."""
    for module, name, _, _ in SERVICES:
        service = module.DESCRIPTOR.services_by_name[name]
        for method in service.methods:
            path = f"/{service.full_name}/{method.name}"
            router.handlers[path] = starting_handler(path, method.server_streaming, method.client_streaming)


def starting_handler(path: str, streaming: bool, client_streaming: bool = False) -> grpc.RpcMethodHandler:
    error = Unavailable("the server is starting: it is loading the policy and the fact index")
    if client_streaming:
        async def client_stream(_raw, context):
            await abort(context, path, error)

        return grpc.stream_unary_rpc_method_handler(client_stream)
    if streaming:
        async def stream(_raw, context):
            await abort(context, path, error)
            yield  # never reached: makes this an async generator

        return grpc.unary_stream_rpc_method_handler(stream)

    async def unary(_raw, context):
        await abort(context, path, error)

    return grpc.unary_unary_rpc_method_handler(unary)


def authorization_service(app: App, max_batch: int | None = None) -> AuthorizationService:
    batch = {} if max_batch is None else {"max_batch": max_batch}
    return AuthorizationService(app.authorizer, app.store, app.expiries, app.history, **batch)


def servicers(app: App, run, changes: ChangeFeed, config: Config | None = None) -> dict:
    """Each Mandate servicer, given the domain services it calls (never the whole App)."""
    return {
        AuthorizationService: authorization_service(app, config.max_batch if config is not None else None),
        DirectoryService: DirectoryService(app.directory, app.requests),
        MembershipService: MembershipService(app.memberships, app.requests),
        PartnerService: PartnerService(app.partners, app.authorizer, app.requests),
        EventService: EventService(app.events, app.index, run, changes),
        AdminService: AdminService(app.admin, app.requests, run),
    }


def register_services(router: Router, app: App, plumbing: Plumbing, changes: ChangeFeed,
                      config: Config | None = None) -> None:
    """Every Mandate service, wrapped by the plumbing (authentication, parsing, workers, errors)."""
    collector = _Collector()
    instances = servicers(app, plumbing.run, changes, config)
    for _, name, grpc_module, servicer in SERVICES:
        getattr(grpc_module, f"add_{name}Servicer_to_server")(instances[servicer], collector)
    plumbing.inline.update({method: answered_from_memory(app) for method in INLINE})
    policy = app.authorizer.policy
    plumbing.observer.decisions = metrics.Decisions(
        policy.permissions, {action for actions in policy.permissions.values() for action in actions})
    router.handlers.update({m: plumbing.wrap(m, h) for m, h in collector.handlers.items()})


class MandateServer:
    """One gRPC server on one event loop. Create it on the loop that will run it."""

    def __init__(self, config: Config, app: App | None = None, *, reuse_port: bool = False,
                 counting: bool = True):
        """`counting` False: the calls update no metric (`mandate serve` without a metrics
        endpoint, where nothing reads them; a server embedded in a process counts them)."""
        check_listen(config.listen, "--listen", reuse_port)
        if config.authzen_listen:
            check_listen(config.authzen_listen, "--authzen-listen", reuse_port)
        self.config = config
        self.app = app
        config.check_transport()
        self.workers = ThreadPoolExecutor(max_workers=config.workers, thread_name_prefix="rpc")
        self.callers = Callers(config.resolved_tokens(), config.callers_file)
        self.plumbing = Plumbing(self.callers, StreamLimits(config.max_streams_per_caller, config.max_streams),
                                 self.workers, requests=RequestLimits(config.max_requests_per_caller,
                                                                      config.workers_per_caller),
                                 observer=Observer(counting=counting))
        self.certificates = (Certificates(config.tls_cert, config.tls_key, config.tls_client_ca)
                             if config.tls else None)
        self.health = health.aio.HealthServicer()
        self.router = Router()
        register_open_services(self.router, self.plumbing, self.health)
        register_unavailable(self.router)
        self.changes: ChangeFeed | None = None
        self.draining = False
        self._health_task: asyncio.Task | None = None
        self._memo_seen = (0, 0)  # the authorizer's counts already given to the metrics
        self.server = grpc.aio.server(handlers=[self.router], options=[
            ("grpc.so_reuseport", int(reuse_port)),
            ("grpc.max_receive_message_length", config.max_message_bytes),
            ("grpc.max_send_message_length", config.max_message_bytes)])
        try:
            if self.certificates is not None:
                self.port = self.server.add_secure_port(config.listen, self.certificates.credentials())
            else:
                self.port = self.server.add_insecure_port(config.listen)
        except RuntimeError:  # taken since check_listen looked
            self.port = 0
        if self.port == 0:
            raise CannotListen(f"cannot listen on {config.listen} (--listen)")
        self.reuse_port = reuse_port
        self.authzen = AuthZenServer(
            self.plumbing, max_body_bytes=config.max_message_bytes,
            ssl_context=self.certificates.ssl_context() if self.certificates is not None else None,
        ) if config.authzen_listen else None
        self.authzen_port = 0

    async def start(self) -> None:
        """Listen at once (health NOT_SERVING), load the application, then serve."""
        started = time.monotonic()
        logs.event(log, "start", "mandate listening on %s (pid %d); loading the policy and the fact index",
                   self.config.listen, os.getpid())
        self.plumbing.start()
        await self._set_health(ready=False)
        await self.server.start()
        if self.authzen is not None:
            self.authzen_port = await self.authzen.start(self.config.authzen_listen, reuse_port=self.reuse_port,
                                                         grace=self.config.grace_seconds)
        if self.app is None:
            self.app = await self._load()
            self.app.start_polling()
            self.app.start_expiring()
        self.changes = ChangeFeed(self.app.index, self.app.store)
        self.changes.start()
        register_services(self.router, self.app, self.plumbing, self.changes, self.config)
        if self.authzen is not None:
            self.authzen.ready(AuthZen(authorization_service(self.app, self.config.max_batch),
                                       self.config.max_batch))
        metrics.set_policy(None, self.app.authorizer.policy.version)
        await self._follow_database()
        self._health_task = asyncio.get_running_loop().create_task(self._health_loop())
        host = self.config.listen.rsplit(":", 1)[0]
        transport = ("mTLS" if self.config.tls_client_ca else "TLS") if self.config.tls else "plaintext"
        logs.event(log, "ready", "mandate serving on %s:%d (%s, policy %s, revision %d, %d callers), ready in %.1f s "
                   "(pid %d)", host, self.port, transport, self.app.authorizer.policy.version, self.app.index.revision,
                   len(self.callers.names), time.monotonic() - started, os.getpid(),
                   address=f"{host}:{self.port}", transport=transport,
                   policy_version=self.app.authorizer.policy.version, revision=self.app.index.revision)
        if self.authzen is not None:
            authzen_host = self.config.authzen_listen.rsplit(":", 1)[0]
            logs.event(log, "authzen", "AuthZEN at %s://%s:%d/access/v1/ (pid %d)",
                       "https" if self.config.tls else "http", authzen_host, self.authzen_port, os.getpid(),
                       address=f"{authzen_host}:{self.authzen_port}")
        if not self.config.tls and self.config.insecure:
            log.warning("serving PLAINTEXT on %s:%d (--insecure): tokens and answers cross the network unencrypted",
                        host, self.port)

    async def _load(self) -> App:
        loop = asyncio.get_running_loop()
        while True:
            try:
                return await loop.run_in_executor(self.workers, self._new_app)
            except (DBAPIError, DatabaseUnavailable) as error:
                metrics.database_retries.inc()
                log.warning("the database does not answer; retrying in %g s: %s", RETRY_SECONDS, error)
                await asyncio.sleep(RETRY_SECONDS)

    def _new_app(self) -> App:
        global _preloaded, _preloaded_policy
        # What the parent loaded, for the first App of a forked process (see preload).
        policy = _preloaded_policy if _preloaded_policy is not None and _preloaded_policy.unchanged() else None
        app = App(self.config.database_url, self.config.policy_dir, policy, database=self.config.database,
                  index=_preloaded)
        _preloaded = _preloaded_policy = None
        app.lifetimes.invitation_ttl = self.config.invitation_ttl
        app.lifetimes.history_retention = self.config.history_retention
        app.history.memory_budget = self.config.history_memory_mib * 1024 * 1024
        return app

    async def _set_health(self, ready: bool, database: bool = True) -> None:
        serving, not_serving = health_pb2.HealthCheckResponse.SERVING, health_pb2.HealthCheckResponse.NOT_SERVING
        for name in OPEN_SERVICES:
            await self.health.set(name, serving)
        for name in ["", *SERVICE_NAMES]:
            await self.health.set(name, serving if ready and (database or name in CHECK_PLANE) else not_serving)

    async def _follow_database(self) -> None:
        available = getattr(self.app, "database_available", None)  # the store's view, when it has one
        database = True
        if available is not None:
            try:
                database = bool(await asyncio.get_running_loop().run_in_executor(None, available))
            except Exception:  # noqa: BLE001 - a failing probe means the database is not there
                log.exception("database availability probe failed")
                database = False
        if not self.draining:
            await self._set_health(ready=True, database=database)
        if database and metrics_wanted(self.config):
            await asyncio.get_running_loop().run_in_executor(None, self._sample_index)

    def _sample_index(self) -> None:
        """The index revision and its lag behind the store, for the metrics."""
        index = self.app.index
        revision = index.revision
        try:
            store = self.app.store.current_revision()
        except DBAPIError:
            metrics.database_errors.inc()
            return
        metrics.index_revision.set(revision)
        metrics.index_lag.set(max(0, store - revision))
        while index.catch_up_seconds:
            metrics.catch_up.observe(index.catch_up_seconds.popleft())
        authorizer = self.app.authorizer
        decisions, misses = authorizer.decisions, authorizer.memo_misses
        seen_decisions, seen_misses = self._memo_seen
        metrics.memo_hits.inc(max(0, (decisions - seen_decisions) - (misses - seen_misses)))
        metrics.memo_misses.inc(max(0, misses - seen_misses))
        self._memo_seen = (decisions, misses)

    async def _health_loop(self) -> None:
        while True:
            await asyncio.sleep(HEALTH_SECONDS)
            await self._follow_database()

    async def reload(self) -> None:
        """SIGHUP: the callers file, the TLS certificates and the policy, each kept as it was if
        the new one does not load."""
        logs.event(log, "reload", "reloading the callers, the certificates and the policy (pid %d)", os.getpid())
        if self.callers.reload():
            self.plumbing.callers_reloaded()
        if self.certificates is not None:
            self.certificates.reload()
        await self.reload_policy()

    async def reload_policy(self) -> None:
        """The same safe swap as ever, in a worker thread."""
        if self.app is None:
            return
        previous = self.app.authorizer.policy.version
        try:
            policy = await asyncio.get_running_loop().run_in_executor(None, self.app.reload_policy)
            metrics.policy_reloads.labels("ok").inc()
            metrics.set_policy(previous, policy.version)
            log.info("policy reloaded: version %s (pid %d)", policy.version, os.getpid())
        except PolicyError as error:
            metrics.policy_reloads.labels("refused").inc()
            log.error("policy reload refused, the old policy keeps serving (pid %d): %s", os.getpid(), error)

    async def stop(self, grace: float | None) -> None:
        """Drain: NOT_SERVING, refuse new calls, end open streams, give calls in flight `grace`
        seconds (None: abort them at once), then release the workers."""
        self.draining = True
        await self.health.enter_graceful_shutdown()
        if self._health_task is not None:
            self._health_task.cancel()
        stopping = asyncio.ensure_future(self.server.stop(grace))
        http_stopping = asyncio.ensure_future(self.authzen.stop()) if self.authzen is not None else None
        if grace:
            await asyncio.sleep(min(grace, DRAIN_NOTICE_SECONDS))
        self.plumbing.draining.drain()
        await stopping
        if http_stopping is not None:
            await http_stopping
        if self.changes is not None:
            await self.changes.stop()
        self.workers.shutdown(wait=False, cancel_futures=True)


class BackgroundServer:
    """A MandateServer on an event loop of its own thread, for tests and for embedding Mandate
    in a synchronous program: `start()`, `stop(grace)`."""

    def __init__(self, app: App | None, config: Config, *, reuse_port: bool = False):
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="mandate-server", daemon=True)
        self._thread.start()

        async def create() -> MandateServer:
            return MandateServer(config, app, reuse_port=reuse_port)

        try:
            self.server = self._call(create())
        except BaseException:
            self._close_loop()
            raise
        self.port = self.server.port

    @property
    def authzen_port(self) -> int:
        """The AuthZEN port, once started (--authzen-listen)."""
        return self.server.authzen_port

    def _call(self, coroutine):
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result()

    @property
    def app(self) -> App | None:
        return self.server.app

    def start(self) -> None:
        self._call(self.server.start())

    def reload_policy(self) -> None:
        self._call(self.server.reload_policy())

    def reload(self) -> None:
        """As SIGHUP does: callers, certificates and policy."""
        self._call(self.server.reload())

    def stop(self, grace: float | None = None) -> None:
        try:
            self._call(self.server.stop(grace))
            self._call(cancel_the_rest())
        finally:
            self._close_loop()

    def _close_loop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join()
        self._loop.close()


async def cancel_the_rest() -> None:
    """Cancel and await every other task of the loop (handlers grpc left behind), so that none
    is destroyed half-way when the loop closes."""
    tasks = [task for task in asyncio.all_tasks() if task is not asyncio.current_task()]
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


class CannotListen(OSError):
    """An address to serve on cannot be bound: in use, not on this host, or not allowed."""


def check_listen(address: str, setting: str, reuse_port: bool = False) -> None:
    """Bind `address` (host:port) once, as the server is about to, so that an address in use
    stops the start with one line naming it (the gRPC core would print its own error and a
    traceback). Port 0 (any free port) always binds."""
    host, _, port = address.rpartition(":")
    try:
        found = socket.getaddrinfo(host.strip("[]") or None, int(port), type=socket.SOCK_STREAM,
                                   flags=socket.AI_PASSIVE)
    except (OSError, ValueError) as error:
        raise CannotListen(f"cannot listen on {address} ({setting}): {error}") from None
    failures = []
    for family, kind, protocol, _, where in found:
        with socket.socket(family, kind, protocol) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if reuse_port:
                probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            try:
                probe.bind(where)
            except OSError as error:
                if error.errno == errno.EADDRINUSE:
                    raise CannotListen(f"cannot listen on {address} ({setting}): the address is already in use") \
                        from None
                failures.append(error)
    if failures and len(failures) == len(found):  # the gRPC core binds when any one of them does
        raise CannotListen(f"cannot listen on {address} ({setting}): {failures[0].strerror}")


def serve_metrics(address: str) -> None:
    try:
        metrics.serve(address)
    except OSError as error:
        reason = "the address is already in use" if error.errno == errno.EADDRINUSE else error.strerror or error
        raise CannotListen(f"cannot listen on {address} (--metrics-listen): {reason}") from None


def build_server(app: App, config: Config) -> tuple[BackgroundServer, int]:
    """A server for `app`, listening (call `start()` to serve) on its own thread."""
    server = BackgroundServer(app, config)
    return server, server.port


def serve(config: Config, *, app: App | None = None, reuse_port: bool = False, report=None) -> None:
    """Serve until SIGTERM or SIGINT, then drain (config.grace_seconds). `report(state)` hears
    "signals" once the signal handlers are in place and "serving" once the server serves."""
    asyncio.run(_serve(config, app, reuse_port, report or (lambda _state: None)))


async def _serve(config: Config, app: App | None, reuse_port: bool, report) -> None:
    loop = asyncio.get_running_loop()
    tracing.setup()
    server = MandateServer(config, app, reuse_port=reuse_port, counting=metrics_wanted(config))
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGHUP, lambda: loop.create_task(server.reload()))
    # One of several processes leaves Ctrl-C to its parent, which drains every process with SIGTERM.
    for signum in (signal.SIGTERM,) if reuse_port else (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    report("signals")
    if reuse_port:  # one of several processes: drain when the parent is gone
        loop.create_task(stop_when_orphaned(stop))
    if config.metrics_listen and not reuse_port:  # under --processes, the parent serves the sum
        serve_metrics(config.metrics_listen)
        logs.event(log, "metrics", "metrics at http://%s/metrics", config.metrics_listen)
    await server.start()
    report("serving")
    if config.watch_policy:
        threading.Thread(target=watch_policy, args=(server.app, loop, server.reload_policy), name="policy-watch",
                         daemon=True).start()
    await stop.wait()
    logs.event(log, "drain", "draining (grace %g s, pid %d)", config.grace_seconds, os.getpid())
    await server.stop(config.grace_seconds)
    if app is None and server.app is not None:
        server.app.close()
    await loop.run_in_executor(None, tracing.shutdown)  # the spans still waiting go out
    logs.event(log, "stop", "stopped (pid %d)", os.getpid())


# -- several processes on one port -------------------------------------------------------------

SUPERVISE_SECONDS = 0.5
PARENT_SECONDS = 1.0
STOP_MARGIN_SECONDS = 10.0  # beyond the grace period, before a process that does not stop is killed


# What the parent of `--processes` loaded before forking its server processes (see `preload`).
_preloaded: FactIndex | None = None
_preloaded_policy: Policy | None = None


def preload(config: Config) -> bool:
    """Load the fact index and the policy once, in the parent of `--processes`, before any
    server process starts; returns whether the index was loaded. The processes are forked from
    it and share its pages copy-on-write: N processes hold one index, not N. `gc.freeze()` keeps
    the collectors of the processes from writing to those pages (a collection writes to every
    object it walks); each process then follows the store from the revision loaded, and serves
    the policy loaded unless its files changed since (it loads them then, as after a SIGHUP).
    Nothing preloaded when the index cannot be loaded here (the database does not answer yet,
    say): each process then loads its own, retrying as one process does."""
    global _preloaded, _preloaded_policy
    started = time.monotonic()
    try:
        store = Store(config.database_url, config.database)
        try:
            index = FactIndex(store, SystemClock())
            index.catch_up()
        finally:
            store.engine.dispose()  # no connection crosses the fork
    except Exception as error:  # noqa: BLE001 - each process loads its own then, and reports what fails
        log.warning("the fact index was not loaded before starting the server processes; each loads its own: %s",
                    error)
        return False
    try:
        _preloaded_policy = Policy(config.policy_dir)
    except PolicyError:
        pass  # each process loads it, and refuses to start with the reason
    _preloaded = index
    gc.collect()
    release_free_memory()
    gc.freeze()
    log.info("loaded the fact index (revision %d) in %.1f s; the server processes share it", index.revision,
             time.monotonic() - started)
    return True


def release_free_memory() -> None:
    """Give the C heap's free pages back to the system (glibc's `malloc_trim`): the load left
    some behind, and a page the parent keeps costs once more when every process writes to it."""
    try:
        ctypes.CDLL(None).malloc_trim(0)
    except (OSError, AttributeError):  # not glibc
        pass


class Child:
    """One server process of the fleet, and what it has told its parent."""

    def __init__(self, context, config: Config, slot: int):
        self.slot = slot
        self.states: set[str] = set()
        self.pipe, tell = context.Pipe(duplex=False)
        self.process = context.Process(target=child_main, args=(config, tell), name=f"mandate-serve-{slot}")
        self.process.start()
        tell.close()

    def heard(self, state: str) -> bool:
        try:
            while self.pipe.poll():
                self.states.add(self.pipe.recv())
        except (EOFError, OSError):
            pass
        return state in self.states


def serve_processes(config: Config) -> int:
    """`mandate serve --processes N`: N server processes share one port (SO_REUSEPORT; the
    kernel spreads connections over them), each with its own fact index and worker pool.

    This parent only supervises. SIGHUP is passed to every process (each reloads the policy);
    SIGTERM or SIGINT drains them all (each gives its calls in flight the grace period). A
    process that dies after it served is replaced; one that dies before it served (a bad
    policy, a bad setting) stops the fleet, with exit status 1."""
    if config.listen.rsplit(":", 1)[-1] == "0" or config.authzen_listen.rsplit(":", 1)[-1] == "0":
        raise ValueError("--processes needs fixed ports: every process listens on the same ones")
    check_listen(config.listen, "--listen", reuse_port=True)  # every process will listen there
    if config.authzen_listen:
        check_listen(config.authzen_listen, "--authzen-listen", reuse_port=True)
    config.api_tokens = config.resolved_tokens()  # read (or create) the token file once, here
    config.check_transport()  # a bad setting stops here, before any process starts
    Callers(config.api_tokens, config.callers_file)
    if config.tls:
        Certificates(config.tls_cert, config.tls_key, config.tls_client_ca)
    if config.metrics_listen:  # each process writes its values here; this one serves their sum
        if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
            os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="mandate-metrics-")
        serve_metrics(config.metrics_listen)
        logs.event(log, "metrics", "metrics of every process at http://%s/metrics", config.metrics_listen)
    # Forked from the loaded index (this process never used gRPC: only a process that has may
    # not fork); spawned fresh when it could not be loaded here.
    context = multiprocessing.get_context("fork" if preload(config) else "spawn")
    children: dict[int, Child] = {}
    stopping = threading.Event()
    failed = False

    def spawn(slot: int) -> None:
        children[slot] = child = Child(context, config, slot)
        log.info("started server process %d of %d (pid %d)", slot + 1, config.processes, child.process.pid)

    def on_hup(_signum, _frame):
        logs.event(log, "reload", "reloading the callers, certificates and policy in every process")
        for child in list(children.values()):
            # A process without its handlers yet has not read the policy either: it will load the new one.
            if child.process.is_alive() and child.heard("signals"):
                os.kill(child.process.pid, signal.SIGHUP)

    def on_stop(_signum, _frame):
        stopping.set()

    signal.signal(signal.SIGHUP, on_hup)
    signal.signal(signal.SIGTERM, on_stop)
    signal.signal(signal.SIGINT, on_stop)
    for slot in range(config.processes):
        spawn(slot)
    while not stopping.is_set():
        sentinels = {child.process.sentinel: slot for slot, child in children.items()}
        for sentinel in multiprocessing.connection.wait(list(sentinels), timeout=SUPERVISE_SECONDS):
            child = children.pop(sentinels[sentinel])
            child.process.join()
            metrics.process_exited(child.process.pid)
            if stopping.is_set():
                break
            served = child.heard("serving")
            child.pipe.close()
            if not served:
                log.error("server process %d (pid %d) exited with %s before it served; stopping", child.slot + 1,
                          child.process.pid, child.process.exitcode)
                failed = True
                stopping.set()
                break
            log.error("server process %d (pid %d) exited with %s; starting another", child.slot + 1,
                      child.process.pid, child.process.exitcode)
            spawn(child.slot)
    logs.event(log, "drain", "draining %d processes (grace %g s)", len(children), config.grace_seconds)
    for child in children.values():
        if child.process.is_alive():
            os.kill(child.process.pid, signal.SIGTERM)
    deadline = time.monotonic() + config.grace_seconds + STOP_MARGIN_SECONDS
    for child in children.values():
        child.process.join(max(0.0, deadline - time.monotonic()))
        if child.process.is_alive():
            log.error("server process pid %d did not stop in time; killing it", child.process.pid)
            child.process.kill()
            child.process.join()
    logs.event(log, "stop", "stopped")
    return 1 if failed else 0


def child_main(config: Config, tell) -> None:
    """One of the processes of `serve_processes` (a fresh interpreter, or forked from the parent
    with the fact index loaded). Its stdout and stderr are the parent's: in JSON, the parent
    relays them."""
    for signum in (signal.SIGTERM, signal.SIGHUP):  # not the parent's handlers (a forked process has them)
        signal.signal(signum, signal.SIG_DFL)
    metrics.follow_multiprocess()
    logs.setup(config.log_level, config.log_format, process=True, capture=False)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle
    try:
        serve(config, reuse_port=True, report=tell.send)
    except PolicyError as error:
        log.error("refusing to start: %s", error)
        raise SystemExit(1) from None


async def stop_when_orphaned(stop: asyncio.Event) -> None:
    parent = os.getppid()
    while os.getppid() == parent:
        await asyncio.sleep(PARENT_SECONDS)
    log.error("the supervising process is gone; draining")
    stop.set()


WATCH_SECONDS = 1.0


def watch_policy(app: App, loop: asyncio.AbstractEventLoop, reload) -> None:
    """--watch-policy: reload when the policy files change (same safe swap as SIGHUP). The watcher
    survives every error: a file it cannot stat (a dangling symlink) is part of the fingerprint,
    and the reload itself refuses what it cannot load."""
    def fingerprint():
        marks = []
        for path in policy_files(app.policy_dir):
            try:
                stat = path.stat()
                marks.append((path.name, stat.st_mtime_ns, stat.st_size))
            except OSError as error:
                marks.append((path.name, type(error).__name__, 0))
        return marks

    seen = None
    while True:
        try:
            current = fingerprint()
            if seen is not None and current != seen:
                asyncio.run_coroutine_threadsafe(reload(), loop)
            seen = current
        except Exception:  # noqa: BLE001 - the watcher must outlive any error
            log.exception("policy watcher: cannot look at %s; still watching", app.policy_dir)
        time.sleep(WATCH_SECONDS)


def metrics_wanted(config: Config) -> bool:
    return bool(config.metrics_listen) or metrics.MULTIPROCESS
