"""check-config catches what the bridge would refuse later, all at once and in the operator's words (issue 19,
items 5 to 8; issue 18, item 7): JSON-only files need no `avro:`, every problem of a file is named with its key,
mappings are judged by their method's own rules, YAML lookup keys stay the text written, a dead-letter topic that
is also consumed is refused.

Two cases run `python -m bridge check-config` itself (a file it accepts, a file it refuses); the rest ask the same
`main` in process (`checked`), a second of imports less each.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from bridge.config import yaml_text
from bridge.config.model import ConfigError, load_config
from bridge.mapping import Chunk, CompiledMapping
from devtools.testkit.configs import ENV, JSON_ONLY, KEY, check_config, cli, problems, write
from devtools.testkit.configs import check_config_in_process as checked

# -- no avro: section when no route reads Avro -------------------------------------------------------------------


def test_a_json_only_configuration_needs_no_avro_section(tmp_path: Path) -> None:
    settings = load_config(write(tmp_path, JSON_ONLY), ENV)
    assert not settings.config.reads_avro
    result = check_config(tmp_path, JSON_ONLY)
    assert result.returncode == 0, result.stderr
    assert yaml.safe_load(result.stdout)["routes"][0]["format"] == "json"


def test_preview_of_a_file_on_a_json_only_configuration_needs_no_registry(tmp_path: Path) -> None:
    config = write(tmp_path, JSON_ONLY)
    sample = tmp_path / "sample.jsonl"
    sample.write_text(json.dumps({"user": "player-1", "type": "level_up", "ts": int(time.time())}) + "\n")
    result = cli("preview", "--config", str(config), "--input", str(sample), "--json")
    assert result.returncode == 0, result.stderr
    assert "player-1" in result.stdout and "level_up" in result.stdout


def test_an_avro_route_still_needs_the_registry_and_says_so(tmp_path: Path) -> None:
    text = JSON_ONLY.replace("    format: json\n", "")
    result = checked(tmp_path, text)
    assert result.returncode == 2
    assert problems(result) == [
        "avro.schema_registry_url: required when a route reads Avro and avro.format is confluent"
    ]


# -- every problem at once, each at its key ------------------------------------------------------------------------

TWO_PROBLEMS = (
    JSON_ONLY
    + """
batch:
  max_rows: 0
upload:
  rate_scope: cluster
