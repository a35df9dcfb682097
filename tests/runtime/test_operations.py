"""Operating Mandate safely (issue 9, items 1, 3, 4, 5), against real servers on free ports:
TLS and mTLS with certificates made here, reloaded on SIGHUP; limits per caller that keep one
busy caller from slowing the others; Prometheus metrics that move with the calls; and JSON logs
that never carry a secret."""

from __future__ import annotations

import datetime
import hashlib
import json
import os
import signal
import subprocess
import sys
import threading
import urllib.request
from contextlib import contextmanager
from pathlib import Path

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from google.rpc import error_details_pb2
from grpc_status import rpc_status
from mandate.client import MandateClient
from mandate.names import EventType
from mandate.runtime.config import Config
from mandate.runtime.server import build_server
from mandate.v1 import directory_pb2, events_pb2

from tests.conftest import POLICY_DIR, ROOT, TOKEN
from tests.support import free_port, reason_of, wait_until

# -- certificates, made at test time -------------------------------------------------------------


@pytest.fixture
def engine() -> str:
    """Transport and policy work, not the store's: SQLite only (the engines run every store test)."""
    return "sqlite"


def name(common_name: str, organization: str | None = None) -> x509.Name:
    attributes = [x509.NameAttribute(NameOID.COMMON_NAME, common_name)]
    if organization:
        attributes.insert(0, x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization))
    return x509.Name(attributes)


def issue(subject: x509.Name, issuer: tuple | None, *, ca: bool = False, server: bool = False):
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    signer_name, signer_key = issuer if issuer else (subject, key)
    builder = (x509.CertificateBuilder().subject_name(subject).issuer_name(signer_name).public_key(key.public_key())
               .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
               .not_valid_after(now + datetime.timedelta(days=1))
               .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if server:
        builder = builder.add_extension(x509.SubjectAlternativeName(
            [x509.DNSName("localhost"), x509.IPAddress(__import__("ipaddress").ip_address("127.0.0.1"))]),
            critical=False)
    elif not ca:
        builder = builder.add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
    certificate = builder.sign(signer_key, hashes.SHA256())
    return certificate, key


def write(directory: Path, stem: str, certificate, key) -> tuple[Path, Path]:
    pem, key_pem = directory / f"{stem}.pem", directory / f"{stem}.key"
    pem.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_pem.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                          serialization.NoEncryption()))
    return pem, key_pem


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    """A CA, two server certificates it signed (for the reload), and a client certificate
    (O=Acme, CN=gateway)."""
    directory = tmp_path_factory.mktemp("pki")
    ca_name = name("Mandate test CA")
    ca, ca_key = issue(ca_name, None, ca=True)
    files = {"ca": write(directory, "ca", ca, ca_key)[0]}
    for stem in ("server", "server2"):
        files[stem], files[f"{stem}-key"] = write(directory, stem, *issue(name("localhost"), (ca_name, ca_key),
                                                                          server=True))
    files["client"], files["client-key"] = write(directory, "client", *issue(name("gateway", "Acme"),
                                                                             (ca_name, ca_key)))
    return files


@contextmanager
def running(app, **settings):
    settings.setdefault("api_tokens", [TOKEN])
    config = Config(listen="127.0.0.1:0", database_url=app.store.url, policy_dir=POLICY_DIR, **settings)
    server, port = build_server(app, config)
    server.start()
    try:
        yield server, port
    finally:
        server.stop(grace=None)


def served_certificate(port: int) -> bytes:
    import ssl

    return ssl.get_server_certificate(("127.0.0.1", port)).encode()


