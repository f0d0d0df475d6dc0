"""TokenProvider against the emulator's real OAuth endpoint, with real google-auth service-account JWTs."""

import asyncio
import json

import pytest

import procs
from modelmux.auth import AuthError, TokenProvider
from modelmux.config import AuthConfig


@pytest.fixture(scope="module")
def short_lived(tmp_path_factory):
    """Tokens that live 200 s: always inside the 300 s refresh margin."""
    proc, url, key = procs.emulator(tmp_path_factory.mktemp("auth"), "--token-ttl", "200")
    yield key
    proc.stop()


async def test_static_token_needs_no_network():
    assert await TokenProvider(AuthConfig(access_token="static-1")).token() == "static-1"
    assert await TokenProvider(AuthConfig(), environ={"MODELMUX_ACCESS_TOKEN": "from-env"}).token() == "from-env"


async def test_a_static_token_from_a_mounted_secret_loses_its_newline():
    assert await TokenProvider(AuthConfig(access_token="ya29.static\n")).token() == "ya29.static"
    assert await TokenProvider(AuthConfig(), {"MODELMUX_ACCESS_TOKEN": " ya29.env\r\n"}).token() == "ya29.env"


async def test_concurrent_requests_share_one_refresh(short_lived, monkeypatch):
    # a proxy variable pointing nowhere (as when HTTPS_PROXY names modelmux itself): token requests ignore it
    monkeypatch.setenv("HTTPS_PROXY", "http://127.0.0.1:9")
    monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:9")
    tokens = TokenProvider(AuthConfig(credentials_file=str(short_lived)))
    got = await asyncio.gather(*(tokens.token() for _ in range(20)))
    assert len(set(got)) == 1 and got[0].startswith("ya29.") and tokens.refreshes == 1
    tokens.close()


async def test_inside_the_margin_the_cached_token_is_served_while_one_refresh_runs(short_lived):
    tokens = TokenProvider(AuthConfig(credentials_file=str(short_lived)))
    first = await tokens.token()
    assert tokens.refreshes == 1
    again = await asyncio.gather(*(tokens.token() for _ in range(10)))  # no waiting: the old token is valid
    assert set(again) == {first}
    for _ in range(100):  # the background refresh lands within a few ms; bounded wait
        if tokens.refreshes == 2:
            break
        await asyncio.sleep(0.02)
    assert tokens.refreshes == 2 and await tokens.token() != first
    tokens.close()


async def test_untrusted_key_is_a_clear_error_without_secrets(short_lived, tmp_path):
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    info = json.loads(short_lived.read_text())
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    info["private_key"] = other.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                              serialization.NoEncryption()).decode()
    forged = tmp_path / "forged.json"
    forged.write_text(json.dumps(info))
    tokens = TokenProvider(AuthConfig(credentials_file=str(forged)))
    with pytest.raises(AuthError) as err:
        await tokens.token()
    assert "invalid_grant" in str(err.value) and "PRIVATE KEY" not in str(err.value)
    with pytest.raises(AuthError, match="cannot|could not"):
        await TokenProvider(AuthConfig(credentials_file=str(tmp_path / "missing.json"))).token()


def test_key_file_types(tmp_path):
    import google.oauth2.credentials

    from modelmux.auth import load_key_file

    user = tmp_path / "adc.json"
    user.write_text(json.dumps({"type": "authorized_user", "client_id": "c", "client_secret": "s",
                                "refresh_token": "r"}))
    assert isinstance(load_key_file(str(user)), google.oauth2.credentials.Credentials)
    ext = tmp_path / "ext.json"
    ext.write_text(json.dumps({"type": "external_account", "credential_source": {"executable": {"command": "x"}}}))
    with pytest.raises(ValueError, match="external_account"):
        load_key_file(str(ext))
