"""The `dead-letters` subcommands: summary, show and replay of the topic `kafka.dead_letter_topic` names.

Everything printed goes through the log redactor with the configuration's secrets, since a dead letter's detail,
key or headers could hold what a producer or an API answer put there.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import get_args

from bridge.config.model import ConfigError, Settings, load_config
from bridge.deadletters.clients import KafkaUnreachableError, StopRequestedError
from bridge.deadletters.progress import ProgressError
from bridge.deadletters.reading import ReadError, consumer, read, stderr_progress, stretch
from bridge.deadletters.records import Filters, moment
from bridge.deadletters.replay import Replay, ReplayError
from bridge.deadletters.show import Judge, as_json, as_text
from bridge.deadletters.stopping import EXIT_INTERRUPTED, Stopping
from bridge.deadletters.summary import Summary
from bridge.errors import EXIT_CONFIG, EXIT_TOOL_FAILED
from bridge.kafka.dead_letter_producer import Reason
from bridge.ops.logs import Redactor

EXIT_FAILED = EXIT_TOOL_FAILED


Printer = Callable[[str], None]
REASONS = get_args(Reason)
_FAILURES = (ReadError, ReplayError, ProgressError, KafkaUnreachableError)


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "dead-letters",
        help="summarise, show or replay the dead-letter topic",
        description="Read kafka.dead_letter_topic of --config: summary, show, replay.",
    )
    commands = parser.add_subparsers(title="dead-letters commands", metavar="COMMAND", required=True)

    summary = commands.add_parser("summary", help="counts by reason, source partition, day and detail")
    _common(summary)
    summary.add_argument("--json", action="store_true", help="print JSON for scripts")
    summary.set_defaults(func=_summary)

    show = commands.add_parser("show", help="dead letters with their headers, detail and decoded record")
    _common(show)
    show.add_argument("--reason", choices=REASONS, help="only this reason")
    show.add_argument("--limit", metavar="N", type=_positive, default=10, help="at most N records (default 10)")
    show.add_argument("--json", action="store_true", help="one JSON object a line")
    show.set_defaults(func=_show)

    replay = commands.add_parser(
        "replay",
        help="send chosen dead letters back to their source topic",
        description="Without --send, only prints what would be sent. Progress is kept in a consumer group of its "
        "own (named from the filters), so running the same command again resumes and never sends a record twice.",
    )
    _common(replay)
    replay.add_argument("--reason", choices=REASONS, help="only this reason")
    replay.add_argument("--partition", metavar="P", type=_natural, help="only records read from source partition P")
    replay.add_argument("--from-offset", metavar="N", type=_natural, help="only source offsets at or above N")
    replay.add_argument("--to-offset", metavar="N", type=_natural, help="only source offsets at or below N")
    mode = replay.add_mutually_exclusive_group()
    mode.add_argument("--dry-run", dest="send", action="store_false", help="print what would be sent (default)")
    mode.add_argument("--send", dest="send", action="store_true", help="send them")
    replay.add_argument(
        "--force", action="store_true", help="also send records that were replayed before and dead-lettered again"
    )
    replay.set_defaults(func=_replay, send=False)


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=Path, required=True, metavar="FILE", help="the bridge's YAML configuration")
    parser.add_argument("--since", metavar="WHEN", type=_moment, help="dead-lettered at or after (ISO 8601, UTC)")
    parser.add_argument("--until", metavar="WHEN", type=_moment, help="dead-lettered before (ISO 8601, UTC)")


def _moment(text: str) -> dt.datetime:
    try:
        return moment(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _positive(text: str) -> int:
    value = _natural(text)
    if value == 0:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def _natural(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 0:
        raise argparse.ArgumentTypeError("must not be negative")
    return value


def _filters(args: argparse.Namespace) -> Filters:
    return Filters(
        reason=getattr(args, "reason", None),
        since=args.since,
        until=args.until,
        partition=getattr(args, "partition", None),
        from_offset=getattr(args, "from_offset", None),
        to_offset=getattr(args, "to_offset", None),
    )


def _settings(args: argparse.Namespace) -> tuple[Settings, str, Printer] | int:
    try:
        settings = load_config(args.config, keys_required=False)
    except ConfigError as exc:
        print(f"appmetrica-bridge: configuration error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    topic = settings.config.kafka.dead_letter_topic
    if not topic:
        print("appmetrica-bridge: configuration error: kafka.dead_letter_topic: not set", file=sys.stderr)
        return EXIT_CONFIG
    redactor = Redactor(settings.secrets())

    def say(text: str) -> None:
        print(redactor.redact(text), flush=True)

    return settings, topic, say


def _failed(exc: Exception) -> int:
    print(f"appmetrica-bridge dead-letters: {exc}", file=sys.stderr)
    return EXIT_FAILED


def _interrupted() -> int:
    print("appmetrica-bridge dead-letters: interrupted", file=sys.stderr)
    return EXIT_INTERRUPTED


def _summary(args: argparse.Namespace) -> int:
    loaded = _settings(args)
    if isinstance(loaded, int):
        return loaded
    settings, topic, say = loaded
    kafka = settings.config.kafka
    filters = _filters(args)
    stop = Stopping().install().requested
    client = consumer(kafka, f"{kafka.group_id}.dead-letters")
    try:
        span = stretch(client, topic, filters, bootstrap=kafka.bootstrap_servers, stop=stop)
        letters = read(client, span, stderr_progress(), stop)
        # The stretch starts and ends by timestamp; a producer's own timestamps need not be in order.
        summary = Summary.of(letter for letter in letters if filters.matches(letter))
    except _FAILURES as exc:
        return _failed(exc)
    except StopRequestedError:
        return _interrupted()
    finally:
        client.close()
    say(json.dumps(summary.as_json(topic), ensure_ascii=False, indent=2) if args.json else summary.as_text(topic))
    return 0


def _show(args: argparse.Namespace) -> int:
    loaded = _settings(args)
    if isinstance(loaded, int):
        return loaded
    settings, topic, say = loaded
    kafka = settings.config.kafka
    filters = _filters(args)
    stop = Stopping().install().requested
    client = consumer(kafka, f"{kafka.group_id}.dead-letters")
    chosen = []
    try:
        span = stretch(client, topic, filters, bootstrap=kafka.bootstrap_servers, stop=stop)
        for letter in read(client, span, stderr_progress(), stop):
            if filters.matches(letter):
                chosen.append(letter)
                if len(chosen) >= args.limit:
                    break
    except _FAILURES as exc:
        return _failed(exc)
    except StopRequestedError:
        return _interrupted()
    finally:
        client.close()
    judged = Judge(settings).judge_all(chosen)
    for letter, verdict in zip(chosen, judged, strict=True):
        say(json.dumps(as_json(letter, verdict), ensure_ascii=False) if args.json else as_text(letter, verdict))
    if not args.json:
        say(f"{len(chosen)} shown" + (f" (reason {filters.reason})" if filters.reason else ""))
    return 0


def _replay(args: argparse.Namespace) -> int:
    loaded = _settings(args)
    if isinstance(loaded, int):
        return loaded
    settings, topic, say = loaded
    # A signal ends the replay after the chunk it is in, committed, so the same command resumes after it.
    stopping = Stopping().install()
    replay = Replay(
        settings.config.kafka,
        topic,
        _filters(args),
        force=args.force,
        say=say,
        progress=stderr_progress(),
        stop=stopping.requested,
    )
    what = "replaying" if args.send else "dry run of"
    say(f"{what} {topic} ({_filters(args).describe()}); progress group {replay.group}")
    try:
        totals = replay.run(send=args.send)
    except _FAILURES as exc:
        return _failed(exc)
    except StopRequestedError:
        return _interrupted()
    verb = "sent" if args.send else "would send"
    skipped = {
        "skipped (replayed before; --force sends them)": totals.skipped_loop,
        "skipped (sent by an earlier replay)": totals.skipped_sent,
        "skipped (no source topic header)": totals.skipped_unknown_source,
        "skipped (held without its value; read it at its source offset)": totals.skipped_value_dropped,
        "not sent (cannot be sent, named above)": totals.unsendable,
    }
    report = {"read": totals.read, verb: totals.sent, **{name: n for name, n in skipped.items() if n}}
    say("; ".join(f"{name} {count:,}" for name, count in report.items()))
    for target, count in sorted(totals.by_topic.items()):
        say(f"  {verb} to {target}: {count:,}")
    if totals.interrupted:
        say("interrupted: what was read is committed; run the same command again to go on")
        return EXIT_FAILED
    if not args.send and totals.sent:
        say("nothing was sent: add --send to send these")
    return 0
