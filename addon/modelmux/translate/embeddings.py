"""OpenAI `POST /v1/embeddings` → Vertex AI `:predict` batches, and their answers → one OpenAI answer. Pure: no
I/O (the cl100k_base tokenizer is read once from the package, modelmux/cl100k.py).

For the hook:

    plan = embeddings_plan(raw_body, router.route_embedding, truncate=config.embeddings.truncate)   # or a 400/404
    # POST each plan.batches[k] as JSON to router.embedding_url(plan.route), at most
    # embeddings.max_concurrent_batches at a time; a failed one: batch_error(plan, k, status, content, headers)
    content = assemble_bytes(plan, answers)   # answers[k]: Vertex's 2xx body (bytes) to plan.batches[k]
    # (assemble(plan, answers) gives the same answer as a dict)

Every field's treatment is in docs/mapping.md ("Embeddings"); the non-obvious points:

- `input` token ids are cl100k_base tokens (what OpenAI's embedding models and LangChain's tiktoken use): they are
  decoded to text, since Vertex takes text; bytes that end mid-character decode to U+FFFD, as tiktoken does;
- token counts are cl100k_base counts, the ones a client can check with tiktoken. Vertex counts with its own
  tokenizer, so a batch carries at most TOKEN_BUDGET_SHARE of the model's tokens_per_request by that count; a
  text above tokens_per_text is a 400 (unless `truncate`), and Vertex's own 400 covers the rest;
- batches are runs of consecutive inputs, so the answers concatenate back in input order;
- `usage` is the sum of Vertex's `statistics.token_count` (cl100k_base counts where Vertex gives none);
- for `float` answers, `assemble_bytes` copies Vertex's number arrays into the answer without parsing them into
  Python floats and printing them again (which costs seconds for 600 vectors of 3072 values).
"""

from __future__ import annotations

import binascii
import json
import re
import sys
from array import array
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

from .. import cl100k
from ..config import EmbeddingLimits
from ..vertex import EmbeddingRoute, UnknownModel
from .errors import OpenAIError, from_upstream, invalid_request, model_not_found
from .request import json_body, strict_json
from .validation import json_kind

MAX_INPUTS = 2048  # OpenAI's limit on the number of inputs in one request
ENCODING_FORMATS = ("float", "base64")
# Share of tokens_per_request a batch may fill, counted with cl100k_base. Vertex counts with its own tokenizer,
# which modelmux cannot run: the two roughly agree on English prose and can differ more on digits, code and other
# scripts, so 20% headroom keeps a batch under Vertex's limit without splitting much more than needed (an estimate;
# lower tokens_per_request in the config if Vertex still finds a batch too long). A batch of one text always goes.
TOKEN_BUDGET_SHARE = 0.8
_LITTLE_ENDIAN = sys.byteorder == "little"


@dataclass(frozen=True)
class EmbeddingsRequest:
    """A validated `CreateEmbeddingRequest`."""

    model: str
    texts: list[str]  # every input as text (token ids decoded with cl100k_base), in order
    token_counts: list[int | None]  # the cl100k_base count where it is known without tokenizing (token-id inputs)
    single: bool  # `input` was one string or one token list: errors name `input`, else `input[i]`
    dimensions: int | None
    encoding_format: str  # "float" | "base64"
    user: str | None  # accepted; Vertex's :predict has no end-user field

    def param(self, i: int) -> str:
        return "input" if self.single else f"input[{i}]"


@dataclass(frozen=True)
class EmbeddingsPlan:
    """What to send to Vertex for one request, and how to put the answers together."""

    route: EmbeddingRoute
    encoding_format: str
    dimensions: int | None  # → parameters.outputDimensionality
    batches: list[dict[str, Any]]  # :predict bodies, in input order
    spans: list[tuple[int, int]]  # batch k embeds inputs spans[k][0] … spans[k][1] - 1

    @property
    def requested(self) -> str:
        return self.route.requested

    @property
    def vertex_model(self) -> str:
        return self.route.vertex_model

    @property
    def count(self) -> int:
        return self.spans[-1][1]


# --- the request ---------------------------------------------------------------------------------------------

def _invalid_type(param: str, expected: str, value: Any) -> OpenAIError:
    return invalid_request(f"Invalid type for '{param}': expected {expected}, but got {json_kind(value)} instead.",
                           param=param, code="invalid_type")


_INT_ONLY = {int}
_INPUT_KINDS = "a string, an array of strings, an array of integers, or an array of arrays of integers"


