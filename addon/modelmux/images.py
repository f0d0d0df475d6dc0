"""Fetching http(s) image URLs so they can be inlined as base64 (Vertex accepts no URL sources).

Guards, because the URL comes from the client and the fetch runs on the proxy's network:
- only http/https; every address the host resolves to must be public (no loopback, private, link-local,
  reserved or multicast ranges, nor an IPv6 form carrying such an IPv4 address: addresses.py) unless
  `images.allow_private_networks` is set;
- the connection goes to the address that was vetted, never to a second resolution (a DNS answer that changes
  between the check and the connect — rebinding — cannot reach a private address): the URL is rewritten to that
  address, with the original `Host` header and, for https, the original name for SNI and certificate checks;
- no connection is reused (a pooled connection to the same address could carry another name's request under
  the first name's certificate);
- redirects are followed by hand (at most 3) and each target is resolved and vetted again;
- at most `images.max_per_request` distinct URLs per request, each body at most `images.max_bytes`, all of them
  together at most `images.max_total_bytes` (so the request stays under Vertex's 30 MB once base64-encoded);
  the bytes must be a PNG, JPEG, GIF or WebP image (checked on the bytes, not on the content-type claimed);
- the body is asked for uncompressed (`accept-encoding: identity`); a server that compresses it anyway (gzip,
  deflate, br, zstd) has it decoded a step at a time (decoding.py), the caps counted on the decoded bytes as
  they come out — a few kB of gzip that would inflate to gigabytes stop at the cap;
- each image's whole fetch (its redirects included) must be done within `images.timeout_seconds`, which also
  bounds each connect and read: a server sending a byte every few seconds cannot hold the request longer.
Any failure is an OpenAI 400 naming the URL and its parameter, before anything is sent to Vertex; the first
failure cancels the other fetches of the request.
"""

from __future__ import annotations

import asyncio
import base64
import socket
import ssl
from collections.abc import Awaitable, Callable
from urllib.parse import urljoin

import httpx

from .addresses import non_global
from .config import ImagesConfig
from .decoding import Decoder, Undecodable, codings
from .translate.errors import OpenAIError, invalid_request

MAX_REDIRECTS = 3
MAX_ADDRESSES = 4  # vetted addresses tried in turn when a connection is refused (IPv6 first, then IPv4, …)

Resolver = Callable[[str, int], Awaitable[list[str]]]  # (host, port) → addresses, in the order to try


async def system_resolver(host: str, port: int) -> list[str]:
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


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


