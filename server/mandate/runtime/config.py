"""Configuration in one place: environment variables, overridden by command-line flags,
with defaults that work on a fresh checkout."""

from __future__ import annotations

import dataclasses
import datetime
import ipaddress
import os
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from mandate.clock import parse_duration

DEFAULT_LISTEN = "127.0.0.1:50051"
DEFAULT_DATABASE_URL = "sqlite:///var/mandate.db"
DEFAULT_TOKEN_FILE = "var/api-token"
MIN_TOKEN_LENGTH = 16
DEFAULT_INVITATION_TTL = datetime.timedelta(days=14)
DEFAULT_REQUESTS_PER_CALLER = 200
DEFAULT_STREAMS_PER_CALLER = 100
DEFAULT_STREAMS = 1000
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
DATABASE = "database."  # the prefix of the settings of `Config.database` (DatabaseSettings) in SETTINGS


def packaged_policy_dir() -> Path:
    """The policy served when none is configured: the copy a wheel carries inside the package,
    or, in a checkout (`make`, an editable install), the repository's own `policies/`."""
    package = Path(__file__).resolve().parents[1]
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
        """The pool's settings of the environment (those of `SETTINGS` named `database.*`)."""
        env = os.environ if env is None else env
        values = {}
        for setting in SETTINGS:
            text = _env_text(env, setting) if setting.name and setting.name.startswith(DATABASE) else ""
            if text:
                values[setting.name.removeprefix(DATABASE)] = setting.read(text, setting.env)
        return cls(**values)


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
    max_streams_per_caller: int = DEFAULT_STREAMS_PER_CALLER  # open Watch, health Watch and reflection streams
    max_streams: int = DEFAULT_STREAMS
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
    database: DatabaseSettings = field(default_factory=DatabaseSettings)  # the settings named `database.*`

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> Config:
        """The settings of the environment (`SETTINGS`); a variable unset or blank keeps its default."""
        env = os.environ if env is None else env
        config = cls(database=DatabaseSettings.from_env(env))
        for setting in SETTINGS:
            text = _env_text(env, setting) if setting.name and not setting.name.startswith(DATABASE) else ""
            if text:
                setattr(config, setting.name, setting.read(text, setting.env))
        return config

    def override(self, args) -> None:
        """The flags of `mandate serve` given on the command line (`add_flags`) override the
        environment; a bad value is a ValueError naming the flag."""
        for setting in SETTINGS:
            value = getattr(args, setting.name, None) if setting.name and setting.flag else None
            if value is None:
                continue
            value = True if setting.switch else setting.read(value.strip(), setting.flag)
            if setting.name.startswith(DATABASE):
                self.database = dataclasses.replace(self.database, **{setting.name.removeprefix(DATABASE): value})
            else:
                setattr(self, setting.name, value)

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


def whole_number(text: str, name: str, kind=int, minimum=1):
    """A number setting (`name`: the flag or the variable, for the error) of at least `minimum`."""
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


# -- each setting declared once ------------------------------------------------------------------


@dataclass(frozen=True)
class Setting:
    """One setting of `mandate serve`: the Config field it fills (None: read by a library, listed
    for the README only), its environment variable, its flag (which overrides the variable), what
    it is (the flag's help and the README's first column, plus `note` in the README only), and
    its default as shown (the value itself is Config's). `read(text, name)` turns a non-blank
    value into the setting, or raises ValueError naming `name` (the flag or the variable)."""

    name: str | None
    env: str | None
    flag: str | None
    help: str
    shown: str
    read: Callable[[str, str], object] = lambda text, _name: text
    metavar: str | None = None
    switch: bool = False  # a flag without a value; its variable is on or off (on, 1, true, yes; off, 0, false, no)
    note: str = ""


def _env_text(env, setting: Setting) -> str:
    """The setting's variable in `env`, stripped; blank when unset (the default then holds)."""
    return env.get(setting.env, "").strip() if setting.env else ""


def _at_least(minimum: int) -> Callable[[str, str], int]:
    return lambda text, name: whole_number(text, name, int, minimum)


def _path(text: str, _name: str) -> Path:
    return Path(text)


def _tokens(text: str, _name: str) -> list[str]:
    return [token.strip() for token in text.split(",") if token.strip()]


def _grace(text: str, name: str) -> float:
    return seconds(text, name, None, GRACE_SECONDS_BOUNDS)


def _pool_timeout(text: str, name: str) -> float:
    return seconds(text, name, None, POOL_TIMEOUT_BOUNDS)


def _connect_timeout(text: str, name: str) -> int:
    return seconds(text, name, None, CONNECT_TIMEOUT_BOUNDS, int)


