"""`modelmux certs`: the exported bundle really lets an unmodified openai SDK use the proxy in HTTPS_PROXY mode."""

from __future__ import annotations

import subprocess

import certifi
import openai

import procs
from e2e import CLIENT_KEY, emulator_and_proxy


def test_certs_exports_a_bundle_the_sdk_trusts(tmp_path, monkeypatch):
    with emulator_and_proxy(tmp_path) as (proxy, _):
        out = subprocess.run([str(procs.VENV_BIN / "modelmux"), "certs", "--out", str(tmp_path / "certs"),
                              "--confdir", str(proxy.confdir), "--port", str(proxy.regular_port)],
                             capture_output=True, text=True, timeout=60, check=True).stdout
        bundle = tmp_path / "certs" / "ca-bundle.pem"
        ca = (tmp_path / "certs" / "mitmproxy-ca-cert.pem").read_text()
        assert ca == proxy.ca.read_text() and ca in bundle.read_text()
        assert open(certifi.where()).read().strip()[:200] in bundle.read_text()  # public roots kept
        for line in (f"SSL_CERT_FILE={bundle}", "NODE_EXTRA_CA_CERTS=", "keytool -importcert", "--cacert",
                     "update-ca-certificates"):
            assert line in out
        for var in ("HTTPS_PROXY", "https_proxy", "NO_PROXY", "no_proxy", "OPENAI_BASE_URL"):
            monkeypatch.delenv(var, raising=False)
        monkeypatch.setenv("HTTPS_PROXY", f"http://127.0.0.1:{proxy.regular_port}")
        monkeypatch.setenv("SSL_CERT_FILE", str(bundle))
        api = openai.OpenAI(api_key=CLIENT_KEY, max_retries=0, timeout=20)
        assert api.models.retrieve("gpt-4o").id == "gpt-4o"


def test_certs_creates_the_ca_when_missing(tmp_path):
    subprocess.run([str(procs.VENV_BIN / "modelmux"), "certs", "--out", str(tmp_path / "out"), "--confdir",
                    str(tmp_path / "fresh")], capture_output=True, text=True, timeout=60, check=True)
    assert (tmp_path / "fresh" / "mitmproxy-ca.pem").exists()
    assert "BEGIN CERTIFICATE" in (tmp_path / "out" / "mitmproxy-ca-cert.pem").read_text()
