"""The bridge's configuration: a YAML file plus `BRIDGE_*` environment overrides, checked once into typed objects.

Environment overrides use `BRIDGE_<SECTION>__<KEY>` (for example `BRIDGE_KAFKA__BOOTSTRAP_SERVERS`); values are
read as YAML scalars or flow collections, so `BRIDGE_KAFKA__TOPICS='[a, b]'` works. Post API keys never live in
the file itself: `BRIDGE_POST_API_KEY` or `post_api.api_key_file` gives the default key, and each entry of
`post_api.applications` may name its own variable or file. The schema registry's credentials never live there
either: `BRIDGE_SCHEMA_REGISTRY_USER_INFO` (or `avro.schema_registry_user_info_file`) gives basic auth's
`user:password`, `BRIDGE_SCHEMA_REGISTRY_BEARER_TOKEN` (or `avro.schema_registry_bearer_token_file`) a static token.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, Literal
from urllib.parse import SplitResult, urlsplit

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    TypeAdapter,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from bridge.config import yaml_text
from bridge.config.credentials import mask_user_info, property_secrets, secret_property, user_info_secrets
from bridge.config.problems import Overrides, ProblemsError, describe
from bridge.mapping import MappingSpec
from bridge.mapping.forms import Source, constant_applications, mapping_problems
from bridge.ops.logs import MIN_SECRET_CHARS, REDACTED, Redactor
from bridge.postapi.methods import METHODS, MethodName
from bridge.postapi.rules import MAX_ROWS_PER_REQUEST

_SOURCE: TypeAdapter[Any] = TypeAdapter(Source)
DEFAULT_KEY_ENV = "BRIDGE_POST_API_KEY"
REGISTRY_USER_INFO_ENV = "BRIDGE_SCHEMA_REGISTRY_USER_INFO"
REGISTRY_BEARER_TOKEN_ENV = "BRIDGE_SCHEMA_REGISTRY_BEARER_TOKEN"
_REGISTRY_CREDENTIAL_PROPERTIES = {
    "basic.auth.user.info": REGISTRY_USER_INFO_ENV,
    "bearer.auth.token": REGISTRY_BEARER_TOKEN_ENV,
    "url": "avro.schema_registry_url",
}
ENV_PREFIX = "BRIDGE_"


class ConfigError(Exception):
    """A configuration the bridge cannot run with: every problem found, each one line naming its key and never
    holding a secret."""

    def __init__(self, *problems: str) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, coerce_numbers_to_str=True)


class KafkaConfig(_Section):
    bootstrap_servers: str = Field(min_length=1)
    group_id: str = Field(default="appmetrica-bridge", min_length=1)
    topics: list[str] = Field(default_factory=list)
    """Topics routed to the `events` method; `routes` may name more (at least one topic in all)."""
    dead_letter_topic: str | None = None
    properties: dict[str, str | int | float | bool] = Field(default_factory=dict)
    revoke_timeout_s: float = Field(default=10.0, gt=0, le=300)
    """How long a revoke waits for in-flight batches of the revoked partitions; keep it inside
    max.poll.interval.ms."""

    @field_validator("topics")
    @classmethod
    def _topics_named(cls, topics: list[str]) -> list[str]:
        return _named_topics(topics)

    @field_validator("properties")
    @classmethod
    def _no_managed_properties(cls, props: dict[str, str | int | float | bool]) -> dict[str, str | int | float | bool]:
        managed = {"enable.auto.commit", "group.id", "bootstrap.servers"} & props.keys()
        if managed:
            raise ValueError(f"{', '.join(sorted(managed))} is set by the bridge itself")
        return props


class RouteConfig(_Section):
    """Topics whose records go to one Post API method."""

    topics: list[str] = Field(min_length=1)
    method: MethodName
    format: Literal["avro", "json"] = "avro"
    """How the record values are encoded: Avro (as `avro.format` says) or one UTF-8 JSON object per value."""
    mapping: MappingSpec | None = None
    """Where each Post API parameter comes from in the record; None reads the method's own contract."""

    @field_validator("topics")
    @classmethod
    def _topics_named(cls, topics: list[str]) -> list[str]:
        return _named_topics(topics)

    @field_validator("mapping")
    @classmethod
    def _mapping_fits_method(cls, mapping: MappingSpec | None, info: ValidationInfo) -> MappingSpec | None:
        if (
            mapping is not None
            and "method" in info.data
            and (problems := mapping_problems(info.data["method"], mapping))
        ):
            raise ProblemsError(problems)
        return mapping


