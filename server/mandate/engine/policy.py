"""The one place that talks to oso: loads the policy, checks its contract, answers decisions.

The policy sees only a `Subject` (facts.py), so its answer for a (subject, resource type,
action) triple never changes until the policy itself changes: it is computed once and
remembered. A check therefore costs a few dictionary look-ups once the situation has been
seen; the policy still makes every decision. That is exact only while the policy keeps the
contract stated in the header of policies/shared.polar; `contract_problems` checks it at every
load, and a policy that breaks it never serves.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import itertools
import logging
import re
import threading
from dataclasses import dataclass, replace
from pathlib import Path

from oso import Oso, Variable
from polar.ffi import PolarSource

from mandate.engine import facts
from mandate.engine.facts import (
    AssignmentFact,
    ConnectionFact,
    InvitationTarget,
    LinkTarget,
    MembershipFact,
    MemberTarget,
    RoleGrantTarget,
    Subject,
)
from mandate.names import SERVICE_ACTIONS, Reason
from mandate.store import models

log = logging.getLogger(__name__)

# Remembered answers per policy; the number of distinct situations is small, this bounds it.
CACHE_LIMIT = 200_000
CONTRACT = Reason.POLICY_CONTRACT


@dataclass
class Rule:
    file: Path
    start: int  # offsets into the file's text
    end: int
    line: int
    text: str


def rules(path: Path, text: str | None = None) -> list[Rule]:
    """Every rule of a policy file: top-level rules and the shorthand rules inside resource
    blocks (declarations of roles, permissions and relations are not rules)."""
    text = path.read_text() if text is None else text
    found: list[Rule] = []
    depth = 0
    start = None
    i = 0
    while i < len(text):
        char = text[i]
        if char == "#":
            i = text.find("\n", i)
            i = len(text) if i < 0 else i
            continue
        if start is None and not char.isspace():
            start = i
        if char == '"':
            i = text.index('"', i + 1) + 1
            continue
        if char in "{[(":
            depth += 1
            if depth == 1 and char == "{":
                start = None  # the start of a resource or actor block
        elif char in "}])":
            depth -= 1
            if depth == 0 and char == "}":
                start = None  # the end of a resource or actor block
        elif char == ";":
            statement = text[start:i + 1]
            is_rule = (depth == 0 and not statement.lstrip().startswith(("actor", "resource"))) or (
                depth == 1 and statement.lstrip().startswith('"'))
            if is_rule:
                found.append(Rule(path, start, i + 1, text.count("\n", 0, start) + 1, " ".join(statement.split())))
            start = None
        i += 1
    return found


class PolicyError(Exception):
    """The policy cannot be read, does not load, or breaks the contract. `problems` lists each
    violation as one line (`POLICY_CONTRACT file:line: what is wrong` for the contract)."""

    def __init__(self, message: str, problems: list[str] | None = None):
        super().__init__(message)
        self.problems = problems or [message]


BUILTIN_CLASSES = {"String", "Integer", "Float", "Boolean", "List", "Dictionary"}
POLICY_CLASS_NAMES = {cls.__name__.removesuffix("Fact") for cls in facts.POLICY_CLASSES}
# Names that may appear as string literals besides the policy's own declared roles, permissions
# and relations: the values of the facts. Anything else would be an id (R24: the policy sees
# labels, not ids, so an id literal would grant by accident of labelling).
FACT_VALUES = ({r.value for r in models.Role} | {s.value for s in models.MemberStatus}
               | {s.value for s in models.ConnectionStatus} | {a.value for a in models.EmployeeApproval})
# The policy's own blocks that are not resources a caller registers: the organization, and the
# targets of mutations.
SERVICE_BLOCKS = frozenset({"Organization", *facts.TARGET_TYPES})
# The rule that declares the scopes a client can grant a partner (R12): `client_scopes([...]);`.
SCOPES_RULE = "client_scopes"
# The rule that declares the scopes a referral connection starts with (R10 with R12): `referral_scopes([]);`.
REFERRAL_SCOPES_RULE = "referral_scopes"
NEGATIONS = ("not", "forall", "cut")

_SPECIALIZER = re.compile(r"\b\w+\s*:\s*([A-Z]\w*)")
_TOKEN = re.compile(r'"(?:[^"\\]|\\.)*"|#[^\n]*|\.\s*[A-Za-z_]\w*|[A-Za-z_]\w*|\n|.', re.S)
_RESOURCE_BLOCK = re.compile(r"^\s*resource\s+(\w+)\s*\{(.*?)^\}", re.S | re.M)
_DECLARED_LIST = re.compile(r"\b(roles|permissions)\s*=\s*\[(.*?)\]", re.S)
_RELATIONS = re.compile(r"\brelations\s*=\s*\{(.*?)\}", re.S)


@dataclass(frozen=True)
class SourceFile:
    """One policy file as read once: the bytes hashed are the text loaded."""

    path: Path
    text: str


def policy_files(policy: Path | str) -> list[Path]:
    """The files of a policy: every .polar file of a directory (one per resource block and the
    shared helpers), or one .polar file that holds the whole policy."""
    policy = Path(policy)
    if policy.suffix == ".polar" and not policy.is_dir():
        return [policy] if policy.exists() or policy.is_symlink() else []
    return sorted(policy.glob("*.polar"))


def read_sources(policy_dir: Path) -> list[SourceFile]:
    """Read every .polar file of the directory (or the one file named) exactly once. Any error (a
    dangling symlink, an unreadable file, bytes that are not UTF-8) is a PolicyError, never
    anything else."""
    try:
        paths = policy_files(policy_dir)
    except OSError as error:
        raise PolicyError(f"cannot list {policy_dir}: {error}") from error
    if not paths:
        raise PolicyError(f"no .polar files in {policy_dir}")
    sources = []
    for path in paths:
        try:
            with open(path, "rb") as handle:
                data = handle.read()
            sources.append(SourceFile(path, data.decode("utf-8")))
        except (OSError, UnicodeDecodeError) as error:
            raise PolicyError(f"cannot read {path.name}: {error}") from error
    return sources


def version_of(sources: list[SourceFile]) -> str:
    """A policy's version: a digest of its files' names and texts."""
    digest = hashlib.sha256()
    for source in sources:
        digest.update(source.path.name.encode() + b"\0" + source.text.encode() + b"\0")
    return digest.hexdigest()[:12]


def declarations(source: str) -> tuple[dict[str, tuple[str, ...]], dict[str, tuple[str, ...]]]:
    """The roles and permissions each resource block declares."""
    roles: dict[str, tuple[str, ...]] = {}
    permissions: dict[str, tuple[str, ...]] = {}
    for name, body in _RESOURCE_BLOCK.findall(source):
        body = re.sub(r"#[^\n]*", "", body)
        for kind, items in _DECLARED_LIST.findall(body):
            target = roles if kind == "roles" else permissions
            target[name] = tuple(re.findall(r'"([^"]+)"', items))
    return roles, permissions


@dataclass(frozen=True)
class Block:
    """A resource block: where it is, and the relations it declares (name -> type)."""

    name: str
    file: str
    line: int
    relations: dict[str, str]


def blocks(sources: list[SourceFile]) -> dict[str, Block]:
    found = {}
    for source in sources:
        for match in _RESOURCE_BLOCK.finditer(source.text):
            body = re.sub(r"#[^\n]*", "", match.group(2))
            relations = {}
            for items in _RELATIONS.findall(body):
                relations.update(re.findall(r"(\w+)\s*:\s*(\w+)", items))
            found[match.group(1)] = Block(match.group(1), source.path.name,
                                          source.text.count("\n", 0, match.start(1)) + 1, relations)
    return found


def resource_types(found: dict[str, Block]) -> dict[str, Block]:
    """The resource types the policy declares: every block with a relation `organization:
    Organization`, or `parent:` another resource type (found until nothing more is)."""
    declared: dict[str, Block] = {}
    more = True
    while more:
        more = False
        for name, block in found.items():
            if name in declared or name in SERVICE_BLOCKS:
                continue
            if block.relations.get("organization") == "Organization" or block.relations.get("parent") in declared:
                declared[name] = block
                more = True
    return dict(sorted(declared.items()))


def chains_of(types: dict[str, Block]) -> dict[str, list[tuple[str, ...]]]:
    """Per declared type, the shapes of chain a resource of it may have, shortest first: top-level
    (when it has an organization), and under a parent of the shortest chain the parent has."""
    shortest: dict[str, tuple[str, ...]] = {n: (n,) for n, b in types.items() if "organization" in b.relations}
    more = True
    while more:
        more = False
        for name, block in types.items():
            parent = block.relations.get("parent")
            if name not in shortest and parent in shortest:
                shortest[name] = (name, *shortest[parent])
                more = True
    chains = {}
    for name, block in types.items():
        found = [(name,)] if "organization" in block.relations else []
        parent = block.relations.get("parent")
        if parent in shortest:
            found.append((name, *shortest[parent]))
        chains[name] = found
    return chains


def relation_names(source: str) -> set[str]:
    names: set[str] = set()
    for _, body in _RESOURCE_BLOCK.findall(source):
        for items in _RELATIONS.findall(re.sub(r"#[^\n]*", "", body)):
            names |= set(re.findall(r"(\w+)\s*:", items))
    return names


# The contract's verdict per policy text (the version is a hash of it): tests and the mutation
# run build many Policy objects from the same files.
_contract_verdicts: dict[str, list[str]] = {}
# Explain's per-rule variants of a policy, and the rules found behind a decision, per version.
_variants_by_version: dict[str, list] = {}
_behind_by_version: dict[str, dict] = {}


class Policy:
    def __init__(self, policy_dir: Path | str, *, subset_of: Policy | None = None, fact_free_later: bool = False):
        """`subset_of`: this policy is that one with rules deleted (the mutation run). Without
        negation, deleting rules never adds a grant, so the fact-free check is not repeated.
        `fact_free_later`: the mutation run checks that part of the contract (`fact_free_problems`)
        only for a mutant no test catches: it costs more than the tests of most mutants."""
        self.directory = Path(policy_dir)
        self._subset_of = subset_of
        self._fact_free_later = fact_free_later
        self.sources = read_sources(self.directory)
        self.files = [source.path for source in self.sources]
        self.version = version_of(self.sources)
        text = "\n".join(source.text for source in self.sources)
        self.roles, self.permissions = declarations(text)
        self.relations = relation_names(text)
        self.blocks = blocks(self.sources)
        # The resource types of the check plane: Organization, and every type the policy declares.
        self.resource_types = resource_types(self.blocks)
        self.chains = chains_of(self.resource_types)
        declared = self._block_problems()
        if declared:  # oso would refuse an unregistered class with less to say
            raise PolicyError("policy fails validation: " + "; ".join(declared), declared)
        self._oso = _new_oso(self.resource_types)
        try:
            # Loaded from the text read above: what is hashed is what is loaded.
            self._oso._load_sources([PolarSource(s.text, str(s.path)) for s in self.sources])
        except Exception as error:  # oso raises several unrelated types; all mean "does not load"
            raise PolicyError(f"policy does not load: {error}") from error
        self.scopes = self._declared_list(SCOPES_RULE) or ()
        # None when the policy does not declare them (`problems` reports it).
        self.referral_scopes = self._declared_list(REFERRAL_SCOPES_RULE)
        self._lock = threading.Lock()
        self._allowed: dict[tuple, bool] = {}
        self._actions: dict[tuple, frozenset[str]] = {}
        self._rule_variants: list | None = None
        problems = self.problems()
        if problems:
            raise PolicyError("policy fails validation: " + "; ".join(problems), problems)

    def _declared_list(self, rule: str) -> tuple[str, ...] | None:
        """The list a rule `rule([...]);` of the policy declares (the scopes a client can grant a
        partner, the scopes a referral starts with); None when it declares no such one list."""
        try:
            found = list(self._oso.query_rule(rule, Variable("scopes")))
        except Exception:  # noqa: BLE001 - no such rule: reported by `problems`
            return None
        if len(found) != 1 or not isinstance(found[0]["bindings"]["scopes"], list):
            return None
        return tuple(str(scope) for scope in found[0]["bindings"]["scopes"])

    def _block_problems(self) -> list[str]:
        """Resource blocks that are neither the service's own nor a type callers can register."""
        problems = []
        for name, block in self.blocks.items():
            where = f"{CONTRACT} {block.file}:{block.line}:"
            if name in facts.RESERVED_TYPES and name not in SERVICE_BLOCKS:
                problems.append(f"{where} {name} is a name of the service's own facts; a resource type needs another")
            elif name not in SERVICE_BLOCKS and name not in self.resource_types:
                parent = block.relations.get("parent")
                why = f"its parent type {parent} is not a resource type" if parent else \
                    "it declares neither `organization: Organization` nor `parent: <a declared type>`"
                problems.append(f"{where} resource {name} cannot be registered: {why}")
        return problems

    def unchanged(self) -> bool:
        """Whether the policy's files still hold what was loaded (a process forked from a policy
        loaded earlier serves it only then, never files changed since)."""
        try:
            return version_of(read_sources(self.directory)) == self.version
        except PolicyError:
            return False

    def is_resource_type(self, name: str) -> bool:
        """A type of the check plane: Organization, or one the policy declares."""
        return name == "Organization" or name in self.resource_types

    def problems(self) -> list[str]:
        """What `mandate policy check` reports beyond oso's own load-time validation."""
        problems = []
        for resource_type, actions in SERVICE_ACTIONS.items():
            declared = set(self.permissions.get(resource_type, ()))
            problems += [f"{resource_type} does not declare the permission {a.value!r} the service asks about"
                         for a in actions if a.value not in declared]
        if not self.scopes:
            problems.append(f"the policy declares no scopes a client can grant: a rule `{SCOPES_RULE}([...]);`")
        actions = {p for name in self.resource_types for p in self.permissions.get(name, ())}
        problems += [f"the scope {scope!r} is no permission of a resource type" for scope in self.scopes
                     if scope not in actions]
        if self.referral_scopes is None:
            problems.append("the policy declares no scopes a referral connection starts with: a rule "
                            f"`{REFERRAL_SCOPES_RULE}([...]);` (R10, R12)")
        else:
            problems += [f"the referral scope {scope!r} is not a scope a client can grant ({SCOPES_RULE})"
                         for scope in self.referral_scopes if scope not in self.scopes]
        for resource_type, chain in [("Organization", ()), *((t, c[0]) for t, c in self.chains.items() if c)]:
            user, resource = facts.views(Subject(chain=chain), resource_type)
            try:
                self._oso.is_allowed(user, "view", resource)
            except Exception as error:  # noqa: BLE001 - any error here means decisions would fail
                problems.append(f"deciding on a {resource_type} fails: {str(error).splitlines()[0]}")
        known = BUILTIN_CLASSES | POLICY_CLASS_NAMES | set(self.resource_types)
        for source in self.sources:
            for number, line in enumerate(source.text.splitlines(), 1):
                code = line.split("#", 1)[0]
                for name in _SPECIALIZER.findall(code):
                    if name not in known:
                        problems.append(f"{source.path.name}:{number}: unknown type {name!r} (never matches)")
        if not problems and self._fact_free_later:  # a partial verdict: not remembered
            problems += self.contract_problems()
        elif not problems:  # the contract is about a policy that otherwise works
            if self.version not in _contract_verdicts:
                if len(_contract_verdicts) >= 1000:
                    _contract_verdicts.clear()
                _contract_verdicts[self.version] = self.contract_problems()
            problems += _contract_verdicts[self.version]
        return problems

    # -- the contract ------------------------------------------------------------------------

    def contract_problems(self) -> list[str]:
        """Each way the policy breaks the contract in the header of policies/shared.polar."""
        problems = []
        vocabulary = (FACT_VALUES | self.relations | {r for rs in self.roles.values() for r in rs}
                      | {p for ps in self.permissions.values() for p in ps})
        attributes = set().union(*facts.ATTRIBUTES.values())
        for source in self.sources:
            line = 1
            for token in _TOKEN.findall(source.text):
                where = f"{CONTRACT} {source.path.name}:{line}:"
                line += token.count("\n")
                if token.startswith("#") or token.isspace() or not token:
                    continue
                if token in NEGATIONS:
                    problems.append(f"{where} negation ({token}) is not allowed: a fact the policy does not "
                                    "see would turn into an allow")
                elif token.startswith('"') and token[1:-1] not in vocabulary:
                    problems.append(f"{where} the literal {token} is not a role, status, action or scope; "
                                    "ids and other literals are not allowed")
                elif token.startswith(".") and token[1:].strip() not in attributes:
                    problems.append(f"{where} .{token[1:].strip()} is not a fact the policy sees")
        if not self._fact_free_later and (self._subset_of is None
                                          or _contract_verdicts.get(self._subset_of.version) != []):
            problems += self._fact_free_grants()
            problems += self._cross_path_grants()
        return problems

    def fact_free_problems(self) -> list[str]:
        """The part of the contract a policy built with `fact_free_later` has not checked yet."""
        return self._fact_free_grants() + self._cross_path_grants()

    def _cross_path_grants(self) -> list[str]:
        """Each rule joins one partner path: a partner's membership, connection and assignment,
        never one partner's with another's. Decisions are made path by path
        (`facts.partner_paths`), which is exact only then; a rule that joins two paths would
        grant on the whole subject what no path grants alone. Checked by asking both ways, for
        pairs of paths that each hold half of what a grant needs."""
        problems = []
        targets = [("Organization", ())] + [(t, chains[0]) for t, chains in self.chains.items() if chains]
        for first, second in itertools.permutations(PATH_SHAPES, 2):
            paths = (path_facts(first, "p0", self.scopes), path_facts(second, "p1", self.scopes))
            whole = Subject(memberships=tuple(m for m, _, _ in paths if m), connections=tuple(c for _, c, _ in paths),
                            assignments=tuple(a for _, _, a in paths if a))
            for resource_type, chain in targets:
                subject = replace(whole, chain=chain)
                try:
                    user, resource = facts.views(subject, resource_type)
                    together = {a for a in self._oso.authorized_actions(user, resource) if a != "*"}
                    alone = self.actions(subject, resource_type)
                except Exception:  # noqa: BLE001 - a policy that fails to decide: reported elsewhere
                    return problems
                if together - alone:
                    problems.append(f"{CONTRACT} {self.sources[0].path.name}:1: grants "
                                    f"{sorted(together - alone)} on a {resource_type} only by joining the facts "
                                    "of two partners (a membership of one, the connection of another); every "
                                    "rule must join one partner path")
                    return problems
        return problems

    def _fact_free_grants(self) -> list[str]:
        """A user with no membership at all must be denied every action on every resource and
        target: the lists only ever ask about users and organizations with facts."""
        problems = []
        reported = set()
        for resource_type, subject in fact_free_subjects(self):
            for action in self.permissions.get(resource_type, ()):
                if (resource_type, action) in reported:
                    continue
                try:
                    user, resource = facts.views(subject, resource_type)
                    granted = self._oso.is_allowed(user, action, resource)
                except Exception as error:  # noqa: BLE001
                    problems.append(f"{CONTRACT} {self.sources[0].path.name}:1: deciding {action!r} on a "
                                    f"{resource_type} fails: {str(error).splitlines()[0]}")
                    return problems
                if granted:
                    reported.add((resource_type, action))
                    problems.append(f"{CONTRACT} {self._granting_rule(resource_type, action, subject)}: "
                                    f"grants {action!r} on a {resource_type} to a user with no membership "
                                    f"({subject.target or 'no target'}); every grant needs a fact")
        return problems

    def _granting_rule(self, resource_type: str, action: str, subject: Subject) -> str:
        """file:line of the rule whose deletion stops the fact-free grant (the first one)."""
        for source in self.sources:
            for rule in rules(source.path, source.text):
                oso = _new_oso(self.resource_types)
                try:
                    with contextlib.redirect_stdout(io.StringIO()):  # oso warns about a deleted allow rule
                        oso._load_sources([PolarSource(s.text if s is not source else
                                                       s.text[:rule.start] + s.text[rule.end:], str(s.path))
                                           for s in self.sources])
                    user, resource = facts.views(subject, resource_type)
                    if not oso.is_allowed(user, action, resource):
                        return f"{source.path.name}:{rule.line}"
                except Exception:  # noqa: BLE001,S112 - a deletion that breaks loading says nothing here
                    continue
        return f"{self.sources[0].path.name}:1"

    # -- which rules decide (Explain) -------------------------------------------------------------

    def rules_behind(self, subject: Subject, resource_type: str, action: str) -> list[RuleNote]:
        """The rules without which the policy would not allow this: each rule is deleted in turn
        and the policy asked again. Empty when the policy denies it."""
        if not self.is_allowed(subject, resource_type, action):
            return []
        key = (subject, resource_type, action)
        behind = _behind_by_version.setdefault(self.version, {})
        if key in behind:
            return behind[key]
        user, resource = facts.views(subject, resource_type)
        needed = []
        for note, oso in self._variants():
            if oso is None:
                continue  # the policy does not even load without it: a declaration, not a reason
            try:
                if not oso.is_allowed(user, action, resource):
                    needed.append(note)
            except Exception:  # noqa: BLE001 - a variant that fails to decide needed the rule
                needed.append(note)
        self._remember(behind, key, needed)
        return needed

    def _variants(self) -> list[tuple[RuleNote, Oso | None]]:
        """One oso per rule, loaded without that rule (None when the policy does not load without it)."""
        with self._lock:
            if self._rule_variants is None:
                self._rule_variants = _variants_by_version.get(self.version)
            if self._rule_variants is None:
                variants = []
                for source in self.sources:
                    lines = source.text.splitlines()
                    for rule in rules(source.path, source.text):
                        oso = _new_oso(self.resource_types)
                        try:
                            with contextlib.redirect_stdout(io.StringIO()):
                                oso._load_sources([PolarSource(
                                    other.text if other is not source else
                                    other.text[:rule.start] + other.text[rule.end:], str(other.path))
                                    for other in self.sources])
                        except Exception:  # noqa: BLE001 - needed by the policy to load at all
                            oso = None
                        variants.append((note_of(source.path.name, lines, rule), oso))
                self._rule_variants = variants
                if len(_variants_by_version) >= 8:  # a few policies' worth (reloads, tests)
                    _variants_by_version.clear()
                    _behind_by_version.clear()
                _variants_by_version[self.version] = variants
            return self._rule_variants

    # -- decisions ---------------------------------------------------------------------------

    def is_allowed(self, subject: Subject, resource_type: str, action: str) -> bool:
        key = (subject, resource_type, action)
        answer = self._allowed.get(key)
        if answer is None:
            pieces = facts.partner_paths(subject)
            if pieces is not None:  # path by path: linear in the partners, not quadratic
                answer = any(self.is_allowed(piece, resource_type, action) for piece in pieces)
            else:
                user, resource = facts.views(subject, resource_type)
                # R24: a runtime error in the policy propagates: the caller fails closed.
                answer = bool(self._oso.is_allowed(user, action, resource))
            self._remember(self._allowed, key, answer)
        return answer

    def actions(self, subject: Subject, resource_type: str) -> frozenset[str]:
        key = (subject, resource_type)
        answer = self._actions.get(key)
        if answer is None:
            pieces = facts.partner_paths(subject)
            if pieces is not None:
                answer = frozenset().union(*(self.actions(piece, resource_type) for piece in pieces))
            else:
                user, resource = facts.views(subject, resource_type)
                answer = frozenset(a for a in self._oso.authorized_actions(user, resource) if a != "*")
            self._remember(self._actions, key, answer)
        return answer

    def _remember(self, cache: dict, key, answer) -> None:
        with self._lock:
            if len(cache) >= CACHE_LIMIT:
                cache.clear()
            cache[key] = answer


