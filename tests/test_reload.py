"""Hot reload: editing the config during a paced stream — the stream completes, the next request uses the new
mapping; an invalid edit is refused with a log line and the previous configuration stays."""

from __future__ import annotations

import json
import threading
import time

import openai

from e2e import CLIENT_KEY, emulator_and_proxy


def wait_for_line(proc, text: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if text in proc.output():
            return
        time.sleep(0.05)
    raise AssertionError(f"{text!r} not logged:\n{proc.output()[-2000:]}")


def test_config_edit_applies_without_dropping_a_stream(tmp_path):
    with emulator_and_proxy(tmp_path) as (proxy, emu):
        api = openai.OpenAI(api_key=CLIENT_KEY, base_url=f"http://127.0.0.1:{proxy.reverse_port}/v1", max_retries=0,
                            timeout=30)
        config = tmp_path / "modelmux.yaml"
        emu.set_pace(150)
        words = " ".join(f"w{i}" for i in range(12))  # ~2.5 s at this pace
        result: dict[str, str] = {}

        def stream() -> None:
            chunks = api.chat.completions.create(model="gpt-4o", stream=True,
                                                 messages=[{"role": "user", "content": words}])
            result["text"] = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)

        worker = threading.Thread(target=stream)
        worker.start()
        time.sleep(0.5)  # the stream is under way
        config.write_text(config.read_text().replace("gpt-4o: claude-sonnet-4-5@20250929",
                                                     "gpt-4o: claude-opus-4-5@20251101"))
        wait_for_line(proxy.proc, "reloaded")
        worker.join(20)
        assert result["text"] == f"You said: {words}"  # the stream in flight was not dropped
        emu.set_pace(0)
        api.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "next"}])
        assert emu.last_request()["path"].endswith("claude-opus-4-5@20251101:rawPredict")

        config.write_text("vertex: {project: x, regoin: typo}\n")
        wait_for_line(proxy.proc, "keeping the previous configuration")
        assert "regoin: unknown key" in proxy.proc.output()
        api.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "still"}])
        assert emu.last_request()["path"].endswith("claude-opus-4-5@20251101:rawPredict")


def test_an_edit_whose_dump_cannot_be_opened_is_refused_and_the_watcher_keeps_running(tmp_path):
    """Issue 10, point 6: the dump path is a directory (it cannot be opened as a file, even by root)."""
    with emulator_and_proxy(tmp_path) as (proxy, emu):
        api = openai.OpenAI(api_key=CLIENT_KEY, base_url=f"http://127.0.0.1:{proxy.reverse_port}/v1", max_retries=0,
                            timeout=30)
        config = tmp_path / "modelmux.yaml"
        original = config.read_text()
        opus = original.replace("gpt-4o: claude-sonnet-4-5@20250929", "gpt-4o: claude-opus-4-5@20251101")
        config.write_text(opus + f"dump: {{path: {tmp_path}}}\n")
        wait_for_line(proxy.proc, "keeping the previous configuration")
        refusal = next(line for line in proxy.proc.output().splitlines() if "keeping the previous" in line)
        assert f"the dump file {tmp_path} (dump.path / --dump) cannot be opened: Is a directory" in refusal
        api.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "before"}])
        assert emu.last_request()["path"].endswith("claude-sonnet-4-5@20250929:rawPredict")  # the previous mapping

        dump = tmp_path / "pairs.jsonl"  # still watching: the next edit applies, its dump included
        config.write_text(opus + f"dump: {{path: {dump}}}\n")
        wait_for_line(proxy.proc, "reloaded")
        api.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "after"}])
        assert emu.last_request()["path"].endswith("claude-opus-4-5@20251101:rawPredict")
    assert [json.loads(line)["openai_request"]["messages"][0]["content"] for line in dump.read_text().splitlines()] \
        == ["after"]
