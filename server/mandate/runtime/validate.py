"""Request validation: every field, with an INVALID_ARGUMENT error that names it."""

from __future__ import annotations

import base64
import binascii
import re

import pycountry
from email_validator import EmailNotValidError, validate_email

from mandate.clock import as_text, parse
from mandate.errors import InvalidArgument, UnknownScope
from mandate.store import models

DEFAULT_PAGE_SIZE = 100
MAX_PAGE_SIZE = 1000
MAX_BATCH = 1000
MAX_SEAT_LIMIT = 100_000
# A page ends before its reply passes this size, even below page_size: about one HTTP/2 flow-control
# window, so a reply to a client that stops reading does not sit in the server's memory at length.
MAX_PAGE_BYTES = 64 * 1024
MAX_PAGE_TOKEN = 512  # the longest token Mandate hands out encodes a 200-character key
# Characters of a rejected value that an error message writes back. The message travels in the
# response trailers, which the transport limits to a few kilobytes: an oversized value echoed
# whole would turn INVALID_ARGUMENT into a transport error without ErrorInfo.
ECHO_LIMIT = 40

_ID = re.compile(r"^[\x21-\x7e]{1,200}$")  # printable ASCII, no spaces
_ACTION = re.compile(r"^[a-z][a-z0-9_]{0,99}$")
_TYPE = re.compile(r"^[A-Z][A-Za-z0-9]{0,39}$")
_REVISION = re.compile(r"^[0-9]{1,18}$")  # ASCII digits only: str.isdigit() accepts "²"


def echo(value: str) -> str:
    """A rejected value as an error message shows it: quoted, and cut to a bounded prefix."""
    if len(value) <= ECHO_LIMIT:
        return repr(value)
    return f"{value[:ECHO_LIMIT]!r}... ({len(value)} characters)"


def clip(message: str, limit: int = 200) -> str:
    """A library's message about a rejected value, which may quote the value, bounded too."""
    return message if len(message) <= limit else message[:limit] + "..."


# The checks of the check plane's hot path first try plain string methods (each a subset of its
# pattern's language), and ask the pattern only when those say no: same answers, less time.
def _plain_id(value: str) -> bool:
    return len(value) <= 200 and value.isascii() and value.isprintable() and " " not in value


def _plain_type(value: str) -> bool:
    return len(value) <= 40 and value.isascii() and value.isalnum() and value[0].isupper()


def _plain_action(value: str) -> bool:
    return len(value) <= 100 and value.isascii() and value[0].islower() and value.islower() \
        and value.replace("_", "").isalnum()


def identifier(field: str, value: str) -> str:
    if not value:
        raise InvalidArgument(field, "is required")
    if not (_plain_id(value) or _ID.fullmatch(value)):
        raise InvalidArgument(field, "must be 1 to 200 printable ASCII characters without spaces")
    return value


def optional_identifier(field: str, value: str) -> str:
    return identifier(field, value) if value else ""


def text(field: str, value: str, *, required: bool = True, max_length: int = 200) -> str:
    value = value.strip()
    if required and not value:
        raise InvalidArgument(field, "is required")
    if len(value) > max_length:
        raise InvalidArgument(field, f"must be at most {max_length} characters")
    if any(ord(c) < 32 for c in value):
        raise InvalidArgument(field, "must not contain control characters")
    return value


def email(field: str, value: str) -> str:
    if not value:
        raise InvalidArgument(field, "is required")
    try:
        checked = validate_email(value, check_deliverability=False)
    except EmailNotValidError as error:
        raise InvalidArgument(field, f"is not a valid email address ({clip(str(error))})") from None
    return checked.normalized.lower()


def currency(field: str, value: str) -> str:
    if not re.fullmatch(r"[A-Z]{3}", value or "") or pycountry.currencies.get(alpha_3=value) is None:
        raise InvalidArgument(field, f"{echo(value)} is not an ISO 4217 currency code (e.g. EUR, USD)")
    return value


def member_role(field: str, value: str) -> str:
    return choice(field, value, [r.value for r in models.Role])


def choice(field: str, value: str, allowed: list[str], *, default: str | None = None) -> str:
    if not value and default is not None:
        return default
    if value not in allowed:
        raise InvalidArgument(field, f"must be one of: {', '.join(allowed)}")
    return value


def optional_choice(field: str, value: str, allowed: list[str]) -> str:
    """A filter: empty means no filter."""
    return choice(field, value, allowed) if value else ""


def scopes(field: str, values, allowed: tuple[str, ...] = models.SCOPES) -> list[str]:
    """Scopes among `allowed`: the ones the policy declares a client can grant (Policy.scopes)."""
    result = []
    for position, scope in enumerate(values):
        if scope not in allowed:
            raise UnknownScope(f"{field}[{position}]", f"unknown scope {echo(scope)}; scopes are: "
                               f"{', '.join(allowed)}")
        result.append(scope)
    return sorted(set(result))


