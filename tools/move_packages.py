#!/usr/bin/env python3
"""Issue 19, step 1: one package per area. Moves the modules of `server/mandate/` and the tests of
`tests/` by the tables below, then rewrites every reference to them in the tracked files.

Run it once, from a clean checkout (it refuses a dirty tree and a tree it already moved):

    python3 tools/move_packages.py --dry-run   # the plan, and any module the tables miss
    python3 tools/move_packages.py             # git mv, new __init__.py files, rewritten references
    git add -A && git commit -m "One package per area (issue 19 step 1)"

A module of `server/mandate/` or a test module of `tests/` that the tables do not name stops the run
(it lists them all): add it to the tables, or pass `--allow-unmapped` to leave it where it is (its
imports of moved modules are still rewritten). A module the tables name but the tree no longer has
stops the run too.

What is rewritten, in every tracked text file (code, tests, bench, examples, docs, README, Makefile,
pyproject, deploy, policies, protos, .ci):

- dotted names: `from mandate.x import y`, `import mandate.x`, `mandate.x.attr`, `-m mandate.x`,
  monkeypatch targets "mandate.x.name", `tests.test_x`;
- `from mandate import x` / `from mandate.api import x as y` where x is a module that moves
  (split per new package, the local name kept), and relative imports (made absolute);
- paths: `server/mandate/api/x.py`, `mandate/domain/x.py`, `api/x.py`, `domain/x.py`,
  `tests/test_x.py`;
- `Path(__file__)...parent` chains of a module that moves deeper.

Not rewritten: fixed logger names (`getLogger("mandate.server")`, what operators filter on) and
span names (`tracing.span("mandate.index.catch_up")`), which stay as they are. Mentions the script
cannot map (the `api/` and `domain/` folders as a whole, bare file names such as `partner.py`) are
listed at the end for a person to read.

Afterwards (unless --no-post) it sorts the imports it touched (`ruff check --select I --fix`) and
regenerates docs/rules.md (`python -m tests.rules_doc`), both from .venv/ when it exists.
"""

from __future__ import annotations

import argparse
import ast
import re
import shutil
import subprocess
import sys
import textwrap
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "server" / "mandate"

# --- The map: old path under server/mandate -> new path under server/mandate --------------------
SERVER_MOVES = {
    # membership: invitations and members of an organization
    "api/membership.py": "membership/rpc.py",
    "domain/membership.py": "membership/service.py",
    # partner: clients, invitation links, scopes, disconnects, partner employees
    "api/partner.py": "partner/rpc.py",
    "domain/partner.py": "partner/service.py",
    # directory: users, organizations, linked accounts, registered resources and their roles
    "api/directory.py": "directory/rpc.py",
    "domain/directory.py": "directory/service.py",
    # events: the change log
    "api/events.py": "events/rpc.py",
    "domain/events.py": "events/service.py",
    # checks: the check plane's transport (gRPC, AuthZEN over HTTP), access review, the past
    "api/authorization.py": "checks/rpc.py",
    "api/authzen.py": "checks/authzen.py",
    "api/http.py": "checks/http.py",
    "domain/review.py": "checks/review.py",
    "domain/history.py": "checks/history.py",
    # admin: import, export, erase; the world file format
    "api/admin.py": "admin/rpc.py",
    "domain/admin.py": "admin/service.py",
    "worldfile.py": "admin/worldfile.py",
    # engine: the decision engine and the reviewer tools that drive it
    "policy.py": "engine/policy.py",
    "facts.py": "engine/facts.py",
    "index.py": "engine/index.py",
    "domain/authorization.py": "engine/authorizer.py",
    "domain/explain.py": "engine/explain.py",
    "policydiff.py": "engine/policydiff.py",
    "policytest.py": "engine/policytest.py",
    "policytools.py": "engine/policytools.py",
    "policytrial.py": "engine/policytrial.py",
    # shared: what the areas' services share (look-ups, endings by time)
    "domain/common.py": "shared/common.py",
    "domain/expiry.py": "shared/expiry.py",
    # runtime: wiring, server, the gRPC plumbing every area's handlers share, operations
    "app.py": "runtime/app.py",
    "server.py": "runtime/server.py",
    "world.py": "runtime/world.py",
    "api/interceptors.py": "runtime/interceptors.py",
    "api/scope.py": "runtime/scope.py",
    "api/retries.py": "runtime/retries.py",
    "api/validate.py": "runtime/validate.py",
    "api/convert.py": "runtime/convert.py",
    "domain/requests.py": "runtime/requests.py",
    "callers.py": "runtime/callers.py",
    "config.py": "runtime/config.py",
    "logs.py": "runtime/logs.py",
    "metrics.py": "runtime/metrics.py",
    "tls.py": "runtime/tls.py",
}

