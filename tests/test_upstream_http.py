"""The relay's HTTP/1.1 client (upstream_http.py) against a real loopback server speaking raw HTTP/1.1."""

from __future__ import annotations

import asyncio
import gzip
import tracemalloc
import zlib

import pytest

import procs
import report
from modelmux.upstream_http import BodyTooLarge, FirstByteTimeout, IdleTimeout, UpstreamClient, UpstreamError


class Server:
    """Answers each request on a connection with the next scripted reply: a list of (delay, bytes) to write, and
    whether to close the connection afterwards. Counts connections and keeps the requests' heads."""

    def __init__(self, replies):
        self.replies = list(replies)
        self.connections = 0
        self.heads: list[bytes] = []

    async def __aenter__(self):
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.url = f"http://127.0.0.1:{self.server.sockets[0].getsockname()[1]}/v1/x:streamRawPredict"
        return self

    async def __aexit__(self, *exc):
        self.server.close()

    async def _serve(self, reader, writer):
        self.connections += 1
        try:
            while self.replies:
                head = await reader.readuntil(b"\r\n\r\n")
                length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
                await reader.readexactly(length)
                self.heads.append(head)
                pieces, close = self.replies.pop(0)
                for delay, data in pieces:
                    await asyncio.sleep(delay)
                    writer.write(data)
                    await writer.drain()
                if close:
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        writer.close()


def ok(body: bytes, extra: bytes = b"") -> list[tuple[float, bytes]]:
    return [(0, b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n" + extra
             + b"content-length: %d\r\n\r\n" % len(body) + body)]


