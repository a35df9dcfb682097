"""Data in and out: importing a world, exporting one, erasing a person (AdminService).

Import writes every record of a world file (mandate.admin.worldfile) in one write transaction, at one
revision: all or nothing. The records are read and checked field by field before the
transaction opens (it holds the writers' lock: other writers wait only for the writing); then,
inside it, against the store: what exists already (`on_conflict`), what the records refer to,
and the rules the business RPCs enforce (R5 seats, R6 an active owner, R13 currency, R15 only
tagged colleagues are assigned to live connections, R19 one partner record per person and
client). Every refusal names the record and its line. The history gets every fact at that
revision, and one `world.imported` event carries the counts.

Export reads every fact in one snapshot: now, or at a kept revision from the history.

Erasing a person ends their memberships as a removal does, ends every role they hold on one
resource, and takes their email and display
name out of every table: the live facts, the history, invitations, events and request records.
"""

from __future__ import annotations

import json
import time
from collections import defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from sqlalchemy import Text, cast, func, or_, select, text, tuple_, update

from mandate import errors
from mandate.admin.worldfile import KINDS, Record, RecordError, normalize, record_of, to_json
from mandate.membership.service import end_membership
from mandate.names import EventType, Reason
from mandate.shared.common import calling_service, end_resource_roles, get_user, reports_unchanged, unchanged
from mandate.shared.expiry import Lifetimes
from mandate.shared.retrying import retried
from mandate.store import bulk, models
from mandate.store.db import Store, Transaction

ON_CONFLICT = ("fail", "skip", "touch")
ERASED_EMAIL = "erased:{user_id}"  # not an email address: it can never sign up nor be invited
CHUNK_RECORDS = 1000  # records per export chunk
CHUNK_BYTES = 1 << 20
LOOKUP_BATCH = 500

M = models
# Each kind: its table, its key columns, and the record fields that name the key.
TABLES = {"user": M.User, "organization": M.Organization, "member": M.Membership,
          "member_invitation": M.Invitation, "client_invitation": M.Invitation, "connection": M.Connection,
          "assignment": M.Assignment, "link": M.OrganizationLink, "resource": M.Resource,
          "resource_role": M.ResourceRole}


KEYS = {kind: tuple(c.name for c in model.__table__.primary_key) for kind, model in TABLES.items()}


def key_of(kind: str, columns: dict) -> tuple:
    return tuple([columns[name] for name in KEYS[kind]])


class ImportConflict(errors.AlreadyExists):
    reason = Reason.IMPORT_CONFLICT


@dataclass
class Staged:
    """The checked records of one kind: key -> (line, columns), in file order."""

    rows: dict[tuple, tuple[int, dict]] = field(default_factory=dict)
    existing: set[tuple] = field(default_factory=set)


@dataclass
class ImportResult:
    revision: int
    counts: dict[str, int]
    skipped: int

    @property
    def records(self) -> int:
        return sum(self.counts.values())


