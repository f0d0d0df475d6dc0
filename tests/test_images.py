"""Image URLs are fetched and inlined (pain 7): real HTTP and HTTPS on loopback, with the guards that protect the
proxy's network (the loopback server is reachable only because these tests allow private networks explicitly):
the address vetted is the one connected to (issue 10, point 8: a resolver that answers differently the second
time changes nothing; https keeps SNI and certificate checks for the URL's name), and per-request caps."""

import asyncio
import base64
import contextlib
import datetime
import gzip
import http.server
import json
import ssl
import threading
import tracemalloc
import zlib

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from modelmux.config import ImagesConfig, parse_config
from modelmux.images import fetch_images, sniff_image
from modelmux.translate.errors import OpenAIError
from modelmux.translate.request import VERTEX_MAX_REQUEST_BYTES, parse_request, to_vertex_body

PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 64
ROUTES = {
    "/cat.png": (200, "image/png", PNG),
    "/mislabelled": (200, "image/png", b"<html>not an image</html>"),
    "/big.png": (200, "image/png", PNG + b"\x00" * 5000),
    "/missing": (404, "text/plain", b"nope"),
}


def _gzip_bomb(inflated: int) -> bytes:
    """A PNG signature and `inflated` zero bytes, as gzip: about a thousandth of that on the wire."""
    z = zlib.compressobj(9, zlib.DEFLATED, 31)
    zeros = bytes(1 << 20)
    return b"".join([z.compress(PNG), *(z.compress(zeros) for _ in range(inflated >> 20)), z.flush()])


# answered compressed whatever the request asked for (content-encoding, body)
ENCODED_ROUTES = {
    "/gzip.png": ("gzip", gzip.compress(PNG)),
    "/bomb.png": ("gzip", _gzip_bomb(64 << 20)),
    "/corrupt.png": ("gzip", gzip.compress(PNG)[:-8] + b"garbage!"),
    "/compress.png": ("compress", PNG),
}
ACCEPT_ENCODINGS: list[str | None] = []  # the accept-encoding of each request the image server got


