import base64

import pytest
from hypothesis import given, settings, strategies as st

from modelmux.translate.responses import sealing
from modelmux.translate.responses.sealing import ForeignBlob, SealError, TamperedBlob, seal, unseal

KEY = bytes(range(32))
OTHER = bytes(range(1, 33))
PAYLOAD = {"blocks": [{"type": "thinking", "thinking": "Let me think… 思考 🤔", "signature": "EqQBCkYIBx"},
                      {"type": "redacted_thinking", "data": "EmwKAhgBEgy3va3pzix"}]}


def test_round_trip_and_prefix():
    blob = seal("reasoning", PAYLOAD, KEY)
    assert blob.startswith("modelmux:") and sealing.is_ours(blob)
    assert unseal(blob, KEY, "reasoning") == PAYLOAD
    assert seal("reasoning", PAYLOAD, KEY) != blob  # a fresh nonce every time


def test_the_thinking_text_is_not_readable_in_the_blob():
    blob = seal("reasoning", {"blocks": [{"type": "thinking", "thinking": "secret plan " * 20, "signature": "s"}]},
                KEY)
    raw = base64.urlsafe_b64decode(blob[len("modelmux:"):] + "==")
    assert b"secret" not in raw and "secret" not in blob


def test_foreign_blobs_are_told_apart():
    for foreign in ["gAAAAABpPDIUph8czEXzDePCV2lJ27wm7TsbCvazrvHSn0yWitN7RGWq8", "", "modelmux", "{}"]:
        with pytest.raises(ForeignBlob):
            unseal(foreign, KEY, "reasoning")
        assert not sealing.is_ours(foreign)


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_any_change_to_a_sealed_blob_is_detected(data):
    blob = seal("reasoning", PAYLOAD, KEY)
    raw = bytearray(base64.urlsafe_b64decode(blob[len("modelmux:"):] + "=="))
    at = data.draw(st.integers(min_value=0, max_value=len(raw) - 1))
    raw[at] ^= data.draw(st.integers(min_value=1, max_value=255))
    tampered = "modelmux:" + base64.urlsafe_b64encode(bytes(raw)).rstrip(b"=").decode()
    with pytest.raises(TamperedBlob):
        unseal(tampered, KEY, "reasoning")


@pytest.mark.parametrize("blob", [
    "modelmux:", "modelmux:!!!!", "modelmux:AAAA", "modelmux:" + "A" * (sealing.MAX_SEALED_CHARS + 1),
])
def test_malformed_blobs_with_our_prefix_are_tampered(blob):
    with pytest.raises(TamperedBlob):
        unseal(blob, KEY, "reasoning")


def test_truncated_blob_is_tampered():
    blob = seal("reasoning", PAYLOAD, KEY)
    for cut in (1, 5, len(blob) // 2):
        with pytest.raises(TamperedBlob):
            unseal(blob[:-cut], KEY, "reasoning")


def test_another_key_or_kind_does_not_open_it():
    blob = seal("reasoning", PAYLOAD, KEY)
    with pytest.raises(TamperedBlob):
        unseal(blob, OTHER, "reasoning")
    with pytest.raises(TamperedBlob):  # a reasoning blob cannot pass as a compaction one
        unseal(blob, KEY, "compaction")


def test_key_rotation_seals_with_the_first_and_opens_with_any():
    old = seal("reasoning", PAYLOAD, OTHER)
    assert unseal(old, [KEY, OTHER], "reasoning") == PAYLOAD
    new = seal("reasoning", PAYLOAD, [KEY, OTHER])
    assert unseal(new, KEY, "reasoning") == PAYLOAD


def test_size_is_bounded_both_ways():
    with pytest.raises(SealError):
        seal("compaction", {"summary": "x" * (sealing.MAX_PAYLOAD_BYTES + 1)}, KEY)
    big = seal("compaction", {"summary": "y" * (sealing.MAX_PAYLOAD_BYTES - 100)}, KEY)  # compresses well
    assert len(big) < 100_000 and unseal(big, KEY, "compaction")["summary"].startswith("yyy")


def test_keys_are_32_bytes_and_parse_from_hex_or_base64():
    with pytest.raises(ValueError):
        seal("reasoning", PAYLOAD, b"short")
    key = sealing.generate_key()
    assert len(key) == 32 and key != sealing.generate_key()
    assert sealing.parse_key(key.hex()) == key
    assert sealing.parse_key(base64.b64encode(key).decode()) == key
    assert sealing.parse_key(base64.urlsafe_b64encode(key).rstrip(b"=").decode() + "\n") == key
    for bad in ["", "abc", "00" * 31, base64.b64encode(b"x" * 31).decode()]:
        with pytest.raises(ValueError):
            sealing.parse_key(bad)
