"""A reload cannot kill the server (R24: any error while loading is a refusal, never a crash and
never a half-loaded policy): each file is read once, the version hashes exactly the bytes that
were loaded, any error refuses the reload and the old policy keeps serving, and reloads run one
at a time."""

from __future__ import annotations

import hashlib
import io
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import grpc
import pytest
from mandate.client import MandateClient
from mandate.engine import policy as policy_module
from mandate.engine.facts import MembershipFact, Subject
from mandate.engine.policy import Policy, PolicyError
from mandate.runtime.app import App
from mandate.v1 import authorization_pb2, common_pb2

from tests.support import SHARED, copy_policy, free_port, wait_until

TOKEN = "reload-safety-test-token"
# A colleague approving: denied by the shipped policy, allowed by the change below (R2).
COLLEAGUE = Subject(memberships=(MembershipFact("o", "colleague", "active", False),))
GRANT_APPROVE = ('\nhas_permission(user: User, "approve", project: Project) if\n'
                 '  has_role(user, "colleague", project.organization);\n')


@pytest.fixture
def policy_dir(tmp_path) -> Path:
    directory = tmp_path / "policies"
    directory.mkdir()
    copy_policy(directory)
    return directory


@pytest.fixture
def live(policy_dir, database_url):
    app = App(database_url, policy_dir)
    yield app
    app.close()


def refused_and_unchanged(app: App) -> None:
    serving = app.authorizer.policy
    with pytest.raises(PolicyError):
        app.reload_policy()
    assert app.authorizer.policy is serving
    assert not app.authorizer.policy.is_allowed(COLLEAGUE, "Project", "approve")


def test_r24_a_dangling_symlink_refuses_the_reload(live, policy_dir):
    (policy_dir / "extra.polar").symlink_to(policy_dir / "gone.polar")
    refused_and_unchanged(live)


def test_r24_an_unreadable_file_refuses_the_reload(live, policy_dir):
    (policy_dir / "extra.polar").mkdir()  # open() fails on it, even for root
    refused_and_unchanged(live)


def test_r24_a_file_that_is_not_utf8_refuses_the_reload(live, policy_dir):
    (policy_dir / "extra.polar").write_bytes(b"# \xff\xfe not text\n")
    refused_and_unchanged(live)


def test_r24_the_version_is_the_hash_of_the_bytes_that_were_loaded(policy_dir, monkeypatch):
    """The file is replaced right after it was read: the policy is the text that was read, its
    version hashes that text, and the replacement is not half in."""
    path = policy_dir / SHARED
    original = path.read_bytes()
    texts = {other.name: other.read_bytes() for other in sorted(policy_dir.glob("*.polar"))}
    real_open = open

    def open_then_replace(file, mode="r", *args, **kwargs):
        with real_open(file, mode, *args, **kwargs) as handle:
            data = handle.read()
        if Path(file) == path:
            path.write_bytes(original + GRANT_APPROVE.encode())  # replaced while being loaded
        return io.BytesIO(data)

    monkeypatch.setattr(policy_module, "open", open_then_replace, raising=False)
    loaded = Policy(policy_dir)
    monkeypatch.undo()
    expected = hashlib.sha256(b"".join(name.encode() + b"\0" + text + b"\0" for name, text in texts.items()))
    expected = expected.hexdigest()[:12]
    assert loaded.version == expected
    assert not loaded.is_allowed(COLLEAGUE, "Project", "approve")  # the replacement is not in
    replaced = Policy(policy_dir)
    assert replaced.version != loaded.version
    assert replaced.is_allowed(COLLEAGUE, "Project", "approve")


def test_r24_a_policy_loaded_earlier_is_served_only_while_its_files_are_unchanged(policy_dir):
    """A server process forked from the policy its parent loaded (`--processes`) serves it only
    while its files hold what was loaded: changed or gone, the process loads them anew."""
    loaded = Policy(policy_dir)
    assert loaded.unchanged()
    path = policy_dir / SHARED
    original = path.read_bytes()
    path.write_bytes(original + GRANT_APPROVE.encode())
    assert not loaded.unchanged()
    path.write_bytes(original)
    assert loaded.unchanged()
    path.unlink()
    assert not loaded.unchanged()


class WatchedLock:
    """The app's reload lock, telling the test when a second reload waits for it."""

    def __init__(self):
        self.lock = threading.RLock()
        self.attempts = 0
        self.second_waits = threading.Event()

    def __enter__(self):
        self.attempts += 1
        if self.attempts == 2:
            self.second_waits.set()
        self.lock.acquire()

    def __exit__(self, *exc):
        self.lock.release()


def test_r24_reloads_run_one_at_a_time(live, policy_dir, monkeypatch):
    lock = WatchedLock()
    live._reloading = lock
    first_inside, release = threading.Event(), threading.Event()
    inside, most = [0], [0]
    real_policy = Policy

    def slow_policy(directory):
        inside[0] += 1
        most[0] = max(most[0], inside[0])
        first_inside.set()
        assert release.wait(30)
        try:
            return real_policy(directory)
        finally:
            inside[0] -= 1

    monkeypatch.setattr("mandate.runtime.app.Policy", slow_policy)
    threads = [threading.Thread(target=live.reload_policy) for _ in range(2)]
    threads[0].start()
    assert first_inside.wait(30)
    threads[1].start()
    assert lock.second_waits.wait(30)
    assert inside[0] == 1  # the second reload waits for the lock, outside the load
    release.set()
    for thread in threads:
        thread.join(30)
    assert most[0] == 1


# -- through a running server -------------------------------------------------------------------


def version(client) -> str:
    try:
        return client.authorization.Check(authorization_pb2.CheckRequest(
            actor=common_pb2.ObjectRef(type="User", id="nobody"), action="read",
            resource=common_pb2.ObjectRef(type="Project", id="nothing")), timeout=2).policy_version
    except grpc.RpcError:
        return ""


def test_r24_sighup_and_the_watcher_survive_a_dangling_symlink(tmp_path, policy_dir):
    port = free_port()
    env = {**os.environ, "MANDATE_API_TOKENS": TOKEN, "MANDATE_POLICY_DIR": str(policy_dir),
           "MANDATE_DATABASE_URL": f"sqlite:///{tmp_path}/mandate.db"}
    log_path = tmp_path / "server.log"
    with open(log_path, "w") as log:
        process = subprocess.Popen([sys.executable, "-m", "mandate.cli", "serve", "--listen", f"127.0.0.1:{port}",
                                    "--watch-policy"], env=env, cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT)
    client = MandateClient(f"127.0.0.1:{port}", TOKEN)
    try:
        assert wait_until(lambda: version(client)), log_path.read_text()
        first = version(client)
        (policy_dir / "extra.polar").symlink_to(policy_dir / "gone.polar")
        # The watcher sees the dangling link as a change, and the reload it starts is refused ...
        assert wait_until(lambda: log_path.read_text().count("reload refused") >= 1), log_path.read_text()
        # ... and so is the one SIGHUP starts.
        process.send_signal(signal.SIGHUP)
        assert wait_until(lambda: log_path.read_text().count("reload refused") >= 2), log_path.read_text()
        assert process.poll() is None, "the server died"
        assert version(client) == first  # the old policy keeps serving
        # The watcher is still alive: a valid change after the broken one is picked up.
        (policy_dir / "extra.polar").unlink()
        (policy_dir / SHARED).write_text((policy_dir / SHARED).read_text() + "\n# reviewed\n")
        assert wait_until(lambda: version(client) not in ("", first)), log_path.read_text()
        assert process.poll() is None
    finally:
        client.close()
        process.terminate()
        process.wait(timeout=30)
