"""The `mandate` command: serve, migrate, and ask a running server from the shell."""

from __future__ import annotations

import argparse
import csv
import json
import os
import secrets
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import grpc

from mandate.contexts import ContextError
from mandate.runtime import logs
from mandate.runtime.config import (
    DEFAULT_LISTEN,
    DEFAULT_TOKEN_FILE,
    Config,
    add_flags,
)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="mandate", description="Mandate authorization service")
    parser.add_argument("--version", action=VersionAction, help="print the package and policy versions and exit")
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="migrate the database and serve gRPC")
    add_server_flags(serve)

    policy = commands.add_parser("policy", help="test, check and review the policy")
    policy_commands = policy.add_subparsers(dest="policy_command", required=True)
    test = policy_commands.add_parser("test", help="run policy test files (default: the policy's tests/)")
    test.add_argument("paths", nargs="*", help="test files or directories")
    test.add_argument("--junit", help="also write JUnit XML to this file")
    matrix = policy_commands.add_parser("matrix", help="print who may do what on the canonical world")
    matrix.add_argument("--format", choices=("markdown", "csv"), default="markdown")
    policy_commands.add_parser("check", help="load and validate the policy")
    policy_commands.add_parser("path", help="print the directory of the policy `mandate serve` would load")
    mutate = policy_commands.add_parser(
        "mutate", help="change the policy in small ways (mutants); report those no test notices (exit 1 when any)")
    mutate.add_argument("paths", nargs="*", help="test files or directories")
    mutate.add_argument("--kind", action="append", metavar="KIND",
                        help="only mutants of this kind (repeat for more): 'rule deleted', 'condition dropped', "
                             "'role swapped', 'value left out', 'rule copied'")
    mutate.add_argument("--equivalents", metavar="FILE",
                        help="the equivalent mutants, with why (default: equivalent-mutants.yaml beside the policy)")
    mutate.add_argument("--every", type=int, default=1, metavar="N",
                        help="only every N-th mutant, in a fixed order (a quick subset)")
    mutate.add_argument("--verbose", action="store_true", help="also list the mutants the tests caught")
    for sub in (test, matrix, mutate, policy_commands.choices["check"], policy_commands.choices["path"]):
        sub.add_argument("--policy-dir", help="overrides MANDATE_POLICY_DIR")
    diff = policy_commands.add_parser(
        "diff", help="list every decision a policy change changes on real grants (exit 1 when any does)")
    diff.add_argument("--base", required=True, metavar="DIR_OR_GIT_REF",
                      help="the policy before the change: a directory of .polar files, or a git ref (the policy "
                           "directory's files at that ref)")
    diff.add_argument("--policy-dir", help="the changed policy (overrides MANDATE_POLICY_DIR)")
    grants = diff.add_mutually_exclusive_group(required=True)
    grants.add_argument("--database", metavar="URL", help="read the grants from this database (read only)")
    grants.add_argument("--world", metavar="FILE", help="read the grants from this world file (YAML)")
    diff.add_argument("--format", choices=("md", "json"), default="md", help="Markdown (default) or JSON")
    diff.add_argument("--all", action="store_true",
                      help="list every (user, action, resource) of every group, not only one example")

    migrate = commands.add_parser("migrate", help="bring the database to the newest schema")
    migrate.add_argument("--database-url", help="overrides MANDATE_DATABASE_URL")

    for name, text in (("check", "ask whether ACTOR may do ACTION on RESOURCE"),
                       ("explain", "explain the decision in plain words")):
        sub = commands.add_parser(name, help=text)
        sub.add_argument("actor", help="a user id (or User:ID)")
        sub.add_argument("action", help="e.g. read")
        sub.add_argument("resource", help="TYPE:ID, e.g. Project:p1 or Organization:org_...")
        add_client_flags(sub)

    actions = commands.add_parser("list-actions", help="every action ACTOR may take on RESOURCE")
    actions.add_argument("actor", help="a user id (or User:ID)")
    actions.add_argument("resource", help="TYPE:ID, e.g. Project:p1")
    add_client_flags(actions)
    resources = commands.add_parser("list-resources", help="the ids of the resources of TYPE ACTOR may take ACTION on")
    resources.add_argument("actor", help="a user id (or User:ID)")
    resources.add_argument("action", help="e.g. read")
    resources.add_argument("resource_type", metavar="type", help="a resource type, e.g. Project")
    add_client_flags(resources)
    actors = commands.add_parser("list-actors", help="the ids of the users who may take ACTION on RESOURCE")
    actors.add_argument("action", help="e.g. edit")
    actors.add_argument("resource", help="TYPE:ID, e.g. Project:p1")
    add_client_flags(actors)

    call = commands.add_parser("call", help="call any RPC with a JSON request, print the JSON reply")
    call.add_argument("method", nargs="?", help="Service.Method, e.g. DirectoryService.RegisterUser")
    call.add_argument("request", nargs="?", default="{}", help="the request as JSON (default {})")
    call.add_argument("--list", action="store_true", help="list every RPC, with its request and reply, and exit")
    call.add_argument("--field", help="print only this field of the reply (e.g. id)")
    call.add_argument("--no-request-id", action="store_true",
                      help="send a mutation without a request_id (by default each call gets a fresh one, "
                           "and a call the server may not have answered is retried with it)")
    add_client_flags(call)

    export = commands.add_parser("export-clients", help="write a partner's client list as CSV (R21)")
    export.add_argument("actor", help="the acting user's id")
    export.add_argument("partner", help="the partner organization's id")
    export.add_argument("--output", "-o", help="file to write (default: standard output)")
    add_client_flags(export)

    review = commands.add_parser("access-review",
                                 help="every person who can do anything in ORG, the path and when it was granted")
    review.add_argument("organization", help="the organization's id")
    review.add_argument("--format", choices=("csv", "json", "md"), default="md")
    add_client_flags(review)

    context = commands.add_parser("context", help="saved servers for the client commands: set, use, list, remove")
    context_commands = context.add_subparsers(dest="context_command", required=True)
    saved = context_commands.add_parser("set", help="save the context NAME (replacing one of that name)")
    saved.add_argument("name")
    saved.add_argument("--address", required=True, help="host:port of the server")
    saved.add_argument("--token-file", help="the file holding this caller's token")
    saved.add_argument("--tls-ca", help="speak TLS, trusting this CA for the server's certificate")
    saved.add_argument("--tls-cert", help="client certificate, for mTLS")
    saved.add_argument("--tls-key", help="the client certificate's private key")
    context_commands.add_parser("use", help="make NAME the context of every client command").add_argument("name")
    context_commands.add_parser("remove", help="forget the context NAME").add_argument("name")
    listed = context_commands.add_parser("list", help="the saved contexts; the current one is marked *")
    listed.add_argument("--json", action="store_true", help="print JSON")

    add_data_commands(commands)

    args = parser.parse_args(argv)
    try:
        config = Config.from_env()  # the database's settings too: checked at start, not when the store opens
    except ValueError as error:
        print(f"mandate: {error}", file=sys.stderr)
        return 2
    if args.command == "serve":
        try:
            config.override(args)
        except ValueError as error:
            print(f"mandate: {error}", file=sys.stderr)
            return 2
        logs.setup(config.log_level, config.log_format)
        return run_serve(config, args)
    logs.setup(config.log_level)
    if args.command == "migrate":
        from mandate.store.migrate import upgrade

        upgrade(args.database_url or config.database_url)
        return 0
    client_commands = {"check": run_check, "explain": run_check, "list-actions": run_list_actions,
                       "list-resources": run_list, "list-actors": run_list, "export-clients": run_export,
                       "call": run_call, "access-review": run_access_review, "context": run_context,
                       **DATA_COMMANDS}
    if args.command in client_commands:
        try:
            return client_commands[args.command](args)
        except (ClientError, ContextError) as error:
            print(f"mandate: {error}", file=sys.stderr)
            return 2
    if args.command == "policy":
        return run_policy(args, Path(args.policy_dir) if args.policy_dir else config.policy_dir)
    return 2


