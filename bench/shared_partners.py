"""The shape an attacker picks (issue 9, hole "decision cost grows with the square of shared
partners"): one user in N partner organizations of one client. Prints the cost of a Check and
ListActions about a project of the client, first (the policy decides) and again (the memo
answers), and of Explain of an allow and of a deny, for each N; targets at N=200: a Check under
5 ms, Explain under 50 ms, allow and deny alike.

    .venv/bin/python -m bench.shared_partners [--sizes 10,50,100,200]

In-process, through the application the RPCs call (the transport adds the same to any call)."""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from mandate.engine.explain import explain
from mandate.runtime.app import App
from mandate.runtime.config import packaged_policy_dir
from mandate.store.migrate import upgrade

TARGET_MS = 5.0
EXPLAIN_TARGET_MS = 50.0  # allow and deny alike, at 200 shared partners


def build(app: App, partners: int) -> tuple[str, str]:
    """A client with a project, and one user who is a tagged partner employee in each of
    `partners` partner organizations connected to the client (assigned and approved by the
    first: R19 allows one partner record per client and person)."""
    directory, memberships, deals = app.directory, app.memberships, app.partners
    client_owner, _ = directory.register_user("client-owner@example.com", "Client Owner")
    client = directory.create_organization(client_owner.id, "Client", "EUR", 0).id
    directory.put_resource(client_owner.id, "Project", "shared-site", client)
    user, _ = directory.register_user("shared@example.com", "Shared")
    for n in range(partners):
        owner, _ = directory.register_user(f"partner-owner-{n}@example.com", f"Partner Owner {n}")
        partner = directory.create_organization(owner.id, f"Partner {n}", "EUR", 0).id
        memberships.invite_member(owner.id, partner, "shared@example.com", "colleague")
        memberships.tag_partner_employee(owner.id, partner, user.id, True)
        link = deals.create_invite_link(owner.id, partner, "Client", "", "EUR", ["read", "edit"])
        deals.accept_client_invitation(client_owner.id, "", link.token, client, ["read", "edit"], "client")
        if n == 0:  # R19: one partner record per client and person
            deals.assign_client(owner.id, partner, client, user.id)
            deals.approve_partner_employee(client_owner.id, client, partner, user.id)
    return user.id, client


def timed(function, *args) -> tuple[float, object]:
    started = time.perf_counter()
    answer = function(*args)
    return (time.perf_counter() - started) * 1000, answer


def measure(partners: int, directory: Path) -> dict:
    url = f"sqlite:///{directory / f'shared-{partners}.db'}"
    upgrade(url)
    app = App(url, packaged_policy_dir())
    try:
        user, client = build(app, partners)
        authorizer = app.authorizer
        # The policy has answered before (as in a running server): what is measured is the
        # shape, not oso's first query.
        authorizer.check("User", user, "read", "Organization", client)
        figures = {"partners": partners}
        for run in ("first", "again"):
            figures[f"check_{run}_ms"], allowed = timed(authorizer.check, "User", user, "edit", "Project",
                                                        "shared-site")
            figures[f"list_actions_{run}_ms"], _ = timed(authorizer.list_actions, "User", user, "Project",
                                                         "shared-site")
        # Explain's rule variants are loaded once per policy (as in a running server), not measured.
        explain(authorizer, "User", app.directory.get_organization(client).owner_id, "edit", "Project", "shared-site")
        # An allow, and a deny ("publish" was granted to no partner); first (the policy decides
        # each distinct path and change), and again (its answers remembered).
        for run in ("first", "again"):
            figures[f"explain_allow_{run}_ms"], (explained, _) = timed(explain, authorizer, "User", user, "edit",
                                                                       "Project", "shared-site")
            figures[f"explain_deny_{run}_ms"], (denied, _) = timed(explain, authorizer, "User", user, "publish",
                                                                   "Project", "shared-site")
        figures["allowed"] = bool(allowed)
        figures["explained"] = (bool(explained), bool(denied))
        return figures
    finally:
        app.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10,50,100,200", help="numbers of shared partners")
    args = parser.parse_args(argv)
    rows = []
    with tempfile.TemporaryDirectory(prefix="mandate-bench-") as directory:
        for partners in (int(n) for n in args.sizes.split(",")):
            rows.append(measure(partners, Path(directory)))
            row = rows[-1]
            met = "met" if row["check_first_ms"] < TARGET_MS else "MISSED"
            explain_ms = max(row["explain_allow_first_ms"], row["explain_deny_first_ms"])
            explained = "met" if explain_ms < EXPLAIN_TARGET_MS else "MISSED"
            print(f"N={partners:4d}: Check {row['check_first_ms']:8.2f} ms first, {row['check_again_ms']:6.2f} ms "
                  f"again ({met}: under {TARGET_MS:g} ms); ListActions {row['list_actions_first_ms']:8.2f} ms; "
                  f"Explain allow {row['explain_allow_first_ms']:.2f} ms first, {row['explain_allow_again_ms']:.2f} "
                  f"again, deny {row['explain_deny_first_ms']:.2f} ms first, {row['explain_deny_again_ms']:.2f} again "
                  f"({explained}: under {EXPLAIN_TARGET_MS:g} ms); allowed={row['allowed']}", flush=True)
    results = Path("bench/results")
    results.mkdir(parents=True, exist_ok=True)
    (results / "shared_partners.json").write_text(json.dumps(rows, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
