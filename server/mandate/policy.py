"""The one place that talks to oso: loads the policy and answers decisions.

The policy sees only a `Subject` (facts.py), so its answer for a (subject, resource type,
action) triple never changes until the policy itself changes: it is computed once and
remembered. A check therefore costs a few dictionary look-ups once the situation has been
seen; the policy still makes every decision.
"""

from __future__ import annotations

import hashlib
import logging
import re
import threading
from pathlib import Path

from oso import Oso

from mandate import facts
from mandate.facts import Subject

log = logging.getLogger(__name__)

# Remembered answers per policy; the number of distinct situations is small, this bounds it.
CACHE_LIMIT = 200_000


class PolicyError(Exception):
    """The policy does not load or does not pass validation."""


def policy_files(policy_dir: Path) -> list[Path]:
    files = sorted(Path(policy_dir).glob("*.polar"))
    if not files:
        raise PolicyError(f"no .polar files in {policy_dir}")
    return files


_RESOURCE_BLOCK = re.compile(r"^\s*resource\s+(\w+)\s*\{(.*?)^\}", re.S | re.M)
_DECLARED_LIST = re.compile(r"\b(roles|permissions)\s*=\s*\[(.*?)\]", re.S)


def declarations(source: str) -> tuple[dict[str, tuple[str, ...]], dict[str, tuple[str, ...]]]:
    """The roles and permissions each resource block declares."""
    roles: dict[str, tuple[str, ...]] = {}
    permissions: dict[str, tuple[str, ...]] = {}
    for name, body in _RESOURCE_BLOCK.findall(source):
        body = re.sub(r"#[^\n]*", "", body)
        for kind, items in _DECLARED_LIST.findall(body):
            target = roles if kind == "roles" else permissions
            target[name] = tuple(re.findall(r'"([^"]+)"', items))
    return roles, permissions


class Policy:
    def __init__(self, policy_dir: Path | str):
        self.files = policy_files(Path(policy_dir))
        digest = hashlib.sha256()
        for path in self.files:
            digest.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
        self.version = digest.hexdigest()[:12]
        self._oso = Oso()
        for cls in facts.POLICY_CLASSES:
            self._oso.register_class(cls, name=cls.__name__.removesuffix("Fact"))
        try:
            self._oso.load_files([str(p) for p in self.files])
        except Exception as error:  # oso raises several unrelated types; all mean "does not load"
            raise PolicyError(f"policy does not load: {error}") from error
        self.roles, self.permissions = declarations("\n".join(p.read_text() for p in self.files))
        self._lock = threading.Lock()
        self._allowed: dict[tuple, bool] = {}
        self._actions: dict[tuple, frozenset[str]] = {}

    def is_allowed(self, subject: Subject, resource_type: str, action: str) -> bool:
        key = (subject, resource_type, action)
        answer = self._allowed.get(key)
        if answer is None:
            user, resource = facts.views(subject, resource_type)
            # R24: a runtime error in the policy propagates: the caller fails closed.
            answer = bool(self._oso.is_allowed(user, action, resource))
            self._remember(self._allowed, key, answer)
        return answer

    def actions(self, subject: Subject, resource_type: str) -> frozenset[str]:
        key = (subject, resource_type)
        answer = self._actions.get(key)
        if answer is None:
            user, resource = facts.views(subject, resource_type)
            answer = frozenset(a for a in self._oso.authorized_actions(user, resource) if a != "*")
            self._remember(self._actions, key, answer)
        return answer

    def query(self, rule: str, *args) -> bool:
        """Whether a named rule of the policy holds (used by Explain)."""
        return any(True for _ in self._oso.query_rule(rule, *args))

    def _remember(self, cache: dict, key, answer) -> None:
        with self._lock:
            if len(cache) >= CACHE_LIMIT:
                cache.clear()
            cache[key] = answer
