"""The world file: every fact of a Mandate, as records (docs/world-format.md).

One format serves `mandate serve --ephemeral --world`, the pytest plugin, `mandate policy
test`, `mandate import` and `mandate export`. It comes in two spellings:

- YAML: a mapping `world:` with one section per kind (`users`, `organizations`, `members`,
  ...), short forms allowed (a user as a bare id, a link as a pair);
- JSON Lines, for big worlds: one JSON object per line, each with its `kind`.

Both read into the same records: `(line, kind, fields)`, the line where the record stands in
its file (refusals name it). `normalize` checks one record's fields and gives the table
columns it writes; what needs the rest of the world (references, seats, currency, one
partner record per person) is checked by the importer (mandate.admin.service).
"""

from __future__ import annotations

import hashlib
import io
import json
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import yaml

from mandate import errors
from mandate.clock import as_text, parse
from mandate.names import Reason
from mandate.store import models

FORMAT = 1
# Kinds in the order a world is written and imported: each refers only to kinds before it.
KINDS = ("user", "organization", "member", "member_invitation", "client_invitation", "connection",
         "assignment", "link", "resource", "resource_role")
# The YAML section of each kind, and the short sections the YAML spelling also reads.
SECTIONS = {"users": "user", "organizations": "organization", "members": "member",
            "member_invitations": "member_invitation", "client_invitations": "client_invitation",
            "connections": "connection", "assignments": "assignment", "links": "link", "resources": "resource",
            "resource_roles": "resource_role", "projects": "resource"}
SECTION_OF = {kind: section for section, kind in SECTIONS.items() if section != "projects"}

_ID = re.compile(r"[\x21-\x7e]{1,40}")  # user, organization and invitation ids: as the columns hold
_RESOURCE_ID = re.compile(r"[\x21-\x7e]{1,200}")
_TYPE = re.compile(r"[A-Z][A-Za-z0-9]{0,39}")
_HASH = re.compile(r"[0-9a-f]{64}")
_EMAIL = re.compile(r"[^@\s]{1,64}@[^@\s]{1,189}")


class WorldError(ValueError):
    """The world file is malformed; the message names the entry."""


@dataclass(slots=True)
class Record:
    line: int
    kind: str
    fields: dict[str, Any]

    @property
    def where(self) -> str:
        """How a refusal names the record: its line and its key."""
        what = f"{self.kind} {describe(self.kind, self.fields)}"
        return f"line {self.line}: {what}" if self.line else what


class RecordError(errors.InvalidArgument):
    """A record's field is wrong: INVALID_ARGUMENT naming the line, the record and the field."""

    def __init__(self, record: Record, field: str, problem: str, reason: str | None = None):
        super().__init__(field, problem, reason)
        self.message = f"{record.where}: {field}: {problem}"
        self.args = (self.message,)


def describe(kind: str, fields: dict) -> str:
    """A record's key in words, without personal data (ids only)."""
    def get(name):
        value = fields.get(name)
        return str(value)[:60] if value not in (None, "") else "?"

    if kind == "member":
        return f"{get('organization')}/{get('user')}"
    if kind == "connection":
        return f"{get('partner')}->{get('client')}"
    if kind == "assignment":
        return f"{get('partner')}->{get('client')}/{get('user')}"
    if kind == "link":
        pair = fields.get("organizations")
        return "/".join(str(o)[:60] for o in pair) if isinstance(pair, list) else "?"
    if kind == "resource":
        return f"{get('type')}:{get('id')}"
    if kind == "resource_role":
        return f"{get('resource')}/{get('user')}/{get('role')}"
    return get("id")


# -- reading --------------------------------------------------------------------------------


def sniff_jsonl(head: str) -> bool:
    """A JSON Lines world starts with `{`; a YAML one with `world:` (or a comment)."""
    return head.lstrip().startswith("{")


def read_records(path) -> Iterator[Record]:
    """Every record of a world file, YAML or JSON Lines (told apart by their first character)."""
    with open(path, encoding="utf-8") as handle:
        head = handle.read(4096)
        handle.seek(0)
        if sniff_jsonl(head):
            yield from jsonl_records(handle)
        else:
            yield from yaml_records(handle.read(), str(path))


