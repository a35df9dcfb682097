"""Requests are parsed here, not by gRPC: a malformed body or invalid UTF-8 is INVALID_ARGUMENT
with an ErrorInfo, like any other bad request."""

from __future__ import annotations

from google.protobuf.message import DecodeError

from mandate.errors import InvalidArgument


def parse_request(method: str, parse, raw):
    if parse is None:
        return raw
    try:
        return parse(raw)
    except DecodeError:
        raise InvalidArgument("request", f"is not a valid {method.rsplit('/', 1)[-1]} request "
                                         "(malformed protobuf, or a string that is not UTF-8)") from None
