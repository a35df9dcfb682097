"""The README's walkthrough works as printed: its shell blocks run against a real server, and
every `check` answers what the comment beside it says."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from mandate.client import MandateClient

from tests.support import free_port, wait_until

ROOT = Path(__file__).resolve().parents[2]
CHECK = re.compile(r"^(\$M check [^#]+?)\s+#\s*(allowed|denied)\b")


def walkthrough_script() -> tuple[str, list[str]]:
    """The shell blocks after 'A first session' (except `make serve`), with each commented
    check turned into a line that prints its answer."""
    text = (ROOT / "README.md").read_text()
    walkthrough = text[text.index("## A first session"):text.index("## Running it")]
    lines, expected = [], []
    for block in re.findall(r"```sh\n(.*?)```", walkthrough, re.S):
        for line in block.splitlines():
            if line.strip() == "make serve":
                continue
            match = CHECK.match(line)
            if match:
                lines.append(f'echo "CHECK $({match.group(1)})"')
                expected.append(match.group(2))
            else:
                lines.append(line)
    return "\n".join(lines) + "\n", expected


def test_readme_walkthrough_works_as_printed(tmp_path):
    script, expected = walkthrough_script()
    assert len(expected) >= 6, "the walkthrough lost its checks"
    port = free_port()
    env = {**os.environ, "MANDATE_LISTEN": f"127.0.0.1:{port}", "MANDATE_API_TOKENS": "readme-token-0123456789",
           "MANDATE_TOKEN": "readme-token-0123456789", "MANDATE_DATABASE_URL": f"sqlite:///{tmp_path}/mandate.db"}
    env["PATH"] = f"{Path(sys.executable).parent}:{env['PATH']}"
    server = subprocess.Popen([sys.executable, "-m", "mandate.cli", "serve"], cwd=ROOT, env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        with MandateClient(f"127.0.0.1:{port}", "readme-token-0123456789") as client:
            import grpc

            def ready():
                try:
                    grpc.channel_ready_future(client.raw_channel).result(timeout=0.5)
                    return True
                except grpc.FutureTimeoutError:
                    return False

            assert wait_until(ready, 60), "the server did not start"
        result = subprocess.run(["bash", "-c", script.replace("M=.venv/bin/mandate", f"M={ROOT}/.venv/bin/mandate")],
                                cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    finally:
        server.terminate()
        server.wait(timeout=30)
    answers = [line.split(" ", 1)[1] for line in result.stdout.splitlines() if line.startswith("CHECK ")]
    assert answers == expected, result.stdout + result.stderr
    assert "mandate:" not in result.stderr, result.stderr  # every call in the walkthrough succeeds
