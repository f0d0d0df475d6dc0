"""Google OAuth access tokens for Vertex AI, cached and refreshed off the event loop.

Sources, first match wins: a static token (`auth.access_token`, or env MODELMUX_ACCESS_TOKEN); the key file
`auth.credentials_file` (service account or authorized user); Application Default Credentials
(GOOGLE_APPLICATION_CREDENTIALS, gcloud's ADC file, the GCE metadata server).

The token is cached. A request never waits for a refresh while the cached token has more than
`REFRESH_MARGIN` seconds left; inside the margin one background refresh runs (single-flight) and requests keep
using the still-valid token. Only a missing or expired token makes requests wait, all on the same refresh.
google-auth is synchronous, so refreshes run in a worker thread: a blocking refresh in a hook would stall every
connection of the proxy.
"""

from __future__ import annotations

import asyncio
import datetime
import json
import logging
import os
import time
from dataclasses import dataclass

import google.auth
import google.auth.credentials
import google.auth.exceptions
import google.auth.transport
import google.oauth2.credentials
import google.oauth2.service_account
import httpx

from .config import AuthConfig

SCOPES = ("https://www.googleapis.com/auth/cloud-platform",)
REFRESH_MARGIN = 300.0  # seconds before expiry at which a background refresh starts
STATIC_TOKEN_ENV = "MODELMUX_ACCESS_TOKEN"

log = logging.getLogger(__name__)


class AuthError(RuntimeError):
    """No token could be obtained; the message says why and never contains a secret."""


class _Response(google.auth.transport.Response):
    def __init__(self, resp: httpx.Response):
        self._resp = resp

    @property
    def status(self) -> int:
        return self._resp.status_code

    @property
    def headers(self):
        return self._resp.headers

    @property
    def data(self) -> bytes:
        return self._resp.content


class HttpxRequest(google.auth.transport.Request):
    """google-auth transport on httpx. `trust_env=False`: modelmux's own environment often has HTTPS_PROXY
    pointing at modelmux itself, and a token request must never loop through the proxy."""

    def __init__(self, timeout: float = 30.0):
        self._client = httpx.Client(trust_env=False, timeout=timeout)

    def __call__(self, url, method="GET", body=None, headers=None, timeout=None, **kwargs):
        try:
            resp = self._client.request(method, url, content=body, headers=headers,
                                        timeout=timeout if timeout is not None else httpx.USE_CLIENT_DEFAULT)
        except httpx.HTTPError as err:
            raise google.auth.exceptions.TransportError(f"{type(err).__name__}: {err}") from err
        return _Response(resp)

    def close(self) -> None:
        self._client.close()


@dataclass(frozen=True)
class Token:
    value: str
    expires_at: float | None  # monotonic seconds; None = never expires (static token)

    def remaining(self, now: float) -> float:
        return float("inf") if self.expires_at is None else self.expires_at - now


def _expiry_to_monotonic(expiry: datetime.datetime | None) -> float | None:
    if expiry is None:
        return None
    # google-auth keeps expiry as naive UTC
    wall_left = (expiry.replace(tzinfo=datetime.timezone.utc) - datetime.datetime.now(datetime.timezone.utc)).total_seconds()
    return time.monotonic() + wall_left


class TokenProvider:
    def __init__(self, config: AuthConfig, environ: dict[str, str] | None = None):
        env = os.environ if environ is None else environ
        # a secret mounted as an env var or file often ends in a newline: never part of a header value
        static = (config.access_token or env.get(STATIC_TOKEN_ENV) or "").strip() or None
        self._static = Token(static, None) if static else None
        self._credentials_file = config.credentials_file
        self._credentials: google.auth.credentials.Credentials | None = None
        self._transport: HttpxRequest | None = None
        self._token: Token | None = self._static
        self._refreshing: asyncio.Task | None = None
        self.refreshes = 0  # how many tokens were fetched (metrics, tests)

    @property
    def source(self) -> str:
        if self._static:
            return "static access token"
        if self._credentials_file:
            return f"credentials file {self._credentials_file}"
        return "Application Default Credentials"

    async def token(self) -> str:
        tok = self._token
        now = time.monotonic()
        if tok is not None:
            left = tok.remaining(now)
            if left > REFRESH_MARGIN:
                return tok.value
            if left > 5.0:
                self._refresh_in_background()
                return tok.value
        return (await self._refresh()).value

    def invalidate(self) -> None:
        """Vertex rejected the token (401): the next request fetches a new one. A static token stays."""
        if self._static is None:
            self._token = None

    def _refresh_in_background(self) -> None:
        if self._refreshing is None or self._refreshing.done():
            task = asyncio.get_running_loop().create_task(self._refresh())
            # A failed background refresh is logged; the next request retries it in the foreground if needed.
            task.add_done_callback(lambda t: t.cancelled() or t.exception() and log.warning("token refresh failed: %s", t.exception()))

    async def _refresh(self) -> Token:
        if self._refreshing is None or self._refreshing.done():
            self._refreshing = asyncio.get_running_loop().create_task(asyncio.to_thread(self._refresh_blocking))
        # shield: one caller going away (client disconnect) must not cancel the refresh the others wait on
        return await asyncio.shield(self._refreshing)

    def _refresh_blocking(self) -> Token:
        if self._transport is None:
            self._transport = HttpxRequest()
        try:
            if self._credentials is None:
                self._credentials = self._load_credentials()
            self._credentials.refresh(self._transport)
        except google.auth.exceptions.DefaultCredentialsError as err:
            if self._credentials_file:
                raise AuthError(f"cannot load auth.credentials_file: {_safe(err)}") from None
            raise AuthError(f"no Google credentials found ({err}); set auth.credentials_file, "
                            f"GOOGLE_APPLICATION_CREDENTIALS or run `gcloud auth application-default login`") from None
        except google.auth.exceptions.GoogleAuthError as err:
            raise AuthError(f"could not obtain a Google access token from {self.source}: {_safe(err)}") from None
        except (OSError, ValueError) as err:
            raise AuthError(f"could not load {self.source}: {_safe(err)}") from None
        token = Token(self._credentials.token, _expiry_to_monotonic(self._credentials.expiry))
        self._token = token
        self.refreshes += 1
        return token

    def _load_credentials(self) -> google.auth.credentials.Credentials:
        if not self._credentials_file:
            creds, _ = google.auth.default(scopes=SCOPES, request=self._transport)
            return creds
        return load_key_file(os.path.expanduser(self._credentials_file))

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()


def load_key_file(path: str) -> google.auth.credentials.Credentials:
    """A service-account or authorized-user JSON file. Other credential types (external_account, …) are refused:
    google-auth's generic loader for them is deprecated as a security risk (a config file that runs commands
    or fetches arbitrary URLs); use Application Default Credentials for those."""
    with open(path, encoding="utf-8") as f:
        info = json.load(f)
    kind = info.get("type") if isinstance(info, dict) else None
    if kind == "service_account":
        return google.oauth2.service_account.Credentials.from_service_account_info(info, scopes=SCOPES)
    if kind == "authorized_user":
        return google.oauth2.credentials.Credentials.from_authorized_user_info(info, scopes=SCOPES)
    raise ValueError(f"unsupported credential type {kind!r} (expected service_account or authorized_user)")


def _safe(err: BaseException) -> str:
    """google-auth errors can carry the token endpoint's raw answer; keep only the first line, bounded."""
    text = str(err).splitlines()[0] if str(err) else type(err).__name__
    return text[:300]