def jsonl_records(lines: Iterable[str]) -> Iterator[Record]:
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        yield json_record(line, number)


def json_record(text: str, line: int) -> Record:
    try:
        fields = json.loads(text)
    except ValueError as error:
        raise errors.InvalidArgument(f"line {line}", f"not a JSON object ({error.msg})") from None
    if not isinstance(fields, dict):
        raise errors.InvalidArgument(f"line {line}", "must be a JSON object with a 'kind'")
    kind = fields.pop("kind", None)
    if kind not in KINDS:
        raise errors.InvalidArgument(f"line {line}: kind", f"must be one of: {', '.join(KINDS)}")
    return Record(line, kind, fields)


def yaml_records(text: str, name: str = "world") -> Iterator[Record]:
    """The records of a YAML world document (`world:` at the top), each with its line."""
    loader = yaml.SafeLoader(text)
    try:
        root = loader.get_single_node()
        if root is None:
            return
        if not isinstance(root, yaml.MappingNode):
            raise WorldError(f"{name}: the file must be a mapping with a 'world' key")
        world = next((value for key, value in root.value if key.value == "world"), None)
        if world is None:
            return
        yield from _world_node(loader, world)
    except yaml.YAMLError as error:
        raise WorldError(f"{name}: not valid YAML: {error}") from None
    finally:
        loader.dispose()


def world_records(world: dict[str, Any] | None) -> Iterator[Record]:
    """The records of a world already read (a `world:` mapping as a dict; lines unknown: 0)."""
    if world is None:
        return
    if not isinstance(world, dict):
        raise WorldError("world: must be a mapping")
    for section, entries in world.items():
        kind = _section(section)
        if kind == "organization" and isinstance(entries, dict):
            entries = [_org_entry(key, value, f"organizations.{key}") for key, value in entries.items()]
        for position, entry in enumerate(entries or []):
            yield _short(kind, section, entry, 0, f"{section}[{position}]")


def _section(section) -> str:
    if section not in SECTIONS:
        raise WorldError(f"world: unknown key {section!r}; the sections are: {', '.join(SECTIONS)}")
    return SECTIONS[section]


def _world_node(loader, world) -> Iterator[Record]:
    if not isinstance(world, yaml.MappingNode):
        raise WorldError("world: must be a mapping")
    for key, value in world.value:
        kind = _section(key.value)
        line = value.start_mark.line + 1
        if isinstance(value, yaml.MappingNode) and kind == "organization":
            for org_key, org_value in value.value:
                org_id = loader.construct_object(org_key, deep=True)
                entry = _org_entry(org_id, loader.construct_object(org_value, deep=True),
                                   f"organizations.{org_id}")
                yield _short(kind, key.value, entry, org_key.start_mark.line + 1, f"organizations.{org_id}")
        elif isinstance(value, yaml.SequenceNode):
            for position, item in enumerate(value.value):
                yield _short(kind, key.value, loader.construct_object(item, deep=True), item.start_mark.line + 1,
                             f"{key.value}[{position}]")
        elif not (isinstance(value, yaml.ScalarNode) and value.value in ("", "~", "null")):
            raise WorldError(f"line {line}: {key.value}: must be a list")


def _org_entry(org_id, spec, where: str) -> dict:
    if spec is not None and not isinstance(spec, dict):
        raise WorldError(f"{where}: must be a mapping, not {spec!r}")
    return {"id": org_id, **(spec or {})}


def _short(kind: str, section: str, entry, line: int, where: str) -> Record:
    """A YAML entry as a record: the short forms of users (a bare id), links (a pair) and
    projects (a resource of type Project) made whole."""
    if kind == "user" and not isinstance(entry, dict):
        entry = {"id": entry}
    elif kind == "link" and isinstance(entry, list):
        entry = {"organizations": entry}
    if not isinstance(entry, dict):
        raise WorldError(f"line {line}: {where}: must be a mapping, not {entry!r}" if line
                         else f"{where}: must be a mapping, not {entry!r}")
    entry = dict(entry)
    if section == "projects":
        entry.setdefault("type", "Project")
    return Record(line, kind, entry)