def _decode_ids(ids: list[Any], param: str) -> str:
    """Token ids → text; every id must be an integer cl100k_base assigns (booleans are not integers)."""
    if set(map(type, ids)) != _INT_ONLY:  # C-speed; `type(t) is int` also keeps booleans out
        j = next(j for j, t in enumerate(ids) if type(t) is not int)
        raise _invalid_type(f"{param}[{j}]", "an integer token id", ids[j])
    enc = cl100k.encoding()
    try:
        return enc.decode(ids)
    except (KeyError, OverflowError, ValueError):
        for j, t in enumerate(ids):
            try:
                enc.decode_single_token_bytes(t)
            except (KeyError, OverflowError, ValueError):
                raise invalid_request(f"Invalid value for '{param}[{j}]': {t} is not a token id of cl100k_base "
                                      f"(0 … {enc.max_token_value}, unassigned ids excluded).",
                                      param=f"{param}[{j}]", code="invalid_value") from None
        raise  # pragma: no cover - decode failed on ids that each decode: not tiktoken's contract


def _utf8_safe(texts: list[str]) -> list[str]:
    """Lone surrogates (JSON can carry them; UTF-8, and so Vertex, cannot) become U+FFFD."""
    out = texts
    for i, text in enumerate(texts):
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            if out is texts:
                out = list(texts)
            out[i] = text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
    return out


def _inputs(value: Any) -> tuple[list[str], list[int | None], bool]:
    if isinstance(value, str):
        if not value:
            raise invalid_request("Invalid value for 'input': it must not be an empty string.", param="input",
                                  code="invalid_value")
        return _utf8_safe([value]), [None], True
    if not isinstance(value, list):
        raise _invalid_type("input", _INPUT_KINDS, value)
    if not value:
        raise invalid_request("Invalid value for 'input': it must not be an empty array.", param="input",
                              code="invalid_value")
    first = value[0]
    if type(first) is int:  # one text given as token ids: its length is bounded by tokens_per_text, not here
        return [_decode_ids(value, "input")], [len(value)], True
    if len(value) > MAX_INPUTS:
        raise invalid_request(f"Invalid value for 'input': at most {MAX_INPUTS} inputs per request, got "
                              f"{len(value)}.", param="input", code="invalid_value")
    if isinstance(first, str):
        for i, text in enumerate(value):
            if type(text) is not str:
                raise _invalid_type(f"input[{i}]", "a string (as input[0] is)", text)
            if not text:
                raise invalid_request(f"Invalid value for 'input[{i}]': it must not be an empty string.",
                                      param=f"input[{i}]", code="invalid_value")
        return _utf8_safe(value), [None] * len(value), False
    if isinstance(first, list):
        texts: list[str] = []
        for i, ids in enumerate(value):
            if type(ids) is not list:
                raise _invalid_type(f"input[{i}]", "an array of token ids (as input[0] is)", ids)
            if not ids:
                raise invalid_request(f"Invalid value for 'input[{i}]': an array of token ids must not be empty.",
                                      param=f"input[{i}]", code="invalid_value")
            texts.append(_decode_ids(ids, f"input[{i}]"))
        return texts, [len(ids) for ids in value], False
    raise _invalid_type("input[0]", "a string, an integer token id or an array of token ids", first)


def parse_embeddings_request(raw: bytes) -> EmbeddingsRequest:
    """Validate the client's body. Raises OpenAIError (400) naming the offending parameter."""
    data = json_body(raw)
    model = data.get("model")
    if model is None:
        raise invalid_request("You must provide a model parameter.", param="model",
                              code="missing_required_parameter")
    if not isinstance(model, str):
        raise _invalid_type("model", "a string", model)
    if not model:
        raise invalid_request("Invalid value for 'model': it must not be empty.", param="model",
                              code="invalid_value")
    if "input" not in data or data["input"] is None:
        raise invalid_request("You must provide an input parameter.", param="input",
                              code="missing_required_parameter")
    texts, counts, single = _inputs(data["input"])
    dimensions = data.get("dimensions")
    if dimensions is not None:
        if type(dimensions) is not int:
            raise _invalid_type("dimensions", "an integer", dimensions)
        if dimensions < 1:
            raise invalid_request(f"Invalid value for 'dimensions': it must be at least 1, got {dimensions}.",
                                  param="dimensions", code="invalid_value")
    encoding_format = data.get("encoding_format")
    if encoding_format is None:
        encoding_format = "float"
    elif encoding_format not in ENCODING_FORMATS:
        raise invalid_request(f"Invalid value for 'encoding_format': {json.dumps(encoding_format)}; it must be "
                              f"'float' or 'base64'.", param="encoding_format", code="invalid_value")
    user = data.get("user")
    if user is not None and not isinstance(user, str):
        raise _invalid_type("user", "a string", user)
    return EmbeddingsRequest(model=model, texts=texts, token_counts=counts, single=single, dimensions=dimensions,
                             encoding_format=encoding_format, user=user)


