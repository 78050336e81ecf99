"""A minimal in-memory Confluent-compatible Schema Registry for local runs and tests (Avro only).

Enough of the REST API for confluent-kafka's SchemaRegistryClient, AvroSerializer and AvroDeserializer:
register, lookup, fetch by id, by subject version, list subjects. No compatibility checks, no deletes,
no references.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import fastavro
from aiohttp import web
from fastavro.schema import SchemaParseException

from bridge.sandbox.serving import LocalServer

_CONTENT_TYPE = "application/vnd.schemaregistry.v1+json"
_ERRORS: dict[int, type[web.HTTPException]] = {
    400: web.HTTPBadRequest,
    401: web.HTTPUnauthorized,
    403: web.HTTPForbidden,
    404: web.HTTPNotFound,
    422: web.HTTPUnprocessableEntity,
}


@dataclass(frozen=True, slots=True)
class _Schema:
    id: int
    text: str


class SchemaRegistry(LocalServer):
    """In process: ``url = await SchemaRegistry().start()``; ids are global, versions per subject."""

    def __init__(self) -> None:
        self._schemas: list[_Schema] = []
        self._ids_by_canonical: dict[str, int] = {}
        self._subjects: dict[str, list[int]] = {}
        self.refuse_with: int | None = None
        """401 or 403 to have schema fetches refused as a registry refuses bad credentials; None answers them."""
        app = web.Application()
        app.router.add_post("/subjects/{subject}/versions", self._register)
        app.router.add_post("/subjects/{subject}", self._lookup)
        app.router.add_get("/subjects", self._list_subjects)
        app.router.add_get("/subjects/{subject}/versions", self._list_versions)
        app.router.add_get("/subjects/{subject}/versions/{version}", self._version)
        app.router.add_get("/schemas/ids/{id}", self._schema_by_id)
        super().__init__(app)

    def register(self, subject: str, schema: str) -> int:
        """Register ``schema`` under ``subject`` and return its id; the same schema keeps its id.

        Raises ValueError when ``schema`` is not an Avro schema.
        """
        canonical = _canonical(schema)
        schema_id = self._ids_by_canonical.get(canonical)
        if schema_id is None:
            schema_id = len(self._schemas) + 1
            self._schemas.append(_Schema(schema_id, schema))
            self._ids_by_canonical[canonical] = schema_id
        versions = self._subjects.setdefault(subject, [])
        if schema_id not in versions:
            versions.append(schema_id)
        return schema_id

    async def _register(self, request: web.Request) -> web.Response:
        schema = await _schema_text(request)
        try:
            return _json({"id": self.register(request.match_info["subject"], schema)})
        except ValueError as exc:
            raise _error(422, 42201, str(exc)) from None

    async def _lookup(self, request: web.Request) -> web.Response:
        subject = request.match_info["subject"]
        versions = self._versions(subject)
        try:
            schema_id = self._ids_by_canonical.get(_canonical(await _schema_text(request)))
        except ValueError as exc:
            raise _error(422, 42201, str(exc)) from None
        if schema_id not in versions:
            raise _error(404, 40403, f"Schema not found under subject {subject!r}")
        return self._subject_version(subject, versions.index(schema_id) + 1)

    async def _list_subjects(self, request: web.Request) -> web.Response:
        return _json(list(self._subjects))

    async def _list_versions(self, request: web.Request) -> web.Response:
        return _json(list(range(1, len(self._versions(request.match_info["subject"])) + 1)))

    async def _version(self, request: web.Request) -> web.Response:
        subject = request.match_info["subject"]
        versions = self._versions(subject)
        text = request.match_info["version"]
        if text in ("latest", "-1"):
            return self._subject_version(subject, len(versions))
        if not text.isdecimal() or int(text) < 1:
            raise _error(422, 42202, f"Invalid version {text!r}")
        if int(text) > len(versions):
            raise _error(404, 40402, f"Version {text} not found")
        return self._subject_version(subject, int(text))

    async def _schema_by_id(self, request: web.Request) -> web.Response:
        if self.refuse_with is not None:
            raise _error(self.refuse_with, self.refuse_with * 100 + 1, "Unauthorized")
        text = request.match_info["id"]
        if not text.isdecimal() or not 1 <= int(text) <= len(self._schemas):
            raise _error(404, 40403, f"Schema {text} not found")
        return _json({"schema": self._schemas[int(text) - 1].text})

    def _versions(self, subject: str) -> list[int]:
        versions = self._subjects.get(subject)
        if versions is None:
            raise _error(404, 40401, f"Subject {subject!r} not found")
        return versions

    def _subject_version(self, subject: str, version: int) -> web.Response:
        schema = self._schemas[self._subjects[subject][version - 1] - 1]
        return _json({"subject": subject, "version": version, "id": schema.id, "schema": schema.text})


async def _schema_text(request: web.Request) -> str:
    try:
        body = await request.json()
    except ValueError:
        raise _error(400, 400, "The body is not JSON") from None
    if not isinstance(body, dict) or not isinstance(body.get("schema"), str):
        raise _error(422, 42201, "The body must be a JSON object with a string 'schema'")
    if body.get("schemaType", "AVRO") != "AVRO":
        raise _error(422, 42201, "Only AVRO schemas are supported by this registry")
    if body.get("references"):
        raise _error(422, 42201, "Schema references are not supported by this registry")
    return str(body["schema"])


def _canonical(schema: str) -> str:
    """The Avro schema as one text whatever its key order or spacing, so equal schemas share an id."""
    try:
        parsed = json.loads(schema)
        fastavro.parse_schema(parsed)
    except (ValueError, TypeError, SchemaParseException) as exc:
        raise ValueError(f"Invalid schema: {exc}") from None
    return json.dumps(parsed, sort_keys=True, separators=(",", ":"))


def _json(payload: Any) -> web.Response:
    return web.json_response(payload, content_type=_CONTENT_TYPE)


def _error(status: int, error_code: int, message: str) -> web.HTTPException:
    """The registry's error body, which the client reads for its error_code."""
    return _ERRORS[status](text=json.dumps({"error_code": error_code, "message": message}), content_type=_CONTENT_TYPE)