def _named_topics(topics: list[str]) -> list[str]:
    if any(not t.strip() for t in topics):
        raise ValueError("topic names must not be empty")
    return topics


class AvroConfig(_Section):
    format: Literal["confluent", "raw"] = "confluent"
    schema_registry_url: str | None = None
    """One URL, or several separated by commas (tried in turn)."""
    schema_file: Path | None = None
    schema_registry_properties: dict[str, str | int | float | bool] = Field(default_factory=dict)
    """Passed to confluent-kafka's registry client as they are (ssl.ca.location, ssl.certificate.location, ...)."""
    schema_registry_user_info_file: Path | None = None
    schema_registry_bearer_token_file: Path | None = None

    @field_validator("schema_registry_properties")
    @classmethod
    def _no_credentials_in_properties(
        cls, props: dict[str, str | int | float | bool]
    ) -> dict[str, str | int | float | bool]:
        for name, instead in _REGISTRY_CREDENTIAL_PROPERTIES.items():
            if name in props:
                raise ValueError(f"{name} is not set here: use {instead}")
        return props

    @field_validator("schema_registry_url")
    @classmethod
    def _registry_urls(cls, urls: str | None) -> str | None:
        if urls:
            check_registry_urls(urls)
        return urls

    def schema_problems(self) -> list[tuple[str, str]]:
        """Why Avro records could not be read with this section: asked only when a route reads Avro."""
        if self.format == "confluent" and not self.schema_registry_url:
            return [("avro.schema_registry_url", "required when a route reads Avro and avro.format is confluent")]
        if self.format == "raw":
            if self.schema_file is None:
                return [("avro.schema_file", "required when a route reads Avro and avro.format is raw")]
            if not self.schema_file.is_file():
                return [("avro.schema_file", f"{self.schema_file} does not exist")]
        return []


class ApplicationConfig(_Section):
    """Where one application's own Post API key comes from."""

    api_key_env: str | None = None
    api_key_file: Path | None = None

    @model_validator(mode="after")
    def _one_source(self) -> ApplicationConfig:
        if (self.api_key_env is None) == (self.api_key_file is None):
            raise ValueError("give exactly one of api_key_env and api_key_file")
        return self


class PostApiConfig(_Section):
    url: str = "https://api.appmetrica.yandex.com"
    application_id: int | None = Field(default=None, gt=0)
    """The application of records that carry none."""
    api_key_file: Path | None = None
    applications: dict[int, ApplicationConfig] = Field(default_factory=dict)
    max_future_s: float = Field(default=3600.0, ge=0)
    """Events stamped further ahead than this are refused before upload: the API does not say what it does."""
    ca_file: Path | None = None
    """PEM certificates trusted for the Post API instead of the system's (a TLS-inspecting proxy's private CA)."""

    @field_validator("ca_file")
    @classmethod
    def _ca_file_exists(cls, ca_file: Path | None) -> Path | None:
        if ca_file is not None and not ca_file.is_file():
            raise ValueError(f"{ca_file} does not exist")
        return ca_file

    @field_validator("url")
    @classmethod
    def _http_url(cls, url: str) -> str:
        if not url.startswith(("http://", "https://")):
            raise ValueError("must start with http:// or https://")
        return url.rstrip("/")


class BatchConfig(_Section):
    max_rows: int = Field(default=10_000, ge=1, le=MAX_ROWS_PER_REQUEST)
    max_bytes: int = Field(default=8 * 1024 * 1024, ge=1024, le=1024**3)
    linger_ms: int = Field(default=1000, ge=0, le=600_000)


