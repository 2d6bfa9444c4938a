"""https receivers: the worker connects to the checked IP yet names the URL's host in SNI and
verifies the certificate against it."""

from __future__ import annotations

import datetime
import ssl
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from shared.events import emit
from shared.events.delivery import event_deliver
from shared.events.models import EventDelivery
from tests.receivers import make_endpoint

pytestmark = pytest.mark.django_db


def self_signed(tmp_path, name: str) -> tuple[str, str]:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = tmp_path / f"{name}.pem", tmp_path / f"{name}.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return str(cert_path), str(key_path)


@pytest.fixture
def tls_receiver(tmp_path):
    """start(cert_name) → (port, seen) of an https server on 127.0.0.1 with a certificate for
    `cert_name`; seen collects the SNI names and Host headers."""
    servers = []

    def start(cert_name: str):
        cert, key = self_signed(tmp_path, cert_name)
        seen = {"sni": [], "host": []}
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(cert, key)
        context.sni_callback = lambda sock, name, ctx: seen["sni"].append(name)

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                seen["host"].append(self.headers["Host"])
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        server.socket = context.wrap_socket(server.socket, server_side=True)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return server.server_address[1], seen, cert

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


def test_https_keeps_the_host_for_sni_and_verification(tls_receiver, cast, settings):
    port, seen, cert = tls_receiver("localhost")
    settings.WEBHOOK_CA_BUNDLE = cert
    make_endpoint(cast["admin"].org, f"https://localhost:{port}/hook")
    emit(cast["admin"].org.pk, "message.sent", {"message_id": 1})
    assert event_deliver(delivery_pk=EventDelivery.objects.get().pk) == "delivered"
    assert seen["sni"] == ["localhost"] and seen["host"] == [f"localhost:{port}"]


def test_https_refuses_a_certificate_for_another_name(tls_receiver, cast, settings):
    port, seen, cert = tls_receiver("other.test")
    settings.WEBHOOK_CA_BUNDLE = cert
    make_endpoint(cast["admin"].org, f"https://localhost:{port}/hook")
    emit(cast["admin"].org.pk, "message.sent", {"message_id": 1})
    delivery = EventDelivery.objects.get()
    assert event_deliver(delivery_pk=delivery.pk) == "retry"
    delivery.refresh_from_db()
    assert delivery.last_error == "Not delivered: SSLError." and seen["host"] == []