"""
)


def test_a_file_with_two_errors_names_both_in_one_run(tmp_path: Path) -> None:
    result = check_config(tmp_path, TWO_PROBLEMS)
    assert result.returncode == 2
    assert problems(result) == [
        "batch.max_rows: must be at least 1",
        "upload.rate_scope: must be 'instance' or 'group'",
    ]


def test_problems_of_different_kinds_are_named_together(tmp_path: Path) -> None:
    """A field error, a cross-section error, a mapping error and a missing key: checked by different steps, all
    reported by the one run."""
    text = TWO_PROBLEMS.replace("dead_letter_topic: game.events.dlq", "dead_letter_topic: game.events").replace(
        "      event_name: type\n", ""
    )
    result = checked(tmp_path, text, env={"BRIDGE_POST_API_KEY": ""})
    assert result.returncode == 2
    named = [line.split(":")[0] for line in problems(result)]
    assert named == [
        "routes.0.mapping.event_name",
        "batch.max_rows",
        "upload.rate_scope",
        "kafka.dead_letter_topic",
        "post_api.api_key_file / BRIDGE_POST_API_KEY",
    ], result.stderr


def test_a_near_miss_key_gets_a_suggestion(tmp_path: Path) -> None:
    result = checked(tmp_path, JSON_ONLY + "batch:\n  max_row: 5\n")
    assert result.returncode == 2
    assert problems(result) == ["batch.max_row: unknown key (did you mean max_rows?)"]


def test_an_environment_override_is_named_as_one(tmp_path: Path) -> None:
    result = checked(tmp_path, JSON_ONLY, env={"BRIDGE_BATCH__MAX_ROW": "5000", "BRIDGE_UPLOAD__TIMEOUT_S": "-1"})
    assert result.returncode == 2
    assert problems(result) == [
        "environment override BRIDGE_BATCH__MAX_ROW: batch.max_row is not a configuration key (did you mean max_rows?)",
        "upload.timeout_s (environment override BRIDGE_UPLOAD__TIMEOUT_S): must be greater than 0",
    ]


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("{pack: 5}", "routes.0.mapping.event_json.pack: must be rest, a list of dot paths or a mapping of names"),
        ("{pack: rest, path: x}", "routes.0.mapping.event_json: names path and pack: a source is one form"),
        ("{value: [1, 2]}", "routes.0.mapping.event_json.value: must be text, a number or true/false"),
        ("{path: x, lookupp: {a: b}}", "routes.0.mapping.event_json.lookupp: unknown key (did you mean lookup?)"),
    ],
)
def test_mapping_messages_are_in_the_projects_words(tmp_path: Path, source: str, expected: str) -> None:
    result = checked(tmp_path, JSON_ONLY + f"      event_json: {source}\n")
    assert result.returncode == 2
    (problem,) = problems(result)
    assert problem.startswith(expected), problem
    for pydantic_words in ("Input should", "literal[", "list[", "function-after", "Extra inputs", "field."):
        assert pydantic_words not in problem


# -- a mapping judged by its method's own rules --------------------------------------------------------------------


def test_a_mapping_without_event_name_is_refused(tmp_path: Path) -> None:
    result = checked(tmp_path, JSON_ONLY.replace("      event_name: type\n", ""))
    assert result.returncode == 2
    assert problems(result) == ["routes.0.mapping.event_name: not mapped; the events method requires it"]


@pytest.mark.parametrize(
    ("entry", "expected"),
    [
        ("session_type: {value: sometimes}", "session_type.value: session_type 'sometimes' is not one of background"),
        ("application_id: {value: -5}", "application_id.value: application_id '-5' is not a positive integer"),
        ("event_name: {value: ''}", "event_name.value: an empty value is absent, and event_name is required"),
        ("session_type: {path: s, lookup: {a: foreground, b: never}}", "session_type.lookup.b: session_type 'never'"),
        ("event_json: {value: '[1]'}", "event_json.value: event_json must be a JSON object"),
        ("profile_id: [user, {value: ''}]", None),
    ],
)
def test_constants_are_judged_by_the_methods_rules(tmp_path: Path, entry: str, expected: str | None) -> None:
    name = entry.split(":")[0]
    text = "\n".join(line for line in JSON_ONLY.splitlines() if not line.startswith(f"      {name}:"))
    result = checked(tmp_path, text + f"\n      {entry}\n")
    if expected is None:
        assert result.returncode == 0, result.stderr
        return
    assert result.returncode == 2
    assert [problem for problem in problems(result) if problem.startswith(f"routes.0.mapping.{expected}")], (
        result.stderr
    )


def test_a_mapping_needs_an_identity_of_its_method(tmp_path: Path) -> None:
    result = checked(tmp_path, JSON_ONLY.replace("      profile_id: user\n", ""))
    assert result.returncode == 2
    assert problems(result) == [
        "routes.0.mapping.profile_id: neither profile_id nor appmetrica_device_id is mapped; events takes one"
    ]


def test_a_mapping_without_an_application_needs_the_default_one(tmp_path: Path) -> None:
    result = checked(tmp_path, JSON_ONLY.replace("post_api:\n  application_id: 3713842\n", ""))
    assert result.returncode == 2
    assert problems(result) == [
        "routes.0.mapping.application_id: not mapped, and post_api.application_id is not set: "
        "no record would have an application"
    ]


def test_an_application_a_mapping_names_needs_a_key(tmp_path: Path) -> None:
    keys = "post_api:\n  applications:\n    3713842: {api_key_env: GAME_KEY}\n"
    text = (
        JSON_ONLY.replace("post_api:\n", keys) + "      application_id: {path: app, lookup: {game: 3713842, tv: 42}}\n"
    )
    result = checked(tmp_path, text, env={"BRIDGE_POST_API_KEY": None, "GAME_KEY": KEY})
    assert result.returncode == 2
    assert problems(result) == [
        "routes.0.mapping.application_id.lookup.tv: application 42 has no Post API key (post_api.applications)"
    ]


# -- YAML lookup keys are the text written -------------------------------------------------------------------------

COUNTRIES = (
    JSON_ONLY
    + """
      application_id: {path: country, lookup: {no: 1111, yes: 2222, on: 3333, off: 4444, 1.0: 5555, 0x10: 6666}}
