"""``rediss://`` verifies the server's certificate everywhere by default (issue 13, item 10):
the broker (kombu, which would fall back to CERT_NONE), the job store (redis-py), and so Flower,
the scheduler and the exporter, which use the same two. Against a real redis-server speaking TLS
with a certificate from a CA made here: refused without the CA, accepted with it, and accepted
without verification only when the URL opts out (``ssl_cert_reqs=none``)."""

from __future__ import annotations

import datetime
import ipaddress
import shutil
import subprocess
import time
from pathlib import Path

import pytest
import redis
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tasks.broker import producer_app
from tasks.config import Settings
from tasks.runtime import Runtime
from workers.embedded_redis import free_port

pytestmark = pytest.mark.integration


def _pem(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def _certificates(folder: Path) -> tuple[Path, Path, Path]:
    """A CA, and a server certificate for 127.0.0.1 signed by it: (ca, cert, key) files."""
    now = datetime.datetime.now(datetime.UTC)
    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "ingest-fleet test CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
          .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
          .not_valid_after(now + datetime.timedelta(days=1))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .sign(ca_key, hashes.SHA256()))
    cert = (x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
            .issuer_name(ca_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .sign(ca_key, hashes.SHA256()))
    return (_pem(folder / "ca.pem", ca.public_bytes(serialization.Encoding.PEM)),
            _pem(folder / "redis.pem", cert.public_bytes(serialization.Encoding.PEM)),
            _pem(folder / "redis.key", key.private_bytes(serialization.Encoding.PEM,
                                                         serialization.PrivateFormat.TraditionalOpenSSL,
                                                         serialization.NoEncryption())))


@pytest.fixture(scope="module")
def tls_redis(tmp_path_factory):
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip("no redis-server on PATH")
    folder = tmp_path_factory.mktemp("tls")
    ca, cert, key = _certificates(folder)
    port = free_port()
    proc = subprocess.Popen([binary, "--port", "0", "--tls-port", str(port), "--tls-cert-file", str(cert),
                             "--tls-key-file", str(key), "--tls-ca-cert-file", str(ca), "--tls-auth-clients", "no",
                             "--save", "", "--appendonly", "no", "--dir", str(folder)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        client = redis.Redis(host="127.0.0.1", port=port, ssl=True, ssl_ca_certs=str(ca))
        deadline = time.monotonic() + 10
        while True:
            if proc.poll() is not None:
                pytest.skip(f"this redis-server cannot serve TLS: {proc.stdout.read().decode()[-300:]}")
            try:
                client.ping()
                break
            except redis.ConnectionError:
                assert time.monotonic() < deadline, "the TLS redis-server did not answer"
                time.sleep(0.1)
        yield port, ca
    finally:
        proc.kill()
        proc.wait()


def _broker_connects(url: str) -> bool:
    app = producer_app(Settings.from_env({"REDIS_URL": url}))
    try:
        with app.connection_for_write() as conn:
            conn.ensure_connection(max_retries=1, interval_start=0, interval_step=0)
            return True
    except Exception:
        return False


def _store_connects(url: str) -> bool:
    try:
        return bool(Runtime(Settings.from_env({"REDIS_URL": url})).redis.ping())
    except redis.ConnectionError:
        return False


def test_rediss_verifies_the_certificate_unless_the_url_opts_out(tls_redis) -> None:
    port, ca = tls_redis
    base = f"rediss://127.0.0.1:{port}/0"
    assert not _broker_connects(base) and not _store_connects(base)  # an unknown CA is refused
    trusted = f"{base}?ssl_ca_certs={ca}"
    assert _broker_connects(trusted) and _store_connects(trusted)
    opted_out = f"{base}?ssl_cert_reqs=none"
    assert _broker_connects(opted_out) and _store_connects(opted_out)