def add_server_flags(parser: argparse.ArgumentParser) -> None:
    add_flags(parser)  # every setting's flag (mandate.runtime.config.SETTINGS)
    parser.add_argument("--ephemeral", action="store_true",
                        help="serve from a throwaway database, deleted at exit (for other teams' tests)")
    parser.add_argument("--world", help="with --ephemeral: fill the database from this world file (YAML or JSON Lines)")


CLIENT_FLAGS = (
    (("--server", "--address"), dict(dest="server", metavar="HOST:PORT",
                                     help="the server (default: the context's, else MANDATE_LISTEN)")),
    (("--context",), dict(metavar="NAME", help="use this saved context (MANDATE_CONTEXT; default: the current one)")),
    (("--token-file",), dict(metavar="FILE", help="the file holding the caller's token (MANDATE_TOKEN_FILE; or the "
                                                  "token itself in MANDATE_TOKEN)")),
    (("--ca",), dict(metavar="FILE", help="speak TLS, trusting this CA for the server's certificate (MANDATE_CA)")),
    (("--cert",), dict(metavar="FILE", help="client certificate, for mTLS (MANDATE_CERT)")),
    (("--key",), dict(metavar="FILE", help="the client certificate's private key (MANDATE_KEY)")),
    (("--at-least-revision",), dict(default="", metavar="R",
                                    help="answer from data at least this new (a revision a write returned)")),
    (("--at-revision",), dict(default="", metavar="R", help="answer as at this past revision, from the history")),
    (("--as-of",), dict(default="", metavar="TIME",
                        help="answer as at this past time (RFC 3339, e.g. 2026-10-01T00:00:00Z), from the history")),
    (("--json",), dict(action="store_true", help="print the answer as JSON")),
)


def add_client_flags(parser: argparse.ArgumentParser) -> None:
    """The flags every client command takes. A command that defines one of them itself keeps its own."""
    for names, options in CLIENT_FLAGS:
        if not any(name in parser._option_string_actions for name in names):
            parser.add_argument(*names, **options)


