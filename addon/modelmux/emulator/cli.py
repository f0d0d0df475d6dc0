"""The emulator's command line (`modelmux emulator`, `python -m modelmux.emulator`). add_arguments imports
nothing heavy, so that `modelmux` can build its parser without loading the server (tornado, cryptography)."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys

from .settings import DEFAULT_PROJECT, MAX_EMBEDDING_INSTANCES, Settings

DESCRIPTION = ("A faithful local fake of Vertex AI's Claude endpoints (rawPredict, streamRawPredict, count-tokens), "
               "its text-embedding models (predict) and Google's token endpoint, for testing apps offline.")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    defaults = Settings()
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=0, help="port to listen on (default 0: a free port)")
    parser.add_argument("--pace-ms", type=float, default=defaults.pace_ms,
                        help="delay between SSE events, milliseconds")
    parser.add_argument("--project", default=DEFAULT_PROJECT, help="project id of the generated service account")
    parser.add_argument("--service-account-out", metavar="FILE",
                        help="write a service-account key (trusted by this emulator) to FILE")
    parser.add_argument("--authorized-user-out", metavar="FILE",
                        help="write authorized-user credentials (accepted by this emulator) to FILE")
    parser.add_argument("--trust", metavar="FILE", action="append", default=[],
                        help="also trust this service-account key file (repeatable)")
    parser.add_argument("--accept-token", metavar="TOKEN", action="append", default=[],
                        help="accept this static access token on the model endpoints (repeatable)")
    parser.add_argument("--token-ttl", type=int, default=defaults.token_ttl,
                        help="lifetime of issued access tokens, seconds")
    parser.add_argument("--gemini-embedding-instances", type=int, default=defaults.gemini_embedding_instances,
                        metavar="N", help=f"instances gemini-embedding-001 takes per request (1 to "
                                          f"{MAX_EMBEDDING_INSTANCES}; default {defaults.gemini_embedding_instances})")


def run(args: argparse.Namespace) -> int:
    """Serve until SIGINT / SIGTERM. Prints one `listening on URL` line to stdout when ready."""
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return asyncio.run(_serve(args))


async def _serve(args: argparse.Namespace) -> int:
    from .server import start

    try:
        emulator = await start(args.host, args.port, pace_ms=args.pace_ms, token_ttl=args.token_ttl,
                               gemini_embedding_instances=args.gemini_embedding_instances, project=args.project,
                               service_account_out=args.service_account_out,
                               authorized_user_out=args.authorized_user_out, trust=args.trust,
                               accept_tokens=args.accept_token)
    except (OSError, ValueError) as err:
        print(f"modelmux emulator: {err}", file=sys.stderr)
        return 1
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stopping.set)
    print(f"modelmux emulator listening on {emulator.url}", flush=True)
    await stopping.wait()
    await emulator.stop()
    return 0