"""
)


def test_lookup_keys_no_yes_on_off_stay_strings(tmp_path: Path) -> None:
    route = load_config(write(tmp_path, COUNTRIES), ENV).config.routes[0]
    assert route.mapping is not None
    compiled = CompiledMapping("events", route.mapping)
    countries = ["no", "yes", "on", "off", "1.0", "0x10"]
    records = [{"user": "u", "type": "t", "ts": 1, "country": country} for country in countries]
    mapped = compiled.apply(Chunk(records, None, None))
    assert not mapped.failures
    applications = mapped.columns[compiled.parameters.index("application_id")]
    assert applications == [1111, 2222, 3333, 4444, 5555, 6666]


def test_check_config_prints_lookup_keys_as_written(tmp_path: Path) -> None:
    result = checked(tmp_path, COUNTRIES)
    assert result.returncode == 0, result.stderr
    lookup = yaml.safe_load(result.stdout)["routes"][0]["mapping"]["application_id"]["lookup"]
    assert lookup == {"no": 1111, "yes": 2222, "on": 3333, "off": 4444, "1.0": 5555, "0x10": 6666}


YAML_11_WORDS = ["no", "No", "NO", "yes", "y", "n", "on", "off", "true", "False", "~", "null", "0123", "0x1F"]
YAML_11_WORDS += ["0o17", "1_000", "12:30:00", "1e3", ".inf", ".NaN", "2001-12-14", "-0", "+5"]


@given(st.sampled_from(YAML_11_WORDS) | st.from_regex(r"[A-Za-z0-9][A-Za-z0-9._+:-]{0,12}", fullmatch=True))
def test_any_plain_mapping_key_stays_the_text_written(key: str) -> None:
    loaded = yaml_text.load(f"{key}: 1\n")
    assert list(loaded) == [key]


# -- a dead-letter topic that is also consumed ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("dead_letters", "consumed_by"),
    [("game.events", "routes.0"), ("shop.purchases", "routes.1"), ("legacy.events", "kafka.topics")],
)
def test_a_dead_letter_topic_that_is_consumed_is_refused(tmp_path: Path, dead_letters: str, consumed_by: str) -> None:
    text = (
        JSON_ONLY.replace("dead_letter_topic: game.events.dlq", f"dead_letter_topic: {dead_letters}")
        + "  - {topics: [shop.purchases], method: revenue}\n"
        + 'avro: {schema_registry_url: "http://127.0.0.1:8081"}\n'
    ).replace("kafka:\n", "kafka:\n  topics: [legacy.events]\n")
    result = checked(tmp_path, text)
    assert result.returncode == 2
    assert problems(result) == [
        f"kafka.dead_letter_topic: {dead_letters!r} is also consumed ({consumed_by}): every dead letter would be "
        "read back and dead-lettered again; name a topic of its own"
    ]


def test_a_dead_letter_topic_set_by_the_environment_is_checked_too(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(write(tmp_path, JSON_ONLY), {**ENV, "BRIDGE_KAFKA__DEAD_LETTER_TOPIC": "game.events"})
    (problem,) = caught.value.problems
    assert problem.startswith(
        "kafka.dead_letter_topic (environment override BRIDGE_KAFKA__DEAD_LETTER_TOPIC): 'game.events' is also consumed"
    )
