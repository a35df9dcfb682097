"""Prometheus metrics (`--metrics-listen ADDR` serves them at /metrics; off by default).

Names follow what operators already chart: go-grpc-prometheus for the RPCs
(`grpc_server_handled_total`, `grpc_server_handling_seconds`), SpiceDB/OpenFGA-like names for
the rest. Labels take only bounded values: a resource type or action the policy does not know
is counted as "unknown", so a caller cannot grow the series.

With `--processes N` the parent sets PROMETHEUS_MULTIPROC_DIR before any child starts: each
process writes its values there, and the parent's endpoint serves their sum
(`prometheus_client.multiprocess`). Gauges then take the largest value of the live processes.
The `process_*` metrics are then the sum over the parent and its server processes, read at each
scrape (FleetProcesses). `mandate_build_info` carries the versions, in either mode.
"""

from __future__ import annotations

import collections
import os

from prometheus_client import Counter, Gauge, Histogram

MULTIPROCESS = bool(os.environ.get("PROMETHEUS_MULTIPROC_DIR"))
_gauge = {"multiprocess_mode": "livemax"} if MULTIPROCESS else {}

# Checks answer in well under a millisecond; writes and lists take longer.
LATENCY_BUCKETS = (0.0002, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)

started = Counter("grpc_server_started_total", "RPCs started on the server.",
                  ("grpc_type", "grpc_service", "grpc_method"))
handled = Counter("grpc_server_handled_total", "RPCs completed on the server, by status code.",
                  ("grpc_type", "grpc_service", "grpc_method", "grpc_code"))
handling = Histogram("grpc_server_handling_seconds", "Time to answer an RPC (unary) or to end a stream.",
                     ("grpc_type", "grpc_service", "grpc_method"), buckets=LATENCY_BUCKETS)
decisions = Counter("mandate_decisions_total", "Decisions made, by resource type, action and result.",
                    ("resource_type", "action", "allowed"))
refusals = Counter("mandate_refusals_total", "Calls refused, by ErrorInfo reason.", ("reason",))
policy_info = Gauge("mandate_policy_info", "The policy version being served (1).", ("policy_version",), **_gauge)
policy_reloads = Counter("mandate_policy_reloads_total", "Policy reloads, by result (ok, refused).", ("result",))
memo_hits = Counter("mandate_policy_memo_hits_total", "Decisions answered from the policy memo.")
memo_misses = Counter("mandate_policy_memo_misses_total", "Decisions the policy engine had to make.")
index_revision = Gauge("mandate_index_revision", "The revision the fact index has reached.", **_gauge)
index_lag = Gauge("mandate_index_lag_revisions", "How many revisions the fact index is behind the store.", **_gauge)
catch_up = Histogram("mandate_index_catch_up_seconds", "Time the fact index took to catch up with the store.",
                     buckets=LATENCY_BUCKETS)
database_errors = Counter("mandate_database_errors_total", "Calls that failed on a database error.")
database_retries = Counter("mandate_database_retries_total", "Retries of a database that did not answer.")
in_flight = Gauge("mandate_requests_in_flight", "Unary requests being served.",
                  **({"multiprocess_mode": "livesum"} if MULTIPROCESS else {}))


def follow_multiprocess() -> None:
    """In a server process forked by the parent of `--processes` after it set
    PROMETHEUS_MULTIPROC_DIR (this module was imported before): write the values there, as a
    process started afresh does."""
    global MULTIPROCESS
    if MULTIPROCESS or not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        return
    from prometheus_client import values
    from prometheus_client.metrics import MetricWrapperBase

    values.ValueClass = values.get_value_class()
    MULTIPROCESS = True
    for gauge, mode in ((policy_info, "livemax"), (index_revision, "livemax"), (index_lag, "livemax"),
                        (in_flight, "livesum")):
        gauge._multiprocess_mode = gauge._kwargs["multiprocess_mode"] = mode
    for metric in list(globals().values()):
        if isinstance(metric, MetricWrapperBase):
            if metric._labelnames:
                with metric._lock:
                    metric._metrics = {}
            else:
                metric._metric_init()


