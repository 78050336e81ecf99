"""Producing records whose header names are not valid UTF-8, as Go or kcat producers may write them.

confluent-kafka's `Producer` takes header names as `str` only, so this goes to the librdkafka it bundles through
ctypes (`rd_kafka_produceva`), which takes a header name as any C string.
"""

from __future__ import annotations

import ctypes
from collections.abc import Sequence
from pathlib import Path

import confluent_kafka

_END, _TOPIC, _PARTITION, _VALUE, _KEY, _MSGFLAGS, _HEADER = 0, 1, 3, 4, 5, 7, 9
_F_COPY = 0x2
_PRODUCER = 0


class _Header(ctypes.Structure):
    _fields_ = [("name", ctypes.c_char_p), ("val", ctypes.c_void_p), ("size", ctypes.c_ssize_t)]


class _Memory(ctypes.Structure):
    _fields_ = [("ptr", ctypes.c_void_p), ("size", ctypes.c_size_t)]


class _Union(ctypes.Union):
    _fields_ = [
        ("cstr", ctypes.c_char_p),
        ("i32", ctypes.c_int32),
        ("i", ctypes.c_int),
        ("mem", _Memory),
        ("header", _Header),
        ("_pad", ctypes.c_char * 64),
    ]


class _Vu(ctypes.Structure):
    _fields_ = [("vtype", ctypes.c_int), ("u", _Union)]


def _library() -> ctypes.CDLL:
    libs = Path(confluent_kafka.__file__).parent.parent / "confluent_kafka.libs"
    (path,) = libs.glob("librdkafka*.so*")
    lib = ctypes.CDLL(str(path))
    lib.rd_kafka_conf_new.restype = ctypes.c_void_p
    lib.rd_kafka_conf_set.argtypes = [
        ctypes.c_void_p,
        ctypes.c_char_p,
        ctypes.c_char_p,
        ctypes.c_char_p,
        ctypes.c_size_t,
    ]
    lib.rd_kafka_new.restype = ctypes.c_void_p
    lib.rd_kafka_new.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_char_p, ctypes.c_size_t]
    lib.rd_kafka_produceva.restype = ctypes.c_void_p
    lib.rd_kafka_produceva.argtypes = [ctypes.c_void_p, ctypes.POINTER(_Vu), ctypes.c_size_t]
    lib.rd_kafka_error_string.restype = ctypes.c_char_p
    lib.rd_kafka_error_string.argtypes = [ctypes.c_void_p]
    lib.rd_kafka_flush.argtypes = [ctypes.c_void_p, ctypes.c_int]
    lib.rd_kafka_destroy.argtypes = [ctypes.c_void_p]
    return lib


def produce_raw(
    bootstrap: str,
    topic: str,
    records: Sequence[tuple[bytes | None, bytes | None, Sequence[tuple[bytes, bytes]]]],
    partition: int = 0,
) -> None:
    """Write (key, value, headers) records to one partition; header names are raw bytes (no NUL in them)."""
    lib = _library()
    error = ctypes.create_string_buffer(512)
    conf = lib.rd_kafka_conf_new()
    for prop, setting in ((b"bootstrap.servers", bootstrap.encode()), (b"acks", b"all"), (b"log_level", b"0")):
        assert lib.rd_kafka_conf_set(conf, prop, setting, error, len(error)) == 0, error.value
    producer = lib.rd_kafka_new(_PRODUCER, conf, error, len(error))
    assert producer, error.value
    try:
        for key, value, headers in records:
            fields: list[_Vu] = [_Vu(_TOPIC, _Union(cstr=topic.encode())), _Vu(_PARTITION, _Union(i32=partition))]
            fields.append(_Vu(_MSGFLAGS, _Union(i=_F_COPY)))
            for vtype, data in ((_VALUE, value), (_KEY, key)):
                if data:
                    fields.append(
                        _Vu(vtype, _Union(mem=_Memory(ctypes.cast(ctypes.c_char_p(data), ctypes.c_void_p), len(data))))
                    )
            for name, header_value in headers:
                buffer = ctypes.c_char_p(header_value)
                header = _Header(name, ctypes.cast(buffer, ctypes.c_void_p), len(header_value))
                fields.append(_Vu(_HEADER, _Union(header=header)))
            array = (_Vu * len(fields))(*fields)
            failed = lib.rd_kafka_produceva(producer, array, len(fields))
            assert not failed, lib.rd_kafka_error_string(failed)
        assert lib.rd_kafka_flush(producer, 30_000) == 0, "not every record was acknowledged"
    finally:
        lib.rd_kafka_destroy(producer)
