"""The build hook: a wheel carries everything the service needs at run time.

`protos/` and `policies/` stay at the top of the repository, where reviewers read them; the
build copies them into the package (`mandate/protos`, `mandate/policies`) and generates the
gRPC stubs (`mandate/v1/*_pb2*.py`) from the .proto files with grpcio-tools, pinned in
`build-system.requires`. Nothing generated is committed, so branches that change the .proto
files never conflict over stubs.

An editable install (`pip install -e .`, as `make` does) generates the stubs into
`server/mandate/v1/` with the same command as `make proto`, and serves the checkout's own
`policies/` (see `mandate.runtime.config.packaged_policy_dir`).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

ROOT = Path(__file__).resolve().parent


def generate_stubs(out_dir: Path) -> None:
    """The same protoc call as the Makefile's, so a wheel and `make` produce the same files."""
    protos = sorted(str(path.relative_to(ROOT)) for path in (ROOT / "protos" / "mandate" / "v1").glob("*.proto"))
    if not protos:
        raise SystemExit("mandate build: no .proto files under protos/mandate/v1")
    subprocess.run([sys.executable, "-m", "grpc_tools.protoc", "-I", "protos", f"--python_out={out_dir}",
                    f"--pyi_out={out_dir}", f"--grpc_python_out={out_dir}", *protos], cwd=ROOT, check=True)


def copy_tree(source: Path, target: Path, patterns: tuple[str, ...]) -> None:
    """Copy the files matching `patterns` (kept at their relative paths), replacing any older copy."""
    shutil.rmtree(target, ignore_errors=True)
    for pattern in patterns:
        for path in sorted(source.glob(pattern)):
            destination = target / path.relative_to(source)
            destination.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, destination)


class BuildPy(build_py):
    def run(self):
        super().run()
        if self.editable_mode:
            generate_stubs(ROOT / "server")
            return
        build_lib = Path(self.build_lib)
        package = build_lib / "mandate"
        for stale in (package / "v1").glob("*_pb2*.py*"):  # copied from a checkout that ran `make`
            stale.unlink()
        generate_stubs(build_lib.resolve())
        copy_tree(ROOT / "policies", package / "policies",
                  ("*.polar", "equivalent-mutants.yaml", "tests/**/*.yaml", "tests/**/*.yml"))
        copy_tree(ROOT / "protos", package / "protos", ("mandate/**/*.proto",))


setup(cmdclass={"build_py": BuildPy})