class Admin:
    def __init__(self, store: Store, lifetimes: Lifetimes | None = None, history=None, policy=None):
        self.store = store
        self.lifetimes = lifetimes or Lifetimes()
        self.history = history  # mandate.checks.history.History: which revision a past time names
        # The policy the records' resource types and roles are checked against: a Policy, or a
        # function giving the one served now (it may be reloaded); None checks no types.
        self.policy = policy

    # -- import ----------------------------------------------------------------------------

    @retried
    @reports_unchanged
    def import_records(self, records: Iterable[Record], on_conflict: str = "fail", *,
                       checked: bool = True) -> ImportResult:
        """Write every record in one transaction. `checked=False` (test worlds: `mandate serve
        --ephemeral --world`, policy tests, the pytest plugin) skips the business rules, so a
        world may hold what the service would refuse; references are checked either way."""
        if on_conflict not in ON_CONFLICT:
            raise errors.InvalidArgument("on_conflict", f"must be one of: {', '.join(ON_CONFLICT)}")
        staged = self._stage(records)
        with self.store.write(caller=calling_service()) as tx:
            tx.bulk = True
            tx.announce_later = checked  # a test world is read at once; an import is followed as a replica would
            writer = _Writer(tx, staged, on_conflict, checked, self.lifetimes.now())
            counts, skipped = writer.run()
            if not any(counts.values()):  # everything existed already: no revision, no event
                unchanged(tx, ImportResult(tx.revision - 1, counts, skipped))
            tx.emit(EventType.WORLD_IMPORTED, records=sum(counts.values()), skipped=skipped,
                    **{kind: count for kind, count in counts.items() if count})
        return ImportResult(tx.revision, counts, skipped)

    def _stage(self, records: Iterable[Record]) -> dict[str, Staged]:
        """Every record's fields checked, keyed; a key repeated in the file is refused."""
        now = self.lifetimes.now()
        policy = self.policy() if callable(self.policy) else self.policy
        staged = {kind: Staged() for kind in KINDS}
        emails: dict[str, int] = {}
        hashes: dict[str, int] = {}
        for record in records:
            columns = normalize(record, now)
            kind = record.kind
            if policy is not None and kind in ("resource", "resource_role"):
                declared(policy, record, columns)
            key = key_of(kind, columns)
            if kind == "link" and key[::-1] in staged[kind].rows:
                key = key[::-1]
            rows = staged[kind].rows
            if kind == "client_invitation" and key in staged["member_invitation"].rows or (
                    kind == "member_invitation" and key in staged["client_invitation"].rows):
                rows = staged["member_invitation" if kind == "client_invitation" else "client_invitation"].rows
            if key in rows:
                raise errors.InvalidArgument(
                    record.where, f"repeats the record of line {rows[key][0]} (one record per key)")
            if kind == "user":
                seen = emails.setdefault(columns["email"], record.line)
                if seen != record.line:
                    raise errors.AlreadyExists(f"{record.where}: email: the same email as the user of line {seen}",
                                               Reason.EMAIL_TAKEN)
            if columns.get("token_hash"):
                seen = hashes.setdefault(columns["token_hash"], record.line)
                if seen != record.line:
                    raise errors.InvalidArgument(f"{record.where}: token_hash",
                                                 f"the same as the invitation link of line {seen}")
            staged[kind].rows[key] = (record.line, columns)
        return staged

    # -- export ----------------------------------------------------------------------------

    @retried
    def export(self, at_revision: int | None, as_of: str | None) -> Iterator:
        """A generator: first the revision exported, then lists of records (JSON text), in the
        order of the world file, all read in one snapshot. Closing it ends the read."""
        from mandate.checks.history import kept_revision

        wanted = at_revision if as_of is None else self.history.revision_as_of(as_of)
        with self.store.read(snapshot=True) as session:
            if wanted is None:
                revision = session.execute(select(M.RevisionCounter.value)).scalar_one()
                past = None
            else:
                field = "as_of" if as_of is not None else "at_revision"
                revision = past = kept_revision(self.store, session, wanted, field)
            yield revision
            chunk, size = [], 0
            for kind, rows in _export_rows(session, past):
                for row in rows:
                    line = to_json(record_of(kind, row))
                    chunk.append(line)
                    size += len(line)
                    if len(chunk) >= CHUNK_RECORDS or size >= CHUNK_BYTES:
                        yield chunk
                        chunk, size = [], 0
            if chunk:
                yield chunk

    # -- erasure ---------------------------------------------------------------------------

    @retried
    def erase_person(self, user_id: str) -> int:
        """The person's email and display name leave every table; their memberships end as a
        removal ends them (R6, R18), and so does every role they hold on one resource; refused
        with LAST_OWNER, naming the organization, while they are the last active owner of one.
        Their id stays."""
        with self.store.write(caller=calling_service()) as tx:
            session = tx.session
            user = get_user(session, user_id)
            email, name = user.email, user.display_name
            memberships = session.execute(select(M.Membership).where(
                M.Membership.user_id == user_id, M.Membership.status != M.MemberStatus.REMOVED)
                .order_by(M.Membership.organization_id)).scalars().all()
            for membership in memberships:
                try:
                    end_membership(tx, membership)
                except errors.LastOwner:
                    raise errors.LastOwner(
                        f"user_id: the person is the last active owner of organization "
                        f"{membership.organization_id}; transfer its ownership first (R6)",
                        organization_id=membership.organization_id) from None
            # Roles on one resource held without a membership (a world file or an import may give
            # them to any user) end too: an erased person keeps no access (R6, R18).
            end_resource_roles(tx, M.ResourceRole.user_id == user_id, cause=M.EventCause.CASCADE)
            erased = ERASED_EMAIL.format(user_id=user_id)
            user.email, user.display_name, user.revision = erased, "", tx.revision
            users = models.HISTORY[M.User]
            session.execute(update(users).where(users.c.id == user_id).values(email=erased, display_name=""))
            self._erase_invitations(tx, email)
            _erase_from_events(session, [v for v in (email, name) if v])
            _erase_request_records(session, [v for v in (email, name) if len(v) >= 3])
            tx.emit(EventType.PERSON_ERASED, user_id=user_id)
            if not self.store.postgres:
                tx.after_commit.append(lambda: checkpoint(self.store))
        return tx.revision

    @staticmethod
    def _erase_invitations(tx: Transaction, email: str) -> None:
        invitations = tx.session.execute(select(M.Invitation).where(M.Invitation.email == email)).scalars().all()
        for invitation in invitations:
            if invitation.status == M.InvitationStatus.PENDING:
                invitation.status = M.InvitationStatus.CANCELLED
                tx.emit(EventType.INVITATION_CANCELLED, cause=M.EventCause.CASCADE,
                        organization_id=invitation.organization_id, invitation_id=invitation.id, kind=invitation.kind)
            invitation.email = ""
            invitation.revision = tx.revision


