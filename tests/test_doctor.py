"""`modelmux doctor` on a good set-up and on each broken one: it fails the right check and names the fix."""

from __future__ import annotations

import json
import os
import subprocess

import procs
from e2e import write_config


def doctor(config, confdir, env_extra=None, *args):
    env = {k: v for k, v in os.environ.items() if k not in (
        "SSL_CERT_FILE", "REQUESTS_CA_BUNDLE", "NODE_EXTRA_CA_CERTS", "CURL_CA_BUNDLE", "HTTPS_PROXY", "https_proxy",
        "NO_PROXY", "no_proxy", "GOOGLE_APPLICATION_CREDENTIALS")}
    env.update(env_extra or {})
    r = subprocess.run([str(procs.VENV_BIN / "modelmux"), "doctor", "--config", str(config), "--confdir",
                        str(confdir), "--listen-port", str(procs.free_port()), "--json", *args],
                       capture_output=True, text=True, timeout=120, env=env)
    return r.returncode, {c["name"]: c for c in json.loads(r.stdout)}


def test_doctor(tmp_path):
    emu_proc, url, key = procs.emulator(tmp_path)
    try:
        config = write_config(tmp_path / "good.yaml", url, key)
        subprocess.run([str(procs.VENV_BIN / "modelmux"), "certs", "--out", str(tmp_path / "certs"), "--confdir",
                        str(tmp_path / "conf")], capture_output=True, timeout=60, check=True)
        bundle, ca = tmp_path / "certs" / "ca-bundle.pem", tmp_path / "certs" / "mitmproxy-ca-cert.pem"
        trusted = {"SSL_CERT_FILE": str(bundle), "REQUESTS_CA_BUNDLE": str(bundle), "NODE_EXTRA_CA_CERTS": str(ca),
                   "CURL_CA_BUNDLE": str(bundle), "HTTPS_PROXY": "http://127.0.0.1:8080",
                   "NO_PROXY": "127.0.0.1,localhost"}

        code, checks = doctor(config, tmp_path / "conf", trusted, "--live")
        assert code == 0, checks
        assert checks["model gpt-4o"]["ok"] and checks["credentials"]["detail"].startswith("credentials file")
        assert checks["embeddings gemini-embedding-001"]["ok"] and checks["embeddings text-embedding-005"]["ok"]
        assert checks["state store"]["ok"] and checks["state store"]["detail"].startswith("sqlite")

        # a state store that does not answer (nothing listens on that port)
        nostate = tmp_path / "nostate.yaml"
        nostate.write_text(config.read_text() + f"state: {{url: 'redis://127.0.0.1:{procs.free_port()}/0'}}\n")
        code, checks = doctor(nostate, tmp_path / "conf", trusted)
        assert code == 1 and not checks["state store"]["ok"] and "state.url" in checks["state store"]["fix"]

        # missing credentials file
        missing = tmp_path / "missing.yaml"
        missing.write_text(config.read_text().replace(str(key), str(tmp_path / "nope.json")))
        code, checks = doctor(missing, tmp_path / "conf", trusted)
        assert code == 1 and not checks["credentials"]["ok"] and "auth.credentials_file" in checks["credentials"]["fix"]

        # a key the token endpoint does not trust
        forged = json.loads(key.read_text())
        forged["private_key_id"] = "0" * 40
        (tmp_path / "forged.json").write_text(json.dumps(forged))
        bad = tmp_path / "bad.yaml"
        bad.write_text(config.read_text().replace(str(key), str(tmp_path / "forged.json")))
        code, checks = doctor(bad, tmp_path / "conf", trusted)
        assert code == 1 and "invalid_grant" in checks["credentials"]["detail"]

        # a model the region does not serve
        unknown = tmp_path / "unknown.yaml"
        unknown.write_text(config.read_text().replace("gpt-4o-mini: claude-haiku-4-5@20251001",
                                                      "gpt-4o-mini: claude-nothing@1"))
        code, checks = doctor(unknown, tmp_path / "conf", trusted, "--live")
        assert code == 1 and not checks["model gpt-4o-mini"]["ok"] and "Model Garden" in checks["model gpt-4o-mini"]["fix"]

        # CA not trusted, proxy variables without NO_PROXY
        code, checks = doctor(config, tmp_path / "conf", {"HTTPS_PROXY": "http://127.0.0.1:8080"})
        assert code == 1 and not checks["CA trusted by Python/httpx"]["ok"]
        assert "modelmux certs" in checks["CA trusted by Python/httpx"]["fix"]
        assert not checks["proxy variables"]["ok"] and "NO_PROXY" in checks["proxy variables"]["fix"]
    finally:
        emu_proc.stop()

    # the emulator is down: credentials and reachability fail, each with its fix
    code, checks = doctor(config, tmp_path / "conf", trusted)
    assert code == 1 and not checks["vertex reachable"]["ok"] and "network" in checks["vertex reachable"]["fix"]
