"""Features that need their own configuration, end to end through a real `modelmux run` (HTTPS_PROXY and
reverse modes) with the openai SDK: thinking in a tool loop (pain 13, 21), fetched image URLs (pain 7) and
prompt-cache usage (pain 18)."""

from __future__ import annotations

import openai
import pytest
from openapi import validate_completion

import procs
from e2e import CLIENT_KEY, Emulator, openai_client, start_proxy
from test_images import PNG, image_server

WEATHER = {"type": "function", "function": {"name": "get_weather", "parameters": {
    "type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("features")
    emu_proc, url, key = procs.emulator(tmp)
    config = tmp / "modelmux.yaml"
    config.write_text(f"""
vertex: {{project: feat, region: us-east5, base_url: "{url}"}}
auth: {{credentials_file: "{key}"}}
models: {{map: {{gpt-4o: claude-sonnet-4-5@20250929}}}}
reasoning: {{expose: true}}
images: {{allow_private_networks: true, max_bytes: 100000}}
""")
    proxy = start_proxy("modelmux-run", config, tmp / "confdir")
    yield proxy, Emulator(url)
    proxy.proc.stop()
    emu_proc.stop()


@pytest.fixture(params=["https_proxy", "reverse"])
def client(request, setup, monkeypatch):
    proxy, _ = setup
    c = openai_client(request.param, proxy, monkeypatch)
    yield c
    c.close()


@pytest.mark.parametrize("stream", [False, True])
def test_pain13_pain21_thinking_survives_the_tool_loop(client, setup, stream):
    _, emu = setup
    messages = [{"role": "user", "content": "What is the weather? Use get_weather."}]
    kw = {"model": "gpt-4o", "tools": [WEATHER], "reasoning_effort": "low"}
    if stream:
        with client.chat.completions.stream(messages=messages, **kw) as s:
            first = s.get_final_completion()
    else:
        raw = client.chat.completions.with_raw_response.create(messages=messages, **kw)
        validate_completion(raw.http_response.json())
        first = raw.parse()
    msg = first.choices[0].message
    assert first.choices[0].finish_reason == "tool_calls" and msg.tool_calls[0].function.name == "get_weather"
    reasoning = (msg.model_extra or {}).get("reasoning_content") if not stream else None
    if not stream:
        assert reasoning and reasoning.startswith("Thinking about:")
    # the app sends back what OpenAI clients keep: no thinking, no signature
    messages += [{"role": "assistant", "content": msg.content,
                  "tool_calls": [tc.model_dump(exclude_none=True) for tc in msg.tool_calls]},
                 {"role": "tool", "tool_call_id": msg.tool_calls[0].id, "content": "18 degrees"}]
    second = client.chat.completions.create(messages=messages, **kw)
    assert second.choices[0].message.content == "Tool results: 18 degrees"
    sent = emu.last_request()["body"]
    assistant = sent["messages"][1]["content"]
    assert assistant[0]["type"] == "thinking" and assistant[0]["signature"]  # modelmux put it back
    assert sent["thinking"]["type"] == "enabled"


def test_pain7_image_urls_are_fetched_and_inlined(client, setup):
    _, emu = setup
    with image_server() as base:
        c = client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": [
            {"type": "text", "text": "describe"}, {"type": "image_url", "image_url": {"url": f"{base}/cat.png"}}]}])
    assert c.choices[0].message.content == "You said: describe"
    image = emu.last_request()["body"]["messages"][0]["content"][1]
    import base64
    assert image["source"] == {"type": "base64", "media_type": "image/png", "data": base64.b64encode(PNG).decode()}
    with pytest.raises(openai.BadRequestError) as err:
        with image_server() as base:
            client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": [
                {"type": "image_url", "image_url": {"url": f"{base}/mislabelled"}}]}])
    assert "not a PNG" in err.value.message


def test_pain18_prompt_cache_usage(client):
    manual = " ".join(f"rule{i}" for i in range(50))
    messages = [{"role": "system", "content": [{"type": "text", "text": manual,
                                                "prompt_cache_breakpoint": {"mode": "explicit"}}]},
                {"role": "user", "content": "first question " + CLIENT_KEY[-6:]}]
    first = client.chat.completions.create(model="gpt-4o", messages=messages)
    second = client.chat.completions.create(model="gpt-4o", messages=messages, stream=True,
                                            stream_options={"include_usage": True})
    usage = [c.usage for c in second if c.usage][0]
    # the two calls of one test share the prefix: written by whichever came first in this module, then read
    assert first.usage.prompt_tokens == usage.prompt_tokens
    assert usage.prompt_tokens_details.cached_tokens == 50
    assert first.usage.prompt_tokens == 50 + 3


def scrape(proxy) -> dict[tuple[str, tuple], float]:
    from prometheus_client.parser import text_string_to_metric_families

    import httpx
    text = httpx.get(f"http://127.0.0.1:{proxy.reverse_port}/metrics", trust_env=False, timeout=5).text
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def test_metrics_count_what_was_served(client, setup):
    proxy, _ = setup
    before = scrape(proxy)
    client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "one two three"}])
    list(client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "four five"}],
                                        stream=True))
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model="gpt-4o", messages=[{"role": "wizard", "content": "x"}])
    after = scrape(proxy)

    def delta(name, **labels):
        key = (name, tuple(sorted(labels.items())))
        return after.get(key, 0) - before.get(key, 0)

    mode = "proxy" if client.base_url.host == "api.openai.com" else "reverse"
    assert delta("modelmux_requests_total", api="chat", model="gpt-4o", status="200", mode=mode, stream="false") == 1
    assert delta("modelmux_requests_total", api="chat", model="gpt-4o", status="200", mode=mode, stream="true") == 1
    assert delta("modelmux_tokens_total", model="gpt-4o", kind="output") == 5 + 4  # "You said: …" word tokens
    assert delta("modelmux_request_duration_seconds_count", model="gpt-4o", stream="true") == 1
    assert delta("modelmux_time_to_first_chunk_seconds_count", model="gpt-4o") == 1
    assert after[("modelmux_active_streams", ())] == 0
    assert ("modelmux_upstream_retries_total", ()) in after and after[("modelmux_token_refreshes_total", ())] >= 1


def test_client_chosen_model_names_never_become_metric_labels(client, setup):
    """Names not in models.map (served by models.default, or claude-… ids used as is) are counted as `other`:
    3000 random names must not grow /metrics forever."""
    proxy, _ = setup

    def ask(names):
        for name in names:
            client.chat.completions.create(model=name, messages=[{"role": "user", "content": "hi"}])

    ask(["random-model-0", "claude-haiku-4-5@20251001"])  # the "other" series exist from here on
    before = scrape(proxy)
    names = [f"random-model-{i}" for i in range(1, 21)] + ["claude-opus-4-5@20251101"]
    ask(names)
    after = scrape(proxy)
    assert not any(name in str(labels) for (_, labels) in after for name in names)
    assert set(after) == set(before)  # not one new series: every new name is `other`
    mode = "proxy" if client.base_url.host == "api.openai.com" else "reverse"
    other = (("api", "chat"), ("mode", mode), ("model", "other"), ("status", "200"), ("stream", "false"))
    assert after[("modelmux_requests_total", other)] - before[("modelmux_requests_total", other)] == 21
