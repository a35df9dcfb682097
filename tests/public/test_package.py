"""Mandate as another team gets it: a wheel built from a clean copy of the tree, installed into
a fresh virtualenv that never saw the checkout (no editable install, no `make`). From there:
the CLI serves the packaged policy, an outside pytest project uses the plugin with a world
file, `mandate serve --ephemeral --world` answers a client that knows only reflection, and a
test that does not use Mandate runs in the same environment, even when the install is broken.
The wheel declares ranges, not pins: installed with the lowest version of every range (grpcio
and protobuf below the pins of constraints.txt), the outside project passes too.

The wheel and the virtualenv are built once for the module (`make test-package` runs only these).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import tomllib
import zipfile
from importlib.metadata import version
from pathlib import Path
from xml.etree import ElementTree

import pytest
from mandate.engine.policy import Policy
from packaging.requirements import Requirement
from packaging.version import Version

from tests.support import copy_policy, free_port, wait_until

ROOT = Path(__file__).resolve().parents[2]
OUTSIDE_PROJECT = ROOT / "examples" / "outside-project"
WORLD = ROOT / "examples" / "world.yaml"
TOKEN = "outside-team-token-0123456789"
MINUTES = 60


def run(command: list, **kwargs) -> subprocess.CompletedProcess:
    result = subprocess.run([str(part) for part in command], capture_output=True, text=True,
                            timeout=kwargs.pop("timeout", 10 * MINUTES), **kwargs)
    assert result.returncode == 0 or kwargs.get("check") is False, (
        f"{command} exited {result.returncode}\n{result.stdout}\n{result.stderr}")
    return result


def clean_copy(target: Path) -> Path:
    """The tree as a fresh clone would have it: tracked and new files, nothing ignored (no .venv,
    no generated stubs, no build/)."""
    listed = subprocess.run(["git", "-C", str(ROOT), "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                            capture_output=True, timeout=60)
    if listed.returncode != 0:  # not a git checkout: copy it all but what a build or a run leaves
        shutil.copytree(ROOT, target, ignore=shutil.ignore_patterns(
            ".git", ".venv", "var", "build", "*.egg-info", "__pycache__", "*_pb2*.py*", ".generated"))
        return target
    for name in filter(None, listed.stdout.decode().split("\0")):
        source = ROOT / name
        if source.is_file():  # listed but deleted in the work tree: gone from the copy too
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target / name)
    return target


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """(the wheel, the fresh virtualenv's bin directory, an environment that runs from it)."""
    work = tmp_path_factory.mktemp("package")
    source = clean_copy(work / "source")
    run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--wheel-dir", work / "dist", source])
    (wheel,) = (work / "dist").glob("mandate-*.whl")
    venv = work / "venv"
    run([sys.executable, "-m", "venv", "--without-pip", venv])
    bin_dir = venv / "bin"
    # The same pip (and its cache) installs into the new environment; the same pytest as ours.
    run([sys.executable, "-m", "pip", "--python", bin_dir / "python", "install", "--quiet", wheel,
         f"pytest=={version('pytest')}"])
    env = {name: value for name, value in os.environ.items()
           if not name.startswith(("MANDATE_", "PYTHON", "PYTEST", "VIRTUAL_ENV"))}
    env["PATH"] = f"{bin_dir}{os.pathsep}{env.get('PATH', '')}"
    return wheel, bin_dir, env


def site_packages(bin_dir: Path) -> Path:
    return bin_dir.parent / Path(sysconfig.get_path("purelib")).relative_to(sysconfig.get_path("data"))


def test_wheel_holds_stubs_policy_migrations_and_protos(installed):
    wheel, _, _ = installed
    names = set(zipfile.ZipFile(wheel).namelist())
    protos = sorted(p.relative_to(ROOT / "protos") for p in (ROOT / "protos").rglob("*.proto"))
    assert protos and {f"mandate/protos/{p}" for p in protos} <= names
    for proto in protos:  # every .proto has its generated message and service modules
        stem = f"mandate/{proto.parent.relative_to('mandate')}/{proto.stem}"
        assert {f"{stem}_pb2.py", f"{stem}_pb2.pyi", f"{stem}_pb2_grpc.py"} <= names, proto
    policy_files = sorted(p.relative_to(ROOT) for p in (ROOT / "policies").rglob("*") if p.is_file())
    assert {f"mandate/{p}" for p in policy_files} <= names
    migrations = sorted(p.relative_to(ROOT / "server") for p in (ROOT / "server" / "mandate" / "migrations").rglob("*")
                        if p.is_file() and "__pycache__" not in p.parts)
    assert {str(p) for p in migrations} <= names
    assert "mandate/py.typed" in names  # the client's types reach the other team's type checker


def test_wheel_stubs_are_the_ones_make_generates(installed):
    """The build hook and `make` (the editable install) run the same protoc: same files."""
    wheel, _, _ = installed
    with zipfile.ZipFile(wheel) as archive:
        built = {name: archive.read(name) for name in archive.namelist() if "_pb2" in name}
    ours = {f"mandate/v1/{p.name}": p.read_bytes() for p in (ROOT / "server" / "mandate" / "v1").glob("*_pb2*.py*")}
    assert built == ours


def test_installed_cli_serves_the_packaged_policy(installed, tmp_path):
    _, bin_dir, env = installed
    path = Path(run([bin_dir / "mandate", "policy", "path"], cwd=tmp_path, env=env).stdout.strip())
    assert path == site_packages(bin_dir) / "mandate" / "policies"
    for polar in (ROOT / "policies").glob("*.polar"):  # every file of the split policy
        assert (path / polar.name).read_text() == polar.read_text()
    # The list of equivalent mutants goes with the policy, for `mandate policy mutate` (issue 18 item 19).
    assert (path / "equivalent-mutants.yaml").read_text() == (ROOT / "policies" / "equivalent-mutants.yaml").read_text()
    expected = f"mandate {version('mandate')}, policy {Policy(ROOT / 'policies').version} ({path})"
    assert run([bin_dir / "mandate", "--version"], cwd=tmp_path, env=env).stdout.strip() == expected
    tested = run([bin_dir / "mandate", "policy", "test"], cwd=tmp_path, env=env)  # the tests packed beside it
    assert " passed, 0 failed" in tested.stdout


def outside_project(tmp_path: Path) -> Path:
    project = shutil.copytree(OUTSIDE_PROJECT, tmp_path / "their-service")
    shutil.copy(WORLD, project / "world.yaml")
    return project


def pytest_outcomes(bin_dir: Path, project: Path, env: dict) -> tuple[dict[str, str], str]:
    """Run pytest in the outside project; each test's outcome by name, and the output."""
    result = run([bin_dir / "python", "-m", "pytest", "-p", "no:cacheprovider", "--junitxml", project / "report.xml"],
                 cwd=project, env=env, check=False)
    outcomes = {}
    for case in ElementTree.parse(project / "report.xml").iter("testcase"):
        failed = [child.tag for child in case if child.tag in ("failure", "error", "skipped")]
        outcomes[case.get("name")] = failed[0] if failed else "passed"
    return outcomes, result.stdout + result.stderr


def test_outside_project_uses_the_plugin_with_a_world_file(installed, tmp_path):
    _, bin_dir, env = installed
    outcomes, output = pytest_outcomes(bin_dir, outside_project(tmp_path), env)
    assert outcomes == {"test_assigned_partner_employee_edits_until_the_client_revokes": "passed",
                        "test_lists_and_explains": "passed",
                        "test_that_never_touches_mandate": "passed"}, output


def test_broken_install_fails_only_the_tests_that_use_mandate(installed, tmp_path):
    """The failure of the issue: a mandate package without its stubs. The plugin still loads,
    the Mandate tests fail saying why, and the test that does not use Mandate passes."""
    _, bin_dir, env = installed
    broken = shutil.copytree(site_packages(bin_dir) / "mandate", tmp_path / "broken" / "mandate")
    for stub in (broken / "v1").glob("*_pb2_grpc.py"):
        stub.unlink()
    outcomes, output = pytest_outcomes(bin_dir, outside_project(tmp_path), {**env, "PYTHONPATH": str(broken.parent)})
    assert outcomes == {"test_assigned_partner_employee_edits_until_the_client_revokes": "error",
                        "test_lists_and_explains": "error",
                        "test_that_never_touches_mandate": "passed"}, output
    assert "mandate: the test server could not start: ImportError" in output
    assert "pytest11" not in output


def test_ephemeral_server_answers_a_reflection_client(installed, tmp_path):
    _, bin_dir, env = installed
    port = free_port()
    server = subprocess.Popen([bin_dir / "mandate", "serve", "--ephemeral", "--world", WORLD,
                               "--listen", f"127.0.0.1:{port}"], cwd=tmp_path, env={**env, "MANDATE_API_TOKENS": TOKEN},
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        def ask(user: str) -> dict:
            request = {"actor": {"type": "User", "id": user}, "action": "read",
                       "resource": {"type": "Project", "id": "shop-site"}}
            result = run([bin_dir / "python", ROOT / "tests" / "reflection_call.py", f"127.0.0.1:{port}", TOKEN,
                          "mandate.v1.AuthorizationService/Check", json.dumps(request)], cwd=tmp_path, env=env)
            return json.loads(result.stdout)

        assert wait_until(lambda: server.poll() is not None or listening(port), 120), "the server did not start"
        assert server.poll() is None, server.stdout.read().decode()
        emma = ask("emma")
        assert {"mandate.v1.AuthorizationService", "grpc.health.v1.Health"} <= set(emma["services"])
        assert emma["reply"]["allowed"] is True
        assert emma["reply"]["policyVersion"] == Policy(ROOT / "policies").version  # the packaged policy decided
        assert ask("nora")["reply"]["allowed"] is False
    finally:
        server.terminate()
        server.wait(timeout=30)
    assert not (tmp_path / "var").exists()


def listening(port: int) -> bool:
    import socket

    with socket.socket() as sock:
        sock.settimeout(1)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def mandate_in_checkout(*args: str, cwd: Path, **env: str) -> subprocess.CompletedProcess:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("MANDATE_")}
    return subprocess.run([sys.executable, "-m", "mandate.cli", *args], cwd=cwd, env={**environment, **env},
                          capture_output=True, text=True, timeout=60)


def test_in_a_checkout_the_default_policy_is_the_repositorys(tmp_path):
    """An editable install (`make`) serves `policies/` of the checkout, from any directory."""
    path = mandate_in_checkout("policy", "path", cwd=tmp_path)
    assert (path.returncode, path.stdout.strip()) == (0, str(ROOT / "policies")), path.stderr
    shown = mandate_in_checkout("--version", cwd=tmp_path)
    assert shown.stdout.strip() == (f"mandate {version('mandate')}, policy {Policy(ROOT / 'policies').version} "
                                    f"({ROOT / 'policies'})"), shown.stderr


def test_the_environment_and_the_flag_choose_another_policy(tmp_path):
    other = tmp_path / "other"
    other.mkdir()
    copy_policy(other)
    (other / "shared.polar").write_text((other / "shared.polar").read_text() + "\n# a copy\n")
    by_environment = mandate_in_checkout("policy", "path", cwd=tmp_path, MANDATE_POLICY_DIR=str(other))
    by_flag = mandate_in_checkout("policy", "path", "--policy-dir", str(other), cwd=ROOT)
    assert by_environment.stdout.strip() == by_flag.stdout.strip() == str(other)
    shown = mandate_in_checkout("--version", cwd=tmp_path, MANDATE_POLICY_DIR=str(other)).stdout
    assert f"policy {Policy(other).version} ({other})" in shown
    assert Policy(other).version != Policy(ROOT / "policies").version


def test_a_missing_policy_is_reported_not_guessed(tmp_path):
    missing = tmp_path / "nowhere"
    path = mandate_in_checkout("policy", "path", cwd=tmp_path, MANDATE_POLICY_DIR=str(missing))
    assert (path.returncode, path.stderr.strip()) == (1, f"mandate: no policy directory at {missing}")
    shown = mandate_in_checkout("--version", cwd=tmp_path, MANDATE_POLICY_DIR=str(missing))
    assert shown.returncode == 1
    assert shown.stdout.startswith(f"mandate {version('mandate')}")
    assert shown.stderr.strip() == f"mandate: no policy version: no .polar files in {missing}"


# -- a wheel that fits beside other packages (issue 23 item 3) ------------------------------------

PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


def floor(requirement: Requirement) -> str:
    (version,) = [spec.version for spec in requirement.specifier if spec.operator == ">="]
    return version


def pinned() -> dict[str, str]:
    """constraints.txt: the exact versions make and CI install."""
    lines = (line.split("#")[0].strip() for line in (ROOT / "constraints.txt").read_text().splitlines())
    pins = [Requirement(line) for line in lines if line]
    assert all(str(pin.specifier).startswith("==") for pin in pins)
    return {pin.name.lower().replace("_", "-"): str(pin.specifier)[2:] for pin in pins}


def test_dependencies_are_ranges_whose_tested_versions_are_pinned_in_constraints():
    """Issue 23 item 3: every dependency a range with a floor, never a pin; each pinned in
    constraints.txt at a version inside its range."""
    pins = pinned()
    for line in PYPROJECT["project"]["dependencies"]:
        requirement = Requirement(line)
        assert floor(requirement) and not any(s.operator in ("==", "===") for s in requirement.specifier), line
        tested = pins.get(requirement.name.lower().replace("_", "-"))
        assert tested and requirement.specifier.contains(tested), f"{line}: constraints.txt pins {tested}"
    for line in PYPROJECT["project"]["optional-dependencies"]["dev"]:
        requirement = Requirement(line)
        assert pins.get(requirement.name.lower()) and requirement.specifier.contains(pins[requirement.name.lower()])


def test_the_stubs_are_generated_for_the_floors_of_grpcio_and_protobuf():
    """Issue 23 item 3: stubs refuse an older runtime than the tools that wrote them, so the
    build's grpcio-tools writes for the lowest grpcio and protobuf the ranges allow."""
    requirements = {Requirement(line).name: Requirement(line) for line in PYPROJECT["project"]["dependencies"]}
    tools = {Requirement(line).name: Requirement(line) for line in PYPROJECT["build-system"]["requires"]}
    dev = {Requirement(line).name: Requirement(line) for line in PYPROJECT["project"]["optional-dependencies"]["dev"]}
    assert str(tools["grpcio-tools"].specifier) == str(dev["grpcio-tools"].specifier)  # make proto == the wheel's
    stubs = ROOT / "server" / "mandate" / "v1"
    grpc_version = re.search(r"GRPC_GENERATED_VERSION = '([\d.]+)'", (stubs / "events_pb2_grpc.py").read_text())[1]
    protobuf_version = re.search(r"Protobuf Python Version: ([\d.]+)", (stubs / "common_pb2.py").read_text())[1]
    for name in ("grpcio", "grpcio-health-checking", "grpcio-reflection", "grpcio-status"):
        assert Version(floor(requirements[name])) == Version(grpc_version), name
    assert Version(floor(requirements["protobuf"])) == Version(protobuf_version)


def test_the_protos_name_their_packages_in_other_languages():
    """Issue 23 item 3: go_package, java_package and csharp_namespace, compiled into the descriptors."""
    import importlib

    for proto in sorted((ROOT / "protos" / "mandate" / "v1").glob("*.proto")):
        options = importlib.import_module(f"mandate.v1.{proto.stem}_pb2").DESCRIPTOR.GetOptions()
        assert options.go_package.endswith("/mandate/v1;mandatev1"), proto.name
        assert (options.java_package, options.java_multiple_files, options.csharp_namespace) == (
            "com.example.mandate.v1", True, "Mandate.V1"), proto.name


def test_the_wheel_works_with_the_lowest_versions_its_ranges_allow(installed, tmp_path):
    """Issue 23 item 3: the wheel installed beside the lowest version of every range (grpcio and
    protobuf a minor version below the pins of constraints.txt) resolves, imports and passes
    the outside project."""
    wheel, _, env = installed
    with zipfile.ZipFile(wheel) as archive:
        (metadata,) = [n for n in archive.namelist() if n.endswith(".dist-info/METADATA")]
        requires = [line.split(":", 1)[1].strip() for line in archive.read(metadata).decode().splitlines()
                    if line.startswith("Requires-Dist:")]
    lowest = {Requirement(line).name: floor(Requirement(line)) for line in requires
              if "extra ==" not in line}
    pins = pinned()
    assert Version(lowest["grpcio"]) < Version(pins["grpcio"]) and Version(lowest["protobuf"]) < Version(
        pins["protobuf"])
    (tmp_path / "lowest.txt").write_text("".join(f"{name}=={version}\n" for name, version in lowest.items()))
    venv = tmp_path / "lowest-venv"
    run([sys.executable, "-m", "venv", "--without-pip", venv])
    bin_dir = venv / "bin"
    run([sys.executable, "-m", "pip", "--python", bin_dir / "python", "install", "--quiet", "-c",
         tmp_path / "lowest.txt", wheel, f"pytest=={version('pytest')}"])
    shown = run([bin_dir / "python", "-c", "import json, importlib.metadata as m; "
                 f"print(json.dumps({{n: m.version(n) for n in {sorted(lowest)!r}}}))"], env=env)
    assert {name: Version(v) for name, v in json.loads(shown.stdout).items()} == {
        name: Version(v) for name, v in lowest.items()}
    env = {**env, "PATH": f"{bin_dir}{os.pathsep}{env['PATH']}"}
    outcomes, output = pytest_outcomes(bin_dir, outside_project(tmp_path), env)
    assert outcomes == {"test_assigned_partner_employee_edits_until_the_client_revokes": "passed",
                        "test_lists_and_explains": "passed",
                        "test_that_never_touches_mandate": "passed"}, output
