"""Rewrites `POST /v1/chat/completions` into a Vertex AI Claude call and its answer back into OpenAI's format.

Cases:
- request: parse and validate (bad input → OpenAI 400 answered locally, nothing sent upstream); route the
  model (unknown with no default → 404); fetch image URLs; plan the Vertex call (every region to try, see
  upstream.py). Non-streamed: the hook makes the call itself (retries included) and sets the response.
  Streamed: the flow is pointed at the loopback relay with a fresh header set. Either way the client's OpenAI
  key, `openai-*` / `x-stainless-*` headers and cookies never leave; a translation bug answers 500.
- responseheaders, 2xx `text/event-stream`: stream through a StreamTranslator, one upstream event → one
  chunk, forwarded as it arrives.
- response, buffered: a 2xx JSON message → chat.completion (or, streaming mode `never`, the SSE chunks of a
  stream in one body); any non-2xx → the OpenAI error of the same meaning, with `retry-after` for 429s.
- streaming mode (config `streaming`, by User-Agent): `buffered` has the relay gather reads per window and the
  translator merge a block's deltas; `never` calls Vertex unstreamed.
- each exchange, once it ends: metrics, one log line, the flow's comment; with a dump or in mitmweb
  (`modelmux_flow_pairs`) the four bodies too — the dump line, and the flow's metadata and comment.
"""

from __future__ import annotations

import json
import logging
import secrets
import time
from typing import Any
from urllib.parse import urlsplit

from mitmproxy import ctx, exceptions, http
from mitmproxy.proxy.mode_specs import ReverseMode

from ..dump import MAX_CAPTURE, shorten_payloads, sse_events
from ..images import fetch_images
from ..pairs import render as render_pair
from ..translate.errors import OpenAIError, from_upstream, model_not_found
from ..translate.request import inline_images, parse_request, to_vertex_body
from ..translate.response import AnswerShape, thinking_to_keep, to_openai_response
from ..translate.stream import StreamTranslator, message_as_events
from ..thinking_cache import ThinkingCache
from ..upstream import ATTEMPTS_HEADER, LOCAL_ERROR_HEADER, PLAN_HEADER, REGION_HEADER, USER_AGENT, Plan
from ..vertex import UnknownModel
from .local_endpoints import error_response, json_response
from .runtime import Runtime, Snapshot
from .scope import CHAT_PATH, is_ours, route_path, sent_to_listener

log = logging.getLogger("modelmux")

META = "modelmux"
PAIR = "modelmux_pair"  # the exchange's four bodies, when kept on the flow (mitmweb, modelmux_flow_pairs)


def exchange(flow: http.HTTPFlow) -> dict[str, Any] | None:
    """modelmux's record of a translated flow (plain data: mitmproxy may serialise flow metadata)."""
    return flow.metadata.get(META)