def test_tls_calls_plaintext_refused_and_certificates_reloaded(app, pki, tmp_path):
    cert, key = tmp_path / "server.pem", tmp_path / "server.key"
    cert.write_bytes(pki["server"].read_bytes())
    key.write_bytes(pki["server-key"].read_bytes())
    with running(app, tls_cert=cert, tls_key=key) as (server, port):
        with MandateClient(f"localhost:{port}", TOKEN, tls_ca=pki["ca"]) as client:
            assert not client.check("u1", "read", "Project:p1").allowed
        with MandateClient(f"localhost:{port}", TOKEN, retries=0, timeout=5) as plaintext:
            with pytest.raises(grpc.RpcError) as refused:
                plaintext.check("u1", "read", "Project:p1")
            assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
        first = x509.load_pem_x509_certificate(served_certificate(port))
        cert.write_bytes(pki["server2"].read_bytes())
        key.write_bytes(b"not a key")  # a half-written pair is refused: the old one stays
        server.reload()
        assert x509.load_pem_x509_certificate(served_certificate(port)).serial_number == first.serial_number
        key.write_bytes(pki["server2-key"].read_bytes())
        server.reload()
        second = x509.load_pem_x509_certificate(pki["server2"].read_bytes())
        assert x509.load_pem_x509_certificate(served_certificate(port)).serial_number == second.serial_number
        with MandateClient(f"localhost:{port}", TOKEN, tls_ca=pki["ca"]) as client:
            assert not client.check("u1", "read", "Project:p1").allowed


def test_mtls_needs_a_client_certificate_and_names_the_caller_by_its_subject(app, pki, tmp_path):
    callers = tmp_path / "callers.toml"
    callers.write_text('[callers.gateway]\nclient_cert_subject = "CN=gateway,O=Acme"\n')
    with running(app, tls_cert=pki["server"], tls_key=pki["server-key"], tls_client_ca=pki["ca"],
                 callers_file=callers) as (_, port):
        target = f"localhost:{port}"
        with MandateClient(target, TOKEN, tls_ca=pki["ca"], retries=0, timeout=5) as no_certificate:
            with pytest.raises(grpc.RpcError) as refused:
                no_certificate.check("u1", "read", "Project:p1")
            assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
        with MandateClient(target, None, tls_ca=pki["ca"], tls_cert=pki["client"],
                           tls_key=pki["client-key"]) as gateway:
            owner = gateway.directory.RegisterUser(directory_pb2.RegisterUserRequest(
                email="owner@example.com", display_name="Owner")).id
            gateway.directory.CreateOrganization(directory_pb2.CreateOrganizationRequest(
                actor_id=owner, name="Gated", currency="EUR"))
            log = gateway.events.ListEvents(events_pb2.ListEventsRequest(page_size=100)).events
        # Every change the gateway asked for names it (the service's own record of its policy names none).
        assert {e.caller for e in log if e.type != EventType.POLICY_SERVED} == {"gateway"}


@pytest.mark.parametrize("subject_callers", [True, False])
def test_a_certificate_subject_of_no_caller_is_refused_and_logged(app, pki, tmp_path, caplog, subject_callers):
    """issue 18 item 22: a verified client certificate whose subject names no caller is refused
    (UNAUTHENTICATED, the one message of every bad credential), and the server log names the
    subject presented (a subject is no secret), whether or not any caller is known by one."""
    callers = tmp_path / "callers.toml"
    callers.write_text('[callers.other]\nclient_cert_subject = "CN=other,O=Acme"\n' if subject_callers else
                       f'[callers.other]\ntoken_sha256 = "{hashlib.sha256(b"other-token-value").hexdigest()}"\n')
    caplog.set_level("INFO")
    with running(app, tls_cert=pki["server"], tls_key=pki["server-key"], tls_client_ca=pki["ca"],
                 callers_file=callers) as (_, port):
        with MandateClient(f"localhost:{port}", None, tls_ca=pki["ca"], tls_cert=pki["client"],
                           tls_key=pki["client-key"], retries=0) as gateway:
            with pytest.raises(grpc.RpcError) as refused:
                gateway.check("u1", "read", "Project:p1")
    assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert "CN=gateway" not in refused.value.details()
    logged = [r.getMessage() for r in caplog.records if r.name == "mandate.rpc"]
    assert any("CN=gateway" in line and "O=Acme" in line for line in logged), logged


