"""A seeded, deterministic dataset for the benchmark, written through the store layer.

Partners (owner, legal representatives, colleagues, some tagged as partner employees, some
paused), clients connected to them (granted scopes and employee approval varied) with their
own members, assignments with and without the client's approval, and projects in every
client. Rows are bulk-inserted with SQLAlchemy Core on the Store's engine after the
migrations; every row has revision 1, the revision counter is 1, and one
`bench.dataset_loaded` event stands for the whole load.

Generated databases are cached under var/bench/<dataset>.db, keyed by the generator version,
the schema head and the seed; the samples the load needs (check pairs with the decision the
domain rules predict, the big partner's legal representative, mutation targets) are kept
beside it in var/bench/<dataset>.json.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from alembic.script import ScriptDirectory
from mandate.store import models
from mandate.store.db import Store
from mandate.store.migrate import alembic_config, upgrade
from sqlalchemy import insert, select, update

GENERATOR_VERSION = 3  # 2: history tables with their look-up indexes (0004); 3: pages, posts, resource roles
SEED = 20240601
ROOT = Path(__file__).resolve().parent.parent
CACHE_DIR = ROOT / "var" / "bench"
CREATED_AT = "2024-01-01T00:00:00.000000Z"
REVISION = 1
MUTATION_SLOTS = 8  # one per concurrent writer in the mutation phase

ACTIVE, PAUSED = models.MemberStatus.ACTIVE.value, models.MemberStatus.PAUSED.value
OWNER, LEGAL, COLLEAGUE, CLIENT = (r.value for r in models.Role)
# What each role of the resource's own organization may do on a Project (policies/project.polar, R2).
ROLE_PROJECT_ACTIONS = {
    CLIENT: {"read", "approve"},
    COLLEAGUE: {"read", "edit", "publish"},
    LEGAL: set(models.SCOPES),
    OWNER: set(models.SCOPES),
}
SCOPE_SETS = (  # what clients grant, weighted: mostly read, sometimes not even that
    (("read",), 30), (("edit", "read"), 25), (("edit", "publish", "read"), 20),
    (("approve", "read"), 10), (tuple(models.SCOPES), 10), (("edit",), 5),
)
CHECK_ACTIONS = ("read",) * 6 + ("edit", "publish", "approve", "delete")


@dataclass(frozen=True)
class Shape:
    partners: int
    clients: int
    users: int
    projects: int
    big_partner_clients: int  # partner 0 has this many clients (ListResources figure)
    staff_share: float  # share of users working at partners
    big_partner_staff: int
    client_members: int  # average members of a client besides its owner
    assignments_per_connection: int  # average
    check_samples: int
    page_trees: int = 0  # page, page in it, page in that, post on it: a post four levels deep
    resource_roles: int = 0  # editor roles on posts, in all
    heavy_grants: int = 0  # of them, held by one user (the ListResources-over-roles figure)


SHAPES = {
    "small": Shape(partners=5, clients=200, users=1500, projects=3000, big_partner_clients=150, staff_share=0.1,
                   big_partner_staff=40, client_members=8, assignments_per_connection=4, check_samples=4000,
                   page_trees=500, resource_roles=2000, heavy_grants=200),
    "large": Shape(partners=200, clients=20_000, users=100_000, projects=200_000, big_partner_clients=2000,
                   staff_share=0.1, big_partner_staff=400, client_members=14, assignments_per_connection=8,
                   check_samples=20_000, page_trees=25_000, resource_roles=100_000, heavy_grants=1000),
}
NESTING = ("Page", "Page", "Page", "Post")  # a tree's chain, top first: the post is four levels deep
POLICY_FILE = Path(__file__).resolve().parent / "pages.polar"  # the bench's Page and Post


@dataclass
class Member:
    role: str
    status: str
    partner_employee: bool = False


@dataclass
class Link:
    scopes: tuple[str, ...]
    employee_approval: str


@dataclass
class World:
    """The generated facts, kept in memory to write them and to predict decisions."""

    users: list[str] = field(default_factory=list)
    partners: list[str] = field(default_factory=list)
    clients: list[str] = field(default_factory=list)
    owner: dict[str, str] = field(default_factory=dict)  # organization -> owner
    currency: dict[str, str] = field(default_factory=dict)
    members: dict[tuple[str, str], Member] = field(default_factory=dict)  # (organization, user)
    staff: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))  # organization -> users
    connections: dict[str, dict[str, Link]] = field(default_factory=lambda: defaultdict(dict))  # client -> partner
    assignments: dict[tuple[str, str, str], bool] = field(default_factory=dict)  # (partner, client, user)
    projects: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))  # client -> project ids
    # (type, id) -> (organization, parent or None), parents first
    pages: dict[tuple[str, str], tuple[str, tuple[str, str] | None]] = field(default_factory=dict)
    resource_roles: set[tuple[str, str]] = field(default_factory=set)  # (post id, user): editor

    def allowed(self, user: str, action: str, client: str) -> bool:
        """The decision the domain rules predict for a Project of `client` (a reference model)."""
        own = self.members.get((client, user))
        if own and own.status == ACTIVE and action in ROLE_PROJECT_ACTIONS[own.role]:
            return True
        for partner, link in self.connections.get(client, {}).items():
            if action not in link.scopes:
                continue
            member = self.members.get((partner, user))
            if member is None or member.status != ACTIVE:
                continue
            if member.role in (OWNER, LEGAL):
                return True
            approved = self.assignments.get((partner, client, user))
            if member.partner_employee and approved is not None and (approved or link.employee_approval == "partner"):
                return True
        return False


def user_id(n: int) -> str:
    return f"usr_bench{n:07d}"


def build_world(shape: Shape, seed: int = SEED) -> tuple[World, dict]:
    rng = random.Random(seed)
    world = World()
    world.users = [user_id(n) for n in range(shape.users)]
    reserved = world.users[-(2 * MUTATION_SLOTS + 1):]
    population = world.users[: -len(reserved)]
    staff_count = int(len(population) * shape.staff_share)
    staff_pool, client_pool = population[:staff_count], population[staff_count:]

    # Partners and their people.
    world.partners = [f"org_p{n:04d}" for n in range(shape.partners)]
    sizes = [shape.big_partner_staff] + [
        (staff_count - shape.big_partner_staff) // max(1, shape.partners - 1)
    ] * (shape.partners - 1)
    position = 0
    for partner, size in zip(world.partners, sizes, strict=True):
        people = staff_pool[position: position + size]
        position += size
        world.currency[partner] = rng.choice(("EUR", "EUR", "USD", "GBP"))
        for rank, person in enumerate(people):
            if rank == 0:
                member = Member(OWNER, ACTIVE)
            elif rank <= 2:
                member = Member(LEGAL, ACTIVE)
            else:
                member = Member(COLLEAGUE, PAUSED if rng.random() < 0.05 else ACTIVE, rng.random() < 0.5)
            add_member(world, partner, person, member)
        world.owner[partner] = people[0]

    # Clients, their owners and members.
    world.clients = [f"org_c{n:06d}" for n in range(shape.clients)]
    for number, client in enumerate(world.clients):
        owner = client_pool[number % len(client_pool)]
        world.owner[client] = owner
        world.currency[client] = "EUR"
        add_member(world, client, owner, Member(OWNER, ACTIVE))
        for person in rng.sample(client_pool, rng.randint(1, 2 * shape.client_members - 1)):
            if (client, person) in world.members:
                continue
            role = rng.choices((LEGAL, COLLEAGUE, CLIENT), (1, 5, 4))[0]
            add_member(world, client, person, Member(role, PAUSED if rng.random() < 0.05 else ACTIVE))

    # Connections: partner 0 has the first big_partner_clients clients; others get 1 to 3 more partners.
    others = world.partners[1:]
    for number, client in enumerate(world.clients):
        chosen = {world.partners[0]} if number < shape.big_partner_clients else set()
        extra = rng.choices((0, 1, 2, 3), (1, 4, 3, 2))[0]
        if not chosen and extra == 0:
            extra = 1
        chosen |= set(rng.sample(others, min(extra, len(others))))
        for partner in sorted(chosen):
            scopes = rng.choices([s for s, _ in SCOPE_SETS], [w for _, w in SCOPE_SETS])[0]
            world.connections[client][partner] = Link(tuple(sorted(scopes)), rng.choice(("client", "partner")))

    # Assignments of tagged partner employees, approved or not.
    tagged = {p: [u for u in world.staff[p] if world.members[(p, u)].partner_employee] for p in world.partners}
    for client in world.clients:
        for partner in world.connections[client]:
            count = min(len(tagged[partner]), rng.randint(0, 2 * shape.assignments_per_connection))
            for person in rng.sample(tagged[partner], count):
                world.assignments[(partner, client, person)] = rng.random() < 0.5

    # Projects: at least one in every client.
    for number in range(shape.projects):
        client = world.clients[number] if number < len(world.clients) else rng.choice(world.clients)
        world.projects[client].append(f"prj_{number:07d}")

    samples = {
        "checks": check_samples(world, rng, shape.check_samples, set(reserved), tagged),
        "list_resources": list_resources_sample(world),
        **page_trees(world, rng, shape, client_pool),
        "freshness": {},
        "mutation_slots": [],
    }
    # Reserved people: the freshness subject and the mutation targets, in no sample above.
    fresh_client = world.clients[0]
    fresh_user = reserved[0]
    add_member(world, fresh_client, fresh_user, Member(COLLEAGUE, ACTIVE))
    samples["freshness"] = {"actor_id": world.owner[fresh_client], "organization_id": fresh_client,
                            "user_id": fresh_user, "project_id": world.projects[fresh_client][0], "action": "read"}
    for slot in range(MUTATION_SLOTS):
        partner = others[slot % len(others)] if others else world.partners[0]
        paused, employee = reserved[1 + 2 * slot], reserved[2 + 2 * slot]
        add_member(world, partner, paused, Member(COLLEAGUE, ACTIVE))
        add_member(world, partner, employee, Member(COLLEAGUE, ACTIVE, True))
        client = next(c for c in world.clients if partner in world.connections[c])
        samples["mutation_slots"].append({"actor_id": world.owner[partner], "partner_id": partner,
                                          "pause_user_id": paused, "employee_id": employee, "client_id": client})
    return world, samples


def page_trees(world: World, rng: random.Random, shape: Shape, people: list[str]) -> dict:
    """Trees of pages in clients (NESTING: the post of each is four levels deep) and editor roles
    on their posts: `heavy_grants` of them held by one client-side user, the rest spread over
    others. Samples: a Check on a top page and on a post four levels under it, by a colleague of
    their client; ListResources of the posts the heavy user may edit (each of their roles)."""
    if not shape.page_trees:
        return {}
    posts, nested = [], None
    for number in range(shape.page_trees):
        client = world.clients[number % len(world.clients)]
        parent = None
        for level, resource_type in enumerate(NESTING):
            key = (resource_type, f"{resource_type.lower()}_{number:06d}_{level}")
            world.pages[key] = (client, parent)
            parent = key
        posts.append(parent[1])
        if nested is None:
            plain = Member(COLLEAGUE, ACTIVE)
            colleague = next((u for u in world.staff[client] if world.members[(client, u)] == plain), None)
            if colleague is not None:
                nested = {"actor_id": colleague, "action": "read", "top": ["Page", f"page_{number:06d}_0"],
                          "deep": list(parent)}
    heavy = people[-1]
    for post in rng.sample(posts, min(shape.heavy_grants, len(posts))):
        world.resource_roles.add((post, heavy))
    others = people[:-1]
    while len(world.resource_roles) < shape.resource_roles:
        world.resource_roles.add((rng.choice(posts), rng.choice(others)))
    return {"nested": nested, "role_grants": {
        "actor_id": heavy, "action": "edit", "resource_type": "Post", "grants": shape.heavy_grants,
        "expected_count": sum(1 for _, user in world.resource_roles if user == heavy)}}


def add_member(world: World, organization: str, person: str, member: Member) -> None:
    world.members[(organization, person)] = member
    world.staff[organization].append(person)


def check_samples(world: World, rng: random.Random, count: int, reserved: set[str], tagged) -> list:
    """Check pairs of every kind (own members, partner managers, partner employees, strangers)
    with the predicted decision; about as many allowed as denied."""
    by_partner_clients = defaultdict(list)
    for client, links in world.connections.items():
        for partner in links:
            by_partner_clients[partner].append(client)
    assignments = list(world.assignments)
    want = count // 2
    allowed, denied = [], []
    attempts = 0
    while (len(allowed) < want or len(denied) < want) and attempts < count * 50:
        attempts += 1
        kind = rng.random()
        if kind < 0.3:  # a member of the project's own organization
            client = rng.choice(world.clients)
            person = rng.choice(world.staff[client])
        elif kind < 0.5:  # an owner or legal representative of one of its partners
            client = rng.choice(world.clients)
            partner = rng.choice(sorted(world.connections[client]))
            person = rng.choice(world.staff[partner][:3])
        elif kind < 0.75 and assignments:  # an assigned partner employee
            partner, client, person = rng.choice(assignments)
        elif kind < 0.9:  # a partner colleague, assigned elsewhere or not at all
            partner = rng.choice(world.partners)
            person = rng.choice(world.staff[partner])
            client = rng.choice(by_partner_clients[partner] or world.clients)
        else:  # a stranger
            client = rng.choice(world.clients)
            other = rng.choice(world.clients)
            person = rng.choice(world.staff[other])
        if person in reserved:
            continue
        action = rng.choice(CHECK_ACTIONS)
        project = rng.choice(world.projects[client])
        decision = world.allowed(person, action, client)
        target = allowed if decision else denied
        if len(target) < want:
            target.append([person, action, project, decision])
    return allowed + denied


def list_resources_sample(world: World) -> dict:
    """A legal representative of the biggest partner, and how many projects they may read."""
    partner = world.partners[0]
    actor = world.staff[partner][1]
    expected = sum(len(world.projects[c]) for c in world.clients
                   if partner in world.connections[c] and world.allowed(actor, "read", c))
    return {"actor_id": actor, "partner_id": partner, "action": "read", "resource_type": "Project",
            "clients": sum(1 for c in world.clients if partner in world.connections[c]),
            "expected_count": expected}


# -- writing ---------------------------------------------------------------------------------


def rows(world: World, shape_name: str):
    """(table, rows) in foreign-key order."""
    yield models.User.__table__, [
        {"id": u, "email": f"{u}@bench.example.com", "display_name": f"Bench user {u[-7:]}",
         "created_at": CREATED_AT, "revision": REVISION} for u in world.users]
    yield models.Organization.__table__, [
        {"id": o, "name": f"{'Partner' if o.startswith('org_p') else 'Client'} {o[5:]}", "currency": world.currency[o],
         "seat_limit": 0, "owner_id": world.owner[o], "created_at": CREATED_AT, "revision": REVISION}
        for o in world.partners + world.clients]
    yield models.Membership.__table__, [
        {"organization_id": o, "user_id": u, "role": m.role, "status": m.status,
         "partner_employee": m.partner_employee, "revision": REVISION} for (o, u), m in world.members.items()]
    invitations, connections = [], []
    for number, (client, links) in enumerate(sorted(world.connections.items())):
        for partner, link in links.items():
            invitation = f"inv_bench{len(invitations):07d}"
            name = f"Client {client[5:]}"
            invitations.append({
                "id": invitation, "kind": models.InvitationKind.CLIENT.value, "organization_id": partner,
                "email": f"{world.owner[client]}@bench.example.com", "role": "",
                "status": models.InvitationStatus.FINISHED.value, "invited_by": world.owner[partner],
                "customer_name": name, "customer_number": f"C-{number:06d}", "currency": world.currency[partner],
                "requested_scopes": list(models.SCOPES), "token_hash": None, "created_at": CREATED_AT,
                "expires_at": CREATED_AT, "revision": REVISION})
            connections.append({
                "partner_id": partner, "client_id": client, "status": models.ConnectionStatus.ACTIVE.value,
                "customer_name": name, "customer_number": f"C-{number:06d}", "currency": world.currency[partner],
                "requested_scopes": list(models.SCOPES), "granted_scopes": list(link.scopes),
                "employee_approval": link.employee_approval, "referral": False, "connected_at": CREATED_AT,
                "invitation_id": invitation, "revision": REVISION})
    yield models.Invitation.__table__, invitations
    yield models.Connection.__table__, connections
    yield models.Assignment.__table__, [
        {"partner_id": p, "client_id": c, "user_id": u, "assigned": True, "client_approved": approved,
         "revision": REVISION} for (p, c, u), approved in world.assignments.items()]
    yield models.Resource.__table__, [
        {"type": "Project", "id": project, "organization_id": client, "deleted": False, "revision": REVISION,
         "parent_type": None, "parent_id": None}
        for client, projects in world.projects.items() for project in projects] + [
        {"type": resource_type, "id": resource_id, "organization_id": client, "deleted": False, "revision": REVISION,
         "parent_type": parent[0] if parent else None, "parent_id": parent[1] if parent else None}
        for (resource_type, resource_id), (client, parent) in world.pages.items()]
    yield models.ResourceRole.__table__, [
        {"resource_type": "Post", "resource_id": post, "user_id": user, "role": "editor", "granted": True,
         "granted_by": "", "access_expires_at": None, "revision": REVISION}
        for post, user in sorted(world.resource_roles)]


def write(url: str, world: World, shape_name: str, key: str) -> dict[str, int]:
    upgrade(url)
    store = Store(url)
    counts: dict[str, int] = {}
    try:
        with store.engine.connect() as connection:
            raw = connection.connection.driver_connection  # outside SQLAlchemy's transaction
            # A throwaway file being filled: durability of each step does not matter.
            raw.execute("PRAGMA synchronous=OFF")
            for table, batch in rows(world, shape_name):
                for start in range(0, len(batch), 20_000):
                    connection.execute(insert(table), batch[start: start + 20_000])
                counts[table.name] = len(batch)
            for model, history in models.HISTORY.items():  # each row's first version (access history)
                columns = [c.name for c in model.__table__.columns]
                connection.execute(insert(history).from_select(columns, select(model.__table__)))
            connection.execute(insert(models.Event.__table__), [{
                "revision": REVISION, "type": "bench.dataset_loaded", "actor_id": "",
                "attributes": {"dataset": shape_name, "key": key, **{k: str(v) for k, v in counts.items()}},
                "occurred_at": CREATED_AT}])
            connection.execute(update(models.RevisionCounter).values(value=REVISION))
            connection.commit()
            raw.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        store.engine.dispose()
    return counts


def cache_key(shape: Shape, seed: int) -> str:
    head = ScriptDirectory.from_config(alembic_config("sqlite://")).get_current_head()
    digest = hashlib.sha256((repr(shape) + POLICY_FILE.read_text()).encode()).hexdigest()[:8]
    return f"generator-{GENERATOR_VERSION}:schema-{head}:shape-{digest}:seed-{seed}"


def policy_dir() -> Path:
    """The policy the bench serves: the shipped one and the bench's Page and Post (pages.polar)."""
    directory = CACHE_DIR / "policies"
    if directory.exists():
        shutil.rmtree(directory)
    directory.mkdir(parents=True)
    for path in [*(ROOT / "policies").glob("*.polar"), POLICY_FILE]:
        shutil.copy(path, directory)
    return directory


