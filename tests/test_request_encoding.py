"""Compressed request bodies (content-encoding gzip, deflate, br, zstd): decoded for every API of ours, bounded by
`bounds.max_request_bytes` once decoded too (a gzip bomb is a 413, never inflated in memory), an undecodable one
a 400. The decoder itself (decoding.py) is checked on each coding, piece by piece."""

from __future__ import annotations

import gzip
import json
import os
import re
import zlib
from pathlib import Path

import brotli
import httpx
import pytest
from openapi import validate, validate_error
from test_addon_hooks import CHAT, chain, make_flow, run_request, translator_of  # noqa: F401  (chain: a fixture)

import e2e
import procs
import report
from modelmux.decoding import STEP, Decoder, Undecodable, decode

try:
    from compression import zstd
except ImportError:
    from backports import zstd

DATA = os.urandom(50_000) + bytes(1_000_000) + b"tail" * 100
ENCODED = {
    "gzip": gzip.compress(DATA),
    "deflate": zlib.compress(DATA),
    "br": brotli.compress(DATA),
    "zstd": zstd.compress(DATA),
}


def zero_bomb(inflated: int) -> bytes:
    """`inflated` zero bytes as gzip: about a thousandth of that on the wire."""
    z = zlib.compressobj(9, zlib.DEFLATED, 31)
    zeros = bytes(1 << 20)
    return b"".join([*(z.compress(zeros) for _ in range(inflated >> 20)), z.flush()])


# --- the decoder -----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("coding", sorted(ENCODED))
def test_each_coding_decodes_whole_and_piece_by_piece(coding):
    body = ENCODED[coding]
    assert decode(body, coding.upper(), len(DATA)) == DATA  # codings are case-insensitive
    decoder, out = Decoder(coding), bytearray()
    for i in range(0, len(body), 1001):
        out += decoder.feed(body[i:i + 1001], len(DATA))
    decoder.finish()
    assert out == DATA


@pytest.mark.parametrize("coding", sorted(ENCODED))
def test_one_byte_over_the_limit_is_refused_and_a_bomb_never_produces_much_more(coding):
    assert decode(ENCODED[coding], coding, len(DATA) - 1) is None
    zeros = bytes(64 << 20)
    bomb = {"gzip": lambda: zero_bomb(64 << 20), "deflate": lambda: zlib.compress(zeros, 1),
            "br": lambda: brotli.compress(zeros, quality=1), "zstd": lambda: zstd.compress(zeros)}[coding]()
    out = Decoder(coding).feed(bomb, 1 << 20)
    assert (1 << 20) < len(out) <= (1 << 20) + STEP