class Translate:
    def __init__(self, runtime: Runtime):
        self.runtime = runtime
        self._captures: dict[str, dict[str, Any]] = {}  # flow id → bodies, for the dump and the flow's pair
        self._flow_pairs = False

    async def request(self, flow: http.HTTPFlow) -> None:
        snap = self.runtime.current
        if flow.response or snap is None or flow.request.method != "POST":
            return
        if not is_ours(flow, snap.intercept_hosts) or route_path(flow) != CHAT_PATH:
            return
        try:
            await self._translate_request(flow, snap)
        except Exception as err:
            # never let a flow of ours continue unanswered: it would go to api.openai.com with the app's key
            log.exception("modelmux: request translation failed")
            flow.response = error_response(OpenAIError(500, f"modelmux failed to translate the request: "
                                                            f"{type(err).__name__}", "server_error", None,
                                                       "translation_failed"))

    async def _translate_request(self, flow: http.HTTPFlow, snap: Snapshot) -> None:
        received = time.time()
        try:
            req = parse_request(flow.request.get_content(strict=False) or b"")
            try:
                route = snap.router.route(req.model)
            except UnknownModel:
                raise model_not_found(req.model) from None
            vreq = to_vertex_body(req, route.vertex_model, snap.config.vertex.anthropic_version,
                                  thinking_for=self.runtime.thinking.get)
            if vreq.image_urls:
                inline_images(vreq.body, await fetch_images(vreq.image_urls, snap.config.images))
        except OpenAIError as err:
            flow.response = error_response(err)
            return
        delivery = snap.config.streaming.mode_for(flow.request.headers.get("user-agent", "")) if vreq.stream else None
        upstream_stream = vreq.stream and delivery != "never"
        if vreq.stream and not upstream_stream:
            vreq.body.pop("stream", None)  # `never`: one non-streamed call, replayed to the client as SSE
        body = json.dumps(vreq.body).encode()
        urls = {region: snap.router.url(route, stream=upstream_stream, region=region)
                for region in snap.router.regions()}
        relay = self.runtime.relay
        port = await relay.ensure_started()
        plan = Plan(urls=urls, body=body, stream=upstream_stream, tokens=snap.tokens, retries=snap.config.retries,
                    timeouts=snap.config.timeouts,
                    window=snap.config.streaming.window_ms / 1000 if delivery == "buffered" else 0.0)
        if self.runtime.dump.enabled or self._flow_pairs:
            self._captures[flow.id] = {"openai_request": json.loads(flow.request.get_content(strict=False) or b"{}"),
                                       "vertex_request": {"url": urls[snap.config.vertex.region], "body": vreq.body},
                                       "upstream": bytearray(), "out": bytearray()}
        flow.metadata[META] = {
            "requested_model": req.model,
            "vertex_model": route.vertex_model,
            "region": snap.config.vertex.region,
            "vertex_url": urls[snap.config.vertex.region],
            "stream": vreq.stream,
            "delivery": delivery,  # streaming mode for a streamed request: passthrough, buffered or never
            "plan": None,  # the relay's plan id, for streams
            "shape": {  # AnswerShape's fields
                "model": req.model, "created": int(received), "fallback_id": secrets.token_hex(12),
                "tool_names": vreq.tool_names, "json_tool": vreq.json_tool, "json_wrapped": vreq.json_wrapped,
                "include_usage": vreq.include_usage, "expose_reasoning": snap.config.reasoning.expose,
            },
            "received": received,
        }
        if not upstream_stream:
            # answered here, retries included: a buffered answer needs no relay hop and no upstream connection
            status, headers, answer = await relay.fetch(plan)
            flow.response = http.Response.make(status, answer, headers)
            return
        # streamed: to the loopback relay, which makes the Vertex call (with retries and failover) and adds the
        # Google token; the path stays Vertex's, so the flow reads as the call it stands for
        token = flow.metadata[META]["plan"] = relay.register(plan)
        flow.request.url = f"http://127.0.0.1:{port}" + urlsplit(urls[snap.config.vertex.region]).path
        flow.request.headers.clear()
        flow.request.headers["host"] = f"127.0.0.1:{port}"
        flow.request.headers["content-type"] = "application/json"
        flow.request.headers[PLAN_HEADER] = token
        flow.request.headers["user-agent"] = USER_AGENT
        flow.request.content = body

    def running(self) -> None:
        _http_client_logs(ctx.options.termlog_verbosity if "termlog_verbosity" in ctx.options.keys() else "info")
        if _in_mitmweb() and not ctx.options.store_streamed_bodies:
            ctx.options.store_streamed_bodies = True  # a streamed flow shows the chunks the app received

    async def done(self) -> None:
        await self.runtime.relay.stop()

    def error(self, flow: http.HTTPFlow) -> None:
        ex = exchange(flow)
        if ex is None:
            return
        if ex["plan"]:  # the flow died before the relay took its plan: do not keep it
            self.runtime.relay.discard(ex["plan"])
        self._record(flow, ex, 499)  # nginx's "client closed request": the exchange ended without an answer

    def load(self, loader):
        loader.add_option("modelmux_log_format", str, "text",
                          "One log line per exchange: text, or json (for log pipelines).")
        loader.add_option("modelmux_flow_pairs", bool, False,
                          "Keep each exchange's four bodies on its flow (metadata 'modelmux_pair', shown as the "
                          "flow's comment). On by itself in mitmweb.")

    def configure(self, updated):
        if "modelmux_log_format" in updated and ctx.options.modelmux_log_format not in ("text", "json"):
            raise exceptions.OptionsError("modelmux_log_format must be text or json")
        if "termlog_verbosity" in updated:
            _http_client_logs(ctx.options.termlog_verbosity)
        # in mitmweb (its options exist) the pairs are what the operator came to see
        self._flow_pairs = ctx.options.modelmux_flow_pairs or _in_mitmweb()

    def _record(self, flow: http.HTTPFlow, ex: dict[str, Any], status: int) -> None:
        """Once per exchange, when it ends: metrics, the log line, the flow's comment (mitmweb), the dump."""
        if ex.get("recorded"):
            return
        ex["recorded"] = True
        if ex.get("streaming"):
            self.runtime.metrics.active_streams.dec()
        outcome = ex.get("stream_error", status)
        mode = _mode(flow)
        self.runtime.metrics.observe(ex, outcome, mode)
        line = _log_line(ex, outcome, mode)
        flow.comment = (f"modelmux: {line['model']} → {line['vertex_model']} ({line['region']}) {outcome}, "
                        f"{line['attempts']} attempt(s)")
        if ctx.options.modelmux_log_format == "json":
            log.info(json.dumps(line))
        else:
            log.info("modelmux: %s %s → %s (%s) %s %s in %s ms, %s attempt(s), tokens %s/%s", mode, line["model"],
                     line["vertex_model"], line["region"], line["delivery"] or "json", outcome,
                     line["duration_ms"], line["attempts"], line["prompt_tokens"], line["completion_tokens"])
        capture = self._captures.pop(flow.id, None)
        if capture is not None:
            record = _dump_record(flow, ex, capture, outcome)
            self.runtime.dump.write(record)
            if self._flow_pairs:
                record = shorten_payloads(record)
                flow.metadata[PAIR] = record
                flow.comment += "\n\n" + render_pair(record)

    def responseheaders(self, flow: http.HTTPFlow) -> None:
        ex = exchange(flow)
        if ex is None or flow.response is None:
            return
        resp = flow.response
        if _note_relay_headers(ex, resp):
            return
        is_sse = resp.headers.get("content-type", "").startswith("text/event-stream")
        if not (ex["stream"] and 200 <= resp.status_code < 300 and is_sse):
            return  # buffered: translated in `response`
        translator = StreamTranslator(AnswerShape(**ex["shape"]), coalesce=ex.get("delivery") == "buffered")
        resp.headers.clear()
        resp.headers["content-type"] = "text/event-stream; charset=utf-8"
        resp.headers["cache-control"] = "no-cache"
        if resp.http_version.startswith("HTTP/1"):
            # the upstream's length (if any) is not ours: chunked framing, or HTTP/1 clients hang
            resp.headers["transfer-encoding"] = "chunked"
        resp.stream = _stream_callable(translator, ex, self.runtime.thinking, self._captures.get(flow.id))
        ex["streaming"] = True
        self.runtime.metrics.active_streams.inc()

    def response(self, flow: http.HTTPFlow) -> None:
        ex = exchange(flow)
        if ex is None or flow.response is None:
            return
        if flow.response.stream:  # streamed: translated chunk by chunk, now complete
            self._record(flow, ex, flow.response.status_code)
            return
        self._translate_response(flow, ex)
        self._record(flow, ex, flow.response.status_code)

    def _translate_response(self, flow: http.HTTPFlow, ex: dict[str, Any]) -> None:
        resp = flow.response
        _note_relay_headers(ex, resp)
        capture = self._captures.get(flow.id)
        if capture is not None:
            capture["vertex_response"] = {"status": resp.status_code,
                                          "body": _json_or_text(resp.get_content(strict=False))}
        if ex.get("local_error"):
            flow.response = json_response(resp.status_code, json.loads(resp.content or b"{}"))
            ex["done"] = time.time()
            return
        content = resp.get_content(strict=False) or b""
        if 200 <= resp.status_code < 300:
            try:
                msg = json.loads(content)
                upstream_streamed = ex["stream"] and ex.get("delivery") != "never"
                if upstream_streamed or not isinstance(msg, dict) or msg.get("type") != "message":
                    raise ValueError("not an Anthropic message")
            except ValueError:
                flow.response = error_response(OpenAIError(
                    502, f"Vertex AI answered {resp.status_code} with an unexpected body "
                         f"({resp.headers.get('content-type', 'no content-type')}).", "server_error", None,
                    "bad_upstream_response"))
            else:
                if kept := thinking_to_keep(msg.get("content") or []):
                    self.runtime.thinking.put(*kept)
                if ex["stream"]:
                    flow.response = _replayed_stream(msg, ex)
                else:
                    answer = to_openai_response(msg, AnswerShape(**ex["shape"]))
                    ex["usage"] = answer["usage"]
                    flow.response = json_response(200, answer)
        else:
            err = from_upstream(resp.status_code, resp.raw_content or b"", dict(resp.headers),
                                model=ex["vertex_model"], region=ex.get("served_region") or ex["region"])
            log.warning("modelmux: Vertex AI answered %d for %s: %s", resp.status_code, ex["vertex_model"],
                        err.message)
            flow.response = error_response(err)
        ex["done"] = time.time()