@dataclass(frozen=True)
class RuleNote:
    """Where a rule is, and what the comment above it says: the domain rules it names (R7) and
    its first sentence."""

    file: str
    line: int
    names: tuple[str, ...]
    comment: str

    def short(self) -> str:
        return f"{', '.join(self.names) or 'no domain rule named'} ({self.file}:{self.line})"

    def __str__(self) -> str:
        names = ", ".join(self.names) or "no domain rule named"
        return f"{names} ({self.file}:{self.line}: {self.comment})" if self.comment else \
            f"{names} ({self.file}:{self.line})"


_RULE_NAMES = re.compile(r"\bR(\d+)(?:\s+to\s+R(\d+))?\b")


def rule_names(text: str) -> tuple[str, ...]:
    """The domain rules a comment names, in order: "R15 to R18" is R15, R16, R17 and R18."""
    names = []
    for first, last in _RULE_NAMES.findall(text):
        names += [f"R{number}" for number in range(int(first), int(last or first) + 1)]
    return tuple(dict.fromkeys(names))


def note_of(file: str, lines: list[str], rule: Rule) -> RuleNote:
    """The comment block a rule sits under: walking up from the rule over code lines (the rules
    of the same block share its comment) to the first comment, stopping at a blank line."""
    number = rule.line - 2  # the line above the rule, 0-based
    while number >= 0 and lines[number].strip() and not lines[number].lstrip().startswith("#"):
        number -= 1
    comment: list[str] = []
    while number >= 0 and lines[number].lstrip().startswith("#"):
        comment.insert(0, lines[number].strip().lstrip("#").strip())
        number -= 1
    text = " ".join(comment)
    names = rule_names(text)
    first = re.sub(r"^(R\d+(\s*(,|to|and|with)\s*R\d+)*\s*(\([^)]*\))?:\s*)", "", text).split(". ")[0].rstrip(".")
    return RuleNote(file, rule.line, names, first)


