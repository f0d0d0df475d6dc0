"""`modelmux` command line: run | validate | doctor | pairs | certs | emulator | demo."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
from pathlib import Path

from . import __version__

DEFAULT_CONFDIR = "~/.mitmproxy"  # mitmproxy's own default: the CA users already trust is reused


def _add_run(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("run", help="run the proxy (mitmproxy with the modelmux addon)",
                       description="Run modelmux: an HTTP(S) proxy that answers OpenAI chat completions with "
                                   "Claude on Vertex AI. Only the intercepted hosts are decrypted; all other "
                                   "HTTPS is tunnelled untouched.")
    p.add_argument("--config", "-c", required=True, help="configuration file (YAML)")
    p.add_argument("--listen-host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1)")
    p.add_argument("--listen-port", type=int, default=8080, help="port to listen on (default: 8080; 0 = any free)")
    p.add_argument("--confdir", default=DEFAULT_CONFDIR,
                   help=f"mitmproxy configuration dir holding the CA (default: {DEFAULT_CONFDIR})")
    p.add_argument("--mode", action="append", default=None, metavar="MODE",
                   help="mitmproxy proxy mode, repeatable: regular (default), reverse:https://api.openai.com, "
                        "regular@8080, reverse:https://api.openai.com@8081, …")
    p.add_argument("--web", action="store_true",
                   help="run with mitmweb's UI: every flow shows the app's OpenAI request, the Vertex exchange and "
                        "the translated answer (streamed bodies kept)")
    p.add_argument("--web-port", type=int, default=8081, help="port of the web UI with --web (default: 8081)")
    p.add_argument("--log-format", choices=("text", "json"), default="text",
                   help="one log line per exchange, as text or as JSON (default: text)")
    p.add_argument("--dump", metavar="FILE", help="append every translated exchange to FILE as a JSON line "
                                                  "(read it with `modelmux pairs FILE`)")
    p.add_argument("--set", action="append", default=[], metavar="OPTION=VALUE",
                   help="any other mitmproxy option, repeatable (e.g. --set termlog_verbosity=debug)")
    p.add_argument("--workers", type=int, default=1, metavar="N",
                   help="run N proxy processes sharing the listen port(s) (SO_REUSEPORT, Linux), one core each; "
                        "/metrics sums them (default: 1; docs/scaling.md)")
    p.add_argument("--worker", type=int, help=argparse.SUPPRESS)  # set by the --workers parent: this worker's index
    p.add_argument("--worker-fd", type=int, help=argparse.SUPPRESS)  # and its end of the socket pair to the parent


async def _run_proxy(args: argparse.Namespace) -> int:
    from mitmproxy import exceptions, options
    from mitmproxy.tools.dump import DumpMaster

    from .addons import Runtime, make_addons
    from .config import ConfigError, load_config

    try:
        load_config(args.config)
    except ConfigError as err:
        print(f"modelmux: {err}", file=sys.stderr)
        return 2
    modes = args.mode or ["regular"]
    # as mitmproxy's own entry point: the root logger passes everything, termlog_verbosity filters
    logging.getLogger().setLevel(logging.DEBUG)
    for name in ("tornado", "asyncio", "hpack", "quic"):
        logging.getLogger(name).setLevel(logging.WARNING)
    opts = options.Options()
    if args.web:
        from mitmproxy.tools.web.master import WebMaster

        master = WebMaster(opts, with_termlog=True)
    else:
        master = DumpMaster(opts, with_termlog=True, with_dumper=False)
    runtime = Runtime()
    if args.worker is not None:  # one of `--workers N`: listeners shared with the others, linked to the parent
        from .workers import WorkerLink, tcp_only_listeners

        tcp_only_listeners()
        runtime.worker = args.worker
        master.addons.add(WorkerLink(args.worker_fd, master.shutdown))
    master.addons.add(*make_addons(runtime))
    # all options in one update, after the addons are in (most options are declared by them: proxyserver,
    # next_layer, ours): modelmux's addons check the whole of it at once (e.g. a non-loopback listener together
    # with the `--set proxyauth=…` that makes it safe)
    ours = {
        "listen_host": args.listen_host,
        "listen_port": str(args.listen_port),
        "confdir": os.path.expanduser(args.confdir),
        "connection_strategy": "lazy",
        "modelmux_allow_hosts": "true",  # decrypt only the intercepted hosts, in step with the file
        "modelmux_config": str(Path(args.config).resolve()),
        "modelmux_dump": args.dump or "",
        "modelmux_log_format": args.log_format,
    }
    if args.web:  # the UI on loopback, no browser started (a server has none); the flows keep their bodies
        ours.update(web_port=str(args.web_port), web_open_browser="false", store_streamed_bodies="true")
    given = {item.partition("=")[0] for item in args.set}  # `--set` wins over what modelmux sets
    if "allow_hosts" in given:
        ours["modelmux_allow_hosts"] = "false"
    specs = [f"{k}={v}" for k, v in ours.items() if k not in given]
    specs += [f"mode={m}" for m in modes] if "mode" not in given else []
    try:
        opts.set(*specs, *args.set)
    except exceptions.OptionsError as err:
        message = str(err)
        print(message if message.startswith("modelmux: ") else f"modelmux: {message}", file=sys.stderr)
        return 2
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, master.shutdown)
    signal.signal(signal.SIGPIPE, signal.SIG_IGN)  # a client vanishing mid-write must not kill the proxy
    await master.run()
    return 0


def _cmd_run(args: argparse.Namespace) -> int:
    from .workers import ListenerLoop, listeners

    if args.workers != 1 and args.worker is None:
        return _run_workers(args)
    ports: set[int] = set()
    if args.worker is not None:  # one of `--workers N`: its listeners share their ports with the others'
        ports = {item.port for item in listeners(args.mode or ["regular"], args.listen_host, args.listen_port)}
    return asyncio.run(_run_proxy(args), loop_factory=lambda: ListenerLoop(ports))


def _run_workers(args: argparse.Namespace) -> int:
    """`run --workers N`: check what can be checked once, then start and supervise N `run --worker I` processes."""
    from . import workers
    from .addons import exposure
    from .config import ConfigError, load_config

    try:
        if args.workers < 1:
            raise workers.WorkersError(f"--workers must be at least 1, not {args.workers}")
        if not sys.platform.startswith("linux"):
            raise workers.WorkersError("--workers needs Linux (SO_REUSEPORT balancing connections); elsewhere run "
                                       "one process per port behind a load balancer (docs/scaling.md)")
        if args.web:
            raise workers.WorkersError("--web shows one process's flows and has one UI port: use it without --workers")
        config = load_config(args.config)
        given = dict(item.partition("=")[::2] for item in args.set)
        if reason := exposure.problem(config.security, args.mode or ["regular"], given.get("listen_host",
                                      args.listen_host), given.get("proxyauth")):
            raise workers.WorkersError(reason)  # before binding anything, even to check the ports
        items = workers.listeners(args.mode or ["regular"], args.listen_host, args.listen_port)
        workers.check_free(items)
    except (workers.WorkersError, ConfigError) as err:
        print(f"modelmux: {err}", file=sys.stderr)
        return 2
    workers.ensure_ca(args.confdir)
    return workers.supervise(args.workers, lambda index, fd: _worker_argv(args, index, fd), items)


def _worker_argv(args: argparse.Namespace, index: int, fd: int) -> list[str]:
    """A worker's command line: this `run`'s arguments as parsed (every flag of the run parser that is not at its
    default), without --workers, with the hidden --worker and --worker-fd."""
    sub = argparse.ArgumentParser().add_subparsers()
    _add_run(sub)
    argv = [sys.executable, "-m", "modelmux.cli", "run"]
    for action in sub.choices["run"]._actions:
        if not action.option_strings or action.dest in ("help", "workers", "worker", "worker_fd"):
            continue
        value = getattr(args, action.dest, action.default)
        if value == action.default:
            continue
        flag = max(action.option_strings, key=len)
        if action.nargs == 0:  # store_true / store_false
            argv.append(flag)
        elif isinstance(value, list):  # append
            argv += [x for item in value for x in (flag, str(item))]
        else:
            argv += [flag, str(value)]
    return argv + ["--worker", str(index), "--worker-fd", str(fd)]


def _cmd_validate(args: argparse.Namespace) -> int:
    from .config import ConfigError, load_config
    from .vertex import Router

    try:
        config = load_config(args.config_file)
    except ConfigError as err:
        print(f"invalid: {err}", file=sys.stderr)
        return 1
    router = Router(config)
    v = config.vertex
    print(f"valid: {args.config_file}")
    print(f"  vertex: project {v.project}, region {v.region}"
          + (f", base_url {v.base_url}" if v.base_url else "") + f", anthropic_version {v.anthropic_version}")
    source = ("static access token" if config.auth.access_token
              else config.auth.credentials_file or "Application Default Credentials")
    print(f"  auth: {source}")
    for name in config.models.map:
        route = router.route(name)
        print(f"  model {name} → {route.vertex_model}  ({router.url(route, stream=False)})")
    print(f"  other models → {config.models.default or '404 model_not_found'}")
    for name in config.embeddings.map:
        route = router.route_embedding(name)
        print(f"  embeddings {name} → {route.vertex_model}  ({router.embedding_url(route)})")
    print(f"  other embedding models → {config.embeddings.default or '404 model_not_found'}")
    print(f"  intercepted hosts: {', '.join(config.intercept.hosts)}")
    return 0


def _cmd_pairs(args: argparse.Namespace) -> int:
    from .pairs import show

    return show(args.path, status=args.status, model=args.model, full=args.full)


def _cmd_doctor(args: argparse.Namespace) -> int:
    from .doctor import report, run_checks

    checks = run_checks(args.config, live=args.live, confdir=Path(os.path.expanduser(args.confdir)),
                        host=args.listen_host, port=args.listen_port)
    print(report(checks, args.json))
    return 0 if all(c.ok for c in checks) else 1


def _cmd_certs(args: argparse.Namespace) -> int:
    from .certs import default_out, export, instructions

    ca, bundle = export(Path(os.path.expanduser(args.confdir)), Path(args.out) if args.out else default_out())
    print(f"wrote {ca} (the CA) and {bundle} (public roots + the CA)\n")
    print(instructions(ca, bundle, args.port))
    return 0


def _cmd_usage(args: argparse.Namespace) -> int:
    from .state import usage

    return usage.run(args.config, Path(os.path.expanduser(args.confdir)), args.since, args.key, args.json)


def _cmd_emulator(args: argparse.Namespace) -> int:
    from .emulator import cli as emulator_cli

    return emulator_cli.run(args)


def _cmd_demo(args: argparse.Namespace) -> int:
    from . import demo

    return demo.run(pace_ms=args.pace_ms)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="modelmux",
        description="Run unmodified OpenAI-API apps on Claude served by Google Vertex AI (a mitmproxy addon).")
    parser.add_argument("--version", action="version", version=f"modelmux {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_run(sub)
    p = sub.add_parser("validate", help="check a configuration file and show what it routes where")
    p.add_argument("config_file", help="configuration file (YAML)")
    p = sub.add_parser("pairs", help="show a dump of translated exchanges readably (`run --dump FILE`)")
    p.add_argument("path", help="the dump file (JSON lines)")
    p.add_argument("--status", type=int, help="only exchanges that ended with this status")
    p.add_argument("--model", help="only exchanges for this requested model")
    p.add_argument("--full", action="store_true", help="every event and chunk, not the first and last few")
    p = sub.add_parser("doctor", help="check the set-up and say how to fix each problem (exit 1 if any)")
    p.add_argument("--config", "-c", default="modelmux.yaml", help="configuration file (default: modelmux.yaml)")
    p.add_argument("--live", action="store_true", help="also make a 1-token call per mapped model")
    p.add_argument("--confdir", default=DEFAULT_CONFDIR, help=f"mitmproxy's confdir with the CA ({DEFAULT_CONFDIR})")
    p.add_argument("--listen-host", default="127.0.0.1")
    p.add_argument("--listen-port", type=int, default=8080)
    p.add_argument("--json", action="store_true", help="the checks as JSON")
    p = sub.add_parser("certs", help="export the CA apps must trust in HTTPS_PROXY mode, and how to trust it")
    p.add_argument("--out", help="where to write the files (default: the checkout's certs/ folder)")
    p.add_argument("--confdir", default=DEFAULT_CONFDIR, help=f"mitmproxy's confdir with the CA ({DEFAULT_CONFDIR})")
    p.add_argument("--port", type=int, default=8080, help="the proxy port to show in the examples")
    p = sub.add_parser("usage", help="spend and tokens per month, client key and model, from the state store")
    p.add_argument("--config", "-c", default="modelmux.yaml", help="configuration file (default: modelmux.yaml)")
    p.add_argument("--confdir", default=DEFAULT_CONFDIR, help=f"where the embedded store lives ({DEFAULT_CONFDIR})")
    p.add_argument("--since", metavar="DATE", help="count from this day on (YYYY-MM-DD, or YYYY-MM)")
    p.add_argument("--key", metavar="NAME", help="only this client key (its name in security.client_keys)")
    p.add_argument("--json", action="store_true", help="the rows as JSON")
    from .emulator import cli as emulator_cli  # the argument definitions only: the server loads on `emulator`

    p = sub.add_parser("emulator", help="run the local Vertex AI emulator (Claude, embeddings, OAuth token endpoint)",
                       description=emulator_cli.DESCRIPTION)
    emulator_cli.add_arguments(p)
    p = sub.add_parser("demo", help="run the emulator and the proxy, send requests with the openai SDK, show the "
                                    "translation (no credentials needed)")
    p.add_argument("--pace-ms", type=float, default=60.0, help="emulator delay between streamed events (ms)")
    return parser


COMMANDS = {"run": _cmd_run, "validate": _cmd_validate, "doctor": _cmd_doctor, "pairs": _cmd_pairs,
            "certs": _cmd_certs, "emulator": _cmd_emulator, "demo": _cmd_demo, "usage": _cmd_usage}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return COMMANDS[args.command](args)


if __name__ == "__main__":
    sys.exit(main())