@pytest.mark.parametrize("coding", sorted(ENCODED))
def test_truncated_or_corrupt_bodies_are_undecodable(coding):
    body = ENCODED[coding]
    decoder = Decoder(coding)
    decoder.feed(body[:len(body) // 2], len(DATA))
    with pytest.raises(Undecodable, match="truncated"):
        decoder.finish()
    with pytest.raises(Undecodable):
        decode(b"this is no " + coding.encode() + b" at all" * 9, coding, 1 << 20)


def test_members_frames_chains_and_odd_forms():
    # several gzip members / zstd frames, one after the other (as gzip -c a b produces)
    assert decode(gzip.compress(b"ab") + gzip.compress(b"cd") + b"\0\0", "gzip", 10) == b"abcd"
    assert decode(zstd.compress(b"ab") + zstd.compress(b"cd"), "zstd", 10) == b"abcd"
    with pytest.raises(Undecodable, match="after its end"):
        decode(zlib.compress(b"ab") + b"junk", "deflate", 10)
    with pytest.raises(Undecodable):
        decode(gzip.compress(b"ab") + b"junk", "gzip", 10)
    assert decode(zlib.compress(b"raw")[2:-4], "deflate", 10) == b"raw"  # raw deflate, as some senders do
    assert decode(gzip.compress(brotli.compress(b"two")), "br, gzip", 10) == b"two"  # undone last-applied first
    assert decode(b"plain", "identity", 10) == b"plain" and decode(b"", "gzip", 10) == b""
    with pytest.raises(Undecodable, match="not supported"):
        decode(b"x", "compress", 10)


# --- the hooks: every API of ours ------------------------------------------------------------------------------

def compressed_flow(body: bytes, coding: str, path: str = "/v1/chat/completions"):
    f = make_flow(path=path, body=body)
    f.request.headers["content-encoding"] = coding
    return f


async def test_a_compressed_request_is_translated_as_its_decoded_body(chain):
    _, addons = chain
    plain = json.dumps({**CHAT, "stream": True}).encode()
    f = compressed_flow(zstd.compress(plain), "zstd")
    await run_request(addons, f)
    assert f.response is None  # streamed: pointed at the relay, with the Vertex body of the decoded request
    sent = json.loads(translator_of(addons).runtime.relay._plans[f.request.headers["x-modelmux-plan"]].body)
    assert sent["messages"] == [{"role": "user", "content": [{"type": "text", "text": "hi"}]}]
    assert "sys" in json.dumps(sent["system"])


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/v1/responses", "/v1/embeddings"])
async def test_a_gzip_bomb_is_a_413_on_every_api(chain, path):
    """30 MiB + 1 MiB of zeros in ~31 kB of gzip: over the default bounds.max_request_bytes once decoded."""
    _, addons = chain
    f = compressed_flow(zero_bomb(31 << 20), "gzip", path)
    assert len(f.request.raw_content) < 64 * 1024
    await run_request(addons, f)
    assert f.response is not None and f.response.status_code == 413
    err = json.loads(f.response.content)
    validate_error(err)
    assert err["error"]["code"] == "request_too_large" and "once decompressed" in err["error"]["message"]
    assert f.id not in translator_of(addons).exchanges


@pytest.mark.parametrize("body, coding", [(b"\x1f\x8b not gzip", "gzip"), (gzip.compress(b"{}")[:-3], "gzip"),
                                          (b"{}", "compress")])
async def test_an_undecodable_body_is_a_400(chain, body, coding):
    _, addons = chain
    f = compressed_flow(body, coding)
    await run_request(addons, f)
    assert f.response is not None and f.response.status_code == 400
    err = json.loads(f.response.content)
    validate_error(err)
    assert err["error"]["code"] == "invalid_content_encoding"


async def test_an_uncompressed_body_is_taken_as_it_is(chain):
    _, addons = chain
    f = make_flow(body={**CHAT, "stream": True})
    f.request.headers["content-encoding"] = "identity"
    await run_request(addons, f)
    assert f.response is None and f.request.url.endswith(":streamRawPredict")


# --- a real `modelmux run`, in reverse mode ----------------------------------------------------------------------

def test_a_real_proxy_serves_a_gzip_request_and_refuses_a_gzip_bomb_without_holding_it(tmp_path):
    """A real `modelmux run` (reverse mode, the emulator behind it, bounds.max_request_bytes 4 MiB): a gzip
    request body is served; 256 kB of gzip that inflate to 256 MiB get an OpenAI 413, and the proxy's peak RSS
    grows by about the cap, not by the inflated body."""
    emu_proc, url, key = procs.emulator(tmp_path)
    try:
        config = e2e.write_config(tmp_path / "modelmux.yaml", url, key)
        config.write_text(config.read_text() + "bounds: {max_request_bytes: 4194304}\n")
        proxy = e2e.start_proxy("modelmux-run", config, tmp_path / "confdir")
        pid = proxy.proc.popen.pid

        def hwm_mb() -> float:
            return int(re.search(r"VmHWM:\s+(\d+)", Path(f"/proc/{pid}/status").read_text()).group(1)) / 1024

        try:
            base = f"http://127.0.0.1:{proxy.reverse_port}/v1/chat/completions"
            headers = {"authorization": f"Bearer {e2e.CLIENT_KEY}", "content-type": "application/json",
                       "content-encoding": "gzip"}
            with httpx.Client(trust_env=False, timeout=60) as client:
                ok = client.post(base, headers=headers, content=gzip.compress(json.dumps(CHAT).encode()))
                bomb = zero_bomb(256 << 20)
                Path(f"/proc/{pid}/clear_refs").write_text("5")
                before = hwm_mb()
                refused = client.post(base, headers=headers, content=bomb)
                grown = hwm_mb() - before
        finally:
            proxy.proc.stop()
    finally:
        emu_proc.stop()
    e2e.assert_no_secrets(proxy.proc.output())
    assert ok.status_code == 200, ok.text
    validate(ok.json(), "CreateChatCompletionResponse")
    assert refused.status_code == 413, refused.text
    validate_error(refused.json())
    assert refused.json()["error"]["code"] == "request_too_large"
    assert grown < 30, f"peak RSS grew by {grown:.0f} MB"
    report.add(f"request gzip bomb ({len(bomb) >> 10} kB → 256 MiB) against a 4 MiB cap: 413, proxy peak RSS "
               f"+{grown:.1f} MB")
