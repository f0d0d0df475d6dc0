import copy
import json
import re
from pathlib import Path

import pytest
from openapi import validate

from modelmux.translate.errors import OpenAIError
from modelmux.translate.request import NO_RESULT_TEXT, claude_tool_name
from modelmux.translate.responses.request import (COMPACTION_PROMPT, as_compaction, conversation_items,
                                                  parse_responses_request, references, to_vertex_body)
from modelmux.translate.responses.response import (compact_resource, seal_summary, seal_thinking, to_response,
                                                   unseal_summary)

KEY = bytes(range(32))
MODEL = "claude-sonnet-4-5@20250929"
V1 = "vertex-2023-10-16"
PNG = "data:image/png;base64,iVBORw0KGgo="
PDF = "data:application/pdf;base64,JVBERi0xLjQK"


def call(body, *, model=MODEL, version=V1, **kw):
    kw.setdefault("key", KEY)
    kw.setdefault("created_at", 1700000000)
    req = parse_responses_request(json.dumps({"model": "gpt-5", **body}).encode())
    return to_vertex_body(req, model, version, **kw)


def error(body, **kw):
    with pytest.raises(OpenAIError) as info:
        call(body, **kw)
    err = info.value
    assert err.status == 400 and err.type == "invalid_request_error"
    return err


def turns(c):
    return [(t["role"], [b["type"] for b in t["content"]]) for t in c.body["messages"]]


def test_string_input_and_instructions():
    c = call({"input": "Hello", "instructions": "Be brief."})
    assert c.body["system"] == [{"type": "text", "text": "Be brief."}]
    assert c.body["messages"] == [{"role": "user", "content": [{"type": "text", "text": "Hello"}]}]
    assert "model" not in c.body and c.body["anthropic_version"] == V1 and c.body["max_tokens"] == 16384
    assert c.input_items[0]["content"] == [{"type": "input_text", "text": "Hello"}]
    assert c.input_items[0]["id"].startswith("msg_") and c.store and not c.stream


def test_the_sealing_key_never_shows_in_a_repr():
    c = call({"input": "x"})
    assert c.shape.key == KEY and KEY.hex() not in repr(c) and repr(KEY) not in repr(c)


def test_leading_system_and_developer_messages_join_system_later_ones_stay_in_place():
    c = call({"instructions": "I", "input": [
        {"role": "developer", "content": "D"}, {"role": "system", "content": [{"type": "input_text", "text": "S"}]},
        {"role": "user", "content": "U"}, {"role": "developer", "content": "late"}]})
    assert [b["text"] for b in c.body["system"]] == ["I", "D", "S"]
    assert c.body["messages"][0]["content"][-1]["text"] == "<developer>\nlate\n</developer>"


def test_content_parts_images_and_pdfs():
    c = call({"input": [{"role": "user", "content": [
        {"type": "input_text", "text": "look"}, {"type": "input_text", "text": "  "},
        {"type": "input_image", "image_url": PNG, "detail": "auto"},
        {"type": "input_image", "image_url": "https://example.com/cat.jpg"},
        {"type": "input_file", "file_data": PDF, "filename": "spec.pdf"}]}]})
    blocks = c.body["messages"][0]["content"]
    assert [b["type"] for b in blocks] == ["text", "image", "image", "document"]  # the blank text is dropped
    assert blocks[1]["source"] == {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}
    assert blocks[2]["source"] == {"type": "url", "url": "https://example.com/cat.jpg"}
    assert c.image_urls == ["https://example.com/cat.jpg"]
    assert blocks[3]["title"] == "spec.pdf" and blocks[3]["source"]["media_type"] == "application/pdf"


@pytest.mark.parametrize("part, param", [
    ({"type": "input_image", "file_id": "file-1"}, "input[0].content[0]"),
    ({"type": "input_file", "file_id": "file-1"}, "input[0].content[0]"),
    ({"type": "input_file", "file_url": "https://x/y.pdf"}, "input[0].content[0].file_url"),
    ({"type": "input_image", "image_url": "ftp://x"}, "input[0].content[0].image_url"),
    ({"type": "input_audio"}, "input[0].content[0].type"),
    ({"type": "input_text"}, "input[0].content[0].text"),
    ({"type": "input_text", "text": 5}, "input[0].content[0].text"),
])
def test_bad_parts_are_a_400_naming_them(part, param):
    assert error({"input": [{"role": "user", "content": [part]}]}).param == param


def test_images_only_where_openai_allows_them():
    err = error({"input": [{"role": "system", "content": [{"type": "input_image", "image_url": PNG}]}]})
    assert err.param == "input[0].content[0]"
    err = error({"input": [{"role": "assistant", "content": [{"type": "input_image", "image_url": PNG}]}]})
    assert err.param == "input[0].content[0].type"


def test_replayed_assistant_messages_output_text_and_refusal():
    c = call({"input": [{"role": "user", "content": "q"},
                        {"type": "message", "role": "assistant", "id": "msg_1", "status": "completed",
                         "content": [{"type": "output_text", "text": "A", "annotations": []},
                                     {"type": "refusal", "refusal": "R"}]},
                        {"role": "assistant", "content": "plain"}, {"role": "user", "content": "more"}]})
    assert c.body["messages"][1] == {"role": "assistant", "content": [{"type": "text", "text": "A"},
                                                                       {"type": "text", "text": "R"},
                                                                       {"type": "text", "text": "plain"}]}
    assert c.input_items[1]["id"] == "msg_1"
    assert c.input_items[2]["content"] == [{"type": "output_text", "text": "plain", "annotations": [],
                                            "logprobs": []}]


def fc(call_id, name="lookup", args='{"q": 1}', **kw):
    return {"type": "function_call", "call_id": call_id, "name": name, "arguments": args, **kw}


def out(call_id, output="ok"):
    return {"type": "function_call_output", "call_id": call_id, "output": output}


def test_consecutive_calls_are_one_assistant_turn_and_their_outputs_one_user_turn_results_first():
    c = call({"input": [{"role": "user", "content": "go"}, {"role": "assistant", "content": "Looking."},
                        fc("call_1"), fc("call_2", args=""), out("call_2", "two"), out("call_1", "one"),
                        {"role": "user", "content": "and?"}]})
    assert turns(c) == [("user", ["text"]), ("assistant", ["text", "tool_use", "tool_use"]),
                        ("user", ["tool_result", "tool_result", "text"])]
    uses = c.body["messages"][1]["content"][1:]
    assert [(u["id"], u["input"]) for u in uses] == [("call_1", {"q": 1}), ("call_2", {})]
    results = c.body["messages"][2]["content"]
    assert [(r["tool_use_id"], r["content"]) for r in results[:2]] == [("call_2", "two"), ("call_1", "one")]


def test_calls_without_outputs_get_a_synthesized_error_result():
    c = call({"input": [{"role": "user", "content": "go"}, fc("call_1"), fc("call_2"), out("call_1")]})
    results = c.body["messages"][-1]["content"]
    assert [r["tool_use_id"] for r in results] == ["call_1", "call_2"]
    assert results[1] == {"type": "tool_result", "tool_use_id": "call_2", "is_error": True, "content": NO_RESULT_TEXT}
    c = call({"input": [{"role": "user", "content": "go"}, fc("call_1"), {"role": "user", "content": "never mind"}]})
    assert turns(c)[-1] == ("user", ["tool_result", "text"])


def test_a_late_developer_message_between_a_call_and_its_output_keeps_them_paired():
    c = call({"input": [{"role": "user", "content": "go"}, fc("call_1"), {"role": "developer", "content": "note"},
                        out("call_1", "done")]})
    assert turns(c) == [("user", ["text"]), ("assistant", ["tool_use"]), ("user", ["tool_result", "text"])]
    assert c.body["messages"][2]["content"][0]["content"] == "done"


