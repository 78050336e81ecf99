"""The mapping forms as the configuration writes them, parsed by pydantic and checked against the method.

A dot path, `{path, unit}`, `{path, lookup, default}`, `{pack: [...] | {...} | rest}`, a list meaning the first
one that is set, `{value}`, `{header}` and `{key: true}`; `check_mapping` refuses what the forms alone cannot.
"""

from __future__ import annotations

import contextlib
import re
import time
from typing import Annotated, Any, Final, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Discriminator,
    Field,
    PlainValidator,
    Tag,
)

from bridge.config.problems import FORM_TAG, ProblemsError, suggestion
from bridge.mapping.convert import UnconvertibleError, Unit, converter, to_text
from bridge.mapping.parameters import Parameter, method_parameters
from bridge.postapi.methods import METHODS, Column, Window

_PATH: Final = re.compile(r"[^.\s]+(\.[^.\s]+)*")


def _path_text(text: str) -> str:
    if not _PATH.fullmatch(text):
        raise ValueError(f"malformed path {text!r}: field names joined by dots, without spaces")
    return text


PathText = Annotated[str, AfterValidator(_path_text)]
"""Field names joined by dots: into nested records, map keys and whichever union branch the value has."""


def _scalar(value: Any) -> bool | int | float | str:
    if not isinstance(value, bool | int | float | str):
        raise ValueError("must be text, a number or true/false")
    return value


Scalar = Annotated[bool | int | float | str, PlainValidator(_scalar)]


def _lookup_text(key: Any) -> Any:
    """The configuration's YAML keeps keys as written; a mapping built in code may still use numbers or booleans,
    and a record's value is looked up as text."""
    return to_text(key) if isinstance(key, bool | int | float) else key


def _pack(value: Any) -> Literal["rest"] | list[str] | dict[str, str]:
    shape = "must be rest, a list of dot paths or a mapping of names to dot paths"
    if value == "rest":
        return "rest"
    if isinstance(value, list) and value and all(isinstance(path, str) for path in value):
        return [_path_text(path) for path in value]
    if isinstance(value, dict) and all(isinstance(path, str) for path in value.values()):
        return {str(name): _path_text(path) for name, path in value.items()}
    raise ValueError(shape)


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

    pack: Annotated[Literal["rest"] | list[str] | dict[str, str], PlainValidator(_pack)]


class ValueForm(Form):
    value: Scalar


class HeaderForm(Form):
    header: Annotated[str, Field(min_length=1)]
    """A Kafka header's name; its value is read as UTF-8 (the last header of that name)."""


class KeyForm(Form):
    key: Literal[True]
    """The Kafka message key, read as UTF-8."""


_FORM_KEYS: Final = (("path", "field"), ("pack", "pack"), ("value", "value"), ("header", "header"), ("key", "key"))
_FORMS: Final = {FieldForm: "field", PackForm: "pack", ValueForm: "value", HeaderForm: "header", KeyForm: "key"}
_SOURCE_ERROR: Final = "a dot path, a list of sources, or a mapping with path, pack, value, header or key"


def _form_of(raw: Any) -> str | None:
    if isinstance(raw, str):
        return FORM_TAG + "path"
    if isinstance(raw, list):
        return FORM_TAG + "first"
    if isinstance(raw, dict):
        return next((FORM_TAG + tag for key, tag in _FORM_KEYS if key in raw), None)
    if isinstance(raw, BaseModel) and type(raw) in _FORMS:
        return FORM_TAG + _FORMS[type(raw)]
    return None


def _one_form(raw: Any) -> Any:
    """A source naming two forms (`{pack: rest, path: x}`) is refused as such, not by blaming the one not chosen."""
    if isinstance(raw, dict):
        named = [key for key, _ in _FORM_KEYS if key in raw]
        if len(named) > 1:
            raise ValueError(f"names {' and '.join(named)}: a source is one form, {_SOURCE_ERROR}")
    return raw


_DISCRIMINATOR: Final = Discriminator(
    _form_of, custom_error_type="source", custom_error_message=f"expected {_SOURCE_ERROR}"
)
Single = Annotated[
    Annotated[PathText, Tag(FORM_TAG + "path")]
    | Annotated[FieldForm, Tag(FORM_TAG + "field")]
    | Annotated[PackForm, Tag(FORM_TAG + "pack")]
    | Annotated[ValueForm, Tag(FORM_TAG + "value")]
    | Annotated[HeaderForm, Tag(FORM_TAG + "header")]
    | Annotated[KeyForm, Tag(FORM_TAG + "key")],
    _DISCRIMINATOR,
    BeforeValidator(_one_form),
]
Source = Annotated[
    Annotated[PathText, Tag(FORM_TAG + "path")]
    | Annotated[FieldForm, Tag(FORM_TAG + "field")]
    | Annotated[PackForm, Tag(FORM_TAG + "pack")]
    | Annotated[ValueForm, Tag(FORM_TAG + "value")]
    | Annotated[HeaderForm, Tag(FORM_TAG + "header")]
    | Annotated[KeyForm, Tag(FORM_TAG + "key")]
    | Annotated[Annotated[list[Single], Field(min_length=1)], Tag(FORM_TAG + "first")],
    _DISCRIMINATOR,
    BeforeValidator(_one_form),
]
"""Where one parameter's value comes from."""
MappingSpec = dict[str, Source]


