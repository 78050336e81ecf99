"""Secrets in the configuration (issue 19, item 10): every credential property by its name and the user info of
any URL are masked by check-config and known to the log redactor, credentials are kept as the text written, and
secrets too short to be real neither mangle the log nor pass as Post API keys."""

from __future__ import annotations

import json
from pathlib import Path
from urllib.parse import quote

import pytest
import yaml

from bridge.config.credentials import mask_user_info, secret_property
from bridge.config.model import ConfigError, load_config
from bridge.ops.logs import REDACTED, Redactor
from devtools.testkit.configs import ENV, JSON_ONLY, KEY, check_config, problems, write
from devtools.testkit.leaks import leaked

CREDENTIAL_PROPERTIES = [
    "sasl.password",
    "ssl.key.password",
    "ssl.keystore.password",
    "ssl.key.pem",
    "sasl.oauthbearer.client.secret",
    "sasl.oauthbearer.assertion.private.key.passphrase",
    "sasl.oauthbearer.assertion.private.key.pem",
    "sasl.oauthbearer.config",
    "sasl.jaas.config",
    "sasl.oauthbearer.token.endpoint.url",
    "my.custom.credential",
    "Some.API_Token",
]
PLAIN_PROPERTIES = ["security.protocol", "sasl.mechanism", "sasl.username", "ssl.key.location", "ssl.ca.location"]
PLAIN_PROPERTIES += ["sasl.oauthbearer.assertion.private.key.file", "client.id", "auto.offset.reset"]


@pytest.mark.parametrize("name", CREDENTIAL_PROPERTIES)
def test_credential_properties_are_known_by_name(name: str) -> None:
    assert secret_property(name)


@pytest.mark.parametrize("name", PLAIN_PROPERTIES)
def test_other_properties_stay_readable(name: str) -> None:
    assert not secret_property(name)


def secret_for(name: str) -> str:
    """A secret with characters that encode differently in every spelling, unique to its property."""
    return f"S3cr+t/{name.replace('.', '-')}=%é"


def with_properties(section: str, names: list[str]) -> str:
    lines = "".join(f"    {name}: {json.dumps(secret_for(name))}\n" for name in names)
    plain = "".join(f"    {name}: plain-value-{number}\n" for number, name in enumerate(["client.id"]))
    if section == "kafka":
        return JSON_ONLY.replace("kafka:\n", f"kafka:\n  properties:\n{lines}{plain}")
    registry = 'schema_registry_url: "http://127.0.0.1:8081"'
    return JSON_ONLY + f"avro:\n  {registry}\n  schema_registry_properties:\n{lines}{plain}"


@pytest.mark.parametrize("section", ["kafka", "avro"])
def test_check_config_shows_no_credential_property_in_any_spelling(tmp_path: Path, section: str) -> None:
    names = [name for name in CREDENTIAL_PROPERTIES if section == "kafka" or "sasl" not in name]
    result = check_config(tmp_path, with_properties(section, names))
    assert result.returncode == 0, result.stderr
    output = result.stdout + result.stderr
    for name in names:
        assert not leaked(secret_for(name), output), name
    printed = yaml.safe_load(result.stdout)
    properties = printed["kafka"]["properties"] if section == "kafka" else printed["avro"]["schema_registry_properties"]
    assert all(properties[name] == REDACTED for name in names)
    assert properties["client.id"] == "plain-value-0", "what is not a secret stays readable"


def test_the_log_redactor_knows_every_credential_property(tmp_path: Path) -> None:
    secrets = load_config(write(tmp_path, with_properties("kafka", CREDENTIAL_PROPERTIES)), ENV).secrets()
    redactor = Redactor(secrets)
    for name in CREDENTIAL_PROPERTIES:
        secret = secret_for(name)
        line = f"echo {secret} {quote(secret, safe='')} {json.dumps(secret)}"
        assert not leaked(secret, redactor.redact(line)), name