def run_serve(config: Config, args) -> int:
    from mandate.engine.policy import PolicyError
    from mandate.runtime.server import CannotListen, serve
    from mandate.store.migrate import upgrade

    if args.ephemeral and config.processes > 1:
        print("mandate: --ephemeral serves from one process (each would have its own throwaway database)",
              file=sys.stderr)
        return 2
    if args.world and not args.ephemeral:
        print("mandate: --world needs --ephemeral (it never writes into a real database)", file=sys.stderr)
        return 2
    try:
        if args.ephemeral:
            from mandate.runtime.world import EphemeralApp, WorldError, read_world

            try:
                world = read_world(args.world) if args.world else None
                ephemeral = EphemeralApp(config.policy_dir, world)
                ephemeral.app.lifetimes.invitation_ttl = config.invitation_ttl
            except (WorldError, OSError) as error:
                print(f"mandate: cannot load the world: {error}", file=sys.stderr)
                return 1
            token = None
            if not config.api_tokens and config.callers_file is None:
                # A throwaway server writes nothing: its token lives in memory and is printed once.
                token = secrets.token_urlsafe(32)
                config.api_tokens = [token]

            def report(state: str) -> None:
                if state == "serving" and token:
                    print(f"MANDATE_TOKEN={token}", flush=True)

            try:
                ephemeral.app.start_expiring()
                serve(config, app=ephemeral.app, report=report)
            finally:
                ephemeral.close()
        elif config.processes > 1:
            from mandate.runtime.server import serve_processes

            upgrade(config.database_url)
            return serve_processes(config)
        else:
            upgrade(config.database_url)
            serve(config)
    except CannotListen as error:
        print(f"mandate: {error}", file=sys.stderr)
        return 1
    except (PolicyError, ValueError) as error:  # a bad policy or a bad setting
        print(f"mandate: refusing to start: {error}", file=sys.stderr)
        return 1
    return 0


class VersionAction(argparse.Action):
    """`mandate --version`: the package, and the policy it would serve (MANDATE_POLICY_DIR or the packaged one)."""

    def __init__(self, option_strings, dest, **kwargs):
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, **kwargs)

    def __call__(self, parser, namespace, values, option_string=None):
        from importlib.metadata import PackageNotFoundError, version

        from mandate.engine.policy import Policy, PolicyError

        try:
            package_version = version("mandate")
        except PackageNotFoundError:  # run from a source tree that was never installed
            package_version = "unknown"
        try:
            policy_dir = Config.from_env().policy_dir.resolve()
            policy = f"policy {Policy(policy_dir).version}"
        except (PolicyError, ValueError) as error:
            print(f"mandate {package_version}")
            parser.exit(1, f"mandate: no policy version: {error}\n")
        print(f"mandate {package_version}, {policy} ({policy_dir})")
        parser.exit(0)


def run_policy(args, policy_dir: Path) -> int:
    from mandate.engine import policytest, policytools
    from mandate.engine.policy import Policy, PolicyError

    if args.policy_command == "diff":
        return run_policy_diff(args, policy_dir)
    if args.policy_command == "path":
        if not policy_dir.is_dir():
            print(f"mandate: no policy directory at {policy_dir.resolve()}", file=sys.stderr)
            return 1
        print(policy_dir.resolve())
        return 0
    try:
        policy = Policy(policy_dir)
    except PolicyError as error:
        if error.problems == [str(error)]:
            print(f"mandate: {error}", file=sys.stderr)
        else:  # one line per problem, e.g. "POLICY_CONTRACT member.polar:12: ..."
            print(f"mandate: the policy in {policy_dir} is refused:", file=sys.stderr)
            for problem in error.problems:
                print(problem, file=sys.stderr)
        return 1
    if args.policy_command == "check":
        print(f"policy {policy.version} in {policy_dir}: ok ({len(policy.files)} files, "
              f"{sum(len(p) for p in policy.permissions.values())} permissions)")
        return 0
    if args.policy_command == "matrix":
        text = policytools.matrix_csv(policy) if args.format == "csv" else policytools.matrix_markdown(policy)
        sys.stdout.write(text)
        return 0
    # Without paths, the tests that come with the policy (packed into the wheel beside it).
    paths = args.paths or [str(policy_dir / "tests")]
    if args.policy_command == "test":
        try:
            outcomes = policytest.run(paths, policy)
        except FileNotFoundError as error:
            print(f"mandate: {error}", file=sys.stderr)
            return 2
        policytest.report(outcomes, sys.stdout)
        if args.junit:
            policytest.write_junit(outcomes, args.junit)
        return 0 if outcomes and all(o.passed for o in outcomes) else 1
    try:
        equivalents = policytools.read_equivalents(
            Path(args.equivalents) if args.equivalents else policy_dir / policytools.EQUIVALENTS_FILE)
        if args.every < 1:
            raise ValueError("--every must be at least 1")
        unknown = [kind for kind in args.kind or () if kind not in policytools.KINDS]
        if unknown:
            raise ValueError(f"--kind: unknown kind {unknown[0]!r} (one of: {', '.join(policytools.KINDS)})")
        mutants = policytools.mutation_run(policy_dir, paths, tuple(args.kind or policytools.KINDS), equivalents,
                                           args.every)
    except (ValueError, OSError) as error:
        print(f"mandate: {error}", file=sys.stderr)
        return 2
    for mutant in mutants:
        if mutant.survived:
            print(f"SURVIVED   {mutant.describe()}")
        elif args.verbose:
            status = "killed    " if mutant.killed else "equivalent"
            print(f"{status} {mutant.describe()}\n           {mutant.how if mutant.killed else mutant.equivalent}")
    for line in policytools.mutation_report(mutants):
        print(line)
    return 0 if not any(m.survived for m in mutants) else 1


