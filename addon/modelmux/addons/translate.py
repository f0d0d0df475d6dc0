"""Runs every translated API the same way: request → Vertex call through the relay → answer back to the client.

Cases:
- request, `POST` to an API path of ours (apis/: chat completions, …): the API's `prepare` parses, validates and
  translates (bad input → OpenAI 400 answered locally, nothing sent upstream; a translation bug → 500, never the
  flow going on to OpenAI with the app's key); the request gets its `Exchange` record. Non-streamed: the hook makes
  the call itself (relay.fetch, retries included) and sets the answer. Streamed: the flow is pointed at the
  loopback relay with a fresh header set (no client key, `openai-*` / `x-stainless-*` header or cookie leaves).
- responseheaders, 2xx `text/event-stream`: streamed through the API's translator, one upstream event → its
  chunks, forwarded as they arrive.
- response, buffered: modelmux's own failure (the relay's Outcome) or a Vertex error → the OpenAI error of the same
  meaning, with `retry-after` for 429s; an unexpected 2xx body → 502.
- streaming mode (config `streaming`, by User-Agent): `buffered` has the relay gather reads per window and the
  translator merge a block's deltas; `never` calls Vertex unstreamed and replays the answer as SSE.
- each exchange, once it ends (answered, failed, or the client gone: 499): metrics, one log line, the flow's
  comment; with a dump or in mitmweb (`modelmux_flow_pairs`) the four bodies too — the dump line, and the flow's
  metadata and comment.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import logging
import time
from dataclasses import replace
from typing import Any
from urllib.parse import urlsplit

from mitmproxy import connection, ctx, exceptions, http
from mitmproxy.proxy.mode_specs import ReverseMode

from .. import request_body
from ..apis import BY_PATH
from ..apis.base import Client
from ..apis.answers import SSE_HEADERS, error_response, sse_response
from ..dump import shorten_payloads, shorten_vectors
from ..exchange import Capture, Exchange, StreamTranslator, Tokens
from ..pairs import render as render_pair
from ..translate import sse
from ..translate.errors import OpenAIError, from_upstream
from ..translate.request import vertex_body_bytes
from ..translate.stream import message_as_events
from ..upstream import PLAN_HEADER, USER_AGENT, Answer, Outcome, Plan
from .guard import fail_closed
from .client_auth import KEY_NAME
from .runtime import Runtime, Snapshot
from .scope import is_ours, route_path, sent_to_listener

log = logging.getLogger("modelmux")

META = "modelmux"  # plain facts of a translated flow (mitmproxy may serialise metadata)
PAIR = "modelmux_pair"  # the exchange's four bodies, when kept on the flow (mitmweb, modelmux_flow_pairs)


def is_translated(flow: http.HTTPFlow) -> bool:
    return META in flow.metadata


class Translate:
    def __init__(self, runtime: Runtime):
        self.runtime = runtime
        self.exchanges: dict[str, Exchange] = {}  # flow id → its record, until the exchange ends
        self._flow_pairs = False

    # --- request ------------------------------------------------------------------------------------------

    @fail_closed
    async def request(self, flow: http.HTTPFlow) -> None:
        snap = self.runtime.current
        if flow.response or snap is None or flow.request.method != "POST":
            return
        api = BY_PATH.get(route_path(flow)) if is_ours(flow, snap.intercept_hosts) else None
        if api is None:
            return
        try:
            await self._translate_request(flow, snap, api)
        except Exception as err:
            # never let a flow of ours continue unanswered: it would go to api.openai.com with the app's key
            log.exception("modelmux: request translation failed")
            self.exchanges.pop(flow.id, None)
            flow.response = error_response(OpenAIError(500, f"modelmux failed to translate the request: "
                                                            f"{type(err).__name__}", "server_error", None,
                                                       "translation_failed"))

    async def _translate_request(self, flow: http.HTTPFlow, snap: Snapshot, api: Any) -> None:
        received = time.time()
        client = Client(user_agent=flow.request.headers.get("user-agent", ""), key=flow.metadata.get(KEY_NAME))
        try:
            raw = request_body.decoded(flow.request, snap.config.bounds.max_request_bytes)  # a bomb: 413
            prepared = await api.prepare(raw, snap, self.runtime, client)
        except OpenAIError as err:
            flow.response = error_response(err)
            return
        delivery = snap.config.streaming.mode_for(flow.request.headers.get("user-agent", "")) if prepared.stream \
            else None
        upstream_stream = prepared.stream and delivery != "never"
        if prepared.stream and not upstream_stream:
            prepared.body.pop("stream", None)  # `never`: one non-streamed call, replayed to the client as SSE
        try:
            # batches (embeddings) are sent one by one, each well under Vertex's cap
            body = vertex_body_bytes(prepared.body) if prepared.batches is None else b""
        except OpenAIError as err:  # over Vertex's 30 MB request cap (images inlined): refused here
            flow.response = error_response(err)
            return
        urls = prepared.urls(upstream_stream)
        region = snap.config.vertex.region
        ex = Exchange(api=api.NAME, requested_model=prepared.requested_model,
                      model_label=snap.router.label(prepared.requested_model), vertex_model=prepared.vertex_model,
                      region=region, vertex_url=urls[region], stream=prepared.stream, delivery=delivery,
                      call=prepared.call, received=received, key_name=client.key)
        if self.runtime.dump.enabled or self._flow_pairs:
            ex.capture = Capture(openai_request=_json_or_text(raw),
                                 vertex_request={"url": ex.vertex_url, "body": prepared.body})
        self.exchanges[flow.id] = ex
        flow.metadata[META] = {"api": ex.api, "requested_model": ex.requested_model, "vertex_model": ex.vertex_model,
                               "region": region, "vertex_url": ex.vertex_url, "stream": ex.stream,
                               "delivery": delivery}
        plan = Plan(urls=urls, body=body, stream=upstream_stream, tokens=snap.tokens, retries=snap.config.retries,
                    timeouts=snap.config.timeouts,
                    window=snap.config.streaming.window_ms / 1000 if delivery == "buffered" else 0.0,
                    keepalive=prepared.keepalive, outcome=ex.outcome)
        relay = self.runtime.relay
        port = await relay.ensure_started()
        if prepared.batches is not None:
            flow.response = await self._batched_answer(ex, prepared, plan)
            return
        if not upstream_stream:
            # answered here, retries included: a buffered answer needs no relay hop and no upstream connection
            answer = await relay.fetch(plan)
            ex.upstream_headers = time.time()
            flow.response = await self._buffered_answer(ex, answer)
            return
        # streamed: to the loopback relay, which makes the Vertex call (with retries and failover) and adds the
        # Google token; the path stays Vertex's, so the flow reads as the call it stands for
        ex.plan_token = relay.register(plan)
        flow.request.url = f"http://127.0.0.1:{port}" + urlsplit(urls[region]).path
        if flow.server_conn.via is not None:  # upstream mode: the relay directly, not through the upstream proxy
            flow.server_conn = connection.Server(address=("127.0.0.1", port))  # (the shared one keeps its `via`)
        flow.request.headers.clear()
        flow.request.headers["host"] = f"127.0.0.1:{port}"
        flow.request.headers["content-type"] = "application/json"
        flow.request.headers[PLAN_HEADER] = ex.plan_token
        flow.request.headers["user-agent"] = USER_AGENT
        flow.request.content = body

    # --- answers ------------------------------------------------------------------------------------------

    async def _buffered_answer(self, ex: Exchange, answer: Answer | None) -> http.Response:
        """A whole answer from Vertex (or the relay's failure) → what the client gets."""
        try:
            if answer is None:
                err = ex.outcome.error
                log.warning("modelmux: no answer from Vertex AI for %s: %s", ex.vertex_model, err.message)
                return error_response(err)
            if ex.capture is not None:
                ex.capture.vertex_response = {"status": answer.status, "body": _json_or_text(answer.body)}
            if not 200 <= answer.status < 300:
                return self._vertex_error(ex, answer.status, answer.body, answer.headers)
            try:
                if hasattr(ex.call, "answer_body"):  # an API whose Vertex answer is not a message
                    return await _resolved(ex.call.answer_body(ex, answer.body))
                message = _message(answer.body)
                if message is None:
                    return _unexpected(answer.status, answer.headers)
                ex.tokens = Tokens.from_anthropic(message.get("usage"))
                if ex.stream:
                    return _replayed_stream(ex, message)
                return await _resolved(ex.call.answer(ex, message))
            except OpenAIError as err:
                return error_response(err)
        finally:
            ex.done = time.time()

    async def _batched_answer(self, ex: Exchange, prepared: Any, template: Plan) -> http.Response:
        """Several non-streamed calls for one request (embeddings), at most `max_concurrent` at a time. The first
        that fails cancels the others and its error is the answer; the record's outcome sums their attempts."""
        limit = asyncio.Semaphore(prepared.max_concurrent)
        outcomes: list[Outcome] = []

        async def one(k: int, body: dict[str, Any]) -> bytes:
            async with limit:
                plan = replace(template, body=json.dumps(body).encode(), outcome=Outcome())
                outcomes.append(plan.outcome)
                answer = await self.runtime.relay.fetch(plan)
                if answer is None:
                    raise _BatchFailed(plan.outcome.error)
                if not 200 <= answer.status < 300:
                    raise _BatchFailed(ex.call.batch_error(k, answer.status, answer.body, answer.headers,
                                                           plan.outcome.region))
                return answer.body

        failure: OpenAIError | None = None
        try:
            try:
                async with asyncio.TaskGroup() as group:
                    tasks = [group.create_task(one(k, body)) for k, body in enumerate(prepared.batches)]
            except* _BatchFailed as failed:
                failure = failed.exceptions[0].error
            finally:
                ex.upstream_headers = time.time()
                ex.outcome.attempts = sum(o.attempts for o in outcomes)
                ex.outcome.region = outcomes[-1].region if outcomes else None
                ex.outcome.retried = any(o.retried for o in outcomes)
                ex.outcome.failed_over = any(o.failed_over for o in outcomes)
            if failure is not None:
                log.warning("modelmux: Vertex AI failed for %s: %s", ex.vertex_model, failure.message)
                answered = {k: t.result() for k, t in enumerate(tasks)
                            if t.done() and not t.cancelled() and t.exception() is None}
                if answered:  # Vertex billed those: they count against the key's tokens and spend
                    ex.tokens = Tokens(input=ex.call.partial_tokens(answered))
                return error_response(failure)
            bodies = [t.result() for t in tasks]
            if ex.capture is not None:
                ex.capture.vertex_response = {"status": 200, "batches": len(bodies),
                                              "first": shorten_vectors(_json_or_text(bodies[0]))}
            try:
                return await ex.call.assemble(ex, bodies)
            except OpenAIError as err:
                return error_response(err)
        finally:
            ex.done = time.time()

    def _vertex_error(self, ex: Exchange, status: int, content: bytes, headers: dict[str, str]) -> http.Response:
        err = from_upstream(status, content, headers, model=ex.vertex_model, region=ex.served_region)
        log.warning("modelmux: Vertex AI answered %d for %s: %s", status, ex.vertex_model, err.message)
        return error_response(err)

    def responseheaders(self, flow: http.HTTPFlow) -> None:
        ex = self.exchanges.get(flow.id)
        if ex is None or flow.response is None or ex.plan_token is None:
            return  # not ours, or answered from the request hook
        ex.plan_token = None  # the relay has taken it
        ex.upstream_headers = time.time()
        resp = flow.response
        is_sse = resp.headers.get("content-type", "").startswith("text/event-stream")
        if ex.outcome.error is not None or not (200 <= resp.status_code < 300 and is_sse):
            return  # buffered: translated in `response`
        translator = ex.call.translator(ex, coalesce=ex.delivery == "buffered")
        resp.headers.clear()
        resp.headers.update(SSE_HEADERS)
        if resp.http_version.startswith("HTTP/1"):
            # the upstream's length (if any) is not ours: chunked framing, or HTTP/1 clients hang
            resp.headers["transfer-encoding"] = "chunked"
        resp.stream = _stream_callable(translator, ex)
        ex.streaming = True
        self.runtime.metrics.active_streams.inc()

    def response(self, flow: http.HTTPFlow) -> None:
        ex = self.exchanges.get(flow.id)
        if ex is None or flow.response is None:
            return
        resp = flow.response
        if not resp.stream and ex.done is None:  # a streamed request's buffered answer: an error, or unexpected
            if ex.outcome.error is not None:
                flow.response = error_response(ex.outcome.error)
            else:
                content = resp.get_content(strict=False) or b""
                if ex.capture is not None:
                    ex.capture.vertex_response = {"status": resp.status_code, "body": _json_or_text(content)}
                flow.response = (self._vertex_error(ex, resp.status_code, content, dict(resp.headers))
                                 if not 200 <= resp.status_code < 300 else  # a 2xx that is no event stream
                                 _unexpected(resp.status_code, dict(resp.headers)))
            ex.done = time.time()
        self._record(flow, ex, flow.response.status_code)

    def error(self, flow: http.HTTPFlow) -> None:
        ex = self.exchanges.get(flow.id)
        if ex is None:
            return
        if ex.plan_token:  # the flow died before the relay took its plan: do not keep it
            self.runtime.relay.discard(ex.plan_token)
        self._record(flow, ex, 499)  # nginx's "client closed request": the exchange ended without an answer

    # --- options and lifecycle ----------------------------------------------------------------------------

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

    def running(self) -> None:
        _http_client_logs(ctx.options.termlog_verbosity if "termlog_verbosity" in ctx.options.keys() else "info")
        if _in_mitmweb() and not ctx.options.store_streamed_bodies:
            ctx.options.store_streamed_bodies = True  # a streamed flow shows the chunks the app received

    async def done(self) -> None:
        await self.runtime.relay.stop()

    # --- the end of an exchange ---------------------------------------------------------------------------

    def _record(self, flow: http.HTTPFlow, ex: Exchange, status: int) -> None:
        """Once per exchange, when it ends: metrics, the log line, the flow's comment (mitmweb), the dump."""
        if ex.recorded:
            return
        ex.recorded = True
        self.exchanges.pop(flow.id, None)
        if ex.streaming:
            self.runtime.metrics.active_streams.dec()
        outcome = ex.stream_error or status
        mode = _mode(flow)
        self.runtime.metrics.observe(ex, outcome, mode)
        for listener in self.runtime.exchange_ended:
            try:
                listener(flow, ex)
            except Exception:  # accounting must never cost the client its answer
                log.exception("modelmux: an end-of-exchange listener failed")
        line = _log_line(ex, outcome, mode)
        flow.metadata[META].update(status=outcome, attempts=line["attempts"], served_region=line["region"])
        flow.comment = (f"modelmux: {line['model']} → {line['vertex_model']} ({line['region']}) {outcome}, "
                        f"{line['attempts']} attempt(s)")
        if ctx.options.modelmux_log_format == "json":
            log.info(json.dumps(line))
        else:
            log.info("modelmux: %s %s %s → %s (%s) %s %s in %s ms, %s attempt(s), tokens %s/%s", mode, ex.api,
                     line["model"], line["vertex_model"], line["region"], line["delivery"] or "json", outcome,
                     line["duration_ms"], line["attempts"], line["prompt_tokens"], line["completion_tokens"])
        if ex.capture is not None:
            record = _dump_record(flow, ex, outcome, mode)
            self.runtime.dump.write(record)
            if self._flow_pairs:
                record = shorten_payloads(record)
                flow.metadata[PAIR] = record
                flow.comment += "\n\n" + render_pair(record)


async def _resolved(answer: Any) -> http.Response:
    return await answer if inspect.isawaitable(answer) else answer


def _message(content: bytes) -> dict[str, Any] | None:
    try:
        message = json.loads(content)
    except ValueError:
        return None
    return message if isinstance(message, dict) and message.get("type") == "message" else None


def _unexpected(status: int, headers: dict[str, str]) -> http.Response:
    return error_response(OpenAIError(
        502, f"Vertex AI answered {status} with an unexpected body ({headers.get('content-type', 'no content-type')}).",
        "server_error", None, "bad_upstream_response"))


class _BatchFailed(Exception):
    def __init__(self, error: OpenAIError):
        super().__init__(error.message)
        self.error = error


def _in_mitmweb() -> bool:
    return "web_port" in ctx.options.keys()


def _http_client_logs(verbosity: str) -> None:
    """The HTTP clients log each call at INFO (the exchange line already says it) and each step at DEBUG (a record
    built per step, on the hot path): let them through only when debug output is asked for."""
    level = logging.DEBUG if verbosity == "debug" else logging.WARNING
    for name in ("httpx", "httpcore"):
        logging.getLogger(name).setLevel(level)


def _replayed_stream(ex: Exchange, message: dict[str, Any]) -> http.Response:
    """Streaming mode `never`: the whole answer as the SSE a stream would have carried, in one body."""
    translator = ex.call.translator(ex, coalesce=True)
    try:
        out = translator.feed(message_as_events(message)) + translator.finish()
    except Exception as err:  # as in a live stream: the error event ends the answer, the exchange is recorded
        log.exception("modelmux: stream translation failed")
        out = translator.fail(OpenAIError(500, f"modelmux failed to translate the stream: {type(err).__name__}",
                                          "server_error", None, "translation_failed"))
    ex.first_chunk = time.time()
    if translator.failed:
        ex.stream_error = translator.failed.status
    ex.call.stream_done(ex, translator)
    return sse_response(out)


def _stream_callable(translator: StreamTranslator, ex: Exchange):
    """mitmproxy calls this per socket read, then once with b"" at the end. It must never raise (mitmproxy
    would drop that chunk silently) and never return b"" mid-stream (HTTP/1 would end the body)."""
    capture = ex.capture

    def stream(data: bytes) -> list[bytes]:
        try:
            out = translator.feed(data) if data else translator.finish()
        except Exception as err:  # a translator bug must surface as an error chunk, not silent loss
            log.exception("modelmux: stream translation failed")
            out = translator.fail(OpenAIError(500, f"modelmux failed to translate the stream: {type(err).__name__}",
                                              "server_error", None, "translation_failed"))
        if out and ex.first_chunk is None:
            ex.first_chunk = time.time()
        if capture is not None:
            capture.add(data, out)
        if (translator.done or translator.failed) and ex.done is None:
            ex.done = time.time()
            ex.tokens = Tokens.from_anthropic(translator.upstream_usage)
            if translator.failed:
                ex.stream_error = translator.failed.status
            try:
                # kept before the last chunk leaves: the client's next request in a tool loop may follow at once
                ex.call.stream_done(ex, translator)
            except Exception:
                log.exception("modelmux: keeping the stream's state failed")
        return [out] if out else []

    return stream


def _log_line(ex: Exchange, outcome: int, mode: str) -> dict[str, Any]:
    """The facts of one exchange, for the log (no bodies, no keys)."""
    tokens = ex.tokens
    return {"event": "exchange", "api": ex.api, "mode": mode, "model": ex.requested_model,
            "vertex_model": ex.vertex_model, "region": ex.served_region, "stream": ex.stream,
            "delivery": ex.delivery, "status": outcome, "attempts": ex.attempts,
            "duration_ms": ex.ms(ex.done or time.time()), "first_chunk_ms": ex.ms(ex.first_chunk),
            "prompt_tokens": tokens.prompt if tokens else None, "completion_tokens": tokens.output if tokens else None}


def _json_or_text(content: bytes | None) -> Any:
    try:
        return json.loads(content or b"")
    except ValueError:
        return (content or b"").decode("utf-8", "replace")


def _dump_record(flow: http.HTTPFlow, ex: Exchange, outcome: int, mode: str) -> dict[str, Any]:
    """One line of the dump: the four bodies of the exchange, its timings and outcome."""
    capture = ex.capture
    timings = {k + "_ms": ex.ms(getattr(ex, k)) for k in ("upstream_headers", "first_chunk", "done")
               if getattr(ex, k) is not None}
    status = flow.response.status_code if flow.response else None
    if ex.streaming:
        vertex_response = {"status": status, "events": sse.payloads(bytes(capture.upstream))}
        openai_response = {"status": status, "chunks": sse.payloads(bytes(capture.out))}
    else:
        vertex_response = capture.vertex_response
        openai_response = None
        if flow.response is not None:
            is_sse = flow.response.headers.get("content-type", "").startswith("text/event-stream")  # mode `never`
            openai_response = {"status": status,
                               **({"chunks": sse.payloads(flow.response.content or b"")} if is_sse else
                                  {"body": shorten_vectors(_json_or_text(flow.response.content))})}
    return {"time": ex.received, "id": flow.id, "api": ex.api, "model": ex.requested_model,
            "vertex_model": ex.vertex_model, "region": ex.served_region, "mode": mode, "stream": ex.stream,
            "delivery": ex.delivery, "status": outcome, "attempts": ex.attempts, "timings": timings,
            "openai_request": capture.openai_request, "vertex_request": capture.vertex_request,
            "vertex_response": vertex_response, "openai_response": openai_response}


def _mode(flow: http.HTTPFlow) -> str:
    mode = flow.client_conn.proxy_mode
    if isinstance(mode, ReverseMode):
        return "reverse"
    return "direct" if sent_to_listener(flow) else "proxy"