# --- the plan ------------------------------------------------------------------------------------------------

def token_budget(limits: EmbeddingLimits) -> int:
    """Most cl100k_base tokens one batch carries (a single text above it still goes alone)."""
    return max(limits.tokens_per_text, int(limits.tokens_per_request * TOKEN_BUDGET_SHARE))


def _too_long(req: EmbeddingsRequest, i: int, count: int, route: EmbeddingRoute) -> OpenAIError:
    param = req.param(i)
    where = "Your input is" if req.single else f"Input {i} is"
    return invalid_request(
        f"{where} {count} tokens (cl100k_base); Vertex AI's `{route.vertex_model}`, which serves `{route.requested}`, "
        f"takes at most {route.limits.tokens_per_text} tokens per input. Shorten or split the text (LangChain: "
        f"OpenAIEmbeddings(embedding_ctx_length={route.limits.tokens_per_text})), or set `embeddings.truncate: true` "
        f"in modelmux's configuration to let Vertex AI truncate it.", param=param, code="context_length_exceeded")


def _costs(req: EmbeddingsRequest, route: EmbeddingRoute, truncate: bool, budget: int) -> list[int]:
    """Tokens per input for packing: exact cl100k_base counts where they matter, UTF-8 sizes (an upper bound: a
    token is at least one byte) where they prove enough — a small request is never tokenized."""
    per_text = route.limits.tokens_per_text
    sizes = [len(t.encode("utf-8")) for t in req.texts]
    bounds = [c if c is not None else s for c, s in zip(req.token_counts, sizes)]
    exact = sum(bounds) > budget
    enc = None
    costs = []
    for i, (text, known, bound) in enumerate(zip(req.texts, req.token_counts, bounds)):
        count = known
        if count is None and (exact or (not truncate and bound > per_text)):
            enc = enc or cl100k.encoding()
            count = len(enc.encode_ordinary(text))
        if not truncate and count is not None and count > per_text:
            raise _too_long(req, i, count, route)
        costs.append(bound if count is None else count)
    return costs


def split(costs: Sequence[int], texts_per_request: int, budget: int) -> list[tuple[int, int]]:
    """Consecutive runs of inputs, each at most texts_per_request long and at most `budget` in cost unless it is a
    single input (greedy: a run closes when the next input would not fit)."""
    spans = []
    start, tokens = 0, 0
    for i, cost in enumerate(costs):
        if i > start and (i - start == texts_per_request or tokens + cost > budget):
            spans.append((start, i))
            start, tokens = i, 0
        tokens += cost
    spans.append((start, len(costs)))
    return spans


def plan_embeddings(req: EmbeddingsRequest, route: EmbeddingRoute, *, truncate: bool) -> EmbeddingsPlan:
    """Check `dimensions` and the per-text limit against the model, and split into :predict bodies."""
    limits = route.limits
    d = req.dimensions
    too_big = d is not None and limits.max_dimensions is not None and d > limits.max_dimensions
    if d is not None and (d < limits.min_dimensions or too_big):
        upper = limits.max_dimensions if limits.max_dimensions is not None else "any size Vertex AI supports"
        raise invalid_request(
            f"Invalid value for 'dimensions': {d}; Vertex AI's `{route.vertex_model}`, which serves "
            f"`{route.requested}`, takes {limits.min_dimensions} … {upper}.", param="dimensions",
            code="invalid_value")
    budget = token_budget(limits)
    spans = split(_costs(req, route, truncate, budget), limits.texts_per_request, budget)
    parameters: dict[str, Any] = {"autoTruncate": truncate}
    if d is not None:
        parameters["outputDimensionality"] = d
    texts = req.texts
    batches = [{"instances": [{"content": t} for t in texts[a:b]], "parameters": dict(parameters)}
               for a, b in spans]
    return EmbeddingsPlan(route=route, encoding_format=req.encoding_format, dimensions=d, batches=batches,
                          spans=spans)


