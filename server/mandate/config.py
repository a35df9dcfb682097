"""Configuration in one place: environment variables, overridden by command-line flags,
with defaults that work on a fresh checkout."""

from __future__ import annotations

import datetime
import ipaddress
import os
import secrets
from dataclasses import dataclass, field
from pathlib import Path

from mandate.clock import parse_duration

DEFAULT_LISTEN = "127.0.0.1:50051"
DEFAULT_DATABASE_URL = "sqlite:///var/mandate.db"
DEFAULT_TOKEN_FILE = "var/api-token"
MIN_TOKEN_LENGTH = 16
DEFAULT_INVITATION_TTL = datetime.timedelta(days=14)
DEFAULT_REQUESTS_PER_CALLER = 200
DEFAULT_MAX_BATCH = 1000
DEFAULT_MAX_MESSAGE_BYTES = 4 * 1024 * 1024
DEFAULT_HISTORY_MEMORY_MIB = 256
LOG_FORMATS = ("text", "json")
# Bounds of the duration settings (shortest, longest), checked at start. Beyond them a setting is a
# mistake, and a later date would overflow the calendar: an invitation lapses at now + its TTL.
INVITATION_TTL_BOUNDS = (datetime.timedelta(minutes=1), datetime.timedelta(days=3650))
HISTORY_RETENTION_BOUNDS = (datetime.timedelta(hours=1), datetime.timedelta(days=36500))  # longer: `forever`
GRACE_SECONDS_BOUNDS = (0.0, 3600.0)
POOL_TIMEOUT_BOUNDS = (0.1, 600.0)
CONNECT_TIMEOUT_BOUNDS = (1, 600)


def packaged_policy_dir() -> Path:
    """The policy served when none is configured: the copy a wheel carries inside the package,
    or, in a checkout (`make`, an editable install), the repository's own `policies/`."""
    package = Path(__file__).resolve().parent
    packaged = package / "policies"
    return packaged if packaged.is_dir() else package.parent.parent / "policies"


@dataclass(frozen=True)
class DatabaseSettings:
    """Limits of the connection pool (PostgreSQL; SQLite needs none). Per process: size the
    server's max_connections for pool_size + max_overflow + 1 (the listener) per process."""

    pool_size: int = 10
    max_overflow: int = 10
    pool_timeout: float = 5.0  # seconds a call waits for a free connection before UNAVAILABLE
    connect_timeout: int = 3  # seconds to open a connection before the database counts as lost
    group_commit: bool = True  # writers arriving together share one transaction (mandate.store.db)

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> DatabaseSettings:
        env = os.environ if env is None else env
        defaults = cls()
        return cls(
            pool_size=number(env, "MANDATE_DATABASE_POOL_SIZE", defaults.pool_size),
            max_overflow=number(env, "MANDATE_DATABASE_MAX_OVERFLOW", defaults.max_overflow, minimum=0),
            pool_timeout=seconds(env.get("MANDATE_DATABASE_POOL_TIMEOUT", ""), "MANDATE_DATABASE_POOL_TIMEOUT",
                                 defaults.pool_timeout, POOL_TIMEOUT_BOUNDS),
            connect_timeout=seconds(env.get("MANDATE_DATABASE_CONNECT_TIMEOUT", ""),
                                    "MANDATE_DATABASE_CONNECT_TIMEOUT", defaults.connect_timeout,
                                    CONNECT_TIMEOUT_BOUNDS, int),
            group_commit=env.get("MANDATE_GROUP_COMMIT", "on").strip().lower() not in ("off", "0", "false", "no"),
        )


