#!/usr/bin/env python3
"""What the pure embeddings translator costs (modelmux/translate/embeddings.py), on one core, no I/O.

    .venv/bin/python scripts/bench_embeddings.py [--repeat 30] [--json out.json]

For a 600-input request (the issue's batch): planning (parse + validate + count + split) for short strings (no
tokenizing needed), 120-token strings (every text counted with cl100k_base) and LangChain-style token-id lists
(decoded); then the answer for 768 and 3072 values per vector, as floats and as base64: assemble_bytes from Vertex's
raw bodies to the client's body (float: the numbers copied as text; base64: parsed and packed), assemble from
already parsed answers, and for scale what parsing Vertex's bodies and printing the answer dict cost with `json`.
Median and best of --repeat runs, in microseconds. The tokenizer is loaded before timing (its one-off load is
reported separately).
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "addon"))

from modelmux import cl100k  # noqa: E402
from modelmux.config import parse_config  # noqa: E402
from modelmux.translate.embeddings import assemble, assemble_bytes, embeddings_plan  # noqa: E402
from modelmux.vertex import Router  # noqa: E402

N = 600
WORDS = ("vertex embeddings proxy answer retrieval document passage query token batch vector cosine index store "
         "search rank chunk model region quota limit").split()


def timed(fn, repeat: int) -> dict[str, float]:
    runs = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        runs.append((time.perf_counter() - t) * 1e6)
    return {"median_us": statistics.median(runs), "best_us": min(runs)}


def request_cost(raw: bytes, raw_answers: list[bytes], route_for, repeat: int) -> dict[str, dict[str, float]]:
    """What the embeddings hook spends in-process on one request: planning the client's body (parse, validate,
    count, split) and assembling Vertex's raw answers (`raw_answers[k]` to the plan's batch k) into the client's
    body, each timed as `timed` does (scripts/bench.py runs it on the emulator's own answers)."""
    plan = embeddings_plan(raw, route_for, truncate=False)
    if len(raw_answers) != len(plan.batches):
        raise ValueError(f"{len(raw_answers)} answers for {len(plan.batches)} batches")
    return {"plan": timed(lambda: embeddings_plan(raw, route_for, truncate=False), repeat),
            "assemble_bytes": timed(lambda: assemble_bytes(plan, raw_answers), repeat)}


def answers_for(plan, width: int, rng: random.Random) -> list[dict]:
    return [{"predictions": [{"embeddings": {"values": [rng.uniform(-0.1, 0.1) for _ in range(width)],
                                             "statistics": {"token_count": 100, "truncated": False}}}
                             for _ in b["instances"]]} for b in plan.batches]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeat", type=int, default=30)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    rng = random.Random(13)
    results: dict[str, dict[str, float]] = {}

    t = time.perf_counter()
    enc = cl100k.encoding()
    results["tokenizer load (once per process)"] = {"median_us": (time.perf_counter() - t) * 1e6, "best_us": 0}
    router = Router(parse_config({"vertex": {"project": "p"}}))

    def body(inputs, **kw) -> bytes:
        return json.dumps({"model": "text-embedding-3-small", "input": inputs, **kw}).encode()

    short = body([f"query {i}: {rng.choice(WORDS)}" for i in range(N)])
    long_texts = [" ".join(rng.choice(WORDS) for _ in range(120)) for _ in range(N)]
    longer = body(long_texts)
    ids = body([enc.encode_ordinary(t) for t in long_texts])
    for name, raw in (("plan: 600 short strings (no tokenizing)", short),
                      ("plan: 600 strings of ~120 tokens (all counted)", longer),
                      ("plan: 600 token-id lists of ~120 tokens (decoded)", ids)):
        plan = embeddings_plan(raw, router.route_embedding, truncate=False)
        results[name] = {**timed(lambda raw=raw: embeddings_plan(raw, router.route_embedding, truncate=False),
                                 args.repeat), "batches": len(plan.batches)}

    for width in (768, 3072):
        for fmt in ("float", "base64"):
            plan = embeddings_plan(body([f"t{i}" for i in range(N)], encoding_format=fmt, dimensions=width),
                                   router.route_embedding, truncate=False)
            parsed = answers_for(plan, width, rng)
            raw_answers = [json.dumps(a).encode() for a in parsed]
            few = max(3, args.repeat // 5)
            results[f"{fmt} {width}: assemble_bytes(raw Vertex bodies) -> body bytes (what the hook runs)"] = timed(
                lambda: assemble_bytes(plan, raw_answers), few if fmt == "base64" else args.repeat)
            results[f"{fmt} {width}:   of which assemble(parsed answers) -> dict"] = timed(
                lambda: assemble(plan, parsed), args.repeat)
            out = assemble(plan, parsed)
            results[f"{fmt} {width}:   for scale: json.loads of the Vertex bodies"] = timed(
                lambda: [json.loads(r) for r in raw_answers], few)
            results[f"{fmt} {width}:   for scale: json.dumps of the answer dict"] = timed(
                lambda: json.dumps(out).encode(), few)

    width = max(len(k) for k in results)
    print(f"{'what':<{width}}  median µs    best µs")
    for name, r in results.items():
        extra = f"  ({r['batches']} batches)" if "batches" in r else ""
        print(f"{name:<{width}}  {r['median_us']:>9.0f}  {r['best_us']:>9.0f}{extra}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