def chunked(*pieces: tuple[float, bytes]) -> list[tuple[float, bytes]]:
    head = (0, b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n")
    return [head, *((d, b"%x\r\n%s\r\n" % (len(p), p)) for d, p in pieces), (0, b"0\r\n\r\n")]


async def post(client: UpstreamClient, url: str, **kw):
    return await client.post(url, {"authorization": "Bearer t", "content-type": "application/json"}, b'{"a": 1}',
                             connect_seconds=kw.get("connect", 2), first_byte_seconds=kw.get("first_byte", 2))


def test_keep_alive_reuses_one_connection_and_sends_the_request_as_given():
    async def main():
        async with Server([(ok(b'{"n": 1}'), False), (ok(b'{"n": 2}'), False)]) as srv:
            client = UpstreamClient()
            bodies = []
            for _ in range(2):
                resp = await post(client, srv.url)
                bodies.append(await resp.aread())
                await resp.aclose()
            await client.aclose()
            return srv, bodies

    srv, bodies = asyncio.run(main())
    assert bodies == [b'{"n": 1}', b'{"n": 2}'] and srv.connections == 1
    head = srv.heads[0].decode().lower()
    assert head.startswith("post /v1/x:streamrawpredict http/1.1") and "authorization: bearer t" in head


def test_a_connection_the_server_closed_while_idle_is_replaced():
    async def main():
        async with Server([(ok(b"1"), True), (ok(b"2"), False)]) as srv:
            client = UpstreamClient()
            first = await post(client, srv.url)
            await first.aread()
            await asyncio.sleep(0.05)  # the server's close arrives while the connection sits in the pool
            second = await post(client, srv.url)
            body = await second.aread()
            await client.aclose()
            return srv, body

    srv, body = asyncio.run(main())
    assert body == b"2" and srv.connections == 2


def test_a_stream_arrives_piece_by_piece_and_silence_is_an_idle_timeout():
    async def main():
        async with Server([(chunked((0, b"event: a\n\n"), (0.05, b"event: b\n\n"), (0.5, b"late")), True)]) as srv:
            client = UpstreamClient()
            resp = await post(client, srv.url)
            resp.idle_seconds = 0.2
            got = []
            with pytest.raises(IdleTimeout):
                async for piece in resp.aiter_raw():
                    got.append(piece)
            await resp.aclose()
            await client.aclose()
            return resp, got

    resp, got = asyncio.run(main())
    assert resp.status_code == 200 and resp.headers["content-type"] == "text/event-stream"
    assert got == [b"event: a\n\n", b"event: b\n\n"]


def test_a_body_cut_short_is_an_error_and_gzip_is_decoded():
    async def main():
        cut = [(0, b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\npartial")]
        body = b'{"error": {"code": 429}}'
        async with Server([(ok(gzip.compress(body), b"content-encoding: gzip\r\n"), False), (cut, True)]) as srv:
            client = UpstreamClient()
            zipped = await (await post(client, srv.url)).aread()
            resp = await post(client, srv.url)
            with pytest.raises(UpstreamError):
                await resp.aread()
            await client.aclose()
            return zipped, body

    zipped, body = asyncio.run(main())
    assert zipped == body


def bomb(inflated: int, wbits: int = 31) -> bytes:
    """`inflated` zero bytes, compressed (gzip by default): a few kB that inflate to megabytes."""
    z = zlib.compressobj(9, zlib.DEFLATED, wbits)
    zeros = bytes(1 << 20)
    return b"".join([*(z.compress(zeros) for _ in range(inflated >> 20)), z.flush()])


def test_a_compression_bomb_is_refused_while_it_inflates():
    """64 MiB of zeros in ~64 kB of gzip (and of deflate) against a 1 MiB cap: BodyTooLarge, and what was held
    while finding out stays near the cap (the whole body inflated would be 64 MiB)."""
    async def main():
        replies = [(ok(bomb(64 << 20), b"content-encoding: gzip\r\n"), False),
                   (ok(bomb(64 << 20, 15), b"content-encoding: deflate\r\n"), False),
                   (ok(bomb(1 << 20) + b""), False)]  # not announced as compressed: read as it is
        async with Server(replies) as srv:
            client = UpstreamClient(max_body_bytes=1 << 20)
            peaks = []
            for _ in range(2):
                resp = await post(client, srv.url)
                tracemalloc.start()
                with pytest.raises(BodyTooLarge, match="bounds.max_upstream_bytes"):
                    await resp.aread()
                peaks.append(tracemalloc.get_traced_memory()[1])
                tracemalloc.stop()
            plain = await (await post(client, srv.url)).aread()
            await client.aclose()
            return peaks, plain, srv.connections

    peaks, plain, connections = asyncio.run(main())
    assert all(peak < 4 << 20 for peak in peaks), peaks
    assert zlib.decompress(plain, 31) == bytes(1 << 20)
    assert connections == 3  # a refused answer's connection is not reused (its body was not read to the end)


def test_a_body_over_the_cap_is_refused_announced_or_not_and_the_cap_can_be_set_per_call():
    async def main():
        big = b"x" * 3000
        replies = [(ok(big), False), (chunked((0, big[:1500]), (0, big[1500:])), False), (ok(big), False),
                   (ok(gzip.compress(big), b"content-encoding: gzip\r\n"), False)]
        async with Server(replies) as srv:
            client = UpstreamClient(max_body_bytes=2048)
            for _ in range(2):  # content-length over the cap; chunked, found over it while reading
                with pytest.raises(BodyTooLarge):
                    await (await post(client, srv.url)).aread()
            resp = await client.post(srv.url, {}, b"", connect_seconds=2, first_byte_seconds=2, max_body_bytes=3000)
            exact = await resp.aread()
            zipped = await (await client.post(srv.url, {}, b"", connect_seconds=2, first_byte_seconds=2,
                                              max_body_bytes=3000)).aread()
            await client.aclose()
            return exact, zipped, big

    exact, zipped, big = asyncio.run(main())
    assert exact == big and zipped == big  # exactly at the cap is not over it


def test_no_answer_in_time_and_no_server_are_errors():
    async def main():
        async with Server([([(1.0, b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")], True)]) as srv:
            client = UpstreamClient()
            with pytest.raises(FirstByteTimeout):
                await post(client, srv.url, first_byte=0.1)
            url = srv.url
        with pytest.raises(UpstreamError):
            await post(client, url)  # the server is gone: connection refused
        await client.aclose()

    asyncio.run(main())


def test_https_verifies_the_server_and_streams_over_tls(tmp_path):
    import ssl

    cert, key = (str(f) for f in procs.self_signed_cert(tmp_path))
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ctx.load_cert_chain(cert, key)

    async def main():
        srv = Server([(chunked((0, b"event: a\n\n"), (0.01, b"event: b\n\n")), False)])
        server = await asyncio.start_server(srv._serve, "127.0.0.1", 0, ssl=server_ctx)
        url = f"https://127.0.0.1:{server.sockets[0].getsockname()[1]}/v1/x:streamRawPredict"
        try:
            with pytest.raises(UpstreamError, match="CERTIFICATE_VERIFY_FAILED"):
                await post(UpstreamClient(), url)  # public roots only: this server is not trusted
            client = UpstreamClient(cafile=cert)
            resp = await post(client, url)
            pieces = [p async for p in resp.aiter_raw()]
            await client.aclose()
            return pieces
        finally:
            server.close()

    assert asyncio.run(main()) == [b"event: a\n\n", b"event: b\n\n"]


def test_a_gzip_bomb_from_vertex_is_an_openai_502_and_the_proxy_never_holds_it(tmp_path):
    """A real `modelmux run` whose Vertex answers with 256 kB of gzip that inflate to 256 MiB, against
    bounds.max_upstream_bytes of 8 MiB (the default is 64 MiB): the client gets an OpenAI-shaped 502, and the
    proxy's peak RSS grows by about the cap, not by the inflated body."""
    import json
    import re
    import threading
    from pathlib import Path

    import httpx
    from openapi import validate_error

    payload = bomb(256 << 20)
    loop = asyncio.new_event_loop()
    ready, port = threading.Event(), []

    async def serve(reader, writer):
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                await reader.readexactly(int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0]))
                writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-encoding: gzip\r\n"
                             b"content-length: %d\r\n\r\n%s" % (len(payload), payload))
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        writer.close()

    async def main():
        server = await asyncio.start_server(serve, "127.0.0.1", 0)
        port.append(server.sockets[0].getsockname()[1])
        ready.set()
        async with server:
            try:
                await server.serve_forever()
            except asyncio.CancelledError:
                pass  # the test's end: it cancels every task of this loop

    thread = threading.Thread(target=lambda: loop.run_until_complete(main()), daemon=True)
    thread.start()
    assert ready.wait(10)
    config = tmp_path / "c.yaml"
    config.write_text(f"vertex: {{project: p, base_url: 'http://127.0.0.1:{port[0]}'}}\n"
                      "auth: {access_token: bomb-test-token}\nretries: {max_attempts: 1}\n"
                      "bounds: {max_upstream_bytes: 8388608}\n")
    listen = procs.free_port()
    proc = procs.Proc([str(procs.VENV_BIN / "modelmux"), "run", "--config", str(config), "--confdir",
                       str(tmp_path / "confdir"), "--mode", f"reverse:https://api.openai.com@{listen}"],
                      procs.PROXY_READY, cwd=procs.ROOT)

    def hwm_mb() -> float:
        return int(re.search(r"VmHWM:\s+(\d+)", Path(f"/proc/{proc.popen.pid}/status").read_text()).group(1)) / 1024

    try:
        procs.wait_port(listen)
        Path(f"/proc/{proc.popen.pid}/clear_refs").write_text("5")
        before = hwm_mb()
        with httpx.Client(trust_env=False, timeout=60) as client:
            r = client.post(f"http://127.0.0.1:{listen}/v1/chat/completions",
                            json={"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]})
        grown = hwm_mb() - before
    finally:
        proc.stop()
        loop.call_soon_threadsafe(lambda: [t.cancel() for t in asyncio.all_tasks(loop)])
        thread.join(5)
    assert r.status_code == 502, r.text
    validate_error(r.json())
    assert r.json()["error"]["type"] == "server_error" and "bomb-test-token" not in json.dumps(r.json())
    assert grown < 30, f"peak RSS grew by {grown:.0f} MB"
    report.add(f"gzip bomb (256 kB → 256 MiB) against an 8 MiB cap: 502, proxy peak RSS +{grown:.1f} MB")


async def test_a_header_value_h11_refuses_is_an_upstream_error_that_never_quotes_it():
    async with Server([(ok(b"{}"), False)]) as vertex:
        client = UpstreamClient()
        with pytest.raises(UpstreamError) as err:
            await client.post(vertex.url, {"authorization": "Bearer ya29.secret\n"}, b"{}", connect_seconds=2,
                              first_byte_seconds=2)
        assert "authorization" in str(err.value) and "ya29" not in str(err.value)
        assert vertex.connections == 0
        await client.aclose()
