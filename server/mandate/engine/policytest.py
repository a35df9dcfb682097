"""`mandate policy test`: worlds with expectations, run through the server's decision code.

A test file (YAML) holds a world (see mandate.runtime.world) and a list of expectations:

    name: pausing a colleague
    world: {...}            # or  world_file: ../worlds/agency.yaml  (relative to this file)
    expect:
      - allow: bob read Project:spring          # actor action Type:id
        rule: R2
      - deny: bob read Project:spring
        rule: R7
      - list_resources: bob read Project        # actor action Type
        equals: [spring]
      - list_actors: read Project:spring        # action Type:id
        equals: [alice, bob]

Targets of mutations are named the same way (see docs/policy-tests.md):

      - deny: lena pause Member:acme/lars       # the membership of lars in acme
      - allow: olga set_role Member:acme/lars   # with the role it is set to
        to: owner
      - allow: lars accept ClientInvitation:acme/link      # a link; or .../USER: sent to USER
      - allow: ann request_disconnect Connection:agency/acme   # partner/client
      - allow: olga grant RoleGrant:Project/spring/lars/editor  # a role on one resource: type/id/user/role
"""

from __future__ import annotations

import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

from mandate.engine.authorizer import ConnectionRef, InvitationRef, LinkRef, MemberRef, RoleGrantRef, TargetRef
from mandate.engine.explain import explain
from mandate.engine.policy import Policy
from mandate.runtime.world import EphemeralApp, WorldError, read_yaml

KINDS = ("allow", "deny", "list_resources", "list_actors")
DEFAULT_TEST_DIR = Path("policies/tests")


@dataclass
class Outcome:
    file: str
    number: int
    text: str
    rule: str
    passed: bool
    answer: str = ""
    reasons: list[str] = field(default_factory=list)
    seconds: float = 0.0
    runtime_error: bool = False  # deciding raised (the policy failed at run time), not a malformed expectation

    @property
    def title(self) -> str:
        rule = f" ({self.rule})" if self.rule else ""
        return f"{self.file} #{self.number}{rule}: {self.text}"


class ExpectationError(ValueError):
    """The expectation itself is malformed (not the policy's fault)."""


def find_files(paths: list[str] | None) -> list[Path]:
    files: list[Path] = []
    for path in [Path(p) for p in (paths or [DEFAULT_TEST_DIR])]:
        if path.is_dir():
            files.extend(sorted(path.rglob("*.yaml")) + sorted(path.rglob("*.yml")))
        elif path.exists():
            files.append(path)
        else:
            raise FileNotFoundError(f"no such test file or directory: {path}")
    return files


def run(paths: list[str] | None, policy: Policy) -> list[Outcome]:
    outcomes: list[Outcome] = []
    for path in find_files(paths):
        outcomes.extend(run_file(path, policy))
    return outcomes


def run_file(path: Path, policy: Policy) -> list[Outcome]:
    try:
        ephemeral, expectations = load_file(path, policy)
    except (WorldError, OSError, ValueError) as error:
        return [Outcome(str(path), 0, "load the world", "", False, answer=f"error: {error}")]
    with ephemeral as app:
        return [run_expectation(app, str(path), number, item) for number, item in enumerate(expectations, 1)]


def load_file(path: Path, policy: Policy) -> tuple[EphemeralApp, list]:
    """The test file's world in a throwaway store, and its expectations."""
    spec = read_yaml(path)
    world = spec.get("world")
    if "world_file" in spec:
        world = read_yaml(path.parent / spec["world_file"]).get("world")
    expectations = spec.get("expect") or []
    if not isinstance(expectations, list) or not expectations:
        raise WorldError("expect: must be a non-empty list")
    return EphemeralApp(policy.directory, world or {}, policy=policy), expectations