def run_policy_diff(args, policy_dir: Path) -> int:
    """Exit 0: no decision changes; 1: some do; 2: a usage error (api.md)."""
    from mandate.engine import policydiff

    try:
        result = policydiff.run(args.base, policy_dir, args.database, args.world)
    except policydiff.DiffUsageError as error:
        print(f"mandate: {error}", file=sys.stderr)
        return 2
    render = policydiff.as_json if args.format == "json" else policydiff.as_markdown
    sys.stdout.write(render(result, every_triple=args.all))
    return 1 if result.groups else 0


# -- client commands ---------------------------------------------------------------------------
#
# Where the server is and who the caller is: a flag, then the client's environment variables
# (MANDATE_TOKEN, MANDATE_TOKEN_FILE, MANDATE_CA, MANDATE_CERT, MANDATE_KEY), then the context
# (--context, MANDATE_CONTEXT, else the current one), then the defaults (MANDATE_LISTEN, and the
# token `mandate serve` keeps in var/api-token of a checkout). A client never writes a token.


class ClientError(Exception):
    """A client command that cannot run as asked: exit status 2, nothing sent."""


@dataclass(frozen=True)
class Connection:
    address: str
    token: str | None  # None: the caller is known by its client certificate alone
    ca: str | None
    cert: str | None
    key: str | None


def connection(args) -> Connection:
    from mandate.contexts import Contexts

    env = os.environ
    name = getattr(args, "context", None) or env.get("MANDATE_CONTEXT", "").strip()
    contexts = Contexts.load()
    name = name or contexts.current
    context = contexts.get(name) if name else None

    def setting(flag: str, variable: str, saved: str) -> str | None:
        return (getattr(args, flag, None) or env.get(variable, "").strip()
                or (getattr(context, saved) if context else "") or None)

    ca, cert, key = (setting("ca", "MANDATE_CA", "tls_ca"), setting("cert", "MANDATE_CERT", "tls_cert"),
                     setting("key", "MANDATE_KEY", "tls_key"))
    if bool(cert) != bool(key):
        raise ClientError("--cert and --key (MANDATE_CERT, MANDATE_KEY) go together")
    for path in (ca, cert, key):
        if path and not Path(path).is_file():
            raise ClientError(f"no such file: {path}")
    address = (getattr(args, "server", None) or (context.address if context else "")
               or env.get("MANDATE_LISTEN", "").strip() or DEFAULT_LISTEN)
    return Connection(address, caller_token(args, env, name, context, bool(cert)), ca, cert, key)


def caller_token(args, env, context_name: str, context, certificate: bool) -> str | None:
    if getattr(args, "token_file", None):
        return read_token(args.token_file, "--token-file")
    if env.get("MANDATE_TOKEN", "").strip():
        return env["MANDATE_TOKEN"].strip()
    if env.get("MANDATE_TOKEN_FILE", "").strip():
        return read_token(env["MANDATE_TOKEN_FILE"].strip(), "MANDATE_TOKEN_FILE")
    if context is not None and context.token_file:
        return read_token(context.token_file, f"context {context_name}")
    if context is None and Path(DEFAULT_TOKEN_FILE).is_file():  # `mandate serve` in this checkout
        return read_token(DEFAULT_TOKEN_FILE, "the server's token file")
    if certificate:
        return None
    raise ClientError("no token: set MANDATE_TOKEN, or give --token-file FILE (or MANDATE_TOKEN_FILE); a caller "
                      "known by its client certificate gives --cert and --key instead")


def read_token(path: str, source: str) -> str:
    """The token in the file; a missing or empty file is an error (never created here)."""
    try:
        token = Path(path).read_text().strip()
    except FileNotFoundError:
        raise ClientError(f"{source}: no token file at {path}") from None
    except OSError as error:
        raise ClientError(f"{source}: cannot read {path}: {error.strerror}") from None
    if not token or any(c.isspace() for c in token):
        raise ClientError(f"{source}: {path} does not hold a token (one line, no spaces)")
    return token


def channel(args) -> grpc.Channel:
    """Plaintext, or TLS with --ca (and mTLS with --cert and --key). The token goes on each call
    with `metadata=call_metadata(args)`."""
    target = connection(args)
    if not (target.ca or target.cert):
        return grpc.insecure_channel(target.address)

    def read(path):
        return Path(path).read_bytes() if path else None

    credentials = grpc.ssl_channel_credentials(read(target.ca), read(target.key), read(target.cert))
    return grpc.secure_channel(target.address, credentials)


def call_metadata(args=None) -> tuple[tuple[str, str], ...]:
    token = connection(args or argparse.Namespace()).token
    return (("authorization", f"Bearer {token}"),) if token else ()


HISTORY_FLAGS = {"at_least_revision": "--at-least-revision", "at_revision": "--at-revision", "as_of": "--as-of"}


def history(args, message) -> dict[str, str]:
    """The history fields given on the command line, for a request of this message type; a flag
    the request has no field for is refused rather than ignored."""
    given = {name: getattr(args, name, "") for name in HISTORY_FLAGS if getattr(args, name, "")}
    for name in given:
        if name not in message.DESCRIPTOR.fields_by_name:
            raise ClientError(f"{HISTORY_FLAGS[name]}: {message.DESCRIPTOR.name} has no field {name}")
    return given


def print_json(value) -> None:
    print(json.dumps(value, ensure_ascii=False))


def object_ref(text: str, default_type: str):
    from mandate.v1 import common_pb2

    kind, _, ident = text.partition(":")
    if not ident:
        kind, ident = default_type, text
    return common_pb2.ObjectRef(type=kind, id=ident)


