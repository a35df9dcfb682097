"""The fact index: the access facts of the store, held in memory for the check plane.

It is computed once per change, not once per check: it loads every fact row at start, then
catches up by reading the rows whose revision is newer than its own (after each local commit,
when a check asks for a newer revision, and on a timer for writes by other processes).
A check then builds its `Subject` from a few dictionary look-ups.

Access given until a time (`access_expires_at`) is ended by a change the sweeper writes
(mandate.shared.expiry), within a second, or later when the database is away. Until then the
index knows each live fact's end, and a decision treats a fact whose end has passed as the
sweeper will write it (`ended`): an access whose end has passed is never granted.
"""

from __future__ import annotations

import collections
import datetime
import functools
import gc
import heapq
import math
import sys
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, replace

from sqlalchemy import func, select

from mandate import deadlines, errors, tracing
from mandate.clock import SystemClock
from mandate.engine.facts import HOME, AssignmentFact, ConnectionFact, MembershipFact, Subject
from mandate.store import history, models
from mandate.store.db import Store

# A build of the past looks at its caller's deadline this often (in rows applied).
DEADLINE_ROWS = 10_000
# The first load reads each table in pieces of this many rows, applied as they come: the rows of
# a whole table at once would grow the process by far more than the facts they leave behind.
LOAD_ROWS = 20_000
# Shared values (see `_shared`) are kept while there are fewer than this many of a kind.
SHARED_LIMIT = 100_000

_intern = sys.intern


def name(value):
    """One string object per id, shared by every map that holds it (ids repeat across rows)."""
    try:
        return _intern(value)
    except TypeError:  # a str subclass (an enum member), or None
        return value


@dataclass(frozen=True, slots=True)
class Member:
    role: str
    status: str
    partner_employee: bool


@dataclass(frozen=True, slots=True)
class Link:
    status: str
    granted_scopes: frozenset[str]
    employee_approval: str


# Keys of the facts that end by itself, in `FactIndex._ends`.
MEMBERSHIP, CONNECTION, ASSIGNMENT, ROLE = "membership", "connection", "assignment", "role"
NOTHING_ENDED: frozenset = frozenset()

# The columns each fact table's rows are read with (what the `_apply_*` methods use).
COLUMNS = {
    models.User: ("id",),
    models.Organization: ("id",),
    models.Membership: ("organization_id", "user_id", "role", "status", "partner_employee", "access_expires_at"),
    models.Resource: ("type", "id", "organization_id", "deleted", "parent_type", "parent_id"),
    models.Connection: ("partner_id", "client_id", "status", "granted_scopes", "employee_approval",
                        "access_expires_at"),
    models.Assignment: ("partner_id", "client_id", "user_id", "assigned", "client_approved", "access_expires_at"),
    models.OrganizationLink: ("organization_id", "other_organization_id"),
    models.ResourceRole: ("resource_type", "resource_id", "user_id", "role", "granted", "access_expires_at"),
}


def _columns(model):
    return [model.__table__.c[column] for column in COLUMNS[model]]


class _Shared:
    """Equal immutable values as one object: the few distinct memberships (role, status,
    employee), connections (status, scopes, approval) and partner sets of assignments are
    held once for the whole process, not once per fact row."""

    def __init__(self):
        self._values: dict = {}
        self._lock = threading.Lock()

    def get(self, key, make):
        value = self._values.get(key)
        if value is None:
            value = make()
            if len(self._values) < SHARED_LIMIT:
                with self._lock:
                    value = self._values.setdefault(key, value)
        return value


_members, _links, _assigned = _Shared(), _Shared(), _Shared()
NO_ASSIGNMENTS: dict[str, bool] = {}
_NOTHING: dict = {}


