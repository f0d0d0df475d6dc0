"""`modelmux certs`: the mitmproxy CA that HTTPS_PROXY mode needs the app to trust, exported with the exact
lines to trust it per runtime. Reverse mode (OPENAI_BASE_URL=http://127.0.0.1:PORT/v1) needs none of this."""

from __future__ import annotations

import os
from pathlib import Path

import certifi
from mitmproxy.certs import CertStore
from mitmproxy.options import CONF_BASENAME, KEY_SIZE

CA_CERT = f"{CONF_BASENAME}-ca-cert.pem"
BUNDLE = "ca-bundle.pem"  # certifi's public roots + the mitmproxy CA: for runtimes that take one file only


def default_out() -> Path:
    """The checkout's certs/ folder when run from it, else ./certs."""
    repo_certs = Path(__file__).resolve().parents[2] / "certs"
    return repo_certs if repo_certs.is_dir() else Path("certs")


def ensure_ca(confdir: Path) -> Path:
    """The CA mitmproxy (and so modelmux) signs with; created as mitmproxy would when missing."""
    CertStore.from_store(confdir, CONF_BASENAME, KEY_SIZE)
    return confdir / CA_CERT


def export(confdir: Path, out: Path) -> tuple[Path, Path]:
    ca = ensure_ca(confdir)
    out.mkdir(parents=True, exist_ok=True)
    pem = ca.read_text()
    (out / CA_CERT).write_text(pem)
    roots = Path(certifi.where()).read_text()
    (out / BUNDLE).write_text(roots.rstrip("\n") + "\n\n# modelmux: mitmproxy CA\n" + pem)
    return out / CA_CERT, out / BUNDLE


def instructions(ca: Path, bundle: Path, port: int = 8080) -> str:
    ca, bundle = ca.resolve(), bundle.resolve()
    return f"""\
The app must trust modelmux's CA to use it as HTTPS_PROXY (reverse mode needs no CA):

  export HTTPS_PROXY=http://127.0.0.1:{port} NO_PROXY=127.0.0.1,localhost

Python (openai, httpx, requests):
  export SSL_CERT_FILE={bundle}
  export REQUESTS_CA_BUNDLE={bundle}
Node (openai SDK):
  export NODE_EXTRA_CA_CERTS={ca}
curl:
  curl --proxy http://127.0.0.1:{port} --cacert {bundle} https://api.openai.com/v1/models
  (or export CURL_CA_BUNDLE={bundle})
Java:
  keytool -importcert -noprompt -alias modelmux -file {ca} -cacerts -storepass changeit
OS stores (system-wide; see certs/README.md for removal):
  Debian/Ubuntu: sudo cp {ca} /usr/local/share/ca-certificates/modelmux.crt && sudo update-ca-certificates
  macOS:         sudo security add-trusted-cert -d -r trustRoot -k /Library/Keychains/System.keychain {ca}
  Windows:       certutil -addstore -f ROOT {ca.with_suffix('.cer') if os.name == 'nt' else ca}
"""
