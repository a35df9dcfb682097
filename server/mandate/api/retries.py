"""`request_id` on every mutation: the handler runs once per calling service and key
(mandate.domain.requests)."""

from __future__ import annotations

import functools

from mandate.api import validate as v


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
            return self.requests.once(request_id, method, request, reply_type,
                                      lambda: handler(self, request, context), forget)

        return call

    return decorate
