"""Google credentials and the OAuth token endpoint's memory: service-account keys and authorized-user files
minted for tests, JWT assertions checked the way oauth2.googleapis.com checks them, access tokens issued and
verified on the model endpoints."""

from __future__ import annotations

import base64
import binascii
import json
import secrets
import string
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from .errors import UNAUTHENTICATED_MESSAGE, google_error, oauth_error
from .jsontypes import is_number
from .settings import Settings

CLOUD_PLATFORM_SCOPE = "https://www.googleapis.com/auth/cloud-platform"
JWT_BEARER_GRANT = "urn:ietf:params:oauth:grant-type:jwt-bearer"
GOOGLE_TOKEN_URI = "https://oauth2.googleapis.com/token"
CLOCK_SKEW = 60  # seconds Google tolerates on a JWT's iat / exp
MAX_JWT_LIFETIME = 3600


@dataclass(frozen=True)
class TrustedKey:
    email: str
    public_key: rsa.RSAPublicKey


def new_service_account(project: str, token_uri: str) -> dict[str, str]:
    """A service-account key file's content, with a fresh RSA-2048 key, shaped like the ones IAM hands out."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption()).decode()
    email = f"modelmux@{project}.iam.gserviceaccount.com"
    return {
        "type": "service_account",
        "project_id": project,
        "private_key_id": secrets.token_hex(20),
        "private_key": pem,
        "client_email": email,
        "client_id": "".join(secrets.choice(string.digits[1:]) for _ in range(21)),
        "auth_uri": "https://accounts.google.com/o/oauth2/auth",
        "token_uri": token_uri,
        "auth_provider_x509_cert_url": "https://www.googleapis.com/oauth2/v1/certs",
        "client_x509_cert_url": f"https://www.googleapis.com/robot/v1/metadata/x509/{email.replace('@', '%40')}",
        "universe_domain": "googleapis.com",
    }


def new_authorized_user(token_uri: str) -> dict[str, str]:
    """What `gcloud auth application-default login` writes, with this emulator's token endpoint."""
    return {
        "type": "authorized_user",
        "client_id": f"{secrets.randbelow(10**12):012d}-emulator.apps.googleusercontent.com",
        "client_secret": "GOCSPX-" + secrets.token_urlsafe(21),
        "refresh_token": "1//emu-" + secrets.token_urlsafe(48),
        "token_uri": token_uri,
        "universe_domain": "googleapis.com",
    }


def trusted_key(info: dict[str, Any]) -> tuple[str, TrustedKey]:
    """(private_key_id, key) of a service-account key file's content."""
    try:
        private = serialization.load_pem_private_key(info["private_key"].encode(), password=None)
        kid, email = info["private_key_id"], info["client_email"]
    except (KeyError, AttributeError, ValueError, TypeError) as err:
        raise ValueError(f"not a service-account key: {type(err).__name__}: {err}") from None
    if not isinstance(private, rsa.RSAPrivateKey):
        raise ValueError("not a service-account key: the private key is not RSA")
    return kid, TrustedKey(email, private.public_key())


def _b64url_decode(part: str) -> bytes:
    return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))


@dataclass(frozen=True)
class IssuedToken:
    expires_at: float  # time.monotonic()
    scopes: frozenset[str]