# Modules other branches of this session add (issue 19 step 2, issue 22): moved when present,
# skipped when absent (a branch not merged, or a module renamed: then the unmapped check speaks).
OPTIONAL_MOVES = {
    "api/auth.py": "runtime/auth.py",
    "api/draining.py": "runtime/draining.py",
    "api/limits.py": "runtime/limits.py",
    "api/observe.py": "runtime/observe.py",
    "api/parsing.py": "runtime/parsing.py",
    "api/pool.py": "runtime/pool.py",
    "api/statuses.py": "runtime/statuses.py",
    "domain/retrying.py": "shared/retrying.py",
}

# Modules that stay where they are: the public surface (pyproject's entry points name mandate.cli
# and mandate.testing), the vocabulary every layer shares, the store, migrations, generated stubs.
SERVER_KEEP = {
    "__init__.py", "cli.py", "client.py", "contexts.py", "testing.py",
    "errors.py", "names.py", "clock.py",
    # Cross-cutting, used by the store and the engine as much as by the runtime: a caller's
    # deadline and the trace spans.
    "deadlines.py", "tracing.py",
}
SERVER_KEEP_DIRS = ("store/", "migrations/", "v1/")
# Packages emptied by the move (their __init__.py is removed with the last module).
SERVER_EMPTIED = ("api", "domain")

NEW_PACKAGES = {
    "membership": "Membership: invitations and members of an organization (rpc: the gRPC handlers; service).",
    "partner": "The partner program: clients, invitation links, scopes, disconnects and partner employees "
               "(rpc: the gRPC handlers; service).",
    "directory": "The directory: users, organizations, linked accounts, registered resources and roles on them "
                 "(rpc: the gRPC handlers; service).",
    "events": "The change log, listed or watched (rpc: the gRPC handlers; service).",
    "checks": "The check plane: decisions, lists, Explain, access review and the past (rpc: the gRPC handlers; "
              "authzen and http: the same over AuthZEN; review; history).",
    "admin": "Data in and out: import, export, erasing a person (rpc: the gRPC handlers; service; worldfile: "
             "the world format).",
    "engine": "The decision engine: the policy and its contract, the facts, the fact index, the Authorizer, "
              "Explain, and the reviewer tools (policydiff, policytest, policytools, policytrial).",
    "shared": "What the areas' services share: ids and look-ups (common), and things that end by themselves "
              "(expiry).",
    "runtime": "The running service: wiring (app), the server and its supervisor, the gRPC plumbing the areas' "
               "handlers share (interceptors, scope, retries, validate, convert, requests), callers, config, "
               "logs, metrics, TLS and the ephemeral world (world).",
}

