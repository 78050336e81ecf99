"""`helm template` of the chart, parsed into its manifests."""

from __future__ import annotations

import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from devtools.chart_manifests import Manifest

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "helm" / "appmetrica-bridge"


class Rendered:
    """What one `helm template` produced."""

    def __init__(self, manifests: list[Manifest]) -> None:
        self.manifests = manifests

    def kinds(self) -> list[str]:
        return sorted(m["kind"] for m in self.manifests)

    def one(self, kind: str) -> Manifest:
        found = [m for m in self.manifests if m["kind"] == kind]
        assert len(found) == 1, f"expected one {kind}, rendered {self.kinds()}"
        return found[0]

    def config_text(self) -> str:
        # The bridge's own ConfigMap; the Grafana dashboard's is another.
        (config_map,) = [m for m in self.manifests if m["kind"] == "ConfigMap" and "config.yaml" in m.get("data", {})]
        text: str = config_map["data"]["config.yaml"]
        return text

    def pod(self) -> Manifest:
        pod: Manifest = self.one("Deployment")["spec"]["template"]
        return pod

    def bridge_container(self) -> Manifest:
        containers = self.pod()["spec"]["containers"]
        return next(c for c in containers if c["name"] == "appmetrica-bridge")

    def pod_environ(self) -> dict[str, str]:
        """The bridge container's environment as the pod would see it, Secret references filled with stand-ins."""
        return {
            # user:password shaped, as BRIDGE_SCHEMA_REGISTRY_USER_INFO must be.
            env["name"]: env.get("value", f"stand-in:{env['name'].lower()}")
            for env in self.bridge_container().get("env", [])
        }


def run_helm(helm: Path, args: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(helm), *args], capture_output=True, text=True, check=False, timeout=60)


def template_args(tmp_path: Path, chart: Path, values: list[Path], overrides: Mapping[str, Any] | None) -> list[str]:
    args = ["template", "rel", str(chart), "--namespace", "bridge"]
    for path in values:
        args += ["--values", str(path)]
    if overrides is not None:
        extra = tmp_path / f"overrides-{len(list(tmp_path.glob('overrides-*')))}.yaml"
        extra.write_text(yaml.safe_dump(dict(overrides)))
        args += ["--values", str(extra)]
    return args


def render(
    helm: Path, tmp_path: Path, *values: Path, overrides: Mapping[str, Any] | None = None, chart: Path = CHART
) -> Rendered:
    result = run_helm(helm, template_args(tmp_path, chart, list(values), overrides))
    assert result.returncode == 0, result.stderr
    return Rendered([m for m in yaml.safe_load_all(result.stdout) if m is not None])


DEFAULT_VALUES = CHART / "ci" / "default-values.yaml"


KEY = "k3y-0f-the-p0st-api-f0r-this-test"


def render_error(helm: Path, tmp_path: Path, *values: Path, overrides: Mapping[str, Any]) -> str:
    result = run_helm(helm, template_args(tmp_path, CHART, list(values), overrides))
    assert result.returncode != 0, f"rendering should have failed; it rendered:\n{result.stdout}"
    return result.stderr