def _in_mitmweb() -> bool:
    return "web_port" in ctx.options.keys()


def _http_client_logs(verbosity: str) -> None:
    """The relay's HTTP client logs each call at INFO (the exchange line already says it) and each step at DEBUG (a
    record built per step, on the hot path): let them through only when debug output is asked for."""
    level = logging.DEBUG if verbosity == "debug" else logging.WARNING
    for name in ("httpx", "httpcore"):
        logging.getLogger(name).setLevel(level)


def _replayed_stream(msg: dict[str, Any], ex: dict[str, Any]) -> http.Response:
    """Streaming mode `never`: the whole answer as the SSE chunks a stream would have carried, in one body."""
    translator = StreamTranslator(AnswerShape(**ex["shape"]), coalesce=True)
    out = translator.feed(message_as_events(msg)) + translator.finish()
    ex["usage"] = translator.usage
    ex["first_chunk"] = time.time()
    if translator.failed:
        ex["stream_error"] = translator.failed.status
    return http.Response.make(200, out, {"content-type": "text/event-stream; charset=utf-8",
                                         "cache-control": "no-cache"})


def _log_line(ex: dict[str, Any], outcome: int, mode: str) -> dict[str, Any]:
    """The facts of one exchange, for the log (no bodies, no keys)."""
    end = ex.get("done") or time.time()
    usage = ex.get("usage") or {}
    return {"event": "exchange", "mode": mode, "model": ex["requested_model"], "vertex_model": ex["vertex_model"],
            "region": ex.get("served_region") or ex["region"], "stream": ex["stream"],
            "delivery": ex.get("delivery"), "status": outcome,
            "attempts": ex.get("attempts", 1), "duration_ms": round((end - ex["received"]) * 1000, 1),
            "first_chunk_ms": round((ex["first_chunk"] - ex["received"]) * 1000, 1) if "first_chunk" in ex else None,
            "prompt_tokens": usage.get("prompt_tokens"), "completion_tokens": usage.get("completion_tokens")}


