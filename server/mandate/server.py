"""The gRPC server: one function registers every service, plus health checking and reflection."""

from __future__ import annotations

import logging
import signal
import threading
import time
from concurrent import futures

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from mandate.api.authorization import AuthorizationService
from mandate.api.directory import DirectoryService
from mandate.api.events import EventService
from mandate.api.interceptors import Authentication, ServiceInterceptor
from mandate.api.membership import MembershipService
from mandate.api.partner import PartnerService
from mandate.app import App
from mandate.config import Config
from mandate.policy import PolicyError
from mandate.v1 import (
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
)


def register_services(server: grpc.Server, app: App) -> health.HealthServicer:
    names = [reflection.SERVICE_NAME, health.SERVICE_NAME]
    for module, name, grpc_module, servicer in SERVICES:
        getattr(grpc_module, f"add_{name}Servicer_to_server")(servicer(app), server)
        names.append(module.DESCRIPTOR.services_by_name[name].full_name)
    health_servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    for name in names:
        health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    health_servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    reflection.enable_server_reflection(names, server)
    return health_servicer


def build_server(app: App, config: Config) -> tuple[grpc.Server, int]:
    interceptor = ServiceInterceptor(Authentication(config.resolved_tokens()))
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=config.workers, thread_name_prefix="rpc"),
        interceptors=[interceptor],
        options=[("grpc.so_reuseport", 0)],
    )
    register_services(server, app)
    port = server.add_insecure_port(config.listen)
    if port == 0:
        raise OSError(f"cannot listen on {config.listen}")
    return server, port


def serve(config: Config, *, app: App | None = None, ready: threading.Event | None = None) -> None:
    app = app or App(config.database_url, config.policy_dir)
    app.start_polling()
    server, port = build_server(app, config)
    server.start()
    host = config.listen.rsplit(":", 1)[0]
    log.info("mandate serving on %s:%d (policy %s, revision %d)", host, port, app.authorizer.policy.version,
             app.index.revision)

    def reload(_signum=None, _frame=None):
        try:
            policy = app.reload_policy()
            log.info("policy reloaded: version %s", policy.version)
        except PolicyError as error:
            log.error("policy reload refused, the old policy keeps serving: %s", error)

    def stop(_signum=None, _frame=None):
        log.info("stopping")
        server.stop(grace=5)

    if config.watch_policy:
        threading.Thread(target=watch_policy, args=(app, reload), name="policy-watch", daemon=True).start()
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGHUP, reload)
        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)
    if ready is not None:
        ready.set()
    server.wait_for_termination()
    app.close()


WATCH_SECONDS = 1.0


def watch_policy(app: App, reload) -> None:
    """--watch-policy: reload when the policy files change (same safe swap as SIGHUP)."""
    def fingerprint():
        return sorted((p.name, p.stat().st_mtime_ns, p.stat().st_size) for p in app.policy_dir.glob("*.polar"))

    seen = fingerprint()
    while True:
        time.sleep(WATCH_SECONDS)
        try:
            current = fingerprint()
        except OSError:
            continue
        if current != seen:
            seen = current
            reload()