def ensure(name: str, seed: int = SEED, log=print) -> tuple[Path, dict]:
    """The cached database and its metadata (samples, counts), built first if missing or stale."""
    shape = SHAPES[name]
    path, meta_path = CACHE_DIR / f"{name}.db", CACHE_DIR / f"{name}.json"
    key = cache_key(shape, seed)
    if path.exists() and meta_path.exists():
        meta = json.loads(meta_path.read_text())
        if meta.get("key") == key:
            return path, meta
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    log(f"building dataset {name!r} ({key}) ...")
    started = time.perf_counter()
    world, samples = build_world(shape, seed)
    generated = time.perf_counter() - started
    partial = path.with_suffix(".building.db")
    for stale in (partial, Path(f"{partial}-wal"), Path(f"{partial}-shm")):
        stale.unlink(missing_ok=True)
    counts = write(f"sqlite:///{partial}", world, name, key)
    for stale in (Path(f"{partial}-wal"), Path(f"{partial}-shm")):
        stale.unlink(missing_ok=True)
    os.replace(partial, path)
    meta = {"key": key, "dataset": name, "counts": counts, "rows": sum(counts.values()),
            "generate_seconds": round(generated, 2), "build_seconds": round(time.perf_counter() - started, 2),
            "samples": samples}
    meta_path.write_text(json.dumps(meta))
    log(f"built {meta['rows']} rows in {meta['build_seconds']} s: {counts}")
    return path, meta