def test_tool_outputs_with_content_parts():
    c = call({"input": [{"role": "user", "content": "go"}, fc("call_1"),
                        {"type": "function_call_output", "call_id": "call_1",
                         "output": [{"type": "input_text", "text": "see"}, {"type": "input_image", "image_url": PNG}]}]})
    assert [b["type"] for b in c.body["messages"][-1]["content"][0]["content"]] == ["text", "image"]


@pytest.mark.parametrize("items, param", [
    ([{"role": "user", "content": "x"}, out("nope")], "input[1].call_id"),
    ([{"role": "user", "content": "x"}, {"type": "function_call_output", "output": "o"}], "input[1].call_id"),
    ([{"role": "user", "content": "x"}, fc("c1", args="{not json")], "input[1].arguments"),
    ([{"role": "user", "content": "x"}, fc("c1", args="[1]")], "input[1].arguments"),
    ([{"role": "user", "content": "x"}, fc("c1"), out("c1"), fc("c1")], "input[3].call_id"),
    ([{"role": "user", "content": "x"}, {"type": "function_call", "name": "f", "arguments": "{}"}], "input[1].call_id"),
    ([{"type": "computer_call", "id": "cu_1"}], "input[0].type"),
    ([{"type": "local_shell_call"}], "input[0].type"),
    ([{"type": "telepathy"}], "input[0].type"),
    ([{"content": "no role"}], "input[0].type"),
    ([{"role": "robot", "content": "x"}], "input[0].role"),
    ([{"role": "user"}], "input[0].content"),
    (["just a string"], "input[0]"),
    ([{"type": "reasoning", "id": "rs_1"}], "input[0].summary"),
])
def test_bad_items_are_a_400_naming_them(items, param):
    assert error({"input": items}).param == param


def test_custom_tools_round_trip_as_one_string_input():
    grammar = {"type": "grammar", "syntax": "lark", "definition": "start: begin_patch hunk+ end_patch"}
    c = call({"tools": [{"type": "custom", "name": "apply_patch", "description": "Edit files.", "format": grammar}],
              "input": [{"role": "user", "content": "fix it"},
                        {"type": "custom_tool_call", "call_id": "call_p", "name": "apply_patch",
                         "input": "*** Begin Patch\n*** End Patch"},
                        {"type": "custom_tool_call_output", "call_id": "call_p", "output": "Done!"}]})
    tool = c.body["tools"][0]
    assert tool["name"] == "apply_patch" and tool["input_schema"]["required"] == ["input"]
    assert tool["input_schema"]["properties"]["input"]["type"] == "string"
    assert "start: begin_patch hunk+ end_patch" in tool["description"] and tool["description"].startswith("Edit files.")
    assert c.body["messages"][1]["content"] == [{"type": "tool_use", "id": "call_p", "name": "apply_patch",
                                                 "input": {"input": "*** Begin Patch\n*** End Patch"}}]
    assert c.body["messages"][2]["content"] == [{"type": "tool_result", "tool_use_id": "call_p", "content": "Done!"}]
    assert c.shape.custom_tools == frozenset({"apply_patch"})
    answer = to_response({"content": [{"type": "tool_use", "id": "toolu_1", "name": "apply_patch",
                                       "input": {"input": "*** Begin Patch"}}], "stop_reason": "tool_use"}, c.shape)
    item = answer.response["output"][0]
    assert item["type"] == "custom_tool_call" and item["input"] == "*** Begin Patch" and item["call_id"] == "toolu_1"
    assert item["id"].startswith("ctc_")
    validate(answer.response, "Response")


def test_function_tools_optional_fields_and_flat_shape():
    c = call({"tools": [{"type": "function", "name": "now"},
                        {"type": "function", "name": "get", "description": "Get it.", "strict": True,
                         "parameters": {"type": "object", "properties": {"id": {"type": "string"}},
                                        "required": ["id"], "additionalProperties": False}}],
              "input": "x"})
    assert c.body["tools"][0] == {"name": "now", "input_schema": {"type": "object", "properties": {}}}
    assert c.body["tools"][1]["description"] == "Get it." and "strict" not in c.body["tools"][1]
    echoed = to_response({"content": [{"type": "text", "text": "hi"}]}, c.shape).response
    assert echoed["tools"][0] == {"type": "function", "name": "now", "parameters": None, "strict": None}
    validate(echoed, "Response")


def test_names_and_namespaces_are_sanitised_and_restored():
    c = call({"tools": [{"type": "function", "name": "github.search"},
                        {"type": "namespace", "name": "mcp__fs", "description": "Files",
                         "tools": [{"type": "function", "name": "read", "description": "Read one."}]}],
              "input": [{"role": "user", "content": "x"}, fc("c1", name="github.search"),
                        fc("c2", name="read", namespace="mcp__fs"), out("c1"), out("c2")]})
    names = [t["name"] for t in c.body["tools"]]
    assert names == [claude_tool_name("github.search"), "mcp__fs__read"]
    assert c.body["tools"][1]["description"] == "[mcp__fs: Files] Read one."
    assert [u["name"] for u in c.body["messages"][1]["content"]] == names
    answer = to_response({"content": [{"type": "tool_use", "id": "t1", "name": names[0], "input": {}},
                                      {"type": "tool_use", "id": "t2", "name": "mcp__fs__read", "input": {"p": "/"}}],
                          "stop_reason": "tool_use"}, c.shape).response
    assert [(o["name"], o.get("namespace")) for o in answer["output"]] == [("github.search", None), ("read", "mcp__fs")]
    assert answer["output"][1]["arguments"] == '{"p": "/"}'
    validate(answer, "Response")
    codex = call({"tools": [{"type": "namespace", "name": "mcp__demo__", "description": "Demo",
                             "tools": [{"type": "function", "name": "echo"}]}], "input": "x"})
    assert codex.body["tools"][0]["name"] == "mcp__demo__echo"  # Codex's namespaces end in __ already


def test_builtin_tools_are_a_400_naming_them_unless_dropped():
    for kind in ["file_search", "code_interpreter", "image_generation", "computer_use_preview", "local_shell",
                 "shell", "mcp", "apply_patch", "tool_search"]:
        err = error({"tools": [{"type": "function", "name": "f"}, {"type": kind}], "input": "x"})
        assert err.param == "tools[1].type" and kind in err.message
    c = call({"tools": [{"type": "function", "name": "f"}, {"type": "image_generation", "output_format": "png"},
                        {"type": "web_search", "external_web_access": False}], "input": "x"}, drop_builtin_tools=True)
    assert [t["name"] for t in c.body["tools"]] == ["f"] and c.dropped_tools == ["image_generation", "web_search"]
    assert error({"tools": [{"type": "warp_drive"}], "input": "x"}).param == "tools[0].type"


def test_web_search_when_enabled_becomes_claudes_tool():
    err = error({"tools": [{"type": "web_search"}], "input": "x"})
    assert err.param == "tools[0].type" and "not enabled" in err.message
    c = call({"tools": [{"type": "web_search_preview", "user_location": {"type": "approximate", "city": "Paris",
                                                                         "country": "FR"},
                         "filters": {"allowed_domains": ["example.com"]}}],
              "max_tool_calls": 3, "input": "news?"}, web_search=True)
    assert c.body["tools"] == [{"type": "web_search_20250305", "name": "web_search", "allowed_domains": ["example.com"],
                                "user_location": {"type": "approximate", "city": "Paris", "country": "FR"},
                                "max_uses": 3}]
    c = call({"tools": [{"type": "web_search"}], "tool_choice": {"type": "web_search_preview"}, "input": "x"},
             web_search=True)
    assert c.body["tool_choice"] == {"type": "tool", "name": "web_search"}