class UploadConfig(_Section):
    max_in_flight: int = Field(default=4, ge=1, le=256)
    requests_per_second: float = Field(default=10.0, gt=0)
    rate_scope: Literal["instance", "group"] = "instance"
    """`group`: requests_per_second caps the whole consumer group, each member taking its share."""
    timeout_s: float = Field(default=30.0, gt=0)
    retry_base_s: float = Field(default=0.5, gt=0)
    retry_max_s: float = Field(default=60.0, gt=0)
    forbidden_retry_s: float = Field(default=60.0, gt=0)
    """How often an application whose key was refused is tried again."""
    max_split_requests: int = Field(default=64, ge=0)
    """Isolation requests of one refused (400) batch that go out together; past them its isolation goes on one
    request at a time. It paces isolation and never dead-letters a row the API accepts."""


class BufferConfig(_Section):
    max_records: int = Field(default=100_000, ge=1)
    """A held record costs the bridge's process over half a kilobyte (the Kafka message, its value, its CSV line).
    100,000 holds twice what upload.max_in_flight full batches of batch.max_rows take; at 50,000 the partitions
    paused and resumed about once a batch, and the benchmark moved a fifth fewer events a second."""
    max_bytes: int = Field(default=256 * 1024 * 1024, ge=1024)


class TransformConfig(_Section):
    workers: int = Field(default=2, ge=0, le=64)
    """Processes that decode records, make rows and encode CSV; 0 does it in the bridge's own process."""
    chunk_timeout_s: float = Field(default=60.0, gt=0, le=3600)
    """A chunk of records not back from the workers this long means a worker hangs: the bridge is not ready after
    half of it and fails (exit 3) after all of it. A chunk takes well under a second."""


class ServerConfig(_Section):
    host: str = "0.0.0.0"
    port: int = Field(default=8080, ge=0, le=65535)


class ShutdownConfig(_Section):
    drain_timeout_s: float = Field(default=20.0, gt=0, le=3600)
    """SIGTERM waits this long for open batches and in-flight uploads; keep it under the pod's grace period."""


class LogConfig(_Section):
    level: Literal["debug", "info", "warning", "error"] = "info"
    progress_interval_s: float = Field(default=10.0, gt=0)


class BridgeConfig(_Section):
    """The whole configuration; keys are resolved separately by `load_config`."""

    kafka: KafkaConfig
    avro: AvroConfig = AvroConfig()
    """Needed only when a route reads Avro (`format: avro`, the default)."""
    routes: list[RouteConfig] = Field(default_factory=list)
    """Topics of the other methods (and events topics with their own format or mapping), beside kafka.topics."""
    post_api: PostApiConfig = PostApiConfig()
    batch: BatchConfig = BatchConfig()
    upload: UploadConfig = UploadConfig()
    buffer: BufferConfig = BufferConfig()
    transform: TransformConfig = TransformConfig()
    server: ServerConfig = ServerConfig()
    shutdown: ShutdownConfig = ShutdownConfig()
    log: LogConfig = LogConfig()

    @model_validator(mode="after")
    def _topology(self) -> BridgeConfig:
        if problems := topology_problems(self.kafka, self.routes, self.avro):
            raise ProblemsError(problems)
        return self

    @property
    def effective_routes(self) -> list[RouteConfig]:
        """Every route, `kafka.topics` first as a route to `events`; no topic is in two."""
        return [route for _, route in _placed_routes(self.kafka, self.routes)]

    @property
    def reads_avro(self) -> bool:
        """Whether any route reads Avro records (and so needs the `avro` section's registry or schema file)."""
        return any(route.format == "avro" for route in self.effective_routes)

    @property
    def topics(self) -> list[str]:
        """Every topic the bridge consumes, in one consumer group."""
        return [topic for route in self.effective_routes for topic in route.topics]


def _placed_routes(kafka: KafkaConfig, routes: list[RouteConfig]) -> list[tuple[str, RouteConfig]]:
    placed = [(f"routes.{index}", route) for index, route in enumerate(routes)]
    if kafka.topics:
        placed.insert(0, ("kafka.topics", RouteConfig(topics=kafka.topics, method="events")))
    return placed


