// Real Responses API clients in Node, driven by tests/test_clients_responses_node.py: the Vercel AI SDK (`ai` +
// `@ai-sdk/openai`, whose `openai(id)` speaks /v1/responses) and the OpenAI Agents SDK (`@openai/agents`, whose
// default model is a Responses model).
//
// Job (JSON, as argv[2] or on stdin):
//   {"baseURL": "http://127.0.0.1:P/v1"}   base URL (reverse) mode, or
//   {"proxy": "http://127.0.0.1:P"}         HTTPS_PROXY mode through undici's ProxyAgent (Node 20's fetch ignores
//                                           HTTPS_PROXY); mitmproxy's CA comes from NODE_EXTRA_CA_CERTS,
//   plus "apiKey" and "steps": [{"op": ..., "params": {...}}, ...] with op one of
//     vercel_generate   generateText({model: openai(params.model), prompt, providerOptions})
//     vercel_followup   generateText, then generateText with that turn's response.messages + params.followup
//     vercel_stream     streamText(...): the fullStream parts' types, the raw Responses events, text, finish reason
//     vercel_tool       generateText with params.tool = {name, returns} (input {city}) and stopWhen
//                       stepCountIs(params.maxSteps ?? 3): each call answers `${returns} ${city}`
//     vercel_stream_tool  the same through streamText
//     agents_run        @openai/agents Agent (+ params.tool as above) run(agent, input)
//     agents_stream     the same with {stream: true}: event kinds, the raw Responses events, streamed text,
//                       final output
// Prints {"node", "versions", "results": [...]}: per step {"ok": ...} or {"error": {...}}.

import { readFileSync } from 'node:fs';
import { createOpenAI } from '@ai-sdk/openai';
import { generateText, streamText, tool as aiTool, stepCountIs } from 'ai';
import { Agent, run, tool as agentTool, setDefaultOpenAIClient, setOpenAIAPI, setTracingDisabled } from '@openai/agents';
import OpenAI from 'openai';
import { z } from 'zod';

// read from node_modules: not every package exports its package.json
const versionOf = (name) => JSON.parse(readFileSync(new URL(`./node_modules/${name}/package.json`, import.meta.url))).version;

async function proxiedFetch(job) {
  if (!job.proxy) return undefined;
  // undici's own fetch with its own dispatcher: Node's bundled fetch may not accept another undici's agent
  const { ProxyAgent, fetch } = await import('undici');
  const dispatcher = new ProxyAgent(job.proxy);
  return (url, init) => fetch(url, { ...init, dispatcher });
}

function describe(err) {
  return {
    name: err?.constructor?.name ?? typeof err,
    status: err?.status ?? err?.statusCode ?? null,
    message: String(err?.message ?? err),
    code: err?.code ?? err?.error?.code ?? null,
    body: err?.responseBody ?? null,
  };
}

function weatherInput() {
  return z.object({ city: z.string().describe('The city') });
}

