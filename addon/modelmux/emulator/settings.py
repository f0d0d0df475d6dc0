"""What can change while the emulator runs (`POST /_emulator/settings`), with its defaults. Imports nothing
heavy: the command line reads the defaults from here."""

from __future__ import annotations

from dataclasses import dataclass

from .jsontypes import is_int, is_number

DEFAULT_PROJECT = "modelmux-emulator"
MAX_PACE_MS = 60_000
# Vertex's per-request instance cap for the other embedding models; gemini-embedding-001 took one instance per
# request in Google's docs until 2025, 250 in reports from 2026 — hence a setting.
MAX_EMBEDDING_INSTANCES = 250


@dataclass
class Settings:
    pace_ms: float = 0.0  # delay between SSE events
    token_ttl: int = 3600  # lifetime of issued access tokens, seconds
    gemini_embedding_instances: int = MAX_EMBEDDING_INSTANCES  # gemini-embedding-001's instances per request


def apply_settings(settings: Settings, changes: object) -> None:
    """Check every change first, then apply them all; ValueError naming the first bad one."""
    if not isinstance(changes, dict):
        raise ValueError("settings must be a JSON object")
    unknown = set(changes) - {"pace_ms", "token_ttl", "gemini_embedding_instances"}
    if unknown:
        raise ValueError(f"unknown settings: {sorted(unknown)}")
    pace, ttl = changes.get("pace_ms", settings.pace_ms), changes.get("token_ttl", settings.token_ttl)
    instances = changes.get("gemini_embedding_instances", settings.gemini_embedding_instances)
    if not is_number(pace) or not 0 <= pace <= MAX_PACE_MS:
        raise ValueError(f"pace_ms must be a number from 0 to {MAX_PACE_MS}")
    if not is_int(ttl) or ttl < 1:
        raise ValueError("token_ttl must be an integer ≥ 1")
    if not is_int(instances) or not 1 <= instances <= MAX_EMBEDDING_INSTANCES:
        raise ValueError(f"gemini_embedding_instances must be an integer from 1 to {MAX_EMBEDDING_INSTANCES}")
    settings.pace_ms, settings.token_ttl, settings.gemini_embedding_instances = float(pace), ttl, instances