def embeddings_plan(raw: bytes, route_for: Callable[[str], EmbeddingRoute], *, truncate: bool) -> EmbeddingsPlan:
    """The client's body → the plan; OpenAIError 400 for bad input, 404 model_not_found for an unrouted model."""
    req = parse_embeddings_request(raw)
    try:
        route = route_for(req.model)
    except UnknownModel:
        raise model_not_found(req.model) from None
    return plan_embeddings(req, route, truncate=truncate)


# --- the answer ----------------------------------------------------------------------------------------------

def _bad_answer(plan: EmbeddingsPlan, k: int, what: str) -> OpenAIError:
    where = f" (request {k + 1} of {len(plan.batches)})" if len(plan.batches) > 1 else ""
    return OpenAIError(502, f"Vertex AI's `{plan.vertex_model}` answered with an unexpected embeddings body{where}: "
                            f"{what}.", "server_error", None, "bad_upstream_response")


def _predictions(plan: EmbeddingsPlan, k: int, answer: Any) -> list[Any]:
    if isinstance(answer, (bytes, bytearray, str)):
        try:
            answer = strict_json(answer)
        except (ValueError, UnicodeDecodeError, RecursionError):
            raise _bad_answer(plan, k, "not JSON") from None
    preds = answer.get("predictions") if isinstance(answer, dict) else None
    if not isinstance(preds, list):
        raise _bad_answer(plan, k, "no `predictions` list")
    a, b = plan.spans[k]
    if len(preds) != b - a:
        raise _bad_answer(plan, k, f"{len(preds)} predictions for {b - a} inputs")
    return preds


def _base64(values: list[Any]) -> str:
    packed = array("f", values)  # TypeError on anything but numbers
    if not _LITTLE_ENDIAN:
        packed.byteswap()
    return binascii.b2a_base64(packed.tobytes(), newline=False).decode("ascii")


def assemble(plan: EmbeddingsPlan, answers: Sequence[Any]) -> dict[str, Any]:
    """Vertex's answers, one per batch in plan order (bytes or parsed JSON) → the `CreateEmbeddingResponse`.
    An answer of the wrong shape → OpenAIError 502. Vectors are passed on as Vertex sent them (base64: packed as
    little-endian float32, what openai-python decodes); their lengths are checked, not each number."""
    if len(answers) != len(plan.batches):
        raise ValueError(f"{len(answers)} answers for {len(plan.batches)} batches")
    as_base64 = plan.encoding_format == "base64"
    width = plan.dimensions
    data: list[dict[str, Any]] = []
    tokens = 0
    for k, answer in enumerate(answers):
        start = plan.spans[k][0]
        for j, pred in enumerate(_predictions(plan, k, answer)):
            emb = pred.get("embeddings") if isinstance(pred, dict) else None
            values = emb.get("values") if isinstance(emb, dict) else None
            if type(values) is not list or not values:
                raise _bad_answer(plan, k, f"prediction {j} has no `embeddings.values`")
            if width is None:
                width = len(values)
            elif len(values) != width:
                raise _bad_answer(plan, k, f"prediction {j} has {len(values)} values, not {width}")
            tokens += _prediction_tokens(emb, plan.batches[k]["instances"][j]["content"])
            if as_base64:
                try:
                    vector: Any = _base64(values)
                except (TypeError, OverflowError):
                    raise _bad_answer(plan, k, f"prediction {j} has values that are not numbers") from None
            else:
                vector = values
            data.append({"object": "embedding", "index": start + j, "embedding": vector})
    return {"object": "list", "data": data, "model": plan.requested,
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens}}


def batch_tokens(plan: EmbeddingsPlan, k: int, answer: bytes) -> int:
    """The input tokens Vertex billed for batch `k` (its 2xx answer): charged even when another batch failed and
    the client got an error. Vertex's counts, ours where it gave none; 0 for an answer that does not parse."""
    try:
        predictions = json.loads(answer).get("predictions")
    except (ValueError, AttributeError):
        return 0
    texts = plan.batches[k]["instances"]
    tokens = 0
    for j, pred in enumerate(predictions if isinstance(predictions, list) else []):
        emb = pred.get("embeddings") if isinstance(pred, dict) else None
        tokens += _prediction_tokens(emb, texts[j]["content"] if j < len(texts) else "")
    return tokens


def _prediction_tokens(emb: Any, text: str) -> int:
    """One prediction's tokens: Vertex's `statistics.token_count`, or cl100k_base's count of its text where Vertex
    gave none (or no number: json.loads lets NaN and infinity by)."""
    stats = emb.get("statistics") if isinstance(emb, dict) else None
    count = stats.get("token_count") if isinstance(stats, dict) else None
    if type(count) in (int, float) and 0 <= count < 1e15:
        return int(count)
    return len(cl100k.encoding().encode_ordinary(text)) if text else 0


