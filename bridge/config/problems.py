"""Configuration problems in the project's words: each with the key it is about, all of them at once.

pydantic's own messages name Python types and its internal union tags (`literal['rest']`, `list[function-after…]`);
an operator reading `check-config` wants the key, what it must be and, for a near-miss key, the one they meant.
"""

from __future__ import annotations

import difflib
import types
from collections.abc import Mapping, Sequence
from typing import Annotated, Any, Final, Union, get_args, get_origin

from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails

FORM_TAG: Final = "form:"
"""Tags of the discriminated unions whose member a loc names; never shown."""
_PYDANTIC_TAGS: Final = frozenset({"str", "int", "float", "bool", "list", "dict", "none"})


class ProblemsError(ValueError):
    """Several problems found by one check, each at a key path below the value checked ("" for the value itself)."""

    def __init__(self, problems: Sequence[tuple[str, str]]) -> None:
        super().__init__("; ".join(f"{where}: {what}" if where else what for where, what in problems))
        self.problems = tuple(problems)


Overrides = Mapping[tuple[str, ...], str]
"""The key path each `BRIDGE_*` environment override sets, and the variable's name."""


def describe(
    exc: ValidationError, root: Any, prefix: tuple[str, ...] = (), overrides: Overrides | None = None
) -> list[str]:
    """One line per problem of `exc`, raised by validating `root` (a type) at key path `prefix`."""
    merged: dict[tuple[str, ...], list[str]] = {}
    for error in exc.errors(include_url=False, include_input=False):
        for loc, message in _messages(error, root):
            merged.setdefault((*prefix, *loc), []).append(message)
    return [_line(loc, messages, overrides or {}) for loc, messages in merged.items()]


def suggestion(name: str, known: Sequence[str]) -> str:
    """` (did you mean x?)` for a near miss among `known`, else ""."""
    close = difflib.get_close_matches(name, known, n=1, cutoff=0.6)
    return f" (did you mean {close[0]}?)" if close else ""


def _messages(error: ErrorDetails, root: Any) -> list[tuple[tuple[str, ...], str]]:
    raw = error["loc"]
    loc = _shown(raw)
    cause = error.get("ctx", {}).get("error")
    if isinstance(cause, ProblemsError):
        return [((*loc, *(where.split(".") if where else ())), what) for where, what in cause.problems]
    if error["type"] == "extra_forbidden":
        known = _keys_at(root, raw[:-1])
        return [(loc, "unknown key" + suggestion(loc[-1], known))]
    return [(loc, _words(error))]


def _shown(loc: tuple[int | str, ...]) -> tuple[str, ...]:
    """The key path an operator wrote: union tags dropped."""
    shown = []
    for position, part in enumerate(loc):
        text = str(part)
        tag = text.startswith(FORM_TAG) or "[" in text or (position == len(loc) - 1 and text in _PYDANTIC_TAGS)
        if not tag:
            shown.append(text)
    return tuple(shown)


def _line(loc: tuple[str, ...], messages: list[str], overrides: Overrides) -> str:
    where = ".".join(loc) or "(top level)"
    unique = list(dict.fromkeys(messages))
    if len(unique) > 1 and all(m.startswith("must be ") for m in unique):
        # The members of a union each refused the value: say what any of them takes.
        kinds = [m.removeprefix("must be ").replace("true or false", "true/false") for m in unique]
        if "a number" in kinds and "a whole number" in kinds:
            kinds.remove("a whole number")
        message = "must be " + ", ".join(kinds[:-1]) + " or " + kinds[-1]
    else:
        message = "; ".join(unique)
    variable = _override(loc, overrides)
    if variable is None:
        return f"{where}: {message}"
    if message.startswith("unknown key"):
        return (
            f"environment override {variable}: {where} is not a configuration key{message.removeprefix('unknown key')}"
        )
    return f"{where} (environment override {variable}): {message}"


def _override(loc: tuple[str, ...], overrides: Overrides) -> str | None:
    for path, variable in overrides.items():
        shorter = min(len(path), len(loc))
        if shorter and path[:shorter] == loc[:shorter]:
            return variable
    return None


_WORDS: Final = {
    "missing": "required",
    "int_type": "must be a whole number",
    "int_parsing": "must be a whole number",
    "int_from_float": "must be a whole number",
    "float_type": "must be a number",
    "float_parsing": "must be a number",
    "bool_type": "must be true or false",
    "bool_parsing": "must be true or false",
    "string_type": "must be text",
    "list_type": "must be a list",
    "dict_type": "must be a mapping of keys to values",
    "model_type": "must be a mapping of keys to values",
    "model_attributes_type": "must be a mapping of keys to values",
    "path_type": "must be a file path",
}
_BOUNDS: Final = {
    "greater_than": "must be greater than {gt}",
    "greater_than_equal": "must be at least {ge}",
    "less_than": "must be less than {lt}",
    "less_than_equal": "must be at most {le}",
    "too_short": "must have at least {min_length} item(s)",
    "string_too_short": "must not be empty",
    "literal_error": "must be {expected}",
}


def _words(error: ErrorDetails) -> str:
    kind = error["type"]
    if kind in _WORDS:
        return _WORDS[kind]
    if kind in _BOUNDS:
        bounds = {name: _number(value) for name, value in error.get("ctx", {}).items()}
        if bounds.get("expected") in ("True", "False"):
            bounds["expected"] = bounds["expected"].lower()
        return _BOUNDS[kind].format(**bounds)
    return error["msg"].removeprefix("Value error, ")


def _number(value: Any) -> Any:
    """`0` for pydantic's `0.0`: a bound as the operator would write it."""
    return int(value) if isinstance(value, float) and value.is_integer() else value


def _keys_at(root: Any, loc: tuple[int | str, ...]) -> list[str]:
    """The keys the model at `loc` (below `root`) takes; empty when it is not a model."""
    annotation: Any = root
    for part in loc:
        annotation = _plain(annotation)
        members = _members(annotation)
        if len(members) > 1:
            annotation = next((m for m, tag in members if tag == part), None)
        elif isinstance(annotation, type) and issubclass(annotation, BaseModel):
            field = annotation.model_fields.get(str(part))
            annotation = None if field is None else field.annotation
        elif get_origin(annotation) in (list, dict):
            annotation = get_args(annotation)[-1]
        else:
            return []
        if annotation is None:
            return []
    annotation = _plain(annotation)
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return list(annotation.model_fields)
    return []


def _plain(annotation: Any) -> Any:
    """`annotation` without Annotated metadata and without an Optional's None."""
    while get_origin(annotation) is Annotated:
        annotation = get_args(annotation)[0]
    members = [m for m, _ in _members(annotation) if m is not type(None)]
    if get_origin(annotation) in (Union, types.UnionType) and len(members) == 1:
        return _plain(members[0])
    return annotation


def _members(annotation: Any) -> list[tuple[Any, str | None]]:
    """A union's members with their tags (a discriminated union's `Tag`), or the annotation alone."""
    if get_origin(annotation) not in (Union, types.UnionType):
        return [(annotation, None)]
    found = []
    for member in get_args(annotation):
        tag = None
        if get_origin(member) is Annotated:
            tag = next((getattr(m, "tag", None) for m in member.__metadata__ if hasattr(m, "tag")), None)
        found.append((member, tag))
    return found
