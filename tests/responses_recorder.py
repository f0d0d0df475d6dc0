"""A recording fake of OpenAI's Responses endpoint on loopback: a test tool for finding out what real clients
(Codex CLI, the agents SDKs, the Vercel AI SDK, LangChain) send and need, and a stand-in for OpenAI that proves
the client drivers in tests/ work before modelmux serves /v1/responses. It is not the product and imports none
of it.

Every request is recorded (method, path, query, headers — the API key masked — and the JSON body), WebSocket
upgrade attempts included. It answers:

- `POST /v1/responses`: a Response, as JSON or (with `stream: true`) as SSE `event: T\\ndata: JSON` events
  (created, in_progress, the items with their deltas, completed), shaped per ../shared/openai-openapi.yaml.
  Its fake model follows the emulator's conventions, so a test's prompt drives it as it drives modelmux + the
  emulator: "You said: " + the last user text; a `[[call:NAME {JSON}]]` in the last user text → "I will call
  NAME." and a call of tool NAME with that input (a `function_call`, or for a `custom` tool a
  `custom_tool_call` whose input is the JSON's "input" string, for a client-executed `tool_search` a
  `tool_search_call` with the JSON as its arguments); after tool outputs → "Tool results: " + the outputs joined
  by " | " (a `tool_search_output` as "loaded: " + the names of its tools); `text.format` json_schema → a JSON
  value the schema accepts ("<name>-value" strings); an input ending in `compaction_trigger` (Codex's remote
  compaction) → one `compaction` item.
- `GET /v1/responses` with `Upgrade: websocket`: refused as `ws_refusal` says — "404" (JSON error), "426"
  (Upgrade Required), "405", "close" (the connection is closed without an answer) — or "accept": the handshake
  is completed and each `response.create` text frame is recorded and answered with the same events as frames.
- `GET|DELETE /v1/responses/{id}`, `GET /v1/responses/{id}/input_items`, `POST /v1/responses/input_tokens`,
  `POST /v1/responses/compact`, `GET /v1/models`; anything else a 404 OpenAI error (recorded all the same).

Stored responses (`store` not false) live in memory for the recorder's life.

Run it by hand to watch a client: `python tests/responses_recorder.py --port 8765 --log requests.jsonl
[--ws-refusal 426]`, then point the client at http://127.0.0.1:8765/v1.
"""

from __future__ import annotations

import argparse
import base64
import http.server
import json
import re
import secrets
import socket
import threading
import time
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

WS_REFUSALS = ("404", "426", "405", "close", "accept")
CALL_START = re.compile(r"\[\[call:([a-zA-Z0-9_.-]{1,128})")
MAX_BODY = 32 * 1024 * 1024  # what one recorded request may carry
MAX_RECORDS = 10_000  # bounded: a runaway client cannot grow the log without limit
_JSON = json.JSONDecoder()
MODELS = ("gpt-4o", "gpt-4o-mini", "gpt-5.6-luna", "gpt-5.5", "gpt-5.3-codex")


@dataclass
class Record:
    """One request as the client sent it."""
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]  # lower-cased names; authorization / api-key values masked
    body: Any  # parsed JSON, the text when it is not JSON, None when empty
    t: float  # time.monotonic() on arrival
    websocket: bool = False  # an upgrade attempt (GET … Upgrade: websocket), or a frame received over one
    answer: int | None = None  # the status answered (101 for an accepted upgrade, None for a dropped connection)

    def as_json(self) -> dict:
        return {"method": self.method, "path": self.path, "query": self.query, "headers": self.headers,
                "body": self.body, "t": self.t, "websocket": self.websocket, "answer": self.answer}


def masked(headers) -> dict[str, str]:
    out = {}
    for name, value in headers.items():
        name = name.lower()
        if name in ("authorization", "api-key", "x-api-key", "openai-api-key"):
            scheme, _, secret = value.partition(" ")
            value = f"{scheme} <{len(secret)} chars>" if secret else f"<{len(value)} chars>"
        out[name] = value
    return out


def new_id(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(16)}"


# --- the fake model -----------------------------------------------------------------------------------------

def _parts_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(p.get("text", "") for p in content if isinstance(p, dict) and "text" in p)
    return ""


