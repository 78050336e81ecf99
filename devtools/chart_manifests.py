"""Split rendered chart manifests: Kubernetes' own kinds go on to kubernetes-validate, custom resources stop here.

kubernetes-validate bundles only Kubernetes' schemas and lets any other kind through with a mere warning. The
custom resources this chart renders (KEDA's ScaledObject, the Prometheus Operator's ServiceMonitor and
PrometheusRule) therefore
get a structural check here of the fields the chart relies on and of what they point at in the same release;
a custom kind this module does not know fails, so a new one cannot pass unchecked.

    helm template ... | python -m devtools.chart_manifests > builtin.yaml   # problems on stderr, exit 1
"""

from __future__ import annotations

import re
import sys
from collections.abc import Callable, Iterable, Sequence
from typing import Any, TextIO

import yaml

Manifest = dict[str, Any]

_DURATION = re.compile(r"^[0-9]+(ms|s|m|h)$")


def is_builtin(manifest: Manifest) -> bool:
    """Whether the kind belongs to Kubernetes itself (core or a *.k8s.io group) rather than to a CRD."""
    api_version = str(manifest.get("apiVersion", ""))
    group = api_version.rpartition("/")[0]
    return "." not in group or group.endswith(".k8s.io")


def check_custom(manifests: Sequence[Manifest]) -> list[str]:
    """Problems of every custom resource in `manifests`; the built-in ones serve as what they may refer to."""
    problems = []
    for manifest in manifests:
        if is_builtin(manifest):
            continue
        key = (str(manifest.get("apiVersion")), str(manifest.get("kind")))
        name = f"{key[1]}/{_get(manifest, 'metadata', 'name')}"
        check = _CHECKS.get(key)
        if check is None:
            problems.append(f"{name}: {key[0]} {key[1]} is a custom kind with no check in devtools.chart_manifests")
            continue
        if not _get(manifest, "metadata", "name"):
            problems.append(f"{name}: metadata.name is missing")
        problems.extend(f"{name}: {problem}" for problem in check(manifest, manifests))
    return problems


def _get(node: Any, *path: str) -> Any:
    for part in path:
        if not isinstance(node, dict):
            return None
        node = node.get(part)
    return node


def _find(manifests: Iterable[Manifest], kind: str, name: Any) -> Manifest | None:
    return next((m for m in manifests if m.get("kind") == kind and _get(m, "metadata", "name") == name), None)


def _check_service_monitor(monitor: Manifest, manifests: Sequence[Manifest]) -> list[str]:
    problems = []
    selector = _get(monitor, "spec", "selector", "matchLabels")
    if not isinstance(selector, dict) or not selector:
        return ["spec.selector.matchLabels must be a non-empty mapping"]
    services = [
        m
        for m in manifests
        if m.get("kind") == "Service" and selector.items() <= (_get(m, "metadata", "labels") or {}).items()
    ]
    if not services:
        problems.append(f"spec.selector.matchLabels {selector} selects no Service of the release")
    port_names = {p.get("name") for s in services for p in _get(s, "spec", "ports") or []}
    endpoints = _get(monitor, "spec", "endpoints")
    if not isinstance(endpoints, list) or not endpoints:
        return [*problems, "spec.endpoints must be a non-empty list"]
    for i, endpoint in enumerate(endpoints):
        where = f"spec.endpoints[{i}]"
        if not isinstance(endpoint, dict):
            problems.append(f"{where} must be a mapping")
            continue
        if services and endpoint.get("port") not in port_names:
            problems.append(f"{where}.port {endpoint.get('port')!r} is not a port name of {sorted(port_names)}")
        if not str(endpoint.get("path", "")).startswith("/"):
            problems.append(f"{where}.path must start with /")
        for field in ("interval", "scrapeTimeout"):
            if field in endpoint and not _DURATION.match(str(endpoint[field])):
                problems.append(f"{where}.{field} {endpoint[field]!r} is not a duration such as 30s")
    return problems