def _json_or_text(content: bytes | None) -> Any:
    try:
        return json.loads(content or b"")
    except ValueError:
        return (content or b"").decode("utf-8", "replace")


def _dump_record(flow: http.HTTPFlow, ex: dict[str, Any], capture: dict[str, Any], outcome: int) -> dict[str, Any]:
    """One line of the dump: the four bodies of the exchange, its timings and outcome."""
    received = ex["received"]
    timings = {k + "_ms": round((ex[k] - received) * 1000, 1) for k in ("upstream_headers", "first_chunk", "done")
               if k in ex}
    if ex.get("streaming"):
        vertex_response = {"status": flow.response.status_code if flow.response else None,
                           "events": sse_events(bytes(capture["upstream"]))}
        openai_response = {"status": flow.response.status_code if flow.response else None,
                           "chunks": sse_events(bytes(capture["out"]))}
    else:
        vertex_response = capture.get("vertex_response")
        openai_response = None
        if flow.response is not None:
            sse = flow.response.headers.get("content-type", "").startswith("text/event-stream")  # mode `never`
            openai_response = {"status": flow.response.status_code,
                               **({"chunks": sse_events(flow.response.content or b"")} if sse else
                                  {"body": _json_or_text(flow.response.content)})}
    return {"time": received, "id": flow.id, "model": ex["requested_model"], "vertex_model": ex["vertex_model"],
            "region": ex.get("served_region") or ex["region"], "mode": _mode(flow), "stream": ex["stream"],
            "delivery": ex.get("delivery"), "status": outcome, "attempts": ex.get("attempts"), "timings": timings,
            "openai_request": capture["openai_request"], "vertex_request": capture["vertex_request"],
            "vertex_response": vertex_response, "openai_response": openai_response}


