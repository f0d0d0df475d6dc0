"""The Claude models this fake Vertex AI serves, with the limits Vertex enforces on each.

The emulator's own table, written from the published model facts (the project's Vertex notes; Anthropic's model
overview for the older models), never read from modelmux's: a test double that shared the product's table could
not catch a wrong cap in it.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ClaudeModel:
    output_cap: int  # the largest max_tokens Vertex accepts
    sampling_exclusive: bool  # `temperature` and `top_p` in one request is a 400


# Vertex ids: dated models carry `@date`; the newer ones are served under their bare names.
CLAUDE_MODELS: dict[str, ClaudeModel] = {
    "claude-3-5-haiku@20241022": ClaudeModel(8_192, sampling_exclusive=False),
    "claude-3-7-sonnet@20250219": ClaudeModel(64_000, sampling_exclusive=False),
    "claude-sonnet-4@20250514": ClaudeModel(64_000, sampling_exclusive=False),
    "claude-opus-4@20250514": ClaudeModel(32_000, sampling_exclusive=False),
    # Opus 4.1 and every model after it refuse temperature together with top_p
    "claude-opus-4-1@20250805": ClaudeModel(32_000, sampling_exclusive=True),
    "claude-sonnet-4-5@20250929": ClaudeModel(64_000, sampling_exclusive=True),
    "claude-haiku-4-5@20251001": ClaudeModel(64_000, sampling_exclusive=True),
    "claude-opus-4-5@20251101": ClaudeModel(64_000, sampling_exclusive=True),
    # sources disagree (64k or 128k): the emulator takes the stricter, so what passes here passes on Vertex
    "claude-sonnet-4-6": ClaudeModel(64_000, sampling_exclusive=True),
    "claude-opus-4-6": ClaudeModel(128_000, sampling_exclusive=True),
    "claude-opus-4-7": ClaudeModel(128_000, sampling_exclusive=True),
    "claude-opus-4-8": ClaudeModel(128_000, sampling_exclusive=True),
    "claude-opus-5": ClaudeModel(128_000, sampling_exclusive=True),
    "claude-sonnet-5": ClaudeModel(128_000, sampling_exclusive=True),
}


def first_party_id(vertex_id: str) -> str:
    """The id Vertex writes into answers: `claude-sonnet-4-5@20250929` → `claude-sonnet-4-5-20250929`."""
    return vertex_id.replace("@", "-")


def vertex_id(model: str) -> str | None:
    """The Vertex id of a model named by its Vertex id or its first-party id (as count-tokens bodies may)."""
    if model in CLAUDE_MODELS:
        return model
    return next((known for known in CLAUDE_MODELS if first_party_id(known) == model), None)