class Authority:
    """The token endpoint's memory: trusted keys and refresh tokens in, access tokens out."""

    def __init__(self, settings: Settings, accept_tokens: Iterable[str] = ()):
        self._settings = settings
        self._keys: dict[str, TrustedKey] = {}
        self._refresh_clients: dict[str, tuple[str, str]] = {}  # refresh_token → (client_id, client_secret)
        self._static = frozenset(accept_tokens)
        self._issued: dict[str, IssuedToken] = {}

    def trust_service_account(self, info: dict[str, Any]) -> None:
        kid, key = trusted_key(info)
        self._keys[kid] = key

    def trust_authorized_user(self, info: dict[str, str]) -> None:
        self._refresh_clients[info["refresh_token"]] = (info["client_id"], info["client_secret"])

    def grant_jwt(self, assertion: str, audiences: list[str]) -> dict[str, Any]:
        return self._issue(self._verify_assertion(assertion, audiences))

    def grant_refresh(self, client_id: str, client_secret: str, refresh_token: str, scope: str) -> dict[str, Any]:
        client = self._refresh_clients.get(refresh_token)
        if client is None:
            raise oauth_error("invalid_grant", "Bad Request")
        if client != (client_id, client_secret):
            raise oauth_error("invalid_client", "Unauthorized", status=401)
        return self._issue(frozenset(scope.split()) or frozenset({CLOUD_PLATFORM_SCOPE}))

    def check_access(self, token: str) -> None:
        """Raise the Google error Vertex answers for a missing, unknown, expired or under-scoped token."""
        if token in self._static:
            return
        issued = self._issued.get(token)
        if issued is None or issued.expires_at <= time.monotonic():
            err = google_error(401, UNAUTHENTICATED_MESSAGE)
            err.headers["WWW-Authenticate"] = 'Bearer realm="https://accounts.google.com/"'
            raise err
        if CLOUD_PLATFORM_SCOPE not in issued.scopes:
            raise google_error(403, "Request had insufficient authentication scopes.")

    def _issue(self, scopes: frozenset[str]) -> dict[str, Any]:
        now = time.monotonic()
        self._issued = {t: i for t, i in self._issued.items() if i.expires_at > now}  # forget expired tokens
        token = "ya29.emu-" + secrets.token_urlsafe(32)
        ttl = self._settings.token_ttl
        self._issued[token] = IssuedToken(now + ttl, scopes)
        return {"access_token": token, "expires_in": ttl, "token_type": "Bearer"}

    def _verify_assertion(self, assertion: str, audiences: list[str]) -> frozenset[str]:
        """Check a service account's signed JWT the way oauth2.googleapis.com does; return its scopes."""
        try:
            header_part, payload_part, signature_part = assertion.split(".")
            header = json.loads(_b64url_decode(header_part))
            claims = json.loads(_b64url_decode(payload_part))
            signature = _b64url_decode(signature_part)
        except (ValueError, binascii.Error):
            raise oauth_error("invalid_grant", "Invalid JWT: Malformed.") from None
        if not isinstance(header, dict) or not isinstance(claims, dict):
            raise oauth_error("invalid_grant", "Invalid JWT: Malformed.")
        if claims.get("iss") not in {key.email for key in self._keys.values()}:
            raise oauth_error("invalid_grant", "Invalid grant: account not found")
        key = self._keys.get(header.get("kid"))
        if header.get("alg") != "RS256" or key is None or key.email != claims["iss"]:
            raise oauth_error("invalid_grant", "Invalid JWT Signature.")
        try:
            key.public_key.verify(signature, f"{header_part}.{payload_part}".encode(), padding.PKCS1v15(),
                                  hashes.SHA256())
        except InvalidSignature:
            raise oauth_error("invalid_grant", "Invalid JWT Signature.") from None
        if not _reasonable_times(claims.get("iat"), claims.get("exp")):
            raise oauth_error("invalid_grant", "Invalid JWT: Token must be a short-lived token (60 minutes) and in a "
                                               "reasonable timeframe. Check your iat and exp values in the JWT claim.")
        if claims.get("aud") not in audiences:
            raise oauth_error("invalid_grant", f"Invalid JWT: Failed audience check. The right audience is "
                                               f"{audiences[0]}")
        scope = claims.get("scope")
        if not isinstance(scope, str) or not scope.split():
            raise oauth_error("invalid_scope", "Invalid OAuth scope or ID token audience provided.")
        return frozenset(scope.split())


def _reasonable_times(iat: object, exp: object) -> bool:
    if not all(is_number(v) for v in (iat, exp)):
        return False
    now = time.time()
    return iat - CLOCK_SKEW <= now < exp + CLOCK_SKEW and 0 < exp - iat <= MAX_JWT_LIFETIME