const ops = {
  async vercel_generate(ctx, params) {
    const result = await generateText({ model: ctx.provider(params.model), prompt: params.prompt,
                                        providerOptions: params.providerOptions, maxRetries: 0 });
    return { text: result.text, finishReason: result.finishReason, usage: result.usage,
             response: { id: result.response.id, modelId: result.response.modelId, body: result.response.body },
             providerMetadata: result.providerMetadata };
  },

  async vercel_followup(ctx, params) {
    // a second turn that carries the first one's response messages back, as a chat app does: with store on
    // (the default) the SDK sends the earlier assistant items as item_reference
    const model = ctx.provider(params.model);
    const first = await generateText({ model, prompt: params.prompt, providerOptions: params.providerOptions,
                                       maxRetries: 0 });
    const messages = [{ role: 'user', content: params.prompt }, ...first.response.messages,
                      { role: 'user', content: params.followup }];
    const second = await generateText({ model, messages, providerOptions: params.providerOptions, maxRetries: 0 });
    return { first: first.text, second: second.text, secondId: second.response.id };
  },

  async vercel_stream(ctx, params) {
    const result = streamText({ model: ctx.provider(params.model), prompt: params.prompt,
                                providerOptions: params.providerOptions, maxRetries: 0, includeRawChunks: true,
                                onError: ({ error }) => { ctx.streamError = describe(error); } });
    const parts = [];
    const events = []; // the Responses events as the SDK parsed them off the wire
    for await (const part of result.fullStream) {
      if (part.type === 'raw') events.push(part.rawValue);
      else parts.push(part.type);
    }
    if (ctx.streamError) throw Object.assign(new Error(ctx.streamError.message), { detail: ctx.streamError });
    return { parts, events, text: await result.text, finishReason: await result.finishReason,
             usage: await result.usage, response: { id: (await result.response).id } };
  },

  async vercel_tool(ctx, params, stream = false) {
    const { name, returns } = params.tool;
    const tools = { [name]: aiTool({ description: 'The current weather in a city.', inputSchema: weatherInput(),
                                     execute: async ({ city }) => `${returns} ${city}` }) };
    const options = { model: ctx.provider(params.model), prompt: params.prompt, tools,
                      stopWhen: stepCountIs(params.maxSteps ?? 3), maxRetries: 0 };
    const result = stream ? streamText({ ...options, onError: ({ error }) => { ctx.streamError = describe(error); } })
      : await generateText(options);
    if (stream) {
      for await (const _ of result.fullStream) { /* drain */ }
      if (ctx.streamError) throw Object.assign(new Error(ctx.streamError.message), { detail: ctx.streamError });
    }
    const steps = await result.steps;
    return {
      text: await result.text, finishReason: await result.finishReason, steps: steps.length,
      toolCalls: steps.flatMap((s) => s.toolCalls.map((c) => ({ toolName: c.toolName, input: c.input }))),
      toolResults: steps.flatMap((s) => s.toolResults.map((r) => ({ toolName: r.toolName, output: r.output }))),
    };
  },

  async vercel_stream_tool(ctx, params) {
    return ops.vercel_tool(ctx, params, true);
  },

  async agents_run(ctx, params, stream = false) {
    const tools = [];
    if (params.tool) {
      const { name, returns } = params.tool;
      tools.push(agentTool({ name, description: 'The current weather in a city.', parameters: weatherInput(),
                             execute: async ({ city }) => `${returns} ${city}` }));
    }
    const agent = new Agent({ name: 'Assistant', instructions: params.instructions ?? 'You are helpful.',
                              ...(params.model ? { model: params.model } : {}), tools });
    if (!stream) {
      const result = await run(agent, params.input, { maxTurns: params.maxTurns ?? 4 });
      return { finalOutput: result.finalOutput, items: result.newItems.map((i) => i.type),
               responses: result.rawResponses.length, lastResponseId: result.lastResponseId ?? null };
    }
    const result = await run(agent, params.input, { stream: true, maxTurns: params.maxTurns ?? 4 });
    const kinds = {};
    const events = []; // the Responses events of every model call, as the SDK received them
    let text = '';
    for await (const event of result) {
      const kind = event.type === 'raw_model_stream_event' ? `raw:${event.data.type}` : event.type;
      kinds[kind] = (kinds[kind] ?? 0) + 1;
      if (event.type !== 'raw_model_stream_event') continue;
      if (event.data.type === 'output_text_delta') text += event.data.delta;
      if (event.data.type === 'model') events.push(event.data.event);
    }
    await result.completed;
    if (result.error) throw result.error;
    return { finalOutput: result.finalOutput, items: result.newItems.map((i) => i.type), kinds, text, events,
             responses: result.rawResponses.length };
  },

  async agents_stream(ctx, params) {
    return ops.agents_run(ctx, params, true);
  },
};

async function main() {
  const job = JSON.parse(process.argv[2] ?? readFileSync(0, 'utf8'));
  const fetch = await proxiedFetch(job);
  const ctx = {
    provider: createOpenAI({ apiKey: job.apiKey, ...(job.baseURL ? { baseURL: job.baseURL } : {}),
                             ...(fetch ? { fetch } : {}) }),
  };
  // the agents SDK's own client: no retries, a bounded timeout; no trace export (it would leave loopback)
  setDefaultOpenAIClient(new OpenAI({ apiKey: job.apiKey, maxRetries: 0, timeout: 20_000,
                                      ...(job.baseURL ? { baseURL: job.baseURL } : {}), ...(fetch ? { fetch } : {}) }));
  setOpenAIAPI('responses');
  setTracingDisabled(true);
  const results = [];
  for (const step of job.steps) {
    ctx.streamError = null;
    try {
      results.push({ ok: await ops[step.op](ctx, step.params) });
    } catch (err) {
      results.push({ error: err?.detail ?? describe(err) });
    }
  }
  const versions = Object.fromEntries(['ai', '@ai-sdk/openai', '@openai/agents', 'openai'].map((n) => [n, versionOf(n)]));
  process.stdout.write(JSON.stringify({ node: process.version, versions, results }));
}

main().catch((err) => {
  process.stderr.write(`responses.mjs: ${err?.stack ?? err}\n`);
  process.exit(1);
});
