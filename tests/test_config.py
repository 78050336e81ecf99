"""Configuration: one-line errors naming the key, exit code 2, keys never echoed, environment overrides."""

from __future__ import annotations

from pathlib import Path

import pytest

from bridge.config.model import ConfigError, load_config
from devtools.testkit.bridge_child import run_cli

GOOD = """
kafka:
  bootstrap_servers: "127.0.0.1:9092"
  topics: ["appmetrica.events"]
  dead_letter_topic: "appmetrica.events.dlq"
avro:
  format: confluent
  schema_registry_url: "http://registry:8081"
post_api:
  application_id: 1111
batch:
  max_rows: 5000
"""
KEY = "s3cr3t-post-api-key"


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "bridge.yaml"
    path.write_text(text)
    return path


def test_a_good_file_with_environment_overrides(tmp_path: Path) -> None:
    settings = load_config(
        write(tmp_path, GOOD),
        {"BRIDGE_POST_API_KEY": KEY, "BRIDGE_BATCH__MAX_ROWS": "777", "BRIDGE_KAFKA__TOPICS": "[a, b]"},
    )
    assert settings.config.batch.max_rows == 777
    assert settings.config.kafka.topics == ["a", "b"]
    assert settings.config.kafka.group_id == "appmetrica-bridge"
    key = settings.keys.for_application(1111)
    assert key is not None and key.get_secret_value() == KEY
    assert KEY not in str(settings.redacted())


def test_per_application_keys_from_env_and_file(tmp_path: Path) -> None:
    key_file = tmp_path / "key-2222"
    key_file.write_text("file-key\n")
    text = (
        GOOD
        + f"""  applications:
    2222: {{api_key_file: "{key_file}"}}
    3333: {{api_key_env: APP_3333_KEY}}
"""
    )
    text = text.replace("batch:\n  max_rows: 5000\n", "").replace("  application_id: 1111\n", "")
    settings = load_config(write(tmp_path, text), {"APP_3333_KEY": "key-of-3333"})
    assert settings.keys.for_application(2222).get_secret_value() == "file-key"  # type: ignore[union-attr]
    assert settings.keys.for_application(3333).get_secret_value() == "key-of-3333"  # type: ignore[union-attr]
    assert settings.keys.for_application(4444) is None


@pytest.mark.parametrize(
    ("text", "words"),
    [
        (GOOD.replace('  bootstrap_servers: "127.0.0.1:9092"\n', ""), "kafka.bootstrap_servers: required"),
        (GOOD.replace("max_rows: 5000", "max_rows: 200000"), "batch.max_rows: must be at most 100000"),
        (GOOD + "  bogus: 1\n", "batch.bogus: unknown key"),
        (GOOD.replace("format: confluent", "format: protobuf"), "avro.format"),
        (GOOD.replace('  schema_registry_url: "http://registry:8081"\n', ""), "avro.schema_registry_url: required"),
        ("kafka: [unclosed", "at line 1"),
        (GOOD + "upload:\n  rate_scope: cluster\n", "upload.rate_scope: must be 'instance' or 'group'"),
    ],
)
def test_bad_files_name_the_key(tmp_path: Path, text: str, words: str) -> None:
    with pytest.raises(ConfigError, match=None) as caught:
        load_config(write(tmp_path, text), {"BRIDGE_POST_API_KEY": KEY})
    assert words in str(caught.value)
    assert "\n" not in str(caught.value)


def test_a_missing_key_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no Post API key"):
        load_config(write(tmp_path, GOOD), {})


def test_check_config_prints_the_effective_configuration_redacted(tmp_path: Path) -> None:
    result = run_cli("check-config", "--config", str(write(tmp_path, GOOD)), env={"BRIDGE_POST_API_KEY": KEY})
    assert result.returncode == 0, result.stderr
    assert "max_rows: 5000" in result.stdout
    assert "default: set" in result.stdout
    assert KEY not in result.stdout + result.stderr


def test_check_config_on_a_bad_file_exits_2_with_one_line(tmp_path: Path) -> None:
    bad = write(tmp_path, GOOD.replace("max_rows: 5000", "max_rows: -1"))
    result = run_cli("check-config", "--config", str(bad), env={"BRIDGE_POST_API_KEY": KEY})
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0
    assert "batch.max_rows" in result.stderr
    assert KEY not in result.stderr


def test_help_lists_the_commands() -> None:
    result = run_cli("--help", env={})
    assert result.returncode == 0
    for command in ("run", "check-config", "dead-letters", "sandbox"):
        assert command in result.stdout


def test_the_dead_letter_tools_read_a_file_without_keys(tmp_path: Path) -> None:
    settings = load_config(write(tmp_path, GOOD), {}, keys_required=False)
    assert settings.config.kafka.dead_letter_topic == "appmetrica.events.dlq"
    with pytest.raises(ConfigError, match="no Post API key"):
        load_config(write(tmp_path, GOOD), {})


ROUTES = """
routes:
  - topics: ["shop.purchases"]
    method: revenue
  - topics: ["crm.profiles", "crm.profiles.eu"]
    method: profiles
"""


def test_routes_beside_kafka_topics(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, GOOD + ROUTES), {"BRIDGE_POST_API_KEY": KEY}).config
    assert [(r.topics, r.method) for r in config.effective_routes] == [
        (["appmetrica.events"], "events"),
        (["shop.purchases"], "revenue"),
        (["crm.profiles", "crm.profiles.eu"], "profiles"),
    ]
    assert config.topics == ["appmetrica.events", "shop.purchases", "crm.profiles", "crm.profiles.eu"]


def test_routes_alone_need_no_kafka_topics(tmp_path: Path) -> None:
    text = GOOD.replace('  topics: ["appmetrica.events"]\n', "") + ROUTES
    config = load_config(write(tmp_path, text), {"BRIDGE_POST_API_KEY": KEY}).config
    assert config.topics == ["shop.purchases", "crm.profiles", "crm.profiles.eu"]


@pytest.mark.parametrize(
    ("routes", "named"),
    [
        ('  - topics: ["appmetrica.events"]\n    method: revenue\n', "topic 'appmetrica.events' is named by both"),
        ('  - topics: ["a", "a"]\n    method: revenue\n', "topic 'a' is named by both routes.0 and routes.0"),
        ('  - topics: ["a"]\n    method: refunds\n', "routes.0.method"),
        ("  - topics: []\n    method: revenue\n", "routes.0.topics"),
    ],
)
def test_a_bad_route_is_named(tmp_path: Path, routes: str, named: str) -> None:
    with pytest.raises(ConfigError, match=named):
        load_config(write(tmp_path, GOOD + "routes:\n" + routes), {"BRIDGE_POST_API_KEY": KEY})


def test_no_topics_at_all_is_an_error(tmp_path: Path) -> None:
    text = GOOD.replace('  topics: ["appmetrica.events"]\n', "")
    with pytest.raises(ConfigError, match="no topics"):
        load_config(write(tmp_path, text), {"BRIDGE_POST_API_KEY": KEY})
