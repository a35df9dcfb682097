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


# Every action the service asks the policy about (R23: each mutation is one of these on an
# Organization; Project actions are the scopes a client grants). A policy must declare them all.
SERVICE_ACTIONS = {
    "Organization": (
        "view", "list_members", "invite_member", "cancel_invitation", "list_invitations", "remove_member",
        "pause_member", "resume_member", "set_member_role", "tag_partner_employee", "grant_owner",
        "put_resource", "delete_resource", "link", "switch",
        "add_client", "list_clients", "export_clients", "assign_client", "request_disconnect",
        "accept_client_invitation", "list_partners", "update_granted_scopes", "respond_disconnect",
        "revoke_partner", "approve_partner_employee",
    ),
    "Project": ("read", "edit", "publish", "approve", "delete"),
}
BUILTIN_CLASSES = {"String", "Integer", "Float", "Boolean", "List", "Dictionary"}
_SPECIALIZER = re.compile(r"\b\w+\s*:\s*([A-Z]\w*)")


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
        self.directory = Path(policy_dir)
        self.files = policy_files(self.directory)
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
        problems = self.problems()
        if problems:
            raise PolicyError("policy fails validation: " + "; ".join(problems))
        self._lock = threading.Lock()
        self._allowed: dict[tuple, bool] = {}
        self._actions: dict[tuple, frozenset[str]] = {}

    def problems(self) -> list[str]:
        """What `mandate policy check` reports beyond oso's own load-time validation."""
        problems = []
        for resource_type, actions in SERVICE_ACTIONS.items():
            declared = set(self.permissions.get(resource_type, ()))
            problems += [f"{resource_type} does not declare the permission {a!r} the service asks about"
                         for a in actions if a not in declared]
        for resource_type in facts.RESOURCE_TYPES:
            user, resource = facts.views(Subject(), resource_type)
            try:
                self._oso.is_allowed(user, "view", resource)
            except Exception as error:  # noqa: BLE001 - any error here means decisions would fail
                problems.append(f"deciding on a {resource_type} fails: {str(error).splitlines()[0]}")
        known = BUILTIN_CLASSES | {cls.__name__.removesuffix("Fact") for cls in facts.POLICY_CLASSES}
        for path in self.files:
            for number, line in enumerate(path.read_text().splitlines(), 1):
                code = line.split("#", 1)[0]
                for name in _SPECIALIZER.findall(code):
                    if name not in known:
                        problems.append(f"{path.name}:{number}: unknown type {name!r} (never matches)")
        return problems

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


    def _remember(self, cache: dict, key, answer) -> None:
        with self._lock:
            if len(cache) >= CACHE_LIMIT:
                cache.clear()
            cache[key] = answer