def run_expectation(app, file: str, number: int, item, explain_failures: bool = True) -> Outcome:
    started = time.perf_counter()
    if not isinstance(item, dict) or len([k for k in KINDS if k in item]) != 1:
        return Outcome(file, number, repr(item), "", False, answer=f"error: give exactly one of {', '.join(KINDS)}")
    kind = next(k for k in KINDS if k in item)
    listing = kind.startswith("list")
    unknown = sorted(set(item) - {kind, "rule"} - ({"equals"} if listing else {"to"}))
    if unknown or (listing and not isinstance(item.get("equals"), list)):
        problem = f"unknown keys {unknown}" if unknown else f"{kind} needs 'equals: [...]' (a list)"
        return Outcome(file, number, f"{kind} {item[kind]}", str(item.get("rule", "")), False,
                       answer=f"error: {problem}")
    words = str(item[kind]).split()
    rule = str(item.get("rule", ""))
    text = f"{kind} {item[kind]}" + (f" == {sorted(item.get('equals') or [])}" if kind.startswith("list") else "")
    outcome = Outcome(file, number, text, rule, False)
    try:
        if kind in ("allow", "deny"):
            actor, action, resource = _words(words, 3, "ACTOR ACTION Type:id")
            resource_type, resource_id = _ref(resource)
            target = target_ref(actor, resource_type, resource_id, str(item.get("to", "")))
            if target is not None:
                allowed = app.authorizer.check_target(actor, action, target)
            else:
                if "to" in item:
                    raise ExpectationError("'to' is only for Member targets")
                allowed = app.authorizer.check("User", actor, action, resource_type, resource_id)
            outcome.passed = allowed == (kind == "allow")
            outcome.answer = "allowed" if allowed else "denied"
            if not outcome.passed and target is None and explain_failures:
                outcome.reasons = explain(app.authorizer, "User", actor, action, resource_type, resource_id)[1]
        else:
            expected = sorted(str(x) for x in (item.get("equals") or []))
            if kind == "list_resources":
                actor, action, resource_type = _words(words, 3, "ACTOR ACTION Type")
                found = _all_pages(lambda size, after: app.authorizer.list_resources(
                    actor, action, resource_type, size, after))
            else:
                action, resource = _words(words, 2, "ACTION Type:id")
                resource_type, resource_id = _ref(resource)
                found = _all_pages(lambda size, after: app.authorizer.list_actors(
                    action, resource_type, resource_id, size, after))
            outcome.passed = sorted(found) == expected
            outcome.answer = str(sorted(found))
    except Exception as error:  # noqa: BLE001 - a policy runtime error fails the expectation (R24)
        outcome.passed = False
        outcome.runtime_error = not isinstance(error, ExpectationError)
        outcome.answer = f"error: {type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}"
    outcome.seconds = time.perf_counter() - started
    return outcome


def target_ref(actor: str, resource_type: str, resource_id: str, new_role: str = "") -> TargetRef | None:
    """The target of a mutation named as `Member:ORG/USER`, `Connection:PARTNER/CLIENT`,
    `OrganizationLink:ORG/OTHER` or `ClientInvitation:CLIENT/link` (or `/USER`: an invitation by
    email sent to USER); None for the resources of the check plane."""
    if resource_type not in ("Member", "Connection", "ClientInvitation", "RoleGrant", "OrganizationLink"):
        return None
    if resource_type == "RoleGrant":
        parts = resource_id.split("/")
        if len(parts) != 4 or not all(parts) or new_role:
            raise ValueError(f"RoleGrant:{resource_id} must name TYPE/ID/USER/ROLE")
        return RoleGrantRef(*parts)
    first, slash, second = resource_id.partition("/")
    if not slash or not first or not second:
        raise ExpectationError(f"{resource_type}:{resource_id} must name two ids, as {resource_type}:A/B")
    if resource_type == "Member":
        return MemberRef(first, second, new_role)
    if new_role:
        raise ExpectationError("'to' is only for Member targets")
    if resource_type == "Connection":
        return ConnectionRef(first, second)
    if resource_type == "OrganizationLink":
        return LinkRef(first, second)
    return InvitationRef(first, by_link=second == "link", sent_to_actor=second == actor)


def _words(words: list[str], count: int, shape: str) -> list[str]:
    if len(words) != count:
        raise ExpectationError(f"expected '{shape}'")
    return words


def _ref(text: str) -> tuple[str, str]:
    kind, _, ident = text.partition(":")
    if not ident:
        raise ExpectationError(f"{text!r} is not Type:id")
    return kind, ident


def _all_pages(fetch) -> list[str]:
    found: list[str] = []
    after = ""
    while True:
        ids, after = fetch(100, after)
        found.extend(ids)
        if not after:
            return found


def report(outcomes: list[Outcome], out) -> None:
    for outcome in outcomes:
        if not outcome.passed:
            print(f"FAIL {outcome.title}", file=out)
            print(f"     answer: {outcome.answer}", file=out)
            for reason in outcome.reasons:
                print(f"     explain: {reason}", file=out)
    failed = sum(not o.passed for o in outcomes)
    print(f"{len(outcomes) - failed} passed, {failed} failed", file=out)


def write_junit(outcomes: list[Outcome], path: str) -> None:
    suites = ET.Element("testsuites", name="mandate policy test")
    by_file: dict[str, list[Outcome]] = {}
    for outcome in outcomes:
        by_file.setdefault(outcome.file, []).append(outcome)
    for file, items in by_file.items():
        suite = ET.SubElement(suites, "testsuite", name=file, tests=str(len(items)),
                              failures=str(sum(not o.passed for o in items)))
        for outcome in items:
            case = ET.SubElement(suite, "testcase", classname=file, name=f"#{outcome.number} {outcome.text}",
                                 time=f"{outcome.seconds:.4f}")
            if not outcome.passed:
                failure = ET.SubElement(case, "failure", message=f"answer: {outcome.answer}")
                failure.text = "\n".join(outcome.reasons)
    ET.ElementTree(suites).write(path, encoding="utf-8", xml_declaration=True)
