"""Reviewer tools: the access matrix and the mutation run.

`mandate policy matrix` evaluates the policy on a canonical world and prints who may do what;
`mandate policy mutate` deletes each rule of the policy in turn and runs the policy tests,
reporting every deletion the tests did not notice.
"""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from mandate import policytest
from mandate.policy import Policy, PolicyError, Rule, rules  # noqa: F401 - rules: part of this module's API
from mandate.world import EphemeralApp

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
RESOURCES = (("Project", "shop-site"), ("Organization", "shop"))
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


def matrix_rows(policy: Policy) -> list[tuple[str, str, str, bool]]:
    """(persona, resource type, action, allowed) for every persona, resource and declared action,
    then (persona, "target", what, allowed) for every target of TARGETS."""
    rows = []
    with EphemeralApp(policy.directory, CANONICAL_WORLD, policy=policy) as app:
        for resource_type, resource_id in RESOURCES:
            for action in policy.permissions.get(resource_type, ()):
                for user, persona in PERSONAS:
                    allowed = app.authorizer.check("User", user, action, resource_type, resource_id)
                    rows.append((persona, resource_type, action, allowed))
        for what, action, ref, new_role in TARGETS:
            target_type, _, target_id = ref.partition(":")
            for user, persona in PERSONAS:
                target = policytest.target_ref(user, target_type, target_id, new_role)
                rows.append((persona, "target", what, app.authorizer.check_target(user, action, target)))
    return rows


def matrix_markdown(policy: Policy) -> str:
    rows = matrix_rows(policy)
    personas = [p for _, p in PERSONAS]
    lines = [
        "# Access matrix",
        "",
        "Generated by `mandate policy matrix` from `policies/` on the canonical world in",
        "`server/mandate/policytools.py`: a partner (agency) connected to a client (shop) that granted",
        "read, edit and publish with per-employee approval, and an account linked to the client's.",
        "Do not edit by hand; a test fails when the policy changes and this file was not regenerated.",
        "",
        "Personas:",
        "",
    ]
    lines += [f"{n}. {persona}" for n, persona in enumerate(personas, 1)]
    for resource_type, resource_id in RESOURCES:
        lines += ["", f"## {resource_type} ({resource_id}, in the client's organization)", ""]
        lines.append("| action | " + " | ".join(str(n) for n in range(1, len(personas) + 1)) + " |")
        lines.append("|---|" + "---|" * len(personas))
        for action in policy.permissions.get(resource_type, ()):
            cells = ["✓" if allowed else "·" for _, t, a, allowed in rows if t == resource_type and a == action]
            lines.append(f"| {action} | " + " | ".join(cells) + " |")
    lines += ["", "## Targets of mutations", "",
              "Whom a mutation may touch: the membership, invitation or connection it changes",
              "(resources Member, ClientInvitation and Connection of the policy).", ""]
    lines.append("| change | " + " | ".join(str(n) for n in range(1, len(personas) + 1)) + " |")
    lines.append("|---|" + "---|" * len(personas))
    for what, *_ in TARGETS:
        cells = ["✓" if allowed else "·" for _, t, a, allowed in rows if t == "target" and a == what]
        lines.append(f"| {what} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def matrix_csv(policy: Policy) -> str:
    lines = ["persona,resource_type,action,allowed"]
    lines += [f'"{p}",{t},{a},{"true" if ok else "false"}' for p, t, a, ok in matrix_rows(policy)]
    return "\n".join(lines) + "\n"


# -- mutation run --------------------------------------------------------------------------


@dataclass
class Mutant:
    rule: Rule
    killed: bool
    how: str


def mutation_run(policy_dir: Path, test_paths: list[str] | None) -> list[Mutant]:
    """Delete each rule in turn and run the policy tests against the mutant. Each test world is
    loaded once and every mutant is swapped into it (the facts do not depend on the policy);
    a mutant is killed by its first failing expectation."""
    policy_dir = Path(policy_dir)
    original = Policy(policy_dir)
    loaded = []
    try:
        for path in policytest.find_files(test_paths):
            ephemeral, expectations = policytest.load_file(path, original)
            loaded.append((path, ephemeral, expectations))
        return [_mutant(policy_dir, rule, loaded, original) for path in sorted(policy_dir.glob("*.polar"))
                for rule in rules(path)]
    finally:
        for _, ephemeral, _ in loaded:
            ephemeral.close()


def _mutant(policy_dir: Path, rule: Rule, loaded, original: Policy) -> Mutant:
    with tempfile.TemporaryDirectory(prefix="mandate-mutant-") as scratch:
        for other in policy_dir.glob("*.polar"):
            shutil.copy(other, scratch)
        text = rule.file.read_text()
        Path(scratch, rule.file.name).write_text(text[:rule.start] + text[rule.end:])
        try:
            policy = Policy(scratch, subset_of=original)
        except PolicyError as error:
            return Mutant(rule, True, f"the policy no longer loads ({str(error)[:80]})")
    for path, ephemeral, expectations in loaded:
        ephemeral.app.authorizer.swap_policy(policy)
        for number, item in enumerate(expectations, 1):
            outcome = policytest.run_expectation(ephemeral.app, str(path), number, item, explain_failures=False)
            if not outcome.passed:
                return Mutant(rule, True, f"expectation fails: {outcome.title}")
    return Mutant(rule, False, "no test failed")
