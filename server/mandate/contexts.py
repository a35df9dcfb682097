"""Saved contexts of the `mandate` command: which server a client command talks to, and how.

A context names a server address, the file holding the caller's token, and the TLS files.
They live in the user's configuration (`$XDG_CONFIG_HOME/mandate/contexts.toml`, by default
`~/.config/mandate/contexts.toml`), never in a checkout, and hold paths only: no token is ever
written there.

    current = "staging"

    [contexts."staging"]
    address = "mandate.staging.internal:50051"
    token_file = "/home/me/.secrets/mandate-staging"
    tls_ca = "/etc/ssl/internal-ca.pem"
"""

from __future__ import annotations

import json
import os
import tempfile
import tomllib
from dataclasses import asdict, dataclass, fields
from pathlib import Path


class ContextError(ValueError):
    """A context that does not exist, or a contexts file that cannot be read."""


@dataclass(frozen=True)
class Context:
    address: str = ""
    token_file: str = ""
    tls_ca: str = ""
    tls_cert: str = ""
    tls_key: str = ""


KEYS = tuple(f.name for f in fields(Context))


def contexts_path(env: dict[str, str] | None = None) -> Path:
    env = os.environ if env is None else env
    base = env.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "mandate" / "contexts.toml"


@dataclass
class Contexts:
    path: Path
    current: str = ""
    saved: dict[str, Context] | None = None

    @classmethod
    def load(cls, path: Path | None = None) -> Contexts:
        path = path or contexts_path()
        if not path.exists():
            return cls(path, "", {})
        try:
            data = tomllib.loads(path.read_text())
        except (OSError, tomllib.TOMLDecodeError) as error:
            raise ContextError(f"cannot read {path}: {error}") from None
        saved = {}
        for name, table in (data.get("contexts") or {}).items():
            if not isinstance(table, dict) or set(table) - set(KEYS):
                raise ContextError(f"{path}: context {name!r} may only have the keys {', '.join(KEYS)}")
            saved[name] = Context(**{key: str(value) for key, value in table.items()})
        return cls(path, str(data.get("current", "")), saved)

    def get(self, name: str) -> Context:
        if name not in self.saved:
            known = ", ".join(sorted(self.saved)) or "none saved yet (mandate context set NAME ...)"
            raise ContextError(f"no context {name!r}; contexts: {known}")
        return self.saved[name]

    def save(self) -> None:
        """Write the whole file at once (a reader never sees half of it), readable by the user only."""
        lines = [f"current = {quoted(self.current)}"] if self.current else []
        for name in sorted(self.saved):
            lines += ["", f"[contexts.{quoted(name)}]"]
            lines += [f"{key} = {quoted(value)}" for key, value in asdict(self.saved[name]).items() if value]
        self.path.parent.mkdir(parents=True, exist_ok=True)
        descriptor, temporary = tempfile.mkstemp(dir=self.path.parent, prefix=".contexts-")
        with os.fdopen(descriptor, "w") as handle:
            handle.write("\n".join(lines) + "\n")
        os.replace(temporary, self.path)


def quoted(text: str) -> str:
    """A TOML basic string: JSON's escapes are TOML's."""
    return json.dumps(text, ensure_ascii=False)
