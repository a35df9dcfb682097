"""`request_id` on every mutation: the handler runs once per calling service and key
(mandate.runtime.requests). The domain keeps bytes; what they are is the transport's: the reply
serialized here, and the request's fingerprint."""

from __future__ import annotations

import functools
import hashlib

from mandate.runtime import validate as v


def idempotent(reply_type, forget: tuple[str, ...] = ()):
    """Decorates a mutation handler of a servicer that has `self.requests`. `forget`: reply
    fields never kept for a retry (the token of an invitation link)."""

    def decorate(handler):
        method = handler.__qualname__  # e.g. MembershipService.InviteMember

        @functools.wraps(handler)
        def call(self, request, context):
            request_id = v.request_id("request_id", request.request_id)
            if not request_id:
                return handler(self, request, context)
            return self.requests.once(request_id, method, fingerprint_of(method, request),
                                      lambda: handler(self, request, context),
                                      lambda reply: kept_reply(reply, forget), reply_type.FromString)

        return call

    return decorate


def kept_reply(reply, forget: tuple[str, ...]) -> bytes:
    """The reply a retry gets back, without the fields in `forget`."""
    kept = type(reply)()
    kept.CopyFrom(reply)
    for name in forget:
        kept.ClearField(name)
    return kept.SerializeToString(deterministic=True)


def fingerprint_of(method: str, request) -> str:
    """What makes two requests the same: the method and every field but the request_id."""
    bare = type(request)()
    bare.CopyFrom(request)
    bare.ClearField("request_id")
    return hashlib.sha256(method.encode() + b"\0" + bare.SerializeToString(deterministic=True)).hexdigest()