# -- one record's fields --------------------------------------------------------------------


class Fields:
    """Reads one record's fields, each refused with the record and field named."""

    __slots__ = ("record", "fields", "used")

    def __init__(self, record: Record):
        self.record = record
        self.fields = record.fields
        self.used: set[str] = set()

    def fail(self, field: str, problem: str, reason: str | None = None):
        raise RecordError(self.record, field, problem, reason)

    def raw(self, field: str, default=None):
        self.used.add(field)
        value = self.fields.get(field, default)
        return default if value is None else value

    def id(self, field: str, *, required: bool = True, pattern=_ID) -> str:
        value = self.raw(field)
        if value is None or value == "":
            if required:
                self.fail(field, "is required")
            return ""
        value = str(value) if isinstance(value, int | float) and not isinstance(value, bool) else value
        if not isinstance(value, str) or not pattern.fullmatch(value):
            self.fail(field, "must be printable ASCII characters without spaces, at most "
                             f"{40 if pattern is _ID else 200}")
        return value

    def text(self, field: str, default: str = "", max_length: int = 200) -> str:
        value = self.raw(field, default)
        if isinstance(value, int | float) and not isinstance(value, bool):
            value = str(value)
        if not isinstance(value, str):
            self.fail(field, "must be text")
        if len(value) > max_length:
            self.fail(field, f"must be at most {max_length} characters")
        if any(ord(c) < 32 for c in value):
            self.fail(field, "must not contain control characters")
        return value

    def choice(self, field: str, allowed, default: str) -> str:
        value = self.raw(field, default)
        if value not in allowed:
            self.fail(field, f"must be one of: {', '.join(allowed)}")
        return value

    def flag(self, field: str, default: bool = False) -> bool:
        value = self.raw(field, default)
        if not isinstance(value, bool):
            self.fail(field, "must be true or false")
        return value

    def integer(self, field: str, default: int, low: int, high: int) -> int:
        value = self.raw(field, default)
        if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
            self.fail(field, f"must be a whole number from {low} to {high}")
        return value

    def time(self, field: str, default: str | None) -> str | None:
        value = self.raw(field)
        if value is None or value == "":
            return default
        if hasattr(value, "isoformat"):  # YAML reads an unquoted timestamp as a datetime
            value = value.isoformat()
        if not isinstance(value, str):
            self.fail(field, "must be an RFC 3339 time")
        if len(value) == 27 and value[-1] == "Z" and value[10] == "T":  # already in the stored form
            return value
        try:
            return as_text(parse(value))
        except ValueError:
            self.fail(field, "must be an RFC 3339 time with a time zone, e.g. 2026-11-26T08:00:00Z")

    def scopes(self, field: str) -> list[str]:
        value = self.raw(field, [])
        if not isinstance(value, list):
            self.fail(field, "must be a list of scopes")
        for scope in value:
            if scope not in models.SCOPES:
                self.fail(field, f"unknown scope {str(scope)[:40]!r}; scopes are: {', '.join(models.SCOPES)}",
                          Reason.UNKNOWN_SCOPE)
        return sorted(set(value))

    def email(self, field: str, required: bool = True) -> str:
        value = self.raw(field, "")
        if not value:
            if required:
                self.fail(field, "is required")
            return ""
        if not isinstance(value, str) or len(value) > 254 or not _EMAIL.fullmatch(value):
            self.fail(field, "is not a valid email address")
        return value.lower()

    def done(self) -> None:
        extra = set(self.fields) - self.used
        if extra:
            self.fail(sorted(extra)[0], "is not a field of this kind (docs/world-format.md)")


def normalize(record: Record, now: str) -> dict[str, Any]:
    """The columns one record writes (its own table's), its fields checked one by one."""
    f = Fields(record)
    columns = _NORMALIZERS[record.kind](f, now)
    f.done()
    return columns


