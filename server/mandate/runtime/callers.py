"""Calling services, known by name: who they are, how they prove it, and what they may do.

A caller is known by the SHA-256 of its bearer token, by the subject of its client certificate
(RFC 4514, e.g. `CN=gateway,O=Acme`; needs mTLS), or by both, in which case it must present
both. Callers come from the callers file (TOML, `--callers FILE`, reloaded on SIGHUP) and from
`MANDATE_API_TOKENS`, whose tokens are named env-0, env-1, ... A read-only caller may call
every RPC that changes nothing, and sees no email address in any reply. A caller with
`organizations` sees and changes only those organizations (`require_organization`: the one
rule, for every way in). A caller with `event_organizations` sees only the events of those
organizations (ListEvents, Watch). Only a caller with `admin = true` may call AdminService
(import, export, erasure); an admin caller is never limited to some organizations.

The plumbing sets the caller of the request being served in `current` (a context variable, so
it is carried into the worker thread that does the request's work): the store records its name
on every event, and anything else that belongs to a calling service (idempotency keys) asks
`current_name()`.
"""

from __future__ import annotations

import contextvars
import hashlib
import hmac
import logging
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path

from mandate.errors import OutsideCallerScope, Unauthenticated

log = logging.getLogger("mandate.callers")

NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,99}")
DIGEST = re.compile(r"[0-9a-f]{64}")
KEYS = {"token_sha256", "client_cert_subject", "read_only", "organizations", "event_organizations", "admin"}
ORGANIZATION_ID = re.compile(r"[A-Za-z0-9_.:-]{1,40}")
# The one answer to every credential that names no caller: a refusal tells nothing about why
# (a token valid only with its certificate is refused as a random one is).
NOT_A_CALLER = "no known caller: send 'authorization: Bearer <token>' or the client certificate of a known caller"
# Credentials recognized lately, so that a call does not hash its token again: at most this many
# (emptied when full, and at every reload).
RECOGNIZED_LIMIT = 1024


@dataclass(frozen=True)
class Caller:
    name: str
    read_only: bool = False
    token_sha256: bytes | None = None
    subject: tuple[str, ...] | None = None  # normalized RDNs, most specific first (RFC 4514 order)
    # The organizations whose events the caller may see; None: every organization's.
    event_organizations: frozenset[str] | None = None
    # The organizations the caller may see and change at all; None: every organization.
    organizations: frozenset[str] | None = None
    admin: bool = False  # may call AdminService (import, export, erasure)


current: contextvars.ContextVar[Caller | None] = contextvars.ContextVar("mandate_caller", default=None)


def current_name() -> str:
    """The name of the calling service of the request being served ("" outside a request)."""
    caller = current.get()
    return caller.name if caller is not None else ""


def current_read_only() -> bool:
    caller = current.get()
    return caller is not None and caller.read_only


def event_scope(caller: Caller | None) -> frozenset[str] | None:
    """The organizations whose events a caller may see (None: all of them): its
    `event_organizations`, else its `organizations` (the file keeps the first within the second)."""
    if caller is None:
        return None
    return caller.event_organizations if caller.event_organizations is not None else caller.organizations


def current_event_organizations() -> frozenset[str] | None:
    """The organizations whose events the calling service may see (None: all of them)."""
    return event_scope(current.get())


def narrowed(before: Caller, after: Caller) -> bool:
    """Whether `after` (the same credentials, after a reload) may see less than `before`."""
    def within(wider: frozenset[str] | None, narrower: frozenset[str] | None) -> bool:
        return wider is None or (narrower is not None and narrower <= wider)

    return ((after.read_only and not before.read_only) or (before.admin and not after.admin)
            or not within(after.organizations, before.organizations)
            or not within(event_scope(after), event_scope(before)))


def current_organizations() -> frozenset[str] | None:
    """The organizations the calling service may see and change (None: all of them)."""
    caller = current.get()
    return caller.organizations if caller is not None else None