def _on_or_off(text: str, name: str) -> bool:
    value = text.lower()
    if value in ("on", "1", "true", "yes"):
        return True
    if value in ("off", "0", "false", "no"):
        return False
    raise ValueError(f"{name}: {text[:20]!r} is not on or off")


def _bounds(bounds: tuple) -> str:
    return f"{bounds[0]:g} to {bounds[1]:g}"


SETTINGS: tuple[Setting, ...] = (
    Setting("listen", "MANDATE_LISTEN", "--listen", "listen address, host:port", f"`{DEFAULT_LISTEN}`",
            metavar="ADDR"),
    Setting("database_url", "MANDATE_DATABASE_URL", "--database-url", "database URL", f"`{DEFAULT_DATABASE_URL}`",
            metavar="URL", note="(`postgresql://user:password@host/db` for a fleet of replicas: "
                                "[docs/deploying.md](docs/deploying.md))"),
    Setting("database.pool_size", "MANDATE_DATABASE_POOL_SIZE", "--database-pool-size",
            "PostgreSQL: connections each process keeps open", str(DatabaseSettings.pool_size), _at_least(1),
            metavar="N"),
    Setting("database.max_overflow", "MANDATE_DATABASE_MAX_OVERFLOW", "--database-max-overflow",
            "PostgreSQL: extra connections a process may open at peaks", str(DatabaseSettings.max_overflow),
            _at_least(0), metavar="N"),
    Setting("database.pool_timeout", "MANDATE_DATABASE_POOL_TIMEOUT", "--database-pool-timeout",
            "seconds a call waits for a free connection, then UNAVAILABLE, reason DATABASE_UNAVAILABLE "
            f"({_bounds(POOL_TIMEOUT_BOUNDS)})", f"{DatabaseSettings.pool_timeout:g}", _pool_timeout,
            metavar="SECONDS"),
    Setting("database.connect_timeout", "MANDATE_DATABASE_CONNECT_TIMEOUT", "--database-connect-timeout",
            f"seconds to open a connection before the database counts as lost ({_bounds(CONNECT_TIMEOUT_BOUNDS)})",
            str(DatabaseSettings.connect_timeout), _connect_timeout, metavar="SECONDS"),
    Setting("database.group_commit", "MANDATE_GROUP_COMMIT", "--group-commit",
            "on: the writers of a process that arrive together share one transaction; off: each commits alone",
            "`on`" if DatabaseSettings.group_commit else "`off`", _on_or_off, metavar="on|off",
            note="([docs/deploying.md](docs/deploying.md))"),
    Setting("policy_dir", "MANDATE_POLICY_DIR", "--policy-dir", "policy directory",
            "the packaged one (`mandate policy path`): `policies/` in a checkout", _path, metavar="DIR"),
    Setting("api_tokens", "MANDATE_API_TOKENS", None, "caller tokens, comma-separated, 16 characters or more each",
            "a random token in the token file (mode 0600); with a callers file, none (nothing is written or read)",
            _tokens),
    Setting("token_file", "MANDATE_TOKEN_FILE", None, "where the random token is kept when no token is set",
            f"`{DEFAULT_TOKEN_FILE}`", _path),
    Setting("processes", "MANDATE_PROCESSES", "--processes", "server processes sharing the port (SO_REUSEPORT)",
            "1", _at_least(1), metavar="N"),
    Setting("workers", "MANDATE_WORKERS", "--workers", "threads for blocking work (SQL, writes)", "16",
            _at_least(1), metavar="N"),
    Setting("max_streams_per_caller", "MANDATE_MAX_STREAMS_PER_CALLER", "--max-streams-per-caller",
            "open streams one caller may hold (Watch, health Watch, reflection)", str(DEFAULT_STREAMS_PER_CALLER),
            _at_least(1), metavar="N"),
    Setting("max_streams", "MANDATE_MAX_STREAMS", "--max-streams", "open streams in all", str(DEFAULT_STREAMS),
            _at_least(1), metavar="N"),
    Setting("grace_seconds", "MANDATE_GRACE_SECONDS", "--grace",
            f"on SIGTERM, time for calls in flight to finish, in seconds ({_bounds(GRACE_SECONDS_BOUNDS)})",
            f"{Config.grace_seconds:g}", _grace,
            metavar="SECONDS"),
    Setting("invitation_ttl", "MANDATE_INVITATION_TTL", "--invitation-ttl",
            "how long an invitation stays acceptable: a number with s, m, h or d, from 1m to 3650d", "`14d`",
            invitation_ttl, metavar="D"),
    Setting("history_retention", "MANDATE_HISTORY_RETENTION", "--history-retention",
            "how long the access history is kept: forever, or a number with s, m, h or d, from 1h to 36500d",
            "`forever`", history_retention, metavar="D", note="([docs/history.md](docs/history.md))"),
    Setting("history_memory_mib", "MANDATE_HISTORY_MEMORY", "--history-memory",
            "memory for the facts of past revisions kept between questions, in MiB",
            str(DEFAULT_HISTORY_MEMORY_MIB), _at_least(0), metavar="MIB",
            note="([docs/history.md](docs/history.md))"),
    Setting("watch_policy", "MANDATE_WATCH_POLICY", "--watch-policy", "reload the policy when its files change",
            "off", _on_or_off, switch=True),
    Setting("callers_file", "MANDATE_CALLERS_FILE", "--callers", "named callers, TOML (below)",
            "none: only `MANDATE_API_TOKENS` (named `env-0`, `env-1`, ...)", _path, metavar="FILE"),
    Setting("tls_cert", "MANDATE_TLS_CERT", "--tls-cert", "serve TLS with this certificate chain (with --tls-key)",
            "plaintext", _path, metavar="FILE"),
    Setting("tls_key", "MANDATE_TLS_KEY", "--tls-key", "the TLS certificate's private key", "none", _path,
            metavar="FILE"),
    Setting("tls_client_ca", "MANDATE_TLS_CLIENT_CA", "--tls-client-ca",
            "mTLS: require client certificates signed by this CA", "no client certificates", _path, metavar="FILE"),
    Setting("insecure", "MANDATE_INSECURE", "--insecure", "allow plaintext on an address other than loopback",
            "refused: the server does not start", _on_or_off, switch=True),
    Setting("metrics_listen", "MANDATE_METRICS_LISTEN", "--metrics-listen",
            "serve Prometheus metrics at http://ADDR/metrics", "off", metavar="ADDR"),
    Setting("authzen_listen", "MANDATE_AUTHZEN_LISTEN", "--authzen-listen",
            "serve the OpenID AuthZEN API (HTTP, JSON) on host:port", "off", metavar="ADDR",
            note="([docs/authzen.md](docs/authzen.md))"),
    Setting(None, "OTEL_EXPORTER_OTLP_ENDPOINT", None,
            "OpenTelemetry traces over OTLP (and the SDK's other variables: OTEL_SERVICE_NAME, ...)", "off",
            note="([docs/authzen.md](docs/authzen.md#traces))"),
    Setting("log_format", "MANDATE_LOG_FORMAT", "--log-format", "log lines: text, or json (one object per line)",
            "`text`", log_format, metavar="FORMAT"),
    Setting("log_level", "MANDATE_LOG_LEVEL", None, "the lowest level logged (DEBUG, INFO, WARNING, ERROR)",
            "`INFO`", lambda text, _name: text.upper()),
    Setting("max_requests_per_caller", "MANDATE_MAX_REQUESTS_PER_CALLER", "--max-requests-per-caller",
            "requests in flight per caller", str(DEFAULT_REQUESTS_PER_CALLER), _at_least(1), metavar="N"),
    Setting("max_batch", "MANDATE_MAX_BATCH", "--max-batch", "checks in one BatchCheck", str(DEFAULT_MAX_BATCH),
            _at_least(1), metavar="N"),
    Setting("max_message_bytes", "MANDATE_MAX_MESSAGE_BYTES", "--max-message-bytes",
            "largest request or reply, in bytes (at least 1024)", f"{DEFAULT_MAX_MESSAGE_BYTES} (4 MiB)",
            _at_least(1024), metavar="BYTES"),
)


