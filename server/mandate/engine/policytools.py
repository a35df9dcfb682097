"""Reviewer tools: the access matrix and the mutation run.

`mandate policy matrix` evaluates the policy on a canonical world and prints who may do what;
`mandate policy mutate` deletes each rule of the policy in turn and runs the policy tests,
reporting every deletion the tests did not notice.
"""

from __future__ import annotations

import contextlib
import io
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from mandate.engine import policytest
from mandate.engine.policy import Policy, PolicyError, Rule, policy_files, rules  # noqa: F401 - rules: part of this module's API
from mandate.runtime.world import EphemeralApp

# The canonical world: one partner (agency) with a connected client (shop), personas on both
# sides, and an account linked to the client's.
CANONICAL_WORLD = {
    "users": ["ann", "lena", "carl", "emma", "eric", "erin", "pete", "olga", "lars", "cole", "paula", "kim",
              "owen", "nora"],
    "organizations": {
        "agency": {"owner": "ann", "currency": "EUR"},
        "shop": {"owner": "olga", "currency": "EUR"},
        "shop-usd": {"owner": "owen", "currency": "USD"},
    },
    "members": [
        {"organization": "agency", "user": "lena", "role": "legal_representative"},
        {"organization": "agency", "user": "carl", "role": "colleague"},
        {"organization": "agency", "user": "emma", "role": "colleague", "partner_employee": True},
        {"organization": "agency", "user": "eric", "role": "colleague", "partner_employee": True},
        {"organization": "agency", "user": "erin", "role": "colleague", "partner_employee": True},
        {"organization": "agency", "user": "pete", "role": "colleague", "partner_employee": True, "paused": True},
        {"organization": "shop", "user": "lars", "role": "legal_representative"},
        {"organization": "shop", "user": "cole", "role": "colleague"},
        {"organization": "shop", "user": "paula", "role": "colleague", "paused": True},
        {"organization": "shop", "user": "kim", "role": "client"},
    ],
    "connections": [{"partner": "agency", "client": "shop", "granted": ["read", "edit", "publish"],
                     "employee_approval": "client"}],
    "assignments": [
        {"partner": "agency", "client": "shop", "user": "emma", "approved": True},
        {"partner": "agency", "client": "shop", "user": "eric", "approved": False},
        {"partner": "agency", "client": "shop", "user": "pete", "approved": True},
    ],
    "links": [["shop", "shop-usd"]],
    "projects": [{"id": "shop-site", "organization": "shop"}],
}

PERSONAS = (
    ("olga", "client owner"),
    ("lars", "client legal representative"),
    ("cole", "client colleague"),
    ("paula", "client colleague, paused"),
    ("kim", "client member (role client)"),
    ("owen", "owner of a linked account"),
    ("ann", "partner owner"),
    ("lena", "partner legal representative"),
    ("carl", "partner colleague, not tagged"),
    ("emma", "partner employee, assigned and approved"),
    ("eric", "partner employee, assigned, not approved"),
    ("erin", "partner employee, not assigned"),
    ("pete", "partner employee, approved but paused"),
    ("nora", "registered user, no membership"),
)
# Targets of mutations on the same world: (what, action, target as in the policy tests, new role).
TARGETS = (
    ("pause a colleague (cole)", "pause", "Member:shop/cole", ""),
    ("pause a client member (kim)", "pause", "Member:shop/kim", ""),
    ("pause a legal representative (lars)", "pause", "Member:shop/lars", ""),
    ("pause the owner (olga)", "pause", "Member:shop/olga", ""),
    ("resume a paused colleague (paula)", "resume", "Member:shop/paula", ""),
    ("remove a colleague (cole)", "remove", "Member:shop/cole", ""),
    ("remove a legal representative (lars)", "remove", "Member:shop/lars", ""),
    ("remove the owner (olga)", "remove", "Member:shop/olga", ""),
    ("make a colleague legal representative", "set_role", "Member:shop/cole", "legal_representative"),
    ("make a colleague owner", "set_role", "Member:shop/cole", "owner"),
    ("make the owner a colleague", "set_role", "Member:shop/olga", "colleague"),
    ("invite someone as colleague", "invite", "Member:shop/nora", "colleague"),
    ("invite someone as owner", "invite", "Member:shop/nora", "owner"),
    ("accept a link for shop", "accept", "ClientInvitation:shop/link", ""),
    ("accept an invitation emailed to lars", "accept", "ClientInvitation:shop/lars", ""),
) + tuple((f"{action} (agency and shop)", action, "Connection:agency/shop", "") for action in (
    "update_granted_scopes", "request_disconnect", "accept_disconnect", "decline_disconnect", "revoke", "assign",
    "unassign", "approve_employee", "revoke_employee"))


