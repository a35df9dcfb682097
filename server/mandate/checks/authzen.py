"""The OpenID AuthZEN Authorization API 1.0, in its JSON, answered by AuthorizationService.

Each AuthZEN request becomes the gRPC request it means and goes through the same method of the
same servicer, in process: the same validation, freshness, history and decisions as gRPC.

- evaluation: `Check` (`Explain` with `context.explain = true`, whose reasons the answer's
  context then carries).
- evaluations: one evaluation per item, in order. The top-level `subject`, `action`, `resource`
  and `context` are defaults: an item's own key replaces the default's whole value. Without
  items it is one evaluation. `options.evaluations_semantic`: `execute_all` (the default),
  `deny_on_first_deny` or `permit_on_first_permit` (the answer ends with the item that decided).
  An item that cannot be evaluated (an entity missing, a bad value) is `decision: false` with
  `context.error` (status 400, reason, message), and counts as a deny; only the request as a
  whole (not JSON, a malformed default or option, too many items) is refused with a 400.
- search/subject: `ListActors`; search/resource: `ListResources`; search/action: `ListActions`
  (paged here: the policy's actions are few). `page.limit` (at most 1000; absent or 0: 1000)
  and `page.token`; the answer's `page.next_token` is "" on the last page, and a token is good
  only for the request it was given for (the rest of the request unchanged).

Entity types are the policy's type names, matched without regard to case (`user` is `User`).
A type the policy does not know is a deny, and a search over one answers `results: []`; a search
answers with the type as the caller spelled it. `properties` are accepted and ignored: Mandate
decides from the facts it keeps, not from attributes a caller asserts.

`context` may carry `at_least_revision`, `at_revision` and `as_of` (as in the gRPC requests);
every answer's context carries the `revision` (and `policy_version`) it was decided at. Errors
name the AuthZEN field (`subject.id`, `context.as_of`, `evaluations[2].resource`, `page.token`).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field

from mandate.checks.rpc import AuthorizationService, within_scope
from mandate.errors import DomainError, InvalidArgument, Status
from mandate.runtime import validate as v
from mandate.v1 import authorization_pb2 as pb
from mandate.v1 import common_pb2

SEMANTICS = ("execute_all", "deny_on_first_deny", "permit_on_first_permit")
ENTITIES = ("subject", "action", "resource", "context")
PAGE_LIMIT = v.MAX_PAGE_SIZE
# The gRPC request's fields, as AuthZEN names them (errors name what the caller sent).
FIELDS = {"actor": "subject", "action": "action.name", "resource_type": "resource.type",
          "at_least_revision": "context.at_least_revision", "at_revision": "context.at_revision",
          "as_of": "context.as_of", "page_size": "page.limit", "page_token": "page.token"}
NOWHERE = ("", "", "", "", "")  # a decision about nothing: the past is then read for nobody
# Per-item errors under evaluations: the item's request is wrong; anything else (the store is
# away, the server drains, an internal error) fails the whole call.
ITEM_ERRORS = (Status.INVALID_ARGUMENT, Status.FAILED_PRECONDITION, Status.NOT_FOUND)


@dataclass
class Answer:
    """An AuthZEN reply, and what the request line, metrics and span say about it."""

    body: dict
    request: object = None  # the gRPC request it meant (its actor goes on the log line)
    reply: object = None  # a gRPC reply (its revision goes on the log line and the span)
    decided: list = field(default_factory=list)  # (resource type, action, allowed) per decision


class AuthZen:
    def __init__(self, service: AuthorizationService, max_batch: int = v.MAX_BATCH):
        self.service = service
        self.index = service.authorizer.index
        self.max_batch = max_batch
        self._types: tuple[object, dict[str, str]] = (None, {})

    # -- types ---------------------------------------------------------------------------------

    def types(self) -> dict[str, str]:
        """Lower-case name -> the policy's type name, for the policy being served."""
        policy = self.service.authorizer.policy
        known_for, types = self._types
        if known_for is not policy:
            names = {"User", *policy.permissions}  # every type the policy declares permissions on
            types = {name.lower(): name for name in names}
            self._types = (policy, types)
        return types

    def answered_from_memory(self, body) -> bool:
        """True when an evaluation needs neither the history nor a catch-up: it may be answered
        on the event loop (like a gRPC Check). A malformed context is answered at once too."""
        context = body.get("context") if isinstance(body, dict) else None
        if not isinstance(context, dict):
            return True
        if context.get("at_revision") or context.get("as_of") or context.get("explain"):
            return False
        wanted = context.get("at_least_revision")
        if not wanted:
            return True
        wanted = str(wanted) if isinstance(wanted, int) and not isinstance(wanted, bool) else wanted
        return not isinstance(wanted, str) or not (wanted.isascii() and wanted.isdigit() and len(wanted) <= 18) \
            or int(wanted) <= self.index.revision

    # -- evaluations ---------------------------------------------------------------------------

    def evaluation(self, body) -> Answer:
        request = need_object(body, "request")
        with authzen_fields():
            return self._evaluate(request, "")

    def evaluations(self, body) -> Answer:
        request = need_object(body, "request")
        items = request.get("evaluations")
        if items is None or items == []:
            return self.evaluation(request)
        if not isinstance(items, list):
            raise InvalidArgument("evaluations", "must be an array of evaluation objects")
        if len(items) > self.max_batch:
            raise InvalidArgument("evaluations", f"at most {self.max_batch} evaluations per request")
        options = optional_object(request, "options")
        semantic = (options or {}).get("evaluations_semantic", "execute_all")
        if semantic not in SEMANTICS:
            raise InvalidArgument("options.evaluations_semantic", f"must be one of: {', '.join(SEMANTICS)}")
        defaults = {key: request[key] for key in ENTITIES if key in request}
        for key, value in defaults.items():
            if not isinstance(value, dict):
                raise InvalidArgument(key, "must be an object")
        answer = Answer({"evaluations": []})
        results = answer.body["evaluations"]
        for position, item in enumerate(items):
            where = f"evaluations[{position}]."
            try:
                if not isinstance(item, dict):
                    raise InvalidArgument(f"evaluations[{position}]", "must be an object")
                with authzen_fields(where):
                    one = self._evaluate({**defaults, **item}, where)
                result = one.body
                if answer.request is None:
                    answer.request = one.request
                answer.reply = one.reply
                answer.decided += one.decided
            except DomainError as error:
                if error.code not in ITEM_ERRORS:
                    raise
                result = {"decision": False, "context": {"error": {
                    "status": 400, "reason": error.reason, "message": error.message}}}
            results.append(result)
            if semantic == "deny_on_first_deny" and not result["decision"]:
                result.setdefault("context", {})["reason"] = "deny_on_first_deny"
                break
            if semantic == "permit_on_first_permit" and result["decision"]:
                break
        return answer

    def _evaluate(self, item: dict, where: str) -> Answer:
        """One decision. Names its fields without `where` (authzen_fields adds it)."""
        subject, resource = entity(item, "subject"), entity(item, "resource")
        action = action_name(item)
        context = optional_object(item, "context") or {}
        explain = context.get("explain", False)
        if not isinstance(explain, bool):
            raise InvalidArgument("context.explain", "must be true or false")
        types = self.types()
        actor_type, resource_type = types.get(subject[0].lower()), types.get(resource[0].lower())
        request = pb.CheckRequest(
            actor=common_pb2.ObjectRef(type=actor_type or "", id=subject[1]), action=action,
            resource=common_pb2.ObjectRef(type=resource_type or "", id=resource[1]), **revisions(context))
        if actor_type is None or resource_type is None:  # a type the policy does not know: a deny
            within_scope(self.service.authorizer, resource_type or "", resource[1])  # as Check holds it
            _, revision = self.service.view(request, decision=NOWHERE)
            return Answer({"decision": False, "context": {"revision": str(revision)}}, request)
        if explain:
            reply = self.service.Explain(request, None)
            body = {"decision": reply.allowed, "context": {"revision": reply.revision,
                                                           "policy_version": reply.policy_version,
                                                           "reasons": list(reply.reasons)}}
        else:
            reply = self.service.Check(request, None)
            body = {"decision": reply.allowed, "context": {"revision": reply.revision,
                                                           "policy_version": reply.policy_version}}
        return Answer(body, request, reply, [(resource_type, action, reply.allowed)])

    # -- searches ------------------------------------------------------------------------------

    def search_subject(self, body) -> Answer:
        with authzen_fields():
            request = need_object(body, "request")
            subject_type = entity_type(request, "subject")
            action = action_name(request)
            resource = entity(request, "resource")
            context = optional_object(request, "context") or {}
            limit, token, fingerprint = page(request)
            types = self.types()
            resource_type = types.get(resource[0].lower())
            query = pb.ListActorsRequest(action=action, resource=common_pb2.ObjectRef(type=resource_type or "",
                                                                                      id=resource[1]),
                                         page_size=limit, page_token=token, **revisions(context))
            if types.get(subject_type.lower()) != "User" or resource_type is None:
                within_scope(self.service.authorizer, resource_type or "", resource[1])  # as ListActors holds it
                return self._nothing(query)
            reply = self._listing(self.service.ListActors, query)
            if reply is None:
                return self._nothing(query)
            results = [{"type": subject_type, "id": user_id} for user_id in reply.user_ids]
            return searched(query, reply, results, next_token(fingerprint, reply.next_page_token))

    def search_resource(self, body) -> Answer:
        with authzen_fields():
            request = need_object(body, "request")
            subject = entity(request, "subject")
            action = action_name(request)
            resource_type = entity_type(request, "resource")
            context = optional_object(request, "context") or {}
            limit, token, fingerprint = page(request)
            types = self.types()
            actor_type, known_type = types.get(subject[0].lower()), types.get(resource_type.lower())
            query = pb.ListResourcesRequest(actor=common_pb2.ObjectRef(type=actor_type or "", id=subject[1]),
                                            action=action, resource_type=known_type or "", page_size=limit,
                                            page_token=token, **revisions(context))
            if actor_type is None or known_type is None:
                return self._nothing(query)
            reply = self._listing(self.service.ListResources, query)
            if reply is None:
                return self._nothing(query)
            results = [{"type": resource_type, "id": resource_id} for resource_id in reply.resource_ids]
            return searched(query, reply, results, next_token(fingerprint, reply.next_page_token))

    def search_action(self, body) -> Answer:
        with authzen_fields():
            request = need_object(body, "request")
            subject, resource = entity(request, "subject"), entity(request, "resource")
            context = optional_object(request, "context") or {}
            limit, token, fingerprint = page(request)
            after = v.page_token("page.token", token)
            types = self.types()
            actor_type, resource_type = types.get(subject[0].lower()), types.get(resource[0].lower())
            query = pb.ListActionsRequest(actor=common_pb2.ObjectRef(type=actor_type or "", id=subject[1]),
                                          resource=common_pb2.ObjectRef(type=resource_type or "", id=resource[1]),
                                          **revisions(context))
            if actor_type is None or resource_type is None:
                within_scope(self.service.authorizer, resource_type or "", resource[1])  # as ListActions holds it
                return self._nothing(query)
            reply = self.service.ListActions(query, None)
            actions = [action for action in reply.actions if action > after]
            last = actions[limit - 1] if len(actions) > limit else ""
            results = [{"name": action} for action in actions[:limit]]
            return searched(query, reply, results, next_token(fingerprint, v.encode_page_token(last)))

    def _listing(self, method, query):
        """The list's reply, or None when the type is one the list does not cover."""
        try:
            return method(query, None)
        except InvalidArgument as error:
            if error.field in ("resource_type", "resource.type"):
                return None
            raise

    def _nothing(self, query) -> Answer:
        """No results (a type the policy does not know), at the revision the request asked for."""
        _, revision = self.service.view(query, decision=NOWHERE)
        return Answer({"page": {"next_token": "", "count": 0}, "context": {"revision": str(revision)},
                       "results": []}, query)