def rpc_error_text(error: grpc.RpcError) -> str:
    """Mandate's messages start with their reason; transport errors get their status code."""
    details = error.details() or ""
    if details.split(":", 1)[0].isupper():
        return f"mandate: {details}"
    return f"mandate: {error.code().name}: {details}"


def run_check(args) -> int:
    """`check` and `explain`: exit 0 allowed, 1 denied, 2 an error."""
    from mandate.v1 import authorization_pb2, authorization_pb2_grpc

    request = authorization_pb2.CheckRequest(actor=object_ref(args.actor, "User"), action=args.action,
                                             resource=object_ref(args.resource, "Project"),
                                             **history(args, authorization_pb2.CheckRequest))
    stub = authorization_pb2_grpc.AuthorizationServiceStub(channel(args))
    try:
        reply = (stub.Check if args.command == "check" else stub.Explain)(request, metadata=call_metadata(args))
    except grpc.RpcError as error:
        print(rpc_error_text(error), file=sys.stderr)
        return 2
    reasons = list(reply.reasons) if args.command == "explain" else None
    if args.json:
        answer = {"allowed": reply.allowed, "revision": reply.revision, "policy_version": reply.policy_version}
        print_json(answer if reasons is None else {**answer, "reasons": reasons})
    else:
        print("allowed" if reply.allowed else "denied")
        for reason in reasons or ():
            print(f"  - {reason}")
    return 0 if reply.allowed else 1


def run_list_actions(args) -> int:
    from mandate.v1 import authorization_pb2, authorization_pb2_grpc

    request = authorization_pb2.ListActionsRequest(actor=object_ref(args.actor, "User"),
                                                   resource=object_ref(args.resource, "Project"),
                                                   **history(args, authorization_pb2.ListActionsRequest))
    stub = authorization_pb2_grpc.AuthorizationServiceStub(channel(args))
    try:
        reply = stub.ListActions(request, metadata=call_metadata(args))
    except grpc.RpcError as error:
        print(rpc_error_text(error), file=sys.stderr)
        return 2
    if args.json:
        print_json({"actions": list(reply.actions), "revision": reply.revision,
                    "policy_version": reply.policy_version})
    else:
        for action in reply.actions:
            print(action)
    return 0


def run_list(args) -> int:
    """`list-resources` and `list-actors`: every page, one id a line (or JSON)."""
    from mandate.v1 import authorization_pb2, authorization_pb2_grpc

    stub = authorization_pb2_grpc.AuthorizationServiceStub(channel(args))
    if args.command == "list-resources":
        message, call, field = authorization_pb2.ListResourcesRequest, stub.ListResources, "resource_ids"
        request = message(actor=object_ref(args.actor, "User"), action=args.action, resource_type=args.resource_type,
                          page_size=1000, **history(args, message))
    else:
        message, call, field = authorization_pb2.ListActorsRequest, stub.ListActors, "user_ids"
        request = message(action=args.action, resource=object_ref(args.resource, "Project"), page_size=1000,
                          **history(args, message))
    ids: list[str] = []
    metadata = call_metadata(args)
    try:
        while True:
            reply = call(request, metadata=metadata)
            ids += getattr(reply, field)
            if not reply.next_page_token:
                break
            request.page_token = reply.next_page_token
    except grpc.RpcError as error:
        print(rpc_error_text(error), file=sys.stderr)
        return 2
    if args.json:
        print_json({field: ids, "revision": reply.revision, "policy_version": reply.policy_version})
    else:
        for ident in ids:
            print(ident)
    return 0


def rpc_methods() -> list:
    """Every RPC of the contract (method descriptors), from the generated modules of mandate.v1:
    a new .proto file is listed without a list to keep up to date."""
    import importlib
    import pkgutil

    import mandate.v1

    methods = []
    for module in sorted(m.name for m in pkgutil.iter_modules(mandate.v1.__path__) if m.name.endswith("_pb2")):
        descriptor = importlib.import_module(f"mandate.v1.{module}").DESCRIPTOR
        for service in descriptor.services_by_name.values():
            methods += service.methods
    return methods


def run_call_list(args) -> int:
    """`mandate call --list`: Service.Method, request and reply of every RPC."""
    rows = [{"method": f"{m.containing_service.name}.{m.name}", "request": m.input_type.name,
             "reply": m.output_type.name, "client_streaming": m.client_streaming,
             "server_streaming": m.server_streaming} for m in rpc_methods()]
    if args.json:
        print_json(rows)
        return 0
    for row in rows:
        request = ("stream " if row["client_streaming"] else "") + row["request"]
        reply = ("stream " if row["server_streaming"] else "") + row["reply"]
        print(f"{row['method']}({request}) returns {reply}")
    return 0