def _check_scaled_object(scaled: Manifest, manifests: Sequence[Manifest]) -> list[str]:
    problems = []
    target = _get(scaled, "spec", "scaleTargetRef")
    if not isinstance(target, dict) or not target.get("name"):
        problems.append("spec.scaleTargetRef.name is missing")
    elif target.get("kind", "Deployment") == "Deployment" and _find(manifests, "Deployment", target["name"]) is None:
        problems.append(f"spec.scaleTargetRef names Deployment {target['name']!r}, which the release lacks")
    low, high = _get(scaled, "spec", "minReplicaCount"), _get(scaled, "spec", "maxReplicaCount")
    if not isinstance(low, int) or not isinstance(high, int) or not 0 <= low <= high:
        problems.append(f"spec.minReplicaCount {low!r} and maxReplicaCount {high!r} must be 0 <= min <= max")
    triggers = _get(scaled, "spec", "triggers")
    if not isinstance(triggers, list) or not triggers:
        return [*problems, "spec.triggers must be a non-empty list"]
    for i, trigger in enumerate(triggers):
        where = f"spec.triggers[{i}]"
        metadata = _get(trigger, "metadata")
        if _get(trigger, "type") != "kafka" or not isinstance(metadata, dict):
            problems.append(f"{where} must be a kafka trigger with metadata")
            continue
        not_strings = sorted(k for k, v in metadata.items() if not isinstance(v, str))
        if not_strings:
            problems.append(f"{where}.metadata values must be strings; not: {not_strings}")
        missing = sorted({"bootstrapServers", "consumerGroup", "lagThreshold"} - metadata.keys())
        if missing:
            problems.append(f"{where}.metadata lacks {missing}")
        if not str(metadata.get("lagThreshold", "")).isdigit():
            problems.append(f"{where}.metadata.lagThreshold must be a whole number")
        if metadata.get("offsetResetPolicy", "latest") not in ("earliest", "latest"):
            problems.append(f"{where}.metadata.offsetResetPolicy must be earliest or latest")
        ref = _get(trigger, "authenticationRef")
        if ref is not None and not _get(ref, "name"):
            problems.append(f"{where}.authenticationRef.name is missing")
    return problems


def _check_prometheus_rule(rule: Manifest, _: Sequence[Manifest]) -> list[str]:
    """The structure the Prometheus Operator needs; the PromQL itself is parsed by tests/test_dashboard.py."""
    groups = _get(rule, "spec", "groups")
    if not isinstance(groups, list) or not groups:
        return ["spec.groups must be a non-empty list"]
    problems = []
    for i, group in enumerate(groups):
        where = f"spec.groups[{i}]"
        rules = _get(group, "rules")
        if not _get(group, "name") or not isinstance(rules, list) or not rules:
            problems.append(f"{where} needs a name and a non-empty list of rules")
            continue
        for j, entry in enumerate(rules):
            at = f"{where}.rules[{j}]"
            if not isinstance(entry, dict) or not (entry.get("alert") or entry.get("record")):
                problems.append(f"{at} must be a mapping with alert or record")
                continue
            if not isinstance(entry.get("expr"), str) or not entry["expr"].strip():
                problems.append(f"{at}.expr must be a PromQL expression")
            if "for" in entry and not _DURATION.match(str(entry["for"])):
                problems.append(f"{at}.for {entry['for']!r} is not a duration such as 5m")
            for field in ("labels", "annotations"):
                values = entry.get(field, {})
                if not isinstance(values, dict) or not all(isinstance(v, str) for v in values.values()):
                    problems.append(f"{at}.{field} must map names to strings")
    return problems


_CHECKS: dict[tuple[str, str], Callable[[Manifest, Sequence[Manifest]], list[str]]] = {
    ("monitoring.coreos.com/v1", "ServiceMonitor"): _check_service_monitor,
    ("keda.sh/v1alpha1", "ScaledObject"): _check_scaled_object,
    ("monitoring.coreos.com/v1", "PrometheusRule"): _check_prometheus_rule,
}


def load(stream: TextIO | str) -> list[Manifest]:
    manifests = [m for m in yaml.safe_load_all(stream) if m is not None]
    if not all(isinstance(m, dict) and m.get("apiVersion") and m.get("kind") for m in manifests):
        raise ValueError("every document must be a mapping with apiVersion and kind")
    return manifests


def main(stdin: TextIO = sys.stdin, stdout: TextIO = sys.stdout) -> int:
    try:
        manifests = load(stdin)
    except (yaml.YAMLError, ValueError) as exc:
        print(f"devtools.chart_manifests: {exc}", file=sys.stderr)
        return 1
    problems = check_custom(manifests)
    for problem in problems:
        print(f"devtools.chart_manifests: {problem}", file=sys.stderr)
    yaml.safe_dump_all([m for m in manifests if is_builtin(m)], stdout, sort_keys=False)
    return 1 if problems else 0


if __name__ == "__main__":
    raise SystemExit(main())