def searched(query, reply, results: list, next_token: str) -> Answer:
    return Answer({"page": {"next_token": next_token, "count": len(results)},
                   "context": {"revision": reply.revision, "policy_version": reply.policy_version},
                   "results": results}, query, reply)


# -- reading the JSON --------------------------------------------------------------------------

def need_object(body, field: str) -> dict:
    if not isinstance(body, dict):
        raise InvalidArgument(field, "must be a JSON object")
    return body


def optional_object(body: dict, key: str) -> dict | None:
    value = body.get(key)
    if value is not None and not isinstance(value, dict):
        raise InvalidArgument(key, "must be an object")
    return value


def string(entity_value: dict, field: str, key: str) -> str:
    value = entity_value.get(key)
    if value is None or value == "":
        raise InvalidArgument(f"{field}.{key}", "is required")
    return text(f"{field}.{key}", value)


def text(field: str, value) -> str:
    """A JSON string that is Unicode text (JSON escapes may spell lone surrogates, which are not)."""
    if not isinstance(value, str):
        raise InvalidArgument(field, "must be a string")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidArgument(field, "must be Unicode text (a lone surrogate is not)") from None
    return value


def entity_type(body: dict, field: str) -> str:
    value = body.get(field)
    if not isinstance(value, dict):
        raise InvalidArgument(field, "is required (an object with a type)" if value is None else "must be an object")
    return string(value, field, "type")