class PairMap(Mapping):
    """A map keyed by pairs (a, b), held as a -> {b -> value}: no tuple object per entry, and a
    look-up writes to no object of the map but the inner map and the value it finds (a server
    process forked from the parent's index copies only the pages it writes to: see
    `mandate.runtime.server.preload`)."""

    __slots__ = ("_outer", "_size")

    def __init__(self):
        self._outer: dict = {}
        self._size = 0

    def get(self, key, default=None):
        inner = self._outer.get(key[0])
        return default if inner is None else inner.get(key[1], default)

    def __contains__(self, key) -> bool:
        inner = self._outer.get(key[0])
        return inner is not None and key[1] in inner

    def __getitem__(self, key):
        inner = self._outer.get(key[0])
        if inner is None:
            raise KeyError(key)
        return inner[key[1]]

    def __setitem__(self, key, value) -> None:
        first, second = key
        inner = self._outer.get(first)
        if inner is None:
            inner = self._outer[first] = {}
        if second not in inner:
            self._size += 1
        inner[second] = value

    def pop(self, key, default=None):
        first, second = key
        inner = self._outer.get(first)
        if inner is None or second not in inner:
            return default
        self._size -= 1
        value = inner.pop(second)
        if not inner:
            del self._outer[first]
        return value

    def __delitem__(self, key) -> None:
        if key not in self:
            raise KeyError(key)
        self.pop(key)

    def of(self, first) -> dict:
        """Every (second -> value) under `first` (read only)."""
        return self._outer.get(first, _NOTHING)

    def __iter__(self):
        for first, inner in self._outer.items():
            for second in inner:
                yield first, second

    def items(self):
        return [((first, second), value) for first, inner in self._outer.items() for second, value in inner.items()]

    def __len__(self) -> int:
        return self._size


