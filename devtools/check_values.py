"""Checks a Helm values file offline the way the chart's pre-install hook checks it in the cluster.

Renders the chart's configuration-check Job with the given values (so the chart's own refusals come first), then
runs `appmetrica-bridge check-config` on the configuration it carries, with the Job's environment. What only the
cluster has stands in: a Secret's value becomes `stand-in:<variable>` and a file the pod would mount (any `*_file`
key naming an absolute path that does not exist here) becomes a stand-in file, so the check judges the
configuration, not this machine.

    scripts/check-values values-prod.yaml [more-values.yaml ...]
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from devtools.helm import HelmError, ensure_helm

REPO = Path(__file__).resolve().parents[1]
CHART = REPO / "helm" / "appmetrica-bridge"
JOB_TEMPLATE = "templates/config-check-job.yaml"
CONFIG_ENV = "APPMETRICA_BRIDGE_CHECKED_CONFIG"
EXIT_REFUSED = 2
EXIT_USAGE = 1
_STAND_IN_CONTENT = {
    "schema_registry_user_info_file": "stand-in:stand-in\n",
    "schema_file": (REPO / "schemas" / "appmetrica_event.avsc").read_text(),
}


def main(argv: Sequence[str] | None = None) -> int:
    files = [Path(a) for a in (sys.argv[1:] if argv is None else argv)]
    if not files or any(f.name in ("-h", "--help") for f in files):
        print("usage: scripts/check-values VALUES.yaml [MORE-VALUES.yaml ...]", file=sys.stderr)
        return EXIT_USAGE
    missing = [str(f) for f in files if not f.is_file()]
    if missing:
        print(f"check-values: no such file: {', '.join(missing)}", file=sys.stderr)
        return EXIT_USAGE
    try:
        job = _rendered_job(files)
    except HelmError as exc:
        print(f"check-values: the chart refuses these values: {exc}", file=sys.stderr)
        return EXIT_REFUSED
    container = job["spec"]["template"]["spec"]["containers"][0]
    environ = {e["name"]: e.get("value", f"stand-in:{e['name'].lower()}") for e in container.get("env", [])}
    config = yaml.safe_load(environ.pop(CONFIG_ENV)) or {}
    with tempfile.TemporaryDirectory(prefix="check-values-") as scratch:
        _stand_in_files(config, Path(scratch))
        path = Path(scratch) / "config.yaml"
        path.write_text(yaml.safe_dump(config, sort_keys=False))
        # Only the Job's environment: the operator's own BRIDGE_* variables must not decide the outcome.
        env = {k: v for k, v in os.environ.items() if not k.startswith("BRIDGE_")} | environ
        checked = subprocess.run(
            [sys.executable, "-m", "bridge", "check-config", "--config", str(path)],
            env=env,
            capture_output=True,
            text=True,
            check=False,
            cwd=REPO,
        )
    names = ", ".join(str(f) for f in files)
    if checked.returncode != 0:
        sys.stderr.write(checked.stderr)
        print(f"check-values: the bridge refuses the configuration of {names}", file=sys.stderr)
        return EXIT_REFUSED
    print(f"check-values: the bridge accepts the configuration of {names}")
    return 0


def _rendered_job(files: list[Path]) -> dict[str, Any]:
    args = [str(ensure_helm()), "template", "check-values", str(CHART), "--show-only", JOB_TEMPLATE]
    args += [arg for f in files for arg in ("--values", str(f))]
    args += ["--set", "configCheck.enabled=true"]
    rendered = subprocess.run(args, capture_output=True, text=True, check=False, timeout=60)
    if rendered.returncode != 0:
        first = (rendered.stderr.strip().splitlines() or ["helm template failed"])[0]
        # "Error: execution error at (appmetrica-bridge/templates/x.yaml:1:4): <the chart's message>"
        raise HelmError(first.removeprefix("Error: ").split("): ", 1)[-1])
    job: dict[str, Any] = yaml.safe_load(rendered.stdout)
    return job


def _stand_in_files(node: Any, scratch: Path) -> None:
    """Point every `*_file` key naming a file this machine lacks at a stand-in, as the pod's mount would be."""
    if not isinstance(node, dict):
        return
    for key, value in node.items():
        if isinstance(value, dict):
            _stand_in_files(value, scratch)
        elif key.endswith("_file") and isinstance(value, str) and _mounted_elsewhere(Path(value)):
            stand_in = scratch / f"stand-in-{len(list(scratch.iterdir()))}"
            stand_in.write_text(_STAND_IN_CONTENT.get(key, "stand-in-for-a-mounted-file\n"))
            node[key] = str(stand_in)


def _mounted_elsewhere(path: Path) -> bool:
    # A relative path is the image's own (schemas/... under /app), as it is under the checkout.
    return path.is_absolute() and not path.exists()


if __name__ == "__main__":
    raise SystemExit(main())