def _mode(flow: http.HTTPFlow) -> str:
    mode = flow.client_conn.proxy_mode
    if isinstance(mode, ReverseMode):
        return "reverse"
    return "direct" if sent_to_listener(flow) else "proxy"


def _note_relay_headers(ex: dict[str, Any], resp: http.Response) -> bool:
    """Move what the relay reports (region, attempts) from the answer's headers into the record. True when the
    answer is modelmux's own OpenAI error (auth, unreachable, timeout)."""
    if "upstream_headers" not in ex:
        ex["upstream_headers"] = time.time()
        ex["served_region"] = resp.headers.pop(REGION_HEADER, None)
        ex["attempts"] = int(resp.headers.pop(ATTEMPTS_HEADER, "1") or 1)
        ex["local_error"] = bool(resp.headers.pop(LOCAL_ERROR_HEADER, None))
    return ex["local_error"]


def _stream_callable(translator: StreamTranslator, ex: dict[str, Any], thinking: ThinkingCache,
                     capture: dict[str, Any] | None):
    """mitmproxy calls this per socket read, then once with b"" at the end. It must never raise (mitmproxy
    would drop that chunk silently) and never return b"" mid-stream (HTTP/1 would end the body)."""

    def stream(data: bytes) -> list[bytes]:
        try:
            out = translator.feed(data) if data else translator.finish()
        except Exception as err:  # a translator bug must surface as an error chunk, not silent loss
            log.exception("modelmux: stream translation failed")
            out = translator.fail(OpenAIError(500, f"modelmux failed to translate the stream: {type(err).__name__}",
                                              "server_error", None, "translation_failed"))
        if out and "first_chunk" not in ex:
            ex["first_chunk"] = time.time()
        if capture is not None:
            for key, piece in (("upstream", data), ("out", out)):
                if len(capture[key]) < MAX_CAPTURE:
                    capture[key] += piece
        if (translator.done or translator.failed) and "done" not in ex:
            ex["done"] = time.time()
            ex["usage"] = translator.usage
            if translator.failed:
                ex["stream_error"] = translator.failed.status
            # kept before [DONE] leaves: the client's next request in the tool loop may follow at once
            if kept := translator.kept_thinking:
                thinking.put(*kept)
        return [out] if out else []

    return stream