def _user(f: Fields, now: str) -> dict:
    user_id = f.id("id")
    email = f.email("email", required=False) or f"{user_id}@example.test".lower()
    return {"id": user_id, "email": email, "display_name": f.text("display_name", user_id),
            "created_at": f.time("created_at", now)}


def _organization(f: Fields, now: str) -> dict:
    org_id = f.id("id")
    return {"id": org_id, "name": f.text("name", org_id) or org_id, "currency": _currency(f),
            "seat_limit": f.integer("seat_limit", 0, 0, 100_000), "owner_id": f.id("owner"),
            "created_at": f.time("created_at", now)}


def _currency(f: Fields, field: str = "currency", default: str | None = "EUR") -> str:
    value = f.raw(field, default)
    if not isinstance(value, str) or not re.fullmatch(r"[A-Z]{3}", value):
        f.fail(field, "must be an ISO 4217 currency code (e.g. EUR, USD)")
    return value


ROLES = [r.value for r in models.Role]
MEMBER_STATUSES = [s.value for s in models.MemberStatus]


def _member(f: Fields, now: str) -> dict:
    paused = f.flag("paused")  # the short form of the first world files
    status = f.choice("status", MEMBER_STATUSES, "paused" if paused else "active")
    return {"organization_id": f.id("organization"), "user_id": f.id("user"),
            "role": f.choice("role", ROLES, models.Role.COLLEAGUE.value), "status": status,
            "partner_employee": f.flag("partner_employee"), "access_expires_at": f.time("access_expires_at", None)}


def _member_invitation(f: Fields, now: str) -> dict:
    created = f.time("created_at", now)
    return {"id": f.id("id"), "kind": models.InvitationKind.MEMBER.value, "organization_id": f.id("organization"),
            "email": f.email("email"), "role": f.choice("role", ROLES, models.Role.COLLEAGUE.value),
            "status": models.InvitationStatus.PENDING.value, "invited_by": f.id("invited_by"),
            "customer_name": "", "customer_number": "", "currency": "", "requested_scopes": [], "token_hash": None,
            "created_at": created, "expires_at": f.time("expires_at", None) or f.fail("expires_at", "is required"),
            "access_expires_at": f.time("access_expires_at", None)}


def _client_invitation(f: Fields, now: str) -> dict:
    if "token" in f.fields:
        f.fail("token", "a world file holds an invitation link's token_hash only, never a usable token")
    token_hash = f.raw("token_hash")
    if token_hash is not None and not (isinstance(token_hash, str) and _HASH.fullmatch(token_hash)):
        f.fail("token_hash", "must be the SHA-256 of the link's token: 64 lower-case hexadecimal digits")
    email = f.email("email", required=False)
    if bool(email) == bool(token_hash):
        f.fail("email", "a client invitation has an email, or (an invitation link) a token_hash: one of them")
    return {"id": f.id("id"), "kind": models.InvitationKind.CLIENT.value, "organization_id": f.id("partner"),
            "email": email, "role": "", "status": models.InvitationStatus.PENDING.value,
            "invited_by": f.id("invited_by"), "customer_name": f.text("customer_name"),
            "customer_number": f.text("customer_number", max_length=100), "currency": _currency(f, default=None),
            "requested_scopes": f.scopes("scopes"), "token_hash": token_hash,
            "created_at": f.time("created_at", now),
            "expires_at": f.time("expires_at", None) or f.fail("expires_at", "is required"),
            "access_expires_at": None}


CONNECTION_STATUSES = [s.value for s in models.ConnectionStatus]
APPROVALS = [a.value for a in models.EmployeeApproval]