@pytest.mark.parametrize("written", ["0123", "yes", "1e3", "0x1F", "~"])
def test_a_credential_is_kept_as_the_text_written(tmp_path: Path, written: str) -> None:
    name = "sasl.oauthbearer.assertion.private.key.passphrase"
    in_file = JSON_ONLY.replace("kafka:\n", f"kafka:\n  properties:\n    {name}: {written}\n")
    from_file = load_config(write(tmp_path, in_file), ENV)
    assert from_file.config.kafka.properties[name] == written
    variable = f"BRIDGE_KAFKA__PROPERTIES__{name.upper()}"
    from_env = load_config(write(tmp_path, JSON_ONLY), {**ENV, variable: written})
    assert from_env.config.kafka.properties[name] == written


URL_PASSWORD = "hunter2+pw/é"


@pytest.mark.parametrize(
    "where",
    [
        ("post_api", "url", "https://api-user:{}@api.appmetrica.example"),
        ("avro", "schema_registry_url", "http://127.0.0.1:8081,https://sr-user:{}@registry.example:8081"),
        ("kafka", "client.id", "https://someone:{}@anywhere.example"),
    ],
)
def test_user_info_in_any_url_is_masked(tmp_path: Path, where: tuple[str, str, str]) -> None:
    section, key, url = where
    url = url.format(quote(URL_PASSWORD, safe=""))
    entry = f'{key}: "{url}"'
    if section == "kafka":
        text = JSON_ONLY.replace("kafka:\n", f"kafka:\n  properties:\n    {entry}\n")
    else:
        text = JSON_ONLY.replace(f"{section}:\n", f"{section}:\n  {entry}\n") if section in JSON_ONLY else ""
        text = text or JSON_ONLY + f"{section}:\n  {entry}\n"
    result = check_config(tmp_path, text)
    assert result.returncode == 0, result.stderr
    assert not leaked(URL_PASSWORD, result.stdout + result.stderr)
    assert f"://{REDACTED}@" in result.stdout
    secrets = load_config(write(tmp_path, text), ENV).secrets()
    assert not leaked(URL_PASSWORD, Redactor(secrets).redact(f"started, url {url} and {URL_PASSWORD}"))


def test_the_started_line_shows_the_post_api_url_masked() -> None:
    url = f"https://api-user:{quote(URL_PASSWORD, safe='')}@api.example/base"
    assert mask_user_info(url) == f"https://{REDACTED}@api.example/base"
    assert mask_user_info("https://api.example:443/x?q=a@b") == "https://api.example:443/x?q=a@b"


def test_a_secret_too_short_to_be_real_does_not_mangle_the_log() -> None:
    redactor = Redactor(["k", "ab", "xyz", "real-secret"])
    assert redactor.redact("kafka: a cab, xyz? real-secret") == f"kafka: a cab, xyz? {REDACTED}"


@pytest.mark.parametrize(
    ("text", "env", "key"),
    [
        (JSON_ONLY, {"BRIDGE_POST_API_KEY": "abc"}, "post_api.api_key_file / BRIDGE_POST_API_KEY"),
        (
            JSON_ONLY.replace("post_api:\n", "post_api:\n  applications:\n    3713842: {api_key_env: GAME_KEY}\n"),
            {"BRIDGE_POST_API_KEY": None, "GAME_KEY": "k"},
            "post_api.applications.3713842.api_key_env",
        ),
    ],
)
def test_a_post_api_key_too_short_is_refused(tmp_path: Path, text: str, env: dict[str, str | None], key: str) -> None:
    result = check_config(tmp_path, text, env=env)
    assert result.returncode == 2
    assert [problem for problem in problems(result) if problem.startswith(f"{key}: the key is shorter than 4")]
    with pytest.raises(ConfigError):
        load_config(write(tmp_path, text), {name: value for name, value in env.items() if value is not None})


def test_a_real_key_is_never_printed(tmp_path: Path) -> None:
    result = check_config(tmp_path, JSON_ONLY)
    assert result.returncode == 0
    assert KEY not in result.stdout + result.stderr
