"""A minimal in-memory Confluent-compatible Schema Registry for local runs and tests (Avro only).

Enough of the REST API for confluent-kafka's SchemaRegistryClient, AvroSerializer and AvroDeserializer and for
what producers rely on: register (refusing, with 409, a schema the subject's compatibility rule forbids), lookup,
fetch by id and by subject version, list subjects, compatibility checks, `/config` globally and per subject,
deletes of subjects and versions, schema references, and JSON error bodies `{"error_code", "message"}` for every
error. Optionally it demands HTTP basic auth or a bearer token (401 otherwise) and is served over TLS.

Deleting is simplified: a deleted version is gone at once (no soft-deleted state to restore).
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import avro.errors
import avro.schema
import fastavro
from aiohttp import web
from avro.compatibility import ReaderWriterCompatibilityChecker, SchemaCompatibilityType
from fastavro.schema import SchemaParseException

from bridge.decoding.avro import with_references
from bridge.sandbox.gate import Gate
from bridge.sandbox.serving import LocalServer

_CONTENT_TYPE = "application/vnd.schemaregistry.v1+json"
LEVELS = frozenset(
    {"NONE", "BACKWARD", "BACKWARD_TRANSITIVE", "FORWARD", "FORWARD_TRANSITIVE", "FULL", "FULL_TRANSITIVE"}
)
DEFAULT_LEVEL = "BACKWARD"

Reference = tuple[str, str, int]
"""A schema reference: the type's name, and the subject and version that define it."""


