"""Sealed blobs: state modelmux hands to the client and must get back unchanged (`encrypted_content`).

A reasoning item carries Claude's thinking blocks (their text and signature, or redacted data) so the next
request can send them back to Vertex exactly as Claude produced them — the tool loop of a thinking model
requires that — without modelmux keeping any state; a compaction item carries a conversation summary.

Format: `modelmux:` + base64url( version byte | 12-byte nonce | AES-256-GCM( zlib(JSON payload) ) ). The
prefix tells our blobs from OpenAI's (`gAAAA…`, Fernet) and any other; the additional authenticated data binds
the prefix, the version and the blob's kind, so a reasoning blob cannot pass as a compaction one. A blob that
has our prefix but does not decrypt under any of the deployment's keys is tampered (or from another
deployment): that is an error for the caller to report, never a silent drop.

Keys are 32 bytes (the lead's config loads or generates them). Several keys may be given: the first seals,
all are tried when unsealing, so a deployment can rotate keys without breaking conversations in flight.
"""

from __future__ import annotations

import base64
import binascii
import functools
import json
import os
import zlib
from collections.abc import Sequence
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

PREFIX = "modelmux:"
VERSION = 1
KEY_BYTES = 32
_NONCE = 12
# Bounds: a thinking block is at most ~64k tokens and a compaction summary a Claude answer (≤128k tokens,
# ~0.5 MB of text); 8 MiB of JSON leaves room and keeps a hostile blob from costing memory.
MAX_PAYLOAD_BYTES = 8 * 2**20
MAX_SEALED_CHARS = len(PREFIX) + (MAX_PAYLOAD_BYTES + 64) * 4 // 3 + 4

Keys = bytes | Sequence[bytes]


class SealError(Exception):
    """The blob cannot be unsealed."""


class ForeignBlob(SealError):
    """Not one of ours (no modelmux prefix): e.g. OpenAI's own encrypted reasoning."""


class TamperedBlob(SealError):
    """Looks like ours but fails authentication or decoding: altered, truncated, or sealed under another key."""


def generate_key() -> bytes:
    return os.urandom(KEY_BYTES)


def parse_key(text: str) -> bytes:
    """A 32-byte key written as 64 hex digits or base64 (standard or url-safe, padded or not)."""
    text = text.strip()
    candidates = []
    if len(text) == 2 * KEY_BYTES:
        try:
            candidates.append(bytes.fromhex(text))
        except ValueError:
            pass
    for decode in (base64.b64decode, base64.urlsafe_b64decode):
        try:
            candidates.append(decode(text + "=" * (-len(text) % 4)))
        except (binascii.Error, ValueError):
            pass
    for key in candidates:
        if len(key) == KEY_BYTES:
            return key
    raise ValueError(f"a sealing key must be {KEY_BYTES} bytes, written as hex or base64")


def is_ours(blob: Any) -> bool:
    return isinstance(blob, str) and blob.startswith(PREFIX)


def seal(kind: str, payload: dict[str, Any], key: Keys) -> str:
    data = json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode("utf-8", "surrogatepass")
    if len(data) > MAX_PAYLOAD_BYTES:
        raise SealError(f"payload of {len(data)} bytes exceeds the {MAX_PAYLOAD_BYTES}-byte limit")
    nonce = os.urandom(_NONCE)
    sealed = _aead(_keys(key)[0]).encrypt(nonce, zlib.compress(data, 1), _aad(kind))
    return PREFIX + base64.urlsafe_b64encode(bytes([VERSION]) + nonce + sealed).rstrip(b"=").decode("ascii")


def unseal(blob: str, key: Keys, kind: str) -> dict[str, Any]:
    if not is_ours(blob):
        raise ForeignBlob("not sealed by modelmux")
    if len(blob) > MAX_SEALED_CHARS:
        raise TamperedBlob("sealed blob is larger than any modelmux seals")
    body = blob[len(PREFIX):]
    try:
        raw = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
    except (binascii.Error, ValueError):
        raise TamperedBlob("sealed blob is not valid base64url") from None
    if len(raw) < 1 + _NONCE + 16 or raw[0] != VERSION:
        raise TamperedBlob("sealed blob has an unknown version or is truncated")
    nonce, sealed = raw[1:1 + _NONCE], raw[1 + _NONCE:]
    for k in _keys(key):
        try:
            compressed = _aead(k).decrypt(nonce, sealed, _aad(kind))
            break
        except InvalidTag:
            continue
    else:
        raise TamperedBlob("sealed blob failed authentication")
    try:
        inflater = zlib.decompressobj()
        data = inflater.decompress(compressed, MAX_PAYLOAD_BYTES + 1)
        if len(data) > MAX_PAYLOAD_BYTES or inflater.unconsumed_tail:
            raise TamperedBlob("sealed payload exceeds the size limit")
        payload = json.loads(data)
    except (zlib.error, ValueError, UnicodeDecodeError):
        raise TamperedBlob("sealed payload is unreadable") from None
    if not isinstance(payload, dict):
        raise TamperedBlob("sealed payload is not an object")
    return payload


def _aad(kind: str) -> bytes:
    return f"{PREFIX}{VERSION}:{kind}".encode()


def _keys(key: Keys) -> Sequence[bytes]:
    keys = [bytes(key)] if isinstance(key, (bytes, bytearray)) else [bytes(k) for k in key]
    if not keys or any(len(k) != KEY_BYTES for k in keys):
        raise ValueError(f"sealing keys must be {KEY_BYTES} bytes")
    return keys


@functools.lru_cache(maxsize=8)
def _aead(key: bytes) -> AESGCM:
    return AESGCM(key)
