"""Check on a resource four levels deep against a top-level one, through gRPC (issue 20).

    .venv/bin/python -m bench.nested

Serves the shipped policy plus a Folder type that nests (`parent: Folder`) from a throwaway
store, registers a chain of four folders, and measures the p50 of `Check` on the top folder and
on the deepest one from one client. The target: the deep one within 1.2x of the top-level one.
"""

from __future__ import annotations

import shutil
import statistics
import tempfile
import time
from pathlib import Path

from mandate.testing import RunningMandate
from mandate.v1 import authorization_pb2, common_pb2

ROOT = Path(__file__).resolve().parent.parent
FOLDERS = '''
# R2: folders nest; colleagues read every folder of the organization.
resource Folder {
  permissions = ["read"];
  relations = { organization: Organization, parent: Folder };
  "read" if "colleague" on "organization";
}
# R2: a top folder belongs to its organization.
has_relation(org: Organization, "organization", folder: Folder) if org = folder.organization;
# R2: a folder sits in its parent.
has_relation(parent: Folder, "parent", folder: Folder) if parent = folder.parent;
'''
WORLD = {"users": ["alice", "bob"], "organizations": {"acme": {"owner": "alice"}},
         "members": [{"organization": "acme", "user": "bob", "role": "colleague"}],
         "resources": [{"type": "Folder", "id": "f0", "organization": "acme"},
                       {"type": "Folder", "id": "f1", "parent": "Folder:f0"},
                       {"type": "Folder", "id": "f2", "parent": "Folder:f1"},
                       {"type": "Folder", "id": "f3", "parent": "Folder:f2"}]}


def main(rounds: int = 5, calls: int = 300) -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix="mandate-bench-") as scratch:
        policy_dir = Path(scratch)
        for path in (ROOT / "policies").glob("*.polar"):
            shutil.copy(path, policy_dir)
        (policy_dir / "folders.polar").write_text(FOLDERS)
        with RunningMandate(WORLD, policy_dir) as running:
            stub = running.client.authorization
            seconds: dict[str, list[float]] = {"f0": [], "f3": []}
            for _ in range(rounds):  # interleaved, so load on the machine hits both alike
                for folder in seconds:
                    request = authorization_pb2.CheckRequest(
                        actor=common_pb2.ObjectRef(type="User", id="bob"), action="read",
                        resource=common_pb2.ObjectRef(type="Folder", id=folder))
                    for _ in range(calls):
                        started = time.perf_counter()
                        assert stub.Check(request).allowed
                        seconds[folder].append(time.perf_counter() - started)
    top, deep = (statistics.median(seconds[f]) * 1e6 for f in ("f0", "f3"))
    print(f"Check p50: top-level {top:.0f} us, 4 levels deep {deep:.0f} us, ratio {deep / top:.2f} (target 1.2)")
    return {"top_us": top, "deep_us": deep, "ratio": deep / top}


if __name__ == "__main__":
    main()
