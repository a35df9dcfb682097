"""The cost of a question about the past (issue 10): on a bench dataset, after some changes,
the time to build the facts of a past revision (the first question about it), and of a Check
at that revision once built, next to a Check about the present.

    .venv/bin/python -m bench.history [--dataset small|large] [--changes 200]

In-process, through the application the RPCs call (the transport adds the same to any call)."""

from __future__ import annotations

import argparse
import json
import time

from mandate.runtime.app import App
from mandate.runtime.config import packaged_policy_dir

from bench import dataset
from bench.run import sqlite_copy


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench.history")
    parser.add_argument("--dataset", choices=sorted(dataset.SHAPES), default="small")
    parser.add_argument("--changes", type=int, default=200, help="pauses and resumes made after the load")
    args = parser.parse_args(argv)
    path, meta = dataset.ensure(args.dataset)
    app = App(sqlite_copy(path, args.dataset, "history"), packaged_policy_dir())
    try:
        samples = meta["samples"]["checks"][:200]
        start = app.store.current_revision()
        fresh = meta["samples"]["freshness"]
        for n in range(args.changes):  # an owner pauses and resumes a member: versions pile up
            change = app.memberships.pause_member if n % 2 == 0 else app.memberships.resume_member
            change(fresh["actor_id"], fresh["organization_id"], fresh["user_id"])
        past = app.store.current_revision()

        def checks(authorizer) -> float:
            began = time.perf_counter()
            for actor, action, project, *_ in samples:
                authorizer.check("User", actor, action, "Project", project)
            return (time.perf_counter() - began) / len(samples)

        checks(app.authorizer)  # the policy's first decisions, then the memo as a server has it warm
        live = checks(app.authorizer)
        began = time.perf_counter()
        then = app.history.authorizer_at(start, None)
        build = time.perf_counter() - began
        checks(then)
        warm = checks(then)
        print(json.dumps({"dataset": args.dataset, "rows": meta["rows"], "revision": past,
                          "past_facts_build_s": round(build, 3), "past_check_us": round(warm * 1e6, 1),
                          "live_check_us": round(live * 1e6, 1)}, indent=2))
    finally:
        app.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