def last_user_text(body: dict) -> str:
    items = body.get("input")
    if isinstance(items, str):
        return items
    for item in reversed(items or []):
        if item.get("role") == "user" and item.get("type", "message") == "message":
            return _parts_text(item.get("content"))
    return ""


def trailing_outputs(body: dict) -> list[str]:
    """The tool outputs the input ends with (after the model's last calls): their text, in order."""
    items = body.get("input")
    if not isinstance(items, list):
        return []
    out: list[str] = []
    for item in reversed(items):
        kind = item.get("type")
        if kind in ("function_call_output", "custom_tool_call_output", "local_shell_call_output",
                    "shell_call_output", "apply_patch_call_output"):
            out.append(_parts_text(item.get("output")) if not isinstance(item.get("output"), str) else item["output"])
        elif kind == "tool_search_output":  # the tools a client-executed search loaded
            out.append("loaded: " + ", ".join(str(t.get("name")) for t in item.get("tools") or []))
        elif kind in ("function_call", "custom_tool_call", "tool_search_call", "reasoning"):
            if out:
                break
        else:
            break
    return list(reversed(out))


def find_calls(text: str) -> list[tuple[str, dict | None]]:
    calls = []
    for match in CALL_START.finditer(text):
        rest = text[match.end():]
        if rest.startswith("]]"):
            calls.append((match.group(1), None))
            continue
        stripped = rest.lstrip()
        value, end = _JSON.raw_decode(stripped)
        if not stripped[end:].lstrip().startswith("]]"):
            raise ValueError(f"[[call:{match.group(1)} …]]: expected ]] after the JSON")
        calls.append((match.group(1), value))
    return calls


def tool_index(tools: list[dict]) -> dict[str, dict]:
    """name → tool. A namespace's tools go under their own name and under the flat name modelmux gives them
    (`ns__name`, or `ns` + name when ns already ends in `__`), so one trigger drives both."""
    out = {}
    for tool in tools or []:
        if tool.get("type") == "namespace":
            ns = tool.get("name") or ""
            for inner in tool.get("tools") or []:
                entry = {**inner, "namespace": ns}
                out[inner.get("name")] = entry
                out[(ns if ns.endswith("__") else ns + "__") + str(inner.get("name"))] = entry
        elif tool.get("type") == "tool_search" and tool.get("execution") == "client":
            out["tool_search"] = tool
        elif "name" in tool:
            out[tool["name"]] = tool
    return out


def value_for(schema: Any, name: str = "value", depth: int = 0) -> Any:
    """A small value a JSON schema accepts (no $ref resolution across documents: enough for clients' schemas)."""
    if not isinstance(schema, dict) or depth > 12:
        return f"{name}-value"
    if "const" in schema:
        return schema["const"]
    if schema.get("enum"):
        return schema["enum"][0]
    for key in ("anyOf", "oneOf", "allOf"):
        if schema.get(key):
            return value_for(schema[key][0], name, depth + 1)
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null")
    if kind == "object" or "properties" in schema:
        return {k: value_for(v, k, depth + 1) for k, v in (schema.get("properties") or {}).items()}
    if kind == "array":
        return [value_for(schema.get("items"), name, depth + 1)] * max(1, schema.get("minItems", 1))
    if kind == "integer":
        return int(schema.get("minimum", 1))
    if kind == "number":
        return float(schema.get("minimum", 1))
    if kind == "boolean":
        return True
    if kind == "null":
        return None
    return f"{name}-value"


def message_item(text: str) -> dict:
    return {"id": new_id("msg"), "type": "message", "role": "assistant", "status": "completed",
            "content": [{"type": "output_text", "text": text, "annotations": [], "logprobs": []}]}


def compaction_item(body: dict) -> dict:
    """What the fake "summarises" a conversation into: the input, base64'd (opaque to the client, as OpenAI's)."""
    summary = base64.b64encode(json.dumps(body.get("input", ""))[:4096].encode()).decode()
    return {"type": "compaction", "id": new_id("cmp"), "encrypted_content": summary}