def run_call(args) -> int:
    """A small grpcurl: any Mandate RPC, JSON in and JSON out, token attached."""
    from google.protobuf import json_format, message_factory

    if args.list:
        return run_call_list(args)
    if not args.method:
        raise ClientError("call: name the RPC as Service.Method (mandate call --list lists them)")
    methods = {f"{m.containing_service.name}.{m.name}": m for m in rpc_methods()}
    method = methods.get(args.method)
    if method is None:
        print(f"mandate: no RPC {args.method} (mandate call --list lists them)", file=sys.stderr)
        return 2
    if method.client_streaming:
        raise ClientError(f"call: {args.method} takes a stream of requests; `mandate call` sends one")
    request_class = message_factory.GetMessageClass(method.input_type)
    reply_class = message_factory.GetMessageClass(method.output_type)
    try:
        request = json_format.Parse(args.request, request_class())
    except json_format.ParseError as error:
        print(f"mandate: the request is not a valid {method.input_type.name}: {error}", file=sys.stderr)
        return 2
    for name, value in history(args, request_class).items():
        setattr(request, name, value)
    retries = 0
    if "request_id" in method.input_type.fields_by_name and not request.request_id and not args.no_request_id:
        request.request_id = uuid.uuid4().hex  # the same key on every attempt: a retry changes nothing twice
        retries = CALL_RETRIES
    path = f"/{method.containing_service.full_name}/{method.name}"
    rpc_channel = channel(args)
    kind = rpc_channel.unary_stream if method.server_streaming else rpc_channel.unary_unary
    call = kind(path, request_serializer=request_class.SerializeToString,
                response_deserializer=reply_class.FromString)
    try:
        replies = call_with_retries(call, request, retries, call_metadata(args))
        for reply in (replies if method.server_streaming else [replies]):
            if args.field:
                print_field(reply, args.field, args.json)
            else:
                print(json_format.MessageToJson(reply, preserving_proto_field_name=True, indent=None))
    except grpc.RpcError as error:
        print(rpc_error_text(error), file=sys.stderr)
        return 1
    return 0


def print_field(reply, name: str, as_json: bool) -> None:
    from google.protobuf import json_format

    if name not in reply.DESCRIPTOR.fields_by_name:
        raise ClientError(f"--field: {reply.DESCRIPTOR.name} has no field {name}")
    value = getattr(reply, name)
    if as_json:
        print_json(json_format.MessageToDict(reply, preserving_proto_field_name=True).get(name))
    else:
        print(value if isinstance(value, str | int | bool) else list(value))


CALL_RETRIES = 3


def call_with_retries(call, request, retries: int, metadata):
    """Retry a mutation whose reply may have been lost (UNAVAILABLE): safe with its request_id."""
    for attempt in range(retries + 1):
        try:
            return call(request, metadata=metadata)
        except grpc.RpcError as error:
            if attempt == retries or error.code() != grpc.StatusCode.UNAVAILABLE:
                raise
            time.sleep(0.2 * 2 ** attempt)


EXPORT_COLUMNS = ("client", "customer_number", "currency", "status", "granted_scopes", "connected_since")


def run_export(args) -> int:
    """R21, through the same authorization as ListClients (ExportClients permission)."""
    from mandate.v1 import partner_pb2, partner_pb2_grpc

    request = partner_pb2.ListClientsRequest(actor_id=args.actor, partner_id=args.partner, page_size=1000,
                                             **history(args, partner_pb2.ListClientsRequest))
    stub = partner_pb2_grpc.PartnerServiceStub(channel(args))
    metadata = call_metadata(args)
    rows = []
    try:
        while True:
            reply = stub.ExportClients(request, metadata=metadata)
            rows += [(c.customer_name, c.customer_number, c.currency, c.status, " ".join(c.granted_scopes),
                      c.connected_at) for c in reply.connections]
            request.page_token = reply.next_page_token
            if not request.page_token:
                break
    except grpc.RpcError as error:
        print(rpc_error_text(error), file=sys.stderr)
        return 2
    # Written only once the whole list was read: a refusal leaves no file behind.
    output = open(args.output, "w", newline="") if args.output else sys.stdout
    try:
        if args.json:
            json.dump([dict(zip(EXPORT_COLUMNS, row, strict=True)) for row in rows], output, ensure_ascii=False)
            output.write("\n")
        else:
            writer = csv.writer(output)
            writer.writerow(EXPORT_COLUMNS)
            writer.writerows(rows)
    finally:
        if output is not sys.stdout:
            output.close()
    return 0


REVIEW_COLUMNS = ("user_id", "email", "resource", "actions", "path", "granted_at", "granted_revision", "granted_by")


def run_access_review(args) -> int:
    """Every page of AccessReview, through mandate.client, printed once the whole review was read.
    AccessReview reads the store as it is now (or at a past revision), so --at-least-revision is
    checked here against the revision it describes."""
    from mandate.client import MandateClient
    from mandate.v1 import authorization_pb2

    wanted = getattr(args, "at_least_revision", "")
    past = history(argparse.Namespace(**{**vars(args), "at_least_revision": ""}),
                   authorization_pb2.AccessReviewRequest)
    if wanted and (past or not wanted.isdigit()):
        raise ClientError("--at-least-revision: a revision number, without --at-revision or --as-of")
    target = connection(args)
    try:
        with MandateClient(target.address, target.token, tls=bool(target.ca or target.cert), tls_ca=target.ca,
                           tls_cert=target.cert, tls_key=target.key) as mandate:
            review = mandate.access_review(args.organization, **past)  # every page at one revision
    except grpc.RpcError as error:
        print(rpc_error_text(error), file=sys.stderr)
        return 2
    if wanted and int(review.revision or 0) < int(wanted):
        raise ClientError(f"--at-least-revision: the server is at revision {review.revision}, before {wanted}")
    rows = [{"user_id": e.user_id, "email": e.email, "resource": f"{e.resource.type}:{e.resource.id}",
             "actions": list(e.actions), "path": e.path, "granted_at": e.granted_at,
             "granted_revision": e.granted_revision, "granted_by": e.granted_by} for e in review.entries]
    revision, policy_version = review.revision, review.policy_version
    if args.json or args.format == "json":
        json.dump({"organization_id": args.organization, "revision": revision, "policy_version": policy_version,
                   "entries": rows}, sys.stdout, indent=2)
        sys.stdout.write("\n")
    elif args.format == "csv":
        writer = csv.writer(sys.stdout)
        writer.writerow(REVIEW_COLUMNS)
        writer.writerows([" ".join(row[c]) if c == "actions" else row[c] for c in REVIEW_COLUMNS] for row in rows)
    else:
        print(f"# Access review of organization {args.organization}\n")
        print(f"At revision {revision}, policy {policy_version}: {len(rows)} entries.\n")
        print("| " + " | ".join(REVIEW_COLUMNS) + " |")
        print("|" + "---|" * len(REVIEW_COLUMNS))
        for row in rows:
            cells = (" ".join(row[c]) if c == "actions" else str(row[c]) for c in REVIEW_COLUMNS)
            print("| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |")
    return 0