def test_tool_choice_forms():
    tools = [{"type": "function", "name": "a"}, {"type": "function", "name": "b"}, {"type": "custom", "name": "c"}]
    assert call({"tools": tools, "tool_choice": "required", "input": "x"}).body["tool_choice"] == {"type": "any"}
    assert call({"tools": tools, "tool_choice": "none", "input": "x"}).body["tool_choice"] == {"type": "none"}
    assert call({"tools": tools, "tool_choice": "auto", "input": "x"}).body["tool_choice"] == {"type": "auto"}
    assert call({"tools": tools, "tool_choice": {"type": "function", "name": "b"}, "input": "x"}).body[
        "tool_choice"] == {"type": "tool", "name": "b"}
    assert call({"tools": tools, "tool_choice": {"type": "custom", "name": "c"}, "input": "x"}).body[
        "tool_choice"] == {"type": "tool", "name": "c"}
    c = call({"tools": tools, "tool_choice": {"type": "allowed_tools", "mode": "required",
                                              "tools": [{"type": "function", "name": "a"},
                                                        {"type": "custom", "name": "c"}]}, "input": "x"})
    assert [t["name"] for t in c.body["tools"]] == ["a", "c"] and c.body["tool_choice"] == {"type": "any"}
    c = call({"tools": tools, "parallel_tool_calls": False, "input": "x"})
    assert c.body["tool_choice"] == {"type": "auto", "disable_parallel_tool_use": True}
    assert "tool_choice" not in call({"tool_choice": "auto", "input": "x"}).body


@pytest.mark.parametrize("choice, param", [
    ({"type": "function", "name": "zzz"}, "tool_choice.name"),
    ({"type": "custom", "name": "a"}, "tool_choice.name"),  # a is a function, not a custom tool
    ({"type": "function"}, "tool_choice.name"),
    ({"type": "file_search"}, "tool_choice.type"),
    ({"type": "mcp", "server_label": "x"}, "tool_choice.type"),
    ({"type": "web_search_preview"}, "tool_choice"),
    ({"type": "allowed_tools", "tools": []}, "tool_choice"),
    ("sometimes", "tool_choice"),
])
def test_bad_tool_choices(choice, param):
    assert error({"tools": [{"type": "function", "name": "a"}], "tool_choice": choice, "input": "x"}).param == param
    assert error({"tool_choice": "required", "input": "x"}).param == "tool_choice"


def test_text_format_json_schema_is_a_forced_tool_answered_as_output_text():
    schema = {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"],
              "additionalProperties": False}
    c = call({"text": {"format": {"type": "json_schema", "name": "count", "schema": schema, "strict": True},
                       "verbosity": "low"}, "input": "count"})
    assert c.body["tools"] == [{"name": "json_response", "input_schema": schema,
                                "description": "Give your final answer by calling this tool; its input is the "
                                               "answer. Format: count."}]
    assert c.body["tool_choice"] == {"type": "tool", "name": "json_response"}
    answer = to_response({"content": [{"type": "tool_use", "id": "t", "name": "json_response", "input": {"n": 3}}],
                          "stop_reason": "tool_use"}, c.shape).response
    assert answer["output"][0]["content"] == [{"type": "output_text", "text": '{"n": 3}', "annotations": [],
                                               "logprobs": []}]
    assert answer["text"] == {"format": {"type": "json_schema", "name": "count", "schema": schema, "strict": True},
                              "verbosity": "low"}
    validate(answer, "Response")
    wrapped = call({"text": {"format": {"type": "json_schema", "name": "list", "schema": {"type": "array"}}},
                    "input": "x"})
    assert wrapped.shape.json_wrapped and wrapped.body["tools"][0]["input_schema"]["required"] == ["value"]
    assert call({"text": {"format": {"type": "json_object"}}, "input": "json please"}).body["tools"][0][
        "input_schema"] == {"type": "object"}
    assert error({"text": {"format": {"type": "json_schema", "name": "x"}}, "input": "x"}).param == "text.format.schema"
    assert error({"text": {"format": {"type": "json_schema", "schema": {}}}, "input": "x"}).param == "text.format.name"
    assert error({"text": {"format": {"type": "yaml"}}, "input": "x"}).param == "text.format.type"


def test_json_mode_with_client_tools_keeps_them_callable():
    c = call({"tools": [{"type": "function", "name": "a"}], "text": {"format": {"type": "json_object"}},
              "input": "x"})
    assert [t["name"] for t in c.body["tools"]] == ["a", "json_response"] and c.body["tool_choice"] == {"type": "any"}
    c = call({"tools": [{"type": "function", "name": "a"}], "tool_choice": "none",
              "text": {"format": {"type": "json_object"}}, "input": "x"})
    assert [t["name"] for t in c.body["tools"]] == ["json_response"]


def test_reasoning_effort_is_a_thinking_budget_under_the_chat_rules():
    c = call({"reasoning": {"effort": "high", "summary": "auto"}, "input": "think"})
    assert c.body["thinking"] == {"type": "enabled", "budget_tokens": 16384} and c.thinking
    assert c.body["max_tokens"] == 16384 + 16384 and c.shape.summary
    assert "thinking" not in call({"reasoning": {"effort": "none"}, "input": "x"}).body
    assert "thinking" not in call({"input": "x"}).body
    forced = call({"reasoning": {"effort": "high"}, "tools": [{"type": "function", "name": "a"}],
                   "tool_choice": "required", "input": "x"})
    assert "thinking" not in forced.body  # Anthropic rejects thinking with a forced tool
    small = call({"reasoning": {"effort": "high"}, "max_output_tokens": 1000, "input": "x"})
    assert "thinking" not in small.body and small.body["max_tokens"] == 1000
    capped = call({"reasoning": {"effort": "max"}, "max_output_tokens": 100000, "input": "x"})
    assert capped.body["max_tokens"] == 64000 and capped.body["thinking"]["budget_tokens"] == 63999
    assert not call({"reasoning": {"effort": "low"}, "input": "x"}).shape.summary  # no summary unless asked


def test_sampling_rules_follow_chat():
    c = call({"temperature": 1.7, "input": "x"}, model="claude-3-7-sonnet@20250219")
    assert c.body["temperature"] == 1.0
    c = call({"temperature": 0.2, "top_p": 0.9, "input": "x"})  # Sonnet 4.5 rejects the pair: temperature wins
    assert c.body["temperature"] == 0.2 and "top_p" not in c.body
    c = call({"temperature": 0.2, "top_p": 0.9, "input": "x"}, version="2026-10-21")
    assert "temperature" not in c.body and "top_p" not in c.body
    c = call({"temperature": 0.2, "reasoning": {"effort": "low"}, "input": "x"})
    assert "temperature" not in c.body  # thinking needs the default


def test_user_and_safety_identifier_become_a_hashed_user_id():
    c = call({"user": "alice@example.com", "safety_identifier": "sid-1", "input": "x"})
    assert c.body["metadata"]["user_id"].startswith("user-") and "sid-1" not in json.dumps(c.body)
    assert c.body["metadata"] == call({"safety_identifier": "sid-1", "input": "x"}).body["metadata"]


