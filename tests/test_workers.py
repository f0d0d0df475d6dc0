"""`modelmux run --workers N` (issue 6): N processes on the same ports (SO_REUSEPORT), end to end with a real
emulator, a real `modelmux run --workers 2` and the openai SDK over fresh connections.

What is checked: both workers serve; /metrics on either worker is the sum over both; a tool loop with
thinking whose continuation lands on the worker that did not see the first turn keeps its thinking (the workers
share the embedded state store); the shared dump file stays one JSON line per exchange; a killed worker
is replaced and its counts stay in the sums; stopping (or killing) the parent leaves no worker behind; what
cannot be shared is refused. docs/scaling.md has the design."""

from __future__ import annotations

import json
import os
import shutil
import signal
import ssl
import subprocess
import time
from contextlib import closing
from pathlib import Path

import httpx
import openai
import pytest
from prometheus_client.parser import text_string_to_metric_families

import procs
from e2e import CLIENT_KEY, Emulator, assert_no_secrets, start_proxy, write_config

WEATHER = {"type": "function", "function": {"name": "get_weather", "parameters": {
    "type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}
MAX_TRIES = 60  # fresh connections tried to reach a given worker (the kernel picks by a hash: ½ each)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("workers")
    emu_proc, url, key = procs.emulator(tmp)
    dump = tmp / "pairs.jsonl"
    proxy = start_proxy("modelmux-run", write_config(tmp / "modelmux.yaml", url, key), tmp / "confdir",
                        "--workers", "2", "--dump", str(dump))
    yield proxy, Emulator(url), dump, key
    proxy.proc.stop()
    emu_proc.stop()
    assert_no_secrets(proxy.proc.output())


def base(proxy) -> str:
    return f"http://127.0.0.1:{proxy.reverse_port}"


def one_connection() -> httpx.Client:
    """A client that keeps exactly one connection: everything it sends goes to the same worker."""
    return httpx.Client(trust_env=False, timeout=20, limits=httpx.Limits(max_connections=1))


def health(proxy, client: httpx.Client | None = None) -> dict:
    if client is None:
        with one_connection() as c:
            return health(proxy, c)
    r = client.get(f"{base(proxy)}/health")
    assert r.status_code == 200
    return r.json()


def connection_to(proxy, want) -> tuple[httpx.Client, dict]:
    """A fresh one-connection client whose worker satisfies want(health); bounded in tries."""
    for _ in range(MAX_TRIES):
        c = one_connection()
        h = health(proxy, c)
        if want(h):
            return c, h
        c.close()
    raise AssertionError(f"no connection reached the wanted worker in {MAX_TRIES} tries")


def scrape(client: httpx.Client, proxy) -> dict[tuple[str, tuple], float]:
    text = client.get(f"{base(proxy)}/metrics").text
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def worker_pids(parent: int) -> set[int]:
    """The live children of `parent` (from /proc; zombies are not counted)."""
    out = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        if int(fields[1]) == parent and fields[0] != "Z":
            out.add(int(entry.name))
    return out


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def wait_until(check, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if result := check():
            return result
        time.sleep(0.1)
    raise AssertionError(f"{what} within {timeout} s")


def test_both_workers_serve_and_metrics_are_summed(setup, monkeypatch):
    proxy, emu, dump, _ = setup
    workers = {}
    for i in (1, 2):
        c, h = connection_to(proxy, lambda h, i=i: h["worker"] == i)
        c.close()
        workers[h["pid"]] = h["worker"]
    assert sorted(workers.values()) == [1, 2] and workers.keys() == worker_pids(proxy.proc.popen.pid)
    with one_connection() as c:
        before = scrape(c, proxy)
    emu.clear()
    lines_before = len(dump.read_text().splitlines()) if dump.exists() else 0

    # 16 chat completions, each from a new openai client (a new connection), both ways an app reaches modelmux
    for var in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY", "NO_PROXY", "no_proxy"):
        monkeypatch.delenv(var, raising=False)
    sent, words = 0, 0
    for i in range(16):
        if i % 2:
            http_client = httpx.Client(proxy=f"http://127.0.0.1:{proxy.regular_port}", verify=ssl.create_default_context(cafile=str(proxy.ca)),
                                       trust_env=False)
            client = openai.OpenAI(api_key=CLIENT_KEY, max_retries=0, timeout=20, http_client=http_client)
        else:
            client = openai.OpenAI(api_key=CLIENT_KEY, base_url=f"{base(proxy)}/v1", max_retries=0, timeout=20)
        with client:
            text = f"request number {i}"
            if i % 4 < 2:
                answer = client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": text}])
                assert answer.choices[0].message.content == f"You said: {text}"
            else:
                chunks = list(client.chat.completions.create(model="gpt-4o", stream=True,
                                                             messages=[{"role": "user", "content": text}]))
                assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == f"You said: {text}"
        sent += 1
        words += len(f"You said: {text}".split())
    assert len(emu.requests()) == sent

    # each worker fetched its own Google token: both made Vertex calls (a worker only fetches one to call)
    served = {}
    for pid in workers:
        c, h = connection_to(proxy, lambda h, pid=pid: h["pid"] == pid)
        c.close()
        served[pid] = h["token_refreshes"]
    assert all(n >= 1 for n in served.values()), served

    # /metrics on either worker (known by /health on the same connection) reports the sum over both
    def delta(after, name, **labels):
        key = (name, tuple(sorted(labels.items())))
        return after.get(key, 0) - before.get(key, 0)

    for pid in workers:
        c, _ = connection_to(proxy, lambda h, pid=pid: h["pid"] == pid)
        with closing(c):
            after = scrape(c, proxy)
            assert health(proxy, c)["pid"] == pid  # the same connection, the same worker
        total = sum(delta(after, "modelmux_requests_total", api="chat", model="gpt-4o", status="200", mode=mode, stream=stream)
                    for mode in ("proxy", "reverse") for stream in ("true", "false"))
        assert total == sent, (pid, total)
        assert delta(after, "modelmux_tokens_total", model="gpt-4o", kind="output") == words
        assert delta(after, "modelmux_request_duration_seconds_count", model="gpt-4o", stream="true") == sent // 2
        assert after[("modelmux_active_streams", ())] == 0
        assert after[("modelmux_token_refreshes_total", ())] >= 2  # one per worker at least
        assert ("modelmux_upstream_retries_total", ()) in after

    # the dump file both workers append to: one whole JSON line per exchange
    def dumped():
        lines = dump.read_text().splitlines()[lines_before:]
        return lines if len(lines) >= sent else None
    lines = wait_until(dumped, 10, "every exchange dumped")
    assert len(lines) == sent and all(json.loads(line)["status"] == 200 for line in lines)


def test_tool_loop_continued_on_the_other_worker(setup):
    """The thinking of a tool loop is kept in the process and in the state store the workers share (the embedded
    SQLite file in the confdir): the continuation that reaches the worker which did not see the first turn sends
    the same thinking block back, and thinking stays on."""
    proxy, emu, _, _ = setup
    first_conn, first_worker = connection_to(proxy, lambda h: True)
    other_conn, other_worker = connection_to(proxy, lambda h: h["pid"] != first_worker["pid"])
    kw = {"model": "gpt-4o", "tools": [WEATHER], "reasoning_effort": "low"}
    messages = [{"role": "user", "content": "What is the weather? Use get_weather."}]
    with closing(first_conn), closing(other_conn):
        first = openai.OpenAI(api_key=CLIENT_KEY, base_url=f"{base(proxy)}/v1", max_retries=0, http_client=first_conn)
        other = openai.OpenAI(api_key=CLIENT_KEY, base_url=f"{base(proxy)}/v1", max_retries=0, http_client=other_conn)
        turn = first.chat.completions.create(messages=messages, **kw)
        msg = turn.choices[0].message
        assert turn.choices[0].finish_reason == "tool_calls"
        messages += [{"role": "assistant", "content": msg.content,
                      "tool_calls": [tc.model_dump(exclude_none=True) for tc in msg.tool_calls]},
                     {"role": "tool", "tool_call_id": msg.tool_calls[0].id, "content": "18 degrees"}]

        # on the worker that saw the first turn: its thinking goes back, thinking stays on
        same = first.chat.completions.create(messages=messages, **kw)
        assert same.choices[0].message.content == "Tool results: 18 degrees"
        sent = emu.last_request()["body"]
        assert sent["messages"][1]["content"][0]["type"] == "thinking" and sent["thinking"]["type"] == "enabled"

        kept = sent["messages"][1]["content"][0]

        # on the other worker: the same block, from the shared store
        elsewhere = other.chat.completions.create(messages=messages, **kw)
        assert elsewhere.choices[0].message.content == "Tool results: 18 degrees"
        sent = emu.last_request()["body"]
        assert sent["messages"][1]["content"][0] == kept and sent["thinking"]["type"] == "enabled"
        assert health(proxy, first_conn)["pid"] == first_worker["pid"]
        assert health(proxy, other_conn)["pid"] == other_worker["pid"]


def test_a_killed_worker_is_replaced_and_its_counts_stay(setup):
    proxy, _, _, _ = setup
    parent = proxy.proc.popen.pid
    old = worker_pids(parent)
    c, victim = connection_to(proxy, lambda h: h["worker"] == 1)
    with closing(c):
        before = scrape(c, proxy)
    served_before = sum(v for (name, _), v in before.items() if name == "modelmux_requests_total")
    os.kill(victim["pid"], signal.SIGKILL)
    wait_until(lambda: not alive(victim["pid"]), 10, "the killed worker gone")
    new = wait_until(lambda: (worker_pids(parent) - old) or None, 15, "a new worker started")
    assert len(new) == 1 and victim["pid"] not in worker_pids(parent)
    replaced = wait_until(lambda: next((h for h in (health(proxy) for _ in range(4)) if h["pid"] in new), None),
                          20, "the new worker serving")
    assert replaced["worker"] == 1
    c, _ = connection_to(proxy, lambda h: h["pid"] in new)
    with closing(c):
        after = scrape(c, proxy)
    # counters of the dead worker stay in the sum (its files stay); its live gauge is gone
    assert sum(v for (name, _), v in after.items() if name == "modelmux_requests_total") == served_before
    assert after[("modelmux_active_streams", ())] == 0
    assert "restarted as pid" in proxy.proc.output()


def start_workers(tmp: Path, url: str, key: Path) -> procs.Proc:
    port = procs.free_port()
    proc = procs.Proc([str(procs.VENV_BIN / "modelmux"), "run", "--config", str(write_config(tmp / "c.yaml", url, key)),
                       "--confdir", str(tmp / "confdir"), "--listen-port", str(port), "--workers", "2"],
                      procs.PROXY_READY, cwd=procs.ROOT)
    assert proc.match.group(1) == str(port) and "2 workers" in proc.output()
    return proc


@pytest.mark.parametrize("how", ["SIGTERM", "SIGKILL"])
def test_stopping_the_parent_leaves_no_worker(setup, tmp_path, how):
    """SIGTERM: the parent stops its workers and exits 0. SIGKILL (the parent cannot act): each worker sees its
    link to the parent close and stops by itself."""
    _, emu, _, key = setup
    proc = start_workers(tmp_path, emu.url, key)
    try:
        children = worker_pids(proc.popen.pid)  # both listen: the ready line is printed once they do
        assert len(children) == 2
        environ = Path(f"/proc/{min(children)}/environ").read_bytes().split(b"\0")
        metrics_dir = next(v for k, _, v in (e.partition(b"=") for e in environ)
                           if k == b"PROMETHEUS_MULTIPROC_DIR").decode()
        assert Path(metrics_dir).is_dir()
        if how == "SIGTERM":
            assert proc.stop() == 0
            assert not Path(metrics_dir).exists()  # the parent removes the workers' metrics files
        else:
            proc.popen.send_signal(signal.SIGKILL)
            proc.popen.wait(5)
            shutil.rmtree(metrics_dir)  # what a killed parent cannot remove itself
        wait_until(lambda: not any(alive(p) for p in children), 15, "every worker gone")
    finally:
        proc.stop()
        for pid in worker_pids(proc.popen.pid):  # only if the test failed: never leave a worker behind
            os.kill(pid, signal.SIGKILL)


@pytest.mark.parametrize("extra, message", [
    (["--listen-port", "0"], "needs a fixed port"),
    (["--mode", "wireguard"], "cannot be shared"),
    (["--mode", "regular@{busy}"], "Address already in use"),
    (["--web"], "--web"),
])
def test_what_cannot_be_shared_is_refused(setup, tmp_path, extra, message):
    proxy = setup[0]
    argv = [str(procs.VENV_BIN / "modelmux"), "run", "--config", str(proxy.confdir.parent / "modelmux.yaml"),
            "--confdir", str(tmp_path / "confdir"), "--workers", "2",
            *(x.format(busy=proxy.regular_port) for x in extra)]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=30, cwd=procs.ROOT)
    assert done.returncode == 2 and message in done.stderr, done.stderr


def test_worker_command_line_repeats_every_run_flag_but_workers():
    from modelmux import cli

    args = cli.build_parser().parse_args(
        ["run", "-c", "m.yaml", "--listen-host", "0.0.0.0", "--mode", "regular@9000", "--mode",
         "reverse:https://api.openai.com@9001", "--dump", "d.jsonl", "--log-format", "json", "--set", "a=b",
         "--set", "c=d", "--workers", "3"])
    argv = cli._worker_argv(args, 2, 7)
    assert argv[1:4] == ["-m", "modelmux.cli", "run"] and "--workers" not in argv
    again = cli.build_parser().parse_args(argv[3:])
    assert again.worker == 2 and again.worker_fd == 7 and again.workers == 1
    for name in ("config", "listen_host", "listen_port", "confdir", "mode", "dump", "log_format", "set", "web"):
        assert getattr(again, name) == getattr(args, name), name


def test_upstream_counts_copied_into_counters_survive_a_provider_reset():
    """With several processes the relay's and the token provider's counts become real counters, advanced by
    their growth; a count that went down (a new token provider after a reload) restarts from zero."""
    from prometheus_client import CollectorRegistry

    from modelmux.metrics import _CopiedUpstreamCounters

    relay = {"retries": 0, "failovers": 0, "upstream_errors": 0}
    refreshes = [0]
    registry = CollectorRegistry()
    copied = _CopiedUpstreamCounters(registry, lambda: relay, lambda: refreshes[0])

    def value(name):
        return registry.get_sample_value(name + "_total")

    relay.update(retries=2, failovers=1)
    refreshes[0] = 3
    copied.copy()
    copied.copy()  # nothing new: nothing added
    assert (value("modelmux_upstream_retries"), value("modelmux_upstream_failovers"),
            value("modelmux_token_refreshes")) == (2, 1, 3)
    relay["retries"] = 5
    refreshes[0] = 1  # a new provider, which fetched one token
    copied.copy()
    assert value("modelmux_upstream_retries") == 5 and value("modelmux_token_refreshes") == 4
