"""Whether a writer schema can be read into the contract, asked once, when the schema is first fetched.

fastavro resolves a writer schema against the reader only while it reads a record, so a writer that cannot be
read into the contract (a required field renamed or removed, a type the contract's cannot hold) would show up
only as each of its records failing to decode. Apache Avro's compatibility checker answers from the two schemas
alone, by the Avro specification's resolution rules, as a registry's compatibility check does.
"""

from __future__ import annotations

import json
from typing import Any

from avro.compatibility import ReaderWriterCompatibilityChecker, SchemaCompatibilityType
from avro.schema import parse


def resolution_problem(writer: Any, reader: Any) -> str | None:
    """Why records written with `writer` cannot be read with `reader` (both schemas as JSON data), or None.

    None also when Apache Avro cannot parse a schema fastavro takes (its name checks are stricter): such records
    are judged one by one when they are read.
    """
    try:
        parsed_writer, parsed_reader = parse(json.dumps(writer)), parse(json.dumps(reader))
        checker = ReaderWriterCompatibilityChecker()  # type: ignore[no-untyped-call]
        result = checker.get_compatibility(parsed_reader, parsed_writer)
    except Exception:
        return None
    if result.compatibility is SchemaCompatibilityType.compatible:
        return None
    kinds = ", ".join(sorted({kind.value.replace("_", " ") for kind in result.incompatibilities}))
    return f"{kinds}: {', '.join(sorted(result.messages))} (at {', '.join(sorted(result.locations))})"