def declared(policy, record: Record, columns: dict) -> None:
    """A resource record is of a type the policy declares, under a parent its type may have (or at
    the top of an organization when its type may be); a role on one resource is a role its type
    declares. Else INVALID_ARGUMENT naming the record and the field: UNKNOWN_RESOURCE_TYPE,
    UNKNOWN_ROLE (as PutResource and GrantResourceRole refuse them)."""

    def declared_type(field: str, resource_type: str):
        block = policy.resource_types.get(resource_type)
        if block is None:
            raise RecordError(record, field, f"the policy declares no resource type {resource_type!r}; it declares: "
                                             f"{', '.join(policy.resource_types) or 'none'}",
                              Reason.UNKNOWN_RESOURCE_TYPE)
        return block

    if record.kind == "resource":
        resource_type = columns["type"]
        relations = declared_type("type", resource_type).relations
        if columns["parent_type"]:
            declared_type("parent", columns["parent_type"])
            if relations.get("parent") != columns["parent_type"]:
                allowed = f"a {relations['parent']}" if "parent" in relations else "none"
                raise RecordError(record, "parent", f"a {resource_type} has no parent of type "
                                                    f"{columns['parent_type']} (its parent: {allowed})")
        elif "organization" not in relations:
            raise RecordError(record, "parent", f"is required: a {resource_type} lives under a {relations['parent']}")
        return
    resource_type, role = columns["resource_type"], columns["role"]
    declared_type("resource", resource_type)
    roles = policy.roles.get(resource_type, ())
    if role not in roles:
        raise RecordError(record, "role", f"a {resource_type} declares no role {role!r}; its roles: "
                                          f"{', '.join(roles) or 'none'}", Reason.UNKNOWN_ROLE)


def _erase_from_events(session, values: list[str]) -> None:
    """Every event attribute holding one of `values` (an email, a name) loses it."""
    as_text = cast(M.Event.attributes, Text)
    patterns = [f"%{json.dumps(v)[1:-1]}%" for v in values]
    found = session.execute(select(M.Event).where(or_(*(as_text.like(p) for p in patterns)))).scalars().all()
    for event in found:
        attributes = dict(event.attributes)
        for key, value in attributes.items():
            if isinstance(value, str) and any(v in value for v in values):
                attributes[key] = ""
        event.attributes = attributes


def _erase_request_records(session, values: list[str]) -> None:
    """Request records whose kept reply or refusal holds one of `values` are dropped: a retry
    of that request runs again instead of replaying a reply that names the person."""
    found = "position(:needle IN response) > 0" if session.bind.dialect.name == "postgresql" \
        else "instr(response, :needle) > 0"
    for value in values:
        session.execute(text(f"DELETE FROM request_records WHERE {found} OR error_message LIKE :pattern ESCAPE '!'"),
                        {"needle": value.encode(), "pattern": "%" + _escape_like(value) + "%"})


