"""Small helpers shared by the test modules."""

from __future__ import annotations

import shutil
import socket
import time
from pathlib import Path

import grpc
from google.rpc import error_details_pb2
from grpc_status import rpc_status

POLICY_DIR = Path(__file__).resolve().parent.parent / "policies"
# The policy file every other one shares (the contract, the actor, has_role): where a test appends
# a change that only has to change the policy's version.
SHARED = "shared.polar"


def copy_policy(directory: Path) -> Path:
    """A copy of the shipped policy's .polar files in `directory` (created)."""
    directory.mkdir(parents=True, exist_ok=True)
    for path in POLICY_DIR.glob("*.polar"):
        shutil.copy(path, directory)
    return directory


def policy_file(directory: Path, text: str) -> Path:
    """The one .polar file of `directory` that holds `text`, once."""
    holding = [path for path in sorted(Path(directory).glob("*.polar")) if text in path.read_text()]
    assert len(holding) == 1 and holding[0].read_text().count(text) == 1, (text, holding)
    return holding[0]


def edit_policy(directory: Path, old: str, new: str) -> Path:
    """Replace `old`, found once in one .polar file of `directory`, by `new`; the file edited."""
    path = policy_file(directory, old)
    path.write_text(path.read_text().replace(old, new))
    return path


def error_info(error: grpc.RpcError) -> error_details_pb2.ErrorInfo:
    """The google.rpc.ErrorInfo attached to a failed call."""
    status = rpc_status.from_call(error)
    assert status is not None, f"no google.rpc.Status on {error.code()}: {error.details()}"
    for detail in status.details:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            return info
    raise AssertionError(f"no ErrorInfo on {error.code()}: {error.details()}")


def reason_of(error: grpc.RpcError) -> str:
    return error_info(error).reason


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until(predicate, seconds: float = 20.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.1)
    return False


# A type with both relations (issue 20): top folders belong to an organization, others to a folder.
FOLDERS_POLAR = '''
# R2: folders nest; colleagues read every folder of the organization.
resource Folder {
  permissions = ["read"];
  roles = ["viewer"];
  relations = { organization: Organization, parent: Folder };
  "read" if "colleague" on "organization";
  "read" if "viewer";
  "viewer" if "viewer" on "parent";
}
# R2: a viewer of a folder views what it holds.
has_role(user: User, role: String, folder: Folder) if
  grant in user.resource_roles and
  grant.resource = folder and
  grant.role = role;
# R2: a top folder belongs to its organization.
has_relation(org: Organization, "organization", folder: Folder) if
  org = folder.organization;
# R2: a folder sits in its parent.
has_relation(parent: Folder, "parent", folder: Folder) if
  parent = folder.parent;
'''