def require_organization(caller: Caller | None, organization_id: str | None) -> None:
    """The rule of a caller's scope (callers file: `organizations`), wherever a request comes in:
    a caller limited to some organizations sees and changes only those. `organization_id` None
    stands for what belongs to no organization, or does not exist: outside every limited scope,
    so that a refusal never tells an unknown thing from another organization's. Decided from the
    caller alone, before anything about the organization is read; the message names neither."""
    if caller is None or caller.organizations is None:
        return
    if organization_id is None or organization_id not in caller.organizations:
        raise OutsideCallerScope(f"caller {caller.name} may see and change only its {len(caller.organizations)} "
                                 "organization(s) (callers file: organizations)")


def within_scope(*organization_ids: str | None) -> None:
    """`require_organization` for the caller of the request being served, for each of these."""
    caller = current.get()
    for organization_id in organization_ids:
        require_organization(caller, organization_id)


class CallersError(ValueError):
    """A callers file that cannot be used; says which file and what is wrong, never a secret."""


def subject_rdns(text: str) -> tuple[str, ...]:
    """An RFC 4514 distinguished name as comparable RDNs: attribute types upper-cased, spaces
    around separators dropped, escapes kept. `CN=gateway, o=Acme` == `CN=gateway,O=Acme`."""
    parts, part, escaped = [], [], False
    for char in text:
        if escaped:
            part.append(char)
            escaped = False
        elif char == "\\":
            part.append(char)
            escaped = True
        elif char == ",":
            parts.append("".join(part))
            part = []
        else:
            part.append(char)
    parts.append("".join(part))
    rdns = []
    for rdn in parts:
        kind, equals, value = rdn.partition("=")
        if not equals or not kind.strip() or not value.strip():
            raise CallersError(f"{text!r} is not an RFC 4514 subject (e.g. CN=gateway,O=Acme)")
        rdns.append(f"{kind.strip().upper()}={value.strip()}")
    return tuple(rdns)


def read_callers_file(path: Path) -> list[Caller]:
    try:
        with open(path, "rb") as handle:
            document = tomllib.load(handle)
    except OSError as error:
        raise CallersError(f"callers file {path}: cannot read it ({error.strerror})") from None
    except tomllib.TOMLDecodeError as error:
        raise CallersError(f"callers file {path}: not valid TOML ({error})") from None
    unknown = set(document) - {"callers"}
    if unknown:
        raise CallersError(f"callers file {path}: unknown table {sorted(unknown)[0]!r}; expected [callers.NAME]")
    callers = []
    for name, entry in (document.get("callers") or {}).items():
        where = f"callers file {path}, [callers.{name}]"
        if not NAME.fullmatch(name) or name.startswith("env-"):
            raise CallersError(f"{where}: a name is letters, digits, '.', '_' or '-' (env-N is reserved)")
        if not isinstance(entry, dict):
            raise CallersError(f"{where}: must be a table")
        extra = set(entry) - KEYS
        if extra:
            raise CallersError(f"{where}: unknown key {sorted(extra)[0]!r}")
        digest = entry.get("token_sha256")
        subject = entry.get("client_cert_subject")
        read_only = entry.get("read_only", False)
        if digest is None and subject is None:
            raise CallersError(f"{where}: needs token_sha256, client_cert_subject, or both")
        if digest is not None and not (isinstance(digest, str) and DIGEST.fullmatch(digest.lower())):
            raise CallersError(f"{where}: token_sha256 must be 64 hexadecimal digits (sha256sum of the token)")
        if subject is not None and not isinstance(subject, str):
            raise CallersError(f"{where}: client_cert_subject must be a string")
        if not isinstance(read_only, bool):
            raise CallersError(f"{where}: read_only must be true or false")
        admin = entry.get("admin", False)
        if not isinstance(admin, bool):
            raise CallersError(f"{where}: admin must be true or false")
        organizations = organization_ids(entry, "organizations", where)
        events = organization_ids(entry, "event_organizations", where)
        if organizations is not None and events is not None and not events <= organizations:
            raise CallersError(f"{where}: event_organizations must be within organizations")
        try:
            rdns = subject_rdns(subject) if subject is not None else None
        except CallersError as error:
            raise CallersError(f"{where}: client_cert_subject {error}") from None
        if admin and organizations is not None:
            raise CallersError(f"{where}: an admin caller reads and writes every organization; admin = true and "
                               "organizations do not go together")
        callers.append(Caller(name, read_only, bytes.fromhex(digest) if digest else None, rdns, events,
                              organizations, admin))
    digests = [c.token_sha256 for c in callers if c.token_sha256]
    if len(digests) != len(set(digests)):
        raise CallersError(f"callers file {path}: two callers have the same token_sha256")
    return callers