def test_plaintext_off_loopback_needs_insecure():
    with pytest.raises(ValueError, match="--insecure"):
        Config(listen="0.0.0.0:50051").check_transport()
    Config(listen="0.0.0.0:50051", insecure=True).check_transport()
    Config(listen="[::1]:50051").check_transport()
    with pytest.raises(ValueError, match="go together"):
        Config(tls_cert=Path("a.pem")).check_transport()


# -- limits -------------------------------------------------------------------------------------


BUSY = "busy-caller-token-not-secret"
CALM = "calm-caller-token-not-secret"


def test_one_caller_at_its_limit_does_not_slow_the_others(app, tmp_path):
    """`busy` fills its requests in flight with calls held in the worker pool; its next call is
    TOO_MANY_REQUESTS with a RetryInfo, while `calm` is served (in the pool too) meanwhile."""
    callers = tmp_path / "callers.toml"
    callers.write_text("".join(f'[callers.{who}]\ntoken_sha256 = "{hashlib.sha256(token.encode()).hexdigest()}"\n'
                               for who, token in (("busy", BUSY), ("calm", CALM))))
    release, holding = threading.Event(), threading.Semaphore(0)
    list_events = app.events.list_events

    def held(*args):
        from mandate.runtime import callers as named

        if named.current_name() == "busy":
            holding.release()
            release.wait(30)
        return list_events(*args)

    app.events.list_events = held
    request = events_pb2.ListEventsRequest(page_size=10)
    with running(app, callers_file=callers, workers=4, max_requests_per_caller=3) as (_, port), \
            MandateClient(f"127.0.0.1:{port}", BUSY, retries=0) as busy, \
            MandateClient(f"127.0.0.1:{port}", CALM, retries=0) as calm:
        try:
            pending = [busy.events.ListEvents.future(request) for _ in range(3)]
            assert holding.acquire(timeout=20) and holding.acquire(timeout=20)  # its share: 2 of 4 workers
            with pytest.raises(grpc.RpcError) as refused:
                busy.events.ListEvents(request)
            assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert reason_of(refused.value) == "TOO_MANY_REQUESTS"
            retry = [d for d in rpc_status.from_call(refused.value).details
                     if d.Is(error_details_pb2.RetryInfo.DESCRIPTOR)]
            assert retry
            for _ in range(3):  # served by the workers busy does not hold, while busy waits
                calm.events.ListEvents(request, timeout=20)
                assert not any(call.done() for call in pending)
        finally:
            release.set()
        assert all(call.result(timeout=20) is not None for call in pending)


def test_batch_size_and_message_size_are_limited(app):
    with running(app, max_batch=2, max_message_bytes=64 * 1024) as (_, port), \
            MandateClient(f"127.0.0.1:{port}", TOKEN, retries=0) as client:
        with pytest.raises(grpc.RpcError) as refused:
            client.batch_check([("u1", "read", "Project:p1")] * 3)
        assert reason_of(refused.value) == "INVALID_ARGUMENT"
        assert len(client.batch_check([("u1", "read", "Project:p1")] * 2)) == 2
        with pytest.raises(grpc.RpcError) as refused:
            client.directory.RegisterUser(directory_pb2.RegisterUserRequest(
                email="big@example.com", display_name="x" * 100_000))
        assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED


# -- a real `mandate serve`: metrics and JSON logs ------------------------------------------------


def scrape(port: int) -> dict[str, float]:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    samples = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            key, _, value = line.rpartition(" ")
            samples[key] = samples.get(key, 0.0) + float(value)
    return samples


def value(samples: dict[str, float], metric: str, **labels: str) -> float:
    """The sum of the samples of `metric` whose labels include `labels`."""
    wanted = [f'{k}="{v}"' for k, v in labels.items()]
    return sum(v for key, v in samples.items()
               if key.split("{", 1)[0] == metric and all(w in key for w in wanted))