class Decisions:
    """Counts decisions with bounded labels: types and actions the policy declares, else 'unknown'."""

    def __init__(self, resource_types, actions):
        self.resource_types = frozenset(resource_types)
        self.actions = frozenset(actions)
        self._children: dict[tuple[str, str, bool], object] = {}

    def count(self, resource_type: str, action: str, allowed: bool, n: int = 1) -> None:
        key = (resource_type if resource_type in self.resource_types else "unknown",
               action if action in self.actions else "unknown", allowed)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = decisions.labels(key[0], key[1], "true" if allowed else "false")
        child.inc(n)

    def count_many(self, items) -> None:
        """`items`: (resource_type, action, allowed) of each decision of a batch."""
        for (resource_type, action, allowed), n in collections.Counter(items).items():
            self.count(resource_type, action, allowed, n)


def set_policy(previous: str | None, version: str) -> None:
    if previous is not None and previous != version:
        policy_info.labels(previous).set(0)
    policy_info.labels(version).set(1)


def serve(address: str) -> None:
    """Serve /metrics over HTTP on `address` (host:port) from a daemon thread. Under several
    processes, the sum of every process's values (the caller sets PROMETHEUS_MULTIPROC_DIR)."""
    from prometheus_client import CollectorRegistry, start_http_server

    host, _, port = address.rpartition(":")
    if MULTIPROCESS or os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import PlatformCollector, multiprocess

        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        registry.register(FleetProcesses())
        registry.register(BuildInfo())
        PlatformCollector(registry=registry)
    else:
        from prometheus_client import REGISTRY

        registry = REGISTRY  # its own process_*, python_* and gc metrics, and the build's
        if not any(isinstance(c, BuildInfo) for c in list(registry._collector_to_names)):
            registry.register(BuildInfo())
    return start_http_server(int(port), addr=host.strip("[]") or "0.0.0.0", registry=registry)


class BuildInfo:
    """`mandate_build_info` (1), labelled with the versions this server runs."""

    PACKAGES = {"version": "mandate", "grpcio": "grpcio", "protobuf": "protobuf", "oso": "oso"}

    def __init__(self):
        import platform
        from importlib.metadata import PackageNotFoundError, version

        def installed(name: str) -> str:
            try:
                return version(name)
            except PackageNotFoundError:  # run from a source tree that was never installed
                return "unknown"

        self.labels = {label: installed(package) for label, package in self.PACKAGES.items()}
        self.labels["python"] = platform.python_version()

    def collect(self):
        from prometheus_client.core import GaugeMetricFamily

        family = GaugeMetricFamily("mandate_build_info", "The versions this server runs (1).", labels=list(self.labels))
        family.add_metric(list(self.labels.values()), 1)
        yield family


class FleetProcesses:
    """Under --processes, the parent serves the fleet's metrics from the multiprocess files, which
    hold no process_* metrics: these are read from /proc at each scrape, summed over the parent and
    its live server processes (`process_start_time_seconds` and `process_max_fds` are the parent's),
    with `mandate_server_processes`, how many server processes are alive."""

    SUMMED = frozenset({"process_cpu_seconds_total", "process_virtual_memory_bytes", "process_resident_memory_bytes",
                        "process_open_fds"})

    def collect(self):
        import multiprocessing

        from prometheus_client import ProcessCollector
        from prometheus_client.core import GaugeMetricFamily

        children = [child.pid for child in multiprocessing.active_children()]
        families = list(ProcessCollector(pid=os.getpid, registry=None).collect())
        for pid in children:
            for family in ProcessCollector(pid=lambda pid=pid: pid, registry=None).collect():
                extra = {sample.name: sample.value for sample in family.samples if sample.name in self.SUMMED}
                for total in families:
                    total.samples = [s._replace(value=s.value + extra.get(s.name, 0)) for s in total.samples]
        yield from families
        yield GaugeMetricFamily("mandate_server_processes", "Server processes alive under this parent.",
                                value=len(children))


def process_exited(pid: int) -> None:
    """Multiprocess mode: forget the live gauges of a process that ended."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(pid)