# -- data in and out: import, export, erase-person (AdminService; admin callers only) ---------------------------

IMPORT_BATCH = 1000  # records per ImportRequest
PROGRESS_SECONDS = 0.5


def add_data_commands(commands) -> None:
    data_import = commands.add_parser("import", help="write a world file (YAML or JSON Lines) into the store, all or "
                                                     "nothing, at one revision (admin callers)")
    data_import.add_argument("file", help="a world file (docs/world-format.md)")
    data_import.add_argument("--on-conflict", choices=("fail", "skip", "touch"), default="fail",
                             help="a record that exists already: refuse the import (fail, default), keep the "
                                  "existing one (skip), or replace it (touch)")
    add_client_flags(data_import)
    data_export = commands.add_parser("export", help="write every fact as a world file: now, at a revision or at a "
                                                     "time (admin callers)")
    when = data_export.add_mutually_exclusive_group()
    when.add_argument("--at-revision", default="", metavar="R", help="the facts at this kept revision")
    when.add_argument("--as-of", default="", metavar="T", help="the facts at this past time (RFC 3339)")
    data_export.add_argument("--format", choices=("yaml", "jsonl"),
                             help="yaml, or jsonl for big worlds (default: jsonl for a .jsonl file, else yaml)")
    data_export.add_argument("--output", "-o", help="file to write (default: standard output)")
    add_client_flags(data_export)
    erase = commands.add_parser("erase-person", help="take a person's email and name out of the store and end their "
                                                     "memberships (admin callers)")
    erase.add_argument("user_id", help="the person's user id (it stays)")
    add_client_flags(erase)


def run_world_import(args) -> int:
    from mandate.admin.worldfile import WorldError, read_records, sniff_jsonl, to_json
    from mandate.v1 import admin_pb2

    path = Path(args.file)
    try:
        with open(path, encoding="utf-8") as handle:
            jsonl = sniff_jsonl(handle.read(4096))
        if jsonl:  # sent as they are: the server reads each line
            with open(path, encoding="utf-8") as handle:
                total = sum(1 for line in handle if line.strip())
            records = jsonl_lines(path)
        else:
            records = [admin_pb2.WorldRecord(json=to_json({"kind": r.kind, **r.fields}, default=str), line=r.line)
                       for r in read_records(path)]
            total = len(records)
    except (OSError, UnicodeDecodeError, WorldError) as error:
        print(f"mandate: cannot read {path}: {error}", file=sys.stderr)
        return 2
    started = time.monotonic()
    progress = Progress(total, started)

    def requests():
        batch = []
        for record in records:
            batch.append(record)
            if len(batch) == IMPORT_BATCH:
                yield admin_pb2.ImportRequest(on_conflict=args.on_conflict, records=batch)
                progress.sent(len(batch))
                batch = []
        yield admin_pb2.ImportRequest(on_conflict=args.on_conflict, records=batch)
        progress.sent(len(batch))
        progress.done_sending()

    stub = args.admin_stub
    try:
        summary = stub.Import(requests(), metadata=call_metadata(args))
    except grpc.RpcError as error:
        progress.clear()
        print(f"{rpc_error_text(error)} ({path}; nothing was imported)", file=sys.stderr)
        return 1
    seconds = time.monotonic() - started
    counts = ", ".join(f"{kind} {count}" for kind, count in sorted(summary.counts.items()) if count)
    print(f"imported {summary.records} records at revision {summary.revision} in {seconds:.1f} s "
          f"({summary.records / max(seconds, 1e-9):,.0f} records/s){': ' + counts if counts else ''}"
          f"{f'; {summary.skipped} existed already and were skipped' if summary.skipped else ''}", file=sys.stderr)
    return 0


def jsonl_lines(path: Path):
    from mandate.v1 import admin_pb2

    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, 1):
            if line.strip():
                yield admin_pb2.WorldRecord(json=line, line=number)


