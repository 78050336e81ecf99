"""The ``sandbox`` and ``registry`` subcommands of ``appmetrica-bridge``."""

from __future__ import annotations

import argparse
import asyncio
import math
import re
import signal
import ssl
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from pydantic import ValidationError

from bridge.ops import logs
from bridge.sandbox.config import Faults, Keys, explain
from bridge.sandbox.registry import SchemaRegistry
from bridge.sandbox.server import Sandbox, SandboxOptions
from bridge.sandbox.serving import LocalServer, server_tls

_Number = TypeVar("_Number", int, float)
_SETTING = re.compile(r"\b(?:post_api_key|application_id|fault_429|fault_5xx|fault_drop)\b")


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``sandbox`` (Post API) and ``registry`` (Schema Registry) subcommands."""
    sandbox = subparsers.add_parser(
        "sandbox",
        help="run a local AppMetrica Post API sandbox",
        description=(
            "A local server answering the Post API import endpoints of all five methods, as the Post API pages "
            "document them, with optional faults."
        ),
    )
    _add_listen_flags(sandbox, default_port=8089)
    sandbox.add_argument("--post-api-key", metavar="KEY", help="the accepted key (default: any non-empty key)")
    sandbox.add_argument("--application-id", metavar="ID", type=_positive_int, help="restrict KEY to this app")
    sandbox.add_argument(
        "--app",
        metavar="ID=KEY",
        action="append",
        type=_app_key,
        default=[],
        help="accept KEY for application ID; repeat for several applications",
    )
    sandbox.add_argument(
        "--fault-429", metavar="FRACTION", type=_fraction, default=0.0, help="fraction of requests answered 429"
    )
    sandbox.add_argument(
        "--retry-after", metavar="S", type=_non_negative_int, default=1, help="Retry-After of those 429s (default: 1)"
    )
    sandbox.add_argument(
        "--fault-5xx", metavar="FRACTION", type=_fraction, default=0.0, help="fraction answered 500, 502 or 503"
    )
    sandbox.add_argument(
        "--fault-drop", metavar="FRACTION", type=_fraction, default=0.0, help="fraction closed without an answer"
    )
    sandbox.add_argument(
        "--latency-ms", metavar="MS", type=_non_negative_float, default=0.0, help="delay before every answer"
    )
    sandbox.add_argument(
        "--max-rps", metavar="N", type=_positive_int, help="answer 429 with Retry-After above N requests a second"
    )
    sandbox.add_argument(
        "--refuse-event-name",
        metavar="NAME",
        action="append",
        default=[],
        help=(
            "answer 400 to batches holding this name: an event_name, or the label of another method's rows "
            "(revenue product_id, adrevenue ad_unit_name, ecommerce product_name, profiles profile_id); repeatable"
        ),
    )
    sandbox.add_argument(
        "--answer-charset",
        metavar="NAME",
        help="name this charset in every answer's Content-Type, even one no client can decode",
    )
    sandbox.add_argument(
        "--answer-encoding",
        metavar="NAME",
        help="claim this Content-Encoding (gzip, say) in every answer while sending it plain",
    )
    sandbox.add_argument(
        "--max-future-s",
        metavar="S",
        type=_non_negative_float,
        help="refuse events further than S seconds in the future (default: no limit)",
    )
    sandbox.add_argument(
        "--no-keep-events",
        dest="keep_events",
        action="store_false",
        help="keep counters only, not the accepted events (long benchmarks)",
    )
    sandbox.add_argument("--seed", metavar="N", type=int, help="seed the fault draws")
    sandbox.set_defaults(func=_run_sandbox)

    registry = subparsers.add_parser(
        "registry",
        help="run a local in-memory Confluent-compatible Schema Registry",
        description="An in-memory Schema Registry (Avro) for local runs and tests.",
    )
    _add_listen_flags(registry, default_port=8081)
    registry.add_argument(
        "--basic-auth",
        metavar="USER:PASSWORD",
        type=_user_password,
        help="demand these HTTP basic-auth credentials (401 otherwise)",
    )
    registry.set_defaults(func=_run_registry)


def _add_listen_flags(parser: argparse.ArgumentParser, default_port: int) -> None:
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default: %(default)s)")
    parser.add_argument(
        "--port", type=_port, default=default_port, help="port to listen on, 0 for any (default: %(default)s)"
    )
    parser.add_argument("--tls-cert", type=Path, metavar="PEM", help="serve HTTPS with this certificate chain")
    parser.add_argument("--tls-key", type=Path, metavar="PEM", help="the private key of --tls-cert")
    parser.add_argument("--tls-client-ca", type=Path, metavar="PEM", help="demand client certificates from this CA")


def _run_sandbox(args: argparse.Namespace) -> int:
    try:
        options = SandboxOptions(
            keys=Keys(post_api_key=args.post_api_key, application_id=args.application_id, apps=dict(args.app)),
            faults=Faults(
                fault_429=args.fault_429,
                retry_after=args.retry_after,
                fault_5xx=args.fault_5xx,
                fault_drop=args.fault_drop,
                latency_ms=args.latency_ms,
                max_rps=args.max_rps,
                refuse_event_names=frozenset(args.refuse_event_name),
                answer_charset=args.answer_charset,
                answer_encoding=args.answer_encoding,
            ),
            seed=args.seed,
            max_future_s=args.max_future_s,
            keep_events=args.keep_events,
        )
    except ValidationError as exc:
        # The flags each passed argparse; what is left are rules across flags.
        print(f"appmetrica-bridge sandbox: error: {_as_flags(explain(exc))}", file=sys.stderr)
        return 2
    return _serve(
        Sandbox(options),
        args,
        lambda url: [f"Post API sandbox listening on {url}", f"stats: {url}/sandbox/stats"],
    )


def _run_registry(args: argparse.Namespace) -> int:
    return _serve(SchemaRegistry(args.basic_auth), args, lambda url: [f"Schema Registry listening on {url}"])


def _serve(server: LocalServer, args: argparse.Namespace, banner: Callable[[str], list[str]]) -> int:
    """Run ``server`` until SIGINT or SIGTERM; 0 after a clean stop, 1 if it cannot listen, 2 for bad TLS files."""
    host, port = args.host, args.port
    tls = None
    if (args.tls_cert is None) != (args.tls_key is None) or (args.tls_client_ca and not args.tls_cert):
        print("appmetrica-bridge: error: give --tls-cert and --tls-key together", file=sys.stderr)
        return 2
    if args.tls_cert is not None:
        try:
            tls = server_tls(args.tls_cert, args.tls_key, args.tls_client_ca)
        except (OSError, ssl.SSLError) as exc:
            print(f"appmetrica-bridge: error: cannot use --tls-cert/--tls-key: {exc}", file=sys.stderr)
            return 2

    async def serve() -> int:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stop.set)
        try:
            url = await server.start(host, port, tls)
        except OSError as exc:
            print(f"appmetrica-bridge: cannot listen on {host}:{port}: {exc.strerror}", file=sys.stderr)
            return 1
        # The project's log format, so sandbox and bridge lines read alike.
        logs.configure()
        for line in banner(url):
            print(line, flush=True)
        try:
            await stop.wait()
        finally:
            await server.stop()
        return 0

    return asyncio.run(serve())


def _as_flags(message: str) -> str:
    """Setting names in ``message`` as the flags that set them: application_id -> --application-id."""
    return _SETTING.sub(lambda match: "--" + match[0].replace("_", "-"), message)


def _fraction(text: str) -> float:
    value = _number(text, float)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be a fraction between 0 and 1, got {text}")
    return value


def _non_negative_float(text: str) -> float:
    value = _number(text, float)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must not be negative, got {text}")
    return value


def _non_negative_int(text: str) -> int:
    value = _number(text, int)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must not be negative, got {text}")
    return value


def _positive_int(text: str) -> int:
    value = _number(text, int)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def _port(text: str) -> int:
    value = _number(text, int)
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"must be a port number 0-65535, got {text}")
    return value


def _user_password(text: str) -> tuple[str, str]:
    user, sep, password = text.partition(":")
    if not sep or not user or not password:
        # Not echoed: the text holds a password.
        raise argparse.ArgumentTypeError("must be USER:PASSWORD with both non-empty")
    return user, password


def _app_key(text: str) -> tuple[int, str]:
    app, sep, key = text.partition("=")
    if not sep or not key:
        # Not echoed: the text holds a key.
        raise argparse.ArgumentTypeError("must be ID=KEY with a non-empty KEY")
    return _positive_int(app), key


def _number(text: str, kind: type[_Number]) -> _Number:
    try:
        value = kind(text)
    except ValueError:
        expected = "an integer" if kind is int else "a number"
        raise argparse.ArgumentTypeError(f"must be {expected}, got {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a finite number, got {text!r}")
    return value