def test_prompt_cache_key_and_breakpoints():
    c = call({"instructions": "sys", "prompt_cache_key": "thread-1", "input": [
        {"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}, {"role": "user", "content": "c"}]})
    assert c.body["system"][-1]["cache_control"] == {"type": "ephemeral"}
    assert c.body["messages"][-1]["content"][-1]["cache_control"] == {"type": "ephemeral"}
    assert "cache_control" not in json.dumps(c.body["messages"][:-1])
    c = call({"prompt_cache_retention": "24h", "input": [{"role": "user", "content": [
        {"type": "input_text", "text": "big", "prompt_cache_breakpoint": {"mode": "explicit"}},
        {"type": "input_text", "text": "small"}]}]})
    assert c.body["messages"][0]["content"][0]["cache_control"] == {"type": "ephemeral", "ttl": "1h"}
    assert "cache_control" not in c.body["messages"][0]["content"][1]
    assert "cache_control" not in json.dumps(call({"input": "plain"}).body)


@pytest.mark.parametrize("body, param", [
    ({"input": "x", "model": None}, "model"),
    ({"input": "x", "stream": 1}, "stream"),
    ({"input": "x", "store": "false"}, "store"),
    ({"input": "x", "max_output_tokens": 15}, "max_output_tokens"),
    ({"input": "x", "max_output_tokens": "100"}, "max_output_tokens"),
    ({"input": "x", "max_output_tokens": 100.0}, "max_output_tokens"),
    ({"input": "x", "temperature": 2.5}, "temperature"),
    ({"input": "x", "top_p": -0.1}, "top_p"),
    ({"input": "x", "top_logprobs": 2}, "top_logprobs"),
    ({"input": "x", "top_logprobs": 21}, "top_logprobs"),
    ({"input": "x", "include": ["message.output_text.logprobs"]}, "include"),
    ({"input": "x", "include": ["everything"]}, "include[0]"),
    ({"input": "x", "background": True}, "background"),
    ({"input": "x", "conversation": "conv_1"}, "conversation"),
    ({"input": "x", "prompt": {"id": "pmpt_1"}}, "prompt"),
    ({"input": "x", "context_management": [{"type": "compaction", "compact_threshold": 5000}]}, "context_management"),
    ({"input": "x", "metadata": {f"k{i}": "v" for i in range(17)}}, "metadata"),
    ({"input": "x", "metadata": {"k": 1}}, "metadata.k"),
    ({"input": "x", "metadata": {"k": "v" * 513}}, "metadata.k"),
    ({"input": "x", "safety_identifier": "s" * 65}, "safety_identifier"),
    ({"input": "x", "reasoning": {"effort": "extreme"}}, "reasoning.effort"),
    ({"input": "x", "text": {"verbosity": "chatty"}}, "text.verbosity"),
    ({"input": "x", "truncation": "sometimes"}, "truncation"),
    ({"input": "x", "service_tier": "gold"}, "service_tier"),
    ({"input": "x", "parallel_tool_calls": "yes"}, "parallel_tool_calls"),
    ({"input": 42}, "input"),
    ({"input": []}, "input"),
])
def test_bad_fields_are_a_400_naming_them(body, param):
    raw = {"model": "gpt-5", **body}
    if raw["model"] is None:
        del raw["model"]
    with pytest.raises(OpenAIError) as info:
        to_vertex_body(parse_responses_request(json.dumps(raw).encode()), MODEL, V1, key=KEY, created_at=1)
    assert info.value.status == 400 and info.value.param == param, info.value.message


@pytest.mark.parametrize("raw", [b"{", b"[]", b'{"model": NaN}', b"[" * 100000])
def test_unreadable_bodies_are_a_400(raw):
    with pytest.raises(OpenAIError) as info:
        parse_responses_request(raw)
    assert info.value.status == 400


def test_missing_model_uses_openai_wording():
    with pytest.raises(OpenAIError) as info:
        parse_responses_request(b'{"input": "x"}')
    assert info.value.code == "missing_required_parameter" and "'model'" in info.value.message


def test_accepted_fields_change_nothing_in_the_claude_call():
    plain = call({"input": "x"}).body
    for extra in [{"store": False}, {"service_tier": "flex"}, {"truncation": "auto"}, {"metadata": {"a": "b"}},
                  {"text": {"verbosity": "high"}}, {"stream_options": {"include_obfuscation": False}},
                  {"include": ["reasoning.encrypted_content", "web_search_call.action.sources"]},
                  {"prompt_cache_retention": "in_memory"}, {"max_tool_calls": 2}, {"top_logprobs": 0},
                  {"reasoning": {"summary": "detailed"}}, {"client_metadata": {"x": "y"}},
                  {"moderation": {"model": "omni-moderation-latest"}}]:
        assert call({"input": "x", **extra}).body == plain, extra


def test_echoed_fields_make_a_valid_response():
    c = call({"input": "x", "instructions": "I", "metadata": {"a": "b"}, "temperature": 0.5, "top_p": 0.9,
              "max_output_tokens": 500, "store": False, "previous_response_id": None, "user": "u",
              "tool_choice": "none", "tools": [{"type": "function", "name": "f"}], "parallel_tool_calls": False,
              "reasoning": {"effort": "low", "summary": "concise"}, "service_tier": "priority",
              "prompt_cache_key": "k", "truncation": "auto"})
    r = to_response({"id": "msg_vrtx", "content": [{"type": "text", "text": "hi"}], "stop_reason": "end_turn",
                     "usage": {"input_tokens": 10, "output_tokens": 2}}, c.shape).response
    validate(r, "Response")
    assert (r["instructions"], r["metadata"], r["temperature"], r["top_p"], r["max_output_tokens"], r["store"],
            r["user"], r["tool_choice"], r["parallel_tool_calls"], r["reasoning"], r["service_tier"],
            r["prompt_cache_key"], r["truncation"], r["model"]) == (
        "I", {"a": "b"}, 0.5, 0.9, 500, False, "u", "none", False, {"effort": "low", "summary": "concise"},
        "default", "k", "auto", "gpt-5")
    assert r["created_at"] == 1700000000 and r["id"].startswith("resp_") and len(r["id"]) == 55
    assert r["id"] != call({"input": "x"}).shape.response_id


# --- reasoning across turns ---------------------------------------------------------------------------------

THOUGHT = {"type": "thinking", "thinking": "I should look it up.", "signature": "EqQBCkYIBxgCKkB"}
REDACTED = {"type": "redacted_thinking", "data": "EmwKAhgBEgy3va3pzix"}


def first_turn():
    """A thinking model's answer with a tool call, as the client receives it with the blob included."""
    c = call({"reasoning": {"effort": "medium", "summary": "auto"}, "include": ["reasoning.encrypted_content"],
              "store": False, "tools": [{"type": "function", "name": "lookup"}], "input": "What is X?"})
    msg = {"id": "msg_vrtx_1", "content": [THOUGHT, REDACTED, {"type": "text", "text": "Let me check."},
                                           {"type": "tool_use", "id": "toolu_1", "name": "lookup", "input": {"q": "X"}}],
           "stop_reason": "tool_use", "usage": {"input_tokens": 20, "output_tokens": 30}}
    return c, to_response(msg, c.shape)


def test_sealed_reasoning_round_trips_to_the_exact_thinking_blocks_at_the_head_of_the_turn():
    _, answer = first_turn()
    output = answer.response["output"]
    assert [o["type"] for o in output] == ["reasoning", "message", "function_call"]
    assert output[0]["summary"] == [{"type": "summary_text", "text": "I should look it up."}]
    assert output[0]["encrypted_content"].startswith("modelmux:")
    validate(answer.response, "Response")
    second = call({"reasoning": {"effort": "medium"}, "include": ["reasoning.encrypted_content"], "store": False,
                   "tools": [{"type": "function", "name": "lookup"}],
                   "input": [{"role": "user", "content": "What is X?"}, *output,
                             out(output[2]["call_id"], "X is 42.")]})
    assistant = second.body["messages"][1]["content"]
    assert assistant[:2] == [THOUGHT, REDACTED]  # exactly as Claude produced them, first in the turn
    assert [b["type"] for b in assistant[2:]] == ["text", "tool_use"]
    assert second.body["thinking"]["type"] == "enabled"  # the tool loop can go on thinking


def test_a_tampered_blob_is_a_400_naming_the_item():
    _, answer = first_turn()
    output = answer.response["output"]
    blob = output[0]["encrypted_content"]
    for bad in [blob[:-4] + ("AAAA" if not blob.endswith("AAAA") else "BBBB"), blob[:40], "modelmux:garbage"]:
        err = error({"input": [{"role": "user", "content": "q"}, {**output[0], "encrypted_content": bad},
                               *output[1:], out(output[2]["call_id"])]})
        assert err.param == "input[1].encrypted_content" and err.code == "invalid_encrypted_content"
    other = error({"input": [{"role": "user", "content": "q"}, *output, out(output[2]["call_id"])]},
                  key=bytes(range(1, 33)))
    assert other.param == "input[1].encrypted_content"


def test_foreign_or_missing_reasoning_is_dropped_and_thinking_pauses_for_that_tool_loop():
    _, answer = first_turn()
    output = answer.response["output"]
    for reasoning in [{"type": "reasoning", "id": "rs_x", "summary": [], "encrypted_content": "gAAAAABpPDIU"},
                      {"type": "reasoning", "id": "rs_x", "summary": [{"type": "summary_text", "text": "hm"}]}]:
        c = call({"reasoning": {"effort": "medium"}, "tools": [{"type": "function", "name": "lookup"}],
                  "input": [{"role": "user", "content": "q"}, reasoning, *output[1:], out(output[2]["call_id"])]})
        assert turns(c)[1] == ("assistant", ["text", "tool_use"])
        assert "thinking" not in c.body  # Vertex requires the loop's thinking; without it, no thinking
        assert c.input_items[1]["id"] == "rs_x"  # still stored as the client sent it


def test_reasoning_sent_by_value_without_its_blob_is_taken_from_the_store():
    _, answer = first_turn()
    stored = answer.stored["output"]
    bare = {k: v for k, v in stored[0].items() if k != "encrypted_content"}
    body = {"reasoning": {"effort": "low"}, "tools": [{"type": "function", "name": "lookup"}],
            "input": [{"role": "user", "content": "q"}, bare, *stored[1:], out(stored[2]["call_id"])]}
    req = parse_responses_request(json.dumps({"model": "gpt-5", **body}).encode())
    assert references(req) == [stored[0]["id"]]
    c = to_vertex_body(req, MODEL, V1, key=KEY, resolved={stored[0]["id"]: stored[0]}, created_at=1)
    assert c.body["messages"][1]["content"][:2] == [THOUGHT, REDACTED]
    assert c.input_items[1]["encrypted_content"] == stored[0]["encrypted_content"]


def test_item_references_are_resolved_by_the_caller():
    _, answer = first_turn()
    stored = answer.stored["output"]
    body = {"input": [{"role": "user", "content": "q"}, {"type": "item_reference", "id": stored[0]["id"]},
                      {"id": stored[1]["id"]}, stored[2], out(stored[2]["call_id"])]}
    req = parse_responses_request(json.dumps({"model": "gpt-5", **body}).encode())
    assert references(req) == [stored[0]["id"], stored[1]["id"]]
    c = to_vertex_body(req, MODEL, V1, key=KEY, resolved={i["id"]: i for i in stored}, created_at=1)
    assert turns(c) == [("user", ["text"]), ("assistant", ["thinking", "redacted_thinking", "text", "tool_use"]),
                        ("user", ["tool_result"])]
    assert [i["id"] for i in c.input_items[1:3]] == [stored[0]["id"], stored[1]["id"]]
    with pytest.raises(OpenAIError) as info:
        to_vertex_body(req, MODEL, V1, key=KEY, resolved={}, created_at=1)
    assert info.value.param == "input[1].id" and info.value.code == "item_not_found"


def test_previous_response_history_rebuilds_the_conversation_without_its_instructions():
    c1, answer = first_turn()
    history = conversation_items([(c1.input_items, answer.stored)])
    assert [i["type"] for i in history] == ["message", "reasoning", "message", "function_call"]
    c = call({"instructions": "New rules.", "previous_response_id": answer.stored["id"],
              "reasoning": {"effort": "medium"}, "tools": [{"type": "function", "name": "lookup"}],
              "input": [out("toolu_1", "42")]}, history=history)
    assert c.body["system"] == [{"type": "text", "text": "New rules."}]
    assert turns(c) == [("user", ["text"]), ("assistant", ["thinking", "redacted_thinking", "text", "tool_use"]),
                        ("user", ["tool_result"])]
    assert c.body["thinking"]["type"] == "enabled"
    assert [i["type"] for i in c.input_items] == ["function_call_output"]  # only the new input is stored
    for item in c1.input_items + answer.stored["output"] + c.input_items:
        validate(item, "ItemResource")


def test_thinking_cache_fallback_when_the_client_dropped_reasoning():
    c = call({"reasoning": {"effort": "medium"}, "tools": [{"type": "function", "name": "lookup"}],
              "input": [{"role": "user", "content": "q"}, fc("toolu_1"), out("toolu_1")]},
             thinking_for=lambda ident: [THOUGHT] if ident == "toolu_1" else None)
    assert c.body["messages"][1]["content"][0] == THOUGHT and c.body["thinking"]["type"] == "enabled"


def test_reasoning_with_nothing_after_it_is_dropped():
    blob = seal_thinking([THOUGHT], KEY)
    c = call({"input": [{"role": "user", "content": "q"},
                        {"type": "reasoning", "id": "rs_1", "summary": [], "encrypted_content": blob},
                        {"role": "user", "content": "again"}]})
    assert turns(c) == [("user", ["text", "text"])]


# --- compaction ---------------------------------------------------------------------------------------------

def test_compaction_items_expand_into_a_summary_turn():
    item = {"type": "compaction", "id": "cmp_1", "encrypted_content": seal_summary("We fixed bug #7.", KEY)}
    c = call({"input": [item, {"role": "user", "content": "next?"}]})
    assert c.body["messages"] == [{"role": "user", "content": [
        {"type": "text", "text": "<conversation_summary>\nWe fixed bug #7.\n</conversation_summary>"},
        {"type": "text", "text": "next?"}]}]
    assert c.input_items[0] == item
    for bad in [{**item, "encrypted_content": "gAAAAAB"}, {**item, "encrypted_content": seal_thinking([THOUGHT], KEY)}]:
        assert error({"input": [bad, {"role": "user", "content": "x"}]}).param == "input[0].encrypted_content"


def test_a_compaction_trigger_asks_claude_for_the_summary():
    c = call({"reasoning": {"effort": "high"}, "tools": [{"type": "function", "name": "f"}],
              "text": {"format": {"type": "json_object"}},
              "input": [{"role": "user", "content": "long talk"}, {"role": "assistant", "content": "yes"},
                        {"type": "compaction_trigger"}]})
    assert c.compaction and c.shape.compaction
    assert c.body["messages"][-1]["content"][-1] == {"type": "text", "text": COMPACTION_PROMPT}
    assert c.body["tool_choice"] == {"type": "none"} and [t["name"] for t in c.body["tools"]] == ["f"]
    assert "thinking" not in c.body and all(i["type"] != "compaction_trigger" for i in c.input_items)
    answer = to_response({"content": [{"type": "text", "text": "Summary: X."}], "stop_reason": "end_turn"}, c.shape)
    [item] = answer.response["output"]
    assert item["type"] == "compaction" and item["id"].startswith("cmp_")
    assert unseal_summary(item["encrypted_content"], KEY) == "Summary: X."
    validate(answer.response, "Response")
    later = call({"input": [item, {"role": "user", "content": "continue"}]})
    assert "Summary: X." in later.body["messages"][0]["content"][0]["text"]


def test_the_compact_endpoint_is_the_same_request_with_a_trigger():
    raw = json.dumps({"model": "gpt-5", "instructions": "sys", "input": [
        {"role": "user", "content": "long talk"}, {"role": "assistant", "content": "ok"}]}).encode()
    req = as_compaction(parse_responses_request(raw))
    c = to_vertex_body(req, MODEL, V1, key=KEY, created_at=5)
    assert c.compaction and not c.stream and c.body["messages"][-1]["content"][-1]["text"] == COMPACTION_PROMPT
    resource = compact_resource(to_response({"content": [{"type": "text", "text": "S"}], "stop_reason": "end_turn",
                                             "usage": {"input_tokens": 9, "output_tokens": 2}}, c.shape))
    validate(resource, "CompactResource")
    assert resource["object"] == "response.compaction" and resource["output"][0]["type"] == "compaction"
    assert resource["created_at"] == 5 and resource["usage"]["input_tokens"] == 9
    assert as_compaction(parse_responses_request(b'{"model": "m", "input": "hi"}')).input[0]["content"] == "hi"


def test_web_search_call_items_are_kept_for_the_record_only():
    c = call({"input": [{"role": "user", "content": "q"},
                        {"type": "web_search_call", "id": "ws_1", "status": "completed",
                         "action": {"type": "search", "query": "x"}},
                        {"role": "assistant", "content": "found"}]})
    assert turns(c) == [("user", ["text"]), ("assistant", ["text"])] and c.input_items[1]["id"] == "ws_1"


# --- what Codex sends (tests/data/codex_requests.json: bodies Codex 0.171 sent, recorded) --------------------

CODEX = json.loads((Path(__file__).parent / "data" / "codex_requests.json").read_text())
PASSTHROUGH = "internal_chat_message_metadata_passthrough"
EXEC_SCRIPT = 'const r = await tools.exec_command({cmd: "echo hi"});\ntext(r.output);'


def codex_call(name, **kw):
    body = copy.deepcopy(CODEX[name])
    return call({k: v for k, v in body.items() if k != "model"}, **kw)


def test_codex_code_mode_additional_tools_are_claude_tools_and_add_no_turn():
    """Codex's default model lists its tools in an `additional_tools` item (no `tools` field): the namespaces'
    function and custom tools become Claude tools, flattened; the item changes no turn and is stored."""
    body = CODEX["code_mode_tool_loop"]
    assert "tools" not in body and body["input"][0]["type"] == "additional_tools"
    c = codex_call("code_mode_tool_loop")
    names = [t["name"] for t in c.body["tools"]]
    assert names[:3] == ["functions__exec", "functions__wait", "functions__request_user_input"]
    assert {"clock__sleep", "collaboration__spawn_agent"} <= set(names)
    exec_tool = c.body["tools"][0]
    assert exec_tool["input_schema"]["required"] == ["input"] and "lark grammar" in exec_tool["description"]
    assert c.shape.custom_tools == frozenset({"functions__exec"})
    assert c.shape.namespaces["functions__exec"] == "functions"
    # the leading developer messages are still the system prompt: the item before them adds nothing
    assert c.body["system"][0]["text"].startswith("You are Codex")
    assert "<developer>" not in json.dumps(c.body["messages"])
    assert turns(c) == [("user", ["text", "text"]), ("assistant", ["text", "tool_use"]), ("user", ["tool_result"])]
    use = c.body["messages"][1]["content"][1]
    assert (use["name"], set(use["input"])) == ("functions__exec", {"input"})
    # custom_tool_call_output's output is an array of input_text parts: text blocks of the result
    result = c.body["messages"][2]["content"][0]
    assert [b["type"] for b in result["content"]] == ["text", "text"]
    assert PASSTHROUGH not in json.dumps(c.body)  # unknown item fields are accepted, never sent to Claude
    stored = c.input_items[0]
    assert stored["type"] == "additional_tools" and stored["id"] == body["input"][0]["id"]
    assert stored["tools"] == body["input"][0]["tools"] and c.shape.echo["tools"] == []  # not in `tools`
    answer = to_response({"content": [{"type": "tool_use", "id": "toolu_X", "name": "functions__exec",
                                       "input": {"input": EXEC_SCRIPT}}], "stop_reason": "tool_use"}, c.shape)
    [item] = answer.response["output"]
    assert (item["type"], item["name"], item["namespace"], item["input"]) == (
        "custom_tool_call", "exec", "functions", EXEC_SCRIPT)
    validate(answer.response, "Response")


def test_additional_tools_anywhere_in_the_input_and_loaded_again():
    tools_item = {"type": "additional_tools", "role": "developer",
                  "tools": [{"type": "function", "name": "look", "description": "v1"}]}
    again = {**tools_item, "tools": [{"type": "function", "name": "look", "description": "v2"},
                                     {"type": "custom", "name": "patch"}]}
    c = call({"tools": [{"type": "function", "name": "f"}], "tool_choice": {"type": "function", "name": "look"},
              "input": [{"role": "user", "content": "a"}, tools_item, {"role": "user", "content": "b"}, again]})
    assert turns(c) == [("user", ["text", "text"])]  # the items split no turn
    assert [(t["name"], t.get("description")) for t in c.body["tools"]][:2] == [("f", None), ("look", "v2")]
    assert [t["name"] for t in c.body["tools"]] == ["f", "look", "patch"]  # the later definition replaces
    assert c.body["tool_choice"] == {"type": "tool", "name": "look"}
    assert [i["type"] for i in c.input_items] == ["message", "additional_tools", "message", "additional_tools"]
    assert c.input_items[1]["id"].startswith("at_")
    between = call({"input": [{"role": "user", "content": "x"}, fc("c1"), tools_item,
                              {"type": "configuration_update", "reasoning": {"effort": "low"}}, out("c1")]})
    assert turns(between) == [("user", ["text"]), ("assistant", ["tool_use"]), ("user", ["tool_result"])]
    assert between.body["messages"][2]["content"][0].get("is_error") is None  # still the call's own output
    chained = call({"input": "next"}, history=c.input_items)  # previous_response_id: the tools still load
    assert [t["name"] for t in chained.body["tools"]] == ["look", "patch"]
    dropped = call({"input": [{"type": "additional_tools", "tools": [{"type": "web_search"}]},
                              {"role": "user", "content": "x"}]}, drop_builtin_tools=True)
    assert "tools" not in dropped.body and dropped.dropped_tools == ["web_search"]


@pytest.mark.parametrize("item, param", [
    ({"type": "additional_tools", "tools": "exec"}, "input[0].tools"),
    ({"type": "additional_tools"}, "input[0].tools"),
    ({"type": "additional_tools", "tools": [{"type": "function"}]}, "input[0].tools[0].name"),
    ({"type": "additional_tools", "tools": [{"type": "warp_drive"}]}, "input[0].tools[0].type"),
    ({"type": "additional_tools", "tools": [{"type": "file_search"}]}, "input[0].tools[0].type"),
    ({"type": "additional_tools", "role": 7, "tools": []}, "input[0].role"),
    ({"type": "configuration_update", "reasoning": {"effort": "huge"}}, "input[0].reasoning.effort"),
    ({"type": "configuration_update", "reasoning": "low"}, "input[0].reasoning"),
    ({"type": "tool_search_call", "call_id": "c", "execution": "client", "arguments": "{}"}, "input[0].arguments"),
    ({"type": "tool_search_call", "execution": "client", "arguments": {}}, "input[0].call_id"),
    ({"type": "tool_search_call", "call_id": "c", "execution": "server", "arguments": {}}, "input[0].execution"),
    ({"type": "tool_search_output", "call_id": "c", "execution": "client", "tools": {}}, "input[0].tools"),
    ({"type": "tool_search_output", "call_id": "nope", "execution": "client", "tools": []}, "input[0].call_id"),
])
def test_bad_codex_items_are_a_400_naming_the_parameter(item, param):
    assert error({"input": [item, {"role": "user", "content": "x"}]}).param == param


def test_configuration_update_sets_the_reasoning_from_its_position_on():
    """Codex's shape: `{"type": "configuration_update", "reasoning": {"effort": "low"}}` last in the input. It
    overrides the request's `reasoning` (which Codex leaves alone to keep the cache) until another one does."""
    update = {"type": "configuration_update", "reasoning": {"effort": "low"}}
    c = call({"reasoning": {"effort": "high"}, "input": [{"role": "user", "content": "think"}, update]})
    assert c.body["thinking"] == {"type": "enabled", "budget_tokens": 2048}
    assert c.shape.echo["reasoning"]["effort"] == "low"
    stored = c.input_items[-1]  # kept under an id of its own: the store keeps every item by id
    assert re.fullmatch(r"cu_[0-9a-f]{50}", stored.pop("id")) and stored == update
    assert turns(c) == [("user", ["text"])]
    later = call({"input": [update, {"role": "user", "content": "x"},
                            {"type": "configuration_update", "reasoning": {"effort": "none"}, "verbosity": "high"}]})
    assert "thinking" not in later.body  # the latest one wins; fields modelmux does not map change nothing
    chained = call({"input": "x"}, history=c.input_items)  # in force in the stored conversation too
    assert chained.body["thinking"]["budget_tokens"] == 2048
    summary = call({"input": [{"role": "user", "content": "x"},
                              {"type": "configuration_update", "reasoning": {"summary": "auto"}}]})
    assert summary.shape.summary and "thinking" not in summary.body
    empty = call({"reasoning": {"effort": "medium"}, "input": [{"role": "user", "content": "x"},
                                                               {"type": "configuration_update"}]})
    assert empty.body["thinking"]["budget_tokens"] == 8192


def test_codex_item_fields_outside_the_spec_are_accepted_and_wrong_types_are_not():
    """Every Codex item carries internal_chat_message_metadata_passthrough; replayed assistant messages carry id,
    status, annotations, logprobs; calls carry namespace, outputs an array of input_text parts."""
    meta = {PASSTHROUGH: {"turn_id": "t1", "create_time": 1796236070.78}}
    items = [{"type": "message", "id": "msg_1", "role": "user", "content": [{"type": "input_text", "text": "go"}],
              **meta},
             {"type": "message", "status": "completed", "id": "msg_2", "role": "assistant", "phase": "partial_answer",
              "content": [{"type": "output_text", "text": "I will call exec.", "annotations": [], "logprobs": []}],
              **meta},
             {"type": "custom_tool_call", "id": "ctc_1", "status": "completed", "call_id": "call_1", "name": "exec",
              "namespace": "functions", "input": "text(1)", **meta},
             {"type": "custom_tool_call_output", "id": "ctco_1", "call_id": "call_1", "name": "exec",
              "output": [{"type": "input_text", "text": "Script completed"}], **meta},
             {"type": "function_call", "call_id": "call_2", "name": "wait", "namespace": "functions",
              "arguments": "{}", "encrypted_function_args": ["x"], **meta},
             {"type": "function_call_output", "call_id": "call_2", "output": "done", "namespace": "functions", **meta}]
    c = call({"input": items})
    assert turns(c) == [("user", ["text"]), ("assistant", ["text", "tool_use"]), ("user", ["tool_result"]),
                        ("assistant", ["tool_use"]), ("user", ["tool_result"])]
    assert [c.body["messages"][i]["content"][-1]["name"] for i in (1, 3)] == ["functions__exec", "functions__wait"]
    assert PASSTHROUGH not in json.dumps(c.body) and "encrypted_function_args" not in json.dumps(c.body)
    assert c.input_items[1]["phase"] == "partial_answer"
    for j, key, value in [(2, "namespace", 5), (1, "phase", 3), (3, "output", 5), (0, "id", 1),
                          (4, "arguments", {}), (1, "status", True)]:
        bad = copy.deepcopy(items)
        bad[j][key] = value
        assert error({"input": bad}).param == f"input[{j}].{key}"


def test_client_tool_search_is_a_tool_its_calls_and_outputs_round_trip():
    """Codex's classic tool set: `{"type": "tool_search", "execution": "client", …}`; the model's call reaches
    Codex as a tool_search_call it runs; its tool_search_output loads tools, callable from then on."""
    c = codex_call("classic_model", drop_builtin_tools=True)
    search = next(t for t in CODEX["classic_model"]["tools"] if t["type"] == "tool_search")
    assert c.body["tools"][-1] == {"name": "tool_search", "description": search["description"],
                                   "input_schema": search["parameters"]}
    assert c.dropped_tools == ["web_search"] and c.shape.tool_search == "tool_search"
    assert error(copy.deepcopy({k: v for k, v in CODEX["classic_model"].items() if k != "model"})).param == \
        f"tools[{len(CODEX['classic_model']['tools']) - 1}].type"  # web_search without the drop switch
    answer = to_response({"content": [{"type": "tool_use", "id": "toolu_S", "name": "tool_search",
                                       "input": {"query": "calendar", "limit": 2}}], "stop_reason": "tool_use"},
                         c.shape).response
    [item] = answer["output"]
    assert item["type"] == "tool_search_call" and item["id"].startswith("tsc_")
    assert (item["call_id"], item["execution"], item["arguments"]) == ("toolu_S", "client",
                                                                      {"query": "calendar", "limit": 2})
    validate(answer, "Response")
    loaded = {"type": "namespace", "name": "mcp__cal__", "description": "Calendar",
              "tools": [{"type": "function", "name": "create", "defer_loading": True,
                         "parameters": {"type": "object", "properties": {"title": {"type": "string"}}}}]}
    loop = call({"tools": [search], "input": [
        {"role": "user", "content": "book it"},
        {"type": "tool_search_call", "call_id": "toolu_S", "execution": "client", "status": "completed",
         "arguments": {"query": "calendar"}},
        {"type": "tool_search_output", "call_id": "toolu_S", "execution": "client", "status": "completed",
         "tools": [loaded]},
        fc("call_c", name="create", namespace="mcp__cal__", args='{"title": "x"}'), out("call_c")]})
    assert [t["name"] for t in loop.body["tools"]] == ["tool_search", "mcp__cal__create"]
    assert turns(loop) == [("user", ["text"]), ("assistant", ["tool_use"]), ("user", ["tool_result"]),
                           ("assistant", ["tool_use"]), ("user", ["tool_result"])]
    use, result = loop.body["messages"][1]["content"][0], loop.body["messages"][2]["content"][0]
    assert use == {"type": "tool_use", "id": "toolu_S", "name": "tool_search", "input": {"query": "calendar"}}
    assert result == {"type": "tool_result", "tool_use_id": "toolu_S",
                      "content": "Loaded 1 tool(s), callable now: mcp__cal__create."}
    assert [i["type"] for i in loop.input_items][1:3] == ["tool_search_call", "tool_search_output"]
    assert loop.input_items[1]["id"].startswith("tsc_") and loop.input_items[2]["id"].startswith("tso_")
    none = call({"tools": [search], "input": [
        {"role": "user", "content": "x"}, {"type": "tool_search_call", "call_id": "s", "execution": "client",
                                           "arguments": {}},
        {"type": "tool_search_output", "call_id": "s", "execution": "client", "tools": []}]})
    assert none.body["messages"][-1]["content"][0]["content"] == "No tools matched the search."
    hosted = error({"tools": [{"type": "tool_search"}], "input": "x"})
    assert hosted.param == "tools[0].type" and "built-in" in hosted.message
    assert call({"tools": [{"type": "tool_search"}], "input": "x"}, drop_builtin_tools=True).dropped_tools == [
        "tool_search"]


def test_codex_remote_compaction_requests():
    """The compaction request ends in compaction_trigger; the next one sends the compaction item last, after the
    user's message (Codex keeps its recent user messages beside the summary)."""
    c = codex_call("compaction_trigger")
    assert c.compaction and c.stream and c.body["tool_choice"] == {"type": "none"}
    assert c.body["messages"][-1]["content"][-1]["text"] == COMPACTION_PROMPT
    assert "functions__exec" in [t["name"] for t in c.body["tools"]]  # the tools stay: the cached prefix does
    body = copy.deepcopy(CODEX["after_compaction"])
    assert body["input"][-1]["type"] == "compaction"
    body["input"][-1]["encrypted_content"] = seal_summary("Ran the script; it printed hello.", KEY)
    later = call({k: v for k, v in body.items() if k != "model"})
    last = later.body["messages"][-1]["content"]
    assert [b["text"] for b in last][-2:] == [
        body["input"][-2]["content"][0]["text"],
        "<conversation_summary>\nRan the script; it printed hello.\n</conversation_summary>"]
    assert not later.compaction and later.input_items[-1]["type"] == "compaction"


def test_tools_loaded_again_are_replaced_in_place():
    """Each reload replaces a tool where it stands (no quadratic rebuild for a body full of repeats), and the order
    of the tools — the head of the cached prefix — stays as it was."""
    many = [{"type": "function", "name": f"t{i}"} for i in range(20000)]
    items = [{"type": "additional_tools", "tools": many} for _ in range(3)] + [{"role": "user", "content": "x"}]
    c = call({"input": items})
    assert [t["name"] for t in c.body["tools"]] == [f"t{i}" for i in range(20000)]
    assert error({"tools": [{"type": "tool_search", "execution": 5}], "input": "x"}).param == "tools[0].execution"


# --- items the store keeps by id; calls cut short -----------------------------------------------------------

def test_every_stored_input_item_has_an_id_the_store_accepts():
    """Codex sends `configuration_update` without an id; the store refuses an item without one (and a response
    whose items it refuses is lost)."""
    from modelmux.state.base import _check_items

    c = call({"tools": [{"type": "function", "name": "lookup"}, {"type": "tool_search", "execution": "client"}],
              "input": [{"role": "user", "content": "q"}, {"type": "configuration_update",
                                                           "reasoning": {"effort": "low"}},
                        {"type": "web_search_call", "status": "completed", "action": {"type": "search"}},
                        {"type": "additional_tools", "tools": [{"type": "function", "name": "more"}]},
                        {"role": "assistant", "content": "Looking."}, fc("call_1"), out("call_1"),
                        {"type": "tool_search_call", "call_id": "ts_1", "execution": "client", "arguments": {}},
                        {"type": "tool_search_output", "call_id": "ts_1", "execution": "client", "tools": []},
                        {"type": "reasoning", "summary": []}]})
    assert len(c.input_items) == 10
    _check_items(c.input_items, "input_items")  # raises on an item without a usable id
    assert c.input_items[1]["id"].startswith("cu_") and c.input_items[2]["id"].startswith("ws_")


@pytest.mark.parametrize("ident, code, message", [
    (5, "invalid_type", "Invalid type for 'input[1].id': expected a string, but got an integer instead."),
    (["x"], "invalid_type", "Invalid type for 'input[1].id': expected a string, but got an array instead."),
    ("x" * 65, "string_above_max_length", "Invalid 'input[1].id': string too long. Expected a string with "
                                          "maximum length 64, but got a string with length 65 instead."),
])
def test_an_input_item_id_that_is_not_a_string_of_at_most_64_characters_is_openais_400(ident, code, message):
    for item in [{"type": "web_search_call", "status": "completed", "action": {"type": "search"}},
                 {"role": "user", "content": "more"}, {"type": "configuration_update"}]:
        err = error({"input": [{"role": "user", "content": "q"}, {**item, "id": ident}]})
        assert (err.param, err.code, err.message) == ("input[1].id", code, message)
        validate({"error": {"message": err.message, "type": err.type, "param": err.param, "code": err.code}},
                 "ErrorResponse")
    ok = call({"input": [{"role": "user", "content": "q", "id": "m" * 64}]})
    assert ok.input_items[0]["id"] == "m" * 64


def cut_short_turn(stop_reason="max_tokens"):
    """An answer that thought and then was cut off in the middle of a call's arguments (as the stream stores it)."""
    c = call({"reasoning": {"effort": "medium"}, "tools": [{"type": "function", "name": "lookup"}],
              "input": "What is X?"})
    stored = {"id": "resp_1", "output": [
        {"id": "rs_1", "type": "reasoning", "summary": [],
         "encrypted_content": seal_thinking([THOUGHT], KEY)},
        {"id": "fc_1", "type": "function_call", "status": "incomplete", "call_id": "toolu_cut", "name": "lookup",
         "arguments": '{"q": "X'}]}
    return conversation_items([(c.input_items, stored)])


def test_a_stored_call_cut_short_is_left_out_of_the_replayed_conversation_with_its_output():
    history = cut_short_turn()
    c = call({"reasoning": {"effort": "medium"}, "tools": [{"type": "function", "name": "lookup"}],
              "previous_response_id": "resp_1", "input": [{"role": "user", "content": "Go on."}]}, history=history)
    assert turns(c) == [("user", ["text", "text"])]  # the bare thinking goes with the call
    # the client answered the call anyway (it saw it): the output is kept in the store, not sent to Claude
    c = call({"tools": [{"type": "function", "name": "lookup"}], "previous_response_id": "resp_1",
              "input": [out("toolu_cut", "bad arguments"), {"role": "user", "content": "Go on."}]},
             history=history)
    assert turns(c) == [("user", ["text", "text"])] and c.input_items[0]["type"] == "function_call_output"
    # stored before calls were marked: a "completed" call whose arguments are not an object is cut short too
    history[-1] = {**history[-1], "status": "completed"}
    c = call({"previous_response_id": "resp_1", "input": "Go on."}, history=history)
    assert turns(c) == [("user", ["text", "text"])]


def test_a_call_with_bad_arguments_sent_by_the_client_is_still_a_400():
    err = error({"input": [{"role": "user", "content": "q"}, fc("call_1", args='{"q": "X'), out("call_1")]})
    assert err.param == "input[1].arguments" and "JSON object" in err.message


def test_sealed_thinking_without_a_signature_is_not_sent_back():
    """Sealed by a failed stream before its signature came (older versions did): Vertex rejects it."""
    blob = seal_thinking([REDACTED, {"type": "thinking", "thinking": "half", "signature": ""}], KEY)
    c = call({"input": [{"role": "user", "content": "q"},
                        {"type": "reasoning", "summary": [], "encrypted_content": blob},
                        {"role": "assistant", "content": "A."}, {"role": "user", "content": "B"}]})
    assert c.body["messages"][1]["content"] == [REDACTED, {"type": "text", "text": "A."}]


def test_a_history_of_tool_calls_without_tools_declares_them_and_calls_none():
    """A continuation that sends no tools (previous_response_id after a tool loop, a summary): Anthropic refuses
    tool blocks in a request without tools, OpenAI does not."""
    c = call({"input": [{"role": "user", "content": "q"}, fc("call_1"), out("call_1"),
                        {"role": "user", "content": "sum it up"}]})
    assert c.body["tools"] == [{"name": "lookup", "description": "Called earlier in this conversation; not available now.",
                                "input_schema": {"type": "object"}}]
    assert c.body["tool_choice"] == {"type": "none"}
    assert "tools" not in call({"input": "plain"}).body