def _connection(f: Fields, now: str) -> dict:
    partner, client = f.id("partner"), f.id("client")
    if partner == client:
        f.fail("client", "an organization cannot be its own client")
    granted = f.scopes("granted")
    requested = f.scopes("requested") if "requested" in f.fields else granted
    return {"partner_id": partner, "client_id": client,
            "status": f.choice("status", CONNECTION_STATUSES, models.ConnectionStatus.ACTIVE.value),
            "customer_name": f.text("customer_name", client) or client,
            "customer_number": f.text("customer_number", max_length=100),
            "currency": _currency(f) if f.raw("currency") else "",  # empty: the partner's (R13)
            "requested_scopes": requested, "granted_scopes": granted,
            "employee_approval": f.choice("employee_approval", APPROVALS, models.EmployeeApproval.CLIENT.value),
            "referral": f.flag("referral"), "connected_at": f.time("connected_at", now),
            "access_expires_at": f.time("access_expires_at", None),
            "invitation_id": f.id("invitation", required=False) or stub_invitation_id(partner, client)}


def stub_invitation_id(partner: str, client: str) -> str:
    """The invitation a connection imported without one refers to (finished, never exported)."""
    return "inv_world_" + hashlib.sha256(f"{partner}\0{client}".encode()).hexdigest()[:24]


def _assignment(f: Fields, now: str) -> dict:
    return {"partner_id": f.id("partner"), "client_id": f.id("client"), "user_id": f.id("user"),
            "assigned": f.flag("assigned", True), "client_approved": f.flag("approved"),
            "access_expires_at": f.time("access_expires_at", None)}


def _link(f: Fields, now: str) -> dict:
    pair = f.raw("organizations")
    if not (isinstance(pair, list) and len(pair) == 2):
        f.fail("organizations", "must be a pair [organization, organization]")
    a, b = (str(o) for o in pair)
    if not (_ID.fullmatch(a) and _ID.fullmatch(b)) or a == b:
        f.fail("organizations", "must be two different organization ids")
    return {"organization_id": a, "other_organization_id": b}


def _resource(f: Fields, now: str) -> dict:
    resource_type = f.id("type", pattern=_TYPE)
    if resource_type in ("User", "Organization"):
        f.fail("type", "users and organizations are records of their own kinds")
    parent_type = parent_id = None
    if f.raw("parent") is not None:
        if f.raw("organization") is not None:
            f.fail("parent", "a nested resource is in its parent's organization: give organization or parent, "
                   "not both")
        parent_type, parent_id = _resource_ref(f, "parent")
    return {"type": resource_type, "id": f.id("id", pattern=_RESOURCE_ID),
            # A nested resource's organization is its top ancestor's (the importer finds it).
            "organization_id": None if parent_type else f.id("organization"), "deleted": f.flag("deleted"),
            "parent_type": parent_type, "parent_id": parent_id}


def _resource_ref(f: Fields, field: str) -> tuple[str, str]:
    value = f.raw(field)
    resource_type, _, resource_id = str(value).partition(":") if isinstance(value, str) else ("", "", "")
    if not (_TYPE.fullmatch(resource_type) and _RESOURCE_ID.fullmatch(resource_id)) or resource_type in (
            "User", "Organization"):
        f.fail(field, 'must name a resource as "Type:id"')
    return resource_type, resource_id


def _resource_role(f: Fields, now: str) -> dict:
    resource_type, resource_id = _resource_ref(f, "resource")
    role = f.raw("role")
    if not (isinstance(role, str) and re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]{0,99}", role)):
        f.fail("role", "must be a role name (letters, digits and _, up to 100)")
    return {"resource_type": resource_type, "resource_id": resource_id, "user_id": f.id("user"), "role": role,
            "granted": True, "granted_by": "", "access_expires_at": f.time("access_expires_at", None)}


_NORMALIZERS = {"user": _user, "organization": _organization, "member": _member,
                "member_invitation": _member_invitation, "client_invitation": _client_invitation,
                "connection": _connection, "assignment": _assignment, "link": _link, "resource": _resource,
                "resource_role": _resource_role}


# -- writing --------------------------------------------------------------------------------


def _drop_empty(fields: dict) -> dict:
    return {k: v for k, v in fields.items() if v is not None}


