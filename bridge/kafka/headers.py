"""A Kafka message's headers as the producer wrote them, names as bytes, whatever bytes those names hold.

Kafka allows any bytes in a header name, and Go or kcat producers write names that are not UTF-8. confluent-kafka
decodes each name with `PyUnicode_FromString` in `Message.headers()` (`c_headers_to_py` in its
`confluent_kafka.c`) and offers no way to read names as bytes. On a name that is not UTF-8 the call raises
`SystemError` (caused by the `UnicodeDecodeError`, which holds the name's bytes) after storing, in the message, a
list whose tuple for that header holds a NULL name: every later `headers()` returns that list, and indexing or
unpacking the tuple dereferences NULL and kills the process. Names are also C strings there: bytes after a NUL in a
name never reach Python.

`read_headers` is the one way the bridge reads headers: it takes what the library gives, salvages the rest
without touching a NULL (the tuple's own garbage-collector traversal skips it), and replaces the poisoned list in
the message with one that is safe to read.
"""

from __future__ import annotations

import gc
import operator
from typing import Any, Final, NamedTuple

Header = tuple[bytes, bytes | None]


class LostHeader(NamedTuple):
    """A header the Kafka client library read but could not give back whole: its name is unknown."""

    position: int
    value: bytes | None


class MessageHeaders(NamedTuple):
    """Every header of one message that could be read, in order, with names and values as the producer wrote them."""

    items: tuple[Header, ...]
    lost: tuple[LostHeader, ...] = ()
    """Headers whose name the client library lost; never a UTF-8 name, so never one a mapping names."""
    failure: str | None = None
    """Set when the headers could not be read at all: `items` and `lost` are then empty."""

    def last(self, name: bytes) -> bytes | None:
        """The value of the last header called `name` (None when there is none, or its value is null)."""
        found = None
        for key, value in self.items:
            if key == name:
                found = value
        return found


NO_HEADERS: Final = MessageHeaders(())

_headers: Final = operator.methodcaller("headers")
"""`message.headers()` through C code that checks the result. Python 3.11 specializes a hot `message.headers()`
call site into a direct C call that skips the check: the error the library leaves set would then surface at some
later, unrelated line, after the NULL name had already been touched."""


class _Salvaged(list[tuple[str, bytes | None]]):
    """What a message's `headers()` returns once `read_headers` salvaged it: the headers with UTF-8 names, as the
    library gives them, and the whole reading for `read_headers` itself."""

    def __init__(self, read: MessageHeaders) -> None:
        super().__init__((name.decode(), value) for name, value in read.items if _utf8(name))
        self.read = read


def read_headers(message: Any) -> MessageHeaders:
    """The headers of a consumed confluent-kafka `Message`; never raises, never crashes on a name."""
    try:
        found = _headers(message)
    except Exception as exc:
        return _salvage(message, exc)
    if type(found) is _Salvaged:
        return found.read
    if not found:
        return NO_HEADERS
    try:
        return MessageHeaders(tuple([(_name_bytes(name), value) for name, value in found]))
    except (TypeError, ValueError, UnicodeError) as exc:
        return MessageHeaders((), failure=f"the Kafka client library gave headers that cannot be read: {exc}")


def _name_bytes(name: str | bytes) -> bytes:
    return name if type(name) is bytes else name.encode("utf-8", "surrogateescape")  # type: ignore[union-attr]


def _salvage(message: Any, exc: Exception) -> MessageHeaders:
    # Only the first name that failed is known: the library goes on decoding after a failure with the error still
    # set, so each later failure becomes a SystemError chained to the first UnicodeDecodeError.
    names = [error.object for error in _chain(exc) if isinstance(error, UnicodeDecodeError)][-1:]
    try:
        poisoned = _headers(message)
    except Exception as again:
        return MessageHeaders((), failure=f"the Kafka client library cannot read them ({type(again).__name__})")
    if type(poisoned) is not list or not all(type(pair) is tuple and len(pair) == 2 for pair in poisoned):
        return MessageHeaders((), failure=f"the Kafka client library cannot read them ({type(exc).__name__})")
    items: list[Header] = []
    lost: list[LostHeader] = []
    for position, pair in enumerate(poisoned):
        # Never pair[0]: it may be NULL. The traversal hands over only the items that are set.
        parts = gc.get_referents(pair)
        texts = [part for part in parts if type(part) is str]
        values = [part for part in parts if type(part) is not str]
        value = values[0] if values else None
        if texts:
            items.append((_name_bytes(texts[0]), value))
        elif names and not _utf8(names[0]):
            items.append((names.pop(), value))
        else:
            lost.append(LostHeader(position, value))
    read = MessageHeaders(tuple(items), tuple(lost))
    message.set_headers(_Salvaged(read))
    return read


def _chain(exc: BaseException) -> list[BaseException]:
    """`exc` and every exception it was raised from, outermost first."""
    seen: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and current not in seen:
        seen.append(current)
        current = current.__cause__ or current.__context__
    return seen


def _utf8(name: bytes) -> bool:
    try:
        name.decode()
    except UnicodeDecodeError:
        return False
    return True