class _Fetch:
    """One request's image fetches: its settings, its resolver, what its images may still add up to."""

    def __init__(self, client: httpx.AsyncClient, settings: ImagesConfig, resolve: Resolver):
        self.client, self.settings, self.resolve = client, settings, resolve
        self.bytes_left = settings.max_total_bytes

    def error(self, url: str, what: str, code: str | None = None) -> OpenAIError:
        return invalid_request(f"Image URL {url[:200]} {what}", param=getattr(url, "param", None), code=code)

    async def vetted(self, url: str, target: str) -> tuple[httpx.URL, list[str]]:
        """The target as a URL and the addresses it may be fetched from."""
        try:
            parsed = httpx.URL(target)
            port = parsed.port or (443 if parsed.scheme == "https" else 80)
        except (httpx.InvalidURL, ValueError):  # a bad port or IPv6 literal (also in a redirect's location)
            raise self.error(url, "is not a valid URL.") from None
        if parsed.scheme not in ("http", "https") or not parsed.raw_host:
            raise self.error(url, "is not an http(s) URL.")
        try:
            addresses = await self.resolve(parsed.raw_host.decode("ascii"), port)
        except (OSError, UnicodeError):
            addresses = []
        if not addresses:
            raise self.error(url, "cannot be fetched: the host cannot be resolved.")
        if not self.settings.allow_private_networks and any(non_global(a) for a in addresses):
            raise self.error(url, "is not fetched: private, loopback and link-local addresses are not fetched.")
        return parsed, addresses[:MAX_ADDRESSES]

    def pinned(self, target: httpx.URL, address: str) -> httpx.Request:
        """A GET of `target` sent to `address`: the Host header and (https) the SNI / certificate name stay the
        target's own, so no second name resolution happens anywhere."""
        extensions = {"sni_hostname": target.raw_host.decode("ascii")} if target.scheme == "https" else {}
        return self.client.build_request("GET", target.copy_with(host=address.split("%", 1)[0], userinfo=b""),
                                         headers={"host": target.netloc.decode("ascii")}, extensions=extensions)

    async def one(self, url: str) -> tuple[str, str]:
        target = str(url)
        for _ in range(MAX_REDIRECTS + 1):
            parsed, addresses = await self.vetted(url, target)
            resp = await self.connect(url, parsed, addresses)
            try:
                if resp.is_redirect and "location" in resp.headers:
                    target = urljoin(target, resp.headers["location"])
                    continue
                if resp.status_code != 200:
                    raise self.error(url, f"answered HTTP {resp.status_code}.")
                data = await self.body(url, resp)
            except httpx.HTTPError as err:
                raise self.error(url, f"could not be fetched: {type(err).__name__}.") from None
            finally:
                await resp.aclose()
            media = sniff_image(bytes(data))
            if media is None:
                raise self.error(url, f"is not a PNG, JPEG, GIF or WebP image (content-type "
                                      f"{resp.headers.get('content-type', 'none')}).")
            return media, base64.b64encode(data).decode()
        raise self.error(url, f"led to more than {MAX_REDIRECTS} redirects.")

    async def connect(self, url: str, target: httpx.URL, addresses: list[str]) -> httpx.Response:
        for i, address in enumerate(addresses):
            try:
                return await self.client.send(self.pinned(target, address), stream=True)
            except httpx.ConnectError:
                if i == len(addresses) - 1:
                    raise self.error(url, "could not be fetched: ConnectError.") from None
            except httpx.HTTPError as err:
                raise self.error(url, f"could not be fetched: {type(err).__name__}.") from None
        raise AssertionError("unreachable: vetted() returns at least one address")

    async def body(self, url: str, resp: httpx.Response) -> bytearray:
        coded = codings(resp.headers.get("content-encoding", ""))
        if len(coded) > 1:
            raise self.error(url, f"answered with content-encoding {resp.headers['content-encoding'][:60]!r}, "
                                  "which is not decoded.")
        try:
            decoder = Decoder(coded[0]) if coded else None
        except Undecodable as err:
            raise self.error(url, f"could not be decoded: {err}.") from None
        declared = resp.headers.get("content-length")
        if decoder is None and declared and declared.isdigit():
            self.check(url, int(declared), int(declared))
        data = bytearray()
        try:
            # raw: httpx's own decoding inflates a whole read at once, unbounded
            async for piece in resp.aiter_raw():
                if decoder is not None:  # stops a step past what either cap still allows
                    piece = decoder.feed(piece, min(self.settings.max_bytes - len(data), self.bytes_left))
                data += piece
                self.check(url, len(data), len(piece))
                self.bytes_left -= len(piece)  # shared by the request's fetches, which run on one event loop
            if decoder is not None:
                decoder.finish()
        except Undecodable as err:
            raise self.error(url, f"could not be decoded: {err}.") from None
        return data

    def check(self, url: str, size: int, more: int) -> None:
        if size > self.settings.max_bytes:
            raise self.too_large(url)
        if more > self.bytes_left:
            raise self.error(url, f"cannot be fetched: the images of this request add up to more than "
                                  f"{self.settings.max_total_bytes} bytes (images.max_total_bytes).",
                             "images_too_large")

    def too_large(self, url: str) -> OpenAIError:
        return OpenAIError(400, f"Image URL {url[:200]} is larger than {self.settings.max_bytes} bytes.",
                           "invalid_request_error", getattr(url, "param", None), "image_too_large")


async def fetch_images(urls: list[str], settings: ImagesConfig, *, resolve: Resolver = system_resolver,
                       ssl_context: ssl.SSLContext | None = None) -> dict[str, tuple[str, str]]:
    """url → (media_type, base64) for each distinct URL, fetched concurrently. Raises OpenAIError (400), naming
    the URL's parameter when it carries one (translate.request.ImageSource). `resolve` and `ssl_context`
    (default: the system resolver, certifi's roots) exist for tests of the pinning."""
    unique = list(dict.fromkeys(urls))
    if not settings.fetch:
        raise invalid_request("Image URLs are not fetched by this modelmux (images.fetch is off): send images as "
                              "base64 data: URLs.", param=getattr(unique[0], "param", None) if unique else None,
                              code="unsupported_parameter")
    if len(unique) > settings.max_per_request:
        extra = unique[settings.max_per_request]
        raise invalid_request(f"This request has {len(unique)} image URLs to fetch; modelmux fetches at most "
                              f"{settings.max_per_request} per request (images.max_per_request). Send the others as "
                              f"base64 data: URLs.", param=getattr(extra, "param", None), code="too_many_images")
    # trust_env=False: the proxy's own HTTPS_PROXY may point at itself; no keep-alive: see the module docstring
    async with httpx.AsyncClient(trust_env=False, follow_redirects=False, timeout=settings.timeout_seconds,
                                 verify=ssl_context or True, limits=httpx.Limits(max_keepalive_connections=0),
                                 headers={"user-agent": "modelmux-image-fetch",
                                          "accept-encoding": "identity"}) as client:
        fetch = _Fetch(client, settings, resolve)

        async def within_deadline(url: str) -> tuple[str, str]:
            # httpx's timeout is per connect / read: a byte every few seconds would never trip it
            try:
                async with asyncio.timeout(settings.timeout_seconds):
                    return await fetch.one(url)
            except TimeoutError:
                raise fetch.error(url, f"could not be fetched within {settings.timeout_seconds:g} s "
                                       "(images.timeout_seconds).") from None

        try:
            async with asyncio.TaskGroup() as group:  # the first failure cancels the others
                tasks = [group.create_task(within_deadline(u)) for u in unique]
        except ExceptionGroup as failed:
            if all(isinstance(e, OpenAIError) for e in failed.exceptions):
                raise failed.exceptions[0] from None
            raise
    return {u: t.result() for u, t in zip(unique, tasks)}