def _escape_like(value: str) -> str:
    return value.replace("!", "!!").replace("%", "!%").replace("_", "!_")


def checkpoint(store: Store, attempts: int = 50) -> None:
    """SQLite: copy the write-ahead log into the database file and truncate it, so that no
    older page (an erased person's bytes) stays in the log. Readers in the middle of a read
    delay it; a few tries, a few milliseconds apart."""
    with store.engine.connect() as connection:
        connection.exec_driver_sql("PRAGMA busy_timeout=100")
        for _ in range(attempts):
            busy = connection.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)").first()[0]
            if not busy:
                return
            time.sleep(0.01)
        connection.exec_driver_sql("PRAGMA busy_timeout=30000")


# -- export -------------------------------------------------------------------------------


def _export_rows(session, past: int | None):
    """(kind, rows) in world order; rows of the past from the history."""
    def rows(model, *where):
        table = model.__table__ if past is None else models.HISTORY[model]
        statement = select(*(table.c[c.name] for c in model.__table__.columns))
        if past is not None:
            statement = statement.where(table.c.revision <= past, or_(table.c.ended_revision.is_(None),
                                                                       table.c.ended_revision > past))
        statement = statement.where(*(w(table) for w in where))
        statement = statement.order_by(*(table.c[c.name] for c in model.__table__.primary_key))
        return session.execute(statement.execution_options(yield_per=2000))

    yield "user", rows(M.User)
    yield "organization", rows(M.Organization)
    yield "member", rows(M.Membership)
    if past is None:  # invitations have no history: only an export of the present holds them
        pending = [lambda t: t.c.status == M.InvitationStatus.PENDING]
        yield "member_invitation", rows(M.Invitation, *pending, lambda t: t.c.kind == M.InvitationKind.MEMBER)
        yield "client_invitation", rows(M.Invitation, *pending, lambda t: t.c.kind == M.InvitationKind.CLIENT)
    yield "connection", rows(M.Connection)
    yield "assignment", rows(M.Assignment)
    yield "link", rows(M.OrganizationLink, lambda t: t.c.organization_id < t.c.other_organization_id)
    yield "resource", rows(M.Resource)
    yield "resource_role", rows(M.ResourceRole, lambda t: t.c.granted.is_(True))  # a revoked role is no fact


# -- import, inside the transaction -------------------------------------------------------