def topology_problems(kafka: KafkaConfig, routes: list[RouteConfig], avro: AvroConfig) -> list[tuple[str, str]]:
    """What the sections allow alone but not together, each at its key: a topic in two routes, no topic at all,
    a dead-letter topic the bridge also consumes (each dead letter would come back as a record, forever), Avro
    routes without a registry or schema file."""
    problems = []
    seen: dict[str, str] = {}
    placed = _placed_routes(kafka, routes)
    for where, route in placed:
        for topic in route.topics:
            if topic in seen:
                problems.append((where, f"topic {topic!r} is named by both {seen[topic]} and {where}"))
            seen[topic] = where
    if not seen:
        problems.append(("kafka.topics", "no topics: set kafka.topics or routes"))
    dead_letters = kafka.dead_letter_topic
    if dead_letters is not None and dead_letters in seen:
        problems.append(
            (
                "kafka.dead_letter_topic",
                f"{dead_letters!r} is also consumed ({seen[dead_letters]}): every dead letter would be read back "
                "and dead-lettered again; name a topic of its own",
            )
        )
    if any(route.format == "avro" for _, route in placed):
        problems += avro.schema_problems()
    return problems


class PostApiKeys:
    """Post API keys by application; `for_application` falls back to the default key."""

    def __init__(self, default: SecretStr | None, by_application: Mapping[int, SecretStr]) -> None:
        self._default = default
        self._by_application = dict(by_application)
        self._redactor: Redactor | None = None

    def for_application(self, application_id: int) -> SecretStr | None:
        return self._by_application.get(application_id, self._default)

    def keyed_applications(self) -> frozenset[int] | None:
        """The applications that have a key; None when the default key serves every application."""
        return None if self._default is not None else frozenset(self._by_application)

    def secrets(self) -> list[str]:
        """Every key as plain text, for the log redactor."""
        keys = [*self._by_application.values(), *([self._default] if self._default else [])]
        return [k.get_secret_value() for k in keys]

    def redact(self, text: str) -> str:
        """`text` with every key masked in any spelling (an answer that echoes the request URL, say)."""
        if self._redactor is None:
            self._redactor = Redactor(self.secrets())
        return self._redactor.redact(text)

    def describe(self) -> dict[str, str]:
        described = {"default": "set" if self._default else "not set"}
        described.update({str(app): "set" for app in sorted(self._by_application)})
        return described


class RegistryCredentials:
    """The schema registry's basic-auth user info or bearer token, resolved from the environment or a file."""

    def __init__(self, user_info: SecretStr | None = None, bearer_token: SecretStr | None = None) -> None:
        self._user_info = user_info
        self._bearer_token = bearer_token

    def client_properties(self) -> dict[str, str]:
        """What confluent-kafka's registry client takes for them."""
        if self._user_info is not None:
            return {"basic.auth.user.info": self._user_info.get_secret_value()}
        if self._bearer_token is not None:
            return {
                "bearer.auth.credentials.source": "STATIC_TOKEN",
                "bearer.auth.token": self._bearer_token.get_secret_value(),
            }
        return {}

    def secrets(self) -> list[str]:
        """The user info whole and its password alone (a client may show either), and the token."""
        found = []
        if self._user_info is not None:
            user_info = self._user_info.get_secret_value()
            found += [user_info, user_info.partition(":")[2]]
        if self._bearer_token is not None:
            found.append(self._bearer_token.get_secret_value())
        return [secret for secret in found if secret]

    def describe(self) -> dict[str, str]:
        return {
            "user_info": "set" if self._user_info is not None else "not set",
            "bearer_token": "set" if self._bearer_token is not None else "not set",
        }


class Settings:
    """A checked configuration together with its resolved keys."""

    def __init__(self, config: BridgeConfig, keys: PostApiKeys, registry: RegistryCredentials | None = None) -> None:
        self.config = config
        self.keys = keys
        self.registry = registry or RegistryCredentials()

    def redacted(self) -> dict[str, Any]:
        """The effective configuration as plain data: keys shown only as set or not, credential properties and
        the user info of every URL masked."""
        data = self.config.model_dump(mode="json")
        data["post_api"]["keys"] = self.keys.describe()
        for section, name in _PROPERTY_SECTIONS:
            data[section][name] = {
                key: REDACTED if secret_property(key) else value for key, value in data[section][name].items()
            }
        data["avro"]["schema_registry_credentials"] = self.registry.describe()
        masked: dict[str, Any] = _masked_urls(data)
        return masked

    def secrets(self) -> list[str]:
        """Every secret value the configuration holds, for the log redactor."""
        properties = [
            secret
            for section, name in _PROPERTY_SECTIONS
            for key, value in getattr(getattr(self.config, section), name).items()
            if secret_property(key)
            for secret in property_secrets(str(value))
        ]
        urls = [secret for text in _texts(self.config.model_dump(mode="json")) for secret in user_info_secrets(text)]
        return [*self.keys.secrets(), *properties, *urls, *self.registry.secrets()]


