"""The `appmetrica-bridge` command: run the bridge, check a configuration, or start the local sandboxes."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

import yaml

from bridge import __version__
from bridge.config.model import ConfigError, Settings, load_config
from bridge.errors import EXIT_CONFIG


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if not hasattr(args, "func"):
        parser.print_help()
        return EXIT_CONFIG
    code: int = args.func(args)
    return code


def _parser() -> argparse.ArgumentParser:
    import bridge.deadletters.cli as dead_letters_cli
    import bridge.preview as preview
    import bridge.sandbox.cli as sandbox_cli

    parser = argparse.ArgumentParser(
        prog="appmetrica-bridge",
        description=(
            "Moves analytics records (Avro or JSON, in a method's contract or mapped from your own shape) from Kafka "
            "into the AppMetrica Post API; commits offsets only after a 200 or a dead-letter ack."
        ),
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(title="commands", metavar="COMMAND")

    run = commands.add_parser("run", help="run the bridge", description="Run the bridge until SIGTERM or SIGINT.")
    run.add_argument("--config", type=Path, required=True, metavar="FILE", help="the bridge's YAML configuration")
    run.set_defaults(func=_run)

    check = commands.add_parser(
        "check-config",
        help="validate a configuration and print it with keys redacted",
        description="Validate FILE with the environment's overrides; print the effective configuration.",
    )
    check.add_argument("--config", type=Path, required=True, metavar="FILE")
    check.set_defaults(func=_check_config)

    preview.register(commands)
    dead_letters_cli.register(commands)
    sandbox_cli.register(commands)
    return parser


def _load(path: Path) -> Settings | None:
    try:
        return load_config(path)
    except ConfigError as exc:
        # One line per problem, each naming its key, so that one run shows them all.
        for problem in exc.problems:
            print(f"appmetrica-bridge: configuration error: {problem}", file=sys.stderr)
        return None


def _check_config(args: argparse.Namespace) -> int:
    settings = _load(args.config)
    if settings is None:
        return EXIT_CONFIG
    sys.stdout.write(yaml.safe_dump(settings.redacted(), sort_keys=False))
    return 0


def _run(args: argparse.Namespace) -> int:
    settings = _load(args.config)
    if settings is None:
        return EXIT_CONFIG
    from bridge.service import run_service

    return run_service(settings)
