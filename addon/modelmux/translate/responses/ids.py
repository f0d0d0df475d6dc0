"""Ids shaped like OpenAI's Responses ids: a type prefix and 50 random hex digits (`resp_0183…`, 200 bits).

Random, not derived from anything the client sent, so they are unique across processes and replicas without
coordination, and reveal nothing (not the Vertex message id, not the time).
"""

from __future__ import annotations

import secrets

RESPONSE = "resp"
MESSAGE = "msg"
FUNCTION_CALL = "fc"
FUNCTION_CALL_OUTPUT = "fco"
REASONING = "rs"
CUSTOM_TOOL_CALL = "ctc"
CUSTOM_TOOL_CALL_OUTPUT = "ctco"
WEB_SEARCH_CALL = "ws"
COMPACTION = "cmp"
TOOL_SEARCH_CALL = "tsc"
TOOL_SEARCH_OUTPUT = "tso"
ADDITIONAL_TOOLS = "at"
CONFIGURATION_UPDATE = "cu"


def new_id(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(25)}"
