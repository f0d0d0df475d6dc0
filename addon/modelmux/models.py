"""The Claude models Vertex AI serves, with their output caps (tokens).

The router's table: a default max_tokens never above the cap. (The emulator keeps its own table, written
independently, so that it can catch a wrong cap here.) Ids are Vertex's: `claude-sonnet-4-5@20250929`.
"""

from __future__ import annotations

# Output caps from Anthropic's model tables. Sonnet 4.6 is listed as 64k in some sources and 128k in
# others: 64k is the one that can never be rejected.
OUTPUT_CAPS: dict[str, int] = {
    "claude-sonnet-4-5@20250929": 64_000,
    "claude-opus-4-5@20251101": 64_000,
    "claude-haiku-4-5@20251001": 64_000,
    "claude-opus-4-1@20250805": 32_000,
    "claude-sonnet-4@20250514": 64_000,
    "claude-opus-4@20250514": 32_000,
    "claude-3-7-sonnet@20250219": 64_000,
    "claude-3-5-haiku@20241022": 8_192,
    "claude-sonnet-4-6": 64_000,
    "claude-opus-4-6": 128_000,
    "claude-opus-4-7": 128_000,
    "claude-opus-4-8": 128_000,
    "claude-opus-5": 128_000,
    "claude-sonnet-5": 128_000,
}

# For an id not in the table: small enough for every Claude model Vertex serves.
UNKNOWN_MODEL_CAP = 8_192

# Default max_tokens when the client sends none: large enough not to truncate ordinary answers, never above
# the model's cap (the seed sent 8000 to everything, a peer sends 128000 to 64k models).
DEFAULT_MAX_TOKENS = 16_384


def base_id(model: str) -> str:
    """`claude-sonnet-4-5@20250929` → `claude-sonnet-4-5`; also accepts first-party `…-20250929` ids."""
    return model.split("@", 1)[0]


def output_cap(model: str) -> int:
    cap = OUTPUT_CAPS.get(model)
    if cap is not None:
        return cap
    base = base_id(model)
    for known, cap in OUTPUT_CAPS.items():
        if base_id(known) == base:
            return cap
    return UNKNOWN_MODEL_CAP


def default_max_tokens(model: str) -> int:
    return min(DEFAULT_MAX_TOKENS, output_cap(model))


# Models that reject `temperature` and `top_p` in one request (Sonnet 4.5, Opus 4.1 and later).
_SAMPLING_EXCLUSIVE_PREFIXES = (
    "claude-sonnet-4-5", "claude-opus-4-1", "claude-opus-4-5", "claude-haiku-4-5",
    "claude-sonnet-4-6", "claude-opus-4-6", "claude-opus-4-7", "claude-opus-4-8",
    "claude-opus-5", "claude-sonnet-5",
)


def rejects_temperature_with_top_p(model: str) -> bool:
    return base_id(model).startswith(_SAMPLING_EXCLUSIVE_PREFIXES)


def first_party_id(model: str) -> str:
    """The id Vertex writes into response bodies: `claude-sonnet-4-5@20250929` → `claude-sonnet-4-5-20250929`."""
    return model.replace("@", "-")