class FactIndex:
    def __init__(self, store: Store, clock: SystemClock | None = None):
        self.store = store
        # The time the ends are compared with; None: no end has passed (an index of the past).
        self.clock = clock
        self.revision = -1
        self.frozen = False  # an index of the past (`at`) never catches up
        self.rows = 0  # fact rows an index of the past was built from (its size, for the history's budget)
        # How long each catch-up that found changes took, until the metrics take them.
        self.catch_up_seconds: collections.deque[float] = collections.deque(maxlen=10_000)
        self._catching_up = threading.Lock()  # one catch-up at a time
        # Held while changes are applied; readers of several maps take it, and a list holds it for
        # its whole answer (re-entrant: the decisions inside it read the index too).
        self._applying = threading.RLock()
        self.users: set[str] = set()
        self.organizations: set[str] = set()
        self.resources = PairMap()  # (type, id) -> organization id (the top ancestor's)
        self.by_organization: dict[tuple[str, str], set[str]] = {}  # (type, organization) -> resource ids
        self.parents: dict[tuple[str, str], tuple[str, str]] = {}  # (type, id) -> its parent's (nested ones)
        self.nested_in: dict[tuple[str, str], set[str]] = {}  # (type, organization) -> ids of nested ones
        self.children: dict[tuple[str, str], set[tuple[str, str]]] = {}  # (type, id) -> its children
        # Chains of nested resources (and their types) as checks found them, until a resource changes.
        self._nested: dict[tuple[str, str], tuple[tuple, tuple[str, ...]]] = {}
        # Roles on one resource (GrantResourceRole): user -> (type, id) -> roles, and who holds any.
        self.resource_roles: dict[str, dict[tuple[str, str], frozenset[str]]] = {}
        self.role_holders: dict[tuple[str, str], set[str]] = {}
        self.memberships: dict[str, dict[str, Member]] = {}  # user -> organization -> member
        self.members: dict[str, set[str]] = {}  # organization -> users (not removed)
        self.partners: dict[str, dict[str, Link]] = {}  # client -> partner -> connection (any status)
        self.clients: dict[str, set[str]] = {}  # partner -> clients (any status)
        self.assignments = PairMap()  # (user, client) -> partner -> approved (shared, read only)
        self.links: dict[str, set[str]] = {}  # organization -> linked organizations
        # When the live facts that end by themselves end: (MEMBERSHIP, user, organization),
        # (CONNECTION, partner, client), (ASSIGNMENT, user, client, partner) -> seconds since the epoch.
        self._ends: dict[tuple, float] = {}
        self._ends_version = 0  # counts the changes of _ends
        self._soonest: list[tuple[float, tuple]] = []  # a heap of _ends' entries (and of replaced ones)
        # The last answer of `ended`: the version of _ends it read, until when it holds, the keys.
        self._passed: tuple[int, float, frozenset] = (-1, 0.0, NOTHING_ENDED)

    @classmethod
    def at(cls, store: Store, revision: int, around: tuple[str, str, str] | None = None) -> FactIndex:
        """The facts as they were at a past `revision`, read from the history in one snapshot;
        such an index stays at that revision (access history). With `around` (user id, resource
        type, resource id), only the facts of one decision about them: a few look-ups instead of
        the whole store, enough for `Check`, `Explain` and `ListActions` of that user there."""
        index = cls(store)
        with tracing.span("mandate.history.load_facts", **{"mandate.revision": str(revision),
                                                           "mandate.whole": around is None}), \
                store.read(snapshot=True) as session:
            if around is None:
                for table, apply in index._tables():
                    deadlines.check("the facts of the past were not built")
                    for row in history.fact_rows(session, table, revision):
                        apply(row)
                        index.rows += 1
                        if index.rows % DEADLINE_ROWS == 0:  # a caller that gave up stops the build
                            deadlines.check("the facts of the past were not built")
            else:
                index._load_around(session, revision, *around)
            # Asked again inside the same snapshot: retention may have let go of versions of
            # this revision since the caller looked, and partial facts must never answer.
            kept_from = history.horizon(session)
        if revision < kept_from:
            raise errors.RevisionUnavailable(f"at_revision: the history now starts at revision {kept_from} "
                                             "(the history retention let go of older ones)")
        index.revision = revision
        index.frozen = True
        return index

    def _load_around(self, session, revision: int, user_id: str, resource_type: str, resource_id: str) -> None:
        """What `subject` reads about the user and the resource's organization (see `_subject`)."""
        U, Org, M, R = models.User, models.Organization, models.Membership, models.Resource
        C, A, L = models.Connection, models.Assignment, models.OrganizationLink

        def load(model, apply, *where) -> list:
            rows = history.fact_rows(session, model, revision, *where)
            for row in rows:
                apply(row)
            return rows

        load(U, self._apply_user, U.id == user_id)
        load(M, self._apply_membership, M.user_id == user_id)
        organization_id = resource_id
        if resource_type != "Organization":
            key: tuple[str, str] | None = (resource_type, resource_id)
            while key is not None and key not in self.resources:  # the resource and its ancestors
                load(R, self._apply_resource, R.type == key[0], R.id == key[1])
                key = self.parents.get(key)
            organization_id = self.resources.get((resource_type, resource_id))
            if organization_id is None:
                return
            load(models.ResourceRole, self._apply_resource_role, models.ResourceRole.user_id == user_id)
        load(Org, self._apply_organization, Org.id == organization_id)
        load(C, self._apply_connection, C.client_id == organization_id)
        load(A, self._apply_assignment, A.user_id == user_id, A.client_id == organization_id)
        load(L, self._apply_link, L.organization_id == organization_id)

    # -- keeping up with the store -------------------------------------------------------

    def adopt(self, store: Store, clock: SystemClock | None) -> None:
        """Carry on with this process's store and clock from an index loaded elsewhere (by the
        parent of `--processes`, before it forked this process): `catch_up` then reads only
        what changed since the revision loaded."""
        if self.frozen:
            raise ValueError("an index of the past is never adopted")
        self.store, self.clock = store, clock

    def catch_up(self) -> int:
        """Apply every change committed since our revision; returns the revision reached.

        The rows are read in one read transaction (one snapshot of the store, revision included)
        and applied while readers wait, so a check never sees a mix of states that never existed
        together: neither a half-read store nor a half-applied change."""
        if self.frozen:
            return self.revision
        with self._catching_up:
            if self.store.current_revision() == self.revision:
                return self.revision
            started = time.perf_counter()
            since = self.revision
            if since < 0:
                self._load()
                self.catch_up_seconds.append(time.perf_counter() - started)
                return self.revision
            changes = []
            with tracing.span("mandate.index.catch_up", **{"mandate.from_revision": str(since)}), \
                    self.store.read(snapshot=True) as session:
                target = session.execute(select(models.RevisionCounter.value)).scalar_one()
                # One statement finds which tables changed (each one's newest revision, from its
                # revision index), so catching up after one write reads one or two tables, not all.
                tables = self._tables()
                newest = session.execute(select(*(
                    select(func.max(table.revision)).scalar_subquery() for table, _ in tables))).one()
                for (table, apply), latest in zip(tables, newest, strict=True):
                    if latest is not None and latest > since:
                        # Plain rows, not ORM objects: loading a large store at start is much faster.
                        rows = session.execute(select(*_columns(table)).where(table.revision > since)).all()
                        changes.append((apply, rows))
            with self._applying:
                for apply, rows in changes:
                    for row in rows:
                        apply(row)
                self.revision = max(self.revision, target)
            self.catch_up_seconds.append(time.perf_counter() - started)
            return self.revision

    def _load(self) -> None:
        """The first load: every fact row, read in one snapshot in pieces and applied as they
        come (readers wait: there are none yet), with the garbage collector off meanwhile (the
        load only adds live objects: collecting would walk them again and again)."""
        collecting = gc.isenabled()
        gc.disable()
        try:
            with tracing.span("mandate.index.load"), self.store.read(snapshot=True) as session, self._applying:
                target = session.execute(select(models.RevisionCounter.value)).scalar_one()
                for table, apply in self._tables():
                    result = session.execute(select(*_columns(table)).execution_options(yield_per=LOAD_ROWS))
                    for rows in result.partitions():
                        for row in rows:
                            apply(row)
                self.revision = max(self.revision, target)
        finally:
            if collecting:
                gc.enable()

    def apply_written(self, revision: int, written: list) -> bool:
        """After a local commit of `revision`: apply the fact rows it wrote, as its transaction
        read them just before committing, if the index stands at the revision before it (then
        nothing else is missing). False when it does not; the caller catches up instead."""
        with self._catching_up:
            if self.frozen or self.revision != revision - 1:
                return False
            started = time.perf_counter()
            apply = dict(self._tables())
            with self._applying:
                for model, rows in written:
                    for row in rows:
                        apply[model](row)
                self.revision = revision
            self.catch_up_seconds.append(time.perf_counter() - started)
            return True

    def _tables(self):
        return (
            (models.User, self._apply_user),
            (models.Organization, self._apply_organization),
            (models.Membership, self._apply_membership),
            (models.Resource, self._apply_resource),
            (models.Connection, self._apply_connection),
            (models.Assignment, self._apply_assignment),
            (models.OrganizationLink, self._apply_link),
            (models.ResourceRole, self._apply_resource_role),
        )

    # Every id goes through `name` and every value through the shared ones: a fact row costs
    # the map entries that find it, not copies of its strings (see docs/deploying.md, sizing).

    def _apply_user(self, row: models.User) -> None:
        self.users.add(name(row.id))

    def _apply_organization(self, row: models.Organization) -> None:
        self.organizations.add(name(row.id))

    def _apply_membership(self, row: models.Membership) -> None:
        user_id, organization_id = name(row.user_id), name(row.organization_id)
        by_org = self.memberships.get(user_id)
        if by_org is None:
            by_org = self.memberships[user_id] = {}
        removed = row.status == models.MemberStatus.REMOVED
        if removed:
            by_org.pop(organization_id, None)
            self.members.get(organization_id, set()).discard(user_id)
        else:
            role, status, employee = row.role, row.status, bool(row.partner_employee)
            by_org[organization_id] = _members.get((role, status, employee),
                                                   lambda: Member(name(role), name(status), employee))
            members = self.members.get(organization_id)
            if members is None:
                members = self.members[organization_id] = set()
            members.add(user_id)
        # An owner's membership never ends by itself (the sweeper only clears such an end).
        ends = None if removed or row.role == models.Role.OWNER else row.access_expires_at
        if ends is not None or self._ends:
            self._set_end((MEMBERSHIP, user_id, organization_id), ends)

    def _apply_resource(self, row: models.Resource) -> None:
        key = (name(row.type), name(row.id))
        if self._nested:
            self._nested = {}
        before = self.resources.pop(key, None)
        if before is not None:
            self.by_organization.get((key[0], before), set()).discard(key[1])
        parent = self.parents.pop(key, None)
        if parent is not None:
            self.children.get(parent, set()).discard(key)
            self.nested_in.get((key[0], before), set()).discard(key[1])
        if not row.deleted:
            organization_id = name(row.organization_id)
            self.resources[key] = organization_id
            place = (key[0], organization_id)
            ids = self.by_organization.get(place)
            if ids is None:
                ids = self.by_organization[place] = set()
            ids.add(key[1])
            if row.parent_type is not None:
                parent = (name(row.parent_type), name(row.parent_id))
                self.parents[key] = parent
                self.children.setdefault(parent, set()).add(key)
                self.nested_in.setdefault(place, set()).add(key[1])

    def _apply_resource_role(self, row: models.ResourceRole) -> None:
        user_id = name(row.user_id)
        key = (name(row.resource_type), name(row.resource_id))
        held = self.resource_roles.setdefault(user_id, {})
        roles = held.get(key, frozenset())
        roles = roles | {name(row.role)} if row.granted else roles - {row.role}
        if roles:
            held[key] = roles
            self.role_holders.setdefault(key, set()).add(user_id)
        else:
            held.pop(key, None)
            self.role_holders.get(key, set()).discard(user_id)
        ends = row.access_expires_at if row.granted else None
        if ends is not None or self._ends:
            self._set_end((ROLE, user_id, *key, row.role), ends)

    def _apply_connection(self, row: models.Connection) -> None:
        # Disconnected connections stay, with their status: the policy decides what they grant (R14).
        partner_id, client_id = name(row.partner_id), name(row.client_id)
        status, scopes, approval = row.status, frozenset(row.granted_scopes), row.employee_approval
        link = _links.get((status, scopes, approval),
                          lambda: Link(name(status), frozenset(name(scope) for scope in scopes), name(approval)))
        partners = self.partners.get(client_id)
        if partners is None:
            partners = self.partners[client_id] = {}
        partners[partner_id] = link
        clients = self.clients.get(partner_id)
        if clients is None:
            clients = self.clients[partner_id] = set()
        clients.add(client_id)
        live = row.status != models.ConnectionStatus.DISCONNECTED
        ends = row.access_expires_at if live else None
        if ends is not None or self._ends:
            self._set_end((CONNECTION, partner_id, client_id), ends)

    def _apply_assignment(self, row: models.Assignment) -> None:
        # The partners of one (user, client) as a shared read-only map: replaced, never changed.
        user_id, client_id, partner_id = name(row.user_id), name(row.client_id), name(row.partner_id)
        key = (user_id, client_id)
        before = self.assignments.get(key, NO_ASSIGNMENTS)
        if row.assigned:
            approved = bool(row.client_approved)
            if before.get(partner_id) is not approved:
                after = {**before, partner_id: approved}
                self.assignments[key] = _assigned.get(tuple(sorted(after.items())), lambda: after)
        elif partner_id in before:
            after = {p: a for p, a in before.items() if p != partner_id}
            if after:
                self.assignments[key] = _assigned.get(tuple(sorted(after.items())), lambda: after)
            else:
                del self.assignments[key]
        ends = row.access_expires_at if row.assigned else None
        if ends is not None or self._ends:
            self._set_end((ASSIGNMENT, user_id, client_id, partner_id), ends)

    def _set_end(self, key: tuple, ends: str | None) -> None:
        if self.clock is None:  # nothing ever ends in an index of the past
            return
        moment = None if ends is None else datetime.datetime.fromisoformat(ends).timestamp()
        if self._ends.get(key) == moment:
            return
        if moment is None:
            del self._ends[key]
        else:
            self._ends[key] = moment
            heapq.heappush(self._soonest, (moment, key))
        self._ends_version += 1
        if len(self._soonest) > 2 * len(self._ends) + 64:  # mostly entries of moved or removed ends
            self._soonest = [(moment, key) for key, moment in self._ends.items()]
            heapq.heapify(self._soonest)

    def ended(self) -> frozenset[tuple]:
        """The keys of the live facts (see `_ends`) whose end has passed at the clock's time:
        the sweeper has not written their ending yet, and decisions treat them as ended. Cheap
        on every decision: one look at the soonest end while it lies ahead, and the same set
        again while no other end has passed and no end has changed."""
        if self.clock is None or not self._ends:
            return NOTHING_ENDED
        now = self.clock.seconds()
        soonest = self._soonest
        if soonest and now < soonest[0][0]:
            return NOTHING_ENDED
        version, until, passed = self._passed
        if version == self._ends_version and now < until:
            return passed
        with self._applying:
            soonest = self._soonest
            while soonest and self._ends.get(soonest[0][1]) != soonest[0][0]:  # moved or removed since
                heapq.heappop(soonest)
            # Walk the heap from its root: a node still ahead has only later ends below it.
            found, until, nodes = set(), math.inf, [0]
            while nodes:
                node = nodes.pop()
                if node >= len(soonest):
                    continue
                moment, key = soonest[node]
                if moment > now:
                    until = min(until, moment)
                    continue
                if self._ends.get(key) == moment:  # not an entry of an end since moved or removed
                    found.add(key)
                nodes += (2 * node + 1, 2 * node + 2)
            passed = frozenset(found) if found else NOTHING_ENDED
            self._passed = (self._ends_version, until, passed)
            return passed

    def _apply_link(self, row: models.OrganizationLink) -> None:
        self.links.setdefault(name(row.organization_id), set()).add(name(row.other_organization_id))

    # -- questions of the check plane ----------------------------------------------------

    def organization_of(self, resource_type: str, resource_id: str) -> str | None:
        """The organization whose facts decide about a resource, or None if unknown."""
        if resource_type == "Organization":
            return resource_id if resource_id in self.organizations else None
        return self.resources.get((resource_type, resource_id))

    def chain(self, resource_type: str, resource_id: str) -> tuple[tuple[str, str], ...]:
        """The resource, its parent, ... up to its top ancestor; empty when it is not registered.
        A few look-ups per level, nothing remembered (no memory per resource beyond its row)."""
        key = (resource_type, resource_id)
        if key not in self.resources:
            return ()
        parent = self.parents.get(key)
        if parent is None:
            return (key,)
        links = [key]
        while parent is not None:
            if parent not in self.resources or len(links) > len(self.parents):
                return ()  # an ancestor is gone (never kept so by the writers) or a loop: unknown
            links.append(parent)
            parent = self.parents.get(parent)
        return tuple(links)

    def nested_chain(self, key: tuple[str, str]) -> tuple[tuple, tuple[str, ...]]:
        """(chain, its types) of a resource with a parent, remembered until a resource changes."""
        found = self._nested.get(key)
        if found is None:
            chain = self.chain(*key)
            found = (chain, tuple([t for t, _ in chain]))
            if len(self._nested) < 100_000:
                self._nested[key] = found
        return found

    def roles_on(self, user_id: str, chain: tuple[tuple[str, str], ...]) -> tuple[tuple[int, str], ...]:
        """The user's roles on a chain's resources, as (position, role). The resources' holders
        are asked first: most resources have none, and a look-up that misses writes to no object,
        where taking the user's map of roles writes its reference count (a server process forked
        from the parent's index copies every page it writes to: see `PairMap`)."""
        holders = self.role_holders
        if not any(user_id in holders.get(key, ()) for key in chain):
            return ()
        held = self.resource_roles.get(user_id)
        if not held:
            return ()
        ended = self.ended()
        if ended:  # a role whose end has passed counts as the sweeper will leave it: gone
            return tuple((position, role) for position, key in enumerate(chain) for role in sorted(held.get(key, ()))
                         if (ROLE, user_id, *key, role) not in ended)
        if len(chain) == 1:
            roles = held.get(chain[0])
            return () if roles is None else _on_the_resource(roles)
        return tuple((position, role) for position, key in enumerate(chain) for role in sorted(held.get(key, ())))

    def subject(self, user_id: str, organization_id: str, labels: dict[str, str] | None = None) -> Subject:
        """Everything the policy may know about this user and this organization. When `labels`
        is given, it is filled with the organization id behind each local label (for Explain)."""
        with self._applying:
            return self._subject(user_id, organization_id, labels)

    def _subject(self, user_id: str, organization_id: str, labels: dict[str, str] | None) -> Subject:
        own = self.memberships.get(user_id, {})
        if not own:
            return Subject()
        ended = self.ended()
        if ended:
            own = {org: member for org, member in own.items() if (MEMBERSHIP, user_id, org) not in ended}
        memberships: list[MembershipFact] = []
        home = own.get(organization_id)
        if labels is not None:
            labels[HOME] = organization_id
        if home is not None:
            memberships.append(MembershipFact(HOME, home.role, home.status, home.partner_employee))

        # Partners of this organization that the user belongs to, in a canonical order so
        # that equal situations give equal subjects whatever the ids.
        paths = []
        assigned = self.assignments.get((user_id, organization_id), {})
        for partner_id, link in self.partners.get(organization_id, {}).items():
            member = own.get(partner_id)
            if member is not None:
                approved = assigned.get(partner_id)
                if ended:
                    link, approved = self._as_swept(ended, user_id, organization_id, partner_id, link, approved)
                paths.append((member, link, approved, partner_id))
        connections: list[ConnectionFact] = []
        assignments: list[AssignmentFact] = []
        paths.sort(key=_path_order)
        for number, (member, link, approved, partner_id) in enumerate(paths):
            label = f"p{number}"
            if labels is not None:
                labels[label] = partner_id
            memberships.append(MembershipFact(label, member.role, member.status, member.partner_employee))
            connections.append(ConnectionFact(label, link.status, link.granted_scopes, link.employee_approval))
            if approved is not None:
                assignments.append(AssignmentFact(label, approved))

        linked_members = sorted(
            ((own[other], other) for other in self.links.get(organization_id, ()) if other in own),
            key=lambda pair: _member_order(pair[0]),
        )
        linked = []
        for number, (member, other) in enumerate(linked_members):
            label = f"l{number}"
            if labels is not None:
                labels[label] = other
            memberships.append(MembershipFact(label, member.role, member.status, member.partner_employee))
            linked.append(label)
        return Subject(tuple(memberships), tuple(connections), tuple(assignments), tuple(linked))

    @staticmethod
    def _as_swept(ended: frozenset, user_id: str, client_id: str, partner_id: str, link: Link,
                  approved: bool | None) -> tuple[Link, bool | None]:
        """A partner path as the sweeper will leave it: an ended connection is disconnected and
        ends its assignments (R14, R17); an ended assignment is gone."""
        if (CONNECTION, partner_id, client_id) in ended:
            return replace(link, status=models.ConnectionStatus.DISCONNECTED), None
        if (ASSIGNMENT, user_id, client_id, partner_id) in ended:
            return link, None
        return link, approved

    def member(self, user_id: str, organization_id: str) -> Member | None:
        """The user's membership in the organization, unless removed or ended (see `ended`)."""
        with self._applying:
            if (MEMBERSHIP, user_id, organization_id) in self.ended():
                return None
            return self.memberships.get(user_id, {}).get(organization_id)

    def connection(self, partner_id: str, client_id: str) -> Link | None:
        """The connection of the partner to the client (any status), disconnected if ended."""
        with self._applying:
            link = self.partners.get(client_id, {}).get(partner_id)
            if link is not None and (CONNECTION, partner_id, client_id) in self.ended():
                return replace(link, status=models.ConnectionStatus.DISCONNECTED)
            return link

    def one_state(self):
        """Hold the index still: every read inside sees one revision (a list's whole answer)."""
        return self._applying

    def resources_of(self, resource_type: str, organization_id: str) -> set[str]:
        """The ids of the resources of that type registered in the organization."""
        if resource_type == "Organization":
            return {organization_id} if organization_id in self.organizations else set()
        return self.by_organization.get((resource_type, organization_id), set())

    def reachable_organizations(self, user_id: str) -> set[str]:
        """Every organization about which the user has any fact: a superset of where they have access."""
        with self._applying:
            own = self.memberships.get(user_id, {})
            reachable = set(own)
            for organization_id in own:
                reachable |= self.clients.get(organization_id, set())
                reachable |= self.links.get(organization_id, set())
            for key in self.resource_roles.get(user_id, {}):
                organization_id = self.resources.get(key)
                if organization_id is not None:
                    reachable.add(organization_id)
            return reachable

    def candidate_users(self, organization_id: str, chain: tuple[tuple[str, str], ...] = ()) -> set[str]:
        """Every user with any fact about the organization (and the resource `chain`, with the
        roles on it): a superset of who has access."""
        with self._applying:
            users = set(self.members.get(organization_id, ()))
            for partner_id in self.partners.get(organization_id, {}):
                users |= self.members.get(partner_id, set())
            for other in self.links.get(organization_id, ()):
                users |= self.members.get(other, set())
            for key in chain:
                users |= self.role_holders.get(key, set())
            return users

    def role_holders_in(self, organization_id: str) -> set[str]:
        """Users holding a role on some resource of the organization."""
        with self._applying:
            return {user for key, holders in self.role_holders.items() if holders
                    and self.resources.get(key) == organization_id for user in holders}


@functools.lru_cache(maxsize=1024)
def _on_the_resource(roles: frozenset[str]) -> tuple[tuple[int, str], ...]:
    """Roles held on the resource itself, as the Subject writes them (shared: there are few sets)."""
    return tuple((0, role) for role in sorted(roles))


def _member_order(member: Member):
    return (member.role, member.status, member.partner_employee)


def _path_order(path):
    member, link, approved, _ = path
    return (_member_order(member), link.status, sorted(link.granted_scopes), link.employee_approval,
            approved is None, bool(approved))
