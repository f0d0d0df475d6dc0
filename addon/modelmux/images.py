"""Fetching http(s) image URLs so they can be inlined as base64 (Vertex accepts no URL sources).

Guards, because the URL comes from the client and the fetch runs on the proxy's network:
- only http/https; every address the host resolves to must be public (no loopback, private, link-local,
  reserved or multicast ranges) unless `images.allow_private_networks` is set; redirects are followed by
  hand (at most 3) and each target is checked again;
- the body is read with a size cap and must be a PNG, JPEG, GIF or WebP image (checked on its bytes, not
  only on the content-type the server claims).
Any failure is an OpenAI 400 naming the URL, before anything is sent to Vertex.
"""

from __future__ import annotations

import asyncio
import base64
import ipaddress
import socket
from urllib.parse import urljoin, urlsplit

import httpx

from .config import ImagesConfig
from .translate.errors import OpenAIError, invalid_request

MAX_REDIRECTS = 3


def sniff_image(data: bytes) -> str | None:
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if data.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if data.startswith((b"GIF87a", b"GIF89a")):
        return "image/gif"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    return None


def _is_public(address: str) -> bool:
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped:
        ip = ip.ipv4_mapped
    return ip.is_global and not ip.is_multicast


async def _check_host(url: str, settings: ImagesConfig) -> None:
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:  # a bad port or IPv6 literal (also in a redirect's location)
        raise invalid_request(f"Image URL {url[:200]} is not a valid URL.") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise invalid_request(f"Image URL {url[:200]} is not an http(s) URL.")
    if settings.allow_private_networks:
        return
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(parts.hostname, port or 443,
                                                            type=socket.SOCK_STREAM)
    except OSError:
        raise invalid_request(f"Image URL {url[:200]}: the host cannot be resolved.") from None
    if not infos or not all(_is_public(info[4][0]) for info in infos):
        raise invalid_request(f"Image URL {url[:200]}: private, loopback and link-local addresses are not fetched.")


async def _fetch_one(client: httpx.AsyncClient, url: str, settings: ImagesConfig) -> tuple[str, str]:
    target = url
    for _ in range(MAX_REDIRECTS + 1):
        await _check_host(target, settings)
        try:
            async with client.stream("GET", target) as resp:
                if resp.is_redirect and "location" in resp.headers:
                    target = urljoin(target, resp.headers["location"])
                    continue
                if resp.status_code != 200:
                    raise invalid_request(f"Image URL {url[:200]} answered HTTP {resp.status_code}.")
                declared = resp.headers.get("content-length")
                if declared and declared.isdigit() and int(declared) > settings.max_bytes:
                    raise _too_large(url, settings)
                data = bytearray()
                async for piece in resp.aiter_bytes():
                    data += piece
                    if len(data) > settings.max_bytes:
                        raise _too_large(url, settings)
        except httpx.HTTPError as err:
            raise invalid_request(f"Image URL {url[:200]} could not be fetched: {type(err).__name__}.") from None
        media = sniff_image(bytes(data))
        if media is None:
            raise invalid_request(f"Image URL {url[:200]} is not a PNG, JPEG, GIF or WebP image "
                                  f"(content-type {resp.headers.get('content-type', 'none')}).")
        return media, base64.b64encode(data).decode()
    raise invalid_request(f"Image URL {url[:200]}: more than {MAX_REDIRECTS} redirects.")


def _too_large(url: str, settings: ImagesConfig) -> OpenAIError:
    return OpenAIError(400, f"Image URL {url[:200]} is larger than {settings.max_bytes} bytes.",
                       "invalid_request_error", None, "image_too_large")


async def fetch_images(urls: list[str], settings: ImagesConfig) -> dict[str, tuple[str, str]]:
    """url → (media_type, base64) for each distinct URL, fetched concurrently. Raises OpenAIError (400)."""
    unique = list(dict.fromkeys(urls))
    if not settings.fetch:
        raise invalid_request("Image URLs are not fetched by this modelmux (images.fetch is off): send images as "
                              "base64 data: URLs.", code="unsupported_parameter")
    # trust_env=False: the proxy's own HTTPS_PROXY may point at itself
    async with httpx.AsyncClient(trust_env=False, follow_redirects=False, timeout=settings.timeout_seconds,
                                 headers={"user-agent": "modelmux-image-fetch"}) as client:
        results = await asyncio.gather(*(_fetch_one(client, u, settings) for u in unique))
    return dict(zip(unique, results))
