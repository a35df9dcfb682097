"""A new policy's trial before a reload swaps it in (R24).

A policy can load, keep the contract and still fail at run time on every real decision (an
operation on a fact of the wrong type, say): it would fail closed, but every Check would answer
INTERNAL. So before a reload swaps a policy in, the policy decides a bounded sample of real
situations from the live fact index (every declared action of every resource and target type
there), and runs its own tests (`tests/` beside the .polar files, when there is one). Any
run-time error refuses the policy; the one serving keeps serving. A test whose expectation
fails without an error does not refuse it (a reviewed change may change decisions): the
reload logs it.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path

from mandate.engine import policytest
from mandate.engine.authorizer import Authorizer, ConnectionRef, InvitationRef, MemberRef, target_type
from mandate.engine.facts import Subject
from mandate.engine.index import FactIndex
from mandate.engine.policy import Policy

log = logging.getLogger(__name__)

# The sample: at most this many (user, organization) pairs are looked at, in id order, and at
# most this many distinct situations (with their targets) are decided. Each decision costs
# about a millisecond: the trial adds well under a second to a reload.
SAMPLE_PAIRS = 2_000
SAMPLE_SITUATIONS = 300


def sample(index: FactIndex, policy: Policy) -> list[tuple[Subject, str]]:
    """Distinct (Subject, resource type) decisions from the live index: for each (user,
    organization) pair with a fact, the organization and its projects, a membership in it (the
    user's own, then another's), the organization's partner connections, and a client invitation
    for it by link and by email."""
    authorizer = Authorizer(index.store, index, policy)
    found: dict[tuple[Subject, str], None] = {}
    pairs = 0
    with index.one_state():
        for organization_id in sorted(index.organizations):
            members = sorted(index.members.get(organization_id, ()))
            for user_id in sorted(index.candidate_users(organization_id)):
                pairs += 1
                subject = index.subject(user_id, organization_id)
                for resource_type, chain in (("Organization", ()),
                                             *((t, c) for t, shapes in policy.chains.items() for c in shapes)):
                    found.setdefault((replace(subject, chain=chain) if chain else subject, resource_type), None)
                targets = [MemberRef(organization_id, user_id)]
                targets += [MemberRef(organization_id, other) for other in members[:1] if other != user_id]
                targets += [ConnectionRef(partner_id, organization_id)
                            for partner_id in sorted(index.partners.get(organization_id, {}))]
                targets += [InvitationRef(organization_id, True, False), InvitationRef(organization_id, False, True)]
                for target in targets:
                    _, with_target = authorizer.target_subject(user_id, target)
                    found.setdefault((with_target, target_type(target)), None)
                if pairs >= SAMPLE_PAIRS or len(found) >= SAMPLE_SITUATIONS:
                    return list(found)
    return list(found)


def describe(subject: Subject, resource_type: str) -> str:
    from mandate.engine.policydiff import situation_words  # the diff's words for a situation

    target = f" {subject.target}" if subject.target is not None else ""
    return f"a {resource_type}{target} for a user who is " + "; ".join(situation_words(replace(subject, target=None)))


def problems(policy: Policy, index: FactIndex) -> list[str]:
    """Every run-time error of the policy on the sample and on its own tests (empty: it may serve)."""
    found = []
    for subject, resource_type in sample(index, policy):
        if resource_type not in policy.permissions:
            continue
        try:
            policy.actions(subject, resource_type)
        except Exception as error:  # noqa: BLE001 - any error while deciding refuses the policy
            found.append(f"deciding {describe(subject, resource_type)} fails: {_first_line(error)}")
            break  # one is enough to refuse; the same fault usually fails them all
    tests = Path(policy.directory) / "tests"
    if tests.is_dir():
        outcomes = policytest.run([str(tests)], policy)
        errors = [o for o in outcomes if o.runtime_error]
        found += [f"policy test {o.title}: {o.answer}" for o in errors[:3]]
        failed = [o for o in outcomes if not o.passed and not o.runtime_error]
        if failed:
            log.warning("policy %s: %d of its %d tests fail (not a run-time error, so it may serve), first: %s",
                        policy.version, len(failed), len(outcomes), failed[0].title)
    return found


def _first_line(error: Exception) -> str:
    text = str(error).strip()
    return f"{type(error).__name__}: {text.splitlines()[0] if text else ''}"
