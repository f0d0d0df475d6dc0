"""The OpenAI Agents SDK for Python (openai-agents) as a real client: an Agent with a `@function_tool`, run by
`Runner.run` and `Runner.run_streamed` on the SDK's default model provider (the Responses API). Trace export is
off (it would post to api.openai.com/v1/traces/ingest, outside the test)."""

from __future__ import annotations

from dataclasses import dataclass, field

import openai
from agents import (Agent, RawResponsesStreamEvent, Runner, function_tool, set_default_openai_api,
                    set_default_openai_client, set_tracing_disabled)


@function_tool
def get_weather(city: str) -> str:
    """The current weather in a city."""
    return f"Sunny in {city}"


@dataclass
class AgentRun:
    final_output: str
    items: list[str]  # the run's new items' types, in order
    responses: int  # model calls made
    events: list[dict] = field(default_factory=list)  # streamed: the raw Responses events, as dicts


def use_client(client: openai.AsyncOpenAI) -> None:
    """Make the SDK's default provider use this client (the app's own OpenAI client, pointed at the target)."""
    set_default_openai_client(client, use_for_tracing=False)
    set_default_openai_api("responses")
    set_tracing_disabled(True)


def agent(model: str | None = None, tools: bool = True) -> Agent:
    return Agent(name="Assistant", instructions="You are helpful.", tools=[get_weather] if tools else [],
                 **({"model": model} if model else {}))


async def run(prompt: str, *, model: str | None = None, tools: bool = True, max_turns: int = 4) -> AgentRun:
    result = await Runner.run(agent(model, tools), prompt, max_turns=max_turns)
    return AgentRun(str(result.final_output), [i.type for i in result.new_items], len(result.raw_responses))


async def run_streamed(prompt: str, *, model: str | None = None, tools: bool = True, max_turns: int = 4) -> AgentRun:
    result = Runner.run_streamed(agent(model, tools), prompt, max_turns=max_turns)
    events = []
    async for event in result.stream_events():
        if isinstance(event, RawResponsesStreamEvent):
            events.append(event.data.to_dict(mode="json"))
    return AgentRun(str(result.final_output), [i.type for i in result.new_items], len(result.raw_responses), events)