# --- Tests: area -> test modules of tests/ (shared helpers stay in tests/) -----------------------
TEST_AREAS = {
    "membership": ["test_membership_rules.py", "test_active_owner.py", "test_expiry.py"],
    "partner": ["test_partner_rules.py", "test_partner_races.py", "test_reasons_and_partners.py",
                "test_no_op_writes.py"],
    "directory": ["test_declared_resources.py"],
    "events": ["test_events.py", "test_page_bytes.py"],
    "checks": ["test_access_review.py", "test_as_of_stable.py", "test_authzen.py", "test_explain.py",
               "test_history.py", "test_list_consistency.py", "test_one_state.py", "test_past_costs.py",
               "test_reference_model.py", "test_smoke.py", "test_invariants.py"],
    "admin": ["test_data.py"],
    "engine": ["test_policy.py", "test_policy_contract.py", "test_policy_decisions.py", "test_policy_diff.py",
               "test_policy_reload_safety.py", "test_policy_reload_trial.py", "test_policy_tools.py",
               "test_shared_partners.py"],
    "runtime": ["test_caller_scope.py", "test_callers.py", "test_grpc_errors.py", "test_oversized_values.py",
                "test_operations.py", "test_server_lifecycle.py", "test_server_streams.py", "test_startup.py",
                "test_tracing.py", "test_fleet.py", "test_request_ids.py", "test_policy_reload.py",
                "test_deploy.py"],
    "store": ["test_migrations.py", "test_postgres.py", "test_replicas.py", "test_races_two_apps.py",
              "test_write_cost.py"],
    "public": ["test_cli.py", "test_client.py", "test_testing_plugin.py", "test_package.py", "test_contract.py",
               "test_readme.py", "test_rules_doc.py", "test_names.py"],
}
# Test modules other branches of this session add: moved when present.
OPTIONAL_TESTS = {
    "test_compact_index.py": "engine",
    "test_group_commit.py": "store",
    "test_policy_split.py": "engine",
    "test_settings.py": "runtime",
    "test_check_cost.py": "checks",
}
TEST_KEEP = {"__init__.py", "conftest.py", "support.py", "factories.py", "contract.py", "reflection_call.py",
             "rules_doc.py", "settings_doc.py"}
TEST_PACKAGE_DOC = {
    "membership": "MembershipService and the membership rules.",
    "partner": "PartnerService and the partner program's rules.",
    "directory": "DirectoryService, declared resources and roles on them.",
    "events": "EventService: the change log.",
    "checks": "The check plane: Check, lists, Explain, access review, AuthZEN, the past.",
    "admin": "AdminService: import, export, erase.",
    "engine": "The policy and the decision engine, tier 1, and the reviewer tools.",
    "runtime": "The running server: callers, limits, errors, lifecycle, reloads, operations.",
    "store": "The store on every engine: migrations, replicas, races, the cost of a write.",
    "public": "What others see: the CLI, the client, the pytest plugin, the wheel, the API's names, the docs.",
}

# Edits that the move needs beyond references: (file after the move, old text, new text).
FIXUPS = [
    # docs/rules.md lists the tests of every area, not only those at the top of tests/.
    ("tests/rules_doc.py", '(ROOT / "tests").glob("test_*.py")', '(ROOT / "tests").rglob("test_*.py")'),
]

# Rewordings of mentions the references pass cannot map (whole folders, bare file names), applied
# after it; each is skipped with a note when its text has changed meanwhile (then reword by hand).
REWORDINGS = [
    ("README.md",
     "- A request flows one way: `api/` (validate, convert) → `domain/` (ask the policy, then\n"
     "  change the store in one transaction with its event) → `store/` (rows only).\n",
     "- One package per area (`membership/`, `partner/`, `directory/`, `events/`, `checks/`,\n"
     "  `admin/`), each with its handlers and its service; beside them `engine/` decides, `runtime/`\n"
     "  serves, `store/` keeps the rows.\n"
     "- A request flows one way: the area's `rpc.py` (validate, convert) → its `service.py` (ask the\n"
     "  policy, then change the store in one transaction with its event) → `store/` (rows only).\n"),
    ("README.md", "`index.py` holds the access facts", "`engine/index.py` holds the access facts"),
    ("README.md", "reused (`policy.py`)", "reused (`engine/policy.py`)"),
    ("docs/pictures.md", "[transport: server.py, api/]", "[transport: runtime/server.py, runtime/interceptors.py]"),
    ("docs/pictures.md", "[the area's handler]", "[the area's handler: rpc.py]"),
    ("docs/pictures.md", "[area service: membership/service.py, partner.py, directory.py]",
     "[area service: membership/, partner/, directory/ service.py]"),
    ("docs/pictures.md", "[(fact index: index.py, in memory)]", "[(fact index: engine/index.py, in memory)]"),
    ("docs/policy.md", "each is in `server/mandate/domain/` and", "each is in an area's `service.py` and"),
    ("server/mandate/engine/policydiff.py", "as follows (mandate.domain): remove,",
     "as follows (their service.py): remove,"),
]

