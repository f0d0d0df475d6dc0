"""A local fake of Vertex AI — Claude, its text-embedding models — and of Google's OAuth token endpoint, for tests
and benchmarks. An independent oracle: it never imports modelmux's own tables or rules.

It behaves like the real services where modelmux depends on them: Google-shaped auth and routing errors,
Anthropic-shaped body errors (the rules in the project's Vertex notes), Anthropic's SSE framing. Answers are
deterministic (model.py says what the fake model answers, triggers.py how a test steers it from the last user
turn: `[[status:429]]`, `[[call:NAME {…}]]`…). Fault rules posted to `/_emulator/faults` inject errors, delays,
stalls, broken streams and dropped connections by endpoint, location, model and streaming (faults.py).

Endpoints, under `/v1/projects/{P}/locations/{L}/publishers/`:
- `anthropic/models/{MODEL}:rawPredict`, `:streamRawPredict`: Claude (handlers.ClaudeHandler);
- `anthropic/models/count-tokens:rawPredict`: token counting, not on `global` (handlers.CountTokensHandler);
- `google/models/{MODEL}:predict`: text embeddings (embeddings.py);
and `/token` (OAuth), `/_emulator/requests` (the last 200 model requests), `/_emulator/settings`,
`/_emulator/faults`, `/_emulator/stats`, `/_emulator/health`.

Modules: errors (answer shapes), credentials (keys, JWT checks, access tokens), claude_models (the models and
their limits), messages + rules (Claude body rules), schema_values, triggers, model (the fake model), embeddings,
faults, settings, handlers (HTTP), server (`await start()`), cli (`python -m modelmux.emulator --port 0
--service-account-out sa.json`).

Importing this package imports nothing: `modelmux.emulator.cli.add_arguments` stays cheap for modelmux's CLI.
"""