_PROPERTY_SECTIONS = (("kafka", "properties"), ("avro", "schema_registry_properties"))


def _masked_urls(data: Any) -> Any:
    if isinstance(data, str):
        return mask_user_info(data)
    if isinstance(data, dict):
        return {key: _masked_urls(value) for key, value in data.items()}
    if isinstance(data, list):
        return [_masked_urls(value) for value in data]
    return data


def _texts(data: Any) -> Iterator[str]:
    if isinstance(data, str):
        yield data
    elif isinstance(data, dict):
        for value in data.values():
            yield from _texts(value)
    elif isinstance(data, list):
        for value in data:
            yield from _texts(value)


def _registry_url_parts(urls: str) -> list[SplitResult]:
    return [urlsplit(url.strip()) for url in urls.split(",")]


def check_registry_urls(urls: str) -> None:
    """Raise ValueError unless every comma-separated URL is http(s) with a host and a valid port.

    The message counts the URLs instead of quoting them: a URL can carry a password.
    """
    parts = _registry_url_parts(urls)
    for number, url in enumerate(parts, 1):
        try:
            port_ok = url.port is None or url.port > 0
        except ValueError:
            port_ok = False
        if url.scheme not in ("http", "https") or not url.hostname or not port_ok:
            which = f"URL {number} of {len(parts)}" if len(parts) > 1 else "the URL"
            raise ValueError(
                f"{which} is not an http:// or https:// URL with a host and a valid port "
                "(for example https://registry.example.com:8081)"
            )


def load_config(path: Path, environ: Mapping[str, str] | None = None, *, keys_required: bool = True) -> Settings:
    """Read, merge and check the configuration; raise ConfigError naming every problem found, each at its key.

    `keys_required=False` is for tools that never call the Post API (`dead-letters`): keys that cannot be resolved
    are then left out instead of refused.
    """
    env = os.environ if environ is None else environ
    raw, overrides = _with_environ(env, _read_yaml(path))
    problems: list[str] = []
    try:
        config: BridgeConfig | None = BridgeConfig.model_validate(raw)
    except ValidationError as exc:
        config = None
        problems += describe(exc, BridgeConfig, overrides=overrides)
        problems += _partial_topology(raw, overrides)
    sections = _sections(raw, config)
    keys = PostApiKeys(None, {})
    if (post_api := sections.get("post_api")) is not None:
        key_problems, keys = _resolve_keys(post_api, env)
        if keys_required:
            problems += key_problems
            keys_required = not key_problems
    registry = RegistryCredentials()
    if (avro := sections.get("avro")) is not None:
        try:
            registry = _resolve_registry_credentials(avro, env)
        except ConfigError as exc:
            problems += exc.problems
    if config is not None and keys_required:
        problems += application_problems(config, keys)
    if problems or config is None:
        raise ConfigError(*dict.fromkeys(problems))
    return Settings(config, keys, registry)


def application_problems(config: BridgeConfig, keys: PostApiKeys) -> list[str]:
    """Mapped routes whose records could never be uploaded for want of an application or its key."""
    problems = []
    keyed = keys.keyed_applications()
    for index, route in enumerate(config.routes):
        if route.mapping is None:
            continue
        where = f"routes.{index}.mapping"
        if "application_id" not in route.mapping and config.post_api.application_id is None:
            problems.append(
                f"{where}.application_id: not mapped, and post_api.application_id is not set: "
                "no record would have an application"
            )
        for key, application in constant_applications(route.mapping):
            if keyed is not None and application not in keyed:
                problems.append(f"{where}.{key}: application {application} has no Post API key (post_api.applications)")
    return problems