class Progress:
    """Records sent, records per second and the time left, on one line of standard error."""

    def __init__(self, total: int, started: float):
        self.total, self.started, self.count, self.shown = total, started, 0, 0.0
        self.live = sys.stderr.isatty()

    def sent(self, count: int) -> None:
        self.count += count
        now = time.monotonic()
        if now - self.shown < PROGRESS_SECONDS:
            return
        self.shown = now
        rate = self.count / max(now - self.started, 1e-9)
        left = (self.total - self.count) / rate if rate else 0
        self._show(f"sent {self.count:,}/{self.total:,} records, {rate:,.0f} records/s, about {left:.0f} s left")

    def done_sending(self) -> None:
        self._show(f"sent all {self.total:,} records; the server writes them in one transaction...")

    def _show(self, text: str) -> None:
        end = "\r" if self.live else "\n"
        print(f"{text:<100}", end=end, file=sys.stderr, flush=True)

    def clear(self) -> None:
        if self.live:
            print(" " * 100, end="\r", file=sys.stderr, flush=True)


def run_world_export(args) -> int:
    import os
    import tempfile

    from mandate.admin.worldfile import YamlWriter
    from mandate.v1 import admin_pb2

    output = args.output
    fmt = args.format or ("jsonl" if output and output.endswith((".jsonl", ".ndjson")) else "yaml")
    stub = args.admin_stub
    request = admin_pb2.ExportRequest(at_revision=args.at_revision, as_of=args.as_of)
    # Written to a file beside the output, renamed into place once whole: a refusal leaves nothing.
    if output:
        directory = os.path.dirname(os.path.abspath(output))
        handle = tempfile.NamedTemporaryFile("w", encoding="utf-8", dir=directory, delete=False,
                                             prefix=".mandate-export-")
    else:
        handle = sys.stdout
    count, revision, started = 0, "", time.monotonic()
    try:
        import json

        yaml_writer = YamlWriter(handle) if fmt == "yaml" else None
        for chunk in stub.Export(request, metadata=call_metadata(args)):
            revision = chunk.revision
            if yaml_writer is None:
                handle.writelines(line + "\n" for line in chunk.records)
            else:
                for line in chunk.records:
                    yaml_writer.write(json.loads(line))
            count += len(chunk.records)
    except grpc.RpcError as error:
        print(rpc_error_text(error), file=sys.stderr)
        if output:
            handle.close()
            os.unlink(handle.name)
        return 1
    if output:
        handle.close()
        os.replace(handle.name, output)
    seconds = time.monotonic() - started
    print(f"exported {count} records at revision {revision} in {seconds:.1f} s "
          f"({count / max(seconds, 1e-9):,.0f} records/s)", file=sys.stderr)
    return 0


def run_erase_person(args) -> int:
    from mandate.v1 import admin_pb2

    stub = args.admin_stub
    request = admin_pb2.ErasePersonRequest(user_id=args.user_id, request_id=uuid.uuid4().hex)
    try:
        reply = call_with_retries(stub.ErasePerson, request, CALL_RETRIES, call_metadata(args))
    except grpc.RpcError as error:
        print(rpc_error_text(error), file=sys.stderr)
        return 1
    print(f"erased {args.user_id} at revision {reply.revision}")
    return 0


def admin_command(run, request: str):
    """The command with an AdminService stub on a channel of its own, closed when it ends. A
    history flag the request has no field for is refused."""
    def call(args) -> int:
        from mandate.v1 import admin_pb2, admin_pb2_grpc

        history(args, getattr(admin_pb2, request))
        with channel(args) as link:
            args.admin_stub = admin_pb2_grpc.AdminServiceStub(link)
            return run(args)

    return call


DATA_COMMANDS = {"import": admin_command(run_world_import, "ImportRequest"),
                 "export": admin_command(run_world_export, "ExportRequest"),
                 "erase-person": admin_command(run_erase_person, "ErasePersonRequest")}


def run_context(args) -> int:
    """`mandate context set|use|remove|list`: the saved contexts (mandate.contexts)."""
    from dataclasses import asdict

    from mandate.contexts import Context, Contexts

    contexts = Contexts.load()
    name = getattr(args, "name", "")
    if args.context_command == "set":
        if bool(args.tls_cert) != bool(args.tls_key):
            raise ClientError("--tls-cert and --tls-key go together")
        files = {}
        for key in ("token_file", "tls_ca", "tls_cert", "tls_key"):
            if getattr(args, key):
                path = Path(getattr(args, key)).expanduser().resolve()  # the same file from any directory
                if not path.is_file():
                    raise ClientError(f"--{key.replace('_', '-')}: no such file: {path}")
                files[key] = str(path)
        contexts.saved[name] = Context(address=args.address, **files)
        contexts.current = contexts.current or name
        contexts.save()
        used = "in use" if contexts.current == name else f"`mandate context use {name}` to use it"
        print(f"context {name} saved in {contexts.path} ({used})")
    elif args.context_command == "use":
        context = contexts.get(name)
        contexts.current = name
        contexts.save()
        print(f"using context {name} ({context.address})")
    elif args.context_command == "remove":
        contexts.get(name)
        del contexts.saved[name]
        contexts.current = "" if contexts.current == name else contexts.current
        contexts.save()
        print(f"context {name} removed")
    elif args.json:
        print_json({"current": contexts.current,
                    "contexts": {n: asdict(c) for n, c in sorted(contexts.saved.items())}})
    elif not contexts.saved:
        print(f"no contexts saved in {contexts.path} (mandate context set NAME --address HOST:PORT ...)",
              file=sys.stderr)
    else:
        for saved_name, context in sorted(contexts.saved.items()):
            details = "  ".join(f"{key}={value}" for key, value in asdict(context).items() if value)
            print(f"{'*' if saved_name == contexts.current else ' '} {saved_name}  {details}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
