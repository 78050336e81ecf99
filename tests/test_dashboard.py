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

from bridge.sandbox.config import Faults
from bridge.sandbox.server import Sandbox, SandboxOptions
from devtools.helm import ensure_helm
from devtools.testkit.bridge_child import BridgeProcess, bridge_config
from devtools.testkit.helm_render import CHART, Rendered, render
from devtools.testkit.kafka import produce, wait_for_leaders
from devtools.testkit.records import event, raw_avro
from devtools.testkit.waiting import wait_for

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


TARGET_LABELS = {"job", "instance", "pod", "namespace", "container", "service", "endpoint", "le", "__name__"}
"""Labels Prometheus adds when it scrapes (and a histogram's bucket label), which no /metrics sample carries."""


class Uses:
    """What one expression asks of the metrics: the series it selects, and the labels it groups or matches them by."""

    def __init__(self, expr: str) -> None:
        for variable, value in GRAFANA_VARIABLES.items():
            expr = expr.replace(variable, value)
        self.expr = expr
        self.names: set[str] = set()
        self.labels: list[tuple[frozenset[str], str]] = []
        """(the series names in a subtree, a label that subtree is grouped or matched by)."""
        self._walk(promql_parser.parse(expr))

    def _walk(self, node: Any) -> set[str]:
        if isinstance(node, promql_parser.VectorSelector):
            assert node.name, f"a selector without a metric name in {self.expr!r}"
            self.names.add(node.name)
            self.labels += [(frozenset({node.name}), m.name) for m in node.matchers.matchers]
            return {node.name}
        below: set[str] = set()
        for attribute in ("lhs", "rhs", "expr", "param", "vector_selector"):
            child = getattr(node, attribute, None)
            if child is not None:
                below |= self._walk(child)
        for child in getattr(node, "args", None) or []:
            below |= self._walk(child)
        if isinstance(node, promql_parser.AggregateExpr) and node.modifier is not None:
            self.labels += [(frozenset(below), label) for label in node.modifier.labels]
        return below


class Exported:
    """What a live /metrics carries: every series name a family can have, and the labels its samples have."""

    def __init__(self, metrics_text: str) -> None:
        self.names: set[str] = set(PROMETHEUS_OWN)
        self.labels: dict[str, set[str]] = {}
        for family in text_string_to_metric_families(metrics_text):
            self.names |= {family.name + suffix for suffix in SUFFIXES.get(family.type, ("",))}
            for sample in family.samples:
                self.labels.setdefault(sample.name, set()).update(sample.labels)

    def unknown_labels(self, uses: Uses) -> list[str]:
        """Labels grouped or matched by that no sample of the selected series has (series without samples in this
        run are not judged)."""
        unknown = []
        for names, label in uses.labels:
            seen = [self.labels[name] for name in names if name in self.labels]
            if label not in TARGET_LABELS and seen and not any(label in labels for labels in seen):
                unknown.append(f"{label} on {sorted(names)}")
        return unknown


@pytest.fixture(scope="module")
async def live_metrics(kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> str:
    """/metrics of a bridge that ran: started against the broker and a sandbox, moved events, was scraped."""
    admin = AdminClient({"bootstrap.servers": kafka_bootstrap})
    topic = f"test-dashboard-{uuid.uuid4().hex[:8]}"
    dlq = f"{topic}.dlq"
    for name in (topic, dlq):
        admin.create_topics([NewTopic(name, num_partitions=2, replication_factor=1)])[name].result(timeout=30)
        wait_for_leaders(admin, name, 2)
    # 429s with Retry-After and a poison record, so retries, waits and dead letters have samples to judge labels by.
    server = Sandbox(SandboxOptions(faults=Faults(fault_429=0.3, retry_after=1), seed=3))
    await server.start()
    try:
        produce(kafka_bootstrap, topic, [raw_avro(event(seq)) for seq in range(100)] + [b"poison"], partitions=2)
        config = bridge_config(
            kafka_bootstrap,
            topic,
            server.url,
            group=f"g-{topic}",
            kafka={"dead_letter_topic": dlq},
            batch={"max_rows": 10, "linger_ms": 50},
        )
        bridge = BridgeProcess(config, tmp_path_factory.mktemp("bridge")).start()
        try:
            await bridge.serving()
            await wait_for(lambda: len({e["event_json"] for e in server.state.events}) == 100, 60, "the events")
            await wait_for(lambda: server.state.by_status[429] > 0, 10, "a 429")
            status, text = await bridge.get("/metrics")
            assert status == 200
        finally:
            bridge.kill()
    finally:
        await server.stop()
        for future in admin.delete_topics([topic, dlq]).values():
            future.result(timeout=30)
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


def test_every_expression_parses_and_names_only_metrics_and_labels_the_bridge_exports(
    rendered: Rendered, live_metrics: str
) -> None:
    live = Exported(live_metrics)
    expressions = {**panel_expressions(dashboard(rendered)), **rule_expressions(rendered)}
    assert len(expressions) > 20
    uses = {where: Uses(expr) for where, expr in expressions.items()}
    unknown = {where: sorted(u.names - live.names) for where, u in uses.items() if u.names - live.names}
    assert unknown == {}, f"names the bridge does not export: {unknown}"
    unknown_labels = {where: live.unknown_labels(u) for where, u in uses.items() if live.unknown_labels(u)}
    assert unknown_labels == {}, f"labels the bridge's samples lack: {unknown_labels}"
    judged = {label for u in uses.values() for names, label in u.labels if any(n in live.labels for n in names)}
    assert {"method", "application", "status", "reason", "topic"} <= judged, "the live run gave labels to judge"
    variables = [v["definition"] for v in dashboard(rendered)["templating"]["list"] if "definition" in v]
    for definition in variables:
        match = re.fullmatch(r"label_values\((\w+), \w+\)", definition)
        assert match and match[1] in live.names, definition