def entity(body: dict, field: str) -> tuple[str, str]:
    """A subject or resource: (type as sent, id)."""
    kind = entity_type(body, field)
    return kind, string(body[field], field, "id")


def action_name(body: dict) -> str:
    value = body.get("action")
    if not isinstance(value, dict):
        raise InvalidArgument("action", "is required (an object with a name)" if value is None else
                              "must be an object")
    return string(value, "action", "name")


def revisions(context: dict) -> dict[str, str]:
    """context.at_least_revision, at_revision (a string or a number) and as_of (a string)."""
    found = {}
    for key in ("at_least_revision", "at_revision", "as_of"):
        value = context.get(key)
        if value is None or value == "":
            continue
        if key != "as_of" and isinstance(value, int) and not isinstance(value, bool) and value >= 0:
            value = str(value)
        if not isinstance(value, str):
            raise InvalidArgument(key, "must be a string" if key == "as_of" else "must be a revision returned by "
                                                                                  "Mandate (a string or a number)")
        found[key] = text(key, value)
    return found


def page(body: dict) -> tuple[int, str, str]:
    """(page size, the list's own page token, the request's fingerprint) of a search.

    A next_token is the list's page token behind the fingerprint of the request it answered
    (everything but page.token): a token sent with a request changed in any other way is refused,
    as the specification asks, instead of paging through another result set."""
    value = body.get("page")
    if value is not None and not isinstance(value, dict):
        raise InvalidArgument("page", "must be an object")
    value = value or {}
    limit, token = value.get("limit", 0), value.get("token", "")
    if not isinstance(limit, int) or isinstance(limit, bool) or limit < 0:
        raise InvalidArgument("page.limit", "must be a non-negative integer")
    if token is None:
        token = ""
    if not isinstance(token, str):
        raise InvalidArgument("page.token", "must be a string (a next_token returned by Mandate)")
    text("page.token", token)
    unpaged = {**body, "page": {key: item for key, item in value.items() if key != "token"}}
    fingerprint = hashlib.sha256(json.dumps(unpaged, sort_keys=True, default=str).encode()).hexdigest()[:12]
    if token:
        given, dot, token = token.partition(".")
        if not dot or len(given) != len(fingerprint):
            raise InvalidArgument("page.token", "is not a next_token returned by Mandate")
        if given != fingerprint:
            raise InvalidArgument("page.token", "belongs to another request: send every other part of the request "
                                                "as it was when the token was given")
    return min(limit, PAGE_LIMIT) or PAGE_LIMIT, token, fingerprint


