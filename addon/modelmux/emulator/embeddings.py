"""Vertex's text-embedding models behind `…/publishers/google/models/{MODEL}:predict`: the request rules and
limits Vertex documents, each broken one a Google 400 INVALID_ARGUMENT, and deterministic vectors.

Request: `{"instances": [{"content": str, "task_type"?: TASK_TYPES, "title"?: str}], "parameters"?:
{"outputDimensionality"?: int, "autoTruncate"?: bool}}`. Answer: `{"predictions": [{"embeddings": {"values": [...],
"statistics": {"token_count": N, "truncated": bool}}}], "metadata": {"billableCharacterCount": N}}`.

- Vectors: a function of (model, task_type, title, the text embedded), unit length, of the model's native
  dimension; with outputDimensionality D (1 ≤ D ≤ native) the first D values renormalised, as the MRL-trained
  models' truncation works. Values are rounded to 9 decimals (float32 carries fewer digits anyway).
- Tokens, the emulator's own rule (Vertex's tokenizer is not public): every run of letters, digits and
  underscores is one token, every other non-space character another (`re.findall(r"\\w+|[^\\w\\s]")`): "Hello,
  world!" is 4. The title does not count.
- Limits: at most 250 instances per request (gemini-embedding-001: the `gemini_embedding_instances` setting,
  default 250), 2,048 tokens per text — beyond it the text is cut to its first 2,048 tokens and `truncated` is
  true when autoTruncate is true (Vertex's default), a 400 when it is false — and 20,000 tokens per request
  (counted after truncation).
- billableCharacterCount: the non-whitespace characters of the texts embedded (after truncation).
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import struct
from dataclasses import dataclass
from typing import Any

from .errors import InvalidRequest
from .jsontypes import is_int

# model → native dimension
EMBEDDING_MODELS: dict[str, int] = {
    "gemini-embedding-001": 3072,
    "text-embedding-005": 768,
    "text-multilingual-embedding-002": 768,
    "text-embedding-004": 768,
}
GEMINI_EMBEDDING = "gemini-embedding-001"  # its instance cap is a setting
MAX_INSTANCES = 250
MAX_TEXT_TOKENS = 2_048
MAX_REQUEST_TOKENS = 20_000
TASK_TYPES = ("RETRIEVAL_QUERY", "RETRIEVAL_DOCUMENT", "SEMANTIC_SIMILARITY", "CLASSIFICATION", "CLUSTERING",
              "QUESTION_ANSWERING", "FACT_VERIFICATION", "CODE_RETRIEVAL_QUERY")
DEFAULT_TASK_TYPE = "RETRIEVAL_QUERY"
REQUEST_KEYS = ("instances", "parameters")
INSTANCE_KEYS = ("content", "task_type", "title")
PARAMETER_KEYS = ("outputDimensionality", "autoTruncate")
TOKEN = re.compile(r"\w+|[^\w\s]")
DECIMALS = 9


@dataclass(frozen=True)
class Text:
    """One instance as checked: what is embedded, and how."""
    content: str  # after truncation
    task_type: str
    title: str | None
    tokens: int
    truncated: bool


def count_tokens(text: str) -> int:
    return len(TOKEN.findall(text))


def _truncated(text: str, limit: int) -> str:
    """The text up to the end of its limit-th token."""
    for k, match in enumerate(TOKEN.finditer(text), 1):
        if k == limit:
            return text[:match.end()]
    return text


def check_request(body: object, model: str, max_instances: int) -> tuple[list[Text], int]:
    """(the texts, output dimension) of a valid predict body for `model` (one of EMBEDDING_MODELS); InvalidRequest
    with Vertex's message otherwise. `max_instances`: the model's per-request instance cap."""
    if not isinstance(body, dict):
        raise InvalidRequest("Invalid JSON payload received. Expected an object at the top level.")
    for key in body:
        if key not in REQUEST_KEYS:
            raise InvalidRequest(f'Invalid JSON payload received. Unknown name "{key}": Cannot find field.')
    native = EMBEDDING_MODELS[model]
    dimension, auto_truncate = _parameters(body.get("parameters", {}), native)
    instances = body.get("instances")
    if not isinstance(instances, list) or not instances:
        raise InvalidRequest("instances: a non-empty list of instances is required.")
    if len(instances) > max_instances:
        raise InvalidRequest(f"Unable to submit request because it has a batchSize value of {len(instances)} but "
                             f"the supported range is from 1 (inclusive) to {max_instances + 1} (exclusive). "
                             f"Update the value and try again.")
    found = [_instance(raw, f"instances[{i}]", auto_truncate) for i, raw in enumerate(instances)]
    total = sum(text.tokens for text in found)
    if total > MAX_REQUEST_TOKENS:
        raise InvalidRequest(f"Unable to submit request because the input token count is {total} but the model "
                             f"supports up to {MAX_REQUEST_TOKENS} tokens per request. Reduce the input token "
                             f"count and try again.")
    return found, dimension


def _parameters(raw: object, native: int) -> tuple[int, bool]:
    """(output dimension, autoTruncate) from `parameters`."""
    if not isinstance(raw, dict):
        raise InvalidRequest("parameters: must be an object.")
    for key in raw:
        if key not in PARAMETER_KEYS:
            raise InvalidRequest(f'parameters: unknown parameter "{key}"; the supported parameters are '
                                 f'{", ".join(PARAMETER_KEYS)}.')
    dimension = raw.get("outputDimensionality", native)
    if not is_int(dimension):
        raise InvalidRequest("parameters.outputDimensionality: must be an integer.")
    if not 1 <= dimension <= native:
        raise InvalidRequest(f"Unable to submit request because outputDimensionality value {dimension} is out of "
                             f"range: the supported range is from 1 (inclusive) to {native} (inclusive).")
    auto_truncate = raw.get("autoTruncate", True)
    if not isinstance(auto_truncate, bool):
        raise InvalidRequest("parameters.autoTruncate: must be a boolean.")
    return dimension, auto_truncate


def _instance(raw: object, path: str, auto_truncate: bool) -> Text:
    if not isinstance(raw, dict):
        raise InvalidRequest(f"{path}: must be an object with a `content` string.")
    for key in raw:
        if key not in INSTANCE_KEYS:
            raise InvalidRequest(f'{path}: unknown field "{key}"; an instance has {", ".join(INSTANCE_KEYS)}.')
    content = raw.get("content")
    if not isinstance(content, str):
        raise InvalidRequest(f"{path}.content: a string is required.")
    tokens = count_tokens(content)
    if not tokens:
        raise InvalidRequest(f"{path}.content: The text content is empty.")
    task_type = raw.get("task_type", DEFAULT_TASK_TYPE)
    if task_type not in TASK_TYPES:
        raise InvalidRequest(f"{path}.task_type: Unsupported task type {json.dumps(task_type)}; it must be one of "
                             f"{', '.join(TASK_TYPES)}.")
    title = raw.get("title")
    if title is not None:
        if not isinstance(title, str):
            raise InvalidRequest(f"{path}.title: must be a string.")
        if task_type != "RETRIEVAL_DOCUMENT":
            raise InvalidRequest(f"{path}.title: a title is only valid with task_type RETRIEVAL_DOCUMENT.")
    if tokens <= MAX_TEXT_TOKENS:
        return Text(content, task_type, title, tokens, truncated=False)
    if not auto_truncate:
        raise InvalidRequest(f"Unable to submit request because {path} has {tokens} input tokens but the model "
                             f"supports up to {MAX_TEXT_TOKENS}. Reduce the input token count, or set "
                             f"autoTruncate, and try again.")
    return Text(_truncated(content, MAX_TEXT_TOKENS), task_type, title, MAX_TEXT_TOKENS, truncated=True)


def vector(model: str, text: Text, dimension: int) -> list[float]:
    """The text's embedding: its native-dimension vector seeded by a hash, unit length; its first `dimension`
    values, renormalised."""
    seed = json.dumps([model, text.task_type, text.title, text.content], ensure_ascii=False).encode()
    # an extendable-output hash: its first 4·D bytes are the same whatever length is asked, so these are the
    # first D values of the native vector (signed 32-bit integers, scaled to unit length)
    first = struct.unpack(f"<{dimension}i", hashlib.shake_256(seed).digest(4 * dimension))
    length = math.sqrt(math.sumprod(first, first))
    if not length:  # all D integers 0: a 2⁻³²ᴰ chance, still a unit vector
        return [1.0] + [0.0] * (dimension - 1)
    scale = 1 / length
    return [round(v * scale, DECIMALS) for v in first]


def predict(model: str, texts: list[Text], dimension: int) -> dict[str, Any]:
    """The answer to a checked request."""
    return {"predictions": [{"embeddings": {"values": vector(model, text, dimension),
                                            "statistics": {"token_count": text.tokens,
                                                           "truncated": text.truncated}}} for text in texts],
            "metadata": {"billableCharacterCount": sum(len("".join(t.content.split())) for t in texts)}}