def answer_items(body: dict) -> list[dict]:
    items = body.get("input")
    if isinstance(items, list) and items and items[-1].get("type") == "compaction_trigger":
        return [compaction_item(body)]  # Codex's remote compaction v2 wants exactly one compaction item
    outputs = trailing_outputs(body)
    if outputs:
        return [message_item("Tool results: " + " | ".join(outputs))]
    text = last_user_text(body)
    calls = find_calls(text)
    if calls:
        # Codex's code mode lists its tools in an `additional_tools` input item rather than in `tools`
        extra_tools = [t for item in body.get("input") or [] if isinstance(item, dict)
                       and item.get("type") == "additional_tools" for t in item.get("tools") or []]
        tools = tool_index((body.get("tools") or []) + extra_tools)
        items = [message_item("I will call " + ", ".join(name for name, _ in calls) + ".")]
        for name, given in calls:
            tool = tools.get(name)
            if tool is None:
                raise ValueError(f"[[call:{name}]]: the request has no tool {name!r} (it has {sorted(tools)})")
            extra = {"namespace": tool["namespace"]} if tool.get("namespace") else {}
            if tool.get("type") == "tool_search":
                items.append({"id": new_id("tsc"), "type": "tool_search_call", "status": "completed",
                              "call_id": new_id("call"), "execution": "client", "arguments": given or {}})
            elif tool.get("type") == "custom":
                value = given.get("input") if isinstance(given, dict) and isinstance(given.get("input"), str) \
                    else json.dumps(given)
                items.append({"id": new_id("ctc"), "type": "custom_tool_call", "status": "completed",
                              "call_id": new_id("call"), "name": tool.get("name", name), "input": value, **extra})
            else:
                args = given if given is not None else value_for(tool.get("parameters"))
                items.append({"id": new_id("fc"), "type": "function_call", "status": "completed",
                              "call_id": new_id("call"), "name": tool.get("name", name),
                              "arguments": json.dumps(args), **extra})
        return items
    fmt = (body.get("text") or {}).get("format") or {}
    if fmt.get("type") == "json_schema":
        return [message_item(json.dumps(value_for(fmt.get("schema"))))]
    if fmt.get("type") == "json_object":
        return [message_item(json.dumps({"answer": "You said: " + text}))]
    return [message_item("You said: " + text)]


def words(text: str) -> int:
    return len(text.split())


def build_response(body: dict, items: list[dict], created_at: int) -> dict:
    out_tokens = sum(words(c.get("text", "")) for i in items for c in i.get("content", [])) or 1
    in_tokens = max(1, words(json.dumps(body.get("input", ""))))
    text = body.get("text") or {"format": {"type": "text"}}
    return {
        "id": new_id("resp"), "object": "response", "created_at": created_at, "status": "completed",
        "completed_at": created_at, "error": None, "incomplete_details": None,
        "instructions": body.get("instructions"), "metadata": body.get("metadata") or {},
        "model": body.get("model") or "gpt-4o", "output": items,
        "parallel_tool_calls": body.get("parallel_tool_calls", True),
        "temperature": body.get("temperature", 1.0), "top_p": body.get("top_p", 1.0),
        "tool_choice": body.get("tool_choice", "auto"), "tools": body.get("tools") or [],
        "previous_response_id": body.get("previous_response_id"), "reasoning": body.get("reasoning"),
        "store": body.get("store", True), "text": text, "truncation": body.get("truncation", "disabled"),
        "max_output_tokens": body.get("max_output_tokens"), "background": False,
        "service_tier": "default", **{k: body[k] for k in ("user", "prompt_cache_key") if body.get(k)},
        "usage": {"input_tokens": in_tokens, "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
                  "output_tokens": out_tokens, "output_tokens_details": {"reasoning_tokens": 0},
                  "total_tokens": in_tokens + out_tokens},
    }


