"""librdkafka's own log and repeated Kafka conditions as a few structlog JSON lines, however long they last.

Left alone, librdkafka writes raw text to stderr, and an unreachable cluster is a line per retry from it and a
warning per error callback from the bridge: twenty lines a second that bury everything else. Here a condition is
one line when it starts, a count every `every_s` while it recurs, and one line when it ends (said by the caller,
or after `quiet_s` without a recurrence).

Every Kafka client the bridge makes takes `client_conf()` into its configuration; librdkafka hands its log lines
to `LOGGER` while the client is polled.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import structlog
from confluent_kafka import KafkaError

log = structlog.get_logger("bridge.kafka")

EVERY_S = 30.0
"""How often a lasting condition says how often it recurred."""
QUIET_S = 60.0
"""A condition that did not recur for this long is over, unless its end is said before."""
KAFKA_ERROR = "kafka error"
LIBRDKAFKA = "librdkafka"

_LEVELS = {
    logging.CRITICAL: "critical",
    logging.ERROR: "error",
    logging.WARNING: "warning",
    logging.INFO: "info",
    logging.DEBUG: "debug",
}
# What varies between two lines of one condition: timings, counts, broker ids and ports.
_SUFFIX = re.compile(r"\s*\((?:after \d+ms[^)]*|\d+ identical error\(s\) suppressed)\)\s*$")
_NUMBERS = re.compile(r"\d+")


@dataclass
class _Condition:
    event: str
    level: str
    started: float
    last_seen: float
    reported: float
    total: int = 1
    unreported: int = 0
    fields: dict[str, Any] = field(default_factory=dict)


class Repeats:
    """Conditions by key: the first occurrence logged as it comes, the rest counted; safe from any thread."""

    def __init__(
        self, every_s: float = EVERY_S, quiet_s: float = QUIET_S, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._every_s = every_s
        self._quiet_s = quiet_s
        self._clock = clock
        self._lock = threading.Lock()
        self._active: dict[tuple[str, str], _Condition] = {}

    def seen(self, event: str, kind: str = "", level: str = "warning", **fields: Any) -> None:
        """`event` happened (one `kind` of it): logged if it is new, counted if it is not."""
        now = self._clock()
        line: tuple[str, dict[str, Any]] | None = None
        with self._lock:
            condition = self._active.get((event, kind))
            if condition is None:
                self._active[(event, kind)] = _Condition(event, level, now, now, now, fields=fields)
                line = (event, fields)
            else:
                condition.total += 1
                condition.unreported += 1
                condition.last_seen = now
                condition.fields = fields
                if now - condition.reported >= self._every_s:
                    line = ("condition persists", self._persists(condition, now))
        if line is not None:
            log.log(_level(level), line[0], **line[1])

    def ended(self, event: str, **fields: Any) -> None:
        """Every kind of `event` is over now (Kafka answers again, say): one line each that was lasting."""
        now = self._clock()
        with self._lock:
            over = [self._active.pop(key) for key in list(self._active) if key[0] == event]
        for condition in over:
            log.info("condition over", **self._over(condition, now), **fields)

    def tick(self) -> None:
        """Count what recurred since its last line, and end what has been quiet for `quiet_s`; call it often."""
        now = self._clock()
        lines: list[tuple[str, str, dict[str, Any]]] = []
        with self._lock:
            for key, condition in list(self._active.items()):
                if now - condition.last_seen >= self._quiet_s:
                    del self._active[key]
                    # A line that came once needs no end of its own: nothing was left out after it.
                    if condition.total > 1:
                        lines.append(("info", "condition over", self._over(condition, now)))
                elif condition.unreported and now - condition.reported >= self._every_s:
                    lines.append((condition.level, "condition persists", self._persists(condition, now)))
        for level, event, line in lines:
            log.log(_level(level), event, **line)

    def _persists(self, condition: _Condition, now: float) -> dict[str, Any]:
        line = {
            "condition": condition.event,
            "occurrences": condition.unreported,
            "over_s": round(now - condition.reported, 1),
            "since_s": round(now - condition.started, 1),
            **condition.fields,
        }
        condition.unreported = 0
        condition.reported = now
        return line

    def _over(self, condition: _Condition, now: float) -> dict[str, Any]:
        lasted = round(now - condition.started, 1)
        return {"condition": condition.event, "occurrences": condition.total, "lasted_s": lasted}


REPEATS = Repeats()


def kafka_error(error: KafkaError) -> None:
    """A client's error callback: one line when an error starts, a count while it recurs.

    For the consumer's `error_cb`; end it with `kafka_answers()` when Kafka answers again.
    """
    fatal = error.fatal()
    REPEATS.seen(KAFKA_ERROR, error.name(), "error" if fatal else "warning", error=error.str(), fatal=fatal)


def kafka_answers() -> None:
    """Kafka answered (records fetched, metadata returned): every Kafka error condition is over."""
    REPEATS.ended(KAFKA_ERROR)


class _ToStructlog(logging.Handler):
    """librdkafka's lines (confluent-kafka logs them as `"%s [%s] %s", facility, client, message`) into REPEATS."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            facility, client, message = (str(arg) for arg in record.args or ())
        except ValueError:
            facility, client, message = "", "", record.getMessage()
        kind = f"{facility} {_NUMBERS.sub('#', _SUFFIX.sub('', message))}"
        try:
            level = _LEVELS.get(record.levelno, "warning")
            REPEATS.seen(LIBRDKAFKA, kind, level, facility=facility, client=client, message=message)
        except Exception:
            # Called inside a Kafka client's poll: a failure to log must not end the thread that polls.
            self.handleError(record)


LOGGER = logging.getLogger("bridge.librdkafka")
LOGGER.addHandler(_ToStructlog())
LOGGER.propagate = False
LOGGER.setLevel(logging.WARNING)


def configure(level: str) -> None:
    """Pass librdkafka's lines at `level` and above (its info lines are too many below warning to be useful)."""
    LOGGER.setLevel(max(logging.getLevelNamesMapping()[level.upper()], logging.INFO))


def client_conf() -> dict[str, Any]:
    """What every Kafka client's configuration takes so that librdkafka logs through structlog."""
    return {"logger": LOGGER}


def _level(name: str) -> int:
    return logging.getLevelNamesMapping()[name.upper()]