@dataclass
class Config:
    listen: str = DEFAULT_LISTEN
    database_url: str = DEFAULT_DATABASE_URL
    policy_dir: Path = field(default_factory=packaged_policy_dir)
    # Tokens calling services present as `authorization: Bearer <token>`.
    api_tokens: list[str] = field(default_factory=list)
    token_file: Path = Path(DEFAULT_TOKEN_FILE)
    workers: int = 16  # threads for blocking work (SQL, writes); streams and waiting hold none
    watch_policy: bool = False
    log_level: str = "INFO"
    max_streams_per_caller: int = 100  # open Watch, health Watch and reflection streams
    max_streams: int = 1000
    grace_seconds: float = 10.0  # SIGTERM: how long calls in flight may take to finish
    processes: int = 1  # server processes sharing the port (SO_REUSEPORT)
    invitation_ttl: datetime.timedelta = DEFAULT_INVITATION_TTL  # how long an invitation stays acceptable
    history_retention: datetime.timedelta | None = None  # how long the access history is kept; None: forever
    history_memory_mib: int = DEFAULT_HISTORY_MEMORY_MIB  # fact indexes of past revisions kept, at most
    callers_file: Path | None = None  # named callers (TOML), reloaded on SIGHUP
    tls_cert: Path | None = None  # serve TLS with this certificate chain and key (reloaded on SIGHUP)
    tls_key: Path | None = None
    tls_client_ca: Path | None = None  # require client certificates signed by this CA (mTLS)
    insecure: bool = False  # allow plaintext on an address other than loopback
    metrics_listen: str = ""  # host:port of the Prometheus endpoint; empty: off
    log_format: str = "text"  # or "json": one JSON object per line
    max_requests_per_caller: int = DEFAULT_REQUESTS_PER_CALLER  # unary requests in flight per caller
    max_batch: int = DEFAULT_MAX_BATCH  # checks in one BatchCheck
    max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES  # largest request or reply
    authzen_listen: str = ""  # host:port of the AuthZEN endpoints (HTTP, JSON); empty: off

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> Config:
        env = os.environ if env is None else env
        tokens = [t.strip() for t in env.get("MANDATE_API_TOKENS", "").split(",") if t.strip()]
        return cls(
            listen=env.get("MANDATE_LISTEN", DEFAULT_LISTEN),
            database_url=env.get("MANDATE_DATABASE_URL", DEFAULT_DATABASE_URL),
            policy_dir=Path(env["MANDATE_POLICY_DIR"]) if env.get("MANDATE_POLICY_DIR") else packaged_policy_dir(),
            api_tokens=tokens,
            token_file=Path(env.get("MANDATE_TOKEN_FILE", DEFAULT_TOKEN_FILE)),
            log_level=env.get("MANDATE_LOG_LEVEL", "INFO"),
            workers=number(env, "MANDATE_WORKERS", 16),
            max_streams_per_caller=number(env, "MANDATE_MAX_STREAMS_PER_CALLER", 100),
            max_streams=number(env, "MANDATE_MAX_STREAMS", 1000),
            grace_seconds=seconds(env.get("MANDATE_GRACE_SECONDS", ""), "MANDATE_GRACE_SECONDS", 10.0,
                                  GRACE_SECONDS_BOUNDS),
            processes=number(env, "MANDATE_PROCESSES", 1),
            invitation_ttl=invitation_ttl(env.get("MANDATE_INVITATION_TTL", ""), "MANDATE_INVITATION_TTL"),
            history_retention=history_retention(env.get("MANDATE_HISTORY_RETENTION", ""),
                                                "MANDATE_HISTORY_RETENTION"),
            history_memory_mib=number(env, "MANDATE_HISTORY_MEMORY", DEFAULT_HISTORY_MEMORY_MIB, minimum=0),
            callers_file=path(env, "MANDATE_CALLERS_FILE"),
            tls_cert=path(env, "MANDATE_TLS_CERT"),
            tls_key=path(env, "MANDATE_TLS_KEY"),
            tls_client_ca=path(env, "MANDATE_TLS_CLIENT_CA"),
            insecure=env.get("MANDATE_INSECURE", "").strip().lower() in ("1", "true", "yes"),
            metrics_listen=env.get("MANDATE_METRICS_LISTEN", "").strip(),
            log_format=log_format(env.get("MANDATE_LOG_FORMAT", "text"), "MANDATE_LOG_FORMAT"),
            max_requests_per_caller=number(env, "MANDATE_MAX_REQUESTS_PER_CALLER", DEFAULT_REQUESTS_PER_CALLER),
            max_batch=number(env, "MANDATE_MAX_BATCH", DEFAULT_MAX_BATCH),
            max_message_bytes=number(env, "MANDATE_MAX_MESSAGE_BYTES", DEFAULT_MAX_MESSAGE_BYTES, minimum=1024),
            authzen_listen=env.get("MANDATE_AUTHZEN_LISTEN", "").strip(),
        )

    @property
    def tls(self) -> bool:
        return self.tls_cert is not None

    @property
    def workers_per_caller(self) -> int:
        """The share of the worker threads one caller may hold at a time: half of them."""
        return max(1, self.workers // 2)

    def check_transport(self) -> None:
        """TLS settings that go together; plaintext only on loopback unless `insecure`."""
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("--tls-cert and --tls-key (MANDATE_TLS_CERT, MANDATE_TLS_KEY) go together")
        if self.tls_client_ca is not None and not self.tls:
            raise ValueError("--tls-client-ca needs --tls-cert and --tls-key")
        for address in (self.listen, self.authzen_listen):
            if address and not self.tls and not self.insecure and not is_loopback(address):
                raise ValueError(f"plaintext on {address}, which is not a loopback address: serve TLS "
                                 "(--tls-cert, --tls-key) or allow plaintext with --insecure (MANDATE_INSECURE=1)")
        if self.authzen_listen and ":" not in self.authzen_listen:
            raise ValueError(f"--authzen-listen: {self.authzen_listen[:40]!r} is not host:port")

    def resolved_tokens(self) -> list[str]:
        """The configured tokens; without any, a random one kept in the token file (created
        with owner-only permissions on first use), so a fresh checkout is never open. With a
        callers file and no configured token, none: only the file's callers get in, and no
        token file is read or written."""
        if self.api_tokens:
            short = [t for t in self.api_tokens if len(t) < MIN_TOKEN_LENGTH]
            if short:
                raise ValueError(f"MANDATE_API_TOKENS: every token needs at least {MIN_TOKEN_LENGTH} characters")
            return self.api_tokens
        if self.callers_file is not None:
            return []
        return [read_or_create_token(self.token_file)]


def number(env, name: str, default, kind=int, minimum=1):
    """A numeric setting from the environment; a bad value stops the server with its name."""
    text = env.get(name, "").strip()
    if not text:
        return default
    try:
        value = kind(text)
    except ValueError:
        raise ValueError(f"{name}: {text!r} is not a number") from None
    if value < minimum:
        raise ValueError(f"{name}: must be at least {minimum}")
    return value


def invitation_ttl(text: str, name: str = "--invitation-ttl") -> datetime.timedelta:
    """How long an invitation stays acceptable; empty: the default."""
    return duration(text, name, INVITATION_TTL_BOUNDS) if text.strip() else DEFAULT_INVITATION_TTL


def history_retention(text: str, name: str = "--history-retention") -> datetime.timedelta | None:
    """How long the access history is kept: `forever` (None, also when empty) or a duration."""
    if not text.strip() or text.strip() == "forever":
        return None
    return duration(text, name, HISTORY_RETENTION_BOUNDS, "; or 'forever'")


def duration(text: str, name: str, bounds: tuple[datetime.timedelta, datetime.timedelta],
             otherwise: str = "") -> datetime.timedelta:
    """A duration setting (`30m`, `12h`, `14d`) within its bounds; a bad one stops the server
    with one line naming the setting (`name`: the flag or the environment variable)."""
    shortest, longest = bounds
    try:
        value = parse_duration(text)
    except (ValueError, OverflowError):
        raise ValueError(f"{name}: {text.strip()[:20]!r} is not a duration such as 30m, 12h or 14d"
                         f"{otherwise}") from None
    if not shortest <= value <= longest:
        raise ValueError(f"{name}: {text.strip()} is out of bounds: from {_duration_text(shortest)} "
                         f"to {_duration_text(longest)}{otherwise}")
    return value


def _duration_text(value: datetime.timedelta) -> str:
    total = int(value.total_seconds())
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if total % size == 0:
            return f"{total // size}{unit}"
    return f"{total}s"


def seconds(text: str, name: str, default, bounds: tuple, kind=float):
    """A number of seconds within its bounds (empty: `default`); a bad one stops the server with
    one line naming the setting."""
    text = text.strip()
    if not text:
        return default
    shortest, longest = bounds
    try:
        value = kind(text)
    except ValueError:
        raise ValueError(f"{name}: {text[:20]!r} is not a number of seconds") from None
    if not shortest <= value <= longest:  # NaN too: it compares false
        raise ValueError(f"{name}: {text[:20]} is out of bounds: from {shortest:g} to {longest:g} seconds")
    return value


def path(env, name: str) -> Path | None:
    text = env.get(name, "").strip()
    return Path(text) if text else None


def log_format(text: str, name: str = "--log-format") -> str:
    value = text.strip().lower() or "text"
    if value not in LOG_FORMATS:
        raise ValueError(f"{name}: {text[:20]!r} is not one of {', '.join(LOG_FORMATS)}")
    return value


def is_loopback(listen: str) -> bool:
    """Whether host:port listens on a loopback address only (127.0.0.0/8, ::1, localhost)."""
    host = listen.rsplit(":", 1)[0].strip("[]").lower()
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def read_or_create_token(path: Path) -> str:
    if path.exists():
        return path.read_text().strip()
    path.parent.mkdir(parents=True, exist_ok=True)
    token = secrets.token_urlsafe(32)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(token + "\n")
    return token