def stream_events(response: dict) -> list[dict]:
    """The SSE events of a finished response, in OpenAI's order, numbered from 0."""
    events: list[dict] = []

    def emit(kind: str, **fields: Any) -> None:
        events.append({"type": kind, "sequence_number": len(events), **fields})

    opening = {k: v for k, v in response.items() if k != "usage"}
    opening.update(status="in_progress", output=[], completed_at=None)
    emit("response.created", response=opening)
    emit("response.in_progress", response=opening)
    for index, item in enumerate(response["output"]):
        iid = item["id"]
        if item["type"] == "message":
            emit("response.output_item.added", output_index=index, item={**item, "status": "in_progress",
                                                                         "content": []})
            for ci, part in enumerate(item["content"]):
                emit("response.content_part.added", item_id=iid, output_index=index, content_index=ci,
                     part={**part, "text": ""})
                for piece in re.findall(r"\S+\s*|\s+", part["text"]) or [""]:
                    emit("response.output_text.delta", item_id=iid, output_index=index, content_index=ci,
                         delta=piece, logprobs=[])
                emit("response.output_text.done", item_id=iid, output_index=index, content_index=ci,
                     text=part["text"], logprobs=[])
                emit("response.content_part.done", item_id=iid, output_index=index, content_index=ci, part=part)
        elif item["type"] == "function_call":
            emit("response.output_item.added", output_index=index,
                 item={**item, "status": "in_progress", "arguments": ""})
            args = item["arguments"]
            for start in range(0, len(args), 7):
                emit("response.function_call_arguments.delta", item_id=iid, output_index=index,
                     delta=args[start:start + 7])
            emit("response.function_call_arguments.done", item_id=iid, output_index=index, name=item["name"],
                 arguments=args)
        elif item["type"] == "custom_tool_call":
            emit("response.output_item.added", output_index=index, item={**item, "input": ""})
            value = item["input"]
            for start in range(0, len(value), 16):
                emit("response.custom_tool_call_input.delta", item_id=iid, output_index=index,
                     delta=value[start:start + 16])
            emit("response.custom_tool_call_input.done", item_id=iid, output_index=index, input=value)
        else:  # compaction: no deltas, added whole
            emit("response.output_item.added", output_index=index, item=item)
        emit("response.output_item.done", output_index=index, item=item)
    emit("response.completed", response=response)
    return events


def sse_bytes(events: list[dict]) -> bytes:
    return b"".join(f"event: {e['type']}\ndata: {json.dumps(e)}\n\n".encode() for e in events)


# --- the server ---------------------------------------------------------------------------------------------

def error_body(message: str, kind: str = "invalid_request_error", code: str | None = None,
               param: str | None = None) -> dict:
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}


@dataclass
class State:
    ws_refusal: str = "404"
    log_path: Path | None = None
    records: list[Record] = field(default_factory=list)
    stored: dict[str, tuple[dict, list[dict]]] = field(default_factory=dict)  # id → (response, input items)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def record(self, rec: Record) -> Record:
        with self.lock:
            if len(self.records) < MAX_RECORDS:
                self.records.append(rec)
        return rec

    def log(self, rec: Record) -> None:
        """Append the record, with its answer, to the log file (if any)."""
        if self.log_path:
            with self.lock, self.log_path.open("a") as f:
                f.write(json.dumps(rec.as_json()) + "\n")