def record_of(kind: str, row) -> dict:
    """The record of a stored row (a table row, or a history row at a revision): every field,
    so that importing it gives the same row back."""
    r = row
    if kind == "user":
        return {"kind": kind, "id": r.id, "email": r.email, "display_name": r.display_name, "created_at": r.created_at}
    if kind == "organization":
        return {"kind": kind, "id": r.id, "name": r.name, "owner": r.owner_id, "currency": r.currency,
                "seat_limit": r.seat_limit, "created_at": r.created_at}
    if kind == "member":
        return _drop_empty({"kind": kind, "organization": r.organization_id, "user": r.user_id, "role": r.role,
                            "status": r.status, "partner_employee": bool(r.partner_employee),
                            "access_expires_at": r.access_expires_at})
    if kind == "member_invitation":
        return _drop_empty({"kind": kind, "id": r.id, "organization": r.organization_id, "email": r.email,
                            "role": r.role, "invited_by": r.invited_by, "created_at": r.created_at,
                            "expires_at": r.expires_at, "access_expires_at": r.access_expires_at})
    if kind == "client_invitation":
        return _drop_empty({"kind": kind, "id": r.id, "partner": r.organization_id, "email": r.email or None,
                            "token_hash": r.token_hash, "customer_name": r.customer_name,
                            "customer_number": r.customer_number, "currency": r.currency,
                            "scopes": list(_json_list(r.requested_scopes)), "invited_by": r.invited_by,
                            "created_at": r.created_at, "expires_at": r.expires_at})
    if kind == "connection":
        return _drop_empty({"kind": kind, "partner": r.partner_id, "client": r.client_id, "status": r.status,
                            "granted": list(_json_list(r.granted_scopes)),
                            "requested": list(_json_list(r.requested_scopes)),
                            "employee_approval": r.employee_approval, "referral": bool(r.referral),
                            "customer_name": r.customer_name, "customer_number": r.customer_number,
                            "currency": r.currency, "connected_at": r.connected_at,
                            "access_expires_at": r.access_expires_at, "invitation": r.invitation_id})
    if kind == "assignment":
        return _drop_empty({"kind": kind, "partner": r.partner_id, "client": r.client_id, "user": r.user_id,
                            "assigned": bool(r.assigned), "approved": bool(r.client_approved),
                            "access_expires_at": r.access_expires_at})
    if kind == "link":
        return {"kind": kind, "organizations": [r.organization_id, r.other_organization_id]}
    if kind == "resource":
        where = {"parent": f"{r.parent_type}:{r.parent_id}"} if r.parent_type else {"organization": r.organization_id}
        return {"kind": kind, "type": r.type, "id": r.id, **where, "deleted": bool(r.deleted)}
    if kind == "resource_role":
        return _drop_empty({"kind": kind, "resource": f"{r.resource_type}:{r.resource_id}", "user": r.user_id,
                            "role": r.role, "access_expires_at": r.access_expires_at})
    raise ValueError(kind)


def _json_list(value) -> list:
    return json.loads(value) if isinstance(value, str) else (value or [])


def to_json(record: dict, default=None) -> str:
    return json.dumps(record, ensure_ascii=False, separators=(",", ":"), default=default)


class YamlWriter:
    """Writes records (dicts with a `kind`, in world order) as a YAML world file, one entry per
    line, as they come."""

    def __init__(self, out: io.TextIOBase):
        self.out = out
        self.section: str | None = None
        out.write(f"# A Mandate world (docs/world-format.md), format {FORMAT}.\nworld:\n")

    def write(self, record: dict) -> None:
        fields = dict(record)
        kind = fields.pop("kind")
        section = SECTION_OF[kind]
        if section != self.section:
            self.out.write(f"  {section}:\n")
            self.section = section
        if kind == "organization":
            org_id = fields.pop("id")
            self.out.write(f"    {_flow(org_id)}: {_flow(fields)}\n")
        else:
            self.out.write(f"    - {_flow(fields)}\n")


def _flow(value) -> str:
    return yaml.safe_dump(value, default_flow_style=True, width=float("inf"), allow_unicode=True,
                          sort_keys=False).rstrip("\n").removesuffix("\n...")