# Files never rewritten: this script, and binary or generated files.
SKIP_SUFFIXES = (".pem", ".key", ".png", ".jpg", ".gif", ".ico", ".whl", ".gz", ".zip", ".db")


def docstring(text: str) -> str:
    """A module docstring of lines within the project's line length."""
    return '"""' + "\n".join(textwrap.wrap(text, 100)) + '"""\n'


def die(message: str) -> None:
    print(f"move_packages: {message}", file=sys.stderr)
    sys.exit(1)


def git(*args: str) -> str:
    return subprocess.run(["git", "-C", str(ROOT), *args], check=True, capture_output=True, text=True).stdout


def dotted(relative: str, root: str = "mandate") -> str:
    """`api/admin.py` -> `mandate.api.admin`; `x/__init__.py` -> `mandate.x`."""
    parts = relative.removesuffix(".py").split("/")
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join([root, *parts])


# --- Checking the tree against the tables --------------------------------------------------------
def server_modules() -> list[str]:
    return sorted(p.relative_to(PACKAGE).as_posix() for p in PACKAGE.rglob("*.py")
                  if "__pycache__" not in p.parts and git_tracked(p))


_tracked: set[str] | None = None


def git_tracked(path: Path) -> bool:
    global _tracked
    if _tracked is None:
        _tracked = set(git("ls-files").splitlines())
    return path.relative_to(ROOT).as_posix() in _tracked


def check_tree(allow_unmapped: bool) -> tuple[dict[str, str], dict[str, str]]:
    """(server moves that apply, test moves that apply), both as old -> new repository paths."""
    done = [new for new in SERVER_MOVES.values() if (PACKAGE / new).exists()]
    if done:
        die(f"server/mandate/{done[0]} exists already: this tree was moved (the script runs once)")
    present = server_modules()
    for old, new in OPTIONAL_MOVES.items():
        if old in present:
            SERVER_MOVES[old] = new
    missing = [old for old in SERVER_MOVES if old not in present]
    if missing:
        die("modules named in SERVER_MOVES are gone from server/mandate (update the table):\n  "
            + "\n  ".join(missing))
    tests_present = sorted(p.name for p in (ROOT / "tests").glob("*.py") if git_tracked(p))
    emptied_inits = {f"{package}/__init__.py" for package in SERVER_EMPTIED}
    unmapped = [m for m in present if m not in SERVER_MOVES and m not in SERVER_KEEP and m not in emptied_inits
                and not m.startswith(SERVER_KEEP_DIRS)]
    test_moves = {f"tests/{name}": f"tests/{area}/{name}" for area, names in TEST_AREAS.items() for name in names}
    test_moves.update({f"tests/{name}": f"tests/{area}/{name}" for name, area in OPTIONAL_TESTS.items()
                       if name in tests_present})
    missing_tests = [old for old in test_moves if not (ROOT / old).exists()]
    if missing_tests:
        die("tests named in TEST_AREAS are gone from tests/ (update the table):\n  " + "\n  ".join(missing_tests))
    unmapped_tests = [f"tests/{n}" for n in tests_present if f"tests/{n}" not in test_moves and n not in TEST_KEEP]
    if unmapped or unmapped_tests:
        listing = "\n  ".join([f"server/mandate/{m}" for m in unmapped] + unmapped_tests)
        if not allow_unmapped:
            die("modules the tables do not map (add them to SERVER_MOVES/SERVER_KEEP or TEST_AREAS/TEST_KEEP, "
                f"or pass --allow-unmapped to leave them in place):\n  {listing}")
        print(f"move_packages: left in place (--allow-unmapped):\n  {listing}")
    server = {f"server/mandate/{old}": f"server/mandate/{new}" for old, new in SERVER_MOVES.items()}
    return server, test_moves