@pytest.mark.parametrize("processes", [2])
def test_real_server_metrics_move_and_json_logs_hold_no_secret(tmp_path, processes):
    port, metrics_port = free_port(), free_port()
    token = "operations-token-" + "s3cr3t" * 4
    database = tmp_path / "mandate.db"
    env = {**os.environ, "MANDATE_API_TOKENS": token, "MANDATE_DATABASE_URL": f"sqlite:///{database}",
           "MANDATE_POLICY_DIR": str(POLICY_DIR)}
    log = tmp_path / "serve.log"
    with open(log, "wb") as output:
        server = subprocess.Popen(
            [sys.executable, "-m", "mandate.cli", "serve", "--listen", f"127.0.0.1:{port}", "--log-format", "json",
             "--metrics-listen", f"127.0.0.1:{metrics_port}", "--processes", str(processes)],
            cwd=ROOT, env=env, stdout=output, stderr=subprocess.STDOUT)
    try:
        with MandateClient(f"127.0.0.1:{port}", token, timeout=10) as client:
            assert wait_until(lambda: ready(client), 60), log.read_text()[-2000:]
            owner = client.directory.RegisterUser(directory_pb2.RegisterUserRequest(
                email="owner@example.com", display_name="Owner")).id
            organization = client.directory.CreateOrganization(directory_pb2.CreateOrganizationRequest(
                actor_id=owner, name="Measured", currency="EUR")).id
            link = client.partner.CreateInviteLink(_invite_link_request(owner, organization))
            for _ in range(5):
                assert client.check(owner, "read", f"Organization:{organization}").allowed in (True, False)
            client.batch_check([(owner, "read", "Project:nowhere")] * 4)
            with pytest.raises(grpc.RpcError):
                client.directory.CreateOrganization(directory_pb2.CreateOrganizationRequest(
                    actor_id=owner, name="Bad", currency="ZZZ"))

            def counted() -> bool:
                samples = scrape(metrics_port)
                return (value(samples, "grpc_server_handled_total", grpc_method="Check", grpc_code="OK") >= 5
                        and value(samples, "mandate_decisions_total", resource_type="Project", action="read",
                                  allowed="false") >= 4
                        and value(samples, "mandate_refusals_total", reason="INVALID_ARGUMENT") >= 1
                        and value(samples, "grpc_server_handling_seconds_count", grpc_method="RegisterUser") >= 1
                        and value(samples, "mandate_policy_info") >= 1
                        and value(samples, "mandate_index_revision") >= 2
                        and value(samples, "mandate_policy_memo_hits_total") >= 1
                        and value(samples, "mandate_policy_memo_misses_total") >= 1
                        and value(samples, "mandate_index_catch_up_seconds_count") >= 1)

            assert wait_until(counted, 30), {k: v for k, v in scrape(metrics_port).items()
                                             if "_total" in k or "mandate_" in k and "_created" not in k}
        server.send_signal(signal.SIGHUP)
        assert wait_until(lambda: '"event": "reload"' in log.read_text(), 20)
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=60)
    lines = log.read_text().splitlines()
    parsed = [json.loads(line) for line in lines]  # every line is one JSON object
    assert {"start", "ready", "reload", "drain", "stop"} <= {p.get("event") for p in parsed}
    requests = [p for p in parsed if p.get("logger") == "mandate.request"]
    made = next(p for p in requests if p["method"].endswith("/CreateOrganization") and p["code"] == "OK")
    assert made["caller"] == "env-0" and made["actor"] == owner and made["revision"].isdigit()
    assert {"time", "duration_ms", "reason", "incident"} <= set(made)
    refused = next(p for p in requests if p["reason"] == "INVALID_ARGUMENT")
    assert refused["code"] == "INVALID_ARGUMENT"
    text = log.read_text()
    assert link.token
    for leaked in (token, hashlib.sha256(token.encode()).hexdigest(), link.token):
        assert leaked not in text


def ready(client) -> bool:
    try:
        client.check("nobody", "read", "Project:p1")
        return True
    except grpc.RpcError:
        return False


def _invite_link_request(owner: str, organization: str):
    from mandate.v1 import partner_pb2

    return partner_pb2.CreateInviteLinkRequest(actor_id=owner, partner_id=organization, customer_name="Shop",
                                               customer_number="C-1", currency="EUR", requested_scopes=["read"])
