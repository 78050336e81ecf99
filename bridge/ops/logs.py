"""structlog set-up: JSON lines on stdout, with every known secret redacted from every value."""

from __future__ import annotations

import json
import logging
import re
import sys
from collections.abc import Iterable, Mapping, MutableMapping
from typing import Any

import structlog

REDACTED = "[REDACTED]"
MIN_SECRET_CHARS = 4
"""Shorter values are not redacted: a one-character "secret" would mangle every line (the configuration refuses
Post API keys this short)."""


class Redactor:
    """A structlog processor that replaces each secret wherever it appears in an event's values, in any spelling.

    Answers and exceptions quote secrets as they travelled, not as configured: a Post API or proxy that echoes
    the request URL percent-encodes the key (upper- or lower-case hex, partly or wholly, sometimes twice), a form
    plus-encodes spaces, JSON escapes non-ASCII characters and slashes. So each character of a secret matches in
    any of those spellings, mixed freely; written by hand because no library redacts by equivalence.
    """

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        self._secrets: list[str] = []
        self._pattern: re.Pattern[str] | None = None
        self.add(secrets)

    def add(self, secrets: Iterable[str]) -> None:
        # Longest first so a key that contains another is replaced whole.
        real = (s for s in secrets if len(s) >= MIN_SECRET_CHARS)
        self._secrets = sorted({*self._secrets, *real}, key=len, reverse=True)
        alternatives = ["".join(map(_spellings, secret)) for secret in self._secrets]
        self._pattern = re.compile("|".join(alternatives), re.IGNORECASE) if alternatives else None

    def redact(self, text: str) -> str:
        if self._pattern is None:
            return text
        return self._pattern.sub(REDACTED, text)

    def _scrub(self, value: Any) -> Any:
        # Lists and mappings stay JSON structures; only the text inside them changes.
        if isinstance(value, str):
            return self.redact(value)
        if isinstance(value, int | float | bool | type(None)):
            return value
        if isinstance(value, Mapping):
            return {self.redact(str(k)): self._scrub(v) for k, v in value.items()}
        if isinstance(value, list | tuple | set | frozenset):
            return [self._scrub(v) for v in value]
        return self.redact(str(value))

    def __call__(self, _: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
        if self._pattern is not None:
            for name, value in event.items():
                event[name] = self._scrub(value)
        return event


def _spellings(char: str) -> str:
    """A pattern for one character as written, percent-encoded (once or more), plus-encoded or JSON-escaped."""
    forms = {re.escape(char), "".join(f"%(?:25)*{byte:02x}" for byte in char.encode("utf-8"))}
    forms.add(re.escape(json.dumps(char)[1:-1]))
    if len(char.encode("utf-16-le")) == 2:
        forms.add(re.escape(f"\\u{ord(char):04x}"))
    if char == " ":
        forms.add(r"\+")
    if char == "+":
        forms.add(" ")  # a "+" sent unencoded reads back as a space
    if char == "/":
        forms.add(r"\\/")
    # Longest first: a "%" written as such must not stop the match before the "25" of its encoded spelling.
    return "(?:" + "|".join(sorted(forms, key=len, reverse=True)) + ")"


REDACTOR = Redactor()


class _RedactingFormatter(logging.Formatter):
    """The stdlib loggers' lines, traceback included, through the same redactor as structlog's."""

    def format(self, record: logging.LogRecord) -> str:
        return REDACTOR.redact(super().format(record))


def configure(level: str = "info") -> None:
    """Route structlog (and the stdlib loggers of libraries) to JSON lines on stdout."""
    numeric = logging.getLevelNamesMapping()[level.upper()]
    logging.basicConfig(level=max(numeric, logging.WARNING), stream=sys.stdout, format="%(message)s", force=True)
    for handler in logging.getLogger().handlers:
        # A library's own log line (asyncio's "exception was never retrieved", say) can quote a request URL too.
        handler.setFormatter(_RedactingFormatter("%(message)s"))
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            REDACTOR,
            structlog.processors.JSONRenderer(),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.PrintLoggerFactory(sys.stdout),
        cache_logger_on_first_use=False,
    )
