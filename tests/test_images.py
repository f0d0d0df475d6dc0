"""Image URLs are fetched and inlined (pain 7): real HTTP on loopback, with the guards that protect the proxy's
network (the loopback server is reachable only because these tests allow private networks explicitly)."""

import base64
import contextlib
import http.server
import threading

import pytest

from modelmux.config import ImagesConfig
from modelmux.images import fetch_images, sniff_image
from modelmux.translate.errors import OpenAIError

PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 64
ROUTES = {
    "/cat.png": (200, "image/png", PNG),
    "/mislabelled": (200, "image/png", b"<html>not an image</html>"),
    "/big.png": (200, "image/png", PNG + b"\x00" * 5000),
    "/missing": (404, "text/plain", b"nope"),
}


@contextlib.contextmanager
def image_server():
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            if self.path == "/redirect":
                self.send_response(302)
                self.send_header("location", "/cat.png")
                self.send_header("content-length", "0")
                self.end_headers()
                return
            status, ctype, data = ROUTES.get(self.path, (404, "text/plain", b""))
            self.send_response(status)
            self.send_header("content-type", ctype)
            self.send_header("content-length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


LOCAL = ImagesConfig(allow_private_networks=True, max_bytes=1000, timeout_seconds=5)


async def test_pain7_fetched_and_inlined_with_redirects():
    with image_server() as base:
        got = await fetch_images([f"{base}/cat.png", f"{base}/redirect", f"{base}/cat.png"], LOCAL)
    assert set(got) == {f"{base}/cat.png", f"{base}/redirect"}
    assert got[f"{base}/redirect"] == ("image/png", base64.b64encode(PNG).decode())


@pytest.mark.parametrize("path, fragment", [
    ("/mislabelled", "not a PNG, JPEG, GIF or WebP"),
    ("/big.png", "larger than 1000 bytes"),
    ("/missing", "HTTP 404"),
])
async def test_pain7_bad_images_are_a_400(path, fragment):
    with image_server() as base:
        with pytest.raises(OpenAIError) as err:
            await fetch_images([base + path], LOCAL)
    assert err.value.status == 400 and fragment in err.value.message


async def test_pain7_loopback_and_private_addresses_are_refused_by_default():
    with image_server() as base:
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