@dataclass(frozen=True)
class MatrixResource:
    """A resource of the canonical world the matrix decides on: one per declared type and shape of
    chain (top-level in the client's organization, or under a parent), and one more per role of
    the type, which every persona holds on it (GrantResourceRole)."""

    type: str
    id: str
    parent: str = ""  # "Type:id", for a nested resource
    role: str = ""  # the role every persona holds on it

    def title(self) -> str:
        where = f"under {self.parent.replace(':', ' ')}" if self.parent else "in the client's organization"
        return f"{self.type} ({self.id}, {where})"


def matrix_resources(policy: Policy) -> list[MatrixResource]:
    """The check plane of the matrix: every type the policy declares, by the shapes of its chain
    (parents before their children), each with its roles, then the client's organization."""
    found: list[MatrixResource] = []
    ids: dict[tuple[str, ...], str] = {}
    for chain in sorted({c for chains in policy.chains.values() for c in chains}, key=lambda c: (len(c), c)):
        resource_type = chain[0]
        if len(chain) == 1:
            ident, parent = ("shop-site" if resource_type == "Project" else f"shop-{resource_type.lower()}"), ""
        else:
            ident, parent = f"{ids[chain[1:]]}-{resource_type.lower()}", f"{chain[1]}:{ids[chain[1:]]}"
        ids[chain] = ident
        found.append(MatrixResource(resource_type, ident, parent))
        found += [MatrixResource(resource_type, f"{ident}-{role}", parent, role)
                  for role in policy.roles.get(resource_type, ())]
    return [*found, MatrixResource("Organization", "shop")]


def matrix_world(policy: Policy) -> dict:
    """The canonical world with the matrix's resources and the roles every persona holds on them."""
    world = dict(CANONICAL_WORLD)
    resources = [r for r in matrix_resources(policy) if r.type != "Organization" and r.id != "shop-site"]
    world["resources"] = [{"type": r.type, "id": r.id, **({"parent": r.parent} if r.parent else
                                                             {"organization": "shop"})} for r in resources]
    world["resource_roles"] = [{"resource": f"{r.type}:{r.id}", "user": user, "role": r.role}
                               for r in resources if r.role for user, _ in PERSONAS]
    return world


def matrix_rows(policy: Policy) -> list[tuple[str, MatrixResource, str, bool]]:
    """(persona, resource, action, allowed) for every persona, resource and declared action,
    then (persona, None, what, allowed) for every target of TARGETS."""
    rows = []
    with EphemeralApp(policy.directory, matrix_world(policy), policy=policy) as app:
        for resource in matrix_resources(policy):
            for action in policy.permissions.get(resource.type, ()):
                for user, persona in PERSONAS:
                    allowed = app.authorizer.check("User", user, action, resource.type, resource.id)
                    rows.append((persona, resource, action, allowed))
        for what, action, ref, new_role in TARGETS:
            target_type, _, target_id = ref.partition(":")
            for user, persona in PERSONAS:
                target = policytest.target_ref(user, target_type, target_id, new_role)
                rows.append((persona, None, what, app.authorizer.check_target(user, action, target)))
    return rows


