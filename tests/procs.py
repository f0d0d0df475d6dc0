"""Test launchers for real processes, on modelmux.procs."""

from __future__ import annotations

import sys
from pathlib import Path

from modelmux.procs import EMULATOR_READY, PROXY_READY, Proc, free_port, wait_port  # noqa: F401

ROOT = Path(__file__).resolve().parents[1]
VENV_BIN = Path(sys.executable).parent


def emulator(tmp: Path, *extra: str) -> tuple[Proc, str, Path]:
    """The Vertex emulator with a fresh service-account key; returns (proc, base url, key file)."""
    key = tmp / "service-account.json"
    proc = Proc([sys.executable, "-m", "modelmux.emulator", "--port", "0", "--service-account-out", str(key), *extra],
                EMULATOR_READY, env={"PYTHONPATH": str(ROOT / "addon")}, cwd=ROOT)
    return proc, proc.match.group(1), key


def self_signed_cert(tmp: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 (IP SAN) and its key, as PEM files: a TLS server of the tests' own."""
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(hours=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
            .sign(key, hashes.SHA256()))
    cert_file, key_file = tmp / "srv.pem", tmp / "srv.key"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_file, key_file