class RegistryError(Exception):
    """An answer other than 200, as the real registry gives it."""

    def __init__(self, status: int, error_code: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.error_code = error_code
        self.message = message


@dataclass(frozen=True, slots=True)
class _Schema:
    id: int
    text: str
    references: tuple[Reference, ...]


@dataclass(slots=True)
class _Subject:
    versions: dict[int, int] = field(default_factory=dict)
    """Version number -> schema id; numbers are never reused after a delete."""
    next_version: int = 1
    compatibility: str | None = None


class SchemaRegistry(LocalServer):
    """In process: ``url = await SchemaRegistry().start()``; ids are global, versions per subject."""

    def __init__(self, basic_auth: tuple[str, str] | None = None, bearer_token: str | None = None) -> None:
        self._schemas: list[_Schema] = []
        self._ids_by_canonical: dict[str, int] = {}
        self._subjects: dict[str, _Subject] = {}
        self._compatibility = DEFAULT_LEVEL
        self._gate = Gate(basic_auth, bearer_token, lambda: RegistryError(401, 401, "Unauthorized"))
        self.refuse_with: int | None = None
        """401 or 403 to have schema fetches refused as a registry refuses bad credentials; None answers them."""
        app = web.Application(middlewares=[_errors_as_json, self._gate.middleware])
        routes: list[tuple[str, str, Callable[[web.Request], Awaitable[Any]]]] = [
            ("POST", "/subjects/{subject}/versions", self._register),
            ("POST", "/subjects/{subject}", self._lookup),
            ("GET", "/subjects", self._list_subjects),
            ("GET", "/subjects/{subject}/versions", self._list_versions),
            ("GET", "/subjects/{subject}/versions/{version}", self._version),
            ("GET", "/subjects/{subject}/versions/{version}/schema", self._version_schema),
            ("DELETE", "/subjects/{subject}", self._delete_subject),
            ("DELETE", "/subjects/{subject}/versions/{version}", self._delete_version),
            ("GET", "/schemas/ids/{id}", self._schema_by_id),
            ("POST", "/compatibility/subjects/{subject}/versions/{version}", self._check_compatibility),
            ("POST", "/compatibility/subjects/{subject}/versions", self._check_compatibility_all),
            ("GET", "/config", self._get_config),
            ("PUT", "/config", self._put_config),
            ("GET", "/config/{subject}", self._get_config),
            ("PUT", "/config/{subject}", self._put_config),
            ("DELETE", "/config/{subject}", self._delete_config),
        ]
        for method, path, handler in routes:
            app.router.add_route(method, path, _answering(handler))
        super().__init__(app)

    @property
    def refused_logins(self) -> int:
        """Requests answered 401, for tests that check a client sent (wrong) credentials."""
        return self._gate.refused

    # -- the in-process API ------------------------------------------------------------------------------

    def register(self, subject: str, schema: str, references: tuple[Reference, ...] = ()) -> int:
        """Register ``schema`` under ``subject`` and return its id; the same schema keeps its id.

        Raises ValueError when ``schema`` is not an Avro schema, RegistryError for a broken reference or one the
        subject's compatibility rule refuses.
        """
        canonical = self._canonical(schema, references)
        schema_id = self._ids_by_canonical.get(canonical)
        state = self._subjects.setdefault(subject, _Subject())
        if schema_id is not None and schema_id in state.versions.values():
            return schema_id
        if not self._compatible(subject, schema, references, self._level(subject), list(state.versions)):
            raise RegistryError(
                409, 409, f"Schema being registered is incompatible with an earlier schema for subject {subject!r}"
            )
        if schema_id is None:
            schema_id = len(self._schemas) + 1
            self._schemas.append(_Schema(schema_id, schema, references))
            self._ids_by_canonical[canonical] = schema_id
        state.versions[state.next_version] = schema_id
        state.next_version += 1
        return schema_id

    # -- HTTP handlers --------------------------------------------------------------------------------------

    async def _register(self, request: web.Request) -> Any:
        schema, references = await _schema_body(request)
        try:
            return {"id": self.register(request.match_info["subject"], schema, references)}
        except ValueError as exc:
            raise RegistryError(422, 42201, str(exc)) from None

    async def _lookup(self, request: web.Request) -> Any:
        subject = request.match_info["subject"]
        versions = self._existing(subject).versions
        schema, references = await _schema_body(request)
        try:
            schema_id = self._ids_by_canonical.get(self._canonical(schema, references))
        except ValueError as exc:
            raise RegistryError(422, 42201, str(exc)) from None
        for version, version_id in versions.items():
            if version_id == schema_id:
                return self._subject_version(subject, version)
        raise RegistryError(404, 40403, f"Schema not found under subject {subject!r}")

    async def _list_subjects(self, request: web.Request) -> Any:
        return [name for name, state in self._subjects.items() if state.versions]

    async def _list_versions(self, request: web.Request) -> Any:
        return list(self._existing(request.match_info["subject"]).versions)

    async def _version(self, request: web.Request) -> Any:
        subject = request.match_info["subject"]
        return self._subject_version(subject, self._version_number(subject, request.match_info["version"]))

    async def _version_schema(self, request: web.Request) -> Any:
        return json.loads(self._schema_of(request)["schema"])

    async def _delete_subject(self, request: web.Request) -> Any:
        subject = request.match_info["subject"]
        deleted = list(self._existing(subject).versions)
        del self._subjects[subject]
        return deleted

    async def _delete_version(self, request: web.Request) -> Any:
        subject = request.match_info["subject"]
        version = self._version_number(subject, request.match_info["version"])
        del self._subjects[subject].versions[version]
        return version

    async def _schema_by_id(self, request: web.Request) -> Any:
        text = request.match_info["id"]
        if self.refuse_with is not None:
            raise RegistryError(self.refuse_with, self.refuse_with * 100 + 1, "Unauthorized")
        if not text.isdecimal() or not 1 <= int(text) <= len(self._schemas):
            raise RegistryError(404, 40403, f"Schema {text} not found")
        return _described(self._schemas[int(text) - 1], {})

    async def _check_compatibility(self, request: web.Request) -> Any:
        subject = request.match_info["subject"]
        version = self._version_number(subject, request.match_info["version"])
        return await self._compatibility_answer(request, subject, [version])

    async def _check_compatibility_all(self, request: web.Request) -> Any:
        subject = request.match_info["subject"]
        return await self._compatibility_answer(request, subject, list(self._existing(subject).versions))

    async def _compatibility_answer(self, request: web.Request, subject: str, versions: list[int]) -> Any:
        schema, references = await _schema_body(request)
        level = self._level(subject).removesuffix("_TRANSITIVE")
        try:
            compatible = self._compatible(subject, schema, references, level + "_TRANSITIVE", versions)
        except ValueError as exc:
            raise RegistryError(422, 42201, str(exc)) from None
        return {"is_compatible": compatible}

    async def _get_config(self, request: web.Request) -> Any:
        subject = request.match_info.get("subject")
        if subject is None:
            return {"compatibilityLevel": self._compatibility}
        level = self._subjects[subject].compatibility if subject in self._subjects else None
        if level is None:
            if request.query.get("defaultToGlobal") != "true":
                raise RegistryError(404, 40408, f"Subject {subject!r} does not have subject-level compatibility")
            level = self._compatibility
        return {"compatibilityLevel": level}

    async def _put_config(self, request: web.Request) -> Any:
        body = await _json_body(request)
        level = body.get("compatibility") if isinstance(body, dict) else None
        if level not in LEVELS:
            raise RegistryError(422, 42203, f"Invalid compatibility level {level!r}")
        subject = request.match_info.get("subject")
        if subject is None:
            self._compatibility = level
        else:
            self._subjects.setdefault(subject, _Subject()).compatibility = level
        return {"compatibility": level}

    async def _delete_config(self, request: web.Request) -> Any:
        subject = request.match_info["subject"]
        state = self._subjects.get(subject)
        if state is None or state.compatibility is None:
            raise RegistryError(404, 40408, f"Subject {subject!r} does not have subject-level compatibility")
        level, state.compatibility = state.compatibility, None
        return {"compatibilityLevel": level}

    # -- rules ----------------------------------------------------------------------------------------------

    def _level(self, subject: str) -> str:
        state = self._subjects.get(subject)
        return (state.compatibility if state is not None else None) or self._compatibility

    def _compatible(
        self, subject: str, schema: str, references: tuple[Reference, ...], level: str, versions: list[int]
    ) -> bool:
        """Whether ``schema`` may follow the subject's ``versions`` under ``level`` (Apache Avro's rules)."""
        if level.removesuffix("_TRANSITIVE") == "NONE" or not versions:
            return True
        against = versions if level.endswith("_TRANSITIVE") else versions[-1:]
        new = self._avro(schema, references)
        checker = ReaderWriterCompatibilityChecker()  # type: ignore[no-untyped-call]
        for version in against:
            old_schema = self._schemas[self._subjects[subject].versions[version] - 1]
            old = self._avro(old_schema.text, old_schema.references)
            pairs = {"BACKWARD": [(new, old)], "FORWARD": [(old, new)], "FULL": [(new, old), (old, new)]}
            for reader, writer in pairs[level.removesuffix("_TRANSITIVE")]:
                result = checker.get_compatibility(reader, writer)
                if result.compatibility is not SchemaCompatibilityType.compatible:
                    return False
        return True

    def _avro(self, schema: str, references: tuple[Reference, ...]) -> avro.schema.Schema:
        try:
            return avro.schema.parse(self._self_contained(schema, references))
        except (avro.errors.AvroException, ValueError) as exc:
            raise ValueError(f"Invalid schema: {exc}") from None

    def _self_contained(self, schema: str, references: tuple[Reference, ...]) -> str:
        return with_references(schema, self._referenced_texts(references)) if references else schema

    def _referenced_texts(self, references: tuple[Reference, ...]) -> list[str]:
        texts: list[str] = []
        for _, subject, version in references:
            state = self._subjects.get(subject)
            if state is None or version not in state.versions:
                raise RegistryError(422, 42201, f"Invalid reference: subject {subject!r} has no version {version}")
            referenced = self._schemas[state.versions[version] - 1]
            texts += [*self._referenced_texts(referenced.references), referenced.text]
        return texts

    def _canonical(self, schema: str, references: tuple[Reference, ...]) -> str:
        """The Avro schema as one text whatever its key order or spacing, so equal schemas share an id."""
        try:
            parsed = json.loads(schema)
            fastavro.parse_schema(json.loads(self._self_contained(schema, references)))
        except (ValueError, TypeError, SchemaParseException) as exc:
            raise ValueError(f"Invalid schema: {exc}") from None
        return json.dumps([parsed, references], sort_keys=True, separators=(",", ":"))

    def _existing(self, subject: str) -> _Subject:
        state = self._subjects.get(subject)
        if state is None or not state.versions:
            raise RegistryError(404, 40401, f"Subject {subject!r} not found")
        return state

    def _version_number(self, subject: str, text: str) -> int:
        versions = self._existing(subject).versions
        if text in ("latest", "-1"):
            return max(versions)
        if not text.isdecimal() or int(text) < 1:
            raise RegistryError(422, 42202, f"Invalid version {text!r}")
        if int(text) not in versions:
            raise RegistryError(404, 40402, f"Version {text} not found")
        return int(text)

    def _schema_of(self, request: web.Request) -> dict[str, Any]:
        subject = request.match_info["subject"]
        version = self._version_number(subject, request.match_info["version"])
        return _described(self._schemas[self._subjects[subject].versions[version] - 1], {})

    def _subject_version(self, subject: str, version: int) -> dict[str, Any]:
        schema = self._schemas[self._subjects[subject].versions[version] - 1]
        return _described(schema, {"subject": subject, "version": version, "id": schema.id})

    # -- middlewares ----------------------------------------------------------------------------------------


@web.middleware
async def _errors_as_json(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    try:
        return await handler(request)
    except RegistryError as exc:
        return _error_response(exc.status, exc.error_code, exc.message)
    except web.HTTPException as exc:  # no such route or method: the real registry answers JSON too
        return _error_response(exc.status, exc.status, exc.reason)


def _answering(handler: Callable[[web.Request], Awaitable[Any]]) -> Callable[[web.Request], Awaitable[web.Response]]:
    async def answer(request: web.Request) -> web.Response:
        return web.json_response(await handler(request), content_type=_CONTENT_TYPE)

    return answer


def _described(schema: _Schema, fields: dict[str, Any]) -> dict[str, Any]:
    described = {**fields, "schema": schema.text}
    if schema.references:
        described["references"] = [
            {"name": name, "subject": subject, "version": version} for name, subject, version in schema.references
        ]
    return described


async def _json_body(request: web.Request) -> Any:
    try:
        return await request.json()
    except ValueError:
        raise RegistryError(400, 400, "The body is not JSON") from None


async def _schema_body(request: web.Request) -> tuple[str, tuple[Reference, ...]]:
    body = await _json_body(request)
    if not isinstance(body, dict) or not isinstance(body.get("schema"), str):
        raise RegistryError(422, 42201, "The body must be a JSON object with a string 'schema'")
    if body.get("schemaType", "AVRO") != "AVRO":
        raise RegistryError(422, 42201, "Only AVRO schemas are supported by this registry")
    references = []
    for reference in body.get("references") or []:
        if not (
            isinstance(reference, dict)
            and isinstance(reference.get("name"), str)
            and isinstance(reference.get("subject"), str)
            and isinstance(reference.get("version"), int)
        ):
            raise RegistryError(422, 42201, "A reference needs a string name and subject and an integer version")
        references.append((reference["name"], reference["subject"], reference["version"]))
    return str(body["schema"]), tuple(references)


def _error_response(status: int, error_code: int, message: str) -> web.Response:
    """The registry's error body, which the client reads for its error_code."""
    return web.json_response({"error_code": error_code, "message": message}, status=status, content_type=_CONTENT_TYPE)