def _new_oso(resource_types) -> Oso:
    oso = Oso()
    for cls in facts.POLICY_CLASSES:
        oso.register_class(cls, name=cls.__name__.removesuffix("Fact"))
    for name in resource_types:
        oso.register_class(facts.resource_class(name), name=name)
    return oso


ROLES = ("", *(role.value for role in models.Role))  # "": no role
# Partner paths that each hold part of what a partner's grant needs (role, tagged, the connection
# grants every scope, employee approval, assigned and approved): a manager or a tagged employee
# whose connection grants nothing, and connections that grant everything to nobody of theirs.
PATH_SHAPES = (
    ("legal_representative", True, False, "partner", True),
    ("colleague", True, False, "client", True),
    ("", False, True, "partner", False),
    ("", False, True, "client", True),
)


def path_facts(shape: tuple, label: str, scopes: tuple[str, ...]):
    """The membership (or None), connection and assignment (or None) of one partner path."""
    role, tagged, grants, approval, assigned = shape
    return (MembershipFact(label, role, "active", tagged) if role else None,
            ConnectionFact(label, "active", frozenset(scopes) if grants else frozenset(), approval),
            AssignmentFact(label, True) if assigned else None)


def fact_free_subjects(policy: Policy):
    """(resource type, Subject) pairs with no fact about the actor: every target shape."""
    yield "Organization", Subject()
    for resource_type, chains in policy.chains.items():
        for chain in chains:
            yield resource_type, Subject(chain=chain)
            for role in policy.roles.get(resource_type, ()):
                # A role given to someone who is not a member (a world file may): still no grant of
                # the organization's own, so nothing but what the role grants; checked by the
                # policy tests, not here. Roles to grant, with a grantee of every kind:
                for grantee in ((), (MembershipFact(facts.HOME, "colleague", "active", False),)):
                    yield "RoleGrant", Subject(chain=chain, target=RoleGrantTarget(role, grantee))
    # Every pair of role and new role; the other facts vary along with them (a covering, not
    # every combination: each decision costs a few milliseconds and this runs at every load).
    shapes = (("active", False, False), ("paused", True, True), ("", False, True), ("active", True, True),
              ("paused", False, False))
    for number, (role, new_role) in enumerate(itertools.product(ROLES, ROLES)):
        status, tagged, is_actor = shapes[(number + number // len(ROLES)) % len(shapes)]
        yield "Member", Subject(target=MemberTarget(role, status, tagged, is_actor, new_role))
    for by_link, sent_to_actor in itertools.product((False, True), repeat=2):
        yield "ClientInvitation", Subject(target=InvitationTarget(by_link, sent_to_actor))
    yield "OrganizationLink", Subject(target=LinkTarget())
    for status, approval in itertools.product([s.value for s in models.ConnectionStatus], ("client", "partner")):
        for scopes in (frozenset(), frozenset(policy.scopes)):
            yield "Connection", Subject(target=ConnectionFact(facts.UNKNOWN_PARTNER, status, scopes, approval))