def batch_error(plan: EmbeddingsPlan, k: int, status: int, content: bytes, headers: dict[str, str] | None = None,
                *, region: str | None = None) -> OpenAIError:
    """A non-2xx Vertex answer to batch k → the OpenAI error for the whole request (as for chat: a 429 stays a 429
    with retry-after), saying which inputs it was about when the request was split."""
    err = from_upstream(status, content, headers, model=plan.vertex_model, region=region)
    if len(plan.batches) > 1:
        a, b = plan.spans[k]
        err = replace(err, message=f"{err.message} (inputs {a}…{b - 1}, request {k + 1} of {len(plan.batches)})")
    return err


# Vertex's vectors as they stand in its JSON, whitespace removed: `"values":[numbers]` (numbers hold no `]`)
_VALUES = re.compile(rb'"values":(\[[^\]]*\])')
_WHITESPACE = b" \t\n\r"
_NUMBER_BYTES = b"0123456789.eE+-,"


def _lifted_arrays(raw: bytes) -> tuple[Any, list[bytes]] | None:
    """Vertex's answer with each `values` array replaced by its ordinal, and the arrays themselves; None unless
    the rest is JSON and each array holds only comma-separated number characters. Whitespace goes first, from the
    whole body: outside strings JSON does not need it, and inside one (none of which is used here) a JSON string
    cannot hold a raw tab or newline, so the body stays JSON."""
    arrays: list[bytes] = []

    def lift(m: re.Match[bytes]) -> bytes:
        arrays.append(m.group(1))
        return b'"values":%d' % (len(arrays) - 1)
    try:
        skeleton = strict_json(_VALUES.sub(lift, raw.translate(None, _WHITESPACE)))
    except (ValueError, UnicodeDecodeError, RecursionError):
        return None
    for array_text in arrays:
        if (len(array_text) < 3 or array_text.translate(None, _NUMBER_BYTES) != b"[]" or b",," in array_text
                or array_text.startswith(b"[,") or array_text.endswith(b",]")):
            return None
    return skeleton, arrays


def _float_body(plan: EmbeddingsPlan, answers: Sequence[Any]) -> bytes | None:
    """The `float` answer spliced from Vertex's own number text; None where anything is not as expected (then
    assemble() decides, and names the problem)."""
    parts: list[bytes] = [b'{"object":"list","data":[']
    tokens = 0
    width = plan.dimensions
    for k, raw in enumerate(answers):
        if not isinstance(raw, (bytes, bytearray)):
            return None
        lifted = _lifted_arrays(raw)
        if lifted is None:
            return None
        skeleton, arrays = lifted
        a, b = plan.spans[k]
        preds = skeleton.get("predictions") if isinstance(skeleton, dict) else None
        if not isinstance(preds, list) or len(preds) != b - a or len(arrays) != b - a:
            return None
        for j, pred in enumerate(preds):
            emb = pred.get("embeddings") if isinstance(pred, dict) else None
            ordinal = emb.get("values") if isinstance(emb, dict) else None
            if type(ordinal) is not int or ordinal != j:  # each array is this prediction's own, in order
                return None
            n = arrays[j].count(b",") + 1
            if width is None:
                width = n
            elif n != width:
                return None
            tokens += _prediction_tokens(emb, plan.batches[k]["instances"][j]["content"])
            parts.append(b'%s{"object":"embedding","index":%d,"embedding":' % (b"," if a + j else b"", a + j))
            parts.append(arrays[j])
            parts.append(b"}")
    parts.append(b'],"model":%s,"usage":{"prompt_tokens":%d,"total_tokens":%d}}'
                 % (json.dumps(plan.requested).encode(), tokens, tokens))
    return b"".join(parts)


def assemble_bytes(plan: EmbeddingsPlan, answers: Sequence[Any]) -> bytes:
    """assemble() as the response body (compact JSON). For `float`, Vertex's number arrays are copied as text
    (whitespace removed; checked to be comma-separated number characters, not parsed); anything else — base64,
    parsed answers, an answer the copy does not recognise — goes through assemble() (OpenAIError 502 for a bad
    one)."""
    if plan.encoding_format == "float":
        body = _float_body(plan, answers)
        if body is not None:
            return body
    return json.dumps(assemble(plan, answers), separators=(",", ":")).encode()