def check_mapping(method: str, mapping: MappingSpec) -> None:
    """Refuse what the forms alone cannot: parameters the method lacks, forms their parameter cannot take,
    constants the method's rules refuse. Raises `ProblemsError`, each at its parameter's key."""
    problems = form_problems(method, mapping)
    if problems:
        raise ProblemsError(problems)


def mapping_problems(method: str, mapping: MappingSpec) -> list[tuple[str, str]]:
    """Everything that makes a route's mapping dead-letter records by construction, each at its key: the form
    problems, and the method's required parameters (and identity) left unmapped."""
    problems = form_problems(method, mapping)
    declared = METHODS.get(method)  # type: ignore[call-overload]
    if declared is None:
        return problems
    for column in declared.columns:
        if column.required and not column.filled and column.name not in mapping:
            problems.append((column.name, f"not mapped; the {method} method requires it"))
    identities = ("profile_id", "appmetrica_device_id")
    if declared.identity == "one" and not any(name in mapping for name in identities):
        problems.append(("profile_id", f"neither profile_id nor appmetrica_device_id is mapped; {method} takes one"))
    return problems


def form_problems(method: str, mapping: MappingSpec) -> list[tuple[str, str]]:
    """The problems of each parameter's source, at its key; empty when every source fits its parameter."""
    parameters = method_parameters(method)
    if not parameters:
        return [("", f"mappings for method {method} are not supported yet")]
    columns = {column.name: column for column in METHODS[method].columns}  # type: ignore[index]
    problems = []
    for name, source in mapping.items():
        parameter = parameters.get(name)
        if parameter is None:
            hint = suggestion(name, list(parameters)) or f" ({', '.join(parameters)})"
            problems.append((name, f"not a parameter of method {method}{hint}"))
            continue
        singles = source if isinstance(source, list) else [source]
        for index, single in enumerate(singles):
            where = f"{name}.{index}" if isinstance(source, list) else name
            problems += _single_problems(where, parameter, columns[name], single)
    return problems


def _single_problems(where: str, parameter: Parameter, column: Column, single: Any) -> list[tuple[str, str]]:
    name = column.name
    if isinstance(single, FieldForm):
        problems = []
        if single.unit is not None and parameter.kind != "timestamp":
            problems.append((f"{where}.unit", f"{name} is not a timestamp"))
        if single.lookup is not None and single.unit is not None:
            problems.append((where, "give unit or lookup, not both"))
        if single.default is not None and single.lookup is None:
            problems.append((f"{where}.default", "only a lookup has a default"))
        for key, value in (single.lookup or {}).items():
            problems += _constant(parameter, column, value, f"{where}.lookup.{key}")
        if single.default is not None:
            problems += _constant(parameter, column, single.default, f"{where}.default")
        return problems
    if isinstance(single, PackForm) and parameter.kind != "json":
        return [(f"{where}.pack", f"{name} is not a JSON parameter, so it cannot take a packed object")]
    if isinstance(single, ValueForm):
        return _constant(parameter, column, single.value, f"{where}.value")
    return []


def _constant(parameter: Parameter, column: Column, value: Any, where: str) -> list[tuple[str, str]]:
    """A constant the parameter cannot hold, or one its method's own rule refuses, would dead-letter every
    record it reaches."""
    try:
        converted = converter(parameter, None)(value)
    except UnconvertibleError as exc:
        return [(where, str(exc))]
    cell = column.kind.cells([converted])[0]
    if not cell:
        if column.required:
            return [(where, f"an empty value is absent, and {column.name} is required")]
        return []
    # Only the value's own rule: a constant timestamp's age changes with the clock, not with the configuration.
    violation = column.kind.problem(column.name, cell, Window(time.time()))
    if violation is not None and violation.reason == "invalid":
        return [(where, violation.detail)]
    return []


def constant_applications(mapping: MappingSpec) -> list[tuple[str, int]]:
    """The applications a mapping's `application_id` names as constants (values, lookups, defaults), at their keys:
    each needs a Post API key."""
    source = mapping.get("application_id")
    singles = source if isinstance(source, list) else [source]
    found = []
    for index, single in enumerate(singles):
        where = f"application_id.{index}" if isinstance(source, list) else "application_id"
        constants: list[tuple[str, Any]] = []
        if isinstance(single, ValueForm):
            constants.append((f"{where}.value", single.value))
        elif isinstance(single, FieldForm):
            constants += [(f"{where}.lookup.{key}", value) for key, value in (single.lookup or {}).items()]
            if single.default is not None:
                constants.append((f"{where}.default", single.default))
        for key, value in constants:
            with contextlib.suppress(UnconvertibleError):
                found.append((key, int(converter(Parameter("integer"), None)(value))))
    return found