def organization_ids(entry: dict, key: str, where: str) -> frozenset[str] | None:
    values = entry.get(key)
    if values is None:
        return None
    if not (isinstance(values, list) and values
            and all(isinstance(o, str) and ORGANIZATION_ID.fullmatch(o) for o in values)):
        raise CallersError(f"{where}: {key} must be a non-empty list of organization ids")
    return frozenset(values)


class Callers:
    """Every known caller: those of the callers file and those of MANDATE_API_TOKENS."""

    def __init__(self, tokens: list[str], path: Path | None = None):
        self.path = path
        self._env = [Caller(f"env-{n}", token_sha256=hashlib.sha256(t.encode()).digest())
                     for n, t in enumerate(tokens)]
        self._set(read_callers_file(path) if path else [])

    def _set(self, from_file: list[Caller]) -> None:
        everyone = self._env + from_file
        by_token = [c for c in everyone if c.token_sha256 is not None]
        # Replaced whole, so that a call never mixes the callers of before and after a reload.
        # `recognized`: (authorization header, certificate subject) -> the caller they name.
        self._known: tuple[list[Caller], dict[tuple, Caller]] = (by_token, {})
        self._by_subject = {c.subject: c for c in everyone if c.token_sha256 is None and c.subject is not None}
        # Whether a request's client-certificate subject needs to be read at all.
        self.wants_subject = any(c.subject is not None for c in everyone)
        self.names = [c.name for c in everyone]

    def reload(self) -> bool:
        """Read the callers file again (SIGHUP). A file that cannot be used is refused and logged;
        the callers known before stay."""
        if self.path is None:
            return True
        try:
            self._set(read_callers_file(self.path))
        except CallersError as error:
            log.error("callers reload refused, the known callers stay: %s", error)
            return False
        log.info("callers reloaded: %d known", len(self.names))
        return True

    def identify(self, metadata, subject: tuple[str, ...] | None = None) -> Caller:
        """The caller that presented this bearer token and/or this verified client-certificate
        subject, or Unauthenticated. A caller known by both must present both. Every refusal has
        one message (NOT_A_CALLER), whatever was presented."""
        presented = None
        for key, value in metadata or ():
            if key == "authorization":
                presented = value
        if presented is None:
            caller = self._by_subject.get(subject) if subject is not None else None
            if caller is None:
                raise Unauthenticated(NOT_A_CALLER)
            return caller
        by_token, recognized = self._known
        found = recognized.get((presented, subject))
        if found is not None:  # these very credentials named this caller since the last reload
            return found
        scheme, _, token = presented.partition(" ")
        digest = hashlib.sha256(token.strip().encode()).digest()
        for caller in by_token:  # no early exit: the time taken says nothing
            if hmac.compare_digest(digest, caller.token_sha256):
                found = caller
        if found is None or scheme.lower() != "bearer" or not token.strip() or \
                (found.subject is not None and found.subject != subject):
            raise Unauthenticated(NOT_A_CALLER)
        if len(recognized) >= RECOGNIZED_LIMIT:
            recognized.clear()
        recognized[(presented, subject)] = found
        return found


def peer_subject(auth_context: dict) -> tuple[str, ...] | None:
    """The verified client certificate's subject, from gRPC's auth context (mTLS only)."""
    values = auth_context.get("x509_subject") if auth_context else None
    if not values:
        return None
    try:
        return subject_rdns(values[0].decode())
    except (CallersError, UnicodeDecodeError):
        return None