class _Writer:
    def __init__(self, tx: Transaction, staged: dict[str, Staged], on_conflict: str, checked: bool, now: str):
        self.tx = tx
        self.session = tx.session
        self.staged = staged
        self.on_conflict = on_conflict
        self.checked = checked
        self.now = now
        self.skipped = 0
        self.organizations: dict[str, dict] = {}  # org id -> columns (file, or store)

    def run(self) -> tuple[dict[str, int], int]:
        self._owner_memberships()
        for kind in KINDS:
            self._find_existing(kind)
        self._resolve_conflicts()
        self._place_resources()
        self._check_references()
        if self.checked:
            self._check_records()
        self._fill_currency()
        counts = self._write()
        if self.checked:
            self._check_rules()
        return counts, self.skipped

    # Organizations imply their owner's membership, unless the file has one for them.
    def _owner_memberships(self) -> None:
        members = self.staged["member"].rows
        for (org_id,), (line, org) in self.staged["organization"].rows.items():
            key = (org_id, org["owner_id"])
            if key not in members:
                members[key] = (line, {"organization_id": org_id, "user_id": org["owner_id"], "role": "owner",
                                       "status": "active", "partner_employee": False, "access_expires_at": None,
                                       "implied": True})

    def _find_existing(self, kind: str) -> None:
        staged = self.staged[kind]
        if not staged.rows:
            return
        model = TABLES[kind]
        table = model.__table__
        if self.session.execute(select(1).select_from(table).limit(1)).first() is None:
            return
        keys = [table.c[c.name] for c in table.primary_key]
        wanted = list(staged.rows)
        for start in range(0, len(wanted), LOOKUP_BATCH):
            batch = wanted[start:start + LOOKUP_BATCH]
            condition = keys[0].in_([k[0] for k in batch]) if len(keys) == 1 else tuple_(*keys).in_(batch)
            staged.existing.update(tuple(row) for row in self.session.execute(select(*keys).where(condition)))

    def _resolve_conflicts(self) -> None:
        conflicts = [(line, kind, key) for kind, staged in self.staged.items()
                     for key in staged.existing for line in (staged.rows[key][0],)]
        if not conflicts:
            return
        if self.on_conflict == "fail":
            line, kind, key = min(conflicts)
            where = Record(line, kind, _fields_of(kind, self.staged[kind].rows[key][1])).where
            raise ImportConflict(f"{where}: exists already (on_conflict fail; skip keeps it, touch replaces it)",
                                 line=str(line), kind=kind)
        if self.on_conflict == "skip":
            for _, kind, key in conflicts:
                _, columns = self.staged[kind].rows.pop(key)
                self.skipped += not columns.get("implied")
            for staged in self.staged.values():
                staged.existing.clear()
        # touch: existing rows are replaced (upserted), implied owner memberships excepted
        members = self.staged["member"]
        for key in list(members.existing):
            if members.rows[key][1].get("implied"):
                del members.rows[key]
                members.existing.discard(key)

    # References: to records of the file, or to rows of the store.
    def _check_references(self) -> None:
        users = {k[0] for k in self.staged["user"].rows}
        orgs = {k[0] for k in self.staged["organization"].rows}
        for (org_id,), (_, org) in self.staged["organization"].rows.items():
            self.organizations[org_id] = org
        wanted_users: dict[str, tuple[int, str, str]] = {}
        wanted_orgs: dict[str, tuple[int, str, str]] = {}

        def need(ids, where, value, field_name, line, kind):
            if value is not None and value not in ids and value not in where:
                where[value] = (line, kind, field_name)

        references = {
            "organization": (("owner_id", "owner", "u"),),
            "member": (("organization_id", "organization", "o"), ("user_id", "user", "u")),
            "member_invitation": (("organization_id", "organization", "o"), ("invited_by", "invited_by", "u")),
            "client_invitation": (("organization_id", "partner", "o"), ("invited_by", "invited_by", "u")),
            "connection": (("partner_id", "partner", "o"), ("client_id", "client", "o")),
            "assignment": (("partner_id", "partner", "o"), ("client_id", "client", "o"), ("user_id", "user", "u")),
            "link": (("organization_id", "organizations", "o"), ("other_organization_id", "organizations", "o")),
            "resource": (("organization_id", "organization", "o"),),
            "resource_role": (("user_id", "user", "u"),),
        }
        for kind, fields in references.items():
            for line, columns in self.staged[kind].rows.values():
                for column, field_name, target in fields:
                    if target == "u":
                        need(users, wanted_users, columns[column], field_name, line, kind)
                    else:
                        need(orgs, wanted_orgs, columns[column], field_name, line, kind)
        found_users = self._present(M.User.id, list(wanted_users))
        for user_id, (line, kind, field_name) in sorted(wanted_users.items(), key=lambda i: i[1][0]):
            if user_id not in found_users:
                raise errors.NotFound(f"{self._where(kind, line)}: {field_name}: no user {user_id!r} in the file "
                                      "or the store", Reason.USER_NOT_FOUND)
        present = self._present(M.Organization.id, list(wanted_orgs))
        for org_id, (line, kind, field_name) in sorted(wanted_orgs.items(), key=lambda i: i[1][0]):
            if org_id not in present:
                raise errors.NotFound(f"{self._where(kind, line)}: {field_name}: no organization {org_id!r} in the "
                                      "file or the store", Reason.ORGANIZATION_NOT_FOUND)
        for org_id in present:
            self.organizations.setdefault(org_id, None)
        stored = [o for o, columns in self.organizations.items() if columns is None]
        for start in range(0, len(stored), LOOKUP_BATCH):
            for row in self.session.execute(select(M.Organization.__table__).where(
                    M.Organization.id.in_(stored[start:start + LOOKUP_BATCH]))):
                self.organizations[row.id] = row._asdict()

    # Nested resources: in their top ancestor's organization; roles: on a resource that exists.
    def _place_resources(self) -> None:
        resources = self.staged["resource"].rows
        stored: dict[tuple[str, str], str | None] = {}

        def in_store(key: tuple[str, str]) -> str | None:
            if key not in stored:
                stored[key] = self.session.execute(select(M.Resource.organization_id).where(
                    M.Resource.type == key[0], M.Resource.id == key[1], M.Resource.deleted.is_(False))).scalar()
            return stored[key]

        def organization_of(key: tuple[str, str], below: tuple) -> str:
            columns = resources[key][1]
            if columns["organization_id"] is not None:
                return columns["organization_id"]
            parent = (columns["parent_type"], columns["parent_id"])
            if parent == key or parent in below:
                self._fail("resource", key, errors.FailedPrecondition,
                           "parent: the parents of the file's resources make a cycle", Reason.PARENT_CYCLE)
            found = organization_of(parent, (*below, key)) if parent in resources else in_store(parent)
            if found is None:
                self._fail("resource", key, errors.NotFound, f"parent: no resource {':'.join(parent)!r} in the file "
                           "or the store", Reason.PARENT_NOT_FOUND)
            columns["organization_id"] = found
            return found

        for key in resources:
            organization_of(key, ())
        for key, (_, role) in self.staged["resource_role"].rows.items():
            resource = (role["resource_type"], role["resource_id"])
            if resource not in resources and in_store(resource) is None:
                self._fail("resource_role", key, errors.NotFound, f"resource: no resource {':'.join(resource)!r} in "
                           "the file or the store", Reason.RESOURCE_NOT_FOUND)

    def _present(self, column, ids: list[str]) -> set[str]:
        found = set()
        for start in range(0, len(ids), LOOKUP_BATCH):
            found.update(self.session.execute(select(column).where(column.in_(ids[start:start + LOOKUP_BATCH])))
                         .scalars())
        return found

    def _where(self, kind: str, line: int) -> str:
        for columns_line, columns in self.staged[kind].rows.values():
            if columns_line == line:
                return Record(line, kind, _fields_of(kind, columns)).where
        return f"line {line}: {kind}"

    def _fail(self, kind: str, key: tuple, error: type[errors.DomainError], problem: str, reason=None):
        line, columns = self.staged[kind].rows[key]
        where = Record(line, kind, _fields_of(kind, columns)).where
        raise error(f"{where}: {problem}", reason) if reason else error(f"{where}: {problem}")

    # Rules one record shows by itself (and its partner's currency).
    def _check_records(self) -> None:
        for key, (_, m) in self.staged["member"].rows.items():
            if m["role"] == M.Role.OWNER and m["access_expires_at"]:
                self._fail("member", key, errors.FailedPrecondition,
                           "access_expires_at: an owner's membership does not end by itself (R6)")
            if m["partner_employee"] and m["role"] != M.Role.COLLEAGUE:
                self._fail("member", key, errors.FailedPrecondition,
                           f"partner_employee: only colleagues can be partner employees; this member is "
                           f"{m['role']} (R15)", Reason.NOT_A_COLLEAGUE)
        for key, (_, invitation) in self.staged["member_invitation"].rows.items():
            if invitation["role"] == M.Role.OWNER and invitation["access_expires_at"]:
                self._fail("member_invitation", key, errors.FailedPrecondition,
                           "access_expires_at: an owner's membership does not end by itself (R6)")
        for kind, column in (("client_invitation", "organization_id"), ("connection", "partner_id")):
            for key, (_, row) in self.staged[kind].rows.items():
                partner = self.organizations[row[column]]
                if row["currency"] and row["currency"] != partner["currency"]:
                    self._fail(kind, key, errors.CurrencyMismatch,
                               f"currency: {row['currency']} must be the partner's currency {partner['currency']} "
                               "(R13)")

    def _fill_currency(self) -> None:
        for kind, column in (("client_invitation", "organization_id"), ("connection", "partner_id")):
            for _, row in self.staged[kind].rows.values():
                if not row["currency"]:
                    row["currency"] = self.organizations[row[column]]["currency"]

    def _write(self) -> dict[str, int]:
        revision = self.tx.revision
        counts = {}
        for kind in KINDS:
            if kind == "connection":
                self._stub_invitations()
            staged = self.staged[kind]
            model = TABLES[kind]
            table = model.__table__
            names = [c.name for c in table.columns]
            fresh, replaced = [], []
            for key, (_, columns) in staged.rows.items():
                row = {**_defaults(kind), **columns, "revision": revision}
                row.pop("implied", None)
                (replaced if key in staged.existing else fresh).append(row)
            if kind == "link":  # both directions
                for rows in (fresh, replaced):
                    rows.extend([{**r, "organization_id": r["other_organization_id"],
                                  "other_organization_id": r["organization_id"]} for r in list(rows)])
            bulk.insert_new(self.session, table, names, ([row[n] for n in names] for row in fresh))
            bulk.upsert(self.session, table, replaced)
            counts[kind] = len(staged.rows) - sum(1 for c in staged.rows.values() if c[1].get("implied"))
        return counts

    def _stub_invitations(self) -> None:
        """A connection refers to the invitation it came from; one imported without it gets a
        finished invitation of its own (never exported)."""
        invitations = self.staged["client_invitation"].rows
        stubs = []
        for _, connection in self.staged["connection"].rows.values():
            invitation_id = connection["invitation_id"]
            if (invitation_id,) in invitations or (invitation_id,) in self.staged["member_invitation"].rows:
                continue
            stubs.append((invitation_id, connection))
        if not stubs:
            return
        empty = self.session.execute(select(1).select_from(M.Invitation).limit(1)).first() is None
        present = set() if empty else self._present(M.Invitation.id, [i for i, _ in stubs])
        rows = []
        for invitation_id, c in stubs:
            if invitation_id in present:
                continue
            partner = self.organizations[c["partner_id"]]
            rows.append({"id": invitation_id, "kind": "client", "organization_id": c["partner_id"], "email": "",
                         "role": "", "status": "finished", "invited_by": partner["owner_id"],
                         "customer_name": c["customer_name"], "customer_number": c["customer_number"],
                         "currency": c["currency"], "requested_scopes": c["requested_scopes"], "token_hash": None,
                         "created_at": c["connected_at"], "expires_at": c["connected_at"],
                         "access_expires_at": None, "revision": self.tx.revision})
            present.add(invitation_id)
        table = M.Invitation.__table__
        names = [col.name for col in table.columns]
        bulk.insert_new(self.session, table, names, ([r[n] for n in names] for r in rows))

    # Rules over the whole world after the writes (seats, owners, partner records).
    def _check_rules(self) -> None:
        session, revision = self.session, self.tx.revision
        touched = {c["organization_id"] for _, c in self.staged["member"].rows.values()}
        touched |= {c["organization_id"] for _, c in self.staged["member_invitation"].rows.values()}
        touched |= {k[0] for k in self.staged["organization"].rows}
        # R6: every organization keeps an active owner.
        owned = set(session.execute(select(M.Membership.organization_id).where(
            M.Membership.role == M.Role.OWNER, M.Membership.status == M.MemberStatus.ACTIVE)
            .group_by(M.Membership.organization_id)).scalars())
        for org_id in sorted(touched - owned, key=lambda o: self._member_line(o)):
            raise errors.LastOwner(f"line {self._member_line(org_id)}: organization {org_id} would have no active "
                                   "owner (R6)")
        # R5: members (not removed) and pending member invitations within the seat limit.
        limited = dict(session.execute(select(M.Organization.id, M.Organization.seat_limit)
                                       .where(M.Organization.seat_limit > 0)).all())
        if limited and touched & set(limited):
            taken = defaultdict(int)
            for org_id, count in session.execute(
                    select(M.Membership.organization_id, func.count()).where(
                        M.Membership.status != M.MemberStatus.REMOVED).group_by(M.Membership.organization_id)):
                taken[org_id] += count
            for org_id, count in session.execute(
                    select(M.Invitation.organization_id, func.count()).where(
                        M.Invitation.kind == M.InvitationKind.MEMBER, M.Invitation.status == M.InvitationStatus.PENDING,
                        M.Invitation.expires_at > self.now).group_by(M.Invitation.organization_id)):
                taken[org_id] += count
            over = sorted((self._org_line(o), o) for o in touched & set(limited) if taken[o] > limited[o])
            if over:
                line, org_id = over[0]
                raise errors.SeatLimitReached(
                    f"line {line}: organization {org_id} would hold {taken[org_id]} members and pending invitations, "
                    f"over its seat limit of {limited[org_id]} (R5)")
        # R19: one partner record per person and client.
        A, Mem, C = M.Assignment, M.Membership, M.Connection
        doubled = session.execute(select(A.user_id, A.client_id).where(A.assigned.is_(True))
                                  .group_by(A.user_id, A.client_id).having(func.count() > 1)).all()
        assignments = self.staged["assignment"].rows
        for user_id, client_id in doubled:
            for key in assignments:
                if key[1] == client_id and key[2] == user_id and assignments[key][1]["assigned"]:
                    self._fail("assignment", key, errors.PartnerRecordConflict,
                               f"user {user_id} is already associated with another partner record for this "
                               "client (R19)")
        # R15: an assignment needs a tagged colleague of the partner and a live connection.
        wrong = session.execute(
            select(A.partner_id, A.client_id, A.user_id, Mem.status, Mem.partner_employee, C.status)
            .join(Mem, (Mem.organization_id == A.partner_id) & (Mem.user_id == A.user_id), isouter=True)
            .join(C, (C.partner_id == A.partner_id) & (C.client_id == A.client_id), isouter=True)
            .where(A.assigned.is_(True),
                   or_(A.revision == revision, Mem.revision == revision, C.revision == revision),
                   or_(Mem.status.is_(None), Mem.status == M.MemberStatus.REMOVED, Mem.partner_employee.is_(False),
                       C.status.is_(None), C.status == M.ConnectionStatus.DISCONNECTED)).limit(1)).first()
        if wrong is not None:
            partner_id, client_id, user_id, member_status, tagged, connection_status = wrong
            key = (partner_id, client_id, user_id)
            kind, key = ("assignment", key) if key in assignments else ("member", (partner_id, user_id))
            if connection_status is None or connection_status == M.ConnectionStatus.DISCONNECTED:
                if kind == "member" or (partner_id, client_id) in self.staged["connection"].rows:
                    kind, key = ("connection", (partner_id, client_id)) if (
                        partner_id, client_id) in self.staged["connection"].rows else (kind, key)
                self._fail(kind, key, errors.FailedPrecondition,
                           f"the assignment of {user_id} needs a live connection of {partner_id} to {client_id}",
                           Reason.CONNECTION_STATE)
            self._fail(kind, key, errors.NotPartnerEmployee,
                       f"user {user_id} is not a tagged partner employee of {partner_id} (R15), and is assigned to "
                       f"client {client_id}")

    def _member_line(self, org_id: str) -> int:
        """The last member record of the organization in the file (else its own record's line)."""
        lines = [line for key, (line, c) in self.staged["member"].rows.items()
                 if key[0] == org_id and not c.get("implied")]
        return max(lines) if lines else self._org_line(org_id)

    def _org_line(self, org_id: str) -> int:
        found = self.staged["organization"].rows.get((org_id,))
        if found:
            return found[0]
        lines = [line for key, (line, _) in self.staged["member"].rows.items() if key[0] == org_id]
        lines += [line for line, c in self.staged["member_invitation"].rows.values() if c["organization_id"] == org_id]
        return max(lines) if lines else 0


def _defaults(kind: str) -> dict:
    if kind in ("member_invitation", "client_invitation"):
        return {"access_expires_at": None}
    return {}


def _fields_of(kind: str, columns: dict) -> dict:
    """Record fields enough to name a record (see worldfile.describe)."""
    names = {"organization_id": "organization" if kind != "client_invitation" else "partner",
             "user_id": "user", "partner_id": "partner", "client_id": "client"}
    fields = {names.get(k, k): v for k, v in columns.items()}
    if kind == "link":
        fields["organizations"] = [columns["organization_id"], columns["other_organization_id"]]
    if kind == "resource_role":
        fields["resource"] = f"{columns['resource_type']}:{columns['resource_id']}"
    return fields