def input_items_of(body: dict) -> list[dict]:
    items = body.get("input")
    if isinstance(items, str):
        items = [{"type": "message", "role": "user", "content": [{"type": "input_text", "text": items}]}]
    return [{"id": item.get("id") or new_id("msg" if item.get("type", "message") == "message" else "item"),
             **item} for item in items or []]


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "responses-recorder/1"
    state: State  # set on the subclass a Recorder makes

    def log_message(self, *args) -> None:  # recorded, not printed
        pass

    # every method goes through one dispatcher
    def do_GET(self): self.dispatch()
    def do_POST(self): self.dispatch()
    def do_DELETE(self): self.dispatch()
    def do_PUT(self): self.dispatch()
    def do_PATCH(self): self.dispatch()
    def do_OPTIONS(self): self.dispatch()

    def dispatch(self) -> None:
        url = urllib.parse.urlsplit(self.path)
        length = int(self.headers.get("content-length") or 0)
        raw = self.rfile.read(min(length, MAX_BODY)) if length else b""
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = raw.decode("utf-8", "replace")
        upgrade = "websocket" in (self.headers.get("upgrade") or "").lower()
        rec = self.state.record(Record(self.command, url.path, urllib.parse.parse_qs(url.query),
                                       masked(self.headers), body, time.monotonic(), websocket=upgrade))
        path = url.path.rstrip("/")
        if path.startswith("/v1"):
            path = path[3:]
        try:
            self.route(rec, path, body, upgrade)
        finally:
            self.state.log(rec)

    def route(self, rec: Record, path: str, body: Any, upgrade: bool) -> None:
        try:
            if upgrade:
                return self.refuse_or_accept(rec)
            if self.command == "POST" and path == "/responses":
                return self.create(rec, body if isinstance(body, dict) else {})
            if self.command == "POST" and path == "/responses/input_tokens":
                return self.send_json(rec, 200, {"object": "response.input_tokens",
                                                 "input_tokens": max(1, words(json.dumps((body or {}).get("input", ""))))})
            if self.command == "POST" and path == "/responses/compact":
                return self.compact(rec, body or {})
            if self.command == "GET" and path == "/models":
                return self.send_json(rec, 200, {"object": "list", "data": [
                    {"id": m, "object": "model", "created": 1700000000, "owned_by": "recorder"} for m in MODELS]})
            match = re.fullmatch(r"/responses/([^/]+)(/input_items)?", path)
            if match:
                return self.stored_response(rec, match.group(1), bool(match.group(2)))
            self.send_json(rec, 404, error_body(f"recorder: no route {self.command} {rec.path}", code="not_found"))
        except (ValueError, KeyError, TypeError) as err:
            self.send_json(rec, 400, error_body(f"recorder: {err}"))

    def send_json(self, rec: Record, status: int, obj: Any, headers: dict[str, str] | None = None) -> None:
        data = json.dumps(obj).encode()
        rec.answer = status
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.send_header("x-request-id", new_id("req"))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data)

    def create(self, rec: Record, body: dict) -> None:
        response = build_response(body, answer_items(body), int(time.time()))
        if body.get("store", True) is not False:
            with self.state.lock:
                self.state.stored[response["id"]] = (response, input_items_of(body))
        if not body.get("stream"):
            return self.send_json(rec, 200, response)
        rec.answer = 200
        self.send_response(200)
        self.send_header("content-type", "text/event-stream; charset=utf-8")
        self.send_header("cache-control", "no-cache")
        self.send_header("transfer-encoding", "chunked")
        self.send_header("x-request-id", new_id("req"))
        self.end_headers()
        for event in stream_events(response):
            chunk = sse_bytes([event])
            self.wfile.write(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")
            self.wfile.flush()
        self.wfile.write(b"0\r\n\r\n")

    def compact(self, rec: Record, body: dict) -> None:
        self.send_json(rec, 200, {"id": new_id("cmp"), "object": "response.compaction", "created_at": int(time.time()),
                                  "output": [compaction_item(body)], "usage": build_response(body, [], 0)["usage"]})

    def stored_response(self, rec: Record, rid: str, items: bool) -> None:
        with self.state.lock:
            found = self.state.stored.get(rid)
            if found and self.command == "DELETE" and not items:
                del self.state.stored[rid]
        if not found:
            return self.send_json(rec, 404, error_body(f"Response with id '{rid}' not found.", code="not_found"))
        response, inputs = found
        if self.command == "DELETE" and not items:
            return self.send_json(rec, 200, {"id": rid, "object": "response", "deleted": True})
        if not items:
            return self.send_json(rec, 200, response)
        order = (rec.query.get("order") or ["desc"])[0]
        limit = int((rec.query.get("limit") or ["20"])[0])
        data = inputs if order == "asc" else list(reversed(inputs))
        after = (rec.query.get("after") or [None])[0]
        if after:
            ids = [d["id"] for d in data]
            data = data[ids.index(after) + 1:] if after in ids else []
        page = data[:limit]
        self.send_json(rec, 200, {"object": "list", "data": page, "has_more": len(data) > limit,
                                  "first_id": page[0]["id"] if page else None,
                                  "last_id": page[-1]["id"] if page else None})

    def refuse_or_accept(self, rec: Record) -> None:
        mode = self.state.ws_refusal
        if mode == "close":
            self.close_connection = True
            try:
                self.connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            return
        if mode == "accept":
            return self.websocket(rec)
        status = {"404": 404, "426": 426, "405": 405}[mode]
        extra = {"upgrade": "websocket", "connection": "Upgrade"} if status == 426 else {}
        if status == 405:
            extra["allow"] = "POST"
        message = {404: "recorder: no WebSocket here", 426: "Upgrade Required: use HTTP",
                   405: "recorder: GET not allowed; POST /v1/responses"}[status]
        self.send_json(rec, status, error_body(message, code="websocket_not_supported"), extra)
        if status == 426:
            self.close_connection = True

    def websocket(self, rec: Record) -> None:
        """Complete the handshake; record each text frame and answer `response.create` with the events."""
        import wsproto
        import wsproto.events as ev

        conn = wsproto.WSConnection(wsproto.ConnectionType.SERVER)
        head = f"{self.command} {self.path} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in self.headers.items())
        conn.receive_data((head + "\r\n").encode())
        sock = self.connection
        rec.answer = 101
        self.close_connection = True
        deadline = time.monotonic() + 120
        pending: list[str] = []
        while time.monotonic() < deadline:
            for event in conn.events():
                if isinstance(event, ev.Request):
                    sock.sendall(conn.send(ev.AcceptConnection()))
                elif isinstance(event, ev.TextMessage):
                    pending.append(event.data)  # wsproto hands a long message over in pieces
                    if not event.message_finished:
                        continue
                    text, pending = "".join(pending), []
                    try:
                        frame = json.loads(text)
                    except ValueError:
                        frame = text
                    self.state.log(self.state.record(Record("WS", rec.path, {}, {}, frame, time.monotonic(),
                                                            websocket=True)))
                    if isinstance(frame, dict) and frame.get("type") == "response.create":
                        body = {k: v for k, v in frame.items() if k != "type"}
                        # a warm-up (generate: false) gets a response without output
                        items = answer_items(body) if body.get("generate", True) else []
                        for out in stream_events(build_response(body, items, int(time.time()))):
                            sock.sendall(conn.send(ev.Message(data=json.dumps(out))))
                elif isinstance(event, ev.Ping):
                    sock.sendall(conn.send(event.response()))
                elif isinstance(event, ev.CloseConnection):
                    sock.sendall(conn.send(event.response()))
                    return
            sock.settimeout(5)
            try:
                data = sock.recv(65536)
            except TimeoutError:
                continue
            if not data:
                return
            conn.receive_data(data)


class Recorder:
    """The recorder on a free loopback port, in a thread. Use as a context manager; `url` is its base
    (http://127.0.0.1:P), `requests` what it has recorded so far."""

    def __init__(self, ws_refusal: str = "404", log_path: Path | None = None, port: int = 0):
        if ws_refusal not in WS_REFUSALS:
            raise ValueError(f"ws_refusal must be one of {WS_REFUSALS}")
        self.state = State(ws_refusal=ws_refusal, log_path=log_path)
        handler = type("BoundHandler", (Handler,), {"state": self.state})
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", port), handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, name="responses-recorder", daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    @property
    def requests(self) -> list[Record]:
        with self.state.lock:
            return list(self.state.records)

    def set_ws_refusal(self, mode: str) -> None:
        if mode not in WS_REFUSALS:
            raise ValueError(f"ws_refusal must be one of {WS_REFUSALS}")
        self.state.ws_refusal = mode

    def clear(self) -> None:
        with self.state.lock:
            self.state.records.clear()

    def creates(self) -> list[Record]:
        """The POST /v1/responses requests (and WebSocket response.create frames), in order."""
        return [r for r in self.requests if (r.method == "POST" and r.path.rstrip("/").endswith("/responses"))
                or (r.method == "WS" and isinstance(r.body, dict) and r.body.get("type") == "response.create")]

    def __enter__(self) -> "Recorder":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--log", type=Path, help="append every request as a JSON line")
    parser.add_argument("--ws-refusal", choices=WS_REFUSALS, default="404")
    parser.add_argument("--seconds", type=float, default=600, help="stop after this long")
    args = parser.parse_args()
    with Recorder(args.ws_refusal, args.log, args.port) as rec:
        print(f"recorder listening on {rec.url}", flush=True)
        try:
            time.sleep(args.seconds)
        except KeyboardInterrupt:
            pass


if __name__ == "__main__":
    main()