def next_token(fingerprint: str, token: str) -> str:
    return f"{fingerprint}.{token}" if token else ""


class authzen_fields:  # noqa: N801 - used as a context manager, like contextlib's
    """Errors raised inside name the AuthZEN field (`actor.id` -> `subject.id`), after `where`."""

    def __init__(self, where: str = ""):
        self.where = where

    def __enter__(self):
        return self

    def __exit__(self, kind, error, _traceback):
        if isinstance(error, DomainError):
            renamed = rename(error, self.where)
            if renamed is not error:
                raise renamed from None
        return False


def authzen_field(name: str) -> str:
    if name in FIELDS:
        return FIELDS[name]
    head, dot, rest = name.partition(".")
    return "subject" + dot + rest if head == "actor" else name


def rename(error: DomainError, where: str) -> DomainError:
    """The same error, naming the field as AuthZEN does (its message starts with the field)."""
    if getattr(error, "authzen", False):
        return error
    name, colon, problem = error.message.partition(": ")
    if not colon or " " in name:
        return error
    field_name = where + authzen_field(name)
    if isinstance(error, InvalidArgument):
        renamed = type(error)(field_name, problem, error.reason)
    else:
        renamed = type(error)(f"{field_name}: {problem}", error.reason, **{**error.metadata, "field": field_name})
    renamed.authzen = True
    return renamed
