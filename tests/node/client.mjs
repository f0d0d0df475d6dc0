// The official openai Node SDK as a real client of modelmux, driven by tests/test_clients_node.py.
//
// Job (JSON, as argv[2] or on stdin):
//   {"baseURL": "http://127.0.0.1:P/v1"}            reverse mode (or straight at a listener), or
//   {"proxy": "http://127.0.0.1:P"}                 HTTPS_PROXY mode through undici's ProxyAgent: Node 20's fetch
//                                                   ignores HTTPS_PROXY (NODE_USE_ENV_PROXY needs Node >= 22.21);
//                                                   mitmproxy's CA comes from NODE_EXTRA_CA_CERTS, or
//   {"proxy": "env"}                                HTTPS_PROXY mode through Node's own env-proxy support
//                                                   (NODE_USE_ENV_PROXY=1 set by the caller),
//   plus "apiKey" and "steps": [{"op": ..., "params": {...}}, ...] with op one of
//     create       — chat.completions.create (non-streamed): the completion as received
//     stream       — chat.completions.create({stream: true}), iterated: the chunks
//     stream_helper — chat.completions.stream(): the chunks, event counts and finalChatCompletion()
//     run_tools    — chat.completions.runTools() with params.tools as
//                    [{name, parameters, returns}]: each tool answers `${returns} ${args.<first property>}`
//     embeddings   — embeddings.create (the SDK asks for base64 unless params say otherwise, and decodes it):
//                    what the SDK returned, and the raw body as received
// Prints {"node", "sdk", "results": [...]}: per step {"ok": ...} or {"error": {...}, "partial": [chunks so far]}.

import { readFileSync } from 'node:fs';
import OpenAI from 'openai';
import { VERSION } from 'openai/version';

async function makeClient(job) {
  const options = { apiKey: job.apiKey, maxRetries: 0, timeout: 20_000 };
  if (job.baseURL) options.baseURL = job.baseURL;
  if (job.proxy && job.proxy !== 'env') {
    // undici's own fetch with its own dispatcher: Node's bundled fetch may not accept another undici's agent
    const { ProxyAgent, fetch } = await import('undici');
    options.fetch = fetch;
    options.fetchOptions = { dispatcher: new ProxyAgent(job.proxy) };
  }
  return new OpenAI(options);
}

function describe(err) {
  return {
    name: err?.constructor?.name ?? typeof err,
    status: err?.status ?? null,
    message: String(err?.message ?? err),
    code: err?.code ?? err?.error?.code ?? null,
    retryAfter: err?.headers?.get?.('retry-after') ?? null,
    retryAfterMs: err?.headers?.get?.('retry-after-ms') ?? null,
  };
}

const ops = {
  async create(client, params) {
    const { data, response } = await client.chat.completions.create(params).withResponse();
    return { ok: { completion: data, status: response.status, contentType: response.headers.get('content-type') } };
  },

  async stream(client, params, partial) {
    const stream = await client.chat.completions.create({ ...params, stream: true });
    for await (const chunk of stream) partial.push(chunk);
    return { ok: { chunks: partial } };
  },

  async stream_helper(client, params, partial) {
    const stream = client.chat.completions.stream(params);
    const events = {};
    for (const name of ['content.delta', 'tool_calls.function.arguments.delta', 'tool_calls.function.arguments.done']) {
      stream.on(name, () => { events[name] = (events[name] ?? 0) + 1; });
    }
    stream.on('chunk', (chunk) => partial.push(chunk));
    const final = await stream.finalChatCompletion();
    return { ok: { chunks: partial, events, final } };
  },

  async embeddings(client, params) {
    const { data, response } = await client.embeddings.create(params).withResponse();
    return { ok: { result: data, status: response.status } };
  },

  async run_tools(client, params) {
    const tools = params.tools.map((t) => ({
      type: 'function',
      function: {
        name: t.name,
        parameters: t.parameters,
        parse: JSON.parse,
        function: (args) => `${t.returns} ${Object.values(args)[0]}`,
      },
    }));
    const runner = client.chat.completions.runTools({ ...params, tools });
    const content = await runner.finalContent();
    return { ok: { content, messages: runner.messages, completions: runner.allChatCompletions().length } };
  },
};

async function main() {
  const job = JSON.parse(process.argv[2] ?? readFileSync(0, 'utf8'));
  const client = await makeClient(job);
  const results = [];
  for (const step of job.steps) {
    const partial = [];
    try {
      results.push(await ops[step.op](client, step.params, partial));
    } catch (err) {
      results.push({ error: describe(err), partial });
    }
  }
  process.stdout.write(JSON.stringify({ node: process.version, sdk: VERSION, results }));
}

main().catch((err) => {
  process.stderr.write(`client.mjs: ${err?.stack ?? err}\n`);
  process.exit(1);
});