def _sections(raw: dict[str, Any], config: BridgeConfig | None) -> dict[str, Any]:
    """The sections that are valid on their own, so that keys and credentials are checked in the same run as
    the rest of a file with problems elsewhere."""
    if config is not None:
        return {name: getattr(config, name) for name in BridgeConfig.model_fields}
    valid = {}
    for name, field in BridgeConfig.model_fields.items():
        if (name not in raw and field.is_required()) or field.annotation is None:
            continue
        given = raw.get(name, field.get_default(call_default_factory=True))
        try:
            valid[name] = TypeAdapter[Any](field.annotation).validate_python(given)
        except ValidationError:
            if name == "routes" and isinstance(given, list):
                valid[name] = [route for route in map(_route_topics, given) if route is not None]
    return valid


def _route_topics(raw: Any) -> RouteConfig | None:
    """A route whose mapping has problems, without its mapping: enough to check the topics."""
    try:
        return RouteConfig.model_validate({**raw, "mapping": None}) if isinstance(raw, dict) else None
    except ValidationError:
        return None


def _partial_topology(raw: dict[str, Any], overrides: Overrides) -> list[str]:
    """The problems pydantic leaves unchecked when any field is invalid: cross-section ones from the valid
    sections, and each broken mapping's valid entries checked against the method."""
    sections = _sections(raw, None)
    problems = []
    if {"kafka", "routes", "avro"} <= sections.keys():
        problems += topology_problems(sections["kafka"], sections["routes"], sections["avro"])
    routes = raw.get("routes")
    for index, route in enumerate(routes if isinstance(routes, list) else []):
        if isinstance(route, dict) and isinstance(route.get("mapping"), dict):
            where = f"routes.{index}.mapping"
            problems += [(f"{where}.{key}", what) for key, what in _valid_entries_problems(route)]
    variables = {".".join(path): name for path, name in overrides.items()}
    return [f"{where}{_from_environment(where, variables)}: {what}" for where, what in problems]


def _valid_entries_problems(route: dict[str, Any]) -> list[tuple[str, str]]:
    """A mapping's problems against its method, from the entries that parse; the others are reported already."""
    method = route.get("method")
    if not isinstance(method, str) or method not in METHODS:
        return []
    valid, broken = {}, set()
    for name, source in route["mapping"].items():
        try:
            valid[name] = _SOURCE.validate_python(source)
        except ValidationError:
            broken.add(str(name))
    return [(key, what) for key, what in mapping_problems(method, valid) if key.split(".")[0] not in broken]


def _from_environment(where: str, variables: Mapping[str, str]) -> str:
    name = variables.get(where)
    return f" (environment override {name})" if name else ""


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not UTF-8 text") from None
    try:
        data = yaml_text.load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or "invalid YAML"
        raise ConfigError(f"{path}: {problem}{where}") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of sections")
    return data


def _with_environ(env: Mapping[str, str], raw: dict[str, Any]) -> tuple[dict[str, Any], Overrides]:
    """The file's data with the environment's overrides (the environment wins, so that one image and file serve
    many deployments), and which key path each variable set."""
    merged = dict(raw)
    overrides: dict[tuple[str, ...], str] = {}
    for name, value in sorted(env.items()):
        if not name.startswith(ENV_PREFIX) or "__" not in name:
            continue
        path = name.removeprefix(ENV_PREFIX).lower().split("__")
        overrides[tuple(path)] = name
        node = merged
        for part in path[:-1]:
            child = node.get(part)
            node[part] = child = dict(child) if isinstance(child, dict) else {}
            node = child
        # A password is text as given: read as YAML, "0123" would become 83 and "yes" true.
        node[path[-1]] = value if secret_property(path[-1]) else _env_value(value)
    return merged, overrides


def _env_value(value: str) -> Any:
    try:
        return yaml_text.load(value)
    except yaml.YAMLError:
        return value


