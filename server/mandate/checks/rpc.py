"""AuthorizationService: the check plane. An unknown actor, resource or action is a deny."""

from __future__ import annotations

from mandate import deadlines
from mandate.checks.history import MAX_PAST_TIMES, History
from mandate.checks.review import access_review
from mandate.engine.authorizer import Authorizer
from mandate.engine.explain import explain
from mandate.errors import InvalidArgument, TooManyRevisions
from mandate.names import Reason
from mandate.runtime import callers, convert
from mandate.runtime import validate as v
from mandate.shared.expiry import Expiries
from mandate.store.db import Store
from mandate.v1 import authorization_pb2 as pb
from mandate.v1 import authorization_pb2_grpc


def check_fields(request, field: str = "") -> tuple[str, str, str, str, str]:
    actor_type, actor_id = v.object_ref(f"{field}actor", request.actor, request.HasField("actor"))
    resource_type, resource_id = v.object_ref(f"{field}resource", request.resource, request.HasField("resource"))
    return actor_type, actor_id, v.action(f"{field}action", request.action), resource_type, resource_id


class AuthorizationService(authorization_pb2_grpc.AuthorizationServiceServicer):
    def __init__(self, authorizer: Authorizer, store: Store, expiries: Expiries, history: History,
                 max_batch: int = v.MAX_BATCH):
        self.authorizer = authorizer
        self.store = store
        self.expiries = expiries
        self.history = history
        self.max_batch = max_batch  # MANDATE_MAX_BATCH

    def view(self, request, field: str = "", decision: tuple | None = None) -> tuple[Authorizer, int]:
        """Who answers the request, at which revision: the present (caught up to the request's
        `at_least_revision`), or the past (`at_revision`, `as_of`: mandate.checks.history).
        `decision`: the request is one decision, these `check_fields` (the past then reads only
        its facts)."""
        at_least = v.revision(f"{field}at_least_revision", request.at_least_revision)
        if not (request.at_revision or request.as_of):
            return self.authorizer, self.authorizer.at_least(at_least)
        if at_least is not None:
            raise InvalidArgument(f"{field}at_least_revision", "cannot be combined with at_revision or as_of")
        past = self.past(request, field, decision_about(decision) if decision else None)
        return past, past.index.revision

    def past(self, request, field: str = "", around: tuple[str, str, str] | None = None) -> Authorizer:
        """The check plane at the request's `at_revision` or `as_of` (one of them is set)."""
        at = v.revision(f"{field}at_revision", request.at_revision)
        as_of = v.moment(f"{field}as_of", request.as_of)
        if at is not None and as_of is not None:
            raise InvalidArgument(f"{field}as_of", "give at_revision or as_of, not both")
        return self.history.authorizer_at(at, as_of, around)

    def Check(self, request, context):
        fields = check_fields(request)
        if not (request.at_least_revision or request.at_revision or request.as_of):  # the present, as it is
            authorizer = self.authorizer
            revision = authorizer.index.revision
            if callers.current_organizations() is not None:
                within_scope(authorizer, *fields[3:])
        else:
            within_scope(self.authorizer, *fields[3:], known_only=True)
            authorizer, revision = self.view(request, decision=fields)
            within_scope(authorizer, *fields[3:])
        policy = authorizer.policy
        return pb.CheckResponse(allowed=authorizer.check(*fields, policy), revision=str(revision),
                                policy_version=policy.version)

    def BatchCheck(self, request, context):
        if len(request.checks) > self.max_batch:
            raise InvalidArgument("checks", f"at most {self.max_batch} checks per batch")
        if any(c.at_revision or c.as_of for c in request.checks):  # about the past: each one at its own time
            return pb.BatchCheckResponse(results=self._past_checks(request.checks))
        requests = [(check_fields(c, f"checks[{i}]."), v.revision(f"checks[{i}].at_least_revision",
                                                                   c.at_least_revision))
                    for i, c in enumerate(request.checks)]
        wanted = max((r for _, r in requests if r is not None), default=None)
        revision = str(self.authorizer.at_least(wanted))
        if callers.current_organizations() is not None:
            for fields, _ in requests:
                within_scope(self.authorizer, *fields[3:])
        check, policy = self.authorizer.check, self.authorizer.policy
        return pb.BatchCheckResponse(results=[
            pb.CheckResponse(allowed=check(*fields, policy), revision=revision, policy_version=policy.version)
            for fields, _ in requests])

    def _past_checks(self, checks) -> list[pb.CheckResponse]:
        """Checks that ask about their own times, one time after the other: at most
        MAX_PAST_TIMES distinct past times per request (TOO_MANY_REVISIONS), and the facts of
        one time are let go before the next one's are read."""
        fields = [check_fields(c, f"checks[{i}].") for i, c in enumerate(checks)]
        for check in fields:  # a caller's scope, before anything of the past is read
            within_scope(self.authorizer, *check[3:], known_only=True)
        times: dict[tuple[str, str, str], list[int]] = {}
        past = 0
        for number, c in enumerate(checks):
            when = (c.at_revision, c.as_of, c.at_least_revision)
            if when not in times and (c.at_revision or c.as_of):
                past += 1
                if past > MAX_PAST_TIMES:
                    raise TooManyRevisions(f"checks[{number}].{'at_revision' if c.at_revision else 'as_of'}",
                                           MAX_PAST_TIMES)
            times.setdefault(when, []).append(number)
        results: list[pb.CheckResponse | None] = [None] * len(checks)
        for numbers in times.values():
            authorizer, revision = self.view(checks[numbers[0]], f"checks[{numbers[0]}].")
            policy = authorizer.policy
            for number in numbers:
                deadlines.check("the batch was not answered")
                within_scope(authorizer, *fields[number][3:])
                results[number] = pb.CheckResponse(allowed=authorizer.check(*fields[number], policy),
                                                   revision=str(revision), policy_version=policy.version)
            del authorizer  # its facts go before the next time's are built
        return results

    def ListActions(self, request, context):
        actor_type, actor_id = v.object_ref("actor", request.actor, request.HasField("actor"))
        resource_type, resource_id = v.object_ref("resource", request.resource, request.HasField("resource"))
        within_scope(self.authorizer, resource_type, resource_id, known_only=True)
        authorizer, revision = self.view(request, decision=(actor_type, actor_id, "", resource_type, resource_id))
        within_scope(authorizer, resource_type, resource_id)
        policy = authorizer.policy
        actions = authorizer.list_actions(actor_type, actor_id, resource_type, resource_id, policy)
        return pb.ListActionsResponse(actions=actions, revision=str(revision), policy_version=policy.version)

    def ListResources(self, request, context):
        actor_type, actor_id = v.object_ref("actor", request.actor, request.HasField("actor"))
        action = v.action("action", request.action)
        resource_type = v.resource_type("resource_type", request.resource_type)
        size = v.page_size("page_size", request.page_size)
        after = v.page_token("page_token", request.page_token)
        authorizer, revision = self.view(request)
        policy = authorizer.policy
        known_type("resource_type", resource_type, policy)
        ids, last = ([], "") if actor_type != "User" else authorizer.list_resources(
            actor_id, action, resource_type, size, after, policy, callers.current_organizations())
        return pb.ListResourcesResponse(resource_ids=ids, next_page_token=v.encode_page_token(last),
                                        revision=str(revision), policy_version=policy.version)

    def ListActors(self, request, context):
        action = v.action("action", request.action)
        resource_type, resource_id = v.object_ref("resource", request.resource, request.HasField("resource"))
        v.resource_type("resource.type", resource_type)
        size = v.page_size("page_size", request.page_size)
        after = v.page_token("page_token", request.page_token)
        within_scope(self.authorizer, resource_type, resource_id, known_only=True)
        authorizer, revision = self.view(request)
        within_scope(authorizer, resource_type, resource_id)
        policy = authorizer.policy
        known_type("resource.type", resource_type, policy)
        ids, last = authorizer.list_actors(action, resource_type, resource_id, size, after, policy)
        return pb.ListActorsResponse(user_ids=ids, next_page_token=v.encode_page_token(last),
                                     revision=str(revision), policy_version=policy.version)

    def Explain(self, request, context):
        fields = check_fields(request)
        within_scope(self.authorizer, *fields[3:], known_only=True)
        authorizer, revision = self.view(request, decision=fields)
        within_scope(authorizer, *fields[3:])
        policy = authorizer.policy
        allowed, reasons = explain(authorizer, *fields, policy)
        actor_type, actor_id, _, resource_type, resource_id = fields
        organization_id = authorizer.index.organization_of(resource_type, resource_id)
        if allowed and actor_type == "User" and organization_id is not None:
            past = None if authorizer is self.authorizer else revision
            chain = authorizer.index.chain(resource_type, resource_id) if resource_type != "Organization" else ()
            reasons = [*reasons, *self.expiries.access_ends(actor_id, organization_id, past, chain)]
        return pb.ExplainResponse(allowed=allowed, reasons=reasons, revision=str(revision),
                                  policy_version=policy.version)

    def AccessReview(self, request, context):
        """Every person who can do anything to the organization or its resources, and why
        (mandate.checks.review). Reads SQL (the rows behind each path, and their events)."""
        organization_id = v.identifier("organization_id", request.organization_id)
        size = v.page_size("page_size", request.page_size)
        after = v.review_page_token("page_token", request.page_token)
        authorizer, at_revision = self.authorizer, None
        if request.at_revision or request.as_of:
            authorizer = self.past(request)
            at_revision = authorizer.index.revision
        review = access_review(authorizer, self.store, organization_id, size, after, at_revision)
        without_emails = callers.current_read_only()
        # A page also ends before it passes MAX_PAGE_BYTES (it always holds one entry), like
        # every other list: long names and many resources never make a reply too big to read.
        entries, total, last = [], 0, review.last
        for entry in review.entries:
            message = convert.access_entry(entry, without_emails)
            total += message.ByteSize()
            if entries and total > v.MAX_PAGE_BYTES:
                cut = review.entries[len(entries) - 1]
                last = (cut.user_id, cut.resource_type, cut.resource_id)
                break
            entries.append(message)
        return pb.AccessReviewResponse(
            entries=entries, next_page_token=v.encode_review_page_token(last), revision=str(review.revision),
            policy_version=review.policy_version)


def within_scope(authorizer: Authorizer, resource_type: str, resource_id: str, known_only: bool = False) -> None:
    """A caller limited to some organizations asks only about their resources (runtime/scope.py): the
    organization the resource belongs to in the view that answers; one it belongs to in none is
    outside. Before a view of the past is read, `known_only` refuses a resource of another
    organization now."""
    if callers.current_organizations() is None:
        return
    organization_id = authorizer.index.organization_of(resource_type, resource_id)
    if organization_id is not None or not known_only:
        callers.within_scope(organization_id)


def decision_about(fields: tuple[str, str, str, str, str]) -> tuple[str, str, str]:
    """The (user, resource type, resource id) a check is about."""
    _, actor_id, _, resource_type, resource_id = fields
    return actor_id, resource_type, resource_id


def known_type(field: str, value: str, policy) -> str:
    """A type of the check plane: Organization, or one the policy answering declares
    (UNKNOWN_RESOURCE_TYPE otherwise, naming the field)."""
    if not policy.is_resource_type(value):
        raise InvalidArgument(field, f"the policy declares no resource type {value!r}; it declares: "
                              f"{', '.join(['Organization', *policy.resource_types])}", Reason.UNKNOWN_RESOURCE_TYPE)
    return value
