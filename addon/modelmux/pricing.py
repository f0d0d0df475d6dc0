"""What an answer cost: Vertex AI list prices for Claude and the embedding models (USD per million tokens) and
`cost(model, tokens)`.

Prices taken 2026-12-02 (TABLE_DATE). Sources:
- Anthropic's pricing page, "Model pricing" (https://platform.claude.com/docs/en/about-claude/pricing): base input,
  5-minute cache writes, cache hits, output, per model; the model pages (platform.claude.com/docs/…/models/
  sonnet-5-5, haiku-5-5, whats-new-opus-5) for the 5.x models, including Haiku 5.5's two prompt-length bands
  (up to / over 100,000 prompt tokens). Anthropic's "Long context pricing" for Sonnet 4 and 4.5 prompts over
  200,000 tokens ($6 / $22.50; cache $7.50 / $0.60).
- Vertex AI's price list for Claude (https://cloud.google.com/vertex-ai/generative-ai/pricing#claude-models) charges
  those list prices at the global endpoint; pydantic/genai-prices' Vertex table (prices/providers/google.yml, prices
  checked 2026-02 … 2026-07) records the same figures for Opus 4.6, 4.7, 4.8, 5 and Fable 5 from that page, and
  that "multi-region and regional endpoints carry a 10% premium". Anthropic's "Claude on Vertex AI" page: the
  premium applies from Claude Sonnet 4.5 on; older models keep one price everywhere (REGIONAL_PREMIUM below).
- Sonnet 5.5's cache reads: $0.10 since 2026-10-07 (cut from $0.20, reported against the live pricing page by
  kurofune/claudit v1.9.2 and TheKrush/PromptFuel v1.0.23; the model page in the search index still showed $0.20).
  Opus 5.5's cache read ($0.20) is from its model comparison and those release notes; its 5-minute cache write is
  Anthropic's documented multiplier, 1.25 × input.
Not found in any source: Vertex's own per-model page figures for the 5.x models (assumed equal to Anthropic's list,
as for every model that was found), and Claude Fable 5.2 / Mythos 5.2 (only a third-party mention): those ids, and
any other model not in TABLE, are priced by FAMILY RULE: the same family's (opus, sonnet, haiku, fable, mythos)
entry with the highest version not above the requested one (or the lowest above it, if none is below); a model of
no known family is priced as the most expensive entry (`input` price), so a budget never under-counts. `price_for`
says which rule priced a model, for a log line.

`budgets.prices` in the config overrides (or adds) models: `{model: {input, output, cache_write, cache_read}}`, flat
prices taken as given (no premium, no bands: what you pay).

Tokens are counted once each (TokenCounts: `input` excludes cache reads and writes, as Anthropic's `input_tokens`);
from an OpenAI usage object the cached and cache-write tokens are taken out of `prompt_tokens`, never below zero
(LiteLLM priced `prompt_tokens - cache_read` and produced negative costs when Vertex's prompt count left the cache
out).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Mapping

from .state.base import TokenCounts

TABLE_DATE = "2026-12-02"
REGIONAL_PREMIUM = 1.10  # Vertex regional and multi-region (us, eu) endpoints, models from Sonnet 4.5 on


@dataclass(frozen=True)
class Price:
    """USD per million tokens."""

    input: float
    output: float
    cache_write: float  # 5-minute cache writes (modelmux never asks for 1-hour ones)
    cache_read: float


@dataclass(frozen=True)
class ModelPrice:
    base: Price
    long_threshold: int | None = None  # prompt tokens (input + cache) above which `long` applies to every token
    long: Price | None = None
    regional_premium: bool = False


def _p(i: float, o: float, cw: float, cr: float) -> Price:
    return Price(i, o, cw, cr)


_NEW = True  # from Sonnet 4.5 on: Vertex regional endpoints cost REGIONAL_PREMIUM ×

# Keys are model ids without the Vertex "@date" (or "-date") suffix.
TABLE: dict[str, ModelPrice] = {
    "claude-fable-5-1": ModelPrice(_p(10, 50, 12.50, 0.25), regional_premium=_NEW),
    "claude-mythos-5-1": ModelPrice(_p(10, 50, 12.50, 0.25), regional_premium=_NEW),
    "claude-fable-5": ModelPrice(_p(10, 50, 12.50, 1.00), regional_premium=_NEW),
    "claude-mythos-5": ModelPrice(_p(10, 50, 12.50, 1.00), regional_premium=_NEW),
    "claude-opus-5-5": ModelPrice(_p(4, 20, 5.00, 0.20), regional_premium=_NEW),
    "claude-opus-5": ModelPrice(_p(5, 25, 6.25, 0.50), regional_premium=_NEW),
    "claude-opus-4-8": ModelPrice(_p(5, 25, 6.25, 0.50), regional_premium=_NEW),
    "claude-opus-4-7": ModelPrice(_p(5, 25, 6.25, 0.50), regional_premium=_NEW),
    "claude-opus-4-6": ModelPrice(_p(5, 25, 6.25, 0.50), regional_premium=_NEW),
    "claude-opus-4-5": ModelPrice(_p(5, 25, 6.25, 0.50), regional_premium=_NEW),
    "claude-opus-4-1": ModelPrice(_p(15, 75, 18.75, 1.50)),
    "claude-opus-4": ModelPrice(_p(15, 75, 18.75, 1.50)),
    "claude-3-opus": ModelPrice(_p(15, 75, 18.75, 1.50)),
    "claude-sonnet-5-5": ModelPrice(_p(2, 10, 2.50, 0.10), regional_premium=_NEW),
    "claude-sonnet-5": ModelPrice(_p(2, 10, 2.50, 0.20), regional_premium=_NEW),
    "claude-sonnet-4-6": ModelPrice(_p(3, 15, 3.75, 0.30), regional_premium=_NEW),
    "claude-sonnet-4-5": ModelPrice(_p(3, 15, 3.75, 0.30), 200_000, _p(6, 22.50, 7.50, 0.60), regional_premium=_NEW),
    "claude-sonnet-4": ModelPrice(_p(3, 15, 3.75, 0.30), 200_000, _p(6, 22.50, 7.50, 0.60)),
    "claude-3-7-sonnet": ModelPrice(_p(3, 15, 3.75, 0.30)),
    "claude-3-5-sonnet": ModelPrice(_p(3, 15, 3.75, 0.30)),
    "claude-haiku-5-5": ModelPrice(_p(0.10, 0.50, 0.125, 0.01), 100_000, _p(0.50, 2.50, 0.625, 0.05),
                                   regional_premium=_NEW),
    "claude-haiku-4-5": ModelPrice(_p(1, 5, 1.25, 0.10), regional_premium=_NEW),
    "claude-3-5-haiku": ModelPrice(_p(0.80, 4, 1.00, 0.08)),
    "claude-3-haiku": ModelPrice(_p(0.25, 1.25, 0.30, 0.03)),
}

# Vertex's embedding models: input tokens only. gemini-embedding-001 is listed per token ($0.15 per million); the
# text-embedding / text-multilingual-embedding models per 1,000 characters ($0.000025), taken as $0.10 per million
# tokens (four characters a token, as LiteLLM's and Bifrost's tables do). A model whose name says "embedding" and
# is not listed is priced as the dearest of these (an embedding is never charged at a chat model's price).
EMBEDDINGS: dict[str, ModelPrice] = {
    "gemini-embedding-001": ModelPrice(_p(0.15, 0, 0, 0)),
    "text-embedding-005": ModelPrice(_p(0.10, 0, 0, 0)),
    "text-embedding-004": ModelPrice(_p(0.10, 0, 0, 0)),
    "text-multilingual-embedding-002": ModelPrice(_p(0.10, 0, 0, 0)),
}

FAMILIES = ("opus", "sonnet", "haiku", "fable", "mythos")
_DATE_SUFFIX = re.compile(r"(@.*|-\d{8}|-v\d+|\[1m\]|-latest)$")
_NEW_STYLE = re.compile(r"^claude-(" + "|".join(FAMILIES) + r")-(\d+)(?:-(\d+))?$")
_OLD_STYLE = re.compile(r"^claude-(\d+)(?:-(\d+))?-(" + "|".join(FAMILIES) + r")$")


def stem(model: str) -> str:
    """A Vertex model id without its date or version suffix: claude-sonnet-4-5@20250929 → claude-sonnet-4-5."""
    s = model.strip().lower()
    while True:
        shorter = _DATE_SUFFIX.sub("", s)
        if shorter == s:
            return s
        s = shorter


def family_version(model_stem: str) -> tuple[str, tuple[int, int]] | None:
    m = _NEW_STYLE.match(model_stem)
    if m:
        return m.group(1), (int(m.group(2)), int(m.group(3) or 0))
    m = _OLD_STYLE.match(model_stem)
    if m:
        return m.group(3), (int(m.group(1)), int(m.group(2) or 0))
    return None


def _by_family(model_stem: str) -> tuple[str, ModelPrice] | None:
    fv = family_version(model_stem)
    if fv is None:
        return None
    family, version = fv
    known = []
    for key in TABLE:
        entry = family_version(key)
        if entry is not None and entry[0] == family:
            known.append((entry[1], key))
    known.sort()
    if not known:
        return None
    below = [key for v, key in known if v <= version]
    key = below[-1] if below else known[0][1]
    return key, TABLE[key]


def price_for(model: str, overrides: Mapping[str, Any] | None = None) -> tuple[ModelPrice, str]:
    """The price of `model` and how it was found: "config", "table", "family:<entry>" or "unknown:<entry>"."""
    s = stem(model)
    for name in (model, s):
        if overrides and name in overrides:
            o = overrides[name]
            return ModelPrice(Price(o.input, o.output, o.cache_write, o.cache_read)), "config"
    if s in TABLE:
        return TABLE[s], "table"
    if s in EMBEDDINGS:
        return EMBEDDINGS[s], "table"
    if "embedding" in s:
        priciest = max(EMBEDDINGS, key=lambda k: (EMBEDDINGS[k].base.input, k))
        return EMBEDDINGS[priciest], f"unknown:{priciest}"
    found = _by_family(s)
    if found is not None:
        return found[1], f"family:{found[0]}"
    priciest = max(TABLE, key=lambda k: (TABLE[k].base.input, k))
    return TABLE[priciest], f"unknown:{priciest}"


def cost(model: str, tokens: TokenCounts, *, region: str | None = None,
         overrides: Mapping[str, Any] | None = None) -> float:
    """USD for one answer. `region`: the Vertex region that served it ("global" or None: no premium)."""
    mp, _ = price_for(model, overrides)
    prompt = tokens.input + tokens.cache_write + tokens.cache_read
    p = mp.long if mp.long is not None and mp.long_threshold is not None and prompt > mp.long_threshold else mp.base
    usd = (tokens.input * p.input + tokens.output * p.output + tokens.cache_write * p.cache_write
           + tokens.cache_read * p.cache_read) / 1_000_000
    if mp.regional_premium and region not in (None, "global"):
        usd *= REGIONAL_PREMIUM
    return usd


def _count(value: Any) -> int:
    try:
        return max(0, int(value or 0))
    except (TypeError, ValueError):
        return 0


def tokens_from_anthropic(usage: Mapping[str, Any] | None) -> TokenCounts:
    """Anthropic / Vertex `usage`: input_tokens already excludes the cache."""
    u = usage or {}
    return TokenCounts(_count(u.get("input_tokens")), _count(u.get("output_tokens")),
                       _count(u.get("cache_creation_input_tokens")), _count(u.get("cache_read_input_tokens")))


def tokens_from_openai(usage: Mapping[str, Any] | None) -> TokenCounts:
    """modelmux's OpenAI `usage` (chat: prompt/completion tokens; Responses: input/output tokens), whose prompt
    count includes cached and cache-write tokens: each token is counted once, never below zero."""
    u = usage or {}
    details = u.get("prompt_tokens_details") or u.get("input_tokens_details") or {}
    read = _count(details.get("cached_tokens"))
    write = _count(details.get("cache_write_tokens"))
    prompt = _count(u.get("prompt_tokens", u.get("input_tokens")))
    output = _count(u.get("completion_tokens", u.get("output_tokens")))
    return TokenCounts(max(0, prompt - read - write), output, write, read)