# --- Rewriting ------------------------------------------------------------------------------------
class Rewriter:
    def __init__(self, server_moves: dict[str, str], test_moves: dict[str, str]):
        self.moves = {**server_moves, **test_moves}  # repository paths
        self.names: dict[str, str] = {}  # old dotted name -> new dotted name
        for old, new in server_moves.items():
            self.names[dotted(old.removeprefix("server/mandate/"))] = dotted(new.removeprefix("server/mandate/"))
        for old, new in test_moves.items():
            self.names[dotted(old.removeprefix("tests/"), "tests")] = dotted(new.removeprefix("tests/"), "tests")
        for new in self.names.values():  # a new name must never read as an old one
            parts = new.split(".")
            clash = [".".join(parts[:i]) for i in range(2, len(parts) + 1) if ".".join(parts[:i]) in self.names]
            if clash:
                die(f"new name {new} starts with the old name {clash[0]}: pick another")
        self.spans, self.loggers = self._fixed_names()
        self.changed: set[str] = set()

    @staticmethod
    def _fixed_names() -> tuple[set[str], set[str]]:
        """Span names and fixed logger names in the service's code: names operators see, kept."""
        spans, loggers = set(), set()
        for path in PACKAGE.rglob("*.py"):
            if "v1" in path.relative_to(PACKAGE).parts:
                continue
            text = path.read_text()
            spans.update(re.findall(r"""span\(\s*["'](mandate(?:\.\w+)+)["']""", text))
            loggers.update(re.findall(r"""getLogger\(\s*["'](mandate(?:\.\w+)+)["']\s*\)""", text))
        return spans, loggers

    # dotted names ----------------------------------------------------------------------------
    DOTTED = re.compile(r"(?<![\w.])(?:mandate|tests)(?:\.[A-Za-z_]\w*)+")
    LOGGER_CONTEXT = re.compile(r"""(?:getLogger\(\s*|logger\s*=\s*|name\s*==\s*|span\(\s*)["']$""")

    def map_name(self, chain: str) -> str:
        parts = chain.split(".")
        for i in range(len(parts), 1, -1):
            head = ".".join(parts[:i])
            if head in self.names:
                return self.names[head] + chain[len(head):]
        return chain

    def rewrite_dotted(self, text: str) -> str:
        def replace(match: re.Match) -> str:
            chain = match.group(0)
            if chain in self.spans:
                return chain
            if chain in self.loggers and self.LOGGER_CONTEXT.search(text[max(0, match.start() - 20):match.start()]):
                return chain
            return self.map_name(chain)

        return self.DOTTED.sub(replace, text)

    # paths -------------------------------------------------------------------------------------
    SERVER_PATH = re.compile(r"(?<![\w.-])((?:server/)?mandate/)?((?:api|domain)/\w+|\w+)\.py\b")
    TEST_PATH = re.compile(r"(?<![\w.-])tests/(test_\w+\.py)\b")

    def rewrite_paths(self, text: str) -> str:
        def server(match: re.Match) -> str:
            prefix, stem = match.group(1), match.group(2)
            if not prefix and "/" not in stem:
                return match.group(0)  # a bare file name: ambiguous, left for a person
            new = self.moves.get(f"server/mandate/{stem}.py")
            return f"{prefix or ''}{new.removeprefix('server/mandate/')}" if new else match.group(0)

        def test(match: re.Match) -> str:
            return self.moves.get(f"tests/{match.group(1)}", match.group(0))

        return self.TEST_PATH.sub(test, self.SERVER_PATH.sub(server, text))

    # imports -----------------------------------------------------------------------------------
    def rewrite_imports(self, text: str, old_path: str) -> str:
        """`from mandate import x` (x moving) split per new package; relative imports made absolute."""
        try:
            tree = ast.parse(text)
        except SyntaxError as error:
            die(f"{old_path} does not parse: {error}")
        module = old_path.removeprefix("server/").removesuffix(".py").replace("/", ".")
        package = module if module.endswith(".__init__") else module.rpartition(".")[0]
        package = package.removesuffix(".__init__")
        lines = text.splitlines(keepends=True)
        offsets = [0]
        for line in lines:
            offsets.append(offsets[-1] + len(line))

        def offset(lineno: int, col: int) -> int:  # ast columns count UTF-8 bytes
            line = lines[lineno - 1]
            return offsets[lineno - 1] + len(line.encode()[:col].decode(errors="ignore"))

        edits = []
        for node in ast.walk(tree):
            if not isinstance(node, ast.ImportFrom):
                continue
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[:len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, *([base] if base else [])])
            if not node.level and not any(f"{base}.{a.name}" in self.names for a in node.names):
                continue
            groups: dict[str, list[str]] = defaultdict(list)
            for alias in node.names:
                full = f"{base}.{alias.name}"
                local = alias.asname or alias.name
                if full in self.names:
                    parent, _, leaf = self.names[full].rpartition(".")
                    groups[parent].append(leaf if leaf == local else f"{leaf} as {local}")
                else:
                    groups[self.map_name(base)].append(alias.name + (f" as {alias.asname}" if alias.asname else ""))
            start, end = offset(node.lineno, node.col_offset), offset(node.end_lineno, node.end_col_offset)
            before = text[offsets[node.lineno - 1]:start]
            joiner = "\n" + before if not before.strip() else "; "
            statements = [f"from {mod} import {', '.join(sorted(names))}" for mod, names in sorted(groups.items())]
            edits.append((start, end, joiner.join(statements)))
        for start, end, replacement in sorted(edits, reverse=True):
            text = text[:start] + replacement + text[end:]
        return text

    FILE_PATH = re.compile(r"Path\(__file__\)(\.resolve\(\))?((?:\.parent(?![s\w]))+|\.parents\[(\d+)\])")

    def rewrite_file_anchors(self, text: str, old_path: str, new_path: str) -> str:
        depth = new_path.count("/") - old_path.count("/")
        if not depth or "__file__" not in text:
            return text

        def replace(match: re.Match) -> str:
            count = int(match.group(3)) + 1 if match.group(3) else match.group(2).count(".parent")
            return f"Path(__file__){match.group(1) or ''}.parents[{count + depth - 1}]"

        new_text, found = self.FILE_PATH.subn(replace, text)
        if text.count("__file__") != found:
            die(f"{old_path} uses __file__ in a way this script cannot move ({new_path}): fix by hand first")
        return new_text

    def rewrite(self, text: str, old_path: str, new_path: str) -> str:
        if old_path.endswith(".py"):
            text = self.rewrite_imports(text, old_path)
            text = self.rewrite_file_anchors(text, old_path, new_path)
        return self.rewrite_paths(self.rewrite_dotted(text))


