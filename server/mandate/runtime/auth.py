"""Who is calling, and what that caller may call at all: callers are known by name
(`mandate.runtime.callers`) by a bearer token, a client certificate, or both. Health checking and
reflection are open to anyone. A read-only caller gets PERMISSION_DENIED, reason
READ_ONLY_CALLER, for every method that is not known to change nothing (`changes_nothing`).
AdminService answers only callers with `admin = true` (others: PERMISSION_DENIED, reason
ADMIN_ONLY). What a caller limited to some organizations may name is `runtime/scope.py`'s."""

from __future__ import annotations

import logging

from mandate.errors import AdminOnly, ReadOnlyCaller, Unauthenticated
from mandate.runtime.callers import Caller, Callers, peer_subject

log = logging.getLogger("mandate.rpc")

# Standard services any caller may use without a token: probes and schema discovery.
OPEN_PREFIXES = ("/grpc.health.v1.Health/", "/grpc.reflection.")
# Services and method names that change nothing: a read-only caller may call them.
READ_SERVICES = ("mandate.v1.AuthorizationService", "mandate.v1.EventService", "authzen")
READ_PREFIXES = ("Get", "List", "Export")
ADMIN = "/mandate.v1.AdminService/"  # only callers with `admin = true` (callers file)


def identify(callers: Callers, context, quiet: bool = False) -> Caller:
    """The caller of a gRPC call, or Unauthenticated. A refused client certificate has its
    subject logged (a subject is no secret; the operator needs it to name the caller)."""
    subject = peer_subject(context.auth_context()) if callers.wants_subject else None
    try:
        return callers.identify(context.invocation_metadata(), subject)
    except Unauthenticated:
        presented = subject or peer_subject(context.auth_context())
        if presented and not quiet:
            log.warning("refused the credentials of %s, which presented the client certificate subject %s",
                        peer_host(context.peer()), ",".join(presented),
                        extra={"fields": {"subject": ",".join(presented)}})
        raise


def require_admin(method: str, caller: Caller) -> None:
    """AdminService (import, export, erasure) answers only callers with `admin = true`."""
    if method.startswith(ADMIN) and not caller.admin:
        raise AdminOnly(f"caller {caller.name} may not call AdminService (callers file: admin = true)")


def require_writer(caller: Caller, writes: bool) -> None:
    """A read-only caller changes nothing."""
    if writes and caller.read_only:
        raise ReadOnlyCaller(f"caller {caller.name} is read-only; it may not change anything")


def changes_nothing(method: str) -> bool:
    """Methods a read-only caller may call. Anything not known to change nothing is a mutation
    (fail closed): a new RPC is writable only by writers until it is listed here."""
    service, _, name = method.strip("/").partition("/")
    return method.startswith(OPEN_PREFIXES) or service in READ_SERVICES or name.startswith(READ_PREFIXES)


def peer_host(peer: str) -> str:
    """'ipv4:10.0.0.7:53211' -> '10.0.0.7'; 'ipv6:[::1]:53211' -> '[::1]'; 'unix:...' as is."""
    kind, _, address = peer.partition(":")
    if kind in ("ipv4", "ipv6"):
        return address.rsplit(":", 1)[0]
    return peer