def _resolve_keys(post_api: PostApiConfig, env: Mapping[str, str]) -> tuple[list[str], PostApiKeys]:
    """The Post API keys, and every problem met resolving them."""
    problems: list[str] = []
    where_default = f"post_api.api_key_file / {DEFAULT_KEY_ENV}"
    default = _collected(problems, _key_from, env.get(DEFAULT_KEY_ENV), post_api.api_key_file, where_default)
    by_app: dict[int, SecretStr] = {}
    for app_id, app in post_api.applications.items():
        where = f"post_api.applications.{app_id}"
        if app.api_key_env is not None:
            value = env.get(app.api_key_env)
            if not value:
                problems.append(f"{where}.api_key_env: environment variable {app.api_key_env} is not set")
                continue
            key = _collected(problems, _checked_key, value, f"{where}.api_key_env")
        else:
            key = _collected(problems, _key_from, None, app.api_key_file, f"{where}.api_key_file")
        if key is not None:
            by_app[app_id] = key
    if default is None and not post_api.applications and not problems:
        problems.append(
            f"post_api: no Post API key: set {DEFAULT_KEY_ENV}, post_api.api_key_file or post_api.applications"
        )
    application = post_api.application_id
    if application is not None and default is None and application not in post_api.applications and not problems:
        problems.append(f"post_api.application_id: application {application} has no key")
    return problems, PostApiKeys(default, by_app)


def _collected(problems: list[str], resolve: Callable[..., SecretStr | None], *args: Any) -> SecretStr | None:
    try:
        found = resolve(*args)
    except ConfigError as exc:
        problems.extend(exc.problems)
        return None
    return found


def _resolve_registry_credentials(avro: AvroConfig, env: Mapping[str, str]) -> RegistryCredentials:
    user_info = _secret_from(
        env.get(REGISTRY_USER_INFO_ENV),
        avro.schema_registry_user_info_file,
        f"avro.schema_registry_user_info_file / {REGISTRY_USER_INFO_ENV}",
    )
    token = _secret_from(
        env.get(REGISTRY_BEARER_TOKEN_ENV),
        avro.schema_registry_bearer_token_file,
        f"avro.schema_registry_bearer_token_file / {REGISTRY_BEARER_TOKEN_ENV}",
    )
    if user_info is not None and ":" not in user_info.get_secret_value():
        raise ConfigError(f"avro.schema_registry_user_info_file / {REGISTRY_USER_INFO_ENV}: must be user:password")
    if user_info is not None and token is not None:
        raise ConfigError("avro: give the schema registry basic-auth user info or a bearer token, not both")
    urls = _registry_url_parts(avro.schema_registry_url or "")
    if user_info is not None and any(url.username for url in urls):
        # confluent-kafka refuses both at once; say so here, exit 2, rather than at start-up.
        raise ConfigError(
            f"avro.schema_registry_url: holds user info as well as {REGISTRY_USER_INFO_ENV} "
            "(or avro.schema_registry_user_info_file): give one"
        )
    return RegistryCredentials(user_info, token)


def _secret_from(value: str | None, file: Path | None, where: str) -> SecretStr | None:
    """A credential from a file (which wins) or the environment; surrounding whitespace dropped."""
    if file is not None:
        try:
            value = file.read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError(f"{where}: cannot read {file}: {exc.strerror}") from None
    if value is None:
        return None
    value = value.strip()
    if not value:
        raise ConfigError(f"{where}: the value is empty")
    return SecretStr(value)


def _key_from(value: str | None, file: Path | None, where: str) -> SecretStr | None:
    if file is not None:
        try:
            value = file.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise ConfigError(f"{where}: cannot read {file}: {exc.strerror}") from None
        if not value:
            raise ConfigError(f"{where}: {file} is empty")
    if value is None:
        return None
    return _checked_key(value, where)


def _checked_key(value: str, where: str) -> SecretStr:
    value = value.strip()
    if not value or any(c.isspace() or not c.isprintable() for c in value):
        raise ConfigError(f"{where}: the key is empty or holds spaces or control characters")
    if len(value) < MIN_SECRET_CHARS:
        # The log redactor ignores values this short; a real key is far longer.
        raise ConfigError(f"{where}: the key is shorter than {MIN_SECRET_CHARS} characters, not a Post API key")
    return SecretStr(value)