def text_files() -> list[str]:
    files = []
    for name in git("ls-files").splitlines():
        path = ROOT / name
        if (name == "tools/move_packages.py" or name.startswith("server/mandate/v1/") or not path.is_file()
                or name.endswith(SKIP_SUFFIXES)):
            continue
        try:
            path.read_text()
        except UnicodeDecodeError:
            continue
        files.append(name)
    return files


LEFTOVER = re.compile(r"(?<![\w.-])(?:(?:server/)?mandate/)?(?:api|domain)/(?!\w+\.proto)|\bmandate\.(?:api|domain)\b")


def leftovers(files: list[str]) -> list[str]:
    """Mentions of the emptied packages as a whole: for a person to reword."""
    found = []
    for name in files:
        path = ROOT / name
        if not path.is_file():
            continue
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if LEFTOVER.search(line) and "googleapis" not in line and "opentelemetry" not in line:
                found.append(f"{name}:{number}: {line.strip()[:140]}")
    return found


def arrows() -> list[str]:
    """Imports between areas (package level) in server/mandate after the move."""
    areas = {"membership", "partner", "directory", "events", "checks", "admin"}
    found = set()
    for path in PACKAGE.rglob("*.py"):
        relative = path.relative_to(PACKAGE)
        if not relative.parts or relative.parts[0] not in areas:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            targets = []
            if isinstance(node, ast.ImportFrom) and node.module and not node.level:
                targets = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            elif isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            for target in targets:
                parts = target.split(".")
                if len(parts) > 1 and parts[0] == "mandate" and parts[1] in areas and parts[1] != relative.parts[0]:
                    if (PACKAGE / Path(*parts[1:])).with_suffix(".py").exists() or len(parts) == 2:
                        found.add(f"mandate.{relative.as_posix().removesuffix('.py').replace('/', '.')} -> {target}")
    return sorted(found)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dry-run", action="store_true", help="print the plan and stop")
    parser.add_argument("--allow-unmapped", action="store_true", help="leave modules the tables miss in place")
    parser.add_argument("--allow-dirty", action="store_true", help="run on a tree with uncommitted changes")
    parser.add_argument("--no-post", action="store_true", help="skip ruff's import sorting and tests.rules_doc")
    args = parser.parse_args(argv)

    if not (args.allow_dirty or args.dry_run) and git("status", "--porcelain", "--untracked-files=no").strip():
        die("the work tree has uncommitted changes: commit or stash them first (or --allow-dirty)")
    server_moves, test_moves = check_tree(args.allow_unmapped)
    rewriter = Rewriter(server_moves, test_moves)
    moves = {**server_moves, **test_moves}
    if args.dry_run:
        for old, new in moves.items():
            print(f"{old} -> {new}")
        return 0

    files = text_files()
    contents = {}
    for name in files:
        new_name = moves.get(name, name)
        original = (ROOT / name).read_text()
        rewritten = rewriter.rewrite(original, name, new_name)
        if rewritten != original or new_name != name:
            contents[new_name] = rewritten

    for old, new in moves.items():
        (ROOT / new).parent.mkdir(parents=True, exist_ok=True)
        git("mv", old, new)
    for package in SERVER_EMPTIED:
        init = PACKAGE / package / "__init__.py"
        others = [p for p in (PACKAGE / package).rglob("*.py") if p != init and "__pycache__" not in p.parts]
        if init.exists() and not others:
            git("rm", "-q", init.relative_to(ROOT).as_posix())
        if not others:  # no namespace package left behind by a stale __pycache__
            shutil.rmtree(PACKAGE / package, ignore_errors=True)
    for name, text in contents.items():
        (ROOT / name).write_text(text)
    created = []
    for package, doc in NEW_PACKAGES.items():
        init = PACKAGE / package / "__init__.py"
        if (PACKAGE / package).is_dir() and not init.exists():
            init.write_text(docstring(doc))
            created.append(init)
    for area, doc in TEST_PACKAGE_DOC.items():
        init = ROOT / "tests" / area / "__init__.py"
        if init.parent.is_dir() and not init.exists():
            init.write_text(docstring(f"Tests: {doc}"))
            created.append(init)
    git("add", *[str(p) for p in created])
    for name, old, new in FIXUPS:
        path = ROOT / name
        text = path.read_text()
        if new in text:
            continue
        if old not in text:
            die(f"fix-up not applicable, {name} no longer holds {old!r}: apply by hand")
        path.write_text(text.replace(old, new))

    for name, old, new in REWORDINGS:
        path = ROOT / name
        text = path.read_text() if path.is_file() else ""
        if old in text:
            path.write_text(text.replace(old, new))
        elif new not in text:
            print(f"move_packages: rewording skipped, {name} changed: reword by hand ({old.strip()[:60]!r})")

    if not args.no_post:
        python = ROOT / ".venv" / "bin" / "python"
        ruff = ROOT / ".venv" / "bin" / "ruff"
        touched = sorted({n for n in contents if n.endswith(".py")} | {str(p.relative_to(ROOT)) for p in created})
        if ruff.exists():
            subprocess.run([str(ruff), "check", "--quiet", "--select", "I", "--fix", *touched], cwd=ROOT)
        else:
            print("move_packages: no .venv/bin/ruff: run `ruff check --select I --fix server tests bench examples`")
        for generator in sorted((ROOT / "tests").glob("*_doc.py")):  # rules_doc, settings_doc: generated docs
            if python.exists():
                subprocess.run([str(python), "-m", f"tests.{generator.stem}"], cwd=ROOT, check=True)
            else:
                print(f"move_packages: no .venv/bin/python: run `python -m tests.{generator.stem}`")

    left = leftovers(text_files())
    if left:
        print("move_packages: mentions of the old api/ and domain/ packages, to reword by hand:")
        print("  " + "\n  ".join(left))
    cross = arrows()
    print("move_packages: imports between areas:" + ("\n  " + "\n  ".join(cross) if cross else " none"))
    print(f"move_packages: moved {len(moves)} files; now `git add -A` and commit")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
