"""The chart's Grafana dashboard and PrometheusRule: rendered by `helm template`, every PromQL expression parsed,
and every metric it names exported by a running bridge's live `/metrics`, so neither can drift from the code."""

from __future__ import annotations

import json
import re
import uuid
from pathlib import Path
from typing import Any

import promql_parser
import pytest
import yaml
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]
from prometheus_client.parser import text_string_to_metric_families

from bridge.sandbox.server import Sandbox
from devtools.helm import ensure_helm
from tests.conftest import _wait_for_leaders
from tests.harness import BridgeProcess, bridge_config, event, produce, raw_avro, wait_for
from tests.test_helm_chart import CHART, Rendered, render

GRAFANA_VARIABLES = {"$__rate_interval": "5m", "$__interval": "1m", "$__range": "1h", "$job": ".*"}
PROMETHEUS_OWN = {"up"}
"""Series Prometheus itself makes; every other name must come from the bridge."""
SUFFIXES = {"counter": ("_total", "_created"), "histogram": ("_bucket", "_sum", "_count", "_created")}


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> Rendered:
    on = {"grafanaDashboard": {"enabled": True}, "prometheusRule": {"enabled": True}}
    return render(ensure_helm(), tmp_path_factory.mktemp("chart"), CHART / "ci" / "default-values.yaml", overrides=on)


def dashboard(rendered: Rendered) -> dict[str, Any]:
    maps = [m for m in rendered.manifests if m["kind"] == "ConfigMap" and m["metadata"]["name"].endswith("-dashboard")]
    assert len(maps) == 1, "one dashboard ConfigMap"
    text: str = maps[0]["data"]["appmetrica-bridge.json"]
    parsed: dict[str, Any] = json.loads(text)
    return parsed


def panel_expressions(board: dict[str, Any]) -> dict[str, str]:
    found = {}
    for panel in board["panels"]:
        for inner in [panel, *panel.get("panels", [])]:
            for target in inner.get("targets", []):
                found[f"{inner['title']} / {target['refId']}"] = target["expr"]
    return found


def rule_expressions(rendered: Rendered) -> dict[str, str]:
    rule = rendered.one("PrometheusRule")
    return {r["alert"]: r["expr"] for group in rule["spec"]["groups"] for r in group["rules"]}


def metric_names(expr: str) -> set[str]:
    """Every series name an expression selects, found by walking its parsed tree."""
    for variable, value in GRAFANA_VARIABLES.items():
        expr = expr.replace(variable, value)
    names: set[str] = set()

    def walk(node: Any) -> None:
        if isinstance(node, promql_parser.VectorSelector):
            assert node.name, f"a selector without a metric name in {expr!r}"
            names.add(node.name)
            return
        for attribute in ("lhs", "rhs", "expr", "param", "vector_selector"):
            child = getattr(node, attribute, None)
            if child is not None:
                walk(child)
        for child in getattr(node, "args", None) or []:
            walk(child)

    walk(promql_parser.parse(expr))
    return names


def exported(metrics_text: str) -> set[str]:
    """The series names a /metrics text can carry: each family's name with its type's suffixes."""
    names = set()
    for family in text_string_to_metric_families(metrics_text):
        suffixes = SUFFIXES.get(family.type, ("",))
        names |= {family.name + suffix for suffix in suffixes}
    return names


@pytest.fixture(scope="module")
async def live_metrics(kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> str:
    """/metrics of a bridge that ran: started against the broker and a sandbox, moved events, was scraped."""
    admin = AdminClient({"bootstrap.servers": kafka_bootstrap})
    topic = f"test-dashboard-{uuid.uuid4().hex[:8]}"
    admin.create_topics([NewTopic(topic, num_partitions=2, replication_factor=1)])[topic].result(timeout=30)
    _wait_for_leaders(admin, topic, 2)
    server = Sandbox()
    await server.start()
    try:
        produce(kafka_bootstrap, topic, [raw_avro(event(seq)) for seq in range(100)], partitions=2)
        config = bridge_config(kafka_bootstrap, topic, server.url, group=f"g-{topic}")
        bridge = BridgeProcess(config, tmp_path_factory.mktemp("bridge")).start()
        try:
            await bridge.serving()
            await wait_for(lambda: len(server.state.events) == 100, 60, "the events")
            status, text = await bridge.get("/metrics")
            assert status == 200
        finally:
            bridge.kill()
    finally:
        await server.stop()
        admin.delete_topics([topic])[topic].result(timeout=30)
    return text


def test_the_dashboard_is_a_configmap_the_grafana_sidecar_picks_up(rendered: Rendered) -> None:
    maps = [m for m in rendered.manifests if m["kind"] == "ConfigMap" and m["metadata"]["name"].endswith("-dashboard")]
    assert maps[0]["metadata"]["labels"]["grafana_dashboard"] == "1"
    board = dashboard(rendered)
    titles = " | ".join(p["title"] for p in board["panels"]).lower()
    for topic in (
        "method and application",
        "outcome",
        "latency",
        "retries",
        "retry-after",
        "concurrency",
        "held records",
        "held bytes",
        "lag",
        "dead letters",
        "refused keys",
    ):
        assert topic in titles, f"no panel for {topic}"


def test_the_alerts_are_the_ones_the_operations_guide_shows(rendered: Rendered) -> None:
    rules = (CHART / "alerts" / "appmetrica-bridge.yaml").read_text()
    guide = (Path(__file__).resolve().parents[1] / "docs" / "operations.md").read_text()
    assert rules.strip() in guide, "docs/operations.md shows helm/appmetrica-bridge/alerts/appmetrica-bridge.yaml"
    assert rendered.one("PrometheusRule")["spec"] == yaml.safe_load(rules)


def test_without_the_values_neither_is_rendered(tmp_path: Path) -> None:
    kinds = render(ensure_helm(), tmp_path, CHART / "ci" / "default-values.yaml").kinds()
    assert "PrometheusRule" not in kinds and kinds.count("ConfigMap") == 1


def test_every_expression_parses_and_names_only_metrics_the_bridge_exports(
    rendered: Rendered, live_metrics: str
) -> None:
    available = exported(live_metrics) | PROMETHEUS_OWN
    expressions = {**panel_expressions(dashboard(rendered)), **rule_expressions(rendered)}
    assert len(expressions) > 20
    unknown = {
        where: sorted(metric_names(expr) - available)
        for where, expr in expressions.items()
        if metric_names(expr) - available
    }
    assert unknown == {}, f"names the bridge does not export: {unknown}"
    variables = [v["definition"] for v in dashboard(rendered)["templating"]["list"] if "definition" in v]
    for definition in variables:
        match = re.fullmatch(r"label_values\((\w+), \w+\)", definition)
        assert match and match[1] in available, definition
