"""The mapping forms as the configuration writes them, parsed by pydantic and checked against the method.

A dot path, `{path, unit}`, `{path, lookup, default}`, `{pack: [...] | {...} | rest}`, a list meaning the first
one that is set, `{value}`, `{header}` and `{key: true}`; `check_mapping` refuses what the forms alone cannot.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Final, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Discriminator,
    Field,
    StrictBool,
    StrictFloat,
    StrictInt,
    StrictStr,
    Tag,
)

from bridge.mapping.convert import UnconvertibleError, Unit, converter, to_text
from bridge.mapping.parameters import Parameter, method_parameters

_PATH: Final = re.compile(r"[^.\s]+(\.[^.\s]+)*")


def _path_text(text: str) -> str:
    if not _PATH.fullmatch(text):
        raise ValueError(f"malformed path {text!r}: field names joined by dots, without spaces")
    return text


PathText = Annotated[str, AfterValidator(_path_text)]
"""Field names joined by dots: into nested records, map keys and whichever union branch the value has."""
Scalar = StrictBool | StrictInt | StrictFloat | StrictStr


def _lookup_text(key: Any) -> Any:
    """YAML reads `{1: ..., true: ...}` keys as numbers and booleans; a record's value is looked up as text."""
    return to_text(key) if isinstance(key, bool | int | float) else key


class Form(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class FieldForm(Form):
    """`{path, unit}` or `{path, lookup, default}`."""

    path: PathText
    unit: Unit | None = None
    """How a timestamp is written; Avro timestamp types are read as they are whatever it says."""
    lookup: dict[Annotated[str, BeforeValidator(_lookup_text)], Scalar] | None = None
    """The parameter's value for each of the field's values; a value it does not list is a dead letter."""
    default: Scalar | None = None
    """With `lookup`: the value for a field value the lookup does not list, instead of a dead letter."""


class PackForm(Form):
    """A JSON object of fields: a list (named by their paths), a mapping of names to paths, or `rest`."""

    pack: Literal["rest"] | Annotated[list[PathText], Field(min_length=1)] | dict[str, PathText]


class ValueForm(Form):
    value: Scalar


class HeaderForm(Form):
    header: Annotated[str, Field(min_length=1)]
    """A Kafka header's name; its value is read as UTF-8 (the last header of that name)."""


class KeyForm(Form):
    key: Literal[True]
    """The Kafka message key, read as UTF-8."""


_FORM_KEYS: Final = (("path", "field"), ("pack", "pack"), ("value", "value"), ("header", "header"), ("key", "key"))


def _form_of(raw: Any) -> str | None:
    if isinstance(raw, str):
        return "path"
    if isinstance(raw, list):
        return "first"
    if isinstance(raw, dict):
        return next((tag for key, tag in _FORM_KEYS if key in raw), None)
    if isinstance(raw, BaseModel):
        return {FieldForm: "field", PackForm: "pack", ValueForm: "value", HeaderForm: "header", KeyForm: "key"}.get(
            type(raw)
        )
    return None


_SOURCE_ERROR: Final = "a dot path, a list of sources, or a mapping with path, pack, value, header or key"
Single = Annotated[
    Annotated[PathText, Tag("path")]
    | Annotated[FieldForm, Tag("field")]
    | Annotated[PackForm, Tag("pack")]
    | Annotated[ValueForm, Tag("value")]
    | Annotated[HeaderForm, Tag("header")]
    | Annotated[KeyForm, Tag("key")],
    Discriminator(_form_of, custom_error_type="source", custom_error_message=f"expected {_SOURCE_ERROR}"),
]
Source = Annotated[
    Annotated[PathText, Tag("path")]
    | Annotated[FieldForm, Tag("field")]
    | Annotated[PackForm, Tag("pack")]
    | Annotated[ValueForm, Tag("value")]
    | Annotated[HeaderForm, Tag("header")]
    | Annotated[KeyForm, Tag("key")]
    | Annotated[Annotated[list[Single], Field(min_length=1)], Tag("first")],
    Discriminator(_form_of, custom_error_type="source", custom_error_message=f"expected {_SOURCE_ERROR}"),
]
"""Where one parameter's value comes from."""
MappingSpec = dict[str, Source]


def check_mapping(method: str, mapping: MappingSpec) -> None:
    """Refuse what the forms alone cannot: parameters the method lacks, forms their parameter cannot take.

    Raises ValueError naming the parameter.
    """
    parameters = method_parameters(method)
    if not parameters:
        raise ValueError(f"mappings for method {method} are not supported yet")
    for name, source in mapping.items():
        parameter = parameters.get(name)
        if parameter is None:
            raise ValueError(f"{name}: not a parameter of method {method} ({', '.join(parameters)})")
        for single in source if isinstance(source, list) else [source]:
            _check_single(name, parameter, single)


def _check_single(name: str, parameter: Parameter, single: Any) -> None:
    if isinstance(single, FieldForm):
        if single.unit is not None and parameter.kind != "timestamp":
            raise ValueError(f"{name}.unit: {name} is not a timestamp")
        if single.lookup is not None and single.unit is not None:
            raise ValueError(f"{name}: give unit or lookup, not both")
        if single.default is not None and single.lookup is None:
            raise ValueError(f"{name}.default: only a lookup has a default")
        for key, value in (single.lookup or {}).items():
            _constant(name, parameter, value, f"{name}.lookup.{key}")
        if single.default is not None:
            _constant(name, parameter, single.default, f"{name}.default")
    elif isinstance(single, PackForm) and parameter.kind != "json":
        raise ValueError(f"{name}.pack: {name} is not a JSON parameter, so it cannot take a packed object")
    elif isinstance(single, ValueForm):
        _constant(name, parameter, single.value, f"{name}.value")


def _constant(name: str, parameter: Parameter, value: Any, where: str) -> Any:
    try:
        return converter(parameter, None)(value)
    except UnconvertibleError as exc:
        raise ValueError(f"{where}: {exc}") from None