MAX_REQUEST_ID = 128


def request_id(field: str, value: str) -> str:
    """The caller's idempotency key: optional, up to 128 printable ASCII characters."""
    if not value:
        return ""
    if len(value) > MAX_REQUEST_ID:
        raise InvalidArgument(field, f"must be at most {MAX_REQUEST_ID} characters ({len(value)} given)")
    if not re.fullmatch(r"[\x21-\x7e]+", value):
        raise InvalidArgument(field, "must be printable ASCII characters without spaces")
    return value


def access_expires_at(field: str, value: str) -> str:
    """"" (no end, or keep the current one), `never` (clear it), or an RFC 3339 time, in UTC."""
    from mandate.shared.expiry import normalize_end

    return normalize_end(field, value)


def seat_limit(field: str, value: int) -> int:
    if value < 0 or value > MAX_SEAT_LIMIT:
        raise InvalidArgument(field, f"must be between 0 (unlimited) and {MAX_SEAT_LIMIT}")
    return value


# Actions and type names that passed their checks: a real load has few of them, so the hot
# path looks each one up instead of checking it again. Bounded; only valid names ever enter.
_VALID_ACTIONS: set[str] = set()
_VALID_TYPES: set[str] = set()
_VALID_LIMIT = 1024


def action(field: str, value: str) -> str:
    if value in _VALID_ACTIONS:
        return value
    if not (value and _plain_action(value) or _ACTION.fullmatch(value or "")):
        raise InvalidArgument(field, "must be a lower-case action name such as 'read'")
    if len(_VALID_ACTIONS) < _VALID_LIMIT:
        _VALID_ACTIONS.add(value)
    return value


def object_ref(field: str, ref, present: bool) -> tuple[str, str]:
    if not present:
        raise InvalidArgument(field, "is required")
    ref_type, ref_id = ref.type, ref.id
    if ref_type not in _VALID_TYPES:
        if not (ref_type and _plain_type(ref_type) or _TYPE.fullmatch(ref_type)):
            raise InvalidArgument(f"{field}.type", "must be a type name such as 'User' or 'Project'")
        if len(_VALID_TYPES) < _VALID_LIMIT:
            _VALID_TYPES.add(ref_type)
    if not (ref_id and _plain_id(ref_id)):
        identifier(f"{field}.id", ref_id)  # the pattern decides; raises when it says no
    return ref_type, ref_id


def resource_type(field: str, value: str) -> str:
    if not _TYPE.fullmatch(value or ""):
        raise InvalidArgument(field, "must be a type name such as 'Project'")
    return value


def revision(field: str, value: str) -> int | None:
    if not value:
        return None
    if not _REVISION.fullmatch(value):
        raise InvalidArgument(field, "must be a revision returned by Mandate")
    return int(value)


def moment(field: str, value: str) -> str | None:
    """An RFC 3339 time (normalized to the store's UTC text), or None when empty."""
    if not value:
        return None
    try:
        if len(value) > 40:
            raise ValueError
        return as_text(parse(value))
    except (ValueError, OverflowError):
        raise InvalidArgument(field, "must be an RFC 3339 time such as 2026-10-01T00:00:00Z") from None


def page_size(field: str, value: int) -> int:
    if value == 0:
        return DEFAULT_PAGE_SIZE
    if value < 0 or value > MAX_PAGE_SIZE:
        raise InvalidArgument(field, f"must be between 1 and {MAX_PAGE_SIZE} (0 means {DEFAULT_PAGE_SIZE})")
    return value


def page_token(field: str, value: str) -> str:
    """Page tokens are opaque to clients: the last key of the previous page, encoded."""
    if not value:
        return ""
    if len(value) > MAX_PAGE_TOKEN:
        raise InvalidArgument(field, "is not a page token returned by Mandate")
    try:
        decoded = base64.urlsafe_b64decode(value.encode() + b"=" * (-len(value) % 4)).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise InvalidArgument(field, "is not a page token returned by Mandate") from None
    if not decoded.startswith("k:"):
        raise InvalidArgument(field, "is not a page token returned by Mandate")
    return decoded[2:]


def encode_page_token(key: str) -> str:
    return base64.urlsafe_b64encode(f"k:{key}".encode()).decode().rstrip("=") if key else ""


def review_page_token(field: str, value: str) -> tuple[str, str, str] | None:
    """An access review's page token: the last (user id, resource type, resource id) of the
    previous page. Ids hold no spaces, so a space separates them."""
    key = page_token(field, value)
    if not key:
        return None
    parts = key.split(" ")
    if len(parts) != 3 or not all(parts):
        raise InvalidArgument(field, "is not a page token returned by Mandate")
    return parts[0], parts[1], parts[2]


def encode_review_page_token(key: tuple[str, str, str] | None) -> str:
    return encode_page_token(" ".join(key)) if key else ""