def add_flags(parser) -> None:
    """The flags of `mandate serve`, from `SETTINGS` (`Config.override` reads them)."""
    for setting in SETTINGS:
        if setting.name is None or setting.flag is None:
            continue
        shown = setting.shown.replace("`", "")
        help_text = f"{setting.help} ({setting.env}; default {shown})"
        if setting.switch:
            parser.add_argument(setting.flag, dest=setting.name, action="store_true", default=None, help=help_text)
        else:
            parser.add_argument(setting.flag, dest=setting.name, metavar=setting.metavar, help=help_text)


def settings_table(envs: list[str] | None = None) -> str:
    """The README's table of the settings of `mandate serve`, or (`envs`) the rows of those
    variables, in that order, without the README's notes, for another document
    (tests/settings_doc.py keeps them current)."""
    by_env = {setting.env: setting for setting in SETTINGS}
    chosen = SETTINGS if envs is None else [by_env[env] for env in envs]
    rows = ["| setting | environment | flag of `mandate serve` | default |", "|---|---|---|---|"]
    for setting in chosen:
        what = f"{setting.help} {setting.note}".strip() if envs is None else setting.help
        flag = f"`{setting.flag}`" if setting.flag else ""
        env = f"`{setting.env}`" if setting.env else ""
        rows.append(f"| {what} | {env} | {flag} | {setting.shown} |")
    return "\n".join(rows) + "\n"
