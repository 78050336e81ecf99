"""A route's `mapping`: where each Post API parameter comes from in the records a team already has.

The forms (a dot path, `{path, unit}`, `{path, lookup}`, `{pack: [...]}` / `{pack: rest}`, a list meaning the first
one that is set, `{value}`, `{header}`, `{key: true}`) are parsed once by pydantic inside the configuration and
checked against the method's parameters there. `CompiledMapping` turns them into one column function per
parameter: each runs over a whole chunk of records with list comprehensions and C-level type checks, and looks at
values one by one only where the column's types say a conversion is needed.

The output is what the method's Avro contract decodes to (strings, longs, timestamps as integer milliseconds,
None for absent), so the same row maker and the same rules judge mapped and contract records. Only conversions
are judged here; a value that cannot be converted makes its record a dead letter (`invalid`) whose detail names
the parameter and where its value came from. Written by hand: no library maps records column-wise onto a target
whose types are this project's own contract.
"""

from bridge.mapping.columns import Chunk, CompiledMapping, Headers, Mapped, Record, identity_mapping
from bridge.mapping.forms import MappingSpec, check_mapping

__all__ = [
    "Chunk",
    "CompiledMapping",
    "Headers",
    "Mapped",
    "MappingSpec",
    "Record",
    "check_mapping",
    "identity_mapping",
]