def matrix_markdown(policy: Policy) -> str:
    rows = matrix_rows(policy)
    personas = [p for _, p in PERSONAS]
    lines = [
        "# Access matrix",
        "",
        "Generated by `mandate policy matrix` from `policies/` on the canonical world in",
        "`server/mandate/engine/policytools.py`: a partner (agency) connected to a client (shop) that granted",
        "read, edit and publish with per-employee approval, and an account linked to the client's.",
        "Every resource type the policy declares has a resource there (under a parent, for a type that",
        "nests), and one more per role of the type, which every persona holds on it.",
        "Do not edit by hand; a test fails when the policy changes and this file was not regenerated.",
        "",
        "Personas:",
        "",
    ]
    lines += [f"{n}. {persona}" for n, persona in enumerate(personas, 1)]
    for resource in matrix_resources(policy):
        if resource.role:
            continue
        lines += ["", f"## {resource.title()}", ""]
        lines.append("| action | " + " | ".join(str(n) for n in range(1, len(personas) + 1)) + " |")
        lines.append("|---|" + "---|" * len(personas))
        for holding in [resource, *(r for r in matrix_resources(policy)
                                    if r.role and r.type == resource.type and r.id == f"{resource.id}-{r.role}")]:
            for action in policy.permissions.get(resource.type, ()):
                cells = ["✓" if allowed else "·" for _, r, a, allowed in rows if r == holding and a == action]
                label = f"{action}, holding {holding.role} on it" if holding.role else action
                lines.append(f"| {label} | " + " | ".join(cells) + " |")
    lines += ["", "## Targets of mutations", "",
              "Whom a mutation may touch: the membership, invitation or connection it changes",
              "(resources Member, ClientInvitation and Connection of the policy).", ""]
    lines.append("| change | " + " | ".join(str(n) for n in range(1, len(personas) + 1)) + " |")
    lines.append("|---|" + "---|" * len(personas))
    for what, *_ in TARGETS:
        cells = ["✓" if allowed else "·" for _, r, a, allowed in rows if r is None and a == what]
        lines.append(f"| {what} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def matrix_csv(policy: Policy) -> str:
    lines = ["persona,resource_type,resource,role_held,action,allowed"]
    lines += [f'"{p}",{r.type if r else "target"},{f"{r.type}:{r.id}" if r else ""},{r.role if r else ""},'
              f'{a},{"true" if ok else "false"}' for p, r, a, ok in matrix_rows(policy)]
    return "\n".join(lines) + "\n"


# -- mutation run --------------------------------------------------------------------------
#
# A mutant is the policy with one small change a reviewer could make by mistake. The policy
# tests must catch each one (an expectation fails), unless it decides exactly as the policy does:
# then it is equivalent, and the reason is written in policies/equivalent-mutants.yaml (or, for a
# copy the policy already grants, found by construction).

DELETED, DROPPED, SWAPPED, LEFT_OUT, COPIED = (
    "rule deleted", "condition dropped", "role swapped", "value left out", "rule copied")
KINDS = (DELETED, DROPPED, SWAPPED, LEFT_OUT, COPIED)
EQUIVALENTS_FILE = "equivalent-mutants.yaml"


@dataclass
class Mutant:
    kind: str
    rule: Rule
    change: str  # the change in words ("" when the rule is deleted)
    text: str  # the whole mutated policy file
    killed: bool = False
    how: str = ""
    equivalent: str = ""  # why it decides as the policy does

    @property
    def key(self) -> tuple[str, str, str]:
        """What names the mutant in the list of equivalents: its kind, its rule, its change."""
        return self.kind, self.rule.text, self.change

    @property
    def survived(self) -> bool:
        return not self.killed and not self.equivalent

    def describe(self) -> str:
        change = f": {self.change}" if self.change else ""
        return f"{self.kind} at {self.rule.file.name}:{self.rule.line}{change} ({self.rule.text[:90]})"


@dataclass
class _Parts:
    """One rule's raw text, cut where the mutations apply (offsets into that text)."""

    head: list[tuple[int, int, str]]  # string literals before the top-level `if`
    body: int  # where the body starts, -1 without one
    conjuncts: list[tuple[int, int]]  # the body's top-level conditions
    literals: list[tuple[int, int, str, bool]]  # the body's string literals; True: a relation (after `on`)
    lists: list[list[tuple[int, int]]]  # the body's list literals: the span of each item


def _parts(raw: str) -> _Parts:
    parts = _Parts([], -1, [], [], [])
    end = raw.rindex(";")
    depth, start, after_on = 0, 0, False
    open_lists: list[tuple[int, list]] = []  # (depth inside the list, [start of the current item, items])
    i = 0
    while i < end:
        char = raw[i]
        if char == "#":
            i = raw.find("\n", i)
            i = end if i < 0 else i
            continue
        if char == '"':
            close = raw.index('"', i + 1)
            if parts.body < 0:
                parts.head.append((i, close + 1, raw[i + 1:close]))
            else:
                parts.literals.append((i, close + 1, raw[i + 1:close], after_on))
            after_on = False
            i = close + 1
            continue
        if char.isalpha() or char == "_":
            word_end = i
            while word_end < end and (raw[word_end].isalnum() or raw[word_end] == "_"):
                word_end += 1
            word = raw[i:word_end]
            if depth == 0 and word == "if" and parts.body < 0:
                parts.body = start = word_end
            elif depth == 0 and word == "and" and parts.body >= 0:
                parts.conjuncts.append((start, i))
                start = word_end
            after_on = word == "on"
            i = word_end
            continue
        if char in "([{":
            depth += 1
            if char == "[" and parts.body >= 0:
                open_lists.append((depth, [i + 1, []]))
        elif char in ")]}":
            if char == "]" and open_lists and open_lists[-1][0] == depth:
                _, (item_start, items) = open_lists.pop()
                items.append((item_start, i))
                parts.lists.append([span for span in items if raw[span[0]:span[1]].strip()])
            depth -= 1
        elif char == "," and open_lists and open_lists[-1][0] == depth:
            current = open_lists[-1][1]
            current[1].append((current[0], i))
            current[0] = i + 1
        i += 1
    if parts.body >= 0:
        parts.conjuncts.append((start, end))
    return parts


def _words(text: str) -> str:
    return " ".join(text.split())


def mutants_of(path: Path, policy: Policy, kinds=KINDS) -> list[Mutant]:
    """Every mutant of one policy file, of the kinds asked, in the order of its rules."""
    text = path.read_text()
    grants = _Grants(path, text, policy)
    all_roles = sorted({role for roles in policy.roles.values() for role in roles})
    found: list[Mutant] = []
    for rule in grants.rules:
        raw = text[rule.start:rule.end]
        parts = grants.parts[rule.start]

        def mutant(kind: str, change: str, new_raw: str | None, rule=rule) -> Mutant:
            return Mutant(kind, rule, change, text[:rule.start] + (new_raw or "") + text[rule.end:])

        if DELETED in kinds:
            found.append(mutant(DELETED, "", None))
        if DROPPED in kinds and len(parts.conjuncts) >= 2:
            for number, (start, end) in enumerate(parts.conjuncts):
                kept = [raw[s:e].strip() for n, (s, e) in enumerate(parts.conjuncts) if n != number]
                new_raw = raw[:parts.body] + " " + " and ".join(kept) + raw[parts.conjuncts[-1][1]:]
                found.append(mutant(DROPPED, f"drop `{_words(raw[start:end])}`", new_raw))
        if SWAPPED in kinds:
            seen: dict[str, int] = {}
            for start, end, value, relation in parts.literals:
                if relation or value not in all_roles:
                    continue
                seen[value] = seen.get(value, 0) + 1
                where = f" (occurrence {seen[value]})" if seen[value] > 1 else ""
                for other in all_roles:
                    if other != value:
                        found.append(mutant(SWAPPED, f'"{value}" -> "{other}"{where}',
                                            raw[:start] + f'"{other}"' + raw[end:]))
        if LEFT_OUT in kinds:
            seen_lists: dict[str, int] = {}
            for items in parts.lists:
                if len(items) < 2:
                    continue
                whole = "[" + ", ".join(raw[s:e].strip() for s, e in items) + "]"
                seen_lists[whole] = seen_lists.get(whole, 0) + 1
                where = f" (occurrence {seen_lists[whole]})" if seen_lists[whole] > 1 else ""
                for number, (start, end) in enumerate(items):
                    kept = ", ".join(raw[s:e].strip() for n, (s, e) in enumerate(items) if n != number)
                    new_raw = raw[:items[0][0]] + kept + raw[items[-1][1]:]
                    found.append(mutant(LEFT_OUT, f"leave {raw[start:end].strip()} out of {whole}{where}", new_raw))
        if COPIED in kinds and parts.head:
            found += grants.copies(rule, raw, parts)
    return found


_BLOCK = re.compile(r"^\s*resource\s+(\w+)\s*\{.*?^\}", re.S | re.M)
_HAS_PERMISSION = re.compile(r'^has_permission\(\s*\w+(?:\s*:\s*\w+)?\s*,\s*(?:"(\w+)"|\w+(?:\s*:\s*\w+)?)\s*,'
                             r'\s*\w+\s*:\s*(\w+)\s*\)\s+if\b')
_RELATION_TYPES = re.compile(r"\brelations\s*=\s*\{(.*?)\}", re.S)


class _Grants:
    """What the shorthand rules of the resource blocks grant, read statically: enough to tell a
    copy of a rule that grants nothing new (equivalent by construction) from one that does. The
    copies are of one file's rules; what grants them is read from every file of the policy (a
    Connection's rules lean on the Organization's roles, declared in another file)."""

    def __init__(self, path: Path, text: str, policy: Policy):
        self.text, self.policy = text, policy
        self.rules = rules(path, text)
        self.parts = {rule.start: _parts(text[rule.start:rule.end]) for rule in self.rules}
        self.by_text = {rule.text for rule in self.rules}
        self.blocks = self._blocks(text)
        self.relation_types = {}  # (block, relation) -> the related resource type
        # Per block, each shorthand rule: (head, condition, relation or "", "file:line").
        self.shorthand: dict[str, list[tuple[str, str, str, str]]] = {}
        self.impure: set[tuple[str, str]] = set()  # (type, permission) also granted some other way
        sources = [(source.path, text if source.path.name == path.name else source.text) for source in policy.sources]
        if path.name not in {source_path.name for source_path, _ in sources}:
            sources.append((path, text))
        for source_path, source_text in sources:
            self._read(source_path, source_text)

    @staticmethod
    def _blocks(text: str) -> list[tuple[int, int, str]]:
        return [(m.start(), m.end(), m.group(1)) for m in _BLOCK.finditer(text)]

    def _read(self, path: Path, text: str) -> None:
        blocks = self._blocks(text)
        for start, end, name in blocks:
            for body in _RELATION_TYPES.findall(text[start:end]):
                for relation, related in re.findall(r"(\w+)\s*:\s*(\w+)", body):
                    self.relation_types[(name, relation)] = related
        for rule in rules(path, text):
            raw = text[rule.start:rule.end]
            parts = _parts(raw)
            block = next((name for start, end, name in blocks if start <= rule.start < end), "")
            if block and parts.head:
                condition = [value for _, _, value, _ in parts.literals]
                relation = condition[1] if len(condition) == 2 and re.search(r"\bon\b", raw) else ""
                if len(condition) in (1, 2):
                    self.shorthand.setdefault(block, []).append(
                        (parts.head[0][2], condition[0], relation, f"{path.name}:{rule.line}"))
                    if relation:
                        self.impure.add((block, parts.head[0][2]))
                continue
            match = _HAS_PERMISSION.match(rule.text)
            if match:
                resource_type = match.group(2)
                for action in ([match.group(1)] if match.group(1) else self.policy.permissions.get(resource_type, ())):
                    self.impure.add((resource_type, action))

    def block_of(self, offset: int) -> str:
        return next((name for start, end, name in self.blocks if start <= offset < end), "")

    def holds(self, resource_type: str, name: str) -> set[str]:
        """The roles and permissions on a resource of that type that whoever holds `name` (a
        role or a permission) there surely holds, by the shorthand rules alone."""
        rules_here = self.shorthand.get(resource_type, [])
        roles = self.policy.roles.get(resource_type, ())
        if name in roles:
            held, todo = {name}, [name]
            while todo:
                role = todo.pop()
                for head, condition, relation, _ in rules_here:
                    if condition == role and not relation and head not in held:
                        held.add(head)
                        todo.append(head)
            return held
        grantors = [condition for head, condition, relation, _ in rules_here if head == name and not relation]
        if (resource_type, name) in self.impure or not grantors or not all(g in roles for g in grantors):
            return {name}
        return {name} | set.intersection(*(self.holds(resource_type, grantor) for grantor in grantors))

    def copies(self, rule: Rule, raw: str, parts: _Parts) -> list[Mutant]:
        """The rule copied to each other action of its resource type (inserted after it). A copy
        the policy already has, or that grants only to those who hold that action already, is
        equivalent by construction: no test could catch it, and it is not run."""
        start, end, action = parts.head[0]
        block = self.block_of(rule.start)
        if block:
            resource_type = block
            if action not in self.policy.permissions.get(block, ()):
                return []  # a role implied by another, not an action
            literals = [value for _, _, value, _ in parts.literals]
            relation = literals[1] if len(literals) == 2 else ""
            condition = literals[0] if literals else ""
        else:
            match = _HAS_PERMISSION.match(rule.text)
            if match is None or not match.group(1):
                return []  # not about one action
            resource_type, condition, relation = match.group(2), "", ""
        found = []
        for other in self.policy.permissions.get(resource_type, ()):
            if other == action:
                continue
            copy = raw[:start] + f'"{other}"' + raw[end:]
            mutated = self.text[:rule.end] + "\n" + copy + self.text[rule.end:]
            mutant = Mutant(COPIED, rule, f'copy to "{other}"', mutated)
            if _words(copy) in self.by_text:
                mutant.equivalent = "the policy has this rule already"
            elif condition:
                related = self.relation_types.get((block, relation), block) if relation else block
                held = self.holds(related, condition)
                for head, existing, existing_relation, where in self.shorthand.get(block, []):
                    if head == other and existing_relation == relation and existing in held:
                        on = f' on "{relation}"' if relation else ""
                        mutant.equivalent = (f'"{other}" is granted already to whoever holds "{existing}"{on} '
                                             f'({where}), as everyone who holds "{condition}" does')
                        break
            found.append(mutant)
        return found


def read_equivalents(path: Path) -> dict[tuple[str, str, str], str]:
    """The listed equivalent mutants, {(kind, rule, change): why}; a missing file lists none. Each
    entry names a kind, a rule (its text; spacing does not matter), a change or a list of
    changes of that rule, and why the mutants decide exactly as the policy does."""
    if not path.exists():
        return {}
    import yaml

    entries = yaml.safe_load(path.read_text()) or []
    listed = {}
    for number, entry in enumerate(entries if isinstance(entries, list) else [entries]):
        if (not isinstance(entry, dict) or set(entry) != {"kind", "rule", "change", "why"}
                or entry["kind"] not in KINDS or not str(entry["why"] or "").strip()):
            raise ValueError(f"{path}: entry {number + 1}: give kind (one of {', '.join(KINDS)}), rule, "
                             "change and why (the reason)")
        changes = entry["change"] if isinstance(entry["change"], list) else [entry["change"]]
        for change in changes:
            listed[(entry["kind"], _words(str(entry["rule"])), "" if change is None else str(change))] = \
                _words(str(entry["why"]))
    return listed


def mutation_run(policy_dir: Path, test_paths: list[str] | None, kinds=KINDS,
                 equivalents: dict[tuple[str, str, str], str] | None = None, every: int = 1,
                 select=None) -> list[Mutant]:
    """Make every mutant of the kinds asked (with `every` > 1, only each every-th one: a
    deterministic subset; with `select`, only those it returns True for) and run the policy
    tests against each. Each test world is loaded once
    and every mutant swapped into it (the facts do not depend on the policy); a mutant is killed
    by its first failing expectation, and the expectation that killed the last mutants is tried
    first. A mutant the tests miss is still killed if it breaks the contract; else it is
    equivalent if listed in `equivalents`, else it survived."""
    policy_dir = Path(policy_dir)
    original = Policy(policy_dir)
    mutants = [m for path in policy_files(policy_dir) for m in mutants_of(path, original, kinds)]
    mutants = [m for m in mutants[::every] if select is None or select(m)]
    loaded = []
    try:
        for path in policytest.find_files(test_paths):
            ephemeral, expectations = policytest.load_file(path, original)
            loaded.append((path, ephemeral, expectations))
        order = [(n, number) for n, (_, _, expectations) in enumerate(loaded)
                 for number in range(1, len(expectations) + 1)]
        with tempfile.TemporaryDirectory(prefix="mandate-mutant-") as scratch:
            for other in policy_files(policy_dir):
                shutil.copy(other, scratch)
            for mutant in mutants:
                if not mutant.equivalent:
                    _run_mutant(mutant, Path(scratch), loaded, order)
                    if not mutant.killed:
                        mutant.equivalent = (equivalents or {}).get(mutant.key, "")
                    Path(scratch, mutant.rule.file.name).write_text(mutant.rule.file.read_text())
        return mutants
    finally:
        for _, ephemeral, _ in loaded:
            ephemeral.close()


def _run_mutant(mutant: Mutant, scratch: Path, loaded, order: list[tuple[int, int]]) -> None:
    Path(scratch, mutant.rule.file.name).write_text(mutant.text)
    try:
        with contextlib.redirect_stdout(io.StringIO()):  # oso warns about a deleted allow rule
            policy = Policy(scratch, fact_free_later=True)
    except PolicyError as error:
        mutant.killed, mutant.how = True, f"the policy is refused ({str(error)[:80]})"
        return
    for _, ephemeral, _ in loaded:
        ephemeral.app.authorizer.swap_policy(policy)
    for position, (file_number, number) in enumerate(order):
        path, ephemeral, expectations = loaded[file_number]
        outcome = policytest.run_expectation(ephemeral.app, str(path), number, expectations[number - 1],
                                             explain_failures=False)
        if not outcome.passed:
            order.insert(0, order.pop(position))
            mutant.killed, mutant.how = True, f"expectation fails: {outcome.title}"
            return
    refused = policy.fact_free_problems()
    if refused:
        mutant.killed, mutant.how = True, f"the policy is refused ({refused[0][:80]})"
        return
    mutant.how = "no test failed"


def mutation_report(mutants: list[Mutant]) -> list[str]:
    """Counts per kind: made, killed, equivalent, survived."""
    lines = [f"{'kind':<20} {'made':>6} {'killed':>7} {'equivalent':>11} {'survived':>9}"]
    for kind in [*KINDS, "all"]:
        of_kind = [m for m in mutants if kind in ("all", m.kind)]
        if of_kind or kind == "all":
            lines.append(f"{kind:<20} {len(of_kind):>6} {sum(m.killed for m in of_kind):>7} "
                         f"{sum(bool(m.equivalent) for m in of_kind):>11} {sum(m.survived for m in of_kind):>9}")
    return lines
