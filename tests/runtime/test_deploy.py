"""What operators import (issue 23 item 5): deploy/ holds a Grafana dashboard and Prometheus
alert rules. promtool (Debian's `prometheus` package) checks the rules and runs their unit
tests; the dashboard and the rules name only metrics a real server exposes; and under
--processes the server exposes process and build-info metrics too."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest
import yaml
from mandate.client import MandateClient
from mandate.runtime import metrics

from tests.conftest import POLICY_DIR
from tests.support import free_port, wait_until

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
RULES = DEPLOY / "prometheus" / "alerts.yml"
DASHBOARD = DEPLOY / "grafana" / "mandate.json"
TOKEN = "deploy-test-token-0123456789"


def promtool() -> str:
    found = shutil.which("promtool")
    if found is None:
        if os.environ.get("CI"):
            pytest.fail("promtool is missing: CI installs it with `apt-get install -y prometheus`")
        pytest.skip("SKIPPED LOUDLY: promtool is missing here; `apt-get install -y prometheus` to check deploy/")
    return found


def test_alert_rules_pass_promtool_and_their_unit_tests():
    """Issue 23 item 5: `promtool check rules`, and `promtool test rules` (each alert fires on
    the series it is written for, and not before its `for`)."""
    tool = promtool()
    for command in ([tool, "check", "rules", RULES.name], [tool, "test", "rules", "alerts_test.yml"]):
        result = subprocess.run(command, cwd=RULES.parent, capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, result.stdout + result.stderr
        assert "SUCCESS" in result.stdout


def expressions() -> dict[str, str]:
    """Every PromQL expression of the dashboard's panels and of the alert rules, by where it is."""
    found = {}
    for panel in json.loads(DASHBOARD.read_text())["panels"]:
        for target in panel.get("targets", []):
            found[f"panel {panel['title']!r} {target['refId']}"] = target["expr"]
    for group in yaml.safe_load(RULES.read_text())["groups"]:
        for rule in group["rules"]:
            found[f"alert {rule['alert']}"] = rule["expr"]
    return found


def metric_names(expression: str) -> set[str]:
    """The metric names an expression reads: identifiers followed by a selector."""
    return {name for name in re.findall(r"\b([a-z_:][a-z0-9_:]*)\s*\{", expression)} - {"by", "without"}


def test_the_dashboard_is_grafana_json_over_the_instances_of_one_job():
    """Issue 23 item 5: one dashboard, a data source and instance variables, every panel's query
    limited to the chosen instances of the `mandate` job."""
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["uid"] and dashboard["panels"]
    assert {variable["name"] for variable in dashboard["templating"]["list"]} == {"datasource", "instance"}
    assert len({panel["id"] for panel in dashboard["panels"]}) == len(dashboard["panels"])
    for where, expression in expressions().items():
        if where.startswith("panel"):
            assert 'job="mandate"' in expression and "$instance" in expression, where


def test_under_processes_the_server_exposes_process_and_build_metrics_and_every_name_deploy_uses(tmp_path):
    """Issue 23 item 5: `mandate serve --processes 2 --metrics-listen`: process_* summed over the
    server processes, mandate_build_info, mandate_server_processes; and every metric the dashboard
    and the alert rules read is one the server declares or exposes."""
    port, metrics_port = free_port(), free_port()
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("MANDATE_")}, "MANDATE_API_TOKENS": TOKEN,
           "MANDATE_DATABASE_URL": f"sqlite:///{tmp_path}/mandate.db", "MANDATE_POLICY_DIR": str(POLICY_DIR)}
    with open(tmp_path / "serve.log", "wb") as log:
        server = subprocess.Popen([sys.executable, "-m", "mandate.cli", "serve", "--listen", f"127.0.0.1:{port}",
                                   "--metrics-listen", f"127.0.0.1:{metrics_port}", "--processes", "2",
                                   "--grace", "0"], cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        with MandateClient(f"127.0.0.1:{port}", TOKEN, timeout=10) as client:
            def answered() -> bool:
                try:
                    return not client.check("nobody", "read", "Project:nowhere").allowed
                except Exception:  # not serving yet
                    return False

            assert wait_until(answered, 90), (tmp_path / "serve.log").read_text()[-2000:]

        def scraped() -> dict[str, float]:
            text = urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10).read().decode()
            samples = {}
            for line in text.splitlines():
                if line and not line.startswith("#"):
                    key, _, value = line.rpartition(" ")
                    samples[key] = float(value)
            return samples

        assert wait_until(lambda: scraped().get("mandate_server_processes") == 2.0, 30)
        samples = scraped()
    finally:
        server.terminate()
        server.wait(timeout=60)
    one_process = [s for s in samples if s.startswith("process_resident_memory_bytes")]
    assert one_process and samples["process_resident_memory_bytes"] > 3 * 10 ** 7  # three Python processes
    assert samples["process_cpu_seconds_total"] > 0 and samples["process_open_fds"] > 0
    (build,) = [key for key in samples if key.startswith("mandate_build_info{")]
    assert 'version="' in build and 'grpcio="' in build and 'protobuf="' in build and 'oso="0.27.3"' in build
    exposed = {key.split("{", 1)[0] for key in samples}
    declared = set()
    for collector in vars(metrics).values():
        if hasattr(collector, "_name") and hasattr(collector, "_type"):
            suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_count", "_sum"), "gauge": ("",)}
            declared |= {collector._name + suffix for suffix in suffixes.get(collector._type, ("",))}
    for where, expression in expressions().items():
        unknown = metric_names(expression) - exposed - declared - {"up"}
        assert not unknown, f"{where} reads {sorted(unknown)}, which no server exposes"