@contextlib.contextmanager
def image_server(tls: ssl.SSLContext | None = None):
    """A loopback image server; yields its base URL and the list of (Host header, path) it was asked for."""
    seen: list[tuple[str, str]] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            seen.append((self.headers.get("host"), self.path))
            ACCEPT_ENCODINGS.append(self.headers.get("accept-encoding"))
            if self.path in ENCODED_ROUTES:
                coding, data = ENCODED_ROUTES[self.path]
                self.send_response(200)
                self.send_header("content-type", "image/png")
                self.send_header("content-encoding", coding)
                if self.path != "/bomb.png":  # the bomb's end is the connection's: no length to refuse it by
                    self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
                return
            if self.path == "/redirect":
                self.send_response(302)
                self.send_header("location", "/cat.png")
                self.send_header("content-length", "0")
                self.end_headers()
                return
            status, ctype, data = ROUTES.get(self.path.split("?", 1)[0], (404, "text/plain", b""))
            self.send_response(status)
            self.send_header("content-type", ctype)
            self.send_header("content-length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    if tls is not None:
        server.socket = tls.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
    thread.start()
    try:
        yield f"{'https' if tls else 'http'}://127.0.0.1:{server.server_address[1]}", seen
    finally:
        server.shutdown()
        server.server_close()


LOCAL = ImagesConfig(allow_private_networks=True, max_bytes=1000, timeout_seconds=5)


async def test_pain7_fetched_and_inlined_with_redirects():
    with image_server() as (base, _):
        got = await fetch_images([f"{base}/cat.png", f"{base}/redirect", f"{base}/cat.png"], LOCAL)
    assert set(got) == {f"{base}/cat.png", f"{base}/redirect"}
    assert got[f"{base}/redirect"] == ("image/png", base64.b64encode(PNG).decode())


@pytest.mark.parametrize("path, fragment", [
    ("/mislabelled", "not a PNG, JPEG, GIF or WebP"),
    ("/big.png", "larger than 1000 bytes"),
    ("/missing", "HTTP 404"),
])
async def test_pain7_bad_images_are_a_400(path, fragment):
    with image_server() as (base, _):
        with pytest.raises(OpenAIError) as err:
            await fetch_images([base + path], LOCAL)
    assert err.value.status == 400 and fragment in err.value.message


async def test_pain7_loopback_and_private_addresses_are_refused_by_default():
    with image_server() as (base, _):
        for url in (f"{base}/cat.png", "http://localhost:1/x.png", "http://10.1.2.3/x.png", "http://[::1]/x.png",
                    "http://169.254.169.254/latest/meta-data"):
            with pytest.raises(OpenAIError) as err:
                await fetch_images([url], ImagesConfig())
            assert "not fetched" in err.value.message, url
    with pytest.raises(OpenAIError, match="images.fetch is off"):
        await fetch_images(["https://example.com/a.png"], ImagesConfig(fetch=False))


def test_sniffing():
    assert sniff_image(PNG) == "image/png" and sniff_image(b"\xff\xd8\xff\xe0") == "image/jpeg"
    assert sniff_image(b"GIF89a..") == "image/gif" and sniff_image(b"RIFF\x00\x00\x00\x00WEBPVP8 ") == "image/webp"
    assert sniff_image(b"%PDF-1.4") is None


# --- the vetted address is the one connected to ---------------------------------------------------------------

class Resolver:
    """A name server of the test's own: `answers` in turn (the last one repeated), every question recorded."""

    def __init__(self, *answers: list[str]):
        self.answers, self.asked = list(answers), []

    async def __call__(self, host: str, port: int) -> list[str]:
        self.asked.append(host)
        return self.answers[min(len(self.asked), len(self.answers)) - 1]


def _port(base: str) -> int:
    return int(base.rsplit(":", 1)[1])


async def test_the_vetted_address_is_the_one_connected_to():
    """img.test exists only in this resolver, which answers 127.0.0.1 once and then 127.0.0.2 (where nothing
    listens): the fetch works only if the HTTP client connects to the first answer and resolves nothing itself."""
    resolver = Resolver(["127.0.0.1"], ["127.0.0.2"])
    with image_server() as (base, seen):
        url = f"http://img.test:{_port(base)}/cat.png"
        got = await fetch_images([url], LOCAL, resolve=resolver)
    assert got[url] == ("image/png", base64.b64encode(PNG).decode())
    assert resolver.asked == ["img.test"]
    assert seen == [(f"img.test:{_port(base)}", "/cat.png")]  # the URL's own Host header, not the address


async def test_each_redirect_is_resolved_and_vetted_again():
    resolver = Resolver(["127.0.0.1"])
    with image_server() as (base, seen):
        url = f"http://img.test:{_port(base)}/redirect"
        await fetch_images([url], LOCAL, resolve=resolver)
    assert resolver.asked == ["img.test", "img.test"] and [p for _, p in seen] == ["/redirect", "/cat.png"]


@pytest.mark.parametrize("answer", [["127.0.0.1"], ["10.0.0.7"], ["169.254.169.254"], ["fd00::1"],
                                    ["8.8.8.8", "127.0.0.1"]])
async def test_a_name_resolving_to_a_private_address_is_refused_before_any_connection(answer):
    resolver = Resolver(answer)
    with image_server() as (base, seen):
        with pytest.raises(OpenAIError) as err:
            await fetch_images([f"http://img.test:{_port(base)}/cat.png"], ImagesConfig(), resolve=resolver)
    assert "not fetched" in err.value.message and seen == []


def _certificate(tmp_path, name: str) -> tuple[str, str]:
    """A self-signed certificate for the DNS name `name` (its own root), as PEM files."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(hours=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
            .sign(key, hashes.SHA256()))
    cert_file, key_file = tmp_path / f"{name}.pem", tmp_path / f"{name}.key"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return str(cert_file), str(key_file)


def _tls_server_context(cert: str, key: str, sni: list[str]) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    ctx.sni_callback = lambda sock, name, _ctx: sni.append(name)
    return ctx


async def test_https_to_the_vetted_address_keeps_sni_and_the_certificate_check_for_the_name(tmp_path):
    cert, key = _certificate(tmp_path, "img.test")
    trust = ssl.create_default_context(cafile=cert)
    sni: list[str] = []
    with image_server(_tls_server_context(cert, key, sni)) as (base, seen):
        url = f"https://img.test:{_port(base)}/cat.png"
        got = await fetch_images([url], LOCAL, resolve=Resolver(["127.0.0.1"], ["127.0.0.2"]), ssl_context=trust)
    assert got[url][0] == "image/png" and sni == ["img.test"] and seen[0][0] == f"img.test:{_port(base)}"

    # the server's certificate is for another name: refused, although the address is the one resolved
    other, other_key = _certificate(tmp_path, "other.test")
    with image_server(_tls_server_context(other, other_key, [])) as (base, seen):
        with pytest.raises(OpenAIError, match="could not be fetched") as err:
            await fetch_images([f"https://img.test:{_port(base)}/cat.png"], LOCAL, resolve=Resolver(["127.0.0.1"]),
                               ssl_context=ssl.create_default_context(cafile=other))
    assert err.value.status == 400 and seen == []


# --- per-request caps -----------------------------------------------------------------------------------------

def _image_urls(*urls: str) -> list[str]:
    """The image URLs of a chat request with these image parts, as the translator hands them over."""
    parts = [{"type": "text", "text": "look"}] + [{"type": "image_url", "image_url": {"url": u}} for u in urls]
    raw = json.dumps({"model": "gpt-4o", "messages": [{"role": "user", "content": parts}]}).encode()
    return to_vertex_body(parse_request(raw), "claude-sonnet-4-5@20250929", "vertex-2023-10-16").image_urls


async def test_at_most_max_per_request_urls_are_fetched_naming_the_first_over():
    settings = ImagesConfig(allow_private_networks=True, max_per_request=2, timeout_seconds=5)
    with image_server() as (base, seen):
        urls = _image_urls(f"{base}/cat.png?1", f"{base}/cat.png?2", f"{base}/cat.png?1", f"{base}/cat.png?3")
        with pytest.raises(OpenAIError) as err:
            await fetch_images(urls, settings)
        assert seen == []  # refused before any fetch
        assert len(await fetch_images(urls[:3], settings)) == 2  # a repeated URL is fetched once, counted once
    e = err.value
    assert (e.status, e.code, e.param) == (400, "too_many_images", "messages[0].content[4].image_url.url")
    assert "images.max_per_request" in e.message


async def test_the_images_of_one_request_are_capped_together_naming_the_one_over():
    big = len(ROUTES["/big.png"][2])
    settings = ImagesConfig(allow_private_networks=True, max_bytes=10_000, max_total_bytes=big + 100)
    with image_server() as (base, _):
        urls = _image_urls(f"{base}/big.png?1", f"{base}/big.png?2")
        assert len(await fetch_images(urls[:1], settings)) == 1
        with pytest.raises(OpenAIError) as err:
            await fetch_images(urls, settings)
        with pytest.raises(OpenAIError) as one_url:  # the declared length alone is already too much
            await fetch_images(urls[:1], ImagesConfig(allow_private_networks=True, max_total_bytes=big - 1))
    e = err.value
    assert (e.status, e.code) == (400, "images_too_large") and "images.max_total_bytes" in e.message
    assert e.param in ("messages[0].content[1].image_url.url", "messages[0].content[2].image_url.url")
    assert one_url.value.code == "images_too_large"


async def test_a_failed_fetch_names_its_parameter():
    with image_server() as (base, _):
        with pytest.raises(OpenAIError) as err:
            await fetch_images(_image_urls(f"{base}/cat.png", f"{base}/missing"), LOCAL)
    assert err.value.param == "messages[0].content[2].image_url.url" and "HTTP 404" in err.value.message


def test_cap_defaults_keep_a_request_under_vertexs_limit():
    images = parse_config({"vertex": {"project": "p"}}).images
    assert (images.max_per_request, images.max_total_bytes) == (20, 20 * 1024 * 1024)
    assert 4 * -(-images.max_total_bytes // 3) < VERTEX_MAX_REQUEST_BYTES - 2_000_000  # base64, room for the rest
    custom = parse_config({"vertex": {"project": "p"}, "images": {"max_per_request": 3, "max_total_bytes": 10}})
    assert (custom.images.max_per_request, custom.images.max_total_bytes) == (3, 10)


# --- compressed answers, slow servers ---------------------------------------------------------------------------

async def test_images_are_asked_for_uncompressed_and_a_compressed_one_is_decoded():
    ACCEPT_ENCODINGS.clear()
    with image_server() as (base, _):
        got = await fetch_images([f"{base}/gzip.png"], LOCAL)
    assert got[f"{base}/gzip.png"] == ("image/png", base64.b64encode(PNG).decode())
    assert ACCEPT_ENCODINGS == ["identity"]


async def test_a_gzip_bomb_stops_at_the_cap_without_being_inflated():
    """64 KiB of gzip inflating to 64 MiB, against images.max_bytes of 1000: a 400, and what was held stays near
    the cap plus one decoding step (httpx's own decoding inflated a whole 64 KiB read at once: 64 MiB)."""
    with image_server() as (base, _):
        tracemalloc.start()
        try:
            with pytest.raises(OpenAIError) as err:
                await fetch_images([f"{base}/bomb.png"], LOCAL)
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
    assert err.value.status == 400 and err.value.code == "image_too_large"
    assert peak < 4 << 20, f"{peak >> 20} MiB held"


@pytest.mark.parametrize("path, fragment", [("/corrupt.png", "could not be decoded"),
                                            ("/compress.png", "not supported")])
async def test_an_undecodable_answer_is_a_400(path, fragment):
    with image_server() as (base, _):
        with pytest.raises(OpenAIError) as err:
            await fetch_images([base + path], LOCAL)
    assert err.value.status == 400 and fragment in err.value.message


def test_a_server_that_drips_bytes_is_cut_at_the_total_deadline():
    """A byte every 4 s never trips a per-read timeout of 5 s, but the whole fetch must be done within
    images.timeout_seconds. On a virtual clock (looptime): exact, and no waiting."""
    import looptime

    async def drip(reader, writer):
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: image/png\r\ncontent-length: 200\r\n\r\n" + PNG[:8])
        for _ in range(192):
            await writer.drain()
            await asyncio.sleep(4)
            writer.write(b"\0")
        writer.close()

    async def main():
        loop = asyncio.get_running_loop()
        server = await asyncio.start_server(drip, "127.0.0.1", 0)
        url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/slow.png"

        async def resolve(host, port):  # no resolver thread: the virtual clock must only wait on this loop
            return ["127.0.0.1"]

        async with server:
            with pytest.raises(OpenAIError) as err:
                await fetch_images([url], LOCAL, resolve=resolve)
            elapsed = loop.time()
            server.close()
            for task in asyncio.all_tasks() - {asyncio.current_task()}:
                task.cancel()  # the dripping handler
        return err.value, elapsed

    loop = looptime.new_event_loop(start=0)
    try:
        err, elapsed = loop.run_until_complete(main())
    finally:
        loop.close()
    assert err.status == 400 and "within 5 s (images.timeout_seconds)" in err.message
    assert 5 <= elapsed < 6
