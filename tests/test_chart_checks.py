"""The chart refuses what the bridge refuses before anything rolls (a hook Job running check-config, and the same
check offline with scripts/check-values), and static membership gives each pod its name as group.instance.id."""

from __future__ import annotations

import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import yaml

from bridge.config.model import load_config
from devtools.helm import ensure_helm
from devtools.testkit.helm_render import CHART, DEFAULT_VALUES, KEY, REPO, Rendered, render, render_error

BAD_REGISTRY_URL = {"config": {"avro": {"schema_registry_url": "schema-registry:8081"}}}
UNKEYED_APPLICATION = {"config": {"post_api": {"applications": {2222: {"api_key_env": "APP_2222_KEY"}}}}}
TOPIC_TWICE = {"config": {"routes": [{"topics": ["appmetrica.events"], "method": "revenue"}]}}
"""A topic in two routes: the values' schema cannot see it, the bridge refuses it."""
INSTANCE_ID = "BRIDGE_KAFKA__PROPERTIES__GROUP.INSTANCE.ID"


@pytest.fixture(scope="module")
def helm() -> Path:
    return ensure_helm()


def check_job(rendered: Rendered) -> dict[str, Any]:
    job = rendered.one("Job")
    assert job["metadata"]["annotations"]["helm.sh/hook"] == "pre-install,pre-upgrade"
    container: dict[str, Any] = job["spec"]["template"]["spec"]["containers"][0]
    return container


def run_check_job(container: dict[str, Any]) -> subprocess.CompletedProcess[str]:
    """The hook's command as the pod runs it, with the project's appmetrica-bridge on PATH and Secrets stood in."""
    env = {e["name"]: e.get("value", f"stand-in:{e['name'].lower()}") for e in container["env"]}
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"
    return subprocess.run(
        container["command"],
        env={"PATH": path, "HOME": os.environ.get("HOME", "/"), **env},
        cwd=REPO,
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )


def test_the_hook_checks_the_configuration_the_pods_get_and_passes_a_good_one(helm: Path, tmp_path: Path) -> None:
    rendered = render(helm, tmp_path, DEFAULT_VALUES)
    container = check_job(rendered)
    checked = next(e["value"] for e in container["env"] if e["name"] == "APPMETRICA_BRIDGE_CHECKED_CONFIG")
    assert yaml.safe_load(checked) == yaml.safe_load(rendered.config_text())
    pod_env = {e["name"]: e for e in rendered.bridge_container()["env"]}
    assert {e["name"]: e for e in container["env"] if e["name"] in pod_env} == pod_env
    result = run_check_job(container)
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize(
    ("overrides", "error"),
    [
        (BAD_REGISTRY_URL, "avro.schema_registry_url"),
        (UNKEYED_APPLICATION, "APP_2222_KEY"),
        (TOPIC_TWICE, "appmetrica.events"),
    ],
)
def test_the_hook_fails_on_a_configuration_the_bridge_refuses(
    helm: Path, tmp_path: Path, overrides: dict[str, Any], error: str
) -> None:
    result = run_check_job(check_job(render(helm, tmp_path, DEFAULT_VALUES, overrides=overrides)))
    assert result.returncode == 2
    assert error in result.stderr


def test_the_hook_never_carries_the_key_the_chart_stores(helm: Path, tmp_path: Path) -> None:
    overrides = {"postApiKey": {"existingSecret": "", "value": KEY}}
    rendered = render(helm, tmp_path, DEFAULT_VALUES, overrides=overrides)
    job = yaml.safe_dump(rendered.one("Job"))
    assert KEY not in job
    assert run_check_job(check_job(rendered)).returncode == 0


def test_the_chart_refuses_a_key_the_bridge_would_refuse(helm: Path, tmp_path: Path) -> None:
    overrides = {"postApiKey": {"existingSecret": "", "value": "two words"}}
    assert "postApiKey.value" in render_error(helm, tmp_path, DEFAULT_VALUES, overrides=overrides)


def check_values(*files: Path) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "devtools.check_values", *map(str, files)]
    return subprocess.run(command, capture_output=True, text=True, check=False, timeout=120, cwd=REPO)


def test_check_values_accepts_every_ci_values_file() -> None:
    files = sorted(CHART.glob("ci/*-values.yaml"))
    with ThreadPoolExecutor(len(files)) as pool:  # one command per file, each alone: all at once
        results = list(pool.map(check_values, files))
    assert len(results) >= 8
    for values, result in zip(files, results, strict=True):
        assert result.returncode == 0, f"{values.name}: {result.stderr}"


@pytest.mark.parametrize(
    ("overrides", "error"),
    [
        (BAD_REGISTRY_URL, "avro.schema_registry_url"),
        (UNKEYED_APPLICATION, "APP_2222_KEY"),
        ({"config": {"kafka": {"bootstrap_servers": ""}}}, "config.kafka.bootstrap_servers is required"),
    ],
)
def test_check_values_refuses_what_the_chart_or_the_bridge_refuses(
    tmp_path: Path, overrides: dict[str, Any], error: str
) -> None:
    values = tmp_path / "values.yaml"
    values.write_text(yaml.safe_dump(overrides))
    result = check_values(DEFAULT_VALUES, values)
    assert result.returncode == 2
    assert error in result.stderr
    assert "Traceback" not in result.stderr


def test_static_membership_gives_each_pod_its_name_as_group_instance_id(helm: Path, tmp_path: Path) -> None:
    off = render(helm, tmp_path, DEFAULT_VALUES)
    assert INSTANCE_ID not in off.pod_environ()
    on = render(helm, tmp_path, DEFAULT_VALUES, overrides={"staticMembership": {"enabled": True}})
    env = next(e for e in on.bridge_container()["env"] if e["name"] == INSTANCE_ID)
    assert env["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.name"}}
    # What the bridge makes of it, with the pod's name where the downward API puts it.
    config = tmp_path / "config.yaml"
    config.write_text(on.config_text())
    environ = on.pod_environ() | {INSTANCE_ID: "ci-appmetrica-bridge-7d9f8-x2x4q"}
    properties = load_config(config, environ).config.kafka.properties
    assert properties["group.instance.id"] == "ci-appmetrica-bridge-7d9f8-x2x4q"


def test_static_membership_and_a_hand_set_group_instance_id_are_refused_together(helm: Path, tmp_path: Path) -> None:
    overrides = {
        "staticMembership": {"enabled": True},
        "config": {"kafka": {"properties": {"group.instance.id": "fixed"}}},
    }
    assert "group.instance.id" in render_error(helm, tmp_path, DEFAULT_VALUES, overrides=overrides)
